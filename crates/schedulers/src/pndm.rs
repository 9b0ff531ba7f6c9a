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

use crate::config::{SchedulerConfig, prediction_type};
use crate::options::{PredictionType, TimestepSpacing};
use crate::schedule::{NoiseSchedule, np_arange, np_linspace, round_even};
use crate::tensor::{
    alpha_add_noise, check_history, check_step_shapes, check_steps, discrete_timestep, f32,
    not_initialised, to_dtype,
};
use crate::{Scheduler, SchedulerKind};

/// diffusers' `PNDMScheduler` (SD1.5's default scheduler).
///
/// Defaults: linear betas 0.0001–0.02, `skip_prk_steps` false, `set_alpha_to_one` false,
/// epsilon prediction, `timestep_spacing` leading, `steps_offset` 0. Supports epsilon and
/// v-prediction.
#[derive(Debug, Clone)]
pub struct PndmScheduler<B: Backend> {
    schedule: NoiseSchedule,
    final_alpha_cumprod: f32,
    prediction_type: PredictionType,
    skip_prk_steps: bool,
    timestep_spacing: TimestepSpacing,
    steps_offset: usize,
    num_inference_steps: Option<usize>,
    prk_steps: usize,
    timesteps: Vec<f64>,
    // running values
    counter: usize,
    cur_model_output: Option<Tensor<B, 4>>,
    cur_sample: Option<Tensor<B, 4>>,
    ets: Vec<Tensor<B, 4>>,
    _backend: PhantomData<B>,
}

impl<B: Backend> PndmScheduler<B> {
    /// Builds the scheduler from a config, filling absent keys with PNDM's defaults.
    ///
    /// # Errors
    /// [`Error::Config`] for a prediction type other than epsilon and v-prediction,
    /// [`Error::Unsupported`] for a DDPM-only beta schedule.
    pub fn new(config: &SchedulerConfig) -> Result<Self> {
        let schedule = NoiseSchedule::new(config, false, false)?;
        let prediction_type = prediction_type(
            config,
            "PNDMScheduler",
            &[PredictionType::Epsilon, PredictionType::VPrediction],
        )?;
        let final_alpha_cumprod = if config.set_alpha_to_one.unwrap_or(false) {
            1.0
        } else {
            schedule.alphas_cumprod[0]
        };
        Ok(Self {
            final_alpha_cumprod,
            prediction_type,
            skip_prk_steps: config.skip_prk_steps.unwrap_or(false),
            timestep_spacing: config.timestep_spacing.unwrap_or(TimestepSpacing::Leading),
            steps_offset: config.steps_offset.unwrap_or(0),
            num_inference_steps: None,
            prk_steps: 0,
            timesteps: Vec::new(),
            counter: 0,
            cur_model_output: None,
            cur_sample: None,
            ets: Vec::new(),
            schedule,
            _backend: PhantomData,
        })
    }

    /// Formula (9): x_{t−δ} from x_t and ε at `t`.
    fn prev_sample(
        &self,
        sample: Tensor<B, 4>,
        t: i64,
        prev_t: i64,
        model_output: Tensor<B, 4>,
    ) -> Result<Tensor<B, 4>> {
        let acp = &self.schedule.alphas_cumprod;
        let lookup = |t: i64| {
            usize::try_from(t)
                .ok()
                .and_then(|i| acp.get(i).copied())
                .ok_or_else(|| Error::invalid_input("timestep", format!("{t} out of range")))
        };
        let alpha_t = lookup(t)?;
        let alpha_prev = if prev_t >= 0 {
            lookup(prev_t)?
        } else {
            self.final_alpha_cumprod
        };
        let beta_t = 1.0 - alpha_t;
        let beta_prev = 1.0 - alpha_prev;
        let model_output = match self.prediction_type {
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
        n: usize,
    ) -> Result<Tensor<B, 4>> {
        let half = (self.schedule.num_train_timesteps / n / 2) as i64;
        let diff_to_prev = if self.counter % 2 == 1 { 0 } else { half };
        let prev_t = t - diff_to_prev;
        let t = self.timesteps[self.counter / 4 * 4] as i64;
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
        n: usize,
    ) -> Result<Tensor<B, 4>> {
        let ratio = (self.schedule.num_train_timesteps / n) as i64;
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

impl<B: Backend> Scheduler<B> for PndmScheduler<B> {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Pndm
    }

    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<()> {
        let n_train = self.schedule.num_train_timesteps;
        let n = num_inference_steps;
        check_steps(n, n_train)?;
        if !self.skip_prk_steps && n < 4 {
            return Err(Error::invalid_input(
                "num_inference_steps",
                "PNDM's Runge–Kutta warm-up (skip_prk_steps = false) needs at least 4 steps",
            ));
        }
        // Ascending training timesteps.
        let ts: Vec<f64> = match self.timestep_spacing {
            TimestepSpacing::Linspace => np_linspace(0.0, (n_train - 1) as f64, n)
                .into_iter()
                .map(round_even)
                .collect(),
            TimestepSpacing::Leading => (0..n)
                .map(|i| (i * (n_train / n)) as f64 + self.steps_offset as f64)
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
        self.timesteps = prk.into_iter().chain(plms).collect();
        self.num_inference_steps = Some(n);
        self.ets.clear();
        self.counter = 0;
        self.cur_model_output = None;
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn set_begin_index(&mut self, _index: usize) {}

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
        let n = self.num_inference_steps.ok_or_else(not_initialised)?;
        check_step_shapes(&model_output, &sample)?;
        check_history(self.ets.last(), &sample)?;
        let t = discrete_timestep(timestep, self.schedule.alphas_cumprod.len())? as i64;
        let dtype = model_output.dtype();
        let (model_output, sample) = (f32(model_output), f32(sample));
        let prev = if self.counter < self.prk_steps && !self.skip_prk_steps {
            self.step_prk(model_output, t, sample, n)?
        } else {
            self.step_plms(model_output, t, sample, n)?
        };
        Ok(to_dtype(prev, dtype))
    }

    fn add_noise(
        &self,
        original: Tensor<B, 4>,
        noise: Tensor<B, 4>,
        timestep: f64,
    ) -> Tensor<B, 4> {
        alpha_add_noise(&self.schedule.alphas_cumprod, original, noise, timestep)
    }
}
