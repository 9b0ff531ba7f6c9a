//! Versatile Diffusion on burn (X. Xu, Z. Wang, E. Zhang, K. Wang, H. Shi, "Versatile Diffusion:
//! Text, Images and Variations All in One Diffusion Model", ICCV 2023, arXiv 2211.08332),
//! numerically equal to diffusers' pipelines and the official code.
//!
//! One multi-flow diffuser serves five generations ([`Flow`]): text→image, image variation,
//! dual-guided (text and image mixed per attention slot), image→text and text variation.
//!
//! * [`VersatileDiffuser`] — data layers per output modality (the image UNet's convolutional
//!   blocks; the text UNet's fully connected blocks, the same UNet code with
//!   [`DataLayerKind::Flat`](prompt_diffusion_unet::DataLayerKind)), context layers per
//!   condition modality, one global time embedding; a flow swaps or mixes the context layers
//!   slot by slot ([`MixedContext`]) and never copies weights ([`ParamStats`] shows it).
//! * [`ClipTextContextEncoder`], [`ClipImageContextEncoder`] — CLIP tokens with VD's
//!   normalisation; [`UncondImage`] chooses the unconditional image context.
//! * [`Optimus`] — the text VAE of the text flows (BERT encoder, GPT-2 decoder with the latent
//!   injected, greedy or sampled decoding).
//! * [`VersatileComponents`] — loading from the diffusers folders or the official `.pth` files
//!   ([`weights`] holds their key tables), a flow's conditions ([`FlowInputs`], [`ImagePrompt`]:
//!   an image or precomputed tokens) and the decoding of its latents.
//!
//! ```no_run
//! use burn::tensor::Tensor;
//! use burn_ndarray::NdArray;
//! use prompt_diffusion_core::weights::LoadOptions;
//! use prompt_diffusion_versatile_flows::{Condition, Flow, Modality, VersatileComponents, VersatileFolders};
//!
//! # fn main() -> prompt_diffusion_core::Result<()> {
//! type B = NdArray<f32>;
//! let device = Default::default();
//! let vd = VersatileComponents::<B>::from_folders(
//!     &VersatileFolders::new("versatile-diffusion"),
//!     None,
//!     &[Flow::TextToImage, Flow::ImageVariation],
//!     &LoadOptions::default(),
//!     &device,
//! )?;
//! let text = vd.text_encoder()?.encode(&["a red car"])?; // [1, 77, 768]
//! let noise_pred = vd.diffuser.forward(
//!     Tensor::zeros([1, 4, 64, 64], &device),
//!     Tensor::from_floats([981.0], &device),
//!     Modality::Image,
//!     &[Condition::new(Modality::Text, text)],
//! )?;
//! # let _ = noise_pred;
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

mod context_layers;
mod diffuser;
mod encoders;
mod files;
mod flow;
mod inputs;
mod loading;
mod mixing;
pub mod optimus;
mod params;
pub mod weights;

pub use context_layers::ContextLayers;
pub use diffuser::{Condition, FlowDenoiser, VersatileDiffuser};
pub use encoders::{
    ClipImageContextEncoder, ClipTextContextEncoder, UncondImage, image_tokens_from_data,
};
pub use files::{
    OfficialFiles, OptimusFiles, VersatileFolders, image_unet_config, text_unet_config,
};
pub use flow::{Flow, LayerGroups, Modality};
pub use inputs::{FlowInputs, ImagePrompt};
pub use loading::VersatileComponents;
pub use mixing::{MixedContext, SlotContext};
pub use optimus::{Optimus, OptimusConfig, OptimusTokenizers, TextDecoding};
pub use params::{ParamCounter, ParamStats, param_ids};
