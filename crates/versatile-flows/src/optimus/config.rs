//! Optimus sizes: the BERT encoder, the GPT-2 decoder and the latent width.
//!
//! `optimus-vae.pth` carries no configuration; [`OptimusConfig::versatile`] is the one
//! Versatile Diffusion uses (official `configs/model/optimus.yaml`: BERT-base-cased, GPT-2 small
//! with 3 added tokens, a 768-d latent). A `config.json` with the same fields (transformers'
//! `BertConfig`/`GPT2Config` names) describes other sizes.

use std::path::Path;

use prompt_diffusion_core::config::read_config;
use prompt_diffusion_core::limits::{
    MAX_HEADS, MAX_LAYERS, MAX_POSITIONS, MAX_VOCAB, MAX_WIDTH, check_count,
};
use prompt_diffusion_core::nn::Activation;
use prompt_diffusion_core::{Error, Result};
use serde::{Deserialize, Serialize};

/// The BERT encoder (transformers' `BertConfig` names; defaults: BERT-base-cased).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BertConfig {
    /// Vocabulary size (28996).
    pub vocab_size: usize,
    /// Width (768).
    pub hidden_size: usize,
    /// Layers (12).
    pub num_hidden_layers: usize,
    /// Heads (12).
    pub num_attention_heads: usize,
    /// MLP width (3072).
    pub intermediate_size: usize,
    /// Positions (512).
    pub max_position_embeddings: usize,
    /// Token types (2).
    pub type_vocab_size: usize,
    /// LayerNorm epsilon (1e-12).
    pub layer_norm_eps: f64,
    /// MLP activation (`gelu`, erf).
    pub hidden_act: Activation,
}

impl Default for BertConfig {
    fn default() -> Self {
        Self {
            vocab_size: 28996,
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            max_position_embeddings: 512,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            hidden_act: Activation::Gelu,
        }
    }
}

/// The GPT-2 decoder (transformers' `GPT2Config` names; defaults: GPT-2 small + 3 tokens).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Gpt2Config {
    /// Vocabulary size (50260: 50257 + `<PAD>`, `<BOS>`, `<EOS>`).
    pub vocab_size: usize,
    /// Width (768).
    pub n_embd: usize,
    /// Layers (12).
    pub n_layer: usize,
    /// Heads (12).
    pub n_head: usize,
    /// Positions (1024).
    pub n_positions: usize,
    /// LayerNorm epsilon (1e-5).
    pub layer_norm_epsilon: f64,
    /// MLP activation (`gelu_new`, tanh approximation).
    pub activation_function: Activation,
}

impl Default for Gpt2Config {
    fn default() -> Self {
        Self {
            vocab_size: 50260,
            n_embd: 768,
            n_layer: 12,
            n_head: 12,
            n_positions: 1024,
            layer_norm_epsilon: 1e-5,
            activation_function: Activation::GeluNew,
        }
    }
}

/// The Optimus text VAE as Versatile Diffusion uses it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OptimusConfig {
    /// Latent width (768; the text UNet's `in_channels[0]`).
    pub latent_size: usize,
    /// The encoder.
    pub encoder: BertConfig,
    /// The decoder.
    pub decoder: Gpt2Config,
}

impl Default for OptimusConfig {
    fn default() -> Self {
        Self::versatile()
    }
}

impl OptimusConfig {
    /// Versatile Diffusion's Optimus (`optimus-vae.pth`).
    pub fn versatile() -> Self {
        Self {
            latent_size: 768,
            encoder: BertConfig::default(),
            decoder: Gpt2Config::default(),
        }
    }

    /// Reads a `config.json` with the fields of this type.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let config: Self = read_config(path)?;
        config.validate().map_err(|e| e.with_config_origin(path))?;
        Ok(config)
    }

    /// Checks the sizes: positive, under `core::limits`' maxima, heads dividing the widths.
    ///
    /// # Errors
    /// [`Error::Config`] naming the field.
    pub fn validate(&self) -> Result<()> {
        let e = &self.encoder;
        let d = &self.decoder;
        let checks = [
            ("latent_size", self.latent_size > 0, "must be positive"),
            (
                "encoder.num_attention_heads",
                e.num_attention_heads > 0 && e.hidden_size.is_multiple_of(e.num_attention_heads),
                "must divide hidden_size",
            ),
            (
                "decoder.n_head",
                d.n_head > 0 && d.n_embd.is_multiple_of(d.n_head),
                "must divide n_embd",
            ),
            ("encoder.vocab_size", e.vocab_size > 0, "must be positive"),
            ("decoder.vocab_size", d.vocab_size > 0, "must be positive"),
            (
                "decoder.n_positions",
                d.n_positions > 1,
                "must be at least 2",
            ),
        ];
        if let Some((field, _, reason)) = checks.iter().find(|(_, ok, _)| !ok) {
            return Err(Error::config(*field, *reason));
        }
        let bounded = [
            ("latent_size", self.latent_size, MAX_WIDTH),
            ("encoder.vocab_size", e.vocab_size, MAX_VOCAB),
            ("encoder.hidden_size", e.hidden_size, MAX_WIDTH),
            ("encoder.num_hidden_layers", e.num_hidden_layers, MAX_LAYERS),
            (
                "encoder.num_attention_heads",
                e.num_attention_heads,
                MAX_HEADS,
            ),
            ("encoder.intermediate_size", e.intermediate_size, MAX_WIDTH),
            (
                "encoder.max_position_embeddings",
                e.max_position_embeddings,
                MAX_POSITIONS,
            ),
            ("encoder.type_vocab_size", e.type_vocab_size, MAX_VOCAB),
            ("decoder.vocab_size", d.vocab_size, MAX_VOCAB),
            ("decoder.n_embd", d.n_embd, MAX_WIDTH),
            ("decoder.n_layer", d.n_layer, MAX_LAYERS),
            ("decoder.n_head", d.n_head, MAX_HEADS),
            ("decoder.n_positions", d.n_positions, MAX_POSITIONS),
        ];
        bounded
            .iter()
            .try_for_each(|(field, value, max)| check_count(field, *value, *max))
    }
}
