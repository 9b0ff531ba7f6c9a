//! `AutoencoderKLConfig`: diffusers' `vae/config.json`.

use std::path::Path;

use prompt_diffusion_core::limits::{
    MAX_LAYERS, MAX_LEVELS, MAX_SAMPLE_SIZE, MAX_WIDTH, check_count, check_counts, check_per_level,
};
use prompt_diffusion_core::nn::Activation;
use prompt_diffusion_core::{Error, Result, config::read_validated};
use serde::{Deserialize, Serialize};

/// Encoder block kinds (`down_block_types`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DownEncoderBlockType {
    /// `DownEncoderBlock2D`: resnets and an optional downsampler.
    #[serde(rename = "DownEncoderBlock2D")]
    DownEncoderBlock2D,
}

/// Decoder block kinds (`up_block_types`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum UpDecoderBlockType {
    /// `UpDecoderBlock2D`: resnets and an optional upsampler.
    #[serde(rename = "UpDecoderBlock2D")]
    UpDecoderBlock2D,
}

/// The configuration of an [`AutoencoderKL`](crate::AutoencoderKL), field names and defaults as
/// diffusers' `AutoencoderKL.__init__`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AutoencoderKLConfig {
    /// Image channels in (default 3).
    pub in_channels: usize,
    /// Image channels out (default 3).
    pub out_channels: usize,
    /// Encoder block kinds (default one `DownEncoderBlock2D`).
    pub down_block_types: Vec<DownEncoderBlockType>,
    /// Decoder block kinds (default one `UpDecoderBlock2D`).
    pub up_block_types: Vec<UpDecoderBlockType>,
    /// Channels per block (default `[64]`).
    pub block_out_channels: Vec<usize>,
    /// Resnets per encoder block; decoder blocks have one more (default 1).
    pub layers_per_block: usize,
    /// Non-linearity (default `silu`).
    pub act_fn: Activation,
    /// Latent channels (default 4).
    pub latent_channels: usize,
    /// GroupNorm groups (default 32).
    pub norm_num_groups: usize,
    /// Image size the model was trained at (default 32); the tile side of
    /// [`VaeTiling`](crate::VaeTiling) unless one is given.
    pub sample_size: usize,
    /// Latents are multiplied by this after encoding (default 0.18215).
    pub scaling_factor: f64,
    /// Subtracted from latents before scaling (SD3/Flux VAEs; `None` for SD).
    pub shift_factor: Option<f64>,
    /// Whether the mid blocks have attention (default true).
    pub mid_block_add_attention: bool,
    /// Whether `quant_conv` exists (default true).
    pub use_quant_conv: bool,
    /// Whether `post_quant_conv` exists (default true).
    pub use_post_quant_conv: bool,
    /// diffusers runs the VAE in f32 when the pipeline is f16 if set (default true).
    pub force_upcast: bool,
    /// Per-channel latent means of newer VAEs (must be unset for Stable Diffusion 1/2).
    pub latents_mean: Option<Vec<f64>>,
    /// Per-channel latent deviations of newer VAEs (must be unset for Stable Diffusion 1/2).
    pub latents_std: Option<Vec<f64>>,
}

impl Default for AutoencoderKLConfig {
    fn default() -> Self {
        Self {
            in_channels: 3,
            out_channels: 3,
            down_block_types: vec![DownEncoderBlockType::DownEncoderBlock2D],
            up_block_types: vec![UpDecoderBlockType::UpDecoderBlock2D],
            block_out_channels: vec![64],
            layers_per_block: 1,
            act_fn: Activation::Silu,
            latent_channels: 4,
            norm_num_groups: 32,
            sample_size: 32,
            scaling_factor: 0.18215,
            shift_factor: None,
            mid_block_add_attention: true,
            use_quant_conv: true,
            use_post_quant_conv: true,
            force_upcast: true,
            latents_mean: None,
            latents_std: None,
        }
    }
}

impl AutoencoderKLConfig {
    /// Stable Diffusion 1.x/2.x's kl-f8 VAE (`stable-diffusion-v1-5/vae/config.json`).
    pub fn sd_v1_5() -> Self {
        Self {
            down_block_types: vec![DownEncoderBlockType::DownEncoderBlock2D; 4],
            up_block_types: vec![UpDecoderBlockType::UpDecoderBlock2D; 4],
            block_out_channels: vec![128, 256, 512, 512],
            layers_per_block: 2,
            sample_size: 512,
            ..Self::default()
        }
    }

    /// Reads a diffusers `config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        read_validated(path, Self::validate)
    }

    /// The spatial downsampling factor between images and latents (8 for SD).
    pub fn downsampling_factor(&self) -> usize {
        1 << self.block_out_channels.len().saturating_sub(1)
    }

    /// Checks the values before building: sizes and counts positive and under
    /// `core::limits`' maxima, GroupNorm groups dividing every level's channels.
    ///
    /// # Errors
    /// [`Error::Config`] naming the first inconsistent field.
    pub fn validate(&self) -> Result<()> {
        let n = self.block_out_channels.len();
        if n == 0 {
            return Err(Error::config("block_out_channels", "is empty"));
        }
        check_per_level("down_block_types", self.down_block_types.len(), n)?;
        check_per_level("up_block_types", self.up_block_types.len(), n)?;
        if n > MAX_LEVELS {
            return Err(Error::config(
                "block_out_channels",
                format!("has {n} levels, above the supported maximum {MAX_LEVELS}"),
            ));
        }
        check_counts("block_out_channels", &self.block_out_channels, MAX_WIDTH)?;
        check_count("layers_per_block", self.layers_per_block, MAX_LAYERS)?;
        check_count("norm_num_groups", self.norm_num_groups, MAX_WIDTH)?;
        check_count("in_channels", self.in_channels, MAX_WIDTH)?;
        check_count("out_channels", self.out_channels, MAX_WIDTH)?;
        check_count("latent_channels", self.latent_channels, MAX_WIDTH)?;
        check_count("sample_size", self.sample_size, MAX_SAMPLE_SIZE)?;
        if let Some(c) = self
            .block_out_channels
            .iter()
            .find(|c| **c == 0 || **c % self.norm_num_groups != 0)
        {
            return Err(Error::config(
                "block_out_channels",
                format!(
                    "{c} is not a positive multiple of norm_num_groups ({})",
                    self.norm_num_groups
                ),
            ));
        }
        if self.latent_channels == 0 || self.in_channels == 0 || self.out_channels == 0 {
            return Err(Error::config(
                "latent_channels",
                "channel counts must be positive",
            ));
        }
        if self.latents_mean.is_some() || self.latents_std.is_some() {
            return Err(Error::Unsupported(
                "AutoencoderKL with `latents_mean`/`latents_std` (per-channel latent normalisation)".into(),
            ));
        }
        if !(self.scaling_factor.is_finite() && self.scaling_factor > 0.0) {
            return Err(Error::config("scaling_factor", "must be a positive number"));
        }
        Ok(())
    }
}

prompt_diffusion_core::component_configs!(AutoencoderKLConfig);
