//! Image restoration with Diff-Plugin: one task's plugin, or the plugins the Plugin-Selector
//! picks for an instruction.
//!
//! ```text
//! cargo run --release --example restore -- <sd-1.4-folder> <clip-vit-large-patch14> \
//!     <Diff-Plugin/pre-trained> rainy.jpg derain restored.png
//! cargo run --release --example restore -- <sd-1.4-folder> <clip-vit-large-patch14> \
//!     <Diff-Plugin/pre-trained> photo.jpg "remove the snow and the haze" restored.png
//! # The tiny random test model, at the image's own size:
//! cargo run --example restore -- fixtures/tiny-sd fixtures/diff_plugin/clip-vision \
//!     fixtures/diff_plugin/pre-trained fixtures/diff_plugin/input.png derain out.png native
//! ```

use std::ops::ControlFlow;

use prompt_diffusion::backends::{Flex, FlexDevice};
use prompt_diffusion::core::image::{load_rgb, save_rgb};
use prompt_diffusion::core::progress::StepInfo;
use prompt_diffusion::diff_plugin::Task;
use prompt_diffusion::pipelines::diff_plugin::{DiffPlugin, Restore, WorkingSize};
use prompt_diffusion::{ModelOptions, StableDiffusion};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [base, clip, plugins, input, what, output, rest @ ..] = &args[..] else {
        anyhow::bail!(
            "usage: restore <sd-folder> <clip-vision-folder> <pre-trained-folder> <image> \
             <task|instruction> <output.png> [native|<short side>]"
        );
    };

    let device = FlexDevice;
    let sd = StableDiffusion::<Flex>::from_pretrained(base, &ModelOptions::default(), &device)?;
    let pipe = DiffPlugin::new(sd, clip, plugins)?;

    // A task name runs that plugin (infer.py); anything else is an instruction (demo.py).
    let mut request = match what.parse::<Task>() {
        Ok(task) => Restore::task(task),
        Err(_) => Restore::instruction(what.as_str()),
    };
    match rest.first().map(String::as_str) {
        Some("native") => request = request.with_size(WorkingSize::Native),
        Some(side) => request = request.with_size(WorkingSize::ShortSide(side.parse()?)),
        None => {}
    }

    let image = load_rgb(input)?;
    let mut report = |info: &StepInfo| {
        eprintln!(
            "step {}/{} (t = {:.0})",
            info.step, info.total, info.timestep
        );
        ControlFlow::Continue(())
    };
    let restored = pipe.restore(&image, &request.with_seed(42), &mut report)?;
    if let Some(selection) = &restored.selection {
        for (choice, score) in &selection.scores {
            eprintln!("selector score {choice:?}: {score:.3}");
        }
    }
    eprintln!("plugins run: {:?}", restored.tasks);
    save_rgb(&restored.image, output)?;
    eprintln!("wrote {output}");
    Ok(())
}
