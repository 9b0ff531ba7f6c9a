//! Inpainting against diffusers on the tiny model (`tools/fixtures/gen_inpaint.py`): with
//! diffusers' noise draws replayed, every pixel is within 2/255 of its
//! `StableDiffusionInpaintPipeline` / `StableDiffusionControlNetInpaintPipeline` image, for an
//! inpainting UNet (9 channels) and for an ordinary one (mask blending); Prompt Diffusion with
//! the same blending against the reference loop of the fixture script.

use crate::common::{
    B, DEVICE, assert_images_close, assert_replayed, copy_dir, expected, fixtures, replay,
    standard_controlnet, tiny_sd,
};
use prompt_diffusion::core::weights::Pretrained;

use image::{GrayImage, RgbImage};
use prompt_diffusion::core::Error;
use prompt_diffusion::core::image::load_rgb;
use prompt_diffusion::core::progress::NoProgress;
use prompt_diffusion::core::weights::{LoadOptions, TensorSource};
use prompt_diffusion::pipelines::{ControlNetOptions, mask_from_rgb};
use prompt_diffusion::schedulers::SchedulerKind;
use prompt_diffusion::unet::UNet2DConditionModel;
use prompt_diffusion::{
    Generation, InContextOptions, Inpaint, ModelOptions, PromptDiffusion, StableDiffusion,
};

fn reference() -> TensorSource {
    TensorSource::open(fixtures().join("inpaint/reference.safetensors")).unwrap()
}

fn png(name: &str) -> RgbImage {
    load_rgb(fixtures().join("inpaint").join(name)).unwrap()
}

fn mask(name: &str) -> GrayImage {
    mask_from_rgb(&png(name))
}

/// tiny-sd, with its ordinary UNet or the tiny inpainting UNet.
fn model(inpainting: bool) -> StableDiffusion<B> {
    let mut sd = tiny_sd();
    if inpainting {
        let dir = fixtures().join("inpaint/unet");
        sd.components.unet =
            UNet2DConditionModel::from_pretrained(dir, &LoadOptions::default(), &DEVICE).unwrap();
    }
    sd
}

fn generation(scheduler: SchedulerKind) -> Generation {
    Generation::new("a red brick wall with a window")
        .with_negative_prompt("blurry, low quality")
        .with_steps(8)
        .with_guidance_scale(7.5)
        .with_scheduler(scheduler)
}

#[test]
fn inpainting_matches_diffusers_with_both_kinds_of_unet() {
    let io = reference();
    let (image, mask) = (png("image.png"), mask("mask.png"));
    let given =
        generation(SchedulerKind::Euler).with_latents(io.data("four.latents.latents").unwrap());
    for (inpainting, name, generation, strength) in [
        (true, "nine.ddim", generation(SchedulerKind::Ddim), 1.0),
        (
            true,
            "nine.ancestral",
            generation(SchedulerKind::EulerAncestral),
            0.7,
        ),
        (false, "four.ddim", generation(SchedulerKind::Ddim), 0.75),
        (false, "four.latents", given, 1.0),
    ] {
        let sd = model(inpainting);
        assert_eq!(sd.inpainting_unet().unwrap(), inpainting);
        let mut noise = replay(&io, &format!("{name}.noise."));
        let inpaint = Inpaint::new(&image, &mask).with_strength(strength);
        let images = sd
            .inpaint_with_noise(&generation, &inpaint, &mut noise, &mut NoProgress)
            .unwrap();
        assert_replayed(name, &images, &noise, &io);
    }
}

#[test]
fn controlnet_inpainting_matches_diffusers() {
    let io = reference();
    let (image, mask, hint) = (png("image.png"), mask("mask.png"), png("hint.png"));
    let options = ControlNetOptions::default().with_conditioning_scale(0.8);
    for (inpainting, name) in [(false, "controlnet.four"), (true, "controlnet.nine")] {
        let pipe = standard_controlnet(model(inpainting));
        let mut noise = replay(&io, &format!("{name}.noise."));
        let inpaint = Inpaint::new(&image, &mask);
        let generation = generation(SchedulerKind::Ddim);
        let images = pipe
            .inpaint_with_noise(
                &hint,
                &inpaint,
                &generation,
                &options,
                &mut noise,
                &mut NoProgress,
            )
            .unwrap();
        assert_replayed(name, &images, &noise, &io);
    }
}

#[test]
fn prompt_diffusion_inpaints_with_the_blend_of_diffusers() {
    let io = reference();
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixtures().join("tiny-sd"), dir.path());
    copy_dir(
        &fixtures().join("controlnet/prompt-diffusion"),
        &dir.path().join("controlnet"),
    );
    let pd = PromptDiffusion::<B>::from_pretrained(dir.path(), &ModelOptions::default(), &DEVICE)
        .unwrap();
    let pd_images = |name: &str| load_rgb(fixtures().join("prompt_diffusion").join(name)).unwrap();
    let [source, target, query] = ["source.png", "target.png", "query.png"].map(pd_images);
    let (image, mask) = (png("pd_image.png"), mask("pd_mask.png"));
    let options = InContextOptions::notebook()
        .with_steps(8)
        .with_scheduler(SchedulerKind::Ddim)
        .with_resolution(64)
        .with_latents(io.data("prompt_diffusion.latents").unwrap());
    let mut noise = replay(&io, "prompt_diffusion.noise.");
    let images = pd
        .inpaint_with_noise(
            [&source, &target, &query],
            &Inpaint::new(&image, &mask),
            "a turtle stands on the beach",
            &options,
            &mut noise,
            &mut NoProgress,
        )
        .unwrap();
    assert_eq!(noise.remaining(), 0);
    assert_images_close(
        "prompt diffusion",
        &images,
        &expected(&io, "prompt_diffusion.image"),
    );
}

#[test]
fn a_batch_image_equals_its_seed_alone_and_bad_requests_are_typed_errors() {
    let sd = model(true);
    let (image, mask) = (png("image.png"), mask("mask.png"));
    let inpaint = Inpaint::new(&image, &mask).with_strength(0.8);
    let quick = generation(SchedulerKind::EulerAncestral)
        .with_steps(3)
        .with_seed(10);
    let batch = sd
        .inpaint(&quick.clone().with_num_images(2), &inpaint, &mut NoProgress)
        .unwrap();
    let alone = sd
        .inpaint(&quick.with_seed(11), &inpaint, &mut NoProgress)
        .unwrap();
    assert_eq!(batch[1], alone[0], "image 1 of seed 10 is seed 11's");

    let bad_strength = Inpaint::new(&image, &mask).with_strength(1.5);
    let err = sd
        .inpaint(
            &generation(SchedulerKind::Ddim),
            &bad_strength,
            &mut NoProgress,
        )
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
    let tiny = RgbImage::new(4, 4);
    let err = sd
        .inpaint(
            &generation(SchedulerKind::Ddim),
            &Inpaint::new(&tiny, &mask),
            &mut NoProgress,
        )
        .unwrap_err();
    assert!(err.to_string().contains("smaller than 8"), "{err}");

    // A UNet that is neither ordinary nor an inpainting one.
    let mut odd = model(false);
    let mut config = odd.components.unet.config().clone();
    config.in_channels = 5;
    odd.components.unet = UNet2DConditionModel::new(&config, &DEVICE).unwrap();
    let err = odd
        .inpaint(&generation(SchedulerKind::Ddim), &inpaint, &mut NoProgress)
        .unwrap_err();
    assert!(err.to_string().contains("in_channels = 5"), "{err}");
}

#[test]
fn the_cli_inpaints_as_the_library_does() {
    use crate::common::{assert_cli_succeeds, run_cli, words};

    // An inpainting checkpoint in the diffusers layout: tiny-sd with the 9-channel UNet.
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("tiny-sd-inpainting");
    copy_dir(&fixtures().join("tiny-sd"), &folder);
    std::fs::remove_dir_all(folder.join("unet")).unwrap();
    copy_dir(&fixtures().join("inpaint/unet"), &folder.join("unet"));
    let (image_path, mask_path) = (
        fixtures().join("inpaint/image.png"),
        fixtures().join("inpaint/mask.png"),
    );
    let out = dir.path().join("out.png");
    let [model_arg, image_arg, mask_arg, out_arg] =
        [&folder, &image_path, &mask_path, &out].map(|p| p.display().to_string());
    let inputs = ["--init-image", &image_arg, "--mask", &mask_arg];
    let settings = ["--steps", "3", "--seed", "7", "--strength", "0.9"];
    let backend = ["--backend", "ndarray", "--output", &out_arg];
    let base = ["--model", model_arg.as_str(), "--prompt", "a red door"];
    assert_cli_succeeds(words("inpaint", &[&base, &inputs, &settings, &backend]));

    let sd =
        StableDiffusion::<B>::from_pretrained(&folder, &ModelOptions::default(), &DEVICE).unwrap();
    assert!(sd.inpainting_unet().unwrap());
    let (image, mask) = (png("image.png"), mask("mask.png"));
    let generation = Generation::new("a red door").with_steps(3).with_seed(7);
    let inpaint = Inpaint::new(&image, &mask).with_strength(0.9);
    let expected = sd.inpaint(&generation, &inpaint, &mut NoProgress).unwrap();
    let written = image::open(&out).unwrap().to_rgb8();
    assert_eq!(written.as_raw(), expected[0].as_raw(), "CLI ≠ library");

    // ControlNet inpainting: --init-image and --mask go together.
    let controlnet = fixtures().join("prompt_diffusion/controlnet-standard");
    let hint = fixtures().join("inpaint/hint.png");
    let [controlnet, hint] = [controlnet, hint].map(|p| p.display().to_string());
    let cn = ["--controlnet", controlnet.as_str(), "--hint", hint.as_str()];
    let tiny = fixtures().join("tiny-sd").display().to_string();
    let base = ["--model", tiny.as_str(), "--prompt", "a red door"];
    assert_cli_succeeds(words(
        "controlnet",
        &[&base, &cn, &inputs, &settings, &backend],
    ));
    let written = image::open(&out).unwrap().to_rgb8();
    let sd = model(false);
    let pipe = standard_controlnet(sd);
    let expected = pipe
        .inpaint(
            &png("hint.png"),
            &inpaint,
            &generation,
            &ControlNetOptions::default(),
            &mut NoProgress,
        )
        .unwrap();
    assert_eq!(
        written.as_raw(),
        expected[0].as_raw(),
        "ControlNet: CLI ≠ library"
    );

    let alone = run_cli(words("controlnet", &[&base, &cn, &["--mask", &mask_arg]]));
    assert_eq!(alone.status.code(), Some(2), "--mask without --init-image");
    let bad = run_cli(words("inpaint", &[&base, &inputs, &["--strength", "1.5"]]));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && stderr.contains("outside [0, 1]"),
        "{stderr}"
    );
}
