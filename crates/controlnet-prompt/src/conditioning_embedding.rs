//! `ControlNetConditioningEmbedding`, the hint encoder (diffusers
//! `models/controlnets/controlnet.py`; LDM `input_hint_block`, and Prompt Diffusion's
//! `input_cond_block`).
//!
//! `conv_in → SiLU → (block → SiLU) × 2(stages − 1) → conv_out`: for every stage after the
//! first, a 3×3 convolution keeping the channels and a 3×3 stride-2 convolution to the next
//! stage's channels; `conv_out` (zero-initialised in training) maps to the UNet's first level.
//! With SD's stages (16, 32, 96, 256) a 512×512 hint becomes a 64×64 map of 320 channels.

use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::prelude::*;
use burn::tensor::activation::silu;
use prompt_diffusion_core::nn::conv2d;

/// The hint encoder of a ControlNet.
#[derive(Module, Debug)]
pub struct ControlNetConditioningEmbedding<B: Backend> {
    /// Hint channels → first stage.
    pub conv_in: Conv2d<B>,
    /// Per stage after the first: a same-size convolution, then a stride-2 one.
    pub blocks: Vec<Conv2d<B>>,
    /// Last stage → embedding channels.
    pub conv_out: Conv2d<B>,
}

fn conv3<B: Backend>(i: usize, o: usize, stride: usize, device: &B::Device) -> Conv2d<B> {
    Conv2dConfig::new([i, o], [3, 3])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .init(device)
}

impl<B: Backend> ControlNetConditioningEmbedding<B> {
    /// Creates the encoder `conditioning_channels → stages… → embedding_channels`.
    ///
    /// `stages` must not be empty (checked by
    /// [`ControlNetConfig::validate`](crate::ControlNetConfig::validate)).
    pub fn new(
        conditioning_channels: usize,
        stages: &[usize],
        embedding_channels: usize,
        device: &B::Device,
    ) -> Self {
        let first = stages.first().copied().unwrap_or(embedding_channels);
        let last = stages.last().copied().unwrap_or(embedding_channels);
        Self {
            conv_in: conv3(conditioning_channels, first, 1, device),
            blocks: stages
                .windows(2)
                .flat_map(|w| [conv3(w[0], w[0], 1, device), conv3(w[0], w[1], 2, device)])
                .collect(),
            conv_out: conv3(last, embedding_channels, 1, device),
        }
    }

    /// Channels of the hint this encoder takes.
    pub fn conditioning_channels(&self) -> usize {
        self.conv_in.weight.dims()[1]
    }

    /// How many times smaller than the hint the embedding is (`2^(stages − 1)`).
    pub fn downscale_factor(&self) -> usize {
        1usize
            .checked_shl((self.blocks.len() / 2) as u32)
            .unwrap_or(usize::MAX)
    }

    /// Encodes a hint image.
    ///
    /// # Shapes
    /// `[batch, conditioning_channels, H, W]` → `[batch, embedding_channels, ⌈H/f⌉, ⌈W/f⌉]`
    /// with `f` = [`downscale_factor`](Self::downscale_factor).
    pub fn forward(&self, hint: Tensor<B, 4>) -> Tensor<B, 4> {
        let h = silu(conv2d(&self.conv_in, hint));
        let h = self
            .blocks
            .iter()
            .fold(h, |h, block| silu(conv2d(block, h)));
        conv2d(&self.conv_out, h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn_ndarray::NdArray;

    #[test]
    fn sd_stages_give_an_eighth_of_the_hint() {
        let device = Default::default();
        let enc = ControlNetConditioningEmbedding::<NdArray>::new(6, &[4, 8, 8, 16], 12, &device);
        assert_eq!(enc.blocks.len(), 6);
        assert_eq!(enc.downscale_factor(), 8);
        assert_eq!(enc.conditioning_channels(), 6);
        let out = enc.forward(Tensor::zeros([2, 6, 40, 24], &device));
        assert_eq!(out.dims(), [2, 12, 5, 3]);
    }
}
