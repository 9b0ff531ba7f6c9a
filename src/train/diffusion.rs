//! Stage 2: the text encoder and the UNet learn Stable Diffusion's objective on scene latents.

use burn::module::{AutodiffModule, Module};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::DType;
use burn::tensor::backend::AutodiffBackend;
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use super::checkpoint::{Checkpoint, TrainState};
use super::ema::Ema;
use super::model::{ScenesModelConfig, TrainConfig, scene_batch, step_seed};
use super::vae::adamw;
use crate::clip::{CLIPTextConfig, CLIPTextModel, ClipTokenizer};
use crate::core::noise::{SeededNoise, noise_tensor};
use crate::core::{Error, Result};
use crate::diff_plugin::train::clip_grad_norm;
use crate::schedulers::{NoiseSchedule, SchedulerConfig};
use crate::unet::{UNet2DConditionConfig, UNet2DConditionModel};
use crate::vae::{AutoencoderKL, AutoencoderKLConfig};

/// The stage name in a checkpoint's state.
const STAGE: &str = "text-to-image";

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
        Ok(Self {
            text_encoder: CLIPTextModel::init(&config.text_encoder, device),
            unet: UNet2DConditionModel::new(&config.unet, device)?,
        })
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
    /// its fitted scaling factor, replaces `config.vae`).
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
        let model = TextToImageModel::new(&config, device)?;
        let ema = Ema::new(model.valid(), train.ema_decay);
        Self::from_parts(config, model, ema, vae, adamw(&train), train, 0, device)
    }

    fn from_parts(
        config: ScenesModelConfig,
        model: TextToImageModel<B>,
        ema: Ema<TextToImageModel<B::InnerBackend>>,
        vae: AutoencoderKL<B::InnerBackend>,
        optimizer: OptimizerAdaptor<AdamW, TextToImageModel<B>, B>,
        train: TrainConfig,
        steps: usize,
        device: &B::Device,
    ) -> Result<Self> {
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
        let state = checkpoint.state()?;
        if state.stage != STAGE {
            return Err(wrong_stage(checkpoint, STAGE, &state.stage));
        }
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
        Self::from_parts(
            config,
            model,
            ema,
            vae,
            optimizer,
            state.train,
            state.step,
            device,
        )
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

    /// Steps taken.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// One step on the batch of step [`steps`](Self::steps), returning the loss before the
    /// update.
    ///
    /// # Errors
    /// A failed rendering or tokenisation.
    pub fn step(&mut self) -> Result<f32> {
        let seed = step_seed(self.train.seed, self.steps);
        let loss = self.validation_loss(seed)?;
        let value = loss.clone().into_scalar().elem::<f32>();
        let mut grads = GradientsParams::from_grads(loss.backward(), &self.model);
        clip_grad_norm(&self.model, &mut grads, self.train.max_grad_norm);
        let lr = self.train.learning_rate_at(self.steps);
        self.model = self.optimizer.step(lr, self.model.clone(), grads);
        self.ema.update(&self.model);
        self.steps += 1;
        Ok(value)
    }

    /// The loss on the batch, captions, noise and timesteps drawn from `seed`, without an
    /// update: with a fixed seed, a validation loss to compare across steps.
    ///
    /// # Errors
    /// As [`step`](Self::step).
    pub fn validation_loss(&self, seed: u64) -> Result<Tensor<B, 1>> {
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
        let ids = ClipTokenizer::ids_tensor::<B>(&self.tokenizer.encode_batch(&prompts)?, &device)?;

        let mut noise = SeededNoise::new(seed ^ 0x6e6f);
        let posterior = self.vae.encode(images);
        let shape = posterior.mean.dims();
        let draw = noise_tensor::<B::InnerBackend, 4>(&mut noise, shape, &device, DType::F32)?;
        let z0 = self.vae.scale_latents(posterior.sample(draw));
        let eps = noise_tensor::<B::InnerBackend, 4>(&mut noise, shape, &device, DType::F32)?;
        let n = self.alphas_cumprod.len() as u64;
        let t: Vec<usize> = (0..batch).map(|_| (rng.next_u64() % n) as usize).collect();
        let coefficient = |f: fn(f32) -> f32| {
            let values: Vec<f32> = t.iter().map(|&i| f(self.alphas_cumprod[i])).collect();
            Tensor::<B::InnerBackend, 1>::from_data(TensorData::new(values, [batch]), &device)
                .reshape([batch, 1, 1, 1])
        };
        let noisy = z0 * coefficient(f32::sqrt) + eps.clone() * coefficient(|a| (1.0 - a).sqrt());
        let timesteps: Vec<f32> = t.iter().map(|&i| i as f32).collect();
        let timesteps = Tensor::<B, 1>::from_data(TensorData::new(timesteps, [batch]), &device);
        let prediction = self
            .model
            .forward(Tensor::from_inner(noisy), timesteps, ids)?;
        Ok((prediction - Tensor::from_inner(eps)).square().mean())
    }

    /// Writes `dir/checkpoint-<steps>/`: the model, its average, the VAE, every config, the
    /// optimiser and the state.
    ///
    /// # Errors
    /// Unwritable files.
    pub fn save(&self, dir: &std::path::Path) -> Result<Checkpoint> {
        let checkpoint = Checkpoint::create(dir, self.steps)?;
        checkpoint.save_config("text_encoder", &self.config.text_encoder)?;
        checkpoint.save_config("unet", &self.config.unet)?;
        checkpoint.save_config("vae", &self.config.vae)?;
        checkpoint.save_config("scheduler", &self.config.scheduler)?;
        checkpoint.save_module(&self.model, "model")?;
        checkpoint.save_module(&self.ema.module, "ema")?;
        checkpoint.save_module(&self.vae, "vae")?;
        checkpoint.save_optimizer(&self.optimizer)?;
        checkpoint.save_state(&TrainState {
            stage: STAGE.into(),
            step: self.steps,
            train: self.train.clone(),
        })?;
        Ok(checkpoint)
    }
}

/// The error of a checkpoint from the wrong stage.
pub(super) fn wrong_stage(checkpoint: &Checkpoint, expected: &str, found: &str) -> Error {
    Error::invalid_input(
        "checkpoint",
        format!(
            "{} is a `{found}` checkpoint, `{expected}` expected",
            checkpoint.dir().display()
        ),
    )
}
