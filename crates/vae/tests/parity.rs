//! VAE parity with diffusers on the fixtures of `tools/fixtures/gen_vae.py`.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use prompt_diffusion_core::Error;
use prompt_diffusion_core::testing::{TestBackend, assert_close, load_default, max_abs_diff};
use prompt_diffusion_core::weights::{LoadOptions, Pretrained, TensorSource};
use prompt_diffusion_vae::{AutoencoderKL, AutoencoderKLConfig};

type B = TestBackend;

fn fixtures() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures"))
}

fn io(name: &str) -> TensorSource {
    TensorSource::open(fixtures().join("vae").join(name)).unwrap()
}

fn t<const D: usize>(io: &TensorSource, key: &str) -> Tensor<B, D> {
    io.tensor(key, &Default::default(), None).unwrap()
}

fn load(dir: &Path) -> AutoencoderKL<B> {
    AutoencoderKL::from_pretrained(dir, &LoadOptions::default(), &Default::default()).unwrap()
}

fn check(vae: &AutoencoderKL<B>, io: &TensorSource, what: &str) {
    let posterior = vae.encode(t(io, "image"));
    assert_close(
        &format!("{what} mean"),
        posterior.mean.clone(),
        t(io, "mean"),
        1e-4,
    );
    assert_close(
        &format!("{what} logvar"),
        posterior.logvar.clone(),
        t(io, "logvar"),
        1e-4,
    );
    assert_close(
        &format!("{what} sample"),
        posterior.sample(t(io, "noise")),
        t(io, "sample"),
        1e-4,
    );
    assert_close(
        &format!("{what} decode"),
        vae.decode(t(io, "latent")),
        t(io, "decoded"),
        1e-4,
    );
}

#[test]
fn tiny_vae_matches_diffusers() {
    let vae = load(&fixtures().join("tiny-sd/vae"));
    assert_eq!(vae.scaling_factor(), 0.18215);
    check(&vae, &io("tiny.safetensors"), "tiny");
}

#[test]
fn legacy_attention_names_load_to_the_same_model() {
    check(
        &load(&fixtures().join("vae/legacy")),
        &io("tiny.safetensors"),
        "legacy",
    );
}

#[test]
fn vae_without_attention_or_quant_convs_matches_diffusers() {
    let vae = load(&fixtures().join("vae/small"));
    assert!(vae.quant_conv.is_none() && vae.post_quant_conv.is_none());
    check(&vae, &io("small.safetensors"), "small");
}

#[test]
fn single_file_checkpoints_give_identical_outputs() {
    let io = io("tiny.safetensors");
    let reference = load(&fixtures().join("tiny-sd/vae")).decode(t(&io, "latent"));
    let config =
        AutoencoderKLConfig::from_file(fixtures().join("tiny-sd/vae/config.json")).unwrap();
    for file in ["tiny-sd.safetensors", "tiny-sd.ckpt"] {
        let source = TensorSource::open(fixtures().join(file))
            .unwrap()
            .strip_prefix("first_stage_model.");
        let vae = load_default::<AutoencoderKL<B>>(&config, &source).unwrap();
        assert_eq!(
            max_abs_diff(vae.decode(t(&io, "latent")), reference.clone()),
            0.0,
            "{file}"
        );
        check(&vae, &io, file);
    }
}

#[test]
fn mismatched_weights_and_configs_are_named() {
    let dir = fixtures().join("tiny-sd/vae");
    let config = AutoencoderKLConfig::from_file(dir.join("config.json")).unwrap();
    let source = TensorSource::open(dir.join("diffusion_pytorch_model.safetensors")).unwrap();
    let mut missing = source.clone();
    missing.remove("decoder.mid_block.attentions.0.to_v.bias");
    let err = load_default::<AutoencoderKL<B>>(&config, &missing).unwrap_err();
    assert!(matches!(err, Error::Weights(_)));
    assert!(
        err.to_string()
            .contains("decoder.mid_block.attentions.0.to_v.bias"),
        "{err}"
    );

    let mut wrong = config.clone();
    wrong.latent_channels = 8;
    let err = load_default::<AutoencoderKL<B>>(&wrong, &source).unwrap_err();
    assert!(err.to_string().contains("encoder.conv_out.weight"), "{err}");

    let mut bad = config;
    bad.up_block_types.pop();
    assert!(
        bad.validate()
            .unwrap_err()
            .to_string()
            .contains("up_block_types")
    );
}
