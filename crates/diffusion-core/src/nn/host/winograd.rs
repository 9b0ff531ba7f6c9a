//! 3×3 convolutions (stride 1) by Winograd's minimal filtering F(2×2, 3×3) (Lavin & Gray,
//! "Fast Algorithms for Convolutional Neural Networks", 2016).
//!
//! Each 2×2 block of output pixels of one output channel is `Aᵀ[Σ_c (G g Gᵀ) ⊙ (Bᵀ d B)]A`,
//! where `g` is the 3×3 kernel of channel `c` and `d` the 4×4 input patch under the block.
//! The sum over channels at each of the 16 transformed points is a matrix product, `[out, in] ·
//! [in, blocks]`, with 16 multiplications per block and channel pair where the direct
//! convolution takes 36. The transforms use the points 0, ±1 and ∞: their entries are 0, ±1
//! and ±½, so the result stays within about twice the direct convolution's rounding error
//! (the larger F(4×4, 3×3) saves more products but loses a decimal digit at SD's channel
//! counts). The kernels are transformed in f64 at every call (the weights are not cached, so
//! memory stays as it was); blocks are processed per image, in chunks whose transformed inputs
//! and products stay within a few MiB.

use std::cell::RefCell;

use rayon::prelude::*;

use super::Out;
use super::conv::ConvDims;

/// Output pixels per block side.
const BLOCK: usize = 2;

/// Input pixels per patch side (`BLOCK` + 2).
const PATCH: usize = BLOCK + 2;

/// Transformed points per block.
const POINTS: usize = PATCH * PATCH;

/// At least this many output blocks per image (a 16×16 output): below it the kernels' transform
/// costs more than the products save. Counted per image, and chunks never span two images, so that an
/// image's output does not depend on the batch it is in.
pub(super) const MIN_BLOCKS: usize = 64;

thread_local! {
    /// Transformed inputs and products of one chunk, kept between calls.
    static SCRATCH: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Whether the convolution is one F(2×2, 3×3) computes and has enough blocks to gain.
pub(super) fn applies(dims: &ConvDims) -> bool {
    dims.kernel == [3, 3]
        && dims.stride == [1, 1]
        && dims.dilation == [1, 1]
        && dims.channels_in > 0
        && per_image(dims) >= MIN_BLOCKS
}

/// Block rows and columns per image.
fn blocks(dims: &ConvDims) -> (usize, usize) {
    let [rows, cols] = dims.out.map(|n| n.div_ceil(BLOCK));
    (rows, cols)
}

/// Blocks per image.
fn per_image(dims: &ConvDims) -> usize {
    let (rows, cols) = blocks(dims);
    rows * cols
}

/// Adds the convolution of `x` by `weight` to `out` (`[batch, out, out_h, out_w]`, holding the
/// bias), with at most `chunk_values` transformed inputs (and products) at a time; the sizes are
/// checked by the caller.
pub(super) fn accumulate(
    x: &[f32],
    weight: &[f32],
    dims: ConvDims,
    out: &mut [f32],
    chunk_values: usize,
) {
    let (channels_in, channels_out) = (dims.channels_in, dims.channels_out);
    let per_image = per_image(&dims);
    let chunk = (chunk_values / (POINTS * channels_in.max(channels_out))).clamp(1, per_image);
    let spans = (0..dims.batch).flat_map(|image| {
        (0..per_image).step_by(chunk).map(move |start| {
            image * per_image + start..image * per_image + (start + chunk).min(per_image)
        })
    });
    let kernels = transform_kernels(weight, channels_out, channels_in);
    let out = Out(out.as_mut_ptr());
    SCRATCH.with_borrow_mut(|(inputs, products)| {
        for span in spans {
            let len = span.len();
            inputs.resize(inputs.len().max(channels_in * POINTS * len), 0.0);
            products.resize(products.len().max(channels_out * POINTS * len), 0.0);
            let inputs = &mut inputs[..channels_in * POINTS * len];
            let products = &mut products[..channels_out * POINTS * len];
            transform_inputs(x, dims, span.clone(), inputs);
            multiply(&kernels, inputs, products, [channels_out, channels_in, len]);
            // SAFETY: `out` holds the whole output (the caller's contract).
            unsafe { transform_outputs(products, dims, span, out) };
        }
    });
}

/// `G g Gᵀ` of every kernel, as `[out, POINTS, in]`.
fn transform_kernels(weight: &[f32], channels_out: usize, channels_in: usize) -> Vec<f32> {
    let mut kernels = vec![0f32; channels_out * POINTS * channels_in];
    kernels
        .par_chunks_mut(POINTS * channels_in)
        .zip(weight.par_chunks(channels_in * 9))
        .for_each(|(transformed, weights)| {
            for (c, g) in weights.chunks_exact(9).enumerate() {
                let g: [f64; 9] = std::array::from_fn(|i| f64::from(g[i]));
                // G g (PATCH × 3), then (G g) Gᵀ (PATCH × PATCH).
                let columns: [[f64; PATCH]; 3] =
                    std::array::from_fn(|j| kernel_g([g[j], g[3 + j], g[6 + j]]));
                for i in 0..PATCH {
                    let row = kernel_g([columns[0][i], columns[1][i], columns[2][i]]);
                    for (k, value) in row.into_iter().enumerate() {
                        transformed[(i * PATCH + k) * channels_in + c] = value as f32;
                    }
                }
            }
        });
    kernels
}

/// `G · [a, b, c]`.
fn kernel_g([a, b, c]: [f64; 3]) -> [f64; PATCH] {
    [a, (a + b + c) / 2.0, (a - b + c) / 2.0, c]
}

/// `Bᵀ · d`.
#[inline(always)]
fn input_b([d0, d1, d2, d3]: [f32; PATCH]) -> [f32; PATCH] {
    [d0 - d2, d1 + d2, d2 - d1, d1 - d3]
}

/// `Aᵀ · m`.
#[inline(always)]
fn output_a([m0, m1, m2, m3]: [f32; PATCH]) -> [f32; BLOCK] {
    [m0 + m1 + m2, m1 - m2 - m3]
}

/// The image, block row and block column of block `index`.
fn block_at(dims: &ConvDims, index: usize) -> (usize, usize, usize) {
    let (rows, cols) = blocks(dims);
    (index / (rows * cols), index / cols % rows, index % cols)
}

/// Blocks of one block row handled together by the transforms (their rows are assembled on
/// the stack).
const RUN: usize = 64;

/// The runs of consecutive blocks of `span` that lie in one block row, at most [`RUN`] long:
/// `(offset in span, image, block row, first block column, blocks)`.
fn runs(
    dims: &ConvDims,
    span: std::ops::Range<usize>,
) -> impl Iterator<Item = (usize, usize, usize, usize, usize)> {
    let (_, cols) = blocks(dims);
    let dims = *dims;
    let mut index = span.start;
    std::iter::from_fn(move || {
        (index < span.end).then(|| {
            let (image, row, col) = block_at(&dims, index);
            let len = (cols - col).min(span.end - index).min(RUN);
            let run = (index - span.start, image, row, col, len);
            index += len;
            run
        })
    })
}

/// `Bᵀ d B` of every input channel's patch under blocks `span`, as `[in, POINTS, span]`.
fn transform_inputs(x: &[f32], dims: ConvDims, span: std::ops::Range<usize>, inputs: &mut [f32]) {
    let (height, width, len) = (dims.height, dims.width, span.len());
    inputs
        .par_chunks_mut(POINTS * len)
        .enumerate()
        .for_each(|(c, transformed)| {
            for (n, image, row, col, blocks) in runs(&dims, span.clone()) {
                let plane = &x[(image * dims.channels_in + c) * height * width..][..height * width];
                let [top, left] = dims.padding;
                // The PATCH input rows under the run, zero outside the input.
                let mut lines = [[0f32; BLOCK * RUN + 2]; PATCH];
                for (r, line) in lines.iter_mut().enumerate() {
                    let y = (row * BLOCK + r).wrapping_sub(top);
                    if y >= height {
                        continue;
                    }
                    for (s, value) in line[..BLOCK * blocks + 2].iter_mut().enumerate() {
                        let x = (col * BLOCK + s).wrapping_sub(left);
                        if x < width {
                            *value = plane[y * width + x];
                        }
                    }
                }
                columns_then_rows(&lines, blocks, &mut |point, values| {
                    transformed[point * len + n..][..blocks].copy_from_slice(values);
                });
            }
        });
}

multiversion! {
    /// `Bᵀ d B` of `blocks` consecutive patches of the input rows `lines`: `Bᵀ d` combines the
    /// rows at every column, then `(Bᵀ d) B` the columns of each patch; hands each point's
    /// values of the run to `emit`.
    fn columns_then_rows(
        lines: &[[f32; BLOCK * RUN + 2]; PATCH],
        blocks: usize,
        emit: &mut dyn FnMut(usize, &[f32]),
    ) {
        let width = BLOCK * blocks + 2;
        let mut combined = [[0f32; BLOCK * RUN + 2]; PATCH];
        for s in 0..width {
            let column = input_b(std::array::from_fn(|r| lines[r][s]));
            for (i, value) in column.into_iter().enumerate() {
                combined[i][s] = value;
            }
        }
        let mut values = [[0f32; RUN]; PATCH];
        for (i, line) in combined.iter().enumerate() {
            for (j, patch) in line.windows(PATCH).step_by(BLOCK).take(blocks).enumerate() {
                let row = input_b([patch[0], patch[1], patch[2], patch[3]]);
                for (k, value) in row.into_iter().enumerate() {
                    values[k][j] = value;
                }
            }
            for (k, values) in values.iter().enumerate() {
                emit(i * PATCH + k, &values[..blocks]);
            }
        }
    }
}

/// `products[o, p, n] = Σ_c kernels[o, p, c] · inputs[c, p, n]` for each point `p`, the points
/// in parallel.
fn multiply(
    kernels: &[f32],
    inputs: &[f32],
    products: &mut [f32],
    [channels_out, channels_in, len]: [usize; 3],
) {
    let dst = Out(products.as_mut_ptr());
    (0..POINTS).into_par_iter().for_each(|p| {
        // SAFETY: point `p`'s product writes `products[o, p, ..len]` for every `o`, which no
        // other point writes; every operand index lies inside the three `[_, POINTS, _]` buffers.
        unsafe {
            gemm::gemm(
                channels_out,
                len,
                channels_in,
                dst.add(p * len),
                1,
                (POINTS * len) as isize,
                false,
                kernels.as_ptr().add(p * channels_in),
                1,
                (POINTS * channels_in) as isize,
                inputs.as_ptr().add(p * len),
                1,
                (POINTS * len) as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    });
}

/// Adds `Aᵀ m A` of every output channel's products to its blocks `span` of `out`.
///
/// # Safety
/// `out` must point to the whole `[batch, out, out_h, out_w]` output.
unsafe fn transform_outputs(
    products: &[f32],
    dims: ConvDims,
    span: std::ops::Range<usize>,
    out: Out,
) {
    let [out_h, out_w] = dims.out;
    let len = span.len();
    products
        .par_chunks(POINTS * len)
        .enumerate()
        .for_each(|(o, m)| {
            for (n, image, row, col, blocks) in runs(&dims, span.clone()) {
                let points: [&[f32]; POINTS] = std::array::from_fn(|p| &m[p * len + n..][..blocks]);
                let lines = rows_then_columns(&points, blocks);
                let plane = (image * dims.channels_out + o) * out_h * out_w;
                let x = col * BLOCK;
                let width = (BLOCK * blocks).min(out_w - x);
                for (i, line) in lines.iter().take(out_h - row * BLOCK).enumerate() {
                    let start = plane + (row * BLOCK + i) * out_w + x;
                    // SAFETY: channel `o`'s task alone writes plane `(image, o)`; the pixels lie
                    // inside its row `row·BLOCK + i`.
                    let dst = unsafe { std::slice::from_raw_parts_mut(out.add(start), width) };
                    dst.iter_mut().zip(line).for_each(|(d, v)| *d += v);
                }
            }
        });
}

multiversion! {
    /// `Aᵀ m A` of `blocks` consecutive blocks, from each point's values of the run: `Aᵀ m`
    /// combines the point rows, then `(Aᵀ m) A` the point columns; the `BLOCK` output rows of
    /// the run.
    fn rows_then_columns(points: &[&[f32]; POINTS], blocks: usize) -> [[f32; BLOCK * RUN]; BLOCK] {
        let mut lines = [[0f32; BLOCK * RUN]; BLOCK];
        for j in 0..blocks {
            let columns: [[f32; BLOCK]; PATCH] = std::array::from_fn(|k| {
                output_a(std::array::from_fn(|i| points[i * PATCH + k][j]))
            });
            for (a, line) in lines.iter_mut().enumerate() {
                let pixels = output_a(std::array::from_fn(|k| columns[k][a]));
                line[j * BLOCK..][..BLOCK].copy_from_slice(&pixels);
            }
        }
        lines
    }
}
