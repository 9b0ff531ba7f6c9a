//! `VersatileDiffusion`: the five flows of Versatile Diffusion (X. Xu et al., ICCV 2023) —
//! text→image, image variation, dual-guided, image→text and text variation — as short
//! compositions of the versatile-flows crate and the one [`Sampler`] loop.
//!
//! Each flow builds its conditions (normalised CLIP tokens; under classifier-free guidance
//! `[unconditional; conditional]`), runs the multi-flow diffuser with the flow's data and
//! context layers, and decodes with the VAE (images) or Optimus (texts). The image flows equal
//! diffusers' `VersatileDiffusion{TextToImage,ImageVariation,DualGuided}Pipeline`; the text flows
//! follow the official code (diffusers has no pipeline for them).
//!
//! The unconditional image context defaults to [`UncondImage::Gray`] (diffusers and the original
//! inference code); [`UncondImage::Zeros`] is the 2023 official app's choice.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use image::RgbImage;
use prompt_diffusion_core::Result;
use prompt_diffusion_core::denoiser::{Denoiser, Guided};
use prompt_diffusion_core::hub::{HubOptions, Wanted};
use prompt_diffusion_core::progress::StepCallback;
use prompt_diffusion_core::weights::LoadOptions;
use prompt_diffusion_schedulers::{Sampler, SchedulerConfig};
use prompt_diffusion_vae::VaeOptions;
pub use prompt_diffusion_versatile_flows::{
    Flow, ImagePrompt, OfficialFiles, OptimusFiles, TextDecoding, UncondImage,
};
use prompt_diffusion_versatile_flows::{
    FlowInputs, Modality, VersatileComponents, VersatileFolders,
};

use super::generation::Generation;

/// `scheduler/scheduler_config.json` of `shi-labs/versatile-diffusion` (for the official files).
const SCHEDULER: &str = r#"{"_class_name": "DDIMScheduler", "beta_start": 0.00085, "beta_end": 0.012,
  "beta_schedule": "scaled_linear", "num_train_timesteps": 1000, "set_alpha_to_one": false,
  "steps_offset": 1, "clip_sample": false}"#;

/// The flows' options beyond [`Generation`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
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

impl VersatileOptions {
    prompt_diffusion_core::setters! {
        /// Sets the text's weight in dual guidance.
        with_mix(mix: f64);
        /// Sets the unconditional image context.
        with_uncond_image(uncond_image: UncondImage);
        /// Sets how Optimus picks tokens.
        with_decoding(decoding: TextDecoding);
    }
}

/// How a Versatile Diffusion model is loaded.
#[derive(Debug, Clone)]
#[non_exhaustive]
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
    /// How the VAE runs (tiles, slices), as [`ModelOptions::vae`](super::ModelOptions::vae).
    pub vae_options: VaeOptions,
    /// Where a model named by Hugging Face repository id (`shi-labs/versatile-diffusion`) is
    /// found and downloaded (as [`ModelOptions::hub`](super::ModelOptions::hub)).
    pub hub: HubOptions,
}

impl Default for VersatileModelOptions {
    fn default() -> Self {
        Self {
            variant: None,
            flows: Flow::ALL.to_vec(),
            optimus: None,
            vae: None,
            tokenizer: None,
            vae_options: VaeOptions::default(),
            hub: HubOptions::default(),
        }
    }
}

impl VersatileModelOptions {
    prompt_diffusion_core::setters! {
        /// Prefers a weight-file variant.
        with_variant(variant: impl Into<String>) = Some(variant.into());
        /// Sets the flows to load layers for.
        with_flows(flows: impl Into<Vec<Flow>>) = flows.into();
        /// Gives the Optimus files.
        with_optimus(optimus: OptimusFiles) = Some(optimus);
        /// Uses another VAE folder.
        with_vae(vae: impl Into<PathBuf>) = Some(vae.into());
        /// Uses another tokenizer folder.
        with_tokenizer(tokenizer: impl Into<PathBuf>) = Some(tokenizer.into());
        /// Runs the VAE with these options (tiling, slicing).
        with_vae_options(vae_options: VaeOptions);
        /// Finds models named by repository id with these hub options.
        with_hub(hub: HubOptions);
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
    /// `vae/`, `tokenizer/`, `scheduler/`), the parts `options.flows` need, or a Hugging Face
    /// repository id of one (found in the cache or downloaded with `options.hub`).
    ///
    /// # Errors
    /// A missing folder or file, an invalid config, or weights that do not match.
    pub fn from_pretrained(
        dir: impl AsRef<Path>,
        options: &VersatileModelOptions,
        device: &B::Device,
    ) -> Result<Self> {
        let mut wanted = vec![
            "image_unet",
            "text_unet",
            "text_encoder",
            "image_encoder",
            "scheduler",
        ];
        if options.vae.is_none() {
            wanted.push("vae");
        }
        if options.tokenizer.is_none() {
            wanted.push("tokenizer");
        }
        let resolved = prompt_diffusion_core::hub::resolve(
            dir.as_ref(),
            &options.hub,
            Wanted::Pipeline(&wanted),
            options.variant.as_deref(),
        )?;
        let dir = resolved.as_path();
        super::loading::check_model_index(dir)?;
        let mut folders = VersatileFolders::new(dir);
        if let Some(vae) = &options.vae {
            folders = folders.with_vae(vae);
        }
        if let Some(tokenizer) = &options.tokenizer {
            folders = folders.with_tokenizer(tokenizer);
        }
        let load = LoadOptions::default();
        let load = match &options.variant {
            Some(variant) => load.with_variant(variant),
            None => load,
        };
        let optimus = options.optimus.as_ref();
        let components =
            VersatileComponents::from_folders(&folders, optimus, &options.flows, &load, device)?;
        let scheduler = SchedulerConfig::from_file(dir.join("scheduler/scheduler_config.json"))?;
        Self::new(components, scheduler, device).with_vae_running(options.vae_options)
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
        let (optimus, load) = (options.optimus.as_ref(), LoadOptions::default());
        let components =
            VersatileComponents::from_official(files, optimus, &options.flows, &load, device)?;
        Self::new(components, SchedulerConfig::from_json(SCHEDULER)?, device)
            .with_vae_running(options.vae_options)
    }

    /// The model with its VAE (when loaded) set to run with `options`.
    fn with_vae_running(mut self, options: VaeOptions) -> Result<Self> {
        if let Some(vae) = &mut self.components.vae {
            vae.set_options(options)?;
        }
        Ok(self)
    }

    /// Wraps loaded components.
    pub fn new(
        components: VersatileComponents<B>,
        scheduler: SchedulerConfig,
        device: &B::Device,
    ) -> Self {
        let device = device.clone();
        Self {
            components,
            scheduler,
            device,
        }
    }

    /// Text → images from `generation.prompt` (and its negative prompt).
    pub fn text_to_image(
        &self,
        generation: &Generation,
        callback: &mut dyn StepCallback,
    ) -> Result<Vec<RgbImage>> {
        let options = &VersatileOptions::default();
        let latents = self.latents(Flow::TextToImage, None, generation, options, callback)?;
        self.components.decode_images(latents)
    }

    /// Variations of an image (`generation.prompt` is not used).
    pub fn image_variation(
        &self,
        image: &ImagePrompt,
        generation: &Generation,
        options: &VersatileOptions,
        callback: &mut dyn StepCallback,
    ) -> Result<Vec<RgbImage>> {
        let flow = Flow::ImageVariation;
        let latents = self.latents(flow, Some(image), generation, options, callback)?;
        self.components.decode_images(latents)
    }

    /// Images guided by `generation.prompt` and an image, mixed by `options.mix`.
    pub fn dual_guided(
        &self,
        image: &ImagePrompt,
        generation: &Generation,
        options: &VersatileOptions,
        callback: &mut dyn StepCallback,
    ) -> Result<Vec<RgbImage>> {
        let flow = Flow::DualGuided;
        let latents = self.latents(flow, Some(image), generation, options, callback)?;
        self.components.decode_images(latents)
    }

    /// Captions of an image (`generation.num_images` of them).
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
        let decoding = options.decoding;
        self.components
            .decode_texts(latents, decoding, generation.seed)
    }

    /// Variations of `generation.prompt`.
    pub fn text_variation(
        &self,
        generation: &Generation,
        options: &VersatileOptions,
        callback: &mut dyn StepCallback,
    ) -> Result<Vec<String>> {
        let latents = self.latents(Flow::TextVariation, None, generation, options, callback)?;
        let decoding = options.decoding;
        self.components
            .decode_texts(latents, decoding, generation.seed)
    }

    /// The denoised latents of any flow (`[n, 4, h/8, w/8]` for images, `[n, 768, 1, 1]` for
    /// texts), image `i`'s random draws from `generation.seed + i` ([`Generation::noise`]);
    /// `generation.latents` replaces the initial noise.
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
        let components = &self.components;
        let denoiser = components.diffuser.denoiser(flow.output())?;
        let inputs = FlowInputs {
            prompt: &generation.prompt,
            negative_prompt: generation.negative_prompt.as_deref(),
            image,
            uncond_image: options.uncond_image,
            mix: options.mix,
            samples: generation.num_images,
            guided: generation.guided(),
        };
        let conditions = components.conditions(flow, &inputs, denoiser.dtype())?;
        let (kind, eta, steps) = (generation.scheduler, generation.eta, generation.steps);
        let mut sampler = Sampler::from_config(&self.scheduler, kind, eta, steps, &self.device)?;
        // Image flows take their size from initial latents given without one.
        let (width, height) = match flow.output() {
            Modality::Image => {
                generation.requested_size(components.vae()?.config().downsampling_factor())
            }
            Modality::Text => (generation.width, generation.height),
        };
        let shape = components.latent_shape(flow.output(), generation.num_images, width, height)?;
        let noise = &mut *generation.noise();
        let given = generation.latents.as_ref();
        let latents = sampler.initial_latents(shape, given, noise, &self.device)?;
        let denoiser = Guided::new(denoiser, generation.guidance());
        sampler.sample(&denoiser, &conditions, latents, noise, callback)
    }
}
