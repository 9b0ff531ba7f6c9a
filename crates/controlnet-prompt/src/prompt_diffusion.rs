//! `PromptDiffusionControlNet`: the ControlNet of Prompt Diffusion (Z. Wang et al., "In-Context
//! Learning Unlocked for Diffusion Models", NeurIPS 2023; official `cldm/cldm.py`, diffusers
//! `examples/research_projects/promptdiffusion/promptdiffusioncontrolnet.py`).
//!
//! A [`ControlNetModel`] whose hint is an example pair (source ‖ target, 6 channels, through
//! `controlnet_cond_embedding`) plus a second, 3-channel hint encoder for the query image
//! (`controlnet_query_cond_embedding`, LDM `input_cond_block`). Both embeddings are added to
//! `conv_in`'s output: `conv_in(x) + pair_embedding(pair) + query_embedding(query)`.
//!
//! Loading accepts the diffusers-converted folder (`zhendongw/prompt-diffusion-diffusers`
//! `controlnet/`), the `control_model.*` tensors of the original checkpoint, and the whole
//! original file; [`PromptDiffusionDenoiser`](crate::PromptDiffusionDenoiser) takes the UNet from
//! the same file, as Prompt Diffusion's UNet decoder is fine-tuned.

use burn::prelude::*;
use prompt_diffusion_core::Result;
use prompt_diffusion_core::weights::{Pretrained, TensorSource};
use prompt_diffusion_unet::{ContextTokens, CrossAttentionContext, UNetResiduals};

use crate::conditioning_embedding::ControlNetConditioningEmbedding;
use crate::config::ControlNetConfig;
use crate::controlnet::{ControlNetModel, check_hint, diffusers_source};
use crate::scales::ControlScales;
use crate::weights::{self, HintEncoders};

/// Channels of the query image (fixed by the official model and the diffusers port).
pub const QUERY_CHANNELS: usize = 3;

/// The Prompt Diffusion ControlNet: a ControlNet with an example-pair and a query hint encoder.
#[derive(Module, Debug)]
pub struct PromptDiffusionControlNet<B: Backend> {
    /// The ControlNet; its `controlnet_cond_embedding` encodes the example pair. Its
    /// parameters carry diffusers' names without this field's `controlnet.` segment.
    pub controlnet: ControlNetModel<B>,
    /// The query-image encoder.
    pub controlnet_query_cond_embedding: ControlNetConditioningEmbedding<B>,
}

impl<B: Backend> Pretrained<B> for PromptDiffusionControlNet<B> {
    type Config = ControlNetConfig;
    const CLASS_NAME: &'static str = "PromptDiffusionControlNetModel";
    const SINGLE_FILE_PREFIXES: &'static [&'static str] = &["control_model."];

    fn from_config(config: &ControlNetConfig, device: &B::Device) -> Result<Self> {
        Self::new(config, device)
    }

    /// Takes diffusers or original naming (detected from the keys). Of the original single
    /// file the tensors under `control_model.` are taken with the prefix removed and the rest
    /// is ignored.
    fn module_tensors(config: &ControlNetConfig, source: &TensorSource) -> Result<TensorSource> {
        let hints = HintEncoders::PairAndQuery;
        let source = diffusers_source(config, source, hints, Self::CLASS_NAME)?;
        weights::to_module_paths(&source)
    }

    /// Reports tensors in diffusers' naming (without the `controlnet.` segment of the paths).
    fn checkpoint_names(error: prompt_diffusion_core::Error) -> prompt_diffusion_core::Error {
        weights::diffusers_names_in_report(error)
    }
}

impl<B: Backend> PromptDiffusionControlNet<B> {
    /// Creates the model for `config` (`conditioning_channels` is the pair's channel count, 6
    /// for the released model; the query encoder takes 3 channels and has the same stages).
    ///
    /// # Errors
    /// [`Error::Config`](prompt_diffusion_core::Error::Config)/[`Error::Unsupported`](prompt_diffusion_core::Error::Unsupported) from [`ControlNetConfig::validate`].
    pub fn new(config: &ControlNetConfig, device: &B::Device) -> Result<Self> {
        let controlnet = ControlNetModel::new(config, device)?;
        Ok(Self {
            controlnet_query_cond_embedding: ControlNetConditioningEmbedding::new(
                QUERY_CHANNELS,
                config.hint_channels()?,
                config.block_out_channels[0],
                device,
            ),
            controlnet,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ControlNetConfig {
        self.controlnet.config()
    }

    /// The residuals for the UNet, guided by the example `pair` and the `query` image.
    ///
    /// # Shapes
    /// `sample: [batch, in_channels, h, w]`, `timestep: [batch]` or `[1]`,
    /// `context: [batch, tokens, cross_attention_dim]`,
    /// `pair: [batch, conditioning_channels, 8h, 8w]` (channels 0..3 the example source, 3..6
    /// its target), `query: [batch, 3, 8h, 8w]` (8 = [`ControlNetConfig::hint_downscale_factor`]
    /// for SD) → 12 down residuals (SD) shaped as the UNet's skips, and the mid residual.
    ///
    /// # Errors
    /// [`Error::Shape`](prompt_diffusion_core::Error::Shape) when an input does not match the model or the others.
    pub fn forward(
        &self,
        sample: Tensor<B, 4>,
        timestep: Tensor<B, 1>,
        context: Tensor<B, 3>,
        pair: Tensor<B, 4>,
        query: Tensor<B, 4>,
        scales: &ControlScales,
    ) -> Result<UNetResiduals<B>> {
        self.controlnet.check_context(&sample, &context)?;
        self.forward_with_context(
            sample,
            timestep,
            &ContextTokens(context),
            pair,
            query,
            scales,
        )
    }

    /// [`forward`](Self::forward) with each cross-attention slot run by `context` (slots are
    /// numbered from 0 within the ControlNet).
    pub fn forward_with_context(
        &self,
        sample: Tensor<B, 4>,
        timestep: Tensor<B, 1>,
        context: &dyn CrossAttentionContext<B>,
        pair: Tensor<B, 4>,
        query: Tensor<B, 4>,
        scales: &ControlScales,
    ) -> Result<UNetResiduals<B>> {
        self.controlnet.check_sample(&sample)?;
        let factor = self.config().hint_downscale_factor();
        check_hint(
            "controlnet_query_cond",
            &query,
            QUERY_CHANNELS,
            &sample,
            factor,
        )?;
        let pair = self.controlnet.embed_hint(pair, &sample)?;
        let query = self
            .controlnet_query_cond_embedding
            .forward(query.cast(sample.dtype()));
        self.controlnet
            .run(sample, timestep, context, vec![pair, query], scales)
    }
}
