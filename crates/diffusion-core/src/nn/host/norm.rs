//! GroupNorm and LayerNorm (and GroupNorm + SiLU) in one parallel pass per segment.
//!
//! The tensor-operation path takes eight passes, each allocating its output (a reshape that
//! copies a channels-last input, the mean, the centring, the square, the variance, the
//! division, the scale and the shift); this one reads each segment twice for its statistics
//! (accumulated in f64) and writes it once, in place, centring in f64.

use burn::prelude::*;
use burn::tensor::DType;
use rayon::prelude::*;

use super::{host_backend, silu, tensor, values};
use crate::nn::fused::NormLayout;

/// Normalises `x` on the host (affine transform and, with `silu`, SiLU included) when the
/// backend is a CPU one, every tensor is f32 and the layout divides `x`; gives `x` back
/// otherwise. The fused kernel's `try_norm`, with `[weight, bias]` and `(eps, silu)`.
pub(in crate::nn) fn try_norm<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    [weight, bias]: [Tensor<B, 1>; 2],
    layout: NormLayout,
    (eps, silu): (f64, bool),
) -> Result<Tensor<B, D>, Tensor<B, D>> {
    let len = x.shape().num_elements();
    let NormLayout {
        segments,
        inner,
        channels,
    } = layout;
    let eligible = host_backend::<B>()
        && [x.dtype(), weight.dtype(), bias.dtype()] == [DType::F32; 3]
        && weight.dims()[0] == channels
        && bias.dims()[0] == channels
        && segments > 0
        && inner > 0
        && len > 0
        && len.is_multiple_of(segments)
        && (len / segments).is_multiple_of(inner);
    if !eligible {
        return Err(x);
    }
    let (shape, device) = (x.dims(), x.device());
    let mut data = values(x);
    let (weight, bias) = (values(weight), values(bias));
    let segment_len = len / segments;
    data.par_chunks_mut(segment_len)
        .enumerate()
        .for_each(|(s, segment)| {
            let first = (s * segment_len / inner) % channels;
            normalise(segment, (&weight, &bias), first, inner, eps, silu);
        });
    Ok(tensor(data, shape, &device))
}

multiversion! {
    /// Normalises one segment in place: runs of `inner` values share a channel, the first run's
    /// being `first`.
    fn normalise(
        segment: &mut [f32],
        affine: (&[f32], &[f32]),
        first: usize,
        inner: usize,
        eps: f64,
        activate: bool,
    ) {
        let (weight, bias) = affine;
        let n = segment.len() as f64;
        let mean = sum_f64(segment, |x| x) / n;
        let var = sum_f64(segment, |x| (x - mean) * (x - mean)) / n;
        let rstd = 1.0 / (var + eps).sqrt();
        let channels = weight.len();
        // Centred in f64: an f32 mean would be off by half an ulp of the values themselves.
        let finish = |x: f32, scale: f64, shift: f32| {
            let y = ((f64::from(x) - mean) * scale) as f32 + shift;
            if activate { silu(y) } else { y }
        };
        if inner == 1 {
            // LayerNorm: one channel per value.
            let affine = weight.iter().zip(bias).cycle().skip(first);
            for (x, (w, b)) in segment.iter_mut().zip(affine) {
                *x = finish(*x, rstd * f64::from(*w), *b);
            }
            return;
        }
        for (run, values) in segment.chunks_exact_mut(inner).enumerate() {
            let c = (first + run) % channels;
            let scale = rstd * f64::from(weight[c]);
            for x in values.iter_mut() {
                *x = finish(*x, scale, bias[c]);
            }
        }
    }
}

/// `Σ f(x)` in f64 over eight interleaved lanes (so that it vectorises).
#[inline(always)]
fn sum_f64(values: &[f32], f: impl Fn(f64) -> f64) -> f64 {
    let mut lanes = [0f64; 8];
    let chunks = values.chunks_exact(8);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (lane, x) in lanes.iter_mut().zip(chunk) {
            *lane += f(f64::from(*x));
        }
    }
    lanes.iter().sum::<f64>() + rest.iter().map(|x| f(f64::from(*x))).sum::<f64>()
}
