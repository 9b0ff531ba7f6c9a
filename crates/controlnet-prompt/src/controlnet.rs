//! `ControlNetModel` (diffusers `models/controlnets/controlnet.py`; the `ControlNet` of
//! lllyasviel's `cldm/cldm.py`).
//!
//! A trainable copy of the UNet's encoder and mid block: `conv_in(sample)` plus the hint
//! embedding runs through the encoder; every skip connection and the mid-block output pass a
//! 1×1 "zero convolution" and become residuals for the UNet's skips
//! ([`UNetResiduals`], consumed by `UNet2DConditionModel::forward_with_residuals`).
//! The blocks are the UNet crate's, built by its [`BlockBuilder`].

use burn::nn::conv::Conv2d;
use burn::prelude::*;
use prompt_diffusion_core::Result;
use prompt_diffusion_core::nn::conv2d;
use prompt_diffusion_core::weights::{Pretrained, TensorSource, WeightNaming};
use prompt_diffusion_unet::embeddings::TimestepEmbedding;
use prompt_diffusion_unet::unet_2d_blocks::{
    AttentionSlots, BlockBuilder, DownBlock2D, UNetMidBlock2DCrossAttn, conv2d_same as conv,
    embed_time, run_down_blocks,
};
use prompt_diffusion_unet::{ContextTokens, CrossAttentionContext, UNetResiduals, shape_error};

use crate::conditioning_embedding::ControlNetConditioningEmbedding;
use crate::config::{ChannelOrder, ControlNetConfig};
use crate::scales::ControlScales;
use crate::weights::{
    HintEncoders, ORIGINAL_ROOTS, check_weights, controlnet_tensors, to_diffusers_names,
};

/// A ControlNet: the UNet encoder copy, its hint encoder and the zero convolutions.
#[derive(Module, Debug)]
pub struct ControlNetModel<B: Backend> {
    /// Input convolution of the latent.
    pub conv_in: Conv2d<B>,
    /// Time MLP.
    pub time_embedding: TimestepEmbedding<B>,
    /// The hint encoder.
    pub controlnet_cond_embedding: ControlNetConditioningEmbedding<B>,
    /// Encoder levels (the UNet's `down_blocks`).
    pub down_blocks: Vec<DownBlock2D<B>>,
    /// One 1×1 convolution per skip connection.
    pub controlnet_down_blocks: Vec<Conv2d<B>>,
    /// Bottleneck (the UNet's `mid_block`).
    pub mid_block: UNetMidBlock2DCrossAttn<B>,
    /// 1×1 convolution of the mid-block output.
    pub controlnet_mid_block: Conv2d<B>,
    #[module(skip)]
    config: ControlNetConfig,
}

impl<B: Backend> Pretrained<B> for ControlNetModel<B> {
    type Config = ControlNetConfig;
    const CLASS_NAME: &'static str = "ControlNetModel";
    const SINGLE_FILE_PREFIXES: &'static [&'static str] = &["control_model."];

    fn from_config(config: &ControlNetConfig, device: &B::Device) -> Result<Self> {
        Self::new(config, device)
    }

    /// Takes diffusers or original naming (detected from the keys). Of an original single file
    /// such as lllyasviel's `control_sd15_*.pth` the tensors under `control_model.` are taken
    /// with the prefix removed and the rest is ignored.
    fn module_tensors(config: &ControlNetConfig, source: &TensorSource) -> Result<TensorSource> {
        diffusers_source(config, source, HintEncoders::Single, Self::CLASS_NAME)
    }
}

impl<B: Backend> ControlNetModel<B> {
    /// Creates the model for `config` (weights are filled by loading).
    ///
    /// # Errors
    /// [`Error::Config`](prompt_diffusion_core::Error::Config) or
    /// [`Error::Unsupported`](prompt_diffusion_core::Error::Unsupported) from
    /// [`ControlNetConfig::validate`].
    pub fn new(config: &ControlNetConfig, device: &B::Device) -> Result<Self> {
        config.validate()?;
        let unet = config.to_unet_config();
        let blocks = BlockBuilder::new(&unet)?;
        let boc = &config.block_out_channels;
        let last = boc[boc.len() - 1];
        Ok(Self {
            conv_in: conv(config.in_channels, boc[0], 3, device),
            time_embedding: blocks.time_embedding(device),
            controlnet_cond_embedding: ControlNetConditioningEmbedding::new(
                config.conditioning_channels,
                config.hint_channels()?,
                boc[0],
                device,
            ),
            down_blocks: blocks.down_blocks(device),
            controlnet_down_blocks: config
                .skip_channels()
                .into_iter()
                .map(|c| conv(c, c, 1, device))
                .collect(),
            mid_block: blocks.mid_block(device),
            controlnet_mid_block: conv(last, last, 1, device),
            config: config.clone(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ControlNetConfig {
        &self.config
    }

    /// The residuals for the UNet: `sample` at `timestep`, attending to `context`, guided by
    /// `hint`, scaled by `scales`.
    ///
    /// # Shapes
    /// `sample: [batch, in_channels, h, w]`, `timestep: [batch]` or `[1]`,
    /// `context: [batch, tokens, cross_attention_dim]`,
    /// `hint: [batch, conditioning_channels, f·h, f·w]` with `f` =
    /// [`ControlNetConfig::hint_downscale_factor`] (8 for SD) → one down residual per UNet skip
    /// connection (12 for SD, shaped as the skips) and the mid residual.
    ///
    /// # Errors
    /// [`Error::Shape`](prompt_diffusion_core::Error::Shape) when an input does not match the
    /// model or the others.
    pub fn forward(
        &self,
        sample: Tensor<B, 4>,
        timestep: Tensor<B, 1>,
        context: Tensor<B, 3>,
        hint: Tensor<B, 4>,
        scales: &ControlScales,
    ) -> Result<UNetResiduals<B>> {
        self.check_context(&sample, &context)?;
        self.forward_with_context(sample, timestep, &ContextTokens(context), hint, scales)
    }

    /// [`forward`](Self::forward) with each cross-attention slot run by `context` (slots are
    /// numbered from 0 within the ControlNet).
    pub fn forward_with_context(
        &self,
        sample: Tensor<B, 4>,
        timestep: Tensor<B, 1>,
        context: &dyn CrossAttentionContext<B>,
        hint: Tensor<B, 4>,
        scales: &ControlScales,
    ) -> Result<UNetResiduals<B>> {
        self.check_sample(&sample)?;
        let embedding = self.embed_hint(hint, &sample)?;
        self.run(sample, timestep, context, vec![embedding], scales)
    }

    /// The hint embedding, after checking the hint against `sample` (and casting it to the
    /// latent's dtype).
    ///
    /// # Shapes
    /// `hint: [batch, conditioning_channels, f·h, f·w]` → `[batch, block_out_channels[0], h, w]`.
    pub(crate) fn embed_hint(
        &self,
        hint: Tensor<B, 4>,
        sample: &Tensor<B, 4>,
    ) -> Result<Tensor<B, 4>> {
        check_hint(
            "controlnet_cond",
            &hint,
            self.config.conditioning_channels,
            sample,
            self.config.hint_downscale_factor(),
        )?;
        let hint = hint.cast(sample.dtype());
        let hint = match self.config.controlnet_conditioning_channel_order {
            ChannelOrder::Rgb => hint,
            ChannelOrder::Bgr => hint.flip([1]),
        };
        Ok(self.controlnet_cond_embedding.forward(hint))
    }

    /// Checks the latent against the model.
    pub(crate) fn check_sample(&self, sample: &Tensor<B, 4>) -> Result<()> {
        let [batch, channels, h, w] = sample.dims();
        if channels != self.config.in_channels || batch == 0 || h == 0 || w == 0 {
            return Err(shape_error(
                "sample",
                format!("[batch, {}, h, w]", self.config.in_channels),
                &sample.dims(),
            ));
        }
        Ok(())
    }

    /// Checks the text context against the model and the latent.
    pub(crate) fn check_context(
        &self,
        sample: &Tensor<B, 4>,
        context: &Tensor<B, 3>,
    ) -> Result<()> {
        let [batch, _, width] = context.dims();
        if batch != sample.dims()[0] || width != self.config.context_width() {
            return Err(shape_error(
                "encoder_hidden_states",
                format!(
                    "[{}, tokens, {}]",
                    sample.dims()[0],
                    self.config.context_width()
                ),
                &context.dims(),
            ));
        }
        Ok(())
    }

    /// The encoder from `conv_in` on: `conv_in(sample) + Σ embeddings`, the down and mid
    /// blocks, the zero convolutions and the scaling.
    pub(crate) fn run(
        &self,
        sample: Tensor<B, 4>,
        timestep: Tensor<B, 1>,
        context: &dyn CrossAttentionContext<B>,
        embeddings: Vec<Tensor<B, 4>>,
        scales: &ControlScales,
    ) -> Result<UNetResiduals<B>> {
        let [batch, _, _, _] = sample.dims();
        let temb = embed_time(
            &self.time_embedding,
            &self.config,
            timestep,
            batch,
            sample.dtype(),
        )?;
        let n = self.controlnet_down_blocks.len() + 1;
        let scales = match scales {
            // diffusers applies guess-mode scaling only without global pooling.
            ControlScales::GuessMode(s) | ControlScales::LdmGuessMode(s)
                if self.config.global_pool_conditions =>
            {
                ControlScales::Uniform(*s).resolve(n)?
            }
            other => other.resolve(n)?,
        };

        let h = embeddings
            .into_iter()
            .fold(conv2d(&self.conv_in, sample), |h, e| h + e);
        let mut slots = AttentionSlots::new(context);
        let (h, skips) = run_down_blocks(&self.down_blocks, h, &temb, &mut slots);
        let h = self.mid_block.forward(h, &temb, &mut slots);

        let pool = self.config.global_pool_conditions;
        let finish = |r: Tensor<B, 4>, scale: f32| {
            let r = r * scale;
            if pool {
                let dims = r.dims();
                r.mean_dim(3).mean_dim(2).expand(dims)
            } else {
                r
            }
        };
        let down = skips
            .into_iter()
            .zip(&self.controlnet_down_blocks)
            .zip(&scales)
            .map(|((skip, zero_conv), &s)| Some(finish(conv2d(zero_conv, skip), s)))
            .collect();
        let mid = finish(conv2d(&self.controlnet_mid_block, h), scales[n - 1]);
        Ok(UNetResiduals {
            down,
            mid: Some(mid),
        })
    }
}

/// The ControlNet tensors of `source` (a `control_model.` prefix removed) in diffusers' naming,
/// after checking `config` and the tensors' shapes against it (`module` names the model in a
/// report).
pub(crate) fn diffusers_source(
    config: &ControlNetConfig,
    source: &TensorSource,
    hints: HintEncoders,
    module: &str,
) -> Result<TensorSource> {
    config.validate()?;
    let source = controlnet_tensors(source);
    let naming = WeightNaming::detect(&source, &ORIGINAL_ROOTS);
    let source = to_diffusers_names(&source, naming, config, hints)?;
    check_weights(config, &source, module)?;
    Ok(source)
}

/// Checks a hint image against the latent: same batch, `channels` channels, `factor` times
/// the latent's height and width.
pub(crate) fn check_hint<B: Backend>(
    what: &str,
    hint: &Tensor<B, 4>,
    channels: usize,
    sample: &Tensor<B, 4>,
    factor: usize,
) -> Result<()> {
    let [batch, _, h, w] = sample.dims();
    let expected = [
        batch,
        channels,
        h.saturating_mul(factor),
        w.saturating_mul(factor),
    ];
    if hint.dims() == expected {
        Ok(())
    } else {
        Err(shape_error(
            what,
            format!(
                "{expected:?} (the latent's batch, {channels} channels, {factor}× the latent's {h}×{w})"
            ),
            &hint.dims(),
        ))
    }
}
