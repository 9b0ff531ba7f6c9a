//! Diff-Plugin on burn: image restoration with a frozen Stable Diffusion 1.x steered by small
//! per-task plug-ins (Y. Liu et al., "Diff-Plugin: Revitalizing Details for Diffusion-based
//! Low-level Tasks", CVPR 2024, arXiv 2403.00644), numerically equal to the official code
//! (yuhaoliu7456/Diff-Plugin, diffusers 0.17 semantics).
//!
//! * [`TPBNet`] — the Task-Prompt Branch: CLIP ViT patch tokens → the task prompt F^p, which
//!   replaces the text context in every cross-attention.
//! * [`SCBNet`] — the Spatial Complement Branch: the degraded image's latent z_c → F^s, added
//!   to the UNet's first skip connections (the last decoder stage).
//! * [`TaskPlugin`] — both, loaded from a released `pre-trained/<task>/` folder or a training
//!   checkpoint; [`Task`] — the eight tasks, their official order and start latents.
//! * [`PluginSelector`], [`select`] — the Plugin-Selector that picks plugins from an
//!   instruction.
//! * `train` (cargo feature `train`) — training a plugin on (degraded, clean) pairs
//!   (`train::PluginTrainer`); [`checkpoint`] writes the official checkpoint layout (`scb_net/`, `tpb_net.pt`).
//! * [`weights`] — the official file layouts and key tables.
//!
//! The restore pipeline (CLIP, VAE, UNet, UniPC) lives in the `prompt-diffusion` facade.
//!
//! ```no_run
//! use burn::tensor::Tensor;
//! use burn_ndarray::NdArray;
//! use prompt_diffusion_core::weights::LoadOptions;
//! use prompt_diffusion_diff_plugin::{PluginFiles, Task, TaskPlugin};
//!
//! # fn main() -> prompt_diffusion_core::Result<()> {
//! let device = Default::default();
//! let files = PluginFiles::for_task("Diff-Plugin/pre-trained", Task::Derain)?;
//! let plugin = TaskPlugin::<NdArray>::from_files(&files, &LoadOptions::default(), &device)?;
//! // CLIP ViT-L/14 last hidden state of the degraded image → F^p [1, 256, 768].
//! let prompt = plugin.tpb.forward(Tensor::zeros([1, 257, 1024], &device))?;
//! // z_c = 0.18215 · VAE mean of the degraded image → F^s, 3 × [1, 320, 64, 64].
//! let residuals = plugin.scb.residuals(
//!     Tensor::from_floats([999.0], &device),
//!     prompt,
//!     Tensor::zeros([1, 4, 64, 64], &device),
//! )?;
//! # let _ = residuals;
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

pub mod checkpoint;
mod config;
mod plugin;
mod scb;
mod selector;
mod task;
pub mod torch_save;
mod tpb;
#[cfg(feature = "train")]
pub mod train;
pub mod weights;

pub use config::SCBNetConfig;
pub use plugin::{CHECKPOINT_LAYOUT, PluginFiles, RELEASED_LAYOUT, SELECTOR_FILE, TaskPlugin};
pub use scb::SCBNet;
pub use selector::{Choice, PluginSelector, Selection, select};
pub use task::{StartLatent, Task};
pub use tpb::{LEAKY_RELU_SLOPE, TPBConfig, TPBLayer, TPBNet};
