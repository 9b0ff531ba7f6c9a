//! Diffusion noise schedulers for the prompt-diffusion pipelines, numerically equal to diffusers
//! 0.42.1: DDIM, DDPM, PNDM (PLMS and the Runge–Kutta warm-up), Euler, Euler ancestral,
//! DPM-Solver++ multistep (optionally with Karras sigmas), UniPC multistep and LMS.
//!
//! * [`Scheduler`] — the one trait a denoising loop talks to (`set_timesteps`,
//!   `scale_model_input`, `step`, `add_noise`, …).
//! * [`SchedulerConfig`] — a `scheduler_config.json` with every key of every scheduler; its
//!   [`build`](SchedulerConfig::build) creates the folder's class or, like diffusers'
//!   `OtherScheduler.from_config(…)`, any other [`SchedulerKind`].
//!
//! Per-timestep scalars are computed once on the host (in the reference's float32/float64
//! arithmetic); tensors are used only for the sample arithmetic. Randomness enters only through
//! the [`NoiseSource`] passed to [`Scheduler::step`], so the same seed gives the same output.
//!
//! ```no_run
//! use burn::prelude::*;
//! use burn::tensor::DType;
//! use burn_ndarray::NdArray;
//! use prompt_diffusion_core::noise::{NoiseSource, SeededNoise};
//! use prompt_diffusion_schedulers::{SchedulerConfig, SchedulerKind};
//!
//! # fn main() -> prompt_diffusion_core::Result<()> {
//! type B = NdArray<f32>;
//! let device = Default::default();
//! let config = SchedulerConfig::from_file("stable-diffusion-v1-5/scheduler/scheduler_config.json")?;
//! let mut scheduler = config.build::<B>(Some(SchedulerKind::DpmSolverMultistepKarras), &device)?;
//! scheduler.set_timesteps(25)?;
//! let mut noise = SeededNoise::new(42);
//! let mut latents: Tensor<B, 4> = noise
//!     .tensor([1, 4, 64, 64], &device, DType::F32)?
//!     .mul_scalar(scheduler.init_noise_sigma());
//! for t in scheduler.timesteps().to_vec() {
//!     let input = scheduler.scale_model_input(latents.clone(), t);
//!     let eps = input.zeros_like(); // the UNet's noise prediction for `input` at `t`
//!     latents = scheduler.step(eps, t, latents, &mut noise)?;
//! }
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

mod config;
mod ddim;
mod ddpm;
mod dpmsolver_multistep;
mod euler_ancestral_discrete;
mod euler_discrete;
mod kind;
mod lms_discrete;
mod options;
mod pndm;
mod sampler;
mod schedule;
mod tensor;
mod unipc_multistep;

use burn::prelude::*;
use prompt_diffusion_core::Result;
use prompt_diffusion_core::noise::NoiseSource;

pub use config::SchedulerConfig;
pub use ddim::DdimScheduler;
pub use ddpm::DdpmScheduler;
pub use dpmsolver_multistep::DpmSolverMultistepScheduler;
pub use euler_ancestral_discrete::EulerAncestralDiscreteScheduler;
pub use euler_discrete::EulerDiscreteScheduler;
pub use kind::SchedulerKind;
pub use lms_discrete::LmsDiscreteScheduler;
pub use options::{
    AlgorithmType, BetaSchedule, FinalSigmasType, InterpolationType, PredictionType, SolverType,
    TimestepSpacing, TimestepType, VarianceType,
};
pub use pndm::PndmScheduler;
pub use sampler::{MaskBlend, Sampler};
pub use schedule::NoiseSchedule;
pub use unipc_multistep::UniPcMultistepScheduler;

/// A diffusion scheduler: the timestep schedule and the update rule of a denoising loop.
///
/// A loop calls [`set_timesteps`](Scheduler::set_timesteps) once, multiplies the initial noise by
/// [`init_noise_sigma`](Scheduler::init_noise_sigma), and for every `t` in
/// [`timesteps`](Scheduler::timesteps) runs the model on
/// [`scale_model_input`](Scheduler::scale_model_input)`(sample, t)` and feeds its output to
/// [`step`](Scheduler::step). img2img starts at index `k` of the timesteps: call
/// [`set_begin_index`](Scheduler::set_begin_index)`(k)`, noise the image latent with
/// [`add_noise`](Scheduler::add_noise) at `timesteps()[k]` and loop over `timesteps()[k..]`.
///
/// Sample arithmetic runs in float32 and `step` returns the model output's dtype (as diffusers'
/// sigma-based schedulers do).
pub trait Scheduler<B: Backend> {
    /// Which scheduler this is.
    fn kind(&self) -> SchedulerKind;

    /// diffusers' `set_timesteps`: computes the schedule for `num_inference_steps` steps and
    /// resets the multistep history.
    ///
    /// # Errors
    /// [`Error::InvalidInput`](prompt_diffusion_core::Error::InvalidInput) for 0 steps, more
    /// steps than `num_train_timesteps`, or a step count the scheduler cannot lay out (PNDM's
    /// Runge–Kutta warm-up needs at least 4).
    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<()>;

    /// The timesteps of the current schedule, in the order the loop visits them (float:
    /// sigma-based schedulers have fractional ones; PNDM repeats some).
    fn timesteps(&self) -> &[f64];

    /// img2img: the loop starts at this index of [`timesteps`](Scheduler::timesteps)
    /// (diffusers' `set_begin_index`; a no-op for DDIM, DDPM and PNDM, which have none).
    fn set_begin_index(&mut self, index: usize);

    /// The standard deviation of the initial noise (1 for the DDPM family, the largest sigma
    /// for Euler-style schedulers).
    fn init_noise_sigma(&self) -> f64;

    /// The model input for `timestep` (σ-scaled for Euler, Euler ancestral and LMS; the
    /// sample itself for the others).
    fn scale_model_input(&mut self, sample: Tensor<B, 4>, timestep: f64) -> Tensor<B, 4>;

    /// One denoising step: the sample at the next timestep from the model output at
    /// `timestep`. Stochastic schedulers draw their noise (shaped like `model_output`) from
    /// `noise`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`](prompt_diffusion_core::Error::InvalidInput) when
    /// `set_timesteps` was not called, the shapes of `model_output` and `sample` differ,
    /// `timestep` is not in the schedule (where diffusers fails too), the schedule is
    /// exhausted, or `noise` cannot deliver.
    fn step(
        &mut self,
        model_output: Tensor<B, 4>,
        timestep: f64,
        sample: Tensor<B, 4>,
        noise: &mut dyn NoiseSource,
    ) -> Result<Tensor<B, 4>>;

    /// The forward process: `original` noised with `noise` to the level of `timestep` (in
    /// `original`'s dtype). A timestep outside the schedule falls back to the nearest one.
    ///
    /// # Panics
    /// When `original` and `noise` have different shapes (burn's elementwise ops).
    fn add_noise(&self, original: Tensor<B, 4>, noise: Tensor<B, 4>, timestep: f64)
    -> Tensor<B, 4>;

    /// DDIM's η (diffusers passes it to `DDIMScheduler.step` as `eta`; 0 = deterministic,
    /// 1 = DDPM-like). Other schedulers ignore it, as diffusers' pipelines do.
    fn set_eta(&mut self, eta: f64) {
        let _ = eta;
    }
}
