//! Pipelines: short compositions of the component crates.
//!
//! * [`StableDiffusion`] — text→image and image→image, and the shared steps (prompt encoding,
//!   initial latents, schedulers, decoding) the other pipelines build on.
//! * [`denoise`] — the one denoising loop (classifier-free guidance, progress, cancellation).

mod denoise;
pub mod diff_plugin;
mod generation;
mod loading;
mod stable_diffusion;

pub use denoise::denoise;
pub use generation::Generation;
pub use loading::{Components, ModelOptions};
pub use stable_diffusion::StableDiffusion;
