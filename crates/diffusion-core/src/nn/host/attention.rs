//! Multi-head attention on the host's f32 buffers, in the `[batch, tokens, heads·d]` layout the
//! projections produce.
//!
//! burn's `module::attention` takes `[batch, heads, tokens, d]`: the heads are split by a
//! permutation that the CPU backends copy element by element, the output is permuted back the
//! same way, and burn-flex's small-sequence path runs one head after another on one thread
//! with a scalar softmax. Here each head is read in place (row stride `heads·d`), blocks of
//! query rows run in parallel, and each block walks the keys in blocks (flash-style): `gemm`
//! (the micro-kernels burn-flex's own matrix products use) computes a block of scores, a
//! vectorised pass turns them into softmax numerators against a running maximum per row
//! (rescaling the rows' earlier sums and outputs when the maximum grows), and a second `gemm`
//! adds their product with the value block to the output rows. The scores of a block stay in
//! a core's cache, where the whole `rows × tokens` matrix (2 MiB at 4 096 tokens) did not. The
//! output is written in the layout the output projection reads. The function is the same:
//! `softmax(q·kᵀ/√d)·v` with f32 accumulation, tested against burn's op.

use std::cell::RefCell;
use std::ops::Range;

use burn::prelude::*;
use rayon::prelude::*;

use super::{Out, exp, lanes_fold, tensor, values};

/// Query rows per task (each task packs a head's keys and values for its products once per
/// key block, so more rows share that work; 64–512 measured within 10 % at 4 096 tokens).
const ROWS: usize = 256;

/// Keys per block: a task's scores are `ROWS × KEYS` f32 values (512 KiB), which stay in a
/// core's L2 cache between the two products.
const KEYS: usize = 512;

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
    if out.is_empty() {
        return out;
    }
    let blocks = seq_q.div_ceil(ROWS);
    let ptr = Out(out.as_mut_ptr());
    (0..batch * heads * blocks)
        .into_par_iter()
        .for_each(|task| {
            let (bh, block) = (task / blocks, task % blocks);
            let (b, h) = (bh / heads, bh % heads);
            let rows = block * ROWS..((block + 1) * ROWS).min(seq_q);
            // Keys query `i` sees: all, or up to `i + seq_k − seq_q` (at least the first).
            let visible = |i: usize| match causal {
                true => ((i + seq_k).saturating_sub(seq_q) + 1).min(seq_k),
                false => seq_k,
            };
            let head = Head {
                q: &q[((b * seq_q + rows.start) * heads + h) * d..],
                k: &k[(b * seq_k * heads + h) * d..],
                v: &v[(b * seq_k * heads + h) * dv..],
                stride: heads * d,
                stride_v: heads * dv,
                d,
                dv,
            };
            let seen: Vec<usize> = rows.clone().map(visible).collect();
            SCRATCH.with_borrow_mut(|scratch| {
                let acc = head.rows(&seen, scratch);
                let o = (b * seq_q + rows.start) * heads * dv + h * dv;
                for (r, acc) in acc.chunks_exact(dv).enumerate() {
                    // SAFETY: this task owns output rows `rows` of head `h` of batch `b`:
                    // elements `o + r·heads·dv + 0..dv`, which no other task writes; they lie
                    // inside `out`.
                    let dst =
                        unsafe { std::slice::from_raw_parts_mut(ptr.add(o + r * heads * dv), dv) };
                    dst.copy_from_slice(acc);
                }
            });
        });
    out
}

thread_local! {
    /// A task's scores, accumulator, running maxima and sums, kept between calls so that their
    /// pages are not faulted in again.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

multiversion! {
    /// Turns a block of scores (`keys` of every row; row `r` sees the first `visible[r]` keys
    /// of all) into softmax numerators against each row's running maximum, zeroing the keys a
    /// row does not see, adds them to the rows' sums and rescales the rows' sums and
    /// accumulated outputs (`acc`, `[rows, dv]`) when a maximum grows.
    fn numerators(
        scores: &mut [f32],
        keys: Range<usize>,
        visible: &[usize],
        max: &mut [f32],
        sum: &mut [f32],
        acc: &mut [f32],
    ) {
        let dv = acc.len() / visible.len();
        for (r, row) in scores.chunks_exact_mut(keys.len()).enumerate() {
            let seen = visible[r].saturating_sub(keys.start).min(keys.len());
            let (live, masked) = row.split_at_mut(seen);
            masked.fill(0.0);
            if live.is_empty() {
                continue;
            }
            let new_max = lanes_fold(live, max[r], f32::max);
            // The first block has no earlier terms to rescale (−∞ would stay −∞).
            let rescale = match max[r] == f32::NEG_INFINITY {
                true => 0.0,
                false => exp(max[r] - new_max),
            };
            live.iter_mut().for_each(|x| *x = exp(*x - new_max));
            sum[r] = sum[r] * rescale + lanes_fold(live, 0.0, |a, b| a + b);
            max[r] = new_max;
            if keys.start > 0 && rescale != 1.0 {
                acc[r * dv..(r + 1) * dv].iter_mut().for_each(|x| *x *= rescale);
            }
        }
    }
}

/// One head of one batch entry, from a block's first query row on: rows of `q` and `k` are
/// `stride` apart, rows of `v` `stride_v`.
struct Head<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    stride: usize,
    stride_v: usize,
    d: usize,
    dv: usize,
}

impl Head<'_> {
    /// The attention of `visible.len()` query rows, row `r` seeing the first `visible[r]`
    /// keys, as `[rows, dv]` values in `scratch`: keys in blocks of [`KEYS`], with a running
    /// maximum and sum per row, so that the scores stay in cache.
    fn rows<'s>(&self, visible: &[usize], scratch: &'s mut Vec<f32>) -> &'s [f32] {
        let (n, dv) = (visible.len(), self.dv);
        let keys = visible.iter().copied().max().unwrap_or(0);
        let need = n * KEYS + n * dv + 2 * n;
        if scratch.len() < need {
            scratch.resize(need, 0.0);
        }
        let (scores, rest) = scratch.split_at_mut(n * KEYS);
        let (acc, rest) = rest.split_at_mut(n * dv);
        let (max, rest) = rest.split_at_mut(n);
        let sum = &mut rest[..n];
        max.fill(f32::NEG_INFINITY);
        sum.fill(0.0);
        let scale = 1.0 / (self.d as f32).sqrt();
        for start in (0..keys).step_by(KEYS) {
            let len = KEYS.min(keys - start);
            let scores = &mut scores[..n * len];
            self.scores(n, start, len, scale, scores);
            numerators(scores, start..start + len, visible, max, sum, acc);
            self.accumulate(n, start, len, scores, acc, start > 0);
        }
        for (row, sum) in acc.chunks_exact_mut(dv).zip(sum.iter()) {
            let inv = 1.0 / sum;
            row.iter_mut().for_each(|x| *x *= inv);
        }
        acc
    }

    /// `scores[n, len] = scale · q[..n] · k[start..start + len]ᵀ`.
    fn scores(&self, n: usize, start: usize, len: usize, scale: f32, scores: &mut [f32]) {
        assert!(self.q.len() >= (n - 1) * self.stride + self.d, "query rows");
        assert!(
            self.k.len() >= (start + len - 1) * self.stride + self.d,
            "key rows"
        );
        // SAFETY: the asserts above keep every index inside `q` and `k`; `scores` holds `n·len`.
        unsafe {
            gemm::gemm(
                n,
                len,
                self.d,
                scores.as_mut_ptr(),
                1,
                len as isize,
                false,
                self.q.as_ptr(),
                1,
                self.stride as isize,
                self.k.as_ptr().add(start * self.stride),
                self.stride as isize,
                1,
                0.0,
                scale,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    }

    /// `acc[n, dv] (+)= weights[n, len] · v[start..start + len]`.
    fn accumulate(
        &self,
        n: usize,
        start: usize,
        len: usize,
        weights: &[f32],
        acc: &mut [f32],
        add: bool,
    ) {
        let dv = self.dv;
        assert!(
            self.v.len() >= (start + len - 1) * self.stride_v + dv,
            "value rows"
        );
        assert!(
            weights.len() >= n * len && acc.len() >= n * dv,
            "block sizes"
        );
        // SAFETY: the asserts above keep every index inside `v`, `weights` and `acc`.
        unsafe {
            gemm::gemm(
                n,
                dv,
                len,
                acc.as_mut_ptr(),
                1,
                dv as isize,
                add,
                weights.as_ptr(),
                1,
                len as isize,
                self.v.as_ptr().add(start * self.stride_v),
                1,
                self.stride_v as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    }
}
