//! 2-D convolution on the host's f32 buffers, in the NCHW layout the models use.
//!
//! burn-flex converts the input to NHWC and transposes the whole weight to `[out, kh, kw, in]`
//! on one thread at every call, then runs one product per tile of 512 output pixels; at
//! SD1.5's deep levels that transposition (59 MB for a 1280-channel 3×3 weight) costs more
//! than the product, and burn-ndarray runs a direct convolution without matrix kernels. Here
//! the weight is read in place as the `[out, in·kh·kw]` matrix it already is, the input is
//! unfolded per image into `[in·kh·kw, pixels]` rows (whole rows copied, borders zeroed) in a
//! scratch buffer that is reused between calls, and one `gemm` product per image and column
//! tile writes the NCHW output directly, on top of the bias. A 1×1 convolution multiplies the
//! input planes in place. The function is burn's `conv2d` (zero padding, any stride and
//! dilation, one group), tested against it.

use std::cell::RefCell;

use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::prelude::*;
use burn::tensor::DType;
use rayon::prelude::*;

use super::{host_backend, tensor, winograd, with_values};

/// Most f32 values of one unfolded tile, or of one chunk of Winograd-transformed inputs
/// (16 MiB): larger inputs are processed in parts.
const TILE_VALUES: usize = 1 << 22;

thread_local! {
    /// The unfolded tile, kept between calls so that its pages are not faulted in again.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// The sizes of one call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct ConvDims {
    pub(super) batch: usize,
    pub(super) channels_in: usize,
    pub(super) height: usize,
    pub(super) width: usize,
    pub(super) channels_out: usize,
    pub(super) kernel: [usize; 2],
    pub(super) stride: [usize; 2],
    pub(super) dilation: [usize; 2],
    /// Zero rows above and columns left of the input (those below and right only change the
    /// output size).
    pub(super) padding: [usize; 2],
    pub(super) out: [usize; 2],
}

impl ConvDims {
    /// Values in one column of the unfolded input: `in·kh·kw`.
    fn depth(&self) -> usize {
        self.channels_in * self.kernel[0] * self.kernel[1]
    }

    /// Output pixels per image.
    fn pixels(&self) -> usize {
        self.out[0] * self.out[1]
    }

    /// A 1×1 convolution without stride or padding: the input planes are the product's operand.
    fn pointwise(&self) -> bool {
        self.kernel == [1, 1] && self.stride == [1, 1] && self.padding == [0, 0]
    }
}

/// Applies `conv` to `x` on the host when the backend is a CPU one, every tensor is f32, the
/// convolution has one group and explicit (or no) padding; gives `x` back otherwise.
pub(in crate::nn) fn try_conv2d<B: Backend>(
    conv: &Conv2d<B>,
    x: Tensor<B, 4>,
) -> Result<Tensor<B, 4>, Tensor<B, 4>> {
    try_conv2d_tiled(conv, x, TILE_VALUES)
}

/// [`try_conv2d`] unfolding at most `tile_values` values at a time.
pub(in crate::nn) fn try_conv2d_tiled<B: Backend>(
    conv: &Conv2d<B>,
    x: Tensor<B, 4>,
    tile_values: usize,
) -> Result<Tensor<B, 4>, Tensor<B, 4>> {
    let weight = conv.weight.val();
    let bias = conv.bias.as_ref().map(|b| b.val());
    let [batch, channels_in, height, width] = x.dims();
    let [channels_out, per_group, kh, kw] = weight.dims();
    let eligible = host_backend::<B>()
        && x.dtype() == DType::F32
        && weight.dtype() == DType::F32
        && bias.as_ref().is_none_or(|b| b.dtype() == DType::F32)
        && conv.groups == 1
        && per_group == channels_in
        && !conv.stride.contains(&0)
        && !conv.dilation.contains(&0);
    if !eligible {
        return Err(x);
    }
    // `Same` (rare in diffusion models) stays with burn, which defines its split.
    let (top, left, bottom, right) = match conv.padding {
        PaddingConfig2d::Valid => (0, 0, 0, 0),
        PaddingConfig2d::Explicit(top, left, bottom, right) => (top, left, bottom, right),
        PaddingConfig2d::Same => return Err(x),
    };
    let out_size = |size: usize, pad: usize, k: usize, i: usize| {
        let span = conv.dilation[i] * (k - 1) + 1;
        (size + pad)
            .checked_sub(span)
            .map(|n| n / conv.stride[i] + 1)
    };
    let (Some(out_h), Some(out_w)) = (
        out_size(height, top + bottom, kh, 0),
        out_size(width, left + right, kw, 1),
    ) else {
        return Err(x);
    };
    let dims = ConvDims {
        batch,
        channels_in,
        height,
        width,
        channels_out,
        kernel: [kh, kw],
        stride: conv.stride,
        dilation: conv.dilation,
        padding: [top, left],
        out: [out_h, out_w],
    };
    let device = x.device();
    let out = with_values(&weight, |w| {
        let run = |b: Option<&[f32]>| with_values(&x, |x| compute(x, w, b, dims, tile_values));
        match &bias {
            Some(bias) => with_values(bias, |b| run(Some(b))),
            None => run(None),
        }
    });
    Ok(tensor(out, [batch, channels_out, out_h, out_w], &device))
}

/// The convolution of host buffers (see [`try_conv2d`]): `x: [batch, in, h, w]`,
/// `weight: [out, in, kh, kw]`, `bias: [out]` → `[batch, out, out_h, out_w]`, unfolding at most
/// `tile_values` values at a time.
fn compute(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    dims: ConvDims,
    tile_values: usize,
) -> Vec<f32> {
    let (depth, pixels) = (dims.depth(), dims.pixels());
    let plane = dims.height * dims.width;
    assert_eq!(x.len(), dims.batch * dims.channels_in * plane, "input size");
    assert_eq!(weight.len(), dims.channels_out * depth, "weight size");
    assert!(
        bias.is_none_or(|b| b.len() == dims.channels_out),
        "bias size"
    );
    // The output starts as the bias, which the products add to.
    let mut out = Vec::with_capacity(dims.batch * dims.channels_out * pixels);
    for _ in 0..dims.batch {
        for c in 0..dims.channels_out {
            let value = bias.map_or(0.0, |b| b[c]);
            out.extend(std::iter::repeat_n(value, pixels));
        }
    }
    if pixels == 0 || depth == 0 {
        return out;
    }
    if winograd::applies(&dims) {
        winograd::accumulate(x, weight, dims, &mut out, tile_values);
        return out;
    }
    let tile = (tile_values / depth).clamp(1, pixels);
    for b in 0..dims.batch {
        let image = &x[b * dims.channels_in * plane..][..dims.channels_in * plane];
        let out = &mut out[b * dims.channels_out * pixels..][..dims.channels_out * pixels];
        if dims.pointwise() {
            // SAFETY: `image` is `[in, pixels]` and `out` `[out, pixels]`, row-major.
            unsafe { product(out, weight, image, dims, 0..pixels, pixels) };
            continue;
        }
        SCRATCH.with_borrow_mut(|scratch| {
            for start in (0..pixels).step_by(tile) {
                let columns = start..(start + tile).min(pixels);
                let len = columns.len();
                if scratch.len() < depth * len {
                    scratch.resize(depth * len, 0.0);
                }
                let cols = &mut scratch[..depth * len];
                unfold(image, cols, dims, columns.clone());
                // SAFETY: `cols` is `[depth, len]` and `out` `[out, pixels]`, row-major.
                unsafe { product(out, weight, cols, dims, columns, len) };
            }
        });
    }
    out
}

/// `out[:, columns] += weight · rhs`, where `rhs` is `[depth, columns.len()]` with rows `rhs_row`
/// apart.
///
/// # Safety
/// `out` must hold `[channels_out, pixels]`, `weight` `[channels_out, depth]` and `rhs`
/// `depth` rows of at least `columns.len()` values, `rhs_row` apart.
unsafe fn product(
    out: &mut [f32],
    weight: &[f32],
    rhs: &[f32],
    dims: ConvDims,
    columns: std::ops::Range<usize>,
    rhs_row: usize,
) {
    let (depth, pixels) = (dims.depth(), dims.pixels());
    debug_assert!(out.len() >= dims.channels_out * pixels && columns.end <= pixels);
    debug_assert!(rhs.len() >= (depth - 1) * rhs_row + columns.len());
    // SAFETY: the sizes are the caller's contract; `gemm` reads and writes inside them.
    unsafe {
        gemm::gemm(
            dims.channels_out,
            columns.len(),
            depth,
            out.as_mut_ptr().add(columns.start),
            1,
            pixels as isize,
            true,
            weight.as_ptr(),
            1,
            depth as isize,
            rhs.as_ptr(),
            1,
            rhs_row as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(0),
        );
    }
}

/// Writes the unfolded input of output pixels `columns` into `cols` (`[in·kh·kw, len]`):
/// row `(c, i, j)` holds input channel `c` at the pixels kernel tap `(i, j)` reads, zero where
/// that falls in the padding.
fn unfold(image: &[f32], cols: &mut [f32], dims: ConvDims, columns: std::ops::Range<usize>) {
    let ConvDims {
        height,
        width,
        kernel: [kh, kw],
        stride: [sy, sx],
        dilation: [dy, dx],
        padding: [top, left],
        out: [_, out_w],
        ..
    } = dims;
    let len = columns.len();
    let taps = kh * kw;
    cols.par_chunks_mut(taps * len)
        .zip(image.par_chunks(height * width))
        .for_each(|(rows, channel)| {
            for (tap, row) in rows.chunks_exact_mut(len).enumerate() {
                let (i, j) = (tap / kw, tap % kw);
                let mut p = columns.start;
                let mut row = row;
                while p < columns.end {
                    let (oy, ox) = (p / out_w, p % out_w);
                    let run = (out_w - ox).min(columns.end - p);
                    let (segment, rest) = row.split_at_mut(run);
                    // Rows in the padding wrap around to large indices.
                    let iy = (oy * sy + i * dy).wrapping_sub(top);
                    if iy < height {
                        let line = &channel[iy * width..][..width];
                        fill_line(segment, line, ox, [sx, j * dx, left]);
                    } else {
                        segment.fill(0.0);
                    }
                    (p, row) = (p + run, rest);
                }
            }
        });
}

/// Fills `segment` (output columns `ox..`) from input row `line`: column `ox + n` reads input
/// column `(ox + n)·stride + offset − left`, zero outside the row.
fn fill_line(segment: &mut [f32], line: &[f32], ox: usize, [stride, offset, left]: [usize; 3]) {
    let width = line.len();
    let source = |o: usize| (o * stride + offset).wrapping_sub(left);
    if stride == 1 {
        // Output columns whose input column lies in 0..width: one contiguous copy.
        let first = left.saturating_sub(offset).max(ox);
        let end = (width + left)
            .saturating_sub(offset)
            .min(ox + segment.len());
        if first >= end {
            segment.fill(0.0);
            return;
        }
        let (before, rest) = segment.split_at_mut(first - ox);
        let (middle, after) = rest.split_at_mut(end - first);
        before.fill(0.0);
        middle.copy_from_slice(&line[source(first)..source(end - 1) + 1]);
        after.fill(0.0);
        return;
    }
    for (n, value) in segment.iter_mut().enumerate() {
        *value = line.get(source(ox + n)).copied().unwrap_or(0.0);
    }
}
