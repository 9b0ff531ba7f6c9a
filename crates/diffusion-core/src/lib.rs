//! Shared plumbing of the prompt-diffusion workspace.
//!
//! * [`Error`] — the one error type of every crate, naming the file, tensor key, shape or
//!   field at fault.
//! * [`weights`] — reading safetensors (single, sharded) and PyTorch pickles, finding the
//!   weights of diffusers component folders, and loading them strictly into burn modules with a
//!   cast to the chosen float type.
//! * [`config`] — reading reference `config.json` files into typed configs; [`limits`] — the
//!   bounds every config is checked against, and its agreement with the weight file's header.
//! * [`lora`] — LoRA files (PEFT, kohya-ss and older diffusers layouts) and merging their
//!   low-rank updates into a module's weights, removably.
//! * [`memory`], [`finite`] — refusing runs that cannot fit in memory, and failing on NaN/Inf.
//! * [`denoiser`] — the noise-predictor trait every model implements, and classifier-free
//!   guidance over any of them.
//! * [`nn`] — GroupNorm/LayerNorm with f32 statistics, the attention entry point, activations.
//! * [`image`], [`noise`], [`progress`] — image ⇄ tensor, reproducible noise, step callbacks.
//! * [`files`] — output files checked before any work and written atomically, `~` in paths.
//! * [`hub`] — models named by Hugging Face repository id: the local cache, offline use, and
//!   downloads with `hf-hub` (the `hub` feature).
//!
//! ```no_run
//! use prompt_diffusion_core::weights::{TensorSource, open_component_weights};
//!
//! # fn main() -> prompt_diffusion_core::Result<()> {
//! // A diffusers component folder…
//! let unet = open_component_weights("stable-diffusion-v1-5/unet", Some("fp16"))?;
//! // …or the UNet part of an original single-file checkpoint.
//! let ckpt = TensorSource::open("v1-5-pruned-emaonly.safetensors")?;
//! let ldm_unet = ckpt.strip_prefix("model.diffusion_model.");
//! # let _ = (unet, ldm_unet);
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

pub mod config;
pub mod denoiser;
pub mod dtype;
mod error;
pub mod files;
pub mod finite;
pub mod hub;
pub mod image;
pub mod limits;
pub mod lora;
pub mod memory;
pub mod names;
pub mod nn;
pub mod noise;
pub mod progress;
mod setters;
pub mod testing;
pub mod weights;

pub use dtype::Precision;
pub use error::{ConfigMismatch, Error, Result, ShapeMismatch, WeightsError};
