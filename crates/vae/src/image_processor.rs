//! The VAE's image boundary: images ⇄ pixels ([`VaeImageProcessor`], diffusers'
//! `VaeImageProcessor`) and images ⇄ scaled latents on [`AutoencoderKL`], in the model's own
//! dtype with f32 latents in and out.

use burn::prelude::*;
use burn::tensor::DType;
use prompt_diffusion_core::Result;
use prompt_diffusion_core::finite::{Stage, check_finite};
use prompt_diffusion_core::image::{PixelRange, RgbImage, images_to_tensor, tensor_to_images};
use prompt_diffusion_core::noise::{NoiseSource, noise_tensor};

use crate::{AutoencoderKL, DiagonalGaussian};

/// Images ⇄ the VAE's pixel tensors: 8-bit RGB to `[n, 3, H, W]` in [-1, 1] and back
/// (`x/2 + 0.5`, clamped, rounded half-to-even), without resizing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VaeImageProcessor;

impl VaeImageProcessor {
    /// Images of one size to pixels in [-1, 1], in the device's default float dtype.
    ///
    /// # Shapes
    /// `n` images `W×H` → `[n, 3, H, W]`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`](prompt_diffusion_core::Error::InvalidInput) when `images` is
    /// empty or the sizes differ.
    pub fn preprocess<B: Backend>(
        &self,
        images: &[RgbImage],
        device: &B::Device,
    ) -> Result<Tensor<B, 4>> {
        images_to_tensor(images, PixelRange::MinusOneToOne, device)
    }

    /// Pixels in about [-1, 1] to images.
    ///
    /// # Shapes
    /// `[n, 3, H, W]` → `n` images `W×H`.
    ///
    /// # Errors
    /// [`Error::Shape`](prompt_diffusion_core::Error::Shape) when there are not 3 channels.
    pub fn postprocess<B: Backend>(&self, pixels: Tensor<B, 4>) -> Result<Vec<RgbImage>> {
        tensor_to_images(pixels, PixelRange::MinusOneToOne)
    }
}

impl<B: Backend> AutoencoderKL<B> {
    /// The float dtype of the weights (every weight is loaded in one dtype).
    pub fn dtype(&self) -> DType {
        self.decoder.conv_in.weight.val().dtype()
    }

    /// The processor of this model's images.
    pub fn image_processor(&self) -> VaeImageProcessor {
        VaeImageProcessor
    }

    /// The scaled posterior mean of images (`scale_latents(encode(pixels).mean)`): the latents
    /// an image conditions on.
    ///
    /// # Shapes
    /// `n` images `W×H` → `[n, latent_channels, H/8, W/8]`, f32.
    ///
    /// # Errors
    /// As [`VaeImageProcessor::preprocess`].
    pub fn encode_images(&self, images: &[RgbImage]) -> Result<Tensor<B, 4>> {
        let posterior = self.posterior(images)?;
        Ok(self.scale_latents(posterior.mean).cast(DType::F32))
    }

    /// A scaled sample of the posterior of images, `scale_latents(mean + std · ε)` with ε
    /// drawn from `noise` in the model's dtype (one draw of the mean's shape): img2img's
    /// starting latents.
    ///
    /// # Shapes
    /// `n` images `W×H` → `[n, latent_channels, H/8, W/8]`, f32.
    ///
    /// # Errors
    /// As [`VaeImageProcessor::preprocess`], or a replayed `noise` that does not fit.
    pub fn sample_images(
        &self,
        images: &[RgbImage],
        noise: &mut dyn NoiseSource,
    ) -> Result<Tensor<B, 4>> {
        let posterior = self.posterior(images)?;
        self.sample_posterior(posterior, noise)
    }

    /// `copies` scaled samples of the posterior of one image, the image encoded once: the
    /// result equals [`sample_images`](Self::sample_images) of `copies` copies of `image` (one
    /// draw of shape `[copies, …]` from `noise`), without running the encoder `copies` times.
    ///
    /// # Errors
    /// As [`sample_images`](Self::sample_images).
    pub fn sample_image_copies(
        &self,
        image: &RgbImage,
        copies: usize,
        noise: &mut dyn NoiseSource,
    ) -> Result<Tensor<B, 4>> {
        let posterior = self.posterior(std::slice::from_ref(image))?;
        self.sample_posterior_copies(posterior, copies, noise)
    }

    /// [`sample_image_copies`](Self::sample_image_copies) of pixels already in [-1, 1] (e.g.
    /// inpainting's masked image, whose masked pixels are 0).
    ///
    /// # Shapes
    /// `[1, 3, H, W]` (any float dtype) → `[copies, latent_channels, H/8, W/8]`, f32.
    ///
    /// # Errors
    /// A replayed `noise` that does not fit.
    pub fn sample_pixel_copies(
        &self,
        pixels: Tensor<B, 4>,
        copies: usize,
        noise: &mut dyn NoiseSource,
    ) -> Result<Tensor<B, 4>> {
        let posterior = self.encode(pixels.cast(self.encoder.conv_in.weight.val().dtype()));
        self.sample_posterior_copies(posterior, copies, noise)
    }

    /// `copies` samples of a one-image posterior (one draw of shape `[copies, …]`).
    fn sample_posterior_copies(
        &self,
        posterior: DiagonalGaussian<B>,
        copies: usize,
        noise: &mut dyn NoiseSource,
    ) -> Result<Tensor<B, 4>> {
        let posterior = DiagonalGaussian {
            mean: posterior.mean.repeat_dim(0, copies),
            logvar: posterior.logvar.repeat_dim(0, copies),
        };
        self.sample_posterior(posterior, noise)
    }

    /// `scale_latents(mean + std · ε)`, ε drawn from `noise` in the posterior's dtype, in f32.
    fn sample_posterior(
        &self,
        posterior: DiagonalGaussian<B>,
        noise: &mut dyn NoiseSource,
    ) -> Result<Tensor<B, 4>> {
        let mean = &posterior.mean;
        let eps = noise_tensor::<B, 4>(noise, mean.dims(), &mean.device(), mean.dtype())?;
        Ok(self.scale_latents(posterior.sample(eps)).cast(DType::F32))
    }

    /// Decodes scaled latents (any float dtype) to images, in the model's dtype.
    ///
    /// # Shapes
    /// `[n, latent_channels, h, w]` → `n` images `8w×8h`.
    ///
    /// # Errors
    /// [`Error::NonFinite`](prompt_diffusion_core::Error::NonFinite) when the decoded image
    /// holds NaN or infinite values (instead of a black image).
    pub fn decode_to_images(&self, latents: Tensor<B, 4>) -> Result<Vec<RgbImage>> {
        let dtype = self.dtype();
        let pixels = self.decode(self.unscale_latents(latents.cast(dtype)));
        check_finite(&pixels, Stage::VaeDecode, dtype)?;
        self.image_processor().postprocess(pixels)
    }

    /// The posterior of images, encoded in the encoder's dtype.
    fn posterior(&self, images: &[RgbImage]) -> Result<DiagonalGaussian<B>> {
        let weight = self.encoder.conv_in.weight.val();
        let pixels = self
            .image_processor()
            .preprocess::<B>(images, &weight.device())?;
        Ok(self.encode(pixels.cast(weight.dtype())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prompt_diffusion_core::noise::SeededNoise;
    use prompt_diffusion_core::testing::{TestBackend as B, max_abs_diff};
    use prompt_diffusion_core::weights::{LoadOptions, Pretrained};

    fn vae() -> AutoencoderKL<B> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/tiny-sd/vae");
        AutoencoderKL::from_pretrained(dir, &LoadOptions::default(), &Default::default()).unwrap()
    }

    fn image(side: u32) -> RgbImage {
        RgbImage::from_fn(side, side, |x, y| {
            [(x * 7) as u8, (y * 11) as u8, ((x + y) * 5) as u8].into()
        })
    }

    #[test]
    fn image_latents_equal_the_tensor_steps() {
        let vae = vae();
        let device = Default::default();
        let images = [image(16), image(16)];
        let pixels = images_to_tensor::<B>(&images, PixelRange::MinusOneToOne, &device).unwrap();
        let posterior = vae.encode(pixels);

        let mean = vae.encode_images(&images).unwrap();
        let expected = vae.scale_latents(posterior.mean.clone());
        assert_eq!(max_abs_diff(mean, expected), 0.0);

        let sample = vae
            .sample_images(&images, &mut SeededNoise::new(7))
            .unwrap();
        let eps = noise_tensor::<B, 4>(
            &mut SeededNoise::new(7),
            posterior.mean.dims(),
            &device,
            DType::F32,
        )
        .unwrap();
        let expected = vae.scale_latents(posterior.sample(eps));
        assert_eq!(max_abs_diff(sample.clone(), expected), 0.0);

        // One image's copies: the encoder runs once, the draws are those of the copies' batch.
        let copies = vae
            .sample_image_copies(&images[0], 2, &mut SeededNoise::new(7))
            .unwrap();
        let batch = vae
            .sample_images(
                &[images[0].clone(), images[0].clone()],
                &mut SeededNoise::new(7),
            )
            .unwrap();
        assert_eq!(max_abs_diff(copies, batch), 0.0);

        let decoded = vae.decode_to_images(sample.clone()).unwrap();
        let pixels = vae.decode(vae.unscale_latents(sample));
        let expected = tensor_to_images(pixels, PixelRange::MinusOneToOne).unwrap();
        assert_eq!(decoded, expected);
        assert_eq!(vae.dtype(), DType::F32);
    }

    #[test]
    fn non_finite_decodes_are_an_error() {
        let vae = vae();
        let latents = Tensor::<B, 4>::full([1, 4, 2, 2], f32::NAN, &Default::default());
        let err = vae.decode_to_images(latents).unwrap_err();
        assert!(
            matches!(err, prompt_diffusion_core::Error::NonFinite { .. }),
            "{err}"
        );
    }
}
