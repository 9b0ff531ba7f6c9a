//! `txt2img`, `img2img` and `inpaint`.

use std::path::PathBuf;

use burn::tensor::backend::Backend;
use clap::Args;
use prompt_diffusion::backends::BackendTask;
use prompt_diffusion::core::Result;
use prompt_diffusion::core::image::load_rgb;
use prompt_diffusion::pipelines::memory;
use prompt_diffusion::{Inpaint, StableDiffusion};

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

/// Arguments of `img2img`: txt2img's and the image to start from.
#[derive(Debug, Clone, Args)]
pub struct Img2ImgArgs {
    #[command(flatten)]
    pub txt2img: Txt2ImgArgs,
    /// The image to transform.
    #[arg(long, value_name = "FILE", value_parser = crate::args::path_arg())]
    pub init_image: PathBuf,
    /// How much of the schedule runs, in [0, 1] (default 0.8, or the `Denoising strength` of
    /// --from; 1 ignores the image's content).
    #[arg(long, allow_negative_numbers = true)]
    pub strength: Option<f64>,
}

/// Arguments of `inpaint`: img2img's and the mask.
#[derive(Debug, Clone, Args)]
#[command(
    mut_arg("init_image", |a| a.help("The image whose masked region is regenerated")),
    mut_arg("strength", |a| a.help("How much of the schedule runs, in [0, 1] (default 1: the masked region starts from noise; or the `Denoising strength` of --from)")),
)]
pub struct InpaintArgs {
    #[command(flatten)]
    pub img2img: Img2ImgArgs,
    /// The mask: white (luma ≥ 128) is regenerated, black is kept; resized to the output.
    #[arg(long, value_name = "FILE", value_parser = crate::args::path_arg())]
    pub mask: PathBuf,
}

/// `--init-image` and `--mask` of the ControlNet pipelines: inpainting instead of text→image.
#[derive(Debug, Clone, Args)]
pub struct MaskArgs {
    /// Inpaint this image (with --mask): only the mask's white region is regenerated, and the
    /// output takes the image's size.
    #[arg(long, value_name = "FILE", requires = "mask", value_parser = crate::args::path_arg())]
    pub init_image: Option<PathBuf>,
    /// The region of --init-image to regenerate: white (luma ≥ 128) is regenerated, black is
    /// kept.
    #[arg(long, value_name = "FILE", requires = "init_image", value_parser = crate::args::path_arg())]
    pub mask: Option<PathBuf>,
    /// With --mask: how much of the schedule runs, in [0, 1] (default 1).
    #[arg(long, requires = "mask", allow_negative_numbers = true)]
    pub strength: Option<f64>,
}

impl MaskArgs {
    /// The image, the mask and the strength, when inpainting was asked for.
    pub fn load(&self, generation: &GenerationArgs) -> anyhow::Result<Option<Init>> {
        let (Some(image), Some(mask)) = (&self.init_image, &self.mask) else {
            return Ok(None);
        };
        let strength = strength(generation, self.strength, 1.0)?;
        Ok(Some(Init::Inpaint(
            load_rgb(image)?,
            load_mask(mask)?,
            strength,
        )))
    }
}

/// The image a run starts from.
pub enum Init {
    /// img2img: the image and the strength.
    Image(image::RgbImage, f64),
    /// inpaint: the image, its mask and the strength.
    Inpaint(image::RgbImage, image::GrayImage, f64),
}

impl Init {
    /// The image's size.
    fn size(&self) -> (usize, usize) {
        let (Self::Image(image, _) | Self::Inpaint(image, _, _)) = self;
        (image.width() as usize, image.height() as usize)
    }

    /// The strength.
    pub fn strength(&self) -> f64 {
        match self {
            Self::Image(_, s) | Self::Inpaint(_, _, s) => *s,
        }
    }
}

/// `--strength`, else the recorded one, else `default`, checked to lie in [0, 1].
fn strength(args: &GenerationArgs, given: Option<f64>, default: f64) -> anyhow::Result<f64> {
    let from = args.recorded_parameters()?;
    let strength = given
        .or(from.and_then(|p| p.denoising_strength))
        .unwrap_or(default);
    if !(0.0..=1.0).contains(&strength) {
        anyhow::bail!("--strength {strength:?} is outside [0, 1]");
    }
    Ok(strength)
}

/// Loads a mask image (any format `load_rgb` reads), converted to luma as PIL does.
pub fn load_mask(path: &std::path::Path) -> Result<image::GrayImage> {
    Ok(prompt_diffusion::pipelines::mask_from_rgb(&load_rgb(path)?))
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
    pub init: Option<Init>,
    /// What the PNGs record.
    pub record: RecordOptions,
}

impl SdRun {
    /// Checks everything that can be checked without the model.
    pub fn txt2img(args: &Txt2ImgArgs) -> anyhow::Result<Self> {
        let generation = args.generation.generation()?;
        Ok(Self {
            model: args.model.or_default_model()?,
            generation,
            output: args.generation.output.clone(),
            init: None,
            record: args.generation.record_options(Vec::new()),
        })
    }

    /// Checks everything that can be checked without the model.
    pub fn img2img(args: &Img2ImgArgs) -> anyhow::Result<Self> {
        let generation = &args.txt2img.generation;
        let strength = strength(generation, args.strength, 0.8)?;
        if generation.latents.is_some() {
            anyhow::bail!("--latents applies to txt2img and inpaint only");
        }
        let image = load_rgb(&args.init_image)?;
        Self::with_init(&args.txt2img, Init::Image(image, strength))
    }

    /// Checks everything that can be checked without the model.
    pub fn inpaint(args: &InpaintArgs) -> anyhow::Result<Self> {
        let Img2ImgArgs {
            txt2img,
            init_image,
            strength: given,
        } = &args.img2img;
        let strength = strength(&txt2img.generation, *given, 1.0)?;
        let (image, mask) = (load_rgb(init_image)?, load_mask(&args.mask)?);
        Self::with_init(txt2img, Init::Inpaint(image, mask, strength))
    }

    fn with_init(args: &Txt2ImgArgs, init: Init) -> anyhow::Result<Self> {
        Ok(Self {
            init: Some(init),
            ..Self::txt2img(args)?
        })
    }
}

impl BackendTask for SdRun {
    type Output = anyhow::Result<()>;

    fn run<B: Backend>(self, device: B::Device) -> Result<Self::Output> {
        let stamp = self.model.stamp(self.record.metadata);
        if let Some(dir) = &self.model.model {
            let init = self.init.as_ref().map(Init::size);
            memory::check_folder::<B>(dir, &self.model.options(), &self.generation, init, &device)?;
        }
        let sd = load_model::<B>(&self.model, &device)?;
        let mut progress = Progress::new("denoising");
        let images = match &self.init {
            None => sd.text_to_image(&self.generation, &mut progress)?,
            Some(Init::Image(image, strength)) => {
                sd.image_to_image(&self.generation, image, *strength, &mut progress)?
            }
            Some(Init::Inpaint(image, mask, strength)) => {
                let inpaint = Inpaint::new(image, mask).with_strength(*strength);
                sd.inpaint(&self.generation, &inpaint, &mut progress)?
            }
        };
        progress.finish();
        let (g, size) = (&self.generation, image_size(&images));
        let scheduler = (g.scheduler, &sd.components.scheduler);
        let mut record = Record::new(&self.record, stamp, g, scheduler, size);
        if let Some(init) = &self.init {
            record.edit(|p| p.denoising_strength = Some(init.strength()));
        }
        Ok(save_images(&images, &self.output, &record))
    }
}
