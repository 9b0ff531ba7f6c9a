//! Training a Diff-Plugin Task-Plugin on (degraded, clean) pairs, writing checkpoints in the
//! official layout (`checkpoint-N/scb_net/`, `checkpoint-N/tpb_net.pt`).
//!
//! The pairs folder holds `degraded/<name>` and `clean/<name>`.
//!
//! ```text
//! cargo run --release --features train --example train_plugin -- <sd-1.4-folder> <clip-vit-large-patch14> \
//!     <pairs-folder> <output-folder> [steps] [learning rate]
//! # The tiny random test model (a few seconds per step on a laptop):
//! cargo run --release --features train --example train_plugin -- fixtures/tiny-sd \
//!     fixtures/diff_plugin/clip-vision my-pairs out 50 1e-3
//! ```

use prompt_diffusion::core::weights::Pretrained;
use std::ops::ControlFlow;

use burn::module::AutodiffModule;
use prompt_diffusion::backends::{Flex, FlexDevice};
use prompt_diffusion::clip::{CLIPVisionConfig, CLIPVisionModel};
use prompt_diffusion::core::weights::LoadOptions;
use prompt_diffusion::diff_plugin::train::{
    Autodiff, FrozenModels, PairFolder, PluginTrainer, TrainConfig,
};
use prompt_diffusion::diff_plugin::{SCBNetConfig, TPBConfig, TaskPlugin};
use prompt_diffusion::{ModelOptions, StableDiffusion};

type B = Autodiff<Flex>;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [base, clip, pairs, output, rest @ ..] = &args[..] else {
        anyhow::bail!(
            "usage: train_plugin <sd-folder> <clip-vision-folder> <pairs> <output> [steps] [lr]"
        );
    };
    let steps: usize = rest.first().map(|s| s.parse()).transpose()?.unwrap_or(1000);
    let learning_rate: f64 = rest.get(1).map(|s| s.parse()).transpose()?.unwrap_or(1e-5);

    let device = FlexDevice;
    // The base model on the autodiff backend: the UNet passes gradients to the plugin; the VAE
    // and CLIP run without them.
    let sd = StableDiffusion::<B>::from_pretrained(base, &ModelOptions::default(), &device)?;
    let clip_config = CLIPVisionConfig::from_file(format!("{clip}/config.json"))?;
    let resolution = sd.native_size();
    let components = sd.components;
    let unet_config = components.unet.config().clone();
    let frozen = FrozenModels {
        unet: components.unet,
        vae: components.vae.valid(),
        image_encoder: CLIPVisionModel::<Flex>::from_pretrained(
            clip,
            &LoadOptions::default(),
            &device,
        )?,
        image_size: clip_config.image_size,
        scheduler: components.scheduler,
    };

    // A fresh plugin shaped for these models (the released shape for SD1.4 + ViT-L/14).
    let scb = SCBNetConfig::for_unet(&unet_config)?;
    let tpb = TPBConfig {
        clip_v_dim: clip_config.hidden_size,
        num_cross_proj_layers: 2,
        out_dim: scb.context_width(),
    };
    let plugin = TaskPlugin::<B>::new(&tpb, &scb, &device)?;
    let config = TrainConfig::default()
        .with_learning_rate(learning_rate)
        .with_resolution(resolution);
    let mut trainer = PluginTrainer::new(frozen, plugin, config)?;

    let data = PairFolder::open(pairs)?;
    eprintln!("{} pairs, {steps} steps", data.pairs.len());
    let every = (steps / 4).max(1);
    let mut report = |step: usize, loss: f32| {
        eprintln!("step {step}: loss {loss:.5}");
        ControlFlow::Continue(())
    };
    trainer.train(&data, steps, Some((output.as_ref(), every)), &mut report)?;
    eprintln!("checkpoints in {output}/checkpoint-*");
    Ok(())
}
