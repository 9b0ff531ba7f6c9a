//! Detecting NaN and infinite values where a pipeline would otherwise turn them into an
//! all-black image.
//!
//! A NaN in a weight, in the initial latents, or an overflow of half precision (the well-known
//! black image of SD's VAE in f16) propagates through every later step, and the final clamp to
//! `[0, 255]` maps it to black. [`check_finite`] is a cheap reduction (one sum read back to the
//! host; only a non-finite sum is looked at more closely) that the pipelines run on the initial
//! latents, after every denoising step and on the decoded image, so the run fails with
//! [`Error::NonFinite`] saying where the values appeared and what to try.

use burn::prelude::*;
use burn::tensor::DType;

use crate::{Error, Result};

/// Where a tensor checked by [`check_finite`] comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    /// The latents a denoising loop starts from.
    InitialLatents,
    /// The latents after denoising step `n` (1-based).
    AfterStep(usize),
    /// The image the VAE decoded.
    VaeDecode,
    /// Anything else, described.
    Other(String),
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stage::InitialLatents => f.write_str("the initial latents"),
            Stage::AfterStep(n) => write!(f, "the latents after denoising step {n}"),
            Stage::VaeDecode => f.write_str("the VAE decode"),
            Stage::Other(what) => f.write_str(what),
        }
    }
}

/// What to try when non-finite values appear at `stage` in a tensor of `dtype`.
fn hint(stage: &Stage, dtype: DType) -> String {
    let half = matches!(dtype, DType::F16 | DType::BF16);
    match (stage, half) {
        (Stage::InitialLatents, _) => "pass finite initial latents (or, for an input image \
             encoded in half precision, run the VAE in f32 or run in f32 with --precision f32)"
            .into(),
        (Stage::VaeDecode, true) => "the VAE overflowed in half precision (the black-image \
             problem of SD's VAE in f16): run the VAE in f32 (set `force_upcast` in its \
             config) or run in f32 (--precision f32)"
            .into(),
        (_, true) => "half precision overflowed: try running in f32 (--precision f32)".into(),
        (_, false) => "the run is in f32, so the weights or inputs probably hold NaN or \
             infinite values: check the model files (a corrupted or badly converted checkpoint)"
            .into(),
    }
}

/// Fails when `tensor` holds a NaN or an infinite value.
///
/// The check sums the tensor in f32 and reads the one number back; only when the sum is not
/// finite is the tensor searched for NaN, to tell NaN from infinity in the message. `dtype`
/// is the dtype the values were computed in (it selects the advice).
///
/// # Errors
/// [`Error::NonFinite`] naming `stage` and what to try.
pub fn check_finite<B: Backend, const D: usize>(
    tensor: &Tensor<B, D>,
    stage: Stage,
    dtype: DType,
) -> Result<()> {
    let values = tensor.clone().cast(DType::F32);
    let sum = read_f32(values.clone().sum());
    if sum.is_finite() {
        return Ok(());
    }
    let has_nan = values.is_nan().any().into_data().iter::<bool>().next() == Some(true);
    let count_desc = if has_nan {
        "NaN values appeared"
    } else {
        "infinite values appeared"
    };
    Err(Error::NonFinite {
        hint: hint(&stage, dtype),
        stage: stage.to_string(),
        count_desc: count_desc.into(),
    })
}

fn read_f32<B: Backend>(x: Tensor<B, 1>) -> f32 {
    x.into_data().iter::<f32>().next().unwrap_or(f32::NAN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestBackend as B;

    #[test]
    fn finite_nan_and_inf() {
        let device = Default::default();
        let ok = Tensor::<B, 2>::from_floats([[1.0, -2.0], [3.0, 4.0]], &device);
        check_finite(&ok, Stage::VaeDecode, DType::F32).unwrap();
        let nan = Tensor::<B, 2>::from_floats([[1.0, f32::NAN], [3.0, 4.0]], &device);
        let err = check_finite(&nan, Stage::AfterStep(3), DType::F32).unwrap_err();
        assert_eq!(
            err.to_string().lines().count(),
            1,
            "one-line message: {err}"
        );
        assert!(
            err.to_string()
                .starts_with("NaN values appeared in the latents after denoising step 3"),
            "{err}"
        );
        let inf = Tensor::<B, 1>::from_floats([f32::INFINITY, 1.0], &device);
        let err = check_finite(&inf, Stage::VaeDecode, DType::F16).unwrap_err();
        assert!(matches!(err, Error::NonFinite { .. }));
        assert!(
            err.to_string()
                .contains("infinite values appeared in the VAE decode")
        );
        assert!(err.to_string().contains("f32"), "{err}");
    }
}
