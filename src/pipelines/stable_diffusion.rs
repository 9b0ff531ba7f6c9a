//! `StableDiffusion`: text→image and image→image (diffusers `StableDiffusionPipeline`,
//! `StableDiffusionImg2ImgPipeline`), and the steps other pipelines compose: prompt encoding,
//! initial latents, the scheduler and decoding.

use std::path::Path;

use burn::prelude::*;
use burn::tensor::DType;
use image::RgbImage;
use prompt_diffusion_clip::ClipTokenizer;
use prompt_diffusion_core::finite::{Stage, check_finite};
use prompt_diffusion_core::image::{PixelRange, images_to_tensor, resize, tensor_to_images};
use prompt_diffusion_core::memory::MemoryLimit;
use prompt_diffusion_core::noise::{NoiseSource, SeededNoise, noise_tensor};
use prompt_diffusion_core::progress::StepCallback;
use prompt_diffusion_core::{Error, Result};
use prompt_diffusion_schedulers::{Scheduler, SchedulerKind};
use prompt_diffusion_unet::UNet2DConditionConfig;
use prompt_diffusion_vae::AutoencoderKLConfig;

use super::denoise::denoise;
use super::generation::{Generation, check_strength};
use super::loading::{Components, ModelOptions};
use super::memory::{self, RunShape};

/// A loaded Stable Diffusion 1.x/2.x model and its pipelines.
#[derive(Debug)]
pub struct StableDiffusion<B: Backend> {
    /// The model's components (public so other pipelines can reuse them).
    pub components: Components<B>,
    device: B::Device,
    memory_limit: MemoryLimit,
}

impl<B: Backend> StableDiffusion<B> {
    /// Loads a diffusers pipeline folder.
    ///
    /// # Errors
    /// See [`Components::from_pretrained`].
    pub fn from_pretrained(
        dir: impl AsRef<Path>,
        options: &ModelOptions,
        device: &B::Device,
    ) -> Result<Self> {
        let mut sd = Self::new(Components::from_pretrained(dir, options, device)?, device);
        sd.set_memory_limit(options.memory_limit);
        Ok(sd)
    }

    /// Loads an original single-file checkpoint (`.safetensors` or `.ckpt`).
    ///
    /// # Errors
    /// See [`Components::from_single_file`].
    pub fn from_single_file(
        path: impl AsRef<Path>,
        options: &ModelOptions,
        device: &B::Device,
    ) -> Result<Self> {
        let mut sd = Self::new(Components::from_single_file(path, options, device)?, device);
        sd.set_memory_limit(options.memory_limit);
        Ok(sd)
    }

    /// Wraps loaded components.
    pub fn new(components: Components<B>, device: &B::Device) -> Self {
        Self {
            components,
            device: device.clone(),
            memory_limit: MemoryLimit::default(),
        }
    }

    /// Sets the memory a generation may use (default: the memory available when it starts).
    pub fn set_memory_limit(&mut self, limit: MemoryLimit) {
        self.memory_limit = limit;
    }

    /// The memory a generation may use.
    pub fn memory_limit(&self) -> MemoryLimit {
        self.memory_limit
    }

    /// Refuses a generation of `width`×`height`, `images` images (guided or not) that is
    /// estimated not to fit in the memory limit; `extra_weights` (bytes) counts models loaded
    /// beside the components (a ControlNet, plug-ins). See [`memory::estimate`](super::memory::estimate).
    ///
    /// # Errors
    /// [`Error::OutOfMemory`] with the estimate and the limit.
    pub fn check_memory(
        &self,
        width: usize,
        height: usize,
        images: usize,
        guided: bool,
        extra_weights: u64,
    ) -> Result<()> {
        let shape = RunShape {
            width,
            height,
            images,
            guided,
        };
        memory::check(
            &self.components,
            shape,
            extra_weights,
            self.memory_limit,
            &self.device,
        )
    }

    /// The device the model runs on.
    pub fn device(&self) -> &B::Device {
        &self.device
    }

    /// The image side the UNet was trained at (`sample_size` × the VAE factor; 512 for SD1.5).
    pub fn native_size(&self) -> usize {
        native_size(self.components.unet.config(), self.components.vae.config())
    }

    /// Generates images from a prompt, drawing every random number from `generation.seed`.
    ///
    /// # Errors
    /// Invalid options ([`Error::InvalidInput`]), or [`Error::Cancelled`] from `callback`.
    pub fn text_to_image(
        &self,
        generation: &Generation,
        callback: &mut dyn StepCallback,
    ) -> Result<Vec<RgbImage>> {
        self.text_to_image_with_noise(generation, &mut SeededNoise::new(generation.seed), callback)
    }

    /// [`text_to_image`](Self::text_to_image) with an explicit noise stream (e.g. another
    /// implementation's noise, replayed).
    pub fn text_to_image_with_noise(
        &self,
        generation: &Generation,
        noise: &mut dyn NoiseSource,
        callback: &mut dyn StepCallback,
    ) -> Result<Vec<RgbImage>> {
        generation.validate()?;
        let (width, height) = generation.size(self.native_size());
        let (n, guided) = (generation.num_images, generation.guided());
        self.check_memory(width, height, n, guided, 0)?;
        let context = self.encode_prompt(generation)?;
        let mut scheduler = self.scheduler(generation.scheduler, generation.eta)?;
        scheduler.set_timesteps(generation.steps)?;
        let latents = self.initial_latents(
            generation,
            width,
            height,
            scheduler.init_noise_sigma(),
            noise,
        )?;
        let timesteps = scheduler.timesteps().to_vec();
        let latents = self.run_unet(
            scheduler.as_mut(),
            latents,
            &timesteps,
            generation,
            context,
            noise,
            callback,
        )?;
        self.decode(latents)
    }

    /// Transforms `image` according to the prompt; `strength` ∈ [0, 1] is how much of the
    /// schedule runs (1 = ignore the image's content). The image is resized to the requested
    /// size, or to its own size rounded down to a multiple of 8.
    ///
    /// # Errors
    /// Invalid options ([`Error::InvalidInput`]), or [`Error::Cancelled`] from `callback`.
    pub fn image_to_image(
        &self,
        generation: &Generation,
        image: &RgbImage,
        strength: f64,
        callback: &mut dyn StepCallback,
    ) -> Result<Vec<RgbImage>> {
        self.image_to_image_with_noise(
            generation,
            image,
            strength,
            &mut SeededNoise::new(generation.seed),
            callback,
        )
    }

    /// [`image_to_image`](Self::image_to_image) with an explicit noise stream; the draws are,
    /// in order, the VAE posterior sample, the noise added to the image latents, then the
    /// scheduler's (as diffusers).
    pub fn image_to_image_with_noise(
        &self,
        generation: &Generation,
        image: &RgbImage,
        strength: f64,
        noise: &mut dyn NoiseSource,
        callback: &mut dyn StepCallback,
    ) -> Result<Vec<RgbImage>> {
        generation.validate()?;
        check_strength(strength)?;
        if generation.latents.is_some() {
            return Err(Error::invalid_input(
                "latents",
                "initial latents apply to text-to-image only",
            ));
        }
        let width = generation.width.unwrap_or(image.width() as usize / 8 * 8);
        let height = generation.height.unwrap_or(image.height() as usize / 8 * 8);
        let (n, guided) = (generation.num_images, generation.guided());
        self.check_memory(width, height, n, guided, 0)?;
        let image = self.fit_image(image, generation)?;
        let context = self.encode_prompt(generation)?;
        let mut scheduler = self.scheduler(generation.scheduler, generation.eta)?;
        scheduler.set_timesteps(generation.steps)?;
        let start = img2img_start(generation.steps, strength)?;
        let timesteps = scheduler
            .timesteps()
            .get(start..)
            .unwrap_or_default()
            .to_vec();
        let Some(&first) = timesteps.first() else {
            return Err(Error::invalid_input("strength", "leaves no denoising step"));
        };
        scheduler.set_begin_index(start);

        let init = self.encode_image(&image, noise)?;
        let init = Tensor::cat(vec![init; generation.num_images], 0);
        let [n, c, h, w] = init.dims();
        let fresh = noise_tensor::<B, 4>(noise, [n, c, h, w], &self.device, DType::F32)?;
        let latents = scheduler.add_noise(init, fresh, first);
        let latents = self.run_unet(
            scheduler.as_mut(),
            latents,
            &timesteps,
            generation,
            context,
            noise,
            callback,
        )?;
        self.decode(latents)
    }

    /// The text context for the UNet: `[uncond × n; cond × n]` when guidance is on, else
    /// `cond × n` (`n` = number of images).
    ///
    /// # Shapes
    /// → `[(2·)n, 77, cross_attention_dim]`.
    pub fn encode_prompt(&self, generation: &Generation) -> Result<Tensor<B, 3>> {
        let n = generation.num_images;
        let cond = self.encode_text(&generation.prompt)?;
        let cond = Tensor::cat(vec![cond; n], 0);
        if !generation.guided() {
            return Ok(cond);
        }
        let uncond = self.encode_text(generation.negative_prompt.as_deref().unwrap_or(""))?;
        Ok(Tensor::cat(vec![Tensor::cat(vec![uncond; n], 0), cond], 0))
    }

    /// The CLIP last hidden state of one prompt, `[1, 77, D]`.
    pub fn encode_text(&self, prompt: &str) -> Result<Tensor<B, 3>> {
        let ids = self.components.tokenizer.encode_batch(&[prompt])?;
        let ids = ClipTokenizer::ids_tensor::<B>(&ids, &self.device)?;
        Ok(self.components.text_encoder.forward(ids).last_hidden_state)
    }

    /// Builds the scheduler `kind` (the model's own when `None`) from the model's scheduler
    /// config.
    pub fn scheduler(
        &self,
        kind: Option<SchedulerKind>,
        eta: f64,
    ) -> Result<Box<dyn Scheduler<B>>> {
        let mut scheduler = self.components.scheduler.build::<B>(kind, &self.device)?;
        scheduler.set_eta(eta);
        Ok(scheduler)
    }

    /// The initial latents for `width`×`height` images: the given latents or seeded noise,
    /// times `init_sigma` (f32).
    ///
    /// # Errors
    /// [`Error::Shape`] when given latents do not fit the size and number of images.
    pub fn initial_latents(
        &self,
        generation: &Generation,
        width: usize,
        height: usize,
        init_sigma: f64,
        noise: &mut dyn NoiseSource,
    ) -> Result<Tensor<B, 4>> {
        let factor = self.components.vae.config().downsampling_factor();
        let shape = [
            generation.num_images,
            self.components.vae.config().latent_channels,
            height / factor,
            width / factor,
        ];
        let latents = match &generation.latents {
            Some(data) => {
                if data.shape.as_slice() != shape {
                    return Err(Error::Shape {
                        origin: None,
                        key: "latents".into(),
                        expected: format!(
                            "{shape:?} (number of images, latent channels, height/{factor}, width/{factor})"
                        ),
                        found: data.shape.to_vec(),
                    });
                }
                Tensor::from_data(
                    data.clone().convert_dtype(DType::F32),
                    (&self.device, DType::F32),
                )
            }
            None => noise_tensor::<B, 4>(noise, shape, &self.device, DType::F32)?,
        };
        Ok(latents * init_sigma)
    }

    /// Runs the UNet denoising loop with text `context`.
    #[allow(clippy::too_many_arguments)]
    pub fn run_unet(
        &self,
        scheduler: &mut dyn Scheduler<B>,
        latents: Tensor<B, 4>,
        timesteps: &[f64],
        generation: &Generation,
        context: Tensor<B, 3>,
        noise: &mut dyn NoiseSource,
        callback: &mut dyn StepCallback,
    ) -> Result<Tensor<B, 4>> {
        let unet = &self.components.unet;
        let dtype = context.dtype();
        let mut model = |x: Tensor<B, 4>, t: f64| {
            unet.forward(x.cast(dtype), self.timestep(t), context.clone())
        };
        let guidance = generation.guided().then_some(generation.guidance_scale);
        denoise(
            scheduler, latents, timesteps, guidance, &mut model, noise, callback,
        )
    }

    /// A one-element timestep tensor.
    pub fn timestep(&self, t: f64) -> Tensor<B, 1> {
        Tensor::from_data(
            TensorData::new(vec![t as f32], [1]),
            (&self.device, DType::F32),
        )
    }

    /// Encodes an image to scaled latents, sampling the posterior with `noise`.
    ///
    /// # Shapes
    /// → `[1, 4, h/8, w/8]` (f32).
    pub fn encode_image(
        &self,
        image: &RgbImage,
        noise: &mut dyn NoiseSource,
    ) -> Result<Tensor<B, 4>> {
        let vae = &self.components.vae;
        let dtype = vae.encoder.conv_in.weight.val().dtype();
        let pixels = images_to_tensor::<B>(
            std::slice::from_ref(image),
            PixelRange::MinusOneToOne,
            &self.device,
        )?;
        let posterior = vae.encode(pixels.cast(dtype));
        let eps = noise_tensor::<B, 4>(noise, posterior.mean.dims(), &self.device, dtype)?;
        Ok(vae.scale_latents(posterior.sample(eps)).cast(DType::F32))
    }

    /// Decodes scaled latents to images.
    ///
    /// # Errors
    /// [`Error::NonFinite`] when the decoded image holds NaN or infinite values (instead of
    /// writing a black image).
    pub fn decode(&self, latents: Tensor<B, 4>) -> Result<Vec<RgbImage>> {
        let vae = &self.components.vae;
        let dtype = vae.decoder.conv_in.weight.val().dtype();
        let image = vae.decode(vae.unscale_latents(latents.cast(dtype)));
        check_finite(&image, Stage::VaeDecode, dtype)?;
        tensor_to_images(image, PixelRange::MinusOneToOne)
    }

    /// The img2img input at the requested size (or its own, floored to a multiple of 8).
    fn fit_image(&self, image: &RgbImage, generation: &Generation) -> Result<RgbImage> {
        let (w, h) = (image.width() as usize, image.height() as usize);
        let width = generation.width.unwrap_or(w / 8 * 8);
        let height = generation.height.unwrap_or(h / 8 * 8);
        if width == 0 || height == 0 {
            return Err(Error::invalid_input(
                "image",
                format!("{w}x{h} is smaller than 8 pixels"),
            ));
        }
        Ok(resize(image, width as u32, height as u32))
    }
}

/// The index of the first timestep img2img runs (diffusers' `get_timesteps`).
fn img2img_start(steps: usize, strength: f64) -> Result<usize> {
    let init = ((steps as f64 * strength) as usize).min(steps);
    if init == 0 {
        return Err(Error::invalid_input(
            "strength",
            format!("{strength} × {steps} steps leaves no denoising step"),
        ));
    }
    Ok(steps - init)
}

/// The image side a UNet was trained at: its `sample_size` × the VAE's downsampling factor
/// (512 for SD1.5).
pub(crate) fn native_size(unet: &UNet2DConditionConfig, vae: &AutoencoderKLConfig) -> usize {
    let sample = match &unet.sample_size {
        Some(prompt_diffusion_core::config::OneOrMany::One(s)) => *s,
        Some(prompt_diffusion_core::config::OneOrMany::Many(s)) => s.first().copied().unwrap_or(64),
        None => 64,
    };
    sample.saturating_mul(vae.downsampling_factor())
}
