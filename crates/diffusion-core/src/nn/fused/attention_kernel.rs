//! The CubeCL flash-attention kernel.
//!
//! One cube computes `CUBE_DIM_X` consecutive query rows of one `batch·head`; each unit owns one
//! query row, held (pre-scaled by `1/√d`) in registers next to its f32 output accumulator. The
//! cube walks the keys in tiles of `block_k` rows: the units copy the key and value tile into
//! shared memory (as f32, coalesced), then each unit scores its query against the tile's keys
//! one by one with an online softmax (running maximum `m`, running sum `l`; the accumulator is
//! rescaled only when `m` grows). Scores never leave registers; the output is divided by `l` and
//! written once in the input dtype.
//!
//! Tensors are addressed through their strides, so `q`, `k`, `v` and `out` may be views such as
//! `[batch, seq, heads, head_dim]` with the middle dimensions swapped (the layout attention
//! layers produce and consume); only the head dimension must be contiguous.
//!
//! Loops over the head dimension are unrolled (`head_dim` is a compile-time value, one compiled
//! kernel per head dimension), so the per-unit arrays stay in registers; the loop over keys is
//! not, which keeps the shader small (and quick to compile on software Vulkan).

use burn::tensor::{DType, Shape, TensorMetadata};
use burn_cubecl::CubeRuntime;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

use super::dispatch::CubeOp;

/// Units (query rows) per cube.
const UNITS_PER_CUBE: u32 = 64;
/// Keys per shared-memory tile, halved until two f32 tiles fit the device's shared memory.
const BLOCK_K: usize = 16;

/// Stands for −∞ in the running maximum: WGSL has no infinite literals, and every real score
/// is larger, so the first key's correction factor `exp(m − s)` is 0.
const NEG_BIG: f32 = -3.0e38;

/// `out = softmax(q·kᵀ·scale)·v` for `[batch, heads, seq, head_dim]` tensors whose last
/// dimension has stride 1.
///
/// Launch with `CubeCount(⌈seq_q / CUBE_DIM_X⌉, batch·heads, 1)` and a one-dimensional cube.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn flash_attention_kernel<F: Float>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    out: &mut Tensor<F>,
    seq_q: u32,
    seq_k: u32,
    scale: f32,
    #[comptime] head_dim: usize,
    #[comptime] block_k: usize,
    #[define(F)] _dtype: StorageType,
) {
    let units = CUBE_DIM_X as usize;
    let unit = UNIT_POS_X as usize;
    let seq_q = seq_q as usize;
    let seq_k = seq_k as usize;
    let heads = q.shape(1);
    let batch = CUBE_POS_Y as usize / heads;
    let head = CUBE_POS_Y as usize % heads;
    let row = CUBE_POS_X as usize * units + unit;
    let row_valid = row < seq_q;
    // Rows past the end still take part in the tile loads and barriers; they read row 0.
    let mut q_row = 0usize;
    if row_valid {
        q_row = row;
    }
    let q_base = batch * q.stride(0) + head * q.stride(1) + q_row * q.stride(2);
    let k_base = batch * k.stride(0) + head * k.stride(1);
    let v_base = batch * v.stride(0) + head * v.stride(1);
    let (k_row, v_row) = (k.stride(2), v.stride(2));

    let mut q_reg = Array::<f32>::new(head_dim);
    let mut acc = Array::<f32>::new(head_dim);
    #[unroll]
    for c in 0..head_dim {
        q_reg[c] = f32::cast_from(q[q_base + c]) * scale;
        acc[c] = 0.0;
    }

    let tile_len = block_k * head_dim;
    let mut k_tile = SharedMemory::<f32>::new(tile_len);
    let mut v_tile = SharedMemory::<f32>::new(tile_len);
    let mut m = f32::new(NEG_BIG);
    let mut l = 0.0f32;

    let mut start = 0usize;
    while start < seq_k {
        // Stage the tile; positions past the last key are zeroed (and never read).
        let mut i = unit;
        while i < tile_len {
            let key = start + i / head_dim;
            let c = i % head_dim;
            if key < seq_k {
                k_tile[i] = f32::cast_from(k[k_base + key * k_row + c]);
                v_tile[i] = f32::cast_from(v[v_base + key * v_row + c]);
            } else {
                k_tile[i] = 0.0;
                v_tile[i] = 0.0;
            }
            i += units;
        }
        sync_cube();

        // Online softmax one key at a time: the accumulator is rescaled only when the running
        // maximum grows, which after the first keys is rare.
        let tile_keys = min(seq_k - start, block_k);
        for j in 0..tile_keys {
            let mut s = 0.0f32;
            #[unroll]
            for c in 0..head_dim {
                s += q_reg[c] * k_tile[j * head_dim + c];
            }
            if s > m {
                let correction = (m - s).exp();
                l *= correction;
                #[unroll]
                for c in 0..head_dim {
                    acc[c] *= correction;
                }
                m = s;
            }
            let p = (s - m).exp();
            l += p;
            #[unroll]
            for c in 0..head_dim {
                acc[c] += p * v_tile[j * head_dim + c];
            }
        }

        // Every unit is done with the tile before the next one overwrites it.
        sync_cube();
        start += block_k;
    }

    if row_valid {
        let inv = 1.0f32 / l;
        let out_base = batch * out.stride(0) + head * out.stride(1) + row * out.stride(2);
        #[unroll]
        for c in 0..head_dim {
            out[out_base + c] = F::cast_from(acc[c] * inv);
        }
    }
}

/// The attention kernel as a [`CubeOp`] over `[q, k, v]`.
#[derive(Debug, Clone, Copy)]
pub(super) struct FlashAttention;

impl CubeOp for FlashAttention {
    const ID: &'static str = "prompt_diffusion::flash_attention";

    fn output(&self, inputs: &[(Shape, DType)]) -> (Shape, DType) {
        let (q, dtype) = &inputs[0];
        let head_dim_v = inputs[2].0[3];
        (Shape::new([q[0], q[1], q[2], head_dim_v]), *dtype)
    }

    fn launch<R: CubeRuntime>(&self, inputs: Vec<CubeTensor<R>>) -> CubeTensor<R> {
        let [q, k, v]: [CubeTensor<R>; 3] = inputs.try_into().expect("q, k and v");
        flash_attention(q, k, v)
    }
}

/// Launches the kernel on `[batch, heads, seq, head_dim]` tensors. Strided views are read in
/// place (only a head dimension with a stride other than 1 is copied first); the output is a
/// `[batch, heads, seq, head_dim]` view of a contiguous `[batch, seq, heads, head_dim]` buffer,
/// the layout attention layers merge the heads from without a copy.
fn flash_attention<R: CubeRuntime>(
    q: CubeTensor<R>,
    k: CubeTensor<R>,
    v: CubeTensor<R>,
) -> CubeTensor<R> {
    let [q, k, v] = [q, k, v].map(rows_contiguous);
    let [batch, heads, seq_q, head_dim] = q.shape().dims::<4>();
    let seq_k = k.shape()[2];
    let dtype = q.dtype;
    let client = q.client.clone();
    let mut out = empty_device_dtype::<R>(
        client.clone(),
        q.device.clone(),
        Shape::new([batch, seq_q, heads, head_dim]),
        dtype,
    );
    out.meta.swap(1, 2);

    let hardware = &client.properties().hardware;
    let units = UNITS_PER_CUBE
        .min(hardware.max_units_per_cube)
        .min(hardware.max_cube_dim.0);
    let mut block_k = BLOCK_K;
    while block_k > 1 && 2 * block_k * head_dim * size_of::<f32>() > hardware.max_shared_memory_size
    {
        block_k /= 2;
    }
    let cube_count = CubeCount::Static(
        seq_q.div_ceil(units as usize) as u32,
        (batch * heads) as u32,
        1,
    );
    flash_attention_kernel::launch::<R>(
        &client,
        cube_count,
        CubeDim::new_1d(units),
        q.into_tensor_arg(),
        k.into_tensor_arg(),
        v.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        seq_q as u32,
        seq_k as u32,
        (1.0 / (head_dim as f64).sqrt()) as f32,
        head_dim,
        block_k,
        dtype.into(),
    );
    out
}

/// `tensor` itself when its last dimension is contiguous, else a contiguous copy.
fn rows_contiguous<R: CubeRuntime>(tensor: CubeTensor<R>) -> CubeTensor<R> {
    let rows = tensor.meta.strides()[3] == 1 || tensor.meta.shape()[3] == 1;
    if rows {
        tensor
    } else {
        into_contiguous(tensor)
    }
}
