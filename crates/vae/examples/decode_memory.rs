//! Peak memory of one VAE decode with Stable Diffusion 1.5's VAE architecture (random
//! weights: they do not change the memory), f32 on burn-flex.
//!
//! ```text
//! cargo run -p prompt-diffusion-vae --example decode_memory -- 2048 tiled
//! cargo run -p prompt-diffusion-vae --example decode_memory -- 512
//! ```
//! Arguments: the image side in pixels (512), then `tiled` and/or `sliced`, and optionally the
//! batch size (`batch=2`). Prints the process's resident memory after building the model and
//! its peak (`VmHWM`) after the decode, in MiB, and their difference.

use std::time::Instant;

use burn::prelude::*;
use burn_flex::Flex;
use prompt_diffusion_vae::{AutoencoderKL, AutoencoderKLConfig, VaeOptions, VaeTiling};

type B = Flex;

/// A `/proc/self/status` figure (`VmRSS:`, `VmHWM:`) in MiB.
fn status_mib(key: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|line| line.starts_with(key))
        .and_then(|line| line.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

fn main() -> prompt_diffusion_core::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let side: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(512);
    let batch: usize = args
        .iter()
        .find_map(|a| a.strip_prefix("batch=")?.parse().ok())
        .unwrap_or(1);
    let mut options = VaeOptions::default();
    if args.iter().any(|a| a == "tiled") {
        options = options.with_tiling(VaeTiling::default());
    }
    if args.iter().any(|a| a == "sliced") {
        options = options.with_slicing(true);
    }

    let device = Default::default();
    let config = AutoencoderKLConfig::sd_v1_5();
    let mut vae = AutoencoderKL::<B>::new(&config, &device);
    vae.set_options(options)?;
    let latent = side / config.downsampling_factor();
    let z = Tensor::<B, 4>::random(
        [batch, config.latent_channels, latent, latent],
        burn::tensor::Distribution::Normal(0.0, 1.0),
        &device,
    );
    let before = status_mib("VmRSS:");
    let start = Instant::now();
    let image = vae.decode(z);
    let dims = image.dims();
    let _sum: f32 = image.sum().into_scalar().elem();
    let peak = status_mib("VmHWM:");
    println!(
        "decode {batch}×4×{latent}² → {dims:?} with {options:?}: {:.1} s",
        start.elapsed().as_secs_f64()
    );
    println!(
        "resident before {before:.0} MiB, peak {peak:.0} MiB, peak − before {:.0} MiB",
        peak - before
    );
    Ok(())
}
