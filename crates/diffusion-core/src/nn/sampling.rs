//! `Downsample2D` and `Upsample2D` (diffusers `models/downsampling.py`, `models/upsampling.py`).

use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::prelude::*;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};

use super::conv2d;

/// How a [`Downsample2D`] pads before its stride-2 convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownsamplePadding {
    /// One pixel on every side (the UNet's `downsample_padding = 1`).
    Symmetric,
    /// One pixel on the right and bottom only, then no padding (the VAE encoder:
    /// `F.pad(x, (0, 1, 0, 1))`).
    RightBottom,
}

/// A 3×3 stride-2 convolution (`downsamplers.0.conv`).
#[derive(Module, Debug)]
pub struct Downsample2D<B: Backend> {
    /// The strided convolution.
    pub conv: Conv2d<B>,
}

impl<B: Backend> Downsample2D<B> {
    /// Creates the layer.
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        padding: DownsamplePadding,
        device: &B::Device,
    ) -> Self {
        let padding = match padding {
            DownsamplePadding::Symmetric => PaddingConfig2d::Explicit(1, 1, 1, 1),
            DownsamplePadding::RightBottom => PaddingConfig2d::Explicit(0, 0, 1, 1),
        };
        Self {
            conv: Conv2dConfig::new([in_channels, out_channels], [3, 3])
                .with_stride([2, 2])
                .with_padding(padding)
                .init(device),
        }
    }

    /// Halves the spatial size (rounding up).
    ///
    /// # Shapes
    /// `[batch, in, h, w]` → `[batch, out, ⌈h/2⌉, ⌈w/2⌉]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        conv2d(&self.conv, x)
    }
}

/// Nearest-neighbour ×2 upsampling followed by a 3×3 convolution (`upsamplers.0.conv`).
#[derive(Module, Debug)]
pub struct Upsample2D<B: Backend> {
    /// The convolution after upsampling.
    pub conv: Conv2d<B>,
}

impl<B: Backend> Upsample2D<B> {
    /// Creates the layer.
    pub fn new(in_channels: usize, out_channels: usize, device: &B::Device) -> Self {
        Self {
            conv: Conv2dConfig::new([in_channels, out_channels], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device),
        }
    }

    /// Upsamples to `size` (twice the input when `None`) by nearest neighbour, then convolves.
    /// A UNet passes the size of the skip connection it will meet, so inputs whose size is not
    /// a multiple of the total downsampling still line up (as diffusers' `upsample_size`).
    ///
    /// # Shapes
    /// `[batch, in, h, w]` → `[batch, out, size]` (default `[2h, 2w]`).
    pub fn forward(&self, x: Tensor<B, 4>, size: Option<[usize; 2]>) -> Tensor<B, 4> {
        let [_, _, h, w] = x.dims();
        let size = size.unwrap_or([2 * h, 2 * w]);
        conv2d(&self.conv, upsample_nearest(x, size))
    }
}

/// Nearest-neighbour resize with PyTorch's `F.interpolate(mode="nearest")` indexing
/// (`src = ⌊dst · in/out⌋`). Exact doubling is done by repetition, which every backend
/// runs without a gather.
pub fn upsample_nearest<B: Backend>(x: Tensor<B, 4>, size: [usize; 2]) -> Tensor<B, 4> {
    let [b, c, h, w] = x.dims();
    if size == [2 * h, 2 * w] {
        return x
            .reshape([b, c, h, 1, w, 1])
            .expand([b, c, h, 2, w, 2])
            .reshape([b, c, 2 * h, 2 * w]);
    }
    let dtype = x.dtype();
    // Interpolation kernels of some backends are f32-only; the values are only copied.
    let out = interpolate(
        x.cast(burn::tensor::DType::F32),
        size,
        InterpolateOptions::new(InterpolateMode::Nearest),
    );
    out.cast(dtype)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestBackend as B;

    #[test]
    fn doubling_by_repetition_equals_interpolation() {
        let device = Default::default();
        let x = Tensor::<B, 4>::from_floats([[[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]]], &device);
        let fast: Vec<f32> = upsample_nearest(x.clone(), [4, 6])
            .into_data()
            .to_vec()
            .unwrap();
        let reference: Vec<f32> =
            interpolate(x, [4, 6], InterpolateOptions::new(InterpolateMode::Nearest))
                .into_data()
                .to_vec()
                .unwrap();
        assert_eq!(fast, reference);
        assert_eq!(&fast[..6], &[1.0, 1.0, 2.0, 2.0, 3.0, 3.0]);
    }
}
