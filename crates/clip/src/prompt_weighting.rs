//! Prompt weighting in AUTOMATIC1111's syntax, and prompts longer than CLIP's 77 tokens.
//!
//! [`parse_prompt_attention`] reads the emphasis syntax of AUTOMATIC1111's web UI
//! (`modules/prompt_parser.py`, emphasis mode "Original"):
//!
//! | syntax | weight of the text inside |
//! |---|---|
//! | `(text)` | × 1.1 (nested: `((text))` × 1.21) |
//! | `[text]` | ÷ 1.1 |
//! | `(text:1.3)` | × 1.3 |
//! | `\(` `\)` `\[` `\]` `\\` | the literal character |
//! | `BREAK` (a whole word, upper case) | the text after it starts a new chunk |
//!
//! Brackets left open weigh the text to the end of the prompt, and a closing bracket without
//! an opening one is plain text, as in AUTOMATIC1111. A weight that is not a number (such as
//! `(a:1.2.3)`) is plain text here (AUTOMATIC1111 fails on it).
//!
//! [`ClipTokenizer::encode_weighted`] tokenises each run of equal weight separately and cuts
//! the tokens into chunks of `max_length − 2` (75), each framed as CLIP expects (start token,
//! tokens, end token, padding) with a weight per token (1 for the frame);
//! [`CLIPTextModel::encode_weighted`] encodes every chunk, multiplies each hidden state by its
//! token's weight and rescales each chunk so its mean is the unweighted one (AUTOMATIC1111's
//! `original_mean / new_mean`), then joins the chunks along the sequence: `[1, 77·k, D]`.
//!
//! A prompt without emphasis syntax and with at most 75 tokens gives exactly the plain
//! encoding. Unlike AUTOMATIC1111, a chunk is cut after exactly 75 tokens (AUTOMATIC1111 moves
//! the words after a comma near the end into the next chunk by default), and a multi-vector
//! textual-inversion token may be split across two chunks.

use burn::prelude::*;
use prompt_diffusion_core::Result;

use crate::text_model::CLIPTextModel;
use crate::tokenizer::ClipTokenizer;

/// The factor of `(…)`.
const ROUND_BRACKET_MULTIPLIER: f64 = 1.1;

/// One piece of a parsed prompt.
#[derive(Debug, Clone, PartialEq)]
pub enum PromptPart {
    /// Text and the weight of its tokens.
    Text {
        /// The text (escapes resolved).
        text: String,
        /// Its weight (1 for plain text).
        weight: f64,
    },
    /// `BREAK`: the text after it starts a new chunk.
    Break,
}

impl PromptPart {
    /// A text part.
    pub fn text(text: impl Into<String>, weight: f64) -> Self {
        Self::Text {
            text: text.into(),
            weight,
        }
    }
}

/// Parses AUTOMATIC1111's emphasis syntax (see the [module docs](self)) into runs of text of
/// equal weight and `BREAK`s; adjacent runs of equal weight are merged, and an empty prompt is
/// one empty run of weight 1.
///
/// ```
/// use prompt_diffusion_clip::prompt_weighting::{PromptPart, parse_prompt_attention};
///
/// let parts = parse_prompt_attention("a (red:1.5) fox, [blurry]");
/// assert_eq!(parts, vec![
///     PromptPart::text("a ", 1.0),
///     PromptPart::text("red", 1.5),
///     PromptPart::text(" fox, ", 1.0),
///     PromptPart::text("blurry", 1.0 / 1.1),
/// ]);
/// ```
pub fn parse_prompt_attention(prompt: &str) -> Vec<PromptPart> {
    // The sentinel AUTOMATIC1111 uses for BREAK, kept so that brackets around a BREAK change
    // it exactly as there.
    const BREAK: (&str, f64) = ("BREAK", -1.0);
    let square = 1.0 / ROUND_BRACKET_MULTIPLIER;
    let mut res: Vec<(String, f64)> = Vec::new();
    let (mut round_open, mut square_open) = (Vec::new(), Vec::new());
    let multiply = |res: &mut Vec<(String, f64)>, start: usize, by: f64| {
        for run in &mut res[start..] {
            run.1 *= by;
        }
    };
    let plain = |res: &mut Vec<(String, f64)>, text: &str| {
        for (i, part) in split_break(text).into_iter().enumerate() {
            if i > 0 {
                res.push((BREAK.0.to_string(), BREAK.1));
            }
            res.push((part.to_string(), 1.0));
        }
    };
    let mut rest = prompt;
    while let Some(c) = rest.chars().next() {
        let mut len = c.len_utf8();
        match c {
            '\\' => match rest[1..].chars().next() {
                Some(escaped @ ('(' | ')' | '[' | ']' | '\\')) => {
                    res.push((escaped.to_string(), 1.0));
                    len = 2;
                }
                // A lone backslash is dropped.
                _ => res.push((String::new(), 1.0)),
            },
            '(' => round_open.push(res.len()),
            '[' => square_open.push(res.len()),
            ':' => match weight_suffix(rest) {
                Some((weight, matched)) => {
                    len = matched;
                    match (weight.parse::<f64>(), round_open.last()) {
                        (Ok(weight), Some(&start)) => {
                            round_open.pop();
                            multiply(&mut res, start, weight);
                        }
                        _ => plain(&mut res, &rest[..matched]),
                    }
                }
                None => plain(&mut res, ":"),
            },
            ')' => match round_open.pop() {
                Some(start) => multiply(&mut res, start, ROUND_BRACKET_MULTIPLIER),
                None => plain(&mut res, ")"),
            },
            ']' => match square_open.pop() {
                Some(start) => multiply(&mut res, start, square),
                None => plain(&mut res, "]"),
            },
            _ => {
                len = rest
                    .find(['\\', '(', ')', '[', ']', ':'])
                    .unwrap_or(rest.len());
                plain(&mut res, &rest[..len]);
            }
        }
        rest = &rest[len..];
    }
    for start in round_open {
        multiply(&mut res, start, ROUND_BRACKET_MULTIPLIER);
    }
    for start in square_open {
        multiply(&mut res, start, square);
    }
    if res.is_empty() {
        res.push((String::new(), 1.0));
    }
    let mut merged: Vec<(String, f64)> = Vec::with_capacity(res.len());
    for (text, weight) in res {
        match merged.last_mut() {
            Some(last) if last.1 == weight => last.0.push_str(&text),
            _ => merged.push((text, weight)),
        }
    }
    merged
        .into_iter()
        .map(|(text, weight)| {
            if text == BREAK.0 && weight == BREAK.1 {
                PromptPart::Break
            } else {
                PromptPart::Text { text, weight }
            }
        })
        .collect()
}

/// Whitespace as Python's `\s`.
fn is_space(c: char) -> bool {
    c.is_whitespace()
}

/// A word character as Python's `\w` (for `\b`).
fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// At a `:`, AUTOMATIC1111's `:\s*([+-]?[.\d]+)\s*\)`: the number's text and the length of
/// the match.
fn weight_suffix(s: &str) -> Option<(&str, usize)> {
    let after_colon = s.get(1..)?;
    let number_at = s.len() - after_colon.trim_start_matches(is_space).len();
    let number = &s[number_at..];
    let sign = usize::from(number.starts_with(['+', '-']));
    let digits = number[sign..]
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(number.len() - sign);
    if digits == 0 {
        return None;
    }
    let number = &number[..sign + digits];
    let tail = &s[number_at + number.len()..];
    let trimmed = tail.trim_start_matches(is_space);
    trimmed
        .starts_with(')')
        .then(|| (number, s.len() - trimmed.len() + 1))
}

/// `re.split(r"\s*\bBREAK\b\s*", text)`.
fn split_break(text: &str) -> Vec<&str> {
    let (mut parts, mut last, mut search) = (Vec::new(), 0, 0);
    while let Some(offset) = text[search..].find("BREAK") {
        let at = search + offset;
        let end = at + "BREAK".len();
        let bounded = !text[..at].chars().next_back().is_some_and(is_word)
            && !text[end..].chars().next().is_some_and(is_word);
        if !bounded {
            search = at + 1;
            continue;
        }
        let start = last + text[last..at].trim_end_matches(is_space).len();
        let stop = text.len() - text[end..].trim_start_matches(is_space).len();
        parts.push(&text[last..start]);
        (last, search) = (stop, stop);
    }
    parts.push(&text[last..]);
    parts
}

/// One chunk of a weighted prompt: [`max_length`](ClipTokenizer::max_length) token ids (start
/// token, up to `max_length − 2` tokens, end token, padding) and the weight of each.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightedChunk {
    /// The token ids.
    pub ids: Vec<u32>,
    /// The weight of each token (1 for the start, end and padding tokens).
    pub weights: Vec<f32>,
}

impl ClipTokenizer {
    /// Parses `prompt`'s emphasis syntax ([`parse_prompt_attention`]) and cuts its tokens into
    /// chunks ([`chunk_parts`](Self::chunk_parts)).
    ///
    /// # Errors
    /// [`Error::Tokenizer`](prompt_diffusion_core::Error::Tokenizer) when the tokenizer fails.
    pub fn encode_weighted(&self, prompt: &str) -> Result<Vec<WeightedChunk>> {
        self.chunk_parts(&parse_prompt_attention(prompt))
    }

    /// Tokenises each text part by itself (after expanding multi-vector textual-inversion
    /// tokens, [`expand_multi_vector_tokens`](Self::expand_multi_vector_tokens)) and fills
    /// chunks of `max_length − 2` tokens, each token carrying its part's weight; `BREAK` closes
    /// the current chunk. At least one chunk is returned (the empty prompt's).
    ///
    /// # Errors
    /// [`Error::Tokenizer`](prompt_diffusion_core::Error::Tokenizer) when the tokenizer fails.
    pub fn chunk_parts(&self, parts: &[PromptPart]) -> Result<Vec<WeightedChunk>> {
        let room = self.max_length().saturating_sub(2).max(1);
        let mut chunks = Vec::new();
        let (mut tokens, mut weights) = (Vec::new(), Vec::new());
        for part in parts {
            match part {
                PromptPart::Break => self.close_chunk(&mut chunks, &mut tokens, &mut weights),
                PromptPart::Text { text, weight } => {
                    for id in self.tokenize(&self.expand_multi_vector_tokens(text)?)? {
                        if tokens.len() == room {
                            self.close_chunk(&mut chunks, &mut tokens, &mut weights);
                        }
                        tokens.push(id);
                        weights.push(*weight as f32);
                    }
                }
            }
        }
        if !tokens.is_empty() || chunks.is_empty() {
            self.close_chunk(&mut chunks, &mut tokens, &mut weights);
        }
        Ok(chunks)
    }

    /// Frames `tokens` as a chunk (their weights moved in beside the frame's 1s) and empties
    /// both lists.
    fn close_chunk(
        &self,
        chunks: &mut Vec<WeightedChunk>,
        tokens: &mut Vec<u32>,
        weights: &mut Vec<f32>,
    ) {
        let ids = self.frame(tokens);
        let mut w = Vec::with_capacity(ids.len());
        w.push(1.0);
        w.append(weights);
        w.resize(ids.len(), 1.0);
        tokens.clear();
        chunks.push(WeightedChunk { ids, weights: w });
    }
}

impl<B: Backend> CLIPTextModel<B> {
    /// Encodes weighted chunks (from [`ClipTokenizer::encode_weighted`]): each chunk's last
    /// hidden state, weighted by [`emphasize`], joined along the sequence.
    ///
    /// # Shapes
    /// `k` chunks of `L` ids → `[1, L·k, D]`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`](prompt_diffusion_core::Error::InvalidInput) when there are no
    /// chunks, their lengths differ, or they are longer than the model's positions.
    pub fn encode_weighted(
        &self,
        chunks: &[WeightedChunk],
        device: &B::Device,
    ) -> Result<Tensor<B, 3>> {
        let ids: Vec<Vec<u32>> = chunks.iter().map(|c| c.ids.clone()).collect();
        let ids = ClipTokenizer::ids_tensor::<B>(&ids, device)?;
        self.text_model.check_input_ids(ids.dims())?;
        let [k, len] = ids.dims();
        let z = self.forward(ids).last_hidden_state;
        let weights: Vec<f32> = chunks.iter().flat_map(|c| c.weights.clone()).collect();
        if weights.len() != k * len {
            return Err(prompt_diffusion_core::Error::invalid_input(
                "prompt chunks",
                "every chunk needs one weight per token",
            ));
        }
        let z = emphasize(z, &weights);
        let d = z.dims()[2];
        Ok(z.reshape([1, k * len, d]))
    }
}

/// AUTOMATIC1111's "Original" emphasis: multiplies each hidden state `z[c, t, :]` by the
/// weight of token `t` of chunk `c` (`weights`: `c·L + t`), then rescales each chunk so its
/// mean over tokens and features is what it was before. Computed in f32 and returned in
/// `z`'s dtype; with every weight 1, `z` is returned unchanged.
///
/// # Shapes
/// `z [k, L, D]`, `weights` `k·L` values → `[k, L, D]`.
///
/// # Panics
/// When `weights` does not hold `k·L` values.
pub fn emphasize<B: Backend>(z: Tensor<B, 3>, weights: &[f32]) -> Tensor<B, 3> {
    if weights.iter().all(|&w| w == 1.0) {
        return z;
    }
    let [k, len, _] = z.dims();
    let dtype = z.dtype();
    let z = z.cast(burn::tensor::DType::F32);
    let device = z.device();
    let w = Tensor::<B, 1>::from_data(TensorData::new(weights.to_vec(), [k * len]), &device)
        .reshape([k, len, 1]);
    let chunk_mean = |t: Tensor<B, 3>| t.mean_dim(2).mean_dim(1);
    let original = chunk_mean(z.clone());
    let weighted = z * w;
    let new = chunk_mean(weighted.clone());
    (weighted * (original / new)).cast(dtype)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(list: &[(&str, f64)]) -> Vec<PromptPart> {
        list.iter()
            .map(|&(t, w)| {
                if (t, w) == ("BREAK", -1.0) {
                    PromptPart::Break
                } else {
                    PromptPart::text(t, w)
                }
            })
            .collect()
    }

    #[test]
    fn breaks_split_on_whole_words_with_their_spaces() {
        assert_eq!(split_break("a BREAK b"), ["a", "b"]);
        assert_eq!(split_break("a  BREAK\tBREAK b"), ["a", "", "b"]);
        assert_eq!(
            split_break("BREAKING aBREAK BREAK_"),
            ["BREAKING aBREAK BREAK_"]
        );
        assert_eq!(split_break("BREAK"), ["", ""]);
    }

    #[test]
    fn weights_need_a_closing_bracket() {
        assert_eq!(weight_suffix(":1.5)"), Some(("1.5", 5)));
        assert_eq!(weight_suffix(": -0.5 ) x"), Some(("-0.5", 8)));
        assert_eq!(weight_suffix(":1.5 x)"), None);
        assert_eq!(weight_suffix(":+)"), None);
        assert_eq!(weight_suffix(":"), None);
    }

    #[test]
    fn quirks_of_the_reference_syntax() {
        let p = parse_prompt_attention;
        // A weight without an open bracket, and closing brackets without opening ones.
        assert_eq!(p("a:1.2) b] c)"), parts(&[("a:1.2) b] c)", 1.0)]));
        // A lone backslash is dropped but separates the runs around it when weights differ.
        assert_eq!(p(r"a\b"), parts(&[("ab", 1.0)]));
        // Brackets around a BREAK turn it into the word.
        assert_eq!(
            p("(x BREAK y)"),
            parts(&[("x", 1.1), ("BREAK", -1.1), ("y", 1.1)])
        );
        // An unparsable weight is text.
        assert_eq!(p("(a:1.2.3)"), parts(&[("a:1.2.3)", 1.1)]));
        assert_eq!(p(""), parts(&[("", 1.0)]));
    }
}
