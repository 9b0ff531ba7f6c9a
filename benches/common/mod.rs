//! Setup shared by the benches and `examples/bench.rs`: the environment knobs, the model sizes,
//! random-weight models and inputs (weights do not change the speed).
//!
//! | variable | values | default |
//! |---|---|---|
//! | `BENCH_BACKEND` | ndarray, flex, wgpu, cuda | ndarray |
//! | `BENCH_PRECISION` | f32, f16, bf16 | f32 |
//! | `BENCH_CONFIG` | `tiny` (fixtures/tiny-sd sizes), `sd15` (SD1.5, 512² images, 64² latents) | tiny |
#![allow(dead_code)]

use std::time::Instant;

use burn::prelude::*;
use burn::tensor::Distribution;
use prompt_diffusion::backends::{BackendKind, BackendTask, run_on};
use prompt_diffusion::clip::{CLIPTextConfig, CLIPTextModel, ClipTokenizer};
use prompt_diffusion::controlnet::{ControlNetConfig, ControlNetModel, ControlScales};
use prompt_diffusion::core::nn::channels_last_conv_weights;
use prompt_diffusion::core::{Precision, Result};
use prompt_diffusion::pipelines::Components;
use prompt_diffusion::schedulers::SchedulerConfig;
use prompt_diffusion::unet::{UNet2DConditionConfig, UNet2DConditionModel};
use prompt_diffusion::vae::{AutoencoderKL, AutoencoderKLConfig};
use prompt_diffusion::{ModelOptions, StableDiffusion};

/// The tiny random pipeline of the fixtures (also the tokenizer and scheduler of `sd15` runs).
pub const TINY_SD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/tiny-sd");

/// Model sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    /// fixtures/tiny-sd: UNet 16/32/32, 4-level VAE, 2-layer CLIP, 128² images, 16² latents.
    Tiny,
    /// Stable Diffusion 1.5: 512² images, 64² latents, 77×768 context.
    Sd15,
}

impl Size {
    /// `tiny` or `sd15`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "tiny" => Some(Self::Tiny),
            "sd15" => Some(Self::Sd15),
            _ => None,
        }
    }

    /// The name used in bench ids.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tiny => "tiny",
            Self::Sd15 => "sd15",
        }
    }

    /// The native latent side (16 tiny, 64 SD1.5).
    pub fn latent(self) -> usize {
        match self {
            Self::Tiny => 16,
            Self::Sd15 => 64,
        }
    }

    /// The component configurations.
    pub fn configs(self) -> Result<Configs> {
        Ok(match self {
            Self::Tiny => {
                let unet_path = format!("{TINY_SD}/unet/config.json");
                Configs {
                    unet: UNet2DConditionConfig::from_file(&unet_path)?,
                    // A ControlNet copying the tiny UNet's encoder (same keys as its config).
                    controlnet: ControlNetConfig::from_file(&unet_path)?,
                    vae: AutoencoderKLConfig::from_file(format!("{TINY_SD}/vae/config.json"))?,
                    clip: CLIPTextConfig::from_file(format!("{TINY_SD}/text_encoder/config.json"))?,
                }
            }
            Self::Sd15 => Configs {
                unet: UNet2DConditionConfig::sd_v1_5(),
                controlnet: ControlNetConfig::sd_v1_5(),
                vae: AutoencoderKLConfig::sd_v1_5(),
                clip: CLIPTextConfig::sd_v1_5(),
            },
        })
    }
}

/// The component configurations of one [`Size`].
#[derive(Debug, Clone)]
pub struct Configs {
    /// Denoising UNet.
    pub unet: UNet2DConditionConfig,
    /// ControlNet matching the UNet.
    pub controlnet: ControlNetConfig,
    /// VAE.
    pub vae: AutoencoderKLConfig,
    /// CLIP text encoder.
    pub clip: CLIPTextConfig,
}

/// What the environment asks for.
#[derive(Debug, Clone, Copy)]
pub struct BenchEnv {
    /// Backend.
    pub backend: BackendKind,
    /// Precision.
    pub precision: Precision,
    /// Model size.
    pub size: Size,
}

/// Reads `BENCH_BACKEND`, `BENCH_PRECISION` and `BENCH_CONFIG` (a bench harness: a bad value
/// stops it with the variable's name).
pub fn bench_env() -> BenchEnv {
    let var = |k: &str, default: &str| std::env::var(k).unwrap_or_else(|_| default.into());
    BenchEnv {
        backend: var("BENCH_BACKEND", "ndarray")
            .parse()
            .expect("BENCH_BACKEND: ndarray, flex, wgpu or cuda"),
        precision: var("BENCH_PRECISION", "f32")
            .parse()
            .expect("BENCH_PRECISION: f32, f16 or bf16"),
        size: Size::parse(&var("BENCH_CONFIG", "tiny")).expect("BENCH_CONFIG: tiny or sd15"),
    }
}

/// Criterion with few samples (one SD1.5 step is seconds on a CPU).
pub fn criterion() -> criterion::Criterion {
    criterion::Criterion::default().sample_size(10)
}

/// A bench id: `component/backend/size-detail-precision`.
pub fn bench_id<B: Backend>(
    component: &str,
    device: &B::Device,
    env: &BenchEnv,
    detail: &str,
) -> String {
    format!(
        "{component}/{}/{}-{detail}-{}",
        B::name(device),
        env.size.name(),
        env.precision
    )
}

/// Waits for the device's queued work.
pub fn sync<B: Backend>(device: &B::Device) {
    B::sync(device).expect("device sync");
}

/// Median of `runs` timed calls after one warm-up call, in ms (`f` syncs the device itself).
pub fn median_ms(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut ms: Vec<f64> = (0..runs.max(1))
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    ms[ms.len() / 2]
}

/// Standard-normal noise.
pub fn randn<B: Backend, const D: usize>(shape: [usize; D], device: &B::Device) -> Tensor<B, D> {
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
}

/// Inputs of one classifier-free-guidance UNet step (batch 2).
pub struct StepInputs<B: Backend> {
    /// Latents `[2, 4, latent, latent]`.
    pub sample: Tensor<B, 4>,
    /// Timestep `[1]`.
    pub timestep: Tensor<B, 1>,
    /// Text context `[2, 77, width]`.
    pub context: Tensor<B, 3>,
}

impl<B: Backend> StepInputs<B> {
    /// Random inputs for a `latent`² step with `width`-wide context tokens.
    pub fn new(latent: usize, width: usize, device: &B::Device) -> Self {
        Self {
            sample: randn([2, 4, latent, latent], device),
            timestep: Tensor::from_floats([500.0], device),
            context: randn([2, 77, width], device),
        }
    }
}

/// A ControlNet with random weights, its hint and its scales, for one classifier-free-guidance
/// step (batch 2).
pub struct ControlNetStep<B: Backend> {
    /// The ControlNet.
    pub controlnet: ControlNetModel<B>,
    /// Hint `[2, 3, latent·f, latent·f]`, `f` the ControlNet's hint downscale factor.
    pub hint: Tensor<B, 4>,
    /// Residual scales (the default: 1 everywhere).
    pub scales: ControlScales,
}

impl<B: Backend> ControlNetStep<B> {
    /// The ControlNet of `configs` and a random hint for `latent`² latents.
    pub fn new(configs: &Configs, latent: usize, device: &B::Device) -> Result<Self> {
        let controlnet = ControlNetModel::<B>::new(&configs.controlnet, device)?;
        let side = latent * configs.controlnet.hint_downscale_factor();
        Ok(Self {
            controlnet: channels_last_conv_weights(controlnet),
            hint: randn([2, 3, side, side], device),
            scales: ControlScales::default(),
        })
    }

    /// The ControlNet's residuals on `x`, then `unet`'s step with them.
    pub fn run(&self, unet: &UNet2DConditionModel<B>, x: &StepInputs<B>) -> Tensor<B, 4> {
        let residuals = self
            .controlnet
            .forward(
                x.sample.clone(),
                x.timestep.clone(),
                x.context.clone(),
                self.hint.clone(),
                &self.scales,
            )
            .expect("valid controlnet inputs");
        let (sample, timestep, context) = (x.sample.clone(), x.timestep.clone(), x.context.clone());
        unet.forward_with_residuals(sample, timestep, context, &residuals)
            .expect("valid unet inputs")
    }
}

/// A criterion bench run on the backend and precision [`bench_env`] reads.
pub trait CriterionBench {
    /// Registers and runs the benchmarks on `device`.
    fn run<B: Backend>(
        criterion: &mut criterion::Criterion,
        env: BenchEnv,
        device: B::Device,
    ) -> Result<()>;
}

/// A [`CriterionBench`] as a backend task.
struct CriterionTask<'a, T> {
    criterion: &'a mut criterion::Criterion,
    env: BenchEnv,
    bench: std::marker::PhantomData<T>,
}

impl<T: CriterionBench> BackendTask for CriterionTask<'_, T> {
    type Output = ();

    fn run<B: Backend>(self, device: B::Device) -> Result<()> {
        T::run::<B>(self.criterion, self.env, device)
    }
}

/// Runs the [`CriterionBench`] `T` on the backend and precision [`bench_env`] reads.
pub fn run_bench<T: CriterionBench>(criterion: &mut criterion::Criterion) {
    let env = bench_env();
    let bench = std::marker::PhantomData::<T>;
    let task = CriterionTask {
        criterion,
        env,
        bench,
    };
    run_on(env.backend, env.precision, task).expect("benchmark run");
}

/// The bench binary's `main`: runs the [`CriterionBench`] `$bench` with [`criterion`]'s settings.
#[allow(unused_macros)]
macro_rules! bench_main {
    ($bench:ty) => {
        fn run_benches(c: &mut criterion::Criterion) {
            $crate::common::run_bench::<$bench>(c);
        }
        criterion::criterion_group! {
            name = benches;
            config = $crate::common::criterion();
            targets = run_benches
        }
        criterion::criterion_main!(benches);
    };
}
#[allow(unused_imports)]
pub(crate) use bench_main;

/// The UNet's context width.
pub fn context_width(config: &UNet2DConditionConfig) -> usize {
    use prompt_diffusion::core::config::OneOrMany;
    match &config.cross_attention_dim {
        OneOrMany::One(w) => *w,
        OneOrMany::Many(w) => w[0],
    }
}

/// A text→image pipeline: the tiny fixture as published, or SD1.5-sized random components
/// with the fixture's CLIP tokenizer and scheduler.
pub fn pipeline<B: Backend>(size: Size, device: &B::Device) -> Result<StableDiffusion<B>> {
    match size {
        Size::Tiny => StableDiffusion::from_pretrained(TINY_SD, &ModelOptions::default(), device),
        Size::Sd15 => {
            let configs = size.configs()?;
            let components = Components {
                tokenizer: ClipTokenizer::from_folder(format!("{TINY_SD}/tokenizer"))?,
                text_encoder: channels_last_conv_weights(CLIPTextModel::init(
                    &configs.clip,
                    device,
                )),
                unet: channels_last_conv_weights(UNet2DConditionModel::new(&configs.unet, device)?),
                vae: channels_last_conv_weights(AutoencoderKL::new(&configs.vae, device)),
                scheduler: SchedulerConfig::from_file(format!(
                    "{TINY_SD}/scheduler/scheduler_config.json"
                ))?,
            };
            Ok(StableDiffusion::new(components, device))
        }
    }
}

/// One attention problem: `[batch, heads, seq_q, dim]` queries over `seq_k` keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionShape {
    /// Batch (2: classifier-free guidance).
    pub batch: usize,
    /// Heads.
    pub heads: usize,
    /// Query tokens.
    pub seq_q: usize,
    /// Key/value tokens.
    pub seq_k: usize,
    /// Head width.
    pub dim: usize,
}

impl AttentionShape {
    /// `self-4096x40` or `cross-4096x77x40`.
    pub fn label(&self) -> String {
        if self.seq_q == self.seq_k {
            format!("self-{}x{}", self.seq_q, self.dim)
        } else {
            format!("cross-{}x{}x{}", self.seq_q, self.seq_k, self.dim)
        }
    }
}

/// The attention shapes of an SD1.5 UNet step at each level (self-attention and cross-attention
/// over 77 tokens; batch 2 × 8 heads); `tiny` divides the sequence lengths by 16.
pub fn attention_shapes(size: Size) -> Vec<AttentionShape> {
    let scale = match size {
        Size::Tiny => 16,
        Size::Sd15 => 1,
    };
    let levels = [(4096, 40), (1024, 80), (256, 160), (64, 160)];
    let mut shapes = Vec::new();
    for (seq, dim) in levels {
        let seq_q = (seq / scale).max(4);
        for seq_k in [seq_q, 77] {
            shapes.push(AttentionShape {
                batch: 2,
                heads: 8,
                seq_q,
                seq_k,
                dim,
            });
        }
    }
    shapes
}

/// The process's peak resident memory in MiB (Linux `VmHWM`).
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Token ids `[2, 77]` (0, 1, 2, … modulo the vocabulary): the text encoder's speed does not
/// depend on the ids.
pub fn token_ids<B: Backend>(vocab: usize, device: &B::Device) -> Tensor<B, 2, burn::tensor::Int> {
    Tensor::<B, 1, burn::tensor::Int>::arange(0..154, device)
        .remainder_scalar(vocab as i64)
        .reshape([2, 77])
}
