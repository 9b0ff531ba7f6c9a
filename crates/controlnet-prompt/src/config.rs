//! `ControlNetConfig`: diffusers' `controlnet/config.json` for `ControlNetModel` (and for the
//! Prompt Diffusion port, whose config is the same with `conditioning_channels: 6`).
//!
//! Field names and defaults are those of `ControlNetModel.__init__`
//! (`diffusers/models/controlnets/controlnet.py`). The encoder is a copy of a UNet's encoder and
//! mid block, so [`to_unet_config`](ControlNetConfig::to_unet_config) turns the config into the
//! shared [`UNet2DConditionConfig`] from which the blocks are built; options of diffusers'
//! class that no supported checkpoint uses (class/addition embeddings, projected contexts, a mid
//! block without attention) are accepted only at their defaults and otherwise reported by
//! [`validate`](ControlNetConfig::validate).

use std::path::Path;

use prompt_diffusion_core::config::{OneOrMany, read_validated};
use prompt_diffusion_core::limits::{MAX_LEVELS, MAX_WIDTH, check_count, check_counts};
use prompt_diffusion_core::{Error, Result};
use prompt_diffusion_unet::{MidBlockType, UNet2DConditionConfig, UNetTrunkConfig};
use serde::{Deserialize, Serialize};

/// Channel order the hint is given in (`controlnet_conditioning_channel_order`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelOrder {
    /// The hint is used as given.
    #[default]
    Rgb,
    /// The hint's channels are reversed before the hint encoder (diffusers flips the whole
    /// channel axis).
    Bgr,
}

/// The configuration of a [`ControlNetModel`](crate::ControlNetModel) or a
/// [`PromptDiffusionControlNet`](crate::PromptDiffusionControlNet): the UNet encoder keys it
/// copies ([`UNetTrunkConfig`], flattened, and readable as the config's own fields through
/// `Deref`) and the hint keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ControlNetConfig {
    /// The encoder keys (`in_channels`, `block_out_channels`, `down_block_types`, …);
    /// `layers_per_block` and `cross_attention_dim` are single numbers here.
    #[serde(
        flatten,
        deserialize_with = "prompt_diffusion_unet::trunk::deserialize_flattened"
    )]
    pub trunk: UNetTrunkConfig,
    /// Channels of the hint image (default 3; 6 for Prompt Diffusion's example pair).
    pub conditioning_channels: usize,
    /// Channel order of the hint (default rgb).
    pub controlnet_conditioning_channel_order: ChannelOrder,
    /// Channels of the hint encoder's stages (default [16, 32, 96, 256]); every stage after the
    /// first halves the resolution, so hints are `2^(stages − 1)` times the latent size.
    pub conditioning_embedding_out_channels: Option<Vec<usize>>,
    /// Residuals are spatial means (Shuffle ControlNets; default false). Guess-mode scaling is
    /// then not applied, as in diffusers.
    pub global_pool_conditions: bool,
}

impl Default for ControlNetConfig {
    fn default() -> Self {
        Self {
            trunk: UNetTrunkConfig::default(),
            conditioning_channels: 3,
            controlnet_conditioning_channel_order: ChannelOrder::Rgb,
            conditioning_embedding_out_channels: Some(vec![16, 32, 96, 256]),
            global_pool_conditions: false,
        }
    }
}

prompt_diffusion_unet::deref_to_trunk!(ControlNetConfig);

impl ControlNetConfig {
    /// A standard Stable Diffusion 1.5 ControlNet with a 3-channel hint
    /// (`lllyasviel/sd-controlnet-canny/config.json`; depth, HED, … are identical).
    pub fn sd_v1_5() -> Self {
        Self {
            trunk: UNetTrunkConfig {
                cross_attention_dim: OneOrMany::One(768),
                ..UNetTrunkConfig::default()
            },
            ..Self::default()
        }
    }

    /// The Prompt Diffusion ControlNet: SD 1.5 with a 6-channel example-pair hint (the
    /// config `convert_original_promptdiffusion_to_diffusers.py` writes for
    /// `models/cldm_v15.yaml`). The 3-channel query encoder is implied by the model kind.
    pub fn prompt_diffusion() -> Self {
        Self {
            conditioning_channels: 6,
            ..Self::sd_v1_5()
        }
    }

    /// Reads a diffusers `config.json` and validates it.
    ///
    /// # Errors
    /// [`Error::Io`], [`Error::Config`] (naming the file and field) or [`Error::Unsupported`].
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        read_validated(path, Self::validate)
    }

    /// The hint encoder's stage channels.
    ///
    /// # Errors
    /// [`Error::Config`] when `conditioning_embedding_out_channels` is unset or empty.
    pub fn hint_channels(&self) -> Result<&[usize]> {
        match self.conditioning_embedding_out_channels.as_deref() {
            Some(c) if !c.is_empty() => Ok(c),
            _ => Err(Error::config(
                "conditioning_embedding_out_channels",
                "must list at least one stage",
            )),
        }
    }

    /// How many times larger than the latent a hint is (8 for the 4-stage SD encoders).
    pub fn hint_downscale_factor(&self) -> usize {
        let stages = self
            .conditioning_embedding_out_channels
            .as_ref()
            .map_or(1, |c| c.len().max(1));
        1usize.checked_shl(stages as u32 - 1).unwrap_or(usize::MAX)
    }

    /// The number of down-block residuals (12 for SD; one per UNet skip connection).
    pub fn num_down_residuals(&self) -> usize {
        self.num_skips()
    }

    /// The UNet configuration whose encoder and mid block this ControlNet copies
    /// ([`UNet2DConditionConfig::from_trunk`]).
    pub fn to_unet_config(&self) -> UNet2DConditionConfig {
        UNet2DConditionConfig::from_trunk(self.trunk.clone())
    }

    /// Checks the values before building, naming the offending field.
    ///
    /// # Errors
    /// [`Error::Config`] for inconsistent values, [`Error::Unsupported`] for options of
    /// diffusers' class that this port does not implement.
    pub fn validate(&self) -> Result<()> {
        UNetTrunkConfig::require_single("layers_per_block", &self.layers_per_block)?;
        UNetTrunkConfig::require_single("cross_attention_dim", &self.cross_attention_dim)?;
        check_count(
            "conditioning_channels",
            self.conditioning_channels,
            MAX_WIDTH,
        )?;
        let hint = self.hint_channels()?;
        if hint.len() > MAX_LEVELS {
            return Err(Error::config(
                "conditioning_embedding_out_channels",
                format!("has {} stages, above the maximum {MAX_LEVELS}", hint.len()),
            ));
        }
        check_counts("conditioning_embedding_out_channels", hint, MAX_WIDTH)?;
        if self.mid_block_type != Some(MidBlockType::UNetMidBlock2DCrossAttn) {
            return Err(Error::Unsupported(format!(
                "ControlNetModel mid_block_type {:?} (only \"UNetMidBlock2DCrossAttn\")",
                self.mid_block_type.as_ref().map(MidBlockType::as_str)
            )));
        }
        let unsupported = [
            (
                "addition_time_embed_dim",
                self.addition_time_embed_dim.is_some(),
            ),
            (
                "projection_class_embeddings_input_dim",
                self.projection_class_embeddings_input_dim.is_some(),
            ),
        ];
        self.trunk.validate_trunk("ControlNetModel", &unsupported)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prompt_diffusion_core::config::parse_config;

    #[test]
    fn presets_match_the_reference_configs() {
        let sd = ControlNetConfig::sd_v1_5();
        sd.validate().unwrap();
        assert_eq!(sd.num_down_residuals(), 12);
        assert_eq!(sd.hint_downscale_factor(), 8);
        let pd = ControlNetConfig::prompt_diffusion();
        assert_eq!(pd.conditioning_channels, 6);
        let mut unet = pd.to_unet_config();
        assert_eq!(unet.num_skips(), 12);
        unet.sample_size = UNet2DConditionConfig::sd_v1_5().sample_size;
        assert_eq!(unet, UNet2DConditionConfig::sd_v1_5());
    }

    #[test]
    fn parses_a_diffusers_config() {
        let config: ControlNetConfig = parse_config(
            r#"{"_class_name": "ControlNetModel", "cross_attention_dim": 768,
                "controlnet_conditioning_channel_order": "bgr", "attention_head_dim": [5, 10, 20, 20],
                "global_pool_conditions": true, "conditioning_channels": 6}"#,
        )
        .unwrap();
        config.validate().unwrap();
        assert_eq!(
            config.controlnet_conditioning_channel_order,
            ChannelOrder::Bgr
        );
        assert!(config.global_pool_conditions);
        assert_eq!(
            config.to_unet_config().attention_head_dim,
            OneOrMany::Many(vec![5, 10, 20, 20])
        );
    }

    #[test]
    fn num_attention_heads_replaces_the_legacy_field() {
        let mut config = ControlNetConfig::sd_v1_5();
        config.num_attention_heads = Some(OneOrMany::One(4));
        assert_eq!(
            config.to_unet_config().attention_head_dim,
            OneOrMany::One(4)
        );
    }

    #[test]
    fn invalid_and_unsupported_values_are_named() {
        let bad = ControlNetConfig {
            conditioning_embedding_out_channels: None,
            ..ControlNetConfig::sd_v1_5()
        };
        let err = bad.validate().unwrap_err();
        assert!(
            err.to_string()
                .contains("conditioning_embedding_out_channels"),
            "{err}"
        );

        let mut bad = ControlNetConfig::sd_v1_5();
        bad.mid_block_type = Some("UNetMidBlock2D".into());
        assert!(matches!(bad.validate(), Err(Error::Unsupported(_))));

        let mut bad = ControlNetConfig::sd_v1_5();
        bad.addition_embed_type = Some("text_time".into());
        let err = bad.validate().unwrap_err();
        assert!(err.to_string().contains("ControlNetModel"), "{err}");

        let mut bad = ControlNetConfig::sd_v1_5();
        bad.attention_head_dim = OneOrMany::One(7);
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("attention_head_dim")
        );

        let err =
            parse_config::<ControlNetConfig>(r#"{"controlnet_conditioning_channel_order": "rbg"}"#)
                .unwrap_err();
        assert!(
            err.to_string()
                .contains("controlnet_conditioning_channel_order"),
            "{err}"
        );
    }
}

prompt_diffusion_core::component_configs!(ControlNetConfig);
