//! The fused attention kernel against burn's materialised attention on ndarray in f32.

use burn::prelude::*;
use burn::tensor::module;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{DType, TensorData};
use burn_wgpu::Wgpu;
use prompt_diffusion_core::nn::{
    AttentionOptions, attention, fused_attention_available, fused_attention_launches,
};

use crate::{PlainWgpu, Reference, device, max_abs_diff, values};

/// One attention problem: `[batch, heads, seq, head_dim]` inputs with values on the host.
struct Case {
    shape_q: [usize; 4],
    shape_kv: [usize; 4],
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
}

impl Case {
    fn new(batch: usize, heads: usize, seq_q: usize, seq_k: usize, d: usize, dtype: DType) -> Self {
        let seed = (batch * 131 + heads * 17 + seq_q * 7 + seq_k * 3 + d) as u64;
        Self {
            shape_q: [batch, heads, seq_q, d],
            shape_kv: [batch, heads, seq_k, d],
            // Queries with a wide range so some softmax rows are peaked.
            q: values(batch * heads * seq_q * d, seed, 2.0, dtype),
            k: values(batch * heads * seq_k * d, seed + 1, 1.0, dtype),
            v: values(batch * heads * seq_k * d, seed + 2, 1.0, dtype),
        }
    }

    fn tensor<B: Backend>(data: &[f32], shape: [usize; 4], device: &B::Device) -> Tensor<B, 4> {
        Tensor::from_data(TensorData::new(data.to_vec(), shape), device)
    }

    /// burn's materialised attention in f32 on ndarray.
    fn reference(&self, causal: bool) -> Vec<f32> {
        let device = Default::default();
        let out = module::attention(
            Self::tensor::<Reference>(&self.q, self.shape_q, &device),
            Self::tensor::<Reference>(&self.k, self.shape_kv, &device),
            Self::tensor::<Reference>(&self.v, self.shape_kv, &device),
            None,
            None,
            AttentionModuleOptions {
                is_causal: causal,
                ..Default::default()
            },
        );
        out.into_data().to_vec().unwrap()
    }

    /// [`attention`] on `B` with inputs in `dtype`, read back as f32.
    fn run<B: Backend>(
        &self,
        device: &B::Device,
        dtype: DType,
        options: AttentionOptions,
    ) -> Vec<f32> {
        let make = |data: &[f32], shape| Self::tensor::<B>(data, shape, device).cast(dtype);
        let out = attention(
            make(&self.q, self.shape_q),
            make(&self.k, self.shape_kv),
            make(&self.v, self.shape_kv),
            options,
        );
        assert_eq!(
            out.dims(),
            [
                self.shape_q[0],
                self.shape_q[1],
                self.shape_q[2],
                self.shape_kv[3]
            ]
        );
        assert_eq!(out.dtype(), dtype);
        out.cast(DType::F32).into_data().to_vec().unwrap()
    }
}

/// Runs every `(batch, heads, seq_q, seq_k, head_dim)` through the kernel in `dtype` and checks
/// each against the reference within `tolerance`, and that the kernel served every call.
fn check(shapes: &[(usize, usize, usize, usize, usize)], dtype: DType, tolerance: f32) {
    let device = device();
    assert!(fused_attention_available::<Wgpu>());
    for &(batch, heads, seq_q, seq_k, d) in shapes {
        let case = Case::new(batch, heads, seq_q, seq_k, d, dtype);
        let before = fused_attention_launches();
        let out = case.run::<Wgpu>(&device, dtype, AttentionOptions::default());
        assert!(
            fused_attention_launches() > before,
            "[{batch},{heads},{seq_q}|{seq_k},{d}] did not take the fused kernel"
        );
        let err = max_abs_diff(&out, &case.reference(false));
        println!("{dtype:?} q[{batch},{heads},{seq_q},{d}] k[{seq_k}]: max |Δ| = {err:.2e}");
        assert!(
            err <= tolerance,
            "{dtype:?} [{batch},{heads},{seq_q}|{seq_k},{d}]: max |Δ| {err} > {tolerance}"
        );
    }
}

/// Self- and cross-attention shapes of SD (77 text tokens), Versatile's image context
/// (257 tokens) and sequence lengths off the tile sizes, for every head dimension used.
const SHAPES: &[(usize, usize, usize, usize, usize)] = &[
    (2, 2, 63, 77, 40),
    (1, 3, 200, 200, 40),
    (2, 2, 1, 257, 64),
    (1, 2, 63, 257, 64),
    (2, 2, 200, 77, 80),
    (1, 2, 65, 65, 80),
    (2, 2, 63, 77, 160),
    (1, 2, 1, 200, 160),
];

#[test]
fn fused_kernel_matches_reference_f32() {
    check(SHAPES, DType::F32, 1e-4);
}

/// Self-attention over 16 384 tokens (a 1024² image's 128² latent), head dim 40: the longest
/// sequence the models produce. The reference runs 2 048 query rows at a time, so its score
/// matrix stays small.
#[test]
fn longest_self_attention_matches_reference() {
    let (seq, d, rows) = (16_384, 40, 2_048);
    let case = Case::new(1, 1, seq, seq, d, DType::F32);
    let before = fused_attention_launches();
    let out = case.run::<Wgpu>(&device(), DType::F32, AttentionOptions::default());
    assert!(fused_attention_launches() > before);
    let device = Default::default();
    let k = Case::tensor::<Reference>(&case.k, case.shape_kv, &device);
    let v = Case::tensor::<Reference>(&case.v, case.shape_kv, &device);
    let mut err = 0.0f32;
    for start in (0..seq).step_by(rows) {
        let q = &case.q[start * d..(start + rows) * d];
        let q = Case::tensor::<Reference>(q, [1, 1, rows, d], &device);
        let reference = module::attention(q, k.clone(), v.clone(), None, None, Default::default());
        let reference: Vec<f32> = reference.into_data().to_vec().unwrap();
        err = err.max(max_abs_diff(
            &out[start * d..(start + rows) * d],
            &reference,
        ));
    }
    println!("F32 q[1,1,{seq},{d}] k[{seq}]: max |Δ| = {err:.2e}");
    assert!(err <= 1e-4, "max |Δ| {err}");
}

#[test]
fn fused_kernel_matches_reference_f16() {
    check(SHAPES, DType::F16, 2e-3);
}

/// `data` (`[batch, heads, seq, d]` values) laid out as `[batch, seq, heads, d]` in memory and
/// viewed as `[batch, heads, seq, d]`: the strided views the models' head split produces.
fn heads_view<B: Backend>(
    data: &[f32],
    [batch, heads, seq, d]: [usize; 4],
    device: &B::Device,
) -> Tensor<B, 4> {
    let mut bshd = vec![0.0; data.len()];
    for (i, x) in data.iter().enumerate() {
        let (b, h, s, c) = (
            i / (heads * seq * d),
            i / (seq * d) % heads,
            i / d % seq,
            i % d,
        );
        bshd[((b * seq + s) * heads + h) * d + c] = *x;
    }
    Tensor::<B, 4>::from_data(TensorData::new(bshd, [batch, seq, heads, d]), device).swap_dims(1, 2)
}

/// Strided inputs read in place on `B`; the output also merges its heads as the models do
/// (`swap_dims(1, 2)` then `reshape`).
fn check_strided<B: Backend>(device: &B::Device) {
    let shape = [2, 2, 70, 40];
    let [batch, heads, seq, d] = shape;
    let case = Case::new(batch, heads, seq, seq, d, DType::F32);
    let before = fused_attention_launches();
    let out = attention(
        heads_view::<B>(&case.q, shape, device),
        heads_view::<B>(&case.k, shape, device),
        heads_view::<B>(&case.v, shape, device),
        AttentionOptions::default(),
    );
    assert!(fused_attention_launches() > before);
    let reference = case.reference(false);
    let values: Vec<f32> = out.clone().into_data().to_vec().unwrap();
    let err = max_abs_diff(&values, &reference);
    assert!(err <= 1e-4, "{}: max |Δ| {err}", B::name(device));
    let merged: Vec<f32> = out
        .swap_dims(1, 2)
        .reshape([batch, seq, heads * d])
        .into_data()
        .to_vec()
        .unwrap();
    let reference_merged = heads_view::<Reference>(&reference, shape, &Default::default())
        .swap_dims(1, 2)
        .reshape([batch, seq, heads * d]);
    let expected: Vec<f32> = reference_merged.into_data().to_vec().unwrap();
    let err = max_abs_diff(&merged, &expected);
    assert!(
        err <= 1e-4,
        "{}: merged heads, max |Δ| {err}",
        B::name(device)
    );
}

#[test]
fn strided_inputs_on_the_plain_and_fusion_backends() {
    let device = device();
    assert!(fused_attention_available::<PlainWgpu>());
    check_strided::<PlainWgpu>(&device);
    check_strided::<Wgpu>(&device);
}

#[test]
fn causal_attention_takes_the_reference_path() {
    let device = device();
    let case = Case::new(1, 2, 9, 9, 64, DType::F32);
    let out = case.run::<Wgpu>(&device, DType::F32, AttentionOptions::causal());
    let err = max_abs_diff(&out, &case.reference(true));
    assert!(err <= 1e-4, "max |Δ| {err}");
}
