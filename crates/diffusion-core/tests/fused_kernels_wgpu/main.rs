//! The fused CubeCL kernels on burn-wgpu (run on a CPU through Mesa's lavapipe in CI) against
//! the reference computations on ndarray in f32.
//!
//! Needs a Vulkan (or other wgpu) adapter: without one every test fails with a message saying
//! how to install lavapipe; nothing is skipped.
#![cfg(feature = "wgpu")]

mod attention;
mod conv;
mod layout;
mod norm;

use std::sync::OnceLock;

use burn::prelude::*;
use burn::tensor::DType;
use burn_ndarray::NdArray;
use burn_wgpu::{Wgpu, WgpuDevice, WgpuRuntime};

/// The reference backend.
type Reference = NdArray<f32>;
/// burn-wgpu without fusion: the kernels are launched directly on `CubeTensor`s.
type PlainWgpu = burn_cubecl::CubeBackend<WgpuRuntime, f32, i32, u32>;

/// The default wgpu device, checked once to have a working adapter.
fn device() -> WgpuDevice {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let ready = READY.get_or_init(|| {
        std::panic::catch_unwind(|| {
            let device = WgpuDevice::default();
            let probe = Tensor::<Wgpu, 1>::ones([4], &device).sum().into_scalar();
            assert_eq!(probe, 4.0);
        })
        .map_err(|e| {
            e.downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        })
    });
    if let Err(reason) = ready {
        panic!(
            "no usable wgpu adapter ({reason}); these tests need a Vulkan driver — on a machine \
             without a GPU install Mesa's lavapipe: `apt-get install -y mesa-vulkan-drivers` \
             (.ci/run does this)"
        );
    }
    WgpuDevice::default()
}

/// Deterministic values in `[-amplitude, amplitude]` (a 64-bit LCG), rounded to `dtype`.
fn values(len: usize, seed: u64, amplitude: f32, dtype: DType) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let unit = (state >> 40) as f32 / (1u64 << 24) as f32;
            let x = (2.0 * unit - 1.0) * amplitude;
            if dtype == DType::F16 {
                half::f16::from_f32(x).to_f32()
            } else {
                x
            }
        })
        .collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
