//! `AutoencoderKL`, the Stable Diffusion VAE, on burn — numerically equal to diffusers.
//!
//! Loads diffusers `vae/` folders (current and ≤ 0.13 attention names) and the original LDM
//! layout of single-file checkpoints and `kl-f8.pth`.
//!
//! ```no_run
//! use burn_ndarray::NdArray;
//! use prompt_diffusion_core::weights::{LoadOptions, Pretrained};
//! use prompt_diffusion_vae::AutoencoderKL;
//!
//! # fn main() -> prompt_diffusion_core::Result<()> {
//! let device = Default::default();
//! let vae = AutoencoderKL::<NdArray>::from_pretrained("stable-diffusion-v1-5/vae", &LoadOptions::default(), &device)?;
//! let latents = burn::tensor::Tensor::zeros([1, 4, 64, 64], &device);
//! let image = vae.decode(vae.unscale_latents(latents.clone())); // [1, 3, 512, 512] in [-1, 1]
//! let images = vae.decode_to_images(latents)?; // one 512×512 RgbImage
//! # let _ = (image, images);
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

mod autoencoder_kl;
mod config;
mod image_processor;
mod tiling;
pub mod vae;
pub mod weights;

pub use autoencoder_kl::{AutoencoderKL, DiagonalGaussian};
pub use config::{AutoencoderKLConfig, DownEncoderBlockType, UpDecoderBlockType};
pub use image_processor::VaeImageProcessor;
pub use tiling::{VaeOptions, VaeTiling};
pub use weights::upcast_options;
