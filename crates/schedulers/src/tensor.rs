//! Small tensor helpers shared by the schedulers: float32 promotion, shape checks, noise, and the
//! tensor parts diffusers copies between scheduler files (`DDPMScheduler.add_noise` from
//! `scheduling_ddpm.py`, `convert_model_output` of the multistep solvers).

use burn::prelude::*;
use burn::tensor::{DType, FloatDType};
use prompt_diffusion_core::noise::NoiseSource;
use prompt_diffusion_core::{Error, Result};

use crate::options::PredictionType;
use crate::schedule::alpha_sigma;

/// The tensor in float32 (a no-op when it already is).
pub(crate) fn f32<B: Backend>(t: Tensor<B, 4>) -> Tensor<B, 4> {
    t.cast(FloatDType::F32)
}

/// The tensor in `dtype` (a no-op when it already is).
pub(crate) fn to_dtype<B: Backend>(t: Tensor<B, 4>, dtype: DType) -> Tensor<B, 4> {
    t.cast(dtype)
}

/// Checks that the model output and the sample can be combined elementwise.
pub(crate) fn check_step_shapes<B: Backend>(
    model_output: &Tensor<B, 4>,
    sample: &Tensor<B, 4>,
) -> Result<()> {
    if model_output.dims() != sample.dims() {
        return Err(Error::invalid_input(
            "model_output",
            format!(
                "shape {:?} differs from the sample's {:?}",
                model_output.dims(),
                sample.dims()
            ),
        ));
    }
    Ok(())
}

/// Checks that a tensor kept from an earlier step matches the current shape.
pub(crate) fn check_history<B: Backend>(
    history: Option<[usize; 4]>,
    sample: &Tensor<B, 4>,
) -> Result<()> {
    match history {
        Some(h) if h != sample.dims() => Err(Error::invalid_input(
            "sample",
            format!(
                "shape {:?} differs from the {h:?} of earlier steps; call set_timesteps to restart",
                sample.dims(),
            ),
        )),
        _ => Ok(()),
    }
}

/// Draws a float32 N(0, 1) tensor shaped like `like`.
pub(crate) fn draw_noise<B: Backend>(
    noise: &mut dyn NoiseSource,
    like: &Tensor<B, 4>,
) -> Result<Tensor<B, 4>> {
    let data = noise.sample(&like.dims())?.convert_dtype(DType::F32);
    Ok(Tensor::from_data(data, (&like.device(), DType::F32)))
}

/// The "set_timesteps was not called" error.
pub(crate) fn not_initialised() -> Error {
    Error::invalid_input("scheduler", "set_timesteps must be called before step")
}

/// The "schedule exhausted" error.
pub(crate) fn exhausted(len: usize) -> Error {
    Error::invalid_input(
        "scheduler",
        format!("all {len} steps of the schedule were taken; call set_timesteps to restart"),
    )
}

/// Validates a step count against the training range.
pub(crate) fn check_steps(num_inference_steps: usize, num_train_timesteps: usize) -> Result<()> {
    if num_inference_steps == 0 {
        return Err(Error::invalid_input(
            "num_inference_steps",
            "must be at least 1",
        ));
    }
    if num_inference_steps > num_train_timesteps {
        return Err(Error::invalid_input(
            "num_inference_steps",
            format!("{num_inference_steps} exceeds num_train_timesteps ({num_train_timesteps})"),
        ));
    }
    Ok(())
}

/// An integral training timestep in `0..n` (the discrete schedulers index `alphas_cumprod`).
pub(crate) fn discrete_timestep(t: f64, n: usize) -> Result<usize> {
    if t.fract() != 0.0 || t < 0.0 || t >= n as f64 {
        return Err(Error::invalid_input(
            "timestep",
            format!("{t} is not an integer training timestep in 0..{n}"),
        ));
    }
    Ok(t as usize)
}

/// The factors of diffusers' `DDPMScheduler.add_noise` (shared by DDIM, DDPM and PNDM):
/// `(√ᾱ_t, √(1 − ᾱ_t))`, for the nearest training timestep.
pub(crate) fn alpha_noise_scales(alphas_cumprod: &[f32], timestep: f64) -> (f32, f32) {
    let last = alphas_cumprod.len().saturating_sub(1);
    let t = if timestep.is_finite() {
        timestep.round().clamp(0.0, last as f64) as usize
    } else {
        last
    };
    if t as f64 != timestep {
        tracing::warn!("add_noise: timestep {timestep} is not a training timestep; using {t}");
    }
    let a = alphas_cumprod[t];
    (a.sqrt(), (1.0 - a).sqrt())
}

/// `convert_model_output` of the multistep solvers: the data prediction x0 (`data`) or the
/// noise prediction ε from the raw model output at noise level `sigma`.
pub(crate) fn convert_model_output<B: Backend>(
    prediction_type: PredictionType,
    data: bool,
    model_output: Tensor<B, 4>,
    sample: &Tensor<B, 4>,
    sigma: f32,
) -> Tensor<B, 4> {
    let (alpha_t, sigma_t) = alpha_sigma(sigma);
    match (prediction_type, data) {
        (PredictionType::Sample, true) => model_output,
        (PredictionType::VPrediction, true) => sample
            .clone()
            .mul_scalar(alpha_t)
            .sub(model_output.mul_scalar(sigma_t)),
        (_, true) => sample
            .clone()
            .sub(model_output.mul_scalar(sigma_t))
            .div_scalar(alpha_t),
        (PredictionType::Sample, false) => sample
            .clone()
            .sub(model_output.mul_scalar(alpha_t))
            .div_scalar(sigma_t),
        (PredictionType::VPrediction, false) => model_output
            .mul_scalar(alpha_t)
            .add(sample.clone().mul_scalar(sigma_t)),
        (_, false) => model_output,
    }
}
