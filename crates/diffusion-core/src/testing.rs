//! Helpers for parity tests: comparing tensors with reference outputs.

use burn::prelude::*;
use burn::tensor::DType;

/// The largest absolute elementwise difference between two tensors of the same shape.
///
/// # Panics
/// When the shapes differ (a test failure).
pub fn max_abs_diff<B: Backend, const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    (a.cast(DType::F32) - b.cast(DType::F32))
        .abs()
        .max()
        .into_scalar()
        .elem::<f32>()
}

/// Asserts that `actual` is within `tol` (max-abs) of `expected`, printing the difference.
///
/// # Panics
/// When the shapes differ or the difference exceeds `tol`, or is NaN.
pub fn assert_close<B: Backend, const D: usize>(
    what: &str,
    actual: Tensor<B, D>,
    expected: Tensor<B, D>,
    tol: f32,
) {
    let diff = max_abs_diff(actual, expected);
    eprintln!("{what}: max abs difference {diff:e} (tolerance {tol:e})");
    assert!(
        diff <= tol,
        "{what}: max abs difference {diff:e} exceeds {tol:e}"
    );
}
