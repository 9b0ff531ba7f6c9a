//! The three systems chained on one backend, as a downstream application would: Diff-Plugin
//! restores a degraded photo; Prompt Diffusion takes the restored photo (by default its soft
//! edge map) as the query of an example pair and re-renders it; Versatile Diffusion makes an
//! image variation of that. Each stage's PNG is saved and each stage is timed. See
//! `docs/compose.md` for the data flow and the weights the stages share.
//!
//! ```text
//! # the tiny random-weight fixtures (noise-like images, in seconds)
//! cargo run --example compose
//! # released models; --share: stages 2 and 3 use stage 1's VAE and CLIP towers (all three
//! # releases froze the same SD 1.x kl-f8 VAE and CLIP ViT-L/14)
//! cargo run --release --features cuda --example compose -- --backend cuda --precision f16 \
//!     --sd stable-diffusion-v1-4 --clip clip-vit-large-patch14 --plugins Diff-Plugin/pre-trained \
//!     --prompt-diffusion network-step=04999.ckpt --versatile versatile-diffusion --share \
//!     --image rainy.jpg --task derain --example-source edges.png --example-target photo.png \
//!     --prompt "a house by a lake" --out out/
//! ```

use prompt_diffusion::core::weights::Pretrained;
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use burn::module::Module;
use burn::prelude::Backend;
use image::RgbImage;
use prompt_diffusion::annotators::AnnotatorKind;
use prompt_diffusion::backends::{BackendTask, run_on};
use prompt_diffusion::controlnet::PromptDiffusionControlNet;
use prompt_diffusion::core::image::{load_rgb, save_rgb};
use prompt_diffusion::core::progress::{StepCallback, StepInfo};
use prompt_diffusion::core::{Error, Result};
use prompt_diffusion::diff_plugin::Task;
use prompt_diffusion::pipelines::diff_plugin::{DiffPlugin, Restore, RestoreTarget, WorkingSize};
use prompt_diffusion::pipelines::{
    Components, ImagePrompt, VersatileDiffusion, VersatileModelOptions, VersatileOptions,
};
use prompt_diffusion::versatile::Flow;
use prompt_diffusion::{
    Generation, InContextOptions, ModelOptions, PromptDiffusion, StableDiffusion,
};

/// Where the three systems' weights are.
#[derive(Debug, Clone)]
pub struct Models {
    /// SD 1.x diffusers folder under the Task-Plugins (Diff-Plugin was trained on SD 1.4).
    pub base: PathBuf,
    /// CLIP vision folder (`openai/clip-vit-large-patch14` for the released plugins).
    pub clip_vision: PathBuf,
    /// Diff-Plugin's `pre-trained/` folder.
    pub plugins: PathBuf,
    /// Prompt Diffusion: the original checkpoint file, a diffusers folder with `controlnet/`,
    /// or a bare ControlNet folder, which then runs on `base` (the tiny fixtures).
    pub prompt_diffusion: PathBuf,
    /// Versatile Diffusion diffusers folder, and how to load it.
    pub versatile: PathBuf,
    /// Options of the Versatile Diffusion load (only the image-variation flow is needed).
    pub versatile_options: VersatileModelOptions,
    /// Give stages 2 and 3 the VAE of stage 1 instead of their own.
    pub share_vae: bool,
    /// Give stage 2 stage 1's CLIP text encoder, and stage 3 its CLIP vision tower.
    pub share_clip: bool,
}

impl Models {
    /// The tiny fixtures: one tiny-sd serves stages 1 and 2, and its VAE stage 3.
    pub fn tiny() -> Self {
        Self {
            base: "fixtures/tiny-sd".into(),
            clip_vision: "fixtures/diff_plugin/clip-vision".into(),
            plugins: "fixtures/diff_plugin/pre-trained".into(),
            prompt_diffusion: "fixtures/controlnet/prompt-diffusion".into(),
            versatile: "fixtures/versatile/vd".into(),
            versatile_options: VersatileModelOptions::default()
                .with_flows([Flow::ImageVariation])
                .with_vae("fixtures/tiny-sd/vae")
                .with_tokenizer("fixtures/tiny-sd/tokenizer"),
            // tiny-sd's VAE is the tiny VD's; their CLIP vision towers differ.
            share_vae: true,
            share_clip: false,
        }
    }
}

/// The three loaded systems, on one backend.
#[derive(Debug)]
pub struct Systems<B: Backend> {
    /// Stage 1: restoration.
    pub plugin: DiffPlugin<B>,
    /// Stage 2: in-context generation.
    pub prompt_diffusion: PromptDiffusion<B>,
    /// Stage 3: image variation.
    pub versatile: VersatileDiffusion<B>,
}

/// A second handle on a loaded model: burn modules are cloned by reference count, so the two
/// share their tensors.
fn share<B: Backend>(sd: &StableDiffusion<B>) -> StableDiffusion<B> {
    let c = &sd.components;
    let components = Components {
        tokenizer: c.tokenizer.clone(),
        text_encoder: c.text_encoder.clone(),
        unet: c.unet.clone(),
        vae: c.vae.clone(),
        scheduler: c.scheduler.clone(),
    };
    StableDiffusion::new(components, sd.device())
}

/// `ours` to be used in place of `theirs`, refused when their sizes differ.
fn reuse<B: Backend, M: Module<B>>(ours: &M, theirs: &M, what: &str) -> Result<M> {
    let (a, b) = (ours.num_params(), theirs.num_params());
    if a != b {
        let reason = format!("the {what}s differ ({a} and {b} parameters)");
        return Err(Error::invalid_input("share", reason));
    }
    Ok(ours.clone())
}

/// Loads the three systems on `device`, sharing what `models` asks for.
///
/// # Errors
/// A missing or invalid model file or folder; components to share that differ in size.
pub fn load<B: Backend>(models: &Models, device: &B::Device) -> Result<Systems<B>> {
    let base = StableDiffusion::from_pretrained(&models.base, &ModelOptions::default(), device)?;
    let plugin = DiffPlugin::new(base, &models.clip_vision, &models.plugins)?;
    let pd = &models.prompt_diffusion;
    let mut prompt_diffusion = if pd.is_file() {
        PromptDiffusion::from_single_file(pd, &ModelOptions::default(), device)?
    } else if pd.join("controlnet").is_dir() {
        PromptDiffusion::from_pretrained(pd, &ModelOptions::default(), device)?
    } else {
        let controlnet =
            PromptDiffusionControlNet::from_pretrained(pd, &Default::default(), device)?;
        PromptDiffusion::new(share(&plugin.sd), controlnet)
    };
    let options = &models.versatile_options;
    let mut versatile = VersatileDiffusion::from_pretrained(&models.versatile, options, device)?;

    let (base, pd) = (&plugin.sd.components, &mut prompt_diffusion.sd.components);
    if models.share_vae {
        pd.vae = reuse(&base.vae, &pd.vae, "VAE")?;
        if let Some(vae) = versatile.components.vae.as_mut() {
            *vae = reuse(&base.vae, vae, "VAE")?;
        }
    }
    if models.share_clip {
        pd.text_encoder = reuse(&base.text_encoder, &pd.text_encoder, "CLIP text encoder")?;
        if let Some(encoder) = versatile.components.image_encoder.as_mut() {
            let tower = &mut encoder.model.vision_model;
            *tower = reuse(
                &plugin.image_encoder.vision_model,
                tower,
                "CLIP vision tower",
            )?;
        }
    }
    Ok(Systems {
        plugin,
        prompt_diffusion,
        versatile,
    })
}

/// What the chain does besides the degraded image.
#[derive(Debug, Clone)]
pub struct Chain {
    /// Stage 1's request (its seed is replaced by `seed`).
    pub restore: Restore,
    /// The example pair of stage 2: what the edit looks like before and after.
    pub example: (RgbImage, RgbImage),
    /// Turns the restored image into a map first, for map → image pairs (`None`: the restored
    /// image itself is the query, for image → map or image → image pairs).
    pub annotate: Option<AnnotatorKind>,
    /// Stage 2's text.
    pub prompt: String,
    /// Stage 2's options (its seed is replaced by `seed`).
    pub in_context: InContextOptions,
    /// Stage 3's options (size and seed are set by the chain).
    pub variation: Generation,
    /// The seed of every stage.
    pub seed: u64,
}

impl Chain {
    /// The fixtures' map → image pair (so the query is the restored image's soft edges) and a
    /// caption; with `tiny`, few steps and small sizes, else the papers' settings.
    ///
    /// # Errors
    /// A missing fixture image.
    pub fn fixtures(tiny: bool, seed: u64) -> Result<Self> {
        let pair = "fixtures/prompt_diffusion";
        let (steps, size) = if tiny {
            (10, WorkingSize::Native)
        } else {
            (20, WorkingSize::AtLeast(512))
        };
        let mut in_context = InContextOptions::notebook();
        if tiny {
            (in_context.generation.steps, in_context.resolution) = (10, Some(128));
        }
        Ok(Self {
            restore: Restore::task(Task::Derain)
                .with_steps(steps)
                .with_size(size),
            example: (
                load_rgb(format!("{pair}/source.png"))?,
                load_rgb(format!("{pair}/target.png"))?,
            ),
            annotate: Some(AnnotatorKind::SoftEdge),
            prompt: "a watercolor painting of a house".into(),
            in_context,
            variation: Generation::default().with_steps(if tiny { 10 } else { 50 }),
            seed,
        })
    }
}

/// Each stage's image and wall time.
#[derive(Debug, Clone)]
pub struct Stages {
    /// Stage 1: the restored image (the working size of the restoration).
    pub restored: RgbImage,
    /// Stage 2: the in-context result (the restored image's aspect, sides multiples of 64).
    pub in_context: RgbImage,
    /// Stage 3: the variation, at stage 2's size.
    pub variation: RgbImage,
    /// Wall time of each stage.
    pub times: [Duration; 3],
}

/// Restores `degraded`, uses the result as Prompt Diffusion's query, and feeds that output to
/// Versatile Diffusion's image variation.
///
/// # Errors
/// Invalid options, a missing plugin file, or [`Error::Cancelled`] from `callback`.
pub fn run_chain<B: Backend>(
    systems: &Systems<B>,
    degraded: &RgbImage,
    chain: &Chain,
    callback: &mut dyn StepCallback,
) -> Result<Stages> {
    let start = Instant::now();
    let request = chain.restore.clone().with_seed(chain.seed);
    let restored = systems.plugin.restore(degraded, &request, callback)?.image;
    let t1 = start.elapsed();

    let start = Instant::now();
    let query = match chain.annotate {
        Some(kind) => kind.annotate(&restored),
        None => restored.clone(),
    };
    let options = chain.in_context.clone().with_seed(chain.seed);
    let (source, target) = &chain.example;
    let pd = &systems.prompt_diffusion;
    let mut images = pd.generate(source, target, &query, &chain.prompt, &options, callback)?;
    let in_context = images.swap_remove(0);
    let t2 = start.elapsed();

    let start = Instant::now();
    let (w, h) = in_context.dimensions();
    let generation = chain
        .variation
        .clone()
        .with_size(w as usize, h as usize)
        .with_seed(chain.seed);
    let prompt = ImagePrompt::Image(in_context.clone());
    let vd = &systems.versatile;
    let mut images =
        vd.image_variation(&prompt, &generation, &VersatileOptions::default(), callback)?;
    let variation = images.swap_remove(0);
    Ok(Stages {
        restored,
        in_context,
        variation,
        times: [t1, t2, start.elapsed()],
    })
}

/// Loads the models, runs the chain, saves each stage.
struct Compose {
    models: Models,
    chain: Chain,
    image: PathBuf,
    out: PathBuf,
}

impl BackendTask for Compose {
    type Output = ();

    fn run<B: Backend>(self, device: B::Device) -> Result<()> {
        let start = Instant::now();
        let systems = load::<B>(&self.models, &device)?;
        println!("load: {:.2?}", start.elapsed());
        let degraded = load_rgb(&self.image)?;
        let mut report = |info: &StepInfo| {
            eprint!("\r  step {}/{}  ", info.step, info.total);
            ControlFlow::Continue(())
        };
        let stages = run_chain(&systems, &degraded, &self.chain, &mut report)?;
        eprintln!();
        let (w, h) = degraded.dimensions();
        println!("input: {w}x{h}");
        let images = [&stages.restored, &stages.in_context, &stages.variation];
        let names = ["1-restored", "2-in-context", "3-variation"];
        std::fs::create_dir_all(&self.out).map_err(|e| Error::io(&self.out, e))?;
        for ((name, image), time) in names.iter().zip(images).zip(stages.times) {
            let path = self.out.join(format!("compose-{name}.png"));
            save_rgb(image, &path)?;
            let (w, h) = image.dimensions();
            println!("{name}: {w}x{h} in {time:.2?} → {}", path.display());
        }
        Ok(())
    }
}

const USAGE: &str = "usage: compose [--sd DIR --clip DIR --plugins DIR --prompt-diffusion FILE|DIR \
    --versatile DIR] [--share] [--image PNG] [--task TASK] [--example-source PNG \
    --example-target PNG] [--prompt TEXT] [--annotate canny|softedge|none] [--steps N] [--seed N] \
    [--backend ndarray|flex|wgpu|cuda] [--precision f32|f16|bf16] [--out DIR]";

/// The flags that take a value.
const FLAGS: &str = "sd clip plugins prompt-diffusion versatile image task example-source \
    example-target prompt annotate steps seed backend precision out";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mut flags, mut share) = (HashMap::new(), false);
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let key = arg
            .strip_prefix("--")
            .ok_or_else(|| anyhow::anyhow!("`{arg}`: {USAGE}"))?;
        if key == "share" {
            share = true;
            continue;
        }
        let known = FLAGS.split_whitespace().any(|flag| flag == key);
        anyhow::ensure!(known, "unknown flag `{arg}`: {USAGE}");
        let value = it
            .next()
            .ok_or_else(|| anyhow::anyhow!("--{key} needs a value"))?;
        flags.insert(key, value.as_str());
    }
    let get = |key: &str| flags.get(key).copied();
    let model_keys = ["sd", "clip", "plugins", "prompt-diffusion", "versatile"];
    let given = model_keys.iter().filter(|k| flags.contains_key(*k)).count();
    let tiny = given == 0;
    anyhow::ensure!(
        tiny || given == model_keys.len(),
        "give all of --{}: {USAGE}",
        model_keys.join(" --")
    );

    let models = if tiny {
        Models::tiny()
    } else {
        let path = |key: &str| PathBuf::from(flags[key]);
        Models {
            base: path("sd"),
            clip_vision: path("clip"),
            plugins: path("plugins"),
            prompt_diffusion: path("prompt-diffusion"),
            versatile: path("versatile"),
            versatile_options: VersatileModelOptions::default().with_flows([Flow::ImageVariation]),
            share_vae: share,
            share_clip: share,
        }
    };
    let mut chain = Chain::fixtures(tiny, get("seed").unwrap_or("42").parse()?)?;
    if let Some(task) = get("task") {
        chain.restore.target = RestoreTarget::Task(task.parse()?);
    }
    match (get("example-source"), get("example-target")) {
        (Some(source), Some(target)) => chain.example = (load_rgb(source)?, load_rgb(target)?),
        (None, None) => {}
        _ => anyhow::bail!("--example-source and --example-target go together"),
    }
    if let Some(prompt) = get("prompt") {
        chain.prompt = prompt.into();
    }
    match get("annotate") {
        Some("none") => chain.annotate = None,
        Some(kind) => chain.annotate = Some(kind.parse()?),
        None => {}
    }
    if let Some(steps) = get("steps") {
        let steps = steps.parse()?;
        chain.restore.steps = steps;
        (chain.in_context.generation.steps, chain.variation.steps) = (steps, steps);
    }
    let task = Compose {
        models,
        chain,
        image: get("image")
            .unwrap_or("fixtures/diff_plugin/input.png")
            .into(),
        out: get("out").unwrap_or(".").into(),
    };
    let backend = get("backend").unwrap_or("ndarray").parse()?;
    run_on(backend, get("precision").unwrap_or("f32").parse()?, task)?;
    Ok(())
}
