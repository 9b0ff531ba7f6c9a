//! Scaled-dot-product attention at the shapes of an SD1.5 UNet step, through the workspace's
//! entry points: `attention` (heads split, `[batch, heads, tokens, d]`) and
//! `multi_head_attention` (the projections' `[batch, tokens, heads·d]`, as the UNet calls it;
//! the host kernel on the CPU backends).
//!
//! ```text
//! cargo bench --bench attention                                  # tiny shapes, ndarray, f32
//! BENCH_CONFIG=sd15 BENCH_BACKEND=cuda BENCH_PRECISION=f16 cargo bench --features cuda --bench attention
//! ```
//! `sd15`: batch 2 × 8 heads, self-attention over 4096×40, 1024×80, 256×160 and 64×160 tokens
//! (the 64², 32², 16² and 8² levels) and cross-attention of the same queries over 77 text tokens.
//! `tiny` divides the sequence lengths by 16 so a CPU run takes seconds. See `common` for the
//! environment variables.

mod common;

use burn::prelude::*;
use common::{AttentionShape, BenchEnv, CriterionBench, bench_id, randn, sync};
use criterion::Criterion;
use prompt_diffusion::core::Result;
use prompt_diffusion::core::nn::{AttentionOptions, attention, multi_head_attention};

/// Attention at every shape of the environment's size.
struct Attention;

impl CriterionBench for Attention {
    fn run<B: Backend>(criterion: &mut Criterion, env: BenchEnv, device: B::Device) -> Result<()> {
        let mut group = criterion.benchmark_group("attention");
        for shape in common::attention_shapes(env.size) {
            let AttentionShape {
                batch,
                heads,
                seq_q,
                seq_k,
                dim,
            } = shape;
            let options = AttentionOptions::default();
            let split =
                [seq_q, seq_k, seq_k].map(|n| randn::<B, 4>([batch, heads, n, dim], &device));
            let tokens =
                [seq_q, seq_k, seq_k].map(|n| randn::<B, 3>([batch, n, heads * dim], &device));
            let id = bench_id::<B>("attention", &device, &env, &shape.label());
            let id = id.trim_start_matches("attention/");
            let mut run = || {
                let [q, k, v] = split.clone();
                let out = attention(q, k, v, options);
                sync::<B>(&device);
                out
            };
            run(); // compile kernels and autotune before timing
            group.bench_function(id, |b| b.iter(&mut run));
            let mut run = || {
                let [q, k, v] = tokens.clone();
                let out = multi_head_attention(q, k, v, heads, options);
                sync::<B>(&device);
                out
            };
            run();
            group.bench_function(format!("multi_head-{id}"), |b| b.iter(&mut run));
        }
        group.finish();
        Ok(())
    }
}

common::bench_main!(Attention);
