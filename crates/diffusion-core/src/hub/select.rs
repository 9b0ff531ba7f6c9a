#![cfg_attr(not(feature = "hub"), allow(dead_code))]
//! Which files of a repository a model needs: per component folder its config files and one
//! set of weights, chosen in [`find_component_weights`](crate::weights::find_component_weights)'s
//! order (a `variant` first, safetensors before pickles), as diffusers downloads them.

use std::path::Path;

use crate::weights::weight_file_names;
use crate::{Error, Result};

/// The files a loader opens first; each folder's are fetched last, so that a folder holding one
/// of them was completely downloaded.
pub(super) const MARKERS: [&str; 4] = [
    "config.json",
    "scheduler_config.json",
    "tokenizer_config.json",
    "preprocessor_config.json",
];

/// Extensions of weight files in any framework (only the chosen one is fetched).
const WEIGHT_EXTENSIONS: [&str; 13] = [
    "safetensors",
    "bin",
    "ckpt",
    "pt",
    "pth",
    "msgpack",
    "h5",
    "onnx",
    "onnx_data",
    "pb",
    "ot",
    "gguf",
    "tflite",
];

/// Whether `name` is a weight file or the index of a sharded one.
pub fn is_weight_file(name: &str) -> bool {
    let index = name.contains(".index.") && name.ends_with(".json");
    let ext = name
        .rsplit_once('.')
        .map(|(_, ext)| ext)
        .unwrap_or_default();
    index || WEIGHT_EXTENSIONS.contains(&ext)
}

/// Whether `name` is a config or tokenizer file a loader may read.
fn is_config_file(name: &str) -> bool {
    let ext = name
        .rsplit_once('.')
        .map(|(_, ext)| ext)
        .unwrap_or_default();
    !is_weight_file(name) && ["json", "txt", "model"].contains(&ext)
}

/// Whether a repository path is safe to lay out under a snapshot folder: relative, `/`-separated
/// segments that are neither empty, `.` nor `..`.
pub(super) fn is_safe_repo_path(path: &str) -> bool {
    !path.is_empty()
        && !path.contains('\\')
        && path
            .split('/')
            .all(|segment| !segment.is_empty() && segment != "." && segment != "..")
}

/// The files of one component folder to fetch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct FolderPlan {
    /// The weight file (or sharded index) to fetch, as a repository path.
    pub weights: Option<String>,
    /// The config and tokenizer files, markers last.
    pub configs: Vec<String>,
}

/// `folder/name`, or `name` at the root.
pub(super) fn repo_path(folder: &str, name: &str) -> String {
    if folder.is_empty() {
        name.to_string()
    } else {
        format!("{folder}/{name}")
    }
}

/// The files of `folder` (`""`: the root) among `siblings` to fetch: the first weight file of
/// [`weight_file_names`] the repository has, and the config files directly in the folder.
pub(super) fn plan_folder(siblings: &[String], folder: &str, variant: Option<&str>) -> FolderPlan {
    let names: Vec<&str> = siblings
        .iter()
        .filter(|path| is_safe_repo_path(path))
        .filter_map(|path| match path.rsplit_once('/') {
            Some((dir, name)) if dir == folder => Some(name),
            None if folder.is_empty() => Some(path.as_str()),
            _ => None,
        })
        .collect();
    let weights = weight_file_names(variant)
        .into_iter()
        .find(|candidate| names.contains(&candidate.as_str()))
        .map(|name| repo_path(folder, &name));
    let mut configs: Vec<&str> = names.into_iter().filter(|n| is_config_file(n)).collect();
    configs.sort_by_key(|name| (MARKERS.contains(name), *name));
    FolderPlan {
        weights,
        configs: configs.iter().map(|name| repo_path(folder, name)).collect(),
    }
}

/// The component folders a `model_index.json` lists: its keys (not `_`-prefixed) whose value is
/// a `[library, class]` pair with neither null.
///
/// # Errors
/// [`Error::Format`] naming `path` when the file is not a JSON object.
pub(super) fn pipeline_folders(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let index: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::format(path, format!("invalid JSON: {e}")))?;
    let object = index
        .as_object()
        .ok_or_else(|| Error::format(path, "not a JSON object"))?;
    Ok(object
        .iter()
        .filter(|(key, value)| {
            let pair = value.as_array().filter(|pair| pair.len() == 2);
            !key.starts_with('_')
                && is_safe_repo_path(key)
                && pair.is_some_and(|pair| pair.iter().all(|part| part.is_string()))
        })
        .map(|(key, _)| key.clone())
        .collect())
}

/// The shard files a sharded checkpoint's index (`*.safetensors.index.json`) names in its
/// `weight_map`, sorted, each once.
///
/// # Errors
/// [`Error::Format`] naming the index when it is not valid JSON, has no `weight_map` object, or
/// names a shard outside its folder.
pub fn shard_names(index: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(index).map_err(|e| Error::io(index, e))?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::format(index, format!("invalid JSON: {e}")))?;
    let map = value
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| Error::format(index, "no `weight_map` object"))?;
    let mut shards = Vec::new();
    for shard in map.values() {
        let shard = shard
            .as_str()
            .filter(|s| is_safe_repo_path(s) && !s.contains('/'))
            .ok_or_else(|| {
                Error::format(
                    index,
                    format!("`weight_map` names {shard} (expected a file name)"),
                )
            })?;
        shards.push(shard.to_string());
    }
    shards.sort();
    shards.dedup();
    Ok(shards)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn siblings(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_folder_gets_its_configs_and_the_weights_diffusers_would_pick() {
        let repo = siblings(&[
            "model_index.json",
            "README.md",
            "unet/config.json",
            "unet/diffusion_pytorch_model.bin",
            "unet/diffusion_pytorch_model.safetensors",
            "unet/diffusion_pytorch_model.fp16.safetensors",
            "unet/diffusion_pytorch_model.non_ema.bin",
            "unet/extra/config.json",
            "tokenizer/vocab.json",
            "tokenizer/tokenizer_config.json",
            "tokenizer/merges.txt",
            "tokenizer/special_tokens_map.json",
            "text_encoder/model.safetensors.index.json",
            "text_encoder/model-00001-of-00002.safetensors",
            "text_encoder/config.json",
            "../escape/config.json",
        ]);
        let unet = plan_folder(&repo, "unet", None);
        assert_eq!(
            unet.weights.as_deref(),
            Some("unet/diffusion_pytorch_model.safetensors")
        );
        assert_eq!(unet.configs, ["unet/config.json"]);
        let fp16 = plan_folder(&repo, "unet", Some("fp16")).weights;
        assert_eq!(
            fp16.as_deref(),
            Some("unet/diffusion_pytorch_model.fp16.safetensors")
        );
        let tokenizer = plan_folder(&repo, "tokenizer", None);
        assert_eq!(tokenizer.weights, None);
        assert_eq!(
            tokenizer.configs,
            [
                "tokenizer/merges.txt",
                "tokenizer/special_tokens_map.json",
                "tokenizer/vocab.json",
                "tokenizer/tokenizer_config.json"
            ]
        );
        let sharded = plan_folder(&repo, "text_encoder", Some("fp16")).weights;
        assert_eq!(
            sharded.as_deref(),
            Some("text_encoder/model.safetensors.index.json")
        );
        let root = plan_folder(&repo, "", None);
        assert_eq!(
            (root.weights, root.configs),
            (None, siblings(&["model_index.json"]))
        );
        assert_eq!(plan_folder(&repo, "..", None), FolderPlan::default());
    }

    #[test]
    fn pipeline_folders_are_the_components_model_index_lists() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model_index.json");
        let index = r#"{"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
            "safety_checker": [null, null], "requires_safety_checker": false, "vae": ["diffusers", "AutoencoderKL"]}"#;
        std::fs::write(&path, index).unwrap();
        assert_eq!(pipeline_folders(&path).unwrap(), ["unet", "vae"]);
        std::fs::write(&path, "[1]").unwrap();
        let err = pipeline_folders(&path).unwrap_err().to_string();
        assert!(
            err.contains("model_index.json") && err.contains("object"),
            "{err}"
        );
    }

    #[test]
    fn shard_names_come_from_the_weight_map_and_stay_in_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors.index.json");
        let index = r#"{"metadata": {}, "weight_map": {"a": "m-2.safetensors", "b": "m-1.safetensors", "c": "m-2.safetensors"}}"#;
        std::fs::write(&path, index).unwrap();
        assert_eq!(
            shard_names(&path).unwrap(),
            ["m-1.safetensors", "m-2.safetensors"]
        );
        std::fs::write(&path, r#"{"weight_map": {"a": "../../etc/passwd"}}"#).unwrap();
        let err = shard_names(&path).unwrap_err().to_string();
        assert!(err.contains("../../etc/passwd"), "{err}");
    }

    #[test]
    fn weight_and_config_files_are_told_apart() {
        for weight in [
            "a.safetensors",
            "m.bin",
            "x.ckpt",
            "m.safetensors.index.json",
            "m.safetensors.index.fp16.json",
        ] {
            assert!(
                is_weight_file(weight) && !is_config_file(weight),
                "{weight}"
            );
        }
        for config in ["config.json", "merges.txt", "spiece.model"] {
            assert!(is_config_file(config), "{config}");
        }
        assert!(!is_config_file("README.md") && !is_config_file("image.png"));
        for unsafe_path in ["", "/abs", "a//b", "a/../b", "./a", "a\\b"] {
            assert!(!is_safe_repo_path(unsafe_path), "{unsafe_path}");
        }
    }
}
