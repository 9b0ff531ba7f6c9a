//! Euler — port of diffusers' `schedulers/scheduling_euler_discrete.py`
//! (`EulerDiscreteScheduler`).
//!
//! Algorithm 2 of Karras et al., "Elucidating the Design Space of Diffusion-Based Generative
//! Models" (<https://arxiv.org/abs/2206.00364>), with `s_churn = 0` (no added noise), as
//! diffusers' pipelines call it.

use std::marker::PhantomData;

use burn::prelude::*;
use prompt_diffusion_core::Result;
use prompt_diffusion_core::noise::NoiseSource;

use crate::config::{SchedulerConfig, prediction_type};
use crate::options::{
    FinalSigmasType, InterpolationType, PredictionType, TimestepSpacing, TimestepType,
};
use crate::schedule::{
    NoiseSchedule, SigmaSpacing, StepIndex, nearest, np_interp, sigma_of, sigma_timesteps,
    sigma_to_t, torch_linspace_f32,
};
use crate::tensor::{check_step_shapes, check_steps, exhausted, f32, to_dtype};
use crate::{Scheduler, SchedulerKind};

/// diffusers' `EulerDiscreteScheduler`.
///
/// Defaults: linear betas 0.0001–0.02, epsilon prediction, `interpolation_type` linear, no
/// Karras/exponential sigmas, `timestep_spacing` linspace, `timestep_type` discrete,
/// `final_sigmas_type` zero, `steps_offset` 0.
#[derive(Debug, Clone)]
pub struct EulerDiscreteScheduler<B: Backend> {
    schedule: NoiseSchedule,
    prediction_type: PredictionType,
    interpolation: InterpolationType,
    spacing: SigmaSpacing,
    sigma_bounds: (Option<f64>, Option<f64>),
    timestep_spacing: TimestepSpacing,
    continuous: bool,
    steps_offset: usize,
    final_sigmas_type: FinalSigmasType,
    timesteps: Vec<f64>,
    sigmas: Vec<f32>,
    index: StepIndex,
    _backend: PhantomData<B>,
}

impl<B: Backend> EulerDiscreteScheduler<B> {
    /// Builds the scheduler from a config, filling absent keys with Euler's defaults.
    ///
    /// # Errors
    /// [`Error::Config`](prompt_diffusion_core::Error::Config) for conflicting sigma options or
    /// an unknown prediction type,
    /// [`Error::Unsupported`](prompt_diffusion_core::Error::Unsupported) for beta sigmas or a
    /// DDPM-only beta schedule.
    pub fn new(config: &SchedulerConfig) -> Result<Self> {
        let spacing = SigmaSpacing::from_config(config)?;
        let schedule = NoiseSchedule::new(config, true, true)?;
        let prediction_type = prediction_type(
            config,
            "EulerDiscreteScheduler",
            &[
                PredictionType::Epsilon,
                PredictionType::VPrediction,
                PredictionType::Sample,
                PredictionType::OriginalSample,
            ],
        )?;
        let continuous = config.timestep_type == Some(TimestepType::Continuous)
            && prediction_type == PredictionType::VPrediction;
        let mut sigmas: Vec<f32> = schedule.sigmas().into_iter().rev().collect();
        let timesteps = if continuous {
            sigmas.iter().map(|s| continuous_timestep(*s)).collect()
        } else {
            (0..schedule.num_train_timesteps)
                .rev()
                .map(|t| t as f64)
                .collect()
        };
        sigmas.push(0.0);
        Ok(Self {
            prediction_type,
            interpolation: config
                .interpolation_type
                .unwrap_or(InterpolationType::Linear),
            spacing,
            sigma_bounds: (config.sigma_min, config.sigma_max),
            timestep_spacing: config.timestep_spacing.unwrap_or(TimestepSpacing::Linspace),
            continuous,
            steps_offset: config.steps_offset.unwrap_or(0),
            final_sigmas_type: config.final_sigmas_type.unwrap_or(FinalSigmasType::Zero),
            timesteps,
            sigmas,
            index: StepIndex::default(),
            schedule,
            _backend: PhantomData,
        })
    }

    /// The sigma of the current step (the nearest timestep's, with a warning, when `t` is not
    /// in the schedule and no step index is set).
    fn sigma_for_input(&mut self, t: f64) -> f32 {
        let i = match self.index.current(&self.timesteps, t, false) {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!("scale_model_input: {e}; using the nearest timestep");
                nearest(&self.timesteps, t)
            }
        };
        self.sigmas.get(i).copied().unwrap_or(0.0)
    }
}

/// `0.25·ln σ` in float32.
fn continuous_timestep(sigma: f32) -> f64 {
    (0.25f32 * sigma.ln()) as f64
}

impl<B: Backend> Scheduler<B> for EulerDiscreteScheduler<B> {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Euler
    }

    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<()> {
        let n_train = self.schedule.num_train_timesteps;
        let n = num_inference_steps;
        check_steps(n, n_train)?;
        let mut timesteps = sigma_timesteps(self.timestep_spacing, n_train, n, self.steps_offset);
        let train_sigmas = self.schedule.sigmas();
        let log_sigmas: Vec<f32> = train_sigmas.iter().map(|s| s.ln()).collect();
        let mut sigmas: Vec<f64> = match self.interpolation {
            InterpolationType::Linear => timesteps
                .iter()
                .map(|&t| np_interp(t, &train_sigmas))
                .collect(),
            InterpolationType::LogLinear => torch_linspace_f32(
                train_sigmas[n_train - 1].ln() as f64,
                train_sigmas[0].ln() as f64,
                n + 1,
            )
            .into_iter()
            .map(|l| l.exp() as f64)
            .collect(),
        };
        if self.spacing != SigmaSpacing::Interpolated {
            sigmas = self.spacing.convert(&sigmas, self.sigma_bounds, n);
            timesteps = sigmas.iter().map(|&s| sigma_to_t(s, &log_sigmas)).collect();
        }
        let last = match self.final_sigmas_type {
            FinalSigmasType::SigmaMin => sigma_of(self.schedule.alphas_cumprod[0]),
            FinalSigmasType::Zero => 0.0,
        };
        self.sigmas = sigmas.iter().map(|&s| s as f32).chain([last]).collect();
        self.timesteps = if self.continuous {
            let count = self.sigmas.len() - 1;
            self.sigmas[..count]
                .iter()
                .map(|s| continuous_timestep(*s))
                .collect()
        } else {
            timesteps.into_iter().map(|t| t as f32 as f64).collect()
        };
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
        let sigma = self.sigma_for_input(timestep);
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
        let i = self.index.current(&self.timesteps, timestep, false)?;
        let (sigma, sigma_next) = match (self.sigmas.get(i), self.sigmas.get(i + 1)) {
            (Some(&s), Some(&n)) => (s, n),
            _ => return Err(exhausted(self.timesteps.len())),
        };
        let dtype = model_output.dtype();
        let (model_output, sample) = (f32(model_output), f32(sample));
        // γ = 0 (s_churn = 0), so σ̂ = σ·(γ + 1) = σ and no noise is added.
        let sigma_hat = sigma * (0.0 + 1.0);
        let pred_x0 = match self.prediction_type {
            PredictionType::Sample | PredictionType::OriginalSample => model_output,
            PredictionType::VPrediction => model_output
                .mul_scalar(-sigma / (sigma * sigma + 1.0).sqrt())
                .add(sample.clone().div_scalar(sigma * sigma + 1.0)),
            _ => sample.clone().sub(model_output.mul_scalar(sigma_hat)),
        };
        let derivative = sample.clone().sub(pred_x0).div_scalar(sigma_hat);
        let dt = sigma_next - sigma_hat;
        let prev = sample.add(derivative.mul_scalar(dt));
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

/// `init_noise_sigma` of the Euler-style schedulers: the largest sigma, or √(σ_max² + 1) for
/// `leading` spacing (float32).
pub(crate) fn sigma_init(sigmas: &[f32], spacing: TimestepSpacing) -> f64 {
    let max = sigmas.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    match spacing {
        TimestepSpacing::Linspace | TimestepSpacing::Trailing => max as f64,
        TimestepSpacing::Leading => (max * max + 1.0).sqrt() as f64,
    }
}
