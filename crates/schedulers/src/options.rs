//! The enumerated string options of diffusers' scheduler configs (the `Literal[...]` parameters of
//! the `scheduling_*.py` constructors), as serde enums.
//!
//! Every value diffusers 0.42.1 accepts for a key is a variant here, so a valid config file always
//! parses; values this crate does not implement are rejected when a scheduler is built.

use serde::{Deserialize, Serialize};

/// `beta_schedule`: how the training betas are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BetaSchedule {
    /// `linspace(beta_start, beta_end, N)`.
    #[serde(rename = "linear")]
    Linear,
    /// `linspace(√beta_start, √beta_end, N)²` (Stable Diffusion).
    #[serde(rename = "scaled_linear")]
    ScaledLinear,
    /// The Glide cosine schedule, capped at 0.999.
    #[serde(rename = "squaredcos_cap_v2")]
    SquaredcosCapV2,
    /// DDPM only (GeoDiff sigmoid schedule; not supported by this crate).
    #[serde(rename = "sigmoid")]
    Sigmoid,
    /// DDPM only (Laplace schedule; not supported by this crate).
    #[serde(rename = "laplace")]
    Laplace,
}

/// `prediction_type`: what the model outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PredictionType {
    /// The added noise ε.
    #[serde(rename = "epsilon")]
    Epsilon,
    /// The velocity `α·ε − σ·x0` (SD 2.x 768 models).
    #[serde(rename = "v_prediction")]
    VPrediction,
    /// The clean sample x0.
    #[serde(rename = "sample")]
    Sample,
    /// Euler's older name for `sample`.
    #[serde(rename = "original_sample")]
    OriginalSample,
    /// Flow matching velocity (not supported by this crate).
    #[serde(rename = "flow_prediction")]
    FlowPrediction,
}

/// `timestep_spacing`: how inference timesteps are spread over the training range (Table 2 of
/// "Common Diffusion Noise Schedules and Sample Steps are Flawed").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TimestepSpacing {
    /// Evenly spaced from 0 to N−1, rounded.
    #[serde(rename = "linspace")]
    Linspace,
    /// Multiples of `N / n` from 0, plus `steps_offset`.
    #[serde(rename = "leading")]
    Leading,
    /// Multiples of `N / n` counted down from N, minus one.
    #[serde(rename = "trailing")]
    Trailing,
}

/// DDPM `variance_type` (and DPM-Solver's learned-variance flag).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VarianceType {
    /// The posterior variance β̃_t.
    #[serde(rename = "fixed_small")]
    FixedSmall,
    /// β̃_t through its logarithm.
    #[serde(rename = "fixed_small_log")]
    FixedSmallLog,
    /// β_t.
    #[serde(rename = "fixed_large")]
    FixedLarge,
    /// β_t through its logarithm.
    #[serde(rename = "fixed_large_log")]
    FixedLargeLog,
    /// Predicted by the model (not supported by this crate).
    #[serde(rename = "learned")]
    Learned,
    /// Interpolated by the model (not supported by this crate).
    #[serde(rename = "learned_range")]
    LearnedRange,
}

/// Euler `interpolation_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum InterpolationType {
    /// Linear interpolation of the training sigmas at the timesteps.
    #[serde(rename = "linear")]
    Linear,
    /// Log-linear sigmas between the smallest and the largest training sigma.
    #[serde(rename = "log_linear")]
    LogLinear,
}

/// Euler `timestep_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TimestepType {
    /// Timesteps on the training scale.
    #[serde(rename = "discrete")]
    Discrete,
    /// `0.25·ln σ` (with v-prediction).
    #[serde(rename = "continuous")]
    Continuous,
}

/// `final_sigmas_type`: the sigma after the last step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FinalSigmasType {
    /// σ = 0: the last step returns a clean sample.
    #[serde(rename = "zero")]
    Zero,
    /// The smallest training sigma (diffusers before 0.28, Diff-Plugin's UniPC).
    #[serde(rename = "sigma_min")]
    SigmaMin,
}

/// DPM-Solver `algorithm_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AlgorithmType {
    /// DPM-Solver++ (data prediction).
    #[serde(rename = "dpmsolver++")]
    DpmSolverPlusPlus,
    /// DPM-Solver (noise prediction; deprecated in diffusers).
    #[serde(rename = "dpmsolver")]
    DpmSolver,
    /// Stochastic DPM-Solver++.
    #[serde(rename = "sde-dpmsolver++")]
    SdeDpmSolverPlusPlus,
    /// Stochastic DPM-Solver (not supported by this crate).
    #[serde(rename = "sde-dpmsolver")]
    SdeDpmSolver,
    /// DEIS; diffusers' DPM-Solver replaces it with `dpmsolver++`.
    #[serde(rename = "deis")]
    Deis,
}

/// `solver_type` of DPM-Solver (`midpoint`/`heun`) and UniPC (`bh1`/`bh2`). Each scheduler maps
/// the other's values onto its default, as diffusers does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SolverType {
    /// DPM-Solver second-order midpoint form.
    #[serde(rename = "midpoint")]
    Midpoint,
    /// DPM-Solver second-order Heun form.
    #[serde(rename = "heun")]
    Heun,
    /// UniPC with B(h) = h.
    #[serde(rename = "bh1")]
    Bh1,
    /// UniPC with B(h) = eʰ − 1.
    #[serde(rename = "bh2")]
    Bh2,
    /// DEIS' log-rho solver; mapped to the scheduler's default.
    #[serde(rename = "logrho")]
    Logrho,
}
