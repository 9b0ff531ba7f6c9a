//! The Optimus text VAE of Versatile Diffusion's text flows (C. Li et al., "Optimus: Organizing
//! Sentences via Pre-trained Modeling of a Latent Space", EMNLP 2020; official VD
//! `lib/model_zoo/optimus.py`, `optimus_vae_next`).
//!
//! * encoder — BERT → pooled token → `linear` → mean of the `2·latent` projection: a sentence's
//!   768-d latent (no scale factor in the diffusion);
//! * decoder — GPT-2 with the latent as an extra key/value slot per layer and added to every
//!   token embedding, decoded greedily or by sampling from `<BOS>` up to 30 tokens.

mod bert;
mod config;
mod decoding;
mod gpt2;
mod tokenizer;

use std::path::Path;

use burn::prelude::*;
use burn::tensor::DType;
use prompt_diffusion_core::limits::HeaderCheck;
use prompt_diffusion_core::weights::{LoadOptions, TensorSource, load_module};
use prompt_diffusion_core::{Error, Result};
use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;

pub use bert::{
    BertAttention, BertDense, BertEmbeddings, BertEncoder, BertForLatentConnector,
    BertIntermediate, BertLayer, BertPooler, BertResidual, BertSelfAttention,
};
pub use config::{BertConfig, Gpt2Config, OptimusConfig};
pub use decoding::{MAX_LENGTH, TextDecoding, decode_tokens};
pub use gpt2::{Conv1D, GPT2Attention, GPT2Block, GPT2ForLatentConnector, GPT2MLP, GPT2Model};
pub use tokenizer::{MAX_ENCODER_TOKENS, OptimusTokenizers, VOCAB_FILES, clean_up_tokenization};

use crate::weights::{OPTIMUS_IGNORED, optimus_source};

/// The Optimus networks, named as in `optimus-vae.pth`.
#[derive(Module, Debug)]
pub struct OptimusVae<B: Backend> {
    /// The BERT encoder (`encoder.*`).
    pub encoder: BertForLatentConnector<B>,
    /// The GPT-2 decoder (`decoder.*`).
    pub decoder: GPT2ForLatentConnector<B>,
}

impl<B: Backend> OptimusVae<B> {
    /// Creates the networks for `config` (weights are filled by loading).
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid config.
    pub fn new(config: &OptimusConfig, device: &B::Device) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            encoder: BertForLatentConnector::new(config, device),
            decoder: GPT2ForLatentConnector::new(config, device),
        })
    }

    /// Loads an official `optimus-vae.pth` (opened as a [`TensorSource`]).
    ///
    /// # Errors
    /// [`Error::Weights`] naming every missing, unexpected or mis-shaped tensor.
    pub fn from_source(
        config: &OptimusConfig,
        source: &TensorSource,
        options: &LoadOptions,
        device: &B::Device,
    ) -> Result<Self> {
        let mut options = options.clone();
        for pattern in OPTIMUS_IGNORED {
            options = options.ignore(pattern);
        }
        config.validate()?;
        let source = optimus_source(source)?;
        check_weights(config, &source)?;
        load_module(Self::new(config, device)?, &source, "Optimus", &options)
    }
}

/// Checks `config` against the header of `source` (module names) before the networks are
/// allocated: the vocabularies, widths, positions and layer counts of BERT and GPT-2. Keys the
/// file lacks are left to the strict loader.
///
/// # Errors
/// [`Error::ConfigMismatch`](prompt_diffusion_core::Error::ConfigMismatch) naming the file,
/// the key, the config field and both values.
pub fn check_weights(config: &OptimusConfig, source: &TensorSource) -> Result<()> {
    let check = HeaderCheck::new(source, "Optimus");
    let (e, d) = (&config.encoder, &config.decoder);
    // `[rows, cols]` of an embedding table, each named by its config field.
    let table = |key: &str, (rows, r): (&str, usize), (cols, c): (&str, usize)| {
        check.shape_is(key, &[r, c], &format!("{rows} = {r}, {cols} = {c}"))
    };
    // The number of layers `prefix.N.suffix`, named by its config field.
    let layers = |prefix: &str, suffix: &str, (field, n): (&str, usize)| {
        check.count_is(prefix, suffix, n, &format!("{field} = {n}"), "layers")
    };
    let hidden = ("encoder.hidden_size", e.hidden_size);
    let n_embd = ("decoder.n_embd", d.n_embd);
    table(
        "encoder.embeddings.word_embeddings.weight",
        ("encoder.vocab_size", e.vocab_size),
        hidden,
    )?;
    layers(
        "encoder.encoder.layer.",
        ".output.dense.weight",
        ("encoder.num_hidden_layers", e.num_hidden_layers),
    )?;
    let vocab = ("decoder.vocab_size", d.vocab_size);
    table("decoder.transformer.wte.weight", vocab, n_embd)?;
    let positions = ("decoder.n_positions", d.n_positions);
    table("decoder.transformer.wpe.weight", positions, n_embd)?;
    let n_layer = ("decoder.n_layer", d.n_layer);
    layers("decoder.transformer.h.", ".attn.c_attn.weight", n_layer)
}

/// Optimus with its tokenizers: text ⇄ latent.
#[derive(Debug)]
pub struct Optimus<B: Backend> {
    /// The networks.
    pub vae: OptimusVae<B>,
    /// The tokenizers.
    pub tokenizers: OptimusTokenizers,
    config: OptimusConfig,
}

impl<B: Backend> Optimus<B> {
    /// Loads `optimus-vae.pth` and the vocabulary folder.
    ///
    /// # Errors
    /// Missing or invalid files, weights that do not match `config`, or a vocabulary whose size
    /// differs from the decoder's.
    pub fn from_files(
        weights: impl AsRef<Path>,
        vocab_dir: impl AsRef<Path>,
        config: &OptimusConfig,
        options: &LoadOptions,
        device: &B::Device,
    ) -> Result<Self> {
        let source = TensorSource::open(weights)?;
        let vae = OptimusVae::from_source(config, &source, options, device)?;
        Self::new(
            vae,
            OptimusTokenizers::from_folder(vocab_dir)?,
            config.clone(),
        )
    }

    /// Pairs loaded networks with their tokenizers.
    ///
    /// # Errors
    /// [`Error::Config`] when the decoder vocabulary and the tokenizer disagree.
    pub fn new(
        vae: OptimusVae<B>,
        tokenizers: OptimusTokenizers,
        config: OptimusConfig,
    ) -> Result<Self> {
        let (vocab, _) = vae.decoder.limits();
        if tokenizers.decoder_vocab_size() > vocab {
            return Err(Error::config(
                "decoder.vocab_size",
                format!(
                    "the GPT-2 vocabulary has {} tokens, the decoder {vocab}",
                    tokenizers.decoder_vocab_size()
                ),
            ));
        }
        Ok(Self {
            vae,
            tokenizers,
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &OptimusConfig {
        &self.config
    }

    /// The latent of each sentence (the posterior mean).
    ///
    /// # Shapes
    /// `n` sentences → `[n, latent]` (f32).
    ///
    /// # Errors
    /// Tokenizer failures, or a sentence longer than the position table.
    pub fn encode(&self, sentences: &[&str]) -> Result<Tensor<B, 2>> {
        let device = self.device();
        let (vocab, positions) = self.vae.encoder.limits();
        let mut latents = Vec::with_capacity(sentences.len());
        for sentence in sentences {
            let ids = self.tokenizers.encode(sentence)?;
            if ids.len() > positions || ids.iter().any(|&id| id as usize >= vocab) {
                return Err(Error::invalid_input(
                    "sentence",
                    format!(
                        "{sentence:?} does not fit the encoder ({vocab} tokens, {positions} positions)"
                    ),
                ));
            }
            latents.push(
                self.vae
                    .encoder
                    .forward(ids_tensor(&ids, &device))
                    .cast(DType::F32),
            );
        }
        if latents.is_empty() {
            return Err(Error::invalid_input("sentences", "no sentence given"));
        }
        Ok(Tensor::cat(latents, 0))
    }

    /// The decoder's next-token logits for every position.
    ///
    /// # Shapes
    /// `ids: [batch, seq]`, `z: [batch, latent]` → `[batch, seq, vocab]`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for ids outside the vocabulary or too many positions,
    /// [`Error::Shape`] for a latent of the wrong width.
    pub fn logits(&self, ids: &[Vec<u32>], z: Tensor<B, 2>) -> Result<Tensor<B, 3>> {
        let (vocab, positions) = self.vae.decoder.limits();
        let len = ids.first().map(Vec::len).unwrap_or(0);
        if len == 0 || ids.iter().any(|row| row.len() != len) || len >= positions {
            return Err(Error::invalid_input(
                "token ids",
                format!("need rows of one length between 1 and {}", positions - 1),
            ));
        }
        if ids.iter().flatten().any(|&id| id as usize >= vocab) {
            return Err(Error::invalid_input(
                "token ids",
                format!("ids must be below {vocab}"),
            ));
        }
        let [b, width] = z.dims();
        if b != ids.len() || width != self.config.latent_size {
            return Err(Error::Shape {
                origin: None,
                key: "latent".into(),
                expected: format!("[{}, {}]", ids.len(), self.config.latent_size),
                found: vec![b, width],
            });
        }
        let device = self.device();
        let flat: Vec<i64> = ids.iter().flatten().map(|&id| i64::from(id)).collect();
        let ids = Tensor::from_data(TensorData::new(flat, [b, len]), &device);
        let dtype = self.vae.decoder.transformer.wte.weight.val().dtype();
        Ok(self.vae.decoder.forward(ids, z.cast(dtype)))
    }

    /// Decodes each latent to token ids (`<BOS>` … `<EOS>`, at most [`MAX_LENGTH`]); sampling
    /// draws from one stream seeded by `seed`, latent after latent.
    ///
    /// # Shapes
    /// `latents: [n, latent]` (a text flow's `[n, latent, 1, 1]` reshaped).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a bad temperature, [`Error::Shape`] for a latent of the wrong
    /// width.
    pub fn decode_ids(
        &self,
        latents: Tensor<B, 2>,
        decoding: TextDecoding,
        seed: u64,
    ) -> Result<Vec<Vec<u32>>> {
        decoding.validate()?;
        let [n, _] = latents.dims();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (bos, eos) = (self.tokenizers.bos_id(), self.tokenizers.eos_id());
        let max_length = MAX_LENGTH.min(self.vae.decoder.limits().1 - 1);
        (0..n)
            .map(|i| {
                let z = latents.clone().narrow(0, i, 1);
                decode_tokens(bos, eos, max_length, decoding, &mut rng, |ids| {
                    let logits = self.logits(&[ids.to_vec()], z.clone())?;
                    let [_, len, vocab] = logits.dims();
                    let last = logits
                        .narrow(1, len - 1, 1)
                        .reshape([vocab])
                        .cast(DType::F32);
                    last.into_data()
                        .to_vec::<f32>()
                        .map_err(|e| Error::invalid_input("logits", format!("{e:?}")))
                })
            })
            .collect()
    }

    /// Decodes each latent to text (see [`decode_ids`](Self::decode_ids) and
    /// [`OptimusTokenizers::detokenize`]).
    ///
    /// # Errors
    /// As [`decode_ids`](Self::decode_ids).
    pub fn decode(
        &self,
        latents: Tensor<B, 2>,
        decoding: TextDecoding,
        seed: u64,
    ) -> Result<Vec<String>> {
        self.decode_ids(latents, decoding, seed)?
            .iter()
            .map(|ids| self.tokenizers.detokenize(ids))
            .collect()
    }

    fn device(&self) -> B::Device {
        self.vae.decoder.transformer.wte.weight.device()
    }
}

fn ids_tensor<B: Backend>(ids: &[u32], device: &B::Device) -> Tensor<B, 2, Int> {
    let values: Vec<i64> = ids.iter().map(|&id| i64::from(id)).collect();
    Tensor::from_data(TensorData::new(values, [1, ids.len()]), device)
}
