//! Inpainting UNets (SD inpainting checkpoints: `in_channels` = 9) as [`Denoiser`]s.
//!
//! Such a UNet reads, besides the latents, the mask and the latents of the masked image
//! concatenated along the channels (diffusers' `StableDiffusionInpaintPipeline`:
//! `cat([latents, mask, masked_image_latents], dim=1)`). [`Inpainting`] wraps the UNet, or a
//! UNet steered by a control model, so that the concatenation happens inside the denoiser and
//! the sampler, guidance and the control model keep seeing the plain latents (a ControlNet reads
//! the 4 latent channels only, as in diffusers' `StableDiffusionControlNetInpaintPipeline`).

use burn::prelude::*;
use burn::tensor::DType;
use prompt_diffusion_core::Result;
use prompt_diffusion_core::denoiser::Denoiser;

use crate::{Controlled, ControlledConditioning, UNet2DConditionModel, UNetControl, shape_error};

/// A denoiser whose UNet also reads a mask and the masked image's latents.
#[derive(Debug, Clone, Copy)]
pub struct Inpainting<D> {
    /// The UNet, or the UNet with its control model.
    pub denoiser: D,
}

impl<D> Inpainting<D> {
    /// Wraps `denoiser`.
    pub fn new(denoiser: D) -> Self {
        Self { denoiser }
    }
}

/// The conditioning of an [`Inpainting`] denoiser.
#[derive(Debug, Clone)]
pub struct InpaintingConditioning<B: Backend, C> {
    /// The wrapped denoiser's conditioning.
    pub inner: C,
    /// The mask and the masked image's latents, `[batch, 1 + latent_channels, h, w]` (f32),
    /// batched as the latents the denoiser receives (under guidance: twice).
    pub masked: Tensor<B, 4>,
}

/// `cat([latents, masked], channels)` in the UNet's dtype, checking that the channels add up to
/// its `in_channels`.
fn with_masked<B: Backend>(
    unet: &UNet2DConditionModel<B>,
    latents: Tensor<B, 4>,
    masked: &Tensor<B, 4>,
) -> Result<Tensor<B, 4>> {
    let [n, c, h, w] = latents.dims();
    let expected = [n, unet.config().in_channels.saturating_sub(c), h, w];
    if masked.dims() != expected {
        let expected = format!("{expected:?} (the UNet's in_channels minus the latents')");
        let key = "inpainting mask and masked-image latents";
        return Err(shape_error(key, expected, &masked.dims()));
    }
    let dtype = unet.dtype();
    Ok(Tensor::cat(
        vec![latents.cast(dtype), masked.clone().cast(dtype)],
        1,
    ))
}

impl<B: Backend> Denoiser<B> for Inpainting<&UNet2DConditionModel<B>> {
    type Conditioning = InpaintingConditioning<B, Tensor<B, 3>>;

    fn predict(
        &self,
        latents: Tensor<B, 4>,
        timestep: f64,
        conditioning: &Self::Conditioning,
    ) -> Result<Tensor<B, 4>> {
        let input = with_masked(self.denoiser, latents, &conditioning.masked)?;
        self.denoiser.predict(input, timestep, &conditioning.inner)
    }

    fn dtype(&self) -> DType {
        self.denoiser.dtype()
    }
}

impl<B: Backend, C: UNetControl<B>> Denoiser<B> for Inpainting<Controlled<'_, B, C>> {
    type Conditioning = InpaintingConditioning<B, ControlledConditioning<B, C::Hint>>;

    fn predict(
        &self,
        latents: Tensor<B, 4>,
        timestep: f64,
        conditioning: &Self::Conditioning,
    ) -> Result<Tensor<B, 4>> {
        let (unet, masked) = (self.denoiser.unet, &conditioning.masked);
        let unet_input = |latents| with_masked(unet, latents, masked);
        let inner = &conditioning.inner;
        self.denoiser
            .predict_with_unet_input(latents, timestep, inner, unet_input)
    }

    fn dtype(&self) -> DType {
        self.denoiser.dtype()
    }
}
