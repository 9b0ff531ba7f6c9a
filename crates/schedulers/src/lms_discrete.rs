//! LMS — port of diffusers' `schedulers/scheduling_lms_discrete.py` (`LMSDiscreteScheduler`).
//!
//! The linear multistep method of k-diffusion (`sample_lms`, order 4). diffusers integrates each
//! Lagrange basis polynomial with `scipy.integrate.quad`; the integrand is a polynomial of degree
//! ≤ 3, so here it is integrated exactly by three-point Gauss–Legendre quadrature.

use std::marker::PhantomData;

use burn::prelude::*;
use prompt_diffusion_core::Result;
use prompt_diffusion_core::noise::NoiseSource;

use crate::config::{SchedulerConfig, prediction_type};
use crate::euler_discrete::sigma_init;
use crate::options::{PredictionType, TimestepSpacing};
use crate::schedule::{
    NoiseSchedule, SigmaSpacing, StepIndex, nearest, np_interp, sigma_timesteps, sigma_to_t,
};
use crate::tensor::{check_history, check_step_shapes, check_steps, exhausted, f32, to_dtype};
use crate::{Scheduler, SchedulerKind};

/// The multistep order diffusers' `step` uses by default.
const ORDER: usize = 4;

/// diffusers' `LMSDiscreteScheduler`.
///
/// Defaults: linear betas 0.0001–0.02, no Karras/exponential sigmas, epsilon prediction,
/// `timestep_spacing` linspace, `steps_offset` 0; order 4.
#[derive(Debug, Clone)]
pub struct LmsDiscreteScheduler<B: Backend> {
    schedule: NoiseSchedule,
    prediction_type: PredictionType,
    spacing: SigmaSpacing,
    exponential_bounds: (Option<f64>, Option<f64>),
    timestep_spacing: TimestepSpacing,
    steps_offset: usize,
    timesteps: Vec<f64>,
    sigmas: Vec<f32>,
    derivatives: Vec<Tensor<B, 4>>,
    index: StepIndex,
    _backend: PhantomData<B>,
}

impl<B: Backend> LmsDiscreteScheduler<B> {
    /// Builds the scheduler from a config, filling absent keys with LMS's defaults.
    ///
    /// # Errors
    /// [`Error::Config`](prompt_diffusion_core::Error::Config) for conflicting sigma options or
    /// an unknown prediction type, [`Error::Unsupported`](prompt_diffusion_core::Error::Unsupported)
    /// for beta sigmas or a DDPM-only beta schedule.
    pub fn new(config: &SchedulerConfig) -> Result<Self> {
        let spacing = SigmaSpacing::from_config(config)?;
        let schedule = NoiseSchedule::new(config, false, false)?;
        let prediction_type = prediction_type(
            config,
            "LMSDiscreteScheduler",
            &[
                PredictionType::Epsilon,
                PredictionType::VPrediction,
                PredictionType::Sample,
            ],
        )?;
        let mut scheduler = Self {
            prediction_type,
            spacing,
            // Karras spacing ignores the config bounds in LMS; exponential spacing reads them.
            exponential_bounds: (config.sigma_min, config.sigma_max),
            timestep_spacing: config.timestep_spacing.unwrap_or(TimestepSpacing::Linspace),
            steps_offset: config.steps_offset.unwrap_or(0),
            timesteps: Vec::new(),
            sigmas: Vec::new(),
            derivatives: Vec::new(),
            index: StepIndex::default(),
            schedule,
            _backend: PhantomData,
        };
        // Like the reference's constructor: a full-length schedule until `set_timesteps`.
        let n = scheduler.schedule.num_train_timesteps;
        Scheduler::<B>::set_timesteps(&mut scheduler, n)?;
        Ok(scheduler)
    }

    /// `get_lms_coefficient`: ∫ from σ_t to σ_{t+1} of the Lagrange basis polynomial of
    /// `current` over the last `order` sigmas.
    fn coefficient(&self, order: usize, t: usize, current: usize) -> f64 {
        let s = |k: usize| self.sigmas[t - k] as f64;
        let basis = |tau: f64| {
            (0..order)
                .filter(|&k| k != current)
                .map(|k| (tau - s(k)) / (s(current) - s(k)))
                .product::<f64>()
        };
        let (a, b) = (self.sigmas[t] as f64, self.sigmas[t + 1] as f64);
        let (mid, half) = ((a + b) / 2.0, (b - a) / 2.0);
        let node = (3.0f64 / 5.0).sqrt();
        half * (5.0 / 9.0 * basis(mid - half * node)
            + 8.0 / 9.0 * basis(mid)
            + 5.0 / 9.0 * basis(mid + half * node))
    }
}

impl<B: Backend> Scheduler<B> for LmsDiscreteScheduler<B> {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Lms
    }

    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<()> {
        let n_train = self.schedule.num_train_timesteps;
        let n = num_inference_steps;
        check_steps(n, n_train)?;
        let mut timesteps = sigma_timesteps(self.timestep_spacing, n_train, n, self.steps_offset);
        let train = self.schedule.sigmas();
        let log_sigmas: Vec<f32> = train.iter().map(|s| s.ln()).collect();
        let mut sigmas: Vec<f64> = timesteps.iter().map(|&t| np_interp(t, &train)).collect();
        if self.spacing != SigmaSpacing::Interpolated {
            let bounds = match self.spacing {
                SigmaSpacing::Exponential => self.exponential_bounds,
                _ => (None, None),
            };
            sigmas = self.spacing.convert(&sigmas, bounds, n);
            timesteps = sigmas.iter().map(|&s| sigma_to_t(s, &log_sigmas)).collect();
        }
        self.sigmas = sigmas.iter().map(|&s| s as f32).chain([0.0]).collect();
        self.timesteps = timesteps.into_iter().map(|t| t as f32 as f64).collect();
        self.derivatives.clear();
        self.index = StepIndex::default();
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn set_begin_index(&mut self, index: usize) {
        self.index.begin = Some(index);
    }

    fn init_noise_sigma(&self) -> f64 {
        sigma_init(&self.sigmas, self.timestep_spacing)
    }

    fn scale_model_input(&mut self, sample: Tensor<B, 4>, timestep: f64) -> Tensor<B, 4> {
        let i = match self.index.current(&self.timesteps, timestep, false) {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!("scale_model_input: {e}; using the nearest timestep");
                nearest(&self.timesteps, timestep)
            }
        };
        let sigma = self.sigmas.get(i).copied().unwrap_or(0.0);
        sample.div_scalar((sigma * sigma + 1.0).sqrt())
    }

    fn step(
        &mut self,
        model_output: Tensor<B, 4>,
        timestep: f64,
        sample: Tensor<B, 4>,
        _noise: &mut dyn NoiseSource,
    ) -> Result<Tensor<B, 4>> {
        check_step_shapes(&model_output, &sample)?;
        check_history(self.derivatives.last(), &sample)?;
        let i = self.index.current(&self.timesteps, timestep, false)?;
        if i + 1 >= self.sigmas.len() {
            return Err(exhausted(self.timesteps.len()));
        }
        let sigma = self.sigmas[i];
        let dtype = model_output.dtype();
        let (model_output, sample) = (f32(model_output), f32(sample));
        let pred_x0 = match self.prediction_type {
            PredictionType::Sample => model_output,
            PredictionType::VPrediction => model_output
                .mul_scalar(-sigma / (sigma * sigma + 1.0).sqrt())
                .add(sample.clone().div_scalar(sigma * sigma + 1.0)),
            _ => sample.clone().sub(model_output.mul_scalar(sigma)),
        };
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
        let prev = match update {
            Some(u) => sample.add(u),
            None => sample,
        };
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
        let sigma = self.sigmas.get(i).copied().unwrap_or(0.0);
        original.add(noise.mul_scalar(sigma))
    }
}
