//! GEGLU's gating in one parallel pass: `value · gelu(gate)` row by row, without the two
//! strided slices and the three passes of the tensor operations.

use burn::prelude::*;
use burn::tensor::DType;
use rayon::prelude::*;

use super::{exp, host_backend, tensor, values};

/// Rows per task.
const ROWS: usize = 64;

/// [`geglu`](crate::nn::geglu) on the host when the backend is a CPU one and `h` is f32 with
/// an even last dimension; gives `h` back otherwise.
pub(in crate::nn) fn try_geglu<B: Backend, const D: usize>(
    h: Tensor<B, D>,
) -> Result<Tensor<B, D>, Tensor<B, D>> {
    let mut shape = h.dims();
    let two_inner = shape[D - 1];
    let eligible = host_backend::<B>()
        && h.dtype() == DType::F32
        && two_inner > 0
        && two_inner.is_multiple_of(2)
        && h.shape().num_elements() > 0;
    if !eligible {
        return Err(h);
    }
    let inner = two_inner / 2;
    shape[D - 1] = inner;
    let device = h.device();
    let input = values(h);
    let mut out = vec![0f32; input.len() / 2];
    out.par_chunks_mut(ROWS * inner)
        .zip(input.par_chunks(ROWS * two_inner))
        .for_each(|(out, input)| gate_rows(out, input, inner));
    Ok(tensor(out, shape, &device))
}

multiversion! {
    /// `value · gelu(gate)` for rows of `inner` outputs from rows of `[value, gate]` inputs.
    fn gate_rows(out: &mut [f32], input: &[f32], inner: usize) {
        for (out, row) in out.chunks_exact_mut(inner).zip(input.chunks_exact(2 * inner)) {
            let (value, gate) = row.split_at(inner);
            for ((o, v), g) in out.iter_mut().zip(value).zip(gate) {
                *o = v * gelu(*g);
            }
        }
    }
}

/// The exact GELU, `x · Φ(x) = ½x(1 + erf(x/√2))`.
#[inline(always)]
fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// `erf(x)` within 2.5e-7: its Taylor series below 0.5 in magnitude, Abramowitz and Stegun's
/// 7.1.26 (1.5e-7) above, both computed and one selected so that loops over it vectorise.
#[inline(always)]
fn erf(x: f32) -> f32 {
    let a = x.abs();
    let x2 = x * x;
    // 2/√π · Σ (−1)ⁿ x²ⁿ⁺¹ / (n!·(2n + 1)), n ≤ 6: truncated below 1e-9 for |x| < 0.5.
    let series = x
        * (std::f32::consts::FRAC_2_SQRT_PI
            + x2 * (-0.376_126_4
                + x2 * (0.112_837_92
                    + x2 * (-0.026_866_17
                        + x2 * (5.223_977_6e-3 + x2 * (-8.548_327e-4 + x2 * 1.205_533_5e-4))))));
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_8 + t * (-1.453_152 + t * 1.061_405_4))));
    let tail = 1.0 - poly * exp(-x2);
    let tail = if x < 0.0 { -tail } else { tail };
    if a < 0.5 { series } else { tail }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// erf by its Taylor series in f64 (|x| ≤ 3 here, where 80 terms are exact to f64).
    fn erf_series(x: f64) -> f64 {
        let (mut term, mut sum) = (x, x);
        for n in 1..80 {
            term *= -x * x / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn erf_is_within_its_bound() {
        for i in -3000..=3000 {
            let x = i as f32 * 1e-3;
            let error = (f64::from(erf(x)) - erf_series(f64::from(x))).abs();
            assert!(error < 2.5e-7, "erf({x}): {error}");
        }
        assert_eq!(erf(20.0), 1.0);
        assert_eq!(erf(-20.0), -1.0);
        assert!(erf(f32::NAN).is_nan());
    }
}
