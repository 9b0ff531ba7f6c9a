//! Textual inversion for the Stable Diffusion pipelines: embedding files loaded into a model's
//! tokenizer and text encoder (diffusers' `load_textual_inversion`), at load time
//! ([`ModelOptions::with_textual_inversion`](super::ModelOptions::with_textual_inversion)) or
//! afterwards ([`StableDiffusion::load_textual_inversion`]).

use std::path::{Path, PathBuf};

use burn::prelude::*;
use prompt_diffusion_clip::TextualInversion;
use prompt_diffusion_core::{Error, Result};

use super::loading::Components;
use super::stable_diffusion::StableDiffusion;

/// A textual-inversion file and the token it is used by in prompts (`None`: the token the
/// file implies, see [`TextualInversion::from_file`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddingSpec {
    /// The embedding file (`.safetensors`, `.pt`, `.bin`).
    pub path: PathBuf,
    /// The token that replaces the file's own.
    pub token: Option<String>,
}

impl EmbeddingSpec {
    /// A file and, optionally, its token.
    pub fn new(path: impl Into<PathBuf>, token: Option<String>) -> Self {
        Self {
            path: path.into(),
            token,
        }
    }

    /// Parses `FILE` or `FILE:TOKEN` (the command line's `--embedding`): a value naming an
    /// existing file is a file; otherwise the text after the last `:` is the token when it is
    /// not empty and holds no path separator.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an empty value.
    pub fn parse(value: &str) -> Result<Self> {
        if value.is_empty() {
            return Err(Error::invalid_input("embedding", "no file given"));
        }
        if !Path::new(value).is_file()
            && let Some((file, token)) = value.rsplit_once(':')
            && !file.is_empty()
            && !token.is_empty()
            && !token.contains(['/', '\\'])
        {
            return Ok(Self::new(file, Some(token.to_string())));
        }
        Ok(Self::new(value, None))
    }
}

impl<B: Backend> Components<B> {
    /// Loads a textual-inversion embedding into the tokenizer and the text encoder (see
    /// [`TextualInversion`]); returns the token that stands for it in prompts. A
    /// multi-vector embedding's token expands to all its vectors in every prompt.
    ///
    /// # Errors
    /// An unreadable file or one of no known layout ([`Error::Format`], [`Error::Io`]), a
    /// width other than the text encoder's ([`Error::Shape`] naming the file, key and shape),
    /// or a token already in the vocabulary ([`Error::InvalidInput`]); the components are
    /// unchanged then.
    pub fn load_textual_inversion(
        &mut self,
        path: impl AsRef<Path>,
        token: Option<&str>,
    ) -> Result<String> {
        let embedding = TextualInversion::from_file(path, token)?;
        embedding.load_into(&mut self.tokenizer, &mut self.text_encoder)?;
        Ok(embedding.token)
    }

    /// Loads every file of `specs`, in order.
    pub(crate) fn load_textual_inversions(&mut self, specs: &[EmbeddingSpec]) -> Result<()> {
        for spec in specs {
            self.load_textual_inversion(&spec.path, spec.token.as_deref())?;
        }
        Ok(())
    }
}

impl<B: Backend> StableDiffusion<B> {
    /// Loads a textual-inversion embedding (diffusers `learned_embeds.bin`/`.safetensors`,
    /// AUTOMATIC1111 `.pt`/`.safetensors`) into the model, as diffusers'
    /// `pipe.load_textual_inversion(path, token=token)`; returns the token to write in prompts.
    ///
    /// ```no_run
    /// # use prompt_diffusion::backends::{Flex, FlexDevice};
    /// # use prompt_diffusion::{Generation, ModelOptions, StableDiffusion};
    /// # fn main() -> prompt_diffusion::core::Result<()> {
    /// let mut sd = StableDiffusion::<Flex>::from_pretrained("fixtures/tiny-sd", &ModelOptions::default(), &FlexDevice)?;
    /// let token = sd.load_textual_inversion("learned_embeds.safetensors", Some("<cat-toy>"))?;
    /// let generation = Generation::new(format!("a {token} backpack"));
    /// # let _ = generation;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// See [`Components::load_textual_inversion`].
    pub fn load_textual_inversion(
        &mut self,
        path: impl AsRef<Path>,
        token: Option<&str>,
    ) -> Result<String> {
        self.components.load_textual_inversion(path, token)
    }
}
