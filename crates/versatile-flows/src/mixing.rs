//! Context mixing: what each cross-attention slot attends to in a flow.
//!
//! A slot runs, for every condition, that condition's context layer on the hidden state and
//! mixes the results: `h + Σ_i r_i · (st_i(h, c_i) − h)` with `Σ r_i = 1` (diffusers
//! `DualTransformer2DModel`, official `vd.py` `context_mixing` with `mixing_type="attention"`).
//! With one condition the slot is the plain `st(h, c)`, so single-context flows equal the
//! ordinary UNet exactly.

use burn::prelude::*;
use prompt_diffusion_core::{Error, Result};
use prompt_diffusion_unet::{CrossAttentionContext, Transformer2DModel};

/// One condition as the slots see it: the context layer of every slot, the tokens and the
/// mixing weight.
#[derive(Debug, Clone)]
pub struct SlotContext<'a, B: Backend> {
    /// The condition modality's transformer for each slot, in slot order.
    pub transformers: Vec<&'a Transformer2DModel<B>>,
    /// The context tokens, `[batch, tokens, cross_attention_dim]`.
    pub tokens: Tensor<B, 3>,
    /// The mixing weight (normalised over the conditions).
    pub ratio: f64,
}

/// A [`CrossAttentionContext`] running one or several conditions per slot.
#[derive(Debug, Clone)]
pub struct MixedContext<'a, B: Backend> {
    contexts: Vec<SlotContext<'a, B>>,
}

impl<'a, B: Backend> MixedContext<'a, B> {
    /// Mixes `contexts` (in order; the result's arithmetic follows that order), each with one
    /// transformer per slot of a UNet with `slots` slots. Ratios are normalised to sum 1.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when there is no context, a context does not cover `slots`
    /// slots, or the ratios are negative, not finite or all zero.
    pub fn new(mut contexts: Vec<SlotContext<'a, B>>, slots: usize) -> Result<Self> {
        if contexts.is_empty() {
            return Err(Error::invalid_input("contexts", "no condition given"));
        }
        for (i, c) in contexts.iter().enumerate() {
            if c.transformers.len() != slots {
                return Err(Error::invalid_input(
                    "contexts",
                    format!(
                        "condition {i} has context layers for {} slots, the UNet has {slots}",
                        c.transformers.len()
                    ),
                ));
            }
            if !(c.ratio.is_finite() && c.ratio >= 0.0) {
                return Err(Error::invalid_input(
                    "mix ratio",
                    format!("{} is not a non-negative number", c.ratio),
                ));
            }
        }
        let total: f64 = contexts.iter().map(|c| c.ratio).sum();
        if total <= 0.0 {
            return Err(Error::invalid_input("mix ratio", "the ratios sum to zero"));
        }
        if total != 1.0 {
            for c in &mut contexts {
                c.ratio /= total;
            }
        }
        Ok(Self { contexts })
    }

    /// The conditions, with normalised ratios.
    pub fn contexts(&self) -> &[SlotContext<'a, B>] {
        &self.contexts
    }
}

impl<'a, B: Backend> CrossAttentionContext<B> for MixedContext<'a, B> {
    fn apply(
        &self,
        slot: usize,
        transformer: &Transformer2DModel<B>,
        hidden: Tensor<B, 4>,
    ) -> Tensor<B, 4> {
        // `new` checked that every context covers every slot of the UNet.
        let layer = |c: &SlotContext<'a, B>| -> &Transformer2DModel<B> {
            c.transformers.get(slot).copied().unwrap_or(transformer)
        };
        if let [single] = self.contexts.as_slice() {
            return layer(single).forward(hidden, single.tokens.clone());
        }
        let mut mixed: Option<Tensor<B, 4>> = None;
        for c in &self.contexts {
            let delta = layer(c).forward(hidden.clone(), c.tokens.clone()) - hidden.clone();
            let term = delta * c.ratio;
            mixed = Some(match mixed {
                Some(sum) => sum + term,
                None => term,
            });
        }
        match mixed {
            Some(sum) => sum + hidden,
            None => hidden,
        }
    }
}
