//! [`ContextLayers`]: one modality's cross-attention layers held without its data layers.
//!
//! Text→image needs the text UNet's attentions (≈ 267 M parameters in VD) but not its fully
//! connected data layers (≈ 1.44 G); image→text needs the image UNet's attentions only. Holding
//! them as a list of slots keeps the memory of a flow to what it runs.

use burn::prelude::*;
use prompt_diffusion_core::Result;
use prompt_diffusion_core::weights::{LoadOptions, TensorSource, load_module};
use prompt_diffusion_unet::unet_2d_blocks::BlockBuilder;
use prompt_diffusion_unet::{Transformer2DModel, UNet2DConditionConfig};

/// The cross-attention transformers of a UNet, in slot order.
#[derive(Module, Debug)]
pub struct ContextLayers<B: Backend> {
    /// One transformer per cross-attention slot (`down_blocks.*.attentions.*`, the mid block's,
    /// `up_blocks.*.attentions.*`).
    pub slots: Vec<Transformer2DModel<B>>,
}

impl<B: Backend> ContextLayers<B> {
    /// The context layers of a UNet of `config` (weights are filled by loading).
    ///
    /// # Errors
    /// [`Error::Config`](prompt_diffusion_core::Error::Config) for an invalid config.
    pub fn new(config: &UNet2DConditionConfig, device: &B::Device) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            slots: BlockBuilder::new(config)?.attention_transformers(device),
        })
    }

    /// Loads the attention layers out of a whole UNet's tensors (diffusers names); the other
    /// tensors of `source` are not read.
    ///
    /// # Errors
    /// [`Error::Weights`](prompt_diffusion_core::Error::Weights) when an attention tensor is
    /// missing or mis-shaped.
    pub fn from_unet_source(
        config: &UNet2DConditionConfig,
        source: &TensorSource,
        options: &LoadOptions,
        device: &B::Device,
    ) -> Result<Self> {
        let layers = Self::new(config, device)?;
        let paths = BlockBuilder::new(config)?.attention_slot_paths();
        let source = source.rename(|key| {
            paths.iter().enumerate().find_map(|(i, path)| {
                let rest = key.strip_prefix(path.as_str())?.strip_prefix('.')?;
                Some(format!("slots.{i}.{rest}"))
            })
        })?;
        load_module(layers, &source, "ContextLayers", options)
    }

    /// The transformers, in slot order.
    pub fn transformers(&self) -> Vec<&Transformer2DModel<B>> {
        self.slots.iter().collect()
    }
}
