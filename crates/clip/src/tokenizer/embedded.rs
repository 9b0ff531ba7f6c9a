//! OpenAI's CLIP vocabulary, embedded: single-file checkpoints carry no tokenizer.
//!
//! `assets/bpe_simple_vocab_16e6.txt.gz` is the merge list OpenAI's CLIP and open_clip ship
//! (MIT licence). The vocabulary is rebuilt from it as their `SimpleTokenizer` does: the 256
//! byte symbols, the same with `</w>`, one token per merge (the first 48,894), then
//! `<|startoftext|>` and `<|endoftext|>` — 49,408 tokens, the `vocab.json`/`merges.txt` of
//! every SD1.x/SD2.x `tokenizer/` folder.

use std::io::Read;

use prompt_diffusion_core::Result;
use tokenizers::AddedToken;
use tokenizers::models::bpe::{Merges, Vocab};

use super::DEFAULT_MAX_LENGTH;
use super::files::{FolderFiles, tokenizer_error};

const MERGES_GZ: &[u8] = include_bytes!("../../assets/bpe_simple_vocab_16e6.txt.gz");
const NUM_MERGES: usize = 49152 - 256 - 2;

/// GPT-2's reversible byte → printable character table, as the characters of the bytes in the
/// order `bytes_to_unicode()` inserts them (printable bytes first): the order of the first 256
/// vocabulary entries.
fn byte_symbols() -> Vec<char> {
    let mut bytes: Vec<u32> = (u32::from(b'!')..=u32::from(b'~'))
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut chars = bytes.clone();
    let mut extra = 0;
    for b in 0..256u32 {
        if !bytes.contains(&b) {
            bytes.push(b);
            chars.push(256 + extra);
            extra += 1;
        }
    }
    chars.into_iter().filter_map(char::from_u32).collect()
}

/// The vocabulary, merges and special tokens; `pad` is the padding token (`<|endoftext|>` for
/// SD1, `!` for SD2).
pub(super) fn files(pad: &str) -> Result<FolderFiles> {
    let source = std::path::Path::new("bpe_simple_vocab_16e6.txt.gz (embedded)");
    let mut text = String::new();
    flate2::read::GzDecoder::new(MERGES_GZ)
        .read_to_string(&mut text)
        .map_err(|e| tokenizer_error(source, format!("cannot decompress: {e}")))?;
    let merges: Merges = text
        .lines()
        .skip(1)
        .take(NUM_MERGES)
        .filter_map(|line| {
            let (a, b) = line.split_once(' ')?;
            Some((a.to_string(), b.to_string()))
        })
        .collect();
    if merges.len() != NUM_MERGES {
        return Err(tokenizer_error(source, "truncated merge list"));
    }
    let bytes: Vec<String> = byte_symbols().iter().map(char::to_string).collect();
    let tokens = bytes
        .iter()
        .cloned()
        .chain(bytes.iter().map(|b| format!("{b}</w>")))
        .chain(merges.iter().map(|(a, b)| format!("{a}{b}")))
        .chain(["<|startoftext|>".to_string(), "<|endoftext|>".to_string()]);
    let vocab: Vocab = tokens.enumerate().map(|(i, t)| (t, i as u32)).collect();
    let (bos, eos) = ("<|startoftext|>", "<|endoftext|>");
    // SD1's files declare the specials as plain strings (matched verbatim); SD2's declare bos
    // and eos as normalised added tokens (matched after lower-casing) and pad with `!`.
    let normalized = pad != eos;
    let mut added = vec![
        AddedToken::from(bos, true).normalized(normalized),
        AddedToken::from(eos, true).normalized(normalized),
    ];
    if pad != eos {
        added.push(AddedToken::from(pad.to_string(), true));
    }
    Ok(FolderFiles {
        vocab,
        merges,
        added,
        specials: [bos, eos, eos, pad].map(str::to_string),
        max_length: DEFAULT_MAX_LENGTH,
    })
}
