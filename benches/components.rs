//! The components around the UNet step, random weights: a ControlNet + UNet step with
//! classifier-free guidance, VAE decode and encode, and the CLIP text encoder.
//!
//! ```text
//! cargo bench --bench components                                 # tiny config, ndarray, f32
//! cargo bench --bench components -- vae_decode                   # one group
//! BENCH_CONFIG=sd15 BENCH_BACKEND=cuda BENCH_PRECISION=f16 cargo bench --features cuda --bench components
//! ```
//! At `sd15` size: ControlNet (SD1.5 ControlNet config, 3-channel 512² hint) + UNet at batch 2
//! over 64² latents; VAE decode 1×4×64×64 → 512² and encode 512² → 64²; CLIP ViT-L/14 text
//! encoder on 2 × 77 tokens. `tiny` uses fixtures/tiny-sd's sizes (16² latents, 128² images).
//! The plain UNet step is `benches/unet_step.rs`; see `common` for the environment variables.

mod common;

use burn::prelude::*;
use common::{
    BenchEnv, ControlNetStep, CriterionBench, StepInputs, bench_id, context_width, randn, sync,
};
use criterion::Criterion;
use prompt_diffusion::clip::CLIPTextModel;
use prompt_diffusion::core::Result;
use prompt_diffusion::core::nn::channels_last_conv_weights;
use prompt_diffusion::unet::UNet2DConditionModel;
use prompt_diffusion::vae::AutoencoderKL;

/// Times `step` under `id` after one untimed call (kernel compilation and autotuning).
fn bench<O>(c: &mut Criterion, id: &str, mut step: impl FnMut() -> O) {
    step();
    c.bench_function(id, |b| b.iter(&mut step));
}

/// The components around the UNet step.
struct Components;

impl CriterionBench for Components {
    fn run<B: Backend>(c: &mut Criterion, env: BenchEnv, device: B::Device) -> Result<()> {
        let configs = env.size.configs()?;
        let latent = env.size.latent();
        let image = latent * configs.vae.downsampling_factor();
        let width = context_width(&configs.unet);
        let sync = || sync::<B>(&device);

        {
            let unet =
                channels_last_conv_weights(UNet2DConditionModel::<B>::new(&configs.unet, &device)?);
            let controlnet = ControlNetStep::<B>::new(&configs, latent, &device)?;
            let x = StepInputs::<B>::new(latent, width, &device);
            let id = bench_id::<B>(
                "controlnet_unet_step",
                &device,
                &env,
                &format!("{latent}x{latent}"),
            );
            bench(c, &id, || {
                let out = controlnet.run(&unet, &x);
                sync();
                out
            });
        }

        {
            let vae = channels_last_conv_weights(AutoencoderKL::<B>::new(&configs.vae, &device));
            let z = randn::<B, 4>([1, 4, latent, latent], &device);
            let id = bench_id::<B>("vae_decode", &device, &env, &format!("{image}x{image}"));
            bench(c, &id, || {
                let out = vae.decode(z.clone());
                sync();
                out
            });
            let pixels = randn::<B, 4>([1, 3, image, image], &device);
            let id = bench_id::<B>("vae_encode", &device, &env, &format!("{image}x{image}"));
            bench(c, &id, || {
                let out = vae.encode(pixels.clone()).mode();
                sync();
                out
            });
        }

        let clip = channels_last_conv_weights(CLIPTextModel::<B>::init(&configs.clip, &device));
        let ids = common::token_ids::<B>(configs.clip.vocab_size, &device);
        let id = bench_id::<B>("clip_text", &device, &env, "2x77");
        bench(c, &id, || {
            let out = clip.forward(ids.clone());
            sync();
            out
        });
        Ok(())
    }
}

common::bench_main!(Components);
