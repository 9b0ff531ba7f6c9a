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

/// GEGLU's gating (diffusers' `GEGLU` after its projection): the last dimension of `h` holds
/// `[value ‖ gate]`, the result is `value · gelu(gate)` with the exact (erf) GELU.
///
/// On the CPU backends in f32 this is one parallel pass on the host (`host/activation.rs`);
/// elsewhere two slices, a GELU and a product.
///
/// # Shapes
/// `[…, 2·inner]` → `[…, inner]`.
pub fn geglu<B: Backend, const D: usize>(h: Tensor<B, D>) -> Tensor<B, D> {
    let h = match super::host::try_geglu(h) {
        Ok(out) => return out,
        Err(h) => h,
    };
    let inner = h.dims()[D - 1] / 2;
    let value = h.clone().narrow(D - 1, 0, inner);
    let gate = h.narrow(D - 1, inner, inner);
    value * activation::gelu(gate)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestBackend as B;

    #[test]
    fn geglu_matches_the_tensor_operations() {
        let shape = [2, 70, 48];
        let n = shape.iter().product();
        let values = (0..n).map(|i| (i as f32 * 0.53).sin() * 6.0).collect();
        let h = Tensor::<B, 3>::from_data(TensorData::new(values, shape), &Default::default());
        let value = h.clone().narrow(2, 0, 24);
        let reference = value * activation::gelu(h.clone().narrow(2, 24, 24));
        let ours = geglu(h);
        assert_eq!(ours.dims(), [2, 70, 24]);
        let diff = (ours - reference).abs().max().into_scalar();
        assert!(diff < 2e-6, "{diff}");
    }
}
