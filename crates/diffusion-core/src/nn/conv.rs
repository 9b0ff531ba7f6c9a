//! The convolution entry point of the model crates.

use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::prelude::*;
use burn::tensor::DType;

/// Applies `conv` to `x`: burn's `Conv2d::forward`, run by the host kernel on burn-ndarray and
/// burn-flex for f32 tensors with one group (the weight is read in place and the output written
/// in NCHW directly), by burn's op otherwise (other backends, dtypes and autodiff).
///
/// On burn-wgpu and burn-cuda, f16 and bf16 convolutions are computed in f32 and cast back:
/// burn-cubecl's direct convolution kernel (autotune's only 3×3 choice where the device has no
/// matrix units, such as Mesa's lavapipe) sums its products in the input dtype, which put the
/// tiny-sd and Prompt Diffusion f16 parity images 24/255 and 32/255 from diffusers' on lavapipe
/// (5/255 and 5/255 with f32 sums; diffusers' own f16 image is 6/255 from its f32 one).
///
/// # Shapes
/// `x: [batch, in_channels, h, w]` → `[batch, out_channels, out_h, out_w]`, as burn's.
pub fn conv2d<B: Backend>(conv: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    let x = match super::host::try_conv2d(conv, x) {
        Ok(y) => return y,
        Err(x) => x,
    };
    let dtype = x.dtype();
    if !(matches!(dtype, DType::F16 | DType::BF16) && super::fused_kernels_available::<B>()) {
        return conv.forward(x);
    }
    let mut wide = conv.clone();
    let x = match conv.padding {
        // burn pads one-sided inputs with a tensor of the device's default float type, which an
        // f16 device makes f16: those are padded here, into f32 zeros. burn pads symmetric ones
        // inside the convolution.
        PaddingConfig2d::Explicit(top, left, bottom, right) if top != bottom || left != right => {
            wide.padding = PaddingConfig2d::Valid;
            let [n, c, h, w] = x.dims();
            let padded = [n, c, h + top + bottom, w + left + right];
            Tensor::zeros(padded, (&x.device(), DType::F32)).slice_assign(
                [0..n, 0..c, top..top + h, left..left + w],
                x.cast(DType::F32),
            )
        }
        // Whether `Same` is one-sided depends on the input size; burn's op as it is.
        PaddingConfig2d::Same => return conv.forward(x),
        PaddingConfig2d::Explicit(..) | PaddingConfig2d::Valid => x.cast(DType::F32),
    };
    wide.weight = wide.weight.map(|w| w.cast(DType::F32));
    wide.bias = wide.bias.map(|b| b.map(|b| b.cast(DType::F32)));
    wide.forward(x).cast(dtype)
}

#[cfg(test)]
mod tests {
    use burn::nn::conv::Conv2dConfig;
    use burn::tensor::Distribution;

    use super::*;
    use crate::testing::{TestBackend as B, assert_close};

    /// A convolution with random weights (and bias) of the given settings.
    fn random_conv(
        [c_in, c_out]: [usize; 2],
        kernel: [usize; 2],
        stride: [usize; 2],
        dilation: [usize; 2],
        padding: PaddingConfig2d,
        bias: bool,
    ) -> Conv2d<B> {
        let device = Default::default();
        let mut conv = Conv2dConfig::new([c_in, c_out], kernel)
            .with_stride(stride)
            .with_dilation(dilation)
            .with_padding(padding)
            .with_bias(bias)
            .init::<B>(&device);
        // burn's init draws small uniform weights; a bias of the same order shows misplacement.
        conv.bias = conv
            .bias
            .map(|b| b.map(|b| Tensor::random(b.dims(), Distribution::Normal(0.0, 1.0), &device)));
        conv
    }

    /// A 3×3 convolution with padding 1 (SD's), with bias.
    fn padded_3x3(channels: [usize; 2]) -> Conv2d<B> {
        let padding = PaddingConfig2d::Explicit(1, 1, 1, 1);
        random_conv(channels, [3, 3], [1, 1], [1, 1], padding, true)
    }

    /// Standard normal values of `shape`.
    fn randn(shape: [usize; 4]) -> Tensor<B, 4> {
        Tensor::random(shape, Distribution::Normal(0.0, 1.0), &Default::default())
    }

    #[test]
    fn host_kernel_matches_burns_op() {
        assert!(super::super::host::host_backend::<B>());
        // SD's 3×3 with padding 1; the VAE's downsampler (stride 2, padded right and below
        // only); 1×1 without bias; a dilated, rectangular, strided kernel with padding larger
        // than the kernel's reach; `Same` padding; an input smaller than the kernel.
        let cases = [
            (
                [5, 7],
                [3, 3],
                [1, 1],
                [1, 1],
                PaddingConfig2d::Explicit(1, 1, 1, 1),
                true,
                [9, 6],
            ),
            (
                [4, 6],
                [3, 3],
                [2, 2],
                [1, 1],
                PaddingConfig2d::Explicit(0, 0, 1, 1),
                true,
                [9, 8],
            ),
            (
                [6, 3],
                [1, 1],
                [1, 1],
                [1, 1],
                PaddingConfig2d::Valid,
                false,
                [5, 7],
            ),
            (
                [3, 4],
                [3, 2],
                [1, 2],
                [2, 1],
                PaddingConfig2d::Explicit(2, 3, 1, 4),
                true,
                [7, 9],
            ),
            (
                [3, 5],
                [3, 3],
                [1, 1],
                [1, 1],
                PaddingConfig2d::Same,
                true,
                [4, 5],
            ),
            (
                [2, 3],
                [3, 3],
                [1, 1],
                [1, 1],
                PaddingConfig2d::Explicit(1, 1, 1, 1),
                true,
                [1, 2],
            ),
        ];
        for (channels, kernel, stride, dilation, padding, bias, [h, w]) in cases {
            let conv = random_conv(channels, kernel, stride, dilation, padding.clone(), bias);
            let x = randn([2, channels[0], h, w]);
            let what = format!("{channels:?} {kernel:?} stride {stride:?} {padding:?}");
            assert_close(&what, conv2d(&conv, x.clone()), conv.forward(x), 1e-5);
        }
    }

    #[test]
    fn column_tiles_give_the_whole_product() {
        let conv = padded_3x3([3, 4]);
        let x = randn([1, 3, 5, 7]);
        let whole = conv2d(&conv, x.clone());
        // Tiles of 4 pixels (27 values per pixel) split output rows of 7 across tiles.
        let tiled = super::super::host::try_conv2d_tiled(&conv, x, 27 * 4).unwrap();
        assert_close("tiled", tiled, whole, 0.0);
    }

    #[test]
    fn winograd_blocks_match_burns_op() {
        // At least 64 blocks of 2×2 per image: partial blocks at the right and bottom,
        // symmetric and one-sided padding, several chunks (a budget of five blocks), block
        // rows longer than the transforms' runs of 64 blocks, and chunks of 50 blocks that
        // start and end inside block rows.
        let (one, uneven) = (
            PaddingConfig2d::Explicit(1, 1, 1, 1),
            PaddingConfig2d::Explicit(0, 2, 2, 1),
        );
        let cases = [
            ([16, 12], one.clone(), [22, 23], 1 << 22),
            ([5, 7], uneven, [13, 30], 1 << 22),
            ([9, 4], one.clone(), [16, 16], 9 * 16 * 5),
            ([3, 2], one.clone(), [5, 261], 1 << 22),
            ([3, 2], one, [5, 261], 3 * 16 * 50),
        ];
        for (channels, padding, [h, w], budget) in cases {
            let conv = random_conv(channels, [3, 3], [1, 1], [1, 1], padding.clone(), true);
            let x = randn([2, channels[0], h, w]);
            let ours = super::super::host::try_conv2d_tiled(&conv, x.clone(), budget).unwrap();
            let what = format!("winograd {channels:?} {padding:?} {h}×{w} budget {budget}");
            assert_close(&what, ours, conv.forward(x), 5e-6);
        }
    }

    #[test]
    fn an_image_convolves_the_same_alone_and_in_a_batch() {
        // 16×16 blocks per image (Winograd) and 6×6 blocks (unfolded products).
        for side in [32, 12] {
            let conv = padded_3x3([6, 5]);
            let x = randn([3, 6, side, side]);
            let batch = conv2d(&conv, x.clone());
            for i in 0..3 {
                let alone = conv2d(&conv, x.clone().slice(i..i + 1));
                assert_close("alone", alone, batch.clone().slice(i..i + 1), 0.0);
            }
        }
    }
}
