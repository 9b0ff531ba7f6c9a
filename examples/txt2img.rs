//! Text → image through the library, as an application would embed it.
//!
//! ```text
//! cargo run --release --example txt2img -- fixtures/tiny-sd "a watercolor fox" fox.png
//! cargo run --release --example txt2img -- /models/stable-diffusion-v1-5 "a watercolor fox" fox.png
//! ```

use std::ops::ControlFlow;

use prompt_diffusion::backends::{Flex, FlexDevice};
use prompt_diffusion::core::progress::StepInfo;
use prompt_diffusion::schedulers::SchedulerKind;
use prompt_diffusion::{Generation, ModelOptions, StableDiffusion};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let model = args.next().unwrap_or_else(|| "fixtures/tiny-sd".into());
    let prompt = args
        .next()
        .unwrap_or_else(|| "a watercolor painting of a fox".into());
    let output = args.next().unwrap_or_else(|| "txt2img.png".into());

    let device = FlexDevice;
    let sd = StableDiffusion::<Flex>::from_pretrained(&model, &ModelOptions::default(), &device)?;

    let generation = Generation::new(prompt)
        .with_negative_prompt("blurry, low quality")
        .with_steps(25)
        .with_guidance_scale(7.5)
        .with_scheduler(SchedulerKind::DpmSolverMultistep)
        .with_seed(42);
    // Any `FnMut(&StepInfo) -> ControlFlow<()>` reports progress; `Break` cancels the run.
    let mut report = |info: &StepInfo| {
        eprintln!(
            "step {}/{} (t = {:.0}) in {:?}",
            info.step, info.total, info.timestep, info.elapsed
        );
        ControlFlow::Continue(())
    };
    let images = sd.text_to_image(&generation, &mut report)?;
    images[0].save(&output)?;
    println!("wrote {output}");
    Ok(())
}
