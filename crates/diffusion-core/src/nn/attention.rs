//! The one scaled-dot-product attention entry point of the workspace.
//!
//! UNet, VAE, CLIP and the ControlNets all call [`attention`], so a faster kernel replaces
//! it in one place. Two paths, chosen per call at run time:
//!
//! * **Fused kernel** (crate features `wgpu` / `cuda`): on burn-wgpu and burn-cuda — the plain
//!   `CubeBackend` and the fusion-wrapped `burn_wgpu::Wgpu` / `burn_cuda::Cuda` — a flash-style
//!   CubeCL kernel (online softmax, scores never materialised, f32 accumulation, output in the
//!   input dtype) handles non-causal f32/f16/bf16 attention with equal query/key/value head
//!   dimensions up to [`FUSED_ATTENTION_MAX_HEAD_DIM`] (SD's 40, 64, 80, 160; CLIP-vision's 64)
//!   and any sequence lengths. [`fused_attention_available`] says whether a backend has it,
//!   [`fused_attention_launches`] counts the calls it served.
//! * **Host kernel** (burn-ndarray, and burn-flex with the crate feature `flex`): f32
//!   [`multi_head_attention`] reads each head in place from the projections' `[batch, tokens,
//!   heads·d]` layout, runs blocks of query rows in parallel, walks the keys in blocks with a
//!   running softmax maximum (`gemm` products, a vectorised exponential), and writes the output in the same layout, so the CPU backends never
//!   copy the heads apart and back (`host/attention.rs`).
//! * **Reference**: everything else — other backends (autodiff included), causal masks
//!   (CLIP's text encoder, Optimus), head dimensions above 256 (the VAE's 512-channel
//!   single-head attention) — runs `burn::tensor::module::attention` with the default scale
//!   `1/√head_dim`; half-precision inputs are computed in f32 and cast back, so the softmax never
//!   runs in f16.
//!
//! Every path computes the same function; the fused kernel is tested against the reference on
//! wgpu (`tests/fused_kernels_wgpu/attention.rs`, ≤ 1e-4 in f32 and ≤ 2e-3 in f16), the host
//! kernel on ndarray (below, ≤ 1e-5).

use burn::prelude::*;
use burn::tensor::DType;
use burn::tensor::module;
use burn::tensor::ops::AttentionModuleOptions;

pub use super::fused::{
    FUSED_ATTENTION_MAX_HEAD_DIM, fused_attention_available, fused_attention_launches,
};

/// Options of [`attention`].
///
/// Causal attention always takes the reference path (burn's op), not the fused kernel.
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
///
/// Runs the fused kernel when the backend and the inputs qualify (see the module docs) and
/// burn's `module::attention` otherwise.
pub fn attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    options: AttentionOptions,
) -> Tensor<B, 4> {
    match super::fused::try_attention(q, k, v, options.causal) {
        Ok(out) => out,
        Err((q, k, v)) => reference_attention(q, k, v, options),
    }
}

/// Multi-head attention of projected tokens: splits `heads` heads, runs [`attention`] and
/// merges the heads back — or, on the CPU backends in f32, the host kernel, which does all
/// three without moving the heads apart (see the module docs).
///
/// # Shapes
/// `q: [batch, seq_q, heads·d]`, `k: [batch, seq_k, heads·d]`, `v: [batch, seq_k, heads·d_v]`
/// → `[batch, seq_q, heads·d_v]`.
pub fn multi_head_attention<B: Backend>(
    q: Tensor<B, 3>,
    k: Tensor<B, 3>,
    v: Tensor<B, 3>,
    heads: usize,
    options: AttentionOptions,
) -> Tensor<B, 3> {
    let f32_inputs = [&q, &k, &v].iter().all(|t| t.dtype() == DType::F32);
    if f32_inputs && k.dims()[1] > 0 && super::host::host_backend::<B>() {
        return super::host::attention([q, k, v], heads, options.causal);
    }
    let split = |x: Tensor<B, 3>| {
        let [b, n, inner] = x.dims();
        x.reshape([b, n, heads, inner / heads]).swap_dims(1, 2)
    };
    let out = attention(split(q), split(k), split(v), options);
    let [b, h, n, d] = out.dims();
    out.swap_dims(1, 2).reshape([b, n, h * d])
}

/// burn's `module::attention`, in f32 for half-precision inputs.
fn reference_attention<B: Backend>(
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
    use crate::testing::TestBackend as B;

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

    #[test]
    fn cpu_backends_take_burns_op_unchanged() {
        assert!(!fused_attention_available::<B>());
        let device = Default::default();
        let data = |n: usize, shift: f32| {
            (0..n)
                .map(|i| (i as f32 * 0.37 + shift).sin())
                .collect::<Vec<f32>>()
        };
        let make = |shape: [usize; 4], shift| {
            Tensor::<B, 4>::from_data(
                burn::tensor::TensorData::new(data(shape.iter().product(), shift), shape),
                &device,
            )
        };
        let (q, k, v) = (
            make([2, 3, 5, 40], 0.0),
            make([2, 3, 7, 40], 1.0),
            make([2, 3, 7, 40], 2.0),
        );
        let before = fused_attention_launches();
        let ours = attention(q.clone(), k.clone(), v.clone(), AttentionOptions::default());
        assert_eq!(fused_attention_launches(), before);
        let burns = module::attention(q, k, v, None, None, AttentionModuleOptions::default());
        ours.into_data().assert_eq(&burns.into_data(), true);
    }

    /// `[batch, tokens, heads·d]` inputs of a deterministic pattern.
    fn tokens(shape: [usize; 3], shift: f32) -> Tensor<B, 3> {
        let n = shape.iter().product();
        let values = (0..n)
            .map(|i| (i as f32 * 0.37 + shift).sin() * 3.0)
            .collect();
        Tensor::from_data(
            burn::tensor::TensorData::new(values, shape),
            &Default::default(),
        )
    }

    /// burn's op on the heads split apart and merged back: the reference of the host kernel.
    fn split_reference(qkv: [Tensor<B, 3>; 3], heads: usize, causal: bool) -> Tensor<B, 3> {
        let [q, k, v] = qkv;
        let split = |x: Tensor<B, 3>| {
            let [b, n, inner] = x.dims();
            x.reshape([b, n, heads, inner / heads]).swap_dims(1, 2)
        };
        let opts = AttentionModuleOptions {
            is_causal: causal,
            ..Default::default()
        };
        let out = module::attention(split(q), split(k), split(v), None, None, opts);
        let [b, h, n, d] = out.dims();
        out.swap_dims(1, 2).reshape([b, n, h * d])
    }

    #[test]
    fn host_kernel_matches_burns_op() {
        assert!(super::super::host::host_backend::<B>());
        // Self- and cross-attention, several query blocks with a partial last one, a value
        // width other than the key width, one head of 512 (the VAE), causal text attention
        // with fewer queries than keys.
        let cases = [
            ([2, 70, 40], [2, 70, 40], 20, 5, false),
            ([2, 65, 64], [2, 77, 64], 48, 2, false),
            ([1, 33, 512], [1, 33, 512], 512, 1, false),
            ([2, 77, 64], [2, 77, 64], 64, 4, true),
            ([1, 5, 16], [1, 9, 16], 16, 2, true),
            // Several key blocks with a partial last one, with and without the causal mask
            // (which leaves later blocks empty for the first rows).
            ([1, 300, 16], [1, 1100, 16], 8, 2, false),
            ([2, 600, 8], [2, 600, 8], 8, 1, true),
            ([1, 200, 8], [1, 1030, 8], 8, 1, true),
        ];
        for (q_shape, k_shape, dv, heads, causal) in cases {
            let (q, k) = (tokens(q_shape, 0.0), tokens(k_shape, 1.0));
            let v = tokens([k_shape[0], k_shape[1], dv * heads], 2.0);
            let options = AttentionOptions { causal };
            let ours = multi_head_attention(q.clone(), k.clone(), v.clone(), heads, options);
            let reference = split_reference([q, k, v], heads, causal);
            assert_eq!(ours.dims(), reference.dims());
            let diff = (ours - reference).abs().max().into_scalar();
            assert!(
                diff <= 1e-5,
                "{q_shape:?} {k_shape:?} causal {causal}: {diff}"
            );
        }
    }

    #[test]
    fn host_kernel_keeps_nan() {
        let q = tokens([1, 4, 8], 0.0);
        let k = tokens([1, 4, 8], 1.0).slice_assign(
            [0..1, 1..2, 0..1],
            Tensor::from_floats([[[f32::NAN]]], &Default::default()),
        );
        let out = multi_head_attention(q, k.clone(), k, 2, AttentionOptions::default());
        let values: Vec<f32> = out.into_data().to_vec().unwrap();
        assert!(values.iter().any(|x| x.is_nan()));
    }
}
