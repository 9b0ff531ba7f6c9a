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

use prompt_diffusion_core::config::{OneOrMany, read_config};
use prompt_diffusion_core::limits::{MAX_LAYERS, MAX_LEVELS, MAX_WIDTH, check_count, check_counts};
use prompt_diffusion_core::nn::Activation;
use prompt_diffusion_core::{Error, Result};
use prompt_diffusion_unet::{DownBlockType, MidBlockType, UNet2DConditionConfig, UpBlockType};
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
/// [`PromptDiffusionControlNet`](crate::PromptDiffusionControlNet).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ControlNetConfig {
    /// Latent channels (default 4).
    pub in_channels: usize,
    /// Channels of the hint image (default 3; 6 for Prompt Diffusion's example pair).
    pub conditioning_channels: usize,
    /// Timestep embedding order `[cos, sin]` (default true).
    pub flip_sin_to_cos: bool,
    /// Frequency shift of the timestep embedding (default 0).
    pub freq_shift: f64,
    /// Encoder blocks (default 3 × CrossAttnDownBlock2D, DownBlock2D).
    pub down_block_types: Vec<DownBlockType>,
    /// Mid block (default `UNetMidBlock2DCrossAttn`, the only kind supported).
    pub mid_block_type: Option<String>,
    /// Attention to the context only (default false; only false supported).
    pub only_cross_attention: OneOrMany<bool>,
    /// Channels per resolution level (default [320, 640, 1280, 1280]).
    pub block_out_channels: Vec<usize>,
    /// Resnets per encoder level (default 2).
    pub layers_per_block: usize,
    /// Padding of the stride-2 downsampling convolutions (default 1).
    pub downsample_padding: usize,
    /// Output scale of the mid-block resnets (default 1).
    pub mid_block_scale_factor: f64,
    /// Non-linearity of the encoder (default silu).
    pub act_fn: Activation,
    /// GroupNorm groups (default 32).
    pub norm_num_groups: Option<usize>,
    /// GroupNorm epsilon of the resnets (default 1e-5).
    pub norm_eps: f64,
    /// Width of the context tokens (default 1280; 768 for SD1).
    pub cross_attention_dim: usize,
    /// Transformer blocks per attention layer (default 1).
    pub transformer_layers_per_block: OneOrMany<usize>,
    /// Projection of the context (must be unset).
    pub encoder_hid_dim: Option<usize>,
    /// Kind of context projection (must be unset).
    pub encoder_hid_dim_type: Option<String>,
    /// Legacy name of the number of heads per level (default 8; diffusers issue #2011).
    pub attention_head_dim: OneOrMany<usize>,
    /// Number of heads per level; when set it replaces `attention_head_dim` (default unset).
    pub num_attention_heads: Option<OneOrMany<usize>>,
    /// `proj_in`/`proj_out` as Linear (SD2) instead of 1×1 convolutions (default false).
    pub use_linear_projection: bool,
    /// Class embedding (must be unset).
    pub class_embed_type: Option<String>,
    /// Additional embedding (SDXL; must be unset).
    pub addition_embed_type: Option<String>,
    /// Width of the additional time embedding (must be unset).
    pub addition_time_embed_dim: Option<usize>,
    /// Number of class embeddings (must be unset).
    pub num_class_embeds: Option<usize>,
    /// Compute attention scores in f32 (always done here; default false).
    pub upcast_attention: bool,
    /// Resnet time conditioning (only "default" supported).
    pub resnet_time_scale_shift: String,
    /// Input width of a projection class embedding (must be unset).
    pub projection_class_embeddings_input_dim: Option<usize>,
    /// Channel order of the hint (default rgb).
    pub controlnet_conditioning_channel_order: ChannelOrder,
    /// Channels of the hint encoder's stages (default [16, 32, 96, 256]); every stage after the
    /// first halves the resolution, so hints are `2^(stages − 1)` times the latent size.
    pub conditioning_embedding_out_channels: Option<Vec<usize>>,
    /// Residuals are spatial means (Shuffle ControlNets; default false). Guess-mode scaling is
    /// then not applied, as in diffusers.
    pub global_pool_conditions: bool,
    /// Heads of a text-time embedding (unused; default 64).
    pub addition_embed_type_num_heads: usize,
}

impl Default for ControlNetConfig {
    fn default() -> Self {
        Self {
            in_channels: 4,
            conditioning_channels: 3,
            flip_sin_to_cos: true,
            freq_shift: 0.0,
            down_block_types: vec![
                DownBlockType::CrossAttnDownBlock2D,
                DownBlockType::CrossAttnDownBlock2D,
                DownBlockType::CrossAttnDownBlock2D,
                DownBlockType::DownBlock2D,
            ],
            mid_block_type: Some(MID_BLOCK.into()),
            only_cross_attention: OneOrMany::One(false),
            block_out_channels: vec![320, 640, 1280, 1280],
            layers_per_block: 2,
            downsample_padding: 1,
            mid_block_scale_factor: 1.0,
            act_fn: Activation::Silu,
            norm_num_groups: Some(32),
            norm_eps: 1e-5,
            cross_attention_dim: 1280,
            transformer_layers_per_block: OneOrMany::One(1),
            encoder_hid_dim: None,
            encoder_hid_dim_type: None,
            attention_head_dim: OneOrMany::One(8),
            num_attention_heads: None,
            use_linear_projection: false,
            class_embed_type: None,
            addition_embed_type: None,
            addition_time_embed_dim: None,
            num_class_embeds: None,
            upcast_attention: false,
            resnet_time_scale_shift: "default".into(),
            projection_class_embeddings_input_dim: None,
            controlnet_conditioning_channel_order: ChannelOrder::Rgb,
            conditioning_embedding_out_channels: Some(vec![16, 32, 96, 256]),
            global_pool_conditions: false,
            addition_embed_type_num_heads: 64,
        }
    }
}

const MID_BLOCK: &str = "UNetMidBlock2DCrossAttn";

impl ControlNetConfig {
    /// A standard Stable Diffusion 1.5 ControlNet with a 3-channel hint
    /// (`lllyasviel/sd-controlnet-canny/config.json`; depth, HED, … are identical).
    pub fn sd_v1_5() -> Self {
        Self {
            cross_attention_dim: 768,
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
        let path = path.as_ref();
        let config: Self = read_config(path)?;
        config.validate().map_err(|e| e.with_config_origin(path))?;
        Ok(config)
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
        let n = self.block_out_channels.len();
        1 + n * self.layers_per_block + n.saturating_sub(1)
    }

    /// The UNet configuration whose encoder and mid block this ControlNet copies: the same
    /// levels, heads, norms and time embedding, with decoder blocks mirroring the encoder
    /// (`CrossAttnDownBlock2D` ↔ `CrossAttnUpBlock2D`) and `out_channels = in_channels`, i.e.
    /// the UNet the ControlNet was trained against when it follows SD's layout.
    pub fn to_unet_config(&self) -> UNet2DConditionConfig {
        let up_block_types = self
            .down_block_types
            .iter()
            .rev()
            .map(|kind| match kind {
                DownBlockType::CrossAttnDownBlock2D => UpBlockType::CrossAttnUpBlock2D,
                DownBlockType::DownBlock2D => UpBlockType::UpBlock2D,
            })
            .collect();
        UNet2DConditionConfig {
            sample_size: None,
            in_channels: self.in_channels,
            out_channels: self.in_channels,
            flip_sin_to_cos: self.flip_sin_to_cos,
            freq_shift: self.freq_shift,
            down_block_types: self.down_block_types.clone(),
            mid_block_type: Some(MidBlockType::UNetMidBlock2DCrossAttn),
            up_block_types,
            only_cross_attention: self.only_cross_attention.clone(),
            block_out_channels: self.block_out_channels.clone(),
            layers_per_block: OneOrMany::One(self.layers_per_block),
            downsample_padding: self.downsample_padding,
            mid_block_scale_factor: self.mid_block_scale_factor,
            act_fn: self.act_fn,
            norm_num_groups: self.norm_num_groups,
            norm_eps: self.norm_eps,
            cross_attention_dim: OneOrMany::One(self.cross_attention_dim),
            transformer_layers_per_block: self.transformer_layers_per_block.clone(),
            // diffusers' ControlNet takes `num_attention_heads` when given, else the legacy
            // `attention_head_dim`; the UNet config only knows the latter.
            attention_head_dim: self
                .num_attention_heads
                .clone()
                .unwrap_or_else(|| self.attention_head_dim.clone()),
            num_attention_heads: None,
            use_linear_projection: self.use_linear_projection,
            upcast_attention: self.upcast_attention,
            class_embed_type: self.class_embed_type.clone(),
            addition_embed_type: self.addition_embed_type.clone(),
            num_class_embeds: self.num_class_embeds,
            resnet_time_scale_shift: self.resnet_time_scale_shift.clone(),
            encoder_hid_dim: self.encoder_hid_dim,
            ..UNet2DConditionConfig::default()
        }
    }

    /// Checks the values before building, naming the offending field.
    ///
    /// # Errors
    /// [`Error::Config`] for inconsistent values, [`Error::Unsupported`] for options of
    /// diffusers' class that this port does not implement.
    pub fn validate(&self) -> Result<()> {
        check_count("in_channels", self.in_channels, MAX_WIDTH)?;
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
        check_count("layers_per_block", self.layers_per_block, MAX_LAYERS)?;
        check_count("cross_attention_dim", self.cross_attention_dim, MAX_WIDTH)?;
        if let Some(heads) = &self.num_attention_heads {
            heads.per_block(self.block_out_channels.len(), "num_attention_heads")?;
        }
        match self.mid_block_type.as_deref() {
            Some(MID_BLOCK) => {}
            other => {
                return Err(Error::Unsupported(format!(
                    "ControlNetModel mid_block_type {other:?} (only \"{MID_BLOCK}\")"
                )));
            }
        }
        let unsupported = [
            ("encoder_hid_dim_type", self.encoder_hid_dim_type.is_some()),
            (
                "addition_time_embed_dim",
                self.addition_time_embed_dim.is_some(),
            ),
            (
                "projection_class_embeddings_input_dim",
                self.projection_class_embeddings_input_dim.is_some(),
            ),
        ];
        if let Some((field, _)) = unsupported.iter().find(|(_, bad)| *bad) {
            return Err(Error::Unsupported(format!(
                "ControlNetModel config field `{field}` with a non-default value"
            )));
        }
        self.to_unet_config().validate().map_err(|e| match e {
            Error::Unsupported(why) => {
                Error::Unsupported(why.replace("UNet2DConditionModel", "ControlNetModel"))
            }
            other => other,
        })
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
        let config = ControlNetConfig {
            num_attention_heads: Some(OneOrMany::One(4)),
            ..ControlNetConfig::sd_v1_5()
        };
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

        let bad = ControlNetConfig {
            mid_block_type: Some("UNetMidBlock2D".into()),
            ..ControlNetConfig::sd_v1_5()
        };
        assert!(matches!(bad.validate(), Err(Error::Unsupported(_))));

        let bad = ControlNetConfig {
            addition_embed_type: Some("text_time".into()),
            ..ControlNetConfig::sd_v1_5()
        };
        let err = bad.validate().unwrap_err();
        assert!(err.to_string().contains("ControlNetModel"), "{err}");

        let bad = ControlNetConfig {
            attention_head_dim: OneOrMany::One(7),
            ..ControlNetConfig::sd_v1_5()
        };
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
