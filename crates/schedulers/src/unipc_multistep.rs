//! UniPC multistep — port of diffusers' `schedulers/scheduling_unipc_multistep.py`
//! (`UniPCMultistepScheduler`).
//!
//! Zhao et al., "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of Diffusion
//! Models" (<https://arxiv.org/abs/2302.04867>): the UniP predictor and the UniC corrector with
//! B(h) = h (`bh1`) or eʰ − 1 (`bh2`).

use std::marker::PhantomData;

use burn::prelude::*;
use prompt_diffusion_core::noise::NoiseSource;
use prompt_diffusion_core::{Error, Result};

use crate::config::{SchedulerConfig, prediction_type, reject_flags};
use crate::options::{FinalSigmasType, PredictionType, SolverType, TimestepSpacing};
use crate::schedule::{
    NoiseSchedule, SigmaSpacing, StepIndex, alpha_sigma, lambda, linspace_desc,
    multistep_timesteps, np_interp, round_even, sigma_of, sigma_to_t, solve,
};
use crate::tensor::{
    check_history, check_step_shapes, check_steps, convert_model_output, exhausted, f32,
    not_initialised, to_dtype,
};
use crate::{Scheduler, SchedulerKind};

/// diffusers' `UniPCMultistepScheduler`.
///
/// Defaults: linear betas 0.0001–0.02, `solver_order` 2, epsilon prediction, `predict_x0`
/// true, `solver_type` bh2, `lower_order_final` true, no disabled correctors, no
/// Karras/exponential sigmas, `final_sigmas_type` zero, `timestep_spacing` linspace,
/// `steps_offset` 0. `final_sigmas_type = "sigma_min"` reproduces diffusers ≤ 0.27 (and
/// Diff-Plugin).
///
/// With `final_sigmas_type` zero the last step has an infinite log-SNR step h: diffusers then
/// returns NaN for `bh1` (it multiplies the absent correction term, 0, by B(h) = −∞); here the
/// absent term is left out, so the last step lands on the data prediction. The combinations that
/// stay degenerate with a zero final sigma (`predict_x0 = false`, or `lower_order_final = false`
/// with `solver_order > 1`) are rejected when the scheduler is built.
#[derive(Debug, Clone)]
pub struct UniPcMultistepScheduler<B: Backend> {
    schedule: NoiseSchedule,
    solver_order: usize,
    prediction_type: PredictionType,
    predict_x0: bool,
    bh1: bool,
    lower_order_final: bool,
    disable_corrector: Vec<usize>,
    spacing: SigmaSpacing,
    sigma_bounds: (Option<f64>, Option<f64>),
    final_sigmas_type: FinalSigmasType,
    timestep_spacing: TimestepSpacing,
    steps_offset: usize,
    timesteps: Vec<f64>,
    sigmas: Vec<f32>,
    model_outputs: Vec<Tensor<B, 4>>,
    last_sample: Option<Tensor<B, 4>>,
    this_order: usize,
    lower_order_nums: usize,
    index: StepIndex,
    ready: bool,
    _backend: PhantomData<B>,
}

impl<B: Backend> UniPcMultistepScheduler<B> {
    /// Builds the scheduler from a config, filling absent keys with UniPC's defaults.
    ///
    /// # Errors
    /// [`Error::Config`] for values diffusers rejects or that make it return NaN (see the type),
    /// [`Error::Unsupported`] for thresholding, flow sigmas, dynamic shifting, beta sigmas or an
    /// external `solver_p`.
    pub fn new(config: &SchedulerConfig) -> Result<Self> {
        reject_flags(
            "UniPCMultistepScheduler",
            &[
                ("thresholding", config.thresholding),
                ("use_flow_sigmas", config.use_flow_sigmas),
                ("use_dynamic_shifting", config.use_dynamic_shifting),
            ],
        )?;
        if config.solver_p.as_ref().is_some_and(|v| !v.is_null()) {
            return Err(Error::Unsupported("UniPC with an external solver_p".into()));
        }
        if config.shift_terminal.is_some() {
            return Err(Error::config(
                "shift_terminal",
                "is only supported with use_flow_sigmas",
            ));
        }
        let spacing = SigmaSpacing::from_config(config)?;
        let solver_order = config.solver_order.unwrap_or(2);
        if solver_order == 0 {
            return Err(Error::config("solver_order", "must be at least 1"));
        }
        let predict_x0 = config.predict_x0.unwrap_or(true);
        let lower_order_final = config.lower_order_final.unwrap_or(true);
        let final_sigmas_type = config.final_sigmas_type.unwrap_or(FinalSigmasType::Zero);
        if final_sigmas_type == FinalSigmasType::Zero
            && (!predict_x0 || (!lower_order_final && solver_order > 1))
        {
            return Err(Error::config(
                "final_sigmas_type",
                "`zero` with predict_x0 = false or lower_order_final = false divides by an \
                 infinite log-SNR step on the last step (diffusers returns NaN/inf); use \
                 `sigma_min`",
            ));
        }
        let schedule = NoiseSchedule::new(config, true, true)?;
        let prediction_type = prediction_type(
            config,
            "UniPCMultistepScheduler",
            &[
                PredictionType::Epsilon,
                PredictionType::Sample,
                PredictionType::VPrediction,
                PredictionType::FlowPrediction,
            ],
        )?;
        let n_train = schedule.num_train_timesteps;
        Ok(Self {
            solver_order,
            prediction_type,
            predict_x0,
            bh1: config.solver_type == Some(SolverType::Bh1),
            lower_order_final,
            disable_corrector: config.disable_corrector.clone().unwrap_or_default(),
            spacing,
            sigma_bounds: (config.sigma_min, config.sigma_max),
            final_sigmas_type,
            timestep_spacing: config.timestep_spacing.unwrap_or(TimestepSpacing::Linspace),
            steps_offset: config.steps_offset.unwrap_or(0),
            timesteps: linspace_desc((n_train - 1) as f64, n_train),
            sigmas: schedule.sigmas(),
            model_outputs: Vec::new(),
            last_sample: None,
            this_order: 1,
            lower_order_nums: 0,
            index: StepIndex::default(),
            ready: false,
            schedule,
            _backend: PhantomData,
        })
    }

    /// λ, α, σ at sigma index `k`.
    fn at(&self, k: usize) -> (f32, f32, f32) {
        let (a, s) = alpha_sigma(self.sigmas[k]);
        (a, s, lambda(a, s))
    }

    /// The shared part of UniP and UniC: from sigma index `s0` to `t`, with the history points
    /// `s0 − 1, s0 − 2, …` (`order − 1` of them; the last model output belongs to `s0`).
    fn setup(&self, t: usize, s0: usize, order: usize) -> Update<B> {
        let (alpha_t, sigma_t, lambda_t) = self.at(t);
        let (alpha_s0, sigma_s0, lambda_s0) = self.at(s0);
        let h = lambda_t - lambda_s0;
        let len = self.model_outputs.len();
        let m0 = self.model_outputs[len - 1].clone();
        let mut rks = Vec::with_capacity(order);
        let mut d1s = Vec::with_capacity(order);
        for i in 1..order {
            let mi = self.model_outputs[len - 1 - i].clone();
            let (_, _, lambda_si) = self.at(s0 - i);
            let rk = (lambda_si - lambda_s0) / h;
            rks.push(rk);
            d1s.push(mi.sub(m0.clone()).div_scalar(rk));
        }
        rks.push(1.0);
        let hh = if self.predict_x0 { -h } else { h };
        let h_phi_1 = hh.exp_m1();
        let mut h_phi_k = h_phi_1 / hh - 1.0;
        let b_h = if self.bh1 { hh } else { hh.exp_m1() };
        let mut factorial = 1f64;
        let mut r = Vec::with_capacity(order);
        let mut b = Vec::with_capacity(order);
        for i in 1..=order {
            r.push(rks.iter().map(|&x| powi(x, i - 1)).collect::<Vec<f32>>());
            b.push(h_phi_k * factorial as f32 / b_h);
            factorial *= (i + 1) as f64;
            h_phi_k = h_phi_k / hh - (1.0 / factorial) as f32;
        }
        let (base_x, base_m, scale) = if self.predict_x0 {
            (sigma_t / sigma_s0, alpha_t * h_phi_1, alpha_t * b_h)
        } else {
            (alpha_t / alpha_s0, sigma_t * h_phi_1, sigma_t * b_h)
        };
        Update {
            base_x,
            base_m,
            scale,
            m0,
            d1s,
            r,
            b,
        }
    }

    /// UniP (`multistep_uni_p_bh_update`) from the current step index `i`.
    fn predict(&self, i: usize, x: Tensor<B, 4>, order: usize) -> Result<Tensor<B, 4>> {
        let u = self.setup(i + 1, i, order);
        let x_t = x
            .mul_scalar(u.base_x)
            .sub(u.m0.clone().mul_scalar(u.base_m));
        if u.d1s.is_empty() {
            // diffusers subtracts `α_t·B(h)·0` here, which is NaN when B(h) = −∞ (bh1 onto a
            // zero final sigma); the term is absent.
            return Ok(x_t);
        }
        let rhos = if order == 2 {
            vec![0.5]
        } else {
            let k = order - 1;
            let r: Vec<Vec<f32>> = u.r[..k].iter().map(|row| row[..k].to_vec()).collect();
            solve(r, u.b[..k].to_vec())?
        };
        Ok(match weighted_sum(&rhos, u.d1s) {
            Some(res) => x_t.sub(res.mul_scalar(u.scale)),
            None => x_t,
        })
    }

    /// UniC (`multistep_uni_c_bh_update`) at the current step index `i`, before the new model
    /// output joins the history.
    fn correct(
        &self,
        i: usize,
        model_t: Tensor<B, 4>,
        last_sample: Tensor<B, 4>,
        order: usize,
    ) -> Result<Tensor<B, 4>> {
        let u = self.setup(i, i - 1, order);
        let x_t = last_sample
            .mul_scalar(u.base_x)
            .sub(u.m0.clone().mul_scalar(u.base_m));
        let rhos = if order == 1 {
            vec![0.5]
        } else {
            solve(u.r, u.b)?
        };
        let d1_t = model_t.sub(u.m0).mul_scalar(rhos[rhos.len() - 1]);
        let correction = match weighted_sum(&rhos[..rhos.len() - 1], u.d1s) {
            Some(res) => res.add(d1_t),
            None => d1_t,
        };
        Ok(x_t.sub(correction.mul_scalar(u.scale)))
    }
}

/// The pieces of one UniP/UniC update.
struct Update<B: Backend> {
    base_x: f32,
    base_m: f32,
    scale: f32,
    m0: Tensor<B, 4>,
    d1s: Vec<Tensor<B, 4>>,
    r: Vec<Vec<f32>>,
    b: Vec<f32>,
}

/// `torch.pow(x, k)` for the small integer exponents used here.
fn powi(x: f32, k: usize) -> f32 {
    match k {
        0 => 1.0,
        1 => x,
        2 => x * x,
        _ => x.powi(k as i32),
    }
}

/// `einsum("k,bkc...->bc...", rhos, D1s)`; `None` without terms.
fn weighted_sum<B: Backend>(rhos: &[f32], d1s: Vec<Tensor<B, 4>>) -> Option<Tensor<B, 4>> {
    rhos.iter()
        .zip(d1s)
        .map(|(&r, d)| d.mul_scalar(r))
        .reduce(|acc, t| acc.add(t))
}

impl<B: Backend> Scheduler<B> for UniPcMultistepScheduler<B> {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::UniPc
    }

    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<()> {
        let n_train = self.schedule.num_train_timesteps;
        let n = num_inference_steps;
        check_steps(n, n_train)?;
        let mut timesteps = multistep_timesteps(
            self.timestep_spacing,
            n_train,
            n_train,
            n,
            self.steps_offset,
        );
        let train = self.schedule.sigmas();
        let sigmas: Vec<f64> = if self.spacing == SigmaSpacing::Interpolated {
            timesteps.iter().map(|&t| np_interp(t, &train)).collect()
        } else {
            let log_sigmas: Vec<f32> = train.iter().map(|s| s.ln()).collect();
            let descending: Vec<f64> = train.iter().rev().map(|&s| s as f64).collect();
            let sigmas = self.spacing.convert(&descending, self.sigma_bounds, n);
            let karras = self.spacing == SigmaSpacing::Karras;
            timesteps = sigmas
                .iter()
                .map(|&s| {
                    let t = sigma_to_t(s, &log_sigmas);
                    if karras { round_even(t) } else { t }
                })
                .collect();
            sigmas
        };
        let last = match (self.final_sigmas_type, self.spacing) {
            (FinalSigmasType::Zero, _) => 0.0,
            (FinalSigmasType::SigmaMin, SigmaSpacing::Interpolated) => {
                sigma_of(self.schedule.alphas_cumprod[0])
            }
            (FinalSigmasType::SigmaMin, _) => sigmas[sigmas.len() - 1] as f32,
        };
        self.sigmas = sigmas.iter().map(|&s| s as f32).chain([last]).collect();
        self.timesteps = timesteps.into_iter().map(f64::trunc).collect();
        self.model_outputs.clear();
        self.last_sample = None;
        self.this_order = 1;
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
        _noise: &mut dyn NoiseSource,
    ) -> Result<Tensor<B, 4>> {
        if !self.ready {
            return Err(not_initialised());
        }
        check_step_shapes(&model_output, &sample)?;
        check_history(self.model_outputs.last(), &sample)?;
        let len = self.timesteps.len();
        let i = self.index.current(&self.timesteps, timestep, true)?;
        if i >= len {
            return Err(exhausted(len));
        }
        let dtype = model_output.dtype();
        let (model_output, mut sample) = (f32(model_output), f32(sample));
        let converted = convert_model_output(
            self.prediction_type,
            self.predict_x0,
            model_output,
            &sample,
            self.sigmas[i],
        );
        let use_corrector = i > 0 && !self.disable_corrector.contains(&(i - 1));
        if let (true, Some(last)) = (use_corrector, self.last_sample.take()) {
            sample = self.correct(i, converted.clone(), last, self.this_order)?;
        }
        if self.model_outputs.len() == self.solver_order {
            self.model_outputs.remove(0);
        }
        self.model_outputs.push(converted);
        let order = if self.lower_order_final {
            self.solver_order.min(len - i)
        } else {
            self.solver_order
        };
        self.this_order = order.min(self.lower_order_nums + 1);
        self.last_sample = Some(sample.clone());
        let prev = self.predict(i, sample, self.this_order)?;
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
