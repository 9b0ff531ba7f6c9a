//! The official file layouts: key tables against the key list of the released weights
//! (`fixtures/diff_plugin/state_dict_keys.txt`), `{"model": …}` and `module.` wrappers, the
//! tiny released-layout fixture, and the errors for missing or malformed files.

use prompt_diffusion_core::weights::Pretrained;
use std::collections::BTreeMap;
use std::rc::Rc;

use crate::common::{B, fixtures, pretrained};
use burn::prelude::*;
use burn::tensor::DType;
use prompt_diffusion_core::Error;
use prompt_diffusion_core::weights::{LoadOptions, TensorSource, load_module};
use prompt_diffusion_diff_plugin::{
    PluginFiles, PluginSelector, SCBNet, SCBNetConfig, TPBConfig, Task, TaskPlugin, weights,
};

/// `file → key → shape` from the companion list.
fn released_keys() -> BTreeMap<String, BTreeMap<String, Vec<usize>>> {
    let text = std::fs::read_to_string(fixtures().join("state_dict_keys.txt")).unwrap();
    let mut files: BTreeMap<String, BTreeMap<String, Vec<usize>>> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let [file, key, shape] = line.split('\t').collect::<Vec<_>>()[..] else {
            panic!("bad line {line}")
        };
        let shape = shape.trim_matches(|c| c == '[' || c == ']');
        let shape = shape
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().unwrap())
            .collect();
        let kind = file.rsplit('/').next().unwrap().to_string();
        files.entry(kind).or_default().insert(key.into(), shape);
    }
    files
}

/// Zero tensors named and shaped as in the released file (read lazily).
fn zeros_source(keys: &BTreeMap<String, Vec<usize>>, prefix: &str) -> TensorSource {
    let mut source = TensorSource::from_tensors("released keys", []);
    for (key, shape) in keys {
        let n: usize = shape.iter().product();
        let shape2 = shape.clone();
        source.insert_lazy(
            format!("{prefix}{key}"),
            DType::F32,
            shape.clone(),
            Rc::new(move || Ok(TensorData::new(vec![0.0f32; n], shape2.clone()))),
        );
    }
    source
}

#[test]
fn released_key_lists_load_strictly() {
    let files = released_keys();
    assert_eq!(files["diffusion_pytorch_model.bin"].len(), 84);
    assert_eq!(files["tpb.pt"].len(), 10);
    assert_eq!(files["PromptTunner.pt"].len(), 5);
    let device = Default::default();
    let options = LoadOptions::default();

    let scb = SCBNet::<B>::from_source(
        &SCBNetConfig::released(),
        &zeros_source(&files["diffusion_pytorch_model.bin"], ""),
        &options,
        &device,
    )
    .unwrap();
    assert_eq!(scb.num_params(), 11_973_120);

    // tpb.pt as torch.save({"model": ddp_module.state_dict()}) flattens to these names.
    let tpb = weights::unwrap_checkpoint(&zeros_source(&files["tpb.pt"], "model.module."));
    let (config, tpb) = weights::tpb_to_module_names(&tpb).unwrap();
    assert_eq!(config, TPBConfig::released());
    let tpb = load_module(config.init::<B>(&device), &tpb, "TPBNet", &options).unwrap();
    assert_eq!(tpb.num_params(), 2_890_496);

    let selector = weights::unwrap_checkpoint(&zeros_source(&files["PromptTunner.pt"], "model."));
    assert_eq!(selector.shape("logit_scale"), Some(&[][..]));
    let (_, selector) = weights::split_logit_scale(&selector).unwrap();
    let selector = load_module(
        PluginSelector::<B>::new(768, &device),
        &selector,
        "PluginSelector",
        &options,
    )
    .unwrap();
    assert_eq!(selector.num_params() + 1, 1_181_185);
}

#[test]
fn every_released_plugin_folder_loads() {
    let device = Default::default();
    for task in Task::ALL {
        let files = PluginFiles::for_task(pretrained(), task).unwrap();
        assert!(files.tpb.ends_with("tpb.pt") && files.scb.ends_with("scb"));
        let plugin = TaskPlugin::<B>::from_files(&files, &LoadOptions::default(), &device).unwrap();
        assert_eq!(plugin.tpb.config().num_cross_proj_layers, 2);
        assert_eq!(plugin.scb.config().num_residuals(), 3);
    }
    // desnow's tpb.pt carries `module.` prefixes, the selector too.
    let raw = TensorSource::open(pretrained().join("desnow/tpb.pt")).unwrap();
    assert!(raw.has_prefix("model.module.visual_projection."));
}

#[test]
fn missing_plugin_files_are_named() {
    let device: prompt_diffusion_core::testing::TestDevice = Default::default();
    let dir = tempfile::tempdir().unwrap();
    let err =
        TaskPlugin::<B>::from_dir(dir.path().join("derain"), &LoadOptions::default(), &device)
            .unwrap_err();
    assert!(
        matches!(&err, Error::Io { path, .. } if path.ends_with("derain")),
        "{err}"
    );

    // A folder with the SCB but no TPB names tpb.pt.
    let task = dir.path().join("dehaze");
    std::fs::create_dir_all(task.join("scb")).unwrap();
    std::fs::copy(
        pretrained().join("dehaze/scb/config.json"),
        task.join("scb/config.json"),
    )
    .unwrap();
    let err = PluginFiles::find(&task).unwrap_err();
    assert!(
        matches!(&err, Error::Io { path, .. } if path.ends_with("tpb.pt")),
        "{err}"
    );

    // With tpb.pt but no SCB weights, the SCB folder is named.
    std::fs::copy(pretrained().join("dehaze/tpb.pt"), task.join("tpb.pt")).unwrap();
    let err = TaskPlugin::<B>::from_dir(&task, &LoadOptions::default(), &device).unwrap_err();
    assert!(err.to_string().contains("scb"), "{err}");

    // A file that is not a TPB.
    let err = weights::load_tpb::<B>(
        pretrained().join(prompt_diffusion_diff_plugin::SELECTOR_FILE),
        &LoadOptions::default(),
        &device,
    )
    .unwrap_err();
    assert!(matches!(err, Error::Format { .. }), "{err}");
}
