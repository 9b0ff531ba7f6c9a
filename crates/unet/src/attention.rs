//! `BasicTransformerBlock`, `FeedForward` and `GEGLU` (diffusers `models/attention.py`).

use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::prelude::*;
use prompt_diffusion_core::nn::{Attention, AttentionConfig, LayerNorm, LayerNormConfig, geglu};

/// `value · gelu(gate)` where `[value ‖ gate] = proj(x)` (exact, erf-based GELU).
#[derive(Module, Debug)]
pub struct GEGLU<B: Backend> {
    /// Projection to twice the inner width.
    pub proj: Linear<B>,
}

impl<B: Backend> GEGLU<B> {
    /// # Shapes
    /// `[batch, n, dim]` → `[batch, n, inner]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        geglu(self.proj.forward(x))
    }
}

/// One layer of diffusers' `FeedForward.net` (a PyTorch `Sequential`): loading sees only the
/// list index, so `net.0.proj` and `net.2` are the reference's names.
#[derive(Module, Debug)]
pub enum FeedForwardLayer<B: Backend> {
    /// `net.0`: the gated projection.
    Geglu(GEGLU<B>),
    /// `net.1`: dropout (inactive at inference).
    Dropout(Dropout),
    /// `net.2`: the output projection.
    Linear(Linear<B>),
}

/// The transformer's MLP: GEGLU to `4·dim`, then a projection back to `dim`.
#[derive(Module, Debug)]
pub struct FeedForward<B: Backend> {
    /// `[GEGLU, Dropout, Linear]`.
    pub net: Vec<FeedForwardLayer<B>>,
}

impl<B: Backend> FeedForward<B> {
    /// Creates the MLP `dim → 4·dim → dim`.
    pub fn new(dim: usize, device: &B::Device) -> Self {
        let inner = 4 * dim;
        Self {
            net: vec![
                FeedForwardLayer::Geglu(GEGLU {
                    proj: LinearConfig::new(dim, 2 * inner).init(device),
                }),
                FeedForwardLayer::Dropout(DropoutConfig::new(0.0).init()),
                FeedForwardLayer::Linear(LinearConfig::new(inner, dim).init(device)),
            ],
        }
    }

    /// # Shapes
    /// `[batch, n, dim]` → same.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.net.iter().fold(x, |x, layer| match layer {
            FeedForwardLayer::Geglu(geglu) => geglu.forward(x),
            FeedForwardLayer::Dropout(_) => x,
            FeedForwardLayer::Linear(linear) => linear.forward(x),
        })
    }
}

/// Self-attention, cross-attention to the context, and the MLP, each pre-LayerNorm with a
/// residual connection.
#[derive(Module, Debug)]
pub struct BasicTransformerBlock<B: Backend> {
    /// Norm before self-attention.
    pub norm1: LayerNorm<B>,
    /// Self-attention.
    pub attn1: Attention<B>,
    /// Norm before cross-attention.
    pub norm2: LayerNorm<B>,
    /// Cross-attention to the context.
    pub attn2: Attention<B>,
    /// Norm before the MLP.
    pub norm3: LayerNorm<B>,
    /// The MLP.
    pub ff: FeedForward<B>,
}

impl<B: Backend> BasicTransformerBlock<B> {
    /// Creates a block of width `dim` with `heads` heads of `dim_head`, attending to context
    /// tokens of width `cross_attention_dim`.
    pub fn new(
        dim: usize,
        heads: usize,
        dim_head: usize,
        cross_attention_dim: usize,
        device: &B::Device,
    ) -> Self {
        let norm = || LayerNormConfig::new(dim).init(device);
        Self {
            norm1: norm(),
            attn1: AttentionConfig::new(dim, None, heads, dim_head).init(device),
            norm2: norm(),
            attn2: AttentionConfig::new(dim, Some(cross_attention_dim), heads, dim_head)
                .init(device),
            norm3: norm(),
            ff: FeedForward::new(dim, device),
        }
    }

    /// # Shapes
    /// `x: [batch, n, dim]`, `context: [batch, m, cross_attention_dim]` → `[batch, n, dim]`.
    pub fn forward(&self, x: Tensor<B, 3>, context: Tensor<B, 3>) -> Tensor<B, 3> {
        let x = self.attn1.forward(self.norm1.forward(x.clone()), None) + x;
        let x = self
            .attn2
            .forward(self.norm2.forward(x.clone()), Some(context))
            + x;
        self.ff.forward(self.norm3.forward(x.clone())) + x
    }
}
