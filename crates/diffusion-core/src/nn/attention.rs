//! The one scaled-dot-product attention entry point of the workspace.
//!
//! UNet, VAE, CLIP and the ControlNets all call [`attention`], so a faster kernel replaces
//! it in one place. It delegates to `burn::tensor::module::attention` (flash kernels where
//! the backend has them, the materialised reference otherwise) with the default scale
//! `1/√head_dim`; half-precision inputs are computed in f32 and cast back, so the softmax never
//! runs in f16.

use burn::prelude::*;
use burn::tensor::DType;
use burn::tensor::module;
use burn::tensor::ops::AttentionModuleOptions;

/// Options of [`attention`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AttentionOptions {
    /// Masks keys after the query position (CLIP's text encoder).
    pub causal: bool,
}

impl AttentionOptions {
    /// Causal self-attention.
    pub fn causal() -> Self {
        Self { causal: true }
    }
}

/// `softmax(q·kᵀ/√d)·v` per batch and head.
///
/// # Shapes
/// `q: [batch, heads, seq_q, d]`, `k: [batch, heads, seq_k, d]`, `v: [batch, heads, seq_k, d_v]`
/// → `[batch, heads, seq_q, d_v]`.
pub fn attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    options: AttentionOptions,
) -> Tensor<B, 4> {
    let dtype = q.dtype();
    let opts = AttentionModuleOptions {
        scale: None,
        softcap: None,
        is_causal: options.causal,
    };
    if dtype == DType::F32 || dtype == DType::F64 {
        return module::attention(q, k, v, None, None, opts);
    }
    let out = module::attention(
        q.cast(DType::F32),
        k.cast(DType::F32),
        v.cast(DType::F32),
        None,
        None,
        opts,
    );
    out.cast(dtype)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn_ndarray::NdArray;

    type B = NdArray<f32>;

    #[test]
    fn causal_first_row_sees_only_itself() {
        let device = Default::default();
        let q = Tensor::<B, 4>::from_floats([[[[1.0, 0.0], [0.0, 1.0]]]], &device);
        let v = Tensor::<B, 4>::from_floats([[[[1.0, 2.0], [3.0, 4.0]]]], &device);
        let out = attention(q.clone(), q.clone(), v.clone(), AttentionOptions::causal());
        let out: Vec<f32> = out.into_data().to_vec().unwrap();
        assert_eq!(&out[..2], &[1.0, 2.0]);
        // Full attention of row 0: weights softmax([1, 0]/√2).
        let full: Vec<f32> = attention(q.clone(), q, v, AttentionOptions::default())
            .into_data()
            .to_vec()
            .unwrap();
        let w0 = 1.0 / (1.0 + (-1.0f32 / 2f32.sqrt()).exp());
        assert!((full[0] - (w0 * 1.0 + (1.0 - w0) * 3.0)).abs() < 1e-6);
    }
}
