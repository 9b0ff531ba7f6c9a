//! `VersatileDiffusion`: the five flows of Versatile Diffusion (X. Xu et al., ICCV 2023) —
//! text→image, image variation, dual-guided, image→text and text variation — as short
//! compositions of the versatile-flows crate, the shared [`denoise`] loop and the schedulers.
//!
//! Each flow builds its conditions (normalised CLIP tokens; under classifier-free guidance
//! `[unconditional; conditional]`), runs the multi-flow diffuser with the flow's data and
//! context layers, and decodes with the VAE (images) or Optimus (texts). The image flows equal
//! diffusers' `VersatileDiffusion{TextToImage,ImageVariation,DualGuided}Pipeline`; the text flows
//! follow the official code (no diffusers pipeline exists).
//!
//! The unconditional image context defaults to [`UncondImage::Gray`] (diffusers and the original
//! inference code); [`UncondImage::Zeros`] is the 2023 official app's choice.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::tensor::DType;
use image::RgbImage;
use prompt_diffusion_core::image::{PixelRange, tensor_to_images};
use prompt_diffusion_core::noise::{NoiseSource, SeededNoise, noise_tensor};
use prompt_diffusion_core::progress::StepCallback;
use prompt_diffusion_core::weights::LoadOptions;
use prompt_diffusion_core::{Error, Result};
use prompt_diffusion_schedulers::SchedulerConfig;
use prompt_diffusion_versatile_flows::{
    Condition, Modality, VersatileComponents, VersatileFolders, image_tokens_from_data,
};
pub use prompt_diffusion_versatile_flows::{
    Flow, OfficialFiles, OptimusFiles, TextDecoding, UncondImage,
};

use super::denoise::denoise;
use super::generation::Generation;

/// `scheduler/scheduler_config.json` of `shi-labs/versatile-diffusion` (for the official files).
const SCHEDULER: &str = r#"{"_class_name": "DDIMScheduler", "beta_start": 0.00085, "beta_end": 0.012,
  "beta_schedule": "scaled_linear", "num_train_timesteps": 1000, "set_alpha_to_one": false,
  "steps_offset": 1, "clip_sample": false}"#;

/// An image condition: an image (encoded by CLIP) or precomputed context tokens
/// (`[257, 768]` or `[n, 257, 768]`, already normalised as VD's encoder does).
#[derive(Debug, Clone)]
pub enum ImagePrompt {
    /// An image of any size.
    Image(RgbImage),
    /// Context tokens, e.g. predicted by another model.
    Tokens(TensorData),
}

/// The flows' options beyond [`Generation`].
#[derive(Debug, Clone, PartialEq)]
pub struct VersatileOptions {
    /// Dual guidance: the text's weight, the image's is `1 − mix` (diffusers'
    /// `text_to_image_strength`; default 0.5).
    pub mix: f64,
    /// The unconditional image context (default [`UncondImage::Gray`]).
    pub uncond_image: UncondImage,
    /// How Optimus picks tokens (default: sampling at temperature 1, as the official app).
    pub decoding: TextDecoding,
}

impl Default for VersatileOptions {
    fn default() -> Self {
        Self {
            mix: 0.5,
            uncond_image: UncondImage::Gray,
            decoding: TextDecoding::default(),
        }
    }
}

/// How a Versatile Diffusion model is loaded.
#[derive(Debug, Clone)]
pub struct VersatileModelOptions {
    /// Weight-file variant to prefer in diffusers folders (e.g. `fp16`).
    pub variant: Option<String>,
    /// The flows to load layers for (default: all; a text→image-only model skips the text data
    /// layers, 1.4 G parameters in VD).
    pub flows: Vec<Flow>,
    /// Optimus (`optimus-vae.pth` + vocabulary), needed by the text outputs.
    pub optimus: Option<OptimusFiles>,
    /// Another VAE folder than the model's `vae/`.
    pub vae: Option<PathBuf>,
    /// Another tokenizer folder than the model's `tokenizer/`.
    pub tokenizer: Option<PathBuf>,
}

impl Default for VersatileModelOptions {
    fn default() -> Self {
        Self {
            variant: None,
            flows: Flow::ALL.to_vec(),
            optimus: None,
            vae: None,
            tokenizer: None,
        }
    }
}

/// A loaded Versatile Diffusion model and its flows.
#[derive(Debug)]
pub struct VersatileDiffusion<B: Backend> {
    /// Diffuser, encoders, VAE and Optimus.
    pub components: VersatileComponents<B>,
    /// The scheduler configuration the model was published with.
    pub scheduler: SchedulerConfig,
    device: B::Device,
}

impl<B: Backend> VersatileDiffusion<B> {
    /// Loads a diffusers folder (`image_unet/`, `text_unet/`, `text_encoder/`, `image_encoder/`,
    /// `vae/`, `tokenizer/`, `scheduler/`), the parts `options.flows` need.
    ///
    /// # Errors
    /// A missing folder or file, an invalid config, or weights that do not match.
    pub fn from_pretrained(
        dir: impl AsRef<Path>,
        options: &VersatileModelOptions,
        device: &B::Device,
    ) -> Result<Self> {
        let dir = dir.as_ref();
        let mut folders = VersatileFolders::new(dir);
        if let Some(vae) = &options.vae {
            folders = folders.with_vae(vae);
        }
        if let Some(tokenizer) = &options.tokenizer {
            folders = folders.with_tokenizer(tokenizer);
        }
        let load = LoadOptions {
            variant: options.variant.clone(),
            ..LoadOptions::default()
        };
        let components = VersatileComponents::from_folders(
            &folders,
            options.optimus.as_ref(),
            &options.flows,
            &load,
            device,
        )?;
        let scheduler = SchedulerConfig::from_file(dir.join("scheduler/scheduler_config.json"))?;
        Ok(Self::new(components, scheduler, device))
    }

    /// Loads the official checkpoints (`vd-four-flow-v1-0.pth`, `kl-f8.pth`, CLIP ViT-L/14) with
    /// VD's DDIM scheduler.
    ///
    /// # Errors
    /// As [`from_pretrained`](Self::from_pretrained).
    pub fn from_official(
        files: &OfficialFiles,
        options: &VersatileModelOptions,
        device: &B::Device,
    ) -> Result<Self> {
        let load = LoadOptions::default();
        let components = VersatileComponents::from_official(
            files,
            options.optimus.as_ref(),
            &options.flows,
            &load,
            device,
        )?;
        Ok(Self::new(
            components,
            SchedulerConfig::from_json(SCHEDULER)?,
            device,
        ))
    }

    /// Wraps loaded components.
    pub fn new(
        components: VersatileComponents<B>,
        scheduler: SchedulerConfig,
        device: &B::Device,
    ) -> Self {
        Self {
            components,
            scheduler,
            device: device.clone(),
        }
    }

    /// Text → images from `generation.prompt` (and its negative prompt).
    pub fn text_to_image(
        &self,
        generation: &Generation,
        callback: &mut dyn StepCallback,
    ) -> Result<Vec<RgbImage>> {
        let latents = self.latents(
            Flow::TextToImage,
            None,
            generation,
            &VersatileOptions::default(),
            callback,
        )?;
        self.decode_images(latents)
    }

    /// Variations of an image (`generation.prompt` is not used).
    pub fn image_variation(
        &self,
        image: &ImagePrompt,
        generation: &Generation,
        options: &VersatileOptions,
        callback: &mut dyn StepCallback,
    ) -> Result<Vec<RgbImage>> {
        let latents = self.latents(
            Flow::ImageVariation,
            Some(image),
            generation,
            options,
            callback,
        )?;
        self.decode_images(latents)
    }

    /// Images guided by `generation.prompt` and an image, mixed by `options.mix`.
    pub fn dual_guided(
        &self,
        image: &ImagePrompt,
        generation: &Generation,
        options: &VersatileOptions,
        callback: &mut dyn StepCallback,
    ) -> Result<Vec<RgbImage>> {
        let latents = self.latents(Flow::DualGuided, Some(image), generation, options, callback)?;
        self.decode_images(latents)
    }

    /// Captions of an image (one per `generation.num_images`).
    pub fn image_to_text(
        &self,
        image: &ImagePrompt,
        generation: &Generation,
        options: &VersatileOptions,
        callback: &mut dyn StepCallback,
    ) -> Result<Vec<String>> {
        let latents = self.latents(
            Flow::ImageToText,
            Some(image),
            generation,
            options,
            callback,
        )?;
        self.decode_texts(latents, options, generation.seed)
    }

    /// Variations of `generation.prompt`.
    pub fn text_variation(
        &self,
        generation: &Generation,
        options: &VersatileOptions,
        callback: &mut dyn StepCallback,
    ) -> Result<Vec<String>> {
        let latents = self.latents(Flow::TextVariation, None, generation, options, callback)?;
        self.decode_texts(latents, options, generation.seed)
    }

    /// The denoised latents of any flow (`[n, 4, h/8, w/8]` for images, `[n, 768, 1, 1]` for
    /// texts), drawing all noise from `generation.seed`.
    ///
    /// # Errors
    /// Invalid options, a flow whose layers are not loaded, or [`Error::Cancelled`].
    pub fn latents(
        &self,
        flow: Flow,
        image: Option<&ImagePrompt>,
        generation: &Generation,
        options: &VersatileOptions,
        callback: &mut dyn StepCallback,
    ) -> Result<Tensor<B, 4>> {
        generation.validate()?;
        options.decoding.validate()?;
        if !(0.0..=1.0).contains(&options.mix) {
            return Err(Error::invalid_input(
                "mix",
                format!("{} is outside [0, 1]", options.mix),
            ));
        }
        let diffuser = &self.components.diffuser;
        let unet = diffuser
            .data_unet(flow.output())
            .ok_or_else(|| Error::Unsupported(format!("{flow}: its layers were not loaded")))?;
        let dtype = unet.conv_in.dtype();
        let conditions = flow
            .conditions()
            .iter()
            .map(|&m| self.condition(m, flow, image, generation, options, dtype))
            .collect::<Result<Vec<_>>>()?;
        let mut scheduler = self
            .scheduler
            .build::<B>(generation.scheduler, &self.device)?;
        scheduler.set_eta(generation.eta);
        scheduler.set_timesteps(generation.steps)?;
        let mut noise = SeededNoise::new(generation.seed);
        let latents = self.initial_latents(flow.output(), generation, &mut noise)?
            * scheduler.init_noise_sigma();
        let timesteps = scheduler.timesteps().to_vec();
        let mut model = |x: Tensor<B, 4>, t: f64| {
            let t = Tensor::from_data(
                TensorData::new(vec![t as f32], [1]),
                (&self.device, DType::F32),
            );
            diffuser.forward(x.cast(dtype), t, flow.output(), &conditions)
        };
        let guidance = generation.guided().then_some(generation.guidance_scale);
        denoise(
            scheduler.as_mut(),
            latents,
            &timesteps,
            guidance,
            &mut model,
            &mut noise,
            callback,
        )
    }

    /// One condition's tokens, `[uncond × n; cond × n]` under guidance, with its mixing weight.
    fn condition(
        &self,
        modality: Modality,
        flow: Flow,
        image: Option<&ImagePrompt>,
        generation: &Generation,
        options: &VersatileOptions,
        dtype: DType,
    ) -> Result<Condition<B>> {
        let n = generation.num_images;
        let repeat = |t: Tensor<B, 3>| {
            if t.dims()[0] == n {
                t
            } else {
                Tensor::cat(vec![t; n], 0)
            }
        };
        let (cond, uncond) = match modality {
            Modality::Text => {
                let encoder = self.components.text_encoder()?;
                let negative = generation.negative_prompt.as_deref().unwrap_or("");
                let uncond = generation
                    .guided()
                    .then(|| encoder.encode(&[negative]))
                    .transpose()?;
                (encoder.encode(&[&generation.prompt])?, uncond)
            }
            Modality::Image => {
                let image = image.ok_or_else(|| {
                    Error::invalid_input("image", format!("{flow} needs an image"))
                })?;
                let cond = match image {
                    ImagePrompt::Image(image) => self
                        .components
                        .image_encoder()?
                        .encode_images(std::slice::from_ref(image))?,
                    ImagePrompt::Tokens(data) => {
                        let [tokens, width] = match &self.components.image_encoder {
                            Some(e) => [e.num_tokens(), e.width()],
                            None => [257, data.shape.last().copied().unwrap_or(0)],
                        };
                        image_tokens_from_data(data, tokens, width, &self.device)?
                    }
                };
                if cond.dims()[0] != 1 && cond.dims()[0] != n {
                    return Err(Error::invalid_input(
                        "image tokens",
                        format!("give 1 or {n} sets of tokens"),
                    ));
                }
                let uncond = match (generation.guided(), options.uncond_image) {
                    (false, _) => None,
                    (true, UncondImage::Zeros) => Some(cond.zeros_like().narrow(0, 0, 1)),
                    (true, mode) => Some(self.components.image_encoder()?.unconditional(mode, 1)?),
                };
                (cond, uncond)
            }
        };
        let cond = repeat(cond);
        let tokens = match uncond {
            Some(uncond) => Tensor::cat(vec![repeat(uncond), cond], 0),
            None => cond,
        };
        let ratio = match (flow, modality) {
            (Flow::DualGuided, Modality::Text) => options.mix,
            (Flow::DualGuided, Modality::Image) => 1.0 - options.mix,
            _ => 1.0,
        };
        Ok(Condition::new(modality, tokens.cast(dtype)).with_ratio(ratio))
    }

    /// The given latents or seeded noise: `[n, 4, h/f, w/f]` (images at the requested or native
    /// size) or `[n, latent, 1, 1]` (texts).
    fn initial_latents(
        &self,
        output: Modality,
        generation: &Generation,
        noise: &mut dyn NoiseSource,
    ) -> Result<Tensor<B, 4>> {
        let n = generation.num_images;
        let shape = match output {
            Modality::Image => {
                let vae = self.components.vae()?.config();
                let factor = vae.downsampling_factor();
                let native = self
                    .components
                    .diffuser
                    .data_unet(Modality::Image)
                    .and_then(|u| match &u.config().sample_size {
                        Some(prompt_diffusion_core::config::OneOrMany::One(s)) => Some(*s),
                        _ => None,
                    });
                let (w, h) = generation.size(native.unwrap_or(64) * factor);
                [n, vae.latent_channels, h / factor, w / factor]
            }
            Modality::Text => {
                let unet = self.components.diffuser.data_unet(Modality::Text);
                [n, unet.map(|u| u.config().in_channels).unwrap_or(768), 1, 1]
            }
        };
        match &generation.latents {
            Some(data) if data.shape.as_slice() != shape => Err(Error::Shape {
                origin: None,
                key: "latents".into(),
                expected: format!("{shape:?}"),
                found: data.shape.to_vec(),
            }),
            Some(data) => Ok(Tensor::from_data(
                data.clone().convert_dtype(DType::F32),
                (&self.device, DType::F32),
            )),
            None => noise_tensor::<B, 4>(noise, shape, &self.device, DType::F32),
        }
    }

    /// VAE-decodes image latents.
    pub fn decode_images(&self, latents: Tensor<B, 4>) -> Result<Vec<RgbImage>> {
        let vae = self.components.vae()?;
        let dtype = vae.decoder.conv_in.weight.val().dtype();
        tensor_to_images(
            vae.decode(vae.unscale_latents(latents.cast(dtype))),
            PixelRange::MinusOneToOne,
        )
    }

    /// Optimus-decodes text latents (`seed` drives sampling).
    pub fn decode_texts(
        &self,
        latents: Tensor<B, 4>,
        options: &VersatileOptions,
        seed: u64,
    ) -> Result<Vec<String>> {
        let [n, width, _, _] = latents.dims();
        let optimus = self.components.optimus()?;
        optimus.decode(latents.reshape([n, width]), options.decoding, seed)
    }
}
