//! Loading Versatile Diffusion: the diffusers folders (`shi-labs/versatile-diffusion`) or the
//! official checkpoints (`pretrained_pth/`), plus Optimus, which only the official release has.
//!
//! Only what the requested flows use is loaded: a modality's data layers when a flow generates
//! it, its attentions alone ([`ContextLayers`]) when flows only condition on it, an encoder when
//! a flow conditions on its modality, the VAE for image outputs, Optimus for text outputs.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::tensor::DType;
use prompt_diffusion_core::dtype::default_float_dtype;
use prompt_diffusion_core::weights::{LoadOptions, TensorSource, open_component_weights};
use prompt_diffusion_core::{Error, Result};
use prompt_diffusion_unet::{UNet2DConditionConfig, UNet2DConditionModel};
use prompt_diffusion_vae::{AutoencoderKL, AutoencoderKLConfig};

use crate::context_layers::ContextLayers;
use crate::diffuser::VersatileDiffuser;
use crate::encoders::{ClipImageContextEncoder, ClipTextContextEncoder};
use crate::flow::{Flow, LayerGroups, Modality};
use crate::optimus::{Optimus, OptimusConfig};
use crate::weights::{kl_f8_source, official_diffuser_source};

/// `text_unet/config.json` of `shi-labs/versatile-diffusion`.
const TEXT_UNET_CONFIG: &str = r#"{
  "_class_name": "UNetFlatConditionModel", "act_fn": "silu", "attention_head_dim": 8,
  "block_out_channels": [320, 640, 1280, 1280], "center_input_sample": false,
  "cross_attention_dim": 768,
  "down_block_types": ["CrossAttnDownBlockFlat", "CrossAttnDownBlockFlat", "CrossAttnDownBlockFlat", "DownBlockFlat"],
  "downsample_padding": 1, "flip_sin_to_cos": true, "freq_shift": 0, "in_channels": [768, 1, 1],
  "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32,
  "out_channels": [768, 1, 1], "sample_size": null,
  "up_block_types": ["UpBlockFlat", "CrossAttnUpBlockFlat", "CrossAttnUpBlockFlat", "CrossAttnUpBlockFlat"]
}"#;

/// The image UNet of Versatile Diffusion (the SD 1.x UNet, 64×64 latents).
pub fn image_unet_config() -> UNet2DConditionConfig {
    UNet2DConditionConfig::sd_v1_5()
}

/// The text UNet of Versatile Diffusion (`UNetFlatConditionModel`, 768-d latents).
///
/// # Panics
/// Never: the embedded config is valid (checked by a test).
pub fn text_unet_config() -> UNet2DConditionConfig {
    UNet2DConditionConfig::from_json(TEXT_UNET_CONFIG).expect("embedded text UNet config is valid")
}

/// The component folders of a diffusers Versatile Diffusion repository (`image_unet/`,
/// `text_unet/`, `text_encoder/`, `image_encoder/`, `vae/`, `tokenizer/`); each can be moved.
#[derive(Debug, Clone)]
pub struct VersatileFolders {
    /// `UNet2DConditionModel` folder.
    pub image_unet: PathBuf,
    /// `UNetFlatConditionModel` folder.
    pub text_unet: PathBuf,
    /// `CLIPTextModelWithProjection` folder.
    pub text_encoder: PathBuf,
    /// `CLIPVisionModelWithProjection` folder.
    pub image_encoder: PathBuf,
    /// `AutoencoderKL` folder.
    pub vae: PathBuf,
    /// CLIP tokenizer folder.
    pub tokenizer: PathBuf,
}

impl VersatileFolders {
    /// The folders of a pipeline folder `dir`.
    pub fn new(dir: impl AsRef<Path>) -> Self {
        let dir = dir.as_ref();
        Self {
            image_unet: dir.join("image_unet"),
            text_unet: dir.join("text_unet"),
            text_encoder: dir.join("text_encoder"),
            image_encoder: dir.join("image_encoder"),
            vae: dir.join("vae"),
            tokenizer: dir.join("tokenizer"),
        }
    }

    /// Takes the VAE from another folder.
    pub fn with_vae(mut self, dir: impl Into<PathBuf>) -> Self {
        self.vae = dir.into();
        self
    }

    /// Takes the tokenizer from another folder.
    pub fn with_tokenizer(mut self, dir: impl Into<PathBuf>) -> Self {
        self.tokenizer = dir.into();
        self
    }
}

/// The official checkpoint files (`pretrained_pth/` of `shi-labs/versatile-diffusion`) and the
/// CLIP model they were trained with (`openai/clip-vit-large-patch14`, a transformers folder).
#[derive(Debug, Clone)]
pub struct OfficialFiles {
    /// `vd-four-flow-v1-0.pth` (or its fp16 version).
    pub diffuser: PathBuf,
    /// `kl-f8.pth`.
    pub vae: PathBuf,
    /// CLIP text tower folder (a full CLIP folder works).
    pub text_encoder: PathBuf,
    /// CLIP vision tower folder (a full CLIP folder works).
    pub image_encoder: PathBuf,
    /// CLIP tokenizer folder.
    pub tokenizer: PathBuf,
    /// Configuration of the image diffuser (default: [`image_unet_config`]).
    pub image_unet_config: UNet2DConditionConfig,
    /// Configuration of the text diffuser (default: [`text_unet_config`]).
    pub text_unet_config: UNet2DConditionConfig,
    /// Configuration of the VAE (default: SD 1.x's).
    pub vae_config: AutoencoderKLConfig,
}

impl OfficialFiles {
    /// The official diffuser and VAE files with CLIP ViT-L/14 from `clip_dir`.
    pub fn new(
        diffuser: impl Into<PathBuf>,
        vae: impl Into<PathBuf>,
        clip_dir: impl AsRef<Path>,
    ) -> Self {
        let clip = clip_dir.as_ref().to_path_buf();
        Self {
            diffuser: diffuser.into(),
            vae: vae.into(),
            text_encoder: clip.clone(),
            image_encoder: clip.clone(),
            tokenizer: clip,
            image_unet_config: image_unet_config(),
            text_unet_config: text_unet_config(),
            vae_config: AutoencoderKLConfig::sd_v1_5(),
        }
    }
}

/// Optimus' weights (`optimus-vae.pth`), vocabulary folder and sizes.
#[derive(Debug, Clone)]
pub struct OptimusFiles {
    /// `optimus-vae.pth`.
    pub weights: PathBuf,
    /// Folder with `bert-base-cased-vocab.txt`, `gpt2-vocab.json`, `gpt2-merges.txt`.
    pub vocab: PathBuf,
    /// Sizes (default: [`OptimusConfig::versatile`]).
    pub config: OptimusConfig,
}

impl OptimusFiles {
    /// Versatile Diffusion's Optimus from `weights` and the `vocab` folder.
    pub fn new(weights: impl Into<PathBuf>, vocab: impl Into<PathBuf>) -> Self {
        Self {
            weights: weights.into(),
            vocab: vocab.into(),
            config: OptimusConfig::versatile(),
        }
    }

    /// Other sizes.
    pub fn with_config(mut self, config: OptimusConfig) -> Self {
        self.config = config;
        self
    }
}

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

/// Which components `flows` need.
fn needs(flows: &[Flow]) -> (LayerGroups, bool, bool) {
    let groups = LayerGroups::for_flows(flows);
    let image_out = flows.iter().any(|f| f.output() == Modality::Image);
    let text_out = flows.iter().any(|f| f.output() == Modality::Text);
    (groups, image_out, text_out)
}

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
        let (groups, image_out, text_out) = needs(flows);
        let part = |dir: &Path, modality: Modality| -> Result<DiffuserPart<B>> {
            if !groups.data(modality) && !groups.context(modality) {
                return Ok((None, None));
            }
            let config = unet_config(dir)?;
            let source = open_component_weights(dir, options.variant.as_deref())?;
            if groups.data(modality) {
                let unet = UNet2DConditionModel::from_source(&config, &source, options, device)?;
                return Ok((Some(unet), None));
            }
            let layers = ContextLayers::from_unet_source(&config, &source, options, device)?;
            Ok((None, Some(layers)))
        };
        let (image_unet, image_context) = part(&folders.image_unet, Modality::Image)?;
        let (text_unet, text_context) = part(&folders.text_unet, Modality::Text)?;
        let vae = if image_out {
            let config = AutoencoderKLConfig::from_file(folders.vae.join("config.json"))?;
            let source = open_component_weights(&folders.vae, options.variant.as_deref())?;
            Some(AutoencoderKL::from_source(
                &config,
                &source,
                &vae_options::<B>(&config, options, device),
                device,
            )?)
        } else {
            None
        };
        Self::assemble(
            VersatileDiffuser::new(image_unet, text_unet, image_context, text_context)?,
            (
                &folders.text_encoder,
                &folders.image_encoder,
                &folders.tokenizer,
            ),
            vae,
            optimus.filter(|_| text_out),
            groups,
            options,
            device,
        )
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
        let (groups, image_out, text_out) = needs(flows);
        let checkpoint = TensorSource::open(&files.diffuser)?;
        let part =
            |modality: Modality, config: &UNet2DConditionConfig| -> Result<DiffuserPart<B>> {
                if !groups.data(modality) && !groups.context(modality) {
                    return Ok((None, None));
                }
                let source = official_diffuser_source(&checkpoint, modality, config)?;
                if groups.data(modality) {
                    Ok((
                        Some(UNet2DConditionModel::from_source(
                            config, &source, options, device,
                        )?),
                        None,
                    ))
                } else {
                    Ok((
                        None,
                        Some(ContextLayers::from_unet_source(
                            config, &source, options, device,
                        )?),
                    ))
                }
            };
        let (image_unet, image_context) = part(Modality::Image, &files.image_unet_config)?;
        let (text_unet, text_context) = part(Modality::Text, &files.text_unet_config)?;
        let vae = if image_out {
            let source = kl_f8_source(&TensorSource::open(&files.vae)?)?;
            let config = &files.vae_config;
            Some(AutoencoderKL::from_source(
                config,
                &source,
                &vae_options::<B>(config, options, device),
                device,
            )?)
        } else {
            None
        };
        Self::assemble(
            VersatileDiffuser::new(image_unet, text_unet, image_context, text_context)?,
            (&files.text_encoder, &files.image_encoder, &files.tokenizer),
            vae,
            optimus.filter(|_| text_out),
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

/// The VAE runs in f32 when the model is half precision and its config asks for upcasting.
fn vae_options<B: Backend>(
    config: &AutoencoderKLConfig,
    options: &LoadOptions,
    device: &B::Device,
) -> LoadOptions {
    let mut options = options.clone();
    let dtype = options
        .dtype
        .unwrap_or_else(|| default_float_dtype::<B>(device));
    if config.force_upcast && dtype != DType::F32 {
        options.dtype = Some(DType::F32);
    }
    options
}

#[cfg(test)]
mod tests {
    use super::*;
    use prompt_diffusion_unet::DataLayerKind;

    #[test]
    fn published_text_unet_config_is_flat() {
        let config = text_unet_config();
        assert_eq!(
            config.data_layers,
            DataLayerKind::Flat {
                sample_in: [768, 1, 1],
                sample_out: [768, 1, 1]
            }
        );
        assert_eq!(config.in_channels, 768);
    }
}
