//! `PromptDiffusion`: in-context generation (Z. Wang et al., "In-Context Learning Unlocked for
//! Diffusion Models", NeurIPS 2023; the official `run_prompt_diffusion.ipynb` and diffusers'
//! research pipeline `pipeline_prompt_diffusion.py`).
//!
//! An example pair (source → target) shows a task, the query is a new source, and the prompt
//! describes the wanted result; the output applies the task to the query. The example pair (6
//! channels) and the query (3 channels) go through the two hint encoders of a
//! [`PromptDiffusionControlNet`], whose residuals are added to Stable Diffusion's UNet (its
//! decoder is fine-tuned, so UNet and ControlNet come from the same checkpoint).
//!
//! As in the notebook: every image is resized so that the query's short side is `resolution`
//! (default: the model's native 512) with both sides rounded to multiples of 64; hints are in
//! [-1, 1] as in training ([`PixelRange::ZeroToOne`] reproduces the diffusers port); under
//! classifier-free guidance the unconditional branch keeps the pair and the query and only
//! changes the text. The rest is the txt2img run
//! ([`StableDiffusion::text_to_image_with`]) with the UNet and the ControlNet paired into one
//! denoiser, with DDIM unless another scheduler is named.

use prompt_diffusion_core::weights::Pretrained;
use std::path::Path;

use burn::prelude::*;
use image::RgbImage;
use prompt_diffusion_controlnet_prompt::{
    ControlNetConfig, ControlScales, InContextHint, PromptDiffusionControlNet,
    PromptDiffusionDenoiser,
};
use prompt_diffusion_core::image::{PixelRange, images_to_tensor, resize};
use prompt_diffusion_core::noise::NoiseSource;
use prompt_diffusion_core::progress::StepCallback;
use prompt_diffusion_core::weights::TensorSource;
use prompt_diffusion_core::{Error, Result};
use prompt_diffusion_schedulers::SchedulerKind;
use prompt_diffusion_unet::{Controlled, ControlledConditioning};

use super::controlnet::load_options;
use super::generation::Generation;
use super::inpaint::Inpaint;
use super::loading::{Components, ModelOptions, require_dir};
use super::stable_diffusion::StableDiffusion;

/// The official notebook's `a_prompt`, appended to the prompt after `", "`.
pub const NOTEBOOK_PROMPT_SUFFIX: &str = "best quality, extremely detailed";

/// The official notebook's `n_prompt`.
pub const NOTEBOOK_NEGATIVE_PROMPT: &str = "longbody, lowres, bad anatomy, bad hands, missing fingers, extra digit, fewer digits, cropped, worst quality, low quality";

/// Options of an in-context generation: the txt2img options of the run and what only in-context
/// generation has. [`Default`] is DDIM, 50 steps, guidance 7.5, no prompt suffix or negative
/// prompt and hints in [-1, 1]; [`notebook`](Self::notebook) is the official notebook's
/// settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct InContextOptions {
    /// Steps, guidance, negative prompt, seed, batch size, initial latents and η, as for
    /// txt2img. Its `prompt` is replaced by the one given to the run, its `scheduler` `None`
    /// is DDIM (built from the model's scheduler config), and its `width`/`height`, when set,
    /// override [`resolution`](Self::resolution).
    pub generation: Generation,
    /// Text appended to the prompt after `", "` (the notebook's `a_prompt`).
    pub prompt_suffix: Option<String>,
    /// Short side of the output; the other side keeps the query's aspect ratio and both are
    /// rounded to multiples of 64. `None` is the model's native size (512 for SD 1.5).
    pub resolution: Option<usize>,
    /// Value range of the hints: [-1, 1] as in training and the notebook (default), or [0, 1]
    /// as in the diffusers port.
    pub hint_range: PixelRange,
    /// Scales of the ControlNet residuals (default 1 for all; the notebook's guess mode is
    /// [`ControlScales::LdmGuessMode`]). Both guidance halves get the same residual scales.
    pub control_scales: ControlScales,
}

impl Default for InContextOptions {
    fn default() -> Self {
        Self::new(Generation::default())
    }
}

impl InContextOptions {
    /// The options of a run with `generation`'s txt2img options and the in-context defaults
    /// (no prompt suffix, native resolution, hints in [-1, 1], residual scale 1).
    pub fn new(generation: Generation) -> Self {
        Self {
            generation,
            prompt_suffix: None,
            resolution: None,
            hint_range: PixelRange::MinusOneToOne,
            control_scales: ControlScales::Uniform(1.0),
        }
    }

    /// The official notebook: DDIM with 100 steps, guidance 9, [`NOTEBOOK_PROMPT_SUFFIX`] and
    /// [`NOTEBOOK_NEGATIVE_PROMPT`], hints in [-1, 1], short side 512 (native).
    pub fn notebook() -> Self {
        let generation = Generation::default()
            .with_negative_prompt(NOTEBOOK_NEGATIVE_PROMPT)
            .with_steps(100)
            .with_guidance_scale(9.0)
            .with_scheduler(SchedulerKind::Ddim);
        Self::new(generation).with_prompt_suffix(NOTEBOOK_PROMPT_SUFFIX)
    }

    prompt_diffusion_core::setters! {
        /// Sets the text appended to the prompt.
        with_prompt_suffix(prompt_suffix: impl Into<String>) = Some(prompt_suffix.into());
        /// Sets the short side of the output.
        with_resolution(resolution: usize) = Some(resolution);
        /// Sets the value range of the hints.
        with_hint_range(hint_range: PixelRange);
        /// Sets the scales of the ControlNet residuals.
        with_control_scales(control_scales: ControlScales);
        /// Sets the negative prompt.
        with_negative_prompt(negative_prompt: impl Into<String>) in generation
            = Some(negative_prompt.into());
        /// Sets the number of steps.
        with_steps(steps: usize) in generation;
        /// Sets the guidance scale.
        with_guidance_scale(guidance_scale: f64) in generation;
        /// Chooses the scheduler.
        with_scheduler(scheduler: SchedulerKind) in generation = Some(scheduler);
        /// Sets the output width, overriding the resolution.
        with_width(width: usize) in generation = Some(width);
        /// Sets the output height, overriding the resolution.
        with_height(height: usize) in generation = Some(height);
        /// Sets the number of images.
        with_num_images(num_images: usize) in generation;
        /// Sets the seed.
        with_seed(seed: u64) in generation;
        /// Gives the initial latents.
        with_latents(latents: TensorData) in generation = Some(latents);
        /// Sets DDIM's η.
        with_eta(eta: f64) in generation;
    }

    /// The txt2img options of the run for `prompt` (suffix appended, DDIM by default).
    pub fn generation(&self, prompt: &str) -> Generation {
        let prompt = match &self.prompt_suffix {
            Some(suffix) => format!("{prompt}, {suffix}"),
            None => prompt.to_string(),
        };
        let scheduler = self.generation.scheduler.unwrap_or(SchedulerKind::Ddim);
        self.generation
            .clone()
            .with_prompt(prompt)
            .with_scheduler(scheduler)
    }
}

/// The longest output side [`in_context_size`] accepts (8192 pixels: 1024×1024 latents).
pub const IN_CONTEXT_MAX_SIDE: usize = 8192;

/// The output size for a `width`×`height` query: the notebook's `resize_image` (short side
/// `resolution`, each side rounded half-to-even to a multiple of 64).
///
/// # Errors
/// [`Error::InvalidInput`] when a side would be 0 or longer than [`IN_CONTEXT_MAX_SIDE`].
pub fn in_context_size(width: u32, height: u32, resolution: usize) -> Result<(usize, usize)> {
    let short = width.min(height);
    if short == 0 || resolution == 0 {
        return Err(Error::invalid_input(
            "size",
            format!("a {width}x{height} query at resolution {resolution} is empty"),
        ));
    }
    let k = resolution as f64 / f64::from(short);
    let round64 = |side: u32| (f64::from(side) * k / 64.0).round_ties_even() * 64.0;
    let (w, h) = (round64(width), round64(height));
    if w.max(h) > IN_CONTEXT_MAX_SIDE as f64 {
        return Err(Error::invalid_input(
            "resolution",
            format!(
                "{resolution} makes the {width}x{height} query {w}x{h}; \
                 sides are limited to {IN_CONTEXT_MAX_SIDE}"
            ),
        ));
    }
    let (w, h) = (w as usize, h as usize);
    if w == 0 || h == 0 {
        return Err(Error::invalid_input(
            "resolution",
            format!("{resolution} makes the {width}x{height} query {w}x{h}; use at least 64"),
        ));
    }
    Ok((w, h))
}

/// A Stable Diffusion model with the Prompt Diffusion ControlNet.
#[derive(Debug)]
pub struct PromptDiffusion<B: Backend> {
    /// The Stable Diffusion model (its UNet is Prompt Diffusion's fine-tuned one).
    pub sd: StableDiffusion<B>,
    /// The ControlNet with the example-pair and query encoders.
    pub controlnet: PromptDiffusionControlNet<B>,
}

impl<B: Backend> PromptDiffusion<B> {
    /// Pairs a model with a Prompt Diffusion ControlNet.
    pub fn new(sd: StableDiffusion<B>, controlnet: PromptDiffusionControlNet<B>) -> Self {
        Self { sd, controlnet }
    }

    /// Loads the diffusers-converted layout: a folder with `controlnet/` and the pipeline
    /// components, either beside it (`zhendongw/prompt-diffusion-diffusers`) or in `base/`
    /// (`iczaw/prompt-diffusion-diffusers`). A Hugging Face repository id of the first layout
    /// is found in the cache or downloaded (see [`ModelOptions::hub`]).
    ///
    /// # Errors
    /// A missing folder or file, an invalid config, or weights that do not match.
    pub fn from_pretrained(
        dir: impl AsRef<Path>,
        options: &ModelOptions,
        device: &B::Device,
    ) -> Result<Self> {
        let folders = super::loading::SD_FOLDERS;
        let folders: Vec<&str> = std::iter::once("controlnet").chain(folders).collect();
        let dir = &options.resolve_pipeline(dir.as_ref(), &folders)?;
        require_dir(dir, "model folder")?;
        if !dir.join("controlnet").is_dir() {
            return Err(Error::format(
                dir,
                "no `controlnet/` folder: not a Prompt Diffusion model (diffusers layout: pipeline components + controlnet/)",
            ));
        }
        let controlnet = PromptDiffusionControlNet::from_pretrained(
            dir.join("controlnet"),
            &load_options(options),
            device,
        )?;
        let base = dir.join("base");
        let base = if base.is_dir() {
            base
        } else {
            dir.to_path_buf()
        };
        let sd = StableDiffusion::from_pretrained(base, options, device)?;
        Ok(Self::new(sd, controlnet))
    }

    /// Loads the original single checkpoint (`network-step=04999.ckpt` or a safetensors copy):
    /// ControlNet `control_model.*`, fine-tuned UNet `model.diffusion_model.*`, VAE and CLIP.
    /// `options.config` may name a diffusers folder describing it (as for SD single files); its
    /// `controlnet/config.json`, when present, replaces the released model's ControlNet config.
    ///
    /// # Errors
    /// A missing or unreadable file, a file without Prompt Diffusion's ControlNet, or weights
    /// that do not match.
    pub fn from_single_file(
        path: impl AsRef<Path>,
        options: &ModelOptions,
        device: &B::Device,
    ) -> Result<Self> {
        let checkpoint = TensorSource::open(path)?;
        PromptDiffusionDenoiser::<B>::unet_tensors(&checkpoint)?;
        let config = match &options.config {
            Some(dir) if dir.join("controlnet/config.json").is_file() => {
                ControlNetConfig::from_file(dir.join("controlnet/config.json"))?
            }
            _ => ControlNetConfig::prompt_diffusion(),
        };
        let load = load_options(options);
        let controlnet =
            PromptDiffusionControlNet::from_single_file(&config, &checkpoint, &load, device)?;
        let components = Components::from_checkpoint(&checkpoint, options, device)?;
        let mut sd = StableDiffusion::new(components, device);
        sd.set_memory_limit(options.memory_limit);
        Ok(Self::new(sd, controlnet))
    }

    /// Generates images that apply the `example_source` → `example_target` task to `query`,
    /// described by `prompt`. Images of other sizes than the output are resized to it. Image
    /// `i` is drawn from `options.seed + i` ([`Generation::noise`]).
    ///
    /// # Errors
    /// Invalid options ([`Error::InvalidInput`]), latents of the wrong shape ([`Error::Shape`]),
    /// or [`Error::Cancelled`] from `callback`.
    pub fn generate(
        &self,
        example_source: &RgbImage,
        example_target: &RgbImage,
        query: &RgbImage,
        prompt: &str,
        options: &InContextOptions,
        callback: &mut dyn StepCallback,
    ) -> Result<Vec<RgbImage>> {
        let noise = &mut *options.generation(prompt).noise();
        let images = [example_source, example_target, query];
        self.generate_with_noise(images, prompt, options, noise, callback)
    }

    /// [`generate`](Self::generate) with the images as `[example_source, example_target,
    /// query]` and an explicit noise stream.
    pub fn generate_with_noise(
        &self,
        images: [&RgbImage; 3],
        prompt: &str,
        options: &InContextOptions,
        noise: &mut dyn NoiseSource,
        callback: &mut dyn StepCallback,
    ) -> Result<Vec<RgbImage>> {
        self.run(images, None, prompt, options, noise, callback)
    }

    /// In-context generation restricted to the masked region of an image: the example pair
    /// and the query steer the run as in [`generate`](Self::generate), and only the white part
    /// of `inpaint.mask` is regenerated (the blending of diffusers' ControlNet inpainting with an
    /// ordinary UNet: see [`StableDiffusion::inpaint`]). The image and the mask are resized to
    /// the output size (the query's). Images are `[example_source, example_target, query]`.
    ///
    /// # Errors
    /// As [`generate`](Self::generate) and [`StableDiffusion::inpaint`].
    pub fn inpaint(
        &self,
        images: [&RgbImage; 3],
        inpaint: &Inpaint<'_>,
        prompt: &str,
        options: &InContextOptions,
        callback: &mut dyn StepCallback,
    ) -> Result<Vec<RgbImage>> {
        let noise = &mut *options.generation(prompt).noise();
        self.run(images, Some(inpaint), prompt, options, noise, callback)
    }

    /// [`inpaint`](Self::inpaint) with an explicit noise stream (the draws of
    /// [`StableDiffusion::inpaint_with_noise`]).
    pub fn inpaint_with_noise(
        &self,
        images: [&RgbImage; 3],
        inpaint: &Inpaint<'_>,
        prompt: &str,
        options: &InContextOptions,
        noise: &mut dyn NoiseSource,
        callback: &mut dyn StepCallback,
    ) -> Result<Vec<RgbImage>> {
        self.run(images, Some(inpaint), prompt, options, noise, callback)
    }

    /// The run of [`generate`](Self::generate) and [`inpaint`](Self::inpaint).
    fn run(
        &self,
        images: [&RgbImage; 3],
        inpaint: Option<&Inpaint<'_>>,
        prompt: &str,
        options: &InContextOptions,
        noise: &mut dyn NoiseSource,
        callback: &mut dyn StepCallback,
    ) -> Result<Vec<RgbImage>> {
        let generation = options.generation(prompt);
        generation.validate()?;
        let (size, hint) = self.hint(images, &generation, options)?;
        let denoiser = Controlled::new(&self.sd.components.unet, &self.controlnet);
        let conditioning = |context| ControlledConditioning { context, hint };
        let g = &generation;
        self.sd
            .generate_with(g, inpaint, size, denoiser, conditioning, noise, callback)
    }

    /// The output size (the query's, fitted to the resolution, unless the generation asks for
    /// one) and the ControlNet's inputs at that size, batched for the run.
    fn hint(
        &self,
        [source, target, query]: [&RgbImage; 3],
        generation: &Generation,
        options: &InContextOptions,
    ) -> Result<((usize, usize), InContextHint<B>)> {
        let resolution = options.resolution.unwrap_or(self.sd.native_size());
        let (w, h) = in_context_size(query.width(), query.height(), resolution)?;
        let size = (
            generation.width.unwrap_or(w),
            generation.height.unwrap_or(h),
        );
        if !same_aspect(source, query) || !same_aspect(target, query) {
            tracing::warn!(
                "the example pair's aspect ratio differs from the query's; it is stretched to {}x{}",
                size.0,
                size.1
            );
        }
        let n = generation.num_images * if generation.guided() { 2 } else { 1 };
        let hint = |image: &RgbImage| -> Result<Tensor<B, 4>> {
            let image = resize(image, size.0 as u32, size.1 as u32);
            let t = images_to_tensor::<B>(&[image], options.hint_range, self.sd.device())?;
            Ok(Tensor::cat(vec![t; n], 0))
        };
        let hint = InContextHint {
            pair: Tensor::cat(vec![hint(source)?, hint(target)?], 1),
            query: hint(query)?,
            scales: options.control_scales.clone(),
        };
        Ok((size, hint))
    }
}

/// Whether two images' aspect ratios agree within 1 %.
fn same_aspect(a: &RgbImage, b: &RgbImage) -> bool {
    let ab = u64::from(a.width()) * u64::from(b.height());
    let ba = u64::from(b.width()) * u64::from(a.height());
    ab.abs_diff(ba) * 100 <= ab.max(ba)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_the_notebook() {
        assert_eq!(in_context_size(512, 512, 512).unwrap(), (512, 512));
        // 640×480 → k = 512/480: 682.7 → 704, 512.
        assert_eq!(in_context_size(640, 480, 512).unwrap(), (704, 512));
        assert_eq!(in_context_size(480, 640, 512).unwrap(), (512, 704));
        // 1000×300 at 64: 213.3 → 192.
        assert_eq!(in_context_size(1000, 300, 64).unwrap(), (192, 64));
        assert_eq!(in_context_size(96, 48, 64).unwrap(), (128, 64));
        // A half multiple of 64 rounds to even, as numpy does: 96/64 = 1.5 → 2.
        assert_eq!(in_context_size(96, 64, 64).unwrap(), (128, 64));
        assert_eq!(in_context_size(160, 64, 64).unwrap(), (128, 64));
        assert!(in_context_size(64, 64, 16).is_err());
        assert!(in_context_size(0, 64, 512).is_err());
        assert!(in_context_size(64, 64, 0).is_err());
        assert_eq!(in_context_size(64, 32, 4096).unwrap(), (8192, 4096));
        let err = in_context_size(64, 32, usize::MAX).unwrap_err().to_string();
        assert!(err.contains("8192"), "{err}");
    }

    #[test]
    fn notebook_prompts() {
        let g = InContextOptions::notebook().generation("a turtle");
        assert_eq!(g.prompt, "a turtle, best quality, extremely detailed");
        assert_eq!(g.negative_prompt.as_deref(), Some(NOTEBOOK_NEGATIVE_PROMPT));
        assert_eq!((g.steps, g.guidance_scale), (100, 9.0));
        let g = InContextOptions::default().generation("a turtle");
        assert_eq!(g.prompt, "a turtle");
        assert_eq!(g.scheduler, Some(SchedulerKind::Ddim));
    }
}
