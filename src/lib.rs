#![doc = include_str!("../README.md")]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

/// burn, the version every crate of this workspace is built on: an application can use
/// `prompt_diffusion::burn` instead of pinning burn itself.
pub use burn;

pub use prompt_diffusion_clip as clip;
pub use prompt_diffusion_controlnet_prompt as controlnet;
pub use prompt_diffusion_core as core;
#[cfg(feature = "diff-plugin")]
pub use prompt_diffusion_diff_plugin as diff_plugin;
pub use prompt_diffusion_schedulers as schedulers;
pub use prompt_diffusion_unet as unet;
pub use prompt_diffusion_vae as vae;
#[cfg(feature = "versatile")]
pub use prompt_diffusion_versatile_flows as versatile;

pub mod annotators;
pub mod backends;
#[doc(hidden)]
pub mod fuzzing;
pub mod metadata;
pub mod pipelines;
pub mod scenes;
#[cfg(feature = "train")]
pub mod train;

pub use pipelines::{Generation, Inpaint, ModelOptions, StableDiffusion};
pub use pipelines::{InContextOptions, PromptDiffusion, StableDiffusionControlNet};
