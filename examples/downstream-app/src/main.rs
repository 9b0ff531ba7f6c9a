//! A downstream application: loads a diffusers folder, generates one image on burn-flex and
//! prints its size and mean, using only `prompt-diffusion` (burn comes re-exported).

use prompt_diffusion::backends::{Flex, FlexDevice};
use prompt_diffusion::burn::tensor::{Tensor, TensorData};
use prompt_diffusion::core::progress::NoProgress;
use prompt_diffusion::{Generation, ModelOptions, StableDiffusion};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let model = std::env::args()
        .nth(1)
        .ok_or("usage: downstream-app MODEL_DIR")?;
    let device = FlexDevice;
    let sd = StableDiffusion::<Flex>::from_pretrained(&model, &ModelOptions::default(), &device)?;
    let generation = Generation::new("a red circle on a blue background")
        .with_steps(2)
        .with_seed(3);
    let image = sd.text_to_image(&generation, &mut NoProgress)?.remove(0);
    let (width, height) = image.dimensions();
    // The channel sums through a burn tensor: the re-exported burn is the library's own.
    let pixels: Vec<f32> = image.as_raw().iter().map(|&v| f32::from(v)).collect();
    let len = pixels.len();
    let sum: f32 = Tensor::<Flex, 1>::from_data(TensorData::new(pixels, [len]), &device)
        .sum()
        .into_scalar();
    println!("{width}x{height} sum {sum}");
    Ok(())
}
