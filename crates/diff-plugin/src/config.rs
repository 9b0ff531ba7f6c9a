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

use prompt_diffusion_core::config::{OneOrMany, read_validated};
use prompt_diffusion_core::{Error, Result};
use prompt_diffusion_unet::{DownBlockType, UNet2DConditionConfig, UNetTrunkConfig};
use serde::{Deserialize, Serialize};

/// The configuration of an [`SCBNet`](crate::SCBNet) (`scb/config.json`): the UNet encoder keys
/// ([`UNetTrunkConfig`], flattened, and readable as the config's own fields through `Deref`;
/// the branch has no mid block and ignores `mid_block_type`) and the branch's own keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SCBNetConfig {
    /// The encoder keys (released: one `CrossAttnDownBlock2D` of 320 channels, F^p width
    /// 768); `layers_per_block` and `cross_attention_dim` are single numbers here.
    #[serde(
        flatten,
        deserialize_with = "prompt_diffusion_unet::trunk::deserialize_flattened"
    )]
    pub trunk: UNetTrunkConfig,
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
            trunk: UNetTrunkConfig::default(),
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

prompt_diffusion_unet::deref_to_trunk!(SCBNetConfig);

impl SCBNetConfig {
    /// The released configuration (`pre-trained/<task>/scb/config.json`, the same for all eight
    /// tasks): one `CrossAttnDownBlock2D` of 320 channels, 8 heads, F^p width 768.
    pub fn released() -> Self {
        Self {
            trunk: UNetTrunkConfig {
                down_block_types: vec![DownBlockType::CrossAttnDownBlock2D],
                block_out_channels: vec![320],
                cross_attention_dim: OneOrMany::One(768),
                ..UNetTrunkConfig::default()
            },
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
        let first = |v: &OneOrMany<usize>, field: &str| -> Result<OneOrMany<usize>> {
            Ok(OneOrMany::One(
                v.per_block(n, field)?.first().copied().unwrap_or(0),
            ))
        };
        let mut config = Self::released();
        config.trunk = UNetTrunkConfig {
            block_out_channels: vec![unet.block_out_channels.first().copied().unwrap_or(0)],
            layers_per_block: first(&unet.layers_per_block, "layers_per_block")?,
            cross_attention_dim: first(&unet.cross_attention_dim, "cross_attention_dim")?,
            attention_head_dim: first(&unet.attention_head_dim, "attention_head_dim")?,
            in_channels: unet.in_channels,
            flip_sin_to_cos: unet.flip_sin_to_cos,
            freq_shift: unet.freq_shift,
            act_fn: unet.act_fn,
            norm_num_groups: unet.norm_num_groups,
            norm_eps: unet.norm_eps,
            use_linear_projection: unet.use_linear_projection,
            upcast_attention: unet.upcast_attention,
            ..config.trunk
        };
        Ok(config)
    }

    /// Reads a `config.json` and validates it.
    ///
    /// # Errors
    /// [`Error::Io`] for an unreadable file, [`Error::Config`]/[`Error::Unsupported`] for
    /// invalid or unsupported values (naming the file and field).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        read_validated(path, Self::validate)
    }

    /// The UNet configuration whose encoder blocks the branch reuses
    /// ([`UNet2DConditionConfig::from_trunk`]).
    pub fn to_unet_config(&self) -> UNet2DConditionConfig {
        UNet2DConditionConfig::from_trunk(self.trunk.clone())
    }

    /// The number of residuals the branch returns: `conv` output, then one per resnet and
    /// downsampler (3 for the released config).
    pub fn num_residuals(&self) -> usize {
        self.num_skips()
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
        UNetTrunkConfig::require_single("layers_per_block", &self.layers_per_block)?;
        UNetTrunkConfig::require_single("cross_attention_dim", &self.cross_attention_dim)?;
        if self.context_width() == 0 {
            return Err(Error::config("cross_attention_dim", "must be at least 1"));
        }
        let unsupported = [
            (
                "projection_class_embeddings_input_dim",
                self.projection_class_embeddings_input_dim.is_some(),
            ),
            ("global_pool_conditions", self.global_pool_conditions),
        ];
        self.trunk.validate_trunk("SCBNet", &unsupported)
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
        let mut config = SCBNetConfig::released();
        config.block_out_channels = vec![30];
        assert!(matches!(config.validate(), Err(Error::Config { .. })));
    }
}

prompt_diffusion_core::component_configs!(SCBNetConfig);
