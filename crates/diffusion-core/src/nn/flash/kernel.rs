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

use cubecl::prelude::*;

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
