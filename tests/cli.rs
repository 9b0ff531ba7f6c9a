//! The `prompt-diffusion` program: bad input exits non-zero with one readable line naming the
//! problem (never a panic), and the same seed writes the same PNG bytes.

use std::path::Path;

use crate::common::{
    B, DEVICE, assert_cli_fails as assert_fails, assert_cli_succeeds as assert_succeeds,
    assert_usage_error, copy_dir, fixtures, restore_args, run_cli, words, write_f32_safetensors,
};

fn tiny() -> String {
    fixtures().join("tiny-sd").display().to_string()
}

/// Runs `txt2img` with the tiny model, the prompt "a fox" and `extra`, writing `dir/name`;
/// asserts that it succeeds and returns the output path.
fn fox(dir: &Path, name: &str, extra: &[&str]) -> String {
    let out = dir.join(name).display().to_string();
    let tiny = tiny();
    let base = ["--model", tiny.as_str(), "--prompt", "a fox"];
    assert_succeeds(words("txt2img", &[&base, extra, &["--output", &out]]));
    out
}

#[test]
fn bad_input_is_one_line_and_a_non_zero_exit() {
    let tiny = tiny();
    let base = ["txt2img", "--model", tiny.as_str(), "--prompt", "a fox"];
    let with = |extra: &[&'static str]| -> Vec<String> {
        base.iter()
            .map(|s| s.to_string())
            .chain(extra.iter().map(|s| s.to_string()))
            .collect()
    };
    let cases: Vec<(Vec<String>, Vec<&str>)> = vec![
        (
            with(&["--width", "100"]),
            vec!["width", "100", "multiple of 8"],
        ),
        (with(&["--height", "30"]), vec!["height", "30"]),
        (
            with(&["--scheduler", "fastest"]),
            vec!["scheduler", "fastest"],
        ),
        (with(&["--steps", "0"]), vec!["steps"]),
        (with(&["--backend", "tpu"]), vec!["backend", "tpu"]),
        (with(&["--output", "out.jpg"]), vec!["png"]),
        (
            vec![
                "txt2img".into(),
                "--model".into(),
                "/no/such/model".into(),
                "--prompt".into(),
                "x".into(),
            ],
            vec!["/no/such/model", "not found"],
        ),
        (
            [
                "--cache-dir",
                "",
                "txt2img",
                "--model",
                &tiny,
                "--prompt",
                "x",
            ]
            .map(String::from)
            .to_vec(),
            vec!["--cache-dir"],
        ),
    ];
    for (args, needles) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_fails(&args, &needles);
    }
}

#[test]
fn img2img_input_errors() {
    let tiny = tiny();
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.png");
    std::fs::write(&garbage, b"not an image").unwrap();
    let garbage = garbage.display().to_string();
    let init = fixtures().join("pipeline/init.png").display().to_string();
    let base = ["img2img", "--model", tiny.as_str(), "--prompt", "a fox"];
    let cases: [(&[&str], &[&str]); 4] = [
        (&["--init-image", "/no/such.png"], &["/no/such.png"]),
        (&["--init-image", garbage.as_str()], &["garbage.png"]),
        (
            &["--init-image", init.as_str(), "--strength", "1.5"],
            &["strength", "1.5"],
        ),
        (
            &["--init-image", init.as_str(), "--strength", "-0.2"],
            &["strength"],
        ),
    ];
    for (extra, needles) in cases {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        assert_fails(&args, needles);
    }
}

#[test]
fn truncated_weights_are_named() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixtures().join("tiny-sd"), dir.path());
    let unet = dir.path().join("unet/diffusion_pytorch_model.safetensors");
    let bytes = std::fs::read(&unet).unwrap();
    std::fs::write(&unet, &bytes[..bytes.len() / 2]).unwrap();
    let model = dir.path().display().to_string();
    assert_fails(
        &[
            "txt2img", "--model", &model, "--prompt", "x", "--steps", "1",
        ],
        &["unet/diffusion_pytorch_model.safetensors"],
    );
}

#[test]
fn same_seed_writes_identical_png_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let outputs = ["a.png", "b.png"]
        .map(|name| fox(dir.path(), name, &["--steps", "3", "--seed", "42"]))
        .map(|out| std::fs::read(out).unwrap());
    assert_eq!(outputs[0], outputs[1]);
    assert!(image::load_from_memory(&outputs[0]).is_ok());
}

#[test]
fn latents_file_sets_batch_and_size() {
    let tiny = tiny();
    let dir = tempfile::tempdir().unwrap();
    let latents = dir.path().join("latents.safetensors");
    let values: Vec<f32> = (0..2 * 4 * 6 * 8)
        .map(|i| ((i * 7919) % 200) as f32 / 100.0 - 1.0)
        .collect();
    write_f32_safetensors(&latents, "latents", &values, vec![2, 4, 6, 8]);
    let latents = latents.display().to_string();
    fox(
        dir.path(),
        "batch.png",
        &["--steps", "2", "--latents", &latents],
    );
    for name in ["batch_0.png", "batch_1.png"] {
        let image = image::open(dir.path().join(name)).unwrap();
        assert_eq!((image.width(), image.height()), (64, 48));
    }
    // A latents file whose size contradicts --width is rejected before any work.
    assert_fails(
        &[
            "txt2img",
            "--model",
            &tiny,
            "--prompt",
            "x",
            "--latents",
            &latents,
            "--width",
            "128",
        ],
        &["latents"],
    );
}

#[test]
fn half_precision_images_are_not_black_and_follow_f32() {
    let dir = tempfile::tempdir().unwrap();
    let images = ["f32", "f16", "bf16"].map(|precision| {
        let name = format!("{precision}.png");
        let extra = ["--steps", "5", "--seed", "3", "--precision", precision];
        image::open(fox(dir.path(), &name, &extra))
            .unwrap()
            .to_rgb8()
    });
    for (image, precision) in images.iter().zip(["f32", "f16", "bf16"]) {
        let pixels = image.as_raw();
        let black = image.pixels().filter(|p| p.0 == [0, 0, 0]).count();
        let mean = pixels.iter().map(|&v| f64::from(v)).sum::<f64>() / pixels.len() as f64;
        assert!(
            black * 100 < image.pixels().len(),
            "{precision}: {black} black pixels (NaN?)"
        );
        assert!(mean > 20.0 && mean < 235.0, "{precision}: mean {mean}");
    }
    let max_diff = |a: &image::RgbImage, b: &image::RgbImage| {
        a.as_raw()
            .iter()
            .zip(b.as_raw())
            .map(|(x, y)| x.abs_diff(*y))
            .max()
            .unwrap()
    };
    let f16 = max_diff(&images[0], &images[1]);
    let bf16 = max_diff(&images[0], &images[2]);
    eprintln!("f16 vs f32: {f16}/255, bf16 vs f32: {bf16}/255");
    assert!(f16 <= 16, "f16 differs from f32 by {f16}/255");
    assert!(bf16 <= 96, "bf16 differs from f32 by {bf16}/255");
}

#[test]
fn restore_runs_a_task_and_names_bad_input() {
    let tiny = tiny();
    let plugin = fixtures().join("diff_plugin");
    let clip = plugin.join("clip-vision").display().to_string();
    let plugins = plugin.join("pre-trained").display().to_string();
    let input = plugin.join("input.png").display().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("restored.png").display().to_string();
    let base = restore_args(&tiny, &clip, &plugins, &["--input", &input, "--size", "64"]);
    let with = |extra: &[&str]| -> Vec<String> {
        let extra = extra.iter().map(|s| s.to_string());
        base.iter().cloned().chain(extra).collect()
    };
    let stdout = assert_succeeds(with(&[
        "--task", "derain", "--steps", "3", "--output", &out,
    ]));
    assert!(stdout.contains("plugins: derain"), "{stdout}");
    let restored = image::open(&out).unwrap();
    assert_eq!(restored.width().min(restored.height()), 64);

    // The same base as one original checkpoint (configs from the folder): the same pixels (the
    // recorded model differs).
    let checkpoint = fixtures().join("tiny-sd.safetensors").display().to_string();
    let single = dir.path().join("single.png").display().to_string();
    let mut args = words(
        "restore",
        &[&["--checkpoint", &checkpoint, "--config", &tiny]],
    );
    args.extend_from_slice(&base[3..]);
    args.extend(["--task", "derain", "--steps", "3", "--output", &single].map(String::from));
    assert_succeeds(args);
    assert_eq!(
        image::open(&single).unwrap().to_rgb8(),
        image::open(&out).unwrap().to_rgb8()
    );

    // An instruction picks the plugins with the selector and chains them.
    let instruction = "remove the rain and brighten it";
    let args = with(&[
        "--instruction",
        instruction,
        "--steps",
        "2",
        "--output",
        &out,
    ]);
    let stdout = assert_succeeds(args);
    assert!(stdout.contains("plugins: "), "{stdout}");
    assert_eq!(image::open(&out).unwrap().height(), 64);

    assert_fails(&with(&["--task", "sharpen"]), &["task", "sharpen"]);
    let empty = tempfile::tempdir().unwrap();
    let empty = empty.path().display().to_string();
    let args = ["--input", &input, "--task", "derain", "--output", &out];
    assert_fails(&restore_args(&tiny, &clip, &empty, &args), &["derain"]);
}

#[test]
fn command_line_mistakes_print_clap_in_full_and_help_has_examples() {
    // A missing argument names every missing argument and shows the usage.
    let tiny = tiny();
    let out = run_cli(["txt2img", "--model", tiny.as_str()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("the following required arguments were not provided")
            && stderr.contains("--prompt <PROMPT>")
            && stderr.contains("Usage: prompt-diffusion txt2img"),
        "{stderr}"
    );
    assert_usage_error("txt2img without --prompt", &stderr);

    // A misspelt option gets clap's suggestion.
    let out = run_cli(["txt2img", "--promt", "a fox"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--prompt"), "{stderr}");
    assert_usage_error("--promt", &stderr);

    // No subcommand prints the help, listing the subcommands.
    let out = run_cli(Vec::<&str>::new());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for subcommand in [
        "txt2img",
        "img2img",
        "in-context",
        "controlnet",
        "restore",
        "versatile",
    ] {
        assert!(
            stderr.contains(subcommand),
            "`{subcommand}` not in {stderr}"
        );
    }

    // Every subcommand's help ends with examples of itself.
    for subcommand in [
        "txt2img",
        "img2img",
        "in-context",
        "controlnet",
        "annotate",
        "restore",
        "versatile",
        "info",
    ] {
        let help = assert_succeeds([subcommand, "--help"]);
        let examples = help.split("Examples:").nth(1).unwrap_or_else(|| {
            panic!("{subcommand} --help has no examples: {help}");
        });
        assert!(
            examples.contains(&format!("prompt-diffusion {subcommand} ")),
            "{subcommand}: {examples}"
        );
    }
}

#[test]
fn vae_tiling_and_slicing_reach_the_vae_and_match_the_library() {
    use prompt_diffusion::core::progress::NoProgress;
    use prompt_diffusion::vae::{VaeOptions, VaeTiling};
    use prompt_diffusion::{Generation, ModelOptions, StableDiffusion};

    // tiny-sd draws 128-px images; 64-px tiles make the decode run in overlapping tiles.
    let dir = tempfile::tempdir().unwrap();
    // ndarray: flex's device settings belong to the half-precision tests of this process.
    let extra = [
        "--steps",
        "2",
        "--seed",
        "5",
        "--num-images",
        "2",
        "--backend",
        "ndarray",
    ];
    let switches = ["--vae-tiling", "--vae-tile-size", "64", "--vae-slicing"];
    let out = fox(
        dir.path(),
        "tiled.png",
        &[&extra[..], &switches[..]].concat(),
    );

    let vae = VaeOptions::default()
        .with_tiling(VaeTiling::default().with_tile_sample_size(64))
        .with_slicing(true);
    let options = ModelOptions::default().with_vae(vae);
    let device = DEVICE;
    let sd = StableDiffusion::<B>::from_pretrained(tiny(), &options, &device).unwrap();
    assert_eq!(sd.components.vae.options(), vae);
    let generation = Generation::new("a fox")
        .with_steps(2)
        .with_seed(5)
        .with_num_images(2);
    let images = sd.text_to_image(&generation, &mut NoProgress).unwrap();
    for (i, expected) in images.iter().enumerate() {
        let path = out.replace("tiled.png", &format!("tiled_{i}.png"));
        let written = image::open(&path).unwrap().to_rgb8();
        assert_eq!(
            written.as_raw(),
            expected.as_raw(),
            "image {i}: CLI ≠ library"
        );
    }

    // A tile smaller than the VAE's downsampling is refused before the model runs.
    assert_fails(
        &[
            "txt2img",
            "--model",
            tiny().as_str(),
            "--prompt",
            "a fox",
            "--vae-tiling",
            "--vae-tile-size",
            "2",
        ],
        &["2", "downsampling factor"],
    );
}
