//! DPM-Solver multistep — port of diffusers' `schedulers/scheduling_dpmsolver_multistep.py`
//! (`DPMSolverMultistepScheduler`).
//!
//! Lu et al., "DPM-Solver" (<https://arxiv.org/abs/2206.00927>) and "DPM-Solver++"
//! (<https://arxiv.org/abs/2211.01095>): first-, second- (midpoint or Heun) and third-order
//! multistep updates in log-SNR time, deterministic (`dpmsolver++`, `dpmsolver`) or stochastic
//! (`sde-dpmsolver++`).

use std::marker::PhantomData;

use burn::prelude::*;
use prompt_diffusion_core::Result;
use prompt_diffusion_core::noise::NoiseSource;

use crate::SchedulerKind;
use crate::options::{AlgorithmType, BetaSchedule, FinalSigmasType};
use crate::schedule::{
    Rule, SigmaSpacing, SigmaState, Step, alpha_sigma, lambda, linspace_desc, rule_state,
};
use crate::tensor::{convert_model_output, draw_noise};

/// diffusers' `DPMSolverMultistepScheduler` (`dpm++2m`, and `dpm++2m-karras` with
/// `use_karras_sigmas`).
///
/// Defaults: linear betas 0.0001–0.02, `solver_order` 2, epsilon prediction,
/// `algorithm_type` dpmsolver++, `solver_type` midpoint, `lower_order_final` true,
/// `euler_at_final` false, no Karras/exponential/λ-uniform sigmas, `final_sigmas_type` zero,
/// `lambda_min_clipped` −∞, `timestep_spacing` linspace, `steps_offset` 0. Thresholding,
/// learned variances, flow sigmas, dynamic shifting and `sde-dpmsolver` are not supported.
#[derive(Debug, Clone)]
pub struct DpmSolverMultistepScheduler<B: Backend> {
    state: SigmaState,
    options: DpmSolverOptions,
    model_outputs: Vec<Tensor<B, 4>>,
    lower_order_nums: usize,
    _backend: PhantomData<B>,
}

/// DPM-Solver's own options (the factory resolves their defaults and rejects the unsupported
/// ones).
#[derive(Debug, Clone, Copy)]
pub(crate) struct DpmSolverOptions {
    /// `solver_order` (at least 1).
    pub solver_order: usize,
    /// `algorithm_type` (`deis` already mapped to `dpmsolver++`).
    pub algorithm: AlgorithmType,
    /// `solver_type = "heun"` (else midpoint).
    pub heun: bool,
    /// `lower_order_final`.
    pub lower_order_final: bool,
    /// `euler_at_final`.
    pub euler_at_final: bool,
    /// `use_lu_lambdas`.
    pub lu_lambdas: bool,
    /// `lambda_min_clipped`.
    pub lambda_min_clipped: f64,
}

impl<B: Backend> DpmSolverMultistepScheduler<B> {
    /// A DPM-Solver on `state` (preserving form) with `options`.
    pub(crate) fn new(mut state: SigmaState, options: DpmSolverOptions) -> Self {
        let n_train = state.params.schedule.num_train_timesteps;
        state.timesteps = linspace_desc((n_train - 1) as f64, n_train)
            .into_iter()
            .map(|t| t as f32 as f64)
            .collect();
        state.sigmas = state.params.schedule.sigmas();
        Self {
            state,
            options,
            model_outputs: Vec::new(),
            lower_order_nums: 0,
            _backend: PhantomData,
        }
    }

    /// The last training timestep kept by `lambda_min_clipped`.
    fn last_timestep(&self) -> usize {
        let clip = self.options.lambda_min_clipped as f32;
        // searchsorted(flip(λ_t), clip): λ_t decreases with t.
        let schedule = &self.state.params.schedule;
        let clipped = schedule
            .alphas_cumprod
            .iter()
            .rev()
            .map(|&a| lambda(a.sqrt(), (1.0 - a).sqrt()))
            .take_while(|&l| l < clip)
            .count();
        schedule.num_train_timesteps - clipped
    }

    /// The multistep update of `order` from step `i` (formulas of the reference's
    /// `dpm_solver_first_order_update`, `multistep_dpm_solver_{second,third}_order_update`).
    fn update_from(
        &self,
        order: usize,
        i: usize,
        sample: Tensor<B, 4>,
        noise: Option<Tensor<B, 4>>,
    ) -> Tensor<B, 4> {
        let s = |k: usize| {
            let (a, sg) = alpha_sigma(self.state.sigmas[k]);
            (a, sg, lambda(a, sg))
        };
        let (alpha_t, sigma_t, lambda_t) = s(i + 1);
        let (alpha_s0, sigma_s0, lambda_s0) = s(i);
        let h = lambda_t - lambda_s0;
        let m = |k: usize| self.model_outputs[self.model_outputs.len() - 1 - k].clone();
        let (em, ep) = ((-h).exp(), h.exp());
        let e2 = 1.0 - (-2.0 * h).exp();
        let mut terms: Vec<(f32, Tensor<B, 4>)> = Vec::with_capacity(4);
        let (d1, d2) = match order {
            1 => (None, None),
            2 => {
                let (_, _, lambda_s1) = s(i - 1);
                let r0 = (lambda_s0 - lambda_s1) / h;
                (Some(m(0).sub(m(1)).mul_scalar(1.0 / r0)), None)
            }
            _ => {
                let (_, _, lambda_s1) = s(i - 1);
                let (_, _, lambda_s2) = s(i - 2);
                let (r0, r1) = ((lambda_s0 - lambda_s1) / h, (lambda_s1 - lambda_s2) / h);
                let d1_0 = m(0).sub(m(1)).mul_scalar(1.0 / r0);
                let d1_1 = m(1).sub(m(2)).mul_scalar(1.0 / r1);
                let diff = d1_0.clone().sub(d1_1);
                let d1 = d1_0.add(diff.clone().mul_scalar(r0 / (r0 + r1)));
                (Some(d1), Some(diff.mul_scalar(1.0 / (r0 + r1))))
            }
        };
        let h2 = h * h;
        let x_coeff;
        match self.options.algorithm {
            AlgorithmType::DpmSolver => {
                x_coeff = alpha_t / alpha_s0;
                terms.push((-(sigma_t * (ep - 1.0)), m(0)));
                if let Some(d1) = d1 {
                    let c = if order == 2 && !self.options.heun {
                        0.5 * (sigma_t * (ep - 1.0))
                    } else {
                        sigma_t * ((ep - 1.0) / h - 1.0)
                    };
                    terms.push((-c, d1));
                }
                if let Some(d2) = d2 {
                    terms.push((-(sigma_t * ((ep - 1.0 - h) / h2 - 0.5)), d2));
                }
            }
            AlgorithmType::SdeDpmSolverPlusPlus => {
                x_coeff = sigma_t / sigma_s0 * em;
                terms.push((alpha_t * e2, m(0)));
                if let Some(d1) = d1 {
                    let c = if order == 2 && !self.options.heun {
                        0.5 * (alpha_t * e2)
                    } else {
                        alpha_t * (e2 / (-2.0 * h) + 1.0)
                    };
                    terms.push((c, d1));
                }
                if let Some(d2) = d2 {
                    let c = alpha_t * ((e2 - 2.0 * h) / ((2.0 * h) * (2.0 * h)) - 0.5);
                    terms.push((c, d2));
                }
                if let Some(z) = noise {
                    terms.push((sigma_t * e2.sqrt(), z));
                }
            }
            _ => {
                x_coeff = sigma_t / sigma_s0;
                terms.push((-(alpha_t * (em - 1.0)), m(0)));
                if let Some(d1) = d1 {
                    let c = if order == 2 && !self.options.heun {
                        -(0.5 * (alpha_t * (em - 1.0)))
                    } else {
                        alpha_t * ((em - 1.0) / h + 1.0)
                    };
                    terms.push((c, d1));
                }
                if let Some(d2) = d2 {
                    terms.push((-(alpha_t * ((em - 1.0 + h) / h2 - 0.5)), d2));
                }
            }
        }
        // Left to right like the reference; `a − c·t` is `a + (−c)·t` bit for bit.
        terms
            .into_iter()
            .fold(sample.mul_scalar(x_coeff), |acc, (c, t)| {
                acc.add(t.mul_scalar(c))
            })
    }
}

impl<B: Backend> Rule<B> for DpmSolverMultistepScheduler<B> {
    rule_state!(SigmaState, SchedulerKind::DpmSolverMultistep);

    fn scheduler_kind(&self) -> SchedulerKind {
        if self.state.options.spacing == SigmaSpacing::Karras {
            SchedulerKind::DpmSolverMultistepKarras
        } else {
            SchedulerKind::DpmSolverMultistep
        }
    }

    fn lay_out(&mut self, n: usize) -> Result<()> {
        let last = self.last_timestep();
        let round = self.state.params.schedule.beta_schedule != BetaSchedule::SquaredcosCapV2;
        let sigmas = self
            .state
            .lay_out_multistep(n, last, self.options.lu_lambdas, round);
        self.state.set_sigmas(&sigmas, self.state.final_sigma());
        self.model_outputs.clear();
        self.lower_order_nums = 0;
        Ok(())
    }

    fn history(&self) -> Option<[usize; 4]> {
        self.model_outputs.last().map(Tensor::dims)
    }

    fn update(&mut self, step: Step<B>, noise: &mut dyn NoiseSource) -> Result<Tensor<B, 4>> {
        let (i, model_output, sample) = (step.at, step.model_output, step.sample);
        let o = self.options;
        let len = self.state.timesteps.len();
        let final_zero = self.state.options.final_sigmas_type == FinalSigmasType::Zero;
        let lower_order_final =
            i == len - 1 && (o.euler_at_final || (o.lower_order_final && len < 15) || final_zero);
        let lower_order_second = i + 2 == len && o.lower_order_final && len < 15;
        let data = o.algorithm != AlgorithmType::DpmSolver;
        let converted = convert_model_output(
            self.state.params.prediction_type,
            data,
            model_output.clone(),
            &sample,
            self.state.sigmas[i],
        );
        if self.model_outputs.len() == o.solver_order {
            self.model_outputs.remove(0);
        }
        self.model_outputs.push(converted);
        let noise = match o.algorithm {
            AlgorithmType::SdeDpmSolverPlusPlus => Some(draw_noise(noise, &model_output)?),
            _ => None,
        };
        let order = if o.solver_order == 1 || self.lower_order_nums < 1 || lower_order_final {
            1
        } else if o.solver_order == 2 || self.lower_order_nums < 2 || lower_order_second {
            2
        } else {
            3
        };
        let prev = self.update_from(order, i, sample, noise);
        self.lower_order_nums = (self.lower_order_nums + 1).min(o.solver_order);
        Ok(prev)
    }
}
