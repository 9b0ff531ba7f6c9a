//! Textual inversion: learned token embeddings added to the tokenizer and the text encoder, as
//! diffusers' `TextualInversionLoaderMixin.load_textual_inversion`.
//!
//! Files read ([`TextualInversion::from_file`]):
//!
//! | layout | tensors | token (unless one is given) |
//! |---|---|---|
//! | diffusers `learned_embeds.bin` / `.safetensors` | `{token: [D]}` or `{token: [n, D]}` | the key |
//! | AUTOMATIC1111 `.pt` | `string_to_param.*: [n, D]` (and `name`) | its `name`, else the file stem |
//! | AUTOMATIC1111 `.safetensors` | `emb_params: [n, D]` | the file stem |
//!
//! (diffusers itself names an `emb_params` file's token `emb_params`.) An embedding of `n > 1`
//! vectors becomes the tokens `<t>`, `<t>_1`, …, `<t>_{n-1}`, and `<t>` in a prompt expands to
//! all of them ([`ClipTokenizer::expand_multi_vector_tokens`]). The new tokens get the ids after
//! the tokenizer's vocabulary and the text encoder's token embedding grows to match
//! ([`CLIPTextModel::append_token_embeddings`]).

use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::tensor::DType;
use prompt_diffusion_core::weights::TensorSource;
use prompt_diffusion_core::{Error, Result};

use crate::text_model::CLIPTextModel;
use crate::tokenizer::ClipTokenizer;

/// The tensor of an AUTOMATIC1111 `.pt` embedding (`string_to_param["*"]`).
pub const A1111_PT_KEY: &str = "string_to_param.*";

/// The tensor of an AUTOMATIC1111 `.safetensors` embedding.
pub const A1111_SAFETENSORS_KEY: &str = "emb_params";

/// The layout a textual-inversion file was written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbeddingLayout {
    /// diffusers: one tensor named by its token.
    Diffusers,
    /// AUTOMATIC1111's `.pt`: `string_to_param["*"]`.
    A1111Pt,
    /// AUTOMATIC1111's `.safetensors`: `emb_params`.
    A1111Safetensors,
}

/// A textual-inversion embedding: its token and vectors.
#[derive(Debug, Clone)]
pub struct TextualInversion {
    /// The token that stands for the embedding in prompts.
    pub token: String,
    /// The vectors, `[n, D]`.
    pub vectors: TensorData,
    /// The layout of the file.
    pub layout: EmbeddingLayout,
    /// The file it was read from.
    pub path: PathBuf,
    /// The tensor's name in the file.
    pub key: String,
}

impl TextualInversion {
    /// Reads an embedding file (`.safetensors`, or a PyTorch pickle: `.pt`, `.bin`, `.pth`,
    /// `.ckpt`); `token` replaces the token the file implies (see the [module docs](self)).
    ///
    /// # Errors
    /// [`Error::Io`]/[`Error::Format`] for an unreadable file, one that holds no tensor or
    /// tensors of none of the layouts (the error lists the keys found), or non-finite values;
    /// [`Error::Shape`] naming the file and key when the tensor is not `[D]` or `[n ≥ 1, D]`;
    /// [`Error::InvalidInput`] for an empty token.
    pub fn from_file(path: impl AsRef<Path>, token: Option<&str>) -> Result<Self> {
        let path = path.as_ref();
        let source = TensorSource::open(path)?;
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
        let name = if source.contains(A1111_PT_KEY) {
            pickle_name(path)
        } else {
            None
        };
        Self::from_source(&source, path, token, name.or(stem))
    }

    /// [`from_file`](Self::from_file) for opened tensors: `default_name` is the token of the
    /// AUTOMATIC1111 layouts when `token` is `None`.
    ///
    /// # Errors
    /// As [`from_file`](Self::from_file).
    pub fn from_source(
        source: &TensorSource,
        path: &Path,
        token: Option<&str>,
        default_name: Option<String>,
    ) -> Result<Self> {
        let keys: Vec<&str> = source.keys().collect();
        let (layout, key) = if source.contains(A1111_PT_KEY) {
            (EmbeddingLayout::A1111Pt, A1111_PT_KEY)
        } else if source.contains(A1111_SAFETENSORS_KEY) {
            (EmbeddingLayout::A1111Safetensors, A1111_SAFETENSORS_KEY)
        } else if let [key] = keys.as_slice() {
            (EmbeddingLayout::Diffusers, *key)
        } else if keys.is_empty() {
            return Err(Error::format(path, "holds no tensor: not an embedding"));
        } else {
            let sdxl = keys.contains(&"clip_l") && keys.contains(&"clip_g");
            let reason = if sdxl {
                "an SDXL embedding (`clip_l`, `clip_g`); only SD1/SD2 embeddings are supported"
                    .to_string()
            } else {
                format!(
                    "not a textual-inversion embedding: expected one tensor named by its token, \
                     `{A1111_PT_KEY}` or `{A1111_SAFETENSORS_KEY}`; found {}",
                    list_keys(&keys)
                )
            };
            return Err(Error::format(path, reason));
        };
        let token = match (token, layout) {
            (Some(token), _) => token.to_string(),
            (None, EmbeddingLayout::Diffusers) => key.to_string(),
            (None, _) => default_name.unwrap_or_else(|| key.to_string()),
        };
        if token.trim().is_empty() {
            return Err(Error::invalid_input(
                "token",
                format!("the token of {} is empty", path.display()),
            ));
        }
        let data = source.data(key)?;
        let shape = data.shape.to_vec();
        let bad_shape = || Error::Shape {
            origin: Some(path.to_path_buf()),
            key: key.to_string(),
            expected: "[D] or [n ≥ 1, D]".into(),
            found: shape.clone(),
        };
        let [n, d] = match shape.as_slice() {
            [d] => [1, *d],
            [n, d] => [*n, *d],
            _ => return Err(bad_shape()),
        };
        if n == 0 || d == 0 || !data.dtype.is_float() {
            return Err(bad_shape());
        }
        let values: Vec<f32> = data
            .convert_dtype(DType::F32)
            .to_vec()
            .map_err(|e| Error::format(path, format!("tensor `{key}`: {e:?}")))?;
        if values.iter().any(|v| !v.is_finite()) {
            return Err(Error::format(
                path,
                format!("tensor `{key}` holds NaN or infinite values"),
            ));
        }
        Ok(Self {
            token,
            vectors: TensorData::new(values, [n, d]),
            layout,
            path: path.to_path_buf(),
            key: key.to_string(),
        })
    }

    /// The number of vectors `n`.
    pub fn num_vectors(&self) -> usize {
        self.vectors.shape[0]
    }

    /// The width `D` of the vectors.
    pub fn width(&self) -> usize {
        self.vectors.shape[1]
    }

    /// The tokens added for it: `<t>`, then `<t>_1` … `<t>_{n-1}` (diffusers' names).
    pub fn tokens(&self) -> Vec<String> {
        let mut tokens = vec![self.token.clone()];
        tokens.extend((1..self.num_vectors()).map(|i| format!("{}_{i}", self.token)));
        tokens
    }

    /// Adds the tokens to `tokenizer` and their vectors to `text_encoder`'s token embedding;
    /// returns the new ids. Nothing changes when an error is returned.
    ///
    /// # Errors
    /// [`Error::Shape`] naming the file, key and shape when `D` is not the text encoder's
    /// width; [`Error::InvalidInput`] when a token is already in the vocabulary (a word of it,
    /// or an embedding loaded before).
    pub fn load_into<B: Backend>(
        &self,
        tokenizer: &mut ClipTokenizer,
        text_encoder: &mut CLIPTextModel<B>,
    ) -> Result<Vec<u32>> {
        let width = text_encoder.text_model.embeddings.hidden_size();
        if self.width() != width {
            return Err(Error::Shape {
                origin: Some(self.path.clone()),
                key: self.key.clone(),
                expected: format!("[{width}] or [n, {width}] (the text encoder's width)"),
                found: self.vectors.shape.to_vec(),
            });
        }
        let tokens = self.tokens();
        if let Some(token) = tokens.iter().find(|t| tokenizer.token_to_id(t).is_some()) {
            return Err(Error::invalid_input(
                "textual inversion token",
                format!(
                    "`{token}` (for {}) is already in the tokenizer's vocabulary; give another token",
                    self.path.display()
                ),
            ));
        }
        let first = tokenizer.vocab_size();
        let names: Vec<&str> = tokens.iter().map(String::as_str).collect();
        let ids = tokenizer.add_tokens(&names)?;
        let contiguous = ids
            .iter()
            .enumerate()
            .all(|(i, &id)| id as usize == first + i);
        if !contiguous {
            return Err(Error::Unsupported(format!(
                "{}: the tokenizer gave the new tokens the ids {ids:?}, expected {first}…",
                self.path.display()
            )));
        }
        let device = text_encoder
            .text_model
            .embeddings
            .token_embedding
            .weight
            .device();
        let rows = Tensor::<B, 2>::from_data(self.vectors.clone(), (&device, DType::F32));
        text_encoder.append_token_embeddings(first, rows)?;
        Ok(ids)
    }
}

/// `name` of an AUTOMATIC1111 `.pt` embedding, when it can be read.
fn pickle_name(path: &Path) -> Option<String> {
    let strings = prompt_diffusion_core::weights::checkpoint_strings(path).ok()?;
    strings
        .get("name")
        .filter(|n| !n.trim().is_empty())
        .cloned()
}

/// The first keys of a file, for messages.
fn list_keys(keys: &[&str]) -> String {
    let shown: Vec<String> = keys.iter().take(8).map(|k| format!("`{k}`")).collect();
    let more = keys.len().saturating_sub(shown.len());
    if more > 0 {
        format!("{} and {more} more", shown.join(", "))
    } else {
        shown.join(", ")
    }
}
