//! The fully connected data layers of Versatile Diffusion's text UNet (diffusers
//! `pipelines/deprecated/versatile_diffusion/modeling_text_unet.py`: `LinearMultiDim`,
//! `ResnetBlockFlat`; official `openaimodel.py`: `Linear_MultiDim`, `FCBlock_MultiDim`).
//!
//! The text UNet keeps its activations as pseudo-images `[batch, C, 4, 1]` (C channels, a
//! "second dimension" of 4, width 1) so the cross-attention layers see 4 tokens of width C. Its
//! data layers flatten the trailing `[C, 4, 1]` row-major (flat index `c·4 + s`) and work on the
//! `4C` vector: GroupNorm over `4C` channels, 1×1 convolutions that are plain matrix products.

use burn::module::Param;
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::silu;
use prompt_diffusion_core::nn::{Activation, GroupNorm, GroupNormConfig};

/// diffusers' `second_dim`: the flat UNet's feature maps are `[batch, C, 4, 1]`.
pub const FLAT_SECOND_DIM: usize = 4;

/// The multi-dimensional shape `[C, 4, 1]` diffusers gives an integer channel count.
pub fn flat_shape(channels: usize) -> [usize; 3] {
    [channels, FLAT_SECOND_DIM, 1]
}

fn product(shape: [usize; 3]) -> usize {
    shape.iter().product()
}

/// `LinearMultiDim`: a linear map between flattened multi-dimensional shapes.
///
/// Used for the text UNet's `conv_in` (`[768, 1, 1] → [320, 4, 1]`), its down- and upsamplers
/// (`[C, 4, 1] → [C, 4, 1]`) and its `conv_out` (`[320, 4, 1] → [768, 1, 1]`). The weight is kept
/// in the reference's `[out, in]` layout (it is not a burn `Linear`, so loading does not
/// transpose it).
#[derive(Module, Debug)]
pub struct LinearMultiDim<B: Backend> {
    /// `[prod(out_shape), prod(in_shape)]`, as stored by PyTorch.
    pub weight: Param<Tensor<B, 2>>,
    /// `[prod(out_shape)]`.
    pub bias: Param<Tensor<B, 1>>,
    in_shape: [usize; 3],
    out_shape: [usize; 3],
}

impl<B: Backend> LinearMultiDim<B> {
    /// Creates the layer (weights are filled by loading).
    pub fn new(in_shape: [usize; 3], out_shape: [usize; 3], device: &B::Device) -> Self {
        let (i, o) = (product(in_shape), product(out_shape));
        Self {
            weight: Initializer::Zeros.init([o, i], device),
            bias: Initializer::Zeros.init([o], device),
            in_shape,
            out_shape,
        }
    }

    /// The input shape after the batch dimension.
    pub fn in_shape(&self) -> [usize; 3] {
        self.in_shape
    }

    /// The output shape after the batch dimension.
    pub fn out_shape(&self) -> [usize; 3] {
        self.out_shape
    }

    /// Flattens the input, applies the linear map and reshapes to `out_shape`.
    ///
    /// # Shapes
    /// `[batch, *in_shape]` → `[batch, *out_shape]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let batch = x.dims()[0];
        let flat = x.reshape([batch, product(self.in_shape)]);
        let out = flat.matmul(self.weight.val().transpose()) + self.bias.val().unsqueeze::<2>();
        let [c, h, w] = self.out_shape;
        out.reshape([batch, c, h, w])
    }
}

/// `ResnetBlockFlat` (official `FCBlock_MultiDim`): the residual block of the text UNet, on the
/// flattened `[C, 4, 1]` features.
///
/// `norm1 → SiLU → conv1 (+ time_emb_proj(SiLU(temb))) → norm2 → SiLU → conv2`, plus the input
/// (through `conv_shortcut` when the width changes). The 1×1 convolutions (`[out, in, 1, 1]` in
/// the checkpoints) are `Linear` layers here; loading squeezes their weights.
#[derive(Module, Debug)]
pub struct ResnetBlockFlat<B: Backend> {
    /// GroupNorm over the `prod(in_shape)` features.
    pub norm1: GroupNorm<B>,
    /// First 1×1 convolution.
    pub conv1: Linear<B>,
    /// Projection of the time embedding.
    pub time_emb_proj: Linear<B>,
    /// GroupNorm over the `prod(out_shape)` features.
    pub norm2: GroupNorm<B>,
    /// Second 1×1 convolution.
    pub conv2: Linear<B>,
    /// 1×1 convolution of the input when the width changes.
    pub conv_shortcut: Option<Linear<B>>,
    in_shape: [usize; 3],
    out_shape: [usize; 3],
}

impl<B: Backend> ResnetBlockFlat<B> {
    /// Creates the block `in_shape → out_shape` with a `temb_channels`-wide time embedding,
    /// `groups` GroupNorm groups and epsilon `eps` (weights are filled by loading).
    pub fn new(
        in_shape: [usize; 3],
        out_shape: [usize; 3],
        temb_channels: usize,
        groups: usize,
        eps: f64,
        device: &B::Device,
    ) -> Self {
        let (i, o) = (product(in_shape), product(out_shape));
        let norm = |c| GroupNormConfig::new(groups, c).with_eps(eps).init(device);
        let linear = |a, b| LinearConfig::new(a, b).init(device);
        Self {
            norm1: norm(i),
            conv1: linear(i, o),
            time_emb_proj: linear(temb_channels, o),
            norm2: norm(o),
            conv2: linear(o, o),
            conv_shortcut: (i != o).then(|| linear(i, o)),
            in_shape,
            out_shape,
        }
    }

    /// Applies the block.
    ///
    /// # Shapes
    /// `x: [batch, *in_shape]`, `temb: [batch, temb_channels]` → `[batch, *out_shape]`.
    pub fn forward(&self, x: Tensor<B, 4>, temb: Option<&Tensor<B, 2>>) -> Tensor<B, 4> {
        let batch = x.dims()[0];
        let x = x.reshape([batch, product(self.in_shape)]);
        let mut h = self
            .conv1
            .forward(self.norm1.forward_activated(x.clone(), Activation::Silu));
        if let Some(temb) = temb {
            h = h + self.time_emb_proj.forward(silu(temb.clone()));
        }
        let h = self
            .conv2
            .forward(self.norm2.forward_activated(h, Activation::Silu));
        let shortcut = match &self.conv_shortcut {
            Some(conv) => conv.forward(x),
            None => x,
        };
        let [c, hh, w] = self.out_shape;
        (shortcut + h).reshape([batch, c, hh, w])
    }

    /// The output shape after the batch dimension.
    pub fn out_shape(&self) -> [usize; 3] {
        self.out_shape
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prompt_diffusion_core::testing::TestBackend as B;

    #[test]
    fn linear_multi_dim_flattens_row_major() {
        let device = Default::default();
        let mut layer = LinearMultiDim::<B>::new([2, 2, 1], [1, 4, 1], &device);
        // The identity on 4 features: the output keeps the flat order c·2 + s.
        layer.weight = Param::from_tensor(Tensor::eye(4, &device));
        let x = Tensor::<B, 4>::from_floats([[[[1.0], [2.0]], [[3.0], [4.0]]]], &device);
        let y = layer.forward(x);
        assert_eq!(y.dims(), [1, 1, 4, 1]);
        let y: Vec<f32> = y.into_data().to_vec().unwrap();
        assert_eq!(y, [1.0, 2.0, 3.0, 4.0]);
    }

    #[test]
    fn flat_resnet_keeps_the_pseudo_image_shape() {
        let device = Default::default();
        let block = ResnetBlockFlat::<B>::new(flat_shape(8), flat_shape(16), 12, 4, 1e-5, &device);
        assert!(block.conv_shortcut.is_some());
        let x = Tensor::<B, 4>::ones([3, 8, 4, 1], &device);
        let temb = Tensor::<B, 2>::ones([3, 12], &device);
        assert_eq!(block.forward(x, Some(&temb)).dims(), [3, 16, 4, 1]);
    }
}
