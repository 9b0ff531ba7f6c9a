//! The options every generation pipeline shares, and their validation.

use burn::tensor::TensorData;
use prompt_diffusion_core::image::MAX_IMAGE_SIDE;
use prompt_diffusion_core::{Error, Result};
use prompt_diffusion_schedulers::SchedulerKind;

/// The most images one generation makes ([`Generation::num_images`]).
pub const MAX_IMAGES: usize = 64;

/// The largest guidance scale magnitude accepted ([`Generation::guidance_scale`]); published
/// models use 1–20.
pub const MAX_GUIDANCE: f64 = 1000.0;

/// Options of a text-conditioned generation (txt2img, img2img and the pipelines built on
/// them), with diffusers' defaults.
#[derive(Debug, Clone)]
pub struct Generation {
    /// The prompt.
    pub prompt: String,
    /// What to steer away from; `None` means the empty prompt.
    pub negative_prompt: Option<String>,
    /// Denoising steps (default 50).
    pub steps: usize,
    /// Classifier-free guidance scale; guidance is off at ≤ 1 (default 7.5).
    pub guidance_scale: f64,
    /// The scheduler; `None` uses the model folder's own (default).
    pub scheduler: Option<SchedulerKind>,
    /// Output width in pixels, a multiple of 8; `None` uses the model's native size.
    pub width: Option<usize>,
    /// Output height in pixels, a multiple of 8; `None` uses the model's native size.
    pub height: Option<usize>,
    /// Images generated (default 1).
    pub num_images: usize,
    /// Seed of every random draw of the run (default 0).
    pub seed: u64,
    /// Initial latents (before scaling by the scheduler's initial sigma), `[n, 4, h/8, w/8]`
    /// with `n` = `num_images` or 1; replaces the seeded draw, e.g. to reproduce another
    /// implementation's run.
    pub latents: Option<TensorData>,
    /// DDIM's η (default 0).
    pub eta: f64,
}

impl Default for Generation {
    fn default() -> Self {
        Self {
            prompt: String::new(),
            negative_prompt: None,
            steps: 50,
            guidance_scale: 7.5,
            scheduler: None,
            width: None,
            height: None,
            num_images: 1,
            seed: 0,
            latents: None,
            eta: 0.0,
        }
    }
}

impl Generation {
    /// Options for `prompt` with the defaults.
    pub fn new(prompt: impl Into<String>) -> Self {
        Self {
            prompt: prompt.into(),
            ..Self::default()
        }
    }

    prompt_diffusion_core::setters! {
        /// Sets the negative prompt.
        with_negative_prompt(negative_prompt: impl Into<String>) = Some(negative_prompt.into());
        /// Sets the number of steps.
        with_steps(steps: usize);
        /// Sets the guidance scale.
        with_guidance_scale(guidance_scale: f64);
        /// Chooses the scheduler.
        with_scheduler(scheduler: SchedulerKind) = Some(scheduler);
        /// Sets the number of images.
        with_num_images(num_images: usize);
        /// Sets the seed.
        with_seed(seed: u64);
        /// Gives the initial latents.
        with_latents(latents: TensorData) = Some(latents);
    }

    /// Sets the output size in pixels.
    pub fn with_size(mut self, width: usize, height: usize) -> Self {
        self.width = Some(width);
        self.height = Some(height);
        self
    }

    /// Whether classifier-free guidance runs (diffusers: `guidance_scale > 1`).
    pub fn guided(&self) -> bool {
        self.guidance_scale > 1.0
    }

    /// The guidance scale when guidance runs, else `None`.
    pub fn guidance(&self) -> Option<f64> {
        self.guided().then_some(self.guidance_scale)
    }

    /// Checks the options that do not depend on the model: at least one step, a finite
    /// guidance scale of magnitude at most [`MAX_GUIDANCE`], 1 to [`MAX_IMAGES`] images, sides
    /// that are positive multiples of 8 up to [`MAX_IMAGE_SIDE`], finite latents.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming the option.
    pub fn validate(&self) -> Result<()> {
        if self.steps == 0 {
            return Err(Error::invalid_input("steps", "must be at least 1"));
        }
        if !(self.guidance_scale.is_finite() && self.guidance_scale.abs() <= MAX_GUIDANCE) {
            return Err(Error::invalid_input(
                "guidance scale",
                format!(
                    "{:?} is not a number in [-{MAX_GUIDANCE}, {MAX_GUIDANCE}]",
                    self.guidance_scale
                ),
            ));
        }
        if self.num_images == 0 || self.num_images > MAX_IMAGES {
            return Err(Error::invalid_input(
                "number of images",
                format!("{} is not in 1..={MAX_IMAGES}", self.num_images),
            ));
        }
        if !(self.eta.is_finite() && self.eta >= 0.0) {
            return Err(Error::invalid_input("eta", "must be a non-negative number"));
        }
        for (what, value) in [("width", self.width), ("height", self.height)] {
            if let Some(v) = value
                && (v == 0 || !v.is_multiple_of(8) || v > MAX_IMAGE_SIDE as usize)
            {
                return Err(Error::invalid_input(
                    what,
                    format!("{v} is not a positive multiple of 8 up to {MAX_IMAGE_SIDE}"),
                ));
            }
        }
        if let Some(latents) = &self.latents
            && latents.iter::<f32>().any(|v| !v.is_finite())
        {
            return Err(Error::invalid_input(
                "latents",
                "contain NaN or infinite values",
            ));
        }
        Ok(())
    }

    /// The output size, defaulting to `native` pixels.
    pub(crate) fn size(&self, native: usize) -> (usize, usize) {
        (self.width.unwrap_or(native), self.height.unwrap_or(native))
    }
}
