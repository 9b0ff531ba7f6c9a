//! Hostile or careless input to the `prompt-diffusion` program: non-finite and absurd numbers,
//! sizes and counts past the documented bounds, images whose header claims gigabytes, broken
//! model files, blank instructions, and huge prompts. Each is one readable line before any
//! work, or a short warning.

use std::process::Command;

use crate::common::{
    assert_cli_fails, assert_cli_succeeds, assert_one_line_error, controlnet_args, copy_dir,
    fixture, fixtures, in_context_images, restore_args, run_cli, versatile_args,
    write_f32_safetensors,
};

/// `base` followed by `extra`, as owned words.
fn words(base: &[&str], extra: &[&str]) -> Vec<String> {
    base.iter().chain(extra).map(|s| s.to_string()).collect()
}

/// Asserts that the program fails on `args` with one line containing every needle.
fn fails(args: &[String], needles: &[&str]) {
    assert_one_line_error(&format!("{args:?}"), &run_cli(args), needles);
}

#[test]
fn every_float_option_rejects_nan_infinity_and_absurd_values() {
    let (tiny, init) = (fixture("tiny-sd"), fixture("pipeline/init.png"));
    let sd = ["--model", tiny.as_str(), "--prompt", "x"];
    let txt2img = words(&["txt2img"], &sd);
    let img2img = words(&["img2img"], &sd)
        .into_iter()
        .chain(words(&["--init-image", &init], &[]))
        .collect::<Vec<_>>();
    let controlnet = words(&["controlnet"], &sd)
        .into_iter()
        .chain(words(&["--controlnet", &tiny, "--hint", &init], &[]))
        .collect::<Vec<_>>();
    let in_context = words(&["in-context"], &sd)
        .into_iter()
        .chain(words(&in_context_images(&init, &init, &init), &[]))
        .collect::<Vec<_>>();
    let annotate = words(&["annotate", "--kind", "canny", &init, "unused.png"], &[]);
    let t2i = words(&[], &["--prompt", "x"]);
    let text_to_image: Vec<String> = versatile_args("text-to-image")
        .into_iter()
        .chain(t2i)
        .collect();
    let dual: Vec<String> = versatile_args("dual-guided")
        .into_iter()
        .chain(words(&["--prompt", "x", "--image", &init], &[]))
        .collect();
    let text_variation: Vec<String> = versatile_args("text-variation")
        .into_iter()
        .chain(words(&["--prompt", "x"], &[]))
        .collect();
    let cases: Vec<(&Vec<String>, &str, &str)> = vec![
        (&txt2img, "--guidance", "guidance"),
        (&txt2img, "--eta", "eta"),
        (&img2img, "--strength", "strength"),
        (&img2img, "--guidance", "guidance"),
        (&controlnet, "--conditioning-scale", "conditioning-scale"),
        (&controlnet, "--guidance", "guidance"),
        (&in_context, "--conditioning-scale", "conditioning-scale"),
        (&in_context, "--eta", "eta"),
        (&annotate, "--low", "low"),
        (&annotate, "--high", "high"),
        (&annotate, "--sigma", "sigma"),
        (&text_to_image, "--guidance", "guidance"),
        (&text_to_image, "--eta", "eta"),
        (&dual, "--mix", "mix"),
        (&text_variation, "--temperature", "temperature"),
    ];
    for (base, flag, needle) in cases {
        for value in ["NaN", "inf", "infinity", "1e308"] {
            if value == "1e308" && !matches!(needle, "guidance" | "strength" | "mix") {
                continue;
            }
            let mut args = base.clone();
            args.extend([flag.to_string(), value.to_string()]);
            fails(&args, &[needle]);
        }
    }
    // The documented guidance bound.
    fails(
        &words(
            &txt2img.iter().map(String::as_str).collect::<Vec<_>>(),
            &["--guidance", "1001"],
        ),
        &["guidance", "1000"],
    );
}

#[test]
fn non_finite_latents_are_rejected_before_loading() {
    let dir = tempfile::tempdir().unwrap();
    for (name, bad) in [("nan", f32::NAN), ("inf", f32::INFINITY)] {
        let path = dir.path().join(format!("{name}.safetensors"));
        let mut values = vec![0.5f32; 4 * 8 * 8];
        values[17] = bad;
        write_f32_safetensors(&path, "latents", &values, vec![1, 4, 8, 8]);
        let path = path.display().to_string();
        // A model that does not exist: the latents are refused first.
        let args = ["txt2img", "--model", "/no/such/model", "--prompt", "x"];
        assert_cli_fails(
            &args
                .iter()
                .copied()
                .chain(["--latents", &path])
                .collect::<Vec<_>>(),
            &["latents", "NaN or infinite"],
        );
    }
}

#[test]
fn sizes_counts_and_images_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let (tiny, init) = (fixture("tiny-sd"), fixture("pipeline/init.png"));
    let huge = dir.path().join("huge.png");
    std::fs::write(&huge, prompt_diffusion::core::testing::png_claiming(12000)).unwrap();
    let huge = huge.display().to_string();
    let sd = ["txt2img", "--model", tiny.as_str(), "--prompt", "x"];
    fails(&words(&sd, &["--width", "100000"]), &["width", "8192"]);
    fails(&words(&sd, &["--height", "8200"]), &["height", "8192"]);
    fails(
        &words(&sd, &["--num-images", "100000"]),
        &["number of images", "64"],
    );
    let pd = in_context_images(&init, &init, &init);
    let image_inputs: Vec<Vec<String>> = vec![
        words(
            &[
                "img2img",
                "--model",
                &tiny,
                "--prompt",
                "x",
                "--init-image",
                &huge,
            ],
            &[],
        ),
        controlnet_args(&tiny, &tiny, &["--hint", &huge]),
        words(&["in-context", "--model", &tiny, "--prompt", "x"], &pd)
            .into_iter()
            .map(|w| if w == init { huge.clone() } else { w })
            .collect(),
        words(&["annotate", "--kind", "canny", &huge, "unused.png"], &[]),
        restore_args(&tiny, &tiny, &tiny, &["--task", "derain", "--input", &huge]),
        versatile_args("image-variation")
            .into_iter()
            .chain(words(&["--image", &huge], &[]))
            .collect(),
    ];
    for args in image_inputs {
        let start = std::time::Instant::now();
        fails(&args, &["huge.png", "12000x12000", "8192"]);
        assert!(start.elapsed().as_secs() < 30, "{args:?} was slow to fail");
    }
    let restore = |extra: &[&str]| restore_args(&tiny, &tiny, &tiny, extra);
    let args = restore(&["--task", "derain", "--input", &init, "--size", "100000"]);
    fails(&args, &["size", "8192"]);
    let tall = dir.path().join("tall.png");
    image::RgbImage::new(8, 4000).save(&tall).unwrap();
    let tall = tall.display().to_string();
    let args = restore(&["--task", "derain", "--input", &tall, "--size", "512"]);
    fails(&args, &["256000", "8192"]);
}

#[test]
fn seed_minus_one_draws_a_printed_seed_that_repeats_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = fixture("tiny-sd");
    let out = |name: &str| dir.path().join(name).display().to_string();
    let base = [
        "txt2img",
        "--model",
        tiny.as_str(),
        "--prompt",
        "a fox",
        "--steps",
        "1",
    ];
    let (a, b) = (out("a.png"), out("b.png"));
    let stdout = assert_cli_succeeds(words(&base, &["--seed", "-1", "--output", &a]));
    let seed = stdout
        .lines()
        .find_map(|l| l.strip_prefix("seed: "))
        .unwrap_or_else(|| panic!("no seed printed: {stdout}"))
        .trim()
        .to_string();
    let again = assert_cli_succeeds(words(&base, &["--seed", &seed, "--output", &b]));
    assert!(
        !again.contains("seed: "),
        "a given seed is not printed: {again}"
    );
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    fails(&words(&base, &["--seed", "-2"]), &["seed", "-2"]);
}

#[test]
fn broken_model_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixtures().join("tiny-sd"), dir.path());
    let model = dir.path().display().to_string();
    let args = words(
        &[
            "txt2img", "--model", &model, "--prompt", "x", "--steps", "1",
        ],
        &[],
    );
    let index = dir.path().join("model_index.json");
    let good_index = std::fs::read(&index).unwrap();
    std::fs::write(&index, b"{\"unet\": [\"diffusers\", ").unwrap();
    fails(&args, &["model_index.json", "invalid JSON"]);
    std::fs::write(&index, good_index).unwrap();

    let scheduler = dir.path().join("scheduler/scheduler_config.json");
    let text = std::fs::read_to_string(&scheduler).unwrap();
    let text = text.replace("\"steps_offset\": 1", "\"steps_offset\": 5000");
    assert!(text.contains("5000"), "{text}");
    std::fs::write(&scheduler, text).unwrap();
    fails(
        &args,
        &["scheduler/scheduler_config.json", "steps_offset", "5000"],
    );

    // Versatile Diffusion's folder too.
    let vd = tempfile::tempdir().unwrap();
    copy_dir(&fixtures().join("versatile/vd"), vd.path());
    std::fs::write(vd.path().join("model_index.json"), b"[1, 2]").unwrap();
    let mut args = versatile_args("text-to-image");
    args[3] = vd.path().display().to_string();
    args.extend(words(&["--prompt", "x", "--steps", "1"], &[]));
    fails(&args, &["model_index.json", "not a JSON object"]);

    // A single file the published configs do not describe: a short line advising --config.
    let checkpoint = fixture("tiny-sd.safetensors");
    let args = words(
        &["txt2img", "--checkpoint", &checkpoint, "--prompt", "x"],
        &[],
    );
    let out = run_cli(&args);
    assert_one_line_error("checkpoint without --config", &out, &["--config DIR"]);
    assert!(
        out.stderr.len() < 600,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_blank_instruction_is_an_error() {
    let tiny = fixture("tiny-sd");
    let plugin = fixtures().join("diff_plugin");
    let clip = plugin.join("clip-vision").display().to_string();
    let plugins = plugin.join("pre-trained").display().to_string();
    let input = plugin.join("input.png").display().to_string();
    for instruction in ["", "   \t"] {
        let args = ["--input", &input, "--instruction", instruction];
        assert_cli_fails(
            &restore_args(&tiny, &clip, &plugins, &args),
            &["instruction", "empty"],
        );
    }
}

#[test]
fn a_huge_prompt_warns_briefly_and_without_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = fixture("tiny-sd");
    let out = dir.path().join("long.png").display().to_string();
    let prompt = format!("a fox {}\u{1b}[31m red", "in the snow ".repeat(7500));
    assert!(prompt.len() > 89_000);
    let result = Command::new(env!("CARGO_BIN_EXE_prompt-diffusion"))
        .args([
            "txt2img", "--model", &tiny, "--prompt", &prompt, "--steps", "1",
        ])
        .args(["--seed", "1", "--output", &out])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(result.status.success(), "{stderr}");
    assert!(stderr.contains("truncated"), "{stderr}");
    assert!(stderr.len() < 1000, "{} bytes of warnings", stderr.len());
    assert!(
        !stderr.contains('\u{1b}'),
        "colour codes on a non-terminal: {stderr:?}"
    );
}
