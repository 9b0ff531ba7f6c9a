//! `SCBNetConfig`: the Spatial Complement Branch's `scb/config.json`, and the shapes of the
//! Task-Prompt Branch and the selector head (which ship without a config and are read from the
//! weights).
//!
//! Field names and defaults are those of `SCBNet.__init__` (Diff-Plugin `modules/SCB.py`,
//! written by diffusers 0.17 `save_pretrained`). The released configs also carry keys the class
//! never reads: the ControlNet leftovers `conditioning_embedding_out_channels` and
//! `controlnet_conditioning_channel_order`, and, in all tasks but derain, `use_vae_conditioning`,
//! `vae_cond_in_channels`, `way_to_concat`, `concat_input` and `enable_mask`. They are accepted
//! and ignored, as the official class does.

use std::path::Path;

use prompt_diffusion_core::config::{OneOrMany, read_config};
use prompt_diffusion_core::nn::Activation;
use prompt_diffusion_core::{Error, Result};
use prompt_diffusion_unet::{DownBlockType, UNet2DConditionConfig, UpBlockType};
use serde::{Deserialize, Serialize};

/// The configuration of an [`SCBNet`](crate::SCBNet) (`scb/config.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SCBNetConfig {
    /// Channels of the condition latent z_c (default 4).
    pub in_channels: usize,
    /// Timestep embedding order `[cos, sin]` (default true).
    pub flip_sin_to_cos: bool,
    /// Frequency shift of the timestep embedding (default 0).
    pub freq_shift: f64,
    /// Encoder blocks (released: one `CrossAttnDownBlock2D`).
    pub down_block_types: Vec<DownBlockType>,
    /// Attention to the context only (default false; only false supported).
    pub only_cross_attention: OneOrMany<bool>,
    /// Channels per level (released: `[320]`).
    pub block_out_channels: Vec<usize>,
    /// Resnet/transformer pairs per level (default 2).
    pub layers_per_block: usize,
    /// Padding of stride-2 downsamplers between levels (default 1).
    pub downsample_padding: usize,
    /// Unused by the branch (it has no mid block; default 1).
    pub mid_block_scale_factor: f64,
    /// Non-linearity (default silu).
    pub act_fn: Activation,
    /// GroupNorm groups (default 32).
    pub norm_num_groups: Option<usize>,
    /// GroupNorm epsilon of the resnets (default 1e-5).
    pub norm_eps: f64,
    /// Width of the task prompt F^p (released: 768).
    pub cross_attention_dim: usize,
    /// Legacy name of the number of heads per level (default 8: 8 heads of 40 channels).
    pub attention_head_dim: OneOrMany<usize>,
    /// `proj_in`/`proj_out` as Linear instead of 1×1 convolutions (default false).
    pub use_linear_projection: bool,
    /// Class embedding (must be unset).
    pub class_embed_type: Option<String>,
    /// Number of class embeddings (must be unset).
    pub num_class_embeds: Option<usize>,
    /// Compute attention scores in f32 (always done here; default false).
    pub upcast_attention: bool,
    /// Resnet time conditioning (only "default" supported).
    pub resnet_time_scale_shift: String,
    /// Input width of a projection class embedding (must be unset).
    pub projection_class_embeddings_input_dim: Option<usize>,
    /// Residuals replaced by their spatial means (default false; only false supported).
    pub global_pool_conditions: bool,
    /// ControlNet leftover, ignored.
    pub conditioning_embedding_out_channels: Option<Vec<usize>>,
    /// ControlNet leftover, ignored.
    pub controlnet_conditioning_channel_order: Option<String>,
    /// Leftover of the authors' experiments, ignored.
    pub use_vae_conditioning: Option<bool>,
    /// Leftover of the authors' experiments, ignored.
    pub vae_cond_in_channels: Option<usize>,
    /// Leftover of the authors' experiments, ignored.
    pub way_to_concat: Option<String>,
    /// Leftover of the authors' experiments, ignored.
    pub concat_input: Option<bool>,
    /// Leftover of the authors' experiments, ignored.
    pub enable_mask: Option<bool>,
}

impl Default for SCBNetConfig {
    fn default() -> Self {
        Self {
            in_channels: 4,
            flip_sin_to_cos: true,
            freq_shift: 0.0,
            down_block_types: vec![
                DownBlockType::CrossAttnDownBlock2D,
                DownBlockType::CrossAttnDownBlock2D,
                DownBlockType::CrossAttnDownBlock2D,
                DownBlockType::DownBlock2D,
            ],
            only_cross_attention: OneOrMany::One(false),
            block_out_channels: vec![320, 640, 1280, 1280],
            layers_per_block: 2,
            downsample_padding: 1,
            mid_block_scale_factor: 1.0,
            act_fn: Activation::Silu,
            norm_num_groups: Some(32),
            norm_eps: 1e-5,
            cross_attention_dim: 1280,
            attention_head_dim: OneOrMany::One(8),
            use_linear_projection: false,
            class_embed_type: None,
            num_class_embeds: None,
            upcast_attention: false,
            resnet_time_scale_shift: "default".into(),
            projection_class_embeddings_input_dim: None,
            global_pool_conditions: false,
            conditioning_embedding_out_channels: Some(vec![16, 32, 96, 256]),
            controlnet_conditioning_channel_order: Some("rgb".into()),
            use_vae_conditioning: None,
            vae_cond_in_channels: None,
            way_to_concat: None,
            concat_input: None,
            enable_mask: None,
        }
    }
}

impl SCBNetConfig {
    /// The released configuration (`pre-trained/<task>/scb/config.json`, the same for all eight
    /// tasks): one `CrossAttnDownBlock2D` of 320 channels, 8 heads, F^p width 768.
    pub fn released() -> Self {
        Self {
            down_block_types: vec![DownBlockType::CrossAttnDownBlock2D],
            block_out_channels: vec![320],
            cross_attention_dim: 768,
            ..Self::default()
        }
    }

    /// The branch `train.py` creates for `unet` (`SCBNet.from_unet` with the released
    /// truncation): the UNet's first level only, with its channels, heads, norms and context
    /// width.
    ///
    /// # Errors
    /// [`Error::Config`] when a per-level list of `unet` has the wrong length.
    pub fn for_unet(unet: &UNet2DConditionConfig) -> Result<Self> {
        let n = unet.block_out_channels.len();
        let first = |v: Vec<usize>| v.first().copied().unwrap_or(0);
        Ok(Self {
            in_channels: unet.in_channels,
            flip_sin_to_cos: unet.flip_sin_to_cos,
            freq_shift: unet.freq_shift,
            down_block_types: vec![DownBlockType::CrossAttnDownBlock2D],
            block_out_channels: vec![unet.block_out_channels.first().copied().unwrap_or(0)],
            layers_per_block: first(unet.layers_per_block.per_block(n, "layers_per_block")?),
            act_fn: unet.act_fn,
            norm_num_groups: unet.norm_num_groups,
            norm_eps: unet.norm_eps,
            cross_attention_dim: first(
                unet.cross_attention_dim
                    .per_block(n, "cross_attention_dim")?,
            ),
            attention_head_dim: OneOrMany::One(first(
                unet.attention_head_dim.per_block(n, "attention_head_dim")?,
            )),
            use_linear_projection: unet.use_linear_projection,
            upcast_attention: unet.upcast_attention,
            ..Self::released()
        })
    }

    /// Reads a `config.json` and validates it.
    ///
    /// # Errors
    /// [`Error::Io`] for an unreadable file, [`Error::Config`]/[`Error::Unsupported`] for
    /// invalid or unsupported values (naming the file and field).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let config: Self = read_config(path)?;
        config.validate().map_err(|e| e.with_config_origin(path))?;
        Ok(config)
    }

    /// The UNet configuration whose encoder blocks the branch reuses.
    pub fn to_unet_config(&self) -> UNet2DConditionConfig {
        let n = self.block_out_channels.len();
        UNet2DConditionConfig {
            in_channels: self.in_channels,
            flip_sin_to_cos: self.flip_sin_to_cos,
            freq_shift: self.freq_shift,
            down_block_types: self.down_block_types.clone(),
            up_block_types: vec![UpBlockType::CrossAttnUpBlock2D; n],
            only_cross_attention: self.only_cross_attention.clone(),
            block_out_channels: self.block_out_channels.clone(),
            layers_per_block: OneOrMany::One(self.layers_per_block),
            downsample_padding: self.downsample_padding,
            mid_block_scale_factor: self.mid_block_scale_factor,
            act_fn: self.act_fn,
            norm_num_groups: self.norm_num_groups,
            norm_eps: self.norm_eps,
            cross_attention_dim: OneOrMany::One(self.cross_attention_dim),
            attention_head_dim: self.attention_head_dim.clone(),
            use_linear_projection: self.use_linear_projection,
            upcast_attention: self.upcast_attention,
            resnet_time_scale_shift: self.resnet_time_scale_shift.clone(),
            ..UNet2DConditionConfig::default()
        }
    }

    /// The number of residuals the branch returns: `conv` output, then one per resnet and
    /// downsampler (3 for the released config).
    pub fn num_residuals(&self) -> usize {
        let n = self.block_out_channels.len();
        1 + n * self.layers_per_block + n.saturating_sub(1)
    }

    /// Width of the time embedding (4 × the first level's channels).
    pub fn time_embed_dim(&self) -> usize {
        4 * self.block_out_channels.first().copied().unwrap_or(0)
    }

    /// Checks the values before building, naming the offending field; the sizes and counts
    /// are bounded as a UNet's (`core::limits`).
    ///
    /// # Errors
    /// [`Error::Config`] for inconsistent values, [`Error::Unsupported`] for options of the
    /// official class that no released plugin uses.
    pub fn validate(&self) -> Result<()> {
        if self.cross_attention_dim == 0 {
            return Err(Error::config("cross_attention_dim", "must be at least 1"));
        }
        let unsupported = [
            ("class_embed_type", self.class_embed_type.is_some()),
            ("num_class_embeds", self.num_class_embeds.is_some()),
            (
                "projection_class_embeddings_input_dim",
                self.projection_class_embeddings_input_dim.is_some(),
            ),
            ("global_pool_conditions", self.global_pool_conditions),
        ];
        if let Some((field, _)) = unsupported.iter().find(|(_, bad)| *bad) {
            return Err(Error::Unsupported(format!(
                "SCBNet config field `{field}` with a non-default value"
            )));
        }
        self.to_unet_config().validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prompt_diffusion_core::config::parse_config;

    #[test]
    fn released_config_parses_with_its_leftover_keys() {
        let text = r#"{"_diffusers_version": "0.17.1", "act_fn": "silu", "attention_head_dim": 8,
            "block_out_channels": [320], "class_embed_type": null, "concat_input": false,
            "conditioning_embedding_out_channels": [16, 32, 96, 256],
            "controlnet_conditioning_channel_order": "rgb", "cross_attention_dim": 768,
            "down_block_types": ["CrossAttnDownBlock2D"], "downsample_padding": 1,
            "enable_mask": false, "flip_sin_to_cos": true, "freq_shift": 0,
            "global_pool_conditions": false, "in_channels": 4, "layers_per_block": 2,
            "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32,
            "num_class_embeds": null, "only_cross_attention": false,
            "projection_class_embeddings_input_dim": null, "resnet_time_scale_shift": "default",
            "upcast_attention": false, "use_linear_projection": false,
            "use_vae_conditioning": true, "vae_cond_in_channels": 4, "way_to_concat": "cat"}"#;
        let config: SCBNetConfig = parse_config(text).unwrap();
        config.validate().unwrap();
        let released = SCBNetConfig {
            use_vae_conditioning: Some(true),
            vae_cond_in_channels: Some(4),
            way_to_concat: Some("cat".into()),
            concat_input: Some(false),
            enable_mask: Some(false),
            ..SCBNetConfig::released()
        };
        assert_eq!(config, released);
        assert_eq!(config.num_residuals(), 3);
        assert_eq!(config.time_embed_dim(), 1280);
        let from_unet = SCBNetConfig::for_unet(&UNet2DConditionConfig::sd_v1_5()).unwrap();
        assert_eq!(from_unet, SCBNetConfig::released());
    }

    #[test]
    fn unsupported_options_are_reported() {
        let config = SCBNetConfig {
            global_pool_conditions: true,
            ..SCBNetConfig::released()
        };
        assert!(matches!(config.validate(), Err(Error::Unsupported(_))));
        let config = SCBNetConfig {
            block_out_channels: vec![30],
            ..SCBNetConfig::released()
        };
        assert!(matches!(config.validate(), Err(Error::Config { .. })));
    }
}
