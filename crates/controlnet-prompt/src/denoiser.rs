//! `PromptDiffusionDenoiser`: the Prompt Diffusion ControlNet and the UNet it was trained with
//! (LDM `ControlledUnetModel` + `ControlNet` of the official `cldm/cldm.py`).
//!
//! Prompt Diffusion fine-tunes the UNet's decoder (`output_blocks`, `out`) together with the
//! ControlNet, so the two must come from the same checkpoint. Building both from one single
//! file makes pairing the ControlNet with stock SD 1.5's UNet impossible by construction.

use burn::prelude::*;
use prompt_diffusion_core::Result;
use prompt_diffusion_core::weights::{LoadOptions, TensorSource};
use prompt_diffusion_unet::UNet2DConditionModel;

use crate::config::ControlNetConfig;
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
        if !source.has_prefix(UNET_PREFIX) {
            return Err(prompt_diffusion_core::Error::format(
                source.description(),
                "no `model.diffusion_model.*` tensors: the Prompt Diffusion UNet must come from the same checkpoint as its ControlNet",
            ));
        }
        let unet = UNet2DConditionModel::from_source(
            &config.to_unet_config(),
            &source.strip_prefix(UNET_PREFIX),
            options,
            device,
        )?;
        Ok(Self { controlnet, unet })
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
        let residuals = self.controlnet.forward(
            sample.clone(),
            timestep.clone(),
            context.clone(),
            pair,
            query,
            scales,
        )?;
        self.unet
            .forward_with_residuals(sample, timestep, context, &residuals)
    }
}
