//! What the written PNGs record (`--no-metadata` turns it off), `--from IMAGE.png`, and the
//! `info` subcommand that prints it back.

use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use anyhow::{Context, anyhow};
use clap::Args;
use prompt_diffusion::Generation;
use prompt_diffusion::metadata::{
    GenerationParameters, LoraReference, lora_hash, model_hash, model_name, read_parameters,
    read_parameters_text,
};
use prompt_diffusion::pipelines::LoraSpec;
use prompt_diffusion::schedulers::{SchedulerConfig, SchedulerKind};

use crate::args::{GenerationArgs, ModelArgs, path_arg};

/// Whether the written PNGs record how they were made.
#[derive(Debug, Clone, Copy, Default, Args)]
pub struct MetadataArgs {
    /// Write PNGs without the generation parameters (by default each image records its prompt,
    /// settings, seed and model in a `parameters` text chunk, as AUTOMATIC1111 does; read it
    /// with `prompt-diffusion info`).
    #[arg(long)]
    pub no_metadata: bool,
}

impl MetadataArgs {
    /// The record options of a run with these and the `extra` keys (no `--latents` file).
    #[cfg_attr(
        not(any(feature = "versatile", feature = "diff-plugin")),
        allow(dead_code)
    )]
    pub fn with(self, extra: impl IntoIterator<Item = (&'static str, String)>) -> RecordOptions {
        RecordOptions {
            metadata: self,
            latents: None,
            extra: extra.into_iter().collect(),
        }
    }
}

/// Arguments of `info`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "\
Examples:
  prompt-diffusion info output.png
  prompt-diffusion info --json output.png
  prompt-diffusion txt2img --model fixtures/tiny-sd --from output.png --output again.png")]
pub struct InfoArgs {
    /// A PNG with generation parameters (written by prompt-diffusion, AUTOMATIC1111, Forge, …).
    #[arg(value_name = "IMAGE.png", value_parser = path_arg())]
    pub image: PathBuf,
    /// Print the parameters as JSON instead of AUTOMATIC1111's text.
    #[arg(long)]
    pub json: bool,
}

/// `info`: prints the parameters stored in an image.
pub fn info(args: &InfoArgs) -> anyhow::Result<()> {
    if args.json {
        let parameters = read_from(&args.image)?;
        println!("{}", serde_json::to_string_pretty(&parameters.to_json())?);
    } else {
        let text = read_parameters_text(&args.image)?;
        println!("{}", text.ok_or_else(|| no_parameters(&args.image))?);
    }
    Ok(())
}

/// The parameters stored in `image` (for `--from`).
pub fn read_from(image: &Path) -> anyhow::Result<GenerationParameters> {
    read_parameters(image)?.ok_or_else(|| no_parameters(image))
}

fn no_parameters(image: &Path) -> anyhow::Error {
    anyhow!(
        "{}: no generation parameters (the PNG has no `parameters` text chunk)",
        image.display()
    )
}

/// Sets in `generation` what `--from`'s parameters give (prompts, steps, scheduler unless
/// `keep_scheduler`, guidance scale, seed, size, DDIM's η); options given on the command line
/// are applied afterwards and win.
pub fn apply_from(
    image: &Path,
    parameters: &GenerationParameters,
    generation: &mut Generation,
    keep_scheduler: bool,
) -> anyhow::Result<()> {
    let mut parameters = parameters.clone();
    if keep_scheduler {
        parameters.sampler = None;
    }
    parameters
        .apply_to(generation)
        .with_context(|| format!("--from {}", image.display()))?;
    if !parameters.loras.is_empty() {
        let loras: Vec<String> = parameters
            .loras
            .iter()
            .map(|l| format!("{}:{}", l.name, l.scale))
            .collect();
        tracing::warn!(
            "{} was made with the LoRAs {}; give the same files with --lora to make it again",
            image.display(),
            loras.join(", ")
        );
    }
    if let Some(file) = parameters.extra(LATENTS) {
        tracing::warn!(
            "{} was made from initial latents ({file}); give --latents FILE to make it again",
            image.display()
        );
    }
    Ok(())
}

/// The extra key naming a run's `--latents` file.
const LATENTS: &str = "Latents";

/// A model's `Model` and `Model hash`, and its LoRAs with their `Lora hashes`; the hashes
/// (SHA-256s of gigabytes) are computed on a thread while the model loads and runs.
pub struct ModelStamp {
    name: String,
    loras: Vec<LoraReference>,
    hashes: Option<JoinHandle<Hashes>>,
}

/// The model's hash and the LoRAs' hashes, when they could be computed.
type Hashes = (Option<String>, Vec<Option<String>>);

impl ModelStamp {
    /// Starts hashing `path` (a checkpoint or a diffusers folder; a repository id gets no
    /// hash) and the `loras` files unless the parameters are not written.
    pub fn start(
        path: Option<&Path>,
        variant: Option<&str>,
        loras: &[LoraSpec],
        metadata: MetadataArgs,
    ) -> Self {
        let name = path.map(model_name).unwrap_or_default();
        let references = loras
            .iter()
            .map(|spec| LoraReference {
                name: model_name(&spec.path),
                // The scale as typed (0.7, not 0.699999988…).
                scale: spec
                    .scale
                    .to_string()
                    .parse()
                    .unwrap_or(f64::from(spec.scale)),
                hash: None,
            })
            .collect();
        let hashes = (!metadata.no_metadata).then(|| {
            let model = path.filter(|p| p.exists()).map(Path::to_path_buf);
            let variant = variant.map(str::to_string);
            let files: Vec<PathBuf> = loras.iter().map(|l| l.path.clone()).collect();
            std::thread::spawn(move || {
                let model = model.and_then(|path| {
                    model_hash(&path, variant.as_deref())
                        .inspect_err(|e| tracing::warn!("no model hash: {e}"))
                        .ok()
                });
                let loras = files
                    .iter()
                    .map(|file| {
                        lora_hash(file)
                            .inspect_err(|e| tracing::warn!("no LoRA hash: {e}"))
                            .ok()
                    })
                    .collect();
                (model, loras)
            })
        });
        Self {
            name,
            loras: references,
            hashes,
        }
    }

    /// The name, the hash and the LoRAs (waiting for the hashes).
    fn finish(self) -> (String, Option<String>, Vec<LoraReference>) {
        let (hash, lora_hashes) = self.hashes.and_then(|h| h.join().ok()).unwrap_or_default();
        let mut loras = self.loras;
        for (lora, hash) in loras.iter_mut().zip(lora_hashes) {
            lora.hash = hash;
        }
        (self.name, hash, loras)
    }
}

/// What a run's record takes from the command line.
#[derive(Debug, Clone, Default)]
pub struct RecordOptions {
    /// `--no-metadata`.
    pub metadata: MetadataArgs,
    /// The `--latents` file, named in the record.
    pub latents: Option<PathBuf>,
    /// Keys beyond A1111's (the inputs, the subcommand's options), after them.
    pub extra: Vec<(&'static str, String)>,
}

/// What every image of a run records, or nothing with `--no-metadata`.
pub struct Record {
    parameters: Option<GenerationParameters>,
    latents: bool,
}

impl Record {
    /// The record of a run of `generation` with the scheduler `chosen` (the model's own, from
    /// `config`, when `None`), of images `size` pixels, made with the model `stamp`.
    pub fn new(
        options: &RecordOptions,
        stamp: ModelStamp,
        generation: &Generation,
        (chosen, config): (Option<SchedulerKind>, &SchedulerConfig),
        size: (usize, usize),
    ) -> Self {
        let latents = generation.latents.is_some();
        if options.metadata.no_metadata {
            return Self {
                parameters: None,
                latents,
            };
        }
        let kind = chosen.or_else(|| config.kind().ok());
        let scheduler = kind.unwrap_or(SchedulerKind::Pndm);
        let mut parameters = GenerationParameters::from_generation(generation, size, scheduler);
        if kind.is_none() {
            parameters.sampler = None;
        }
        let (name, hash, loras) = stamp.finish();
        let mut parameters = parameters.with_model(name, hash);
        parameters.loras = loras;
        if let Some(file) = &options.latents {
            parameters.set_extra(LATENTS, file_name(file));
        }
        for (key, value) in &options.extra {
            parameters.set_extra(*key, value.clone());
        }
        Self {
            parameters: Some(parameters),
            latents,
        }
    }

    /// Changes the parameters (e.g. to set img2img's `Denoising strength`); nothing with
    /// `--no-metadata`.
    pub fn edit(&mut self, edit: impl FnOnce(&mut GenerationParameters)) {
        if let Some(parameters) = &mut self.parameters {
            edit(parameters);
        }
    }

    /// The parameters of image `index` of `count`: seeded runs record `seed + index` (the image
    /// can be made again alone); runs from `--latents` record the run's seed, the batch size
    /// and the image's position.
    pub fn image(&self, index: usize, count: usize) -> Option<GenerationParameters> {
        let parameters = self.parameters.as_ref()?;
        if !self.latents {
            return Some(parameters.for_image(index));
        }
        let mut image = parameters.clone();
        if count > 1 {
            image.set_extra("Batch size", count.to_string());
            image.set_extra("Batch pos", index.to_string());
        }
        Some(image)
    }
}

/// The file name of `path`, for the extra keys that name inputs.
pub fn file_name(path: &Path) -> String {
    let name = path.file_name().unwrap_or(path.as_os_str());
    name.to_string_lossy().into_owned()
}

/// The size of the images of a run (of the first; all have one size).
pub fn image_size(images: &[image::RgbImage]) -> (usize, usize) {
    let first = images.first().map(|i| i.dimensions()).unwrap_or_default();
    (first.0 as usize, first.1 as usize)
}

impl ModelArgs {
    /// The `Model` and `Model hash` of `--model` or `--checkpoint` and the `--lora` files,
    /// hashed in the background unless `metadata` turns the parameters off.
    pub fn stamp(&self, metadata: MetadataArgs) -> ModelStamp {
        let path = self.model.as_deref().or(self.checkpoint.as_deref());
        ModelStamp::start(path, self.variant.as_deref(), &self.lora, metadata)
    }
}

#[cfg(feature = "versatile")]
impl crate::versatile::VdModelArgs {
    /// The `Model` and `Model hash` of `--model` or `--checkpoint` (see [`ModelArgs::stamp`]).
    pub fn stamp(&self, metadata: MetadataArgs) -> ModelStamp {
        let path = self.model.as_deref().or(self.checkpoint.as_deref());
        ModelStamp::start(path, self.variant.as_deref(), &[], metadata)
    }
}

impl GenerationArgs {
    /// What the run's record takes from these arguments (`--no-metadata`, `--latents`), with
    /// the subcommand's `extra` keys.
    pub fn record_options(&self, extra: Vec<(&'static str, String)>) -> RecordOptions {
        RecordOptions {
            metadata: self.metadata,
            latents: self.latents.clone(),
            extra,
        }
    }
}
