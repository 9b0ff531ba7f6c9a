//! The noise predictor a sampler drives, and classifier-free guidance over any of them.
//!
//! Every model that denoises latents — the UNet, a UNet with a ControlNet or a Diff-Plugin
//! plugin added to it, Prompt Diffusion, Versatile Diffusion's diffuser — implements
//! [`Denoiser`]: latents and a timestep in, the model's prediction out, with whatever else it
//! is conditioned on (a text context, a hint image, …) as its [`Denoiser::Conditioning`].
//! [`Guided`] wraps any denoiser in classifier-free guidance, so guidance is written once. The
//! loop that drives a denoiser through a scheduler is `prompt_diffusion_schedulers::Sampler`.

use burn::prelude::*;
use burn::tensor::DType;

use crate::Result;

/// A model that predicts the noise (or `v`, or `x₀`: whatever the scheduler's
/// `prediction_type` says) of latents at a timestep.
pub trait Denoiser<B: Backend> {
    /// What the model is conditioned on besides the latents and the timestep, batched for the
    /// input it will receive (under guidance: `[unconditional; conditional]`).
    type Conditioning;

    /// The prediction for `latents` (f32, already scaled by the scheduler's
    /// `scale_model_input`) at `timestep`. The model casts the latents to its own dtype; the
    /// prediction is in that dtype.
    ///
    /// # Shapes
    /// `latents`: `[batch, channels, h, w]` → the same shape (channels = the model's output
    /// channels).
    ///
    /// # Errors
    /// The model's errors, e.g. [`Error::Shape`](crate::Error::Shape) when the conditioning
    /// does not fit the latents.
    fn predict(
        &self,
        latents: Tensor<B, 4>,
        timestep: f64,
        conditioning: &Self::Conditioning,
    ) -> Result<Tensor<B, 4>>;

    /// The float type the model computes in (it selects the advice of a NaN error).
    fn dtype(&self) -> DType;
}

impl<B: Backend, D: Denoiser<B> + ?Sized> Denoiser<B> for &D {
    type Conditioning = D::Conditioning;

    fn predict(
        &self,
        latents: Tensor<B, 4>,
        timestep: f64,
        conditioning: &Self::Conditioning,
    ) -> Result<Tensor<B, 4>> {
        (**self).predict(latents, timestep, conditioning)
    }

    fn dtype(&self) -> DType {
        (**self).dtype()
    }
}

/// Classifier-free guidance around a denoiser.
///
/// With a scale `s` the inner model receives the latents twice, `[x; x]` along the batch (its
/// conditioning must hold the unconditional half first, as diffusers orders it), and the
/// prediction is `ε_u + s·(ε_c − ε_u)`, computed in f32. Without a scale the latents pass
/// through once, unguided.
#[derive(Debug, Clone, Copy)]
pub struct Guided<D> {
    /// The guided model.
    pub denoiser: D,
    /// The guidance scale; `None` runs the model once, without guidance.
    pub scale: Option<f64>,
}

impl<D> Guided<D> {
    /// Guides `denoiser` with `scale` (`None`: no guidance).
    pub fn new(denoiser: D, scale: Option<f64>) -> Self {
        Self { denoiser, scale }
    }
}

impl<B: Backend, D: Denoiser<B>> Denoiser<B> for Guided<D> {
    type Conditioning = D::Conditioning;

    fn predict(
        &self,
        latents: Tensor<B, 4>,
        timestep: f64,
        conditioning: &Self::Conditioning,
    ) -> Result<Tensor<B, 4>> {
        let Some(scale) = self.scale else {
            return self.denoiser.predict(latents, timestep, conditioning);
        };
        let input = Tensor::cat(vec![latents.clone(), latents], 0);
        let prediction = self.denoiser.predict(input, timestep, conditioning)?;
        let [uncond, cond] = split_halves(prediction.cast(DType::F32));
        Ok(uncond.clone() + (cond - uncond) * scale)
    }

    fn dtype(&self) -> DType {
        self.denoiser.dtype()
    }
}

/// `[2n, …]` → the first and the second `n` rows.
fn split_halves<B: Backend, const D: usize>(x: Tensor<B, D>) -> [Tensor<B, D>; 2] {
    let n = x.dims()[0] / 2;
    let first = x.clone().narrow(0, 0, n);
    let second = x.narrow(0, n, n);
    [first, second]
}

/// A one-element f32 timestep tensor, the form the models take.
pub fn timestep_tensor<B: Backend>(timestep: f64, device: &B::Device) -> Tensor<B, 1> {
    Tensor::from_data(
        TensorData::new(vec![timestep as f32], [1]),
        (device, DType::F32),
    )
}
