//! `StableDiffusion`: text→image and image→image (diffusers `StableDiffusionPipeline`,
//! `StableDiffusionImg2ImgPipeline`), and the steps other pipelines compose: prompt encoding,
//! initial latents, the scheduler and decoding.

use std::path::Path;

use burn::prelude::*;
use burn::tensor::DType;
use image::RgbImage;
use prompt_diffusion_clip::ClipTokenizer;
use prompt_diffusion_core::denoiser::{Denoiser, Guided};
use prompt_diffusion_core::image::resize;
use prompt_diffusion_core::memory::MemoryLimit;
use prompt_diffusion_core::noise::{NoiseSource, noise_tensor};
use prompt_diffusion_core::progress::StepCallback;
use prompt_diffusion_core::{Error, Result};
use prompt_diffusion_schedulers::Sampler;
use prompt_diffusion_unet::UNet2DConditionConfig;
use prompt_diffusion_vae::AutoencoderKLConfig;

use super::generation::Generation;
use super::loading::{Components, ModelOptions};
use super::memory::{self, RunShape};

/// A loaded Stable Diffusion 1.x/2.x model and its pipelines.
#[derive(Debug)]
pub struct StableDiffusion<B: Backend> {
    /// The model's components (public so other pipelines can reuse them).
    pub components: Components<B>,
    device: B::Device,
    memory_limit: MemoryLimit,
    /// The LoRAs merged into the components (see `load_lora`).
    pub(super) loras: super::lora::Loras<B>,
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
            loras: Default::default(),
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

    /// Generates images from a prompt, image `i` drawn from `generation.seed + i`
    /// ([`Generation::noise`]).
    ///
    /// # Errors
    /// Invalid options ([`Error::InvalidInput`]), or [`Error::Cancelled`] from `callback`.
    pub fn text_to_image(
        &self,
        generation: &Generation,
        callback: &mut dyn StepCallback,
    ) -> Result<Vec<RgbImage>> {
        self.text_to_image_with_noise(generation, &mut *generation.noise(), callback)
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
        let factor = self.components.vae.config().downsampling_factor();
        let size = generation.size(self.native_size(), factor);
        let unet = &self.components.unet;
        self.text_to_image_with(generation, size, unet, |context| context, noise, callback)
    }

    /// Text→image of `width`×`height` images with any denoiser built on this model's UNet (a
    /// ControlNet, Prompt Diffusion, …): checks the memory, encodes the prompt, hands the text
    /// context to `conditioning` to make the denoiser's conditioning, samples from the initial
    /// latents with classifier-free guidance, and decodes.
    ///
    /// # Errors
    /// [`Error::OutOfMemory`], latents of the wrong shape, the denoiser's errors, or
    /// [`Error::Cancelled`] from `callback`.
    pub fn text_to_image_with<D: Denoiser<B>>(
        &self,
        generation: &Generation,
        (width, height): (usize, usize),
        denoiser: &D,
        conditioning: impl FnOnce(Tensor<B, 3>) -> D::Conditioning,
        noise: &mut dyn NoiseSource,
        callback: &mut dyn StepCallback,
    ) -> Result<Vec<RgbImage>> {
        let n = generation.num_images;
        self.check_memory(width, height, n, generation.guided(), 0)?;
        let conditioning = conditioning(self.encode_prompt(generation)?);
        let mut sampler = self.sampler(generation)?;
        let shape = self.latent_shape(n, width, height);
        let given = generation.latents.as_ref();
        let latents = sampler.initial_latents(shape, given, noise, &self.device)?;
        let denoiser = Guided::new(denoiser, generation.guidance());
        let latents = sampler.sample(&denoiser, &conditioning, latents, noise, callback)?;
        self.decode(latents)
    }

    /// Transforms `image` according to the prompt; `strength` ∈ [0, 1] is how much of the
    /// schedule runs (1 = ignore the image's content). The image is resized to the requested
    /// size, or to its own size rounded down to a multiple of 8. Output `i` is drawn from
    /// `generation.seed + i` ([`Generation::noise`]).
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
        let noise = &mut *generation.noise();
        self.image_to_image_with_noise(generation, image, strength, noise, callback)
    }

    /// [`image_to_image`](Self::image_to_image) with an explicit noise stream; the draws are,
    /// in order, the VAE posterior sample of each output (`[n, …]`: the image encoded once,
    /// one sample per output, as diffusers with a generator per image), the noise added to the
    /// image latents, then the scheduler's (as diffusers).
    pub fn image_to_image_with_noise(
        &self,
        generation: &Generation,
        image: &RgbImage,
        strength: f64,
        noise: &mut dyn NoiseSource,
        callback: &mut dyn StepCallback,
    ) -> Result<Vec<RgbImage>> {
        generation.validate()?;
        Sampler::<B>::check_strength(strength)?;
        if generation.latents.is_some() {
            return Err(Error::invalid_input(
                "latents",
                "initial latents apply to text-to-image only",
            ));
        }
        let (width, height) = img2img_size(image, generation)?;
        let (n, guided) = (generation.num_images, generation.guided());
        self.check_memory(width, height, n, guided, 0)?;
        let image = resize(image, width as u32, height as u32);
        let context = self.encode_prompt(generation)?;
        let mut sampler = self.sampler(generation)?.with_strength(strength)?;
        let init = self.components.vae.sample_image_copies(&image, n, noise)?;
        let eps = noise_tensor::<B, 4>(noise, init.dims(), &self.device, DType::F32)?;
        let latents = sampler.noised(init, eps);
        let unet = Guided::new(&self.components.unet, generation.guidance());
        let latents = sampler.sample(&unet, &context, latents, noise, callback)?;
        self.decode(latents)
    }

    /// The text context for the UNet: `[uncond × n; cond × n]` when guidance is on, else
    /// `cond × n` (`n` = number of images). With [`Generation::prompt_weighting`] the prompts
    /// are weighted and chunked ([`encode_text_weighted`](Self::encode_text_weighted)) and the
    /// negative prompt is padded to the prompt's number of chunks; textual-inversion tokens are
    /// expanded either way.
    ///
    /// # Shapes
    /// → `[(2·)n, 77, cross_attention_dim]`, or `[(2·)n, 77·k, cross_attention_dim]` for
    /// weighted prompts of `k` chunks.
    pub fn encode_prompt(&self, generation: &Generation) -> Result<Tensor<B, 3>> {
        let n = generation.num_images;
        let negative = generation.negative_prompt.as_deref().unwrap_or("");
        let negative = generation.guided().then_some(negative);
        let weighted = generation.prompt_weighting;
        let (cond, uncond) = self.prompt_contexts(&generation.prompt, negative, weighted)?;
        let cond = Tensor::cat(vec![cond; n], 0);
        Ok(match uncond {
            Some(uncond) => Tensor::cat(vec![Tensor::cat(vec![uncond; n], 0), cond], 0),
            None => cond,
        })
    }

    /// The CLIP last hidden state of one prompt, `[1, 77, D]` (diffusers' tokenisation:
    /// truncated at 77 tokens, no weighting; multi-vector textual-inversion tokens expanded).
    pub fn encode_text(&self, prompt: &str) -> Result<Tensor<B, 3>> {
        let tokenizer = &self.components.tokenizer;
        let prompt = tokenizer.expand_multi_vector_tokens(prompt)?;
        let ids = tokenizer.encode_batch(&[&prompt])?;
        let ids = ClipTokenizer::ids_tensor::<B>(&ids, &self.device)?;
        Ok(self.components.text_encoder.forward(ids).last_hidden_state)
    }

    /// The sampler of `generation`: its scheduler (the model's own when it names none) built
    /// from the model's scheduler config, with DDIM's η and the timesteps set.
    ///
    /// # Errors
    /// An unsupported scheduler config or an invalid number of steps.
    pub fn sampler(&self, generation: &Generation) -> Result<Sampler<B>> {
        let config = &self.components.scheduler;
        let (kind, eta, steps) = (generation.scheduler, generation.eta, generation.steps);
        Sampler::from_config(config, kind, eta, steps, &self.device)
    }

    /// The latent shape of `n` images of `width`×`height` pixels.
    pub fn latent_shape(&self, n: usize, width: usize, height: usize) -> [usize; 4] {
        let vae = self.components.vae.config();
        let factor = vae.downsampling_factor();
        [n, vae.latent_channels, height / factor, width / factor]
    }

    /// Decodes scaled latents to images ([`AutoencoderKL::decode_to_images`](prompt_diffusion_vae::AutoencoderKL::decode_to_images)).
    ///
    /// # Errors
    /// [`Error::NonFinite`] when the decoded image holds NaN or infinite values (instead of
    /// writing a black image).
    pub fn decode(&self, latents: Tensor<B, 4>) -> Result<Vec<RgbImage>> {
        self.components.vae.decode_to_images(latents)
    }
}

/// The size img2img works at: the requested one, or the image's own floored to a multiple of 8.
pub(crate) fn img2img_size(image: &RgbImage, generation: &Generation) -> Result<(usize, usize)> {
    let (w, h) = image.dimensions();
    let (width, height) = generation.image_size((w, h));
    if width == 0 || height == 0 {
        return Err(Error::invalid_input(
            "image",
            format!("{w}x{h} is smaller than 8 pixels"),
        ));
    }
    Ok((width, height))
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
