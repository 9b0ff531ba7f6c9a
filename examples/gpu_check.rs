//! The correctness half of `tools/gpu_check.sh`, on any compiled backend: the committed parity
//! images remade on the device, and the time to the first image of a process.
//!
//! ```text
//! cargo run --release --features cuda --example gpu_check -- parity cuda f16
//! cargo run --release --features cuda --example gpu_check -- first-image cuda f16 sd15 64 25
//! ```
//! * `parity BACKEND PRECISION` — tiny-sd's DDIM text→image (`fixtures/pipeline/txt2img.safetensors`) and
//!   Prompt Diffusion's (`fixtures/prompt_diffusion/reference.safetensors`) from the reference's
//!   latents: in f32 every pixel within 2/255 of diffusers', in f16 (or bf16) within 8/255 (a NaN
//!   is an error of its own). Prints one Markdown row per case and
//!   `result parity_<case>_<precision>=<max diff>`; exits with an error when a case is outside its
//!   bound. One precision per process: a device's float type is set once.
//! * `first-image BACKEND PRECISION SIZE LATENT STEPS` — builds the model (random weights at
//!   `tiny` or `sd15` shapes) and generates one image, printing the seconds from the process's
//!   start (`result first_image_s=`). Run it twice with the same `--cache-dir`
//!   (`PROMPT_DIFFUSION_CACHE_DIR`): the first run is the cold process, the second the warm one
//!   (autotune results and compiled kernels cached).
//!
//! Run from the repository root (it reads `fixtures/`).

#[path = "../benches/common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::time::Instant;

use burn::prelude::*;
use image::RgbImage;
use prompt_diffusion::backends::{BackendTask, run_on};
use prompt_diffusion::controlnet::PromptDiffusionControlNet;
use prompt_diffusion::core::Precision;
use prompt_diffusion::core::image::load_rgb;
use prompt_diffusion::core::progress::NoProgress;
use prompt_diffusion::core::weights::{Pretrained, TensorSource};
use prompt_diffusion::schedulers::SchedulerKind;
use prompt_diffusion::{
    Generation, InContextOptions, ModelOptions, PromptDiffusion, StableDiffusion,
};

fn fixtures() -> PathBuf {
    PathBuf::from("fixtures")
}

/// uint8 reference images `[n, h, w, 3]` under `key`.
fn expected(io: &TensorSource, key: &str) -> anyhow::Result<Vec<RgbImage>> {
    let data = io.data(key)?;
    let [n, h, w, _] = data.shape[..] else {
        anyhow::bail!("{key}: not [n, h, w, 3]");
    };
    let bytes: Vec<u8> = data.to_vec().map_err(|e| anyhow::anyhow!("{key}: {e:?}"))?;
    Ok(bytes
        .chunks(h * w * 3)
        .take(n)
        .filter_map(|c| RgbImage::from_raw(w as u32, h as u32, c.to_vec()))
        .collect())
}

/// The largest difference of any pixel channel.
fn max_diff(actual: &[RgbImage], expected: &[RgbImage]) -> u8 {
    actual
        .iter()
        .zip(expected)
        .flat_map(|(a, e)| {
            a.as_raw()
                .iter()
                .zip(e.as_raw())
                .map(|(x, y)| x.abs_diff(*y))
        })
        .max()
        .unwrap_or(u8::MAX)
}

/// Remakes the parity images at one precision.
struct Parity {
    precision: Precision,
}

impl BackendTask for Parity {
    type Output = anyhow::Result<Vec<(String, u8)>>;

    fn run<B: Backend>(self, device: B::Device) -> prompt_diffusion::core::Result<Self::Output> {
        let go = || -> anyhow::Result<Vec<(String, u8)>> {
            let options = ModelOptions::default();
            let sd = StableDiffusion::<B>::from_pretrained(
                fixtures().join("tiny-sd"),
                &options,
                &device,
            )?;
            let io = TensorSource::open(fixtures().join("pipeline/txt2img.safetensors"))?;
            let generation = Generation::new("a watercolor painting of a fox in the snow")
                .with_negative_prompt("blurry, low quality")
                .with_steps(8)
                .with_guidance_scale(7.5)
                .with_scheduler(SchedulerKind::Ddim)
                .with_latents(io.data("latents")?);
            let images = sd.text_to_image(&generation, &mut NoProgress)?;
            let txt2img = max_diff(&images, &expected(&io, "ddim.image")?);

            let controlnet = PromptDiffusionControlNet::<B>::from_pretrained(
                fixtures().join("controlnet/prompt-diffusion"),
                &Default::default(),
                &device,
            )?;
            let pd = PromptDiffusion::new(sd, controlnet);
            let io = TensorSource::open(fixtures().join("prompt_diffusion/reference.safetensors"))?;
            let image = |name: &str| load_rgb(fixtures().join("prompt_diffusion").join(name));
            let [source, target, query] = [
                image("source.png")?,
                image("target.png")?,
                image("query.png")?,
            ];
            let options = InContextOptions::notebook()
                .with_steps(8)
                .with_scheduler(SchedulerKind::Ddim)
                .with_resolution(64)
                .with_latents(io.data("latents")?);
            let prompt = "a turtle stands on the beach";
            let images =
                pd.generate(&source, &target, &query, prompt, &options, &mut NoProgress)?;
            let in_context = max_diff(&images, &expected(&io, "diffusers.ddim.image")?);
            let name = format!("{:?}", self.precision).to_lowercase();
            Ok(vec![
                (format!("tiny-sd txt2img DDIM, {name}"), txt2img),
                (format!("Prompt Diffusion DDIM, {name}"), in_context),
            ])
        };
        Ok(go())
    }
}

/// One image of a freshly built model, timed from the process's start.
struct FirstImage {
    size: common::Size,
    latent: usize,
    steps: usize,
    start: Instant,
}

impl BackendTask for FirstImage {
    type Output = f64;

    fn run<B: Backend>(self, device: B::Device) -> prompt_diffusion::core::Result<f64> {
        let sd = common::pipeline::<B>(self.size, &device)?;
        let image = self.latent * sd.components.vae.config().downsampling_factor();
        let generation = Generation::new("a photograph of an astronaut riding a horse")
            .with_steps(self.steps)
            .with_size(image, image)
            .with_seed(1);
        sd.text_to_image(&generation, &mut NoProgress)?;
        Ok(self.start.elapsed().as_secs_f64())
    }
}

fn main() -> anyhow::Result<()> {
    let start = Instant::now();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.to_string());
    match arg(0, "").as_str() {
        "parity" => {
            let backend = arg(1, "ndarray").parse()?;
            let precision: Precision = arg(2, "f32").parse()?;
            // f32 must match diffusers' images; f16 only stay close and finite.
            let bound = if precision == Precision::F32 { 2u8 } else { 8 };
            let mut failed = Vec::new();
            for (case, diff) in run_on(backend, precision, Parity { precision })?? {
                let verdict = if diff <= bound { "pass" } else { "FAIL" };
                println!("| {case} | {diff}/255 | {bound}/255 | {verdict} |");
                let key = case.replace([' ', ','], "_").to_lowercase();
                println!("result parity_{key}={diff}");
                if diff > bound {
                    failed.push(case);
                }
            }
            if !failed.is_empty() {
                anyhow::bail!("parity failed: {}", failed.join("; "));
            }
        }
        "first-image" => {
            let size = common::Size::parse(&arg(3, "tiny"))
                .ok_or_else(|| anyhow::anyhow!("the model size is `tiny` or `sd15`"))?;
            let task = FirstImage {
                size,
                latent: arg(4, &size.latent().to_string()).parse()?,
                steps: arg(5, "25").parse()?,
                start,
            };
            let seconds = run_on(arg(1, "ndarray").parse()?, arg(2, "f32").parse()?, task)?;
            println!("first image: {seconds:.1} s after the process started");
            println!("result first_image_s={seconds:.2}");
        }
        _ => anyhow::bail!(
            "usage: gpu_check parity BACKEND | first-image BACKEND PRECISION SIZE LATENT STEPS"
        ),
    }
    Ok(())
}
