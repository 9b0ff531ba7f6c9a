//! The state DDIM, DDPM and PNDM share: `alphas_cumprod`, integer training timesteps, the step
//! count, ᾱ after the last step, and the forward process of `DDPMScheduler.add_noise`.

use burn::prelude::*;
use prompt_diffusion_core::{Error, Result};

use super::family::{Family, ScheduleParams};
use super::{leading_desc, linspace_desc, round_even, trailing_desc};
use crate::options::{PredictionType, TimestepSpacing};
use crate::tensor::{alpha_noise_scales, discrete_timestep};

/// The discrete-timestep family's shared state.
#[derive(Debug, Clone)]
pub struct DiscreteState {
    /// Schedule, spacing, offset and prediction type.
    pub params: ScheduleParams,
    /// ᾱ after the last step (`final_alpha_cumprod`: 1, or ᾱ₀ without `set_alpha_to_one`).
    pub final_alpha_cumprod: f32,
    /// The step count of the current schedule (`None` before `set_timesteps`).
    pub num_inference_steps: Option<usize>,
    /// The current timesteps.
    pub timesteps: Vec<f64>,
}

impl DiscreteState {
    /// The state before `set_timesteps`: every training timestep, descending.
    pub fn new(params: ScheduleParams, set_alpha_to_one: bool) -> Self {
        let acp = &params.schedule.alphas_cumprod;
        let final_alpha_cumprod = if set_alpha_to_one { 1.0 } else { acp[0] };
        let timesteps = (0..acp.len()).rev().map(|t| t as f64).collect();
        Self {
            params,
            final_alpha_cumprod,
            num_inference_steps: None,
            timesteps,
        }
    }

    /// The DDIM/DDPM timesteps for `n` steps (descending integers).
    pub fn descending(&self, n: usize) -> Vec<f64> {
        let num_train = self.params.schedule.num_train_timesteps;
        match self.params.timestep_spacing {
            TimestepSpacing::Linspace => linspace_desc((num_train - 1) as f64, n)
                .into_iter()
                .map(round_even)
                .collect(),
            TimestepSpacing::Leading => leading_desc(num_train / n, n, self.params.steps_offset),
            TimestepSpacing::Trailing => {
                trailing_desc(num_train as f64, num_train as f64 / n as f64)
            }
        }
    }

    /// `num_train_timesteps / num_inference_steps` (called by a rule's update, after
    /// [`Family::enter`] checked that the step count is set).
    pub fn ratio(&self) -> usize {
        self.params.schedule.num_train_timesteps / self.num_inference_steps.unwrap_or(1)
    }

    /// ᾱ at `t` and at `prev` (the final ᾱ for a negative `prev`).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a timestep outside the training schedule.
    pub fn alphas(&self, t: i64, prev: i64) -> Result<(f32, f32)> {
        let acp = &self.params.schedule.alphas_cumprod;
        let lookup = |t: i64| {
            usize::try_from(t)
                .ok()
                .and_then(|i| acp.get(i).copied())
                .ok_or_else(|| Error::invalid_input("timestep", format!("{t} out of range")))
        };
        let alpha_t = lookup(t)?;
        let alpha_prev = if prev >= 0 {
            lookup(prev)?
        } else {
            self.final_alpha_cumprod
        };
        Ok((alpha_t, alpha_prev))
    }

    /// The predicted x0 of DDIM and DDPM (formula (15) of the DDPM paper) at ᾱ = `alpha_t`,
    /// clipped to `±clip_sample` when set.
    pub fn predict_x0<B: Backend>(
        &self,
        model_output: &Tensor<B, 4>,
        sample: &Tensor<B, 4>,
        alpha_t: f32,
        clip_sample: Option<f32>,
    ) -> Tensor<B, 4> {
        let beta_t = 1.0 - alpha_t;
        let pred_x0 = match self.params.prediction_type {
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
        match clip_sample {
            Some(range) => pred_x0.clamp(-range, range),
            None => pred_x0,
        }
    }
}

impl Family for DiscreteState {
    fn params(&self) -> &ScheduleParams {
        &self.params
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    /// DDIM, DDPM and PNDM have no begin index.
    fn set_begin_index(&mut self, _index: usize) {}

    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    fn scale_model_input<B: Backend>(
        &mut self,
        sample: Tensor<B, 4>,
        _timestep: f64,
    ) -> Tensor<B, 4> {
        sample
    }

    fn noise_scales(&self, timestep: f64) -> (f32, f32) {
        alpha_noise_scales(&self.params.schedule.alphas_cumprod, timestep)
    }

    /// The DDIM/DDPM layout (PNDM lays out its own).
    fn lay_out(&mut self, n: usize) {
        self.timesteps = self.descending(n);
    }

    fn restarted(&mut self, n: usize) {
        self.num_inference_steps = Some(n);
    }

    fn ready(&self) -> bool {
        self.num_inference_steps.is_some()
    }

    fn enter(&mut self, timestep: f64) -> Result<usize> {
        discrete_timestep(timestep, self.params.schedule.alphas_cumprod.len())
    }

    fn leave(&mut self, _at: usize) {}
}
