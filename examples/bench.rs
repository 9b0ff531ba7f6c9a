//! Milliseconds per component on any compiled backend, random weights (weights do not change
//! the speed), plus the whole tiny pipeline.
//!
//! ```text
//! cargo run --release --example bench -- [backend] [precision] [tiny|sd15] [latent size]
//! cargo run --release --example bench -- ndarray f32 sd15 32     # SD1.5 UNet, latent 4×32×32
//! cargo run --release --features cuda --example bench -- cuda f16 sd15 64
//! ```
//! Prints backend, dtype, ms per UNet CFG step (batch 2), VAE decode, CLIP text (batch 2), the
//! 12-step tiny txt2img pipeline, and the process's peak resident memory.

use std::time::Instant;

use burn::prelude::*;
use burn::tensor::{Distribution, Int};
use prompt_diffusion::backends::{BackendTask, run_on};
use prompt_diffusion::clip::{CLIPTextConfig, CLIPTextModel};
use prompt_diffusion::core::progress::NoProgress;
use prompt_diffusion::unet::{UNet2DConditionConfig, UNet2DConditionModel};
use prompt_diffusion::vae::{AutoencoderKL, AutoencoderKLConfig};
use prompt_diffusion::{Generation, ModelOptions, StableDiffusion};

struct Bench {
    sd15: bool,
    latent: usize,
}

/// Median of `runs` timed calls after one warm-up, in ms (the device synced inside `f`).
fn time(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut ms: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    ms[ms.len() / 2]
}

impl BackendTask for Bench {
    type Output = ();

    fn run<B: Backend>(self, device: B::Device) -> prompt_diffusion::core::Result<()> {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/tiny-sd");
        let (unet_config, vae_config, clip_config) = if self.sd15 {
            (
                UNet2DConditionConfig::sd_v1_5(),
                AutoencoderKLConfig::sd_v1_5(),
                CLIPTextConfig::sd_v1_5(),
            )
        } else {
            (
                UNet2DConditionConfig::from_file(format!("{root}/unet/config.json"))?,
                AutoencoderKLConfig::from_file(format!("{root}/vae/config.json"))?,
                CLIPTextConfig::from_file(format!("{root}/text_encoder/config.json"))?,
            )
        };
        let dtype = prompt_diffusion::core::dtype::default_float_dtype::<B>(&device);
        println!(
            "backend {}, dtype {dtype:?}, config {}, latent {}",
            B::name(&device),
            if self.sd15 { "sd15" } else { "tiny" },
            self.latent
        );
        let normal = Distribution::Normal(0.0, 1.0);
        let sync = || B::sync(&device).expect("device sync");

        let unet = UNet2DConditionModel::<B>::new(&unet_config, &device)?;
        let width = clip_config.hidden_size;
        let x = Tensor::<B, 4>::random([2, 4, self.latent, self.latent], normal, &device);
        let ctx = Tensor::<B, 3>::random([2, 77, width], normal, &device);
        let t = Tensor::<B, 1>::from_floats([500.0], &device);
        let runs = if self.sd15 { 3 } else { 10 };
        let ms = time(runs, || {
            unet.forward(x.clone(), t.clone(), ctx.clone())
                .expect("unet");
            sync();
        });
        println!("unet CFG step (batch 2): {ms:.1} ms");

        let vae = AutoencoderKL::<B>::new(&vae_config, &device);
        let z = Tensor::<B, 4>::random([1, 4, self.latent, self.latent], normal, &device);
        let ms = time(runs.min(3), || {
            vae.decode(z.clone());
            sync();
        });
        println!("vae decode ({0}x{0} px): {ms:.1} ms", self.latent * 8);

        let clip = CLIPTextModel::<B>::init(&clip_config, &device);
        let ids = Tensor::<B, 2, Int>::zeros([2, 77], &device);
        let ms = time(runs, || {
            clip.forward(ids.clone());
            sync();
        });
        println!("clip text (batch 2): {ms:.1} ms");

        let sd = StableDiffusion::<B>::from_pretrained(root, &ModelOptions::default(), &device)?;
        let generation = Generation::new("a fox").with_steps(12).with_seed(1);
        let ms = time(3, || {
            sd.text_to_image(&generation, &mut NoProgress)
                .expect("pipeline");
        });
        println!("tiny txt2img, 12 steps with CFG, 128x128: {ms:.1} ms");
        if let Some(peak) = peak_rss_mib() {
            println!("peak resident memory: {peak:.0} MiB");
        }
        Ok(())
    }
}

/// The process's peak resident set (Linux).
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.to_string());
    let sd15 = arg(2, "tiny") == "sd15";
    let latent = arg(3, if sd15 { "32" } else { "16" }).parse()?;
    run_on(
        arg(0, "ndarray").parse()?,
        arg(1, "f32").parse()?,
        Bench { sd15, latent },
    )?;
    Ok(())
}
