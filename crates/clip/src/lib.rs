//! CLIP for the prompt-diffusion workspace: the tokenizer, the text tower (`CLIPTextModel`,
//! `CLIPTextModelWithProjection`) and the vision tower (`CLIPVisionModel`,
//! `CLIPVisionModelWithProjection`), numerically equal to transformers 5.
//!
//! * [`ClipTokenizer`] — CLIP BPE with transformers' normalisation, special tokens, padding to
//!   77 with the folder's pad token and truncation.
//! * [`CLIPTextModel`] — Stable Diffusion's text encoder: `last_hidden_state` is the UNet
//!   context; every hidden state is available for "CLIP skip".
//! * [`CLIPVisionModelWithProjection`] + [`CLIPImageProcessor`] (the model's
//!   [`image_processor`](CLIPVisionModelWithProjection::image_processor)) — image embeddings
//!   (Versatile Diffusion, Diff-Plugin).
//! * [`prompt_weighting`] — AUTOMATIC1111's emphasis syntax (`(word:1.3)`, `[word]`, `BREAK`)
//!   and prompts longer than 77 tokens, encoded in chunks.
//! * [`textual_inversion`] — learned token embeddings (diffusers and AUTOMATIC1111 files) added
//!   to the tokenizer and the text encoder.
//! * [`weights`] — the key tables of single-file checkpoints (SD1, SD2 OpenCLIP) and of full
//!   `CLIPModel` files.
//!
//! ```no_run
//! use burn_ndarray::NdArray;
//! use prompt_diffusion_clip::{CLIPTextModel, ClipTokenizer};
//! use prompt_diffusion_core::weights::{LoadOptions, Pretrained};
//!
//! # fn main() -> prompt_diffusion_core::Result<()> {
//! type B = NdArray<f32>;
//! let device = Default::default();
//! let tokenizer = ClipTokenizer::from_folder("stable-diffusion-v1-5")?;
//! let encoder = CLIPTextModel::<B>::from_pretrained(
//!     "stable-diffusion-v1-5/text_encoder",
//!     &LoadOptions::default(),
//!     &device,
//! )?;
//! let ids = tokenizer.encode_batch(&["a photo of a cat", ""])?;
//! let context = encoder
//!     .forward(ClipTokenizer::ids_tensor::<B>(&ids, &device)?)
//!     .last_hidden_state; // [2, 77, 768]
//! # let _ = context;
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

pub mod config;
pub mod encoder;
pub mod lora;
pub mod preprocess;
pub mod prompt_weighting;
pub mod text_model;
pub mod textual_inversion;
pub mod tokenizer;
mod tower;
pub mod vision_model;
pub mod weights;

pub use config::{CLIPTextConfig, CLIPVisionConfig};
pub use preprocess::{CLIP_MEAN, CLIP_STD, CLIPImageProcessor, clip_image_preprocess};
pub use prompt_weighting::{PromptPart, WeightedChunk, parse_prompt_attention};
pub use text_model::{
    CLIPTextModel, CLIPTextModelWithProjection, CLIPTextOutput, CLIPTextProjectionOutput,
    CLIPTextTransformer,
};
pub use textual_inversion::TextualInversion;
pub use tokenizer::ClipTokenizer;
pub use vision_model::{
    CLIPVisionModel, CLIPVisionModelWithProjection, CLIPVisionOutput, CLIPVisionProjectionOutput,
    CLIPVisionTransformer,
};
