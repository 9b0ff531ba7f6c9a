//! The fused GroupNorm / LayerNorm kernel (with and without SiLU) against the same modules on
//! ndarray, which compute the norms with burn's tensor operations in f32.

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::{DType, TensorData};
use burn_wgpu::Wgpu;
use prompt_diffusion_core::nn::{
    Activation, GroupNorm, GroupNormConfig, LayerNorm, LayerNormConfig, fused_kernels_available,
    fused_norm_launches,
};

use crate::{PlainWgpu, Reference, device, max_abs_diff, values};

/// Inputs centred away from zero (mean ≈ 1.5), so a variance computed as `E[x²] − E[x]²`
/// would lose digits the reference keeps.
fn inputs(len: usize, seed: u64, dtype: DType) -> Vec<f32> {
    values(len, seed, 2.0, DType::F32)
        .into_iter()
        .map(|x| round(x + 1.5, dtype))
        .collect()
}

fn round(x: f32, dtype: DType) -> f32 {
    if dtype == DType::F16 {
        half::f16::from_f32(x).to_f32()
    } else {
        x
    }
}

/// Affine parameters `(weight, bias)` of `channels` values, rounded to `dtype`.
fn affine(channels: usize, seed: u64, dtype: DType) -> (Vec<f32>, Vec<f32>) {
    (
        values(channels, seed, 1.0, dtype),
        values(channels, seed + 1, 0.5, dtype),
    )
}

fn param<B: Backend>(data: &[f32], dtype: DType, device: &B::Device) -> Param<Tensor<B, 1>> {
    let t = Tensor::<B, 1>::from_data(TensorData::new(data.to_vec(), [data.len()]), device);
    Param::from_tensor(t.cast(dtype))
}

fn group_norm<B: Backend>(
    groups: usize,
    (weight, bias): &(Vec<f32>, Vec<f32>),
    dtype: DType,
    device: &B::Device,
) -> GroupNorm<B> {
    let mut norm = GroupNormConfig::new(groups, weight.len()).init::<B>(device);
    norm.weight = param(weight, dtype, device);
    norm.bias = param(bias, dtype, device);
    norm
}

fn layer_norm<B: Backend>(
    (weight, bias): &(Vec<f32>, Vec<f32>),
    dtype: DType,
    device: &B::Device,
) -> LayerNorm<B> {
    let mut norm = LayerNormConfig::new(weight.len()).init::<B>(device);
    norm.weight = param(weight, dtype, device);
    norm.bias = param(bias, dtype, device);
    norm
}

fn tensor<B: Backend, const D: usize>(
    data: &[f32],
    shape: [usize; D],
    dtype: DType,
    device: &B::Device,
) -> Tensor<B, D> {
    Tensor::<B, D>::from_data(TensorData::new(data.to_vec(), shape), device).cast(dtype)
}

fn read<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.cast(DType::F32).into_data().to_vec().unwrap()
}

/// Asserts that `run` served its call with the fused kernel and returns its output.
fn fused<T>(what: &str, run: impl FnOnce() -> T) -> T {
    let before = fused_norm_launches();
    let out = run();
    assert!(
        fused_norm_launches() > before,
        "{what} did not take the fused kernel"
    );
    out
}

/// GroupNorm of `[batch, channels, h, w]` on `B` against ndarray, plain and followed by SiLU.
fn check_group_norm<B: Backend>(
    device: &B::Device,
    shape: [usize; 4],
    groups: usize,
    dtype: DType,
    tolerance: f32,
) {
    let len = shape.iter().product();
    let seed = (shape[1] * 31 + shape[2] * 7 + groups) as u64;
    let x = inputs(len, seed, dtype);
    let params = affine(shape[1], seed + 2, dtype);
    let reference = group_norm::<Reference>(groups, &params, DType::F32, &Default::default());
    let norm = group_norm::<B>(groups, &params, dtype, device);
    let host = || tensor::<Reference, 4>(&x, shape, DType::F32, &Default::default());
    let input = || tensor::<B, 4>(&x, shape, dtype, device);
    for silu in [false, true] {
        let what = format!("{dtype:?} GroupNorm({groups}) {shape:?} silu={silu}");
        let (out, expected) = if silu {
            let out = fused(&what, || norm.forward_activated(input(), Activation::Silu));
            let expected = reference.forward_activated(host(), Activation::Silu);
            (out, expected)
        } else {
            (
                fused(&what, || norm.forward(input())),
                reference.forward(host()),
            )
        };
        assert_eq!(out.dtype(), dtype, "{what}");
        assert_eq!(out.dims(), shape, "{what}");
        let err = max_abs_diff(&read(out), &read(expected));
        println!("{what}: max |Δ| = {err:.2e}");
        assert!(err <= tolerance, "{what}: max |Δ| {err} > {tolerance}");
    }
}

/// LayerNorm of `[batch, seq, dim]` on `B` against ndarray; with `transposed` the input is a
/// `[batch, dim, seq]` buffer viewed as `[batch, seq, dim]` (what a 1×1 `proj_in` hands over).
fn check_layer_norm<B: Backend>(
    device: &B::Device,
    [batch, seq, dim]: [usize; 3],
    transposed: bool,
    dtype: DType,
    tolerance: f32,
) {
    let seed = (seq * 13 + dim) as u64;
    let x = inputs(batch * seq * dim, seed, dtype);
    let params = affine(dim, seed + 2, dtype);
    let reference = layer_norm::<Reference>(&params, DType::F32, &Default::default());
    let norm = layer_norm::<B>(&params, dtype, device);
    let (expected, input) = if transposed {
        let shape = [batch, dim, seq];
        (
            tensor::<Reference, 3>(&x, shape, DType::F32, &Default::default()).swap_dims(1, 2),
            tensor::<B, 3>(&x, shape, dtype, device).swap_dims(1, 2),
        )
    } else {
        let shape = [batch, seq, dim];
        (
            tensor::<Reference, 3>(&x, shape, DType::F32, &Default::default()),
            tensor::<B, 3>(&x, shape, dtype, device),
        )
    };
    let what = format!("{dtype:?} LayerNorm [{batch},{seq},{dim}] transposed={transposed}");
    let out = fused(&what, || norm.forward(input));
    assert_eq!(out.dtype(), dtype, "{what}");
    assert_eq!(out.dims(), [batch, seq, dim], "{what}");
    let err = max_abs_diff(&read(out), &read(reference.forward(expected)));
    println!("{what}: max |Δ| = {err:.2e}");
    assert!(err <= tolerance, "{what}: max |Δ| {err} > {tolerance}");
}

/// SD's GroupNorm(32) at several widths (2 to 10 channels per group, segments of 70 to 10 240
/// values), a segment length off every power of two, and the VAE's 512 channels.
const GROUP_NORMS: &[([usize; 4], usize)] = &[
    ([2, 64, 8, 8], 32),
    ([1, 96, 5, 7], 32),
    ([2, 320, 16, 16], 32),
    ([1, 640, 4, 4], 32),
    ([1, 512, 3, 3], 32),
    ([2, 12, 1, 1], 4),
];

/// Transformer widths of SD1.5 and CLIP, short rows and a single row.
const LAYER_NORMS: &[([usize; 3], bool)] = &[
    ([2, 64, 320], false),
    ([2, 64, 320], true),
    ([1, 77, 768], false),
    ([2, 16, 1280], true),
    ([3, 5, 40], false),
    ([1, 1, 1024], false),
];

fn check_all<B: Backend>(device: &B::Device, dtype: DType, tolerance: f32) {
    assert!(fused_kernels_available::<B>());
    for &(shape, groups) in GROUP_NORMS {
        check_group_norm::<B>(device, shape, groups, dtype, tolerance);
    }
    for &(shape, transposed) in LAYER_NORMS {
        check_layer_norm::<B>(device, shape, transposed, dtype, tolerance);
    }
}

#[test]
fn fused_norms_match_reference_f32() {
    check_all::<Wgpu>(&device(), DType::F32, 1e-4);
}

#[test]
fn fused_norms_match_reference_f16() {
    check_all::<Wgpu>(&device(), DType::F16, 2e-3);
}

#[test]
fn fused_norms_on_the_plain_backend() {
    let device = device();
    check_group_norm::<PlainWgpu>(&device, [2, 64, 8, 8], 32, DType::F32, 1e-4);
    check_layer_norm::<PlainWgpu>(&device, [2, 64, 320], true, DType::F32, 1e-4);
}
