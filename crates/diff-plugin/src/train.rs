//! Training a Task-Plugin (Diff-Plugin `train.py`) on (degraded, clean) image pairs.
//!
//! Per batch, with the UNet, the VAE and CLIP frozen: `z₀ = 0.18215 · VAE sample(clean)`,
//! `ε ~ N(0, I)`, `t ~ U{0, …, 999}` per sample, `z_t = √ᾱ_t z₀ + √(1−ᾱ_t) ε` (DDPM); F^p =
//! TPB(CLIP(normalise(bilinear₂₂₄((degraded + 1)/2)))), z_c = 0.18215 · VAE mean(degraded),
//! F^s = SCB(t, F^p, z_c), `ε̂ = UNet(z_t, t, F^p, F^s)`; loss = mean((ε̂ − ε)²). AdamW
//! (β 0.9/0.999, weight decay 1e-2, ε 1e-8), the gradient norm of the SCB and of the TPB
//! each clipped to 1, constant learning rate. The frozen models run on the inner (non-autodiff)
//! backend, so no activations are kept for them except the UNet, through which the gradients
//! reach F^p and F^s.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::DType;
use burn::tensor::backend::AutodiffBackend;
use image::RgbImage;
use prompt_diffusion_clip::{CLIPImageProcessor, CLIPVisionModel};
use prompt_diffusion_core::image::{PixelRange, images_to_tensor, load_rgb, resize};
use prompt_diffusion_core::noise::{SeededNoise, noise_tensor};
use prompt_diffusion_core::{Error, Result};
use prompt_diffusion_schedulers::{Scheduler, SchedulerConfig, SchedulerKind};
use prompt_diffusion_unet::UNet2DConditionModel;
use prompt_diffusion_vae::AutoencoderKL;
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use crate::TaskPlugin;
use crate::checkpoint::save_checkpoint;

/// burn's autodiff backend decorator: train on `Autodiff<NdArray>`, `Autodiff<Cuda>`, ….
pub use burn_autodiff::Autodiff;

/// Training settings, with `train.py`'s defaults.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct TrainConfig {
    /// Constant learning rate (default 1e-5; `--scale_lr` multiplies it by the total batch).
    pub learning_rate: f64,
    /// AdamW β₁ (0.9).
    pub adam_beta1: f32,
    /// AdamW β₂ (0.999).
    pub adam_beta2: f32,
    /// AdamW decoupled weight decay (1e-2).
    pub adam_weight_decay: f32,
    /// AdamW ε (1e-8).
    pub adam_epsilon: f32,
    /// Gradient-norm bound, applied to the SCB and to the TPB separately (1.0).
    pub max_grad_norm: f64,
    /// Square training resolution of both images of a pair (512).
    pub resolution: usize,
    /// Pairs per step (1, `train.sh`).
    pub batch_size: usize,
    /// Seed of the noise, the timesteps and the data order.
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            learning_rate: 1e-5,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_weight_decay: 1e-2,
            adam_epsilon: 1e-8,
            max_grad_norm: 1.0,
            resolution: 512,
            batch_size: 1,
            seed: 0,
        }
    }
}

impl TrainConfig {
    prompt_diffusion_core::setters! {
        /// Sets the learning rate.
        with_learning_rate(learning_rate: f64);
        /// Sets AdamW's β₁.
        with_adam_beta1(adam_beta1: f32);
        /// Sets AdamW's β₂.
        with_adam_beta2(adam_beta2: f32);
        /// Sets AdamW's weight decay.
        with_adam_weight_decay(adam_weight_decay: f32);
        /// Sets AdamW's ε.
        with_adam_epsilon(adam_epsilon: f32);
        /// Sets the gradient-norm bound.
        with_max_grad_norm(max_grad_norm: f64);
        /// Sets the training resolution.
        with_resolution(resolution: usize);
        /// Sets the pairs per step.
        with_batch_size(batch_size: usize);
        /// Sets the seed.
        with_seed(seed: u64);
    }
}

/// The frozen models a plugin is trained against.
#[derive(Debug)]
pub struct FrozenModels<B: AutodiffBackend> {
    /// The denoising UNet (parameters without gradients).
    pub unet: UNet2DConditionModel<B>,
    /// The VAE, on the inner backend.
    pub vae: AutoencoderKL<B::InnerBackend>,
    /// The CLIP vision tower, on the inner backend.
    pub image_encoder: CLIPVisionModel<B::InnerBackend>,
    /// The CLIP input size (224 for ViT-L/14).
    pub image_size: usize,
    /// The base model's scheduler config (its betas define the DDPM forward process).
    pub scheduler: SchedulerConfig,
}

/// (degraded, clean) pairs: `degraded/<name>` and `clean/<name>` in one folder.
#[derive(Debug, Clone)]
pub struct PairFolder {
    /// `(degraded, clean)` paths, sorted by name.
    pub pairs: Vec<(PathBuf, PathBuf)>,
}

impl PairFolder {
    /// Lists the pairs of `dir`: every file of `dir/degraded/` with the same name in
    /// `dir/clean/`.
    ///
    /// # Errors
    /// [`Error::Io`] naming a missing folder or clean image, [`Error::InvalidInput`] for an
    /// empty folder.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let degraded = dir.join("degraded");
        let entries = std::fs::read_dir(&degraded).map_err(|e| Error::io(&degraded, e))?;
        let mut pairs = Vec::new();
        for entry in entries {
            let path = entry.map_err(|e| Error::io(&degraded, e))?.path();
            if !path.is_file() {
                continue;
            }
            let clean = dir.join("clean").join(path.file_name().unwrap_or_default());
            if !clean.is_file() {
                let missing = std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "clean image of a pair not found",
                );
                return Err(Error::io(clean, missing));
            }
            pairs.push((path, clean));
        }
        if pairs.is_empty() {
            return Err(Error::invalid_input(
                "training data",
                format!("{} holds no image", degraded.display()),
            ));
        }
        pairs.sort();
        Ok(Self { pairs })
    }

    /// Loads pairs `indices` at `resolution`², in [-1, 1].
    ///
    /// # Shapes
    /// → `(degraded, clean)`, each `[indices.len(), 3, resolution, resolution]`.
    pub fn batch<B: Backend>(
        &self,
        indices: &[usize],
        resolution: usize,
        device: &B::Device,
    ) -> Result<(Tensor<B, 4>, Tensor<B, 4>)> {
        let load = |path: &Path| -> Result<RgbImage> {
            let image = load_rgb(path)?;
            let r = resolution as u32;
            Ok(if image.dimensions() == (r, r) {
                image
            } else {
                resize(&image, r, r)
            })
        };
        let mut degraded = Vec::new();
        let mut clean = Vec::new();
        for &i in indices {
            let (d, c) = self.pairs.get(i).ok_or_else(|| {
                Error::invalid_input("pair index", format!("{i} ≥ {}", self.pairs.len()))
            })?;
            degraded.push(load(d)?);
            clean.push(load(c)?);
        }
        Ok((
            images_to_tensor(&degraded, PixelRange::MinusOneToOne, device)?,
            images_to_tensor(&clean, PixelRange::MinusOneToOne, device)?,
        ))
    }
}

/// Trains one [`TaskPlugin`].
pub struct PluginTrainer<B: AutodiffBackend> {
    frozen: FrozenModels<B>,
    plugin: TaskPlugin<B>,
    optimizer: OptimizerAdaptor<AdamW, TaskPlugin<B>, B>,
    forward_process: Box<dyn Scheduler<B::InnerBackend>>,
    config: TrainConfig,
    noise: SeededNoise,
    rng: ChaCha8Rng,
    steps: usize,
}

impl<B: AutodiffBackend> PluginTrainer<B> {
    /// A trainer for `plugin` (e.g. a fresh [`TaskPlugin::new`] or a checkpoint to resume).
    ///
    /// # Errors
    /// An invalid scheduler config.
    pub fn new(
        frozen: FrozenModels<B>,
        plugin: TaskPlugin<B>,
        config: TrainConfig,
    ) -> Result<Self> {
        let device = plugin.tpb.out.weight.device();
        let forward_process = frozen
            .scheduler
            .build::<B::InnerBackend>(Some(SchedulerKind::Ddpm), &device)?;
        let optimizer = AdamWConfig::new()
            .with_beta_1(config.adam_beta1)
            .with_beta_2(config.adam_beta2)
            .with_weight_decay(config.adam_weight_decay)
            .with_epsilon(config.adam_epsilon)
            .init();
        let frozen = FrozenModels {
            unet: frozen.unet.no_grad(),
            ..frozen
        };
        Ok(Self {
            noise: SeededNoise::new(config.seed),
            rng: ChaCha8Rng::seed_from_u64(config.seed ^ 0x5eed),
            frozen,
            plugin,
            optimizer,
            forward_process,
            config,
            steps: 0,
        })
    }

    /// The plugin being trained.
    pub fn plugin(&self) -> &TaskPlugin<B> {
        &self.plugin
    }

    /// Optimisation steps taken.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// One optimisation step on a batch, returning the loss before the update.
    ///
    /// # Shapes
    /// `degraded`, `clean`: `[batch, 3, H, W]` in [-1, 1], H and W multiples of 8.
    ///
    /// # Errors
    /// [`Error::Shape`] when the images do not fit the models.
    pub fn step(
        &mut self,
        degraded: Tensor<B::InnerBackend, 4>,
        clean: Tensor<B::InnerBackend, 4>,
    ) -> Result<f32> {
        let loss = self.loss(degraded, clean, None)?;
        let value = loss.clone().into_scalar().elem::<f32>();
        let plugin = &self.plugin;
        let mut grads = GradientsParams::from_grads(loss.backward(), plugin);
        clip_grad_norm(&plugin.scb, &mut grads, self.config.max_grad_norm);
        clip_grad_norm(&plugin.tpb, &mut grads, self.config.max_grad_norm);
        self.plugin = self
            .optimizer
            .step(self.config.learning_rate, self.plugin.clone(), grads);
        self.steps += 1;
        Ok(value)
    }

    /// The loss on a batch with the noise and timesteps drawn from `seed` (the same draws on
    /// every call), without updating the plugin: a validation loss to compare across steps.
    ///
    /// # Errors
    /// As [`step`](Self::step).
    pub fn evaluate(
        &mut self,
        degraded: Tensor<B::InnerBackend, 4>,
        clean: Tensor<B::InnerBackend, 4>,
        seed: u64,
    ) -> Result<f32> {
        let loss = self.loss(degraded, clean, Some(seed))?;
        Ok(loss.into_scalar().elem::<f32>())
    }

    /// The training loss, with the trainer's noise streams or fresh ones from `seed`.
    fn loss(
        &mut self,
        degraded: Tensor<B::InnerBackend, 4>,
        clean: Tensor<B::InnerBackend, 4>,
        seed: Option<u64>,
    ) -> Result<Tensor<B, 1>> {
        if degraded.dims() != clean.dims() || degraded.dims()[1] != 3 {
            return Err(Error::Shape {
                origin: None,
                key: "training pair".into(),
                expected: format!("two [batch, 3, H, W] tensors, got {:?} and", clean.dims()),
                found: degraded.dims().to_vec(),
            });
        }
        let mut fixed = seed.map(|s| (SeededNoise::new(s), ChaCha8Rng::seed_from_u64(s)));
        let (noise, rng) = match &mut fixed {
            Some((noise, rng)) => (noise, rng),
            None => (&mut self.noise, &mut self.rng),
        };
        let device = degraded.device();
        let batch = degraded.dims()[0];
        let vae = &self.frozen.vae;

        // Targets and inputs, without gradients.
        let posterior = vae.encode(clean);
        let shape = posterior.mean.dims();
        let draw = noise_tensor::<B::InnerBackend, 4>(noise, shape, &device, DType::F32)?;
        let z0 = vae.scale_latents(posterior.sample(draw));
        let eps = noise_tensor::<B::InnerBackend, 4>(noise, shape, &device, DType::F32)?;
        let train_steps = self.frozen.scheduler.num_train_timesteps.unwrap_or(1000) as u64;
        let timesteps: Vec<f32> = (0..batch)
            .map(|_| (rng.next_u64() % train_steps) as f32)
            .collect();
        let noisy = Tensor::cat(
            (0..batch)
                .map(|i| {
                    let (z, e) = (z0.clone().narrow(0, i, 1), eps.clone().narrow(0, i, 1));
                    self.forward_process
                        .add_noise(z, e, f64::from(timesteps[i]))
                })
                .collect(),
            0,
        );
        let tokens = self.clip_tokens(degraded.clone());
        let condition = vae.scale_latents(vae.encode(degraded).mean);

        let lift = |x: Tensor<B::InnerBackend, 4>| Tensor::<B, 4>::from_inner(x);
        let t = Tensor::<B, 1>::from_data(TensorData::new(timesteps, [batch]), &device);
        let plugin = &self.plugin;
        let prompt = plugin.tpb.forward(Tensor::from_inner(tokens))?;
        let residuals = plugin
            .scb
            .residuals(t.clone(), prompt.clone(), lift(condition))?;
        let pred = self
            .frozen
            .unet
            .forward_with_residuals(lift(noisy), t, prompt, &residuals)?;
        Ok((pred - lift(eps)).square().mean())
    }

    /// Trains for `steps` steps over `data` (reshuffled every epoch). With `checkpoints =
    /// Some((dir, every))`, writes `dir/checkpoint-N/` every `every` steps and after the last.
    /// `on_step(step, loss)` may stop the run early.
    ///
    /// # Errors
    /// Unreadable images, unwritable checkpoints, or [`Error::Cancelled`].
    pub fn train(
        &mut self,
        data: &PairFolder,
        steps: usize,
        checkpoints: Option<(&Path, usize)>,
        on_step: &mut dyn FnMut(usize, f32) -> ControlFlow<()>,
    ) -> Result<Vec<f32>> {
        let device = self.plugin.tpb.out.weight.device();
        let batch = self.config.batch_size.max(1);
        let mut order: Vec<usize> = Vec::new();
        let mut losses = Vec::with_capacity(steps);
        for _ in 0..steps {
            if order.len() < batch {
                let mut epoch: Vec<usize> = (0..data.pairs.len()).collect();
                for i in (1..epoch.len()).rev() {
                    epoch.swap(i, (self.rng.next_u64() % (i as u64 + 1)) as usize);
                }
                order.extend(epoch);
            }
            let indices: Vec<usize> = order.drain(..batch.min(order.len())).collect();
            let (degraded, clean) =
                data.batch::<B::InnerBackend>(&indices, self.config.resolution, &device)?;
            let loss = self.step(degraded, clean)?;
            losses.push(loss);
            let done = self.steps;
            if let Some((dir, every)) = checkpoints
                && (done.is_multiple_of(every.max(1)) || losses.len() == steps)
            {
                save_checkpoint(&self.plugin, dir.join(format!("checkpoint-{done}")))?;
            }
            if on_step(done, loss).is_break() {
                return Err(Error::Cancelled {
                    step: losses.len() - 1,
                });
            }
        }
        Ok(losses)
    }

    /// The CLIP tokens of `train.py`'s input: `(x + 1)/2`, bilinear to the CLIP size (no
    /// antialiasing, half-pixel centres), normalised with the CLIP mean and std
    /// ([`CLIPImageProcessor::preprocess_tensor`]).
    fn clip_tokens(&self, degraded: Tensor<B::InnerBackend, 4>) -> Tensor<B::InnerBackend, 3> {
        let pixels = CLIPImageProcessor::new(self.frozen.image_size).preprocess_tensor(degraded);
        self.frozen.image_encoder.forward(pixels).last_hidden_state
    }
}

/// Scales the gradients of `module`'s parameters so their global L2 norm is at most
/// `max_norm` (PyTorch's `clip_grad_norm_`), returning the norm before clipping.
pub fn clip_grad_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &mut GradientsParams,
    max_norm: f64,
) -> f64 {
    let mut norm = SquaredNorm { grads, sum: 0.0 };
    module.visit(&mut norm);
    let total = norm.sum.sqrt();
    let coef = max_norm / (total + 1e-6);
    if coef < 1.0 {
        module.visit(&mut ScaleGrads {
            grads,
            factor: coef,
        });
    }
    total
}

struct SquaredNorm<'a> {
    grads: &'a GradientsParams,
    sum: f64,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for SquaredNorm<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
            self.sum += g
                .cast(DType::F32)
                .square()
                .sum()
                .into_scalar()
                .elem::<f64>();
        }
    }
}

struct ScaleGrads<'a> {
    grads: &'a mut GradientsParams,
    factor: f64,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for ScaleGrads<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            self.grads.register(param.id, g * self.factor);
        }
    }
}
