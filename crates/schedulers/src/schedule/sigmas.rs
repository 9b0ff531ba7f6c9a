//! The state Euler, Euler ancestral, LMS, DPM-Solver and UniPC share: the sigma schedule, the
//! timesteps, the step and begin indices, `init_noise_sigma`, the σ-scaled model input and the
//! forward process, and the sigma layouts of their `set_timesteps`.

use burn::prelude::*;
use prompt_diffusion_core::Result;

use super::family::{Family, ScheduleParams};
use super::{
    SigmaSpacing, StepIndex, alpha_sigma, multistep_timesteps, nearest, np_interp, np_linspace,
    round_even, sigma_of, sigma_timesteps, sigma_to_t, torch_linspace_f32,
};
use crate::options::{FinalSigmasType, PredictionType, TimestepSpacing};
use crate::tensor::exhausted;

/// How a sigma scheduler relates the sample to the noise level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// Euler, Euler ancestral, LMS: x_t = x0 + σ·ε; the model input is scaled by 1/√(σ² + 1)
    /// and the initial noise by the largest sigma.
    Exploding,
    /// DPM-Solver, UniPC: x_t = α·x0 + σ_t·ε; no input scaling, unit initial noise, and a
    /// timestep outside the schedule falls back to the last step.
    Preserving,
}

/// The sigma options of a scheduler (`use_karras_sigmas`/`use_exponential_sigmas`, the bounds
/// they are spaced between, `final_sigmas_type`).
#[derive(Debug, Clone, Copy)]
pub struct SigmaOptions {
    /// Interpolated, Karras or exponential sigmas.
    pub spacing: SigmaSpacing,
    /// `sigma_min`, `sigma_max` (`None`: the schedule's).
    pub bounds: (Option<f64>, Option<f64>),
    /// The sigma after the last step.
    pub final_sigmas_type: FinalSigmasType,
}

/// The sigma family's shared state.
#[derive(Debug, Clone)]
pub struct SigmaState {
    /// Schedule, spacing, offset and prediction type.
    pub params: ScheduleParams,
    /// How the sample relates to the noise level.
    pub form: Form,
    /// The sigma options.
    pub options: SigmaOptions,
    /// The current timesteps.
    pub timesteps: Vec<f64>,
    /// The sigma of each timestep, then the final sigma.
    pub sigmas: Vec<f32>,
    /// `_step_index` / `_begin_index`.
    pub index: StepIndex,
    /// Whether `step` may run (the multistep solvers need `set_timesteps` first).
    pub ready: bool,
}

impl SigmaState {
    /// The state before `set_timesteps`: every training timestep, descending, with its sigma.
    pub fn new(params: ScheduleParams, form: Form, options: SigmaOptions) -> Self {
        let n_train = params.schedule.num_train_timesteps;
        let sigmas = params
            .schedule
            .sigmas()
            .into_iter()
            .rev()
            .chain([0.0])
            .collect();
        Self {
            params,
            form,
            options,
            timesteps: (0..n_train).rev().map(|t| t as f64).collect(),
            sigmas,
            index: StepIndex::default(),
            ready: form == Form::Exploding,
        }
    }

    /// The sigma after the last step for `final_sigmas_type` (σ of ᾱ₀, or 0).
    pub fn final_sigma(&self) -> f32 {
        match self.options.final_sigmas_type {
            FinalSigmasType::SigmaMin => sigma_of(self.params.schedule.alphas_cumprod[0]),
            FinalSigmasType::Zero => 0.0,
        }
    }

    /// Sets the sigmas (rounded to float32) followed by `last`.
    pub fn set_sigmas(&mut self, sigmas: &[f64], last: f32) {
        self.sigmas = sigmas.iter().map(|&s| s as f32).chain([last]).collect();
    }

    /// The `set_timesteps` of Euler, Euler ancestral and LMS: float32 timesteps, the training
    /// sigmas interpolated at them (or log-linear between the extremes, for Euler's
    /// `interpolation_type = "log_linear"`), then Karras/exponential spacing, then the final
    /// sigma.
    pub fn lay_out_discrete(&mut self, n: usize, log_linear: bool) {
        let p = &self.params;
        let n_train = p.schedule.num_train_timesteps;
        let mut timesteps = sigma_timesteps(p.timestep_spacing, n_train, n, p.steps_offset);
        let train = p.schedule.sigmas();
        let log_sigmas: Vec<f32> = train.iter().map(|s| s.ln()).collect();
        let mut sigmas: Vec<f64> = if log_linear {
            torch_linspace_f32(train[n_train - 1].ln() as f64, train[0].ln() as f64, n + 1)
                .into_iter()
                .map(|l| l.exp() as f64)
                .collect()
        } else {
            timesteps.iter().map(|&t| np_interp(t, &train)).collect()
        };
        let spacing = self.options.spacing;
        if spacing != SigmaSpacing::Interpolated {
            sigmas = spacing.convert(&sigmas, self.options.bounds, n);
            timesteps = sigmas.iter().map(|&s| sigma_to_t(s, &log_sigmas)).collect();
        }
        self.set_sigmas(&sigmas, self.final_sigma());
        self.timesteps = timesteps.into_iter().map(|t| t as f32 as f64).collect();
    }

    /// The `set_timesteps` of DPM-Solver and UniPC up to the final sigma: integer timesteps up
    /// to `last` (the training range `lambda_min_clipped` leaves), then Karras, λ-uniform
    /// (`lu_lambdas`) or exponential sigmas mapped back to timesteps (rounded for Karras and
    /// λ-uniform when `round`), or the training sigmas interpolated at the timesteps. Returns
    /// the sigmas (without the final one).
    pub fn lay_out_multistep(
        &mut self,
        n: usize,
        last: usize,
        lu_lambdas: bool,
        round: bool,
    ) -> Vec<f64> {
        let p = &self.params;
        let n_train = p.schedule.num_train_timesteps;
        let mut timesteps =
            multistep_timesteps(p.timestep_spacing, n_train, last, n, p.steps_offset);
        let train = p.schedule.sigmas();
        let log_sigmas: Vec<f32> = train.iter().map(|s| s.ln()).collect();
        let descending: Vec<f64> = train.iter().rev().map(|&s| s as f64).collect();
        let spacing = self.options.spacing;
        let to_t = |sigmas: &[f64], round: bool| -> Vec<f64> {
            sigmas
                .iter()
                .map(|&s| {
                    let t = sigma_to_t(s, &log_sigmas);
                    if round { round_even(t) } else { t }
                })
                .collect()
        };
        // The reference's order: Karras, then λ-uniform, then exponential, else interpolation.
        let sigmas: Vec<f64> = if spacing == SigmaSpacing::Karras || lu_lambdas {
            let sigmas = if spacing == SigmaSpacing::Karras {
                spacing.convert(&descending, self.options.bounds, n)
            } else {
                let (lmin, lmax) = (log_sigmas[0] as f64, log_sigmas[n_train - 1] as f64);
                np_linspace(0.0, 1.0, n)
                    .into_iter()
                    .map(|r| (lmax + r * (lmin - lmax)).exp())
                    .collect()
            };
            timesteps = to_t(&sigmas, round);
            sigmas
        } else if spacing == SigmaSpacing::Exponential {
            let sigmas = spacing.convert(&descending, self.options.bounds, n);
            timesteps = to_t(&sigmas, false);
            sigmas
        } else {
            timesteps.iter().map(|&t| np_interp(t, &train)).collect()
        };
        // `.to(torch.int64)` truncates toward zero.
        self.timesteps = timesteps.into_iter().map(f64::trunc).collect();
        sigmas
    }
}

impl Family for SigmaState {
    fn params(&self) -> &ScheduleParams {
        &self.params
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn set_begin_index(&mut self, index: usize) {
        self.index.begin = Some(index);
    }

    /// The largest sigma, or √(σ_max² + 1) for `leading` spacing (float32), for the exploding
    /// form; 1 otherwise.
    fn init_noise_sigma(&self) -> f64 {
        if self.form == Form::Preserving {
            return 1.0;
        }
        let max = self
            .sigmas
            .iter()
            .copied()
            .fold(f32::NEG_INFINITY, f32::max);
        match self.params.timestep_spacing {
            TimestepSpacing::Linspace | TimestepSpacing::Trailing => max as f64,
            TimestepSpacing::Leading => (max * max + 1.0).sqrt() as f64,
        }
    }

    /// The sample over √(σ² + 1) in the exploding form, with the sigma of the current step
    /// (the nearest timestep's, with a warning, when `t` is not in the schedule and no step
    /// index is set).
    fn scale_model_input<B: Backend>(&mut self, sample: Tensor<B, 4>, t: f64) -> Tensor<B, 4> {
        if self.form == Form::Preserving {
            return sample;
        }
        let i = match self.index.current(&self.timesteps, t, false) {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!("scale_model_input: {e}; using the nearest timestep");
                nearest(&self.timesteps, t)
            }
        };
        let sigma = self.sigmas.get(i).copied().unwrap_or(0.0);
        sample.div_scalar((sigma * sigma + 1.0).sqrt())
    }

    /// `(1, σ)` in the exploding form, `(α, σ_t)` in the preserving one.
    fn noise_scales(&self, timestep: f64) -> (f32, f32) {
        let i = self.index.for_add_noise(&self.timesteps, timestep);
        let sigma = self.sigmas.get(i).copied().unwrap_or(0.0);
        match self.form {
            Form::Exploding => (1.0, sigma),
            Form::Preserving => alpha_sigma(sigma),
        }
    }

    /// The Euler ancestral layout: interpolated sigmas.
    fn lay_out(&mut self, n: usize) {
        self.lay_out_discrete(n, false);
    }

    fn restarted(&mut self, _n: usize) {
        self.index = StepIndex::default();
        self.ready = true;
    }

    fn ready(&self) -> bool {
        self.ready
    }

    fn enter(&mut self, timestep: f64) -> Result<usize> {
        let last_fallback = self.form == Form::Preserving;
        let i = self
            .index
            .current(&self.timesteps, timestep, last_fallback)?;
        if i + 1 >= self.sigmas.len() {
            return Err(exhausted(self.timesteps.len()));
        }
        Ok(i)
    }

    fn leave(&mut self, at: usize) {
        self.index.step = Some(at + 1);
    }
}

/// The predicted x0 of Euler, Euler ancestral and LMS at noise level `sigma`.
pub fn sigma_x0<B: Backend>(
    prediction_type: PredictionType,
    model_output: Tensor<B, 4>,
    sample: &Tensor<B, 4>,
    sigma: f32,
) -> Tensor<B, 4> {
    match prediction_type {
        PredictionType::Sample | PredictionType::OriginalSample => model_output,
        PredictionType::VPrediction => model_output
            .mul_scalar(-sigma / (sigma * sigma + 1.0).sqrt())
            .add(sample.clone().div_scalar(sigma * sigma + 1.0)),
        _ => sample.clone().sub(model_output.mul_scalar(sigma)),
    }
}
