//! Helpers shared by the facade's tests: fixture paths, running the `prompt-diffusion`
//! program, and comparing images with the reference's.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use image::RgbImage;
use prompt_diffusion::core::noise::ReplayNoise;
use prompt_diffusion::core::testing::{TestBackend, TestDevice};
use prompt_diffusion::core::weights::TensorSource;
use prompt_diffusion::{ModelOptions, StableDiffusion, StableDiffusionControlNet};

/// The backend of the facade's CPU tests: every crate's [`TestBackend`].
pub type B = TestBackend;

/// The device of [`B`].
pub const DEVICE: TestDevice = TestDevice::Cpu;

/// The repository's `fixtures/` folder.
pub fn fixtures() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures"))
}

/// A path under `fixtures/`, as a program argument.
pub fn fixture(path: &str) -> String {
    fixtures().join(path).display().to_string()
}

/// The tiny Stable Diffusion model of `fixtures/tiny-sd`, loaded with `options`.
pub fn tiny_sd_with(options: &ModelOptions) -> StableDiffusion<B> {
    StableDiffusion::from_pretrained(fixtures().join("tiny-sd"), options, &DEVICE).unwrap()
}

/// [`tiny_sd_with`] the default options.
pub fn tiny_sd() -> StableDiffusion<B> {
    tiny_sd_with(&ModelOptions::default())
}

/// The reference's noise draws `{prefix}0`, `{prefix}1`, … in order, to be replayed.
pub fn replay(io: &TensorSource, prefix: &str) -> ReplayNoise {
    let draws = (0..)
        .map_while(|i| io.data(&format!("{prefix}{i}")).ok())
        .collect::<Vec<_>>();
    ReplayNoise::new(draws)
}

/// Asserts that a run took every draw of the reference's `noise` and made the images stored
/// under `{name}.image` (within 2/255, [`assert_images_close`]).
pub fn assert_replayed(name: &str, images: &[RgbImage], noise: &ReplayNoise, io: &TensorSource) {
    assert_eq!(noise.remaining(), 0, "{name}: unused reference noise");
    assert_images_close(name, images, &expected(io, &format!("{name}.image")));
}

/// `sd` with the standard ControlNet of the Prompt Diffusion fixtures.
pub fn standard_controlnet(sd: StableDiffusion<B>) -> StableDiffusionControlNet<B> {
    let dir = fixtures().join("prompt_diffusion/controlnet-standard");
    let options = ModelOptions::default();
    let controlnet =
        StableDiffusionControlNet::<B>::load_controlnet(dir, None, &options, &DEVICE).unwrap();
    StableDiffusionControlNet::new(sd, controlnet)
}

/// Copies the folder `from` (recursively) into `to`, creating it.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Runs the `prompt-diffusion` program with `args` (warnings and logs off).
pub fn run_cli<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(args: I) -> Output {
    Command::new(env!("CARGO_BIN_EXE_prompt-diffusion"))
        .args(args)
        .env("RUST_LOG", "error")
        .output()
        .expect("the program starts")
}

/// Asserts that `out` (of the run described by `what`) failed without a panic, naming every
/// `needle`: a command-line mistake with clap's whole message (status 2: the `error:` line, its
/// context and the usage), any other error as one `error:` line (status 1).
pub fn assert_one_line_error(what: &str, out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{what} succeeded");
    assert!(!stderr.contains("panicked"), "{what} panicked: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines[0].starts_with("error:"), "{what}: {stderr}");
    if out.status.code() == Some(2) {
        assert_usage_error(what, &stderr);
    } else {
        assert_eq!(lines.len(), 1, "{what}: expected one line, got {stderr:?}");
    }
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "{what}: `{needle}` not in {stderr:?}"
        );
    }
}

/// Asserts that `stderr` is clap's whole message for a command-line mistake: the error, its
/// context, and the pointer to `--help`.
pub fn assert_usage_error(what: &str, stderr: &str) {
    assert!(stderr.starts_with("error:"), "{what}: {stderr}");
    assert!(
        stderr.contains("For more information, try '--help'."),
        "{what}: no help hint in {stderr:?}"
    );
}

/// Writes `values` as one f32 tensor `key` of shape `shape` to the safetensors file `path`.
pub fn write_f32_safetensors(path: &Path, key: &str, values: &[f32], shape: Vec<usize>) {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape, &bytes)
        .expect("the shape matches the values");
    safetensors::serialize_to_file([(key, view)], None, path).expect("the file is written");
}

/// Runs the program with `args`, asserts that it succeeded (showing its stderr otherwise) and
/// returns its stdout.
pub fn assert_cli_succeeds<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(args: I) -> String {
    let args: Vec<std::ffi::OsString> = args.into_iter().map(|a| a.as_ref().into()).collect();
    let out = run_cli(&args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs the program with `args` and asserts [`assert_one_line_error`].
pub fn assert_cli_fails<S: AsRef<OsStr> + std::fmt::Debug>(args: &[S], needles: &[&str]) {
    assert_one_line_error(&format!("{args:?}"), &run_cli(args), needles);
}

/// `command` followed by every word of `parts`, as owned words.
pub fn words(command: &str, parts: &[&[&str]]) -> Vec<String> {
    let parts = parts.iter().flat_map(|part| part.iter().copied());
    std::iter::once(command)
        .chain(parts)
        .map(String::from)
        .collect()
}

/// The images of an `in-context` command: the example's source and target, and the query.
pub fn in_context_images<'a>(source: &'a str, target: &'a str, query: &'a str) -> [&'a str; 6] {
    let [s, t, q] = ["--example-source", "--example-target", "--query"];
    [s, source, t, target, q, query]
}

/// A `restore` command: the model, the CLIP vision tower and the Task-Plugins folder, then
/// `extra`.
pub fn restore_args(model: &str, clip_vision: &str, plugins: &str, extra: &[&str]) -> Vec<String> {
    let models = ["--model", model, "--clip-vision", clip_vision];
    words("restore", &[&models, &["--plugins", plugins], extra])
}

/// A `controlnet` command with the model, the prompt `x` and the ControlNet, then `extra`.
pub fn controlnet_args(model: &str, controlnet: &str, extra: &[&str]) -> Vec<String> {
    let models = ["--model", model, "--prompt", "x"];
    words(
        "controlnet",
        &[&models, &["--controlnet", controlnet], extra],
    )
}

/// The reference's uint8 images `[n, h, w, 3]` stored under `key`.
pub fn expected(io: &TensorSource, key: &str) -> Vec<RgbImage> {
    let data = io.data(key).unwrap();
    let [n, h, w, _] = data.shape[..] else {
        panic!("{key}: not [n, h, w, 3]")
    };
    let bytes: Vec<u8> = data.to_vec().unwrap();
    bytes
        .chunks(h * w * 3)
        .take(n)
        .map(|c| RgbImage::from_raw(w as u32, h as u32, c.to_vec()).unwrap())
        .collect()
}

/// Asserts equal counts and sizes and at most 2/255 difference in every pixel channel.
pub fn assert_images_close(what: &str, actual: &[RgbImage], expected: &[RgbImage]) {
    assert_eq!(actual.len(), expected.len(), "{what}: image count");
    let mut worst = 0u8;
    for (a, e) in actual.iter().zip(expected) {
        assert_eq!(a.dimensions(), e.dimensions(), "{what}: size");
        for (pa, pe) in a.as_raw().iter().zip(e.as_raw()) {
            worst = worst.max(pa.abs_diff(*pe));
        }
    }
    eprintln!("{what}: max pixel difference {worst}/255");
    assert!(
        worst <= 2,
        "{what}: max pixel difference {worst}/255 exceeds 2/255"
    );
}

/// The arguments of `versatile <flow>` with the tiny Versatile Diffusion model and its
/// Optimus text VAE.
pub fn versatile_args(flow: &str) -> Vec<String> {
    let mut args: Vec<String> = ["versatile", flow, "--model", &fixture("versatile/vd")]
        .map(String::from)
        .to_vec();
    for (flag, path) in [
        ("--vae", "tiny-sd/vae"),
        ("--tokenizer", "tiny-sd/tokenizer"),
        ("--optimus-weights", "versatile/optimus/optimus-vae.pth"),
        ("--optimus-vocab", "versatile/optimus/vocab"),
        ("--optimus-config", "versatile/optimus/config.json"),
    ] {
        args.extend([flag.to_string(), fixture(path)]);
    }
    args
}
