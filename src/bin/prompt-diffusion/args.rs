//! Command-line arguments shared by the subcommands.

use std::path::PathBuf;
use std::str::FromStr;

use clap::Args;
use prompt_diffusion::backends::BackendKind;
use prompt_diffusion::core::Precision;
use prompt_diffusion::core::memory::MemoryLimit;
use prompt_diffusion::schedulers::SchedulerKind;
use prompt_diffusion::{Generation, ModelOptions};

use crate::output::check_output;

/// Parses a value with the library's `FromStr`, for clap.
pub(crate) fn parse<T: FromStr<Err = prompt_diffusion::core::Error>>(s: &str) -> Result<T, String> {
    T::from_str(s).map_err(|e| e.to_string())
}

/// Where the model comes from and where it runs.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// A diffusers pipeline folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/).
    #[arg(
        long,
        value_name = "DIR",
        required_unless_present = "checkpoint",
        conflicts_with = "checkpoint"
    )]
    pub model: Option<PathBuf>,
    /// An original single-file checkpoint (.safetensors or .ckpt).
    #[arg(long, value_name = "FILE")]
    pub checkpoint: Option<PathBuf>,
    /// With --checkpoint: a diffusers folder whose configs, tokenizer and scheduler describe it
    /// (default: detect SD1/SD2 and use the published configs).
    #[arg(long, value_name = "DIR", requires = "checkpoint")]
    pub config: Option<PathBuf>,
    /// Weight-file variant to prefer in diffusers folders (e.g. fp16).
    #[arg(long)]
    pub variant: Option<String>,
    #[command(flatten)]
    pub device: DeviceArgs,
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
        ModelOptions {
            variant: self.variant.clone(),
            config: self.config.clone(),
            memory_limit: self.device.max_memory.unwrap_or_default(),
        }
    }
}

/// What to generate.
#[derive(Debug, Clone, Args)]
pub struct GenerationArgs {
    /// The prompt.
    #[arg(long)]
    pub prompt: String,
    /// What to steer away from.
    #[arg(long)]
    pub negative_prompt: Option<String>,
    /// Denoising steps.
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// Classifier-free guidance scale (≤ 1 turns guidance off).
    #[arg(long, default_value_t = 7.5, allow_negative_numbers = true)]
    pub guidance: f64,
    /// Scheduler: ddim, ddpm, pndm, euler, euler-ancestral, dpm++2m, dpm++2m-karras, unipc, lms
    /// (default: the model's own).
    #[arg(long, value_parser = parse::<SchedulerKind>)]
    pub scheduler: Option<SchedulerKind>,
    /// Seed of every random draw (default, or -1: a random seed, printed).
    #[arg(long, value_parser = parse_seed, allow_negative_numbers = true)]
    pub seed: Option<SeedArg>,
    /// Image width in pixels, a multiple of 8 (default: the model's native size).
    #[arg(long)]
    pub width: Option<usize>,
    /// Image height in pixels, a multiple of 8 (default: the model's native size).
    #[arg(long)]
    pub height: Option<usize>,
    /// A safetensors file whose tensor `latents` [n, 4, height/8, width/8] is the initial noise.
    #[arg(long, value_name = "FILE")]
    pub latents: Option<PathBuf>,
    /// Number of images (default 1, or the batch of --latents).
    #[arg(long)]
    pub num_images: Option<usize>,
    /// DDIM's eta (0 = deterministic).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub eta: f64,
    /// Output PNG; several images get `_0`, `_1`, … before the extension.
    #[arg(long, default_value = "output.png")]
    pub output: PathBuf,
}

impl GenerationArgs {
    /// The validated library options, after checking that the output files can be written;
    /// without `--seed` (or with -1) a seed is drawn from the clock and printed so the run can
    /// be repeated.
    pub fn generation(&self) -> anyhow::Result<Generation> {
        let mut generation = Generation {
            prompt: self.prompt.clone(),
            negative_prompt: self.negative_prompt.clone(),
            steps: self.steps,
            guidance_scale: self.guidance,
            scheduler: self.scheduler,
            width: self.width,
            height: self.height,
            num_images: self.num_images.unwrap_or(1),
            seed: 0,
            latents: None,
            eta: self.eta,
        };
        if let Some(path) = &self.latents {
            let latents = crate::output::read_latents(path)?;
            let [n, _, h, w] = [
                latents.shape[0],
                latents.shape[1],
                latents.shape[2],
                latents.shape[3],
            ];
            generation.num_images = self.num_images.unwrap_or(n);
            generation.width = Some(self.width.unwrap_or(w * 8));
            generation.height = Some(self.height.unwrap_or(h * 8));
            generation.latents = Some(latents);
        }
        generation.validate()?;
        check_output(&self.output, "png", generation.num_images)?;
        generation.seed = resolve_seed(self.seed);
        Ok(generation)
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
pub(crate) fn parse_seed(s: &str) -> Result<SeedArg, String> {
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
