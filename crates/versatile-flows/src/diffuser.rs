//! [`VersatileDiffuser`]: Versatile Diffusion's multi-flow diffuser.
//!
//! The layer groups of the official `VD_v2_0` map onto two [`UNet2DConditionModel`]s — the
//! diffusers `image_unet` (global time embedding, image data layers, image-context attentions)
//! and the flat `text_unet` (text data layers, text-context attentions) — and, when a modality's
//! data layers are not needed, its attentions alone ([`ContextLayers`]). A flow runs the data
//! UNet of its output modality with each cross-attention slot swapped for the condition
//! modality's layer (or a mix of both), through the UNet's [`CrossAttentionContext`] hook: the
//! same loaded weights serve every flow.
//!
//! The global layer: the official model has one time embedding (`global_layer_ptr: image`);
//! diffusers stores a copy in each UNet. With both UNets loaded the text UNet uses the image
//! UNet's tensors (shared, not copied).

use burn::prelude::*;
use burn::tensor::DType;
use prompt_diffusion_core::denoiser::{Denoiser, timestep_tensor};
use prompt_diffusion_core::{Error, Result};
use prompt_diffusion_unet::{Transformer2DModel, UNet2DConditionModel, UNetResiduals};

use crate::context_layers::ContextLayers;
use crate::flow::{Flow, LayerGroups, Modality};
use crate::mixing::{MixedContext, SlotContext};
use crate::params::{ParamCounter, ParamStats, param_ids};

/// One condition of a flow.
#[derive(Debug, Clone)]
pub struct Condition<B: Backend> {
    /// Which context layers attend to it.
    pub modality: Modality,
    /// The context tokens, `[batch, tokens, cross_attention_dim]` (77 text or 257 image tokens).
    pub tokens: Tensor<B, 3>,
    /// Mixing weight when there are several conditions (normalised over them).
    pub ratio: f64,
}

impl<B: Backend> Condition<B> {
    /// A condition with weight 1.
    pub fn new(modality: Modality, tokens: Tensor<B, 3>) -> Self {
        Self {
            modality,
            tokens,
            ratio: 1.0,
        }
    }

    prompt_diffusion_core::setters! {
        /// Sets the mixing weight.
        with_ratio(ratio: f64);
    }
}

/// The multi-flow diffuser: data layers per output modality, context layers per condition
/// modality, one global time embedding.
#[derive(Module, Debug)]
pub struct VersatileDiffuser<B: Backend> {
    /// Global time embedding, image data layers and image-context attentions.
    pub image_unet: Option<UNet2DConditionModel<B>>,
    /// Text data layers (flat) and text-context attentions.
    pub text_unet: Option<UNet2DConditionModel<B>>,
    /// Image-context attentions held without the image data layers.
    pub image_context: Option<ContextLayers<B>>,
    /// Text-context attentions held without the text data layers.
    pub text_context: Option<ContextLayers<B>>,
}

impl<B: Backend> VersatileDiffuser<B> {
    /// Assembles the diffuser from loaded parts. A modality's standalone context layers are
    /// dropped when its UNet is given (the UNet's own attentions are those layers). With both
    /// UNets the text UNet's time embedding is replaced by the image UNet's (the one global layer).
    ///
    /// # Errors
    /// [`Error::Config`] when the parts' attention slots differ in number or width, or when a
    /// UNet has the wrong kind of data layers.
    pub fn new(
        image_unet: Option<UNet2DConditionModel<B>>,
        mut text_unet: Option<UNet2DConditionModel<B>>,
        image_context: Option<ContextLayers<B>>,
        text_context: Option<ContextLayers<B>>,
    ) -> Result<Self> {
        use prompt_diffusion_unet::DataLayerKind;
        if let Some(unet) = &image_unet
            && unet.config().data_layers != DataLayerKind::Conv2D
        {
            return Err(Error::config(
                "image_unet",
                "must have convolutional data layers",
            ));
        }
        if let Some(unet) = &text_unet
            && unet.config().data_layers == DataLayerKind::Conv2D
        {
            return Err(Error::config(
                "text_unet",
                "must have flat data layers (a UNetFlatConditionModel config)",
            ));
        }
        if let (Some(image), Some(text)) = (&image_unet, &mut text_unet) {
            text.time_embedding = image.time_embedding.clone();
        }
        let diffuser = Self {
            image_context: if image_unet.is_some() {
                None
            } else {
                image_context
            },
            text_context: if text_unet.is_some() {
                None
            } else {
                text_context
            },
            image_unet,
            text_unet,
        };
        diffuser.check_slots()?;
        Ok(diffuser)
    }

    /// The UNet whose data layers generate `modality`, if loaded.
    pub fn data_unet(&self, modality: Modality) -> Option<&UNet2DConditionModel<B>> {
        match modality {
            Modality::Image => self.image_unet.as_ref(),
            Modality::Text => self.text_unet.as_ref(),
        }
    }

    /// The context layers of `modality`, one per slot, if loaded.
    pub fn context_slots(&self, modality: Modality) -> Option<Vec<&Transformer2DModel<B>>> {
        let (unet, standalone) = match modality {
            Modality::Image => (&self.image_unet, &self.image_context),
            Modality::Text => (&self.text_unet, &self.text_context),
        };
        match (unet, standalone) {
            (Some(unet), _) => Some(unet.attention_slots()),
            (None, Some(layers)) => Some(layers.transformers()),
            (None, None) => None,
        }
    }

    /// The layer groups that are loaded.
    pub fn layer_groups(&self) -> LayerGroups {
        LayerGroups {
            image_data: self.image_unet.is_some(),
            text_data: self.text_unet.is_some(),
            image_context: self.context_slots(Modality::Image).is_some(),
            text_context: self.context_slots(Modality::Text).is_some(),
        }
    }

    /// Whether every layer `flow` runs is loaded.
    pub fn supports(&self, flow: Flow) -> bool {
        let groups = self.layer_groups();
        groups.data(flow.output()) && flow.conditions().iter().all(|&c| groups.context(c))
    }

    /// The predicted noise of the data UNet of `output` with every cross-attention slot running
    /// the context layers of each condition (mixed by their ratios when there are several).
    ///
    /// # Shapes
    /// `sample: [batch, 4, h, w]` (image) or `[batch, 768, 1, 1]` (text), `timestep: [batch]` or
    /// `[1]`, each condition `[batch, tokens, cross_attention_dim]` → the shape of `sample`.
    ///
    /// # Errors
    /// [`Error::Unsupported`] when a needed layer group is not loaded, [`Error::Shape`] when a
    /// condition does not fit the sample or the layers.
    pub fn forward(
        &self,
        sample: Tensor<B, 4>,
        timestep: Tensor<B, 1>,
        output: Modality,
        conditions: &[Condition<B>],
    ) -> Result<Tensor<B, 4>> {
        let unet = self.require_data(output)?;
        let width = unet.attention_slots().first().map(|t| cross_width(t));
        let batch = sample.dims()[0];
        let mut contexts = Vec::with_capacity(conditions.len());
        for condition in conditions {
            let [b, _, w] = condition.tokens.dims();
            if b != batch || width.is_some_and(|width| width != w) {
                return Err(Error::Shape {
                    origin: None,
                    key: format!("{} context", condition.modality),
                    expected: format!("[{batch}, tokens, {}]", width.unwrap_or(w)),
                    found: condition.tokens.dims().to_vec(),
                });
            }
            contexts.push(SlotContext {
                transformers: self.require_context(condition.modality)?,
                tokens: condition.tokens.clone(),
                ratio: condition.ratio,
            });
        }
        let context = MixedContext::new(contexts, unet.attention_slots().len())?;
        unet.forward_with_context(sample, timestep, &context, &UNetResiduals::default())
    }

    /// Parameters held by the diffuser, each shared tensor once.
    pub fn parameters(&self) -> ParamStats {
        ParamCounter::new().count(self).stats()
    }

    /// Parameters one flow runs: the global layer and the output's data layers, plus the
    /// context layers of each condition.
    ///
    /// # Errors
    /// [`Error::Unsupported`] when the flow's layers are not loaded.
    pub fn flow_parameters(&self, flow: Flow) -> Result<ParamStats> {
        let unet = self.require_data(flow.output())?;
        let own_attention = unet
            .attention_slots()
            .into_iter()
            .flat_map(|t| param_ids(t))
            .collect::<Vec<_>>();
        let mut counter = ParamCounter::excluding(own_attention);
        counter.count(unet);
        let mut stats = counter.stats();
        let mut contexts = ParamCounter::new();
        for &condition in flow.conditions() {
            for transformer in self.require_context(condition)? {
                contexts.count(transformer);
            }
        }
        stats = stats + contexts.stats();
        Ok(stats)
    }

    /// The denoiser of the flows that generate `output` (conditioned on their
    /// [`Condition`]s).
    ///
    /// # Errors
    /// [`Error::Unsupported`] when `output`'s data layers are not loaded.
    pub fn denoiser(&self, output: Modality) -> Result<FlowDenoiser<'_, B>> {
        let dtype = self.require_data(output)?.conv_in.dtype();
        Ok(FlowDenoiser {
            diffuser: self,
            output,
            dtype,
        })
    }

    fn require_data(&self, modality: Modality) -> Result<&UNet2DConditionModel<B>> {
        self.data_unet(modality).ok_or_else(|| {
            Error::Unsupported(format!(
                "the {modality} data layers are not loaded (load the `{modality}_unet` for flows that generate {modality})"
            ))
        })
    }

    fn require_context(&self, modality: Modality) -> Result<Vec<&Transformer2DModel<B>>> {
        self.context_slots(modality).ok_or_else(|| {
            Error::Unsupported(format!(
                "the {modality}-context layers are not loaded (needed by flows conditioned on {modality})"
            ))
        })
    }

    /// Every loaded set of slots must match every other in number and width, so any context
    /// set runs inside either data set.
    fn check_slots(&self) -> Result<()> {
        let sets: Vec<(Modality, Vec<&Transformer2DModel<B>>)> = [Modality::Image, Modality::Text]
            .into_iter()
            .filter_map(|m| self.context_slots(m).map(|s| (m, s)))
            .collect();
        let shape = |slots: &[&Transformer2DModel<B>]| -> Vec<(usize, usize)> {
            slots
                .iter()
                .map(|t| (t.norm.weight.dims()[0], cross_width(t)))
                .collect()
        };
        if let [(_, a), (_, b)] = sets.as_slice()
            && shape(a) != shape(b)
        {
            return Err(Error::config(
                "text_unet",
                format!(
                    "the image and text attention slots differ (channels, context width): {:?} vs {:?}",
                    shape(a),
                    shape(b)
                ),
            ));
        }
        Ok(())
    }
}

/// The context width a transformer's cross-attention expects.
fn cross_width<B: Backend>(transformer: &Transformer2DModel<B>) -> usize {
    transformer
        .transformer_blocks
        .first()
        .map(|block| block.attn2.to_k.weight.lazy_shape().dims::<2>()[0])
        .unwrap_or(0)
}

/// The diffuser generating one modality, as a [`Denoiser`] conditioned on a flow's
/// [`Condition`]s ([`VersatileDiffuser::denoiser`]).
#[derive(Debug, Clone, Copy)]
pub struct FlowDenoiser<'a, B: Backend> {
    diffuser: &'a VersatileDiffuser<B>,
    output: Modality,
    dtype: DType,
}

impl<B: Backend> Denoiser<B> for FlowDenoiser<'_, B> {
    type Conditioning = Vec<Condition<B>>;

    fn predict(
        &self,
        latents: Tensor<B, 4>,
        timestep: f64,
        conditions: &Vec<Condition<B>>,
    ) -> Result<Tensor<B, 4>> {
        let timestep = timestep_tensor(timestep, &latents.device());
        let latents = latents.cast(self.dtype);
        self.diffuser
            .forward(latents, timestep, self.output, conditions)
    }

    fn dtype(&self) -> DType {
        self.dtype
    }
}
