//! `UNetTrunkConfig`: the keys of a UNet's encoder half (`conv_in`, time embedding, down
//! blocks, mid block), shared with `#[serde(flatten)]` by the configs of the UNet, the
//! ControlNet and Diff-Plugin's Spatial Complement Branch, which all copy that encoder.
//!
//! Keys whose diffusers values form a fixed vocabulary are enums ([`MidBlockType`],
//! [`ResnetTimeScaleShift`], …). A value this port does not know is kept as the enum's `Other`
//! case rather than refused while parsing, so validation reports it as an option the port does
//! not implement, naming the model and the key.

use prompt_diffusion_core::config::OneOrMany;
use prompt_diffusion_core::limits::{
    MAX_HEADS, MAX_KERNEL, MAX_LAYERS, MAX_LEVELS, MAX_WIDTH, check_count, check_counts,
    check_per_level,
};
use prompt_diffusion_core::nn::Activation;
use prompt_diffusion_core::{Error, Result};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// Defines a config option with a fixed vocabulary of strings: one variant per known string,
/// `Other` for any other string (kept, so that validation can name it and a config writes back
/// as read).
macro_rules! string_option {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(from = "String", into = "String")]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
            /// A value this port does not know.
            Other(String),
        }

        impl $name {
            /// The `config.json` spelling.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $text,)+
                    Self::Other(text) => text,
                }
            }
        }

        impl From<String> for $name {
            fn from(text: String) -> Self {
                match text.as_str() {
                    $($text => Self::$variant,)+
                    _ => Self::Other(text),
                }
            }
        }

        impl From<&str> for $name {
            fn from(text: &str) -> Self {
                Self::from(text.to_string())
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.as_str().to_string()
            }
        }
    };
}
pub(crate) use string_option;

string_option! {
    /// Mid block kinds (`mid_block_type`); only the cross-attention one is implemented.
    MidBlockType {
        /// Resnet, transformer(s), resnet.
        UNetMidBlock2DCrossAttn = "UNetMidBlock2DCrossAttn",
        /// Resnets only (not implemented).
        UNetMidBlock2D = "UNetMidBlock2D",
        /// Resnets and simple cross-attention (not implemented).
        UNetMidBlock2DSimpleCrossAttn = "UNetMidBlock2DSimpleCrossAttn",
    }
}

string_option! {
    /// How the resnets take the time embedding (`resnet_time_scale_shift`); only `default`
    /// (added to the features) is implemented.
    ResnetTimeScaleShift {
        /// The projected embedding is added.
        Default = "default",
        /// Scale and shift after the norm (not implemented).
        ScaleShift = "scale_shift",
        /// Spatial norm (not implemented).
        Spatial = "spatial",
    }
}

string_option! {
    /// Class embedding kinds (`class_embed_type`; none is implemented).
    ClassEmbedType {
        /// Timestep-style embedding of the class labels.
        Timestep = "timestep",
        /// The labels are the embedding.
        Identity = "identity",
        /// A projection of class features.
        Projection = "projection",
        /// A linear projection of class features.
        SimpleProjection = "simple_projection",
    }
}

string_option! {
    /// Additional embedding kinds (`addition_embed_type`, SDXL and Kandinsky; none is
    /// implemented).
    AdditionEmbedType {
        /// Text embedding.
        Text = "text",
        /// Text and image embedding.
        TextImage = "text_image",
        /// Text and time ids (SDXL).
        TextTime = "text_time",
        /// Image embedding.
        Image = "image",
        /// Image and hint embedding.
        ImageHint = "image_hint",
    }
}

string_option! {
    /// Context projection kinds (`encoder_hid_dim_type`; none is implemented).
    EncoderHidDimType {
        /// A linear projection of text features.
        TextProj = "text_proj",
        /// Text and image projection.
        TextImageProj = "text_image_proj",
        /// Image projection.
        ImageProj = "image_proj",
    }
}

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

/// The keys of a UNet's encoder half: input convolution, time embedding, down blocks and mid
/// block. Field names and defaults are those of diffusers' `UNet2DConditionModel` and
/// `ControlNetModel` (which agree on them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UNetTrunkConfig {
    /// Input (latent) channels (default 4; 9 for inpainting UNets).
    pub in_channels: usize,
    /// Timestep embedding order `[cos, sin]` (default true).
    pub flip_sin_to_cos: bool,
    /// Frequency shift of the timestep embedding (default 0).
    pub freq_shift: f64,
    /// Encoder blocks (default 3 × CrossAttnDownBlock2D, DownBlock2D).
    pub down_block_types: Vec<DownBlockType>,
    /// Mid block (default UNetMidBlock2DCrossAttn; a branch without mid block ignores it).
    pub mid_block_type: Option<MidBlockType>,
    /// Attention to the context only, no self-attention (default false; only false supported).
    pub only_cross_attention: OneOrMany<bool>,
    /// Channels per resolution level (default [320, 640, 1280, 1280]).
    pub block_out_channels: Vec<usize>,
    /// Resnets per encoder level; decoder levels have one more (default 2).
    pub layers_per_block: OneOrMany<usize>,
    /// Padding of the stride-2 downsampling convolutions (default 1).
    pub downsample_padding: usize,
    /// Output scale of the mid-block resnets (default 1).
    pub mid_block_scale_factor: f64,
    /// Non-linearity (default silu).
    pub act_fn: Activation,
    /// GroupNorm groups (default 32).
    pub norm_num_groups: Option<usize>,
    /// GroupNorm epsilon of the resnets (default 1e-5).
    pub norm_eps: f64,
    /// Width of the context tokens (default 1280; 768 for SD1, 1024 for SD2).
    pub cross_attention_dim: OneOrMany<usize>,
    /// Transformer blocks per attention layer (default 1).
    pub transformer_layers_per_block: OneOrMany<usize>,
    /// Legacy name of the number of heads per level (default 8; see diffusers issue #2011).
    pub attention_head_dim: OneOrMany<usize>,
    /// Number of heads per level; when set it replaces `attention_head_dim` (default unset;
    /// the UNet refuses it, as diffusers does).
    pub num_attention_heads: Option<OneOrMany<usize>>,
    /// `proj_in`/`proj_out` as Linear (SD2) instead of 1×1 convolutions (SD1) (default false).
    pub use_linear_projection: bool,
    /// Compute attention scores in f32 (always done here; default false).
    pub upcast_attention: bool,
    /// Class embedding (must be unset).
    pub class_embed_type: Option<ClassEmbedType>,
    /// Number of class embeddings (must be unset).
    pub num_class_embeds: Option<usize>,
    /// Input width of a projection class embedding (unused; must be unset where the model
    /// says so).
    pub projection_class_embeddings_input_dim: Option<usize>,
    /// Additional embedding (SDXL; must be unset).
    pub addition_embed_type: Option<AdditionEmbedType>,
    /// Width of SDXL's added time ids (unused; must be unset where the model says so).
    pub addition_time_embed_dim: Option<usize>,
    /// Heads of the added text-time embedding (unused; default 64).
    pub addition_embed_type_num_heads: usize,
    /// Projection of the context (must be unset).
    pub encoder_hid_dim: Option<usize>,
    /// Kind of context projection (must be unset).
    pub encoder_hid_dim_type: Option<EncoderHidDimType>,
    /// Resnet time conditioning (only `default` supported).
    pub resnet_time_scale_shift: ResnetTimeScaleShift,
}

impl Default for UNetTrunkConfig {
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
            mid_block_type: Some(MidBlockType::UNetMidBlock2DCrossAttn),
            only_cross_attention: OneOrMany::One(false),
            block_out_channels: vec![320, 640, 1280, 1280],
            layers_per_block: OneOrMany::One(2),
            downsample_padding: 1,
            mid_block_scale_factor: 1.0,
            act_fn: Activation::Silu,
            norm_num_groups: Some(32),
            norm_eps: 1e-5,
            cross_attention_dim: OneOrMany::One(1280),
            transformer_layers_per_block: OneOrMany::One(1),
            attention_head_dim: OneOrMany::One(8),
            num_attention_heads: None,
            use_linear_projection: false,
            upcast_attention: false,
            class_embed_type: None,
            num_class_embeds: None,
            projection_class_embeddings_input_dim: None,
            addition_embed_type: None,
            addition_time_embed_dim: None,
            addition_embed_type_num_heads: 64,
            encoder_hid_dim: None,
            encoder_hid_dim_type: None,
            resnet_time_scale_shift: ResnetTimeScaleShift::Default,
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

impl UNetTrunkConfig {
    /// GroupNorm groups (diffusers allows none; SD always has 32).
    pub fn groups(&self) -> usize {
        self.norm_num_groups.unwrap_or(32)
    }

    /// The width of the context tokens (the first level's, for a per-level list).
    pub fn context_width(&self) -> usize {
        match &self.cross_attention_dim {
            OneOrMany::One(width) => *width,
            OneOrMany::Many(widths) => widths.first().copied().unwrap_or(0),
        }
    }

    /// The heads per level: `num_attention_heads` when set, else `attention_head_dim`, and
    /// the key they come from.
    pub fn heads(&self) -> (&OneOrMany<usize>, &'static str) {
        match &self.num_attention_heads {
            Some(heads) => (heads, "num_attention_heads"),
            None => (&self.attention_head_dim, "attention_head_dim"),
        }
    }

    pub(crate) fn levels(&self) -> Result<Levels> {
        let n = self.block_out_channels.len();
        let (heads, heads_field) = self.heads();
        Ok(Levels {
            layers: self.layers_per_block.per_block(n, "layers_per_block")?,
            heads: heads.per_block(n, heads_field)?,
            cross_attention_dim: self
                .cross_attention_dim
                .per_block(n, "cross_attention_dim")?,
            transformer_layers: self
                .transformer_layers_per_block
                .per_block(n, "transformer_layers_per_block")?,
        })
    }

    /// The channels of every skip connection, in order: `conv_in`'s output, then each encoder
    /// resnet (with its attention) and downsampler. A ControlNet has one residual per entry;
    /// SD has 12.
    pub fn skip_channels(&self) -> Vec<usize> {
        let boc = &self.block_out_channels;
        let n = boc.len();
        let layers = self
            .layers_per_block
            .per_block(n, "layers_per_block")
            .unwrap_or_default();
        let mut skips: Vec<usize> = boc.first().copied().into_iter().collect();
        for (i, (&c, &l)) in boc.iter().zip(&layers).enumerate() {
            skips.extend(std::iter::repeat_n(c, l + usize::from(i + 1 < n)));
        }
        skips
    }

    /// The number of skip connections (see [`skip_channels`](Self::skip_channels)).
    pub fn num_skips(&self) -> usize {
        self.skip_channels().len()
    }

    /// Requires that `key`, which the model takes as one number, is not a per-level list.
    ///
    /// # Errors
    /// [`Error::Config`] naming `key`.
    pub fn require_single(key: &str, value: &OneOrMany<usize>) -> Result<()> {
        match value {
            OneOrMany::One(_) => Ok(()),
            OneOrMany::Many(_) => Err(Error::config(key, "must be a single number, not a list")),
        }
    }

    /// Checks the encoder keys ([`check_structure`](Self::check_structure)), then that the
    /// options no supported model uses are unset
    /// ([`check_unsupported`](Self::check_unsupported)).
    ///
    /// # Errors
    /// [`Error::Config`] for inconsistent values, [`Error::Unsupported`] for options this port
    /// does not implement.
    pub fn validate_trunk(&self, model: &str, unsupported: &[(&str, bool)]) -> Result<()> {
        self.check_structure()?;
        self.check_unsupported(model, unsupported)
    }

    /// Checks the encoder keys, naming the offending field: the levels and their lists agree,
    /// sizes and counts are positive and under `core::limits`' maxima, GroupNorm groups and
    /// heads divide the channels.
    ///
    /// # Errors
    /// [`Error::Config`].
    pub fn check_structure(&self) -> Result<()> {
        let n = self.block_out_channels.len();
        if n == 0 {
            return Err(Error::config("block_out_channels", "is empty"));
        }
        if n > MAX_LEVELS {
            return Err(Error::config(
                "block_out_channels",
                format!("has {n} levels, above the supported maximum {MAX_LEVELS}"),
            ));
        }
        check_counts("block_out_channels", &self.block_out_channels, MAX_WIDTH)?;
        check_count("norm_num_groups", self.groups(), MAX_WIDTH)?;
        check_count("in_channels", self.in_channels, MAX_WIDTH)?;
        if self.downsample_padding > MAX_KERNEL {
            return Err(Error::config(
                "downsample_padding",
                format!("{} is above {MAX_KERNEL}", self.downsample_padding),
            ));
        }
        check_per_level("down_block_types", self.down_block_types.len(), n)?;
        self.check_levels()
    }

    /// Reports the first option set to a value this port does not implement: those of every
    /// model (class and additional embeddings, projected contexts, scale-shift time
    /// conditioning, cross-attention only), then `unsupported`, the model's own (`(key,
    /// whether it is set to an unsupported value)`). `model` names the model in the report.
    ///
    /// # Errors
    /// [`Error::Unsupported`]; [`Error::Config`] when `only_cross_attention` has the wrong
    /// length.
    pub fn check_unsupported(&self, model: &str, unsupported: &[(&str, bool)]) -> Result<()> {
        let n = self.block_out_channels.len();
        let common = [
            ("class_embed_type", self.class_embed_type.is_some()),
            ("addition_embed_type", self.addition_embed_type.is_some()),
            ("num_class_embeds", self.num_class_embeds.is_some()),
            (
                "resnet_time_scale_shift",
                self.resnet_time_scale_shift != ResnetTimeScaleShift::Default,
            ),
            ("encoder_hid_dim", self.encoder_hid_dim.is_some()),
            ("encoder_hid_dim_type", self.encoder_hid_dim_type.is_some()),
            (
                "only_cross_attention",
                self.only_cross_attention
                    .per_block(n, "only_cross_attention")?
                    .contains(&true),
            ),
        ];
        match common.iter().chain(unsupported).find(|(_, bad)| *bad) {
            Some((field, _)) => Err(Error::Unsupported(format!(
                "{model} config field `{field}` with a non-default value"
            ))),
            None => Ok(()),
        }
    }

    /// The per-level lists: their lengths and bounds, and channels that GroupNorm groups and
    /// heads divide.
    fn check_levels(&self) -> Result<()> {
        let levels = self.levels()?;
        let (_, heads_field) = self.heads();
        check_counts("layers_per_block", &levels.layers, MAX_LAYERS)?;
        check_counts(heads_field, &levels.heads, MAX_HEADS)?;
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
        for (&c, &heads) in self.block_out_channels.iter().zip(&levels.heads) {
            if c == 0 || c % groups != 0 {
                return Err(Error::config(
                    "block_out_channels",
                    format!("{c} is not a positive multiple of norm_num_groups ({groups})"),
                ));
            }
            if heads == 0 || c % heads != 0 {
                return Err(Error::config(
                    heads_field,
                    format!("{heads} heads do not divide {c} channels"),
                ));
            }
        }
        Ok(())
    }
}

/// Reads the trunk keys of a config that holds a [`UNetTrunkConfig`] with
/// `#[serde(flatten, deserialize_with = "…")]`: a value of the wrong type is reported with its
/// key (which a flattened field would otherwise lose), and keys that neither the config nor the
/// trunk uses are reported with `tracing::warn!`, as `core::config::parse_config` does for
/// plain configs.
///
/// # Errors
/// The deserializer's error, naming the key.
pub fn deserialize_flattened<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<UNetTrunkConfig, D::Error> {
    let map = Map::<String, Value>::deserialize(deserializer)?;
    let known = serde_json::to_value(UNetTrunkConfig::default()).map_err(D::Error::custom)?;
    let unknown: Vec<&str> = map
        .keys()
        .filter(|k| !k.starts_with('_') && known.get(k.as_str()).is_none())
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        tracing::warn!("config keys not used: {}", unknown.join(", "));
    }
    UNetTrunkConfig::deserialize(Value::Object(map.clone())).map_err(|e| {
        let alone = |(key, value): &(&String, &Value)| {
            let one = Map::from_iter([((*key).clone(), (*value).clone())]);
            UNetTrunkConfig::deserialize(Value::Object(one)).is_err()
        };
        match map.iter().find(alone) {
            Some((key, _)) => D::Error::custom(format!("`{key}`: {e}")),
            None => D::Error::custom(e),
        }
    })
}

/// Implements `Deref`/`DerefMut` to its `trunk` field ([`UNetTrunkConfig`]) for a config that
/// flattens the trunk keys, so that they read as the config's own fields
/// (`config.block_out_channels`).
#[macro_export]
macro_rules! deref_to_trunk {
    ($config:ty) => {
        impl ::std::ops::Deref for $config {
            type Target = $crate::UNetTrunkConfig;

            fn deref(&self) -> &$crate::UNetTrunkConfig {
                &self.trunk
            }
        }

        impl ::std::ops::DerefMut for $config {
            fn deref_mut(&mut self) -> &mut $crate::UNetTrunkConfig {
                &mut self.trunk
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use prompt_diffusion_core::config::parse_config;

    use super::*;
    use crate::UNet2DConditionConfig;

    #[test]
    fn string_options_keep_unknown_values_for_validation() {
        let text = r#"{"resnet_time_scale_shift": "scale_shift", "mid_block_type": "Mid"}"#;
        let config: UNet2DConditionConfig = parse_config(text).unwrap();
        assert_eq!(
            config.resnet_time_scale_shift,
            ResnetTimeScaleShift::ScaleShift
        );
        assert_eq!(
            config.mid_block_type,
            Some(MidBlockType::Other("Mid".into()))
        );
        let json = serde_json::to_value(&config).unwrap();
        assert_eq!(json["resnet_time_scale_shift"], "scale_shift");
        assert_eq!(json["mid_block_type"], "Mid");
        assert!(matches!(config.validate(), Err(Error::Config { .. })));
        let mut config = config;
        config.mid_block_type = None;
        assert!(matches!(config.validate(), Err(Error::Unsupported(_))));
    }

    #[test]
    fn flattened_keys_of_the_wrong_type_are_named() {
        let err = parse_config::<UNet2DConditionConfig>(r#"{"layers_per_block": "x"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("layers_per_block"), "{err}");
        let config = UNet2DConditionConfig::sd_v2_1();
        let json = serde_json::to_string(&config).unwrap();
        assert_eq!(
            parse_config::<UNet2DConditionConfig>(&json).unwrap(),
            config
        );
    }
}
