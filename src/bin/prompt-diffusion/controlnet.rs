//! `controlnet`: text→image guided by a standard ControlNet and one hint image.

use std::path::PathBuf;

use burn::tensor::backend::Backend;
use clap::Args;
use image::RgbImage;
use prompt_diffusion::backends::BackendTask;
use prompt_diffusion::core::Result;
use prompt_diffusion::core::hub::RepoId;
use prompt_diffusion::core::image::load_rgb;
use prompt_diffusion::metadata::model_name;
use prompt_diffusion::pipelines::ControlNetOptions;
use prompt_diffusion::{Generation, Inpaint, StableDiffusionControlNet};

use crate::args::{ControlArgs, GenerationArgs, ModelArgs};
use crate::metadata::{Record, image_size};
use crate::output::{Progress, save_images};
use crate::sd::{Init, MaskArgs, load_model};

/// Arguments of `controlnet`.
#[derive(Debug, Clone, Args)]
#[command(mut_arg("guess_mode", |a| a.help("diffusers' guess mode: the ControlNet sees the conditional half only, residuals scaled from 0.1 (first skip) to 1 (mid block)")))]
pub struct ControlNetArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub generation: GenerationArgs,
    /// The ControlNet: a diffusers folder (config.json + weights), a Hugging Face repository id
    /// of one (found in the cache or downloaded, as --model), or a single weight file (diffusers
    /// or original names, e.g. control_sd15_canny.pth).
    #[arg(long, value_name = "DIR|FILE|ORG/NAME", value_parser = crate::args::path_arg())]
    pub controlnet: PathBuf,
    /// A diffusers config.json for the ControlNet (default: the folder's own; SD 1.5's for a
    /// single file).
    #[arg(long, value_name = "FILE", value_parser = crate::args::path_arg())]
    pub controlnet_config: Option<PathBuf>,
    /// The hint image (edges, depth, pose, … as the ControlNet expects). The output takes its
    /// size, rounded down to a multiple of 8, unless --width/--height are given.
    #[arg(long, value_name = "FILE", value_parser = crate::args::path_arg())]
    pub hint: PathBuf,
    #[command(flatten)]
    pub control: ControlArgs,
    #[command(flatten)]
    pub inpaint: MaskArgs,
}

/// A ControlNet run, ready to be dispatched to a backend.
pub struct ControlNetRun {
    args: ControlNetArgs,
    hint: RgbImage,
    generation: Generation,
    inpaint: Option<Init>,
}

impl ControlNetRun {
    /// Reads the hint and checks everything that can be checked without the model.
    pub fn new(args: &ControlNetArgs) -> anyhow::Result<Self> {
        args.control.check()?;
        let name = args.controlnet.to_str();
        let repo_id = name.is_some_and(|name| RepoId::parse(name).is_ok());
        if !args.controlnet.exists() && !repo_id {
            anyhow::bail!("--controlnet {}: not found", args.controlnet.display());
        }
        let generation = args.generation.generation()?;
        let hint = load_rgb(&args.hint)?;
        let inpaint = args.inpaint.load(&args.generation)?;
        Ok(Self {
            args: args.clone(),
            hint,
            generation,
            inpaint,
        })
    }
}

impl BackendTask for ControlNetRun {
    type Output = anyhow::Result<()>;

    fn run<B: Backend>(self, device: B::Device) -> Result<Self::Output> {
        let args = &self.args;
        let stamp = args.model.stamp(args.generation.metadata);
        let sd = load_model::<B>(&args.model, &device)?;
        let controlnet = StableDiffusionControlNet::load_controlnet(
            &args.controlnet,
            args.controlnet_config.as_deref(),
            &args.model.options(),
            &device,
        )?;
        let pipe = StableDiffusionControlNet::new(sd, controlnet);
        let options = ControlNetOptions::default()
            .with_conditioning_scale(args.control.conditioning_scale)
            .with_guess_mode(args.control.guess_mode);
        let mut progress = Progress::new("denoising");
        let (hint, g) = (&self.hint, &self.generation);
        let images = match &self.inpaint {
            Some(Init::Inpaint(image, mask, strength)) => {
                let inpaint = Inpaint::new(image, mask).with_strength(*strength);
                pipe.inpaint(hint, &inpaint, g, &options, &mut progress)?
            }
            _ => pipe.generate(hint, g, &options, &mut progress)?,
        };
        progress.finish();
        // The sd-webui-controlnet extension's record of a unit.
        let mode = match args.control.guess_mode {
            true => "ControlNet is more important",
            false => "Balanced",
        };
        let unit = format!(
            "Module: none, Model: {}, Weight: {}, Control Mode: {mode}",
            model_name(&args.controlnet),
            args.control.conditioning_scale
        );
        let (g, size) = (&self.generation, image_size(&images));
        let scheduler = (g.scheduler, &pipe.sd.components.scheduler);
        let options = args.generation.record_options(vec![("ControlNet 0", unit)]);
        let mut record = Record::new(&options, stamp, g, scheduler, size);
        if let Some(init) = &self.inpaint {
            record.edit(|p| p.denoising_strength = Some(init.strength()));
        }
        Ok(save_images(&images, &args.generation.output, &record))
    }
}
