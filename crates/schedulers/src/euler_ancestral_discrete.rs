//! Euler ancestral — port of diffusers' `schedulers/scheduling_euler_ancestral_discrete.py`
//! (`EulerAncestralDiscreteScheduler`).
//!
//! An Euler step to σ_down followed by fresh noise of standard deviation σ_up (k-diffusion's
//! `sample_euler_ancestral`).

use std::marker::PhantomData;

use burn::prelude::*;
use prompt_diffusion_core::Result;
use prompt_diffusion_core::noise::NoiseSource;

use crate::SchedulerKind;
use crate::schedule::{Rule, SigmaState, Step, rule_state, sigma_x0};
use crate::tensor::draw_noise;

/// diffusers' `EulerAncestralDiscreteScheduler`.
///
/// Defaults: linear betas 0.0001–0.02, epsilon prediction, `timestep_spacing` linspace,
/// `steps_offset` 0. Supports epsilon and v-prediction. Draws one noise tensor per step.
#[derive(Debug, Clone)]
pub struct EulerAncestralDiscreteScheduler<B: Backend> {
    state: SigmaState,
    _backend: PhantomData<B>,
}

impl<B: Backend> EulerAncestralDiscreteScheduler<B> {
    /// An Euler ancestral scheduler on `state` (exploding form, interpolated sigmas, final
    /// sigma zero).
    pub(crate) fn new(state: SigmaState) -> Self {
        Self {
            state,
            _backend: PhantomData,
        }
    }
}

impl<B: Backend> Rule<B> for EulerAncestralDiscreteScheduler<B> {
    rule_state!(SigmaState, SchedulerKind::EulerAncestral);

    fn update(&mut self, step: Step<B>, noise: &mut dyn NoiseSource) -> Result<Tensor<B, 4>> {
        let (i, model_output, sample) = (step.at, step.model_output, step.sample);
        let (sigma, sigma_to) = (self.state.sigmas[i], self.state.sigmas[i + 1]);
        let prediction = self.state.params.prediction_type;
        let pred_x0 = sigma_x0(prediction, model_output.clone(), &sample, sigma);
        let (from2, to2) = (sigma * sigma, sigma_to * sigma_to);
        let sigma_up = (to2 * (from2 - to2) / from2).sqrt();
        let sigma_down = (to2 - sigma_up * sigma_up).sqrt();
        let derivative = sample.clone().sub(pred_x0).div_scalar(sigma);
        let prev = sample.add(derivative.mul_scalar(sigma_down - sigma));
        let z = draw_noise(noise, &model_output)?;
        Ok(prev.add(z.mul_scalar(sigma_up)))
    }
}
