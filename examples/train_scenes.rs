//! Trains the scenes model (`prompt_diffusion::train`) on the CPU, in resumable pieces.
//!
//! ```text
//! # 1. the VAE (checkpoints in runs/scenes/vae/)
//! cargo run --release --example train_scenes -- vae --run runs/scenes --steps 3000
//! # 2. the text encoder and the UNet against it (runs/scenes/text-to-image/)
//! cargo run --release --example train_scenes -- text-to-image --run runs/scenes --steps 40000
//! # 3. the EMA weights as a diffusers folder in f16
//! cargo run --release --example train_scenes -- export --run runs/scenes --to models/scenes
//! # the checker's accuracy on the VAE's reconstructions of 200 held-out scenes (its ceiling)
//! cargo run --release --example train_scenes -- reconstruct --run runs/scenes
//! # 4. the checker's accuracy on 200 held-out captions, and a grid of the first 16
//! cargo run --release --example train_scenes -- evaluate --model models/scenes --grid grid.png
//! ```
//!
//! Each stage resumes from its latest checkpoint and stops at `--steps` steps in all (a later
//! call with more steps goes on), so the run can be split over several sessions with the same
//! result. Options: `--batch N`, `--lr X`, `--warmup N`, `--seed N` (a fresh run only),
//! `--crop N` (VAE crop side, default 32), `--latent-noise X` (VAE decoder's latent noise,
//! default 0.3), `--snr-gamma X` (Min-SNR-γ, default 5; 0 off), `--x0-weight-floor X`
//! (default 0.25), `--offset-noise X` (default 0.1), `--workers N` (threads per
//! batch), `--from DIR` (text-to-image without a checkpoint in the run: continue from an
//! exported folder, such as the committed `models/scenes`), `--latent-channels N`, `--vae-channels A,B,C`, `--unet-channels A,B` (sizes other
//! than the committed model's),
//! `--every N` (checkpoint interval, default 250), `--keep N` (checkpoints kept, default 2),
//! `--minutes M` (stop after a checkpoint once M minutes have passed). The recipe and the
//! figures are in docs/training.md.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::tensor::DType;
use image::{GenericImage, Rgb, RgbImage};
use prompt_diffusion::backends::{Flex, FlexDevice};
use prompt_diffusion::core::progress::NoProgress;
use prompt_diffusion::scenes::{Accuracy, SceneGenerator, Split, check};
use prompt_diffusion::schedulers::SchedulerKind;
use prompt_diffusion::train::{
    Autodiff, ScenesModelConfig, TextToImageTrainer, TrainConfig, TrainingStage, VaeTrainer,
    checkpoints, export_pipeline, fit_scaling_factor, latest_checkpoint, read_training_state,
    save_training_state,
};
use prompt_diffusion::{Generation, ModelOptions, StableDiffusion};

type B = Autodiff<Flex>;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((stage, rest)) = args.split_first() else {
        anyhow::bail!("usage: train_scenes vae|text-to-image|export --run DIR [options]");
    };
    let options = parse_options(rest)?;
    let run = PathBuf::from(options.get("run").map_or("runs/scenes", String::as_str));
    let device = FlexDevice;
    match stage.as_str() {
        "vae" => train_vae(&run, &options, &device),
        "text-to-image" => train_text_to_image(&run, &options, &device),
        "export" => export(&run, &options, &device),
        "evaluate" => evaluate(&options, &device),
        "reconstruct" => reconstruct(&run, &options, &device),
        other => anyhow::bail!("unknown stage `{other}` (vae, text-to-image, export or evaluate)"),
    }
}

fn parse_options(args: &[String]) -> anyhow::Result<HashMap<String, String>> {
    let mut options = HashMap::new();
    let mut it = args.iter();
    while let Some(key) = it.next() {
        let Some(name) = key.strip_prefix("--") else {
            anyhow::bail!("expected an option, got `{key}`");
        };
        let Some(value) = it.next() else {
            anyhow::bail!("`{key}` needs a value");
        };
        options.insert(name.to_string(), value.clone());
    }
    Ok(options)
}

fn get<T: std::str::FromStr>(
    options: &HashMap<String, String>,
    key: &str,
    default: T,
) -> anyhow::Result<T>
where
    T::Err: std::fmt::Display,
{
    match options.get(key) {
        Some(v) => v.parse().map_err(|e| anyhow::anyhow!("--{key} {v}: {e}")),
        None => Ok(default),
    }
}

/// The settings of a fresh run from the options, over `defaults`.
fn train_config(
    options: &HashMap<String, String>,
    defaults: TrainConfig,
) -> anyhow::Result<TrainConfig> {
    Ok(defaults
        .clone()
        .with_batch_size(get(options, "batch", defaults.batch_size)?)
        .with_learning_rate(get(options, "lr", defaults.learning_rate)?)
        .with_warmup_steps(get(options, "warmup", defaults.warmup_steps)?)
        .with_seed(get(options, "seed", defaults.seed)?)
        .with_crop(get(options, "crop", defaults.crop)?)
        .with_latent_noise(get(options, "latent-noise", defaults.latent_noise)?)
        .with_snr_gamma(get(options, "snr-gamma", defaults.snr_gamma)?)
        .with_x0_weight_floor(get(options, "x0-weight-floor", defaults.x0_weight_floor)?)
        .with_offset_noise(get(options, "offset-noise", defaults.offset_noise)?)
        .with_workers(get(options, "workers", defaults.workers)?))
}

/// Steps `trainer` until `--steps` in all or `--minutes`, with checkpoints in `root` every
/// `--every` steps.
fn run_loop(
    options: &HashMap<String, String>,
    trainer: &mut impl TrainingStage,
    root: &Path,
) -> anyhow::Result<()> {
    let start = trainer.steps();
    let total: usize = get(options, "steps", 1000)?;
    let every: usize = get(options, "every", 250)?;
    let keep: usize = get(options, "keep", 2)?;
    let minutes: f64 = get(options, "minutes", f64::INFINITY)?;
    let began = Instant::now();
    let mut window = (Instant::now(), 0usize, 0.0f64);
    for done in start + 1..=total {
        let loss = trainer.step()?;
        window.1 += 1;
        window.2 += f64::from(loss);
        if done % 50 == 0 || done == total {
            let secs = window.0.elapsed().as_secs_f64();
            println!(
                "step {done:6}  loss {:.5}  {:.2} steps/s",
                window.2 / window.1 as f64,
                window.1 as f64 / secs
            );
            window = (Instant::now(), 0, 0.0);
        }
        let out_of_time = began.elapsed().as_secs_f64() > minutes * 60.0;
        if done % every == 0 || done == total || out_of_time {
            let checkpoint = trainer.save(root)?;
            println!("saved {}", checkpoint.dir().display());
            prune(root, keep)?;
            if out_of_time {
                break;
            }
        }
    }
    Ok(())
}

/// Removes all but the `keep` latest checkpoints of `root`.
fn prune(root: &Path, keep: usize) -> anyhow::Result<()> {
    let all = checkpoints(root)?;
    let excess = all.len().saturating_sub(keep.max(1));
    for (_, checkpoint) in all.into_iter().take(excess) {
        std::fs::remove_dir_all(checkpoint.dir())?;
    }
    Ok(())
}

fn train_vae(
    run: &Path,
    options: &HashMap<String, String>,
    device: &FlexDevice,
) -> anyhow::Result<()> {
    let root = run.join("vae");
    let mut trainer = match latest_checkpoint(&root)? {
        Some(checkpoint) => {
            println!("resuming {}", checkpoint.dir().display());
            VaeTrainer::<B>::resume(&checkpoint, device)?
        }
        None => {
            let defaults = TrainConfig::default()
                .with_batch_size(16)
                .with_learning_rate(1e-3)
                .with_warmup_steps(100)
                .with_crop(32)
                .with_latent_noise(0.3);
            let mut config = ScenesModelConfig::scenes().vae;
            config.latent_channels = get(options, "latent-channels", config.latent_channels)?;
            if let Some(channels) = options.get("vae-channels") {
                config.block_out_channels = channels
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?;
                let levels = config.block_out_channels.len();
                config.down_block_types.truncate(levels);
                config.up_block_types.truncate(levels);
                config
                    .down_block_types
                    .resize(levels, config.down_block_types[0]);
                config
                    .up_block_types
                    .resize(levels, config.up_block_types[0]);
            }
            VaeTrainer::<B>::new(&config, train_config(options, defaults)?, device)
        }
    };
    run_loop(options, &mut trainer, &root)
}

fn train_text_to_image(
    run: &Path,
    options: &HashMap<String, String>,
    device: &FlexDevice,
) -> anyhow::Result<()> {
    let root = run.join("text-to-image");
    let mut trainer = match (latest_checkpoint(&root)?, options.get("from")) {
        (Some(checkpoint), _) => {
            println!("resuming {}", checkpoint.dir().display());
            TextToImageTrainer::<B>::resume(&checkpoint, device)?
        }
        (None, Some(folder)) => {
            // A run carried over in an exported folder: fresh optimiser moments, a short
            // warm-up again, the folder's settings otherwise.
            let folder = Path::new(folder);
            let saved = read_training_state(folder)?.train.with_warmup_steps(100);
            let train = train_config(options, saved)?;
            let trainer = TextToImageTrainer::<B>::from_pipeline(folder, train, device)?;
            println!(
                "continuing {} from step {}",
                folder.display(),
                trainer.steps()
            );
            trainer
        }
        (None, None) => {
            let Some(vae_checkpoint) = latest_checkpoint(&run.join("vae"))? else {
                anyhow::bail!(
                    "no VAE checkpoint in {}: train the VAE first",
                    run.display()
                );
            };
            println!("VAE from {}", vae_checkpoint.dir().display());
            let mut vae = VaeTrainer::<B>::resume(&vae_checkpoint, device)?.into_vae();
            let scaling = fit_scaling_factor(&vae, 0x5ca1e, 256, device)?;
            println!("latent scaling factor {scaling:.5}");
            vae.set_scaling_factor(scaling);
            let defaults = TrainConfig::default()
                .with_batch_size(32)
                .with_learning_rate(1e-3)
                .with_warmup_steps(300)
                .with_snr_gamma(5.0)
                .with_x0_weight_floor(0.25)
                .with_offset_noise(0.1);
            let mut config = ScenesModelConfig::scenes();
            if let Some(channels) = options.get("unet-channels") {
                let channels: Vec<usize> = channels
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?;
                let latent = vae.config().sample_size / vae.config().downsampling_factor();
                config.unet = ScenesModelConfig::unet(&channels, latent);
            }
            TextToImageTrainer::<B>::new(config, vae, train_config(options, defaults)?, device)?
        }
    };
    run_loop(options, &mut trainer, &root)
}

fn export(
    run: &Path,
    options: &HashMap<String, String>,
    device: &FlexDevice,
) -> anyhow::Result<()> {
    let to = PathBuf::from(options.get("to").map_or("models/scenes", String::as_str));
    let tokenizer = PathBuf::from(
        options
            .get("tokenizer")
            .map_or("fixtures/tiny-sd/tokenizer", String::as_str),
    );
    let Some(checkpoint) = latest_checkpoint(&run.join("text-to-image"))? else {
        anyhow::bail!("no text-to-image checkpoint in {}", run.display());
    };
    let trainer = TextToImageTrainer::<B>::resume(&checkpoint, device)?;
    let weights = options.get("weights").map_or("ema", String::as_str);
    let model = match weights {
        "ema" => trainer.ema().module.clone(),
        "raw" => trainer.model().valid(),
        // The random-weight baseline: the same architecture and VAE, untrained.
        "init" => prompt_diffusion::train::TextToImageModel::new(trainer.config(), device)?,
        other => anyhow::bail!("--weights {other}: ema, raw or init"),
    };
    let dtype = match options.get("dtype").map_or("f16", String::as_str) {
        "f32" => DType::F32,
        _ => DType::F16,
    };
    export_pipeline(
        &model,
        trainer.vae(),
        trainer.config(),
        &tokenizer,
        &to,
        dtype,
    )?;
    if weights == "ema" {
        save_training_state(&to, &trainer.state())?;
    }
    println!(
        "wrote {} ({} weights of step {})",
        to.display(),
        weights,
        trainer.steps()
    );
    Ok(())
}

/// Draws one picture per held-out caption (seed = its index) and reads it with the checker.
fn evaluate(options: &HashMap<String, String>, device: &FlexDevice) -> anyhow::Result<()> {
    let dir = PathBuf::from(options.get("model").map_or("models/scenes", String::as_str));
    let count: usize = get(options, "captions", 200)?;
    let steps: usize = get(options, "steps", 25)?;
    let guidance: f64 = get(options, "guidance", 5.0)?;
    let sd = StableDiffusion::<Flex>::from_pretrained(&dir, &ModelOptions::default(), device)?;
    let side = 64u32;
    let mut accuracy = Accuracy::default();
    let mut pictures = Vec::new();
    let began = Instant::now();
    for (i, scene) in SceneGenerator::with_split(1, Split::HeldOut)
        .take(count)
        .enumerate()
    {
        let caption = scene.caption();
        let generation = Generation::new(caption.as_str())
            .with_steps(steps)
            .with_guidance_scale(guidance)
            .with_scheduler(SchedulerKind::Ddim)
            .with_size(side as usize, side as usize)
            .with_seed(i as u64);
        let picture = sd.text_to_image(&generation, &mut NoProgress)?.remove(0);
        let report = check(&picture, &scene);
        accuracy.add(&report);
        if pictures.len() < 16 {
            println!("{:2}: {caption}", pictures.len());
            pictures.push(picture);
        }
    }
    println!(
        "{count} captions, {steps} DDIM steps, guidance {guidance}: {:.1} s per picture",
        began.elapsed().as_secs_f64() / count.max(1) as f64
    );
    println!("{}", Accuracy::MARKDOWN_HEADER);
    println!("| {} {accuracy}", dir.display());
    if let Some(path) = options.get("grid") {
        save_grid(&pictures, 4, path)?;
    }
    Ok(())
}

/// Reads the latest VAE checkpoint's reconstructions of held-out scenes with the checker.
fn reconstruct(
    run: &Path,
    options: &HashMap<String, String>,
    device: &FlexDevice,
) -> anyhow::Result<()> {
    use burn::tensor::ElementConversion;
    use prompt_diffusion::core::image::{PixelRange, images_to_tensor, tensor_to_images};
    let Some(checkpoint) = latest_checkpoint(&run.join("vae"))? else {
        anyhow::bail!("no VAE checkpoint in {}", run.display());
    };
    let vae = VaeTrainer::<B>::resume(&checkpoint, device)?.into_vae();
    let count: usize = get(options, "captions", 200)?;
    let scenes: Vec<_> = SceneGenerator::with_split(1, Split::HeldOut)
        .take(count)
        .collect();
    let mut accuracy = Accuracy::default();
    let mut squared = 0.0;
    let mut pairs = Vec::new();
    for chunk in scenes.chunks(25) {
        let pictures = chunk
            .iter()
            .map(|s| s.render(64))
            .collect::<Result<Vec<_>, _>>()?;
        let x = images_to_tensor::<Flex>(&pictures, PixelRange::MinusOneToOne, device)?;
        let y = vae.decode(vae.encode(x.clone()).mean);
        squared += (y.clone() - x).square().sum().into_scalar().elem::<f64>();
        let out = tensor_to_images(y, PixelRange::MinusOneToOne)?;
        for ((picture, scene), original) in out.iter().zip(chunk).zip(pictures) {
            accuracy.add(&check(picture, scene));
            if pairs.len() < 16 {
                pairs.push(original);
                pairs.push(picture.clone());
            }
        }
    }
    let mse = squared / (count * 3 * 64 * 64) as f64;
    println!(
        "{} (step {}): mse {mse:.5}",
        checkpoint.dir().display(),
        checkpoint.state()?.step
    );
    println!("{}", Accuracy::MARKDOWN_HEADER);
    println!("| reconstructions {accuracy}");
    if let Some(path) = options.get("grid") {
        save_grid(&pairs, 8, path)?;
    }
    Ok(())
}

/// Writes 64 × 64 `pictures` as a grid of `columns` on white.
fn save_grid(pictures: &[RgbImage], columns: u32, path: &str) -> anyhow::Result<()> {
    let (side, gap) = (64u32, 2u32);
    let rows = (pictures.len() as u32).div_ceil(columns);
    let mut grid = RgbImage::from_pixel(
        columns * (side + gap) + gap,
        rows * (side + gap) + gap,
        Rgb([255; 3]),
    );
    for (i, picture) in pictures.iter().enumerate() {
        let (x, y) = (i as u32 % columns, i as u32 / columns);
        grid.copy_from(picture, gap + x * (side + gap), gap + y * (side + gap))?;
    }
    grid.save(path)?;
    println!("wrote {path}");
    Ok(())
}
