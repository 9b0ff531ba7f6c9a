//! LMS — port of diffusers' `schedulers/scheduling_lms_discrete.py` (`LMSDiscreteScheduler`).
//!
//! The linear multistep method of k-diffusion (`sample_lms`, order 4). diffusers integrates each
//! Lagrange basis polynomial with `scipy.integrate.quad`; the integrand is a polynomial of degree
//! ≤ 3, so here it is integrated exactly by three-point Gauss–Legendre quadrature.

use burn::prelude::*;
use prompt_diffusion_core::Result;
use prompt_diffusion_core::noise::NoiseSource;

use crate::schedule::{Rule, SigmaState, Step, rule_state, sigma_x0};
use crate::{Scheduler, SchedulerKind};

/// The multistep order diffusers' `step` uses by default.
const ORDER: usize = 4;

/// diffusers' `LMSDiscreteScheduler`.
///
/// Defaults: linear betas 0.0001–0.02, no Karras/exponential sigmas, epsilon prediction,
/// `timestep_spacing` linspace, `steps_offset` 0; order 4.
#[derive(Debug, Clone)]
pub struct LmsDiscreteScheduler<B: Backend> {
    state: SigmaState,
    derivatives: Vec<Tensor<B, 4>>,
}

impl<B: Backend> LmsDiscreteScheduler<B> {
    /// An LMS scheduler on `state` (exploding form, final sigma zero; Karras spacing ignores
    /// the configured bounds in LMS, exponential spacing reads them).
    ///
    /// # Errors
    /// None in practice: the full-length schedule it lays out always fits.
    pub(crate) fn new(state: SigmaState) -> Result<Self> {
        let mut scheduler = Self {
            state,
            derivatives: Vec::new(),
        };
        // Like the reference's constructor: a full-length schedule until `set_timesteps`.
        let n = scheduler.state.params.schedule.num_train_timesteps;
        Scheduler::<B>::set_timesteps(&mut scheduler, n)?;
        Ok(scheduler)
    }

    /// `get_lms_coefficient`: ∫ from σ_t to σ_{t+1} of the Lagrange basis polynomial of
    /// `current` over the last `order` sigmas.
    fn coefficient(&self, order: usize, t: usize, current: usize) -> f64 {
        let s = |k: usize| self.state.sigmas[t - k] as f64;
        let basis = |tau: f64| {
            (0..order)
                .filter(|&k| k != current)
                .map(|k| (tau - s(k)) / (s(current) - s(k)))
                .product::<f64>()
        };
        let (a, b) = (self.state.sigmas[t] as f64, self.state.sigmas[t + 1] as f64);
        let (mid, half) = ((a + b) / 2.0, (b - a) / 2.0);
        let node = (3.0f64 / 5.0).sqrt();
        half * (5.0 / 9.0 * basis(mid - half * node)
            + 8.0 / 9.0 * basis(mid)
            + 5.0 / 9.0 * basis(mid + half * node))
    }
}

impl<B: Backend> Rule<B> for LmsDiscreteScheduler<B> {
    rule_state!(SigmaState, SchedulerKind::Lms);

    fn lay_out(&mut self, n: usize) -> Result<()> {
        self.state.lay_out_discrete(n, false);
        self.derivatives.clear();
        Ok(())
    }

    fn history(&self) -> Option<[usize; 4]> {
        self.derivatives.last().map(Tensor::dims)
    }

    fn update(&mut self, step: Step<B>, _noise: &mut dyn NoiseSource) -> Result<Tensor<B, 4>> {
        let (i, model_output, sample) = (step.at, step.model_output, step.sample);
        let sigma = self.state.sigmas[i];
        let prediction = self.state.params.prediction_type;
        let pred_x0 = sigma_x0(prediction, model_output, &sample, sigma);
        let derivative = sample.clone().sub(pred_x0).div_scalar(sigma);
        self.derivatives.push(derivative);
        if self.derivatives.len() > ORDER {
            self.derivatives.remove(0);
        }
        let order = (i + 1).min(ORDER);
        let update = (0..order)
            .zip(self.derivatives.iter().rev())
            .map(|(k, d)| d.clone().mul_scalar(self.coefficient(order, i, k) as f32))
            .reduce(|acc, t| acc.add(t));
        Ok(match update {
            Some(u) => sample.add(u),
            None => sample,
        })
    }
}
