//! The CubeCL normalisation kernel: GroupNorm and LayerNorm, statistics, affine transform and an
//! optional SiLU in one launch.
//!
//! Both norms normalise contiguous segments of a contiguous tensor: a GroupNorm of
//! `[batch, channels, *spatial]` has `batch·groups` segments of `channels/groups · spatial`
//! values, a LayerNorm of `[..., dim]` one segment per row of `dim` values. One cube owns one
//! segment and reads it three times: the sum (mean), the sum of squared deviations (variance, as
//! PyTorch computes it, without the cancellation of `E[x²] − E[x]²`), and the write of
//! `(x − mean)/√(var + eps) · weight + bias`, optionally followed by SiLU. Sums are f32 whatever
//! the input dtype; each unit accumulates a strided slice of the segment (coalesced), and the
//! partial sums meet in a shared-memory tree. The affine channel of the value at flat offset `o`
//! is `(o / inner) % channels`: `inner` is the spatial size for GroupNorm and 1 for LayerNorm.
//!
//! burn's own path costs four launches per norm (two reductions, a division, the fused affine)
//! and round-trips the tensor through memory between them; this one is a single launch whose
//! second and third reads of a segment come from cache.

use burn::tensor::{DType, Shape, TensorMetadata};
use burn_cubecl::CubeRuntime;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

use super::dispatch::CubeOp;

/// Most units per cube; short segments (LayerNorm rows) use fewer.
const MAX_UNITS: usize = 256;
/// Fewest units per cube (one warp / subgroup on most devices).
const MIN_UNITS: usize = 32;
/// Largest cube count along one grid dimension (wgpu's limit).
const MAX_GRID: usize = 65_535;

/// Normalises each segment of `x` into `out` (both contiguous and of the same shape).
///
/// Launch with `units` units in a one-dimensional cube (a power of two) and at least `segments`
/// cubes in total; cubes past the last segment do nothing.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn norm_kernel<F: Float>(
    x: &Tensor<F>,
    weight: &Tensor<F>,
    bias: &Tensor<F>,
    out: &mut Tensor<F>,
    segments: u32,
    seg_len: u32,
    inner: u32,
    channels: u32,
    eps: f32,
    #[comptime] units: usize,
    #[comptime] silu: bool,
    #[define(F)] _dtype: StorageType,
) {
    let segment = CUBE_POS;
    // The whole cube takes the same branch, so the barriers inside stay uniform.
    if segment < segments as usize {
        let unit = UNIT_POS_X as usize;
        let len = seg_len as usize;
        let base = segment * len;
        let mut partial = SharedMemory::<f32>::new(units);

        let mut sum = 0.0f32;
        let mut i = unit;
        while i < len {
            sum += f32::cast_from(x[base + i]);
            i += units;
        }
        let mean = cube_sum(&mut partial, sum, unit) / f32::cast_from(seg_len);

        let mut squares = 0.0f32;
        i = unit;
        while i < len {
            let d = f32::cast_from(x[base + i]) - mean;
            squares += d * d;
            i += units;
        }
        let var = cube_sum(&mut partial, squares, unit) / f32::cast_from(seg_len);
        let inv_std = 1.0f32 / (var + eps).sqrt();

        let (inner, channels) = (inner as usize, channels as usize);
        i = unit;
        while i < len {
            let offset = base + i;
            let c = (offset / inner) % channels;
            let mut y = (f32::cast_from(x[offset]) - mean) * inv_std * f32::cast_from(weight[c])
                + f32::cast_from(bias[c]);
            if silu {
                y /= 1.0f32 + (-y).exp();
            }
            out[offset] = F::cast_from(y);
            i += units;
        }
    }
}

/// The sum of every unit's `value`, returned to every unit. Leaves `partial` free for reuse.
#[cube]
fn cube_sum(partial: &mut SharedMemory<f32>, value: f32, unit: usize) -> f32 {
    partial[unit] = value;
    sync_cube();
    let mut stride = CUBE_DIM_X as usize / 2;
    while stride > 0 {
        if unit < stride {
            partial[unit] += partial[unit + stride];
        }
        sync_cube();
        stride /= 2;
    }
    let total = partial[0];
    // Every unit has read the total before the next sum overwrites `partial`.
    sync_cube();
    total
}

/// The normalisation kernel as a [`CubeOp`] over `[x, weight, bias]`.
#[derive(Debug, Clone, Copy)]
pub(super) struct FusedNorm {
    /// Number of segments (`batch·groups` or rows).
    pub segments: usize,
    /// Values between consecutive affine channels (spatial size, or 1 for LayerNorm).
    pub inner: usize,
    /// Length of the affine parameters.
    pub channels: usize,
    /// Added to the variance.
    pub eps: f64,
    /// Applies SiLU to the result.
    pub silu: bool,
}

impl CubeOp for FusedNorm {
    const ID: &'static str = "prompt_diffusion::norm";

    fn output(&self, inputs: &[(Shape, DType)]) -> (Shape, DType) {
        inputs[0].clone()
    }

    fn launch<R: CubeRuntime>(&self, inputs: Vec<CubeTensor<R>>) -> CubeTensor<R> {
        let [x, weight, bias]: [CubeTensor<R>; 3] = inputs.try_into().expect("x, weight, bias");
        let [x, weight, bias] = [x, weight, bias].map(into_contiguous);
        let shape = x.shape();
        let dtype = x.dtype;
        let client = x.client.clone();
        let out = empty_device_dtype::<R>(client.clone(), x.device.clone(), shape.clone(), dtype);
        let seg_len = shape.num_elements() / self.segments;

        let hardware = &client.properties().hardware;
        let max_units = (hardware.max_units_per_cube as usize)
            .min(hardware.max_cube_dim.0 as usize)
            .min(MAX_UNITS);
        let units = (seg_len / 4)
            .next_power_of_two()
            .clamp(MIN_UNITS, MAX_UNITS)
            .min(prev_power_of_two(max_units));
        let cubes_x = self.segments.min(MAX_GRID);
        let cube_count =
            CubeCount::Static(cubes_x as u32, self.segments.div_ceil(cubes_x) as u32, 1);
        norm_kernel::launch::<R>(
            &client,
            cube_count,
            CubeDim::new_1d(units as u32),
            x.into_tensor_arg(),
            weight.into_tensor_arg(),
            bias.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            self.segments as u32,
            seg_len as u32,
            self.inner as u32,
            self.channels as u32,
            self.eps as f32,
            units,
            self.silu,
            dtype.into(),
        );
        out
    }
}

/// The largest power of two not above `n` (`n ≥ 1`).
fn prev_power_of_two(n: usize) -> usize {
    1 << (usize::BITS - 1 - n.leading_zeros())
}
