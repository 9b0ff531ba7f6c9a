//! The UNet's layers at the shapes of an SD1.5 UNet step: GroupNorm followed by SiLU (every
//! resnet), GEGLU's gating (every transformer's feed-forward) — one pass each on the CPU
//! backends' host kernels, a fused kernel (norm) or several tensor operations elsewhere — and
//! the resnets' 3×3 convolution and 1×1 shortcut through `core::nn::conv2d` (Winograd
//! F(2×2, 3×3) or an unfolded product on the CPU backends, burn's op elsewhere).
//!
//! ```text
//! cargo bench --bench layers                                     # tiny shapes, ndarray, f32
//! BENCH_CONFIG=sd15 BENCH_BACKEND=flex cargo bench --bench layers
//! ```
//! `sd15`: batch 2; GroupNorm (32 groups) + SiLU over 320×64², 640×32² and 1280×16²; GEGLU of
//! 4096 tokens × 2·1280, 1024 × 2·2560 and 256 × 2·5120 (the 64², 32² and 16² levels); a 3×3
//! convolution (padding 1) and a 1×1 one from and to those channels at those sizes.
//! `tiny` divides the spatial sizes by 16. See `common` for the environment variables.

mod common;

use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2dConfig;
use burn::prelude::*;
use common::{BenchEnv, CriterionBench, Size, bench_id, randn, sync};
use criterion::Criterion;
use prompt_diffusion::core::Result;
use prompt_diffusion::core::nn::{Activation, GroupNormConfig, conv2d, geglu};

/// `(channels, latent side)` of the UNet's three attention levels at a 64² latent.
const LEVELS: [(usize, usize); 3] = [(320, 64), (640, 32), (1280, 16)];

/// GroupNorm + SiLU, GEGLU and the convolutions at every level of the environment's size.
struct Layers;

impl CriterionBench for Layers {
    fn run<B: Backend>(criterion: &mut Criterion, env: BenchEnv, device: B::Device) -> Result<()> {
        let side = |s: usize| match env.size {
            Size::Tiny => s / 4,
            Size::Sd15 => s,
        };
        let mut group = criterion.benchmark_group("layers");
        for (channels, s) in LEVELS {
            let s = side(s);
            let norm = GroupNormConfig::new(32, channels).init::<B>(&device);
            let x = randn::<B, 4>([2, channels, s, s], &device);
            let mut run = || {
                let out = norm.forward_activated(x.clone(), Activation::Silu);
                sync::<B>(&device);
                out
            };
            run();
            let id = bench_id::<B>(
                "layers",
                &device,
                &env,
                &format!("group_norm_silu-{channels}x{s}x{s}"),
            );
            group.bench_function(id.trim_start_matches("layers/"), |b| b.iter(&mut run));
            let h = randn::<B, 3>([2, s * s, 8 * channels], &device);
            let mut run = || {
                let out = geglu(h.clone());
                sync::<B>(&device);
                out
            };
            run();
            let detail = format!("geglu-{}x{}", s * s, 8 * channels);
            let id = bench_id::<B>("layers", &device, &env, &detail);
            group.bench_function(id.trim_start_matches("layers/"), |b| b.iter(&mut run));
            for kernel in [3, 1] {
                let conv = Conv2dConfig::new([channels, channels], [kernel, kernel])
                    .with_padding(PaddingConfig2d::Explicit(
                        kernel / 2,
                        kernel / 2,
                        kernel / 2,
                        kernel / 2,
                    ))
                    .init::<B>(&device);
                let mut run = || {
                    let out = conv2d(&conv, x.clone());
                    sync::<B>(&device);
                    out
                };
                run();
                let detail = format!("conv{kernel}x{kernel}-{channels}x{s}x{s}");
                let id = bench_id::<B>("layers", &device, &env, &detail);
                group.bench_function(id.trim_start_matches("layers/"), |b| b.iter(&mut run));
            }
        }
        group.finish();
        Ok(())
    }
}

common::bench_main!(Layers);
