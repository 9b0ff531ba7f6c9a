//! Channels-last storage of convolution weights.
//!
//! burn-cubecl 0.21 runs every convolution in NHWC: it views the NCHW input and weight as NHWC
//! and, when the channel dimension of that view is not contiguous, copies the tensor first. For
//! a weight stored NCHW that copy happens at every call, although the weight never changes (52
//! launches per SD1.5 UNet step; 1×1 weights need none). Storing the weight channels-last once
//! — same logical `[out, in, kh, kw]` shape, memory ordered `[out, kh, kw, in]` — makes the NHWC
//! view contiguous and the copy disappears.

use burn::tensor::{DType, Shape};
use burn_cubecl::CubeRuntime;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::{permute_nchw_to_nhwc, permute_nhwc_to_nchw};
use burn_cubecl::tensor::CubeTensor;

use super::dispatch::CubeOp;

/// Copies a `[n, c, *spatial]` tensor into channels-last memory, keeping its logical shape.
#[derive(Debug, Clone, Copy)]
pub(super) struct ChannelsLast;

impl CubeOp for ChannelsLast {
    const ID: &'static str = "prompt_diffusion::channels_last";

    fn output(&self, inputs: &[(Shape, DType)]) -> (Shape, DType) {
        inputs[0].clone()
    }

    fn launch<R: CubeRuntime>(&self, inputs: Vec<CubeTensor<R>>) -> CubeTensor<R> {
        let [x]: [CubeTensor<R>; 1] = inputs.try_into().expect("one input");
        permute_nhwc_to_nchw(into_contiguous(permute_nchw_to_nhwc(x)))
    }
}
