//! Versatile Diffusion's flows from one loaded model: text→image, image variation, dual
//! guidance, image→text and text variation, switching flows without reloading, and the memory
//! the shared weights take.
//!
//! ```text
//! cargo run --release --example versatile                       # the tiny test model
//! cargo run --release --example versatile -- /models/versatile-diffusion photo.jpg \
//!     /models/optimus-vae.pth /models/optimus-vocab
//! ```

use std::path::PathBuf;

use prompt_diffusion::Generation;
use prompt_diffusion::backends::{Flex, FlexDevice};
use prompt_diffusion::core::progress::NoProgress;
use prompt_diffusion::pipelines::{
    ImagePrompt, VersatileDiffusion, VersatileModelOptions, VersatileOptions,
};
use prompt_diffusion::versatile::{Flow, OptimusConfig, OptimusFiles, TextDecoding};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() == 1 {
        anyhow::bail!(
            "give a model folder and an image (and optionally Optimus' weights and vocabulary)"
        );
    }
    let tiny = args.is_empty();
    let fixtures = PathBuf::from("fixtures");
    let (model, image, optimus) = if tiny {
        let vd = fixtures.join("versatile");
        let config = OptimusConfig::from_file(vd.join("optimus/config.json"))?;
        let files = OptimusFiles::new(vd.join("optimus/optimus-vae.pth"), vd.join("optimus/vocab"));
        (
            vd.join("vd"),
            vd.join("input.png"),
            Some(files.with_config(config)),
        )
    } else {
        let optimus = args
            .get(2)
            .zip(args.get(3))
            .map(|(w, v)| OptimusFiles::new(w, v));
        (PathBuf::from(&args[0]), PathBuf::from(&args[1]), optimus)
    };
    let mut options = VersatileModelOptions::default();
    options.optimus = optimus;
    if tiny {
        // The tiny model borrows tiny-sd's VAE and tokenizer.
        options = options
            .with_vae(fixtures.join("tiny-sd/vae"))
            .with_tokenizer(fixtures.join("tiny-sd/tokenizer"));
    }
    let vd = VersatileDiffusion::<Flex>::from_pretrained(&model, &options, &FlexDevice)?;
    let diffuser = &vd.components.diffuser;
    let held = diffuser.parameters();

    let image = ImagePrompt::Image(image::open(&image)?.to_rgb8());
    let generation = Generation::new("a red car in the sun").with_steps(if tiny { 4 } else { 50 });
    let mut options = VersatileOptions::default().with_mix(0.75);
    let images = vd.text_to_image(&generation, &mut NoProgress)?;
    images[0].save("versatile-text-to-image.png")?;
    let images = vd.image_variation(&image, &generation, &options, &mut NoProgress)?;
    images[0].save("versatile-variation.png")?;
    let images = vd.dual_guided(&image, &generation, &options, &mut NoProgress)?;
    images[0].save("versatile-dual-guided.png")?;
    println!("wrote versatile-{{text-to-image,variation,dual-guided}}.png");
    if vd.components.optimus.is_some() {
        options.decoding = TextDecoding::Sample { temperature: 1.0 };
        let captions = vd.image_to_text(&image, &generation, &options, &mut NoProgress)?;
        println!("image → text: {captions:?}");
        let variations = vd.text_variation(&generation, &options, &mut NoProgress)?;
        println!("text variation: {variations:?}");
    }

    // Every flow ran on the same tensors: what is held did not change, and it is far less
    // than the flows' layers added up.
    assert_eq!(diffuser.parameters(), held);
    let mut total = 0;
    for flow in Flow::ALL.into_iter().filter(|&f| diffuser.supports(f)) {
        let used = diffuser.flow_parameters(flow)?;
        println!("{flow:>15}: {used}");
        total += used.bytes;
    }
    println!("diffuser weights held once: {held}");
    println!(
        "(separate models per flow would hold {:.2} MB)",
        total as f64 / 1e6
    );
    Ok(())
}
