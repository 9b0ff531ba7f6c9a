//! The context encoders with Versatile Diffusion's normalisation (official `clip.py`
//! `CLIPTextContextEncoder`/`CLIPImageContextEncoder`; diffusers' `normalize_embeddings`).
//!
//! * text: `text_projection(last_hidden_state) / ‖text_projection(pooled)‖` — every token is
//!   divided by the norm of the projected pooled (end-of-text) token, which gets unit norm;
//! * image: `visual_projection(post_layernorm(hidden_states)) / ‖token 0‖` — `post_layernorm`
//!   is applied to all 257 tokens and the class token gets unit norm.

use prompt_diffusion_core::weights::Pretrained;
use std::path::Path;

use burn::prelude::*;
use image::{Rgb, RgbImage};
use prompt_diffusion_clip::{
    CLIPTextModelWithProjection, CLIPVisionModelWithProjection, ClipTokenizer,
    clip_image_preprocess,
};
use prompt_diffusion_core::weights::LoadOptions;
use prompt_diffusion_core::{Error, Result};

/// What the unconditional (classifier-free guidance) image context is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UncondImage {
    /// The encoding of a mid-gray image (pixel value 127): diffusers' pipelines
    /// (`np.zeros((512, 512, 3)) + 0.5`, as converted when they were written) and the original
    /// 2022 inference code. The default.
    #[default]
    Gray,
    /// The encoding of a black image: the 2023 official app's image→text flow.
    Black,
    /// All-zero tokens: the 2023 official app's image variation and dual-guided flows.
    Zeros,
}

/// Normalised CLIP text tokens.
#[derive(Debug)]
pub struct ClipTextContextEncoder<B: Backend> {
    /// The CLIP tokenizer (pads to 77 with its pad token).
    pub tokenizer: ClipTokenizer,
    /// `CLIPTextModelWithProjection`.
    pub model: CLIPTextModelWithProjection<B>,
}

impl<B: Backend> ClipTextContextEncoder<B> {
    /// Loads a `text_encoder/` folder (or a full CLIP folder) and a tokenizer folder.
    pub fn from_folders(
        text_encoder: impl AsRef<Path>,
        tokenizer: impl AsRef<Path>,
        options: &LoadOptions,
        device: &B::Device,
    ) -> Result<Self> {
        Ok(Self {
            tokenizer: ClipTokenizer::from_folder(tokenizer)?,
            model: CLIPTextModelWithProjection::from_pretrained(text_encoder, options, device)?,
        })
    }

    /// The context tokens of each prompt.
    ///
    /// # Shapes
    /// `n` prompts → `[n, 77, projection_dim]`, in the model's dtype.
    ///
    /// # Errors
    /// Tokenizer failures, or ids the model cannot take.
    pub fn encode(&self, prompts: &[&str]) -> Result<Tensor<B, 3>> {
        let device = self.model.text_projection.weight.device();
        let ids = self.tokenizer.encode_batch(prompts)?;
        let ids = ClipTokenizer::ids_tensor::<B>(&ids, &device)?;
        self.model.text_model.check_input_ids(ids.dims())?;
        let out = self.model.forward(ids);
        let tokens = self.model.text_projection.forward(out.last_hidden_state);
        let [n, _] = out.text_embeds.dims();
        Ok(tokens / l2_norm(out.text_embeds).reshape([n, 1, 1]))
    }
}

/// Normalised CLIP image tokens.
#[derive(Debug)]
pub struct ClipImageContextEncoder<B: Backend> {
    /// `CLIPVisionModelWithProjection`.
    pub model: CLIPVisionModelWithProjection<B>,
}

impl<B: Backend> ClipImageContextEncoder<B> {
    /// Loads an `image_encoder/` folder (or a full CLIP folder).
    pub fn from_folder(
        dir: impl AsRef<Path>,
        options: &LoadOptions,
        device: &B::Device,
    ) -> Result<Self> {
        Ok(Self {
            model: CLIPVisionModelWithProjection::from_pretrained(dir, options, device)?,
        })
    }

    /// The model's input size (224 for ViT-L/14), from its patch and position embeddings.
    pub fn image_size(&self) -> usize {
        let embeddings = &self.model.vision_model.embeddings;
        let patch = embeddings.patch_embedding.weight.dims()[3];
        let positions = embeddings.position_embedding.weight.dims()[0];
        patch * ((positions.saturating_sub(1)) as f64).sqrt().round() as usize
    }

    /// The number of context tokens (257 for ViT-L/14: 256 patches and the class token).
    pub fn num_tokens(&self) -> usize {
        self.model
            .vision_model
            .embeddings
            .position_embedding
            .weight
            .dims()[0]
    }

    /// The context width (`projection_dim`).
    pub fn width(&self) -> usize {
        self.model.visual_projection.weight.dims()[1]
    }

    /// The context tokens of each image (CLIP preprocessing: shortest side resized with
    /// antialiased bicubic, center crop, CLIP mean/std).
    ///
    /// # Shapes
    /// `n` images → `[n, tokens, projection_dim]`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for no image or an empty one.
    pub fn encode_images(&self, images: &[RgbImage]) -> Result<Tensor<B, 3>> {
        let device = self.model.visual_projection.weight.device();
        let pixels = clip_image_preprocess::<B>(images, self.image_size(), &device)?;
        self.encode_pixels(pixels)
    }

    /// The context tokens of preprocessed pixels.
    ///
    /// # Shapes
    /// `[n, 3, size, size]` → `[n, tokens, projection_dim]`.
    ///
    /// # Errors
    /// [`Error::Shape`] when the pixels do not fit the model.
    pub fn encode_pixels(&self, pixels: Tensor<B, 4>) -> Result<Tensor<B, 3>> {
        let vision = &self.model.vision_model;
        vision.check_pixel_values(pixels.dims())?;
        let dtype = self.model.visual_projection.weight.val().dtype();
        let hidden = vision.forward(pixels.cast(dtype)).last_hidden_state;
        let tokens = self
            .model
            .visual_projection
            .forward(vision.post_layernorm.forward(hidden));
        let [n, _, d] = tokens.dims();
        let cls = tokens.clone().slice([0..n, 0..1, 0..d]).reshape([n, d]);
        Ok(tokens / l2_norm(cls).reshape([n, 1, 1]))
    }

    /// The unconditional image context for `n` samples.
    ///
    /// # Shapes
    /// → `[n, tokens, projection_dim]`.
    pub fn unconditional(&self, mode: UncondImage, n: usize) -> Result<Tensor<B, 3>> {
        let device = self.model.visual_projection.weight.device();
        let size = self.image_size() as u32;
        let value = match mode {
            UncondImage::Gray => 127,
            UncondImage::Black => 0,
            UncondImage::Zeros => {
                let dtype = self.model.visual_projection.weight.val().dtype();
                return Ok(Tensor::zeros(
                    [n, self.num_tokens(), self.width()],
                    (&device, dtype),
                ));
            }
        };
        let image = RgbImage::from_pixel(size, size, Rgb([value; 3]));
        let tokens = self.encode_images(std::slice::from_ref(&image))?;
        Ok(Tensor::cat(vec![tokens; n.max(1)], 0))
    }
}

/// Checks precomputed image context tokens (e.g. predicted by another model) and stacks them.
///
/// # Shapes
/// `[tokens, width]` or `[n, tokens, width]` → `[n, tokens, width]`.
///
/// # Errors
/// [`Error::Shape`] when the tokens are not `[.., tokens, width]`, [`Error::DType`] when they
/// are not floats.
pub fn image_tokens_from_data<B: Backend>(
    data: &burn::tensor::TensorData,
    tokens: usize,
    width: usize,
    device: &B::Device,
) -> Result<Tensor<B, 3>> {
    if !data.dtype.is_float() {
        return Err(Error::DType {
            origin: None,
            key: "image embeddings".into(),
            expected: "a float dtype".into(),
            found: format!("{:?}", data.dtype),
        });
    }
    let n = match data.shape.as_slice() {
        [t, w] if *t == tokens && *w == width => 1,
        [n, t, w] if *t == tokens && *w == width && *n > 0 => *n,
        other => {
            return Err(Error::Shape {
                origin: None,
                key: "image embeddings".into(),
                expected: format!("[{tokens}, {width}] or [n, {tokens}, {width}]"),
                found: other.to_vec(),
            });
        }
    };
    let data = data.clone().convert_dtype(burn::tensor::DType::F32);
    let values = burn::tensor::TensorData::from_bytes(data.bytes, [n, tokens, width], data.dtype);
    Ok(Tensor::from_data(values, device))
}

/// `‖x‖₂` over the last dimension.
///
/// # Shapes
/// `[n, d]` → `[n, 1]`.
fn l2_norm<B: Backend>(x: Tensor<B, 2>) -> Tensor<B, 2> {
    x.powi_scalar(2).sum_dim(1).sqrt()
}
