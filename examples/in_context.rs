//! In-context generation with Prompt Diffusion: an example pair shows a task (here: soft edge
//! map → picture), the query is a new map, and the output applies the task to it. The maps
//! are made from ordinary images with the built-in soft edge annotator.
//!
//! ```text
//! # the tiny test model of fixtures/ (random weights: the output is noise, but quickly)
//! cargo run --release --example in_context
//! # the released model (HF zhendongw/prompt-diffusion, network-step=04999.ckpt, 5.7 GB)
//! cargo run --release --example in_context -- network-step=04999.ckpt example.png query.png \
//!     "a house in the snow" out.png
//! ```

use prompt_diffusion::core::weights::Pretrained;
use std::ops::ControlFlow;

use prompt_diffusion::annotators::AnnotatorKind;
use prompt_diffusion::backends::{Flex, FlexDevice};
use prompt_diffusion::controlnet::PromptDiffusionControlNet;
use prompt_diffusion::core::image::load_rgb;
use prompt_diffusion::core::progress::StepInfo;
use prompt_diffusion::{InContextOptions, ModelOptions, PromptDiffusion, StableDiffusion};

type B = Flex;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let device = FlexDevice;
    let [checkpoint, example, query, prompt, output] = match &args[..] {
        [] => [
            "",
            "fixtures/prompt_diffusion/target.png",
            "fixtures/pipeline/init.png",
            "a turtle on the beach",
            "in_context.png",
        ],
        [c, e, q, p, o] => [c, e, q, p, o].map(String::as_str),
        _ => anyhow::bail!("usage: in_context [CHECKPOINT EXAMPLE.png QUERY.png PROMPT OUT.png]"),
    };

    // The official notebook's settings: DDIM, 100 steps, guidance 9, its prompt suffix and
    // negative prompt, hints in [-1, 1], the query's short side at 512.
    let mut options = InContextOptions::notebook().with_seed(1);
    let pd = if checkpoint.is_empty() {
        // The tiny model: tiny-sd with the tiny Prompt Diffusion ControlNet, 64-pixel images.
        options.generation.steps = 10;
        options.resolution = Some(64);
        let sd = StableDiffusion::<B>::from_pretrained(
            "fixtures/tiny-sd",
            &ModelOptions::default(),
            &device,
        )?;
        let controlnet = PromptDiffusionControlNet::from_pretrained(
            "fixtures/controlnet/prompt-diffusion",
            &Default::default(),
            &device,
        )?;
        PromptDiffusion::new(sd, controlnet)
    } else {
        // The original single checkpoint (ControlNet, fine-tuned UNet, VAE and CLIP in one file).
        PromptDiffusion::<B>::from_single_file(checkpoint, &ModelOptions::default(), &device)?
    };

    // An inverse task (map → image): the pair is (soft edges of the example, the example) and
    // the query is the soft edge map of the other image.
    let example = load_rgb(example)?;
    let example_map = AnnotatorKind::SoftEdge.annotate(&example);
    let query_map = AnnotatorKind::SoftEdge.annotate(&load_rgb(query)?);

    let mut report = |info: &StepInfo| {
        eprint!("\rstep {}/{}", info.step, info.total);
        ControlFlow::Continue(())
    };
    let images = pd.generate(
        &example_map,
        &example,
        &query_map,
        prompt,
        &options,
        &mut report,
    )?;
    eprintln!();
    images[0].save(output)?;
    println!(
        "wrote {output} ({}x{})",
        images[0].width(),
        images[0].height()
    );
    Ok(())
}
