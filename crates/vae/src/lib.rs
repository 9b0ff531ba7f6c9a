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
//!
//! Large images and batches in bounded memory, as diffusers' `enable_tiling()` and
//! `enable_slicing()` (see [`VaeOptions`]; a 2048×2048 decode then needs the memory of a
//! 512×512 one):
//!
//! ```no_run
//! # use burn_ndarray::NdArray;
//! # use prompt_diffusion_core::weights::{LoadOptions, Pretrained};
//! # use prompt_diffusion_vae::AutoencoderKL;
//! # fn main() -> prompt_diffusion_core::Result<()> {
//! # let device = Default::default();
//! let mut vae = AutoencoderKL::<NdArray>::from_pretrained("stable-diffusion-v1-5/vae", &LoadOptions::default(), &device)?;
//! vae.enable_tiling()?; // 512-px tiles (the config's sample_size), overlap 0.25
//! vae.enable_slicing(); // one image of a batch at a time
//! let images = vae.decode_to_images(burn::tensor::Tensor::zeros([2, 4, 256, 256], &device))?;
//! # let _ = images;
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
