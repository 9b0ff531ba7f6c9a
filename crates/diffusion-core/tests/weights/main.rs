//! Weight loading: every container format, diffusers folder discovery, dtype casting and the
//! strict error report, against `fixtures/core/` (made by `tools/fixtures/gen_core.py`).

use std::path::PathBuf;

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::DType;
use prompt_diffusion_core::nn::{GroupNorm, GroupNormConfig};
use prompt_diffusion_core::testing::assert_close;
use prompt_diffusion_core::weights::{
    LoadOptions, TensorSource, find_component_weights, load_module, open_component_weights,
};
use prompt_diffusion_core::{Error, WeightsError};

mod hostile;

type B = prompt_diffusion_core::testing::TestBackend;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/core")).join(name)
}

/// Mirror of `Tiny` in gen_core.py.
#[derive(Module, Debug)]
struct Tiny<B: Backend> {
    linear: Linear<B>,
    norm: GroupNorm<B>,
    proj: Linear<B>,
    conv: Conv2d<B>,
}

impl<B: Backend> Tiny<B> {
    fn new(device: &B::Device) -> Self {
        Self {
            linear: LinearConfig::new(3, 4).init(device),
            norm: GroupNormConfig::new(2, 4).init(device),
            proj: LinearConfig::new(4, 5).init(device),
            conv: Conv2dConfig::new([5, 2], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device),
        }
    }

    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let h = self
            .linear
            .forward(x.permute([0, 2, 3, 1]))
            .permute([0, 3, 1, 2]);
        let h = self.norm.forward(h);
        let h = self
            .proj
            .forward(h.permute([0, 2, 3, 1]))
            .permute([0, 3, 1, 2]);
        self.conv.forward(h)
    }
}

fn load(source: &TensorSource) -> Result<Tiny<B>, Error> {
    let device = Default::default();
    load_module(Tiny::new(&device), source, "Tiny", &LoadOptions::default())
}

fn check_output(model: &Tiny<B>, what: &str) {
    let device = Default::default();
    let reference = TensorSource::open(fixture("reference.safetensors")).unwrap();
    let x = reference.tensor::<B, 4>("x", &device, None).unwrap();
    let y = reference.tensor::<B, 4>("y", &device, None).unwrap();
    assert_close(what, model.forward(x), y, 1e-5);
}

#[test]
fn every_container_loads_to_the_reference_output() {
    for name in [
        "tiny.safetensors",
        "flat.ckpt",
        "nested.ckpt",
        "legacy.pt",
        "pytorch_model.bin",
        "sharded/diffusion_pytorch_model.safetensors.index.json",
    ] {
        let source = TensorSource::open(fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            source.len(),
            8,
            "{name}: {:?}",
            source.keys().collect::<Vec<_>>()
        );
        let model = load(&source).unwrap_or_else(|e| panic!("{name}: {e}"));
        check_output(&model, name);
    }
}

#[test]
fn component_folder_prefers_the_requested_variant() {
    let dir = fixture("component");
    let default = find_component_weights(&dir, None).unwrap();
    assert!(default.ends_with("diffusion_pytorch_model.safetensors"));
    let fp16 = find_component_weights(&dir, Some("fp16")).unwrap();
    assert!(fp16.ends_with("diffusion_pytorch_model.fp16.safetensors"));
    // An absent variant falls back to the default file.
    let fallback = find_component_weights(&dir, Some("bf16")).unwrap();
    assert_eq!(fallback, default);

    let source = open_component_weights(&dir, Some("fp16")).unwrap();
    assert_eq!(source.dtype("linear.weight"), Some(DType::F16));
    let model = load(&source).unwrap();
    assert_eq!(
        model.linear.weight.val().dtype(),
        DType::F32,
        "cast to the device dtype"
    );
    check_output(&model, "fp16 variant");

    let sharded = open_component_weights(fixture("sharded"), None).unwrap();
    assert_eq!(sharded.len(), 8);
    assert!(matches!(
        find_component_weights(fixture("missing-folder"), None),
        Err(Error::Io { .. })
    ));
    let empty = tempfile::tempdir().unwrap();
    let err = find_component_weights(empty.path(), None).unwrap_err();
    assert!(matches!(err, Error::Format { .. }), "{err}");
    assert!(err.to_string().contains("no weight file"), "{err}");
}

fn weights_error(result: Result<Tiny<B>, Error>) -> WeightsError {
    match result {
        Err(Error::Weights(report)) => *report,
        Err(other) => panic!("expected a weights error, got {other}"),
        Ok(_) => panic!("expected a weights error, loading succeeded"),
    }
}

#[test]
fn missing_unexpected_and_misshaped_tensors_are_named() {
    let source = TensorSource::open(fixture("tiny.safetensors")).unwrap();

    let mut missing = source.clone();
    assert!(missing.remove("norm.bias"));
    let report = weights_error(load(&missing));
    assert_eq!(report.missing, vec!["norm.bias"]);
    assert!(report.to_string().contains("`norm.bias`"), "{report}");
    assert!(report.to_string().contains("tiny.safetensors"), "{report}");

    let mut extra = source.clone();
    extra.insert_data("head.weight", TensorData::new(vec![0f32; 2], [2]));
    let report = weights_error(load(&extra));
    assert_eq!(report.unexpected, vec!["head.weight"]);
    // …unless the caller tolerates it.
    let device = Default::default();
    let options = LoadOptions::default().ignore(r"^head\.");
    assert!(load_module(Tiny::<B>::new(&device), &extra, "Tiny", &options).is_ok());

    let mut misshaped = source.clone();
    misshaped.insert_data("conv.bias", TensorData::new(vec![0f32; 3], [3]));
    let report = weights_error(load(&misshaped));
    assert_eq!(report.shapes.len(), 1);
    assert_eq!(report.shapes[0].key, "conv.bias");
    assert_eq!(report.shapes[0].expected, vec![2]);
    assert_eq!(report.shapes[0].found, vec![3]);
    let message = report.to_string();
    assert!(
        message.contains("conv.bias (expected [2], found [3])"),
        "{message}"
    );
}

#[test]
fn renaming_and_prefixes() {
    let source = TensorSource::open(fixture("tiny.safetensors")).unwrap();
    let prefixed = source
        .rename(|k| Some(format!("first_stage_model.{k}")))
        .unwrap();
    assert!(prefixed.has_prefix("first_stage_model."));
    assert!(!prefixed.has_prefix("model."));
    let stripped = prefixed.strip_prefix("first_stage_model.");
    check_output(&load(&stripped).unwrap(), "renamed");

    // Two names mapped onto one is an error, not a silent overwrite.
    let collision = source.rename(|k| {
        Some(if k.ends_with("bias") {
            "b".into()
        } else {
            k.into()
        })
    });
    assert!(matches!(collision, Err(Error::Format { .. })));
    // Dropping with None.
    let dropped = source
        .rename(|k| (!k.starts_with("conv.")).then(|| k.to_string()))
        .unwrap();
    assert_eq!(dropped.len(), 6);
}

#[test]
fn unreadable_files_are_format_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(fixture("tiny.safetensors")).unwrap();
    let truncated = dir.path().join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() - 10]).unwrap();
    let err = TensorSource::open(&truncated).unwrap_err();
    assert!(matches!(err, Error::Format { .. }), "{err}");
    assert!(err.to_string().contains("truncated.safetensors"), "{err}");

    let err = TensorSource::open(fixture("garbage.ckpt")).unwrap_err();
    assert!(matches!(err, Error::Format { .. }), "{err}");
    assert!(err.to_string().contains("garbage.ckpt"), "{err}");

    let err = TensorSource::open(fixture("absent.safetensors")).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");

    let err = TensorSource::open(fixture("reference.txt")).unwrap_err();
    assert!(
        err.to_string().contains("unknown weight file extension"),
        "{err}"
    );

    // A shard index naming a tensor its shard lacks.
    let shard_dir = dir.path().join("shards");
    std::fs::create_dir(&shard_dir).unwrap();
    std::fs::copy(fixture("tiny.safetensors"), shard_dir.join("a.safetensors")).unwrap();
    let index = shard_dir.join("diffusion_pytorch_model.safetensors.index.json");
    std::fs::write(
        &index,
        r#"{"weight_map": {"ghost.weight": "a.safetensors"}}"#,
    )
    .unwrap();
    let err = TensorSource::open(&index).unwrap_err();
    assert!(err.to_string().contains("ghost.weight"), "{err}");
}

#[test]
fn tensors_read_with_rank_and_dtype_checks() {
    let device = Default::default();
    let source = TensorSource::open(fixture("reference.safetensors")).unwrap();
    let x = source
        .tensor::<B, 4>("x", &device, Some(DType::F32))
        .unwrap();
    assert_eq!(x.dims(), [2, 3, 4, 5]);
    let err = source.tensor::<B, 2>("x", &device, None).unwrap_err();
    assert!(matches!(err, Error::Shape { .. }), "{err}");
    assert!(source.data("nope").is_err());

    let ckpt = TensorSource::open(PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/tiny-sd.ckpt"
    )))
    .unwrap();
    let ids = "cond_stage_model.transformer.text_model.embeddings.position_ids";
    assert_eq!(ckpt.dtype(ids), Some(DType::I64));
    let err = ckpt.tensor::<B, 2>(ids, &device, None).unwrap_err();
    assert!(matches!(err, Error::DType { .. }), "{err}");
}
