//! `in-context`: Prompt Diffusion from an example pair and a query image.

use std::path::PathBuf;

use burn::tensor::backend::Backend;
use clap::{Args, ValueEnum};
use image::RgbImage;
use prompt_diffusion::backends::BackendTask;
use prompt_diffusion::controlnet::ControlScales;
use prompt_diffusion::core::Result;
use prompt_diffusion::core::image::{PixelRange, load_rgb};
use prompt_diffusion::pipelines::{NOTEBOOK_NEGATIVE_PROMPT, NOTEBOOK_PROMPT_SUFFIX};
use prompt_diffusion::{InContextOptions, Inpaint, PromptDiffusion};

use crate::args::{ControlArgs, GenerationArgs, ModelArgs};
use crate::metadata::{Record, RecordOptions, file_name, image_size};
use crate::output::{Progress, save_images};
use crate::sd::{Init, MaskArgs};

/// The value range hints are given to the ControlNet in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HintRange {
    /// [-1, 1], as the model was trained and the official notebook runs it.
    Training,
    /// [0, 1], as the diffusers port runs it.
    Diffusers,
}

/// Arguments of `in-context`.
#[derive(Debug, Clone, Args)]
#[command(
    mut_arg("model", |a| a.help("A Prompt Diffusion folder in the diffusers layout: controlnet/ beside the pipeline components (unet/, vae/, …) or beside base/")),
    mut_arg("checkpoint", |a| a.help("The original Prompt Diffusion checkpoint (network-step=04999.ckpt or a .safetensors copy)")),
    mut_arg("scheduler", |a| a.help("Scheduler: ddim, ddpm, pndm, euler, euler-ancestral, dpm++2m, dpm++2m-karras, unipc, lms (default: ddim)")),
    mut_arg("width", |a| a.help("Image width in pixels, a multiple of 8 (default: from --resolution and the query)")),
    mut_arg("height", |a| a.help("Image height in pixels, a multiple of 8 (default: from --resolution and the query)")),
    mut_arg("guess_mode", |a| a.help("The original guess mode: residuals scaled by 0.825^(12−i) · scale")),
)]
pub struct InContextArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub generation: GenerationArgs,
    /// The example's source image (e.g. a line drawing).
    #[arg(long, value_name = "FILE", value_parser = crate::args::path_arg())]
    pub example_source: PathBuf,
    /// The example's target image (what the source becomes).
    #[arg(long, value_name = "FILE", value_parser = crate::args::path_arg())]
    pub example_target: PathBuf,
    /// The query: a new source image to apply the example's task to.
    #[arg(long, value_name = "FILE", value_parser = crate::args::path_arg())]
    pub query: PathBuf,
    /// Short side of the output; both sides are rounded to multiples of 64 (default: the
    /// model's native size, 512). --width/--height override it.
    #[arg(long)]
    pub resolution: Option<usize>,
    /// Value range of the hints: training ([-1, 1]) or diffusers ([0, 1]).
    #[arg(long, value_enum, default_value = "training")]
    pub hint_range: HintRange,
    /// Append the official notebook's ", best quality, extremely detailed" to the prompt and use
    /// its negative prompt (unless --negative-prompt is given). The notebook also runs
    /// --steps 100 --guidance 9 (DDIM, the default here).
    #[arg(long)]
    pub notebook_prompts: bool,
    #[command(flatten)]
    pub control: ControlArgs,
    #[command(flatten)]
    pub inpaint: MaskArgs,
}

/// An in-context run, ready to be dispatched to a backend.
pub struct InContextRun {
    model: ModelArgs,
    images: [RgbImage; 3],
    prompt: String,
    options: InContextOptions,
    output: PathBuf,
    /// What the PNGs record.
    record: RecordOptions,
    inpaint: Option<Init>,
}

impl InContextRun {
    /// Reads the images and checks everything that can be checked without the model.
    pub fn new(args: &InContextArgs) -> anyhow::Result<Self> {
        args.control.check()?;
        let generation = args.generation.generation()?;
        let prompt = generation.prompt.clone();
        let images = [
            load_rgb(&args.example_source)?,
            load_rgb(&args.example_target)?,
            load_rgb(&args.query)?,
        ];
        let mut options = InContextOptions::new(generation)
            .with_hint_range(match args.hint_range {
                HintRange::Training => PixelRange::MinusOneToOne,
                HintRange::Diffusers => PixelRange::ZeroToOne,
            })
            .with_control_scales(if args.control.guess_mode {
                ControlScales::LdmGuessMode(args.control.conditioning_scale)
            } else {
                ControlScales::Uniform(args.control.conditioning_scale)
            });
        options.resolution = args.resolution;
        if args.notebook_prompts {
            options.prompt_suffix = Some(NOTEBOOK_PROMPT_SUFFIX.into());
            options
                .generation
                .negative_prompt
                .get_or_insert_with(|| NOTEBOOK_NEGATIVE_PROMPT.into());
        }
        if args.resolution == Some(0) {
            anyhow::bail!("--resolution must be positive");
        }
        let hint_range = match args.hint_range {
            HintRange::Training => "training",
            HintRange::Diffusers => "diffusers",
        };
        let extra = vec![
            ("Example source", file_name(&args.example_source)),
            ("Example target", file_name(&args.example_target)),
            ("Query", file_name(&args.query)),
            ("Hint range", hint_range.to_string()),
            (
                "Conditioning scale",
                args.control.conditioning_scale.to_string(),
            ),
            ("Guess mode", args.control.guess_mode.to_string()),
        ];
        let inpaint = args.inpaint.load(&args.generation)?;
        Ok(Self {
            inpaint,
            model: args.model.clone(),
            images,
            prompt,
            options,
            output: args.generation.output.clone(),
            record: args.generation.record_options(extra),
        })
    }
}

impl BackendTask for InContextRun {
    type Output = anyhow::Result<()>;

    fn run<B: Backend>(self, device: B::Device) -> Result<Self::Output> {
        let stamp = self.model.stamp(self.record.metadata);
        let (dir, file) = (
            PromptDiffusion::<B>::from_pretrained,
            PromptDiffusion::<B>::from_single_file,
        );
        let pd = self
            .model
            .load::<_, B>("Prompt Diffusion", &device, dir, file)?;
        let mut progress = Progress::new("denoising");
        let [source, target, query] = &self.images;
        let (prompt, options) = (&self.prompt, &self.options);
        let images = match &self.inpaint {
            Some(Init::Inpaint(image, mask, strength)) => {
                let inpaint = Inpaint::new(image, mask).with_strength(*strength);
                let images = [source, target, query];
                pd.inpaint(images, &inpaint, prompt, options, &mut progress)?
            }
            _ => pd.generate(source, target, query, prompt, options, &mut progress)?,
        };
        progress.finish();
        // The prompts as encoded (with the notebook's suffix when it was asked for).
        let g = self.options.generation(&self.prompt);
        let scheduler = (g.scheduler, &pd.sd.components.scheduler);
        let mut record = Record::new(&self.record, stamp, &g, scheduler, image_size(&images));
        if let Some(init) = &self.inpaint {
            record.edit(|p| p.denoising_strength = Some(init.strength()));
        }
        Ok(save_images(&images, &self.output, &record))
    }
}
