//! Inpainting: regenerate the masked region of an image (diffusers
//! `StableDiffusionInpaintPipeline`; with a ControlNet, `StableDiffusionControlNetInpaintPipeline`).
//!
//! Two methods, chosen by the UNet as diffusers chooses them:
//! * an **inpainting checkpoint** (UNet `in_channels` = 2·latent + 1, 9 for SD) reads the mask
//!   and the masked image's latents beside the latents at every step
//!   ([`Inpainting`](prompt_diffusion_unet::Inpainting));
//! * an **ordinary checkpoint** (4 channels) generates freely and, after every step, the
//!   latents outside the mask are replaced by the image's, noised to the next timestep
//!   ([`MaskBlend`]).
//!
//! Both run in the one loop ([`Sampler`](prompt_diffusion_schedulers::Sampler)) with any
//! denoiser built on the model's UNet, so the ControlNet and Prompt Diffusion pipelines inpaint
//! with the same code.

use burn::prelude::*;
use burn::tensor::DType;
use image::{GrayImage, Luma, RgbImage};
use prompt_diffusion_core::denoiser::{Denoiser, Guided};
use prompt_diffusion_core::image::{PixelRange, images_to_tensor, resize};
use prompt_diffusion_core::noise::{NoiseSource, noise_tensor};
use prompt_diffusion_core::progress::StepCallback;
use prompt_diffusion_core::{Error, Result};
use prompt_diffusion_schedulers::{MaskBlend, Sampler};
use prompt_diffusion_unet::{Inpainting, InpaintingConditioning};

use super::generation::Generation;
use super::stable_diffusion::StableDiffusion;

/// What to inpaint: an image, the region to regenerate, and how much of the schedule runs.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Inpaint<'a> {
    /// The image whose masked region is regenerated.
    pub image: &'a RgbImage,
    /// The region: white (≥ 128) is regenerated, black is kept. Resized to the output size
    /// (Lanczos) and binarised, as diffusers' mask processor does.
    pub mask: &'a GrayImage,
    /// How much of the schedule runs, in [0, 1] (default 1: the masked region starts from pure
    /// noise, as in diffusers).
    pub strength: f64,
}

impl<'a> Inpaint<'a> {
    /// Regenerates the white part of `mask` in `image`, at strength 1.
    pub fn new(image: &'a RgbImage, mask: &'a GrayImage) -> Self {
        Self {
            image,
            mask,
            strength: 1.0,
        }
    }

    prompt_diffusion_core::setters! {
        /// Sets the strength (in [0, 1]).
        with_strength(strength: f64);
    }

    /// The output size: the requested one, or the image's own rounded down to a multiple of 8.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when the image is smaller than 8 pixels.
    pub fn size(&self, generation: &Generation) -> Result<(usize, usize)> {
        super::stable_diffusion::img2img_size(self.image, generation)
    }
}

/// A mask from an RGB image, as PIL's `convert("L")` makes it (ITU-R 601-2 luma,
/// `(19595·R + 38470·G + 7471·B + 2¹⁵) >> 16`): the conversion diffusers applies to masks.
pub fn mask_from_rgb(image: &RgbImage) -> GrayImage {
    GrayImage::from_fn(image.width(), image.height(), |x, y| {
        let [r, g, b] = image.get_pixel(x, y).0.map(u32::from);
        Luma([((19595 * r + 38470 * g + 7471 * b + 0x8000) >> 16) as u8])
    })
}

/// The binarised mask at `width`×`height` pixels: 1 where the pixel is ≥ 128 after resizing.
fn binary_mask(mask: &GrayImage, width: usize, height: usize) -> Vec<f32> {
    let (w, h) = (width as u32, height as u32);
    let resized = if mask.dimensions() == (w, h) {
        mask.clone()
    } else {
        image::imageops::resize(mask, w, h, image::imageops::FilterType::Lanczos3)
    };
    resized
        .pixels()
        .map(|p| {
            if f32::from(p.0[0]) / 255.0 < 0.5 {
                0.0
            } else {
                1.0
            }
        })
        .collect()
}

/// A `[1, 1, h, w]` f32 tensor.
fn plane<B: Backend>(values: Vec<f32>, (w, h): (usize, usize), device: &B::Device) -> Tensor<B, 4> {
    Tensor::from_data(TensorData::new(values, [1, 1, h, w]), (device, DType::F32))
}

impl<B: Backend> StableDiffusion<B> {
    /// Regenerates the masked region of an image according to the prompt (see [`Inpaint`]),
    /// with an inpainting checkpoint or an ordinary one (the module docs say how each works).
    /// Image `i` is drawn from `generation.seed + i` ([`Generation::noise`]).
    ///
    /// # Errors
    /// Invalid options ([`Error::InvalidInput`]), a UNet that is neither an ordinary nor an
    /// inpainting one, or [`Error::Cancelled`] from `callback`.
    pub fn inpaint(
        &self,
        generation: &Generation,
        inpaint: &Inpaint<'_>,
        callback: &mut dyn StepCallback,
    ) -> Result<Vec<RgbImage>> {
        self.inpaint_with_noise(generation, inpaint, &mut *generation.noise(), callback)
    }

    /// [`inpaint`](Self::inpaint) with an explicit noise stream. The draws are diffusers', in
    /// order: the image's posterior sample (ordinary checkpoints, or strength < 1), the initial
    /// noise (unless `generation.latents` gives it), the masked image's posterior sample (drawn
    /// and unused by ordinary checkpoints, as diffusers encodes it for either), then the
    /// scheduler's.
    pub fn inpaint_with_noise(
        &self,
        generation: &Generation,
        inpaint: &Inpaint<'_>,
        noise: &mut dyn NoiseSource,
        callback: &mut dyn StepCallback,
    ) -> Result<Vec<RgbImage>> {
        let size = inpaint.size(generation)?;
        let unet = &self.components.unet;
        self.inpaint_with(generation, inpaint, size, unet, |c| c, noise, callback)
    }

    /// Inpainting of `width`×`height` images with any denoiser built on this model's UNet (a
    /// ControlNet, Prompt Diffusion, …), as [`text_to_image_with`](Self::text_to_image_with)
    /// is for text→image: `conditioning` makes the denoiser's conditioning from the text
    /// context.
    ///
    /// # Errors
    /// As [`inpaint`](Self::inpaint), and the denoiser's errors.
    #[allow(clippy::too_many_arguments)]
    pub fn inpaint_with<D>(
        &self,
        generation: &Generation,
        inpaint: &Inpaint<'_>,
        (width, height): (usize, usize),
        denoiser: D,
        conditioning: impl FnOnce(Tensor<B, 3>) -> D::Conditioning,
        noise: &mut dyn NoiseSource,
        callback: &mut dyn StepCallback,
    ) -> Result<Vec<RgbImage>>
    where
        D: Denoiser<B>,
        Inpainting<D>: Denoiser<B, Conditioning = InpaintingConditioning<B, D::Conditioning>>,
    {
        generation.validate()?;
        let strength = inpaint.strength;
        Sampler::<B>::check_strength(strength)?;
        let (n, guided) = (generation.num_images, generation.guided());
        self.check_memory(width, height, n, guided, 0)?;
        let masked_unet = self.inpainting_unet()?;
        let device = self.device().clone();
        let image = resize(inpaint.image, width as u32, height as u32);
        let mask = binary_mask(inpaint.mask, width, height);
        let pixels = images_to_tensor::<B>(
            std::slice::from_ref(&image),
            PixelRange::MinusOneToOne,
            &device,
        )?;
        let keep = plane::<B>(
            mask.iter().map(|m| 1.0 - m).collect(),
            (width, height),
            &device,
        );
        let masked_pixels = pixels.cast(DType::F32) * keep;
        let conditioning = conditioning(self.encode_prompt(generation)?);
        let mut sampler = self.sampler(generation)?.with_strength(strength)?;
        let shape = self.latent_shape(n, width, height);
        let vae = &self.components.vae;

        let given = generation.latents.as_ref();
        let needs_image = !masked_unet || (given.is_none() && strength < 1.0);
        let image_latents = match needs_image {
            true => Some(vae.sample_image_copies(&image, n, noise)?),
            false => None,
        };
        let (latents, eps) = match (given, &image_latents) {
            (Some(data), _) => {
                // diffusers: given latents are the noise, and the start (× init sigma) even
                // below strength 1.
                let latents = sampler.initial_latents(shape, given, noise, &device)?;
                let eps = data.clone().convert_dtype(DType::F32);
                (latents, Tensor::from_data(eps, (&device, DType::F32)))
            }
            (None, Some(init)) if strength < 1.0 => {
                let eps = noise_tensor::<B, 4>(noise, shape, &device, DType::F32)?;
                (sampler.noised(init.clone(), eps.clone()), eps)
            }
            (None, _) => {
                let eps = noise_tensor::<B, 4>(noise, shape, &device, DType::F32)?;
                let sigma = sampler.scheduler().init_noise_sigma();
                (eps.clone() * sigma, eps)
            }
        };
        let mask_latents = self.latent_mask(&mask, (width, height), n);
        let latents = if masked_unet {
            let masked = vae.sample_pixel_copies(masked_pixels, n, noise)?;
            let masked = Tensor::cat(vec![mask_latents, masked], 1);
            let masked = if guided {
                Tensor::cat(vec![masked.clone(), masked], 0)
            } else {
                masked
            };
            let conditioning = InpaintingConditioning {
                inner: conditioning,
                masked,
            };
            let denoiser = Guided::new(Inpainting::new(denoiser), generation.guidance());
            sampler.sample(&denoiser, &conditioning, latents, noise, callback)?
        } else {
            // diffusers encodes the masked image for either kind of UNet: its draw is taken so
            // that the scheduler's draws follow in the same order.
            noise_tensor::<B, 4>(noise, shape, &device, DType::F32)?;
            let image_latents = image_latents.unwrap_or_else(|| latents.zeros_like());
            let blend = MaskBlend {
                image_latents,
                mask: mask_latents,
                noise: eps,
            };
            let mut sampler = sampler.with_mask_blend(blend)?;
            let denoiser = Guided::new(denoiser, generation.guidance());
            sampler.sample(&denoiser, &conditioning, latents, noise, callback)?
        };
        self.decode(latents)
    }

    /// Text→image ([`text_to_image_with`](Self::text_to_image_with)) or, with `inpaint`,
    /// inpainting ([`inpaint_with`](Self::inpaint_with)) with one denoiser: the run of the
    /// ControlNet pipelines.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn generate_with<D>(
        &self,
        generation: &Generation,
        inpaint: Option<&Inpaint<'_>>,
        size: (usize, usize),
        denoiser: D,
        conditioning: impl FnOnce(Tensor<B, 3>) -> D::Conditioning,
        noise: &mut dyn NoiseSource,
        callback: &mut dyn StepCallback,
    ) -> Result<Vec<RgbImage>>
    where
        D: Denoiser<B>,
        Inpainting<D>: Denoiser<B, Conditioning = InpaintingConditioning<B, D::Conditioning>>,
    {
        match inpaint {
            None => {
                self.text_to_image_with(generation, size, &denoiser, conditioning, noise, callback)
            }
            Some(inpaint) => self.inpaint_with(
                generation,
                inpaint,
                size,
                denoiser,
                conditioning,
                noise,
                callback,
            ),
        }
    }

    /// Whether the UNet is an inpainting one (`in_channels` = 2·latent + 1) rather than an
    /// ordinary one (`in_channels` = latent).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for any other number of input channels.
    pub fn inpainting_unet(&self) -> Result<bool> {
        let c = self.components.vae.config().latent_channels;
        match self.components.unet.config().in_channels {
            x if x == c => Ok(false),
            x if x == 2 * c + 1 => Ok(true),
            x => Err(Error::invalid_input(
                "unet",
                format!(
                    "in_channels = {x}: inpainting needs an ordinary UNet ({c}) or an inpainting one ({})",
                    2 * c + 1
                ),
            )),
        }
    }

    /// The mask at the latents' size, `[n, 1, h/f, w/f]`: nearest-neighbour sampling of the
    /// binary mask (torch's `interpolate` default, pixel `(f·i, f·j)`).
    fn latent_mask(&self, mask: &[f32], (width, height): (usize, usize), n: usize) -> Tensor<B, 4> {
        let f = self.components.vae.config().downsampling_factor();
        let (w, h) = (width / f, height / f);
        let values = (0..h)
            .flat_map(|i| (0..w).map(move |j| mask[i * f * width + j * f]))
            .collect();
        plane::<B>(values, (w, h), self.device()).repeat_dim(0, n)
    }
}
