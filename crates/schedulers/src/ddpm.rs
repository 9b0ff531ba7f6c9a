//! DDPM — port of diffusers' `schedulers/scheduling_ddpm.py` (`DDPMScheduler`).
//!
//! Ho et al., "Denoising Diffusion Probabilistic Models" (<https://arxiv.org/abs/2006.11239>),
//! formulas (6), (7) and (15).

use std::marker::PhantomData;

use burn::prelude::*;
use prompt_diffusion_core::noise::NoiseSource;
use prompt_diffusion_core::{Error, Result};

use crate::SchedulerKind;
use crate::options::VarianceType;
use crate::schedule::{DiscreteState, Rule, Step, rule_state};
use crate::tensor::draw_noise;

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
    state: DiscreteState,
    variance_type: VarianceType,
    clip_sample: Option<f32>,
    _backend: PhantomData<B>,
}

impl<B: Backend> DdpmScheduler<B> {
    /// A DDPM scheduler on `state` (built with `set_alpha_to_one`: ᾱ is 1 after the last
    /// step) adding noise of `variance_type`, clipping x0 to `±clip_sample` when set.
    pub(crate) fn new(
        state: DiscreteState,
        variance_type: VarianceType,
        clip_sample: Option<f32>,
    ) -> Self {
        Self {
            state,
            variance_type,
            clip_sample,
            _backend: PhantomData,
        }
    }

    /// `previous_timestep`: the entry after `t`'s first occurrence, or −1 after the last one.
    fn previous_timestep(&self, t: usize) -> Result<i64> {
        let timesteps = &self.state.timesteps;
        let i = timesteps
            .iter()
            .position(|&s| s == t as f64)
            .ok_or_else(|| {
                Error::invalid_input("timestep", format!("{t} is not one of the timesteps"))
            })?;
        Ok(timesteps.get(i + 1).map_or(-1, |&p| p as i64))
    }
}

impl<B: Backend> Rule<B> for DdpmScheduler<B> {
    rule_state!(DiscreteState, SchedulerKind::Ddpm);

    fn update(&mut self, step: Step<B>, noise: &mut dyn NoiseSource) -> Result<Tensor<B, 4>> {
        let (t, model_output, sample) = (step.at, step.model_output, step.sample);
        // 1. alphas and betas.
        let prev_t = self.previous_timestep(t)?;
        let (alpha_t, alpha_prev) = self.state.alphas(t as i64, prev_t)?;
        let beta_t = 1.0 - alpha_t;
        let beta_prev = 1.0 - alpha_prev;
        let current_alpha = alpha_t / alpha_prev;
        let current_beta = 1.0 - current_alpha;

        // 2. predicted x0, formula (15); 3. clip.
        let pred_x0 = self
            .state
            .predict_x0(&model_output, &sample, alpha_t, self.clip_sample);

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
        Ok(prev)
    }
}
