//! The UNet's encoder, mid and decoder blocks (diffusers `models/unets/unet_2d_blocks.py`:
//! `CrossAttnDownBlock2D`/`DownBlock2D`, `UNetMidBlock2DCrossAttn`,
//! `CrossAttnUpBlock2D`/`UpBlock2D`).
//!
//! A block with and without cross-attention is the same struct; the plain kinds have an empty
//! `attentions` list. Every cross-attention slot is run through a [`CrossAttentionContext`],
//! which numbers the slots in execution order, so callers can change what each slot attends to
//! (or which weights it uses) without copying the blocks.

use burn::prelude::*;
use prompt_diffusion_core::nn::{Downsample2D, ResnetBlock2D, Upsample2D};

use crate::context::CrossAttentionContext;
use crate::transformer_2d::Transformer2DModel;

/// Numbers the cross-attention slots as the UNet runs them.
pub(crate) struct Slots<'a, B: Backend> {
    pub context: &'a dyn CrossAttentionContext<B>,
    pub next: usize,
}

impl<B: Backend> Slots<'_, B> {
    fn apply(&mut self, transformer: &Transformer2DModel<B>, hidden: Tensor<B, 4>) -> Tensor<B, 4> {
        let slot = self.next;
        self.next += 1;
        self.context.apply(slot, transformer, hidden)
    }
}

/// An encoder level: `(resnet, transformer?)` pairs, then a stride-2 downsampler except at the
/// deepest level.
#[derive(Module, Debug)]
pub struct DownBlock2D<B: Backend> {
    /// Residual blocks.
    pub resnets: Vec<ResnetBlock2D<B>>,
    /// One transformer per resnet (empty for `DownBlock2D`).
    pub attentions: Vec<Transformer2DModel<B>>,
    /// The downsampler (empty at the deepest level).
    pub downsamplers: Vec<Downsample2D<B>>,
}

impl<B: Backend> DownBlock2D<B> {
    /// Runs the level, appending each skip connection it produces to `skips`.
    pub(crate) fn forward(
        &self,
        mut h: Tensor<B, 4>,
        temb: &Tensor<B, 2>,
        slots: &mut Slots<'_, B>,
        skips: &mut Vec<Tensor<B, 4>>,
    ) -> Tensor<B, 4> {
        for (i, resnet) in self.resnets.iter().enumerate() {
            h = resnet.forward(h, Some(temb));
            if let Some(attention) = self.attentions.get(i) {
                h = slots.apply(attention, h);
            }
            skips.push(h.clone());
        }
        for downsampler in &self.downsamplers {
            h = downsampler.forward(h);
            skips.push(h.clone());
        }
        h
    }
}

/// The bottleneck: resnet, then `(transformer, resnet)` pairs.
#[derive(Module, Debug)]
pub struct UNetMidBlock2DCrossAttn<B: Backend> {
    /// Residual blocks (one more than transformers).
    pub resnets: Vec<ResnetBlock2D<B>>,
    /// Transformers.
    pub attentions: Vec<Transformer2DModel<B>>,
}

impl<B: Backend> UNetMidBlock2DCrossAttn<B> {
    pub(crate) fn forward(
        &self,
        h: Tensor<B, 4>,
        temb: &Tensor<B, 2>,
        slots: &mut Slots<'_, B>,
    ) -> Tensor<B, 4> {
        let mut h = self.resnets[0].forward(h, Some(temb));
        for (attention, resnet) in self.attentions.iter().zip(&self.resnets[1..]) {
            h = slots.apply(attention, h);
            h = resnet.forward(h, Some(temb));
        }
        h
    }
}

/// A decoder level: each resnet takes the running features concatenated with one skip
/// connection (last produced, first consumed), optionally followed by a transformer; then a
/// nearest ×2 upsampler except at the finest level.
#[derive(Module, Debug)]
pub struct UpBlock2D<B: Backend> {
    /// Residual blocks.
    pub resnets: Vec<ResnetBlock2D<B>>,
    /// One transformer per resnet (empty for `UpBlock2D`).
    pub attentions: Vec<Transformer2DModel<B>>,
    /// The upsampler (empty at the finest level).
    pub upsamplers: Vec<Upsample2D<B>>,
}

impl<B: Backend> UpBlock2D<B> {
    /// Runs the level, popping one skip per resnet; the upsampler targets `upsample_size`
    /// (the size of the next skip) when given.
    pub(crate) fn forward(
        &self,
        mut h: Tensor<B, 4>,
        temb: &Tensor<B, 2>,
        slots: &mut Slots<'_, B>,
        skips: &mut Vec<Tensor<B, 4>>,
        upsample_size: Option<[usize; 2]>,
    ) -> Tensor<B, 4> {
        for (i, resnet) in self.resnets.iter().enumerate() {
            // The UNet checks the skip count before running the decoder.
            if let Some(skip) = skips.pop() {
                h = Tensor::cat(vec![h, skip], 1);
            }
            h = resnet.forward(h, Some(temb));
            if let Some(attention) = self.attentions.get(i) {
                h = slots.apply(attention, h);
            }
        }
        for upsampler in &self.upsamplers {
            h = upsampler.forward(h, upsample_size);
        }
        h
    }
}
