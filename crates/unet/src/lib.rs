//! `UNet2DConditionModel`, the denoising UNet of Stable Diffusion 1.x/2.x, on burn —
//! numerically equal to diffusers.
//!
//! Built from a diffusers `unet/config.json` (SD1 and SD2 families, any levels, layers per
//! level and block kinds of the `CrossAttn*`/`Down`/`Up` families), loaded from diffusers
//! folders or the original LDM layout. The same blocks with fully connected data layers
//! ([`DataLayerKind::Flat`]) are Versatile Diffusion's text UNet (`UNetFlatConditionModel`,
//! read from its `text_unet/config.json`). Two extension points serve the models built on it:
//! [`UNetResiduals`] (ControlNet and plug-in features added to the skip connections) and
//! [`CrossAttentionContext`] (what each cross-attention slot attends to, and with which
//! weights).
//!
//! ```no_run
//! use burn::tensor::Tensor;
//! use burn_ndarray::NdArray;
//! use prompt_diffusion_core::weights::{LoadOptions, Pretrained};
//! use prompt_diffusion_unet::UNet2DConditionModel;
//!
//! # fn main() -> prompt_diffusion_core::Result<()> {
//! let device = Default::default();
//! let unet = UNet2DConditionModel::<NdArray>::from_pretrained("stable-diffusion-v1-5/unet", &LoadOptions::default(), &device)?;
//! let noise_pred = unet.forward(
//!     Tensor::zeros([1, 4, 64, 64], &device),
//!     Tensor::from_floats([999.0], &device),
//!     Tensor::zeros([1, 77, 768], &device),
//! )?;
//! # let _ = noise_pred;
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

pub mod attention;
mod config;
mod context;
pub mod data_layers;
mod denoiser;
pub mod embeddings;
mod inpainting;
pub mod lora;
pub mod resnet_flat;
pub mod transformer_2d;
pub mod trunk;
pub mod unet_2d_blocks;
mod unet_2d_condition;
pub mod weights;

pub use config::{
    AttentionType, CrossAttentionNorm, TimeEmbeddingType, UNet2DConditionConfig, UpBlockType,
};
pub use context::{ContextTokens, CrossAttentionContext};
pub use data_layers::{DataDownsample, DataLayerKind, DataProjection, DataResnet, DataUpsample};
pub use denoiser::{Controlled, ControlledConditioning, UNetControl};
pub use inpainting::{Inpainting, InpaintingConditioning};
pub use resnet_flat::{FLAT_SECOND_DIM, LinearMultiDim, ResnetBlockFlat};
pub use transformer_2d::{Transformer2DConfig, Transformer2DModel};
pub use trunk::{
    AdditionEmbedType, ClassEmbedType, DownBlockType, EncoderHidDimType, MidBlockType,
    ResnetTimeScaleShift, UNetTrunkConfig,
};
pub use unet_2d_condition::{UNet2DConditionModel, UNetResiduals, shape_error};
