//! The UNet's encoder, mid and decoder blocks (diffusers `models/unets/unet_2d_blocks.py`:
//! `CrossAttnDownBlock2D`/`DownBlock2D`, `UNetMidBlock2DCrossAttn`,
//! `CrossAttnUpBlock2D`/`UpBlock2D`).
//!
//! A block with and without cross-attention is the same struct; the plain kinds have an empty
//! `attentions` list. Every cross-attention slot is run through a [`CrossAttentionContext`],
//! which numbers the slots in execution order, so callers can change what each slot attends to
//! (or which weights it uses) without copying the blocks. The data layers (resnets, down- and
//! upsamplers) are of the config's [`DataLayerKind`]: convolutional, or the fully connected
//! layers of Versatile Diffusion's flat text UNet (`CrossAttnDownBlockFlat`, …).

use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::prelude::*;
use burn::tensor::DType;
use prompt_diffusion_core::Result;
use prompt_diffusion_core::nn::{Downsample2D, DownsamplePadding, ResnetBlock2DConfig, Upsample2D};

use crate::context::CrossAttentionContext;
use crate::data_layers::{DataDownsample, DataLayerKind, DataResnet, DataUpsample};
use crate::embeddings::{TimestepEmbedding, timestep_embedding};
use crate::resnet_flat::{LinearMultiDim, ResnetBlockFlat, flat_shape};
use crate::transformer_2d::{Transformer2DConfig, Transformer2DModel};
use crate::trunk::Levels;
use crate::unet_2d_condition::shape_error;
use crate::{UNet2DConditionConfig, UNetTrunkConfig};

/// Runs the cross-attention slots through a [`CrossAttentionContext`], numbering them in
/// execution order. A model that runs several block lists (a UNet, a ControlNet) passes one
/// cursor through all of them.
pub struct AttentionSlots<'a, B: Backend> {
    context: &'a dyn CrossAttentionContext<B>,
    next: usize,
}

impl<'a, B: Backend> AttentionSlots<'a, B> {
    /// A cursor at slot 0.
    pub fn new(context: &'a dyn CrossAttentionContext<B>) -> Self {
        Self { context, next: 0 }
    }

    /// The number of the next slot.
    pub fn next_slot(&self) -> usize {
        self.next
    }

    fn apply(&mut self, transformer: &Transformer2DModel<B>, hidden: Tensor<B, 4>) -> Tensor<B, 4> {
        let slot = self.next;
        self.next += 1;
        self.context.apply(slot, transformer, hidden)
    }
}

/// Builds the blocks of a UNet-shaped model from a [`UNet2DConditionConfig`]; ControlNets and
/// plug-in branches build their encoder copies with the same code.
pub struct BlockBuilder<'a> {
    config: &'a UNet2DConditionConfig,
    levels: Levels,
}

impl<'a> BlockBuilder<'a> {
    /// A builder for a validated `config`.
    ///
    /// # Errors
    /// [`Error::Config`](prompt_diffusion_core::Error::Config) when a per-level list has the
    /// wrong length.
    pub fn new(config: &'a UNet2DConditionConfig) -> Result<Self> {
        Ok(Self {
            levels: config.levels()?,
            config,
        })
    }

    fn resnet<B: Backend>(
        &self,
        i: usize,
        o: usize,
        scale: f64,
        device: &B::Device,
    ) -> DataResnet<B> {
        let temb = self.config.time_embed_dim();
        match self.config.data_layers {
            DataLayerKind::Conv2D => DataResnet::Conv(
                ResnetBlock2DConfig::new(i, o, Some(temb))
                    .with_groups(self.config.groups())
                    .with_eps(self.config.norm_eps)
                    .with_act(self.config.act_fn)
                    .with_output_scale_factor(scale)
                    .init(device),
            ),
            // diffusers' ResnetBlockFlat ignores the output scale factor and the activation
            // name (always SiLU).
            DataLayerKind::Flat { .. } => DataResnet::Flat(ResnetBlockFlat::new(
                flat_shape(i),
                flat_shape(o),
                temb,
                self.config.groups(),
                self.config.norm_eps,
                device,
            )),
        }
    }

    fn downsampler<B: Backend>(
        &self,
        c: usize,
        padding: DownsamplePadding,
        device: &B::Device,
    ) -> DataDownsample<B> {
        match self.config.data_layers {
            DataLayerKind::Conv2D => DataDownsample::Conv(Downsample2D::new(c, c, padding, device)),
            DataLayerKind::Flat { .. } => {
                DataDownsample::Flat(LinearMultiDim::new(flat_shape(c), flat_shape(c), device))
            }
        }
    }

    fn upsampler<B: Backend>(&self, c: usize, device: &B::Device) -> DataUpsample<B> {
        match self.config.data_layers {
            DataLayerKind::Conv2D => DataUpsample::Conv(Upsample2D::new(c, c, device)),
            DataLayerKind::Flat { .. } => {
                DataUpsample::Flat(LinearMultiDim::new(flat_shape(c), flat_shape(c), device))
            }
        }
    }

    fn transformer<B: Backend>(
        &self,
        level: usize,
        channels: usize,
        device: &B::Device,
    ) -> Transformer2DModel<B> {
        Transformer2DConfig {
            channels,
            heads: self.levels.heads[level],
            layers: self.levels.transformer_layers[level],
            cross_attention_dim: self.levels.cross_attention_dim[level],
            groups: self.config.groups(),
        }
        .init(device)
    }

    /// The time MLP (`time_embedding`), from the sinusoidal embedding of the first level's
    /// width to the time embedding's.
    pub fn time_embedding<B: Backend>(&self, device: &B::Device) -> TimestepEmbedding<B> {
        TimestepEmbedding::new(
            self.config.block_out_channels[0],
            self.config.time_embed_dim(),
            self.config.act_fn,
            device,
        )
    }

    /// The encoder levels (`down_blocks`).
    pub fn down_blocks<B: Backend>(&self, device: &B::Device) -> Vec<DownBlock2D<B>> {
        let config = self.config;
        let boc = &config.block_out_channels;
        let n = boc.len();
        let padding = if config.downsample_padding == 0 {
            DownsamplePadding::RightBottom
        } else {
            DownsamplePadding::Symmetric
        };
        let scale = config.resnet_out_scale_factor;
        (0..n)
            .map(|i| {
                let (inp, out) = (if i == 0 { boc[0] } else { boc[i - 1] }, boc[i]);
                let layers = self.levels.layers[i];
                DownBlock2D {
                    resnets: (0..layers)
                        .map(|j| self.resnet(if j == 0 { inp } else { out }, out, scale, device))
                        .collect(),
                    attentions: if config.down_block_types[i].has_attention() {
                        (0..layers)
                            .map(|_| self.transformer(i, out, device))
                            .collect()
                    } else {
                        Vec::new()
                    },
                    downsamplers: (i + 1 < n)
                        .then(|| self.downsampler(out, padding, device))
                        .into_iter()
                        .collect(),
                }
            })
            .collect()
    }

    /// The bottleneck (`mid_block`).
    pub fn mid_block<B: Backend>(&self, device: &B::Device) -> UNetMidBlock2DCrossAttn<B> {
        let n = self.config.block_out_channels.len();
        let c = self.config.block_out_channels[n - 1];
        UNetMidBlock2DCrossAttn {
            resnets: (0..2)
                .map(|_| self.resnet(c, c, self.config.mid_block_scale_factor, device))
                .collect(),
            attentions: vec![self.transformer(n - 1, c, device)],
        }
    }

    /// The cross-attention transformers alone, in slot order (those of
    /// [`UNet2DConditionModel::attention_slots`](crate::UNet2DConditionModel::attention_slots)),
    /// e.g. to hold one modality's context layers without its data layers.
    pub fn attention_transformers<B: Backend>(
        &self,
        device: &B::Device,
    ) -> Vec<Transformer2DModel<B>> {
        self.attention_slot_specs()
            .into_iter()
            .map(|(_, level, channels)| self.transformer(level, channels, device))
            .collect()
    }

    /// The diffusers module path of every cross-attention slot, in slot order
    /// (`down_blocks.0.attentions.0`, …, `mid_block.attentions.0`, …, `up_blocks.3.attentions.2`).
    pub fn attention_slot_paths(&self) -> Vec<String> {
        self.attention_slot_specs()
            .into_iter()
            .map(|(path, _, _)| path)
            .collect()
    }

    /// `(path, level, channels)` of every slot, in execution order.
    fn attention_slot_specs(&self) -> Vec<(String, usize, usize)> {
        let config = self.config;
        let boc = &config.block_out_channels;
        let n = boc.len();
        let mut specs = Vec::new();
        for (i, kind) in config.down_block_types.iter().enumerate() {
            if kind.has_attention() {
                specs.extend(
                    (0..self.levels.layers[i])
                        .map(|j| (format!("down_blocks.{i}.attentions.{j}"), i, boc[i])),
                );
            }
        }
        specs.push(("mid_block.attentions.0".into(), n - 1, boc[n - 1]));
        for (i, kind) in config.up_block_types.iter().enumerate() {
            let level = n - 1 - i;
            if kind.has_attention() {
                specs.extend(
                    (0..=self.levels.layers[level])
                        .map(|j| (format!("up_blocks.{i}.attentions.{j}"), level, boc[level])),
                );
            }
        }
        specs
    }

    /// The decoder levels (`up_blocks`).
    pub fn up_blocks<B: Backend>(&self, device: &B::Device) -> Vec<UpBlock2D<B>> {
        let config = self.config;
        let reversed: Vec<usize> = config.block_out_channels.iter().rev().copied().collect();
        let n = reversed.len();
        let scale = config.resnet_out_scale_factor;
        (0..n)
            .map(|i| {
                let level = n - 1 - i;
                let prev = if i == 0 { reversed[0] } else { reversed[i - 1] };
                let out = reversed[i];
                let skip_in = reversed[(i + 1).min(n - 1)];
                let layers = self.levels.layers[level] + 1;
                UpBlock2D {
                    resnets: (0..layers)
                        .map(|j| {
                            let res_in = if j == 0 { prev } else { out };
                            let skip = if j == layers - 1 { skip_in } else { out };
                            self.resnet(res_in + skip, out, scale, device)
                        })
                        .collect(),
                    attentions: if config.up_block_types[i].has_attention() {
                        (0..layers)
                            .map(|_| self.transformer(level, out, device))
                            .collect()
                    } else {
                        Vec::new()
                    },
                    upsamplers: (i + 1 < n)
                        .then(|| self.upsampler(out, device))
                        .into_iter()
                        .collect(),
                }
            })
            .collect()
    }
}

/// An encoder level: `(resnet, transformer?)` pairs, then a stride-2 downsampler except at the
/// deepest level.
#[derive(Module, Debug)]
pub struct DownBlock2D<B: Backend> {
    /// Residual blocks.
    pub resnets: Vec<DataResnet<B>>,
    /// One transformer per resnet (empty for `DownBlock2D`).
    pub attentions: Vec<Transformer2DModel<B>>,
    /// The downsampler (empty at the deepest level).
    pub downsamplers: Vec<DataDownsample<B>>,
}

impl<B: Backend> DownBlock2D<B> {
    /// Runs the level, appending each skip connection it produces to `skips`.
    pub fn forward(
        &self,
        mut h: Tensor<B, 4>,
        temb: &Tensor<B, 2>,
        slots: &mut AttentionSlots<'_, B>,
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

/// A convolution keeping the spatial size (padding `(kernel − 1) / 2`), PyTorch-initialised.
pub fn conv2d_same<B: Backend>(i: usize, o: usize, kernel: usize, device: &B::Device) -> Conv2d<B> {
    let p = (kernel - 1) / 2;
    Conv2dConfig::new([i, o], [kernel, kernel])
        .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
        .init(device)
}

/// The time embedding fed to every resnet of a UNet encoder: the sinusoidal embedding of
/// `timestep` (one entry, or one per batch entry) of `trunk`'s first-level width, through
/// `mlp`, in `dtype`.
///
/// # Errors
/// [`Error::Shape`](prompt_diffusion_core::Error::Shape) when `timestep` has neither 1 nor
/// `batch` entries.
pub fn embed_time<B: Backend>(
    mlp: &TimestepEmbedding<B>,
    trunk: &UNetTrunkConfig,
    timestep: Tensor<B, 1>,
    batch: usize,
    dtype: DType,
) -> Result<Tensor<B, 2>> {
    let [n] = timestep.dims();
    let timestep = match n {
        n if n == batch => timestep,
        1 => timestep.expand([batch]),
        _ => return Err(shape_error("timestep", format!("[1] or [{batch}]"), &[n])),
    };
    let t = timestep_embedding(
        timestep,
        trunk.block_out_channels[0],
        trunk.flip_sin_to_cos,
        trunk.freq_shift,
    );
    Ok(mlp.forward(t.cast(dtype)))
}

/// Runs the encoder levels on `h` (`conv_in`'s output): the features after the last level,
/// and the skip connections, `h` first.
pub fn run_down_blocks<B: Backend>(
    blocks: &[DownBlock2D<B>],
    h: Tensor<B, 4>,
    temb: &Tensor<B, 2>,
    slots: &mut AttentionSlots<'_, B>,
) -> (Tensor<B, 4>, Vec<Tensor<B, 4>>) {
    let mut skips = vec![h.clone()];
    let h = blocks
        .iter()
        .fold(h, |h, block| block.forward(h, temb, slots, &mut skips));
    (h, skips)
}

/// The bottleneck: resnet, then `(transformer, resnet)` pairs.
#[derive(Module, Debug)]
pub struct UNetMidBlock2DCrossAttn<B: Backend> {
    /// Residual blocks (one more than transformers).
    pub resnets: Vec<DataResnet<B>>,
    /// Transformers.
    pub attentions: Vec<Transformer2DModel<B>>,
}

impl<B: Backend> UNetMidBlock2DCrossAttn<B> {
    /// Runs the bottleneck.
    pub fn forward(
        &self,
        h: Tensor<B, 4>,
        temb: &Tensor<B, 2>,
        slots: &mut AttentionSlots<'_, B>,
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
    pub resnets: Vec<DataResnet<B>>,
    /// One transformer per resnet (empty for `UpBlock2D`).
    pub attentions: Vec<Transformer2DModel<B>>,
    /// The upsampler (empty at the finest level).
    pub upsamplers: Vec<DataUpsample<B>>,
}

impl<B: Backend> UpBlock2D<B> {
    /// Runs the level, popping one skip per resnet; the upsampler targets `upsample_size`
    /// (the size of the next skip) when given.
    pub fn forward(
        &self,
        mut h: Tensor<B, 4>,
        temb: &Tensor<B, 2>,
        slots: &mut AttentionSlots<'_, B>,
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
