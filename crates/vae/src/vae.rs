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

fn resnet<B: Backend>(
    i: usize,
    o: usize,
    config: &AutoencoderKLConfig,
    device: &B::Device,
) -> ResnetBlock2D<B> {
    ResnetBlock2DConfig::new(i, o, None)
        .with_groups(config.norm_num_groups)
        .with_eps(EPS)
        .with_act(config.act_fn)
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
            resnets: (0..2)
                .map(|_| resnet(channels, channels, config, device))
                .collect(),
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
        let down_blocks = boc
            .iter()
            .enumerate()
            .map(|(i, &out)| {
                let inp = if i == 0 { boc[0] } else { boc[i - 1] };
                DownEncoderBlock2D {
                    resnets: (0..config.layers_per_block)
                        .map(|j| resnet(if j == 0 { inp } else { out }, out, config, device))
                        .collect(),
                    downsamplers: (i < last)
                        .then(|| {
                            Downsample2D::new(out, out, DownsamplePadding::RightBottom, device)
                        })
                        .into_iter()
                        .collect(),
                }
            })
            .collect();
        Self {
            conv_in: conv3(config.in_channels, boc[0], device),
            down_blocks,
            mid_block: UNetMidBlock2D::new(boc[last], config, device),
            conv_norm_out: GroupNormConfig::new(config.norm_num_groups, boc[last])
                .with_eps(EPS)
                .init(device),
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
        let up_blocks = reversed
            .iter()
            .enumerate()
            .map(|(i, &out)| {
                let inp = if i == 0 { reversed[0] } else { reversed[i - 1] };
                UpDecoderBlock2D {
                    resnets: (0..=config.layers_per_block)
                        .map(|j| resnet(if j == 0 { inp } else { out }, out, config, device))
                        .collect(),
                    upsamplers: (i < last)
                        .then(|| Upsample2D::new(out, out, device))
                        .into_iter()
                        .collect(),
                }
            })
            .collect();
        Self {
            conv_in: conv3(config.latent_channels, reversed[0], device),
            mid_block: UNetMidBlock2D::new(reversed[0], config, device),
            up_blocks,
            conv_norm_out: GroupNormConfig::new(config.norm_num_groups, reversed[last])
                .with_eps(EPS)
                .init(device),
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
