//! UNet parity with diffusers on the fixtures of `tools/fixtures/gen_unet.py`.

use std::path::PathBuf;

use burn::prelude::*;
use burn::tensor::TensorData;
use prompt_diffusion_core::Error;
use prompt_diffusion_core::testing::{
    Fixture, TestBackend, assert_close, folder_source, load_default, max_abs_diff, weights_error,
};
use prompt_diffusion_core::weights::{LoadOptions, Pretrained, TensorSource};
use prompt_diffusion_unet::{UNet2DConditionConfig, UNet2DConditionModel, UNetResiduals};

type B = TestBackend;

fn fixtures() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures"))
}

/// A fixture file of `fixtures/unet/`.
fn unet_fixture(name: &str) -> Fixture {
    Fixture::open(fixtures().join("unet").join(name))
}

fn tiny_sd_unet() -> UNet2DConditionModel<B> {
    UNet2DConditionModel::from_pretrained(
        fixtures().join("tiny-sd/unet"),
        &LoadOptions::default(),
        &Default::default(),
    )
    .unwrap()
}

#[test]
fn sd1_unet_matches_diffusers() {
    let io = unet_fixture("sd1.safetensors");
    let unet = tiny_sd_unet();
    let out = unet
        .forward(io.t("sample"), io.t("timestep"), io.t("context"))
        .unwrap();
    assert_close("sd1 unet", out, io.t("out"), 1e-4);
}

#[test]
fn sd1_unet_with_residuals_matches_diffusers() {
    let io = unet_fixture("sd1.safetensors");
    let unet = tiny_sd_unet();
    let skips = unet.config().num_skips();
    assert_eq!(skips, 9);
    let down = (0..skips).map(|i| io.t(&format!("down.{i}"))).collect();
    let residuals = UNetResiduals::new(down, io.t("mid"));
    let out = unet
        .forward_with_residuals(
            io.t("sample"),
            io.t("timestep"),
            io.t("context"),
            &residuals,
        )
        .unwrap();
    assert_close(
        "sd1 unet + residuals",
        out.clone(),
        io.t("out_residuals"),
        1e-4,
    );
    // The residuals matter: without them the output differs.
    assert!(max_abs_diff(out, io.t("out")) > 1e-2);
}

#[test]
fn sd2_unet_matches_diffusers() {
    let io = unet_fixture("sd2.safetensors");
    let unet = UNet2DConditionModel::<B>::from_pretrained(
        fixtures().join("unet/sd2"),
        &LoadOptions::default(),
        &io.device,
    )
    .unwrap();
    assert!(unet.config().use_linear_projection);
    let out = unet
        .forward(io.t("sample"), io.t("timestep"), io.t("context"))
        .unwrap();
    assert_close("sd2 unet", out, io.t("out"), 1e-4);
}

#[test]
fn single_file_checkpoints_give_identical_outputs() {
    let io = unet_fixture("sd1.safetensors");
    let reference = tiny_sd_unet()
        .forward(io.t("sample"), io.t("timestep"), io.t("context"))
        .unwrap();
    let config =
        UNet2DConditionConfig::from_file(fixtures().join("tiny-sd/unet/config.json")).unwrap();
    for file in ["tiny-sd.safetensors", "tiny-sd.ckpt"] {
        let source = TensorSource::open(fixtures().join(file))
            .unwrap()
            .strip_prefix("model.diffusion_model.");
        let unet = load_default::<UNet2DConditionModel<B>>(&config, &source).unwrap();
        let out = unet
            .forward(io.t("sample"), io.t("timestep"), io.t("context"))
            .unwrap();
        assert_eq!(max_abs_diff(out, reference.clone()), 0.0, "{file}");
    }
}

fn tiny_sd_source() -> (UNet2DConditionConfig, TensorSource) {
    folder_source(&fixtures().join("tiny-sd/unet"))
}

fn load_error(config: &UNet2DConditionConfig, source: &TensorSource) -> String {
    weights_error::<UNet2DConditionModel<B>>(config, source)
}

#[test]
fn missing_unexpected_and_misshaped_tensors_are_named() {
    let (config, source) = tiny_sd_source();
    let key = "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight";

    let mut missing = source.clone();
    assert!(missing.remove(key));
    let msg = load_error(&config, &missing);
    assert!(msg.contains("missing") && msg.contains(key), "{msg}");

    let mut extra = source.clone();
    extra.insert_data(
        "down_blocks.9.bogus.weight",
        TensorData::new(vec![0f32; 2], [2]),
    );
    let msg = load_error(&config, &extra);
    assert!(
        msg.contains("unexpected") && msg.contains("down_blocks.9.bogus.weight"),
        "{msg}"
    );

    let mut wrong = config.clone();
    wrong.cross_attention_dim = prompt_diffusion_core::config::OneOrMany::One(8);
    let msg = load_error(&wrong, &source);
    assert!(
        msg.contains("wrong shape") && msg.contains("attn2.to_k.weight"),
        "{msg}"
    );
}

#[test]
fn invalid_configs_name_the_field() {
    let (config, _) = tiny_sd_source();
    let mut bad = config.clone();
    bad.attention_head_dim = prompt_diffusion_core::config::OneOrMany::Many(vec![2, 2]);
    let err = UNet2DConditionModel::<B>::new(&bad, &Default::default()).unwrap_err();
    assert!(err.to_string().contains("attention_head_dim"), "{err}");

    let mut bad = config.clone();
    bad.down_block_types.pop();
    let err = bad.validate().unwrap_err();
    assert!(err.to_string().contains("down_block_types"), "{err}");

    let mut bad = config;
    bad.class_embed_type = Some("timestep".into());
    assert!(matches!(bad.validate(), Err(Error::Unsupported(_))));

    let err = prompt_diffusion_core::config::parse_config::<UNet2DConditionConfig>(
        r#"{"down_block_types": ["NoSuchBlock2D"]}"#,
    )
    .unwrap_err();
    assert!(err.to_string().contains("down_block_types"), "{err}");
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let io = unet_fixture("sd1.safetensors");
    let unet = tiny_sd_unet();
    let sample: Tensor<B, 4> = io.t("sample");
    let t: Tensor<B, 1> = io.t("timestep");
    let ctx: Tensor<B, 3> = io.t("context");

    let wrong_channels = Tensor::<B, 4>::zeros([2, 3, 16, 16], &io.device);
    assert!(matches!(
        unet.forward(wrong_channels, t.clone(), ctx.clone()),
        Err(Error::Shape { .. })
    ));
    let wrong_ctx = Tensor::<B, 3>::zeros([2, 77, 5], &io.device);
    assert!(matches!(
        unet.forward(sample.clone(), t.clone(), wrong_ctx),
        Err(Error::Shape { .. })
    ));
    let wrong_t = Tensor::<B, 1>::zeros([3], &io.device);
    assert!(matches!(
        unet.forward(sample.clone(), wrong_t, ctx.clone()),
        Err(Error::Shape { .. })
    ));
    let residuals = UNetResiduals {
        down: vec![Some(Tensor::zeros([2, 16, 8, 8], &io.device))],
        mid: None,
    };
    let err = unet
        .forward_with_residuals(sample, t, ctx, &residuals)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("down_block_additional_residuals[0]"),
        "{err}"
    );
}

#[test]
fn one_timestep_broadcasts_over_the_batch() {
    let io = unet_fixture("sd1.safetensors");
    let unet = tiny_sd_unet();
    let sample: Tensor<B, 4> = io.t("sample");
    let ctx: Tensor<B, 3> = io.t("context");
    let t = Tensor::<B, 1>::from_floats([981.0], &io.device);
    let both = Tensor::<B, 1>::from_floats([981.0, 981.0], &io.device);
    let a = unet.forward(sample.clone(), t, ctx.clone()).unwrap();
    let b = unet.forward(sample, both, ctx).unwrap();
    assert_eq!(max_abs_diff(a, b), 0.0);
}
