//! Multi-head attention on the host's f32 buffers, in the `[batch, tokens, heads·d]` layout the
//! projections produce.
//!
//! burn's `module::attention` takes `[batch, heads, tokens, d]`: the heads are split by a
//! permutation that the CPU backends copy element by element, the output is permuted back the
//! same way, and burn-flex's small-sequence path runs one head after another on one thread
//! with a scalar softmax. Here each head is read in place (row stride `heads·d`), blocks of
//! query rows run in parallel, scores are computed by `gemm` (the micro-kernels burn-flex's own
//! matrix products use), the softmax is vectorised, and the output is written in the layout the
//! output projection reads. The function is the same: `softmax(q·kᵀ/√d)·v` with f32
//! accumulation, tested against burn's op.

use burn::prelude::*;
use rayon::prelude::*;

use super::{Out, exp, lanes_fold, tensor, values};

/// Query rows per task: the score block is `ROWS × tokens` f32 values.
const ROWS: usize = 128;

/// The sizes of one call.
#[derive(Debug, Clone, Copy)]
struct Dims {
    batch: usize,
    heads: usize,
    seq_q: usize,
    seq_k: usize,
    /// Query/key width per head.
    d: usize,
    /// Value width per head.
    dv: usize,
}

/// `softmax(q·kᵀ/√d)·v` per head on f32 host buffers.
///
/// # Shapes
/// `q: [batch, seq_q, heads·d]`, `k: [batch, seq_k, heads·d]`, `v: [batch, seq_k, heads·d_v]`
/// → `[batch, seq_q, heads·d_v]`; `causal` masks key `j` for query `i` when
/// `j > i + seq_k − seq_q`.
pub(in crate::nn) fn attention<B: Backend>(
    [q, k, v]: [Tensor<B, 3>; 3],
    heads: usize,
    causal: bool,
) -> Tensor<B, 3> {
    let device = q.device();
    let ([batch, seq_q, inner], [_, seq_k, inner_v]) = (q.dims(), v.dims());
    let dims = Dims {
        batch,
        heads,
        seq_q,
        seq_k,
        d: inner / heads,
        dv: inner_v / heads,
    };
    let out = compute(&values(q), &values(k), &values(v), dims, causal);
    tensor(out, [batch, seq_q, inner_v], &device)
}

/// The attention of host buffers (see [`attention`]).
fn compute(q: &[f32], k: &[f32], v: &[f32], dims: Dims, causal: bool) -> Vec<f32> {
    let Dims {
        batch,
        heads,
        seq_q,
        seq_k,
        d,
        dv,
    } = dims;
    assert_eq!(q.len(), batch * seq_q * heads * d, "query size");
    assert_eq!(k.len(), batch * seq_k * heads * d, "key size");
    assert_eq!(v.len(), batch * seq_k * heads * dv, "value size");
    let mut out = vec![0f32; batch * seq_q * heads * dv];
    let blocks = seq_q.div_ceil(ROWS);
    let ptr = Out(out.as_mut_ptr());
    (0..batch * heads * blocks)
        .into_par_iter()
        .for_each(|task| {
            let (bh, block) = (task / blocks, task % blocks);
            let (b, h) = (bh / heads, bh % heads);
            let rows = block * ROWS..((block + 1) * ROWS).min(seq_q);
            let mut scores = vec![0f32; rows.len() * seq_k];
            let q = &q[((b * seq_q + rows.start) * heads + h) * d..];
            let k = &k[(b * seq_k * heads + h) * d..];
            let v = &v[(b * seq_k * heads + h) * dv..];
            let scale = 1.0 / (d as f32).sqrt();
            // scores = scale · q_rows · kᵀ; rows of q and k are `heads·d` apart.
            // SAFETY: every index stays inside the head's rows of the checked buffers.
            unsafe {
                gemm::gemm(
                    rows.len(),
                    seq_k,
                    d,
                    scores.as_mut_ptr(),
                    1,
                    seq_k as isize,
                    false,
                    q.as_ptr(),
                    1,
                    (heads * d) as isize,
                    k.as_ptr(),
                    (heads * d) as isize,
                    1,
                    0.0,
                    scale,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
            let mut inv_sums = Vec::with_capacity(rows.len());
            for (r, row) in scores.chunks_exact_mut(seq_k).enumerate() {
                let keys = match causal {
                    true => (rows.start + r + seq_k).saturating_sub(seq_q) + 1,
                    false => seq_k,
                };
                let keys = keys.min(seq_k);
                row[keys..].fill(0.0);
                inv_sums.push(1.0 / softmax_numerators(&mut row[..keys]));
            }
            let o = (b * seq_q + rows.start) * heads * dv + h * dv;
            // SAFETY: this task owns output rows `rows` of head `h` of batch `b`: elements
            // `o + r·heads·dv + 0..dv`, which no other task writes; they lie inside `out`.
            unsafe {
                let dst = ptr.add(o);
                gemm::gemm(
                    rows.len(),
                    dv,
                    seq_k,
                    dst,
                    1,
                    (heads * dv) as isize,
                    false,
                    scores.as_ptr(),
                    1,
                    seq_k as isize,
                    v.as_ptr(),
                    1,
                    (heads * dv) as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
                for (r, inv) in inv_sums.iter().enumerate() {
                    let row = std::slice::from_raw_parts_mut(dst.add(r * heads * dv), dv);
                    row.iter_mut().for_each(|x| *x *= inv);
                }
            }
        });
    out
}

/// Replaces `row` by `exp(row − max(row))` and returns its sum (at least 1, from the maximum).
fn softmax_numerators(row: &mut [f32]) -> f32 {
    let max = lanes_fold(row, f32::NEG_INFINITY, f32::max);
    row.iter_mut().for_each(|x| *x = exp(*x - max));
    lanes_fold(row, 0.0, |a, b| a + b)
}
