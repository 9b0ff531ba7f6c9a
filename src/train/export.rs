//! Writing a trained model as a diffusers folder (`save_pretrained`).

use std::path::Path;

use burn::prelude::*;
use burn::tensor::DType;
use serde_json::json;

use super::checkpoint::TrainState;
use super::diffusion::TextToImageModel;
use super::model::{ScenesModelConfig, scene_batch};
use crate::core::noise::{SeededNoise, noise_tensor};
use crate::core::weights::{save_config_json, save_safetensors, state_dict};
use crate::core::{Error, Result};
use crate::vae::AutoencoderKL;

/// The diffusers version the written configs name (the one the fixtures are made with).
const DIFFUSERS_VERSION: &str = "0.42.1";

/// The latent scaling factor of `vae` on `n` training scenes from `seed`: `1 / std` of the
/// posterior samples (how Stable Diffusion's 0.18215 was chosen), to five decimals.
///
/// # Errors
/// A failed rendering or noise draw.
pub fn fit_scaling_factor<B: Backend>(
    vae: &AutoencoderKL<B>,
    seed: u64,
    n: usize,
    device: &B::Device,
) -> Result<f64> {
    let (images, _) = scene_batch::<B>(seed, n, vae.config().sample_size, device)?;
    let posterior = vae.encode(images);
    let mut noise = SeededNoise::new(seed);
    let draw = noise_tensor::<B, 4>(&mut noise, posterior.mean.dims(), device, DType::F32)?;
    let z = posterior.sample(draw);
    let mean = z.clone().mean().into_scalar().elem::<f64>();
    let var = (z - mean).square().mean().into_scalar().elem::<f64>();
    if !(var.is_finite() && var > 0.0) {
        return Err(Error::invalid_input(
            "VAE",
            format!("latent variance {var} on the scenes"),
        ));
    }
    Ok((1e5 / var.sqrt()).round() / 1e5)
}

/// Writes `dir/config.json` and `dir/diffusion_pytorch_model.safetensors` of `vae` in `dtype`.
///
/// # Errors
/// Unwritable files.
pub fn export_vae<B: Backend>(vae: &AutoencoderKL<B>, dir: &Path, dtype: DType) -> Result<()> {
    save_config_json(
        &dir.join("config.json"),
        vae.config(),
        &[
            ("_class_name", json!("AutoencoderKL")),
            ("_diffusers_version", json!(DIFFUSERS_VERSION)),
        ],
    )?;
    save_safetensors(
        &dir.join("diffusion_pytorch_model.safetensors"),
        &state_dict(vae)?,
        dtype,
    )
}

/// Writes a Stable Diffusion pipeline folder: `model_index.json`, `scheduler/`, `tokenizer/`
/// (the files of `tokenizer_dir` copied), `text_encoder/`, `unet/` and `vae/`, weights in
/// `dtype`. [`StableDiffusion::from_pretrained`](crate::StableDiffusion::from_pretrained) and
/// diffusers' `StableDiffusionPipeline.from_pretrained` both load it.
///
/// # Errors
/// Unwritable files or an unreadable `tokenizer_dir`.
pub fn export_pipeline<B: Backend>(
    model: &TextToImageModel<B>,
    vae: &AutoencoderKL<B>,
    config: &ScenesModelConfig,
    tokenizer_dir: &Path,
    dir: &Path,
    dtype: DType,
) -> Result<()> {
    let version = ("_diffusers_version", json!(DIFFUSERS_VERSION));
    let index = json!({
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": DIFFUSERS_VERSION,
        "feature_extractor": [null, null],
        "image_encoder": [null, null],
        "requires_safety_checker": false,
        "safety_checker": [null, null],
        "scheduler": ["diffusers", config.scheduler.class_name.as_deref().unwrap_or("PNDMScheduler")],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    });
    save_config_json(&dir.join("model_index.json"), &index, &[])?;
    save_config_json(
        &dir.join("scheduler/scheduler_config.json"),
        &config.scheduler,
        std::slice::from_ref(&version),
    )?;

    let tokenizer = dir.join("tokenizer");
    std::fs::create_dir_all(&tokenizer).map_err(|e| Error::io(&tokenizer, e))?;
    for name in [
        "merges.txt",
        "special_tokens_map.json",
        "tokenizer_config.json",
        "vocab.json",
    ] {
        let from = tokenizer_dir.join(name);
        std::fs::copy(&from, tokenizer.join(name)).map_err(|e| Error::io(&from, e))?;
    }

    let mut text_config = serde_json::to_value(&config.text_encoder)
        .map_err(|e| Error::invalid_input("text encoder config", e.to_string()))?;
    if let Some(map) = text_config.as_object_mut() {
        map.insert("architectures".into(), json!(["CLIPTextModel"]));
        map.insert("model_type".into(), json!("clip_text_model"));
        map.insert("dtype".into(), json!(dtype_name(dtype)));
    }
    save_config_json(&dir.join("text_encoder/config.json"), &text_config, &[])?;
    save_safetensors(
        &dir.join("text_encoder/model.safetensors"),
        &state_dict(&model.text_encoder)?,
        dtype,
    )?;

    save_config_json(
        &dir.join("unet/config.json"),
        &config.unet,
        &[("_class_name", json!("UNet2DConditionModel")), version],
    )?;
    let mut unet = state_dict(&model.unet)?;
    if !config.unet.use_linear_projection {
        crate::core::weights::unsqueeze_conv_projections(
            &mut unet,
            &["proj_in.weight", "proj_out.weight"],
        );
    }
    save_safetensors(
        &dir.join("unet/diffusion_pytorch_model.safetensors"),
        &unet,
        dtype,
    )?;
    export_vae(vae, &dir.join("vae"), dtype)
}

/// Writes `dir/`[`TRAINING_STATE`](super::TRAINING_STATE): the step and settings a folder
/// was exported at, from which
/// [`TextToImageTrainer::from_pipeline`](super::TextToImageTrainer::from_pipeline) continues.
///
/// # Errors
/// An unwritable file.
pub fn save_training_state(dir: &Path, state: &TrainState) -> Result<()> {
    save_config_json(&dir.join(super::TRAINING_STATE), state, &[])
}

/// Reads `dir/`[`TRAINING_STATE`](super::TRAINING_STATE) (see [`save_training_state`]).
///
/// # Errors
/// A missing or invalid file, named.
pub fn read_training_state(dir: &Path) -> Result<TrainState> {
    let path = dir.join(super::TRAINING_STATE);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    serde_json::from_str(&text)
        .map_err(|e| Error::invalid_input(path.display().to_string(), e.to_string()))
}

fn dtype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::F16 => "float16",
        DType::BF16 => "bfloat16",
        _ => "float32",
    }
}
