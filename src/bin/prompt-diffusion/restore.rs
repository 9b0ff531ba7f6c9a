//! `restore`: Diff-Plugin restoration with one task's plugin or from an instruction.

use std::path::PathBuf;

use burn::tensor::backend::Backend;
use clap::Args;
use prompt_diffusion::Generation;
use prompt_diffusion::backends::BackendTask;
use prompt_diffusion::core::image::load_rgb;
use prompt_diffusion::core::{Error, Result};
use prompt_diffusion::diff_plugin::Task;
use prompt_diffusion::pipelines::diff_plugin::{DiffPlugin, Restore, WorkingSize};
use prompt_diffusion::schedulers::{SchedulerConfig, SchedulerKind};

use crate::args::{ModelArgs, SeedArg, parse_seed, resolve_seed};
use crate::metadata::{MetadataArgs, ModelStamp, Record, file_name, image_size};
use crate::output::{Progress, check_output, save_images};
use crate::sd::load_model;

fn parse_task(s: &str) -> std::result::Result<Task, String> {
    s.parse().map_err(|e: Error| e.to_string())
}

/// Arguments of `restore`.
#[derive(Debug, Clone, Args)]
pub struct RestoreArgs {
    /// The base model (SD v1.4/1.5) and where it runs.
    #[command(flatten)]
    pub model: ModelArgs,
    /// The CLIP ViT-L/14 vision folder (`openai/clip-vit-large-patch14`).
    #[arg(long, value_name = "DIR", value_parser = crate::args::path_arg())]
    pub clip_vision: PathBuf,
    /// The released `pre-trained/` folder (`<task>/tpb.pt`, `<task>/scb/`, `plugin_selector/`).
    #[arg(long, value_name = "DIR", value_parser = crate::args::path_arg())]
    pub plugins: PathBuf,
    /// The task: derain, desnow, dehaze, deblur, lowlight, highlight, face, demoire.
    #[arg(long, value_parser = parse_task, conflicts_with = "instruction", required_unless_present = "instruction")]
    pub task: Option<Task>,
    /// An instruction for the Plugin-Selector ("remove the rain and brighten it").
    #[arg(long)]
    pub instruction: Option<String>,
    /// The degraded image.
    #[arg(long, value_name = "FILE", value_parser = crate::args::path_arg())]
    pub input: PathBuf,
    /// UniPC steps of the first plugin.
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// Steps of later plugins in a chain.
    #[arg(long, default_value_t = 3)]
    pub chain_steps: usize,
    /// Seed of the noise (-1: a random seed, printed).
    #[arg(long, default_value = "42", value_parser = parse_seed, allow_negative_numbers = true)]
    pub seed: SeedArg,
    /// Working size: the shorter side is scaled to this (default: 512 as a minimum for a task,
    /// exactly 512 for an instruction, as the official scripts do).
    #[arg(long)]
    pub size: Option<usize>,
    /// Whether the PNG records its parameters.
    #[command(flatten)]
    pub metadata: MetadataArgs,
    /// Output PNG.
    #[arg(long, default_value = "restored.png", value_parser = crate::args::path_arg())]
    pub output: PathBuf,
}

/// A restoration, checked and ready to dispatch.
pub struct RestoreRun {
    args: RestoreArgs,
    image: image::RgbImage,
    request: Restore,
}

impl RestoreRun {
    /// Checks what can be checked before loading models.
    pub fn new(args: RestoreArgs) -> anyhow::Result<Self> {
        check_output(&args.output, "png", 1)?;
        if args.steps == 0 || args.chain_steps == 0 {
            anyhow::bail!("--steps and --chain-steps must be at least 1");
        }
        let mut request = match (&args.task, &args.instruction) {
            (Some(task), _) => Restore::task(*task),
            (None, Some(instruction)) => Restore::instruction(instruction.clone()),
            (None, None) => anyhow::bail!("give --task or --instruction"),
        };
        request = request
            .with_steps(args.steps)
            .with_chain_steps(args.chain_steps);
        if let Some(size) = args.size {
            if size < 8 {
                anyhow::bail!("--size {size} is smaller than 8 pixels");
            }
            request = request.with_size(WorkingSize::ShortSide(size));
        }
        request.validate()?;
        let image = load_rgb(&args.input)?;
        request.working_size(image.width() as usize, image.height() as usize, 8)?;
        request = request.with_seed(resolve_seed(Some(args.seed)));
        Ok(Self {
            args,
            image,
            request,
        })
    }
}

impl BackendTask for RestoreRun {
    type Output = anyhow::Result<()>;

    fn run<B: Backend>(self, device: B::Device) -> Result<Self::Output> {
        let stamp = self.args.model.stamp(self.args.metadata);
        let sd = load_model::<B>(&self.args.model, &device)?;
        let plugin = DiffPlugin::new(sd, &self.args.clip_vision, &self.args.plugins)?;
        let mut progress = Progress::new("restoring");
        let restored = plugin.restore(&self.image, &self.request, &mut progress)?;
        progress.finish();
        let names: Vec<&str> = restored.tasks.iter().map(|t| t.name()).collect();
        println!(
            "plugins: {}",
            if names.is_empty() {
                "none (null)".to_string()
            } else {
                names.join(", ")
            }
        );
        let images = std::slice::from_ref(&restored.image);
        let record = self.record(stamp, &names, image_size(images));
        Ok(save_images(images, &self.args.output, &record))
    }
}

impl RestoreRun {
    /// The record of a restoration: the instruction as the prompt, UniPC's steps, the seed, the
    /// size, the model, and the plugins that ran.
    fn record(&self, stamp: ModelStamp, tasks: &[&str], size: (usize, usize)) -> Record {
        let request = &self.request;
        let generation = Generation::new(self.args.instruction.clone().unwrap_or_default())
            .with_steps(request.steps)
            .with_guidance_scale(1.0)
            .with_seed(request.seed);
        let tasks = if tasks.is_empty() {
            "none".to_string()
        } else {
            tasks.join(", ")
        };
        let options = self.args.metadata.with([
            ("Diff-Plugin tasks", tasks),
            ("Chain steps", request.chain_steps.to_string()),
            ("Input", file_name(&self.args.input)),
        ]);
        let scheduler = (Some(SchedulerKind::UniPc), &SchedulerConfig::sd_v1_5());
        let mut record = Record::new(&options, stamp, &generation, scheduler, size);
        // No classifier-free guidance runs.
        record.edit(|p| p.cfg_scale = None);
        record
    }
}
