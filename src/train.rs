//! Training a small Stable Diffusion from scratch with this library: the model that draws
//! the procedural [`scenes`](crate::scenes) and ships with the repository as the default.
//!
//! The recipe has two stages on burn's autodiff backend ([`Autodiff`]):
//!
//! 1. [`VaeTrainer`]: an [`AutoencoderKL`](crate::vae::AutoencoderKL) learns to reconstruct
//!    rendered scenes (mean squared error and a small KL term, AdamW);
//! 2. [`TextToImageTrainer`]: with that VAE frozen, a CLIP text encoder and a
//!    UNet2DConditionModel learn the ε-prediction objective of Stable Diffusion on scene
//!    latents, the caption dropped to the empty prompt 10 % of the time for classifier-free
//!    guidance, with AdamW and an exponential moving average of the weights ([`Ema`]).
//!
//! Every step draws its own batch, noise and timesteps from `(seed, step)`, so a run resumed
//! from a checkpoint ([`Checkpoint`]) continues exactly as the uninterrupted run would have.
//! [`export_pipeline`] writes the result as a diffusers folder that the loaders, the pipelines
//! and diffusers itself read. The recipe, its settings and measured speeds are in
//! `docs/training.md`; the program is `examples/train_scenes.rs`.

mod checkpoint;
mod diffusion;
mod ema;
mod export;
mod model;
mod optim;
mod parallel;
mod vae;

pub use burn_autodiff::Autodiff;
pub use checkpoint::{Checkpoint, TrainState, TrainingStage, checkpoints, latest_checkpoint};
pub use diffusion::{TRAINING_STATE, TextToImageModel, TextToImageTrainer};
pub use ema::Ema;
pub use export::{
    export_pipeline, export_vae, fit_scaling_factor, read_training_state, save_training_state,
};
pub use model::{ScenesModelConfig, TrainConfig, materialize, scene_batch, step_seed};
pub use vae::VaeTrainer;
