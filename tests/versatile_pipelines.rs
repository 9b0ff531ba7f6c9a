//! Versatile Diffusion's flows against the reference (`tools/fixtures/gen_versatile.py`): with
//! the reference's initial latents, diffusers' text→image, image-variation and dual-guided
//! images are reproduced within 2/255; the text flows reproduce the reference's final latents
//! and Optimus' greedy tokens.

use crate::common::{B, DEVICE, assert_images_close, expected, fixtures};

use image::RgbImage;
use prompt_diffusion::Generation;
use prompt_diffusion::core::progress::NoProgress;
use prompt_diffusion::core::testing::assert_close;
use prompt_diffusion::core::weights::TensorSource;
use prompt_diffusion::pipelines::{
    ImagePrompt, VersatileDiffusion, VersatileModelOptions, VersatileOptions,
};
use prompt_diffusion::versatile::{Flow, OptimusFiles};
use prompt_diffusion::versatile::{OptimusConfig, TextDecoding, UncondImage};

fn model() -> VersatileDiffusion<B> {
    let vd = fixtures().join("versatile");
    let optimus = OptimusFiles::new(vd.join("optimus/optimus-vae.pth"), vd.join("optimus/vocab"))
        .with_config(OptimusConfig::from_file(vd.join("optimus/config.json")).unwrap());
    let options = VersatileModelOptions::default()
        .with_optimus(optimus)
        .with_vae(fixtures().join("tiny-sd/vae"))
        .with_tokenizer(fixtures().join("tiny-sd/tokenizer"));
    VersatileDiffusion::from_pretrained(vd.join("vd"), &options, &DEVICE).unwrap()
}

fn reference() -> TensorSource {
    TensorSource::open(fixtures().join("versatile/pipelines.safetensors")).unwrap()
}

fn generation(io: &TensorSource, flow: &str, n: usize) -> Generation {
    Generation::new("a red car in the sun")
        .with_steps(4)
        .with_guidance_scale(7.5)
        .with_num_images(n)
        .with_latents(io.data(&format!("{flow}.latents")).unwrap())
}

fn input() -> ImagePrompt {
    ImagePrompt::Image(
        image::open(fixtures().join("versatile/input.png"))
            .unwrap()
            .to_rgb8(),
    )
}

#[test]
fn image_flows_match_diffusers() {
    let vd = model();
    let io = reference();
    let options = VersatileOptions::default().with_mix(0.75);
    let images = vd
        .text_to_image(&generation(&io, "text_to_image", 2), &mut NoProgress)
        .unwrap();
    assert_images_close(
        "text→image (2 images)",
        &images,
        &expected(&io, "text_to_image.image"),
    );
    let g = generation(&io, "image_variation", 1);
    let images = vd
        .image_variation(&input(), &g, &options, &mut NoProgress)
        .unwrap();
    assert_images_close(
        "image variation",
        &images,
        &expected(&io, "image_variation.image"),
    );
    let images = vd
        .dual_guided(
            &input(),
            &generation(&io, "dual_guided", 1),
            &options,
            &mut NoProgress,
        )
        .unwrap();
    assert_images_close(
        "dual-guided (mix 0.75)",
        &images,
        &expected(&io, "dual_guided.image"),
    );

    // Precomputed tokens are taken as they are: the encoder's own tokens give the same images.
    let encoder = vd.components.image_encoder.as_ref().unwrap();
    let ImagePrompt::Image(image) = input() else {
        unreachable!()
    };
    let tokens = encoder.encode_images(&[image]).unwrap().into_data();
    let again = vd
        .image_variation(&ImagePrompt::Tokens(tokens), &g, &options, &mut NoProgress)
        .unwrap();
    assert_images_close(
        "image variation from tokens",
        &again,
        &expected(&io, "image_variation.image"),
    );
    // The official app's zero unconditional context gives another image.
    let zeros = options.with_uncond_image(UncondImage::Zeros);
    let other = vd
        .image_variation(&input(), &g, &zeros, &mut NoProgress)
        .unwrap();
    assert_ne!(other[0].as_raw(), again[0].as_raw());
}

#[test]
fn text_flows_match_the_reference_loop_and_greedy_decoding() {
    let vd = model();
    let io = reference();
    let greedy = VersatileOptions::default().with_decoding(TextDecoding::Greedy);
    for (name, flow) in [
        ("image_to_text", Flow::ImageToText),
        ("text_variation", Flow::TextVariation),
    ] {
        let g = generation(&io, name, 1);
        let image = input();
        let prompt = (flow == Flow::ImageToText).then_some(&image);
        let latents = vd
            .latents(flow, prompt, &g, &greedy, &mut NoProgress)
            .unwrap();
        let reference = io.data(&format!("{name}.final")).unwrap();
        let reference = burn::tensor::Tensor::<B, 4>::from_data(reference, &DEVICE);
        assert_close(&format!("{name} latents"), latents.clone(), reference, 1e-4);
        let optimus = vd.components.optimus.as_ref().unwrap();
        let ids = optimus
            .decode_ids(latents.reshape([1, 16]), TextDecoding::Greedy, 0)
            .unwrap();
        let expected: Vec<i64> = io
            .data(&format!("{name}.ids"))
            .unwrap()
            .convert::<i64>()
            .to_vec()
            .unwrap();
        let expected: Vec<u32> = expected.into_iter().map(|id| id as u32).collect();
        assert_eq!(ids[0], expected, "{name}: greedy tokens");
        let texts = match flow {
            Flow::ImageToText => vd
                .image_to_text(&image, &g, &greedy, &mut NoProgress)
                .unwrap(),
            _ => vd.text_variation(&g, &greedy, &mut NoProgress).unwrap(),
        };
        // (`fixtures/versatile/cases.json` has the reference texts; the crate's tests compare them.)
        assert_eq!(texts, [optimus.tokenizers.detokenize(&expected).unwrap()]);
    }
    // Sampled captions: seeded, one per image.
    let g = Generation::new("a red car in the sun")
        .with_steps(2)
        .with_num_images(2)
        .with_seed(5);
    let a = vd
        .text_variation(&g, &VersatileOptions::default(), &mut NoProgress)
        .unwrap();
    assert_eq!(a.len(), 2);
    assert_eq!(
        a,
        vd.text_variation(&g, &VersatileOptions::default(), &mut NoProgress)
            .unwrap()
    );
}

#[test]
fn bad_options_are_errors() {
    let vd = model();
    let g = Generation::new("x").with_steps(1);
    let bad_mix = VersatileOptions::default().with_mix(1.5);
    assert!(
        vd.dual_guided(&input(), &g, &bad_mix, &mut NoProgress)
            .is_err()
    );
    let cold =
        VersatileOptions::default().with_decoding(TextDecoding::Sample { temperature: -1.0 });
    assert!(vd.text_variation(&g, &cold, &mut NoProgress).is_err());
    let tokens = ImagePrompt::Tokens(burn::tensor::TensorData::new(vec![0f32; 10 * 16], [10, 16]));
    assert!(
        vd.image_variation(&tokens, &g, &VersatileOptions::default(), &mut NoProgress)
            .is_err()
    );
    let wrong = g
        .clone()
        .with_latents(burn::tensor::TensorData::new(vec![0f32; 16], [1, 16, 1, 1]));
    assert!(vd.text_to_image(&wrong, &mut NoProgress).is_err());
}

#[test]
fn image_flows_take_their_size_from_initial_latents() {
    let vd = model();
    // Latents of 3 × 2 latent pixels and no width or height: a 24 × 16 picture (8× VAE).
    let g = Generation::new("a red car in the sun")
        .with_steps(1)
        .with_latents(burn::tensor::TensorData::new(
            vec![0.5f32; 4 * 6],
            [1, 4, 2, 3],
        ));
    let images = vd.text_to_image(&g, &mut NoProgress).unwrap();
    assert_eq!(images[0].dimensions(), (24, 16));
    // A size given wins, and must then fit the latents.
    let sized = g.clone().with_size(24, 16);
    assert_eq!(
        vd.text_to_image(&sized, &mut NoProgress).unwrap()[0].dimensions(),
        (24, 16)
    );
    assert!(
        vd.text_to_image(&g.with_size(32, 32), &mut NoProgress)
            .is_err()
    );
}

/// The flows in half precision (burn-flex on the CPU): every layer group loads and runs in f16
/// and the image stays close to the f32 reference.
#[test]
fn half_precision_runs_every_flow() {
    use prompt_diffusion::backends::{BackendKind, BackendTask, run_on};
    use prompt_diffusion::core::Precision;

    struct Half;
    impl BackendTask for Half {
        type Output = (Vec<RgbImage>, Vec<String>);
        fn run<Bk: burn::tensor::backend::Backend>(
            self,
            device: Bk::Device,
        ) -> prompt_diffusion::core::Result<Self::Output> {
            let vd = fixtures().join("versatile");
            let optimus =
                OptimusFiles::new(vd.join("optimus/optimus-vae.pth"), vd.join("optimus/vocab"))
                    .with_config(OptimusConfig::from_file(vd.join("optimus/config.json"))?);
            let options = VersatileModelOptions::default()
                .with_optimus(optimus)
                .with_vae(fixtures().join("tiny-sd/vae"))
                .with_tokenizer(fixtures().join("tiny-sd/tokenizer"));
            let model =
                VersatileDiffusion::<Bk>::from_pretrained(vd.join("vd"), &options, &device)?;
            let io = reference();
            let greedy = VersatileOptions::default().with_decoding(TextDecoding::Greedy);
            let images = model.dual_guided(
                &input(),
                &generation(&io, "dual_guided", 1),
                &greedy.clone().with_mix(0.75),
                &mut NoProgress,
            )?;
            let texts = model.image_to_text(
                &input(),
                &generation(&io, "image_to_text", 1),
                &greedy,
                &mut NoProgress,
            )?;
            Ok((images, texts))
        }
    }
    let (images, texts) = run_on(BackendKind::Flex, Precision::F16, Half).unwrap();
    let expected = expected(&reference(), "dual_guided.image");
    let worst = images[0]
        .as_raw()
        .iter()
        .zip(expected[0].as_raw())
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .unwrap();
    eprintln!("dual-guided in f16: max pixel difference {worst}/255 from the f32 reference");
    assert!(worst <= 24, "f16 image drifted by {worst}/255");
    assert_eq!(texts.len(), 1);
}
