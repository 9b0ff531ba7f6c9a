//! Whole pipelines against diffusers on the tiny model (`tools/fixtures/gen_pipeline.py`):
//! with diffusers' initial latents (and, for stochastic steps, its noise replayed), every pixel
//! is within 2/255 of diffusers' image.

use std::ops::ControlFlow;

use image::RgbImage;
use prompt_diffusion::core::Error;
use prompt_diffusion::core::progress::{NoProgress, StepInfo};
use prompt_diffusion::core::weights::TensorSource;
use prompt_diffusion::schedulers::SchedulerKind;
use prompt_diffusion::{Generation, ModelOptions, StableDiffusion};

use crate::common::{
    B, DEVICE, assert_images_close, assert_replayed, expected, fixtures, replay, tiny_sd,
};

fn reference() -> TensorSource {
    TensorSource::open(fixtures().join("pipeline/txt2img.safetensors")).unwrap()
}

fn generation(io: &TensorSource, latents: &str) -> Generation {
    Generation::new("a watercolor painting of a fox in the snow")
        .with_negative_prompt("blurry, low quality")
        .with_steps(8)
        .with_guidance_scale(7.5)
        .with_latents(io.data(latents).unwrap())
}

#[test]
fn txt2img_matches_diffusers_for_every_scheduler() {
    let sd = tiny_sd();
    let io = reference();
    for (name, kind) in [
        ("ddim", SchedulerKind::Ddim),
        ("euler", SchedulerKind::Euler),
        ("dpm++2m", SchedulerKind::DpmSolverMultistep),
        ("dpm++2m-karras", SchedulerKind::DpmSolverMultistepKarras),
        ("pndm", SchedulerKind::Pndm),
        ("unipc", SchedulerKind::UniPc),
        ("lms", SchedulerKind::Lms),
        ("euler-ancestral", SchedulerKind::EulerAncestral),
    ] {
        let generation = generation(&io, "latents").with_scheduler(kind);
        let mut noise = replay(&io, &format!("{name}.noise."));
        let images = sd
            .text_to_image_with_noise(&generation, &mut noise, &mut NoProgress)
            .unwrap();
        assert_replayed(name, &images, &noise, &io);
    }
}

#[test]
fn batches_and_unguided_runs_match_diffusers() {
    let sd = tiny_sd();
    let io = reference();
    let generation = generation(&io, "latents_batch2")
        .with_scheduler(SchedulerKind::Ddim)
        .with_num_images(2);
    let images = sd.text_to_image(&generation, &mut NoProgress).unwrap();
    assert_images_close("batch of 2", &images, &expected(&io, "ddim.batch2.image"));

    let generation = Generation::new("a watercolor painting of a fox in the snow")
        .with_steps(8)
        .with_guidance_scale(1.0)
        .with_scheduler(SchedulerKind::Ddim)
        .with_latents(io.data("latents").unwrap());
    let images = sd.text_to_image(&generation, &mut NoProgress).unwrap();
    assert_images_close(
        "no guidance",
        &images,
        &expected(&io, "ddim.unguided.image"),
    );
}

#[test]
fn img2img_matches_diffusers() {
    let sd = tiny_sd();
    let io = TensorSource::open(fixtures().join("pipeline/img2img.safetensors")).unwrap();
    let init =
        prompt_diffusion::core::image::load_rgb(fixtures().join("pipeline/init.png")).unwrap();
    let generation = Generation::new("a watercolor painting of a fox in the snow")
        .with_negative_prompt("blurry, low quality")
        .with_steps(10)
        .with_scheduler(SchedulerKind::Ddim);
    let mut noise = replay(&io, "noise.");
    let images = sd
        .image_to_image_with_noise(&generation, &init, 0.6, &mut noise, &mut NoProgress)
        .unwrap();
    assert_eq!(noise.remaining(), 0);
    assert_images_close("img2img", &images, &expected(&io, "image"));
}

#[test]
fn single_file_checkpoints_generate_the_same_image() {
    let io = reference();
    let generation = generation(&io, "latents").with_scheduler(SchedulerKind::Ddim);
    let folder = tiny_sd()
        .text_to_image(&generation, &mut NoProgress)
        .unwrap();
    for file in ["tiny-sd.safetensors", "tiny-sd.ckpt"] {
        let options = ModelOptions::default().with_config(fixtures().join("tiny-sd"));
        let sd = StableDiffusion::<B>::from_single_file(fixtures().join(file), &options, &DEVICE)
            .unwrap();
        let images = sd.text_to_image(&generation, &mut NoProgress).unwrap();
        assert_eq!(images, folder, "{file}");
    }
}

#[test]
fn same_seed_same_image_and_callbacks_can_cancel() {
    let sd = tiny_sd();
    let generation = Generation::new("a fox")
        .with_steps(3)
        .with_seed(7)
        .with_scheduler(SchedulerKind::Ddim);
    let a = sd.text_to_image(&generation, &mut NoProgress).unwrap();
    let b = sd.text_to_image(&generation, &mut NoProgress).unwrap();
    assert_eq!(a, b);
    let c = sd
        .text_to_image(&generation.clone().with_seed(8), &mut NoProgress)
        .unwrap();
    assert_ne!(a, c);

    let mut seen = Vec::new();
    let mut stop_after_two = |info: &StepInfo| {
        seen.push((info.step, info.total));
        if info.step == 2 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    };
    let err = sd
        .text_to_image(&generation, &mut stop_after_two)
        .unwrap_err();
    assert!(matches!(err, Error::Cancelled { step: 1 }), "{err}");
    assert_eq!(seen, vec![(1, 3), (2, 3)]);
}

#[test]
fn invalid_requests_are_typed_errors() {
    let sd = tiny_sd();
    let base = Generation::new("a fox").with_steps(2);
    let cases = [
        base.clone().with_size(100, 128),
        base.clone().with_steps(0),
        base.clone().with_num_images(0),
        // Latents of the wrong channel count, or of another size than the one asked for (without
        // a size, the latents' size times the VAE's downsampling is the output size).
        base.clone()
            .with_latents(burn::tensor::TensorData::new(vec![0f32; 3], [1, 3, 1, 1])),
        base.clone()
            .with_size(64, 64)
            .with_latents(burn::tensor::TensorData::new(vec![0f32; 4], [1, 4, 1, 1])),
        // The documented bounds, checked before any work.
        base.clone().with_size(8200, 64),
        base.clone().with_num_images(65),
        base.clone().with_guidance_scale(f64::NAN),
        base.clone().with_guidance_scale(1e308),
        base.clone().with_latents(burn::tensor::TensorData::new(
            vec![f32::INFINITY; 4 * 8 * 8],
            [1, 4, 8, 8],
        )),
    ];
    for generation in cases {
        let err = sd.text_to_image(&generation, &mut NoProgress).unwrap_err();
        assert!(
            matches!(err, Error::InvalidInput { .. } | Error::Shape { .. }),
            "{err}"
        );
    }
    let init = RgbImage::new(64, 64);
    for strength in [-0.1, 1.5, 0.0] {
        let err = sd
            .image_to_image(&base, &init, strength, &mut NoProgress)
            .unwrap_err();
        assert!(err.to_string().contains("strength"), "{err}");
    }
}
