//! The CLIP tokenizer, built to give the ids transformers' `CLIPTokenizer` gives.
//!
//! Ports `transformers/models/clip/tokenization_clip.py` (v5), which builds a `tokenizers`
//! pipeline from the vocabulary and merges and ignores the rest of a `tokenizer.json`:
//!
//! * normaliser: NFC, every run of whitespace → one space, lower-case;
//! * pre-tokeniser: the CLIP split pattern (special tokens, contractions, letter runs, single
//!   digits, runs of other non-space characters; spaces dropped), then GPT-2 byte-level mapping;
//! * model: byte-level BPE with `</w>` marking the end of each word, unknown token
//!   `<|endoftext|>`;
//! * `<|startoftext|> … <|endoftext|>` around the tokens, truncation to `model_max_length`
//!   (EOS kept last) and padding to it with the folder's pad token.
//!
//! The special tokens (bos, eos, unk, pad — SD2 pads with `!`) are registered as added tokens
//! the way transformers does, so they are matched in the prompt text before normalisation: with
//! SD2's files, a `!` in a prompt becomes the pad token (id 0) instead of the BPE token `!</w>`,
//! exactly as in transformers.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use prompt_diffusion_core::{Error, Result};
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::replace::ReplacePattern;
use tokenizers::normalizers::{Lowercase, NFC, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

mod embedded;
mod files;

use files::tokenizer_error;

/// CLIP's pre-tokenisation pattern (`CLIPTokenizer` in transformers 5).
const SPLIT_PATTERN: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// Sequence length used when a folder does not declare a usable `model_max_length`.
pub const DEFAULT_MAX_LENGTH: usize = 77;

/// A CLIP BPE tokenizer that pads and truncates to a fixed length.
#[derive(Clone)]
pub struct ClipTokenizer {
    tokenizer: Tokenizer,
    bos_id: u32,
    eos_id: u32,
    pad_id: u32,
    max_length: usize,
    source: PathBuf,
}

impl std::fmt::Debug for ClipTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipTokenizer")
            .field("source", &self.source)
            .field("bos_id", &self.bos_id)
            .field("eos_id", &self.eos_id)
            .field("pad_id", &self.pad_id)
            .field("max_length", &self.max_length)
            .finish()
    }
}

impl ClipTokenizer {
    /// Loads the tokenizer of a model folder (its `tokenizer/` sub-folder) or of a tokenizer
    /// folder itself.
    ///
    /// Reads `tokenizer.json` when present (vocabulary and merges only, as transformers'
    /// `CLIPTokenizer` does), else `vocab.json` + `merges.txt` (what Stable Diffusion folders
    /// ship); the special tokens and `model_max_length` come from `tokenizer_config.json` and
    /// `special_tokens_map.json` (the latter wins unless the config lists
    /// `added_tokens_decoder`). Missing special tokens default to CLIP's (`<|startoftext|>`,
    /// `<|endoftext|>`, pad `<|endoftext|>`); a missing or unbounded `model_max_length` means
    /// [`DEFAULT_MAX_LENGTH`].
    ///
    /// # Errors
    /// [`Error::Tokenizer`] naming the file that is missing or malformed.
    pub fn from_folder(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let dir = if dir.join("tokenizer").is_dir() {
            dir.join("tokenizer")
        } else {
            dir.to_path_buf()
        };
        if !dir.is_dir() {
            return Err(tokenizer_error(&dir, "tokenizer folder not found"));
        }
        Self::build(&dir, files::read_folder(&dir)?)
    }

    /// The tokenizer of OpenAI's CLIP (SD1.x's), built from the embedded vocabulary: for
    /// single-file checkpoints, which carry no tokenizer. Gives the same ids as the
    /// `tokenizer/` folder of SD1.5.
    ///
    /// # Errors
    /// [`Error::Tokenizer`] only if the embedded data is corrupt.
    pub fn openai_clip() -> Result<Self> {
        Self::build(
            Path::new("<embedded CLIP vocabulary>"),
            embedded::files("<|endoftext|>")?,
        )
    }

    /// The SD2.x variant of [`openai_clip`](Self::openai_clip): the same vocabulary, padded
    /// with `!` (OpenCLIP's padding).
    pub fn open_clip_sd2() -> Result<Self> {
        Self::build(
            Path::new("<embedded CLIP vocabulary, pad `!`>"),
            embedded::files("!")?,
        )
    }

    fn build(dir: &Path, files: files::FolderFiles) -> Result<Self> {
        let [bos, eos, unk, pad] = files.specials.each_ref().map(String::as_str);
        let max_length = files.max_length;
        let err =
            |what: &str, e: &dyn std::fmt::Display| tokenizer_error(dir, format!("{what}: {e}"));
        let bpe = BPE::builder()
            .vocab_and_merges(files.vocab, files.merges)
            .continuing_subword_prefix(String::new())
            .end_of_word_suffix("</w>".into())
            .fuse_unk(false)
            .unk_token(unk.into())
            .build()
            .map_err(|e| err("invalid BPE vocabulary or merges", &e))?;
        let mut tokenizer = Tokenizer::new(bpe);
        let whitespace = Replace::new(ReplacePattern::Regex(r"\s+".into()), " ")
            .map_err(|e| err("normaliser", &e))?;
        tokenizer.with_normalizer(Some(NormalizerSequence::new(vec![
            NFC.into(),
            whitespace.into(),
            Lowercase.into(),
        ])));
        let split = Split::new(
            SplitPattern::Regex(SPLIT_PATTERN.into()),
            SplitDelimiterBehavior::Removed,
            true,
        )
        .map_err(|e| err("pre-tokeniser", &e))?;
        tokenizer.with_pre_tokenizer(Some(PreTokenizerSequence::new(vec![
            split.into(),
            ByteLevel::new(false, true, true).into(),
        ])));
        tokenizer.add_special_tokens(&files.added);

        let id = |token: &str| {
            tokenizer.token_to_id(token).ok_or_else(|| {
                tokenizer_error(dir, format!("token `{token}` is not in the vocabulary"))
            })
        };
        let (bos_id, eos_id, pad_id) = (id(bos)?, id(eos)?, id(pad)?);
        Ok(Self {
            tokenizer,
            bos_id,
            eos_id,
            pad_id,
            max_length,
            source: dir.to_path_buf(),
        })
    }

    /// Token ids of one prompt: `<|startoftext|>`, the tokens, `<|endoftext|>`, then the pad
    /// token up to [`max_length`](Self::max_length). A prompt with more tokens is truncated
    /// (keeping the end token last) with a `tracing` warning.
    ///
    /// # Errors
    /// [`Error::Tokenizer`] when the tokenizer fails on the input.
    pub fn encode(&self, prompt: &str) -> Result<Vec<u32>> {
        let encoding = self.encoding(prompt)?;
        let ids = encoding.get_ids();
        let room = self.max_length - 2;
        if ids.len() > room {
            let kept = encoding
                .get_offsets()
                .iter()
                .take(room)
                .map(|o| o.1)
                .max()
                .unwrap_or(0);
            tracing::warn!(
                "prompt truncated to {} tokens (CLIP's limit); {}",
                self.max_length,
                dropped_excerpt(prompt, kept)
            );
        }
        Ok(self.frame(&ids[..ids.len().min(room)]))
    }

    /// Token ids of `text` alone: no start or end token, no truncation, no padding
    /// (transformers' `tokenizer(text, add_special_tokens=False, truncation=False)`).
    ///
    /// # Errors
    /// [`Error::Tokenizer`] when the tokenizer fails on the input.
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.encoding(text)?.get_ids().to_vec())
    }

    /// `<|startoftext|>`, `tokens`, `<|endoftext|>`, then the pad token up to
    /// [`max_length`](Self::max_length) (`tokens` must leave room for the two).
    pub(crate) fn frame(&self, tokens: &[u32]) -> Vec<u32> {
        let mut ids = Vec::with_capacity(self.max_length.max(tokens.len() + 2));
        ids.push(self.bos_id);
        ids.extend_from_slice(tokens);
        ids.push(self.eos_id);
        ids.resize(self.max_length.max(ids.len()), self.pad_id);
        ids
    }

    /// The tokenizer's encoding of `text` without special tokens.
    fn encoding(&self, text: &str) -> Result<tokenizers::Encoding> {
        self.tokenizer
            .encode(text, false)
            .map_err(|e| tokenizer_error(&self.source, format!("cannot encode prompt: {e}")))
    }

    /// [`encode`](Self::encode) for several prompts; every row has `max_length` ids.
    pub fn encode_batch(&self, prompts: &[&str]) -> Result<Vec<Vec<u32>>> {
        prompts.iter().map(|p| self.encode(p)).collect()
    }

    /// Stacks rows of ids (as returned by [`encode_batch`](Self::encode_batch)) into an integer
    /// tensor.
    ///
    /// # Shapes
    /// `n` rows of `len` ids → `[n, len]`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when there are no rows or their lengths differ.
    pub fn ids_tensor<B: Backend>(
        ids: &[Vec<u32>],
        device: &B::Device,
    ) -> Result<Tensor<B, 2, Int>> {
        let len = ids
            .first()
            .map(Vec::len)
            .ok_or_else(|| Error::invalid_input("token ids", "no sequence given"))?;
        if len == 0 || ids.iter().any(|row| row.len() != len) {
            return Err(Error::invalid_input(
                "token ids",
                "every sequence must have the same, non-zero length",
            ));
        }
        let flat: Vec<i64> = ids.iter().flatten().map(|&id| i64::from(id)).collect();
        Ok(Tensor::from_data(
            TensorData::new(flat, [ids.len(), len]),
            device,
        ))
    }

    /// Id of the padding token (`<|endoftext|>` for SD1, `!` for SD2).
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Id of `<|startoftext|>`.
    pub fn bos_id(&self) -> u32 {
        self.bos_id
    }

    /// Id of `<|endoftext|>`.
    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    /// Length of every encoded sequence (`model_max_length`, 77 for CLIP).
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Id of a token of the vocabulary (e.g. `"a</w>"`), if present.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.tokenizer.token_to_id(token)
    }

    /// The number of tokens, added tokens included (transformers' `len(tokenizer)`).
    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    /// Adds tokens to the vocabulary, as transformers' `tokenizer.add_tokens(tokens)` does (not
    /// special, matched in the prompt after normalisation, so case-insensitively), and returns
    /// their ids: the ids after the vocabulary, in order. Textual inversion uses this.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming a token that is empty, given twice or already in the
    /// vocabulary (nothing is added then).
    pub fn add_tokens(&mut self, tokens: &[&str]) -> Result<Vec<u32>> {
        for (i, token) in tokens.iter().enumerate() {
            let reason = if token.trim().is_empty() {
                "is empty"
            } else if self.token_to_id(token).is_some() {
                "is already in the tokenizer's vocabulary; choose another token"
            } else if tokens[..i].contains(token) {
                "is given twice"
            } else {
                continue;
            };
            return Err(Error::invalid_input("token", format!("`{token}` {reason}")));
        }
        let added: Vec<AddedToken> = tokens
            .iter()
            .map(|t| AddedToken::from(t.to_string(), false))
            .collect();
        self.tokenizer.add_tokens(&added);
        tokens
            .iter()
            .map(|t| {
                self.token_to_id(t).ok_or_else(|| {
                    tokenizer_error(&self.source, format!("token `{t}` could not be added"))
                })
            })
            .collect()
    }

    /// Expands the multi-vector textual-inversion tokens of `prompt`: an added token `<t>` for
    /// which `<t>_1` is also an added token becomes `<t> <t>_1 … <t>_{n-1}` (diffusers'
    /// `maybe_convert_prompt`: the tokens found by tokenising the prompt are replaced
    /// wherever their text occurs). Prompts without such tokens are returned unchanged.
    ///
    /// # Errors
    /// [`Error::Tokenizer`] when the tokenizer fails on the input.
    pub fn expand_multi_vector_tokens(&self, prompt: &str) -> Result<String> {
        let added = self.tokenizer.get_added_vocabulary();
        let mut prompt = prompt.to_string();
        if !added.get_vocab().keys().any(|t| t.ends_with("_1")) {
            return Ok(prompt);
        }
        let mut seen = std::collections::HashSet::new();
        for id in self.tokenize(&prompt)? {
            let Some(token) = added.simple_id_to_token(id).filter(|_| seen.insert(id)) else {
                continue;
            };
            let mut replacement = token.clone();
            let mut i = 1;
            while added.get_vocab().contains_key(&format!("{token}_{i}")) {
                replacement.push_str(&format!(" {token}_{i}"));
                i += 1;
            }
            if i > 1 {
                prompt = prompt.replace(&token, &replacement);
            }
        }
        Ok(prompt)
    }
}

/// The most characters of a truncated prompt's dropped part quoted in the warning.
const EXCERPT_CHARS: usize = 40;

/// Describes the part of `prompt` after byte `kept` that truncation dropped: its length and a
/// short excerpt, with control characters (e.g. terminal escape codes) escaped.
fn dropped_excerpt(prompt: &str, kept: usize) -> String {
    let dropped = prompt.get(kept..).unwrap_or(prompt).trim_start();
    let count = dropped.chars().count();
    let excerpt: String = dropped.chars().take(EXCERPT_CHARS).collect();
    let more = if count > EXCERPT_CHARS { "…" } else { "" };
    format!("dropped {count} characters from {excerpt:?}{more}")
}

#[cfg(test)]
mod tests {
    use super::dropped_excerpt;

    #[test]
    fn the_truncation_warning_quotes_a_short_escaped_excerpt() {
        let prompt = format!("kept words \u{1b}[31m{}", "x".repeat(90_000));
        let message = dropped_excerpt(&prompt, 10);
        assert!(message.len() < 120, "{message}");
        assert!(!message.contains('\u{1b}'), "{message}");
        assert!(message.contains("\\u{1b}[31m"), "{message}");
        assert!(message.starts_with("dropped 90005 characters"), "{message}");
        assert_eq!(
            dropped_excerpt("abc", 99),
            "dropped 3 characters from \"abc\""
        );
    }
}
