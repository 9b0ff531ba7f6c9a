//! `TPBNet`, the Task-Prompt Branch (Diff-Plugin `modules/TPB.py`).
//!
//! An MLP over the CLIP vision patch tokens taken from the last encoder layer, before
//! `post_layernorm`: `(Linear → LayerNorm → LeakyReLU(0.01)) × n`, then `Linear` to the UNet's
//! context width. Its output, the task prompt F^p, replaces the text context in every
//! cross-attention of the UNet and of the Spatial Complement Branch.
//!
//! The official module is one PyTorch `Sequential` (`visual_projection.{0,1,2,…}`, the
//! LeakyReLUs holding the indices 2, 5, …); here each stage is a named [`TPBLayer`] and the
//! index arithmetic lives in [`weights::tpb_key`](crate::weights::tpb_key).

use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::leaky_relu;
use prompt_diffusion_core::nn::{LayerNorm, LayerNormConfig};
use prompt_diffusion_core::{Error, Result};

/// The slope of `nn.LeakyReLU()`'s negative part.
pub const LEAKY_RELU_SLOPE: f64 = 0.01;

/// The shape of a [`TPBNet`] (the official class takes `num_cross_proj_layers` and
/// `clip_v_dim`; the output width is the UNet's context width).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TPBConfig {
    /// Width of the CLIP vision tokens (1024 for ViT-L/14).
    pub clip_v_dim: usize,
    /// Hidden `Linear → LayerNorm → LeakyReLU` stages (2).
    pub num_cross_proj_layers: usize,
    /// Width of F^p, the UNet's `cross_attention_dim` (768 for SD1).
    pub out_dim: usize,
}

impl TPBConfig {
    /// The released shape: ViT-L/14 tokens (1024) → 768, two hidden stages.
    pub fn released() -> Self {
        Self {
            clip_v_dim: 1024,
            num_cross_proj_layers: 2,
            out_dim: 768,
        }
    }

    /// Creates the branch (PyTorch-style random initialisation, norms at identity).
    pub fn init<B: Backend>(&self, device: &B::Device) -> TPBNet<B> {
        let d = self.clip_v_dim;
        TPBNet {
            hidden: (0..self.num_cross_proj_layers)
                .map(|_| TPBLayer {
                    linear: LinearConfig::new(d, d).init(device),
                    norm: LayerNormConfig::new(d).with_eps(1e-5).init(device),
                })
                .collect(),
            out: LinearConfig::new(d, self.out_dim).init(device),
        }
    }
}

/// One hidden stage: `LeakyReLU(LayerNorm(Linear(x)))`.
#[derive(Module, Debug)]
pub struct TPBLayer<B: Backend> {
    /// `visual_projection.{3i}`.
    pub linear: Linear<B>,
    /// `visual_projection.{3i+1}`.
    pub norm: LayerNorm<B>,
}

/// The Task-Prompt Branch.
#[derive(Module, Debug)]
pub struct TPBNet<B: Backend> {
    /// The hidden stages.
    pub hidden: Vec<TPBLayer<B>>,
    /// The final projection to the context width (`visual_projection.{3n}`).
    pub out: Linear<B>,
}

impl<B: Backend> TPBNet<B> {
    /// The shape of this branch.
    pub fn config(&self) -> TPBConfig {
        let [clip_v_dim, out_dim] = self.out.weight.dims();
        TPBConfig {
            clip_v_dim,
            num_cross_proj_layers: self.hidden.len(),
            out_dim,
        }
    }

    /// F^p from the CLIP vision encoder's last hidden state (class token first, as
    /// `CLIPVisionModel`'s `hidden_states[-1]`): the class token is dropped and the patch
    /// tokens are projected.
    ///
    /// # Shapes
    /// `[batch, 1 + patches, clip_v_dim]` → `[batch, patches, out_dim]` (256 × 768 for the
    /// released plugins).
    ///
    /// # Errors
    /// [`Error::Shape`] when the token width is not `clip_v_dim` or there is no patch token.
    pub fn forward(&self, clip_hidden_state: Tensor<B, 3>) -> Result<Tensor<B, 3>> {
        let [batch, tokens, width] = clip_hidden_state.dims();
        let expected = self.config().clip_v_dim;
        if width != expected || tokens < 2 {
            return Err(Error::Shape {
                origin: None,
                key: "clip_hidden_state".into(),
                expected: format!("[batch, 1 + patches, {expected}]"),
                found: vec![batch, tokens, width],
            });
        }
        let patches = clip_hidden_state.slice([0..batch, 1..tokens]);
        Ok(self.project(patches))
    }

    /// The MLP alone, on tokens that are already patch tokens.
    ///
    /// # Shapes
    /// `[batch, tokens, clip_v_dim]` → `[batch, tokens, out_dim]`.
    pub fn project(&self, tokens: Tensor<B, 3>) -> Tensor<B, 3> {
        let x = self.hidden.iter().fold(tokens, |x, layer| {
            leaky_relu(
                layer.norm.forward(layer.linear.forward(x)),
                LEAKY_RELU_SLOPE,
            )
        });
        self.out.forward(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn_ndarray::NdArray;

    #[test]
    fn shapes_and_input_check() {
        let device = Default::default();
        let config = TPBConfig {
            clip_v_dim: 8,
            num_cross_proj_layers: 2,
            out_dim: 4,
        };
        let tpb = config.init::<NdArray>(&device);
        assert_eq!(tpb.config(), config);
        let out = tpb.forward(Tensor::zeros([2, 5, 8], &device)).unwrap();
        assert_eq!(out.dims(), [2, 4, 4]);
        assert!(tpb.forward(Tensor::zeros([2, 5, 7], &device)).is_err());
        assert!(tpb.forward(Tensor::zeros([2, 1, 8], &device)).is_err());
    }
}
