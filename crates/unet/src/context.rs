//! What the UNet's cross-attention slots attend to.
//!
//! Plain Stable Diffusion attends to one context (text tokens) in every slot. Models built on
//! the UNet change that per slot: Versatile Diffusion swaps the transformer weights for another
//! modality's and mixes two contexts; Diff-Plugin feeds visual prompt tokens. They implement
//! [`CrossAttentionContext`] instead of copying the blocks.

use burn::prelude::*;

use crate::transformer_2d::Transformer2DModel;

/// Runs one cross-attention slot of the UNet.
///
/// Slots are numbered in execution order: encoder levels, then the mid block, then decoder
/// levels (SD1.5 has 16: 6 + 1 + 9).
pub trait CrossAttentionContext<B: Backend> {
    /// Applies slot `slot`, whose own transformer is `transformer`, to the feature map
    /// `hidden`, returning a map of the same shape.
    fn apply(
        &self,
        slot: usize,
        transformer: &Transformer2DModel<B>,
        hidden: Tensor<B, 4>,
    ) -> Tensor<B, 4>;
}

/// The usual conditioning: every slot attends, with its own weights, to the same tokens.
///
/// # Shapes
/// `[batch, tokens, cross_attention_dim]`; any number of tokens.
#[derive(Debug, Clone)]
pub struct ContextTokens<B: Backend>(pub Tensor<B, 3>);

impl<B: Backend> CrossAttentionContext<B> for ContextTokens<B> {
    fn apply(
        &self,
        _slot: usize,
        transformer: &Transformer2DModel<B>,
        hidden: Tensor<B, 4>,
    ) -> Tensor<B, 4> {
        transformer.forward(hidden, self.0.clone())
    }
}
