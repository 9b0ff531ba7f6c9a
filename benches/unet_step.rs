//! One UNet denoising step with classifier-free guidance (batch 2), random weights.
//!
//! ```text
//! cargo bench --bench unet_step                                   # tiny config, ndarray, f32
//! BENCH_BACKEND=flex BENCH_PRECISION=f16 cargo bench --bench unet_step
//! BENCH_CONFIG=sd15 BENCH_BACKEND=cuda BENCH_PRECISION=f16 cargo bench --features cuda --bench unet_step
//! ```
//! `BENCH_CONFIG`: `tiny` (fixtures/tiny-sd/unet, latent 4×16×16, context 2×77×16) or `sd15`
//! (SD1.5, latent 4×64×64, context 2×77×768). Weights do not change the speed.

use burn::prelude::*;
use burn::tensor::Distribution;
use criterion::{Criterion, criterion_group, criterion_main};
use prompt_diffusion::backends::{BackendKind, BackendTask, run_on};
use prompt_diffusion::core::Precision;
use prompt_diffusion::core::nn::channels_last_conv_weights;
use prompt_diffusion::unet::{UNet2DConditionConfig, UNet2DConditionModel};

struct UNetStep<'a> {
    criterion: &'a mut Criterion,
    config: UNet2DConditionConfig,
    latent: usize,
    label: String,
}

impl BackendTask for UNetStep<'_> {
    type Output = ();

    fn run<B: Backend>(self, device: B::Device) -> prompt_diffusion::core::Result<()> {
        let unet =
            channels_last_conv_weights(UNet2DConditionModel::<B>::new(&self.config, &device)?);
        let width = match &self.config.cross_attention_dim {
            prompt_diffusion::core::config::OneOrMany::One(w) => *w,
            prompt_diffusion::core::config::OneOrMany::Many(w) => w[0],
        };
        let normal = Distribution::Normal(0.0, 1.0);
        let sample = Tensor::<B, 4>::random([2, 4, self.latent, self.latent], normal, &device);
        let context = Tensor::<B, 3>::random([2, 77, width], normal, &device);
        let t = Tensor::<B, 1>::from_floats([500.0], &device);
        let mut step = || {
            let out = unet
                .forward(sample.clone(), t.clone(), context.clone())
                .expect("valid inputs");
            B::sync(&device).expect("device sync");
            out
        };
        step(); // compile kernels and autotune before timing
        let name = format!("unet_step/{}/{}", B::name(&device), self.label);
        self.criterion.bench_function(&name, |b| b.iter(&mut step));
        Ok(())
    }
}

fn unet_step(c: &mut Criterion) {
    let env = |k: &str, default: &str| std::env::var(k).unwrap_or_else(|_| default.into());
    let backend: BackendKind = env("BENCH_BACKEND", "ndarray")
        .parse()
        .expect("BENCH_BACKEND");
    let precision: Precision = env("BENCH_PRECISION", "f32")
        .parse()
        .expect("BENCH_PRECISION");
    let (config, latent) = match env("BENCH_CONFIG", "tiny").as_str() {
        "sd15" => (UNet2DConditionConfig::sd_v1_5(), 64),
        _ => {
            let path = concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/fixtures/tiny-sd/unet/config.json"
            );
            (
                UNet2DConditionConfig::from_file(path).expect("tiny config"),
                16,
            )
        }
    };
    let label = format!(
        "{}-{latent}x{latent}-{precision}",
        env("BENCH_CONFIG", "tiny")
    );
    let task = UNetStep {
        criterion: c,
        config,
        latent,
        label,
    };
    run_on(backend, precision, task).expect("benchmark run");
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = unet_step
}
criterion_main!(benches);
