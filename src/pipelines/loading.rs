//! Finding and loading Stable Diffusion's components: diffusers pipeline folders
//! (`model_index.json` + component folders, or a Hugging Face repository id found in the cache
//! or downloaded) and original single-file checkpoints (`.safetensors`/`.ckpt` with the LDM
//! prefixes).

use prompt_diffusion_core::weights::Pretrained;
use std::path::{Path, PathBuf};

use burn::prelude::*;
use prompt_diffusion_clip::{
    CLIPTextConfig, CLIPTextModel, ClipTokenizer, weights as clip_weights,
};
use prompt_diffusion_core::config::OneOrMany;
use prompt_diffusion_core::hub::{HubOptions, Wanted};
use prompt_diffusion_core::memory::MemoryLimit;
use prompt_diffusion_core::nn::Activation;
use prompt_diffusion_core::weights::{LoadOptions, TensorSource};
use prompt_diffusion_core::{Error, Result};
use prompt_diffusion_schedulers::SchedulerConfig;
use prompt_diffusion_unet::{UNet2DConditionConfig, UNet2DConditionModel};
use prompt_diffusion_vae::{AutoencoderKL, AutoencoderKLConfig, VaeOptions, upcast_options};

/// How weights are read.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ModelOptions {
    /// Weight-file variant to prefer in diffusers folders (e.g. `fp16`).
    pub variant: Option<String>,
    /// For single-file checkpoints: a diffusers pipeline folder whose component configs,
    /// tokenizer and scheduler config describe the checkpoint (diffusers' `config=`). Without
    /// it the family (SD1 or SD2) is detected from the tensor names and the published configs
    /// are used.
    pub config: Option<PathBuf>,
    /// The memory a generation with the loaded model may use (default: the memory available
    /// when it starts); a generation estimated to need more is refused before it allocates.
    pub memory_limit: MemoryLimit,
    /// Where a model named by Hugging Face repository id (`org/name`) is found and downloaded:
    /// revision, token, cache folder, offline mode (unset fields read `HF_*` variables).
    pub hub: HubOptions,
    /// How the VAE runs: tiled (bounded memory for large images) and/or sliced (one image of a
    /// batch at a time), as diffusers' `enable_vae_tiling`/`enable_vae_slicing` (default: off).
    pub vae: VaeOptions,
    /// LoRA files merged into the UNet and the text encoder for good once the components are
    /// loaded, in order (default: none; [`StableDiffusion::load_lora`](super::StableDiffusion::load_lora)
    /// loads removable ones).
    pub loras: Vec<super::LoraSpec>,
    /// Textual-inversion embedding files loaded into the tokenizer and the text encoder once
    /// the components are loaded, in order (default: none; see
    /// [`Components::load_textual_inversion`]).
    pub textual_inversions: Vec<super::EmbeddingSpec>,
}

/// The component folders of a Stable Diffusion pipeline.
pub(crate) const SD_FOLDERS: [&str; 5] = ["tokenizer", "text_encoder", "unet", "vae", "scheduler"];

impl ModelOptions {
    prompt_diffusion_core::setters! {
        /// Prefers a weight-file variant.
        with_variant(variant: impl Into<String>) = Some(variant.into());
        /// Describes a single-file checkpoint by a diffusers folder's configs and tokenizer.
        with_config(config: impl Into<PathBuf>) = Some(config.into());
        /// Sets the memory limit of generations.
        with_memory_limit(memory_limit: MemoryLimit);
        /// Finds models named by repository id with these hub options.
        with_hub(hub: HubOptions);
        /// Sets how the VAE runs (tiling, slicing).
        with_vae(vae: VaeOptions);
    }

    /// Adds a LoRA file, merged at `scale` (see [`loras`](Self::loras)).
    #[must_use]
    pub fn with_lora(mut self, path: impl Into<PathBuf>, scale: f32) -> Self {
        self.loras.push(super::LoraSpec::new(path, scale));
        self
    }

    /// Adds a textual-inversion embedding file, used in prompts by `token` (`None`: the
    /// token the file implies; see [`textual_inversions`](Self::textual_inversions)).
    #[must_use]
    pub fn with_textual_inversion(
        mut self,
        path: impl Into<PathBuf>,
        token: Option<String>,
    ) -> Self {
        self.textual_inversions
            .push(super::EmbeddingSpec::new(path, token));
        self
    }

    pub(crate) fn load_options(&self) -> LoadOptions {
        let mut load = LoadOptions::default().with_hub(self.hub.clone());
        load.variant.clone_from(&self.variant);
        load
    }

    /// The local folder of a pipeline named by `dir`: `dir` itself (`~` expanded), or for a
    /// Hugging Face repository id its snapshot in the cache, holding `folders` (downloaded
    /// first when needed and allowed).
    ///
    /// # Errors
    /// As [`prompt_diffusion_core::hub::resolve`].
    pub fn resolve_pipeline(&self, dir: &Path, folders: &[&str]) -> Result<PathBuf> {
        let wanted = Wanted::Pipeline(folders);
        prompt_diffusion_core::hub::resolve(dir, &self.hub, wanted, self.variant.as_deref())
    }
}

/// The components of a Stable Diffusion model.
#[derive(Debug)]
pub struct Components<B: Backend> {
    /// The CLIP tokenizer.
    pub tokenizer: ClipTokenizer,
    /// The CLIP text encoder.
    pub text_encoder: CLIPTextModel<B>,
    /// The denoising UNet.
    pub unet: UNet2DConditionModel<B>,
    /// The VAE (in f32 when its config asks for upcasting and the backend runs half precision).
    pub vae: AutoencoderKL<B>,
    /// The scheduler configuration the model was published with.
    pub scheduler: SchedulerConfig,
}

/// `vae` set to run with `options`.
fn with_vae_options<B: Backend>(
    mut vae: AutoencoderKL<B>,
    options: VaeOptions,
) -> Result<AutoencoderKL<B>> {
    vae.set_options(options)?;
    Ok(vae)
}

/// Checks that `dir` is a folder, with an error naming it.
pub(crate) fn require_dir(dir: &Path, what: &str) -> Result<()> {
    if dir.is_dir() {
        Ok(())
    } else {
        Err(Error::io(
            dir,
            std::io::Error::new(std::io::ErrorKind::NotFound, format!("{what} not found")),
        ))
    }
}

/// Checks that the folder's `model_index.json`, when there is one, is a JSON object (the file
/// is optional; its contents are not otherwise used).
///
/// # Errors
/// [`Error::Format`] naming the file when it is not valid JSON or not an object, [`Error::Io`]
/// when it exists but cannot be read.
pub(crate) fn check_model_index(dir: &Path) -> Result<()> {
    let path = dir.join("model_index.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(&path, e)),
    };
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(serde_json::Value::Object(_)) => Ok(()),
        Ok(_) => Err(Error::format(&path, "not a JSON object")),
        Err(e) => Err(Error::format(&path, format!("invalid JSON: {e}"))),
    }
}

impl<B: Backend> Components<B> {
    /// Loads a diffusers pipeline folder (`tokenizer/`, `text_encoder/`, `unet/`, `vae/`,
    /// `scheduler/`), or a Hugging Face repository id (`stable-diffusion-v1-5/stable-diffusion-v1-5`)
    /// from the cache, downloaded first when needed (see [`ModelOptions::hub`]).
    ///
    /// # Errors
    /// A missing folder or file, an invalid config, or weights that do not match (each error
    /// names the file and the tensor or field); [`Error::Hub`] for a repository that is neither
    /// cached nor downloadable.
    pub fn from_pretrained(
        dir: impl AsRef<Path>,
        options: &ModelOptions,
        device: &B::Device,
    ) -> Result<Self> {
        let dir = &options.resolve_pipeline(dir.as_ref(), &SD_FOLDERS)?;
        require_dir(dir, "model folder")?;
        check_model_index(dir)?;
        let load = options.load_options();
        let vae_config = AutoencoderKLConfig::from_file(dir.join("vae/config.json"))?;
        let vae_load = upcast_options::<B>(&vae_config, &load, device);
        let mut components = Self {
            tokenizer: ClipTokenizer::from_folder(dir.join("tokenizer"))?,
            text_encoder: CLIPTextModel::from_pretrained(dir.join("text_encoder"), &load, device)?,
            unet: UNet2DConditionModel::from_pretrained(dir.join("unet"), &load, device)?,
            vae: with_vae_options(
                AutoencoderKL::from_pretrained(dir.join("vae"), &vae_load, device)?,
                options.vae,
            )?,
            scheduler: SchedulerConfig::from_file(dir.join("scheduler/scheduler_config.json"))?,
        };
        super::lora::fuse_loras(&mut components, &options.loras)?;
        components.load_textual_inversions(&options.textual_inversions)?;
        Ok(components)
    }

    /// Loads an original single-file checkpoint (`model.diffusion_model.*`,
    /// `first_stage_model.*`, `cond_stage_model.transformer.*` for SD1 or
    /// `cond_stage_model.model.*` for SD2).
    ///
    /// Configs, tokenizer and scheduler come from `options.config` when given; otherwise the
    /// family is detected from the tensor names and the published SD1.5/SD2.1 configs, the
    /// embedded CLIP vocabulary and SD1.5's scheduler config are used (single files carry
    /// none of them; SD2 768-px v-prediction models need `options.config`).
    pub fn from_single_file(
        path: impl AsRef<Path>,
        options: &ModelOptions,
        device: &B::Device,
    ) -> Result<Self> {
        let path = path.as_ref();
        let checkpoint = TensorSource::open(path)?;
        Self::from_checkpoint(&checkpoint, options, device)
    }

    /// [`from_single_file`](Self::from_single_file) for an already opened checkpoint (e.g. a
    /// ControlNet file that also holds the Stable Diffusion weights).
    ///
    /// # Errors
    /// As [`from_pretrained`](Self::from_pretrained); without `options.config`, weights that
    /// the published configs do not describe come as [`Error::WithHint`] advising a config
    /// folder.
    pub fn from_checkpoint(
        checkpoint: &TensorSource,
        options: &ModelOptions,
        device: &B::Device,
    ) -> Result<Self> {
        let mut components = match Self::checkpoint_components(checkpoint, options, device) {
            Err(e @ (Error::Weights(_) | Error::ConfigMismatch(_) | Error::Shape { .. }))
                if options.config.is_none() =>
            {
                Err(e.with_hint(
                    "the published SD1/SD2 configs do not describe this checkpoint: give a \
                     diffusers folder with its configs (--config DIR)",
                ))
            }
            other => other,
        }?;
        super::lora::fuse_loras(&mut components, &options.loras)?;
        components.load_textual_inversions(&options.textual_inversions)?;
        Ok(components)
    }

    /// [`from_checkpoint`](Self::from_checkpoint) without the advice.
    fn checkpoint_components(
        checkpoint: &TensorSource,
        options: &ModelOptions,
        device: &B::Device,
    ) -> Result<Self> {
        let load = options.load_options();
        let unet_source = UNet2DConditionModel::<B>::single_file_tensors(checkpoint)?;
        let vae_source = AutoencoderKL::<B>::single_file_tensors(checkpoint)?;
        let family = Family::detect(checkpoint)?;
        let (unet_config, vae_config, text_config, scheduler) = match &options.config {
            Some(dir) => {
                require_dir(dir, "config folder")?;
                (
                    UNet2DConditionConfig::from_file(dir.join("unet/config.json"))?,
                    AutoencoderKLConfig::from_file(dir.join("vae/config.json"))?,
                    CLIPTextConfig::from_file(dir.join("text_encoder/config.json"))?,
                    SchedulerConfig::from_file(dir.join("scheduler/scheduler_config.json"))?,
                )
            }
            None => family.configs(&unet_source)?,
        };
        let vae_load = upcast_options::<B>(&vae_config, &load, device);
        let tokenizer = match (&options.config, family) {
            (Some(dir), _) => ClipTokenizer::from_folder(dir.join("tokenizer"))?,
            (None, Family::Sd1) => ClipTokenizer::openai_clip()?,
            (None, Family::Sd2) => ClipTokenizer::open_clip_sd2()?,
        };
        let text_source = match family {
            Family::Sd1 => clip_weights::sd1_text_encoder(checkpoint)?.unwrap_or_default(),
            Family::Sd2 => clip_weights::open_clip_text(
                &checkpoint.strip_prefix("cond_stage_model.model."),
                text_config.num_hidden_layers,
                false,
            )?,
        };
        Ok(Self {
            tokenizer,
            text_encoder: CLIPTextModel::from_source(&text_config, &text_source, &load, device)?,
            unet: UNet2DConditionModel::from_source(&unet_config, &unet_source, &load, device)?,
            vae: with_vae_options(
                AutoencoderKL::from_source(&vae_config, &vae_source, &vae_load, device)?,
                options.vae,
            )?,
            scheduler,
        })
    }
}

/// The Stable Diffusion family of a single-file checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Sd1,
    Sd2,
}

impl Family {
    fn detect(checkpoint: &TensorSource) -> Result<Self> {
        if checkpoint.has_prefix("cond_stage_model.transformer.") {
            Ok(Self::Sd1)
        } else if checkpoint.has_prefix("cond_stage_model.model.") {
            Ok(Self::Sd2)
        } else {
            Err(Error::Unsupported(format!(
                "{}: no SD1 (`cond_stage_model.transformer.*`) or SD2 (`cond_stage_model.model.*`) text encoder; SDXL and other families are not supported",
                checkpoint.description()
            )))
        }
    }

    /// The published configs, with the input channels and projection kind read from the
    /// weights (inpainting models, SD2 linear projections).
    fn configs(
        self,
        unet: &TensorSource,
    ) -> Result<(
        UNet2DConditionConfig,
        AutoencoderKLConfig,
        CLIPTextConfig,
        SchedulerConfig,
    )> {
        let mut unet_config = match self {
            Self::Sd1 => UNet2DConditionConfig::sd_v1_5(),
            Self::Sd2 => UNet2DConditionConfig::sd_v2_1(),
        };
        if let Some(shape) = unet.shape("input_blocks.0.0.weight") {
            unet_config.in_channels = shape[1];
        }
        if let Some(shape) = unet.shape("input_blocks.1.1.proj_in.weight") {
            unet_config.use_linear_projection = shape.len() == 2;
        }
        let text = match self {
            Self::Sd1 => CLIPTextConfig::sd_v1_5(),
            Self::Sd2 => CLIPTextConfig {
                hidden_size: 1024,
                intermediate_size: 4096,
                projection_dim: 512,
                num_hidden_layers: 23,
                num_attention_heads: 16,
                hidden_act: Activation::Gelu,
                ..CLIPTextConfig::sd_v1_5()
            },
        };
        if self == Self::Sd2 {
            unet_config.sample_size = Some(OneOrMany::One(96));
        }
        Ok((
            unet_config,
            AutoencoderKLConfig::sd_v1_5(),
            text,
            SchedulerConfig::sd_v1_5(),
        ))
    }
}
