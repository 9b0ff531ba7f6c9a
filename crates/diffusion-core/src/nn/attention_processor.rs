//! `Attention`, diffusers' multi-head attention layer (`models/attention_processor.py`), as
//! used by the UNet's transformer blocks (self- and cross-attention) and the VAE's mid block.
//!
//! The weights are `to_q`, `to_k`, `to_v` and `to_out.0` (diffusers' names); the computation is
//! [`multi_head_attention`](super::multi_head_attention), so a faster kernel applies to every
//! caller. Softmax runs in f32 for half-precision inputs, which covers diffusers'
//! `upcast_attention` and `upcast_softmax` options.

use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;

use super::{AttentionOptions, GroupNorm, GroupNormConfig, multi_head_attention};

/// Configuration of an [`Attention`] layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttentionConfig {
    /// Width of the queries and of the output.
    pub query_dim: usize,
    /// Width of the keys/values source; `None` for self-attention.
    pub cross_attention_dim: Option<usize>,
    /// Number of heads.
    pub heads: usize,
    /// Width of each head.
    pub dim_head: usize,
    /// Whether `to_q`, `to_k`, `to_v` have a bias (the VAE's do, the UNet's do not).
    pub qkv_bias: bool,
    /// GroupNorm applied to a spatial input first (the VAE's `group_norm`): `(groups, eps)`.
    pub group_norm: Option<(usize, f64)>,
}

impl AttentionConfig {
    /// A UNet attention layer: `heads` heads of `dim_head`, no q/k/v bias.
    pub fn new(
        query_dim: usize,
        cross_attention_dim: Option<usize>,
        heads: usize,
        dim_head: usize,
    ) -> Self {
        Self {
            query_dim,
            cross_attention_dim,
            heads,
            dim_head,
            qkv_bias: false,
            group_norm: None,
        }
    }

    /// The VAE mid-block attention: one head over all channels, biased q/k/v, GroupNorm first.
    pub fn vae(channels: usize, groups: usize, eps: f64) -> Self {
        Self {
            query_dim: channels,
            cross_attention_dim: None,
            heads: 1,
            dim_head: channels,
            qkv_bias: true,
            group_norm: Some((groups, eps)),
        }
    }

    /// Creates the layer (weights are filled by loading).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Attention<B> {
        let inner = self.heads * self.dim_head;
        let kv_dim = self.cross_attention_dim.unwrap_or(self.query_dim);
        let proj = |i, o, bias| LinearConfig::new(i, o).with_bias(bias).init(device);
        Attention {
            group_norm: self.group_norm.map(|(groups, eps)| {
                GroupNormConfig::new(groups, self.query_dim)
                    .with_eps(eps)
                    .init(device)
            }),
            to_q: proj(self.query_dim, inner, self.qkv_bias),
            to_k: proj(kv_dim, inner, self.qkv_bias),
            to_v: proj(kv_dim, inner, self.qkv_bias),
            to_out: vec![proj(inner, self.query_dim, true)],
            heads: self.heads,
        }
    }
}

/// Multi-head scaled-dot-product attention with diffusers' parameter names.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// GroupNorm of a spatial input (VAE only).
    pub group_norm: Option<GroupNorm<B>>,
    /// Query projection.
    pub to_q: Linear<B>,
    /// Key projection.
    pub to_k: Linear<B>,
    /// Value projection.
    pub to_v: Linear<B>,
    /// Output projection (`to_out.0`; diffusers' `to_out.1` is a dropout).
    pub to_out: Vec<Linear<B>>,
    heads: usize,
}

impl<B: Backend> Attention<B> {
    /// Attends from `x` to `context` (to `x` itself when `None`).
    ///
    /// # Shapes
    /// `x: [batch, n, query_dim]`, `context: [batch, m, cross_attention_dim]` →
    /// `[batch, n, query_dim]`.
    pub fn forward(&self, x: Tensor<B, 3>, context: Option<Tensor<B, 3>>) -> Tensor<B, 3> {
        let q = self.to_q.forward(x.clone());
        let kv_source = context.unwrap_or(x);
        let k = self.to_k.forward(kv_source.clone());
        let v = self.to_v.forward(kv_source);
        let out = multi_head_attention(q, k, v, self.heads, AttentionOptions::default());
        self.to_out
            .iter()
            .fold(out, |out, linear| linear.forward(out))
    }

    /// Self-attention over the pixels of a feature map with a residual connection (the VAE's
    /// mid-block attention): GroupNorm, attention over `h·w` tokens, plus the input.
    ///
    /// # Shapes
    /// `[batch, channels, h, w]` → same.
    pub fn forward_spatial(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [b, c, h, w] = x.dims();
        let normed = match &self.group_norm {
            Some(norm) => norm.forward(x.clone()),
            None => x.clone(),
        };
        let tokens = normed.reshape([b, c, h * w]).swap_dims(1, 2);
        let out = self.forward(tokens, None);
        out.swap_dims(1, 2).reshape([b, c, h, w]) + x
    }

    /// Number of heads.
    pub fn heads(&self) -> usize {
        self.heads
    }
}
