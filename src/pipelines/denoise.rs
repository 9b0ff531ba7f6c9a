//! The denoising loop every pipeline shares: classifier-free guidance, scheduler steps,
//! progress reporting and cancellation.

use std::ops::ControlFlow;
use std::time::Instant;

use burn::prelude::*;
use burn::tensor::DType;
use prompt_diffusion_core::finite::{Stage, check_finite};
use prompt_diffusion_core::noise::NoiseSource;
use prompt_diffusion_core::progress::{StepCallback, StepInfo};
use prompt_diffusion_core::{Error, Result};
use prompt_diffusion_schedulers::Scheduler;

/// Runs `model` over `timesteps`, starting from `latents`.
///
/// With `guidance_scale = Some(s)` the model receives the latents twice, `[uncond; cond]`
/// along the batch, and the prediction is `ε_u + s·(ε_c − ε_u)` (diffusers' order: the
/// unconditional half first); with `None` it receives them once. The model gets the
/// scheduler-scaled input and the timestep and returns its prediction; latents and scheduler
/// arithmetic stay in f32 whatever the model's dtype.
///
/// The latents are checked for NaN and infinite values before the first step and after each
/// step ([`check_finite`], one reduction read back per step), so a broken weight or a
/// half-precision overflow fails at the step it appears instead of producing a black image.
///
/// # Errors
/// The model's and the scheduler's errors, [`Error::NonFinite`] naming the step where NaN/Inf
/// appeared, and [`Error::Cancelled`] when `callback` stops the run.
pub fn denoise<B: Backend>(
    scheduler: &mut dyn Scheduler<B>,
    latents: Tensor<B, 4>,
    timesteps: &[f64],
    guidance_scale: Option<f64>,
    model: &mut dyn FnMut(Tensor<B, 4>, f64) -> Result<Tensor<B, 4>>,
    noise: &mut dyn NoiseSource,
    callback: &mut dyn StepCallback,
) -> Result<Tensor<B, 4>> {
    let mut latents = latents.cast(DType::F32);
    check_finite(&latents, Stage::InitialLatents, DType::F32)?;
    let total = timesteps.len();
    for (i, &t) in timesteps.iter().enumerate() {
        let start = Instant::now();
        let input = match guidance_scale {
            Some(_) => Tensor::cat(vec![latents.clone(), latents.clone()], 0),
            None => latents.clone(),
        };
        let input = scheduler.scale_model_input(input, t);
        let prediction = model(input, t)?;
        let model_dtype = prediction.dtype();
        let prediction = prediction.cast(DType::F32);
        let prediction = match guidance_scale {
            Some(scale) => {
                let [uncond, cond] = split_halves(prediction);
                uncond.clone() + (cond - uncond) * scale
            }
            None => prediction,
        };
        latents = scheduler.step(prediction, t, latents, noise)?;
        check_finite(&latents, Stage::AfterStep(i + 1), model_dtype)?;
        let info = StepInfo {
            step: i + 1,
            total,
            timestep: t,
            elapsed: start.elapsed(),
        };
        if let ControlFlow::Break(()) = callback.on_step(&info) {
            return Err(Error::Cancelled { step: i });
        }
    }
    Ok(latents)
}

/// `[2n, …]` → the first and the second `n` rows.
pub(crate) fn split_halves<B: Backend>(x: Tensor<B, 4>) -> [Tensor<B, 4>; 2] {
    let n = x.dims()[0] / 2;
    let first = x.clone().narrow(0, 0, n);
    let second = x.narrow(0, n, n);
    [first, second]
}
