//! The CLIP vision tower: `CLIPVisionModel` and `CLIPVisionModelWithProjection`.
//!
//! Ports `CLIPVisionEmbeddings`, `CLIPVisionModel` and `CLIPVisionModelWithProjection` from
//! `transformers/models/clip/modeling_clip.py` (v5): patches from a stride-`patch_size`
//! convolution (no bias), a learned class token in front, position embeddings,
//! `pre_layrnorm` (sic), the encoder without mask; the pooled output is the class token after
//! `post_layernorm`, and `visual_projection` (no bias) maps it to `image_embeds`.
//! Position-embedding interpolation for other image sizes is not supported.
//!
//! Parameter paths are the released keys: `vision_model.embeddings.{class_embedding,
//! patch_embedding.weight, position_embedding.weight}`, `vision_model.pre_layrnorm.…`,
//! `vision_model.encoder.layers.{i}.…`, `vision_model.post_layernorm.…`,
//! `visual_projection.weight`.

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::prelude::*;
use prompt_diffusion_core::Result;
use prompt_diffusion_core::nn::{LayerNorm, LayerNormConfig, conv2d};
use prompt_diffusion_core::weights::{LoadOptions, TensorSource};

use crate::CLIPImageProcessor;
use crate::config::CLIPVisionConfig;
use crate::encoder::CLIPEncoder;
use crate::tower::{self, TowerConfig};

/// Patch, class and position embeddings (`CLIPVisionEmbeddings`).
#[derive(Module, Debug)]
pub struct CLIPVisionEmbeddings<B: Backend> {
    /// The class token, `[D]`.
    pub class_embedding: Param<Tensor<B, 1>>,
    /// `[D, channels, patch, patch]`, stride `patch`, no bias.
    pub patch_embedding: Conv2d<B>,
    /// `[1 + patches, D]`.
    pub position_embedding: Embedding<B>,
}

impl<B: Backend> CLIPVisionEmbeddings<B> {
    /// # Shapes
    /// `[batch, channels, image_size, image_size]` → `[batch, 1 + patches, D]`.
    pub fn forward(&self, pixel_values: Tensor<B, 4>) -> Tensor<B, 3> {
        let patches = conv2d(&self.patch_embedding, pixel_values);
        let [batch, width, gh, gw] = patches.dims();
        let patches = patches.reshape([batch, width, gh * gw]).swap_dims(1, 2);
        let class = self
            .class_embedding
            .val()
            .reshape([1, 1, width])
            .repeat_dim(0, batch);
        let tokens = Tensor::cat(vec![class, patches], 1);
        tokens + self.position_embedding.weight.val().unsqueeze::<3>()
    }
}

/// The vision transformer (the `vision_model` of the released checkpoints).
#[derive(Module, Debug)]
pub struct CLIPVisionTransformer<B: Backend> {
    /// Patch, class and position embeddings.
    pub embeddings: CLIPVisionEmbeddings<B>,
    /// Norm applied to the embeddings (the checkpoint really spells it `pre_layrnorm`).
    pub pre_layrnorm: LayerNorm<B>,
    /// The encoder (no mask).
    pub encoder: CLIPEncoder<B>,
    /// Norm applied to the pooled class token (Versatile Diffusion applies it to every token).
    pub post_layernorm: LayerNorm<B>,
    image_size: usize,
    num_channels: usize,
}

/// Outputs of the vision tower.
#[derive(Debug, Clone)]
pub struct CLIPVisionOutput<B: Backend> {
    /// The encoder output, `[batch, 1 + patches, D]`, **before** `post_layernorm`.
    pub last_hidden_state: Tensor<B, 3>,
    /// `post_layernorm` of the class token, `[batch, D]`.
    pub pooled_output: Tensor<B, 2>,
    /// With `forward_with_hidden_states`: the embeddings after `pre_layrnorm`, then each
    /// layer's output (`hidden_states[num_hidden_layers] == last_hidden_state`),
    /// `num_hidden_layers + 1` tensors `[batch, 1 + patches, D]`.
    pub hidden_states: Option<Vec<Tensor<B, 3>>>,
}

impl<B: Backend> CLIPVisionTransformer<B> {
    /// Creates the transformer for `config` (placeholder parameters until weights are loaded).
    pub fn init(config: &CLIPVisionConfig, device: &B::Device) -> Self {
        let d = config.hidden_size;
        let p = config.patch_size;
        Self {
            embeddings: CLIPVisionEmbeddings {
                class_embedding: Param::from_tensor(Tensor::zeros([d], device)),
                patch_embedding: Conv2dConfig::new([config.num_channels, d], [p, p])
                    .with_stride([p, p])
                    .with_bias(false)
                    .init(device),
                position_embedding: EmbeddingConfig::new(config.num_positions(), d).init(device),
            },
            pre_layrnorm: LayerNormConfig::new(d)
                .with_eps(config.layer_norm_eps)
                .init(device),
            encoder: config.encoder().init(device),
            post_layernorm: LayerNormConfig::new(d)
                .with_eps(config.layer_norm_eps)
                .init(device),
            image_size: config.image_size,
            num_channels: config.num_channels,
        }
    }

    /// Encodes normalised pixels (see [`clip_image_preprocess`](crate::clip_image_preprocess)).
    ///
    /// # Shapes
    /// `[batch, channels, image_size, image_size]` → `last_hidden_state
    /// [batch, 1 + patches, D]`, `pooled_output [batch, D]`.
    ///
    /// # Panics
    /// When the input is not `[_, num_channels, image_size, image_size]`; check it first with
    /// [`check_pixel_values`](Self::check_pixel_values).
    pub fn forward(&self, pixel_values: Tensor<B, 4>) -> CLIPVisionOutput<B> {
        self.run(pixel_values, false)
    }

    /// [`forward`](Self::forward) that also returns every hidden state.
    pub fn forward_with_hidden_states(&self, pixel_values: Tensor<B, 4>) -> CLIPVisionOutput<B> {
        self.run(pixel_values, true)
    }

    /// Checks that an input shape fits the model.
    ///
    /// # Errors
    /// [`Error::InvalidInput`](prompt_diffusion_core::Error::InvalidInput) naming the expected
    /// shape.
    pub fn check_pixel_values(&self, dims: [usize; 4]) -> Result<()> {
        let [_, c, h, w] = dims;
        if c != self.num_channels || h != self.image_size || w != self.image_size {
            return Err(prompt_diffusion_core::Error::invalid_input(
                "pixel_values",
                format!(
                    "shape {dims:?}, expected [batch, {}, {}, {}]",
                    self.num_channels, self.image_size, self.image_size
                ),
            ));
        }
        Ok(())
    }

    /// The processor that makes this tower's input from images (its `image_size`).
    pub fn image_processor(&self) -> CLIPImageProcessor {
        CLIPImageProcessor::new(self.image_size)
    }

    fn run(&self, pixel_values: Tensor<B, 4>, keep: bool) -> CLIPVisionOutput<B> {
        let h = self
            .pre_layrnorm
            .forward(self.embeddings.forward(pixel_values));
        let (last_hidden_state, hidden_states) = self.encoder.forward(h, false, keep);
        let [batch, _, width] = last_hidden_state.dims();
        let class = last_hidden_state
            .clone()
            .slice([0..batch, 0..1])
            .reshape([batch, width]);
        CLIPVisionOutput {
            pooled_output: self.post_layernorm.forward(class),
            last_hidden_state,
            hidden_states,
        }
    }
}

/// `CLIPVisionModel`: the vision transformer alone (Diff-Plugin's image encoder).
#[derive(Module, Debug)]
pub struct CLIPVisionModel<B: Backend> {
    /// The transformer (`vision_model.*` keys).
    pub vision_model: CLIPVisionTransformer<B>,
}

impl<B: Backend> CLIPVisionModel<B> {
    /// Creates the model for `config` (placeholder parameters until weights are loaded).
    pub fn init(config: &CLIPVisionConfig, device: &B::Device) -> Self {
        Self {
            vision_model: CLIPVisionTransformer::init(config, device),
        }
    }

    /// See [`CLIPVisionTransformer::forward`].
    ///
    /// # Shapes
    /// `[batch, channels, size, size]` → `last_hidden_state [batch, 1 + patches, D]`,
    /// `pooled_output [batch, D]`.
    pub fn forward(&self, pixel_values: Tensor<B, 4>) -> CLIPVisionOutput<B> {
        self.vision_model.forward(pixel_values)
    }

    /// See [`CLIPVisionTransformer::forward_with_hidden_states`].
    pub fn forward_with_hidden_states(&self, pixel_values: Tensor<B, 4>) -> CLIPVisionOutput<B> {
        self.vision_model.forward_with_hidden_states(pixel_values)
    }

    /// See [`CLIPVisionTransformer::image_processor`].
    pub fn image_processor(&self) -> CLIPImageProcessor {
        self.vision_model.image_processor()
    }
}

tower::loaders! {
    CLIPVisionModel, CLIPVisionConfig, projection: false, prefixes: &[],
    ignore: [r"^visual_projection\."],
    /// As [`CLIPVisionModelWithProjection::from_pretrained`]; a `visual_projection` in the file is
    /// ignored.
    fn from_pretrained;
    /// As [`CLIPVisionModelWithProjection`]'s, without the projection.
    fn module_tensors;
}

/// Outputs of [`CLIPVisionModelWithProjection`].
#[derive(Debug, Clone)]
pub struct CLIPVisionProjectionOutput<B: Backend> {
    /// `visual_projection(pooled_output)`, `[batch, projection_dim]`.
    pub image_embeds: Tensor<B, 2>,
    /// `[batch, 1 + patches, D]`, see [`CLIPVisionOutput::last_hidden_state`].
    pub last_hidden_state: Tensor<B, 3>,
    /// `[batch, D]`, see [`CLIPVisionOutput::pooled_output`].
    pub pooled_output: Tensor<B, 2>,
    /// See [`CLIPVisionOutput::hidden_states`].
    pub hidden_states: Option<Vec<Tensor<B, 3>>>,
}

/// `CLIPVisionModelWithProjection`: the vision transformer and `visual_projection` (no bias),
/// Versatile Diffusion's image context encoder.
#[derive(Module, Debug)]
pub struct CLIPVisionModelWithProjection<B: Backend> {
    /// The transformer (`vision_model.*` keys).
    pub vision_model: CLIPVisionTransformer<B>,
    /// `[D → projection_dim]`, no bias.
    pub visual_projection: Linear<B>,
}

impl<B: Backend> CLIPVisionModelWithProjection<B> {
    /// Creates the model for `config` (placeholder parameters until weights are loaded).
    pub fn init(config: &CLIPVisionConfig, device: &B::Device) -> Self {
        Self {
            vision_model: CLIPVisionTransformer::init(config, device),
            visual_projection: LinearConfig::new(config.hidden_size, config.projection_dim)
                .with_bias(false)
                .init(device),
        }
    }

    /// Encodes normalised pixels and projects the pooled class token.
    ///
    /// # Shapes
    /// `[batch, channels, size, size]` → `image_embeds [batch, P]`, `last_hidden_state
    /// [batch, 1 + patches, D]`, `pooled_output [batch, D]`.
    ///
    /// # Panics
    /// See [`CLIPVisionTransformer::forward`].
    pub fn forward(&self, pixel_values: Tensor<B, 4>) -> CLIPVisionProjectionOutput<B> {
        self.project(self.vision_model.forward(pixel_values))
    }

    /// [`forward`](Self::forward) that also returns every hidden state.
    pub fn forward_with_hidden_states(
        &self,
        pixel_values: Tensor<B, 4>,
    ) -> CLIPVisionProjectionOutput<B> {
        self.project(self.vision_model.forward_with_hidden_states(pixel_values))
    }

    /// See [`CLIPVisionTransformer::image_processor`].
    pub fn image_processor(&self) -> CLIPImageProcessor {
        self.vision_model.image_processor()
    }

    fn project(&self, out: CLIPVisionOutput<B>) -> CLIPVisionProjectionOutput<B> {
        CLIPVisionProjectionOutput {
            image_embeds: self.visual_projection.forward(out.pooled_output.clone()),
            last_hidden_state: out.last_hidden_state,
            pooled_output: out.pooled_output,
            hidden_states: out.hidden_states,
        }
    }
}

tower::loaders! {
    CLIPVisionModelWithProjection, CLIPVisionConfig, projection: true, prefixes: &[],
    ignore: [],
    /// Loads a transformers folder (`config.json` + weights, e.g. a diffusers
    /// `image_encoder/`); the weight-file variant comes from `options.variant`. A folder holding
    /// a full `CLIPModel` loads its vision tower.
    ///
    /// # Errors
    /// [`Error::Io`](prompt_diffusion_core::Error::Io) /
    /// [`Error::Config`](prompt_diffusion_core::Error::Config) for the config,
    /// [`Error::Weights`](prompt_diffusion_core::Error::Weights) listing missing, unexpected
    /// and mis-shaped tensors.
    fn from_pretrained;
    /// Takes weights named as in transformers (`vision_model.*` + `visual_projection.weight`;
    /// the `vision_model.` level may be absent).
    fn module_tensors;
}
