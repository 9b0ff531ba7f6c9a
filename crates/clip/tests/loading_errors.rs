//! Strict loading: missing, unexpected and mis-shaped tensors and bad configs are reported
//! with the key or field at fault; tolerated buffers and full-CLIP folders load.

use crate::common::{B, clip_fixture, device};
use burn::tensor::TensorData;
use prompt_diffusion_clip::{
    CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPVisionModelWithProjection,
};
use prompt_diffusion_core::Error;
use prompt_diffusion_core::weights::Pretrained;
use prompt_diffusion_core::weights::{LoadOptions, TensorSource, open_component_weights};

fn gelu() -> (CLIPTextConfig, TensorSource) {
    let dir = clip_fixture("text_gelu");
    let config = CLIPTextConfig::from_file(dir.join("config.json")).unwrap();
    (config, open_component_weights(&dir, None).unwrap())
}

fn load(config: CLIPTextConfig, source: &TensorSource) -> Result<CLIPTextModel<B>, Error> {
    CLIPTextModel::<B>::from_source(&config, source, &LoadOptions::default(), &device())
}

fn weights_report(err: Error) -> prompt_diffusion_core::WeightsError {
    match err {
        Error::Weights(report) => *report,
        other => panic!("expected a weights error, got {other}"),
    }
}

#[test]
fn missing_unexpected_and_misshaped_tensors_are_named() {
    let (config, source) = gelu();
    // The file is bare (no `text_model.` level); errors use the model's names.
    let mut missing = source.clone();
    assert!(missing.remove("encoder.layers.1.mlp.fc2.bias"));
    let report = weights_report(load(config.clone(), &missing).unwrap_err());
    assert_eq!(report.missing, ["text_model.encoder.layers.1.mlp.fc2.bias"]);
    assert!(report.unexpected.is_empty() && report.shapes.is_empty());

    let mut extra = source.clone();
    extra.insert_data(
        "encoder.layers.1.extra.weight",
        TensorData::new(vec![0f32; 4], [4]),
    );
    let report = weights_report(load(config.clone(), &extra).unwrap_err());
    assert_eq!(
        report.unexpected,
        ["text_model.encoder.layers.1.extra.weight"]
    );

    let mut misshaped = source.clone();
    misshaped.insert_data(
        "final_layer_norm.weight",
        TensorData::new(vec![1f32; 31], [31]),
    );
    let err = load(config.clone(), &misshaped).unwrap_err();
    let message = err.to_string();
    let report = weights_report(err);
    assert_eq!(report.shapes.len(), 1);
    assert_eq!(report.shapes[0].key, "text_model.final_layer_norm.weight");
    assert_eq!(
        (
            report.shapes[0].expected.clone(),
            report.shapes[0].found.clone()
        ),
        (vec![32], vec![31])
    );
    assert!(message.contains("final_layer_norm.weight"), "{message}");

    // A projection the model does not have is unexpected.
    let mut projected = source.clone();
    projected.insert_data(
        "text_projection.weight",
        TensorData::new(vec![0f32; 24 * 32], [24, 32]),
    );
    let report = weights_report(load(config.clone(), &projected).unwrap_err());
    assert_eq!(report.unexpected, ["text_projection.weight"]);
    // …and missing where it is expected.
    let report = weights_report(
        CLIPTextModelWithProjection::<B>::from_source(
            &config,
            &source,
            &LoadOptions::default(),
            &device(),
        )
        .unwrap_err(),
    );
    assert_eq!(report.missing, ["text_projection.weight"]);

    // A config that does not fit the weights.
    let wider = CLIPTextConfig {
        intermediate_size: 48,
        ..config
    };
    let report = weights_report(load(wider, &source).unwrap_err());
    assert_eq!(report.shapes.len(), 6, "{report}"); // fc1 weight + bias, fc2 weight, per layer
}

#[test]
fn position_ids_buffers_are_tolerated() {
    let (config, mut source) = gelu();
    source.insert_data(
        "embeddings.position_ids",
        TensorData::new((0..16i64).collect::<Vec<_>>(), [1, 16]),
    );
    load(config, &source).unwrap();
}

#[test]
fn bad_configs_name_the_file_and_field() {
    let tmp = tempfile::tempdir().unwrap();
    let weights = "model.safetensors";
    std::fs::copy(
        clip_fixture("text_gelu").join(weights),
        tmp.path().join(weights),
    )
    .unwrap();
    let config_path = tmp.path().join("config.json");
    std::fs::write(&config_path, r#"{"hidden_size": "thirty-two"}"#).unwrap();
    let err = CLIPTextModel::<B>::from_pretrained(tmp.path(), &LoadOptions::default(), &device())
        .unwrap_err();
    match &err {
        Error::Config {
            origin: Some(origin),
            field,
            ..
        } => {
            assert_eq!(origin, &config_path);
            assert_eq!(field, "hidden_size");
        }
        other => panic!("unexpected error {other}"),
    }
    // Valid JSON, invalid architecture.
    let original = std::fs::read_to_string(clip_fixture("text_gelu/config.json")).unwrap();
    std::fs::write(
        &config_path,
        original.replace("\"num_attention_heads\": 4", "\"num_attention_heads\": 5"),
    )
    .unwrap();
    let err = CLIPTextModel::<B>::from_pretrained(tmp.path(), &LoadOptions::default(), &device())
        .unwrap_err();
    assert!(
        matches!(&err, Error::Config { field, .. } if field == "num_attention_heads"),
        "{err}"
    );
    // No config at all.
    std::fs::remove_file(&config_path).unwrap();
    let err = CLIPTextModel::<B>::from_pretrained(tmp.path(), &LoadOptions::default(), &device())
        .unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
}

#[test]
fn a_full_clip_model_folder_loads_either_tower() {
    // A CLIPModel-style folder: nested config, both towers and logit_scale in one file.
    let tmp = tempfile::tempdir().unwrap();
    let text_cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(clip_fixture("text_proj/config.json")).unwrap(),
    )
    .unwrap();
    let vision_cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(clip_fixture("vision_proj/config.json")).unwrap(),
    )
    .unwrap();
    let config = serde_json::json!({
        "model_type": "clip", "projection_dim": 24,
        "text_config": text_cfg, "vision_config": vision_cfg, "logit_scale_init_value": 2.6592
    });
    std::fs::write(tmp.path().join("config.json"), config.to_string()).unwrap();
    let text = open_component_weights(clip_fixture("text_proj"), None).unwrap();
    let vision = open_component_weights(clip_fixture("vision_proj"), None).unwrap();
    let mut tensors: Vec<(String, TensorData)> = Vec::new();
    for source in [&text, &vision] {
        for key in source.keys() {
            tensors.push((key.to_string(), source.data(key).unwrap()));
        }
    }
    tensors.push(("logit_scale".into(), TensorData::new(vec![2.6592f32], [1])));
    write_safetensors(&tmp.path().join("model.safetensors"), &tensors);

    CLIPTextModelWithProjection::<B>::from_pretrained(
        tmp.path(),
        &LoadOptions::default(),
        &device(),
    )
    .unwrap();
    CLIPVisionModelWithProjection::<B>::from_pretrained(
        tmp.path(),
        &LoadOptions::default(),
        &device(),
    )
    .unwrap();
}

/// Writes f16/f32 tensors as a safetensors file (minimal writer for the test).
fn write_safetensors(path: &std::path::Path, tensors: &[(String, TensorData)]) {
    let mut header = serde_json::Map::new();
    let mut body = Vec::new();
    for (key, data) in tensors {
        let dtype = match data.dtype {
            burn::tensor::DType::F16 => "F16",
            burn::tensor::DType::F32 => "F32",
            other => panic!("dtype {other:?}"),
        };
        let start = body.len();
        body.extend_from_slice(&data.bytes);
        header.insert(
            key.clone(),
            serde_json::json!({"dtype": dtype, "shape": data.shape.to_vec(), "data_offsets": [start, body.len()]}),
        );
    }
    let mut head = serde_json::Value::Object(header).to_string().into_bytes();
    while !head.len().is_multiple_of(8) {
        head.push(b' ');
    }
    let mut file = (head.len() as u64).to_le_bytes().to_vec();
    file.extend(head);
    file.extend(body);
    std::fs::write(path, file).unwrap();
}
