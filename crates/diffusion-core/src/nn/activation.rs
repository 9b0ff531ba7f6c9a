//! Activations by the names reference configs use (`hidden_act`, `act_fn`).

use burn::prelude::*;
use burn::tensor::activation;

/// An activation function, deserialised from a config string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// `x · σ(1.702 x)` (OpenAI CLIP).
    QuickGelu,
    /// Exact GELU with erf.
    Gelu,
    /// GELU with the tanh approximation.
    #[serde(alias = "gelu_pytorch_tanh", alias = "gelu_fast")]
    GeluNew,
    /// `x · σ(x)`.
    #[default]
    #[serde(alias = "swish")]
    Silu,
    /// `max(x, 0)`.
    Relu,
}

impl Activation {
    /// Applies the activation elementwise.
    pub fn forward<B: Backend, const D: usize>(self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            Activation::QuickGelu => x.clone() * activation::sigmoid(x * 1.702),
            Activation::Gelu => activation::gelu(x),
            Activation::GeluNew => activation::gelu_approximate(x),
            Activation::Silu => activation::silu(x),
            Activation::Relu => activation::relu(x),
        }
    }
}
