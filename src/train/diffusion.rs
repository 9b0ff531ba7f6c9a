//! Stage 2: the text encoder and the UNet learn Stable Diffusion's objective on scene latents.

use std::path::Path;

use burn::module::{AutodiffModule, Module, ModuleMapper, Param};
use burn::optim::AdamW;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::prelude::*;
use burn::tensor::DType;
use burn::tensor::backend::AutodiffBackend;
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use super::checkpoint::{Checkpoint, TrainState, TrainingStage};
use super::ema::Ema;
use super::model::{ScenesModelConfig, TrainConfig, materialize, scene_batch, step_seed};
use super::optim::{adamw, update};
use super::parallel::{split, summed_gradients};
use crate::clip::{CLIPTextConfig, CLIPTextModel, ClipTokenizer};
use crate::core::Result;
use crate::core::noise::{SeededNoise, noise_tensor};
use crate::core::weights::{LoadOptions, Pretrained};
use crate::schedulers::{NoiseSchedule, SchedulerConfig};
use crate::unet::{UNet2DConditionConfig, UNet2DConditionModel};
use crate::vae::{AutoencoderKL, AutoencoderKLConfig};

/// The stage name in a checkpoint's state.
const STAGE: &str = "text-to-image";

/// The file of an exported pipeline folder that records the training step and settings it
/// was exported at, from which [`TextToImageTrainer::from_pipeline`] continues.
pub const TRAINING_STATE: &str = "training.json";

/// Marks every float parameter of a loaded model as trained (a leaf that collects gradients).
struct Trainable;

impl<B: AutodiffBackend> ModuleMapper<B> for Trainable {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        param.map(|tensor| tensor.detach().require_grad())
    }
}

/// The trained part of a Stable Diffusion model: the text encoder and the UNet.
#[derive(Module, Debug)]
pub struct TextToImageModel<B: Backend> {
    /// The CLIP text encoder.
    pub text_encoder: CLIPTextModel<B>,
    /// The denoising UNet.
    pub unet: UNet2DConditionModel<B>,
}

impl<B: Backend> TextToImageModel<B> {
    /// Fresh (randomly initialised) models of `config`.
    ///
    /// # Errors
    /// An invalid UNet config.
    pub fn new(config: &ScenesModelConfig, device: &B::Device) -> Result<Self> {
        Ok(materialize(Self {
            text_encoder: CLIPTextModel::init(&config.text_encoder, device),
            unet: UNet2DConditionModel::new(&config.unet, device)?,
        }))
    }

    /// ε̂ for `noisy` latents at `timesteps`, conditioned on token ids.
    ///
    /// # Shapes
    /// `noisy [b, 4, h, w]`, `timesteps [b]`, `ids [b, 77]` → `[b, 4, h, w]`.
    ///
    /// # Errors
    /// Shapes that do not fit the UNet.
    pub fn forward(
        &self,
        noisy: Tensor<B, 4>,
        timesteps: Tensor<B, 1>,
        ids: Tensor<B, 2, Int>,
    ) -> Result<Tensor<B, 4>> {
        let context = self.text_encoder.forward(ids).last_hidden_state;
        self.unet.forward(noisy, timesteps, context)
    }
}

/// Trains a [`TextToImageModel`] against a frozen VAE: per step, `batch_size` training scenes
/// and captions (each replaced by `""` with probability `caption_dropout`), `z₀ = s · μ(x) +
/// s · σ(x) · n` (a posterior sample scaled by the VAE's `scaling_factor`), `t ~ U{0, …, 999}`,
/// `z_t = √ᾱ_t z₀ + √(1 − ᾱ_t) ε`; loss = `mean((ε̂(z_t, t, caption) − ε)²)`. AdamW with linear
/// warm-up, the gradient norm clipped, and an [`Ema`] of the weights after every step.
pub struct TextToImageTrainer<B: AutodiffBackend> {
    model: TextToImageModel<B>,
    ema: Ema<TextToImageModel<B::InnerBackend>>,
    vae: AutoencoderKL<B::InnerBackend>,
    tokenizer: ClipTokenizer,
    optimizer: OptimizerAdaptor<AdamW, TextToImageModel<B>, B>,
    config: ScenesModelConfig,
    alphas_cumprod: Vec<f32>,
    train: TrainConfig,
    steps: usize,
    device: B::Device,
}

impl<B: AutodiffBackend> TextToImageTrainer<B> {
    /// A trainer of fresh models of `config` against the trained `vae` (whose config, with
    /// its fitted scaling factor, replaces `config.vae`; the UNet takes and gives its number
    /// of latent channels).
    ///
    /// # Errors
    /// An invalid config.
    pub fn new(
        mut config: ScenesModelConfig,
        vae: AutoencoderKL<B::InnerBackend>,
        train: TrainConfig,
        device: &B::Device,
    ) -> Result<Self> {
        config.vae = vae.config().clone();
        let latent = config.vae.latent_channels;
        (config.unet.trunk.in_channels, config.unet.out_channels) = (latent, latent);
        let model = TextToImageModel::new(&config, device)?;
        let ema = Ema::new(model.valid(), train.ema_decay);
        Self::from_parts(config, model, ema, vae, adamw(&train), train, device)
    }

    fn from_parts(
        config: ScenesModelConfig,
        model: TextToImageModel<B>,
        ema: Ema<TextToImageModel<B::InnerBackend>>,
        vae: AutoencoderKL<B::InnerBackend>,
        optimizer: OptimizerAdaptor<AdamW, TextToImageModel<B>, B>,
        train: TrainConfig,
        device: &B::Device,
    ) -> Result<Self> {
        // The average is updated once per step.
        let steps = ema.updates;
        let alphas_cumprod = NoiseSchedule::new(&config.scheduler, false, false)?.alphas_cumprod;
        Ok(Self {
            model,
            ema,
            vae,
            tokenizer: ClipTokenizer::openai_clip()?,
            optimizer,
            config,
            alphas_cumprod,
            train,
            steps,
            device: device.clone(),
        })
    }

    /// Resumes from `checkpoint` (written by [`save`](Self::save)) with the settings it holds.
    ///
    /// # Errors
    /// Unreadable or mismatched checkpoint files.
    pub fn resume(checkpoint: &Checkpoint, device: &B::Device) -> Result<Self> {
        let state = checkpoint.state_for(STAGE)?;
        let config = ScenesModelConfig {
            text_encoder: checkpoint.config::<CLIPTextConfig>("text_encoder")?,
            unet: checkpoint.config::<UNet2DConditionConfig>("unet")?,
            vae: checkpoint.config::<AutoencoderKLConfig>("vae")?,
            scheduler: checkpoint.config::<SchedulerConfig>("scheduler")?,
        };
        let fresh = TextToImageModel::<B>::new(&config, device)?;
        let model = checkpoint.load_module(fresh, "model", device)?;
        let ema_module = checkpoint.load_module(model.valid(), "ema", device)?;
        let mut ema = Ema::new(ema_module, state.train.ema_decay);
        ema.updates = state.step;
        let vae = AutoencoderKL::new(&config.vae, device);
        let vae = checkpoint.load_module(vae, "vae", device)?;
        let optimizer = checkpoint.load_optimizer(adamw(&state.train), device)?;
        Self::from_parts(config, model, ema, vae, optimizer, state.train, device)
    }

    /// Continues training from a pipeline folder written by
    /// [`export_pipeline`](super::export_pipeline) with its [`TRAINING_STATE`] file
    /// ([`read_training_state`](super::read_training_state)): the text encoder, the UNet and
    /// the VAE of `dir` in float32 (whatever dtype the folder holds), from the recorded step,
    /// with the settings `train` (usually the recorded ones, see
    /// [`read_training_state`](super::read_training_state)). The weights and their moving
    /// average both start from the folder's (the average that was exported), the optimiser's
    /// moments from zero, and the learning rate warms up again from this step
    /// ([`TrainConfig::warmup_from`]). Where checkpoints do not travel (a fresh machine), this
    /// carries a run over in the committed model folder; the run then differs from an
    /// uninterrupted one by the reset moments and the rounding of the folder's weights.
    ///
    /// # Errors
    /// A folder without a text-to-image `training.json`, or with unreadable components.
    pub fn from_pipeline(dir: &Path, train: TrainConfig, device: &B::Device) -> Result<Self> {
        let state =
            super::read_training_state(dir)?.expect_stage(STAGE, &dir.join(TRAINING_STATE))?;
        let options = LoadOptions::default().with_dtype(DType::F32);
        let config = ScenesModelConfig {
            text_encoder: CLIPTextConfig::from_file(dir.join("text_encoder/config.json"))?,
            unet: UNet2DConditionConfig::from_file(dir.join("unet/config.json"))?,
            vae: AutoencoderKLConfig::from_file(dir.join("vae/config.json"))?,
            scheduler: SchedulerConfig::from_file(dir.join("scheduler/scheduler_config.json"))?,
        };
        let model = TextToImageModel {
            text_encoder: CLIPTextModel::from_pretrained(
                dir.join("text_encoder"),
                &options,
                device,
            )?,
            unet: UNet2DConditionModel::from_pretrained(dir.join("unet"), &options, device)?,
        }
        .map(&mut Trainable);
        let vae = AutoencoderKL::from_pretrained(dir.join("vae"), &options, device)?;
        let train = train.with_warmup_from(state.step);
        let mut ema = Ema::new(model.valid(), train.ema_decay);
        ema.updates = state.step;
        Self::from_parts(config, model, ema, vae, adamw(&train), train, device)
    }

    /// The stage's step and settings, as a checkpoint's `state.json` and an exported
    /// folder's [`TRAINING_STATE`] record them.
    pub fn state(&self) -> TrainState {
        TrainState {
            stage: STAGE.into(),
            step: self.steps,
            train: self.train.clone(),
        }
    }

    /// The model being trained.
    pub fn model(&self) -> &TextToImageModel<B> {
        &self.model
    }

    /// The moving average of the model's weights.
    pub fn ema(&self) -> &Ema<TextToImageModel<B::InnerBackend>> {
        &self.ema
    }

    /// The frozen VAE.
    pub fn vae(&self) -> &AutoencoderKL<B::InnerBackend> {
        &self.vae
    }

    /// The components' configs.
    pub fn config(&self) -> &ScenesModelConfig {
        &self.config
    }

    /// The loss on the batch, captions, noise and timesteps drawn from `seed`, without an
    /// update: with a fixed seed, a validation loss to compare across steps.
    ///
    /// # Errors
    /// As [`step`](Self::step).
    pub fn validation_loss(&self, seed: u64) -> Result<Tensor<B, 1>> {
        let batch = self.batch(seed)?;
        batch
            .part(0..self.train.batch_size)
            .loss(&self.model, &self.vae)
    }

    /// The inputs and targets of the batch drawn from `seed`.
    fn batch(&self, seed: u64) -> Result<Batch<B>> {
        let device = self.device.clone();
        let batch = self.train.batch_size;
        let side = self.config.vae.sample_size;
        let (images, mut captions) = scene_batch::<B::InnerBackend>(seed, batch, side, &device)?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xd1ff);
        let threshold = (self.train.caption_dropout.clamp(0.0, 1.0) * u32::MAX as f64) as u64;
        for caption in &mut captions {
            if u64::from(rng.next_u32()) < threshold {
                caption.clear();
            }
        }
        let prompts: Vec<&str> = captions.iter().map(String::as_str).collect();
        let ids = self.tokenizer.encode_batch(&prompts)?;

        let mut noise = SeededNoise::new(seed ^ 0x6e6f);
        let factor = self.config.vae.downsampling_factor();
        let latent = self.config.vae.latent_channels;
        let shape = [batch, latent, side / factor, side / factor];
        let draw = noise_tensor::<B::InnerBackend, 4>(&mut noise, shape, &device, DType::F32)?;
        let mut eps = noise_tensor::<B::InnerBackend, 4>(&mut noise, shape, &device, DType::F32)?;
        if self.train.offset_noise > 0.0 {
            let offset = [batch, latent, 1, 1];
            let offset =
                noise_tensor::<B::InnerBackend, 4>(&mut noise, offset, &device, DType::F32)?;
            eps = eps + offset * self.train.offset_noise;
        }
        let n = self.alphas_cumprod.len() as u64;
        let t: Vec<usize> = (0..batch).map(|_| (rng.next_u64() % n) as usize).collect();
        let coefficients =
            |f: fn(f32) -> f32| t.iter().map(|&i| f(self.alphas_cumprod[i])).collect();
        let weights = t
            .iter()
            .map(|&i| loss_weight(f64::from(self.alphas_cumprod[i]), &self.train))
            .collect();
        Ok(Batch {
            images,
            draw,
            eps,
            signal: coefficients(f32::sqrt),
            noise: coefficients(|a| (1.0 - a).sqrt()),
            timesteps: t.iter().map(|&i| i as f32).collect(),
            weights,
            ids,
            device,
        })
    }
}

impl<B: AutodiffBackend> TrainingStage for TextToImageTrainer<B> {
    /// One step on the batch of step [`steps`](Self::steps), returning the loss before the
    /// update. With `workers` > 1 the batch is split over that many threads.
    ///
    /// # Errors
    /// A failed rendering or tokenisation.
    fn step(&mut self) -> Result<f32> {
        let seed = step_seed(self.train.seed, self.steps);
        let batch = self.batch(seed)?;
        let parts = split(self.train.batch_size, self.train.workers)
            .into_iter()
            .map(|range| batch.part(range))
            .collect();
        let vae = &self.vae;
        let (value, grads) = summed_gradients(&self.model, parts, &self.device, |m, part| {
            part.loss(m, vae)
        })?;
        update(
            &mut self.model,
            &mut self.optimizer,
            grads,
            &self.train,
            &mut self.steps,
        );
        self.ema.update(&self.model);
        Ok(value)
    }

    fn steps(&self) -> usize {
        self.steps
    }

    /// Writes `dir/checkpoint-<steps>/`: the model, its average, the VAE, every config, the
    /// optimiser and the state.
    ///
    /// # Errors
    /// Unwritable files.
    fn save(&self, dir: &std::path::Path) -> Result<Checkpoint> {
        let checkpoint = Checkpoint::create(dir, self.steps)?;
        checkpoint.save_config("text_encoder", &self.config.text_encoder)?;
        checkpoint.save_config("unet", &self.config.unet)?;
        checkpoint.save_config("vae", &self.config.vae)?;
        checkpoint.save_config("scheduler", &self.config.scheduler)?;
        checkpoint.save_module(&self.model, "model")?;
        checkpoint.save_module(&self.ema.module, "ema")?;
        checkpoint.save_module(&self.vae, "vae")?;
        checkpoint.save_optimizer(&self.optimizer)?;
        checkpoint.save_state(&self.state())?;
        Ok(checkpoint)
    }
}

/// The loss weight of a scene at a timestep with `ᾱ = alpha_cumprod`:
/// `(min(SNR, γ) + c) / SNR` with `SNR = ᾱ / (1 − ᾱ)`, γ = [`TrainConfig::snr_gamma`] (∞ when
/// 0) and c = [`TrainConfig::x0_weight_floor`]; 1 when neither is set.
fn loss_weight(alpha_cumprod: f64, train: &TrainConfig) -> f32 {
    let snr = alpha_cumprod / (1.0 - alpha_cumprod);
    let capped = if train.snr_gamma > 0.0 {
        snr.min(train.snr_gamma)
    } else {
        snr
    };
    ((capped + train.x0_weight_floor) / snr) as f32
}

/// A batch's scenes, noise, timesteps and token ids, to be split into parts (each part
/// encodes its own scenes, so the VAE runs on the parts' threads too).
struct Batch<B: AutodiffBackend> {
    images: Tensor<B::InnerBackend, 4>,
    draw: Tensor<B::InnerBackend, 4>,
    eps: Tensor<B::InnerBackend, 4>,
    signal: Vec<f32>,
    noise: Vec<f32>,
    timesteps: Vec<f32>,
    /// Each scene's loss weight ([`loss_weight`]).
    weights: Vec<f32>,
    ids: Vec<Vec<u32>>,
    device: B::Device,
}

/// The part `range` of a [`Batch`], with its share of the batch.
struct Part<B: AutodiffBackend> {
    batch: Batch<B>,
    share: f64,
}

impl<B: AutodiffBackend> Batch<B> {
    fn part(&self, range: std::ops::Range<usize>) -> Part<B> {
        let total = self.timesteps.len();
        let (start, len) = (range.start, range.len());
        Part {
            batch: Batch {
                images: self.images.clone().narrow(0, start, len),
                draw: self.draw.clone().narrow(0, start, len),
                eps: self.eps.clone().narrow(0, start, len),
                signal: self.signal[range.clone()].to_vec(),
                noise: self.noise[range.clone()].to_vec(),
                timesteps: self.timesteps[range.clone()].to_vec(),
                weights: self.weights[range.clone()].to_vec(),
                ids: self.ids[range].to_vec(),
                device: self.device.clone(),
            },
            share: len as f64 / total as f64,
        }
    }
}

impl<B: AutodiffBackend> Part<B> {
    /// `share · mean_i(w_i · mean((ε̂(√ᾱ z₀ + √(1 − ᾱ) ε) − ε)²))` over the part's scenes
    /// `i`, `z₀` the scaled posterior sample of its scenes and `w_i` their loss weights.
    fn loss(
        self,
        model: &TextToImageModel<B>,
        vae: &AutoencoderKL<B::InnerBackend>,
    ) -> Result<Tensor<B, 1>> {
        let Batch {
            images,
            draw,
            eps,
            signal,
            noise,
            timesteps,
            weights,
            ids,
            device,
        } = self.batch;
        let n = timesteps.len();
        let column = |values: Vec<f32>| {
            Tensor::<B::InnerBackend, 1>::from_data(TensorData::new(values, [n]), &device)
                .reshape([n, 1, 1, 1])
        };
        let z0 = vae.scale_latents(vae.encode(images).sample(draw));
        let noisy = z0 * column(signal) + eps.clone() * column(noise);
        let timesteps = Tensor::<B, 1>::from_data(TensorData::new(timesteps, [n]), &device);
        let ids = ClipTokenizer::ids_tensor::<B>(&ids, &device)?;
        let prediction = model.forward(Tensor::from_inner(noisy), timesteps, ids)?;
        let per_scene = (prediction - Tensor::from_inner(eps))
            .square()
            .reshape([n as i32, -1])
            .mean_dim(1)
            .reshape([n]);
        let weights = Tensor::<B, 1>::from_data(TensorData::new(weights, [n]), &device);
        Ok((per_scene * weights).mean() * self.share)
    }
}
