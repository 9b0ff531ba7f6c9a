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

/// The UNet of the diffusers folder `fixtures/{folder}`.
fn folder_unet(folder: &str) -> UNet2DConditionModel<B> {
    UNet2DConditionModel::from_pretrained(
        fixtures().join(folder),
        &LoadOptions::default(),
        &Default::default(),
    )
    .unwrap()
}

/// The tiny SD UNet and its fixture `fixtures/unet/sd1.safetensors`.
fn sd1() -> (Fixture, UNet2DConditionModel<B>) {
    (unet_fixture("sd1.safetensors"), folder_unet("tiny-sd/unet"))
}

/// The config and weights of the tiny SD UNet's folder.
fn tiny_sd_source() -> (UNet2DConditionConfig, TensorSource) {
    folder_source(&fixtures().join("tiny-sd/unet"))
}

/// The fixture's `sample`, `timestep` and `context`.
fn inputs(io: &Fixture) -> (Tensor<B, 4>, Tensor<B, 1>, Tensor<B, 3>) {
    (io.t("sample"), io.t("timestep"), io.t("context"))
}

/// The UNet's output for the fixture's [`inputs`], through `forward_with_residuals` when
/// `residuals` are given and `forward` otherwise.
fn predict(
    unet: &UNet2DConditionModel<B>,
    io: &Fixture,
    residuals: Option<&UNetResiduals<B>>,
) -> Tensor<B, 4> {
    let (sample, timestep, context) = inputs(io);
    match residuals {
        Some(residuals) => unet.forward_with_residuals(sample, timestep, context, residuals),
        None => unet.forward(sample, timestep, context),
    }
    .unwrap()
}

#[test]
fn sd1_unet_matches_diffusers() {
    let (io, unet) = sd1();
    assert_close("sd1 unet", predict(&unet, &io, None), io.t("out"), 1e-4);
}

#[test]
fn sd1_unet_with_residuals_matches_diffusers() {
    let (io, unet) = sd1();
    let skips = unet.config().num_skips();
    assert_eq!(skips, 9);
    let down = (0..skips).map(|i| io.t(&format!("down.{i}"))).collect();
    let residuals = UNetResiduals::new(down, io.t("mid"));
    let out = predict(&unet, &io, Some(&residuals));
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
    let unet = folder_unet("unet/sd2");
    assert!(unet.config().use_linear_projection);
    assert_close("sd2 unet", predict(&unet, &io, None), io.t("out"), 1e-4);
}

#[test]
fn single_file_checkpoints_give_identical_outputs() {
    let (io, from_folder) = sd1();
    let reference = predict(&from_folder, &io, None);
    let (config, _) = tiny_sd_source();
    for file in ["tiny-sd.safetensors", "tiny-sd.ckpt"] {
        let source = TensorSource::open(fixtures().join(file))
            .unwrap()
            .strip_prefix("model.diffusion_model.");
        let unet = load_default::<UNet2DConditionModel<B>>(&config, &source).unwrap();
        let out = predict(&unet, &io, None);
        assert_eq!(max_abs_diff(out, reference.clone()), 0.0, "{file}");
    }
}

#[test]
fn missing_unexpected_and_misshaped_tensors_are_named() {
    let (config, source) = tiny_sd_source();
    let key = "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight";
    let bogus = "down_blocks.9.bogus.weight";

    let mut missing = source.clone();
    assert!(missing.remove(key));
    let mut extra = source.clone();
    extra.insert_data(bogus, TensorData::new(vec![0f32; 2], [2]));
    let mut wrong = config.clone();
    wrong.cross_attention_dim = prompt_diffusion_core::config::OneOrMany::One(8);

    // Each damage, with the kind of mismatch and the tensor the message must name.
    for (config, source, kind, tensor) in [
        (&config, &missing, "missing", key),
        (&config, &extra, "unexpected", bogus),
        (&wrong, &source, "wrong shape", "attn2.to_k.weight"),
    ] {
        let msg = weights_error::<UNet2DConditionModel<B>>(config, source);
        assert!(msg.contains(kind) && msg.contains(tensor), "{msg}");
    }
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
    let (io, unet) = sd1();
    let (sample, t, ctx) = inputs(&io);

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
    let (io, unet) = sd1();
    let (sample, _, ctx) = inputs(&io);
    let forward = |timesteps: &[f32]| {
        let t = Tensor::<B, 1>::from_floats(timesteps, &io.device);
        unet.forward(sample.clone(), t, ctx.clone()).unwrap()
    };
    let (one, both) = (forward(&[981.0]), forward(&[981.0, 981.0]));
    assert_eq!(max_abs_diff(one, both), 0.0);
}
