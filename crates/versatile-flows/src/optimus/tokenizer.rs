//! Optimus' tokenizers: BERT WordPiece for the encoder, GPT-2 byte-level BPE with `<PAD>`,
//! `<BOS>`, `<EOS>` added for the decoder (official `optimus.py`, `optimus_vae_next`).
//!
//! The vocabulary files ship with the official repository
//! (`lib/model_zoo/optimus_models/vocab/`): `bert-base-cased-vocab.txt`, `gpt2-vocab.json`,
//! `gpt2-merges.txt` (GPT-2's own `vocab.json`/`merges.txt`).

use std::path::{Path, PathBuf};

use prompt_diffusion_core::{Error, Result};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

/// File names of the official vocabulary folder.
pub const VOCAB_FILES: [&str; 3] = [
    "bert-base-cased-vocab.txt",
    "gpt2-vocab.json",
    "gpt2-merges.txt",
];

/// The encoder's text is cut to this many word pieces (before `[CLS]`/`[SEP]`).
pub const MAX_ENCODER_TOKENS: usize = 77;

/// Both Optimus tokenizers.
#[derive(Clone)]
pub struct OptimusTokenizers {
    bert: Tokenizer,
    gpt2: Tokenizer,
    cls: u32,
    sep: u32,
    bos: u32,
    eos: u32,
    gpt2_base: usize,
    source: PathBuf,
}

impl std::fmt::Debug for OptimusTokenizers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OptimusTokenizers")
            .field("source", &self.source)
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .finish()
    }
}

fn error(path: &Path, reason: impl Into<String>) -> Error {
    Error::Tokenizer {
        path: Some(path.to_path_buf()),
        reason: reason.into(),
    }
}

impl OptimusTokenizers {
    /// Reads the official vocabulary folder ([`VOCAB_FILES`]).
    ///
    /// # Errors
    /// [`Error::Tokenizer`] when a file is missing or invalid.
    pub fn from_folder(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let [bert, vocab, merges] = VOCAB_FILES.map(|f| dir.join(f));
        Self::from_files(&bert, &vocab, &merges)
    }

    /// Reads the three vocabulary files.
    ///
    /// # Errors
    /// [`Error::Tokenizer`] when a file is missing or invalid.
    pub fn from_files(bert_vocab: &Path, gpt2_vocab: &Path, gpt2_merges: &Path) -> Result<Self> {
        for path in [bert_vocab, gpt2_vocab, gpt2_merges] {
            if !path.is_file() {
                return Err(error(path, "vocabulary file not found"));
            }
        }
        let text = |p: &Path| {
            p.to_str()
                .map(String::from)
                .ok_or_else(|| error(p, "path is not UTF-8"))
        };
        let wordpiece = WordPiece::from_file(&text(bert_vocab)?)
            .unk_token("[UNK]".into())
            .continuing_subword_prefix("##".into())
            .max_input_chars_per_word(100)
            .build()
            .map_err(|e| error(bert_vocab, format!("invalid WordPiece vocabulary: {e}")))?;
        let mut bert = Tokenizer::new(wordpiece);
        bert.with_normalizer(Some(BertNormalizer::new(true, true, None, false)));
        bert.with_pre_tokenizer(Some(BertPreTokenizer));

        let bpe = BPE::from_file(&text(gpt2_vocab)?, &text(gpt2_merges)?)
            .build()
            .map_err(|e| {
                error(
                    gpt2_vocab,
                    format!("invalid GPT-2 vocabulary or merges: {e}"),
                )
            })?;
        let mut gpt2 = Tokenizer::new(bpe);
        gpt2.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
        gpt2.with_decoder(Some(ByteLevelDecoder::default()));
        let gpt2_base = gpt2.get_vocab_size(false);
        gpt2.add_special_tokens(&["<PAD>", "<BOS>", "<EOS>"].map(|t| AddedToken::from(t, true)));

        let id = |tok: &Tokenizer, token: &str, path: &Path| {
            tok.token_to_id(token)
                .ok_or_else(|| error(path, format!("token `{token}` is not in the vocabulary")))
        };
        Ok(Self {
            cls: id(&bert, "[CLS]", bert_vocab)?,
            sep: id(&bert, "[SEP]", bert_vocab)?,
            bos: id(&gpt2, "<BOS>", gpt2_vocab)?,
            eos: id(&gpt2, "<EOS>", gpt2_vocab)?,
            bert,
            gpt2,
            gpt2_base,
            source: bert_vocab.parent().unwrap_or(Path::new(".")).to_path_buf(),
        })
    }

    /// The encoder's ids of a sentence: `[CLS]`, the word pieces of the lower-cased text (at
    /// most [`MAX_ENCODER_TOKENS`]), `[SEP]`.
    ///
    /// # Errors
    /// [`Error::Tokenizer`] when tokenization fails.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .bert
            .encode(text.to_lowercase(), false)
            .map_err(|e| error(&self.source, format!("cannot encode {text:?}: {e}")))?;
        let pieces = encoding.get_ids();
        let mut ids = Vec::with_capacity(pieces.len().min(MAX_ENCODER_TOKENS) + 2);
        ids.push(self.cls);
        ids.extend(pieces.iter().take(MAX_ENCODER_TOKENS));
        ids.push(self.sep);
        Ok(ids)
    }

    /// `<BOS>`, the decoder's first token.
    pub fn bos_id(&self) -> u32 {
        self.bos
    }

    /// `<EOS>`, which ends decoding.
    pub fn eos_id(&self) -> u32 {
        self.eos
    }

    /// The decoder vocabulary size with the added tokens.
    pub fn decoder_vocab_size(&self) -> usize {
        self.gpt2.get_vocab_size(true)
    }

    /// The official text of decoded ids: runs of ordinary tokens decoded (byte-level), added
    /// tokens kept as text, the parts joined by spaces, tokenization spaces cleaned up, and the
    /// first and last words (`<BOS>`, `<EOS>`) dropped.
    ///
    /// # Errors
    /// [`Error::Tokenizer`] for an id outside the vocabulary.
    pub fn detokenize(&self, ids: &[u32]) -> Result<String> {
        let mut parts = Vec::new();
        let mut run = Vec::new();
        let decode = |run: &[u32]| {
            self.gpt2
                .decode(run, false)
                .map_err(|e| error(&self.source, format!("cannot decode ids: {e}")))
        };
        for &id in ids {
            if (id as usize) < self.gpt2_base {
                run.push(id);
                continue;
            }
            if !run.is_empty() {
                parts.push(decode(&run)?);
                run.clear();
            }
            let token = self
                .gpt2
                .id_to_token(id)
                .ok_or_else(|| error(&self.source, format!("id {id} is not in the vocabulary")))?;
            parts.push(token);
        }
        if !run.is_empty() {
            parts.push(decode(&run)?);
        }
        let text = clean_up_tokenization(&parts.join(" "));
        let words: Vec<&str> = text.split_whitespace().collect();
        Ok(match words.len() {
            0..=2 => String::new(),
            n => words[1..n - 1].join(" "),
        })
    }
}

/// transformers' `clean_up_tokenization`: no space before punctuation and English contractions.
pub fn clean_up_tokenization(text: &str) -> String {
    [
        (" .", "."),
        (" ?", "?"),
        (" !", "!"),
        (" ,", ","),
        (" ' ", "'"),
        (" n't", "n't"),
        (" 'm", "'m"),
        (" 's", "'s"),
        (" 've", "'ve"),
        (" 're", "'re"),
    ]
    .iter()
    .fold(text.to_string(), |t, (from, to)| t.replace(from, to))
}
