//! Training a tiny Task-Plugin on synthetic pairs on CPU: the validation loss falls, and the
//! checkpoint written in the official layout loads back to the same plugin.

use prompt_diffusion_core::weights::Pretrained;
use std::ops::ControlFlow;
use std::path::Path;

use crate::common::{B, fixtures};
use burn::module::AutodiffModule;
use burn::prelude::*;
use image::RgbImage;
use prompt_diffusion_clip::{CLIPVisionConfig, CLIPVisionModel};
use prompt_diffusion_core::testing::max_abs_diff;
use prompt_diffusion_core::weights::{LoadOptions, TensorSource};
use prompt_diffusion_diff_plugin::train::Autodiff;
use prompt_diffusion_diff_plugin::train::{FrozenModels, PairFolder, PluginTrainer, TrainConfig};
use prompt_diffusion_diff_plugin::{SCBNetConfig, TPBConfig, TaskPlugin};
use prompt_diffusion_schedulers::SchedulerConfig;
use prompt_diffusion_unet::{DownBlockType, UNet2DConditionModel};
use prompt_diffusion_vae::AutoencoderKL;

type AD = Autodiff<B>;

const SIZE: u32 = 32;

/// Clean images are smooth gradients; degraded ones are darker with bright diagonal streaks.
fn write_pairs(dir: &Path, n: u32) {
    for sub in ["clean", "degraded"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    for k in 0..n {
        let clean = RgbImage::from_fn(SIZE, SIZE, |x, y| {
            image::Rgb([
                (x * 7 + k * 40) as u8,
                (y * 6 + 30) as u8,
                ((x + y) * 3 + k * 20) as u8,
            ])
        });
        let degraded = RgbImage::from_fn(SIZE, SIZE, |x, y| {
            let p = clean.get_pixel(x, y).0;
            if (x + 2 * y + k) % 7 == 0 {
                image::Rgb([230, 230, 235])
            } else {
                image::Rgb(p.map(|v| v / 2))
            }
        });
        clean.save(dir.join(format!("clean/{k}.png"))).unwrap();
        degraded
            .save(dir.join(format!("degraded/{k}.png")))
            .unwrap();
    }
}

fn trainer(config: TrainConfig) -> PluginTrainer<AD> {
    let device = Default::default();
    let sd = fixtures().join("../tiny-sd");
    let options = LoadOptions::default();
    let clip = fixtures().join("clip-vision");
    let frozen = FrozenModels {
        unet: UNet2DConditionModel::<AD>::from_pretrained(sd.join("unet"), &options, &device)
            .unwrap(),
        vae: AutoencoderKL::<B>::from_pretrained(sd.join("vae"), &options, &device).unwrap(),
        image_encoder: CLIPVisionModel::<B>::from_pretrained(&clip, &options, &device).unwrap(),
        image_size: CLIPVisionConfig::from_file(clip.join("config.json"))
            .unwrap()
            .image_size,
        scheduler: SchedulerConfig::from_file(sd.join("scheduler/scheduler_config.json")).unwrap(),
    };
    // The tiny UNet's shapes: F^p width 16, SCB level of 16 channels, 2 heads, 8 groups.
    let mut scb = SCBNetConfig::released();
    scb.down_block_types = vec![DownBlockType::CrossAttnDownBlock2D];
    scb.block_out_channels = vec![16];
    scb.cross_attention_dim = prompt_diffusion_core::config::OneOrMany::One(16);
    scb.attention_head_dim = prompt_diffusion_core::config::OneOrMany::One(2);
    scb.norm_num_groups = Some(8);
    let tpb = TPBConfig {
        clip_v_dim: 32,
        num_cross_proj_layers: 2,
        out_dim: 16,
    };
    let plugin = TaskPlugin::new(&tpb, &scb, &device).unwrap();
    PluginTrainer::new(frozen, plugin, config).unwrap()
}

#[test]
fn loss_falls_and_checkpoints_reload() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("pairs");
    write_pairs(&data_dir, 2);
    let data = PairFolder::open(&data_dir).unwrap();
    assert_eq!(data.pairs.len(), 2);
    let config = TrainConfig::default()
        .with_learning_rate(4e-3)
        .with_resolution(SIZE as usize)
        .with_batch_size(2)
        .with_seed(3);
    let mut trainer = trainer(config);
    let device = Default::default();
    let (degraded, clean) = data.batch::<B>(&[0, 1], SIZE as usize, &device).unwrap();
    let validate = |t: &mut PluginTrainer<AD>| -> f32 {
        (0..4)
            .map(|seed| t.evaluate(degraded.clone(), clean.clone(), seed).unwrap())
            .sum::<f32>()
            / 4.0
    };
    let before = validate(&mut trainer);
    let steps = 60;
    let out = dir.path().join("out");
    let losses = trainer
        .train(&data, steps, Some((&out, 30)), &mut |_, _| {
            ControlFlow::Continue(())
        })
        .unwrap();
    let after = validate(&mut trainer);
    let mean = |s: &[f32]| s.iter().sum::<f32>() / s.len() as f32;
    eprintln!(
        "validation loss {before:.4} → {after:.4}; training loss first 10 {:.4}, last 10 {:.4}",
        mean(&losses[..10]),
        mean(&losses[steps - 10..])
    );
    eprintln!("losses: {losses:?}");
    assert_eq!(losses.len(), steps);
    assert!(after < 0.85 * before, "validation loss {before} → {after}");

    // checkpoint-30 and checkpoint-60 in the official layout; the last one reloads exactly.
    for n in [30, 60] {
        let ckpt = out.join(format!("checkpoint-{n}"));
        assert!(ckpt.join("tpb_net.pt").is_file() && ckpt.join("scb_net/config.json").is_file());
    }
    let ckpt = out.join("checkpoint-60");
    let raw = TensorSource::open(ckpt.join("tpb_net.pt")).unwrap();
    assert!(raw.contains("model.visual_projection.6.weight"));
    let scb_raw =
        TensorSource::open(ckpt.join("scb_net/diffusion_pytorch_model.safetensors")).unwrap();
    assert_eq!(
        scb_raw.shape("down_blocks.0.attentions.0.proj_in.weight"),
        Some(&[16, 16, 1, 1][..])
    );
    let reloaded = TaskPlugin::<B>::from_dir(&ckpt, &LoadOptions::default(), &device).unwrap();
    let trained = trainer.plugin().valid();
    let tokens = Tensor::<B, 3>::random([1, 257, 32], burn::tensor::Distribution::Default, &device);
    let prompt = trained.tpb.forward(tokens.clone()).unwrap();
    assert!(max_abs_diff(prompt.clone(), reloaded.tpb.forward(tokens).unwrap()) < 1e-6);
    let z = Tensor::<B, 4>::random([1, 4, 4, 4], burn::tensor::Distribution::Default, &device);
    let t = Tensor::<B, 1>::from_floats([500.0], &device);
    let a = trained
        .scb
        .forward(t.clone(), prompt.clone(), z.clone())
        .unwrap();
    let b = reloaded.scb.forward(t, prompt, z).unwrap();
    for (a, b) in a.into_iter().zip(b) {
        assert!(max_abs_diff(a, b) < 1e-6);
    }
}

#[test]
fn pair_folders_name_missing_images() {
    let dir = tempfile::tempdir().unwrap();
    write_pairs(dir.path(), 1);
    std::fs::remove_file(dir.path().join("clean/0.png")).unwrap();
    let err = PairFolder::open(dir.path()).unwrap_err();
    assert!(err.to_string().contains("clean/0.png"), "{err}");
    let err = PairFolder::open(dir.path().join("nowhere")).unwrap_err();
    assert!(err.to_string().contains("degraded"), "{err}");
}

/// `clip_grad_norm` measures the global L2 norm as PyTorch's `clip_grad_norm_` does and scales
/// every gradient by `max_norm / (norm + 1e-6)` only when that is below 1.
#[test]
fn gradient_clipping_scales_to_the_global_norm() {
    use burn::nn::{Linear, LinearConfig};
    use burn::optim::GradientsParams;
    use prompt_diffusion_diff_plugin::train::clip_grad_norm;

    let device = Default::default();
    let linear: Linear<AD> = LinearConfig::new(3, 2).init(&device);
    // loss = Σ x·W + b summed over a batch of 2: dW[i][j] = Σ_batch x_i, db[j] = 2.
    let x = Tensor::<AD, 2>::from_floats([[1.0, 2.0, -3.0], [0.5, -1.0, 4.0]], &device);
    let grads_of = || {
        let loss = linear.forward(x.clone()).sum();
        GradientsParams::from_grads(loss.backward(), &linear)
    };
    let column = [1.5f64, 1.0, 1.0];
    let expected = (2.0 * column.iter().map(|c| c * c).sum::<f64>() + 2.0 * 4.0).sqrt();
    let weight_grad = |grads: &GradientsParams| -> Vec<f32> {
        grads
            .get::<B, 2>(linear.weight.id)
            .unwrap()
            .into_data()
            .to_vec()
            .unwrap()
    };

    // A bound above the norm leaves the gradients unchanged.
    let mut grads = grads_of();
    let before = weight_grad(&grads);
    let norm = clip_grad_norm(&linear, &mut grads, 100.0);
    assert!((norm - expected).abs() < 1e-5, "{norm} vs {expected}");
    assert_eq!(weight_grad(&grads), before);

    // A bound below it scales every gradient to that norm.
    let mut grads = grads_of();
    assert!((clip_grad_norm(&linear, &mut grads, 1.0) - expected).abs() < 1e-5);
    let scale = (1.0 / (expected + 1e-6)) as f32;
    for (a, b) in weight_grad(&grads).iter().zip(&before) {
        assert!((a - b * scale).abs() < 1e-6, "{a} vs {b}·{scale}");
    }
    let after = clip_grad_norm(&linear, &mut grads, 100.0);
    assert!((after - 1.0).abs() < 1e-5, "norm after clipping {after}");
}
