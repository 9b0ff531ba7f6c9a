//! Prompt Diffusion and the plain ControlNet pipeline against their references on the tiny
//! model (`tools/fixtures/gen_prompt_diffusion.py`): with the reference's initial latents every
//! pixel is within 2/255 of the reference image, from the diffusers-converted layout and from
//! the original single checkpoint.

use crate::common::{
    B, DEVICE, assert_images_close, copy_dir, expected, fixtures, standard_controlnet, tiny_sd,
};
use prompt_diffusion::core::weights::Pretrained;
use std::path::{Path, PathBuf};

use image::RgbImage;
use prompt_diffusion::controlnet::ControlScales;
use prompt_diffusion::core::Error;
use prompt_diffusion::core::image::{PixelRange, load_rgb, resize};
use prompt_diffusion::core::progress::NoProgress;
use prompt_diffusion::core::weights::TensorSource;
use prompt_diffusion::pipelines::ControlNetOptions;
use prompt_diffusion::schedulers::SchedulerKind;
use prompt_diffusion::{Generation, InContextOptions, ModelOptions, PromptDiffusion};

fn reference() -> TensorSource {
    TensorSource::open(fixtures().join("prompt_diffusion/reference.safetensors")).unwrap()
}

fn image(name: &str) -> RgbImage {
    load_rgb(fixtures().join("prompt_diffusion").join(name)).unwrap()
}

/// source, target, query.
fn images() -> [RgbImage; 3] {
    ["source.png", "target.png", "query.png"].map(image)
}

/// The reference's settings: the notebook's prompts, 8 steps, guidance 9, short side 64.
fn options(io: &TensorSource, scheduler: SchedulerKind) -> InContextOptions {
    InContextOptions::notebook()
        .with_steps(8)
        .with_scheduler(scheduler)
        .with_resolution(64)
        .with_latents(io.data("latents").unwrap())
}

const PROMPT: &str = "a turtle stands on the beach";

/// A diffusers-converted Prompt Diffusion folder: tiny-sd's components (at the root, or in
/// `base/`) and the tiny Prompt Diffusion ControlNet in `controlnet/`.
fn diffusers_layout(root: &Path, base: bool) -> PathBuf {
    let components = if base {
        root.join("base")
    } else {
        root.to_path_buf()
    };
    copy_dir(&fixtures().join("tiny-sd"), &components);
    copy_dir(
        &fixtures().join("controlnet/prompt-diffusion"),
        &root.join("controlnet"),
    );
    root.to_path_buf()
}

fn run(pd: &PromptDiffusion<B>, options: &InContextOptions) -> Vec<RgbImage> {
    let [source, target, query] = images();
    pd.generate(&source, &target, &query, PROMPT, options, &mut NoProgress)
        .unwrap()
}

/// Asserts that `pd` makes the reference's `{prefix}.{scheduler}.image` with DDIM and UniPC.
fn assert_schedulers_match(what: &str, pd: &PromptDiffusion<B>, io: &TensorSource, prefix: &str) {
    for (name, kind) in [
        ("ddim", SchedulerKind::Ddim),
        ("unipc", SchedulerKind::UniPc),
    ] {
        let images = run(pd, &options(io, kind));
        assert_images_close(
            &format!("{what}, {name}"),
            &images,
            &expected(io, &format!("{prefix}.{name}.image")),
        );
    }
}

#[test]
fn in_context_matches_the_reference_from_the_diffusers_layout() {
    let io = reference();
    let dir = tempfile::tempdir().unwrap();
    let root = diffusers_layout(dir.path(), false);
    let pd =
        PromptDiffusion::<B>::from_pretrained(&root, &ModelOptions::default(), &DEVICE).unwrap();
    assert_schedulers_match("diffusers layout", &pd, &io, "diffusers");
    let zero_one = options(&io, SchedulerKind::Ddim).with_hint_range(PixelRange::ZeroToOne);
    assert_images_close(
        "hints in [0, 1]",
        &run(&pd, &zero_one),
        &expected(&io, "diffusers.zero_one.image"),
    );
    let guess =
        options(&io, SchedulerKind::Ddim).with_control_scales(ControlScales::LdmGuessMode(0.9));
    assert_images_close(
        "original guess mode",
        &run(&pd, &guess),
        &expected(&io, "diffusers.guess.image"),
    );

    // The `base/` layout of iczaw/prompt-diffusion-diffusers loads the same model.
    let dir = tempfile::tempdir().unwrap();
    let root = diffusers_layout(dir.path(), true);
    let pd =
        PromptDiffusion::<B>::from_pretrained(&root, &ModelOptions::default(), &DEVICE).unwrap();
    assert_images_close(
        "base/ layout, ddim",
        &run(&pd, &options(&io, SchedulerKind::Ddim)),
        &expected(&io, "diffusers.ddim.image"),
    );
}

#[test]
fn in_context_matches_the_reference_from_the_original_checkpoint() {
    let io = reference();
    let dir = tempfile::tempdir().unwrap();
    // The tiny model's configs (the released model needs none).
    let config = diffusers_layout(dir.path(), false);
    let checkpoint = fixtures().join("controlnet/tiny-prompt-diffusion.safetensors");
    let pd = PromptDiffusion::<B>::from_single_file(
        &checkpoint,
        &ModelOptions::default().with_config(&config),
        &DEVICE,
    )
    .unwrap();
    assert_schedulers_match("single checkpoint", &pd, &io, "single");
}

#[test]
fn standard_controlnet_pipeline_matches_diffusers() {
    let io = reference();
    let sd = tiny_sd();
    let pipe = standard_controlnet(sd);
    let generation = Generation::new("a watercolor painting of a house")
        .with_negative_prompt("blurry, low quality")
        .with_steps(8)
        .with_guidance_scale(7.5)
        .with_scheduler(SchedulerKind::Ddim)
        .with_latents(io.data("latents").unwrap());
    let hint = image("query.png");
    for (name, options) in [
        (
            "ddim",
            ControlNetOptions::default()
                .with_conditioning_scale(0.8)
                .with_guess_mode(false),
        ),
        (
            "guess",
            ControlNetOptions::default()
                .with_conditioning_scale(1.0)
                .with_guess_mode(true),
        ),
    ] {
        let images = pipe
            .generate(&hint, &generation, &options, &mut NoProgress)
            .unwrap();
        assert_images_close(
            &format!("controlnet, {name}"),
            &images,
            &expected(&io, &format!("controlnet.{name}.image")),
        );
    }
}

fn tiny_pd() -> PromptDiffusion<B> {
    let sd = tiny_sd();
    let controlnet = prompt_diffusion::controlnet::PromptDiffusionControlNet::from_pretrained(
        fixtures().join("controlnet/prompt-diffusion"),
        &Default::default(),
        &DEVICE,
    )
    .unwrap();
    PromptDiffusion::new(sd, controlnet)
}

#[test]
fn images_of_other_sizes_are_resized_to_the_query_at_the_resolution() {
    let pd = tiny_pd();
    let [source, target, query] = images();
    let quick = InContextOptions::default()
        .with_steps(2)
        .with_resolution(64);
    // Example images of other sizes (and aspect ratios) than the query: all become 128×64.
    let small_query = resize(&query, 96, 48);
    let out = pd
        .generate(
            &resize(&source, 100, 60),
            &resize(&target, 50, 20),
            &small_query,
            PROMPT,
            &quick,
            &mut NoProgress,
        )
        .unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].dimensions(), (128, 64));
    // A portrait query at the default resolution (tiny-sd's native 128), two images.
    let portrait = resize(&query, 40, 64);
    let mut batch = quick.clone().with_num_images(2);
    batch.resolution = None;
    let out = pd
        .generate(&source, &target, &portrait, PROMPT, &batch, &mut NoProgress)
        .unwrap();
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].dimensions(), (128, 192));
    // An explicit size wins over the resolution.
    let sized = quick
        .with_width(64)
        .with_height(64)
        .with_guidance_scale(1.0);
    let out = pd
        .generate(&source, &target, &query, PROMPT, &sized, &mut NoProgress)
        .unwrap();
    assert_eq!(out[0].dimensions(), (64, 64));
}

#[test]
fn invalid_requests_and_wrong_files_are_typed_errors() {
    let pd = tiny_pd();
    let [source, target, query] = images();
    let base = InContextOptions::default()
        .with_steps(2)
        .with_resolution(64);
    let cases = [
        base.clone().with_resolution(16),
        base.clone().with_steps(0),
        base.clone().with_width(100),
        base.clone()
            .with_latents(burn::tensor::TensorData::new(vec![0f32; 4], [1, 4, 1, 1])),
        base.clone()
            .with_control_scales(ControlScales::PerResidual(vec![1.0; 3])),
    ];
    for options in cases {
        let err = pd
            .generate(&source, &target, &query, PROMPT, &options, &mut NoProgress)
            .unwrap_err();
        assert!(
            matches!(err, Error::InvalidInput { .. } | Error::Shape { .. }),
            "{err}"
        );
    }

    let options = ModelOptions::default();
    let err = PromptDiffusion::<B>::from_pretrained(fixtures().join("tiny-sd"), &options, &DEVICE)
        .unwrap_err();
    assert!(err.to_string().contains("controlnet/"), "{err}");
    let err = PromptDiffusion::<B>::from_single_file(
        fixtures().join("tiny-sd.safetensors"),
        &options,
        &DEVICE,
    )
    .unwrap_err();
    assert!(err.to_string().contains("control_model"), "{err}");
    // The pickle holds the ControlNet only: no UNet to pair it with.
    let err = PromptDiffusion::<B>::from_single_file(
        fixtures().join("controlnet/tiny-prompt-diffusion.ckpt"),
        &options.clone().with_config(fixtures().join("tiny-sd")),
        &DEVICE,
    )
    .unwrap_err();
    assert!(err.to_string().contains("model.diffusion_model"), "{err}");
}
