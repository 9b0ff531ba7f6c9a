//! Command-line arguments shared by the subcommands.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Instant;

use burn::tensor::backend::Backend;
use clap::Args;
use clap::builder::TypedValueParser;
use prompt_diffusion::backends::BackendKind;
use prompt_diffusion::core::files::expand_tilde;
use prompt_diffusion::core::hub::HubOptions;
use prompt_diffusion::core::memory::MemoryLimit;
use prompt_diffusion::core::{Error, Precision, Result};
use prompt_diffusion::metadata::GenerationParameters;
use prompt_diffusion::pipelines::{EmbeddingSpec, LoraSpec};
use prompt_diffusion::schedulers::SchedulerKind;
use prompt_diffusion::vae::{VaeOptions, VaeTiling};
use prompt_diffusion::{Generation, ModelOptions};

use crate::metadata::{MetadataArgs, apply_from, read_from};
use crate::output::{check_output, read_latents, report_loaded};

/// Parses a value with the library's `FromStr`, for clap.
pub(crate) fn parse<T: FromStr<Err = Error>>(s: &str) -> std::result::Result<T, String> {
    T::from_str(s).map_err(|e| e.to_string())
}

/// Parses `--lora FILE[:SCALE]`, expanding a leading `~` in the file name.
fn lora_arg(s: &str) -> std::result::Result<LoraSpec, String> {
    let spec = LoraSpec::parse(s).map_err(|e| e.to_string())?;
    Ok(LoraSpec::new(expand_tilde(spec.path), spec.scale))
}

/// Parses `--embedding FILE[:TOKEN]`, expanding a leading `~` in the file name.
fn embedding_arg(s: &str) -> std::result::Result<EmbeddingSpec, String> {
    let spec = EmbeddingSpec::parse(s).map_err(|e| e.to_string())?;
    Ok(EmbeddingSpec::new(expand_tilde(spec.path), spec.token))
}

/// Parses a path option, expanding a leading `~` (left as it is by the shell when quoted or
/// after `=`).
pub(crate) fn path_arg() -> impl TypedValueParser<Value = PathBuf> {
    clap::builder::PathBufValueParser::new().map(expand_tilde)
}

/// Where the model comes from and where it runs.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// A diffusers pipeline folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/,
    /// scheduler/), or a Hugging Face repository id (org/name) found in the Hugging Face cache
    /// ($HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub) or downloaded into it
    /// ($HF_HUB_OFFLINE=1: the cache only; $HF_ENDPOINT: another hub). txt2img, img2img and
    /// inpaint without --model or --checkpoint use the scenes model shipped in models/scenes
    /// (or the folder $PROMPT_DIFFUSION_DEFAULT_MODEL names).
    #[arg(
        long,
        value_name = "DIR|ORG/NAME",
        value_parser = path_arg(),
        conflicts_with = "checkpoint"
    )]
    pub model: Option<PathBuf>,
    /// An original single-file checkpoint (.safetensors or .ckpt).
    #[arg(long, value_name = "FILE", value_parser = path_arg())]
    pub checkpoint: Option<PathBuf>,
    /// With --checkpoint: a diffusers folder whose configs, tokenizer and scheduler describe it
    /// (default: detect SD1/SD2 and use the published configs).
    #[arg(long, value_name = "DIR", value_parser = path_arg(), requires = "checkpoint")]
    pub config: Option<PathBuf>,
    /// Weight-file variant to prefer in diffusers folders (e.g. fp16).
    #[arg(long)]
    pub variant: Option<String>,
    /// For a repository id: the branch, tag or commit hash to load (default: main).
    #[arg(long, value_name = "REV")]
    pub revision: Option<String>,
    /// For a repository id: the access token of a private or gated repository (default:
    /// $HF_TOKEN, else the token file `hf auth login` writes).
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// How the VAE runs.
    #[command(flatten)]
    pub vae: VaeArgs,
    /// A LoRA file (PEFT/diffusers or kohya-ss layout) merged into the UNet and the text
    /// encoder at SCALE (default 1); repeat for several, e.g. --lora ink.safetensors:0.8.
    #[arg(long, value_name = "FILE[:SCALE]", value_parser = lora_arg)]
    pub lora: Vec<LoraSpec>,
    /// A textual-inversion embedding (diffusers learned_embeds.bin/.safetensors, AUTOMATIC1111
    /// .pt/.safetensors) used in prompts by TOKEN (default: the token the file names, else its
    /// file stem); repeat for several, e.g. --embedding cat-toy.bin:<cat-toy>.
    #[arg(long, value_name = "FILE[:TOKEN]", value_parser = embedding_arg)]
    pub embedding: Vec<EmbeddingSpec>,
    #[command(flatten)]
    pub device: DeviceArgs,
}

/// How the VAE runs: tiles and slices (diffusers' `enable_vae_tiling`/`enable_vae_slicing`).
#[derive(Debug, Clone, Copy, Default, Args)]
pub struct VaeArgs {
    /// Run the VAE in overlapping tiles, so large images decode in bounded memory (diffusers'
    /// enable_vae_tiling).
    #[arg(long)]
    pub vae_tiling: bool,
    /// With --vae-tiling: the tile side in pixels (default: the VAE's sample_size, 512 for SD1.5).
    #[arg(long, value_name = "PIXELS", requires = "vae_tiling")]
    pub vae_tile_size: Option<usize>,
    /// Run the VAE on one image of a batch at a time (diffusers' enable_vae_slicing).
    #[arg(long)]
    pub vae_slicing: bool,
}

impl VaeArgs {
    /// `--vae-tiling`, `--vae-tile-size` and `--vae-slicing`.
    pub fn options(&self) -> VaeOptions {
        let vae = VaeOptions::default().with_slicing(self.vae_slicing);
        if !self.vae_tiling {
            return vae;
        }
        let tiling = match self.vae_tile_size {
            Some(size) => VaeTiling::default().with_tile_sample_size(size),
            None => VaeTiling::default(),
        };
        vae.with_tiling(tiling)
    }
}

/// Where the work runs and in which float type.
#[derive(Debug, Clone, Copy, Args)]
pub struct DeviceArgs {
    /// Compute backend: flex or ndarray (CPU; flex is the faster), wgpu or cuda (GPU; when
    /// compiled in).
    #[arg(long, default_value = "flex", value_parser = parse::<BackendKind>)]
    pub backend: BackendKind,
    /// Float precision: f32, f16 or bf16.
    #[arg(long, default_value = "f32", value_parser = parse::<Precision>)]
    pub precision: Precision,
    /// The most memory a generation may use, e.g. 8GiB or 512MiB, or `none` (default: the
    /// memory available when it starts); a larger one is refused before it allocates.
    #[arg(long, value_name = "SIZE", value_parser = parse::<MemoryLimit>)]
    pub max_memory: Option<MemoryLimit>,
}

impl ModelArgs {
    /// The loading options.
    pub fn options(&self) -> ModelOptions {
        let mut options = ModelOptions::default()
            .with_memory_limit(self.device.max_memory.unwrap_or_default())
            .with_hub(self.hub());
        options.variant.clone_from(&self.variant);
        options.config.clone_from(&self.config);
        options.loras.clone_from(&self.lora);
        options.textual_inversions.clone_from(&self.embedding);
        options.with_vae(self.vae.options())
    }

    /// Where models named by repository id are found and downloaded: `--revision`, `--token`,
    /// the rest from the environment; downloads show progress bars.
    pub fn hub(&self) -> HubOptions {
        let mut hub = HubOptions::default().with_progress(true);
        hub.revision.clone_from(&self.revision);
        hub.token.clone_from(&self.token);
        hub
    }
}

/// The denoising loop's settings, shared by every generating subcommand.
#[derive(Debug, Clone, Args)]
pub struct DenoiseArgs {
    /// Denoising steps (default 50).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Classifier-free guidance scale (default 7.5; ≤ 1 turns guidance off).
    #[arg(long, allow_negative_numbers = true)]
    pub guidance: Option<f64>,
    /// Scheduler: ddim, ddpm, pndm, euler, euler-ancestral, dpm++2m, dpm++2m-karras, unipc, lms
    /// (default: the model's own).
    #[arg(long, value_parser = parse::<SchedulerKind>)]
    pub scheduler: Option<SchedulerKind>,
    /// Seed of every random draw (default, or -1: a random seed, printed).
    #[arg(long, value_parser = parse_seed, allow_negative_numbers = true)]
    pub seed: Option<SeedArg>,
}

impl DenoiseArgs {
    /// The library's defaults with these steps, guidance scale, scheduler and `eta` (the seed is
    /// resolved last, by [`resolve_seed`], once everything else was checked).
    #[cfg_attr(not(feature = "versatile"), allow(dead_code))]
    pub fn generation(&self, eta: f64) -> Generation {
        let mut generation = Generation::default().with_eta(eta);
        self.apply_to(&mut generation);
        generation
    }

    /// Sets in `generation` the steps, guidance scale and scheduler given on the command line.
    pub fn apply_to(&self, generation: &mut Generation) {
        generation.steps = self.steps.unwrap_or(generation.steps);
        generation.guidance_scale = self.guidance.unwrap_or(generation.guidance_scale);
        generation.scheduler = self.scheduler.or(generation.scheduler);
    }
}

/// The size of generated images.
#[derive(Debug, Clone, Copy, Args)]
pub struct SizeArgs {
    /// Image width in pixels, a multiple of 8 (default: the model's native size).
    #[arg(long)]
    pub width: Option<usize>,
    /// Image height in pixels, a multiple of 8 (default: the model's native size).
    #[arg(long)]
    pub height: Option<usize>,
}

impl SizeArgs {
    /// `[width, height]`, as given.
    pub fn get(self) -> [Option<usize>; 2] {
        [self.width, self.height]
    }
}

/// What to generate.
#[derive(Debug, Clone, Args)]
pub struct GenerationArgs {
    /// The prompt (required unless --from gives it).
    #[arg(long, required_unless_present = "from")]
    pub prompt: Option<String>,
    /// What to steer away from.
    #[arg(long)]
    pub negative_prompt: Option<String>,
    /// Steps, guidance, scheduler and seed.
    #[command(flatten)]
    pub denoise: DenoiseArgs,
    /// Width and height.
    #[command(flatten)]
    pub size: SizeArgs,
    /// A safetensors file whose tensor `latents` [n, 4, height/8, width/8] is the initial noise.
    #[arg(long, value_name = "FILE", value_parser = path_arg())]
    pub latents: Option<PathBuf>,
    /// Number of images (default 1, or the batch of --latents).
    #[arg(long)]
    pub num_images: Option<usize>,
    /// Read the prompts as plain text, truncated at 77 tokens (diffusers), instead of
    /// AUTOMATIC1111's syntax: (word:1.3), (word) ×1.1, [word] ÷1.1, \( \) literal brackets,
    /// BREAK, and prompts longer than 77 tokens in chunks (the default; not for in-context).
    #[arg(long)]
    pub no_prompt_weighting: bool,
    /// DDIM's eta (default 0: deterministic).
    #[arg(long, allow_negative_numbers = true)]
    pub eta: Option<f64>,
    /// Make an image again: the prompts, steps, scheduler, guidance, seed, size (and eta)
    /// recorded in this PNG's parameters; options given here win. The model is the one given
    /// by --model or --checkpoint.
    #[arg(long, value_name = "IMAGE.png", value_parser = path_arg())]
    pub from: Option<PathBuf>,
    /// Output PNG; several images get `_0`, `_1`, … before the extension.
    #[arg(long, default_value = "output.png", value_parser = path_arg())]
    pub output: PathBuf,
    /// Whether the PNGs record their parameters.
    #[command(flatten)]
    pub metadata: MetadataArgs,
}

impl GenerationArgs {
    /// The validated library options — the defaults, then what `--from` recorded, then the
    /// options given — after checking that the output files can be written; without `--seed`
    /// (or with -1) and `--from` a seed is drawn from the clock and printed so the run can be
    /// repeated.
    pub fn generation(&self) -> anyhow::Result<Generation> {
        let mut generation = Generation::default();
        let from = self.recorded_parameters()?;
        if let (Some(image), Some(parameters)) = (&self.from, &from) {
            let keep_scheduler = self.denoise.scheduler.is_some();
            apply_from(image, parameters, &mut generation, keep_scheduler)?;
        }
        if let Some(prompt) = &self.prompt {
            generation.prompt = prompt.clone();
        }
        if let Some(negative) = &self.negative_prompt {
            generation.negative_prompt = Some(negative.clone());
        }
        self.denoise.apply_to(&mut generation);
        generation.eta = self.eta.unwrap_or(generation.eta);
        generation.prompt_weighting = !self.no_prompt_weighting;
        let [width, height] = self.size.get();
        let size = Some([width.or(generation.width), height.or(generation.height)]);
        read_latents_into(
            &mut generation,
            self.latents.as_deref(),
            self.num_images,
            size,
        )?;
        generation.validate()?;
        check_output(&self.output, "png", generation.num_images)?;
        generation.seed = match (self.denoise.seed, from.and_then(|p| p.seed)) {
            (None, Some(seed)) => seed,
            (seed, _) => resolve_seed(seed),
        };
        Ok(generation)
    }

    /// The parameters recorded in the `--from` image.
    pub fn recorded_parameters(&self) -> anyhow::Result<Option<GenerationParameters>> {
        self.from.as_deref().map(read_from).transpose()
    }
}

/// Reads `--latents` (when given) into `generation`, with the image count `count` (default: the
/// latents' batch, else 1) and, for images, the `[width, height]` of `size` (default: the
/// latents' size times the model's VAE downsampling, which the pipeline applies).
pub(crate) fn read_latents_into(
    generation: &mut Generation,
    latents: Option<&Path>,
    count: Option<usize>,
    size: Option<[Option<usize>; 2]>,
) -> anyhow::Result<()> {
    let latents = latents.map(read_latents).transpose()?;
    let shape = latents.as_ref().map(|l| l.shape.as_slice());
    generation.num_images = count.or(shape.map(|s| s[0])).unwrap_or(1);
    if let Some([width, height]) = size {
        (generation.width, generation.height) = (width, height);
    }
    generation.latents = latents;
    Ok(())
}

/// Loads a model from a folder (`dir`, with `from_dir`) or a single file (`file`, with
/// `from_file`), then prints what was loaded, on which device and in which precision, and the
/// time taken.
pub fn load_timed<M, B: Backend>(
    what: &str,
    (dir, file): (Option<&Path>, Option<&Path>),
    precision: Precision,
    device: &B::Device,
    from_dir: impl FnOnce(&Path) -> Result<M>,
    from_file: impl FnOnce(&Path) -> Result<M>,
) -> Result<M> {
    let start = Instant::now();
    let model = match (dir, file) {
        (Some(dir), _) => from_dir(dir)?,
        (None, Some(file)) => from_file(file)?,
        (None, None) => {
            let message = "give --model DIR|ORG/NAME or --checkpoint FILE";
            return Err(Error::invalid_input("model", message));
        }
    };
    report_loaded(what, &B::name(device), precision, start);
    Ok(model)
}

impl ModelArgs {
    /// Loads `what` from `--model` (with `from_dir`) or `--checkpoint` (with `from_file`),
    /// printing the time taken.
    pub fn load<M, B: Backend>(
        &self,
        what: &str,
        device: &B::Device,
        from_dir: fn(PathBuf, &ModelOptions, &B::Device) -> Result<M>,
        from_file: fn(PathBuf, &ModelOptions, &B::Device) -> Result<M>,
    ) -> Result<M> {
        let options = self.options();
        load_timed::<M, B>(
            what,
            (self.model.as_deref(), self.checkpoint.as_deref()),
            self.device.precision,
            device,
            |dir| from_dir(dir.to_path_buf(), &options, device),
            |file| from_file(file.to_path_buf(), &options, device),
        )
    }
}

/// The strength of a ControlNet's guidance, shared by `controlnet` and `in-context`.
#[derive(Debug, Clone, Copy, Args)]
pub struct ControlArgs {
    /// Multiplier of the ControlNet's residuals.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub conditioning_scale: f32,
    /// Guess mode: the residuals grow from the first skip to the mid block.
    #[arg(long)]
    pub guess_mode: bool,
}

impl ControlArgs {
    /// Checks that `--conditioning-scale` is a finite number.
    pub fn check(&self) -> anyhow::Result<()> {
        if !self.conditioning_scale.is_finite() {
            anyhow::bail!("--conditioning-scale must be a finite number");
        }
        Ok(())
    }
}

/// A `--seed` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeedArg {
    /// `-1`: draw a random seed.
    Random,
    /// This seed.
    Fixed(u64),
}

/// Parses `--seed`: a number in 0..2⁶⁴, or -1 for a random seed.
pub(crate) fn parse_seed(s: &str) -> std::result::Result<SeedArg, String> {
    match s.trim() {
        "-1" => Ok(SeedArg::Random),
        n => n.parse().map(SeedArg::Fixed).map_err(|_| {
            format!("`{s}` is not a seed (a whole number from 0 to 2^64-1, or -1 for a random one)")
        }),
    }
}

/// The seed `--seed` gives; a random one (no `--seed`, or -1) is printed as `seed: N` so the
/// run can be repeated.
pub(crate) fn resolve_seed(seed: Option<SeedArg>) -> u64 {
    match seed {
        Some(SeedArg::Fixed(seed)) => seed,
        None | Some(SeedArg::Random) => {
            let seed = random_seed();
            println!("seed: {seed}");
            seed
        }
    }
}

/// A seed from the clock and the process id.
fn random_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ (u64::from(std::process::id()) << 32)
}
