//! Image → image through the library: keep the layout of an input picture, change its content.
//!
//! ```text
//! cargo run --release --example img2img -- fixtures/tiny-sd fixtures/pipeline/init.png "a snowy landscape" out.png
//! ```

use prompt_diffusion::backends::{Flex, FlexDevice};
use prompt_diffusion::core::image::load_rgb;
use prompt_diffusion::core::progress::NoProgress;
use prompt_diffusion::{Generation, ModelOptions, StableDiffusion};

fn main() -> anyhow::Result<()> {
    // The arguments, each with its default.
    let defaults = [
        "fixtures/tiny-sd",
        "fixtures/pipeline/init.png",
        "a snowy landscape, oil painting",
        "img2img.png",
    ];
    let given: Vec<String> = std::env::args().skip(1).collect();
    let [model, input, prompt, output] =
        std::array::from_fn(|i| given.get(i).map_or(defaults[i], String::as_str).to_string());

    let device = FlexDevice;
    // A single-file checkpoint loads the same way:
    // StableDiffusion::from_single_file("v1-5-pruned-emaonly.safetensors", &ModelOptions::default(), &device)
    let sd = StableDiffusion::<Flex>::from_pretrained(&model, &ModelOptions::default(), &device)?;
    let init = load_rgb(&input)?;

    let generation = Generation::new(prompt).with_steps(30).with_seed(7);
    // strength 0.6: start 60 % of the way into the schedule, keeping the input's composition.
    let images = sd.image_to_image(&generation, &init, 0.6, &mut NoProgress)?;
    images[0].save(&output)?;
    println!(
        "wrote {output} ({}x{})",
        images[0].width(),
        images[0].height()
    );
    Ok(())
}
