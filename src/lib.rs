//! prompt-diffusion: Stable Diffusion 1.5 and the systems built on it, on burn.
#![warn(missing_docs)]

pub use prompt_diffusion_clip as clip;
pub use prompt_diffusion_controlnet_prompt as controlnet;
pub use prompt_diffusion_core as core;
pub use prompt_diffusion_diff_plugin as diff_plugin;
pub use prompt_diffusion_schedulers as schedulers;
pub use prompt_diffusion_unet as unet;
pub use prompt_diffusion_vae as vae;
pub use prompt_diffusion_versatile_flows as versatile;

pub mod annotators;
pub mod backends;
#[doc(hidden)]
pub mod fuzzing;
pub mod pipelines;

pub use pipelines::{Generation, ModelOptions, StableDiffusion};
pub use pipelines::{InContextOptions, PromptDiffusion, StableDiffusionControlNet};
pub mod metadata;
