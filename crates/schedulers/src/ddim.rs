//! DDIM — port of diffusers' `schedulers/scheduling_ddim.py` (`DDIMScheduler`).
//!
//! Song et al., "Denoising Diffusion Implicit Models" (<https://arxiv.org/abs/2010.02502>),
//! formulas (12) and (16).

use std::marker::PhantomData;

use burn::prelude::*;
use prompt_diffusion_core::noise::NoiseSource;
use prompt_diffusion_core::{Error, Result};

use crate::config::{SchedulerConfig, prediction_type, reject_flags};
use crate::options::{PredictionType, TimestepSpacing};
use crate::schedule::{NoiseSchedule, leading_desc, linspace_desc, round_even, trailing_desc};
use crate::tensor::{
    alpha_add_noise, check_step_shapes, check_steps, discrete_timestep, draw_noise, f32,
    not_initialised, to_dtype,
};
use crate::{Scheduler, SchedulerKind};

/// diffusers' `DDIMScheduler`.
///
/// Defaults: linear betas 0.0001–0.02, `clip_sample` true (range 1.0), `set_alpha_to_one` true,
/// `steps_offset` 0, epsilon prediction, `timestep_spacing` leading. Thresholding is not
/// supported. η is set with [`Scheduler::set_eta`] (default 0).
#[derive(Debug, Clone)]
pub struct DdimScheduler<B: Backend> {
    schedule: NoiseSchedule,
    final_alpha_cumprod: f32,
    prediction_type: PredictionType,
    clip_sample: Option<f32>,
    timestep_spacing: TimestepSpacing,
    steps_offset: usize,
    eta: f64,
    num_inference_steps: Option<usize>,
    timesteps: Vec<f64>,
    _backend: PhantomData<B>,
}

impl<B: Backend> DdimScheduler<B> {
    /// Builds the scheduler from a config, filling absent keys with DDIM's defaults.
    ///
    /// # Errors
    /// [`Error::Config`] for a prediction type DDIM rejects, [`Error::Unsupported`] for
    /// thresholding or a DDPM-only beta schedule.
    pub fn new(config: &SchedulerConfig) -> Result<Self> {
        reject_flags("DDIMScheduler", &[("thresholding", config.thresholding)])?;
        let schedule = NoiseSchedule::new(config, true, false)?;
        let prediction_type = prediction_type(
            config,
            "DDIMScheduler",
            &[
                PredictionType::Epsilon,
                PredictionType::Sample,
                PredictionType::VPrediction,
            ],
        )?;
        let final_alpha_cumprod = if config.set_alpha_to_one.unwrap_or(true) {
            1.0
        } else {
            schedule.alphas_cumprod[0]
        };
        let clip_sample = config
            .clip_sample
            .unwrap_or(true)
            .then(|| config.clip_sample_range.unwrap_or(1.0) as f32);
        let timesteps = (0..schedule.num_train_timesteps)
            .rev()
            .map(|t| t as f64)
            .collect();
        Ok(Self {
            final_alpha_cumprod,
            prediction_type,
            clip_sample,
            timestep_spacing: config.timestep_spacing.unwrap_or(TimestepSpacing::Leading),
            steps_offset: config.steps_offset.unwrap_or(0),
            eta: 0.0,
            num_inference_steps: None,
            timesteps,
            schedule,
            _backend: PhantomData,
        })
    }
}

/// The DDIM/DDPM timestep lists (descending integers).
pub(crate) fn discrete_timesteps(
    spacing: TimestepSpacing,
    num_train: usize,
    n: usize,
    steps_offset: usize,
) -> Vec<f64> {
    match spacing {
        TimestepSpacing::Linspace => linspace_desc((num_train - 1) as f64, n)
            .into_iter()
            .map(round_even)
            .collect(),
        TimestepSpacing::Leading => leading_desc(num_train / n, n, steps_offset),
        TimestepSpacing::Trailing => trailing_desc(num_train as f64, num_train as f64 / n as f64),
    }
}

impl<B: Backend> Scheduler<B> for DdimScheduler<B> {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Ddim
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
        let n = self.num_inference_steps.ok_or_else(not_initialised)?;
        check_step_shapes(&model_output, &sample)?;
        let acp = &self.schedule.alphas_cumprod;
        let t = discrete_timestep(timestep, acp.len())?;
        let dtype = model_output.dtype();
        let (model_output, sample) = (f32(model_output), f32(sample));

        // 1. previous step value; 2. alphas and betas.
        let prev_t = t as i64 - (self.schedule.num_train_timesteps / n) as i64;
        let alpha_t = acp[t];
        let alpha_prev = match usize::try_from(prev_t) {
            Ok(p) => *acp.get(p).ok_or_else(|| {
                Error::invalid_input("timestep", format!("previous timestep {p} out of range"))
            })?,
            Err(_) => self.final_alpha_cumprod,
        };
        let beta_t = 1.0 - alpha_t;

        // 3. predicted x0 and ε (formula (12)).
        let (mut pred_x0, pred_eps) = match self.prediction_type {
            PredictionType::Sample => {
                let eps = sample
                    .clone()
                    .sub(model_output.clone().mul_scalar(alpha_t.sqrt()))
                    .div_scalar(beta_t.sqrt());
                (model_output, eps)
            }
            PredictionType::VPrediction => (
                sample
                    .clone()
                    .mul_scalar(alpha_t.sqrt())
                    .sub(model_output.clone().mul_scalar(beta_t.sqrt())),
                model_output
                    .mul_scalar(alpha_t.sqrt())
                    .add(sample.mul_scalar(beta_t.sqrt())),
            ),
            _ => (
                sample
                    .sub(model_output.clone().mul_scalar(beta_t.sqrt()))
                    .div_scalar(alpha_t.sqrt()),
                model_output,
            ),
        };

        // 4. clip x0.
        if let Some(range) = self.clip_sample {
            pred_x0 = pred_x0.clamp(-range, range);
        }

        // 5. σ_t(η), formula (16).
        let variance = ((1.0 - alpha_prev) / beta_t) * (1.0 - alpha_t / alpha_prev);
        let std_dev = self.eta as f32 * variance.sqrt();

        // 6.–7. direction pointing to x_t, and x_{t−1}.
        let direction = pred_eps.mul_scalar((1.0 - alpha_prev - std_dev * std_dev).sqrt());
        let mut prev = pred_x0.mul_scalar(alpha_prev.sqrt()).add(direction);
        if self.eta > 0.0 {
            let z = draw_noise(noise, &prev)?;
            prev = prev.add(z.mul_scalar(std_dev));
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

    fn set_eta(&mut self, eta: f64) {
        self.eta = eta;
    }
}
