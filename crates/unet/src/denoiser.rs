//! The UNet as a [`Denoiser`], and the seam where a ControlNet-style model plugs into it.
//!
//! * The UNet alone denoises with a text context (`Conditioning = Tensor<B, 3>`).
//! * A model that adds residuals to the UNet's skips and mid block (a ControlNet, Prompt
//!   Diffusion's ControlNet, a Diff-Plugin spatial branch) implements [`UNetControl`];
//!   [`Controlled`] pairs it with a UNet into one denoiser.

use burn::prelude::*;
use burn::tensor::DType;
use prompt_diffusion_core::Result;
use prompt_diffusion_core::denoiser::{Denoiser, timestep_tensor};

use crate::{UNet2DConditionModel, UNetResiduals};

impl<B: Backend> Denoiser<B> for UNet2DConditionModel<B> {
    /// The text context, `[batch, tokens, cross_attention_dim]`.
    type Conditioning = Tensor<B, 3>;

    fn predict(
        &self,
        latents: Tensor<B, 4>,
        timestep: f64,
        context: &Tensor<B, 3>,
    ) -> Result<Tensor<B, 4>> {
        let timestep = timestep_tensor(timestep, &latents.device());
        self.forward(latents.cast(self.dtype()), timestep, context.clone())
    }

    fn dtype(&self) -> DType {
        self.conv_in.dtype()
    }
}

/// A model that steers a UNet by adding residuals to its skip connections and mid block.
pub trait UNetControl<B: Backend> {
    /// The model's own inputs (a hint image, an example pair, a condition latent, …).
    type Hint;

    /// The residuals for one step.
    ///
    /// # Shapes
    /// `latents`: the UNet's input in its dtype, `[batch, c, h, w]`; `timestep`: `[1]`;
    /// `context`: `[batch, tokens, cross_attention_dim]`.
    ///
    /// # Errors
    /// [`Error::Shape`](prompt_diffusion_core::Error::Shape) when an input does not fit.
    fn residuals(
        &self,
        latents: Tensor<B, 4>,
        timestep: Tensor<B, 1>,
        context: Tensor<B, 3>,
        hint: &Self::Hint,
    ) -> Result<UNetResiduals<B>>;
}

/// The conditioning of a [`Controlled`] denoiser: the UNet's text context and the control
/// model's hint.
#[derive(Debug, Clone)]
pub struct ControlledConditioning<B: Backend, H> {
    /// The text context, `[batch, tokens, cross_attention_dim]`.
    pub context: Tensor<B, 3>,
    /// The control model's inputs.
    pub hint: H,
}

/// A UNet with a control model's residuals added at every step.
#[derive(Debug, Clone, Copy)]
pub struct Controlled<'a, B: Backend, C> {
    /// The UNet.
    pub unet: &'a UNet2DConditionModel<B>,
    /// The model whose residuals are added.
    pub control: &'a C,
}

impl<'a, B: Backend, C> Controlled<'a, B, C> {
    /// Pairs `unet` with `control`.
    pub fn new(unet: &'a UNet2DConditionModel<B>, control: &'a C) -> Self {
        Self { unet, control }
    }
}

impl<B: Backend, C: UNetControl<B>> Controlled<'_, B, C> {
    /// [`Denoiser::predict`] with the UNet reading `unet_input(latents)` while the control
    /// model reads the plain latents (both in the UNet's dtype): how an inpainting UNet's extra
    /// channels join.
    ///
    /// # Errors
    /// The control model's, `unet_input`'s and the UNet's errors.
    pub fn predict_with_unet_input(
        &self,
        latents: Tensor<B, 4>,
        timestep: f64,
        conditioning: &ControlledConditioning<B, C::Hint>,
        unet_input: impl FnOnce(Tensor<B, 4>) -> Result<Tensor<B, 4>>,
    ) -> Result<Tensor<B, 4>> {
        let timestep = timestep_tensor(timestep, &latents.device());
        let latents = latents.cast(self.unet.dtype());
        let ControlledConditioning { context, hint } = conditioning;
        let (unet, control) = (self.unet, self.control);
        let residuals =
            control.residuals(latents.clone(), timestep.clone(), context.clone(), hint)?;
        let input = unet_input(latents)?;
        unet.forward_with_residuals(input, timestep, context.clone(), &residuals)
    }
}

impl<B: Backend, C: UNetControl<B>> Denoiser<B> for Controlled<'_, B, C> {
    type Conditioning = ControlledConditioning<B, C::Hint>;

    fn predict(
        &self,
        latents: Tensor<B, 4>,
        timestep: f64,
        conditioning: &Self::Conditioning,
    ) -> Result<Tensor<B, 4>> {
        self.predict_with_unet_input(latents, timestep, conditioning, Ok)
    }

    fn dtype(&self) -> DType {
        self.unet.dtype()
    }
}

impl<B: Backend> UNetResiduals<B> {
    /// These residuals (of the conditional half of a guided batch) after zeros for the
    /// unconditional half: diffusers' guess mode under guidance.
    pub fn after_zeros(self) -> Self {
        let pad = |r: Tensor<B, 4>| Tensor::cat(vec![r.zeros_like(), r], 0);
        Self {
            down: self.down.into_iter().map(|r| r.map(pad)).collect(),
            mid: self.mid.map(pad),
        }
    }
}
