//! The transformer encoder shared by the CLIP text and vision towers.
//!
//! Ports `CLIPAttention`, `CLIPMLP`, `CLIPEncoderLayer` and `CLIPEncoder` from
//! `transformers/models/clip/modeling_clip.py`: pre-LayerNorm blocks
//! `x + self_attn(layer_norm1(x))`, `x + mlp(layer_norm2(x))`, with q/k/v/out projections that
//! have biases and attention scaled by `head_dim^-0.5`. Field names are transformers' attribute
//! names, so parameter paths equal the checkpoint keys
//! (`encoder.layers.3.self_attn.q_proj.weight`).

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use prompt_diffusion_core::nn::{
    Activation, AttentionOptions, LayerNorm, LayerNormConfig, multi_head_attention,
};

/// Hyper-parameters of a [`CLIPEncoder`], taken from a text or vision config.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CLIPEncoderConfig {
    /// Model width.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Number of attention heads (divides `hidden_size`).
    pub num_attention_heads: usize,
    /// Number of layers.
    pub num_hidden_layers: usize,
    /// MLP activation.
    pub hidden_act: Activation,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
}

impl CLIPEncoderConfig {
    /// Creates the encoder (parameters are placeholders until weights are loaded).
    pub fn init<B: Backend>(&self, device: &B::Device) -> CLIPEncoder<B> {
        CLIPEncoder {
            layers: (0..self.num_hidden_layers)
                .map(|_| self.init_layer(device))
                .collect(),
        }
    }

    fn init_layer<B: Backend>(&self, device: &B::Device) -> CLIPEncoderLayer<B> {
        let d = self.hidden_size;
        let proj = || LinearConfig::new(d, d).init(device);
        CLIPEncoderLayer {
            self_attn: CLIPAttention {
                q_proj: proj(),
                k_proj: proj(),
                v_proj: proj(),
                out_proj: proj(),
                num_heads: self.num_attention_heads,
            },
            layer_norm1: LayerNormConfig::new(d)
                .with_eps(self.layer_norm_eps)
                .init(device),
            mlp: CLIPMLP {
                fc1: LinearConfig::new(d, self.intermediate_size).init(device),
                fc2: LinearConfig::new(self.intermediate_size, d).init(device),
                activation: self.hidden_act,
            },
            layer_norm2: LayerNormConfig::new(d)
                .with_eps(self.layer_norm_eps)
                .init(device),
        }
    }
}

/// Multi-head self-attention (`CLIPAttention`).
#[derive(Module, Debug)]
pub struct CLIPAttention<B: Backend> {
    /// Query projection, `[D, D]` with bias.
    pub q_proj: Linear<B>,
    /// Key projection.
    pub k_proj: Linear<B>,
    /// Value projection.
    pub v_proj: Linear<B>,
    /// Output projection.
    pub out_proj: Linear<B>,
    num_heads: usize,
}

impl<B: Backend> CLIPAttention<B> {
    /// Self-attention over the sequence; `causal` masks later positions (text tower).
    ///
    /// # Shapes
    /// `[batch, seq, D]` → `[batch, seq, D]`.
    pub fn forward(&self, x: Tensor<B, 3>, causal: bool) -> Tensor<B, 3> {
        let q = self.q_proj.forward(x.clone());
        let k = self.k_proj.forward(x.clone());
        let v = self.v_proj.forward(x);
        let out = multi_head_attention(q, k, v, self.num_heads, AttentionOptions { causal });
        self.out_proj.forward(out)
    }
}

/// The feed-forward block (`CLIPMLP`): `fc2(act(fc1(x)))`.
#[derive(Module, Debug)]
pub struct CLIPMLP<B: Backend> {
    /// `[D → intermediate]`.
    pub fc1: Linear<B>,
    /// `[intermediate → D]`.
    pub fc2: Linear<B>,
    #[module(skip)]
    activation: Activation,
}

impl<B: Backend> CLIPMLP<B> {
    /// # Shapes
    /// `[batch, seq, D]` → `[batch, seq, D]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.fc2
            .forward(self.activation.forward(self.fc1.forward(x)))
    }
}

/// One pre-LayerNorm transformer block (`CLIPEncoderLayer`).
#[derive(Module, Debug)]
pub struct CLIPEncoderLayer<B: Backend> {
    /// Self-attention.
    pub self_attn: CLIPAttention<B>,
    /// Norm before the attention.
    pub layer_norm1: LayerNorm<B>,
    /// Feed-forward block.
    pub mlp: CLIPMLP<B>,
    /// Norm before the MLP.
    pub layer_norm2: LayerNorm<B>,
}

impl<B: Backend> CLIPEncoderLayer<B> {
    /// # Shapes
    /// `[batch, seq, D]` → `[batch, seq, D]`.
    pub fn forward(&self, x: Tensor<B, 3>, causal: bool) -> Tensor<B, 3> {
        let h = x.clone() + self.self_attn.forward(self.layer_norm1.forward(x), causal);
        h.clone() + self.mlp.forward(self.layer_norm2.forward(h))
    }
}

/// The stack of blocks (`CLIPEncoder`).
#[derive(Module, Debug)]
pub struct CLIPEncoder<B: Backend> {
    /// The blocks, in order (`layers.0`, `layers.1`, …).
    pub layers: Vec<CLIPEncoderLayer<B>>,
}

impl<B: Backend> CLIPEncoder<B> {
    /// Runs every block. With `keep_hidden_states`, also returns the input followed by each
    /// block's output (transformers' `hidden_states`, `num_hidden_layers + 1` tensors).
    ///
    /// # Shapes
    /// `[batch, seq, D]` → `[batch, seq, D]`.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        causal: bool,
        keep_hidden_states: bool,
    ) -> (Tensor<B, 3>, Option<Vec<Tensor<B, 3>>>) {
        let mut hidden_states =
            keep_hidden_states.then(|| Vec::with_capacity(self.layers.len() + 1));
        let mut h = x;
        for layer in &self.layers {
            if let Some(states) = hidden_states.as_mut() {
                states.push(h.clone());
            }
            h = layer.forward(h, causal);
        }
        if let Some(states) = hidden_states.as_mut() {
            states.push(h.clone());
        }
        (h, hidden_states)
    }
}
