//! Reading a tokenizer folder the way transformers' `CLIPTokenizer.from_pretrained` does:
//! which vocabulary file, which special tokens (and with which matching flags), which length.

use std::collections::BTreeMap;
use std::path::Path;

use prompt_diffusion_core::{Error, Result};
use serde::Deserialize;
use serde_json::Value;
use tokenizers::AddedToken;
use tokenizers::models::bpe::{BPE, Merges, Vocab};

use super::DEFAULT_MAX_LENGTH;

/// What a tokenizer folder declares.
pub(super) struct FolderFiles {
    pub vocab: Vocab,
    pub merges: Merges,
    /// Added tokens in registration order (special tokens included).
    pub added: Vec<AddedToken>,
    /// `[bos, eos, unk, pad]`.
    pub specials: [String; 4],
    pub max_length: usize,
}

/// A special token as written in `special_tokens_map.json` / `tokenizer_config.json`: a plain
/// string or an `AddedToken` object.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum TokenSpec {
    Plain(String),
    Full {
        content: String,
        #[serde(default)]
        single_word: bool,
        #[serde(default)]
        lstrip: bool,
        #[serde(default)]
        rstrip: bool,
        normalized: Option<bool>,
        special: Option<bool>,
    },
}

impl TokenSpec {
    fn content(&self) -> &str {
        match self {
            TokenSpec::Plain(s) => s,
            TokenSpec::Full { content, .. } => content,
        }
    }

    /// The added token transformers registers for it; `special` is what the token is declared
    /// as when the spec does not say (named special tokens are always special).
    fn added_token(&self, special: bool) -> AddedToken {
        match self {
            TokenSpec::Plain(s) => AddedToken::from(s.clone(), special),
            TokenSpec::Full {
                content,
                single_word,
                lstrip,
                rstrip,
                normalized,
                special: declared,
            } => {
                let special = special || declared.unwrap_or(false);
                AddedToken::from(content.clone(), special)
                    .single_word(*single_word)
                    .lstrip(*lstrip)
                    .rstrip(*rstrip)
                    .normalized(normalized.unwrap_or(!special))
            }
        }
    }
}

/// The parts of `tokenizer_config.json` / `special_tokens_map.json` the tokenizer uses.
#[derive(Debug, Default, Deserialize)]
struct SpecialsFile {
    bos_token: Option<TokenSpec>,
    eos_token: Option<TokenSpec>,
    unk_token: Option<TokenSpec>,
    pad_token: Option<TokenSpec>,
    #[serde(default)]
    additional_special_tokens: Vec<TokenSpec>,
    #[serde(default)]
    extra_special_tokens: Option<Value>,
    model_max_length: Option<f64>,
    added_tokens_decoder: Option<BTreeMap<String, TokenSpec>>,
}

/// The part of a `tokenizer.json` the tokenizer uses.
#[derive(Debug, Deserialize)]
struct TokenizerJson {
    model: TokenizerJsonModel,
    #[serde(default)]
    added_tokens: Vec<TokenSpec>,
}

#[derive(Debug, Deserialize)]
struct TokenizerJsonModel {
    #[serde(rename = "type")]
    kind: Option<String>,
    vocab: Vocab,
    merges: Vec<Value>,
}

/// Reads the vocabulary, the special tokens and the length of a tokenizer folder.
pub(super) fn read_folder(dir: &Path) -> Result<FolderFiles> {
    let config: SpecialsFile = read_json_opt(&dir.join("tokenizer_config.json"))?;
    let map: SpecialsFile = read_json_opt(&dir.join("special_tokens_map.json"))?;

    let json_path = dir.join("tokenizer.json");
    let (vocab, merges, file_added) = if json_path.is_file() {
        read_tokenizer_json(&json_path)?
    } else {
        let vocab_path = dir.join("vocab.json");
        let merges_path = dir.join("merges.txt");
        for path in [&vocab_path, &merges_path] {
            if !path.is_file() {
                return Err(tokenizer_error(
                    path,
                    "not found (a CLIP tokenizer folder needs tokenizer.json or vocab.json + merges.txt)",
                ));
            }
        }
        let (vocab, merges) = BPE::read_file(&path_str(&vocab_path), &path_str(&merges_path))
            .map_err(|e| {
                tokenizer_error(dir, format!("cannot read vocab.json / merges.txt: {e}"))
            })?;
        (vocab, merges, Vec::new())
    };

    // transformers: `tokenizer_config.json` gives the init arguments; without an
    // `added_tokens_decoder` (the legacy layout) `special_tokens_map.json` overrides them
    // and the `tokenizer.json` added tokens are registered.
    let legacy = config.added_tokens_decoder.is_none();
    let pick = |from_map: &Option<TokenSpec>, from_config: &Option<TokenSpec>, default| {
        let chosen = if legacy {
            from_map.clone().or_else(|| from_config.clone())
        } else {
            from_config.clone()
        };
        chosen.unwrap_or_else(|| TokenSpec::Plain(String::from(default)))
    };
    let unk = pick(&map.unk_token, &config.unk_token, "<|endoftext|>");
    let bos = pick(&map.bos_token, &config.bos_token, "<|startoftext|>");
    let eos = pick(&map.eos_token, &config.eos_token, "<|endoftext|>");
    let pad = pick(&map.pad_token, &config.pad_token, "<|endoftext|>");

    let mut added: Vec<AddedToken> = match &config.added_tokens_decoder {
        Some(decoder) => {
            let mut entries: Vec<(u64, &TokenSpec)> = decoder
                .iter()
                .map(|(id, spec)| (id.parse().unwrap_or(u64::MAX), spec))
                .collect();
            entries.sort_by_key(|(id, _)| *id);
            entries.iter().map(|(_, s)| s.added_token(false)).collect()
        }
        None => file_added.iter().map(|s| s.added_token(false)).collect(),
    };
    let mut extras: Vec<TokenSpec> = Vec::new();
    for file in [&config, &map] {
        extras.extend(file.additional_special_tokens.iter().cloned());
        if let Some(Value::Array(list)) = &file.extra_special_tokens {
            extras.extend(
                list.iter()
                    .filter_map(|v| serde_json::from_value::<TokenSpec>(v.clone()).ok()),
            );
        }
    }
    for spec in [&bos, &eos, &unk, &pad].into_iter().chain(extras.iter()) {
        if !added.iter().any(|t| t.content == spec.content()) {
            added.push(spec.added_token(true));
        }
    }

    let max_length = match config.model_max_length {
        Some(n) if (2.0..=1e6).contains(&n) => n as usize,
        _ => DEFAULT_MAX_LENGTH,
    };
    Ok(FolderFiles {
        vocab,
        merges,
        added,
        specials: [bos, eos, unk, pad].map(|s| s.content().to_string()),
        max_length,
    })
}

pub(super) fn tokenizer_error(path: &Path, reason: impl Into<String>) -> Error {
    Error::Tokenizer {
        path: Some(path.to_path_buf()),
        reason: reason.into(),
    }
}

fn path_str(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// Parses an optional JSON file; absent means the default value.
fn read_json_opt<T: Default + serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    if !path.is_file() {
        return Ok(T::default());
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| tokenizer_error(path, format!("invalid JSON: {e}")))
}

fn read_tokenizer_json(path: &Path) -> Result<(Vocab, Merges, Vec<TokenSpec>)> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let json: TokenizerJson = serde_json::from_str(&text)
        .map_err(|e| tokenizer_error(path, format!("not a BPE tokenizer.json: {e}")))?;
    if let Some(kind) = json.model.kind.as_deref().filter(|k| *k != "BPE") {
        return Err(tokenizer_error(
            path,
            format!("model type `{kind}`, expected BPE"),
        ));
    }
    let merges = json
        .model
        .merges
        .iter()
        .enumerate()
        .map(|(i, merge)| {
            let pair = match merge {
                Value::String(s) => s
                    .split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string())),
                Value::Array(parts) => match parts.as_slice() {
                    [Value::String(a), Value::String(b)] => Some((a.clone(), b.clone())),
                    _ => None,
                },
                _ => None,
            };
            pair.ok_or_else(|| tokenizer_error(path, format!("merge {i} is not a pair: {merge}")))
        })
        .collect::<Result<Merges>>()?;
    Ok((json.model.vocab, merges, json.added_tokens))
}
