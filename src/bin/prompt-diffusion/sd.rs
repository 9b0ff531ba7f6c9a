//! `txt2img` and `img2img`.

use std::path::PathBuf;

use burn::tensor::backend::Backend;
use clap::Args;
use prompt_diffusion::StableDiffusion;
use prompt_diffusion::backends::BackendTask;
use prompt_diffusion::core::Result;
use prompt_diffusion::core::image::load_rgb;
use prompt_diffusion::pipelines::memory;

use crate::args::{GenerationArgs, ModelArgs};
use crate::metadata::{Record, RecordOptions, image_size};
use crate::output::{Progress, save_images};

/// Arguments of `txt2img`.
#[derive(Debug, Clone, Args)]
pub struct Txt2ImgArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub generation: GenerationArgs,
}

/// Arguments of `img2img`.
#[derive(Debug, Clone, Args)]
pub struct Img2ImgArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub generation: GenerationArgs,
    /// The image to transform.
    #[arg(long, value_name = "FILE", value_parser = crate::args::path_arg())]
    pub init_image: PathBuf,
    /// How much of the schedule runs, in [0, 1] (default 0.8, or the `Denoising strength` of
    /// --from; 1 ignores the image's content).
    #[arg(long, allow_negative_numbers = true)]
    pub strength: Option<f64>,
}

/// Loads a Stable Diffusion model from `--model` or `--checkpoint`, printing the time taken.
pub fn load_model<B: Backend>(args: &ModelArgs, device: &B::Device) -> Result<StableDiffusion<B>> {
    let (dir, file) = (
        StableDiffusion::from_pretrained,
        StableDiffusion::from_single_file,
    );
    args.load::<_, B>("model", device, dir, file)
}

/// A txt2img or img2img run, ready to be dispatched to a backend.
pub struct SdRun {
    pub model: ModelArgs,
    pub generation: prompt_diffusion::Generation,
    pub output: PathBuf,
    pub init: Option<(image::RgbImage, f64)>,
    /// What the PNGs record.
    pub record: RecordOptions,
}

impl SdRun {
    /// Checks everything that can be checked without the model.
    pub fn txt2img(args: &Txt2ImgArgs) -> anyhow::Result<Self> {
        let generation = args.generation.generation()?;
        Ok(Self {
            model: args.model.clone(),
            generation,
            output: args.generation.output.clone(),
            init: None,
            record: args.generation.record_options(Vec::new()),
        })
    }

    /// Checks everything that can be checked without the model.
    pub fn img2img(args: &Img2ImgArgs) -> anyhow::Result<Self> {
        let from = args.generation.recorded_parameters()?;
        let strength = (args.strength)
            .or(from.and_then(|p| p.denoising_strength))
            .unwrap_or(0.8);
        if !(0.0..=1.0).contains(&strength) {
            anyhow::bail!("--strength {strength:?} is outside [0, 1]");
        }
        if args.generation.latents.is_some() {
            anyhow::bail!("--latents applies to txt2img only");
        }
        let generation = args.generation.generation()?;
        let image = load_rgb(&args.init_image)?;
        Ok(Self {
            model: args.model.clone(),
            generation,
            output: args.generation.output.clone(),
            init: Some((image, strength)),
            record: args.generation.record_options(Vec::new()),
        })
    }
}

impl BackendTask for SdRun {
    type Output = anyhow::Result<()>;

    fn run<B: Backend>(self, device: B::Device) -> Result<Self::Output> {
        let stamp = self.model.stamp(self.record.metadata);
        if let Some(dir) = &self.model.model {
            let init = self
                .init
                .as_ref()
                .map(|(image, _)| (image.width() as usize, image.height() as usize));
            memory::check_folder::<B>(dir, &self.model.options(), &self.generation, init, &device)?;
        }
        let sd = load_model::<B>(&self.model, &device)?;
        let mut progress = Progress::new("denoising");
        let images = match &self.init {
            None => sd.text_to_image(&self.generation, &mut progress)?,
            Some((image, strength)) => {
                sd.image_to_image(&self.generation, image, *strength, &mut progress)?
            }
        };
        progress.finish();
        let (g, size) = (&self.generation, image_size(&images));
        let scheduler = (g.scheduler, &sd.components.scheduler);
        let mut record = Record::new(&self.record, stamp, g, scheduler, size);
        if let Some((_, strength)) = &self.init {
            record.edit(|p| p.denoising_strength = Some(*strength));
        }
        Ok(save_images(&images, &self.output, &record))
    }
}
