//! DPM-Solver multistep — port of diffusers' `schedulers/scheduling_dpmsolver_multistep.py`
//! (`DPMSolverMultistepScheduler`).
//!
//! Lu et al., "DPM-Solver" (<https://arxiv.org/abs/2206.00927>) and "DPM-Solver++"
//! (<https://arxiv.org/abs/2211.01095>): first-, second- (midpoint or Heun) and third-order
//! multistep updates in log-SNR time, deterministic (`dpmsolver++`, `dpmsolver`) or stochastic
//! (`sde-dpmsolver++`).

use std::marker::PhantomData;

use burn::prelude::*;
use prompt_diffusion_core::noise::NoiseSource;
use prompt_diffusion_core::{Error, Result};

use crate::config::{SchedulerConfig, prediction_type, reject_flags};
use crate::options::{
    AlgorithmType, BetaSchedule, FinalSigmasType, PredictionType, SolverType, TimestepSpacing,
    VarianceType,
};
use crate::schedule::{
    NoiseSchedule, SigmaSpacing, StepIndex, alpha_sigma, lambda, linspace_desc,
    multistep_timesteps, np_interp, np_linspace, round_even, sigma_of, sigma_to_t,
};
use crate::tensor::{
    check_history, check_step_shapes, check_steps, convert_model_output, draw_noise, exhausted,
    f32, to_dtype,
};
use crate::{Scheduler, SchedulerKind};

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
    schedule: NoiseSchedule,
    solver_order: usize,
    prediction_type: PredictionType,
    algorithm: AlgorithmType,
    heun: bool,
    lower_order_final: bool,
    euler_at_final: bool,
    spacing: SigmaSpacing,
    lu_lambdas: bool,
    sigma_bounds: (Option<f64>, Option<f64>),
    final_sigmas_type: FinalSigmasType,
    lambda_min_clipped: f64,
    timestep_spacing: TimestepSpacing,
    steps_offset: usize,
    timesteps: Vec<f64>,
    sigmas: Vec<f32>,
    model_outputs: Vec<Tensor<B, 4>>,
    lower_order_nums: usize,
    index: StepIndex,
    ready: bool,
    _backend: PhantomData<B>,
}

impl<B: Backend> DpmSolverMultistepScheduler<B> {
    /// Builds the scheduler from a config, filling absent keys with DPM-Solver's defaults.
    ///
    /// # Errors
    /// [`Error::Config`] for values diffusers rejects (`solver_order` 0, `final_sigmas_type`
    /// zero with a noise-prediction algorithm, conflicting sigma options),
    /// [`Error::Unsupported`] for the options listed on the type.
    pub fn new(config: &SchedulerConfig) -> Result<Self> {
        reject_flags(
            "DPMSolverMultistepScheduler",
            &[
                ("thresholding", config.thresholding),
                ("use_flow_sigmas", config.use_flow_sigmas),
                ("use_dynamic_shifting", config.use_dynamic_shifting),
            ],
        )?;
        if let Some(v @ (VarianceType::Learned | VarianceType::LearnedRange)) = config.variance_type
        {
            return Err(Error::Unsupported(format!(
                "DPM-Solver with variance_type {v:?}"
            )));
        }
        let spacing = SigmaSpacing::from_config(config)?;
        let algorithm = match config
            .algorithm_type
            .unwrap_or(AlgorithmType::DpmSolverPlusPlus)
        {
            AlgorithmType::Deis => AlgorithmType::DpmSolverPlusPlus,
            AlgorithmType::SdeDpmSolver => {
                return Err(Error::Unsupported(
                    "DPM-Solver algorithm_type sde-dpmsolver (deprecated in diffusers)".into(),
                ));
            }
            other => other,
        };
        let final_sigmas_type = config.final_sigmas_type.unwrap_or(FinalSigmasType::Zero);
        if algorithm == AlgorithmType::DpmSolver && final_sigmas_type == FinalSigmasType::Zero {
            return Err(Error::config(
                "final_sigmas_type",
                "`zero` is not supported for algorithm_type dpmsolver; choose `sigma_min`",
            ));
        }
        let solver_order = config.solver_order.unwrap_or(2);
        if solver_order == 0 {
            return Err(Error::config("solver_order", "must be at least 1"));
        }
        let schedule = NoiseSchedule::new(config, true, true)?;
        let prediction_type = prediction_type(
            config,
            "DPMSolverMultistepScheduler",
            &[
                PredictionType::Epsilon,
                PredictionType::Sample,
                PredictionType::VPrediction,
                PredictionType::FlowPrediction,
            ],
        )?;
        Ok(Self {
            solver_order,
            prediction_type,
            algorithm,
            heun: config.solver_type == Some(SolverType::Heun),
            lower_order_final: config.lower_order_final.unwrap_or(true),
            euler_at_final: config.euler_at_final.unwrap_or(false),
            spacing,
            lu_lambdas: config.use_lu_lambdas.unwrap_or(false),
            sigma_bounds: (config.sigma_min, config.sigma_max),
            final_sigmas_type,
            lambda_min_clipped: config.lambda_min_clipped.unwrap_or(f64::NEG_INFINITY),
            timestep_spacing: config.timestep_spacing.unwrap_or(TimestepSpacing::Linspace),
            steps_offset: config.steps_offset.unwrap_or(0),
            timesteps: linspace_desc(
                (schedule.num_train_timesteps - 1) as f64,
                schedule.num_train_timesteps,
            )
            .into_iter()
            .map(|t| t as f32 as f64)
            .collect(),
            sigmas: schedule.sigmas(),
            model_outputs: Vec::new(),
            lower_order_nums: 0,
            index: StepIndex::default(),
            ready: false,
            schedule,
            _backend: PhantomData,
        })
    }

    /// The last training timestep kept by `lambda_min_clipped`.
    fn last_timestep(&self) -> usize {
        let clip = self.lambda_min_clipped as f32;
        // searchsorted(flip(λ_t), clip): λ_t decreases with t.
        let clipped = self
            .schedule
            .alphas_cumprod
            .iter()
            .rev()
            .map(|&a| lambda(a.sqrt(), (1.0 - a).sqrt()))
            .take_while(|&l| l < clip)
            .count();
        self.schedule.num_train_timesteps - clipped
    }

    /// The multistep update of `order` from step `i` (formulas of the reference's
    /// `dpm_solver_first_order_update`, `multistep_dpm_solver_{second,third}_order_update`).
    fn update(
        &self,
        order: usize,
        i: usize,
        sample: Tensor<B, 4>,
        noise: Option<Tensor<B, 4>>,
    ) -> Tensor<B, 4> {
        let s = |k: usize| {
            let (a, sg) = alpha_sigma(self.sigmas[k]);
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
        match self.algorithm {
            AlgorithmType::DpmSolver => {
                x_coeff = alpha_t / alpha_s0;
                terms.push((-(sigma_t * (ep - 1.0)), m(0)));
                if let Some(d1) = d1 {
                    let c = if order == 2 && !self.heun {
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
                    let c = if order == 2 && !self.heun {
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
                    let c = if order == 2 && !self.heun {
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

impl<B: Backend> Scheduler<B> for DpmSolverMultistepScheduler<B> {
    fn kind(&self) -> SchedulerKind {
        if self.spacing == SigmaSpacing::Karras {
            SchedulerKind::DpmSolverMultistepKarras
        } else {
            SchedulerKind::DpmSolverMultistep
        }
    }

    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<()> {
        let n_train = self.schedule.num_train_timesteps;
        let n = num_inference_steps;
        check_steps(n, n_train)?;
        let last = self.last_timestep();
        let mut timesteps =
            multistep_timesteps(self.timestep_spacing, n_train, last, n, self.steps_offset);
        let train = self.schedule.sigmas();
        let log_sigmas: Vec<f32> = train.iter().map(|s| s.ln()).collect();
        let round = self.schedule.beta_schedule != BetaSchedule::SquaredcosCapV2;
        let descending: Vec<f64> = train.iter().rev().map(|&s| s as f64).collect();
        // The reference's order: Karras, then λ-uniform, then exponential, else interpolation.
        let sigmas: Vec<f64> = if self.spacing == SigmaSpacing::Karras || self.lu_lambdas {
            let sigmas = if self.spacing == SigmaSpacing::Karras {
                self.spacing.convert(&descending, self.sigma_bounds, n)
            } else {
                let (lmin, lmax) = (log_sigmas[0] as f64, log_sigmas[n_train - 1] as f64);
                np_linspace(0.0, 1.0, n)
                    .into_iter()
                    .map(|r| (lmax + r * (lmin - lmax)).exp())
                    .collect()
            };
            timesteps = sigmas
                .iter()
                .map(|&s| {
                    let t = sigma_to_t(s, &log_sigmas);
                    if round { round_even(t) } else { t }
                })
                .collect();
            sigmas
        } else if self.spacing == SigmaSpacing::Exponential {
            let sigmas = self.spacing.convert(&descending, self.sigma_bounds, n);
            timesteps = sigmas.iter().map(|&s| sigma_to_t(s, &log_sigmas)).collect();
            sigmas
        } else {
            timesteps.iter().map(|&t| np_interp(t, &train)).collect()
        };
        let last_sigma = match self.final_sigmas_type {
            FinalSigmasType::SigmaMin => sigma_of(self.schedule.alphas_cumprod[0]),
            FinalSigmasType::Zero => 0.0,
        };
        self.sigmas = sigmas
            .iter()
            .map(|&s| s as f32)
            .chain([last_sigma])
            .collect();
        // `.to(torch.int64)` truncates toward zero.
        self.timesteps = timesteps.into_iter().map(f64::trunc).collect();
        self.model_outputs.clear();
        self.lower_order_nums = 0;
        self.index = StepIndex::default();
        self.ready = true;
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn set_begin_index(&mut self, index: usize) {
        self.index.begin = Some(index);
    }

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
        if !self.ready {
            return Err(crate::tensor::not_initialised());
        }
        check_step_shapes(&model_output, &sample)?;
        check_history(self.model_outputs.last(), &sample)?;
        let len = self.timesteps.len();
        let i = self.index.current(&self.timesteps, timestep, true)?;
        if i >= len {
            return Err(exhausted(len));
        }
        let lower_order_final = i == len - 1
            && (self.euler_at_final
                || (self.lower_order_final && len < 15)
                || self.final_sigmas_type == FinalSigmasType::Zero);
        let lower_order_second = i + 2 == len && self.lower_order_final && len < 15;
        let dtype = model_output.dtype();
        let (model_output, sample) = (f32(model_output), f32(sample));
        let data = self.algorithm != AlgorithmType::DpmSolver;
        let converted = convert_model_output(
            self.prediction_type,
            data,
            model_output.clone(),
            &sample,
            self.sigmas[i],
        );
        if self.model_outputs.len() == self.solver_order {
            self.model_outputs.remove(0);
        }
        self.model_outputs.push(converted);
        let noise = match self.algorithm {
            AlgorithmType::SdeDpmSolverPlusPlus => Some(draw_noise(noise, &model_output)?),
            _ => None,
        };
        let order = if self.solver_order == 1 || self.lower_order_nums < 1 || lower_order_final {
            1
        } else if self.solver_order == 2 || self.lower_order_nums < 2 || lower_order_second {
            2
        } else {
            3
        };
        let prev = self.update(order, i, sample, noise);
        self.lower_order_nums = (self.lower_order_nums + 1).min(self.solver_order);
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
        let (alpha, sigma) = alpha_sigma(self.sigmas.get(i).copied().unwrap_or(0.0));
        original.mul_scalar(alpha).add(noise.mul_scalar(sigma))
    }
}
