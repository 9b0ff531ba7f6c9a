//! `UNet2DConditionConfig`: diffusers' `unet/config.json` for `UNet2DConditionModel`.
//!
//! Field names and defaults are those of `UNet2DConditionModel.__init__`. Options of the class
//! that no supported checkpoint family uses (class/addition embeddings, GLIGEN, fourier time
//! embeddings, …) are accepted only at their default values; anything else is reported by
//! [`validate`](UNet2DConditionConfig::validate) rather than silently ignored.

use std::path::Path;

use prompt_diffusion_core::config::{OneOrMany, parse_config};
use prompt_diffusion_core::limits::{
    MAX_KERNEL, MAX_SAMPLE_SIZE, MAX_WIDTH, check_count, check_counts, check_per_level,
};
use prompt_diffusion_core::nn::Activation;
use prompt_diffusion_core::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::data_layers::{DataLayerKind, normalize_flat_config};
use crate::trunk::{DownBlockType, MidBlockType, UNetTrunkConfig, string_option};

/// Decoder block kinds (`up_block_types`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum UpBlockType {
    /// Resnets followed by cross-attention transformers.
    #[serde(rename = "CrossAttnUpBlock2D")]
    CrossAttnUpBlock2D,
    /// Resnets only.
    #[serde(rename = "UpBlock2D")]
    UpBlock2D,
}

impl UpBlockType {
    /// Whether the block has cross-attention.
    pub fn has_attention(self) -> bool {
        matches!(self, Self::CrossAttnUpBlock2D)
    }
}

string_option! {
    /// Time embedding kinds (`time_embedding_type`); only `positional` is implemented.
    TimeEmbeddingType {
        /// Sinusoidal embedding of the timestep.
        Positional = "positional",
        /// Gaussian Fourier features (not implemented).
        Fourier = "fourier",
    }
}

string_option! {
    /// Attention kinds (`attention_type`); only `default` is implemented.
    AttentionType {
        /// Self- and cross-attention.
        Default = "default",
        /// GLIGEN's gated attention (not implemented).
        Gated = "gated",
        /// GLIGEN's gated text-image attention (not implemented).
        GatedTextImage = "gated-text-image",
    }
}

string_option! {
    /// Norms of the context in cross-attention (`cross_attention_norm`; none is implemented).
    CrossAttentionNorm {
        /// GroupNorm.
        GroupNorm = "group_norm",
        /// LayerNorm.
        LayerNorm = "layer_norm",
    }
}

/// The configuration of a [`UNet2DConditionModel`](crate::UNet2DConditionModel): the encoder
/// keys it shares with ControlNets ([`UNetTrunkConfig`], flattened, and readable as the
/// config's own fields through `Deref`) and the decoder and UNet-only keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UNet2DConditionConfig {
    /// The encoder keys (`in_channels`, `block_out_channels`, `down_block_types`, …).
    #[serde(flatten, deserialize_with = "crate::trunk::deserialize_flattened")]
    pub trunk: UNetTrunkConfig,
    /// Latent size the model was trained at (informative; default none).
    pub sample_size: Option<OneOrMany<usize>>,
    /// Output channels (default 4).
    pub out_channels: usize,
    /// Maps the input from [0, 1] to [-1, 1] first (default false).
    pub center_input_sample: bool,
    /// Decoder blocks (default UpBlock2D, 3 × CrossAttnUpBlock2D).
    pub up_block_types: Vec<UpBlockType>,
    /// Dropout probability (inference ignores it; default 0).
    pub dropout: f64,
    /// Two context streams (Versatile Diffusion; must be false here).
    pub dual_cross_attention: bool,
    /// Time embedding kind (only "positional" supported).
    pub time_embedding_type: TimeEmbeddingType,
    /// Width of the time embedding (default 4 × block_out_channels[0]).
    pub time_embedding_dim: Option<usize>,
    /// Activation after the time embedding (must be unset).
    pub time_embedding_act_fn: Option<Activation>,
    /// Activation after `linear_2` of the time embedding (must be unset).
    pub timestep_post_act: Option<Activation>,
    /// LCM guidance conditioning (must be unset).
    pub time_cond_proj_dim: Option<usize>,
    /// Kernel size of `conv_in` (default 3).
    pub conv_in_kernel: usize,
    /// Kernel size of `conv_out` (default 3).
    pub conv_out_kernel: usize,
    /// Attention kind (only "default" supported).
    pub attention_type: AttentionType,
    /// Output scale of the encoder/decoder resnets (default 1).
    pub resnet_out_scale_factor: f64,
    /// Time-embedding activation of the resnets' projection (must be false).
    pub resnet_skip_time_act: bool,
    /// Concatenate class and time embeddings (must be false).
    pub class_embeddings_concat: bool,
    /// Mid block without self-attention (must be unset or false).
    pub mid_block_only_cross_attention: Option<bool>,
    /// Norm of the context in cross-attention (must be unset).
    pub cross_attention_norm: Option<CrossAttentionNorm>,
    /// Per-block transformer depths of the decoder (SDXL; must be unset).
    pub reverse_transformer_layers_per_block: Option<serde_json::Value>,
    /// Convolutional (default) or flat data layers. Not a `config.json` key: a
    /// `UNetFlatConditionModel` config (Versatile Diffusion's `text_unet`) sets it when read.
    #[serde(skip)]
    pub data_layers: DataLayerKind,
}

impl Default for UNet2DConditionConfig {
    fn default() -> Self {
        Self::from_trunk(UNetTrunkConfig::default())
    }
}

crate::deref_to_trunk!(UNet2DConditionConfig);

impl UNet2DConditionConfig {
    /// The UNet with the encoder `trunk`, a decoder mirroring it (`CrossAttnDownBlock2D` ↔
    /// `CrossAttnUpBlock2D`), `out_channels = in_channels` and every other key at its default:
    /// for a ControlNet's trunk, the UNet it was trained against when it follows SD's layout.
    /// `num_attention_heads`, which the UNet does not take, becomes `attention_head_dim`.
    pub fn from_trunk(mut trunk: UNetTrunkConfig) -> Self {
        if let Some(heads) = trunk.num_attention_heads.take() {
            trunk.attention_head_dim = heads;
        }
        let up_block_types = trunk
            .down_block_types
            .iter()
            .rev()
            .map(|kind| match kind {
                DownBlockType::CrossAttnDownBlock2D => UpBlockType::CrossAttnUpBlock2D,
                DownBlockType::DownBlock2D => UpBlockType::UpBlock2D,
            })
            .collect();
        Self {
            sample_size: None,
            out_channels: trunk.in_channels,
            center_input_sample: false,
            up_block_types,
            dropout: 0.0,
            dual_cross_attention: false,
            time_embedding_type: TimeEmbeddingType::Positional,
            time_embedding_dim: None,
            time_embedding_act_fn: None,
            timestep_post_act: None,
            time_cond_proj_dim: None,
            conv_in_kernel: 3,
            conv_out_kernel: 3,
            attention_type: AttentionType::Default,
            resnet_out_scale_factor: 1.0,
            resnet_skip_time_act: false,
            class_embeddings_concat: false,
            mid_block_only_cross_attention: None,
            cross_attention_norm: None,
            reverse_transformer_layers_per_block: None,
            data_layers: DataLayerKind::Conv2D,
            trunk,
        }
    }

    /// Stable Diffusion 1.x (`stable-diffusion-v1-5/unet/config.json`).
    pub fn sd_v1_5() -> Self {
        Self {
            sample_size: Some(OneOrMany::One(64)),
            ..Self::from_trunk(UNetTrunkConfig {
                cross_attention_dim: OneOrMany::One(768),
                ..UNetTrunkConfig::default()
            })
        }
    }

    /// Stable Diffusion 2.1 (`stable-diffusion-2-1/unet/config.json`).
    pub fn sd_v2_1() -> Self {
        Self {
            sample_size: Some(OneOrMany::One(96)),
            ..Self::from_trunk(UNetTrunkConfig {
                cross_attention_dim: OneOrMany::One(1024),
                attention_head_dim: OneOrMany::Many(vec![5, 10, 20, 20]),
                use_linear_projection: true,
                upcast_attention: true,
                ..UNetTrunkConfig::default()
            })
        }
    }

    /// Reads a diffusers `config.json` (of a `UNet2DConditionModel` or, with flat data layers,
    /// a `UNetFlatConditionModel`) and validates it.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json(&text).map_err(|e| e.with_config_origin(path))
    }

    /// [`from_file`](Self::from_file) for the text of a `config.json`.
    pub fn from_json(text: &str) -> Result<Self> {
        let mut value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| Error::config("<root>", format!("invalid JSON: {e}")))?;
        let data_layers = normalize_flat_config(&mut value)?;
        let mut config: Self = parse_config(&value.to_string())?;
        config.data_layers = data_layers;
        config.validate()?;
        Ok(config)
    }

    /// Width of the time embedding.
    pub fn time_embed_dim(&self) -> usize {
        self.time_embedding_dim
            .unwrap_or(4 * self.block_out_channels.first().copied().unwrap_or(0))
    }

    /// The total downsampling factor of the encoder (8 for SD's four levels).
    pub fn upsampling_factor(&self) -> usize {
        1 << self.block_out_channels.len().saturating_sub(1)
    }

    /// The sizes and counts of the UNet-only keys that must lie within `core::limits`'
    /// maxima.
    fn check_bounds(&self) -> Result<()> {
        check_count("out_channels", self.out_channels, MAX_WIDTH)?;
        check_count("conv_in_kernel", self.conv_in_kernel, MAX_KERNEL)?;
        check_count("conv_out_kernel", self.conv_out_kernel, MAX_KERNEL)?;
        if let Some(dim) = self.time_embedding_dim {
            check_count("time_embedding_dim", dim, MAX_WIDTH)?;
        }
        match &self.sample_size {
            Some(OneOrMany::One(s)) => check_count("sample_size", *s, MAX_SAMPLE_SIZE)?,
            Some(OneOrMany::Many(s)) => check_counts("sample_size", s, MAX_SAMPLE_SIZE)?,
            None => {}
        }
        Ok(())
    }

    /// Checks the values before building, naming the offending field: sizes and counts are
    /// positive and under `core::limits`' maxima, GroupNorm groups and heads divide the
    /// channels.
    ///
    /// # Errors
    /// [`Error::Config`] for inconsistent values, [`Error::Unsupported`] for options of
    /// diffusers' class that this port does not implement.
    pub fn validate(&self) -> Result<()> {
        self.check_bounds()?;
        self.trunk.check_structure()?;
        let n = self.block_out_channels.len();
        check_per_level("up_block_types", self.up_block_types.len(), n)?;
        if let Some(kind) = &self.mid_block_type
            && *kind != MidBlockType::UNetMidBlock2DCrossAttn
        {
            return Err(Error::config(
                "mid_block_type",
                format!(
                    "`{}` is not a supported mid block (only `UNetMidBlock2DCrossAttn`)",
                    kind.as_str()
                ),
            ));
        }
        self.data_layers
            .check_channels(self.in_channels, self.out_channels)?;
        if self.conv_in_kernel.is_multiple_of(2) || self.conv_out_kernel.is_multiple_of(2) {
            return Err(Error::config("conv_in_kernel", "kernel sizes must be odd"));
        }
        let unsupported = [
            ("num_attention_heads", self.num_attention_heads.is_some()),
            ("dual_cross_attention", self.dual_cross_attention),
            (
                "time_embedding_type",
                self.time_embedding_type != TimeEmbeddingType::Positional,
            ),
            (
                "time_embedding_act_fn",
                self.time_embedding_act_fn.is_some(),
            ),
            ("timestep_post_act", self.timestep_post_act.is_some()),
            ("time_cond_proj_dim", self.time_cond_proj_dim.is_some()),
            (
                "attention_type",
                self.attention_type != AttentionType::Default,
            ),
            ("mid_block_type", self.mid_block_type.is_none()),
            ("resnet_skip_time_act", self.resnet_skip_time_act),
            ("class_embeddings_concat", self.class_embeddings_concat),
            (
                "mid_block_only_cross_attention",
                self.mid_block_only_cross_attention == Some(true),
            ),
            ("cross_attention_norm", self.cross_attention_norm.is_some()),
            (
                "reverse_transformer_layers_per_block",
                self.reverse_transformer_layers_per_block
                    .as_ref()
                    .is_some_and(|v| !v.is_null()),
            ),
        ];
        self.trunk
            .check_unsupported("UNet2DConditionModel", &unsupported)
    }
}

prompt_diffusion_core::component_configs!(UNet2DConditionConfig);
