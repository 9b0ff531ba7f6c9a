//! ControlNets on burn, numerically equal to diffusers: the standard `ControlNetModel`
//! (canny, depth, HED, … — one hint image) and the ControlNet of Prompt Diffusion
//! (Z. Wang et al., "In-Context Learning Unlocked for Diffusion Models", arXiv 2305.01115),
//! which adds a second hint encoder so an example pair (source → target) and a query image
//! both guide the UNet.
//!
//! * [`ControlNetConfig`] — diffusers' `ControlNetModel` `config.json`, with presets
//!   ([`sd_v1_5`](ControlNetConfig::sd_v1_5), [`prompt_diffusion`](ControlNetConfig::prompt_diffusion))
//!   and the conversion to the UNet config whose encoder it copies.
//! * [`ControlNetModel`], [`PromptDiffusionControlNet`] — both return [`UNetResiduals`] for
//!   `UNet2DConditionModel::forward_with_residuals`, scaled by [`ControlScales`] (conditioning
//!   scale, diffusers' and the original guess modes).
//! * [`PromptDiffusionDenoiser`] — the Prompt Diffusion ControlNet with the fine-tuned UNet of
//!   the same original checkpoint.
//! * [`weights`] — the original (`control_model.*`) ↔ diffusers key tables.
//!
//! ```no_run
//! use burn::tensor::Tensor;
//! use burn_ndarray::NdArray;
//! use prompt_diffusion_controlnet_prompt::{ControlNetConfig, ControlScales, PromptDiffusionDenoiser};
//! use prompt_diffusion_core::weights::{LoadOptions, TensorSource};
//!
//! # fn main() -> prompt_diffusion_core::Result<()> {
//! let device = Default::default();
//! let ckpt = TensorSource::open("network-step=04999.ckpt")?;
//! let model = PromptDiffusionDenoiser::<NdArray>::from_single_file(
//!     &ControlNetConfig::prompt_diffusion(),
//!     &ckpt,
//!     &LoadOptions::default(),
//!     &device,
//! )?;
//! let noise_pred = model.forward(
//!     Tensor::zeros([1, 4, 64, 64], &device),     // latent
//!     Tensor::from_floats([999.0], &device),      // timestep
//!     Tensor::zeros([1, 77, 768], &device),       // text context
//!     Tensor::zeros([1, 6, 512, 512], &device),   // example source ‖ example target
//!     Tensor::zeros([1, 3, 512, 512], &device),   // query
//!     &ControlScales::Uniform(1.0),
//! )?;
//! # let _ = noise_pred;
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

mod conditioning_embedding;
mod config;
mod controlnet;
mod denoiser;
mod prompt_diffusion;
mod scales;
pub mod weights;

pub use conditioning_embedding::ControlNetConditioningEmbedding;
pub use config::{ChannelOrder, ControlNetConfig};
pub use controlnet::ControlNetModel;
pub use denoiser::{ControlHint, InContextHint, PromptDiffusionDenoiser, UNET_PREFIX};
pub use prompt_diffusion::{PromptDiffusionControlNet, QUERY_CHANNELS};
pub use prompt_diffusion_unet::UNetResiduals;
pub use scales::ControlScales;
