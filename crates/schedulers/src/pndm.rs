//! PNDM — port of diffusers' `schedulers/scheduling_pndm.py` (`PNDMScheduler`).
//!
//! Liu et al., "Pseudo Numerical Methods for Diffusion Models on Manifolds"
//! (<https://arxiv.org/abs/2202.09778>), formula (9) and Algorithm 2: a four-stage Runge–Kutta
//! warm-up (PRK) followed by linear multistep (PLMS) steps; with `skip_prk_steps` (SD1.5) only
//! PLMS steps, following crowsonkb's PLMS sampler.

use std::marker::PhantomData;

use burn::prelude::*;
use prompt_diffusion_core::noise::NoiseSource;
use prompt_diffusion_core::{Error, Result};

use crate::SchedulerKind;
use crate::options::{PredictionType, TimestepSpacing};
use crate::schedule::{DiscreteState, Rule, Step, np_arange, np_linspace, round_even, rule_state};
use crate::tensor::not_initialised;

/// diffusers' `PNDMScheduler` (SD1.5's default scheduler).
///
/// Defaults: linear betas 0.0001–0.02, `skip_prk_steps` false, `set_alpha_to_one` false,
/// epsilon prediction, `timestep_spacing` leading, `steps_offset` 0. Supports epsilon and
/// v-prediction.
#[derive(Debug, Clone)]
pub struct PndmScheduler<B: Backend> {
    state: DiscreteState,
    skip_prk_steps: bool,
    prk_steps: usize,
    // running values
    counter: usize,
    cur_model_output: Option<Tensor<B, 4>>,
    cur_sample: Option<Tensor<B, 4>>,
    ets: Vec<Tensor<B, 4>>,
    _backend: PhantomData<B>,
}

impl<B: Backend> PndmScheduler<B> {
    /// A PNDM scheduler on `state`, with or without the Runge–Kutta warm-up.
    pub(crate) fn new(mut state: DiscreteState, skip_prk_steps: bool) -> Self {
        // No timesteps until `set_timesteps`.
        state.timesteps.clear();
        Self {
            state,
            skip_prk_steps,
            prk_steps: 0,
            counter: 0,
            cur_model_output: None,
            cur_sample: None,
            ets: Vec::new(),
            _backend: PhantomData,
        }
    }

    /// Formula (9): x_{t−δ} from x_t and ε at `t`.
    fn prev_sample(
        &self,
        sample: Tensor<B, 4>,
        t: i64,
        prev_t: i64,
        model_output: Tensor<B, 4>,
    ) -> Result<Tensor<B, 4>> {
        let (alpha_t, alpha_prev) = self.state.alphas(t, prev_t)?;
        let beta_t = 1.0 - alpha_t;
        let beta_prev = 1.0 - alpha_prev;
        let model_output = match self.state.params.prediction_type {
            PredictionType::VPrediction => model_output
                .mul_scalar(alpha_t.sqrt())
                .add(sample.clone().mul_scalar(beta_t.sqrt())),
            _ => model_output,
        };
        let sample_coeff = (alpha_prev / alpha_t).sqrt();
        let denom = alpha_t * beta_prev.sqrt() + (alpha_t * beta_t * alpha_prev).sqrt();
        Ok(sample.mul_scalar(sample_coeff).sub(
            model_output
                .mul_scalar(alpha_prev - alpha_t)
                .div_scalar(denom),
        ))
    }

    /// Runge–Kutta warm-up step (`step_prk`).
    fn step_prk(
        &mut self,
        model_output: Tensor<B, 4>,
        t: i64,
        sample: Tensor<B, 4>,
    ) -> Result<Tensor<B, 4>> {
        let half = (self.state.ratio() / 2) as i64;
        let diff_to_prev = if self.counter % 2 == 1 { 0 } else { half };
        let prev_t = t - diff_to_prev;
        let t = self.state.timesteps[self.counter / 4 * 4] as i64;
        let model_output = match self.counter % 4 {
            0 => {
                self.cur_model_output = Some(model_output.clone().mul_scalar(1.0f32 / 6.0));
                self.ets.push(model_output.clone());
                self.cur_sample = Some(sample.clone());
                model_output
            }
            1 | 2 => {
                let third = model_output.clone().mul_scalar(1.0f32 / 3.0);
                self.cur_model_output = Some(match self.cur_model_output.take() {
                    Some(acc) => acc.add(third),
                    None => third,
                });
                model_output
            }
            _ => {
                let sixth = model_output.mul_scalar(1.0f32 / 6.0);
                match self.cur_model_output.take() {
                    Some(acc) => acc.add(sixth),
                    None => sixth,
                }
            }
        };
        let cur_sample = self.cur_sample.clone().unwrap_or(sample);
        let prev = self.prev_sample(cur_sample, t, prev_t, model_output)?;
        self.counter += 1;
        Ok(prev)
    }

    /// Linear multistep step (`step_plms`).
    fn step_plms(
        &mut self,
        model_output: Tensor<B, 4>,
        mut t: i64,
        mut sample: Tensor<B, 4>,
    ) -> Result<Tensor<B, 4>> {
        let ratio = self.state.ratio() as i64;
        let mut prev_t = t - ratio;
        if self.counter != 1 {
            let keep = self.ets.len().saturating_sub(3);
            self.ets.drain(..keep);
            self.ets.push(model_output.clone());
        } else {
            prev_t = t;
            t += ratio;
        }
        let e = &self.ets;
        let k = e.len();
        let model_output = if k == 1 && self.counter == 0 {
            self.cur_sample = Some(sample.clone());
            model_output
        } else if k == 1 && self.counter == 1 {
            sample = self.cur_sample.take().ok_or_else(not_initialised)?;
            model_output.add(e[0].clone()).div_scalar(2.0f32)
        } else if k == 2 {
            e[1].clone()
                .mul_scalar(3.0f32)
                .sub(e[0].clone())
                .div_scalar(2.0f32)
        } else if k == 3 {
            e[2].clone()
                .mul_scalar(23.0f32)
                .sub(e[1].clone().mul_scalar(16.0f32))
                .add(e[0].clone().mul_scalar(5.0f32))
                .div_scalar(12.0f32)
        } else {
            e[k - 1]
                .clone()
                .mul_scalar(55.0f32)
                .sub(e[k - 2].clone().mul_scalar(59.0f32))
                .add(e[k - 3].clone().mul_scalar(37.0f32))
                .sub(e[k - 4].clone().mul_scalar(9.0f32))
                .mul_scalar(1.0f32 / 24.0)
        };
        let prev = self.prev_sample(sample, t, prev_t, model_output)?;
        self.counter += 1;
        Ok(prev)
    }
}

impl<B: Backend> Rule<B> for PndmScheduler<B> {
    rule_state!(DiscreteState, SchedulerKind::Pndm);

    fn lay_out(&mut self, n: usize) -> Result<()> {
        let p = &self.state.params;
        let n_train = p.schedule.num_train_timesteps;
        if !self.skip_prk_steps && n < 4 {
            return Err(Error::invalid_input(
                "num_inference_steps",
                "PNDM's Runge–Kutta warm-up (skip_prk_steps = false) needs at least 4 steps",
            ));
        }
        // Ascending training timesteps.
        let ts: Vec<f64> = match p.timestep_spacing {
            TimestepSpacing::Linspace => np_linspace(0.0, (n_train - 1) as f64, n)
                .into_iter()
                .map(round_even)
                .collect(),
            TimestepSpacing::Leading => (0..n)
                .map(|i| (i * (n_train / n)) as f64 + p.steps_offset as f64)
                .collect(),
            TimestepSpacing::Trailing => {
                np_arange(n_train as f64, 0.0, -(n_train as f64 / n as f64))
                    .into_iter()
                    .rev()
                    .map(|t| round_even(t) - 1.0)
                    .collect()
            }
        };
        let len = ts.len();
        let (prk, mut plms): (Vec<f64>, Vec<f64>) = if self.skip_prk_steps {
            let mut plms = ts[..len - 1].to_vec();
            if len >= 2 {
                plms.push(ts[len - 2]);
            }
            plms.push(ts[len - 1]);
            (Vec::new(), plms)
        } else {
            let half = (n_train / n / 2) as f64;
            let pairs: Vec<f64> = ts[len - 4..].iter().flat_map(|&t| [t, t + half]).collect();
            let doubled: Vec<f64> = pairs[..pairs.len() - 1]
                .iter()
                .flat_map(|&t| [t, t])
                .collect();
            let mut prk = doubled[1..doubled.len() - 1].to_vec();
            prk.reverse();
            (prk, ts[..len - 3].to_vec())
        };
        plms.reverse();
        self.prk_steps = prk.len();
        self.state.timesteps = prk.into_iter().chain(plms).collect();
        self.ets.clear();
        self.counter = 0;
        self.cur_model_output = None;
        Ok(())
    }

    fn history(&self) -> Option<[usize; 4]> {
        self.ets.last().map(Tensor::dims)
    }

    fn update(&mut self, step: Step<B>, _noise: &mut dyn NoiseSource) -> Result<Tensor<B, 4>> {
        let (t, model_output, sample) = (step.at, step.model_output, step.sample);
        if self.counter < self.prk_steps && !self.skip_prk_steps {
            self.step_prk(model_output, t as i64, sample)
        } else {
            self.step_plms(model_output, t as i64, sample)
        }
    }
}
