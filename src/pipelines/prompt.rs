//! Prompt encoding for the pipelines: plain (diffusers: one 77-token sequence, truncated) or
//! weighted (AUTOMATIC1111's emphasis syntax, chunks of 75 tokens, the negative prompt padded
//! to the prompt's number of chunks), with textual-inversion tokens expanded in both.

use burn::prelude::*;
use prompt_diffusion_clip::WeightedChunk;
use prompt_diffusion_core::Result;

use super::stable_diffusion::StableDiffusion;

/// The most chunks a weighted prompt is encoded in (16 × 75 = 1 200 tokens); the rest is dropped
/// with a warning, so a hostile prompt cannot make the context (and every cross-attention) grow
/// without bound.
pub const MAX_PROMPT_CHUNKS: usize = 16;

impl<B: Backend> StableDiffusion<B> {
    /// The weighted CLIP context of one prompt (AUTOMATIC1111's emphasis syntax, long prompts
    /// in chunks; see [`prompt_weighting`](prompt_diffusion_clip::prompt_weighting)).
    ///
    /// # Shapes
    /// → `[1, 77·k, D]` for a prompt of `k` chunks.
    ///
    /// # Errors
    /// [`Error::Tokenizer`](prompt_diffusion_core::Error::Tokenizer) when the tokenizer fails.
    pub fn encode_text_weighted(&self, prompt: &str) -> Result<Tensor<B, 3>> {
        let chunks = self.weighted_chunks(prompt)?;
        self.encode_chunks(&chunks)
    }

    /// The weighted chunks of `prompt`, at most [`MAX_PROMPT_CHUNKS`] of them.
    fn weighted_chunks(&self, prompt: &str) -> Result<Vec<WeightedChunk>> {
        let mut chunks = self.components.tokenizer.encode_weighted(prompt)?;
        if chunks.len() > MAX_PROMPT_CHUNKS {
            tracing::warn!(
                "prompt truncated to {MAX_PROMPT_CHUNKS} chunks of 75 tokens ({} given)",
                chunks.len()
            );
            chunks.truncate(MAX_PROMPT_CHUNKS);
        }
        Ok(chunks)
    }

    /// The contexts of `prompt` and, when given, `negative`: weighted (padded to the same
    /// number of chunks with the empty prompt's chunk, as AUTOMATIC1111 pads the shorter) or
    /// plain.
    ///
    /// # Shapes
    /// → `([1, L, D], Some([1, L, D]))`, `L` = 77 (plain) or 77·k (weighted).
    pub(crate) fn prompt_contexts(
        &self,
        prompt: &str,
        negative: Option<&str>,
        weighted: bool,
    ) -> Result<(Tensor<B, 3>, Option<Tensor<B, 3>>)> {
        if !weighted {
            let negative = negative.map(|n| self.encode_text(n)).transpose()?;
            return Ok((self.encode_text(prompt)?, negative));
        }
        let mut cond = self.weighted_chunks(prompt)?;
        let Some(negative) = negative else {
            return Ok((self.encode_chunks(&cond)?, None));
        };
        let mut uncond = self.weighted_chunks(negative)?;
        let empty = self.components.tokenizer.encode_weighted("")?;
        pad_chunks(&mut cond, uncond.len(), &empty[0]);
        pad_chunks(&mut uncond, cond.len(), &empty[0]);
        Ok((
            self.encode_chunks(&cond)?,
            Some(self.encode_chunks(&uncond)?),
        ))
    }

    fn encode_chunks(&self, chunks: &[WeightedChunk]) -> Result<Tensor<B, 3>> {
        (self.components.text_encoder).encode_weighted(chunks, self.device())
    }
}

/// Appends copies of `empty` until `chunks` holds `count`.
fn pad_chunks(chunks: &mut Vec<WeightedChunk>, count: usize, empty: &WeightedChunk) {
    while chunks.len() < count {
        chunks.push(empty.clone());
    }
}
