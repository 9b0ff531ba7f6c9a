//! `versatile`: Versatile Diffusion's five flows, one subcommand each. The image flows are named
//! after diffusers' `VersatileDiffusionPipeline` methods (`text_to_image`, `image_variation`,
//! `dual_guided`); the text flows (`image-to-text`, `text-variation`) follow the official code
//! and decode with Optimus.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail};
use burn::tensor::backend::Backend;
use clap::{Args, Subcommand};
use prompt_diffusion::Generation;
use prompt_diffusion::backends::BackendTask;
use prompt_diffusion::core::image::load_rgb;
use prompt_diffusion::core::{Error, Result};
use prompt_diffusion::pipelines::{
    ImagePrompt, VersatileDiffusion, VersatileModelOptions, VersatileOptions,
};
use prompt_diffusion::schedulers::SchedulerKind;
use prompt_diffusion::unet::UNet2DConditionConfig;
use prompt_diffusion::vae::AutoencoderKLConfig;
use prompt_diffusion::versatile::{
    Flow, Modality, OfficialFiles, OptimusConfig, OptimusFiles, TextDecoding, UncondImage,
};

use crate::args::{DeviceArgs, SeedArg, parse, parse_seed, resolve_seed};
use crate::output::{
    Progress, check_output, read_latents, read_tensor, report_loaded, save_images, save_texts,
};

/// Arguments of `versatile`: the flow, then its options.
#[derive(Debug, Clone, Args)]
#[command(after_help = "\
Examples:
  prompt-diffusion versatile text-to-image --model versatile-diffusion --prompt \"a red car\"
  prompt-diffusion versatile image-variation --model versatile-diffusion --image car.png
  prompt-diffusion versatile dual-guided --model versatile-diffusion --prompt \"a red car\" --image car.png --mix 0.7
  prompt-diffusion versatile image-to-text --model versatile-diffusion --image car.png \\
      --optimus-weights optimus-vae.pth --optimus-vocab optimus_models/vocab")]
pub struct VersatileArgs {
    /// The flow to run.
    #[command(subcommand)]
    pub flow: FlowCommand,
}

/// The flows.
#[derive(Debug, Clone, Subcommand)]
pub enum FlowCommand {
    /// Images from a prompt (diffusers' `VersatileDiffusionPipeline.text_to_image`).
    TextToImage(TextToImageArgs),
    /// Variations of an image (diffusers' `image_variation`).
    ImageVariation(ImageVariationArgs),
    /// Images guided by a prompt and an image, mixed by --mix (diffusers' `dual_guided`).
    DualGuided(DualGuidedArgs),
    /// Captions of an image (the official image→text flow; needs Optimus).
    ImageToText(ImageToTextArgs),
    /// Variations of a text (the official text-variation flow; needs Optimus).
    TextVariation(TextVariationArgs),
}

/// Where Versatile Diffusion comes from and where it runs.
#[derive(Debug, Clone, Args)]
pub struct VdModelArgs {
    /// A diffusers Versatile Diffusion folder (image_unet/, text_unet/, text_encoder/,
    /// image_encoder/, vae/, tokenizer/, scheduler/), e.g. shi-labs/versatile-diffusion.
    #[arg(long, value_name = "DIR", conflicts_with = "checkpoint")]
    pub model: Option<PathBuf>,
    /// The official diffuser checkpoint (vd-four-flow-v1-0.pth), with --checkpoint-vae and --clip.
    #[arg(long, value_name = "FILE")]
    pub checkpoint: Option<PathBuf>,
    /// With --checkpoint: the official VAE (kl-f8.pth).
    #[arg(long, value_name = "FILE")]
    pub checkpoint_vae: Option<PathBuf>,
    /// With --checkpoint: the CLIP ViT-L/14 folder (openai/clip-vit-large-patch14: both towers
    /// and the tokenizer).
    #[arg(long, value_name = "DIR")]
    pub clip: Option<PathBuf>,
    /// With --checkpoint: the CLIP vision tower from another folder than --clip.
    #[arg(long, value_name = "DIR")]
    pub clip_vision: Option<PathBuf>,
    /// With --checkpoint: a diffusers Versatile Diffusion folder whose image_unet/ and text_unet/
    /// configs (and vae/ config, when present) describe the checkpoints (default: the published
    /// sizes).
    #[arg(long, value_name = "DIR")]
    pub config: Option<PathBuf>,
    /// Another VAE folder than the model's vae/ (with --checkpoint: only its config.json is
    /// read, describing --checkpoint-vae).
    #[arg(long, value_name = "DIR")]
    pub vae: Option<PathBuf>,
    /// Another CLIP tokenizer folder than the model's tokenizer/ (or --clip).
    #[arg(long, value_name = "DIR")]
    pub tokenizer: Option<PathBuf>,
    /// Optimus weights (optimus-vae.pth of the official release): needed by image-to-text and
    /// text-variation.
    #[arg(long, value_name = "FILE")]
    pub optimus_weights: Option<PathBuf>,
    /// Optimus vocabulary folder (lib/model_zoo/optimus_models/vocab/ of the official code:
    /// bert-base-cased-vocab.txt, gpt2-vocab.json, gpt2-merges.txt).
    #[arg(long, value_name = "DIR")]
    pub optimus_vocab: Option<PathBuf>,
    /// Optimus sizes as a config.json (default: VD's BERT-base-cased and GPT-2 small).
    #[arg(long, value_name = "FILE")]
    pub optimus_config: Option<PathBuf>,
    /// With --model: weight-file variant to prefer (e.g. fp16).
    #[arg(long)]
    pub variant: Option<String>,
    #[command(flatten)]
    pub device: DeviceArgs,
}

/// The denoising loop.
#[derive(Debug, Clone, Args)]
pub struct SamplingArgs {
    /// Denoising steps.
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// Classifier-free guidance scale (≤ 1 turns guidance off).
    #[arg(long, default_value_t = 7.5, allow_negative_numbers = true)]
    pub guidance: f64,
    /// Scheduler: ddim, ddpm, pndm, euler, euler-ancestral, dpm++2m, dpm++2m-karras, unipc, lms
    /// (default: the model's DDIM).
    #[arg(long, value_parser = parse::<SchedulerKind>)]
    pub scheduler: Option<SchedulerKind>,
    /// Seed of every random draw, Optimus' sampling included (default, or -1: random, printed).
    #[arg(long, value_parser = parse_seed, allow_negative_numbers = true)]
    pub seed: Option<SeedArg>,
    /// DDIM's eta (0 = deterministic).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub eta: f64,
    /// A safetensors file whose tensor `latents` is the initial noise: [n, 4, height/8, width/8]
    /// for images, [n, 768, 1, 1] for texts.
    #[arg(long, value_name = "FILE")]
    pub latents: Option<PathBuf>,
}

/// The text condition.
#[derive(Debug, Clone, Args)]
pub struct PromptArgs {
    /// The prompt (required).
    #[arg(long)]
    pub prompt: Option<String>,
    /// What to steer away from (default: the empty prompt).
    #[arg(long)]
    pub negative_prompt: Option<String>,
}

/// The image condition.
#[derive(Debug, Clone, Args)]
pub struct ImageInputArgs {
    /// The image prompt (this or --image-embeds is required; any size, CLIP resizes it).
    #[arg(long, value_name = "FILE", conflicts_with = "image_embeds")]
    pub image: Option<PathBuf>,
    /// Precomputed image context instead of --image: a safetensors file whose tensor
    /// `image_embeds` is [257, 768] or [n, 257, 768], normalised as the image encoder's output
    /// (e.g. predicted from brain activity or retrieved from an index).
    #[arg(long, value_name = "FILE")]
    pub image_embeds: Option<PathBuf>,
    /// The unconditional image context: gray (diffusers and the 2022 inference code), black (the
    /// 2023 app's image→text) or zeros (the 2023 app's image flows).
    #[arg(long, default_value = "gray", value_parser = parse_uncond)]
    pub uncond_image: UncondImage,
}

/// Parses `--uncond-image`.
fn parse_uncond(s: &str) -> std::result::Result<UncondImage, String> {
    match s {
        "gray" => Ok(UncondImage::Gray),
        "black" => Ok(UncondImage::Black),
        "zeros" => Ok(UncondImage::Zeros),
        _ => Err(format!("`{s}` is not one of gray, black, zeros")),
    }
}

/// Where generated images go.
#[derive(Debug, Clone, Args)]
pub struct ImageOutputArgs {
    /// Image width in pixels, a multiple of 8 (default: the model's native size).
    #[arg(long)]
    pub width: Option<usize>,
    /// Image height in pixels, a multiple of 8 (default: the model's native size).
    #[arg(long)]
    pub height: Option<usize>,
    /// Number of images (default 1, or the batch of --latents).
    #[arg(long)]
    pub num_images: Option<usize>,
    /// Output PNG; several images get `_0`, `_1`, … before the extension.
    #[arg(long, default_value = "output.png")]
    pub output: PathBuf,
}

/// Where generated texts go.
#[derive(Debug, Clone, Args)]
pub struct TextOutputArgs {
    /// Number of texts (default 1, or the batch of --latents).
    #[arg(long)]
    pub num_texts: Option<usize>,
    /// Decode Optimus greedily (default: sample, as the official app does).
    #[arg(long, conflicts_with = "temperature")]
    pub greedy: bool,
    /// Optimus' sampling temperature.
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    /// Also write the texts to this .txt file (one file per text: `_0`, `_1`, … when several).
    /// They are always printed.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// Arguments of `versatile text-to-image`.
#[derive(Debug, Clone, Args)]
pub struct TextToImageArgs {
    #[command(flatten)]
    pub model: VdModelArgs,
    #[command(flatten)]
    pub prompt: PromptArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub output: ImageOutputArgs,
}

/// Arguments of `versatile image-variation`.
#[derive(Debug, Clone, Args)]
pub struct ImageVariationArgs {
    #[command(flatten)]
    pub model: VdModelArgs,
    #[command(flatten)]
    pub image: ImageInputArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub output: ImageOutputArgs,
}

/// Arguments of `versatile dual-guided`.
#[derive(Debug, Clone, Args)]
pub struct DualGuidedArgs {
    #[command(flatten)]
    pub model: VdModelArgs,
    #[command(flatten)]
    pub prompt: PromptArgs,
    #[command(flatten)]
    pub image: ImageInputArgs,
    /// The text's weight in [0, 1]; the image's is 1 − mix (diffusers' text_to_image_strength).
    #[arg(long, default_value_t = 0.5, allow_negative_numbers = true)]
    pub mix: f64,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub output: ImageOutputArgs,
}

/// Arguments of `versatile image-to-text`.
#[derive(Debug, Clone, Args)]
pub struct ImageToTextArgs {
    #[command(flatten)]
    pub model: VdModelArgs,
    #[command(flatten)]
    pub image: ImageInputArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub output: TextOutputArgs,
}

/// Arguments of `versatile text-variation`.
#[derive(Debug, Clone, Args)]
pub struct TextVariationArgs {
    #[command(flatten)]
    pub model: VdModelArgs,
    #[command(flatten)]
    pub prompt: PromptArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub output: TextOutputArgs,
}

/// Runs a flow on the backend and precision it names.
pub fn run(args: VersatileArgs) -> anyhow::Result<()> {
    let task = VersatileRun::new(args.flow)?;
    crate::run_task(task.model.device, task)
}

/// A flow's output options.
enum OutputArgs<'a> {
    Images(&'a ImageOutputArgs),
    Texts(&'a TextOutputArgs),
}

/// Where the results go.
enum Output {
    Images(PathBuf),
    Texts(Option<PathBuf>),
}

/// A flow, checked and ready to dispatch to a backend.
pub struct VersatileRun {
    model: VdModelArgs,
    flow: Flow,
    image: Option<ImagePrompt>,
    generation: Generation,
    options: VersatileOptions,
    output: Output,
}

impl VersatileRun {
    /// Reads the inputs and checks everything that can be checked without the model.
    pub fn new(command: FlowCommand) -> anyhow::Result<Self> {
        use FlowCommand as C;
        let (flow, model, sampling, prompt, image, mix, output) = match &command {
            C::TextToImage(a) => {
                let (f, out) = (Flow::TextToImage, OutputArgs::Images(&a.output));
                (f, &a.model, &a.sampling, Some(&a.prompt), None, 0.5, out)
            }
            C::ImageVariation(a) => {
                let (f, out) = (Flow::ImageVariation, OutputArgs::Images(&a.output));
                (f, &a.model, &a.sampling, None, Some(&a.image), 0.5, out)
            }
            C::DualGuided(a) => {
                let (f, out) = (Flow::DualGuided, OutputArgs::Images(&a.output));
                let (p, i) = (Some(&a.prompt), Some(&a.image));
                (f, &a.model, &a.sampling, p, i, a.mix, out)
            }
            C::ImageToText(a) => {
                let (f, out) = (Flow::ImageToText, OutputArgs::Texts(&a.output));
                (f, &a.model, &a.sampling, None, Some(&a.image), 0.5, out)
            }
            C::TextVariation(a) => {
                let (f, out) = (Flow::TextVariation, OutputArgs::Texts(&a.output));
                (f, &a.model, &a.sampling, Some(&a.prompt), None, 0.5, out)
            }
        };
        model.check(flow)?;
        if !(0.0..=1.0).contains(&mix) {
            bail!("--mix {mix} is outside [0, 1]");
        }
        let mut generation = Generation {
            steps: sampling.steps,
            guidance_scale: sampling.guidance,
            scheduler: sampling.scheduler,
            eta: sampling.eta,
            ..Generation::default()
        };
        let mut options = VersatileOptions {
            mix,
            ..VersatileOptions::default()
        };
        if let Some(prompt) = prompt {
            let text = prompt.prompt.as_ref();
            generation.prompt = text
                .ok_or_else(|| anyhow!("{flow} needs --prompt TEXT"))?
                .clone();
            generation.negative_prompt = prompt.negative_prompt.clone();
        }
        let image = match image {
            Some(args) => {
                options.uncond_image = args.uncond_image;
                Some(match (&args.image, &args.image_embeds) {
                    (Some(path), _) => ImagePrompt::Image(load_rgb(path)?),
                    // The model checks the shape.
                    (None, Some(path)) => ImagePrompt::Tokens(read_tensor(path, "image_embeds")?),
                    (None, None) => {
                        bail!("{flow} needs --image FILE or --image-embeds FILE")
                    }
                })
            }
            None => None,
        };
        let latents = sampling.latents.as_deref().map(read_latents).transpose()?;
        let batch = latents.as_ref().map(|l| l.shape[0]);
        let output = match output {
            OutputArgs::Images(out) => {
                generation.num_images = out.num_images.or(batch).unwrap_or(1);
                let (h, w) = latents.as_ref().map(|l| (l.shape[2], l.shape[3])).unzip();
                generation.width = out.width.or(w.map(|w| w * 8));
                generation.height = out.height.or(h.map(|h| h * 8));
                Output::Images(out.output.clone())
            }
            OutputArgs::Texts(out) => {
                generation.num_images = out.num_texts.or(batch).unwrap_or(1);
                options.decoding = match out.greedy {
                    true => TextDecoding::Greedy,
                    false => TextDecoding::Sample {
                        temperature: out.temperature,
                    },
                };
                options.decoding.validate()?;
                Output::Texts(out.output.clone())
            }
        };
        generation.latents = latents;
        generation.validate()?;
        match &output {
            Output::Images(path) => check_output(path, "png", generation.num_images)?,
            Output::Texts(Some(path)) => check_output(path, "txt", generation.num_images)?,
            Output::Texts(None) => {}
        }
        generation.seed = resolve_seed(sampling.seed);
        Ok(Self {
            model: model.clone(),
            flow,
            image,
            generation,
            options,
            output,
        })
    }

    /// The image condition of an image-conditioned flow.
    fn image(&self) -> Result<&ImagePrompt> {
        let flow = self.flow;
        let image = self.image.as_ref();
        image.ok_or_else(|| Error::invalid_input("image", format!("{flow} needs an image")))
    }
}

impl VdModelArgs {
    /// Checks that the model, the official files and Optimus are given as `flow` needs.
    fn check(&self, flow: Flow) -> anyhow::Result<()> {
        let official_only = [
            ("--checkpoint-vae", self.checkpoint_vae.is_some()),
            ("--clip", self.clip.is_some()),
            ("--clip-vision", self.clip_vision.is_some()),
            ("--config", self.config.is_some()),
        ];
        match (&self.model, &self.checkpoint) {
            (None, None) => bail!(
                "give --model DIR (a diffusers folder) or --checkpoint FILE (vd-four-flow-v1-0.pth)"
            ),
            (Some(_), _) => {
                if let Some((flag, _)) = official_only.iter().find(|(_, given)| *given) {
                    bail!("{flag} applies to --checkpoint only, not to --model");
                }
            }
            (None, Some(_)) => {
                if self.checkpoint_vae.is_none() || self.clip.is_none() {
                    bail!(
                        "--checkpoint needs --checkpoint-vae FILE (kl-f8.pth) and --clip DIR (CLIP ViT-L/14)"
                    );
                }
                if self.variant.is_some() {
                    bail!("--variant applies to --model only");
                }
            }
        }
        match (&self.optimus_weights, &self.optimus_vocab) {
            (Some(_), None) => bail!("--optimus-weights needs --optimus-vocab DIR"),
            (None, Some(_)) => bail!("--optimus-vocab needs --optimus-weights FILE"),
            (None, None) if flow.output() == Modality::Text => bail!(
                "{flow} decodes text with Optimus: give --optimus-weights FILE (optimus-vae.pth) and --optimus-vocab DIR (its vocabulary folder)"
            ),
            _ => Ok(()),
        }
    }

    /// The loading options of `flow` (only its layers; Optimus for text outputs).
    fn options(&self, flow: Flow) -> Result<VersatileModelOptions> {
        let optimus = match (&self.optimus_weights, &self.optimus_vocab) {
            (Some(weights), Some(vocab)) if flow.output() == Modality::Text => {
                let files = OptimusFiles::new(weights, vocab);
                Some(match &self.optimus_config {
                    Some(path) => files.with_config(OptimusConfig::from_file(path)?),
                    None => files,
                })
            }
            _ => None,
        };
        Ok(VersatileModelOptions {
            variant: self.variant.clone(),
            flows: vec![flow],
            optimus,
            vae: self.vae.clone(),
            tokenizer: self.tokenizer.clone(),
        })
    }

    /// The official files: `checkpoint`, --checkpoint-vae, --clip and the overrides.
    fn official_files(&self, checkpoint: &Path) -> Result<OfficialFiles> {
        let missing = |flag: &str| Error::invalid_input(flag, "--checkpoint needs it");
        let vae = self.checkpoint_vae.as_ref();
        let vae = vae.ok_or_else(|| missing("--checkpoint-vae"))?;
        let clip = self.clip.as_ref().ok_or_else(|| missing("--clip"))?;
        let mut files = OfficialFiles::new(checkpoint, vae, clip);
        if let Some(dir) = &self.clip_vision {
            files.image_encoder = dir.clone();
        }
        if let Some(dir) = &self.tokenizer {
            files.tokenizer = dir.clone();
        }
        if let Some(dir) = &self.config {
            let unet = |name: &str| UNet2DConditionConfig::from_file(dir.join(name));
            files.image_unet_config = unet("image_unet/config.json")?;
            files.text_unet_config = unet("text_unet/config.json")?;
            let vae = dir.join("vae/config.json");
            if vae.is_file() {
                files.vae_config = AutoencoderKLConfig::from_file(vae)?;
            }
        }
        if let Some(dir) = &self.vae {
            files.vae_config = AutoencoderKLConfig::from_file(dir.join("config.json"))?;
        }
        Ok(files)
    }
}

/// Loads the layers `flow` needs from --model or --checkpoint, printing the time taken.
fn load_model<B: Backend>(
    args: &VdModelArgs,
    flow: Flow,
    device: &B::Device,
) -> Result<VersatileDiffusion<B>> {
    let start = Instant::now();
    let options = args.options(flow)?;
    let vd = match (&args.model, &args.checkpoint) {
        (Some(dir), _) => VersatileDiffusion::from_pretrained(dir, &options, device)?,
        (None, Some(file)) => {
            VersatileDiffusion::from_official(&args.official_files(file)?, &options, device)?
        }
        (None, None) => {
            return Err(Error::invalid_input(
                "model",
                "give --model DIR or --checkpoint FILE",
            ));
        }
    };
    report_loaded(
        &format!("Versatile Diffusion ({flow})"),
        &B::name(device),
        args.device.precision,
        start,
    );
    Ok(vd)
}

impl BackendTask for VersatileRun {
    type Output = anyhow::Result<()>;

    fn run<B: Backend>(self, device: B::Device) -> Result<Self::Output> {
        let vd = load_model::<B>(&self.model, self.flow, &device)?;
        let mut progress = Progress::new("denoising");
        let (g, options) = (&self.generation, &self.options);
        match &self.output {
            Output::Images(path) => {
                let images = match self.flow {
                    Flow::TextToImage => vd.text_to_image(g, &mut progress)?,
                    Flow::ImageVariation => {
                        vd.image_variation(self.image()?, g, options, &mut progress)?
                    }
                    _ => vd.dual_guided(self.image()?, g, options, &mut progress)?,
                };
                progress.finish();
                Ok(save_images(&images, path))
            }
            Output::Texts(path) => {
                let texts = match self.flow {
                    Flow::ImageToText => {
                        vd.image_to_text(self.image()?, g, options, &mut progress)?
                    }
                    _ => vd.text_variation(g, options, &mut progress)?,
                };
                progress.finish();
                Ok(save_texts(&texts, path.as_ref()))
            }
        }
    }
}
