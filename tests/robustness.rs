//! Hostile input: configs that disagree with their bounds or their weights, generations that
//! cannot fit in memory, and NaN weights or latents — each a one-line typed error, never a
//! panic, an allocation of the size asked for, or a black image.

use std::path::{Path, PathBuf};

use burn::tensor::TensorData;
use prompt_diffusion::core::Error;
use prompt_diffusion::core::memory::MemoryLimit;
use prompt_diffusion::core::progress::NoProgress;
use prompt_diffusion::{Generation, ModelOptions, StableDiffusion};
use serde_json::{Value, json};

use crate::common::{B, assert_one_line_error, copy_dir, fixtures, run_cli};

/// A copy of `fixtures/tiny-sd` in a temporary folder.
fn tiny_sd_copy() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tiny-sd");
    copy_dir(&fixtures().join("tiny-sd"), &dir);
    (tmp, dir)
}

/// Sets `field` of the JSON config `file` (relative to `dir`) to `value`.
fn set_config(dir: &Path, file: &str, field: &str, value: Value) {
    let path = dir.join(file);
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config[field] = value;
    std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
}

fn load(dir: &Path) -> Result<StableDiffusion<B>, Error> {
    StableDiffusion::<B>::from_pretrained(dir, &ModelOptions::default(), &Default::default())
}

fn one_line(err: &Error) -> String {
    let message = err.to_string();
    assert_eq!(message.lines().count(), 1, "{message}");
    message
}

/// Loads the copy with one config field changed and returns the error.
fn load_with(file: &str, field: &str, value: Value) -> Error {
    let (_tmp, dir) = tiny_sd_copy();
    set_config(&dir, file, field, value);
    load(&dir).expect_err("the edited config must be refused")
}

#[test]
fn out_of_bounds_configs_are_config_errors_naming_file_and_field() {
    let cases = [
        (
            "unet/config.json",
            "block_out_channels",
            json!([1_000_000_000u64, 32, 32]),
            "block_out_channels[0]",
        ),
        (
            "unet/config.json",
            "layers_per_block",
            json!(1_000_000_000u64),
            "layers_per_block[0]",
        ),
        (
            "unet/config.json",
            "sample_size",
            json!(1_000_000_000u64),
            "sample_size",
        ),
        (
            "unet/config.json",
            "norm_num_groups",
            json!(0),
            "norm_num_groups",
        ),
        (
            "text_encoder/config.json",
            "hidden_size",
            json!(1_000_000_000_000u64),
            "hidden_size",
        ),
        (
            "text_encoder/config.json",
            "num_hidden_layers",
            json!(1_000_000_000u64),
            "num_hidden_layers",
        ),
        (
            "vae/config.json",
            "norm_num_groups",
            json!(0),
            "norm_num_groups",
        ),
        (
            "vae/config.json",
            "layers_per_block",
            json!(1_000_000_000u64),
            "layers_per_block",
        ),
        (
            "vae/config.json",
            "block_out_channels",
            json!([8, 16, 16, 1_000_000_000u64]),
            "block_out_channels[3]",
        ),
    ];
    for (file, field, value, named) in cases {
        let err = load_with(file, field, value.clone());
        let message = one_line(&err);
        match &err {
            Error::Config {
                origin, field: f, ..
            } => {
                assert_eq!(f, named, "{file} {field}={value}: {message}");
                assert!(
                    origin.as_ref().is_some_and(|p| p.ends_with(file)),
                    "{file} {field}={value}: {message}"
                );
            }
            other => panic!("{file} {field}={value}: expected a config error, got {other}"),
        }
    }
}

#[test]
fn configs_that_disagree_with_the_weight_header_are_refused_before_allocation() {
    let cases = [
        // (file, field, value, key named, config field named)
        (
            "unet/config.json",
            "block_out_channels",
            json!([32, 32, 32]),
            "conv_in.weight",
            "block_out_channels[0] = 32",
        ),
        (
            "unet/config.json",
            "layers_per_block",
            json!(3),
            "down_blocks.0.resnets.*.conv1.weight",
            "layers_per_block[0] = 3",
        ),
        (
            "unet/config.json",
            "in_channels",
            json!(9),
            "conv_in.weight",
            "in_channels = 9",
        ),
        (
            "text_encoder/config.json",
            "vocab_size",
            json!(1000),
            "text_model.embeddings.token_embedding.weight",
            "vocab_size = 1000",
        ),
        (
            "text_encoder/config.json",
            "num_hidden_layers",
            json!(3),
            "text_model.encoder.layers.*.self_attn.q_proj.weight",
            "num_hidden_layers = 3",
        ),
        (
            "text_encoder/config.json",
            "hidden_size",
            json!(32),
            "text_model.embeddings.token_embedding.weight",
            "hidden_size = 32",
        ),
        (
            "vae/config.json",
            "block_out_channels",
            json!([16, 16, 16, 16]),
            "encoder.conv_in.weight",
            "block_out_channels[0] = 16",
        ),
        (
            "vae/config.json",
            "layers_per_block",
            json!(1),
            "encoder.down_blocks.0.resnets.*.conv1.weight",
            "layers_per_block = 1",
        ),
    ];
    for (file, field, value, key, named) in cases {
        let err = load_with(file, field, value.clone());
        let message = one_line(&err);
        match &err {
            Error::ConfigMismatch(mismatch) => {
                assert_eq!(mismatch.key, key, "{file} {field}={value}: {message}");
                assert_eq!(mismatch.field, named, "{file} {field}={value}: {message}");
                assert!(mismatch.file.ends_with(".safetensors"), "{message}");
                assert_ne!(mismatch.expected, mismatch.found, "{message}");
            }
            other => panic!("{file} {field}={value}: expected a mismatch, got {other}"),
        }
    }
}

#[test]
fn a_generation_over_the_memory_limit_fails_before_allocating() {
    let options = ModelOptions::default().with_memory_limit(MemoryLimit::Bytes(1 << 30));
    let sd = StableDiffusion::<B>::from_pretrained(
        fixtures().join("tiny-sd"),
        &options,
        &Default::default(),
    )
    .unwrap();
    let generation = Generation::new("a fox").with_steps(1).with_size(2048, 2048);
    let err = sd.text_to_image(&generation, &mut NoProgress).unwrap_err();
    let message = one_line(&err);
    assert!(matches!(err, Error::OutOfMemory { .. }), "{message}");
    assert!(
        message.contains("2048×2048") && message.contains("1.0 GiB"),
        "{message}"
    );
    // A small generation fits the same limit.
    sd.check_memory(64, 64, 1, true, 0).unwrap();
}

#[test]
fn a_folder_generation_over_the_limit_is_refused_before_loading() {
    // Only the configs and the weight-file headers are read: no model is built.
    let options = ModelOptions::default().with_memory_limit(MemoryLimit::Bytes(1 << 30));
    let dir = fixtures().join("tiny-sd");
    let device = Default::default();
    let huge = Generation::new("a fox").with_size(8192, 8192);
    let err = prompt_diffusion::pipelines::memory::check_folder::<B>(
        &dir, &options, &huge, None, &device,
    )
    .unwrap_err();
    let message = one_line(&err);
    assert!(matches!(err, Error::OutOfMemory { .. }), "{message}");
    assert!(message.contains("8192×8192"), "{message}");
    // An img2img run takes its size from the init image.
    let err = prompt_diffusion::pipelines::memory::check_folder::<B>(
        &dir,
        &options,
        &Generation::new("a fox"),
        Some((8000, 8000)),
        &device,
    )
    .unwrap_err();
    assert!(one_line(&err).contains("8000×8000"), "{}", one_line(&err));
    // The model's own size fits.
    let small = Generation::new("a fox");
    prompt_diffusion::pipelines::memory::check_folder::<B>(&dir, &options, &small, None, &device)
        .unwrap();
}

#[test]
fn cli_refuses_a_generation_over_max_memory() {
    let out = run_cli([
        "txt2img",
        "--model",
        &fixtures().join("tiny-sd").display().to_string(),
        "--prompt",
        "a fox",
        "--steps",
        "1",
        "--seed",
        "1",
        "--width",
        "4096",
        "--height",
        "4096",
        "--max-memory",
        "1GiB",
        "--output",
        &std::env::temp_dir()
            .join("prompt-diffusion-never-written.png")
            .display()
            .to_string(),
    ]);
    assert_one_line_error(
        "txt2img over --max-memory",
        &out,
        &["memory limit", "1.0 GiB"],
    );
    let out = run_cli([
        "txt2img",
        "--model",
        "x",
        "--prompt",
        "p",
        "--max-memory",
        "8 parsecs",
    ]);
    assert!(!out.status.success());
}

/// Rewrites the f16 safetensors file `path` with `key`'s first element set to NaN.
fn poison(path: &Path, key: &str) {
    let bytes = std::fs::read(path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = file
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            (
                name.to_string(),
                view.dtype(),
                view.shape().to_vec(),
                view.data().to_vec(),
            )
        })
        .collect();
    let target = tensors.iter_mut().find(|t| t.0 == key).unwrap();
    assert_eq!(target.1, safetensors::Dtype::F16);
    // f16 NaN: 0x7E00, little-endian.
    target.3[..2].copy_from_slice(&[0x00, 0x7E]);
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(name, dtype, shape, data)| {
            let view = safetensors::tensor::TensorView::new(*dtype, shape.clone(), data).unwrap();
            (name.clone(), view)
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

#[test]
fn nan_weights_are_a_typed_error_naming_where() {
    let (_tmp, dir) = tiny_sd_copy();
    poison(
        &dir.join("unet/diffusion_pytorch_model.safetensors"),
        "conv_in.bias",
    );
    let sd = load(&dir).unwrap();
    let generation = Generation::new("a fox").with_steps(2).with_size(64, 64);
    let err = sd.text_to_image(&generation, &mut NoProgress).unwrap_err();
    let message = one_line(&err);
    assert!(matches!(err, Error::NonFinite { .. }), "{message}");
    assert!(message.contains("after denoising step 1"), "{message}");
    assert!(message.contains("f32"), "{message}");

    let out = run_cli([
        "txt2img",
        "--model",
        &dir.display().to_string(),
        "--prompt",
        "a fox",
        "--steps",
        "2",
        "--seed",
        "1",
        "--width",
        "64",
        "--height",
        "64",
        "--output",
        &dir.join("out.png").display().to_string(),
    ]);
    assert_one_line_error(
        "txt2img with a NaN weight",
        &out,
        &["NaN", "denoising step 1"],
    );
    assert!(!dir.join("out.png").exists(), "no image is written");

    let (_tmp, dir) = tiny_sd_copy();
    poison(
        &dir.join("vae/diffusion_pytorch_model.safetensors"),
        "decoder.conv_out.bias",
    );
    let sd = load(&dir).unwrap();
    let err = sd.text_to_image(&generation, &mut NoProgress).unwrap_err();
    let message = one_line(&err);
    assert!(message.contains("in the VAE decode"), "{message}");
}

#[test]
fn nan_initial_latents_are_a_typed_error() {
    let sd = load(&fixtures().join("tiny-sd")).unwrap();
    let mut values = vec![0.5f32; 4 * 8 * 8];
    values[7] = f32::NAN;
    let generation = Generation::new("a fox")
        .with_steps(2)
        .with_size(64, 64)
        .with_latents(TensorData::new(values, [1, 4, 8, 8]));
    let err = sd.text_to_image(&generation, &mut NoProgress).unwrap_err();
    let message = one_line(&err);
    assert!(
        matches!(err, Error::NonFinite { .. } | Error::InvalidInput { .. }),
        "{message}"
    );
    assert!(message.contains("latents"), "{message}");
}
