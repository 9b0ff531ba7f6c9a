//! UniPC multistep — port of diffusers' `schedulers/scheduling_unipc_multistep.py`
//! (`UniPCMultistepScheduler`).
//!
//! Zhao et al., "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of Diffusion
//! Models" (<https://arxiv.org/abs/2302.04867>): the UniP predictor and the UniC corrector with
//! B(h) = h (`bh1`) or eʰ − 1 (`bh2`).

use burn::prelude::*;
use prompt_diffusion_core::Result;
use prompt_diffusion_core::noise::NoiseSource;

use crate::SchedulerKind;
use crate::options::FinalSigmasType;
use crate::schedule::{
    Rule, SigmaSpacing, SigmaState, Step, alpha_sigma, lambda, linspace_desc, rule_state, solve,
};
use crate::tensor::convert_model_output;

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
    state: SigmaState,
    options: UniPcOptions,
    model_outputs: Vec<Tensor<B, 4>>,
    last_sample: Option<Tensor<B, 4>>,
    this_order: usize,
    lower_order_nums: usize,
}

/// UniPC's own options (the factory resolves their defaults and rejects the degenerate ones).
#[derive(Debug, Clone)]
pub(crate) struct UniPcOptions {
    /// `solver_order` (at least 1).
    pub solver_order: usize,
    /// `predict_x0`.
    pub predict_x0: bool,
    /// `solver_type = "bh1"` (else bh2).
    pub bh1: bool,
    /// `lower_order_final`.
    pub lower_order_final: bool,
    /// `disable_corrector`.
    pub disable_corrector: Vec<usize>,
}

impl<B: Backend> UniPcMultistepScheduler<B> {
    /// A UniPC scheduler on `state` (preserving form) with `options`.
    pub(crate) fn new(mut state: SigmaState, options: UniPcOptions) -> Self {
        let n_train = state.params.schedule.num_train_timesteps;
        state.timesteps = linspace_desc((n_train - 1) as f64, n_train);
        state.sigmas = state.params.schedule.sigmas();
        Self {
            state,
            options,
            model_outputs: Vec::new(),
            last_sample: None,
            this_order: 1,
            lower_order_nums: 0,
        }
    }

    /// λ, α, σ at sigma index `k`.
    fn at(&self, k: usize) -> (f32, f32, f32) {
        let (a, s) = alpha_sigma(self.state.sigmas[k]);
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
        let hh = if self.options.predict_x0 { -h } else { h };
        let h_phi_1 = hh.exp_m1();
        let mut h_phi_k = h_phi_1 / hh - 1.0;
        let b_h = if self.options.bh1 { hh } else { hh.exp_m1() };
        let mut factorial = 1f64;
        let mut r = Vec::with_capacity(order);
        let mut b = Vec::with_capacity(order);
        for i in 1..=order {
            r.push(rks.iter().map(|&x| powi(x, i - 1)).collect::<Vec<f32>>());
            b.push(h_phi_k * factorial as f32 / b_h);
            factorial *= (i + 1) as f64;
            h_phi_k = h_phi_k / hh - (1.0 / factorial) as f32;
        }
        let (base_x, base_m, scale) = if self.options.predict_x0 {
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

impl<B: Backend> Rule<B> for UniPcMultistepScheduler<B> {
    rule_state!(SigmaState, SchedulerKind::UniPc);

    fn lay_out(&mut self, n: usize) -> Result<()> {
        let n_train = self.state.params.schedule.num_train_timesteps;
        let sigmas = self.state.lay_out_multistep(n, n_train, false, true);
        let last = match (
            self.state.options.final_sigmas_type,
            self.state.options.spacing,
        ) {
            (FinalSigmasType::SigmaMin, SigmaSpacing::Interpolated)
            | (FinalSigmasType::Zero, _) => self.state.final_sigma(),
            (FinalSigmasType::SigmaMin, _) => sigmas[sigmas.len() - 1] as f32,
        };
        self.state.set_sigmas(&sigmas, last);
        self.model_outputs.clear();
        self.last_sample = None;
        self.this_order = 1;
        self.lower_order_nums = 0;
        Ok(())
    }

    fn history(&self) -> Option<[usize; 4]> {
        self.model_outputs.last().map(Tensor::dims)
    }

    fn update(&mut self, step: Step<B>, _noise: &mut dyn NoiseSource) -> Result<Tensor<B, 4>> {
        let (i, model_output, mut sample) = (step.at, step.model_output, step.sample);
        let len = self.state.timesteps.len();
        let o = &self.options;
        let converted = convert_model_output(
            self.state.params.prediction_type,
            o.predict_x0,
            model_output,
            &sample,
            self.state.sigmas[i],
        );
        let use_corrector = i > 0 && !o.disable_corrector.contains(&(i - 1));
        if let (true, Some(last)) = (use_corrector, self.last_sample.take()) {
            sample = self.correct(i, converted.clone(), last, self.this_order)?;
        }
        let solver_order = self.options.solver_order;
        if self.model_outputs.len() == solver_order {
            self.model_outputs.remove(0);
        }
        self.model_outputs.push(converted);
        let order = if self.options.lower_order_final {
            solver_order.min(len - i)
        } else {
            solver_order
        };
        self.this_order = order.min(self.lower_order_nums + 1);
        self.last_sample = Some(sample.clone());
        let prev = self.predict(i, sample, self.this_order)?;
        self.lower_order_nums = (self.lower_order_nums + 1).min(solver_order);
        Ok(prev)
    }
}
