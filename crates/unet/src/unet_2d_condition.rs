//! `UNet2DConditionModel` (diffusers `models/unets/unet_2d_condition.py`, LDM `UNetModel`),
//! and with flat data layers Versatile Diffusion's `UNetFlatConditionModel`
//! (`pipelines/deprecated/versatile_diffusion/modeling_text_unet.py`).

use burn::prelude::*;
use prompt_diffusion_core::nn::{GroupNorm, GroupNormConfig};
use prompt_diffusion_core::weights::{Pretrained, TensorSource, WeightNaming};
use prompt_diffusion_core::{Error, Result};

use crate::UNet2DConditionConfig;
use crate::context::{ContextTokens, CrossAttentionContext};
use crate::data_layers::{DataLayerKind, DataProjection};
use crate::embeddings::TimestepEmbedding;
use crate::resnet_flat::{LinearMultiDim, flat_shape};
use crate::transformer_2d::Transformer2DModel;
use crate::unet_2d_blocks::{
    AttentionSlots, BlockBuilder, DownBlock2D, UNetMidBlock2DCrossAttn, UpBlock2D, conv2d_same,
    embed_time, run_down_blocks,
};
use crate::weights::{LDM_ROOTS, check_weights, to_diffusers_names};

/// Features added to the UNet's skip connections and to its mid-block output, after the
/// encoder has run (diffusers' `down_block_additional_residuals` and
/// `mid_block_additional_residual`, the ControlNet semantics).
///
/// `down[i]` is added to skip `i` (0 = `conv_in`'s output, then each encoder resnet/attention
/// pair and downsampler in order; SD has 12). The list may be shorter than the number of skips
/// and entries may be `None`: those skips are left as they are.
#[derive(Debug, Clone)]
pub struct UNetResiduals<B: Backend> {
    /// One optional residual per skip connection.
    pub down: Vec<Option<Tensor<B, 4>>>,
    /// Added to the mid-block output.
    pub mid: Option<Tensor<B, 4>>,
}

impl<B: Backend> Default for UNetResiduals<B> {
    fn default() -> Self {
        Self {
            down: Vec::new(),
            mid: None,
        }
    }
}

impl<B: Backend> UNetResiduals<B> {
    /// Residuals for every skip and the mid block (a ControlNet's output).
    pub fn new(down: Vec<Tensor<B, 4>>, mid: Tensor<B, 4>) -> Self {
        Self {
            down: down.into_iter().map(Some).collect(),
            mid: Some(mid),
        }
    }
}

/// The conditional denoising UNet of Stable Diffusion 1.x/2.x — and, with flat data layers
/// ([`DataLayerKind::Flat`]), the text UNet of Versatile Diffusion (`UNetFlatConditionModel`:
/// the same blocks on `[batch, C, 4, 1]` pseudo-images, samples `[batch, 768, 1, 1]`).
#[derive(Module, Debug)]
pub struct UNet2DConditionModel<B: Backend> {
    /// Input convolution (`LinearMultiDim` when flat).
    pub conv_in: DataProjection<B>,
    /// Time MLP.
    pub time_embedding: TimestepEmbedding<B>,
    /// Encoder levels.
    pub down_blocks: Vec<DownBlock2D<B>>,
    /// Bottleneck.
    pub mid_block: UNetMidBlock2DCrossAttn<B>,
    /// Decoder levels.
    pub up_blocks: Vec<UpBlock2D<B>>,
    /// Output GroupNorm.
    pub conv_norm_out: GroupNorm<B>,
    /// Output convolution (`LinearMultiDim` when flat).
    pub conv_out: DataProjection<B>,
    #[module(skip)]
    config: UNet2DConditionConfig,
}

impl<B: Backend> Pretrained<B> for UNet2DConditionModel<B> {
    type Config = UNet2DConditionConfig;
    const CLASS_NAME: &'static str = "UNet2DConditionModel";
    const SINGLE_FILE_PREFIXES: &'static [&'static str] = &["model.diffusion_model."];

    fn from_config(config: &UNet2DConditionConfig, device: &B::Device) -> Result<Self> {
        Self::new(config, device)
    }

    /// Takes diffusers or original LDM naming (detected from the keys).
    fn module_tensors(
        config: &UNet2DConditionConfig,
        source: &TensorSource,
    ) -> Result<TensorSource> {
        config.validate()?;
        let source = to_diffusers_names(source, WeightNaming::detect(source, &LDM_ROOTS), config)?;
        check_weights(config, &source, Self::CLASS_NAME)?;
        Ok(source)
    }
}

impl<B: Backend> UNet2DConditionModel<B> {
    /// Creates the model for `config` (weights are filled by loading).
    ///
    /// # Errors
    /// [`Error::Config`]/[`Error::Unsupported`] from [`UNet2DConditionConfig::validate`].
    pub fn new(config: &UNet2DConditionConfig, device: &B::Device) -> Result<Self> {
        config.validate()?;
        let blocks = BlockBuilder::new(config)?;
        let boc = &config.block_out_channels;
        let (conv_in, conv_out) = match config.data_layers {
            DataLayerKind::Conv2D => (
                DataProjection::Conv(conv2d_same(
                    config.in_channels,
                    boc[0],
                    config.conv_in_kernel,
                    device,
                )),
                DataProjection::Conv(conv2d_same(
                    boc[0],
                    config.out_channels,
                    config.conv_out_kernel,
                    device,
                )),
            ),
            DataLayerKind::Flat {
                sample_in,
                sample_out,
            } => (
                DataProjection::Flat(LinearMultiDim::new(sample_in, flat_shape(boc[0]), device)),
                DataProjection::Flat(LinearMultiDim::new(flat_shape(boc[0]), sample_out, device)),
            ),
        };
        Ok(Self {
            conv_in,
            time_embedding: blocks.time_embedding(device),
            down_blocks: blocks.down_blocks(device),
            mid_block: blocks.mid_block(device),
            up_blocks: blocks.up_blocks(device),
            conv_norm_out: GroupNormConfig::new(config.groups(), boc[0])
                .with_eps(config.norm_eps)
                .init(device),
            conv_out,
            config: config.clone(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &UNet2DConditionConfig {
        &self.config
    }

    /// The predicted noise (or v) for `sample` at `timestep`, attending to `context`.
    ///
    /// # Shapes
    /// `sample: [batch, in_channels, h, w]`, `timestep: [batch]` or `[1]`,
    /// `context: [batch, tokens, cross_attention_dim]` → `[batch, out_channels, h, w]`.
    ///
    /// # Errors
    /// [`Error::Shape`] when an input does not match the model.
    pub fn forward(
        &self,
        sample: Tensor<B, 4>,
        timestep: Tensor<B, 1>,
        context: Tensor<B, 3>,
    ) -> Result<Tensor<B, 4>> {
        self.forward_with_residuals(sample, timestep, context, &UNetResiduals::default())
    }

    /// [`forward`](Self::forward) with ControlNet-style residuals added to the skip
    /// connections and the mid block.
    pub fn forward_with_residuals(
        &self,
        sample: Tensor<B, 4>,
        timestep: Tensor<B, 1>,
        context: Tensor<B, 3>,
        residuals: &UNetResiduals<B>,
    ) -> Result<Tensor<B, 4>> {
        let width = context.dims()[2];
        let expected = self.config.levels()?.cross_attention_dim;
        if expected.iter().any(|d| *d != width) || context.dims()[0] != sample.dims()[0] {
            return Err(shape_error(
                "encoder_hidden_states",
                format!("[{}, tokens, {}]", sample.dims()[0], expected[0]),
                &context.dims(),
            ));
        }
        self.forward_with_context(sample, timestep, &ContextTokens(context), residuals)
    }

    /// The general forward: each cross-attention slot is run by `context` (see
    /// [`CrossAttentionContext`]), residuals are added as in
    /// [`forward_with_residuals`](Self::forward_with_residuals).
    ///
    /// # Shapes
    /// As [`forward`](Self::forward); a flat UNet takes and returns `[batch, *sample_in]` /
    /// `[batch, *sample_out]` (`[batch, 768, 1, 1]` for Versatile Diffusion).
    pub fn forward_with_context(
        &self,
        sample: Tensor<B, 4>,
        timestep: Tensor<B, 1>,
        context: &dyn CrossAttentionContext<B>,
        residuals: &UNetResiduals<B>,
    ) -> Result<Tensor<B, 4>> {
        let [batch, channels, h, w] = sample.dims();
        match self.config.data_layers {
            DataLayerKind::Conv2D if channels != self.config.in_channels => {
                return Err(shape_error(
                    "sample",
                    format!("[batch, {}, h, w]", self.config.in_channels),
                    &sample.dims(),
                ));
            }
            DataLayerKind::Flat { sample_in, .. } if [channels, h, w] != sample_in => {
                return Err(shape_error(
                    "sample",
                    format!(
                        "[batch, {}, {}, {}]",
                        sample_in[0], sample_in[1], sample_in[2]
                    ),
                    &sample.dims(),
                ));
            }
            _ => {}
        }
        let temb = self.time_embed(timestep, batch, sample.dtype())?;
        let sample = if self.config.center_input_sample {
            sample * 2.0 - 1.0
        } else {
            sample
        };

        let mut slots = AttentionSlots::new(context);
        let (mut h, mut skips) = run_down_blocks(
            &self.down_blocks,
            self.conv_in.forward(sample),
            &temb,
            &mut slots,
        );
        add_down_residuals(&mut skips, &residuals.down)?;

        h = self.mid_block.forward(h, &temb, &mut slots);
        if let Some(mid) = &residuals.mid {
            check_shape("mid_block_additional_residual", mid, &h)?;
            h = h + mid.clone();
        }

        for block in &self.up_blocks {
            let taken = block.resnets.len();
            let upsample_size = skips.len().checked_sub(taken + 1).map(|i| {
                let [_, _, sh, sw] = skips[i].dims();
                [sh, sw]
            });
            h = block.forward(h, &temb, &mut slots, &mut skips, upsample_size);
        }

        let h = self.conv_norm_out.forward_activated(h, self.config.act_fn);
        Ok(self.conv_out.forward(h))
    }

    /// The time embedding fed to every resnet, in `dtype`.
    ///
    /// # Errors
    /// [`Error::Shape`] when `timestep` has neither 1 nor `batch` entries.
    pub fn time_embed(
        &self,
        timestep: Tensor<B, 1>,
        batch: usize,
        dtype: burn::tensor::DType,
    ) -> Result<Tensor<B, 2>> {
        embed_time(&self.time_embedding, &self.config, timestep, batch, dtype)
    }

    /// The transformers of every cross-attention slot, in the order
    /// [`CrossAttentionContext`] numbers them.
    pub fn attention_slots(&self) -> Vec<&Transformer2DModel<B>> {
        let down = self.down_blocks.iter().flat_map(|b| &b.attentions);
        let mid = self.mid_block.attentions.iter();
        let up = self.up_blocks.iter().flat_map(|b| &b.attentions);
        down.chain(mid).chain(up).collect()
    }
}

fn add_down_residuals<B: Backend>(
    skips: &mut [Tensor<B, 4>],
    residuals: &[Option<Tensor<B, 4>>],
) -> Result<()> {
    if residuals.len() > skips.len() {
        return Err(Error::invalid_input(
            "down_block_additional_residuals",
            format!(
                "{} residuals for {} skip connections",
                residuals.len(),
                skips.len()
            ),
        ));
    }
    for (i, (skip, residual)) in skips.iter_mut().zip(residuals).enumerate() {
        if let Some(residual) = residual {
            check_shape(
                &format!("down_block_additional_residuals[{i}]"),
                residual,
                skip,
            )?;
            *skip = skip.clone() + residual.clone();
        }
    }
    Ok(())
}

fn check_shape<B: Backend>(
    what: &str,
    residual: &Tensor<B, 4>,
    target: &Tensor<B, 4>,
) -> Result<()> {
    if residual.dims() == target.dims() {
        Ok(())
    } else {
        Err(shape_error(
            what,
            format!("{:?}", target.dims()),
            &residual.dims(),
        ))
    }
}

/// An [`Error::Shape`] for the input `key`, without origin: `found` where `expected` was
/// needed.
pub fn shape_error(key: &str, expected: String, found: &[usize]) -> Error {
    Error::Shape {
        origin: None,
        key: key.into(),
        expected,
        found: found.to_vec(),
    }
}
