//! Prompt Diffusion ControlNet parity with the reference (diffusers' `ControlNetModel` plus the
//! query encoder) on the fixtures of `tools/fixtures/gen_controlnet.py`, in both checkpoint
//! layouts, and the fine-tuned UNet with the residuals.

use crate::common::{AssertResiduals, B, Io, controlnet_fixture, fixtures};
use burn::prelude::*;
use prompt_diffusion_controlnet_prompt::{
    ControlNetConfig, ControlScales, PromptDiffusionControlNet, PromptDiffusionDenoiser,
};
use prompt_diffusion_core::Error;
use prompt_diffusion_core::testing::{TestDevice, assert_close, max_abs_diff};
use prompt_diffusion_core::weights::{LoadOptions, Pretrained, TensorSource};
use prompt_diffusion_unet::UNet2DConditionModel;

const IO: &str = "prompt_diffusion_io.safetensors";

fn folder_model() -> PromptDiffusionControlNet<B> {
    PromptDiffusionControlNet::from_pretrained(
        controlnet_fixture("prompt-diffusion"),
        &LoadOptions::default(),
        &Default::default(),
    )
    .unwrap()
}

fn folder_config() -> ControlNetConfig {
    ControlNetConfig::from_file(controlnet_fixture("prompt-diffusion/config.json")).unwrap()
}

/// A model `load`ed (a `from_single_file`) from `checkpoint` with the folder's config and the
/// default options.
fn from_single_file<M>(
    load: impl FnOnce(
        &ControlNetConfig,
        &TensorSource,
        &LoadOptions,
        &TestDevice,
    ) -> prompt_diffusion_core::Result<M>,
    checkpoint: &TensorSource,
) -> prompt_diffusion_core::Result<M> {
    load(
        &folder_config(),
        checkpoint,
        &LoadOptions::default(),
        &Default::default(),
    )
}

/// `forward` (the ControlNet's or the denoiser's) of `model` on the fixture's inputs.
fn forward_on<M, T>(
    forward: impl FnOnce(
        &M,
        Tensor<B, 4>,
        Tensor<B, 1>,
        Tensor<B, 3>,
        Tensor<B, 4>,
        Tensor<B, 4>,
        &ControlScales,
    ) -> prompt_diffusion_core::Result<T>,
    model: &M,
    io: &Io,
    scales: &ControlScales,
) -> T {
    let (sample, timestep, context) = (io.t("sample"), io.t("timestep"), io.t("context"));
    let (pair, query) = (io.t("pair"), io.t("query"));
    forward(model, sample, timestep, context, pair, query, scales).unwrap()
}

fn residuals(
    model: &PromptDiffusionControlNet<B>,
    io: &Io,
    scales: &ControlScales,
) -> prompt_diffusion_controlnet_prompt::UNetResiduals<B> {
    forward_on(PromptDiffusionControlNet::forward, model, io, scales)
}

#[test]
fn diffusers_layout_matches_the_reference() {
    let io = Io::open(controlnet_fixture(IO));
    let model = folder_model();
    assert_eq!(model.config().conditioning_channels, 6);
    let out = residuals(&model, &io, &ControlScales::Uniform(1.0));
    io.assert_residuals("prompt diffusion (diffusers)", "", &out, 1e-4);
}

#[test]
fn guess_mode_matches_diffusers_logspace_scaling() {
    let io = Io::open(controlnet_fixture(IO));
    let model = folder_model();
    let out = residuals(&model, &io, &ControlScales::GuessMode(0.9));
    io.assert_residuals("prompt diffusion guess mode", "guess.", &out, 1e-4);

    // Explicit scales equal to the schedule give the same residuals; the original repository's
    // schedule differs from diffusers' (0.825^12 ≈ 0.0994 vs 0.1 for the first residual).
    let n = model.config().num_down_residuals() + 1;
    let explicit = ControlScales::PerResidual(ControlScales::GuessMode(0.9).resolve(n).unwrap());
    let same = residuals(&model, &io, &explicit);
    let first =
        |r: &prompt_diffusion_controlnet_prompt::UNetResiduals<B>| r.down[0].clone().unwrap();
    assert_eq!(max_abs_diff(first(&same), first(&out)), 0.0);
    let ldm = residuals(&model, &io, &ControlScales::LdmGuessMode(0.9));
    assert!(max_abs_diff(first(&ldm), first(&out)) > 0.0);
}

#[test]
fn original_single_files_match_the_reference() {
    let io = Io::open(controlnet_fixture(IO));
    let reference = residuals(&folder_model(), &io, &ControlScales::Uniform(1.0));
    for file in [
        "tiny-prompt-diffusion.safetensors",
        "tiny-prompt-diffusion.ckpt",
    ] {
        let source = TensorSource::open(controlnet_fixture(file)).unwrap();
        // Original files carry no config: the tiny architecture comes from the folder's.
        let model =
            from_single_file(PromptDiffusionControlNet::<B>::from_single_file, &source).unwrap();
        let out = residuals(&model, &io, &ControlScales::Uniform(1.0));
        io.assert_residuals(file, "", &out, 1e-4);
        for (a, b) in out.down.iter().zip(&reference.down) {
            assert_eq!(
                max_abs_diff(a.clone().unwrap(), b.clone().unwrap()),
                0.0,
                "{file}"
            );
        }
    }
}

#[test]
fn denoiser_uses_the_fine_tuned_unet_of_the_single_file() {
    let io = Io::open(controlnet_fixture(IO));
    let source =
        TensorSource::open(controlnet_fixture("tiny-prompt-diffusion.safetensors")).unwrap();
    let denoiser =
        from_single_file(PromptDiffusionDenoiser::<B>::from_single_file, &source).unwrap();
    let uniform = ControlScales::Uniform(1.0);
    let out = forward_on(PromptDiffusionDenoiser::forward, &denoiser, &io, &uniform);
    assert_close(
        "unet with prompt diffusion residuals",
        out.clone(),
        io.t("unet_out"),
        1e-4,
    );

    // The same residuals through stock tiny-sd's UNet (decoder not fine-tuned) differ.
    let stock = UNet2DConditionModel::<B>::from_pretrained(
        fixtures().join("tiny-sd/unet"),
        &LoadOptions::default(),
        &io.device,
    )
    .unwrap();
    let residuals = residuals(&denoiser.controlnet, &io, &uniform);
    let stock_out = stock
        .forward_with_residuals(
            io.t("sample"),
            io.t("timestep"),
            io.t("context"),
            &residuals,
        )
        .unwrap();
    assert!(max_abs_diff(stock_out, out) > 1e-2);
}

#[test]
fn single_file_helpers_require_their_prefixes() {
    // tiny-sd has no ControlNet.
    let sd = TensorSource::open(fixtures().join("tiny-sd.safetensors")).unwrap();
    let err = from_single_file(PromptDiffusionControlNet::<B>::from_single_file, &sd).unwrap_err();
    assert!(
        matches!(err, Error::Format { .. }) && err.to_string().contains("control_model"),
        "{err}"
    );
    // The pickle holds the ControlNet only: the denoiser refuses to go without its UNet.
    let ckpt = TensorSource::open(controlnet_fixture("tiny-prompt-diffusion.ckpt")).unwrap();
    let err = from_single_file(PromptDiffusionDenoiser::<B>::from_single_file, &ckpt).unwrap_err();
    assert!(err.to_string().contains("model.diffusion_model"), "{err}");
}

#[test]
fn bad_hints_are_typed_errors() {
    let io = Io::open(controlnet_fixture(IO));
    let model = folder_model();
    let sample: Tensor<B, 4> = io.t("sample");
    let [batch, _, h, w] = sample.dims();
    let uniform = ControlScales::Uniform(1.0);
    let fail = |sample, timestep, context, (pair, query): (Tensor<B, 4>, _), scales: &_| {
        model
            .forward(sample, timestep, context, pair, query, scales)
            .unwrap_err()
    };
    let run = |pair: Tensor<B, 4>, query: Tensor<B, 4>| {
        let (timestep, context) = (io.t("timestep"), io.t("context"));
        fail(sample.clone(), timestep, context, (pair, query), &uniform)
    };
    let zeros = |dims: [usize; 4]| Tensor::<B, 4>::zeros(dims, &io.device);
    let pair_ok = zeros([batch, 6, 8 * h, 8 * w]);
    let query_ok = zeros([batch, 3, 8 * h, 8 * w]);

    // A 3-channel pair (a single image instead of source ‖ target).
    let err = run(zeros([batch, 3, 8 * h, 8 * w]), query_ok.clone());
    assert!(
        matches!(&err, Error::Shape { key, .. } if key == "controlnet_cond"),
        "{err}"
    );
    // A hint at the latent size instead of 8× it.
    let err = run(pair_ok.clone(), zeros([batch, 3, h, w]));
    assert!(
        matches!(&err, Error::Shape { key, .. } if key == "controlnet_query_cond"),
        "{err}"
    );
    assert!(err.to_string().contains("8×"), "{err}");
    // Off by one pixel.
    let err = run(zeros([batch, 6, 8 * h + 1, 8 * w]), query_ok.clone());
    assert!(matches!(err, Error::Shape { .. }), "{err}");
    // Batch mismatch.
    let err = run(zeros([1, 6, 8 * h, 8 * w]), query_ok.clone());
    assert!(matches!(err, Error::Shape { .. }), "{err}");

    // Wrong latent channels, context width and timestep count.
    let hints = || (pair_ok.clone(), query_ok.clone());
    let (timestep, context) = (|| io.t("timestep"), || io.t("context"));
    let wrong = [
        (zeros([batch, 3, h, w]), timestep(), context(), "sample"),
        (
            sample.clone(),
            timestep(),
            Tensor::zeros([batch, 77, 5], &io.device),
            "encoder_hidden_states",
        ),
        (
            sample.clone(),
            Tensor::zeros([3], &io.device),
            context(),
            "timestep",
        ),
    ];
    for (sample, timestep, context, name) in wrong {
        let err = fail(sample, timestep, context, hints(), &uniform);
        assert!(
            matches!(&err, Error::Shape { key, .. } if key == name),
            "{err}"
        );
    }
    let scales = ControlScales::PerResidual(vec![1.0; 3]);
    let err = fail(sample, timestep(), context(), hints(), &scales);
    assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
}

/// SD1.5's encoder structure (three cross-attention levels and a plain one, two resnets each):
/// all 13 residuals, from the diffusers folder and the original `control_model.*` file, at
/// scale 1 and with diffusers' 13-point guess-mode schedule.
#[test]
fn sd15_levels_give_the_thirteen_reference_residuals() {
    let io = Io::open(controlnet_fixture(
        "prompt_diffusion_sd15_levels_io.safetensors",
    ));
    let options = LoadOptions::default();
    let folder = controlnet_fixture("prompt-diffusion-sd15-levels");
    let config = ControlNetConfig::from_file(folder.join("config.json")).unwrap();
    assert_eq!(config.num_down_residuals() + 1, 13);
    let source = TensorSource::open(controlnet_fixture(
        "prompt-diffusion-sd15-levels.safetensors",
    ))
    .unwrap();
    let models = [
        (
            "diffusers layout",
            PromptDiffusionControlNet::<B>::from_pretrained(&folder, &options, &io.device).unwrap(),
        ),
        (
            "original layout",
            PromptDiffusionControlNet::<B>::from_single_file(
                &config, &source, &options, &io.device,
            )
            .unwrap(),
        ),
    ];
    for (layout, model) in &models {
        let out = residuals(model, &io, &ControlScales::Uniform(1.0));
        assert_eq!(out.down.len(), 12, "{layout}");
        io.assert_residuals(layout, "", &out, 1e-4);
        let guess = residuals(model, &io, &ControlScales::GuessMode(0.9));
        io.assert_residuals(&format!("{layout}, guess mode"), "guess.", &guess, 1e-4);
    }
}
