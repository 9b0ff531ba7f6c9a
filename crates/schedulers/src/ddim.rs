//! DDIM — port of diffusers' `schedulers/scheduling_ddim.py` (`DDIMScheduler`).
//!
//! Song et al., "Denoising Diffusion Implicit Models" (<https://arxiv.org/abs/2010.02502>),
//! formulas (12) and (16).

use std::marker::PhantomData;

use burn::prelude::*;
use prompt_diffusion_core::Result;
use prompt_diffusion_core::noise::NoiseSource;

use crate::SchedulerKind;
use crate::options::PredictionType;
use crate::schedule::{DiscreteState, Rule, Step, rule_state};
use crate::tensor::draw_noise;

/// diffusers' `DDIMScheduler`.
///
/// Defaults: linear betas 0.0001–0.02, `clip_sample` true (range 1.0), `set_alpha_to_one` true,
/// `steps_offset` 0, epsilon prediction, `timestep_spacing` leading. Thresholding is not
/// supported. η is set with [`Scheduler::set_eta`](crate::Scheduler::set_eta) (default 0).
#[derive(Debug, Clone)]
pub struct DdimScheduler<B: Backend> {
    state: DiscreteState,
    clip_sample: Option<f32>,
    eta: f64,
    _backend: PhantomData<B>,
}

impl<B: Backend> DdimScheduler<B> {
    /// A DDIM scheduler on `state`, clipping the predicted x0 to `±clip_sample` when set.
    pub(crate) fn new(state: DiscreteState, clip_sample: Option<f32>) -> Self {
        Self {
            state,
            clip_sample,
            eta: 0.0,
            _backend: PhantomData,
        }
    }
}

impl<B: Backend> Rule<B> for DdimScheduler<B> {
    rule_state!(DiscreteState, SchedulerKind::Ddim);

    fn update(&mut self, step: Step<B>, noise: &mut dyn NoiseSource) -> Result<Tensor<B, 4>> {
        let (t, model_output, sample) = (step.at, step.model_output, step.sample);
        // 1. previous step value; 2. alphas and betas.
        let prev_t = t as i64 - self.state.ratio() as i64;
        let (alpha_t, alpha_prev) = self.state.alphas(t as i64, prev_t)?;
        let beta_t = 1.0 - alpha_t;

        // 3. predicted x0 and ε (formula (12)); 4. clip x0.
        let pred_x0 = self
            .state
            .predict_x0(&model_output, &sample, alpha_t, self.clip_sample);
        let pred_eps = match self.state.params.prediction_type {
            PredictionType::Sample => sample
                .sub(model_output.mul_scalar(alpha_t.sqrt()))
                .div_scalar(beta_t.sqrt()),
            PredictionType::VPrediction => model_output
                .mul_scalar(alpha_t.sqrt())
                .add(sample.mul_scalar(beta_t.sqrt())),
            _ => model_output,
        };

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
        Ok(prev)
    }

    fn use_eta(&mut self, eta: f64) {
        self.eta = eta;
    }
}
