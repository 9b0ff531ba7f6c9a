//! Euler ancestral — port of diffusers' `schedulers/scheduling_euler_ancestral_discrete.py`
//! (`EulerAncestralDiscreteScheduler`).
//!
//! An Euler step to σ_down followed by fresh noise of standard deviation σ_up (k-diffusion's
//! `sample_euler_ancestral`).

use std::marker::PhantomData;

use burn::prelude::*;
use prompt_diffusion_core::Result;
use prompt_diffusion_core::noise::NoiseSource;

use crate::config::{SchedulerConfig, prediction_type};
use crate::euler_discrete::sigma_init;
use crate::options::{PredictionType, TimestepSpacing};
use crate::schedule::{NoiseSchedule, StepIndex, nearest, np_interp, sigma_timesteps};
use crate::tensor::{check_step_shapes, check_steps, draw_noise, exhausted, f32, to_dtype};
use crate::{Scheduler, SchedulerKind};

/// diffusers' `EulerAncestralDiscreteScheduler`.
///
/// Defaults: linear betas 0.0001–0.02, epsilon prediction, `timestep_spacing` linspace,
/// `steps_offset` 0. Supports epsilon and v-prediction. Draws one noise tensor per step.
#[derive(Debug, Clone)]
pub struct EulerAncestralDiscreteScheduler<B: Backend> {
    schedule: NoiseSchedule,
    prediction_type: PredictionType,
    timestep_spacing: TimestepSpacing,
    steps_offset: usize,
    timesteps: Vec<f64>,
    sigmas: Vec<f32>,
    index: StepIndex,
    _backend: PhantomData<B>,
}

impl<B: Backend> EulerAncestralDiscreteScheduler<B> {
    /// Builds the scheduler from a config, filling absent keys with Euler ancestral's defaults.
    ///
    /// # Errors
    /// [`Error::Config`](prompt_diffusion_core::Error::Config) for a prediction type other than
    /// epsilon and v-prediction (diffusers raises for `sample`),
    /// [`Error::Unsupported`](prompt_diffusion_core::Error::Unsupported) for a DDPM-only beta
    /// schedule.
    pub fn new(config: &SchedulerConfig) -> Result<Self> {
        let schedule = NoiseSchedule::new(config, true, true)?;
        let prediction_type = prediction_type(
            config,
            "EulerAncestralDiscreteScheduler",
            &[PredictionType::Epsilon, PredictionType::VPrediction],
        )?;
        let sigmas = schedule.sigmas().into_iter().rev().chain([0.0]).collect();
        let timesteps = (0..schedule.num_train_timesteps)
            .rev()
            .map(|t| t as f64)
            .collect();
        Ok(Self {
            prediction_type,
            timestep_spacing: config.timestep_spacing.unwrap_or(TimestepSpacing::Linspace),
            steps_offset: config.steps_offset.unwrap_or(0),
            timesteps,
            sigmas,
            index: StepIndex::default(),
            schedule,
            _backend: PhantomData,
        })
    }
}

impl<B: Backend> Scheduler<B> for EulerAncestralDiscreteScheduler<B> {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::EulerAncestral
    }

    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<()> {
        let n_train = self.schedule.num_train_timesteps;
        check_steps(num_inference_steps, n_train)?;
        let timesteps = sigma_timesteps(
            self.timestep_spacing,
            n_train,
            num_inference_steps,
            self.steps_offset,
        );
        let train_sigmas = self.schedule.sigmas();
        self.sigmas = timesteps
            .iter()
            .map(|&t| np_interp(t, &train_sigmas) as f32)
            .chain([0.0])
            .collect();
        self.timesteps = timesteps;
        self.index = StepIndex::default();
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn set_begin_index(&mut self, index: usize) {
        self.index.begin = Some(index);
    }

    fn init_noise_sigma(&self) -> f64 {
        sigma_init(&self.sigmas, self.timestep_spacing)
    }

    fn scale_model_input(&mut self, sample: Tensor<B, 4>, timestep: f64) -> Tensor<B, 4> {
        let i = match self.index.current(&self.timesteps, timestep, false) {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!("scale_model_input: {e}; using the nearest timestep");
                nearest(&self.timesteps, timestep)
            }
        };
        let sigma = self.sigmas.get(i).copied().unwrap_or(0.0);
        sample.div_scalar((sigma * sigma + 1.0).sqrt())
    }

    fn step(
        &mut self,
        model_output: Tensor<B, 4>,
        timestep: f64,
        sample: Tensor<B, 4>,
        noise: &mut dyn NoiseSource,
    ) -> Result<Tensor<B, 4>> {
        check_step_shapes(&model_output, &sample)?;
        let i = self.index.current(&self.timesteps, timestep, false)?;
        let (sigma, sigma_to) = match (self.sigmas.get(i), self.sigmas.get(i + 1)) {
            (Some(&s), Some(&n)) => (s, n),
            _ => return Err(exhausted(self.timesteps.len())),
        };
        let dtype = model_output.dtype();
        let (model_output, sample) = (f32(model_output), f32(sample));
        let pred_x0 = match self.prediction_type {
            PredictionType::VPrediction => model_output
                .clone()
                .mul_scalar(-sigma / (sigma * sigma + 1.0).sqrt())
                .add(sample.clone().div_scalar(sigma * sigma + 1.0)),
            _ => sample.clone().sub(model_output.clone().mul_scalar(sigma)),
        };
        let (from2, to2) = (sigma * sigma, sigma_to * sigma_to);
        let sigma_up = (to2 * (from2 - to2) / from2).sqrt();
        let sigma_down = (to2 - sigma_up * sigma_up).sqrt();
        let derivative = sample.clone().sub(pred_x0).div_scalar(sigma);
        let prev = sample.add(derivative.mul_scalar(sigma_down - sigma));
        let z = draw_noise(noise, &model_output)?;
        let prev = prev.add(z.mul_scalar(sigma_up));
        self.index.step = Some(i + 1);
        Ok(to_dtype(prev, dtype))
    }

    fn add_noise(
        &self,
        original: Tensor<B, 4>,
        noise: Tensor<B, 4>,
        timestep: f64,
    ) -> Tensor<B, 4> {
        let i = self.index.for_add_noise(&self.timesteps, timestep);
        let sigma = self.sigmas.get(i).copied().unwrap_or(0.0);
        original.add(noise.mul_scalar(sigma))
    }
}
