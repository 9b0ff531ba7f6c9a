//! Kernels on the host's f32 buffers for the CPU backends (burn-ndarray, and burn-flex with the
//! crate feature `flex`).
//!
//! The CPU backends run each tensor operation as its own pass over memory, allocating its
//! output, and copy permuted tensors element by element. Where a layer is a chain of such
//! passes — the heads of an attention split apart, a softmax, merged back; a norm's mean,
//! centring, variance, scaling, shift and activation; GEGLU's slices, GELU and product — these
//! kernels read the input once, compute the same function in one or two passes per segment, in
//! parallel, and hand back one contiguous tensor. They take f32 inputs only; other dtypes,
//! other backends and autodiff take the tensor-operation path.

/// Defines `fn $name` whose body is compiled three times — for AVX-512F, for AVX2 and for the
/// baseline target — and run in the widest form the CPU has (detected at run time, cached by
/// the standard library). The crates build for baseline x86-64, whose 4-lane SSE2 vectors
/// would otherwise run the element-wise loops of these kernels (exponentials, norms); the
/// result is the same in every form, since without fast-math the compiler keeps the order of
/// every operation and contracts no product into a fused multiply-add.
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                fn avx512($($arg: $ty),*) $(-> $ret)? { body($($arg),*) }
                #[target_feature(enable = "avx2")]
                fn avx2($($arg: $ty),*) $(-> $ret)? { body($($arg),*) }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has AVX-512F.
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU has AVX2.
                    return unsafe { avx2($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}

mod activation;
mod attention;
mod conv;
mod norm;
mod winograd;

use std::any::{Any, TypeId};

use burn::prelude::*;
use burn::tensor::{DType, TensorData};

pub(super) use activation::try_geglu;
pub(super) use attention::attention;
pub(super) use conv::try_conv2d;
#[cfg(test)]
pub(super) use conv::try_conv2d_tiled;
pub(super) use norm::try_norm;

/// Whether `B` is a CPU backend whose float tensors these kernels read (burn-ndarray, and
/// burn-flex with the `flex` feature).
pub(super) fn host_backend<B: Backend>() -> bool {
    let id = TypeId::of::<B::FloatTensorPrimitive>();
    #[cfg(feature = "flex")]
    if id == TypeId::of::<burn_flex::FlexTensor>() {
        return true;
    }
    id == TypeId::of::<burn_ndarray::NdArrayTensor>()
}

/// The values of an f32 tensor, in row-major order.
fn values<B: Backend, const D: usize>(x: Tensor<B, D>) -> Vec<f32> {
    x.into_data()
        .into_vec::<f32>()
        .expect("the host kernels take f32 tensors")
}

/// Calls `f` with the values of an f32 tensor in row-major order: in place where the backend
/// holds them contiguously (a weight is not copied at every call), else a copy.
fn with_values<B: Backend, const D: usize, R>(x: &Tensor<B, D>, f: impl FnOnce(&[f32]) -> R) -> R {
    let primitive = x.clone().into_primitive().tensor();
    let primitive: &dyn Any = &primitive;
    #[cfg(feature = "flex")]
    if let Some(slice) = primitive
        .downcast_ref::<burn_flex::FlexTensor>()
        .and_then(|t| t.as_slice::<f32>())
    {
        return f(slice);
    }
    if let Some(burn_ndarray::NdArrayTensor::F32(storage)) =
        primitive.downcast_ref::<burn_ndarray::NdArrayTensor>()
        && let Some(slice) = storage.view().to_slice()
    {
        return f(slice);
    }
    f(&values(x.clone()))
}

/// An f32 tensor of `values`.
fn tensor<B: Backend, const D: usize>(
    values: Vec<f32>,
    shape: [usize; D],
    device: &B::Device,
) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(values, shape), (device, DType::F32))
}

/// A raw pointer to an output buffer handed to parallel tasks, each of which writes elements
/// no other task writes.
#[derive(Clone, Copy)]
pub(super) struct Out(*mut f32);

// SAFETY: every user's tasks write disjoint elements of the buffer (see each use).
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl Out {
    /// The pointer `offset` elements further (a method, so that closures capture the `Out`).
    ///
    /// # Safety
    /// As [`pointer::add`].
    pub(super) unsafe fn add(self, offset: usize) -> *mut f32 {
        // SAFETY: forwarded to the caller.
        unsafe { self.0.add(offset) }
    }
}

/// `x·σ(x)` through [`exp`] of a non-positive argument, so that loops over it vectorise.
#[inline(always)]
fn silu(x: f32) -> f32 {
    let e = exp(-x.abs());
    let sigmoid = if x >= 0.0 {
        1.0 / (1.0 + e)
    } else {
        e / (1.0 + e)
    };
    x * sigmoid
}

/// A fold over eight interleaved lanes (so that it vectorises), then over the lanes.
#[inline(always)]
pub(super) fn lanes_fold(values: &[f32], init: f32, f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut lanes = [init; 8];
    let chunks = values.chunks_exact(8);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (lane, x) in lanes.iter_mut().zip(chunk) {
            *lane = f(*lane, *x);
        }
    }
    let lanes = lanes.into_iter().fold(init, &f);
    rest.iter().fold(lanes, |a, x| f(a, *x))
}

/// `eˣ` for `x ≤ 0` (Cephes' `expf`: a polynomial after reducing by `ln 2`), within 2 ulp,
/// written without calls so that loops over it vectorise. Underflows to 0 below −87.
#[inline(always)]
pub(super) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // Adding 1.5·2²³ rounds to an integer held in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    // A comparison rather than `max`, so that NaN stays NaN.
    let x = if x < -87.0 { -87.0 } else { x };
    // Plain products and sums: `mul_add` is a library call where FMA is not a target feature.
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    // ln 2 in two parts: 355/512 (exact in f32, so `n · 355/512` is exact) and the rest.
    let r = x - n * (355.0 / 512.0) + n * 2.121_944_4e-4;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 0.166_666_65)
        * r
        + 0.5;
    let y = p * (r * r) + r + 1.0;
    // 2ⁿ from the exponent bits: n = t's mantissa integer, in [−126, 0].
    let bits = (t.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    y * f32::from_bits(((bits + 127) as u32) << 23)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulp_of_std() {
        for i in 0..=870_000 {
            let x = -(i as f32) * 1e-4;
            let (ours, std) = (exp(x), x.exp());
            let ulp = (std.to_bits() as i64 - ours.to_bits() as i64).abs();
            assert!(
                ulp <= 2 || std < f32::MIN_POSITIVE,
                "exp({x}): {ours} vs {std}"
            );
        }
        assert_eq!(exp(-1000.0), exp(-87.0));
        assert!(exp(f32::NAN).is_nan());
    }

    #[test]
    fn silu_matches_its_definition() {
        for i in -2000..=2000 {
            let x = i as f32 * 0.01;
            let expected = x / (1.0 + (-x).exp());
            assert!(
                (silu(x) - expected).abs() <= 2e-7 * (1.0 + x.abs()),
                "silu({x})"
            );
        }
        assert!(silu(f32::NAN).is_nan());
    }

    #[test]
    fn lanes_fold_covers_every_value() {
        let values: Vec<f32> = (0..21).map(|i| i as f32).collect();
        assert_eq!(lanes_fold(&values, 0.0, |a, b| a + b), 210.0);
        assert_eq!(lanes_fold(&values, f32::NEG_INFINITY, f32::max), 20.0);
        assert_eq!(lanes_fold(&[], 0.0, |a, b| a + b), 0.0);
    }
}
