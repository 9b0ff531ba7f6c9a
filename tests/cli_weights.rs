//! Damaged weight files through the program: a weight of the wrong dtype in each component of a
//! diffusers folder, and a single-file checkpoint that is cut short, missing a storage or
//! deflated. Each is one error line naming the file and the tensor, before any generation.

use std::path::Path;

use prompt_diffusion::core::testing::{retype_safetensors, rezip};

use crate::common::{assert_one_line_error, copy_dir, fixtures, run_cli};

fn txt2img(model: &str, output: &Path) -> Vec<String> {
    [
        "txt2img", "--model", model, "--prompt", "a fox", "--steps", "2", "--output",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([output.display().to_string()])
    .collect()
}

#[test]
fn a_weight_of_the_wrong_dtype_is_one_error_line() {
    for (component, file, key, dtype) in [
        (
            "unet",
            "diffusion_pytorch_model.safetensors",
            "conv_in.weight",
            safetensors::Dtype::I64,
        ),
        (
            "text_encoder",
            "model.safetensors",
            "text_model.embeddings.token_embedding.weight",
            safetensors::Dtype::BOOL,
        ),
        (
            "vae",
            "diffusion_pytorch_model.safetensors",
            "decoder.conv_out.weight",
            safetensors::Dtype::I64,
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("model");
        copy_dir(&fixtures().join("tiny-sd"), &model);
        let weights = model.join(component).join(file);
        retype_safetensors(&weights, &weights, key, dtype);
        let output = dir.path().join("out.png");
        let out = run_cli(txt2img(model.to_str().unwrap(), &output));
        let tensor = key.rsplit('.').nth(1).unwrap();
        let what = format!("{component}/{file} with {key} as {dtype:?}");
        assert_one_line_error(
            &what,
            &out,
            &[component, tensor, "where a float weight belongs"],
        );
        assert!(!output.exists(), "{what}: an image was written");
    }
}

#[test]
fn a_damaged_checkpoint_is_one_error_line() {
    let dir = tempfile::tempdir().unwrap();
    let original = fixtures().join("tiny-sd.ckpt");
    let bytes = std::fs::read(&original).unwrap();

    let partial = dir.path().join("partial.ckpt");
    std::fs::write(&partial, &bytes[..bytes.len() * 3 / 4]).unwrap();
    let missing = dir.path().join("missing.ckpt");
    rezip(&original, &missing, |name, bytes| {
        (name != "tiny-sd/data/5").then_some((bytes, zip::CompressionMethod::Stored))
    });
    let deflated = dir.path().join("deflated.ckpt");
    rezip(&original, &deflated, |name, bytes| {
        let method = if name.contains("/data/") {
            zip::CompressionMethod::Deflated
        } else {
            zip::CompressionMethod::Stored
        };
        Some((bytes, method))
    });

    for (path, needles) in [
        (&partial, vec!["partial.ckpt", "truncated"]),
        (
            &missing,
            vec!["missing.ckpt", "tiny-sd/data/5", "missing", "tensor `"],
        ),
        (&deflated, vec!["deflated.ckpt", "compressed"]),
    ] {
        let output = dir.path().join("out.png");
        let args = [
            "txt2img",
            "--checkpoint",
            path.to_str().unwrap(),
            "--prompt",
            "a fox",
            "--steps",
            "2",
            "--output",
            output.to_str().unwrap(),
        ];
        assert_one_line_error(&format!("{}", path.display()), &run_cli(args), &needles);
        assert!(!output.exists());
    }
}
