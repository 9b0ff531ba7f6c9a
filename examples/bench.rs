//! Milliseconds per component on any compiled backend, random weights (weights do not change
//! the speed), the whole text→image pipeline, and peak memory.
//!
//! ```text
//! cargo run --release --example bench -- [backend] [precision] [tiny|sd15] [latent] [steps] [components]
//! cargo run --release --example bench -- ndarray f32 sd15 32 0 unet  # SD1.5 UNet step, latent 4×32×32
//! cargo run --release --example bench -- ndarray f32 tiny 16 25      # everything, tiny sizes
//! cargo run --release --features cuda --example bench -- cuda f16 sd15 64 25
//! ```
//! Arguments (positional, all optional): backend (ndarray), precision (f32), model size (tiny),
//! latent side (16 tiny, 64 sd15), pipeline steps (25; 0 skips the pipeline), and a
//! comma-separated subset of `clip,unet,controlnet,decode,encode,attention,pipeline` (all;
//! `attention` is the UNet's largest self-attention, `[2, 8, 4096, 40]` at `sd15`). `BENCH_RUNS`
//! sets the timed runs per component (default 10 tiny, 3 sd15; medians after one warm-up run).
//!
//! Prints the backend, the dtype, ms per CLIP text encoding (2 × 77 tokens), UNet CFG step
//! (batch 2), ControlNet + UNet CFG step, VAE decode and encode (one image), the whole
//! generation (`steps` steps with CFG at `8·latent`² pixels), then the peak memory: the device
//! pools' reserved bytes on wgpu/cuda (sampled after each component), the process's peak
//! resident set on the CPU backends. Machine-readable `key=value` lines start with `result `.

#[path = "../benches/common/mod.rs"]
mod common;

use burn::prelude::*;
use common::{ControlNetStep, Size, StepInputs, context_width, median_ms, randn};
use prompt_diffusion::Generation;
use prompt_diffusion::backends::{BackendTask, device_memory, run_on};
use prompt_diffusion::clip::CLIPTextModel;
use prompt_diffusion::core::nn::{
    AttentionOptions, attention, channels_last_conv_weights, multi_head_attention,
};
use prompt_diffusion::core::progress::NoProgress;
use prompt_diffusion::unet::UNet2DConditionModel;
use prompt_diffusion::vae::AutoencoderKL;

struct Bench {
    size: Size,
    latent: usize,
    steps: usize,
    only: Vec<String>,
    runs: usize,
}

impl Bench {
    fn wants(&self, component: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|c| c == component)
    }
}

/// Times components on one device and keeps the largest device reservation seen (GPU
/// backends).
struct Recorder<'d, B: Backend> {
    device: &'d B::Device,
    peak_reserved: u64,
}

impl<B: Backend> Recorder<'_, B> {
    /// Prints the median of `runs` calls of `f`, each followed by a device sync, as `what: … ms`
    /// and as `result {key}=…`, then samples the device's reservation.
    fn time(&mut self, key: &str, what: &str, runs: usize, mut f: impl FnMut()) {
        let ms = median_ms(runs, || {
            f();
            common::sync::<B>(self.device);
        });
        if let Some(memory) = device_memory::<B>(self.device) {
            self.peak_reserved = self.peak_reserved.max(memory.bytes_reserved);
        }
        println!("{what}: {ms:.1} ms");
        println!("result {key}={ms:.3}");
    }
}

impl BackendTask for Bench {
    type Output = ();

    fn run<B: Backend>(self, device: B::Device) -> prompt_diffusion::core::Result<()> {
        let configs = self.size.configs()?;
        let dtype = prompt_diffusion::core::dtype::default_float_dtype::<B>(&device);
        let latent = self.latent;
        let image = latent * configs.vae.downsampling_factor();
        println!(
            "backend {}, dtype {dtype:?}, config {}, latent {latent}, image {image}",
            B::name(&device),
            self.size.name(),
        );
        let runs = self.runs;
        let mut recorder = Recorder::<B> {
            device: &device,
            peak_reserved: 0,
        };
        let width = context_width(&configs.unet);

        if self.wants("clip") {
            let clip = channels_last_conv_weights(CLIPTextModel::<B>::init(&configs.clip, &device));
            let ids = common::token_ids::<B>(configs.clip.vocab_size, &device);
            recorder.time("clip_text_ms", "clip text (2 x 77 tokens)", runs, || {
                clip.forward(ids.clone());
            });
        }

        if self.wants("unet") || self.wants("controlnet") {
            let unet =
                channels_last_conv_weights(UNet2DConditionModel::<B>::new(&configs.unet, &device)?);
            let x = StepInputs::<B>::new(latent, width, &device);
            if self.wants("unet") {
                recorder.time("unet_step_ms", "unet CFG step (batch 2)", runs, || {
                    unet.forward(x.sample.clone(), x.timestep.clone(), x.context.clone())
                        .expect("unet");
                });
            }
            if self.wants("controlnet") {
                let controlnet = ControlNetStep::<B>::new(&configs, latent, &device)?;
                let what = "controlnet + unet CFG step (batch 2)";
                recorder.time("controlnet_unet_step_ms", what, runs, || {
                    controlnet.run(&unet, &x);
                });
            }
        }

        if self.wants("decode") || self.wants("encode") {
            let vae = channels_last_conv_weights(AutoencoderKL::<B>::new(&configs.vae, &device));
            let vae_runs = runs.min(3);
            if self.wants("decode") {
                let z = randn::<B, 4>([1, 4, latent, latent], &device);
                let what = format!("vae decode ({image}x{image})");
                recorder.time("vae_decode_ms", &what, vae_runs, || {
                    vae.decode(z.clone());
                });
            }
            if self.wants("encode") {
                let pixels = randn::<B, 4>([1, 3, image, image], &device);
                let what = format!("vae encode ({image}x{image})");
                recorder.time("vae_encode_ms", &what, vae_runs, || {
                    vae.encode(pixels.clone()).mode();
                });
            }
        }

        if self.wants("attention") {
            // The 64² level's self-attention of SD1.5 (`tiny`: 256 tokens).
            let shapes = common::attention_shapes(self.size);
            let shape = &shapes[0];
            let [b, h, n, d] = [shape.batch, shape.heads, shape.seq_q, shape.dim];
            let attention_runs = runs.max(10);
            let qkv = || randn::<B, 4>([b, h, n, d], &device);
            let (q, k, v) = (qkv(), qkv(), qkv());
            let what = format!("attention [{b},{h},{n},{d}]");
            recorder.time("attention_ms", &what, attention_runs, || {
                attention(q.clone(), k.clone(), v.clone(), AttentionOptions::default());
            });
            // The same heads as the UNet's layers hand them over: `[b, n, h·d]` projections.
            let tokens = || randn::<B, 3>([b, n, h * d], &device);
            let (q, k, v) = (tokens(), tokens(), tokens());
            let what = format!("multi-head attention [{b},{n},{h}·{d}]");
            recorder.time("multi_head_attention_ms", &what, attention_runs, || {
                let options = AttentionOptions::default();
                multi_head_attention(q.clone(), k.clone(), v.clone(), h, options);
            });
        }

        if self.steps > 0 && self.wants("pipeline") {
            let sd = common::pipeline::<B>(self.size, &device)?;
            let generation = Generation::new("a photograph of an astronaut riding a horse")
                .with_steps(self.steps)
                .with_size(image, image)
                .with_seed(1);
            let steps = self.steps;
            let what =
                format!("txt2img, {steps} steps with CFG, {image}x{image} (whole generation)");
            recorder.time("pipeline_ms", &what, runs.min(3), || {
                sd.text_to_image(&generation, &mut NoProgress)
                    .expect("pipeline");
            });
        }

        if recorder.peak_reserved > 0 {
            let mib = recorder.peak_reserved as f64 / (1024.0 * 1024.0);
            println!("peak device memory (pool reservation): {mib:.0} MiB");
            println!("result peak_device_mib={mib:.1}");
        }
        if let Some(mib) = common::peak_rss_mib() {
            println!("peak resident memory (process): {mib:.0} MiB");
            println!("result peak_rss_mib={mib:.1}");
        }
        Ok(())
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.to_string());
    let size = Size::parse(&arg(2, "tiny"))
        .ok_or_else(|| anyhow::anyhow!("the model size is `tiny` or `sd15`"))?;
    let latent = arg(3, &size.latent().to_string()).parse()?;
    let steps = arg(4, "25").parse()?;
    let only = args
        .get(5)
        .map(|s| s.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    let default_runs = if size == Size::Sd15 { 3 } else { 10 };
    let runs = match std::env::var("BENCH_RUNS") {
        Ok(v) => v.parse()?,
        Err(_) => default_runs,
    };
    let bench = Bench {
        size,
        latent,
        steps,
        only,
        runs,
    };
    run_on(arg(0, "ndarray").parse()?, arg(1, "f32").parse()?, bench)?;
    Ok(())
}
