//! `versatile`: Versatile Diffusion's five flows, one subcommand each. The image flows are named
//! after diffusers' `VersatileDiffusionPipeline` methods (`text_to_image`, `image_variation`,
//! `dual_guided`); the text flows (`image-to-text`, `text-variation`) follow the official code
//! and decode with Optimus.

use std::path::{Path, PathBuf};

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
use prompt_diffusion::unet::UNet2DConditionConfig;
use prompt_diffusion::vae::AutoencoderKLConfig;
use prompt_diffusion::versatile::{
    Flow, Modality, OfficialFiles, OptimusConfig, OptimusFiles, TextDecoding, UncondImage,
};

use crate::args::{
    DenoiseArgs, DeviceArgs, SizeArgs, VaeArgs, load_timed, read_latents_into, resolve_seed,
};
use crate::metadata::{MetadataArgs, Record, image_size};
use crate::output::{Progress, check_output, read_tensor, save_images, save_texts};

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
    #[arg(long, value_name = "DIR", conflicts_with = "checkpoint", value_parser = crate::args::path_arg())]
    pub model: Option<PathBuf>,
    /// The official diffuser checkpoint (vd-four-flow-v1-0.pth), with --checkpoint-vae and --clip.
    #[arg(long, value_name = "FILE", value_parser = crate::args::path_arg())]
    pub checkpoint: Option<PathBuf>,
    /// With --checkpoint: the release's other files.
    #[command(flatten)]
    pub official: OfficialArgs,
    /// Another VAE folder than the model's vae/ (with --checkpoint: only its config.json is
    /// read, describing --checkpoint-vae).
    #[arg(long, value_name = "DIR", value_parser = crate::args::path_arg())]
    pub vae: Option<PathBuf>,
    /// Another CLIP tokenizer folder than the model's tokenizer/ (or --clip).
    #[arg(long, value_name = "DIR", value_parser = crate::args::path_arg())]
    pub tokenizer: Option<PathBuf>,
    /// The text flows' Optimus.
    #[command(flatten)]
    pub optimus: OptimusArgs,
    /// With --model: weight-file variant to prefer (e.g. fp16).
    #[arg(long)]
    pub variant: Option<String>,
    /// How the VAE runs.
    #[command(flatten)]
    pub vae_options: VaeArgs,
    #[command(flatten)]
    pub device: DeviceArgs,
}

/// The official release's other files, beside `--checkpoint`.
#[derive(Debug, Clone, Args)]
pub struct OfficialArgs {
    /// With --checkpoint: the official VAE (kl-f8.pth).
    #[arg(long, value_name = "FILE", value_parser = crate::args::path_arg())]
    pub checkpoint_vae: Option<PathBuf>,
    /// With --checkpoint: the CLIP ViT-L/14 folder (openai/clip-vit-large-patch14: both towers
    /// and the tokenizer).
    #[arg(long, value_name = "DIR", value_parser = crate::args::path_arg())]
    pub clip: Option<PathBuf>,
    /// With --checkpoint: the CLIP vision tower from another folder than --clip.
    #[arg(long, value_name = "DIR", value_parser = crate::args::path_arg())]
    pub clip_vision: Option<PathBuf>,
    /// With --checkpoint: a diffusers Versatile Diffusion folder whose image_unet/ and text_unet/
    /// configs (and vae/ config, when present) describe the checkpoints (default: the published
    /// sizes).
    #[arg(long, value_name = "DIR", value_parser = crate::args::path_arg())]
    pub config: Option<PathBuf>,
}

/// Optimus, the text VAE of the text flows.
#[derive(Debug, Clone, Args)]
pub struct OptimusArgs {
    /// Optimus weights (optimus-vae.pth of the official release): needed by image-to-text and
    /// text-variation.
    #[arg(id = "optimus_weights", long = "optimus-weights", value_name = "FILE", value_parser = crate::args::path_arg())]
    pub weights: Option<PathBuf>,
    /// Optimus vocabulary folder (lib/model_zoo/optimus_models/vocab/ of the official code:
    /// bert-base-cased-vocab.txt, gpt2-vocab.json, gpt2-merges.txt).
    #[arg(id = "optimus_vocab", long = "optimus-vocab", value_name = "DIR", value_parser = crate::args::path_arg())]
    pub vocab: Option<PathBuf>,
    /// Optimus sizes as a config.json (default: VD's BERT-base-cased and GPT-2 small).
    #[arg(id = "optimus_config", long = "optimus-config", value_name = "FILE", value_parser = crate::args::path_arg())]
    pub config: Option<PathBuf>,
}

impl OptimusArgs {
    /// Checks that the weights and the vocabulary come together, and are given for `flow` when
    /// it decodes text.
    fn check(&self, flow: Flow) -> anyhow::Result<()> {
        match (&self.weights, &self.vocab) {
            (Some(_), None) => bail!("--optimus-weights needs --optimus-vocab DIR"),
            (None, Some(_)) => bail!("--optimus-vocab needs --optimus-weights FILE"),
            (None, None) if flow.output() == Modality::Text => bail!(
                "{flow} decodes text with Optimus: give --optimus-weights FILE (optimus-vae.pth) and --optimus-vocab DIR (its vocabulary folder)"
            ),
            _ => Ok(()),
        }
    }

    /// The Optimus files `flow` needs: `None` for image outputs.
    fn files(&self, flow: Flow) -> Result<Option<OptimusFiles>> {
        let (Some(weights), Some(vocab)) = (&self.weights, &self.vocab) else {
            return Ok(None);
        };
        if flow.output() != Modality::Text {
            return Ok(None);
        }
        let files = OptimusFiles::new(weights, vocab);
        Ok(Some(match &self.config {
            Some(path) => files.with_config(OptimusConfig::from_file(path)?),
            None => files,
        }))
    }
}

/// The denoising loop.
#[derive(Debug, Clone, Args)]
#[command(
    mut_arg("scheduler", |a| a.help("Scheduler: ddim, ddpm, pndm, euler, euler-ancestral, dpm++2m, dpm++2m-karras, unipc, lms (default: the model's DDIM)")),
    mut_arg("seed", |a| a.help("Seed of every random draw, Optimus' sampling included (default, or -1: random, printed)")),
)]
pub struct SamplingArgs {
    /// Steps, guidance, scheduler and seed.
    #[command(flatten)]
    pub denoise: DenoiseArgs,
    /// DDIM's eta (0 = deterministic).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub eta: f64,
    /// A safetensors file whose tensor `latents` is the initial noise: [n, 4, height/8, width/8]
    /// for images, [n, 768, 1, 1] for texts.
    #[arg(long, value_name = "FILE", value_parser = crate::args::path_arg())]
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
    #[arg(long, value_name = "FILE", value_parser = crate::args::path_arg())]
    pub image: Option<PathBuf>,
    /// Precomputed image context instead of --image: a safetensors file whose tensor
    /// `image_embeds` is [257, 768] or [n, 257, 768], normalised as the image encoder's output
    /// (e.g. predicted from brain activity or retrieved from an index).
    #[arg(long, value_name = "FILE", conflicts_with = "image", value_parser = crate::args::path_arg())]
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
    /// Width and height.
    #[command(flatten)]
    pub size: SizeArgs,
    /// Number of images (default 1, or the batch of --latents).
    #[arg(long)]
    pub num_images: Option<usize>,
    /// Output PNG; several images get `_0`, `_1`, … before the extension.
    #[arg(long, default_value = "output.png", value_parser = crate::args::path_arg())]
    pub output: PathBuf,
    /// Whether the PNGs record their parameters.
    #[command(flatten)]
    pub metadata: MetadataArgs,
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
    #[arg(long, value_name = "FILE", value_parser = crate::args::path_arg())]
    pub output: Option<PathBuf>,
}

/// The prompt and the image of `versatile dual-guided`, and their mix.
#[derive(Debug, Clone, Args)]
pub struct DualConditionArgs {
    /// The text condition.
    #[command(flatten)]
    pub prompt: PromptArgs,
    /// The image condition.
    #[command(flatten)]
    pub image: ImageInputArgs,
    /// The text's weight in [0, 1]; the image's is 1 − mix (diffusers' text_to_image_strength).
    #[arg(long, default_value_t = 0.5, allow_negative_numbers = true)]
    pub mix: f64,
}

/// Arguments of a flow: the model, its condition `C`, the denoising loop and its outputs `O`.
#[derive(Debug, Clone, Args)]
pub struct FlowArgs<C: Args, O: Args> {
    /// The model and where it runs.
    #[command(flatten)]
    pub model: VdModelArgs,
    /// The condition.
    #[command(flatten)]
    pub condition: C,
    /// The denoising loop.
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Where the results go.
    #[command(flatten)]
    pub output: O,
}

/// A flow's condition: a prompt, an image, or both with their mix.
pub trait Condition {
    /// The text condition, for flows that take one.
    fn prompt(&self) -> Option<&PromptArgs> {
        None
    }
    /// The image condition, for flows that take one.
    fn image(&self) -> Option<&ImageInputArgs> {
        None
    }
    /// The text's weight (dual-guided only).
    fn mix(&self) -> f64 {
        0.5
    }
}

impl Condition for PromptArgs {
    fn prompt(&self) -> Option<&PromptArgs> {
        Some(self)
    }
}

impl Condition for ImageInputArgs {
    fn image(&self) -> Option<&ImageInputArgs> {
        Some(self)
    }
}

impl Condition for DualConditionArgs {
    fn prompt(&self) -> Option<&PromptArgs> {
        Some(&self.prompt)
    }
    fn image(&self) -> Option<&ImageInputArgs> {
        Some(&self.image)
    }
    fn mix(&self) -> f64 {
        self.mix
    }
}

/// A flow's output options: images or texts.
pub trait FlowOutput {
    /// These options, by kind.
    fn kind(&self) -> OutputArgs<'_>;
}

impl FlowOutput for ImageOutputArgs {
    fn kind(&self) -> OutputArgs<'_> {
        OutputArgs::Images(self)
    }
}

impl FlowOutput for TextOutputArgs {
    fn kind(&self) -> OutputArgs<'_> {
        OutputArgs::Texts(self)
    }
}

/// Arguments of `versatile text-to-image`.
pub type TextToImageArgs = FlowArgs<PromptArgs, ImageOutputArgs>;
/// Arguments of `versatile image-variation`.
pub type ImageVariationArgs = FlowArgs<ImageInputArgs, ImageOutputArgs>;
/// Arguments of `versatile dual-guided`.
pub type DualGuidedArgs = FlowArgs<DualConditionArgs, ImageOutputArgs>;
/// Arguments of `versatile image-to-text`.
pub type ImageToTextArgs = FlowArgs<ImageInputArgs, TextOutputArgs>;
/// Arguments of `versatile text-variation`.
pub type TextVariationArgs = FlowArgs<PromptArgs, TextOutputArgs>;

/// Runs a flow on the backend and precision it names.
pub fn run(args: VersatileArgs) -> anyhow::Result<()> {
    let task = VersatileRun::new(args.flow)?;
    crate::run_task(task.model.device, task)
}

/// A flow's output options, by kind.
pub enum OutputArgs<'a> {
    /// Images.
    Images(&'a ImageOutputArgs),
    /// Texts.
    Texts(&'a TextOutputArgs),
}

/// Where the results go.
enum Output {
    Images(PathBuf, MetadataArgs),
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
        match &command {
            C::TextToImage(args) => Self::checked(Flow::TextToImage, args),
            C::ImageVariation(args) => Self::checked(Flow::ImageVariation, args),
            C::DualGuided(args) => Self::checked(Flow::DualGuided, args),
            C::ImageToText(args) => Self::checked(Flow::ImageToText, args),
            C::TextVariation(args) => Self::checked(Flow::TextVariation, args),
        }
    }

    /// [`VersatileRun::new`] for the arguments of `flow`.
    fn checked<C: Args + Condition, O: Args + FlowOutput>(
        flow: Flow,
        args: &FlowArgs<C, O>,
    ) -> anyhow::Result<Self> {
        let (model, sampling, condition) = (&args.model, &args.sampling, &args.condition);
        model.check(flow)?;
        let mix = condition.mix();
        if !(0.0..=1.0).contains(&mix) {
            bail!("--mix {mix} is outside [0, 1]");
        }
        let mut generation = sampling.denoise.generation(sampling.eta);
        let mut options = VersatileOptions::default().with_mix(mix);
        if let Some(prompt) = condition.prompt() {
            let text = prompt.prompt.as_ref();
            generation.prompt = text
                .ok_or_else(|| anyhow!("{flow} needs --prompt TEXT"))?
                .clone();
            generation.negative_prompt = prompt.negative_prompt.clone();
        }
        let image = match condition.image() {
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
        let latents = sampling.latents.as_deref();
        let output = match args.output.kind() {
            OutputArgs::Images(out) => {
                let size = Some(out.size.get());
                read_latents_into(&mut generation, latents, out.num_images, size)?;
                Output::Images(out.output.clone(), out.metadata)
            }
            OutputArgs::Texts(out) => {
                read_latents_into(&mut generation, latents, out.num_texts, None)?;
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
        generation.validate()?;
        match &output {
            Output::Images(path, _) => check_output(path, "png", generation.num_images)?,
            Output::Texts(Some(path)) => check_output(path, "txt", generation.num_images)?,
            Output::Texts(None) => {}
        }
        generation.seed = resolve_seed(sampling.denoise.seed);
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
        let official = &self.official;
        let official_only = [
            ("--checkpoint-vae", official.checkpoint_vae.is_some()),
            ("--clip", official.clip.is_some()),
            ("--clip-vision", official.clip_vision.is_some()),
            ("--config", official.config.is_some()),
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
                if official.checkpoint_vae.is_none() || official.clip.is_none() {
                    bail!(
                        "--checkpoint needs --checkpoint-vae FILE (kl-f8.pth) and --clip DIR (CLIP ViT-L/14)"
                    );
                }
                if self.variant.is_some() {
                    bail!("--variant applies to --model only");
                }
            }
        }
        self.optimus.check(flow)
    }

    /// The loading options of `flow` (only its layers; Optimus for text outputs).
    fn options(&self, flow: Flow) -> Result<VersatileModelOptions> {
        let mut options = VersatileModelOptions::default().with_flows([flow]);
        options.variant.clone_from(&self.variant);
        options.optimus = self.optimus.files(flow)?;
        options.vae.clone_from(&self.vae);
        options.tokenizer.clone_from(&self.tokenizer);
        Ok(options.with_vae_options(self.vae_options.options()))
    }

    /// The official files: `checkpoint`, --checkpoint-vae, --clip and the overrides.
    fn official_files(&self, checkpoint: &Path) -> Result<OfficialFiles> {
        let missing = |flag: &str| Error::invalid_input(flag, "--checkpoint needs it");
        let official = &self.official;
        let vae = official.checkpoint_vae.as_ref();
        let vae = vae.ok_or_else(|| missing("--checkpoint-vae"))?;
        let clip = official.clip.as_ref().ok_or_else(|| missing("--clip"))?;
        let mut files = OfficialFiles::new(checkpoint, vae, clip);
        if let Some(dir) = &official.clip_vision {
            files.image_encoder = dir.clone();
        }
        if let Some(dir) = &self.tokenizer {
            files.tokenizer = dir.clone();
        }
        if let Some(dir) = &official.config {
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
    let options = args.options(flow)?;
    load_timed::<_, B>(
        &format!("Versatile Diffusion ({flow})"),
        (args.model.as_deref(), args.checkpoint.as_deref()),
        args.device.precision,
        device,
        |dir| VersatileDiffusion::from_pretrained(dir, &options, device),
        |file| VersatileDiffusion::from_official(&args.official_files(file)?, &options, device),
    )
}

impl BackendTask for VersatileRun {
    type Output = anyhow::Result<()>;

    fn run<B: Backend>(self, device: B::Device) -> Result<Self::Output> {
        let metadata = match self.output {
            Output::Images(_, metadata) => metadata,
            Output::Texts(_) => MetadataArgs { no_metadata: true },
        };
        let stamp = self.model.stamp(metadata);
        let vd = load_model::<B>(&self.model, self.flow, &device)?;
        let mut progress = Progress::new("denoising");
        let (g, options) = (&self.generation, &self.options);
        match &self.output {
            Output::Images(path, _) => {
                let images = match self.flow {
                    Flow::TextToImage => vd.text_to_image(g, &mut progress)?,
                    Flow::ImageVariation => {
                        vd.image_variation(self.image()?, g, options, &mut progress)?
                    }
                    _ => vd.dual_guided(self.image()?, g, options, &mut progress)?,
                };
                progress.finish();
                let mix = (self.flow == Flow::DualGuided).then(|| ("Mix", options.mix.to_string()));
                let extra = [("Flow", self.flow.to_string())].into_iter().chain(mix);
                let (scheduler, size) = ((g.scheduler, &vd.scheduler), image_size(&images));
                let record = Record::new(&metadata.with(extra), stamp, g, scheduler, size);
                Ok(save_images(&images, path, &record))
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
