//! `PromptDiffusionDenoiser`: the Prompt Diffusion ControlNet and the UNet it was trained with
//! (LDM `ControlledUnetModel` + `ControlNet` of the official `cldm/cldm.py`).
//!
//! Prompt Diffusion fine-tunes the UNet's decoder (`output_blocks`, `out`) together with the
//! ControlNet, so the two must come from the same checkpoint. Building both from one single
//! file makes pairing the ControlNet with stock SD 1.5's UNet impossible by construction.
//!
//! Both ControlNets plug into the one denoising loop as [`UNetControl`]s: paired with a UNet by
//! [`Controlled`], they form a [`Denoiser`](prompt_diffusion_core::denoiser::Denoiser)
//! conditioned on the text context and a [`ControlHint`] or an [`InContextHint`].

use burn::prelude::*;
use prompt_diffusion_core::Result;
use prompt_diffusion_core::weights::{LoadOptions, Pretrained, TensorSource};
use prompt_diffusion_unet::{Controlled, UNet2DConditionModel, UNetControl, UNetResiduals};

use crate::config::ControlNetConfig;
use crate::controlnet::ControlNetModel;
use crate::prompt_diffusion::PromptDiffusionControlNet;
use crate::scales::ControlScales;

/// The prefix of the UNet in original single-file checkpoints.
pub const UNET_PREFIX: &str = "model.diffusion_model.";

/// The Prompt Diffusion ControlNet with its (fine-tuned) UNet.
#[derive(Module, Debug)]
pub struct PromptDiffusionDenoiser<B: Backend> {
    /// The ControlNet.
    pub controlnet: PromptDiffusionControlNet<B>,
    /// The UNet the ControlNet's residuals are added to.
    pub unet: UNet2DConditionModel<B>,
}

impl<B: Backend> PromptDiffusionDenoiser<B> {
    /// Loads both models from an original single-file checkpoint: the ControlNet from
    /// `control_model.*`, the UNet from `model.diffusion_model.*` with the UNet configuration
    /// the ControlNet copies ([`ControlNetConfig::to_unet_config`]: SD 1.5's for
    /// [`ControlNetConfig::prompt_diffusion`]). The VAE (`first_stage_model.*`) and the text
    /// encoder (`cond_stage_model.transformer.*`) of the file are left to their crates.
    ///
    /// # Errors
    /// [`Error::Format`](prompt_diffusion_core::Error::Format) when a prefix is absent,
    /// [`Error::Weights`](prompt_diffusion_core::Error::Weights) when tensors do not match.
    pub fn from_single_file(
        config: &ControlNetConfig,
        source: &TensorSource,
        options: &LoadOptions,
        device: &B::Device,
    ) -> Result<Self> {
        let controlnet =
            PromptDiffusionControlNet::from_single_file(config, source, options, device)?;
        let unet_source = Self::unet_tensors(source)?;
        let unet = UNet2DConditionModel::from_source(
            &config.to_unet_config(),
            &unet_source,
            options,
            device,
        )?;
        Ok(Self { controlnet, unet })
    }

    /// The fine-tuned UNet's tensors of an original Prompt Diffusion checkpoint
    /// (`model.diffusion_model.*`, the prefix stripped).
    ///
    /// # Errors
    /// [`Error::Format`](prompt_diffusion_core::Error::Format) when the checkpoint has none:
    /// the UNet must come from the same checkpoint as its ControlNet.
    pub fn unet_tensors(checkpoint: &TensorSource) -> Result<TensorSource> {
        if !checkpoint.has_prefix(UNET_PREFIX) {
            return Err(prompt_diffusion_core::Error::format(
                checkpoint.description(),
                "no `model.diffusion_model.*` tensors: Prompt Diffusion's fine-tuned UNet must come from the same checkpoint as its ControlNet",
            ));
        }
        Ok(checkpoint.strip_prefix(UNET_PREFIX))
    }

    /// The predicted noise: the ControlNet's residuals (scaled by `scales`) added to the UNet's
    /// skips and mid block.
    ///
    /// # Shapes
    /// As [`PromptDiffusionControlNet::forward`] → `[batch, out_channels, h, w]`.
    ///
    /// # Errors
    /// [`Error::Shape`](prompt_diffusion_core::Error::Shape) when an input does not match.
    pub fn forward(
        &self,
        sample: Tensor<B, 4>,
        timestep: Tensor<B, 1>,
        context: Tensor<B, 3>,
        pair: Tensor<B, 4>,
        query: Tensor<B, 4>,
        scales: &ControlScales,
    ) -> Result<Tensor<B, 4>> {
        let hint = InContextHint {
            pair,
            query,
            scales: scales.clone(),
        };
        let residuals =
            self.controlnet
                .residuals(sample.clone(), timestep.clone(), context.clone(), &hint)?;
        self.unet
            .forward_with_residuals(sample, timestep, context, &residuals)
    }

    /// The two models as one [`Denoiser`](prompt_diffusion_core::denoiser::Denoiser)
    /// (conditioned on the text context and an [`InContextHint`]).
    pub fn denoiser(&self) -> Controlled<'_, B, PromptDiffusionControlNet<B>> {
        Controlled::new(&self.unet, &self.controlnet)
    }
}

/// The inputs of a standard ControlNet at each step.
#[derive(Debug, Clone)]
pub struct ControlHint<B: Backend> {
    /// The hint image in `[0, 1]`, `[batch, 3, H, W]` (`batch` = the conditional half only in
    /// guess mode under guidance).
    pub image: Tensor<B, 4>,
    /// How the residuals are scaled.
    pub scales: ControlScales,
    /// diffusers' guess mode under guidance: the ControlNet runs on the conditional half of
    /// the batch only, and the unconditional half gets no residuals.
    pub conditional_half_only: bool,
}

impl<B: Backend> UNetControl<B> for ControlNetModel<B> {
    type Hint = ControlHint<B>;

    fn residuals(
        &self,
        latents: Tensor<B, 4>,
        timestep: Tensor<B, 1>,
        context: Tensor<B, 3>,
        hint: &ControlHint<B>,
    ) -> Result<UNetResiduals<B>> {
        let image = hint.image.clone();
        if !hint.conditional_half_only {
            return self.forward(latents, timestep, context, image, &hint.scales);
        }
        let n = latents.dims()[0] / 2;
        let (latents, context) = (latents.narrow(0, n, n), context.narrow(0, n, n));
        let cond = self.forward(latents, timestep, context, image, &hint.scales)?;
        Ok(cond.after_zeros())
    }
}

/// The inputs of the Prompt Diffusion ControlNet at each step.
#[derive(Debug, Clone)]
pub struct InContextHint<B: Backend> {
    /// The example pair, source and target concatenated along channels, `[batch, 6, H, W]`.
    pub pair: Tensor<B, 4>,
    /// The query image, `[batch, 3, H, W]`.
    pub query: Tensor<B, 4>,
    /// How the residuals are scaled.
    pub scales: ControlScales,
}

impl<B: Backend> UNetControl<B> for PromptDiffusionControlNet<B> {
    type Hint = InContextHint<B>;

    fn residuals(
        &self,
        latents: Tensor<B, 4>,
        timestep: Tensor<B, 1>,
        context: Tensor<B, 3>,
        hint: &InContextHint<B>,
    ) -> Result<UNetResiduals<B>> {
        let (pair, query) = (hint.pair.clone(), hint.query.clone());
        self.forward(latents, timestep, context, pair, query, &hint.scales)
    }
}
