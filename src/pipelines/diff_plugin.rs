//! `DiffPlugin`: image restoration with Diff-Plugin Task-Plugins on a frozen Stable Diffusion
//! 1.x (Diff-Plugin `infer.py` for one task, `demo.py` for instructions).
//!
//! Per plugin: F^p = TPB(CLIP vision tokens of the **original** image); z_c = 0.18215 · VAE
//! mean of the working image; start from `add_noise(z_c, ε, t₀)` (restoration tasks) or ε
//! (low-light, highlight); UniPC (bh2, order 2, last step to t = 0) without guidance, the UNet
//! attending to F^p with the SCB's F^s added to its first skips; decode. An instruction is
//! turned into plugins by the Plugin-Selector; selected plugins run in the official order,
//! each on the previous one's output, the first with `steps` steps and the others with
//! `chain_steps`.

use prompt_diffusion_core::weights::Pretrained;
use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::tensor::DType;
use image::RgbImage;
use prompt_diffusion_clip::{CLIPVisionModel, ClipTokenizer};
use prompt_diffusion_core::image::{MAX_IMAGE_SIDE, resize};
use prompt_diffusion_core::noise::{NoiseSource, ReplayNoise, SeededNoise, noise_tensor};
use prompt_diffusion_core::progress::StepCallback;
use prompt_diffusion_core::weights::LoadOptions;
use prompt_diffusion_core::{Error, Result};
use prompt_diffusion_diff_plugin::{
    PluginFiles, PluginSelector, SELECTOR_FILE, Selection, StartLatent, Task, TaskPlugin, select,
    weights,
};
use prompt_diffusion_schedulers::{FinalSigmasType, Sampler, Scheduler, SchedulerKind};
use prompt_diffusion_unet::{Controlled, ControlledConditioning};

use super::stable_diffusion::StableDiffusion;

/// What to restore.
#[derive(Debug, Clone, PartialEq)]
pub enum RestoreTarget {
    /// Run one task's plugin.
    Task(Task),
    /// Let the Plugin-Selector pick plugins from an instruction ("remove the rain and
    /// brighten it").
    Instruction(String),
}

/// The size the image is restored at (the official scripts differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkingSize {
    /// `infer.py`: an image whose shorter side is below `n` is scaled so that side is `n`
    /// (the other `floor(n · long / short)`); larger images keep their size.
    AtLeast(usize),
    /// `demo.py`: the shorter side is always scaled to `n` (its slider: 512–1024).
    ShortSide(usize),
    /// The image's own size.
    Native,
}

impl WorkingSize {
    /// The working size of a `width`×`height` image, floored to a multiple of `multiple`
    /// (diffusers' `VaeImageProcessor`; 0 is taken as 1). An empty image stays empty.
    pub fn apply(self, width: usize, height: usize, multiple: usize) -> (usize, usize) {
        let multiple = multiple.max(1);
        let scale_short = |n: usize| {
            if width < height {
                (n, (n as f64 / width as f64 * height as f64) as usize)
            } else {
                ((n as f64 / height as f64 * width as f64) as usize, n)
            }
        };
        let (w, h) = match self {
            _ if width == 0 || height == 0 => (width, height),
            WorkingSize::AtLeast(n) if width < n || height < n => scale_short(n),
            WorkingSize::ShortSide(n) => scale_short(n),
            _ => (width, height),
        };
        (w / multiple * multiple, h / multiple * multiple)
    }
}

/// Options of a restoration, with the official defaults.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Restore {
    /// A task or an instruction.
    pub target: RestoreTarget,
    /// UniPC steps of the first (or only) plugin (default 20).
    pub steps: usize,
    /// Steps of every later plugin of a chain (default 3, `demo.py`).
    pub chain_steps: usize,
    /// Seed of the noise; every plugin of a chain redraws it from this seed (default 42).
    pub seed: u64,
    /// Working size (default `AtLeast(512)` for a task, `ShortSide(512)` for an instruction).
    pub size: WorkingSize,
}

impl Restore {
    /// Restores with one task's plugin (`infer.py` defaults).
    pub fn task(task: Task) -> Self {
        Self {
            target: RestoreTarget::Task(task),
            steps: 20,
            chain_steps: 3,
            seed: 42,
            size: WorkingSize::AtLeast(512),
        }
    }

    /// Restores with the plugins the selector picks for `instruction` (`demo.py` defaults).
    pub fn instruction(instruction: impl Into<String>) -> Self {
        Self {
            target: RestoreTarget::Instruction(instruction.into()),
            size: WorkingSize::ShortSide(512),
            ..Self::task(Task::Derain)
        }
    }

    prompt_diffusion_core::setters! {
        /// Sets the steps of the first plugin.
        with_steps(steps: usize);
        /// Sets the steps of later plugins in a chain.
        with_chain_steps(chain_steps: usize);
        /// Sets the seed.
        with_seed(seed: u64);
        /// Sets the working size.
        with_size(size: WorkingSize);
    }

    /// Checks the options: at least one step, a non-blank instruction, a working size of 1 to
    /// [`MAX_IMAGE_SIDE`] pixels.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming the option.
    pub fn validate(&self) -> Result<()> {
        if self.steps == 0 || self.chain_steps == 0 {
            return Err(Error::invalid_input("steps", "must be at least 1"));
        }
        if let RestoreTarget::Instruction(text) = &self.target
            && text.trim().is_empty()
        {
            return Err(Error::invalid_input("instruction", "is empty"));
        }
        if let WorkingSize::AtLeast(n) | WorkingSize::ShortSide(n) = self.size
            && (n == 0 || n > MAX_IMAGE_SIDE as usize)
        {
            return Err(Error::invalid_input(
                "size",
                format!("{n} is not in 1..={MAX_IMAGE_SIDE} pixels"),
            ));
        }
        Ok(())
    }

    /// The working size of a `width`×`height` image (see [`WorkingSize::apply`]).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when a side would be 0 or above [`MAX_IMAGE_SIDE`].
    pub fn working_size(
        &self,
        width: usize,
        height: usize,
        multiple: usize,
    ) -> Result<(usize, usize)> {
        let (w, h) = self.size.apply(width, height, multiple);
        if w == 0 || h == 0 || w.max(h) > MAX_IMAGE_SIDE as usize {
            return Err(Error::invalid_input(
                "image",
                format!(
                    "{width}x{height} gives a {w}x{h} working size; sides must be in {multiple}..={MAX_IMAGE_SIDE}"
                ),
            ));
        }
        Ok((w, h))
    }
}

/// The result of a restoration.
#[derive(Debug, Clone)]
pub struct Restored {
    /// The restored image, at the working size.
    pub image: RgbImage,
    /// The plugins that ran, in order (empty when the selector chose "null").
    pub tasks: Vec<Task>,
    /// The selector's scores and choice, for an instruction.
    pub selection: Option<Selection>,
}

/// Stable Diffusion with the CLIP image encoder and a folder of Task-Plugins.
#[derive(Debug)]
pub struct DiffPlugin<B: Backend> {
    /// The frozen base model (SD 1.4/1.5): UNet, VAE, and the text encoder the selector uses.
    pub sd: StableDiffusion<B>,
    /// The CLIP vision tower (ViT-L/14 for the released plugins).
    pub image_encoder: CLIPVisionModel<B>,
    plugins: PathBuf,
    options: LoadOptions,
}

impl<B: Backend> DiffPlugin<B> {
    /// Adds the CLIP vision folder (`openai/clip-vit-large-patch14`, a full `CLIPModel` or a
    /// `CLIPVisionModel`) and the released `pre-trained/` folder to a loaded base model.
    /// Plugins are read when a restoration needs them.
    ///
    /// # Errors
    /// A missing or invalid CLIP folder, or a missing plugins folder.
    pub fn new(
        sd: StableDiffusion<B>,
        clip_vision: impl AsRef<Path>,
        plugins: impl AsRef<Path>,
    ) -> Result<Self> {
        let dir = clip_vision.as_ref();
        let options = LoadOptions::default();
        let image_encoder = CLIPVisionModel::from_pretrained(dir, &options, sd.device())?;
        let plugins = plugins.as_ref().to_path_buf();
        super::loading::require_dir(&plugins, "Task-Plugin folder")?;
        Ok(Self {
            sd,
            image_encoder,
            plugins,
            options,
        })
    }

    /// The files of `task`'s plugin.
    ///
    /// # Errors
    /// [`Error::Io`] naming the missing file or folder.
    pub fn plugin_files(&self, task: Task) -> Result<PluginFiles> {
        PluginFiles::for_task(&self.plugins, task)
    }

    /// Loads `task`'s plugin.
    pub fn plugin(&self, task: Task) -> Result<TaskPlugin<B>> {
        TaskPlugin::from_files(&self.plugin_files(task)?, &self.options, self.sd.device())
    }

    /// Restores `image`, drawing the noise of every plugin from `request.seed`.
    ///
    /// # Errors
    /// Invalid options, a missing plugin file (named), or [`Error::Cancelled`] from
    /// `callback` (called after every step of every plugin).
    pub fn restore(
        &self,
        image: &RgbImage,
        request: &Restore,
        callback: &mut dyn StepCallback,
    ) -> Result<Restored> {
        let seed = request.seed;
        self.run(
            image,
            request,
            &mut |_| Ok(Box::new(SeededNoise::new(seed))),
            callback,
        )
    }

    /// [`restore`](Self::restore) with the noise ε of each plugin, in order, taken from
    /// `noise` (e.g. another implementation's draws, replayed).
    pub fn restore_with_noise(
        &self,
        image: &RgbImage,
        request: &Restore,
        noise: &mut dyn NoiseSource,
        callback: &mut dyn StepCallback,
    ) -> Result<Restored> {
        let mut next = |shape: [usize; 4]| -> Result<Box<dyn NoiseSource>> {
            Ok(Box::new(ReplayNoise::new([noise.sample(&shape)?])))
        };
        self.run(image, request, &mut next, callback)
    }

    /// The selector's choice for `instruction` on `image` (loads the eight plugins' TPBs and
    /// `plugin_selector/PromptTunner.pt`).
    ///
    /// # Errors
    /// A missing plugin or selector file (named), or a selector that does not fit the model.
    pub fn select(&self, image: &RgbImage, instruction: &str) -> Result<Selection> {
        let tokens = self.clip_tokens(image)?;
        self.select_from_tokens(&tokens, instruction)
    }

    fn select_from_tokens(&self, tokens: &Tensor<B, 3>, instruction: &str) -> Result<Selection> {
        let device = self.sd.device();
        let path = self.plugins.join(SELECTOR_FILE);
        if !path.is_file() {
            return Err(Error::io(
                &path,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "Plugin-Selector file not found",
                ),
            ));
        }
        let selector: PluginSelector<B> = weights::load_selector(&path, &self.options, device)?;
        let mut rows = Vec::with_capacity(Task::ALL.len() + 1);
        for task in Task::ALL {
            let tpb = weights::load_tpb::<B>(&self.plugin_files(task)?.tpb, &self.options, device)?;
            rows.push(tpb.forward(tokens.clone())?);
        }
        let patches = rows[0].dims()[1];
        rows.push(PluginSelector::<B>::null_row(
            self.pooled_text(" ")?,
            patches,
        ));
        let scores = selector.scores(self.pooled_text(instruction)?, Tensor::cat(rows, 0))?;
        let raw: Vec<f32> = scores
            .cast(DType::F32)
            .into_data()
            .to_vec()
            .map_err(|e| Error::invalid_input("selector scores", format!("{e:?}")))?;
        select(&Task::ALL, &raw)
    }

    fn run(
        &self,
        image: &RgbImage,
        request: &Restore,
        noise_for: &mut dyn FnMut([usize; 4]) -> Result<Box<dyn NoiseSource>>,
        callback: &mut dyn StepCallback,
    ) -> Result<Restored> {
        request.validate()?;
        let tokens = self.clip_tokens(image)?;
        let (tasks, selection) = match &request.target {
            RestoreTarget::Task(task) => (vec![*task], None),
            RestoreTarget::Instruction(text) => {
                let selection = self.select_from_tokens(&tokens, text)?;
                (selection.tasks.clone(), Some(selection))
            }
        };
        let factor = self.sd.components.vae.config().downsampling_factor();
        let (w, h) = (image.width() as usize, image.height() as usize);
        let (width, height) = request.working_size(w, h, factor)?;
        self.sd.check_memory(width, height, 1, false, 0)?;
        let mut current = if (width, height) == (w, h) {
            image.clone()
        } else {
            resize(image, width as u32, height as u32)
        };
        for (k, &task) in tasks.iter().enumerate() {
            let plugin = self.plugin(task)?;
            let prompt = plugin.tpb.forward(tokens.clone())?;
            let steps = if k == 0 {
                request.steps
            } else {
                request.chain_steps
            };
            let shape = [1, 4, height / factor, width / factor];
            let mut noise = noise_for(shape)?;
            current = self.run_plugin(
                &plugin,
                task,
                prompt,
                &current,
                steps,
                noise.as_mut(),
                callback,
            )?;
        }
        Ok(Restored {
            image: current,
            tasks,
            selection,
        })
    }

    /// One plugin's denoising of `image` (already at its working size) with task prompt
    /// `prompt`; ε is the first draw of `noise`.
    ///
    /// # Shapes
    /// `prompt`: `[1, tokens, cross_attention_dim]`.
    #[allow(clippy::too_many_arguments)]
    pub fn run_plugin(
        &self,
        plugin: &TaskPlugin<B>,
        task: Task,
        prompt: Tensor<B, 3>,
        image: &RgbImage,
        steps: usize,
        noise: &mut dyn NoiseSource,
        callback: &mut dyn StepCallback,
    ) -> Result<RgbImage> {
        let device = self.sd.device();
        let condition = self.condition(image)?;
        let mut sampler = Sampler::new(self.scheduler()?, steps)?;
        let eps = noise_tensor::<B, 4>(noise, condition.dims(), device, DType::F32)?;
        let latents = match task.start_latent() {
            StartLatent::NoisedCondition => sampler.noised(condition.clone(), eps),
            StartLatent::PureNoise => eps * sampler.scheduler().init_noise_sigma(),
        };
        let hint = condition.cast(prompt.dtype());
        let conditioning = ControlledConditioning {
            context: prompt,
            hint,
        };
        let denoiser = Controlled::new(&self.sd.components.unet, &plugin.scb);
        let no_noise = &mut ReplayNoise::default();
        let latents = sampler.sample(&denoiser, &conditioning, latents, no_noise, callback)?;
        self.sd
            .decode(latents)?
            .pop()
            .ok_or_else(|| Error::invalid_input("latents", "decoded to no image"))
    }

    /// UniPC from the base model's scheduler config, with the last step to t = 0 as in the
    /// diffusers version the plugins were made with.
    fn scheduler(&self) -> Result<Box<dyn Scheduler<B>>> {
        let mut config = self.sd.components.scheduler.clone();
        config.final_sigmas_type = Some(FinalSigmasType::SigmaMin);
        config.build::<B>(Some(SchedulerKind::UniPc), self.sd.device())
    }

    /// z_c = scaling factor · VAE posterior mean (f32).
    ///
    /// # Shapes
    /// → `[1, 4, h/8, w/8]`.
    pub fn condition(&self, image: &RgbImage) -> Result<Tensor<B, 4>> {
        self.sd
            .components
            .vae
            .encode_images(std::slice::from_ref(image))
    }

    /// The CLIP vision tower's last hidden state of the (original) image, the TPB's input.
    ///
    /// # Shapes
    /// → `[1, 1 + patches, width]`.
    pub fn clip_tokens(&self, image: &RgbImage) -> Result<Tensor<B, 3>> {
        let processor = self.image_encoder.image_processor();
        let pixels = processor.preprocess::<B>(std::slice::from_ref(image), self.sd.device())?;
        Ok(self.image_encoder.forward(pixels).last_hidden_state)
    }

    /// The text encoder's pooled output for `text` (the selector's query).
    ///
    /// # Shapes
    /// → `[1, width]`.
    pub fn pooled_text(&self, text: &str) -> Result<Tensor<B, 2>> {
        let ids = self.sd.components.tokenizer.encode_batch(&[text])?;
        let ids = ClipTokenizer::ids_tensor::<B>(&ids, self.sd.device())?;
        Ok(self.sd.components.text_encoder.forward(ids).pooled_output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn working_sizes_follow_the_official_scripts() {
        // infer.py: small images get a 512 short side, large ones keep their size.
        assert_eq!(WorkingSize::AtLeast(512).apply(300, 200, 8), (768, 512));
        assert_eq!(WorkingSize::AtLeast(512).apply(500, 900, 8), (512, 920));
        assert_eq!(WorkingSize::AtLeast(512).apply(1030, 700, 8), (1024, 696));
        // demo.py: always a 512 short side, floor of the scaled long side.
        assert_eq!(WorkingSize::ShortSide(512).apply(1000, 700, 8), (728, 512));
        assert_eq!(WorkingSize::ShortSide(512).apply(333, 1000, 8), (512, 1536));
        assert_eq!(WorkingSize::Native.apply(105, 73, 8), (104, 72));
        assert_eq!(WorkingSize::Native.apply(105, 73, 0), (105, 73));
        assert_eq!(WorkingSize::ShortSide(512).apply(0, 73, 8), (0, 72));
    }
}
