//! Configs of the CLIP text and vision towers, read from transformers' `config.json`.
//!
//! Ports `transformers/models/clip/configuration_clip.py` (v5): field names, types and defaults
//! are those of `CLIPTextConfig` and `CLIPVisionConfig`. A file may hold either a standalone
//! tower config (`model_type` `clip_text_model` / `clip_vision_model`, as in diffusers'
//! `text_encoder/` and `image_encoder/` folders) or a full `CLIPConfig` with nested
//! `text_config` / `vision_config` (as in `openai/clip-vit-large-patch14`); the legacy
//! `text_config_dict` / `vision_config_dict` entries override the nested values as transformers
//! does. The generic `PreTrainedConfig` keys (`architectures`, `dtype`, generation defaults, …)
//! are accepted silently; any other unknown key is reported with `tracing::warn!`.

use std::path::Path;

use prompt_diffusion_core::config::parse_config;
use prompt_diffusion_core::limits::{
    MAX_HEADS, MAX_LAYERS, MAX_POSITIONS, MAX_SAMPLE_SIZE, MAX_VOCAB, MAX_WIDTH, check_count,
};
use prompt_diffusion_core::nn::Activation;
use prompt_diffusion_core::{Error, Result};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// `CLIPTextConfig`: the text tower.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct CLIPTextConfig {
    /// Number of token embeddings (default 49408).
    pub vocab_size: usize,
    /// Width of the transformer (default 512).
    pub hidden_size: usize,
    /// Width of the MLP (default 2048).
    pub intermediate_size: usize,
    /// Output width of `text_projection` (default 512; `null` means the default).
    #[serde(deserialize_with = "null_as_default_projection")]
    pub projection_dim: usize,
    /// Number of encoder layers (default 12).
    pub num_hidden_layers: usize,
    /// Number of attention heads (default 8).
    pub num_attention_heads: usize,
    /// Number of position embeddings, the longest input (default 77).
    pub max_position_embeddings: usize,
    /// MLP activation (default `quick_gelu`).
    pub hidden_act: Activation,
    /// LayerNorm epsilon (default 1e-5; `null` means the default).
    #[serde(deserialize_with = "null_as_default_eps")]
    pub layer_norm_eps: f64,
    /// Padding token id (default 1; not used by the model).
    pub pad_token_id: Option<u32>,
    /// Start token id (default 49406; not used by the model).
    pub bos_token_id: Option<u32>,
    /// End token id (default 49407). It selects the pooled position: the legacy value 2 (found
    /// in the openai configs shipped with Stable Diffusion) pools at `argmax(input_ids)`, any
    /// other value at the first position holding this id.
    pub eos_token_id: u32,
}

impl Default for CLIPTextConfig {
    fn default() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 512,
            intermediate_size: 2048,
            projection_dim: 512,
            num_hidden_layers: 12,
            num_attention_heads: 8,
            max_position_embeddings: 77,
            hidden_act: Activation::QuickGelu,
            layer_norm_eps: 1e-5,
            pad_token_id: Some(1),
            bos_token_id: Some(49406),
            eos_token_id: 49407,
        }
    }
}

/// `CLIPVisionConfig`: the vision tower (a ViT).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct CLIPVisionConfig {
    /// Width of the transformer (default 768).
    pub hidden_size: usize,
    /// Width of the MLP (default 3072).
    pub intermediate_size: usize,
    /// Output width of `visual_projection` (default 512).
    #[serde(deserialize_with = "null_as_default_projection")]
    pub projection_dim: usize,
    /// Number of encoder layers (default 12).
    pub num_hidden_layers: usize,
    /// Number of attention heads (default 12).
    pub num_attention_heads: usize,
    /// Input channels (default 3).
    pub num_channels: usize,
    /// Input height and width in pixels (default 224).
    pub image_size: usize,
    /// Patch height and width in pixels (default 32).
    pub patch_size: usize,
    /// MLP activation (default `quick_gelu`).
    pub hidden_act: Activation,
    /// LayerNorm epsilon (default 1e-5).
    #[serde(deserialize_with = "null_as_default_eps")]
    pub layer_norm_eps: f64,
}

impl Default for CLIPVisionConfig {
    fn default() -> Self {
        Self {
            hidden_size: 768,
            intermediate_size: 3072,
            projection_dim: 512,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            num_channels: 3,
            image_size: 224,
            patch_size: 32,
            hidden_act: Activation::QuickGelu,
            layer_norm_eps: 1e-5,
        }
    }
}

fn null_as_default_projection<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    Ok(Option::<usize>::deserialize(d)?.unwrap_or(512))
}

fn null_as_default_eps<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(1e-5))
}

impl CLIPTextConfig {
    /// The text encoder of Stable Diffusion 1.x: OpenAI CLIP ViT-L/14's text tower, as in
    /// `stable-diffusion-v1-5/text_encoder/config.json` (768 wide, 12 layers, 12 heads,
    /// quick_gelu, legacy `eos_token_id` 2).
    pub fn sd_v1_5() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 768,
            intermediate_size: 3072,
            projection_dim: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            max_position_embeddings: 77,
            hidden_act: Activation::QuickGelu,
            layer_norm_eps: 1e-5,
            pad_token_id: Some(1),
            bos_token_id: Some(0),
            eos_token_id: 2,
        }
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads.max(1)
    }

    /// Checks the values a model can be built from (positive, under `core::limits`' maxima,
    /// heads dividing the width).
    ///
    /// # Errors
    /// [`Error::Config`] naming the first offending field.
    pub fn validate(&self) -> Result<()> {
        check_count("vocab_size", self.vocab_size, MAX_VOCAB)?;
        check_count("intermediate_size", self.intermediate_size, MAX_WIDTH)?;
        check_count("projection_dim", self.projection_dim, MAX_WIDTH)?;
        check_count(
            "max_position_embeddings",
            self.max_position_embeddings,
            MAX_POSITIONS,
        )?;
        check_count("num_hidden_layers", self.num_hidden_layers, MAX_LAYERS)?;
        check_width(self.hidden_size, self.num_attention_heads)?;
        check_eps(self.layer_norm_eps)
    }
}

impl CLIPVisionConfig {
    /// OpenAI CLIP ViT-L/14's vision tower (`openai/clip-vit-large-patch14`, the image encoder
    /// of Versatile Diffusion and Diff-Plugin): 1024 wide, 24 layers, 16 heads, 224 px in
    /// 14 px patches, projection to 768.
    pub fn vit_l_14() -> Self {
        Self {
            hidden_size: 1024,
            intermediate_size: 4096,
            projection_dim: 768,
            num_hidden_layers: 24,
            num_attention_heads: 16,
            num_channels: 3,
            image_size: 224,
            patch_size: 14,
            hidden_act: Activation::QuickGelu,
            layer_norm_eps: 1e-5,
        }
    }

    /// Number of patches along one side (`image_size / patch_size`).
    pub fn grid_size(&self) -> usize {
        self.image_size / self.patch_size.max(1)
    }

    /// Number of tokens: one class token and the patches.
    pub fn num_positions(&self) -> usize {
        self.grid_size() * self.grid_size() + 1
    }

    /// Checks the values a model can be built from (positive, under `core::limits`' maxima,
    /// heads dividing the width).
    ///
    /// # Errors
    /// [`Error::Config`] naming the first offending field.
    pub fn validate(&self) -> Result<()> {
        check_count("intermediate_size", self.intermediate_size, MAX_WIDTH)?;
        check_count("projection_dim", self.projection_dim, MAX_WIDTH)?;
        check_count("num_channels", self.num_channels, MAX_WIDTH)?;
        check_count("num_hidden_layers", self.num_hidden_layers, MAX_LAYERS)?;
        check_count("image_size", self.image_size, MAX_SAMPLE_SIZE)?;
        check_count("patch_size", self.patch_size, MAX_SAMPLE_SIZE)?;
        check_count("num_positions", self.num_positions(), MAX_POSITIONS)?;
        let (image, patch) = (self.image_size, self.patch_size);
        if image < patch {
            let reason = format!("{image} is smaller than patch_size {patch}");
            return Err(Error::config("image_size", reason));
        }
        check_width(self.hidden_size, self.num_attention_heads)?;
        check_eps(self.layer_norm_eps)
    }
}

fn check_width(hidden_size: usize, heads: usize) -> Result<()> {
    check_count("hidden_size", hidden_size, MAX_WIDTH)?;
    check_count("num_attention_heads", heads, MAX_HEADS)?;
    if hidden_size.is_multiple_of(heads) {
        return Ok(());
    }
    let reason =
        format!("hidden_size {hidden_size} is not a multiple of num_attention_heads {heads}");
    Err(Error::config("num_attention_heads", reason))
}

fn check_eps(eps: f64) -> Result<()> {
    if eps.is_finite() && eps > 0.0 {
        Ok(())
    } else {
        Err(Error::config(
            "layer_norm_eps",
            format!("{eps} is not a positive number"),
        ))
    }
}

/// Which tower of a `CLIPConfig` to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tower {
    Text,
    Vision,
}

impl Tower {
    fn key(self) -> &'static str {
        match self {
            Tower::Text => "text_config",
            Tower::Vision => "vision_config",
        }
    }
}

/// Keys every transformers `PreTrainedConfig` may carry (bookkeeping, generation defaults,
/// heads); they say nothing about the CLIP architecture and are dropped without a warning.
#[rustfmt::skip]
const GENERIC_KEYS: &[&str] = &[
    "architectures", "model_type", "transformers_version", "dtype", "torch_dtype",
    "initializer_range", "initializer_factor", "attention_dropout", "dropout", "return_dict",
    "output_hidden_states", "output_attentions", "torchscript", "use_bfloat16", "tf_legacy_loss",
    "pruned_heads", "tie_word_embeddings", "chunk_size_feed_forward", "is_encoder_decoder",
    "is_decoder", "cross_attention_hidden_size", "add_cross_attention", "tie_encoder_decoder",
    "max_length", "min_length", "do_sample", "early_stopping", "num_beams", "num_beam_groups",
    "diversity_penalty", "temperature", "top_k", "top_p", "typical_p", "repetition_penalty",
    "length_penalty", "no_repeat_ngram_size", "encoder_no_repeat_ngram_size", "bad_words_ids",
    "num_return_sequences", "output_scores", "return_dict_in_generate", "forced_bos_token_id",
    "forced_eos_token_id", "remove_invalid_values", "exponential_decay_length_penalty",
    "suppress_tokens", "begin_suppress_tokens", "finetuning_task", "id2label", "label2id",
    "num_labels", "tokenizer_class", "prefix", "sep_token_id", "decoder_start_token_id",
    "task_specific_params", "problem_type", "gradient_checkpointing", "logit_scale_init_value",
];

/// Reads one tower's config; the flag tells whether the file was a full `CLIPConfig`.
pub(crate) fn read_tower<T: serde::de::DeserializeOwned>(
    path: &Path,
    tower: Tower,
) -> Result<(T, bool)> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse_tower(&text, tower).map_err(|e| e.with_config_origin(path))
}

pub(crate) fn parse_tower<T: serde::de::DeserializeOwned>(
    text: &str,
    tower: Tower,
) -> Result<(T, bool)> {
    let root: Value = serde_json::from_str(text)
        .map_err(|e| Error::config("<root>", format!("invalid JSON: {e}")))?;
    let Value::Object(mut root) = root else {
        return Err(Error::config("<root>", "expected a JSON object"));
    };
    let nested = root.get("model_type").and_then(Value::as_str) == Some("clip")
        || root.contains_key("text_config")
        || root.contains_key("vision_config");
    let config = if nested {
        let key = tower.key();
        let mut sub = match root.remove(key) {
            Some(Value::Object(map)) => map,
            None | Some(Value::Null) => Map::new(),
            Some(_) => return Err(Error::config(key, "expected a JSON object")),
        };
        // Legacy `*_config_dict` values take precedence, as in `CLIPConfig.__post_init__`.
        if let Some(Value::Object(overrides)) = root.remove(&format!("{key}_dict")) {
            sub.extend(overrides);
        }
        // The projections of a CLIPModel have the top-level width.
        if let (false, Some(dim)) = (
            sub.contains_key("projection_dim"),
            root.get("projection_dim"),
        ) {
            sub.insert("projection_dim".into(), dim.clone());
        }
        sub
    } else {
        root
    };
    let mut config = config;
    for key in GENERIC_KEYS {
        config.remove(*key);
    }
    if tower == Tower::Vision {
        // Token ids appear in vision configs as generic (null) generation settings.
        for key in ["bos_token_id", "eos_token_id", "pad_token_id"] {
            config.remove(key);
        }
    }
    let parsed = parse_config(&Value::Object(config).to_string()).map_err(|e| match e {
        Error::Config {
            origin,
            field,
            reason,
        } if nested => Error::Config {
            origin,
            field: format!("{}.{field}", tower.key()),
            reason,
        },
        e => e,
    })?;
    Ok((parsed, nested))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_standalone_text_config() {
        let c = CLIPTextConfig::from_json(
            r#"{"architectures": ["CLIPTextModel"], "hidden_size": 16, "num_attention_heads": 2,
                "hidden_act": "gelu", "projection_dim": null, "eos_token_id": 2}"#,
        )
        .unwrap();
        assert_eq!(c.hidden_size, 16);
        assert_eq!(c.hidden_act, Activation::Gelu);
        assert_eq!(c.projection_dim, 512);
        assert_eq!(c.vocab_size, 49408);
        assert_eq!(c.eos_token_id, 2);
        c.validate().unwrap();
    }

    #[test]
    fn nested_clip_config_with_legacy_overrides() {
        let json = r#"{
            "model_type": "clip", "projection_dim": 768,
            "text_config": {"hidden_size": 512, "num_attention_heads": 8},
            "text_config_dict": {"hidden_size": 768, "num_attention_heads": 12},
            "vision_config": {"hidden_size": 1024, "num_attention_heads": 16, "patch_size": 14,
                              "num_hidden_layers": 24, "intermediate_size": 4096}
        }"#;
        let text = CLIPTextConfig::from_json(json).unwrap();
        assert_eq!((text.hidden_size, text.num_attention_heads), (768, 12));
        assert_eq!(text.projection_dim, 768);
        let vision = CLIPVisionConfig::from_json(json).unwrap();
        assert_eq!(vision, CLIPVisionConfig::vit_l_14());
        assert_eq!(vision.num_positions(), 257);
    }

    #[test]
    fn wrong_types_and_invalid_values_name_the_field() {
        let err = CLIPTextConfig::from_json(r#"{"hidden_size": "big"}"#).unwrap_err();
        assert!(
            matches!(&err, Error::Config { field, .. } if field == "hidden_size"),
            "{err}"
        );
        let err =
            CLIPVisionConfig::from_json(r#"{"vision_config": {"patch_size": -1}}"#).unwrap_err();
        assert!(
            matches!(&err, Error::Config { field, .. } if field == "vision_config.patch_size"),
            "{err}"
        );
        let err = CLIPTextConfig::from_json(r#"{"hidden_act": "tanh"}"#).unwrap_err();
        assert!(
            matches!(&err, Error::Config { field, .. } if field == "hidden_act"),
            "{err}"
        );
        let bad = CLIPTextConfig {
            hidden_size: 30,
            num_attention_heads: 4,
            ..CLIPTextConfig::default()
        };
        let err = bad.validate().unwrap_err();
        assert!(
            matches!(&err, Error::Config { field, .. } if field == "num_attention_heads"),
            "{err}"
        );
        let bad = CLIPVisionConfig {
            image_size: 8,
            patch_size: 14,
            ..CLIPVisionConfig::default()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn presets_are_valid() {
        CLIPTextConfig::sd_v1_5().validate().unwrap();
        CLIPVisionConfig::vit_l_14().validate().unwrap();
        assert_eq!(CLIPTextConfig::sd_v1_5().head_dim(), 64);
    }
}

prompt_diffusion_core::component_configs!(CLIPTextConfig, CLIPVisionConfig);
