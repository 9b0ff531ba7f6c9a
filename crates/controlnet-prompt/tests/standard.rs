//! Standard (single-hint) `ControlNetModel` parity with diffusers on the fixtures of
//! `tools/fixtures/gen_controlnet.py`: diffusers folder and original `control_model.*` file,
//! conditioning scale, guess mode, BGR hints and global pooling.

use crate::common::{AssertResiduals, B, Io, controlnet_fixture};
use burn::prelude::*;
use prompt_diffusion_controlnet_prompt::{
    ChannelOrder, ControlNetConfig, ControlNetModel, ControlScales, UNetResiduals,
};
use prompt_diffusion_core::Error;
use prompt_diffusion_core::testing::{assert_close, max_abs_diff};
use prompt_diffusion_core::weights::{LoadOptions, Pretrained, TensorSource};

const IO: &str = "standard_io.safetensors";

fn config() -> ControlNetConfig {
    ControlNetConfig::from_file(controlnet_fixture("standard/config.json")).unwrap()
}

fn load(config: &ControlNetConfig, file: &str) -> ControlNetModel<B> {
    let source = TensorSource::open(controlnet_fixture(file)).unwrap();
    ControlNetModel::from_source(
        config,
        &source,
        &LoadOptions::default(),
        &Default::default(),
    )
    .unwrap()
}

fn folder_model(config: &ControlNetConfig) -> ControlNetModel<B> {
    load(config, "standard/diffusion_pytorch_model.safetensors")
}

fn run(model: &ControlNetModel<B>, io: &Io, scales: ControlScales) -> UNetResiduals<B> {
    model
        .forward(
            io.t("sample"),
            io.t("timestep"),
            io.t("context"),
            io.t("hint"),
            &scales,
        )
        .unwrap()
}

/// The residuals of `model` at `scales`, asserted within 1e-4 of the fixture's
/// `{prefix}down.{i}` and `{prefix}mid` (reported as `what`).
fn run_checked(
    model: &ControlNetModel<B>,
    io: &Io,
    scales: ControlScales,
    what: &str,
    prefix: &str,
) -> UNetResiduals<B> {
    let out = run(model, io, scales);
    io.assert_residuals(what, prefix, &out, 1e-4);
    out
}

#[test]
fn diffusers_folder_matches_the_reference() {
    let io = Io::open(controlnet_fixture(IO));
    let model = ControlNetModel::<B>::from_pretrained(
        controlnet_fixture("standard"),
        &LoadOptions::default(),
        &io.device,
    )
    .unwrap();
    assert!(model.config().use_linear_projection);
    run_checked(&model, &io, ControlScales::Uniform(0.8), "controlnet", "");
    let guess = ControlScales::GuessMode(0.7);
    run_checked(&model, &io, guess, "controlnet guess mode", "guess.");
}

#[test]
fn original_layout_matches_the_reference() {
    let io = Io::open(controlnet_fixture(IO));
    let config = config();
    let reference = run(&folder_model(&config), &io, ControlScales::Uniform(0.8));
    let model = load(&config, "standard-ldm.safetensors");
    let what = "controlnet (original layout)";
    let out = run_checked(&model, &io, ControlScales::Uniform(0.8), what, "");
    let mid = |r: &UNetResiduals<B>| r.mid.clone().unwrap();
    assert_eq!(max_abs_diff(mid(&out), mid(&reference)), 0.0);
}

#[test]
fn bgr_hints_are_flipped() {
    let io = Io::open(controlnet_fixture(IO));
    let mut config = config();
    config.controlnet_conditioning_channel_order = ChannelOrder::Bgr;
    let model = folder_model(&config);
    run_checked(
        &model,
        &io,
        ControlScales::Uniform(1.0),
        "controlnet bgr",
        "bgr.",
    );
}

#[test]
fn global_pooling_ignores_guess_mode_and_broadcasts_means() {
    let io = Io::open(controlnet_fixture(IO));
    let mut config = config();
    config.global_pool_conditions = true;
    let model = folder_model(&config);
    let out = run(&model, &io, ControlScales::GuessMode(1.0));
    let check = |what: String, r: Tensor<B, 4>, key: String| {
        // diffusers returns [b, c, 1, 1] means; here they come expanded to the skip's size so
        // the UNet adds them as it would broadcast them.
        let dims = r.dims();
        let reference: Tensor<B, 4> = io.t(&key);
        assert_close(&what, r, reference.expand(dims), 1e-4);
    };
    for (i, r) in out.down.iter().enumerate() {
        check(
            format!("pooled down[{i}]"),
            r.clone().unwrap(),
            format!("pool.down.{i}"),
        );
    }
    check("pooled mid".into(), out.mid.unwrap(), "pool.mid".into());
}

#[test]
fn guess_mode_scales_the_unscaled_residuals() {
    let io = Io::open(controlnet_fixture(IO));
    let model = folder_model(&config());
    let plain = run(&model, &io, ControlScales::Uniform(1.0));
    let guess = run(&model, &io, ControlScales::GuessMode(1.0));
    let n = plain.down.len() + 1;
    assert_eq!(n, 7);
    for (i, (p, g)) in plain.down.iter().zip(&guess.down).enumerate() {
        let expected = 10f32.powf(-1.0 + i as f32 / (n - 1) as f32);
        let scaled = p.clone().unwrap() * expected;
        assert!(
            max_abs_diff(scaled, g.clone().unwrap()) < 1e-6,
            "residual {i}"
        );
    }
    // The mid residual gets 1.0 (the last scale).
    assert_eq!(
        max_abs_diff(plain.mid.clone().unwrap(), guess.mid.clone().unwrap()),
        0.0
    );
}

#[test]
fn bad_hints_are_typed_errors() {
    let io = Io::open(controlnet_fixture(IO));
    let model = folder_model(&config());
    let sample: Tensor<B, 4> = io.t("sample");
    let [batch, _, h, w] = sample.dims();
    for dims in [
        [batch, 1, 8 * h, 8 * w],
        [batch, 3, 4 * h, 4 * w],
        [batch, 3, 8 * h, 8 * w - 1],
        [batch + 1, 3, 8 * h, 8 * w],
    ] {
        let err = model
            .forward(
                sample.clone(),
                io.t("timestep"),
                io.t("context"),
                Tensor::zeros(dims, &io.device),
                &ControlScales::Uniform(1.0),
            )
            .unwrap_err();
        assert!(
            matches!(&err, Error::Shape { key, .. } if key == "controlnet_cond"),
            "{dims:?}: {err}"
        );
    }
}
