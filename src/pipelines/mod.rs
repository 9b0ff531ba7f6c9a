//! Pipelines: short compositions of the component crates.
//!
//! * [`StableDiffusion`] — text→image and image→image, and the shared steps (prompt encoding,
//!   initial latents, schedulers, decoding) the other pipelines build on.
//! * [`denoise`] — the one denoising loop (classifier-free guidance, progress, cancellation).
//! * [`StableDiffusionControlNet`] — text→image guided by a standard ControlNet and a hint.
//! * [`PromptDiffusion`] — in-context generation from an example pair and a query image.
//! * [`VersatileDiffusion`] — Versatile Diffusion's five flows (text/image ⇄ image/text).
//! * [`memory`] — the memory estimate a generation is checked against before it allocates.

mod controlnet;
mod denoise;
pub mod diff_plugin;
mod generation;
mod loading;
pub mod memory;
mod prompt_diffusion;
mod stable_diffusion;
mod versatile_diffusion;

pub use controlnet::{ControlNetOptions, StableDiffusionControlNet};
pub use denoise::denoise;
pub use generation::{Generation, MAX_GUIDANCE, MAX_IMAGES};
pub use loading::{Components, ModelOptions};
pub use prompt_diffusion::{
    IN_CONTEXT_MAX_SIDE, InContextOptions, NOTEBOOK_NEGATIVE_PROMPT, NOTEBOOK_PROMPT_SUFFIX,
    PromptDiffusion, in_context_size,
};
pub use stable_diffusion::StableDiffusion;
pub use versatile_diffusion::{
    ImagePrompt, VersatileDiffusion, VersatileModelOptions, VersatileOptions,
};
