//! `Sampler`: the one denoising loop, driving any [`Denoiser`] through a [`Scheduler`].
//!
//! A pipeline builds its conditioning and its denoiser, asks the sampler for the initial
//! latents (seeded noise, given latents, or an image's latents noised to the first timestep for
//! img2img) and calls [`Sampler::sample`]. The loop scales the model input, runs the denoiser,
//! steps the scheduler, checks the latents for NaN/Inf and reports progress, which can cancel
//! the run.

use std::ops::ControlFlow;
use std::time::Instant;

use burn::prelude::*;
use burn::tensor::DType;
use prompt_diffusion_core::denoiser::Denoiser;
use prompt_diffusion_core::finite::{Stage, check_finite};
use prompt_diffusion_core::noise::{NoiseSource, noise_tensor};
use prompt_diffusion_core::progress::{StepCallback, StepInfo};
use prompt_diffusion_core::{Error, Result};

use crate::{Scheduler, SchedulerConfig, SchedulerKind};

/// A scheduler with its timesteps set, and where on them the loop starts.
pub struct Sampler<B: Backend> {
    scheduler: Box<dyn Scheduler<B>>,
    steps: usize,
    start: usize,
    blend: Option<MaskBlend<B>>,
}

/// Inpainting with a model that knows nothing of masks (diffusers' 4-channel UNet path): after
/// every step the latents outside the mask are replaced by the image's latents noised to the
/// next timestep (`scheduler.add_noise(image, noise, t[i+1])`; the clean image latents after the
/// last step), so only the masked region is generated.
#[derive(Debug, Clone)]
pub struct MaskBlend<B: Backend> {
    /// The image's latents, `[n, c, h, w]` (f32).
    pub image_latents: Tensor<B, 4>,
    /// Where to generate, `[n, 1, h, w]`: 1 inside the region to repaint, 0 where the image is
    /// kept.
    pub mask: Tensor<B, 4>,
    /// The noise the image latents are noised with (the initial noise of the run), `[n, c, h, w]`.
    pub noise: Tensor<B, 4>,
}

impl<B: Backend> std::fmt::Debug for Sampler<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sampler")
            .field("kind", &self.scheduler.kind())
            .field("timesteps", &self.timesteps())
            .finish()
    }
}

impl<B: Backend> Sampler<B> {
    /// Sets `scheduler`'s timesteps for `steps` steps; the loop runs all of them.
    ///
    /// # Errors
    /// The scheduler's [`set_timesteps`](Scheduler::set_timesteps) errors.
    pub fn new(mut scheduler: Box<dyn Scheduler<B>>, steps: usize) -> Result<Self> {
        scheduler.set_timesteps(steps)?;
        Ok(Self {
            scheduler,
            steps,
            start: 0,
            blend: None,
        })
    }

    /// Builds the scheduler `kind` (the config's own class when `None`) from `config`, sets
    /// DDIM's `eta`, and its timesteps for `steps` steps.
    ///
    /// # Errors
    /// An unsupported config or kind, or an invalid number of steps.
    pub fn from_config(
        config: &SchedulerConfig,
        kind: Option<SchedulerKind>,
        eta: f64,
        steps: usize,
        device: &B::Device,
    ) -> Result<Self> {
        let mut scheduler = config.build::<B>(kind, device)?;
        scheduler.set_eta(eta);
        Self::new(scheduler, steps)
    }

    /// img2img: runs only the last `strength` part of the schedule (diffusers'
    /// `get_timesteps`: the loop starts at index `steps − ⌊steps · strength⌋`).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when `strength` is outside [0, 1] or leaves no step.
    pub fn with_strength(mut self, strength: f64) -> Result<Self> {
        Self::check_strength(strength)?;
        let steps = self.steps;
        let init = ((steps as f64 * strength) as usize).min(steps);
        if init == 0 {
            return Err(Error::invalid_input(
                "strength",
                format!("{strength} × {steps} steps leaves no denoising step"),
            ));
        }
        self.start = steps - init;
        if self.timesteps().is_empty() {
            return Err(Error::invalid_input("strength", "leaves no denoising step"));
        }
        self.scheduler.set_begin_index(self.start);
        Ok(self)
    }

    /// Inpaints by blending: see [`MaskBlend`].
    ///
    /// # Errors
    /// [`Error::Shape`] when the mask or the noise does not fit the image latents.
    pub fn with_mask_blend(mut self, blend: MaskBlend<B>) -> Result<Self> {
        let [n, c, h, w] = blend.image_latents.dims();
        for (key, tensor, expected) in [
            ("mask", &blend.mask, [n, 1, h, w]),
            ("noise", &blend.noise, [n, c, h, w]),
        ] {
            if tensor.dims() != expected {
                return Err(Error::Shape {
                    origin: None,
                    key: key.into(),
                    expected: format!("{expected:?} (the image latents' batch and size)"),
                    found: tensor.dims().to_vec(),
                });
            }
        }
        self.blend = Some(blend);
        Ok(self)
    }

    /// Checks an img2img strength before any work: it must lie in [0, 1].
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming the strength.
    pub fn check_strength(strength: f64) -> Result<()> {
        if !(0.0..=1.0).contains(&strength) {
            return Err(Error::invalid_input(
                "strength",
                format!("{strength} is outside [0, 1]"),
            ));
        }
        Ok(())
    }

    /// The timesteps the loop visits.
    pub fn timesteps(&self) -> &[f64] {
        self.scheduler
            .timesteps()
            .get(self.start..)
            .unwrap_or_default()
    }

    /// The scheduler.
    pub fn scheduler(&self) -> &dyn Scheduler<B> {
        self.scheduler.as_ref()
    }

    /// The initial latents of a generation: `given` (e.g. to reproduce another
    /// implementation's run) or seeded noise of `shape`, times the scheduler's initial sigma
    /// (f32).
    ///
    /// # Errors
    /// [`Error::Shape`] when `given` does not have `shape`; the noise source's errors.
    pub fn initial_latents(
        &self,
        shape: [usize; 4],
        given: Option<&TensorData>,
        noise: &mut dyn NoiseSource,
        device: &B::Device,
    ) -> Result<Tensor<B, 4>> {
        let latents = match given {
            Some(data) if data.shape.as_slice() != shape => {
                return Err(Error::Shape {
                    origin: None,
                    key: "latents".into(),
                    expected: format!("{shape:?} (images, latent channels, height, width)"),
                    found: data.shape.to_vec(),
                });
            }
            Some(data) => {
                Tensor::from_data(data.clone().convert_dtype(DType::F32), (device, DType::F32))
            }
            None => noise_tensor::<B, 4>(noise, shape, device, DType::F32)?,
        };
        Ok(latents * self.scheduler.init_noise_sigma())
    }

    /// `latents` noised with `eps` to the first timestep the loop visits (the img2img start,
    /// and Diff-Plugin's).
    pub fn noised(&self, latents: Tensor<B, 4>, eps: Tensor<B, 4>) -> Tensor<B, 4> {
        let first = self.timesteps().first().copied().unwrap_or_default();
        self.scheduler.add_noise(latents, eps, first)
    }

    /// Runs `denoiser` over the timesteps, starting from `latents`.
    ///
    /// The denoiser receives the scheduler-scaled latents (f32) and the timestep; its
    /// prediction is cast to f32 for the scheduler, so latents and scheduler arithmetic stay in
    /// f32 whatever the model's dtype. The latents are checked for NaN and infinite values
    /// before the first step and after each one ([`check_finite`]: one reduction read back per
    /// step), so a broken weight or a half-precision overflow fails at the step it appears.
    ///
    /// # Errors
    /// The denoiser's and the scheduler's errors, [`Error::NonFinite`] naming the step where
    /// NaN/Inf appeared, and [`Error::Cancelled`] when `callback` stops the run.
    pub fn sample<D: Denoiser<B>>(
        &mut self,
        denoiser: &D,
        conditioning: &D::Conditioning,
        latents: Tensor<B, 4>,
        noise: &mut dyn NoiseSource,
        callback: &mut dyn StepCallback,
    ) -> Result<Tensor<B, 4>> {
        let mut latents = latents.cast(DType::F32);
        check_finite(&latents, Stage::InitialLatents, DType::F32)?;
        let timesteps = self.timesteps().to_vec();
        let total = timesteps.len();
        for (i, &t) in timesteps.iter().enumerate() {
            let start = Instant::now();
            let input = self.scheduler.scale_model_input(latents.clone(), t);
            let prediction = denoiser.predict(input, t, conditioning)?.cast(DType::F32);
            latents = self.scheduler.step(prediction, t, latents, noise)?;
            if let Some(blend) = &self.blend {
                latents = self.blended(blend, latents, timesteps.get(i + 1).copied());
            }
            check_finite(&latents, Stage::AfterStep(i + 1), denoiser.dtype())?;
            let info = StepInfo {
                step: i + 1,
                total,
                timestep: t,
                elapsed: start.elapsed(),
            };
            if let ControlFlow::Break(()) = callback.on_step(&info) {
                return Err(Error::Cancelled { step: i });
            }
        }
        Ok(latents)
    }

    /// `(1 − mask) · image + mask · latents`, the image noised to `next` (clean after the last
    /// step).
    fn blended(
        &self,
        blend: &MaskBlend<B>,
        latents: Tensor<B, 4>,
        next: Option<f64>,
    ) -> Tensor<B, 4> {
        let image = blend.image_latents.clone();
        let image = match next {
            Some(t) => self.scheduler.add_noise(image, blend.noise.clone(), t),
            None => image,
        };
        let mask = blend.mask.clone();
        image * (mask.ones_like() - mask.clone()) + latents * mask
    }
}
