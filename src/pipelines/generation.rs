//! The options every generation pipeline shares, and their validation.

use burn::tensor::TensorData;
use prompt_diffusion_core::image::MAX_IMAGE_SIDE;
use prompt_diffusion_core::noise::{NoiseSource, SeededNoise};
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
#[non_exhaustive]
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
    /// Seed of the run (default 0): image `i` of the batch is drawn from `seed + i` alone
    /// (wrapping) — its initial noise, the noise a stochastic scheduler adds at each step, and
    /// img2img's VAE sample — so any image of a batch can be made again by itself with
    /// `num_images` 1 and seed `seed + i` (AUTOMATIC1111's convention; diffusers with one
    /// generator per image). With [`latents`](Self::latents) given, the step noise of the whole
    /// batch comes from `seed`, as diffusers with one generator draws it.
    pub seed: u64,
    /// Initial latents (before scaling by the scheduler's initial sigma), `[n, 4, h/8, w/8]`
    /// with `n` = `num_images` or 1; replaces the seeded draw, e.g. to reproduce another
    /// implementation's run.
    pub latents: Option<TensorData>,
    /// DDIM's η (default 0).
    pub eta: f64,
    /// Whether the prompts use AUTOMATIC1111's emphasis syntax and may be longer than CLIP's
    /// 77 tokens (default: off, diffusers' plain tokenisation, truncated at 77 tokens). On,
    /// `(word:1.3)`, `(word)` (× 1.1), `[word]` (÷ 1.1) and `BREAK` weigh the text, and long
    /// prompts are encoded in chunks of 75 tokens; the negative prompt is padded to the same
    /// number of chunks. See [`prompt_weighting`](prompt_diffusion_clip::prompt_weighting).
    pub prompt_weighting: bool,
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
            prompt_weighting: false,
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
        /// Sets the prompt.
        with_prompt(prompt: impl Into<String>) = prompt.into();
        /// Sets the output width in pixels.
        with_width(width: usize) = Some(width);
        /// Sets the output height in pixels.
        with_height(height: usize) = Some(height);
        /// Sets DDIM's η.
        with_eta(eta: f64);
        /// Turns AUTOMATIC1111's prompt weighting and long prompts on or off.
        with_prompt_weighting(prompt_weighting: bool);
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

    /// The noise of a run of these options: [`PerImageNoise`] (image `i` from `seed + i`), or,
    /// with [`latents`](Self::latents) given, one [`SeededNoise`] stream from `seed` for the
    /// whole batch (diffusers' behaviour).
    pub fn noise(&self) -> Box<dyn NoiseSource> {
        match self.latents {
            Some(_) => Box::new(SeededNoise::new(self.seed)),
            None => Box::new(PerImageNoise::new(self.seed, self.num_images)),
        }
    }

    /// The output size: the width and height given, else the initial latents' size times the
    /// VAE's downsampling `factor`, else `native` pixels.
    pub(crate) fn size(&self, native: usize, factor: usize) -> (usize, usize) {
        let (width, height) = self.requested_size(factor);
        (width.unwrap_or(native), height.unwrap_or(native))
    }

    /// The width and height given, else the initial latents' size times the VAE's
    /// downsampling `factor`, else `None`.
    pub(crate) fn requested_size(&self, factor: usize) -> (Option<usize>, Option<usize>) {
        let from_latents = |axis: usize| {
            (self.latents.as_ref())
                .and_then(|l| l.shape.get(axis))
                .map(|&n| n * factor)
        };
        (
            self.width.or(from_latents(3)),
            self.height.or(from_latents(2)),
        )
    }

    /// The size an image-to-image run works at: the width and height given, else the input
    /// image's `(width, height)` rounded down to a multiple of 8 (diffusers' image processor).
    pub(crate) fn image_size(&self, (width, height): (u32, u32)) -> (usize, usize) {
        (
            self.width.unwrap_or(width as usize / 8 * 8),
            self.height.unwrap_or(height as usize / 8 * 8),
        )
    }
}

/// Noise for a batch in which image `i` draws from its own [`SeededNoise`] stream, seeded
/// `seed + i` (wrapping): a draw of shape `[n, …]` takes image `i`'s slice from stream `i`, so
/// image `i` of a batch gets exactly the numbers a batch of one seeded `seed + i` gets.
#[derive(Debug, Clone)]
pub struct PerImageNoise {
    streams: Vec<SeededNoise>,
}

impl PerImageNoise {
    /// The streams of `images` images (at least one) from `seed`.
    pub fn new(seed: u64, images: usize) -> Self {
        let streams = (0..images.max(1) as u64)
            .map(|i| SeededNoise::new(seed.wrapping_add(i)))
            .collect();
        Self { streams }
    }
}

impl NoiseSource for PerImageNoise {
    /// # Errors
    /// [`Error::InvalidInput`] when a batch of several images draws a shape whose first
    /// dimension is not the number of images.
    fn sample(&mut self, shape: &[usize]) -> Result<TensorData> {
        let n = self.streams.len();
        if n == 1 {
            return self.streams[0].sample(shape);
        }
        if shape.first() != Some(&n) {
            return Err(Error::invalid_input(
                "noise",
                format!("a draw of shape {shape:?} does not split into the streams of {n} images"),
            ));
        }
        let per_image: usize = shape[1..].iter().product();
        let mut values = Vec::with_capacity(n * per_image);
        for stream in &mut self.streams {
            values.extend((0..per_image).map(|_| stream.next_normal()));
        }
        Ok(TensorData::new(values, shape.to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_i_of_a_batch_draws_what_seed_plus_i_draws_alone() {
        let mut batch = PerImageNoise::new(10, 3);
        let mut alone = PerImageNoise::new(12, 1);
        for shape in [[3, 2, 5], [3, 1, 7]] {
            let all: Vec<f32> = batch.sample(&shape).unwrap().to_vec().unwrap();
            let one: Vec<f32> = alone
                .sample(&[1, shape[1], shape[2]])
                .unwrap()
                .to_vec()
                .unwrap();
            assert_eq!(&all[2 * one.len()..], &one[..]);
        }
        // One image is one plain seeded stream, whatever the shape.
        let one = PerImageNoise::new(5, 1).sample(&[2, 3]).unwrap();
        assert_eq!(one, SeededNoise::new(5).sample(&[2, 3]).unwrap());
        let err = batch.sample(&[2, 4]).unwrap_err().to_string();
        assert!(err.contains("3 images"), "{err}");
    }
}
