//! `AutoencoderKL`, the Stable Diffusion VAE (diffusers `models/autoencoders/autoencoder_kl.py`).

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::prelude::*;
use prompt_diffusion_core::Result;
use prompt_diffusion_core::nn::conv2d;
use prompt_diffusion_core::weights::{Pretrained, TensorSource, WeightNaming};

use crate::vae::{Decoder, Encoder};
use crate::weights::{LDM_ROOTS, check_weights, to_diffusers_names};
use crate::{AutoencoderKLConfig, VaeOptions};

/// The posterior `N(mean, exp(logvar))` an image encodes to (diffusers
/// `DiagonalGaussianDistribution`).
#[derive(Debug, Clone)]
pub struct DiagonalGaussian<B: Backend> {
    /// Mean, `[batch, latent_channels, h, w]`.
    pub mean: Tensor<B, 4>,
    /// Log-variance clamped to [-30, 20].
    pub logvar: Tensor<B, 4>,
}

impl<B: Backend> DiagonalGaussian<B> {
    /// Splits `quant_conv`'s output into mean and log-variance.
    pub fn from_moments(moments: Tensor<B, 4>) -> Self {
        let [b, c, h, w] = moments.dims();
        let half = c / 2;
        let mean = moments.clone().slice([0..b, 0..half, 0..h, 0..w]);
        let logvar = moments
            .slice([0..b, half..c, 0..h, 0..w])
            .clamp(-30.0, 20.0);
        Self { mean, logvar }
    }

    /// Standard deviation `exp(logvar / 2)`.
    pub fn std(&self) -> Tensor<B, 4> {
        (self.logvar.clone() * 0.5).exp()
    }

    /// `mean + std · noise`, with `noise ~ N(0, 1)` of the mean's shape.
    pub fn sample(&self, noise: Tensor<B, 4>) -> Tensor<B, 4> {
        self.mean.clone() + self.std() * noise
    }

    /// The most likely latent (the mean).
    pub fn mode(&self) -> Tensor<B, 4> {
        self.mean.clone()
    }
}

/// The KL-regularised autoencoder: images in [-1, 1] ⇄ latents.
#[derive(Module, Debug)]
pub struct AutoencoderKL<B: Backend> {
    /// Image → moments.
    pub encoder: Encoder<B>,
    /// Latent → image.
    pub decoder: Decoder<B>,
    /// 1×1 convolution on the moments.
    pub quant_conv: Option<Conv2d<B>>,
    /// 1×1 convolution on the latent before decoding.
    pub post_quant_conv: Option<Conv2d<B>>,
    #[module(skip)]
    config: AutoencoderKLConfig,
    /// Tiling and slicing (`crate::tiling`).
    #[module(skip)]
    pub(crate) options: VaeOptions,
}

impl<B: Backend> Pretrained<B> for AutoencoderKL<B> {
    type Config = AutoencoderKLConfig;
    const CLASS_NAME: &'static str = "AutoencoderKL";
    const SINGLE_FILE_PREFIXES: &'static [&'static str] = &["first_stage_model.", "vae."];

    fn from_config(config: &AutoencoderKLConfig, device: &B::Device) -> Result<Self> {
        config.validate()?;
        Ok(Self::new(config, device))
    }

    /// Takes diffusers or original LDM naming (detected from the keys).
    fn module_tensors(config: &AutoencoderKLConfig, source: &TensorSource) -> Result<TensorSource> {
        config.validate()?;
        let naming = WeightNaming::detect(source, &LDM_ROOTS);
        let source = to_diffusers_names(source, naming, config.block_out_channels.len())?;
        check_weights(config, &source)?;
        Ok(source)
    }
}

impl<B: Backend> AutoencoderKL<B> {
    /// Creates the model for a validated `config`; weights are filled by loading.
    pub fn new(config: &AutoencoderKLConfig, device: &B::Device) -> Self {
        let moments = 2 * config.latent_channels;
        let latent = config.latent_channels;
        Self {
            encoder: Encoder::new(config, device),
            decoder: Decoder::new(config, device),
            quant_conv: config
                .use_quant_conv
                .then(|| Conv2dConfig::new([moments, moments], [1, 1]).init(device)),
            post_quant_conv: config
                .use_post_quant_conv
                .then(|| Conv2dConfig::new([latent, latent], [1, 1]).init(device)),
            config: config.clone(),
            options: VaeOptions::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &AutoencoderKLConfig {
        &self.config
    }

    /// Latents are multiplied by this after encoding and divided by it before decoding.
    pub fn scaling_factor(&self) -> f64 {
        self.config.scaling_factor
    }

    /// Sets the latent scaling factor (in the config too, so a saved model keeps it); training
    /// fits it as `1 / std` of the latents of the data.
    pub fn set_scaling_factor(&mut self, scaling_factor: f64) {
        self.config.scaling_factor = scaling_factor;
    }

    /// Encodes images to the posterior, tiled and sliced as the [`options`](Self::options)
    /// say (diffusers `encode`).
    ///
    /// # Shapes
    /// `[batch, in_channels, H, W]` in [-1, 1] → posterior over `[batch, latent_channels, H/8, W/8]`
    /// (tiled: diffusers' tile grid, which is `H/8 × W/8` when the tile size divides evenly).
    pub fn encode(&self, images: Tensor<B, 4>) -> DiagonalGaussian<B> {
        let moments = self.sliced(images, |x| self.encode_moments(x));
        DiagonalGaussian::from_moments(moments)
    }

    /// Decodes (unscaled) latents to images in about [-1, 1], tiled and sliced as the
    /// [`options`](Self::options) say (diffusers `decode`).
    ///
    /// # Shapes
    /// `[batch, latent_channels, h, w]` → `[batch, out_channels, 8h, 8w]` (tiled: diffusers'
    /// tile grid, which is `8h × 8w` when the tile size divides evenly).
    pub fn decode(&self, latents: Tensor<B, 4>) -> Tensor<B, 4> {
        self.sliced(latents, |z| self.decode_latents(z))
    }

    /// The moments of images in one piece: the encoder and `quant_conv`.
    pub(crate) fn encode_tile(&self, images: Tensor<B, 4>) -> Tensor<B, 4> {
        let moments = self.encoder.forward(images);
        match &self.quant_conv {
            Some(conv) => conv2d(conv, moments),
            None => moments,
        }
    }

    /// The images of latents in one piece: `post_quant_conv` and the decoder.
    pub(crate) fn decode_tile(&self, latents: Tensor<B, 4>) -> Tensor<B, 4> {
        let z = match &self.post_quant_conv {
            Some(conv) => conv2d(conv, latents),
            None => latents,
        };
        self.decoder.forward(z)
    }

    /// Scales an encoded latent for the diffusion model: `(z − shift) · scaling_factor`.
    pub fn scale_latents(&self, z: Tensor<B, 4>) -> Tensor<B, 4> {
        let z = match self.config.shift_factor {
            Some(shift) => z - shift,
            None => z,
        };
        z * self.config.scaling_factor
    }

    /// Undoes [`scale_latents`](Self::scale_latents) before decoding.
    pub fn unscale_latents(&self, z: Tensor<B, 4>) -> Tensor<B, 4> {
        let z = z / self.config.scaling_factor;
        match self.config.shift_factor {
            Some(shift) => z + shift,
            None => z,
        }
    }
}
