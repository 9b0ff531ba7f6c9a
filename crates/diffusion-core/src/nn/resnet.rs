//! `ResnetBlock2D`, the residual block of the UNet, the VAE and the ControlNets
//! (diffusers `models/resnet.py`).
//!
//! `norm1 → act → conv1 (+ time_emb_proj(act(temb))) → norm2 → act → conv2`, plus the input
//! (through a 1×1 `conv_shortcut` when the channel count changes), divided by
//! `output_scale_factor`.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;

use super::{Activation, GroupNorm, GroupNormConfig, conv2d};

/// Configuration of a [`ResnetBlock2D`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResnetBlock2DConfig {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Width of the time embedding; `None` for blocks without one (the VAE's).
    pub temb_channels: Option<usize>,
    /// GroupNorm groups of both norms.
    pub groups: usize,
    /// GroupNorm epsilon (1e-5 in the UNet, 1e-6 in the VAE).
    pub eps: f64,
    /// The output is divided by this (1 in SD).
    pub output_scale_factor: f64,
    /// Non-linearity (`silu` in SD).
    pub act: Activation,
}

impl ResnetBlock2DConfig {
    /// A block with SD's settings: 32 groups, eps 1e-5, SiLU, scale 1.
    pub fn new(in_channels: usize, out_channels: usize, temb_channels: Option<usize>) -> Self {
        Self {
            in_channels,
            out_channels,
            temb_channels,
            groups: 32,
            eps: 1e-5,
            output_scale_factor: 1.0,
            act: Activation::Silu,
        }
    }

    crate::setters! {
        /// Sets the GroupNorm groups.
        with_groups(groups: usize);
        /// Sets the GroupNorm epsilon.
        with_eps(eps: f64);
        /// Sets the output scale factor.
        with_output_scale_factor(output_scale_factor: f64);
        /// Sets the non-linearity.
        with_act(act: Activation);
    }

    /// Creates the block (weights are filled by loading).
    pub fn init<B: Backend>(&self, device: &B::Device) -> ResnetBlock2D<B> {
        let conv3 = |i, o| {
            Conv2dConfig::new([i, o], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device)
        };
        ResnetBlock2D {
            norm1: GroupNormConfig::new(self.groups, self.in_channels)
                .with_eps(self.eps)
                .init(device),
            conv1: conv3(self.in_channels, self.out_channels),
            time_emb_proj: self
                .temb_channels
                .map(|t| LinearConfig::new(t, self.out_channels).init(device)),
            norm2: GroupNormConfig::new(self.groups, self.out_channels)
                .with_eps(self.eps)
                .init(device),
            conv2: conv3(self.out_channels, self.out_channels),
            conv_shortcut: (self.in_channels != self.out_channels).then(|| {
                Conv2dConfig::new([self.in_channels, self.out_channels], [1, 1]).init(device)
            }),
            act: self.act,
            output_scale_factor: self.output_scale_factor,
        }
    }
}

/// The residual block (diffusers `ResnetBlock2D`, LDM `ResBlock`).
#[derive(Module, Debug)]
pub struct ResnetBlock2D<B: Backend> {
    /// First GroupNorm.
    pub norm1: GroupNorm<B>,
    /// First 3×3 convolution.
    pub conv1: Conv2d<B>,
    /// Projection of the time embedding to the output channels.
    pub time_emb_proj: Option<Linear<B>>,
    /// Second GroupNorm.
    pub norm2: GroupNorm<B>,
    /// Second 3×3 convolution.
    pub conv2: Conv2d<B>,
    /// 1×1 convolution of the input when the channel count changes.
    pub conv_shortcut: Option<Conv2d<B>>,
    act: Activation,
    output_scale_factor: f64,
}

impl<B: Backend> ResnetBlock2D<B> {
    /// Applies the block; `temb` is ignored by blocks without `time_emb_proj`.
    ///
    /// # Shapes
    /// `x: [batch, in_channels, h, w]`, `temb: [batch, temb_channels]` →
    /// `[batch, out_channels, h, w]`.
    pub fn forward(&self, x: Tensor<B, 4>, temb: Option<&Tensor<B, 2>>) -> Tensor<B, 4> {
        let h = self.norm1.forward_activated(x.clone(), self.act);
        let mut h = conv2d(&self.conv1, h);
        if let (Some(proj), Some(temb)) = (&self.time_emb_proj, temb) {
            let t = proj.forward(self.act.forward(temb.clone()));
            let [b, c] = t.dims();
            h = h + t.reshape([b, c, 1, 1]);
        }
        let h = self.norm2.forward_activated(h, self.act);
        let h = conv2d(&self.conv2, h);
        let shortcut = match &self.conv_shortcut {
            Some(conv) => conv2d(conv, x),
            None => x,
        };
        let out = shortcut + h;
        if self.output_scale_factor == 1.0 {
            out
        } else {
            out / self.output_scale_factor
        }
    }

    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.conv2.weight.dims()[0]
    }
}
