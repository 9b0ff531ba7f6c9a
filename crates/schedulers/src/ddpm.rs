//! DDPM — port of diffusers' `schedulers/scheduling_ddpm.py` (`DDPMScheduler`).
//!
//! Ho et al., "Denoising Diffusion Probabilistic Models" (<https://arxiv.org/abs/2006.11239>),
//! formulas (6), (7) and (15).

use std::marker::PhantomData;

use burn::prelude::*;
use prompt_diffusion_core::noise::NoiseSource;
use prompt_diffusion_core::{Error, Result};

use crate::config::{SchedulerConfig, prediction_type, reject_flags};
use crate::ddim::discrete_timesteps;
use crate::options::{PredictionType, TimestepSpacing, VarianceType};
use crate::schedule::NoiseSchedule;
use crate::tensor::{
    alpha_add_noise, check_step_shapes, check_steps, discrete_timestep, draw_noise, f32,
    not_initialised, to_dtype,
};
use crate::{Scheduler, SchedulerKind};

/// diffusers' `DDPMScheduler`.
///
/// Defaults: linear betas 0.0001–0.02, `variance_type` fixed_small, `clip_sample` true (range
/// 1.0), epsilon prediction, `timestep_spacing` leading, `steps_offset` 0. Learned variances and
/// thresholding are not supported.
///
/// Deviation: for `fixed_large_log` diffusers' `step` takes the square root of the *log*
/// variance and returns NaN; here the log variance is used as one (σ = exp(½·ln β_t), i.e.
/// `fixed_large` up to rounding).
#[derive(Debug, Clone)]
pub struct DdpmScheduler<B: Backend> {
    schedule: NoiseSchedule,
    variance_type: VarianceType,
    prediction_type: PredictionType,
    clip_sample: Option<f32>,
    timestep_spacing: TimestepSpacing,
    steps_offset: usize,
    num_inference_steps: Option<usize>,
    timesteps: Vec<f64>,
    _backend: PhantomData<B>,
}

impl<B: Backend> DdpmScheduler<B> {
    /// Builds the scheduler from a config, filling absent keys with DDPM's defaults.
    ///
    /// # Errors
    /// [`Error::Config`] for a prediction type DDPM rejects, [`Error::Unsupported`] for learned
    /// variances, thresholding, or the sigmoid/laplace beta schedules.
    pub fn new(config: &SchedulerConfig) -> Result<Self> {
        reject_flags("DDPMScheduler", &[("thresholding", config.thresholding)])?;
        let variance_type = config.variance_type.unwrap_or(VarianceType::FixedSmall);
        if matches!(
            variance_type,
            VarianceType::Learned | VarianceType::LearnedRange
        ) {
            return Err(Error::Unsupported(format!(
                "DDPM variance_type {variance_type:?} (a model predicting its variance)"
            )));
        }
        let schedule = NoiseSchedule::new(config, true, false)?;
        let prediction_type = prediction_type(
            config,
            "DDPMScheduler",
            &[
                PredictionType::Epsilon,
                PredictionType::Sample,
                PredictionType::VPrediction,
            ],
        )?;
        let clip_sample = config
            .clip_sample
            .unwrap_or(true)
            .then(|| config.clip_sample_range.unwrap_or(1.0) as f32);
        let timesteps = (0..schedule.num_train_timesteps)
            .rev()
            .map(|t| t as f64)
            .collect();
        Ok(Self {
            variance_type,
            prediction_type,
            clip_sample,
            timestep_spacing: config.timestep_spacing.unwrap_or(TimestepSpacing::Leading),
            steps_offset: config.steps_offset.unwrap_or(0),
            num_inference_steps: None,
            timesteps,
            schedule,
            _backend: PhantomData,
        })
    }

    /// `previous_timestep`: the entry after `t`'s first occurrence, or −1 after the last one.
    fn previous_timestep(&self, t: usize) -> Result<i64> {
        let i = self
            .timesteps
            .iter()
            .position(|&s| s == t as f64)
            .ok_or_else(|| {
                Error::invalid_input("timestep", format!("{t} is not one of the timesteps"))
            })?;
        Ok(self.timesteps.get(i + 1).map_or(-1, |&p| p as i64))
    }
}

impl<B: Backend> Scheduler<B> for DdpmScheduler<B> {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Ddpm
    }

    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<()> {
        let n_train = self.schedule.num_train_timesteps;
        check_steps(num_inference_steps, n_train)?;
        self.timesteps = discrete_timesteps(
            self.timestep_spacing,
            n_train,
            num_inference_steps,
            self.steps_offset,
        );
        self.num_inference_steps = Some(num_inference_steps);
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn set_begin_index(&mut self, _index: usize) {}

    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    fn scale_model_input(&mut self, sample: Tensor<B, 4>, _timestep: f64) -> Tensor<B, 4> {
        sample
    }

    fn step(
        &mut self,
        model_output: Tensor<B, 4>,
        timestep: f64,
        sample: Tensor<B, 4>,
        noise: &mut dyn NoiseSource,
    ) -> Result<Tensor<B, 4>> {
        self.num_inference_steps.ok_or_else(not_initialised)?;
        check_step_shapes(&model_output, &sample)?;
        let acp = &self.schedule.alphas_cumprod;
        let t = discrete_timestep(timestep, acp.len())?;
        let dtype = model_output.dtype();
        let (model_output, sample) = (f32(model_output), f32(sample));

        // 1. alphas and betas.
        let prev_t = self.previous_timestep(t)?;
        let alpha_t = acp[t];
        let alpha_prev = match usize::try_from(prev_t) {
            Ok(p) => *acp.get(p).ok_or_else(|| {
                Error::invalid_input("timestep", format!("previous timestep {p} out of range"))
            })?,
            Err(_) => 1.0,
        };
        let beta_t = 1.0 - alpha_t;
        let beta_prev = 1.0 - alpha_prev;
        let current_alpha = alpha_t / alpha_prev;
        let current_beta = 1.0 - current_alpha;

        // 2. predicted x0, formula (15); 3. clip.
        let mut pred_x0 = match self.prediction_type {
            PredictionType::Sample => model_output.clone(),
            PredictionType::VPrediction => sample
                .clone()
                .mul_scalar(alpha_t.sqrt())
                .sub(model_output.clone().mul_scalar(beta_t.sqrt())),
            _ => sample
                .clone()
                .sub(model_output.clone().mul_scalar(beta_t.sqrt()))
                .div_scalar(alpha_t.sqrt()),
        };
        if let Some(range) = self.clip_sample {
            pred_x0 = pred_x0.clamp(-range, range);
        }

        // 4.–5. posterior mean, formula (7).
        let x0_coeff = (alpha_prev.sqrt() * current_beta) / beta_t;
        let sample_coeff = current_alpha.sqrt() * beta_prev / beta_t;
        let mut prev = pred_x0
            .mul_scalar(x0_coeff)
            .add(sample.mul_scalar(sample_coeff));

        // 6. noise.
        if t > 0 {
            let z = draw_noise(noise, &model_output)?;
            // Formulas (6)–(7): β̃_t, clamped like the reference before any logarithm.
            let small = (beta_prev / beta_t * current_beta).max(1e-20);
            let std = match self.variance_type {
                VarianceType::FixedSmall => small.sqrt(),
                VarianceType::FixedSmallLog => (0.5 * small.ln()).exp(),
                VarianceType::FixedLarge => current_beta.sqrt(),
                _ => (0.5 * current_beta.ln()).exp(),
            };
            prev = prev.add(z.mul_scalar(std));
        }
        Ok(to_dtype(prev, dtype))
    }

    fn add_noise(
        &self,
        original: Tensor<B, 4>,
        noise: Tensor<B, 4>,
        timestep: f64,
    ) -> Tensor<B, 4> {
        alpha_add_noise(&self.schedule.alphas_cumprod, original, noise, timestep)
    }
}
