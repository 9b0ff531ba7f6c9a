//! Stage 1: the VAE learns to reconstruct scenes.

use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::DType;
use burn::tensor::backend::AutodiffBackend;

use super::checkpoint::{Checkpoint, TrainState};
use super::model::{TrainConfig, scene_batch, step_seed};
use crate::core::Result;
use crate::core::noise::{SeededNoise, noise_tensor};
use crate::diff_plugin::train::clip_grad_norm;
use crate::vae::{AutoencoderKL, AutoencoderKLConfig};

/// The stage name in a checkpoint's state.
const STAGE: &str = "vae";

/// Trains an [`AutoencoderKL`] on rendered scenes: per step, `batch_size` training scenes,
/// optionally a random `crop`² window of them,
/// `z ~ q(z | x)` (the reparameterised posterior sample), loss =
/// `mean((decode(z) − x)²) + kl_weight · mean(KL(q(z | x) ‖ N(0, I)))`, AdamW with linear
/// warm-up and the gradient norm clipped.
pub struct VaeTrainer<B: AutodiffBackend> {
    vae: AutoencoderKL<B>,
    optimizer: OptimizerAdaptor<AdamW, AutoencoderKL<B>, B>,
    config: TrainConfig,
    steps: usize,
    device: B::Device,
}

impl<B: AutodiffBackend> VaeTrainer<B> {
    /// A trainer of a fresh VAE of `config`.
    pub fn new(config: &AutoencoderKLConfig, train: TrainConfig, device: &B::Device) -> Self {
        Self::from_parts(
            AutoencoderKL::new(config, device),
            adamw(&train),
            train,
            0,
            device,
        )
    }

    fn from_parts(
        vae: AutoencoderKL<B>,
        optimizer: OptimizerAdaptor<AdamW, AutoencoderKL<B>, B>,
        config: TrainConfig,
        steps: usize,
        device: &B::Device,
    ) -> Self {
        Self {
            vae,
            optimizer,
            config,
            steps,
            device: device.clone(),
        }
    }

    /// Resumes from `checkpoint` (written by [`save`](Self::save)) with the settings it holds.
    ///
    /// # Errors
    /// Unreadable or mismatched checkpoint files.
    pub fn resume(checkpoint: &Checkpoint, device: &B::Device) -> Result<Self> {
        let state = checkpoint.state()?;
        if state.stage != STAGE {
            return Err(super::diffusion::wrong_stage(
                checkpoint,
                STAGE,
                &state.stage,
            ));
        }
        let config: AutoencoderKLConfig = checkpoint.config("vae")?;
        let vae = checkpoint.load_module(AutoencoderKL::new(&config, device), "vae", device)?;
        let optimizer = checkpoint.load_optimizer(adamw(&state.train), device)?;
        Ok(Self::from_parts(
            vae,
            optimizer,
            state.train,
            state.step,
            device,
        ))
    }

    /// The VAE being trained.
    pub fn vae(&self) -> &AutoencoderKL<B> {
        &self.vae
    }

    /// Steps taken.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// One step on the batch of step [`steps`](Self::steps), returning the loss before the
    /// update.
    ///
    /// # Errors
    /// A failed scene rendering.
    pub fn step(&mut self) -> Result<f32> {
        let seed = step_seed(self.config.seed, self.steps);
        let loss = self.validation_loss(seed)?;
        let value = loss.clone().into_scalar().elem::<f32>();
        let mut grads = GradientsParams::from_grads(loss.backward(), &self.vae);
        clip_grad_norm(&self.vae, &mut grads, self.config.max_grad_norm);
        let lr = self.config.learning_rate_at(self.steps);
        self.vae = self.optimizer.step(lr, self.vae.clone(), grads);
        self.steps += 1;
        Ok(value)
    }

    /// The loss on the batch (scenes, crop and noise) drawn from `seed`, without an update:
    /// with a fixed seed, a validation loss to compare across steps.
    ///
    /// # Errors
    /// A failed rendering.
    pub fn validation_loss(&self, seed: u64) -> Result<Tensor<B, 1>> {
        let side = self.vae.config().sample_size;
        let (mut images, _) = scene_batch::<B>(seed, self.config.batch_size, side, &self.device)?;
        let crop = self.config.crop;
        if crop > 0 && crop < side {
            // One crop offset per step, a multiple of 8 so the latent grid stays aligned.
            let cells = (side - crop) / 8 + 1;
            let y = (seed % cells as u64) as usize * 8;
            let x = ((seed >> 32) % cells as u64) as usize * 8;
            images = images.narrow(2, y, crop).narrow(3, x, crop);
        }
        self.loss(images, &mut SeededNoise::new(seed ^ 0x7a65))
    }

    /// The loss on `images` with the posterior noise drawn from `noise`.
    ///
    /// # Errors
    /// A failed noise draw.
    pub fn loss(&self, images: Tensor<B, 4>, noise: &mut SeededNoise) -> Result<Tensor<B, 1>> {
        let device = images.device();
        let posterior = self.vae.encode(images.clone());
        let shape = posterior.mean.dims();
        let draw = noise_tensor::<B, 4>(noise, shape, &device, DType::F32)?;
        let z = posterior.mean.clone() + posterior.std() * draw;
        let reconstruction = self.vae.decode(z);
        let mse = (reconstruction - images).square().mean();
        let kl =
            (posterior.mean.square() + posterior.logvar.clone().exp() - posterior.logvar - 1.0)
                .mean()
                * 0.5;
        Ok(mse + kl * self.config.kl_weight)
    }

    /// Writes `dir/checkpoint-<steps>/` (the VAE, its config, the optimiser and the state).
    ///
    /// # Errors
    /// Unwritable files.
    pub fn save(&self, dir: &std::path::Path) -> Result<Checkpoint> {
        let checkpoint = Checkpoint::create(dir, self.steps)?;
        checkpoint.save_config("vae", self.vae.config())?;
        checkpoint.save_module(&self.vae, "vae")?;
        checkpoint.save_optimizer(&self.optimizer)?;
        checkpoint.save_state(&TrainState {
            stage: STAGE.into(),
            step: self.steps,
            train: self.config.clone(),
        })?;
        Ok(checkpoint)
    }

    /// The trained VAE, without autodiff.
    pub fn into_vae(self) -> AutoencoderKL<B::InnerBackend> {
        self.vae.valid()
    }
}

pub(super) fn adamw<B: AutodiffBackend, M: AutodiffModule<B>>(
    config: &TrainConfig,
) -> OptimizerAdaptor<AdamW, M, B> {
    AdamWConfig::new()
        .with_weight_decay(config.weight_decay)
        .init()
}
