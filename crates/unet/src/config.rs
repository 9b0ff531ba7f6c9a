//! `UNet2DConditionConfig`: diffusers' `unet/config.json` for `UNet2DConditionModel`.
//!
//! Field names and defaults are those of `UNet2DConditionModel.__init__`. Options of the class
//! that no supported checkpoint family uses (class/addition embeddings, GLIGEN, fourier time
//! embeddings, …) are accepted only at their default values; anything else is reported by
//! [`validate`](UNet2DConditionConfig::validate) rather than silently ignored.

use std::path::Path;

use prompt_diffusion_core::config::{OneOrMany, parse_config};
use prompt_diffusion_core::limits::{
    MAX_HEADS, MAX_KERNEL, MAX_LAYERS, MAX_LEVELS, MAX_SAMPLE_SIZE, MAX_WIDTH, check_count,
    check_counts,
};
use prompt_diffusion_core::nn::Activation;
use prompt_diffusion_core::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::data_layers::{DataLayerKind, normalize_flat_config};

/// Encoder block kinds (`down_block_types`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DownBlockType {
    /// Resnets followed by cross-attention transformers.
    #[serde(rename = "CrossAttnDownBlock2D")]
    CrossAttnDownBlock2D,
    /// Resnets only.
    #[serde(rename = "DownBlock2D")]
    DownBlock2D,
}

impl DownBlockType {
    /// Whether the block has cross-attention.
    pub fn has_attention(self) -> bool {
        matches!(self, Self::CrossAttnDownBlock2D)
    }
}

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

/// Mid block kinds (`mid_block_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MidBlockType {
    /// Resnet, transformer(s), resnet.
    #[serde(rename = "UNetMidBlock2DCrossAttn")]
    UNetMidBlock2DCrossAttn,
}

/// The configuration of a [`UNet2DConditionModel`](crate::UNet2DConditionModel).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UNet2DConditionConfig {
    /// Latent size the model was trained at (informative; default none).
    pub sample_size: Option<OneOrMany<usize>>,
    /// Input channels (default 4; 9 for inpainting models).
    pub in_channels: usize,
    /// Output channels (default 4).
    pub out_channels: usize,
    /// Maps the input from [0, 1] to [-1, 1] first (default false).
    pub center_input_sample: bool,
    /// Timestep embedding order `[cos, sin]` (default true).
    pub flip_sin_to_cos: bool,
    /// Frequency shift of the timestep embedding (default 0).
    pub freq_shift: f64,
    /// Encoder blocks (default 3 × CrossAttnDownBlock2D, DownBlock2D).
    pub down_block_types: Vec<DownBlockType>,
    /// Mid block (default UNetMidBlock2DCrossAttn).
    pub mid_block_type: Option<MidBlockType>,
    /// Decoder blocks (default UpBlock2D, 3 × CrossAttnUpBlock2D).
    pub up_block_types: Vec<UpBlockType>,
    /// Attention to the context only, no self-attention (default false; only false supported).
    pub only_cross_attention: OneOrMany<bool>,
    /// Channels per resolution level (default [320, 640, 1280, 1280]).
    pub block_out_channels: Vec<usize>,
    /// Resnets per encoder block; decoder blocks have one more (default 2).
    pub layers_per_block: OneOrMany<usize>,
    /// Padding of the stride-2 downsampling convolutions (default 1).
    pub downsample_padding: usize,
    /// Output scale of the mid-block resnets (default 1).
    pub mid_block_scale_factor: f64,
    /// Dropout probability (inference ignores it; default 0).
    pub dropout: f64,
    /// Non-linearity (default silu).
    pub act_fn: Activation,
    /// GroupNorm groups (default 32).
    pub norm_num_groups: Option<usize>,
    /// GroupNorm epsilon of the resnets and the output norm (default 1e-5).
    pub norm_eps: f64,
    /// Width of the context tokens (default 1280; 768 for SD1, 1024 for SD2).
    pub cross_attention_dim: OneOrMany<usize>,
    /// Transformer blocks per attention layer (default 1).
    pub transformer_layers_per_block: OneOrMany<usize>,
    /// Legacy name of the number of heads per block (default 8; see diffusers issue #2011).
    pub attention_head_dim: OneOrMany<usize>,
    /// Number of heads (must be unset: diffusers rejects it and uses `attention_head_dim`).
    pub num_attention_heads: Option<OneOrMany<usize>>,
    /// Two context streams (Versatile Diffusion; must be false here).
    pub dual_cross_attention: bool,
    /// `proj_in`/`proj_out` as Linear (SD2) instead of 1×1 convolutions (SD1) (default false).
    pub use_linear_projection: bool,
    /// Compute attention scores in f32 (always done here; default false).
    pub upcast_attention: bool,
    /// Class embedding (must be unset).
    pub class_embed_type: Option<String>,
    /// Additional embedding (SDXL; must be unset).
    pub addition_embed_type: Option<String>,
    /// Number of class embeddings (must be unset).
    pub num_class_embeds: Option<usize>,
    /// Resnet time conditioning (only "default" supported).
    pub resnet_time_scale_shift: String,
    /// Time embedding kind (only "positional" supported).
    pub time_embedding_type: String,
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
    /// Projection of the context (must be unset).
    pub encoder_hid_dim: Option<usize>,
    /// Attention kind (only "default" supported).
    pub attention_type: String,
    /// Output scale of the encoder/decoder resnets (default 1).
    pub resnet_out_scale_factor: f64,
    /// Time-embedding activation of the resnets' projection (must be false).
    pub resnet_skip_time_act: bool,
    /// Concatenate class and time embeddings (must be false).
    pub class_embeddings_concat: bool,
    /// Mid block without self-attention (must be unset or false).
    pub mid_block_only_cross_attention: Option<bool>,
    /// Norm of the context in cross-attention (must be unset).
    pub cross_attention_norm: Option<String>,
    /// Projection kind of the context (must be unset).
    pub encoder_hid_dim_type: Option<String>,
    /// Input width of class-embedding projections (SDXL; ignored when unused).
    pub projection_class_embeddings_input_dim: Option<usize>,
    /// Width of SDXL's added time ids (ignored when unused).
    pub addition_time_embed_dim: Option<usize>,
    /// Heads of the added text-time embedding (ignored when unused; default 64).
    pub addition_embed_type_num_heads: usize,
    /// Per-block transformer depths of the decoder (SDXL; must be unset).
    pub reverse_transformer_layers_per_block: Option<serde_json::Value>,
    /// Convolutional (default) or flat data layers. Not a `config.json` key: a
    /// `UNetFlatConditionModel` config (Versatile Diffusion's `text_unet`) sets it when read.
    #[serde(skip)]
    pub data_layers: DataLayerKind,
}

impl Default for UNet2DConditionConfig {
    fn default() -> Self {
        Self {
            sample_size: None,
            in_channels: 4,
            out_channels: 4,
            center_input_sample: false,
            flip_sin_to_cos: true,
            freq_shift: 0.0,
            down_block_types: vec![
                DownBlockType::CrossAttnDownBlock2D,
                DownBlockType::CrossAttnDownBlock2D,
                DownBlockType::CrossAttnDownBlock2D,
                DownBlockType::DownBlock2D,
            ],
            mid_block_type: Some(MidBlockType::UNetMidBlock2DCrossAttn),
            up_block_types: vec![
                UpBlockType::UpBlock2D,
                UpBlockType::CrossAttnUpBlock2D,
                UpBlockType::CrossAttnUpBlock2D,
                UpBlockType::CrossAttnUpBlock2D,
            ],
            only_cross_attention: OneOrMany::One(false),
            block_out_channels: vec![320, 640, 1280, 1280],
            layers_per_block: OneOrMany::One(2),
            downsample_padding: 1,
            mid_block_scale_factor: 1.0,
            dropout: 0.0,
            act_fn: Activation::Silu,
            norm_num_groups: Some(32),
            norm_eps: 1e-5,
            cross_attention_dim: OneOrMany::One(1280),
            transformer_layers_per_block: OneOrMany::One(1),
            attention_head_dim: OneOrMany::One(8),
            num_attention_heads: None,
            dual_cross_attention: false,
            use_linear_projection: false,
            upcast_attention: false,
            class_embed_type: None,
            addition_embed_type: None,
            num_class_embeds: None,
            resnet_time_scale_shift: "default".into(),
            time_embedding_type: "positional".into(),
            time_embedding_dim: None,
            time_embedding_act_fn: None,
            timestep_post_act: None,
            time_cond_proj_dim: None,
            conv_in_kernel: 3,
            conv_out_kernel: 3,
            encoder_hid_dim: None,
            attention_type: "default".into(),
            resnet_out_scale_factor: 1.0,
            resnet_skip_time_act: false,
            class_embeddings_concat: false,
            mid_block_only_cross_attention: None,
            cross_attention_norm: None,
            encoder_hid_dim_type: None,
            projection_class_embeddings_input_dim: None,
            addition_time_embed_dim: None,
            addition_embed_type_num_heads: 64,
            reverse_transformer_layers_per_block: None,
            data_layers: DataLayerKind::Conv2D,
        }
    }
}

/// The per-level values a config resolves to (lists expanded, heads derived).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Levels {
    pub layers: Vec<usize>,
    pub heads: Vec<usize>,
    pub cross_attention_dim: Vec<usize>,
    pub transformer_layers: Vec<usize>,
}

impl UNet2DConditionConfig {
    /// Stable Diffusion 1.x (`stable-diffusion-v1-5/unet/config.json`).
    pub fn sd_v1_5() -> Self {
        Self {
            sample_size: Some(OneOrMany::One(64)),
            cross_attention_dim: OneOrMany::One(768),
            ..Self::default()
        }
    }

    /// Stable Diffusion 2.1 (`stable-diffusion-2-1/unet/config.json`).
    pub fn sd_v2_1() -> Self {
        Self {
            sample_size: Some(OneOrMany::One(96)),
            cross_attention_dim: OneOrMany::One(1024),
            attention_head_dim: OneOrMany::Many(vec![5, 10, 20, 20]),
            use_linear_projection: true,
            upcast_attention: true,
            ..Self::default()
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

    /// The number of skip connections the decoder consumes (= ControlNet down residuals):
    /// 12 for SD.
    pub fn num_skips(&self) -> usize {
        let levels = self.levels().map(|l| l.layers).unwrap_or_default();
        let n = levels.len();
        1 + levels.iter().sum::<usize>() + n.saturating_sub(1)
    }

    pub(crate) fn levels(&self) -> Result<Levels> {
        let n = self.block_out_channels.len();
        let heads = self.attention_head_dim.per_block(n, "attention_head_dim")?;
        Ok(Levels {
            layers: self.layers_per_block.per_block(n, "layers_per_block")?,
            heads,
            cross_attention_dim: self
                .cross_attention_dim
                .per_block(n, "cross_attention_dim")?,
            transformer_layers: self
                .transformer_layers_per_block
                .per_block(n, "transformer_layers_per_block")?,
        })
    }

    /// GroupNorm groups (diffusers allows none; SD always has 32).
    pub fn groups(&self) -> usize {
        self.norm_num_groups.unwrap_or(32)
    }

    /// The sizes and counts that must lie within `core::limits`' maxima (checked before the
    /// per-level lists are expanded).
    fn check_bounds(&self) -> Result<()> {
        if self.block_out_channels.len() > MAX_LEVELS {
            return Err(Error::config(
                "block_out_channels",
                format!(
                    "has {} levels, above the supported maximum {MAX_LEVELS}",
                    self.block_out_channels.len()
                ),
            ));
        }
        check_counts("block_out_channels", &self.block_out_channels, MAX_WIDTH)?;
        check_count("norm_num_groups", self.groups(), MAX_WIDTH)?;
        check_count("in_channels", self.in_channels, MAX_WIDTH)?;
        check_count("out_channels", self.out_channels, MAX_WIDTH)?;
        check_count("conv_in_kernel", self.conv_in_kernel, MAX_KERNEL)?;
        check_count("conv_out_kernel", self.conv_out_kernel, MAX_KERNEL)?;
        if self.downsample_padding > MAX_KERNEL {
            return Err(Error::config(
                "downsample_padding",
                format!("{} is above {MAX_KERNEL}", self.downsample_padding),
            ));
        }
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
        let n = self.block_out_channels.len();
        if n == 0 {
            return Err(Error::config("block_out_channels", "is empty"));
        }
        self.check_bounds()?;
        if self.down_block_types.len() != n {
            return Err(Error::config(
                "down_block_types",
                format!(
                    "has {} entries, block_out_channels has {n}",
                    self.down_block_types.len()
                ),
            ));
        }
        if self.up_block_types.len() != n {
            return Err(Error::config(
                "up_block_types",
                format!(
                    "has {} entries, block_out_channels has {n}",
                    self.up_block_types.len()
                ),
            ));
        }
        let levels = self.levels()?;
        check_counts("layers_per_block", &levels.layers, MAX_LAYERS)?;
        check_counts("attention_head_dim", &levels.heads, MAX_HEADS)?;
        check_counts(
            "cross_attention_dim",
            &levels.cross_attention_dim,
            MAX_WIDTH,
        )?;
        check_counts(
            "transformer_layers_per_block",
            &levels.transformer_layers,
            MAX_LAYERS,
        )?;
        let groups = self.groups();
        for (i, &c) in self.block_out_channels.iter().enumerate() {
            if c == 0 || c % groups != 0 {
                return Err(Error::config(
                    "block_out_channels",
                    format!("{c} is not a positive multiple of norm_num_groups ({groups})"),
                ));
            }
            if levels.heads[i] == 0 || c % levels.heads[i] != 0 {
                return Err(Error::config(
                    "attention_head_dim",
                    format!("{} heads do not divide {c} channels", levels.heads[i]),
                ));
            }
        }
        if self.in_channels == 0 || self.out_channels == 0 {
            return Err(Error::config(
                "in_channels",
                "channel counts must be positive",
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
            ("class_embed_type", self.class_embed_type.is_some()),
            ("addition_embed_type", self.addition_embed_type.is_some()),
            ("num_class_embeds", self.num_class_embeds.is_some()),
            (
                "resnet_time_scale_shift",
                self.resnet_time_scale_shift != "default",
            ),
            (
                "time_embedding_type",
                self.time_embedding_type != "positional",
            ),
            (
                "time_embedding_act_fn",
                self.time_embedding_act_fn.is_some(),
            ),
            ("timestep_post_act", self.timestep_post_act.is_some()),
            ("time_cond_proj_dim", self.time_cond_proj_dim.is_some()),
            ("encoder_hid_dim", self.encoder_hid_dim.is_some()),
            ("attention_type", self.attention_type != "default"),
            (
                "only_cross_attention",
                self.only_cross_attention
                    .per_block(n, "only_cross_attention")?
                    .contains(&true),
            ),
            ("mid_block_type", self.mid_block_type.is_none()),
            ("resnet_skip_time_act", self.resnet_skip_time_act),
            ("class_embeddings_concat", self.class_embeddings_concat),
            (
                "mid_block_only_cross_attention",
                self.mid_block_only_cross_attention == Some(true),
            ),
            ("cross_attention_norm", self.cross_attention_norm.is_some()),
            ("encoder_hid_dim_type", self.encoder_hid_dim_type.is_some()),
            (
                "reverse_transformer_layers_per_block",
                self.reverse_transformer_layers_per_block
                    .as_ref()
                    .is_some_and(|v| !v.is_null()),
            ),
        ];
        if let Some((field, _)) = unsupported.iter().find(|(_, bad)| *bad) {
            return Err(Error::Unsupported(format!(
                "UNet2DConditionModel config field `{field}` with a non-default value"
            )));
        }
        Ok(())
    }
}
