//! Where Versatile Diffusion's files are: the diffusers folders, the official checkpoints and
//! Optimus, and the published UNet configurations.

use std::path::{Path, PathBuf};

use prompt_diffusion_unet::UNet2DConditionConfig;
use prompt_diffusion_vae::AutoencoderKLConfig;

use crate::optimus::OptimusConfig;

/// `text_unet/config.json` of `shi-labs/versatile-diffusion`.
const TEXT_UNET_CONFIG: &str = r#"{
  "_class_name": "UNetFlatConditionModel", "act_fn": "silu", "attention_head_dim": 8,
  "block_out_channels": [320, 640, 1280, 1280], "center_input_sample": false,
  "cross_attention_dim": 768,
  "down_block_types": ["CrossAttnDownBlockFlat", "CrossAttnDownBlockFlat", "CrossAttnDownBlockFlat", "DownBlockFlat"],
  "downsample_padding": 1, "flip_sin_to_cos": true, "freq_shift": 0, "in_channels": [768, 1, 1],
  "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32,
  "out_channels": [768, 1, 1], "sample_size": null,
  "up_block_types": ["UpBlockFlat", "CrossAttnUpBlockFlat", "CrossAttnUpBlockFlat", "CrossAttnUpBlockFlat"]
}"#;

/// The image UNet of Versatile Diffusion (the SD 1.x UNet, 64×64 latents).
pub fn image_unet_config() -> UNet2DConditionConfig {
    UNet2DConditionConfig::sd_v1_5()
}

/// The text UNet of Versatile Diffusion (`UNetFlatConditionModel`, 768-d latents).
///
/// # Panics
/// Never: the embedded config is valid (checked by a test).
pub fn text_unet_config() -> UNet2DConditionConfig {
    UNet2DConditionConfig::from_json(TEXT_UNET_CONFIG).expect("embedded text UNet config is valid")
}

/// The component folders of a diffusers Versatile Diffusion repository (`image_unet/`,
/// `text_unet/`, `text_encoder/`, `image_encoder/`, `vae/`, `tokenizer/`); each can be moved.
#[derive(Debug, Clone)]
pub struct VersatileFolders {
    /// `UNet2DConditionModel` folder.
    pub image_unet: PathBuf,
    /// `UNetFlatConditionModel` folder.
    pub text_unet: PathBuf,
    /// `CLIPTextModelWithProjection` folder.
    pub text_encoder: PathBuf,
    /// `CLIPVisionModelWithProjection` folder.
    pub image_encoder: PathBuf,
    /// `AutoencoderKL` folder.
    pub vae: PathBuf,
    /// CLIP tokenizer folder.
    pub tokenizer: PathBuf,
}

impl VersatileFolders {
    /// The folders of a pipeline folder `dir`.
    pub fn new(dir: impl AsRef<Path>) -> Self {
        let dir = dir.as_ref();
        Self {
            image_unet: dir.join("image_unet"),
            text_unet: dir.join("text_unet"),
            text_encoder: dir.join("text_encoder"),
            image_encoder: dir.join("image_encoder"),
            vae: dir.join("vae"),
            tokenizer: dir.join("tokenizer"),
        }
    }

    prompt_diffusion_core::setters! {
        /// Takes the VAE from another folder.
        with_vae(vae: impl Into<PathBuf>) = vae.into();
        /// Takes the tokenizer from another folder.
        with_tokenizer(tokenizer: impl Into<PathBuf>) = tokenizer.into();
    }
}

/// The official checkpoint files (`pretrained_pth/` of `shi-labs/versatile-diffusion`) and the
/// CLIP model they were trained with (`openai/clip-vit-large-patch14`, a transformers folder).
#[derive(Debug, Clone)]
pub struct OfficialFiles {
    /// `vd-four-flow-v1-0.pth` (or its fp16 version).
    pub diffuser: PathBuf,
    /// `kl-f8.pth`.
    pub vae: PathBuf,
    /// CLIP text tower folder (a full CLIP folder works).
    pub text_encoder: PathBuf,
    /// CLIP vision tower folder (a full CLIP folder works).
    pub image_encoder: PathBuf,
    /// CLIP tokenizer folder.
    pub tokenizer: PathBuf,
    /// Configuration of the image diffuser (default: [`image_unet_config`]).
    pub image_unet_config: UNet2DConditionConfig,
    /// Configuration of the text diffuser (default: [`text_unet_config`]).
    pub text_unet_config: UNet2DConditionConfig,
    /// Configuration of the VAE (default: SD 1.x's).
    pub vae_config: AutoencoderKLConfig,
}

impl OfficialFiles {
    /// The official diffuser and VAE files with CLIP ViT-L/14 from `clip_dir`.
    pub fn new(
        diffuser: impl Into<PathBuf>,
        vae: impl Into<PathBuf>,
        clip_dir: impl AsRef<Path>,
    ) -> Self {
        let clip = clip_dir.as_ref().to_path_buf();
        Self {
            diffuser: diffuser.into(),
            vae: vae.into(),
            text_encoder: clip.clone(),
            image_encoder: clip.clone(),
            tokenizer: clip,
            image_unet_config: image_unet_config(),
            text_unet_config: text_unet_config(),
            vae_config: AutoencoderKLConfig::sd_v1_5(),
        }
    }
}

/// Optimus' weights (`optimus-vae.pth`), vocabulary folder and sizes.
#[derive(Debug, Clone)]
pub struct OptimusFiles {
    /// `optimus-vae.pth`.
    pub weights: PathBuf,
    /// Folder with `bert-base-cased-vocab.txt`, `gpt2-vocab.json`, `gpt2-merges.txt`.
    pub vocab: PathBuf,
    /// Sizes (default: [`OptimusConfig::versatile`]).
    pub config: OptimusConfig,
}

impl OptimusFiles {
    /// Versatile Diffusion's Optimus from `weights` and the `vocab` folder.
    pub fn new(weights: impl Into<PathBuf>, vocab: impl Into<PathBuf>) -> Self {
        Self {
            weights: weights.into(),
            vocab: vocab.into(),
            config: OptimusConfig::versatile(),
        }
    }

    prompt_diffusion_core::setters! {
        /// Other sizes.
        with_config(config: OptimusConfig);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prompt_diffusion_unet::DataLayerKind;

    #[test]
    fn published_text_unet_config_is_flat() {
        let config = text_unet_config();
        assert_eq!(
            config.data_layers,
            DataLayerKind::Flat {
                sample_in: [768, 1, 1],
                sample_out: [768, 1, 1]
            }
        );
        assert_eq!(config.in_channels, 768);
    }
}
