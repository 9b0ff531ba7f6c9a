//! Timestep embeddings (diffusers `models/embeddings.py`: `get_timestep_embedding`,
//! `Timesteps`, `TimestepEmbedding`).

use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::DType;
use prompt_diffusion_core::nn::Activation;

/// Sinusoidal embedding of (possibly fractional) timesteps, computed in f32 as diffusers does:
/// `freq_i = exp(−ln(10000)·i / (half − freq_shift))`, `[sin(t·freq), cos(t·freq)]`, swapped to
/// `[cos, sin]` when `flip_sin_to_cos`; odd widths get a zero column.
///
/// # Shapes
/// `timesteps: [batch]` → `[batch, dim]` (f32).
pub fn timestep_embedding<B: Backend>(
    timesteps: Tensor<B, 1>,
    dim: usize,
    flip_sin_to_cos: bool,
    freq_shift: f64,
) -> Tensor<B, 2> {
    let device = timesteps.device();
    let [batch] = timesteps.dims();
    let half = dim / 2;
    let freqs: Vec<f32> = (0..half)
        .map(|i| {
            let exponent = -(10000f64.ln()) * i as f64 / (half as f64 - freq_shift);
            exponent.exp() as f32
        })
        .collect();
    let freqs = Tensor::<B, 1>::from_data(TensorData::new(freqs, [half]), (&device, DType::F32));
    let args = timesteps.cast(DType::F32).reshape([batch, 1]) * freqs.reshape([1, half]);
    let (sin, cos) = (args.clone().sin(), args.cos());
    let mut parts = if flip_sin_to_cos {
        vec![cos, sin]
    } else {
        vec![sin, cos]
    };
    if dim % 2 == 1 {
        parts.push(Tensor::zeros([batch, 1], (&device, DType::F32)));
    }
    Tensor::cat(parts, 1)
}

/// The time MLP: `linear_2(act(linear_1(x)))` (diffusers `TimestepEmbedding`).
#[derive(Module, Debug)]
pub struct TimestepEmbedding<B: Backend> {
    /// Sinusoid width → embedding width.
    pub linear_1: Linear<B>,
    /// Embedding width → embedding width.
    pub linear_2: Linear<B>,
    act: Activation,
}

impl<B: Backend> TimestepEmbedding<B> {
    /// Creates the MLP `in_channels → time_embed_dim → time_embed_dim`.
    pub fn new(
        in_channels: usize,
        time_embed_dim: usize,
        act: Activation,
        device: &B::Device,
    ) -> Self {
        Self {
            linear_1: LinearConfig::new(in_channels, time_embed_dim).init(device),
            linear_2: LinearConfig::new(time_embed_dim, time_embed_dim).init(device),
            act,
        }
    }

    /// # Shapes
    /// `[batch, in_channels]` → `[batch, time_embed_dim]`.
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.linear_2
            .forward(self.act.forward(self.linear_1.forward(x)))
    }
}
