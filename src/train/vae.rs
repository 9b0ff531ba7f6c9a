//! Stage 1: the VAE learns to reconstruct scenes.

use burn::module::AutodiffModule;
use burn::optim::AdamW;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::prelude::*;
use burn::tensor::DType;
use burn::tensor::backend::AutodiffBackend;
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use super::checkpoint::{Checkpoint, TrainState, TrainingStage};
use super::model::{TrainConfig, materialize, scene_batch, step_seed};
use super::optim::{adamw, update};
use super::parallel::{split, summed_gradients};
use crate::core::Result;
use crate::core::noise::{SeededNoise, noise_tensor};
use crate::vae::{AutoencoderKL, AutoencoderKLConfig};

/// A uniform draw in [0, 1) from 64 random bits.
fn unit(bits: u64) -> f64 {
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// `mean((decode(z + std(z)·jitter) − x)²) + kl_weight · ½ mean(μ² + σ² − 1 − log σ²)`
/// with `z = μ + σ·draw` and `std(z)` each scene's latent standard deviation (not
/// differentiated); `jitter` is [`TrainConfig::latent_noise`]'s scaled noise, or none.
fn loss<B: Backend>(
    vae: &AutoencoderKL<B>,
    images: Tensor<B, 4>,
    draw: Tensor<B, 4>,
    jitter: Option<Tensor<B, 4>>,
    kl_weight: f64,
) -> Tensor<B, 1> {
    let posterior = vae.encode(images.clone());
    let mut z = posterior.mean.clone() + posterior.std() * draw;
    if let Some(jitter) = jitter {
        let [n, c, h, w] = z.dims();
        let std = z
            .clone()
            .detach()
            .reshape([n, c * h * w])
            .var(1)
            .sqrt()
            .reshape([n, 1, 1, 1]);
        z = z + jitter * std;
    }
    let reconstruction = vae.decode(z);
    let mse = (reconstruction - images).square().mean();
    let kl = (posterior.mean.square() + posterior.logvar.clone().exp() - posterior.logvar - 1.0)
        .mean()
        * 0.5;
    mse + kl * kl_weight
}

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
            materialize(AutoencoderKL::new(config, device)),
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
        let state = checkpoint.state_for(STAGE)?;
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

    /// The loss on the batch (scenes, crop and noise) drawn from `seed`, without an update:
    /// with a fixed seed, a validation loss to compare across steps.
    ///
    /// # Errors
    /// A failed rendering.
    pub fn validation_loss(&self, seed: u64) -> Result<Tensor<B, 1>> {
        let (images, draw, jitter) = self.batch(seed)?;
        Ok(loss(&self.vae, images, draw, jitter, self.config.kl_weight))
    }

    /// The (cropped) scenes, the posterior noise and the decoder's latent jitter (when
    /// [`TrainConfig::latent_noise`] is set) of the batch drawn from `seed`.
    #[allow(clippy::type_complexity)]
    fn batch(&self, seed: u64) -> Result<(Tensor<B, 4>, Tensor<B, 4>, Option<Tensor<B, 4>>)> {
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
        let [n, _, h, w] = images.dims();
        let factor = self.vae.config().downsampling_factor();
        let shape = [n, self.vae.config().latent_channels, h / factor, w / factor];
        let mut noise = SeededNoise::new(seed ^ 0x7a65);
        let draw = noise_tensor::<B, 4>(&mut noise, shape, &self.device, DType::F32)?;
        let jitter = if self.config.latent_noise > 0.0 {
            let jitter = noise_tensor::<B, 4>(&mut noise, shape, &self.device, DType::F32)?;
            let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6a69);
            let scales: Vec<f32> = (0..n)
                .map(|_| (self.config.latent_noise * unit(rng.next_u64())) as f32)
                .collect();
            let scales = Tensor::<B, 1>::from_data(TensorData::new(scales, [n]), &self.device);
            Some(jitter * scales.reshape([n, 1, 1, 1]))
        } else {
            None
        };
        Ok((images, draw, jitter))
    }

    /// The trained VAE, without autodiff.
    pub fn into_vae(self) -> AutoencoderKL<B::InnerBackend> {
        self.vae.valid()
    }
}

impl<B: AutodiffBackend> TrainingStage for VaeTrainer<B> {
    /// One step on the batch of step [`steps`](Self::steps), returning the loss before the
    /// update. With `workers` > 1 the batch is split over that many threads.
    ///
    /// # Errors
    /// A failed scene rendering.
    fn step(&mut self) -> Result<f32> {
        let seed = step_seed(self.config.seed, self.steps);
        let (images, draw, jitter) = self.batch(seed)?;
        let n = self.config.batch_size;
        let parts = split(n, self.config.workers)
            .into_iter()
            .map(|r| {
                let share = r.len() as f64 / n as f64;
                let (start, len) = (r.start, r.len());
                (
                    images.clone().narrow(0, start, len),
                    draw.clone().narrow(0, start, len),
                    jitter.clone().map(|j| j.narrow(0, start, len)),
                    share,
                )
            })
            .collect();
        let kl_weight = self.config.kl_weight;
        let (value, grads) = summed_gradients(
            &self.vae,
            parts,
            &self.device,
            |vae, (x, draw, jitter, share)| Ok(loss(vae, x, draw, jitter, kl_weight) * share),
        )?;
        update(
            &mut self.vae,
            &mut self.optimizer,
            grads,
            &self.config,
            &mut self.steps,
        );
        Ok(value)
    }

    fn steps(&self) -> usize {
        self.steps
    }

    /// Writes `dir/checkpoint-<steps>/` (the VAE, its config, the optimiser and the state).
    ///
    /// # Errors
    /// Unwritable files.
    fn save(&self, dir: &std::path::Path) -> Result<Checkpoint> {
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
}
