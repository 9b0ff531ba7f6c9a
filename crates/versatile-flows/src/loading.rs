//! Loading Versatile Diffusion: the diffusers folders (`shi-labs/versatile-diffusion`) or the
//! official checkpoints (`pretrained_pth/`), plus Optimus, which only the official release has.
//!
//! Only what the requested flows use is loaded: a modality's data layers when a flow generates
//! it, its attentions alone ([`ContextLayers`]) when flows only condition on it, an encoder when
//! a flow conditions on its modality, the VAE for image outputs, Optimus for text outputs.

use std::path::Path;

use burn::prelude::*;
use prompt_diffusion_core::weights::{
    LoadOptions, Pretrained, TensorSource, open_component_weights,
};
use prompt_diffusion_core::{Error, Result};
use prompt_diffusion_unet::{UNet2DConditionConfig, UNet2DConditionModel};
use prompt_diffusion_vae::weights::upcast_options;
use prompt_diffusion_vae::{AutoencoderKL, AutoencoderKLConfig};

use crate::context_layers::ContextLayers;
use crate::diffuser::VersatileDiffuser;
use crate::encoders::{ClipImageContextEncoder, ClipTextContextEncoder};
use crate::files::{OfficialFiles, OptimusFiles, VersatileFolders};
use crate::flow::{Flow, LayerGroups, Modality};
use crate::optimus::Optimus;
use crate::weights::{kl_f8_source, official_diffuser_source};

/// Everything the flows run: the multi-flow diffuser, the context encoders, the VAE and
/// Optimus (each present when a loaded flow needs it).
#[derive(Debug)]
pub struct VersatileComponents<B: Backend> {
    /// The multi-flow diffuser.
    pub diffuser: VersatileDiffuser<B>,
    /// CLIP text contexts (flows conditioned on text).
    pub text_encoder: Option<ClipTextContextEncoder<B>>,
    /// CLIP image contexts (flows conditioned on images).
    pub image_encoder: Option<ClipImageContextEncoder<B>>,
    /// The image VAE (image outputs).
    pub vae: Option<AutoencoderKL<B>>,
    /// Optimus (text outputs, when its files are given).
    pub optimus: Option<Optimus<B>>,
}

/// One modality's layers: the whole UNet, or its attentions alone.
type DiffuserPart<B> = (Option<UNet2DConditionModel<B>>, Option<ContextLayers<B>>);

/// A UNet's config and weights (diffusers names), or a VAE's.
type Weights<C> = (C, TensorSource);

impl<B: Backend> VersatileComponents<B> {
    /// Loads what `flows` need from diffusers folders; Optimus from `optimus` when given.
    ///
    /// # Errors
    /// A missing folder or file, an invalid config, or weights that do not match (naming the
    /// file and tensor).
    pub fn from_folders(
        folders: &VersatileFolders,
        optimus: Option<&OptimusFiles>,
        flows: &[Flow],
        options: &LoadOptions,
        device: &B::Device,
    ) -> Result<Self> {
        let variant = options.variant.as_deref();
        let unet = |modality: Modality| -> Result<Weights<UNet2DConditionConfig>> {
            let dir = match modality {
                Modality::Image => &folders.image_unet,
                Modality::Text => &folders.text_unet,
            };
            Ok((unet_config(dir)?, open_component_weights(dir, variant)?))
        };
        let vae = || -> Result<Weights<AutoencoderKLConfig>> {
            let config = AutoencoderKLConfig::from_file(folders.vae.join("config.json"))?;
            Ok((config, open_component_weights(&folders.vae, variant)?))
        };
        let clip = (
            folders.text_encoder.as_path(),
            folders.image_encoder.as_path(),
            folders.tokenizer.as_path(),
        );
        Self::load(flows, unet, vae, clip, optimus, options, device)
    }

    /// Loads what `flows` need from the official checkpoints; Optimus from `optimus` when given.
    ///
    /// # Errors
    /// As [`from_folders`](Self::from_folders); [`Error::Format`] when the diffuser file has no
    /// `diffuser.*` tensors.
    pub fn from_official(
        files: &OfficialFiles,
        optimus: Option<&OptimusFiles>,
        flows: &[Flow],
        options: &LoadOptions,
        device: &B::Device,
    ) -> Result<Self> {
        let checkpoint = TensorSource::open(&files.diffuser)?;
        let unet = |modality: Modality| -> Result<Weights<UNet2DConditionConfig>> {
            let config = match modality {
                Modality::Image => &files.image_unet_config,
                Modality::Text => &files.text_unet_config,
            };
            let source = official_diffuser_source(&checkpoint, modality, config)?;
            Ok((config.clone(), source))
        };
        let vae = || -> Result<Weights<AutoencoderKLConfig>> {
            let source = kl_f8_source(&TensorSource::open(&files.vae)?)?;
            Ok((files.vae_config.clone(), source))
        };
        let clip = (
            files.text_encoder.as_path(),
            files.image_encoder.as_path(),
            files.tokenizer.as_path(),
        );
        Self::load(flows, unet, vae, clip, optimus, options, device)
    }

    /// Loads what `flows` need: per modality the whole UNet when a flow generates it, its
    /// attentions alone when flows only condition on it (`unet` gives its weights); the VAE
    /// (`vae`) for image outputs, Optimus for text outputs, the CLIP towers from `clip` (text
    /// encoder, image encoder and tokenizer folders) for the conditions.
    fn load(
        flows: &[Flow],
        unet: impl Fn(Modality) -> Result<Weights<UNet2DConditionConfig>>,
        vae: impl FnOnce() -> Result<Weights<AutoencoderKLConfig>>,
        clip: (&Path, &Path, &Path),
        optimus: Option<&OptimusFiles>,
        options: &LoadOptions,
        device: &B::Device,
    ) -> Result<Self> {
        let groups = LayerGroups::for_flows(flows);
        let output = |modality| flows.iter().any(|f| f.output() == modality);
        let part = |modality: Modality| -> Result<DiffuserPart<B>> {
            if !groups.data(modality) && !groups.context(modality) {
                return Ok((None, None));
            }
            let (config, source) = unet(modality)?;
            if groups.data(modality) {
                let unet = UNet2DConditionModel::from_source(&config, &source, options, device)?;
                return Ok((Some(unet), None));
            }
            let layers = ContextLayers::from_unet_source(&config, &source, options, device)?;
            Ok((None, Some(layers)))
        };
        let (image_unet, image_context) = part(Modality::Image)?;
        let (text_unet, text_context) = part(Modality::Text)?;
        let vae = output(Modality::Image)
            .then(|| -> Result<_> {
                let (config, source) = vae()?;
                let vae_options = upcast_options::<B>(&config, options, device);
                AutoencoderKL::from_source(&config, &source, &vae_options, device)
            })
            .transpose()?;
        Self::assemble(
            VersatileDiffuser::new(image_unet, text_unet, image_context, text_context)?,
            clip,
            vae,
            optimus.filter(|_| output(Modality::Text)),
            groups,
            options,
            device,
        )
    }

    fn assemble(
        diffuser: VersatileDiffuser<B>,
        (text_dir, image_dir, tokenizer): (&Path, &Path, &Path),
        vae: Option<AutoencoderKL<B>>,
        optimus: Option<&OptimusFiles>,
        groups: LayerGroups,
        options: &LoadOptions,
        device: &B::Device,
    ) -> Result<Self> {
        let text_encoder = groups
            .text_context
            .then(|| ClipTextContextEncoder::from_folders(text_dir, tokenizer, options, device))
            .transpose()?;
        let image_encoder = groups
            .image_context
            .then(|| ClipImageContextEncoder::from_folder(image_dir, options, device))
            .transpose()?;
        let optimus = optimus
            .map(|files| {
                Optimus::from_files(&files.weights, &files.vocab, &files.config, options, device)
            })
            .transpose()?;
        Ok(Self {
            diffuser,
            text_encoder,
            image_encoder,
            vae,
            optimus,
        })
    }

    /// The loaded text encoder, or an error naming the flow that needs it.
    pub fn text_encoder(&self) -> Result<&ClipTextContextEncoder<B>> {
        self.text_encoder
            .as_ref()
            .ok_or_else(|| Error::Unsupported("the CLIP text encoder is not loaded".into()))
    }

    /// The loaded image encoder.
    pub fn image_encoder(&self) -> Result<&ClipImageContextEncoder<B>> {
        self.image_encoder
            .as_ref()
            .ok_or_else(|| Error::Unsupported("the CLIP image encoder is not loaded".into()))
    }

    /// The loaded VAE.
    pub fn vae(&self) -> Result<&AutoencoderKL<B>> {
        self.vae.as_ref().ok_or_else(|| {
            Error::Unsupported("the VAE is not loaded (no image flow requested)".into())
        })
    }

    /// The loaded Optimus.
    pub fn optimus(&self) -> Result<&Optimus<B>> {
        self.optimus.as_ref().ok_or_else(|| {
            Error::Unsupported(
                "Optimus is not loaded: text outputs need `optimus-vae.pth` and its vocabulary (official release)".into(),
            )
        })
    }
}

/// A UNet's `config.json`. `dual_cross_attention` is cleared: diffusers' dual-guided pipeline sets
/// it when it wraps the attentions at run time (and saves it so), but the stored blocks are the
/// plain ones.
fn unet_config(dir: &Path) -> Result<UNet2DConditionConfig> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let mut value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::format(&path, format!("invalid JSON: {e}")))?;
    if let Some(object) = value.as_object_mut() {
        object.remove("dual_cross_attention");
    }
    UNet2DConditionConfig::from_json(&value.to_string()).map_err(|e| e.with_config_origin(&path))
}
