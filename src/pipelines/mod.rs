//! Pipelines: short compositions of the component crates.
//!
//! * [`StableDiffusion`] — text→image and image→image, and the shared steps (prompt encoding,
//!   the sampler, initial latents, decoding) the other pipelines build on.
//! * [`StableDiffusionControlNet`] — text→image guided by a standard ControlNet and a hint.
//! * [`PromptDiffusion`] — in-context generation from an example pair and a query image.
//! * `VersatileDiffusion` — Versatile Diffusion's five flows (text/image ⇄ image/text); cargo
//!   feature `versatile`.
//! * `diff_plugin` — image restoration with Diff-Plugin Task-Plugins; cargo feature
//!   `diff-plugin`.
//! * [`memory`] — the memory estimate a generation is checked against before it allocates.
//!
//! Every pipeline samples through the one loop, [`Sampler`](prompt_diffusion_schedulers::Sampler),
//! with a [`Denoiser`](prompt_diffusion_core::denoiser::Denoiser) — the UNet, or the UNet paired
//! with a control model by [`Controlled`](prompt_diffusion_unet::Controlled) — wrapped in
//! classifier-free guidance ([`Guided`](prompt_diffusion_core::denoiser::Guided)).
//!
//! # A new pipeline
//! A new conditioning is a [`UNetControl`](prompt_diffusion_unet::UNetControl) (residuals for
//! the UNet's skips and mid block) or a [`Denoiser`](prompt_diffusion_core::denoiser::Denoiser)
//! of its own; the pipeline is the composition. Here a control model that adds a learned bias to
//! the mid block, scaled by a strength given per run:
//!
//! ```no_run
//! use burn::prelude::*;
//! use prompt_diffusion::core::Result;
//! use prompt_diffusion::core::noise::SeededNoise;
//! use prompt_diffusion::core::progress::NoProgress;
//! use prompt_diffusion::unet::{Controlled, ControlledConditioning, UNetControl, UNetResiduals};
//! use prompt_diffusion::{Generation, StableDiffusion};
//!
//! /// Adds `bias` (`[1, 1280, 1, 1]`) to the mid block.
//! struct MidBias<B: Backend> {
//!     bias: Tensor<B, 4>,
//! }
//!
//! impl<B: Backend> UNetControl<B> for MidBias<B> {
//!     type Hint = f32; // the strength
//!
//!     fn residuals(
//!         &self,
//!         latents: Tensor<B, 4>,
//!         _timestep: Tensor<B, 1>,
//!         _context: Tensor<B, 3>,
//!         strength: &f32,
//!     ) -> Result<UNetResiduals<B>> {
//!         let [n, _, h, w] = latents.dims();
//!         let mid = self.bias.clone().expand([n, 1280, h / 8, w / 8]) * *strength;
//!         Ok(UNetResiduals { down: Vec::new(), mid: Some(mid) })
//!     }
//! }
//!
//! fn biased<B: Backend>(sd: &StableDiffusion<B>, bias: &MidBias<B>) -> Result<Vec<image::RgbImage>> {
//!     let generation = Generation::new("a lighthouse at dusk").with_steps(25);
//!     let denoiser = Controlled::new(&sd.components.unet, bias);
//!     let conditioning = |context| ControlledConditioning { context, hint: 0.5 };
//!     let (mut noise, mut progress) = (SeededNoise::new(generation.seed), NoProgress);
//!     let size = (512, 512);
//!     sd.text_to_image_with(&generation, size, &denoiser, conditioning, &mut noise, &mut progress)
//! }
//! ```

mod controlnet;
#[cfg(feature = "diff-plugin")]
pub mod diff_plugin;
mod generation;
mod inpaint;
mod loading;
mod lora;
pub mod memory;
mod prompt;
mod prompt_diffusion;
mod stable_diffusion;
mod textual_inversion;
#[cfg(feature = "versatile")]
mod versatile_diffusion;

pub use controlnet::{ControlNetOptions, StableDiffusionControlNet};
pub use generation::{Generation, MAX_GUIDANCE, MAX_IMAGES, PerImageNoise};
pub use inpaint::{Inpaint, mask_from_rgb};
pub use loading::{Components, ModelOptions};
pub use lora::{LoraInfo, LoraSpec, Loras};
pub use prompt::MAX_PROMPT_CHUNKS;
pub use prompt_diffusion::{
    IN_CONTEXT_MAX_SIDE, InContextOptions, NOTEBOOK_NEGATIVE_PROMPT, NOTEBOOK_PROMPT_SUFFIX,
    PromptDiffusion, in_context_size,
};
pub use stable_diffusion::StableDiffusion;
pub use textual_inversion::EmbeddingSpec;
#[cfg(feature = "versatile")]
pub use versatile_diffusion::{
    ImagePrompt, VersatileDiffusion, VersatileModelOptions, VersatileOptions,
};
