//! `SCBNet`, the Spatial Complement Branch (Diff-Plugin `modules/SCB.py`): a truncated
//! ControlNet that encodes the degraded image's latent.
//!
//! `conv3×3(z_c)` → the UNet crate's encoder blocks (resnets with the branch's own time
//! embedding, transformers attending to the task prompt F^p) → one 1×1 "zero convolution" per
//! skip. **The noisy latent is never read** (the official forward overwrites it with the
//! condition embedding), so the branch takes only the timestep, F^p and z_c. Its outputs F^s
//! are added to the UNet's first skip connections after the encoder has run (diffusers 0.17
//! `down_block_additional_residuals` semantics), so they reach the image only through the
//! last decoder stage.

use burn::nn::Initializer;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::prelude::*;
use prompt_diffusion_core::Result;
use prompt_diffusion_core::nn::conv2d;
use prompt_diffusion_core::weights::{Pretrained, TensorSource};
use prompt_diffusion_unet::embeddings::TimestepEmbedding;
use prompt_diffusion_unet::unet_2d_blocks::{
    AttentionSlots, BlockBuilder, DownBlock2D, conv2d_same, embed_time, run_down_blocks,
};
use prompt_diffusion_unet::{ContextTokens, UNetResiduals, shape_error};

use crate::SCBNetConfig;

/// The Spatial Complement Branch. Parameter paths are the official keys.
#[derive(Module, Debug)]
pub struct SCBNet<B: Backend> {
    /// 3×3 convolution of the condition latent z_c.
    pub controlnet_cond_embedding: Conv2d<B>,
    /// The branch's own time MLP.
    pub time_embedding: TimestepEmbedding<B>,
    /// Encoder levels (UNet `CrossAttnDownBlock2D`s).
    pub down_blocks: Vec<DownBlock2D<B>>,
    /// One 1×1 convolution per residual (zero at initialisation).
    pub controlnet_down_blocks: Vec<Conv2d<B>>,
    #[module(skip)]
    config: SCBNetConfig,
}

impl<B: Backend> Pretrained<B> for SCBNet<B> {
    type Config = SCBNetConfig;
    const CLASS_NAME: &'static str = "SCBNet";
    const SINGLE_FILE_PREFIXES: &'static [&'static str] = &[];

    fn from_config(config: &SCBNetConfig, device: &B::Device) -> Result<Self> {
        Self::new(config, device)
    }

    /// Takes the official names (a `module.` prefix is removed). The branch is a UNet encoder:
    /// its config is checked against the tensors' shapes as a UNet's.
    fn module_tensors(config: &SCBNetConfig, source: &TensorSource) -> Result<TensorSource> {
        let source = crate::weights::strip_data_parallel(source);
        config.validate()?;
        let unet = config.to_unet_config();
        prompt_diffusion_unet::weights::check_weights(&unet, &source, Self::CLASS_NAME)?;
        Ok(source)
    }
}

impl<B: Backend> SCBNet<B> {
    /// Creates the branch for `config`: random weights as PyTorch initialises them, the zero
    /// convolutions at zero (the state training starts from).
    ///
    /// # Errors
    /// [`Error::Config`](prompt_diffusion_core::Error::Config) or
    /// [`Error::Unsupported`](prompt_diffusion_core::Error::Unsupported) from
    /// [`SCBNetConfig::validate`].
    pub fn new(config: &SCBNetConfig, device: &B::Device) -> Result<Self> {
        config.validate()?;
        let unet = config.to_unet_config();
        let blocks = BlockBuilder::new(&unet)?;
        let zero_conv = |c: usize| {
            Conv2dConfig::new([c, c], [1, 1])
                .with_initializer(Initializer::Zeros)
                .init(device)
        };
        Ok(Self {
            controlnet_cond_embedding: conv2d_same(
                config.in_channels,
                config.block_out_channels[0],
                3,
                device,
            ),
            time_embedding: blocks.time_embedding(device),
            down_blocks: blocks.down_blocks(device),
            controlnet_down_blocks: config.skip_channels().into_iter().map(zero_conv).collect(),
            config: config.clone(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &SCBNetConfig {
        &self.config
    }

    /// F^s: the residuals for the UNet's first skip connections, conditioning scale 1.
    ///
    /// # Shapes
    /// `timestep: [batch]` or `[1]`, `prompt` (F^p): `[batch, tokens, cross_attention_dim]`,
    /// `condition` (z_c): `[batch, in_channels, h, w]` → [`num_residuals`] tensors shaped as the
    /// UNet's skips (3 × `[batch, 320, h, w]` for the released branch).
    ///
    /// [`num_residuals`]: SCBNetConfig::num_residuals
    ///
    /// # Errors
    /// [`Error::Shape`](prompt_diffusion_core::Error::Shape) when the inputs do not match
    /// the branch or each other.
    pub fn forward(
        &self,
        timestep: Tensor<B, 1>,
        prompt: Tensor<B, 3>,
        condition: Tensor<B, 4>,
    ) -> Result<Vec<Tensor<B, 4>>> {
        let [batch, channels, h, w] = condition.dims();
        if channels != self.config.in_channels || h == 0 || w == 0 {
            return Err(shape_error(
                "cond_img",
                format!("[batch, {}, h, w]", self.config.in_channels),
                &condition.dims(),
            ));
        }
        let [pb, _, width] = prompt.dims();
        if pb != batch || width != self.config.context_width() {
            return Err(shape_error(
                "encoder_hidden_states",
                format!("[{batch}, tokens, {}]", self.config.context_width()),
                &prompt.dims(),
            ));
        }
        let dtype = condition.dtype();
        let temb = embed_time(&self.time_embedding, &self.config, timestep, batch, dtype)?;

        let context = ContextTokens(prompt.cast(dtype));
        let mut slots = AttentionSlots::new(&context);
        let h = conv2d(&self.controlnet_cond_embedding, condition);
        let (_, skips) = run_down_blocks(&self.down_blocks, h, &temb, &mut slots);
        Ok(skips
            .into_iter()
            .zip(&self.controlnet_down_blocks)
            .map(|(skip, zero_conv)| conv2d(zero_conv, skip))
            .collect())
    }

    /// [`forward`](Self::forward) packed as UNet residuals: F^s for the first skips, nothing
    /// for the others and the mid block.
    ///
    /// # Errors
    /// As [`forward`](Self::forward).
    pub fn residuals(
        &self,
        timestep: Tensor<B, 1>,
        prompt: Tensor<B, 3>,
        condition: Tensor<B, 4>,
    ) -> Result<UNetResiduals<B>> {
        let down = self.forward(timestep, prompt, condition)?;
        Ok(UNetResiduals {
            down: down.into_iter().map(Some).collect(),
            mid: None,
        })
    }
}
