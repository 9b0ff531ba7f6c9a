//! A whole text→image generation: prompt encoding, 25 denoising steps with classifier-free
//! guidance (the model's scheduler) and the VAE decode.
//!
//! ```text
//! cargo bench --bench pipeline                                   # fixtures/tiny-sd, 128², ndarray
//! BENCH_CONFIG=sd15 BENCH_BACKEND=cuda BENCH_PRECISION=f16 cargo bench --features cuda --bench pipeline
//! ```
//! `sd15`: SD1.5-sized random components (512², 64² latents) with the fixture's tokenizer and
//! scheduler; `tiny`: fixtures/tiny-sd as published. See `common` for the environment variables.

mod common;

use burn::prelude::*;
use common::{BenchEnv, CriterionBench, bench_id};
use criterion::Criterion;
use prompt_diffusion::Generation;
use prompt_diffusion::core::Result;
use prompt_diffusion::core::progress::NoProgress;

/// Denoising steps of the benchmarked generation.
const STEPS: usize = 25;

/// A whole txt2img generation.
struct Pipeline;

impl CriterionBench for Pipeline {
    fn run<B: Backend>(criterion: &mut Criterion, env: BenchEnv, device: B::Device) -> Result<()> {
        let sd = common::pipeline::<B>(env.size, &device)?;
        let side = env.size.latent() * 8;
        let generation = Generation::new("a photograph of an astronaut riding a horse")
            .with_steps(STEPS)
            .with_size(side, side)
            .with_seed(1);
        let mut run = || {
            sd.text_to_image(&generation, &mut NoProgress)
                .expect("valid generation")
        };
        run(); // compile kernels and autotune before timing
        let id = bench_id::<B>(
            "txt2img",
            &device,
            &env,
            &format!("{side}x{side}-{STEPS}steps"),
        );
        let mut group = criterion.benchmark_group("pipeline");
        group.sample_size(10);
        group.bench_function(id, |b| b.iter(&mut run));
        group.finish();
        Ok(())
    }
}

common::bench_main!(Pipeline);
