//! Euler — port of diffusers' `schedulers/scheduling_euler_discrete.py`
//! (`EulerDiscreteScheduler`).
//!
//! Algorithm 2 of Karras et al., "Elucidating the Design Space of Diffusion-Based Generative
//! Models" (<https://arxiv.org/abs/2206.00364>), with `s_churn = 0` (no added noise), as
//! diffusers' pipelines call it.

use std::marker::PhantomData;

use burn::prelude::*;
use prompt_diffusion_core::Result;
use prompt_diffusion_core::noise::NoiseSource;

use crate::SchedulerKind;
use crate::options::{InterpolationType, PredictionType};
use crate::schedule::{Rule, SigmaState, Step, rule_state, sigma_x0};

/// diffusers' `EulerDiscreteScheduler`.
///
/// Defaults: linear betas 0.0001–0.02, epsilon prediction, `interpolation_type` linear, no
/// Karras/exponential sigmas, `timestep_spacing` linspace, `timestep_type` discrete,
/// `final_sigmas_type` zero, `steps_offset` 0.
#[derive(Debug, Clone)]
pub struct EulerDiscreteScheduler<B: Backend> {
    state: SigmaState,
    interpolation: InterpolationType,
    continuous: bool,
    _backend: PhantomData<B>,
}

impl<B: Backend> EulerDiscreteScheduler<B> {
    /// An Euler scheduler on `state` (exploding form) interpolating sigmas with
    /// `interpolation`; `continuous_timesteps` (`timestep_type = "continuous"`) takes effect
    /// with v-prediction only.
    pub(crate) fn new(
        mut state: SigmaState,
        interpolation: InterpolationType,
        continuous_timesteps: bool,
    ) -> Self {
        let continuous =
            continuous_timesteps && state.params.prediction_type == PredictionType::VPrediction;
        if continuous {
            let count = state.sigmas.len() - 1;
            state.timesteps = continuous_timesteps_of(&state.sigmas[..count]);
        }
        Self {
            state,
            interpolation,
            continuous,
            _backend: PhantomData,
        }
    }
}

/// `0.25·ln σ` in float32, for each sigma.
fn continuous_timesteps_of(sigmas: &[f32]) -> Vec<f64> {
    sigmas.iter().map(|s| (0.25f32 * s.ln()) as f64).collect()
}

impl<B: Backend> Rule<B> for EulerDiscreteScheduler<B> {
    rule_state!(SigmaState, SchedulerKind::Euler);

    fn lay_out(&mut self, n: usize) -> Result<()> {
        let log_linear = self.interpolation == InterpolationType::LogLinear;
        self.state.lay_out_discrete(n, log_linear);
        if self.continuous {
            let count = self.state.sigmas.len() - 1;
            self.state.timesteps = continuous_timesteps_of(&self.state.sigmas[..count]);
        }
        Ok(())
    }

    fn update(&mut self, step: Step<B>, _noise: &mut dyn NoiseSource) -> Result<Tensor<B, 4>> {
        let (i, model_output, sample) = (step.at, step.model_output, step.sample);
        let (sigma, sigma_next) = (self.state.sigmas[i], self.state.sigmas[i + 1]);
        // γ = 0 (s_churn = 0), so σ̂ = σ·(γ + 1) = σ and no noise is added.
        let sigma_hat = sigma * (0.0 + 1.0);
        let prediction = self.state.params.prediction_type;
        let pred_x0 = sigma_x0(prediction, model_output, &sample, sigma_hat);
        let derivative = sample.clone().sub(pred_x0).div_scalar(sigma_hat);
        let dt = sigma_next - sigma_hat;
        Ok(sample.add(derivative.mul_scalar(dt)))
    }
}
