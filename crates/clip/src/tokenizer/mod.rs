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
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::{
    PaddingDirection, PaddingParams, PaddingStrategy, SplitDelimiterBehavior, Tokenizer,
    TruncationDirection, TruncationParams, TruncationStrategy,
};

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
        tokenizer.with_post_processor(Some(
            RobertaProcessing::new((eos.into(), eos_id), (bos.into(), bos_id))
                .trim_offsets(false)
                .add_prefix_space(false),
        ));
        tokenizer
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|e| err("truncation", &e))?;
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::Fixed(max_length),
            direction: PaddingDirection::Right,
            pad_to_multiple_of: None,
            pad_id,
            pad_type_id: 0,
            pad_token: pad.into(),
        }));
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
        let encoding = self
            .tokenizer
            .encode(prompt, true)
            .map_err(|e| tokenizer_error(&self.source, format!("cannot encode prompt: {e}")))?;
        if !encoding.get_overflowing().is_empty() {
            let kept = encoding
                .get_offsets()
                .iter()
                .map(|o| o.1)
                .max()
                .unwrap_or(0);
            tracing::warn!(
                "prompt truncated to {} tokens (CLIP's limit); {}",
                self.max_length,
                dropped_excerpt(prompt, kept)
            );
        }
        Ok(encoding.get_ids().to_vec())
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
