//! The size of the scenes model and the training settings.

use burn::module::{ModuleVisitor, Param};
use burn::prelude::*;
use image::RgbImage;

use crate::clip::CLIPTextConfig;
use crate::core::Result;
use crate::core::config::OneOrMany;
use crate::core::image::{PixelRange, images_to_tensor};
use crate::core::nn::Activation;
use crate::scenes::{SceneGenerator, Split};
use crate::schedulers::SchedulerConfig;
use crate::unet::{DownBlockType, UNet2DConditionConfig, UNetTrunkConfig};
use crate::vae::{AutoencoderKLConfig, DownEncoderBlockType, UpDecoderBlockType};

/// The components of a Stable Diffusion model, as their `config.json` files describe them.
#[derive(Debug, Clone, PartialEq)]
pub struct ScenesModelConfig {
    /// The CLIP text encoder (the real CLIP vocabulary, a narrow and shallow transformer).
    pub text_encoder: CLIPTextConfig,
    /// The denoising UNet.
    pub unet: UNet2DConditionConfig,
    /// The VAE.
    pub vae: AutoencoderKLConfig,
    /// The noise schedule of training and the scheduler the pipeline samples with.
    pub scheduler: SchedulerConfig,
}

impl ScenesModelConfig {
    /// The model of the 64 × 64 scenes, sized to train on two CPU cores: a convolutional VAE
    /// with 4× downsampling (16 × 16 × 4 latents; 16, 32 and 64 channels, no attention), a
    /// two-level UNet (32 and 64 channels, cross-attention at 16² and 8²) and a three-layer
    /// CLIP text encoder 64 wide over CLIP's 49 408 tokens; SD1.5's noise schedule.
    pub fn scenes() -> Self {
        let text_encoder = CLIPTextConfig {
            hidden_size: 64,
            intermediate_size: 256,
            projection_dim: 64,
            num_hidden_layers: 3,
            num_attention_heads: 4,
            max_position_embeddings: 77,
            hidden_act: Activation::QuickGelu,
            pad_token_id: Some(49407),
            ..CLIPTextConfig::default()
        };
        let unet = Self::unet(&[32, 64], 16);
        let vae = AutoencoderKLConfig {
            down_block_types: vec![DownEncoderBlockType::DownEncoderBlock2D; 3],
            up_block_types: vec![UpDecoderBlockType::UpDecoderBlock2D; 3],
            block_out_channels: vec![16, 32, 64],
            layers_per_block: 1,
            norm_num_groups: 8,
            sample_size: 64,
            mid_block_add_attention: false,
            ..AutoencoderKLConfig::default()
        };
        Self {
            text_encoder,
            unet,
            vae,
            scheduler: SchedulerConfig::sd_v1_5(),
        }
    }

    /// A UNet of the scenes model's kind with `channels` per level (cross-attention at every
    /// level but a third or later one, one resnet per level, GroupNorm of 8 or 16 groups,
    /// 64-wide context, 4 heads) on `sample_size`² latents.
    pub fn unet(channels: &[usize], sample_size: usize) -> UNet2DConditionConfig {
        let down_block_types = (0..channels.len())
            .map(|i| {
                if i >= 2 && i + 1 == channels.len() {
                    DownBlockType::DownBlock2D
                } else {
                    DownBlockType::CrossAttnDownBlock2D
                }
            })
            .collect();
        let groups = if channels.iter().all(|c| c % 16 == 0) {
            16
        } else {
            8
        };
        UNet2DConditionConfig {
            sample_size: Some(OneOrMany::One(sample_size)),
            ..UNet2DConditionConfig::from_trunk(UNetTrunkConfig {
                in_channels: 4,
                block_out_channels: channels.to_vec(),
                down_block_types,
                layers_per_block: OneOrMany::One(1),
                norm_num_groups: Some(groups),
                cross_attention_dim: OneOrMany::One(64),
                attention_head_dim: OneOrMany::One(4),
                use_linear_projection: true,
                ..UNetTrunkConfig::default()
            })
        }
    }

    /// The side of the pictures the model draws (the UNet's sample size times the VAE's
    /// downsampling factor).
    pub fn image_size(&self) -> usize {
        let latent = match &self.unet.sample_size {
            Some(OneOrMany::One(n)) => *n,
            Some(OneOrMany::Many(v)) => v.first().copied().unwrap_or(16),
            None => 16,
        };
        latent * self.vae.downsampling_factor()
    }
}

/// The settings of one training stage.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct TrainConfig {
    /// Peak learning rate, reached after `warmup_steps` of linear warm-up.
    pub learning_rate: f64,
    /// Steps of linear learning-rate warm-up from 0.
    pub warmup_steps: usize,
    /// AdamW decoupled weight decay.
    pub weight_decay: f32,
    /// Global gradient-norm bound (PyTorch's `clip_grad_norm_`).
    pub max_grad_norm: f64,
    /// Scenes per step.
    pub batch_size: usize,
    /// Seed of the data, the noise and the timesteps (each step derives its own).
    pub seed: u64,
    /// Probability of training on the empty caption (classifier-free guidance).
    pub caption_dropout: f64,
    /// Upper bound of the EMA decay (diffusers' `EMAModel` warm-up `(1 + n) / (10 + n)` below it).
    pub ema_decay: f64,
    /// Weight of the KL term of the VAE loss.
    pub kl_weight: f64,
    /// Side of the random square crops the VAE trains on (0: whole pictures); a convolutional
    /// VAE trained on crops runs on whole pictures.
    pub crop: usize,
    /// Threads a batch is split over (data parallelism on one device; the gradients are
    /// summed, so the result depends on this number only by float rounding).
    pub workers: usize,
    /// VAE stage: the decoder also learns from latents with added Gaussian noise, of a
    /// standard deviation drawn per scene from `U(0, latent_noise)` times the scene's latent
    /// standard deviation (0: off). A decoder trained so turns the small errors a diffusion
    /// model leaves in its latents into flat colour rather than texture.
    pub latent_noise: f64,
    /// Diffusion stage: the Min-SNR-γ loss weight `min(SNR(t), γ) / SNR(t)` of each
    /// timestep (Hang et al. 2023; diffusers' `--snr_gamma`), 0 for the plain mean.
    pub snr_gamma: f64,
    /// Diffusion stage: a floor `c` under the weight of the clean-latent error, so each
    /// timestep's loss weight is `(min(SNR(t), γ) + c) / SNR(t)` (`(SNR + c) / SNR` without γ;
    /// `c = 1` is v-prediction's weighting), 0 for none. The ε-loss weighs the error of the
    /// predicted clean latents by `SNR(t)`, next to nothing at the noisiest timesteps, where
    /// only the caption can tell the picture's colours; the floor makes them count.
    pub x0_weight_floor: f64,
    /// Diffusion stage: the standard deviation of "offset noise" (Guttenberg 2023), a
    /// Gaussian constant per scene and latent channel added to the noise, 0 for none. Stable
    /// Diffusion's schedule leaves √ᾱ ≈ 0.07 of the latents at its last timestep, and the
    /// mean of 16 × 16 latents reveals the background colour through the noise: a model
    /// trained so reads the colour from the noise instead of the caption, and draws the
    /// random colour of pure noise's mean. The offset hides it.
    pub offset_noise: f64,
    /// The step the learning-rate warm-up counts from: 0, or the step a run was continued
    /// at with fresh optimiser moments
    /// ([`TextToImageTrainer::from_pipeline`](super::TextToImageTrainer::from_pipeline)).
    pub warmup_from: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            learning_rate: 1e-3,
            warmup_steps: 200,
            weight_decay: 1e-2,
            max_grad_norm: 1.0,
            batch_size: 32,
            seed: 0,
            caption_dropout: 0.1,
            ema_decay: 0.999,
            kl_weight: 1e-6,
            crop: 0,
            workers: 1,
            latent_noise: 0.0,
            snr_gamma: 0.0,
            x0_weight_floor: 0.0,
            offset_noise: 0.0,
            warmup_from: 0,
        }
    }
}

impl TrainConfig {
    prompt_diffusion_core::setters! {
        /// Sets the peak learning rate.
        with_learning_rate(learning_rate: f64);
        /// Sets the warm-up steps.
        with_warmup_steps(warmup_steps: usize);
        /// Sets the weight decay.
        with_weight_decay(weight_decay: f32);
        /// Sets the gradient-norm bound.
        with_max_grad_norm(max_grad_norm: f64);
        /// Sets the scenes per step.
        with_batch_size(batch_size: usize);
        /// Sets the seed.
        with_seed(seed: u64);
        /// Sets the caption dropout.
        with_caption_dropout(caption_dropout: f64);
        /// Sets the EMA decay bound.
        with_ema_decay(ema_decay: f64);
        /// Sets the KL weight.
        with_kl_weight(kl_weight: f64);
        /// Sets the VAE's crop side.
        with_crop(crop: usize);
        /// Sets the threads a batch is split over.
        with_workers(workers: usize);
        /// Sets the VAE decoder's latent noise bound.
        with_latent_noise(latent_noise: f64);
        /// Sets the Min-SNR-γ (0: off).
        with_snr_gamma(snr_gamma: f64);
        /// Sets the floor of the clean-latent error's weight (0: off).
        with_x0_weight_floor(x0_weight_floor: f64);
        /// Sets the offset noise's standard deviation (0: off).
        with_offset_noise(offset_noise: f64);
        /// Sets the step the warm-up counts from.
        with_warmup_from(warmup_from: usize);
    }

    /// The learning rate at `step` (0-based): linear warm-up from `warmup_from`, then
    /// constant.
    pub fn learning_rate_at(&self, step: usize) -> f64 {
        let step = step.saturating_sub(self.warmup_from);
        if step < self.warmup_steps {
            self.learning_rate * (step + 1) as f64 / self.warmup_steps as f64
        } else {
            self.learning_rate
        }
    }
}

/// Initialises every parameter of `module` in place. burn creates parameters lazily and a
/// clone of an uninitialised parameter initialises on its own, with other random values: a
/// fresh model is materialised before it is cloned (for its moving average, a checkpoint or a
/// thread), so every copy holds the same weights.
pub fn materialize<B: Backend, M: Module<B>>(module: M) -> M {
    struct Touch;
    impl<B: Backend> ModuleVisitor<B> for Touch {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let _ = param.val();
        }
    }
    module.visit(&mut Touch);
    module
}

/// The seed of step `step` of a run seeded with `seed` (SplitMix64's finaliser of both), from
/// which the step draws its scenes, noise and timesteps.
pub fn step_seed(seed: u64, step: usize) -> u64 {
    let mut z = seed ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `n` training scenes drawn from `seed`, rendered at `side`² in [-1, 1], with their captions.
///
/// # Shapes
/// → `[n, 3, side, side]`.
///
/// # Errors
/// An invalid side (see [`Scene::render`](crate::scenes::Scene::render)).
pub fn scene_batch<B: Backend>(
    seed: u64,
    n: usize,
    side: usize,
    device: &B::Device,
) -> Result<(Tensor<B, 4>, Vec<String>)> {
    let mut generator = SceneGenerator::with_split(seed, Split::Train);
    let mut pictures: Vec<RgbImage> = Vec::with_capacity(n);
    let mut captions = Vec::with_capacity(n);
    for _ in 0..n {
        let (scene, caption) = generator.next_captioned();
        pictures.push(scene.render(side as u32)?);
        captions.push(caption);
    }
    let images = images_to_tensor(&pictures, PixelRange::MinusOneToOne, device)?;
    Ok((images, captions))
}
