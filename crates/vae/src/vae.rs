//! The VAE's `Encoder` and `Decoder` and their blocks (diffusers `models/autoencoders/vae.py`,
//! `DownEncoderBlock2D`, `UpDecoderBlock2D` and `UNetMidBlock2D` of `unet_2d_blocks.py`).
//!
//! Every GroupNorm of the VAE uses epsilon 1e-6; the blocks take no time embedding.

use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::prelude::*;
use prompt_diffusion_core::nn::{
    Activation, Attention, AttentionConfig, Downsample2D, DownsamplePadding, GroupNorm,
    GroupNormConfig, ResnetBlock2D, ResnetBlock2DConfig, Upsample2D, conv2d,
};

use crate::AutoencoderKLConfig;

const EPS: f64 = 1e-6;

fn conv3<B: Backend>(i: usize, o: usize, device: &B::Device) -> Conv2d<B> {
    Conv2dConfig::new([i, o], [3, 3])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .init(device)
}

/// The `count` residual blocks of a stage from `inp` to `out` channels (the first block changes
/// the width).
fn resnets<B: Backend>(
    (inp, out): (usize, usize),
    count: usize,
    config: &AutoencoderKLConfig,
    device: &B::Device,
) -> Vec<ResnetBlock2D<B>> {
    (0..count)
        .map(|j| {
            ResnetBlock2DConfig::new(if j == 0 { inp } else { out }, out, None)
                .with_groups(config.norm_num_groups)
                .with_eps(EPS)
                .with_act(config.act_fn)
                .init(device)
        })
        .collect()
}

/// The `(input, output)` channels of each stage of `widths`: a stage takes the previous one's
/// width (the first its own).
fn stage_widths(widths: &[usize]) -> impl Iterator<Item = (usize, usize)> + '_ {
    let inputs = widths.first().into_iter().chain(widths);
    inputs.copied().zip(widths.iter().copied())
}

/// The output GroupNorm over `channels`.
fn norm_out<B: Backend>(
    channels: usize,
    config: &AutoencoderKLConfig,
    device: &B::Device,
) -> GroupNorm<B> {
    GroupNormConfig::new(config.norm_num_groups, channels)
        .with_eps(EPS)
        .init(device)
}

/// An encoder stage: resnets, then a stride-2 downsampler except in the last stage.
#[derive(Module, Debug)]
pub struct DownEncoderBlock2D<B: Backend> {
    /// Residual blocks.
    pub resnets: Vec<ResnetBlock2D<B>>,
    /// The downsampler (empty in the last stage).
    pub downsamplers: Vec<Downsample2D<B>>,
}

impl<B: Backend> DownEncoderBlock2D<B> {
    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = self.resnets.iter().fold(x, |x, r| r.forward(x, None));
        self.downsamplers.iter().fold(x, |x, d| d.forward(x))
    }
}

/// A decoder stage: resnets, then a ×2 upsampler except in the last stage.
#[derive(Module, Debug)]
pub struct UpDecoderBlock2D<B: Backend> {
    /// Residual blocks.
    pub resnets: Vec<ResnetBlock2D<B>>,
    /// The upsampler (empty in the last stage).
    pub upsamplers: Vec<Upsample2D<B>>,
}

impl<B: Backend> UpDecoderBlock2D<B> {
    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = self.resnets.iter().fold(x, |x, r| r.forward(x, None));
        self.upsamplers.iter().fold(x, |x, u| u.forward(x, None))
    }
}

/// The VAE mid block: resnet, single-head spatial self-attention, resnet.
#[derive(Module, Debug)]
pub struct UNetMidBlock2D<B: Backend> {
    /// The two residual blocks.
    pub resnets: Vec<ResnetBlock2D<B>>,
    /// The attention between them (empty when `mid_block_add_attention` is false).
    pub attentions: Vec<Attention<B>>,
}

impl<B: Backend> UNetMidBlock2D<B> {
    fn new(channels: usize, config: &AutoencoderKLConfig, device: &B::Device) -> Self {
        Self {
            resnets: resnets((channels, channels), 2, config, device),
            attentions: if config.mid_block_add_attention {
                vec![AttentionConfig::vae(channels, config.norm_num_groups, EPS).init(device)]
            } else {
                Vec::new()
            },
        }
    }

    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut x = self.resnets[0].forward(x, None);
        if let Some(attention) = self.attentions.first() {
            x = attention.forward_spatial(x);
        }
        self.resnets[1].forward(x, None)
    }
}

/// Image → latent moments (`mean ‖ logvar`, before `quant_conv`).
#[derive(Module, Debug)]
pub struct Encoder<B: Backend> {
    /// Input convolution.
    pub conv_in: Conv2d<B>,
    /// Downsampling stages.
    pub down_blocks: Vec<DownEncoderBlock2D<B>>,
    /// Mid block.
    pub mid_block: UNetMidBlock2D<B>,
    /// Output GroupNorm.
    pub conv_norm_out: GroupNorm<B>,
    /// Output convolution to `2 · latent_channels`.
    pub conv_out: Conv2d<B>,
    act: Activation,
}

impl<B: Backend> Encoder<B> {
    /// Creates the encoder for `config`.
    pub fn new(config: &AutoencoderKLConfig, device: &B::Device) -> Self {
        let boc = &config.block_out_channels;
        let last = boc.len() - 1;
        let padding = DownsamplePadding::RightBottom;
        let down_blocks = stage_widths(boc)
            .enumerate()
            .map(|(i, (inp, out))| DownEncoderBlock2D {
                resnets: resnets((inp, out), config.layers_per_block, config, device),
                downsamplers: (i < last)
                    .then(|| Downsample2D::new(out, out, padding, device))
                    .into_iter()
                    .collect(),
            })
            .collect();
        Self {
            conv_in: conv3(config.in_channels, boc[0], device),
            down_blocks,
            mid_block: UNetMidBlock2D::new(boc[last], config, device),
            conv_norm_out: norm_out(boc[last], config, device),
            conv_out: conv3(boc[last], 2 * config.latent_channels, device),
            act: config.act_fn,
        }
    }

    /// # Shapes
    /// `[batch, in_channels, H, W]` → `[batch, 2·latent_channels, H/f, W/f]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = conv2d(&self.conv_in, x);
        let x = self.down_blocks.iter().fold(x, |x, b| b.forward(x));
        let x = self.mid_block.forward(x);
        let x = self.conv_norm_out.forward_activated(x, self.act);
        conv2d(&self.conv_out, x)
    }
}

/// Latent → image.
#[derive(Module, Debug)]
pub struct Decoder<B: Backend> {
    /// Input convolution.
    pub conv_in: Conv2d<B>,
    /// Mid block.
    pub mid_block: UNetMidBlock2D<B>,
    /// Upsampling stages (widest first).
    pub up_blocks: Vec<UpDecoderBlock2D<B>>,
    /// Output GroupNorm.
    pub conv_norm_out: GroupNorm<B>,
    /// Output convolution to image channels.
    pub conv_out: Conv2d<B>,
    act: Activation,
}

impl<B: Backend> Decoder<B> {
    /// Creates the decoder for `config`.
    pub fn new(config: &AutoencoderKLConfig, device: &B::Device) -> Self {
        let reversed: Vec<usize> = config.block_out_channels.iter().rev().copied().collect();
        let last = reversed.len() - 1;
        let up_blocks = stage_widths(&reversed)
            .enumerate()
            .map(|(i, (inp, out))| UpDecoderBlock2D {
                resnets: resnets((inp, out), config.layers_per_block + 1, config, device),
                upsamplers: (i < last)
                    .then(|| Upsample2D::new(out, out, device))
                    .into_iter()
                    .collect(),
            })
            .collect();
        Self {
            conv_in: conv3(config.latent_channels, reversed[0], device),
            mid_block: UNetMidBlock2D::new(reversed[0], config, device),
            up_blocks,
            conv_norm_out: norm_out(reversed[last], config, device),
            conv_out: conv3(reversed[last], config.out_channels, device),
            act: config.act_fn,
        }
    }

    /// # Shapes
    /// `[batch, latent_channels, h, w]` → `[batch, out_channels, h·f, w·f]`.
    pub fn forward(&self, z: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = conv2d(&self.conv_in, z);
        let x = self.mid_block.forward(x);
        let x = self.up_blocks.iter().fold(x, |x, b| b.forward(x));
        let x = self.conv_norm_out.forward_activated(x, self.act);
        conv2d(&self.conv_out, x)
    }
}
