//! `Transformer2DModel` (diffusers `models/transformers/transformer_2d.py`, LDM
//! `SpatialTransformer`): the cross-attention layer of every UNet attention slot.

use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use prompt_diffusion_core::nn::{GroupNorm, GroupNormConfig};

use crate::attention::BasicTransformerBlock;

/// Configuration of a [`Transformer2DModel`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transformer2DConfig {
    /// Channels of the feature map (= heads · head width).
    pub channels: usize,
    /// Number of heads.
    pub heads: usize,
    /// Stacked transformer blocks (1 in SD).
    pub layers: usize,
    /// Width of the context tokens.
    pub cross_attention_dim: usize,
    /// GroupNorm groups of the input norm (its epsilon is 1e-6).
    pub groups: usize,
}

impl Transformer2DConfig {
    /// Creates the layer. `proj_in`/`proj_out` are Linear layers: SD1 stores them as 1×1
    /// convolutions, which loading squeezes (the two are the same map on each pixel).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Transformer2DModel<B> {
        let c = self.channels;
        Transformer2DModel {
            norm: GroupNormConfig::new(self.groups, c)
                .with_eps(1e-6)
                .init(device),
            proj_in: LinearConfig::new(c, c).init(device),
            transformer_blocks: (0..self.layers)
                .map(|_| {
                    BasicTransformerBlock::new(
                        c,
                        self.heads,
                        c / self.heads,
                        self.cross_attention_dim,
                        device,
                    )
                })
                .collect(),
            proj_out: LinearConfig::new(c, c).init(device),
        }
    }
}

/// GroupNorm, projection to tokens, transformer blocks, projection back, plus the input.
#[derive(Module, Debug)]
pub struct Transformer2DModel<B: Backend> {
    /// Input GroupNorm.
    pub norm: GroupNorm<B>,
    /// Per-pixel input projection.
    pub proj_in: Linear<B>,
    /// The transformer blocks.
    pub transformer_blocks: Vec<BasicTransformerBlock<B>>,
    /// Per-pixel output projection.
    pub proj_out: Linear<B>,
}

impl<B: Backend> Transformer2DModel<B> {
    /// Attends from every pixel of `x` to the context tokens.
    ///
    /// # Shapes
    /// `x: [batch, channels, h, w]`, `context: [batch, m, cross_attention_dim]` → same as `x`.
    pub fn forward(&self, x: Tensor<B, 4>, context: Tensor<B, 3>) -> Tensor<B, 4> {
        let [b, c, h, w] = x.dims();
        let tokens = self
            .norm
            .forward(x.clone())
            .reshape([b, c, h * w])
            .swap_dims(1, 2);
        let tokens = self.proj_in.forward(tokens);
        let tokens = self
            .transformer_blocks
            .iter()
            .fold(tokens, |t, block| block.forward(t, context.clone()));
        let out = self.proj_out.forward(tokens);
        out.swap_dims(1, 2).reshape([b, c, h, w]) + x
    }
}
