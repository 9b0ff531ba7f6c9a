//! The `in-context`, `controlnet` and `annotate` subcommands: they write images of the expected
//! size from both Prompt Diffusion layouts, resize images of other sizes, and report bad input
//! as one line naming the problem (never a panic).

use std::path::Path;

use crate::common::{
    assert_cli_fails as assert_fails, assert_cli_succeeds as assert_succeeds, controlnet_args,
    copy_dir, fixture, fixtures, in_context_images,
};

/// A diffusers-layout Prompt Diffusion folder (tiny-sd + the tiny ControlNet) in `dir`.
fn tiny_prompt_diffusion(dir: &Path) -> String {
    copy_dir(&fixtures().join("tiny-sd"), dir);
    copy_dir(
        &fixtures().join("controlnet/prompt-diffusion"),
        &dir.join("controlnet"),
    );
    dir.display().to_string()
}

fn size(path: &Path) -> (u32, u32) {
    let image = image::open(path).unwrap();
    (image.width(), image.height())
}

/// `in-context` arguments for the fixture images, writing `out`.
fn in_context<'a>(model: &[&'a str], out: &'a str) -> Vec<&'a str> {
    let mut args = vec!["in-context"];
    args.extend_from_slice(model);
    args.extend_from_slice(&[
        "--prompt",
        "a turtle",
        "--steps",
        "2",
        "--seed",
        "1",
        "--resolution",
        "64",
        "--output",
        out,
    ]);
    args
}

#[test]
fn in_context_runs_from_both_layouts_and_resizes_images() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_prompt_diffusion(&dir.path().join("model"));
    let (source, target, query) = (
        fixture("prompt_diffusion/source.png"),
        fixture("prompt_diffusion/target.png"),
        fixture("prompt_diffusion/query.png"),
    );
    let images = in_context_images(&source, &target, &query);
    let out = dir.path().join("folder.png");
    let out_str = out.display().to_string();
    let mut args = in_context(&["--model", &model], &out_str);
    args.extend_from_slice(&images);
    args.push("--notebook-prompts");
    assert_succeeds(&args);
    assert_eq!(size(&out), (128, 64));

    let checkpoint = fixture("controlnet/tiny-prompt-diffusion.safetensors");
    let out = dir.path().join("single.png");
    let out_str = out.display().to_string();
    let mut args = in_context(&["--checkpoint", &checkpoint, "--config", &model], &out_str);
    args.extend_from_slice(&images);
    args.extend_from_slice(&["--hint-range", "diffusers", "--guess-mode"]);
    assert_succeeds(&args);
    assert_eq!(size(&out), (128, 64));

    // Example images of other sizes than the query are resized to the query's output size.
    let small = dir.path().join("small.png");
    image::open(&source)
        .unwrap()
        .resize_exact(50, 30, image::imageops::FilterType::Triangle)
        .save(&small)
        .unwrap();
    let small = small.display().to_string();
    let out = dir.path().join("resized.png");
    let out_str = out.display().to_string();
    let mut args = in_context(&["--model", &model], &out_str);
    args.extend_from_slice(&in_context_images(&small, &target, &query));
    args.extend_from_slice(&["--num-images", "2"]);
    assert_succeeds(&args);
    assert_eq!(size(&dir.path().join("resized_1.png")), (128, 64));
}

#[test]
fn in_context_errors_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_prompt_diffusion(&dir.path().join("model"));
    let garbage = dir.path().join("garbage.png");
    std::fs::write(&garbage, b"not an image").unwrap();
    let garbage = garbage.display().to_string();
    let (source, target, query) = (
        fixture("prompt_diffusion/source.png"),
        fixture("prompt_diffusion/target.png"),
        fixture("prompt_diffusion/query.png"),
    );
    let tiny_sd = fixture("tiny-sd");
    let sd_file = fixture("tiny-sd.safetensors");
    let with = |model: &[&str], images: [&str; 3], extra: &[&str], needles: &[&str]| {
        let mut args = vec!["in-context"];
        args.extend_from_slice(model);
        args.extend_from_slice(&["--prompt", "x", "--steps", "1"]);
        args.extend_from_slice(&["--example-source", images[0]]);
        args.extend_from_slice(&["--example-target", images[1]]);
        args.extend_from_slice(&["--query", images[2]]);
        args.extend_from_slice(extra);
        assert_fails(&args, needles);
    };
    let ok = [source.as_str(), target.as_str(), query.as_str()];
    let m = ["--model", model.as_str()];
    with(&m, [&garbage, &target, &query], &[], &["garbage.png"]);
    with(
        &m,
        [&source, &target, "/no/such/query.png"],
        &[],
        &["/no/such/query.png"],
    );
    with(&m, ok, &["--resolution", "16"], &["resolution", "16"]);
    with(&m, ok, &["--resolution", "0"], &["resolution"]);
    with(&m, ok, &["--hint-range", "wide"], &["hint-range", "wide"]);
    with(&m, ok, &["--width", "100"], &["width", "100"]);
    with(&m, ok, &["--output", "out.jpg"], &["png"]);
    with(&["--model", &tiny_sd], ok, &[], &["controlnet/"]);
    with(&["--checkpoint", &sd_file], ok, &[], &["control_model"]);
}

#[test]
fn controlnet_runs_from_a_folder_and_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = fixture("tiny-sd");
    let folder = fixtures().join("prompt_diffusion/controlnet-standard");
    let hint = fixture("prompt_diffusion/query.png");
    let out = dir.path().join("cn.png");
    let out_str = out.display().to_string();
    let folder_str = folder.display().to_string();
    let base = [
        "controlnet",
        "--model",
        &tiny,
        "--prompt",
        "a house",
        "--steps",
        "2",
        "--seed",
        "3",
        "--hint",
        &hint,
        "--output",
        &out_str,
    ];
    let mut args = base.to_vec();
    args.extend_from_slice(&["--controlnet", &folder_str, "--conditioning-scale", "0.8"]);
    assert_succeeds(&args);
    assert_eq!(size(&out), (128, 64));

    // A single weight file, described by a config.json.
    let file = dir.path().join("canny.safetensors");
    std::fs::copy(folder.join("diffusion_pytorch_model.safetensors"), &file).unwrap();
    let file = file.display().to_string();
    let config = folder.join("config.json").display().to_string();
    let mut args = base.to_vec();
    args.extend_from_slice(&[
        "--controlnet",
        &file,
        "--controlnet-config",
        &config,
        "--guess-mode",
        "--width",
        "64",
        "--height",
        "64",
    ]);
    assert_succeeds(&args);
    assert_eq!(size(&out), (64, 64));

    // Without its config the tiny file does not fit SD 1.5's ControlNet: a weights report.
    let mut args = base.to_vec();
    args.extend_from_slice(&["--controlnet", &file]);
    assert_fails(&args, &["ControlNetModel"]);
    let mut args = base.to_vec();
    args.extend_from_slice(&["--controlnet", "/no/such/controlnet"]);
    assert_fails(&args, &["/no/such/controlnet"]);
    let args = controlnet_args(&tiny, &folder_str, &["--hint", "/no/such/hint.png"]);
    assert_fails(&args, &["/no/such/hint.png"]);
}

#[test]
fn annotate_writes_maps_and_reports_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let input = fixture("prompt_diffusion/target.png");
    for kind in ["canny", "softedge"] {
        let out = dir.path().join(format!("{kind}.png"));
        let out_str = out.display().to_string();
        assert_succeeds(["annotate", "--kind", kind, &input, &out_str]);
        let map = image::open(&out).unwrap().to_rgb8();
        assert_eq!(map.dimensions(), (128, 64));
        assert!(map.pixels().any(|p| p.0[0] > 0), "{kind}: empty map");
        assert!(map.pixels().any(|p| p.0[0] == 0), "{kind}: no background");
    }
    let garbage = dir.path().join("garbage.png");
    std::fs::write(&garbage, b"not an image").unwrap();
    let garbage = garbage.display().to_string();
    let out = dir.path().join("x.png").display().to_string();
    assert_fails(
        &["annotate", "--kind", "hed", &input, &out],
        &["hed", "canny"],
    );
    assert_fails(
        &["annotate", "--kind", "canny", &garbage, &out],
        &["garbage.png"],
    );
    assert_fails(
        &["annotate", "--kind", "canny", "/no/such.png", &out],
        &["/no/such.png"],
    );
    assert_fails(&["annotate", "--kind", "canny", &input, "x.jpg"], &["png"]);
    assert_fails(
        &["annotate", "--kind", "canny", "--low", "300", &input, &out],
        &["--low"],
    );
}
