//! `StableDiffusionControlNet`: text→image guided by a standard ControlNet and one hint image
//! (diffusers `StableDiffusionControlNetPipeline`), and the ControlNet-guided text→image run
//! that [`PromptDiffusion`](super::PromptDiffusion) shares.
//!
//! The run is txt2img's ([`StableDiffusion::text_to_image_with`]): the same prompt encoding,
//! initial latents, sampler and decoding, with the UNet and the ControlNet paired into one
//! denoiser ([`Controlled`]), so the ControlNet's residuals are added to the UNet's skips and
//! mid block at every step.

use prompt_diffusion_core::weights::Pretrained;
use std::path::Path;

use burn::prelude::*;
use image::RgbImage;
use prompt_diffusion_controlnet_prompt::{
    ControlHint, ControlNetConfig, ControlNetModel, ControlScales,
};
use prompt_diffusion_core::image::{MAX_IMAGE_SIDE, PixelRange, images_to_tensor, resize};
use prompt_diffusion_core::noise::NoiseSource;
use prompt_diffusion_core::progress::StepCallback;
use prompt_diffusion_core::weights::{LoadOptions, TensorSource, open_component_weights};
use prompt_diffusion_core::{Error, Result};
use prompt_diffusion_unet::{Controlled, ControlledConditioning};

use super::generation::Generation;
use super::inpaint::Inpaint;
use super::loading::ModelOptions;
use super::stable_diffusion::StableDiffusion;

/// How the ControlNet's residuals enter (diffusers' defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct ControlNetOptions {
    /// Multiplier of every residual (`controlnet_conditioning_scale`, default 1).
    pub conditioning_scale: f32,
    /// diffusers' guess mode: residuals scaled by `logspace(−1, 0, 13) · conditioning_scale`
    /// and, under guidance, the ControlNet runs on the conditional half only (the
    /// unconditional half gets no residuals). Always on for `global_pool_conditions` models,
    /// as in diffusers (default false).
    pub guess_mode: bool,
}

impl Default for ControlNetOptions {
    fn default() -> Self {
        Self {
            conditioning_scale: 1.0,
            guess_mode: false,
        }
    }
}

impl ControlNetOptions {
    prompt_diffusion_core::setters! {
        /// Sets the multiplier of every residual.
        with_conditioning_scale(conditioning_scale: f32);
        /// Turns guess mode on or off.
        with_guess_mode(guess_mode: bool);
    }
}

/// A Stable Diffusion model with a standard (single-hint) ControlNet.
#[derive(Debug)]
pub struct StableDiffusionControlNet<B: Backend> {
    /// The Stable Diffusion model.
    pub sd: StableDiffusion<B>,
    /// The ControlNet, matching the UNet's encoder.
    pub controlnet: ControlNetModel<B>,
}

impl<B: Backend> StableDiffusionControlNet<B> {
    /// Pairs a model with a ControlNet.
    pub fn new(sd: StableDiffusion<B>, controlnet: ControlNetModel<B>) -> Self {
        Self { sd, controlnet }
    }

    /// Loads a ControlNet: a diffusers folder (`config.json` + weights) or a Hugging Face
    /// repository id of one (`lllyasviel/sd-controlnet-canny`, found in the cache or downloaded
    /// with `options.hub`), or a single weight file in diffusers or original naming (e.g.
    /// `control_sd15_canny.pth`). `config` (a diffusers
    /// `config.json`) replaces the folder's config, and describes a single file, which is
    /// otherwise read with SD 1.5's ControlNet config.
    ///
    /// # Errors
    /// A missing file or folder, an invalid config, or weights that do not match.
    pub fn load_controlnet(
        path: impl AsRef<Path>,
        config: Option<&Path>,
        options: &ModelOptions,
        device: &B::Device,
    ) -> Result<ControlNetModel<B>> {
        let wanted = prompt_diffusion_core::hub::Wanted::Component(None);
        let variant = options.variant.as_deref();
        let path = &prompt_diffusion_core::hub::resolve(path, &options.hub, wanted, variant)?;
        let load = load_options(options);
        let config = match (config, path.is_dir()) {
            (Some(file), _) => ControlNetConfig::from_file(file)?,
            (None, true) => ControlNetConfig::from_file(path.join("config.json"))?,
            (None, false) => ControlNetConfig::sd_v1_5(),
        };
        let source = if path.is_dir() {
            open_component_weights(path, load.variant.as_deref())?
        } else {
            TensorSource::open(path)?
        };
        ControlNetModel::from_source(&config, &source, &load, device)
    }

    /// Generates images from a prompt guided by `hint` (in the ControlNet's convention: edges,
    /// depth, …, RGB). The output has the requested size, or the hint's own size rounded down to
    /// a multiple of 8; the hint is resized to it. Image `i` is drawn from
    /// `generation.seed + i` ([`Generation::noise`]).
    ///
    /// # Errors
    /// Invalid options ([`Error::InvalidInput`]), a hint the ControlNet cannot take
    /// ([`Error::Shape`]), or [`Error::Cancelled`] from `callback`.
    pub fn generate(
        &self,
        hint: &RgbImage,
        generation: &Generation,
        options: &ControlNetOptions,
        callback: &mut dyn StepCallback,
    ) -> Result<Vec<RgbImage>> {
        let noise = &mut *generation.noise();
        self.generate_with_noise(hint, generation, options, noise, callback)
    }

    /// [`generate`](Self::generate) with an explicit noise stream.
    pub fn generate_with_noise(
        &self,
        hint: &RgbImage,
        generation: &Generation,
        options: &ControlNetOptions,
        noise: &mut dyn NoiseSource,
        callback: &mut dyn StepCallback,
    ) -> Result<Vec<RgbImage>> {
        self.run(hint, None, generation, options, noise, callback)
    }

    /// Regenerates the masked region of an image guided by `hint` (diffusers
    /// `StableDiffusionControlNetInpaintPipeline`, with an ordinary or an inpainting UNet: see
    /// [`StableDiffusion::inpaint`]). The output has the requested size or the image's own
    /// (rounded down to a multiple of 8); the hint and the mask are resized to it. Image `i`
    /// is drawn from `generation.seed + i`.
    ///
    /// # Errors
    /// As [`generate`](Self::generate) and [`StableDiffusion::inpaint`].
    pub fn inpaint(
        &self,
        hint: &RgbImage,
        inpaint: &Inpaint<'_>,
        generation: &Generation,
        options: &ControlNetOptions,
        callback: &mut dyn StepCallback,
    ) -> Result<Vec<RgbImage>> {
        let noise = &mut *generation.noise();
        self.run(hint, Some(inpaint), generation, options, noise, callback)
    }

    /// [`inpaint`](Self::inpaint) with an explicit noise stream (the draws of
    /// [`StableDiffusion::inpaint_with_noise`]).
    pub fn inpaint_with_noise(
        &self,
        hint: &RgbImage,
        inpaint: &Inpaint<'_>,
        generation: &Generation,
        options: &ControlNetOptions,
        noise: &mut dyn NoiseSource,
        callback: &mut dyn StepCallback,
    ) -> Result<Vec<RgbImage>> {
        self.run(hint, Some(inpaint), generation, options, noise, callback)
    }

    /// The run of [`generate`](Self::generate) and [`inpaint`](Self::inpaint): the output
    /// size is the requested one, else the inpainted image's or the hint's (rounded down to a
    /// multiple of 8).
    fn run(
        &self,
        hint: &RgbImage,
        inpaint: Option<&Inpaint<'_>>,
        generation: &Generation,
        options: &ControlNetOptions,
        noise: &mut dyn NoiseSource,
        callback: &mut dyn StepCallback,
    ) -> Result<Vec<RgbImage>> {
        generation.validate()?;
        let (key, (w, h)) = match inpaint {
            Some(inpaint) => ("image", inpaint.image.dimensions()),
            None => ("hint", hint.dimensions()),
        };
        let size = generation.image_size((w, h));
        if size.0 == 0 || size.1 == 0 || size.0.max(size.1) > MAX_IMAGE_SIDE as usize {
            return Err(Error::invalid_input(
                key,
                format!("{w}x{h} is not between 8x8 and {MAX_IMAGE_SIDE}x{MAX_IMAGE_SIDE} pixels"),
            ));
        }
        let hint = self.control_hint(hint, size, generation, options)?;
        let denoiser = Controlled::new(&self.sd.components.unet, &self.controlnet);
        let conditioning = |context| ControlledConditioning { context, hint };
        let g = generation;
        self.sd
            .generate_with(g, inpaint, size, denoiser, conditioning, noise, callback)
    }

    /// The ControlNet's input: `hint` resized to `width`×`height` in [0, 1], batched for the
    /// run, with the residual scales of `options`.
    fn control_hint(
        &self,
        hint: &RgbImage,
        (width, height): (usize, usize),
        generation: &Generation,
        options: &ControlNetOptions,
    ) -> Result<ControlHint<B>> {
        let hint = resize(hint, width as u32, height as u32);
        let hint = images_to_tensor::<B>(&[hint], PixelRange::ZeroToOne, self.sd.device())?;
        let guided = generation.guided();
        // diffusers: `guess_mode = guess_mode or global_pool_conditions`.
        let guess_mode = options.guess_mode || self.controlnet.config().global_pool_conditions;
        let scales = if guess_mode {
            ControlScales::GuessMode(options.conditioning_scale)
        } else {
            ControlScales::Uniform(options.conditioning_scale)
        };
        let conditional_half_only = guess_mode && guided;
        let n = generation.num_images;
        let copies = if guided && !conditional_half_only {
            2 * n
        } else {
            n
        };
        Ok(ControlHint {
            image: Tensor::cat(vec![hint; copies], 0),
            scales,
            conditional_half_only,
        })
    }
}

/// The weight-loading options of `options`.
pub(crate) fn load_options(options: &ModelOptions) -> LoadOptions {
    let mut load = LoadOptions::default();
    load.variant.clone_from(&options.variant);
    load
}
