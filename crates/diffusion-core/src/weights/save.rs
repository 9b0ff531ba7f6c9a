//! Writing modules as the reference writes them: state dicts under PyTorch's conventions,
//! safetensors weight files and `config.json` files (diffusers' `save_pretrained`).

use std::collections::HashMap;
use std::path::Path;

use burn::tensor::DType;
use burn::tensor::backend::Backend;
use burn_store::{BurnToPyTorchAdapter, ModuleSnapshot};
use safetensors::Dtype;
use safetensors::tensor::TensorView;
use serde::Serialize;

use crate::{Error, Result};

/// One named float32 tensor of a state dict.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    /// The key (PyTorch naming).
    pub key: String,
    /// The shape (`[]` for a 0-d tensor).
    pub shape: Vec<usize>,
    /// Row-major values.
    pub values: Vec<f32>,
}

/// The parameters of `module` under PyTorch's conventions (`Linear` weights `[out, in]`, norm
/// `weight`/`bias`), as float32, keyed by the module paths — the reference's names for every
/// module of this workspace.
///
/// # Errors
/// [`Error::InvalidInput`] naming a tensor whose data cannot be read.
pub fn state_dict<B: Backend, M: ModuleSnapshot<B>>(module: &M) -> Result<Vec<NamedTensor>> {
    module
        .collect(None, Some(Box::new(BurnToPyTorchAdapter)), true)
        .into_iter()
        .map(|snapshot| {
            let key = snapshot.full_path();
            let data = snapshot
                .to_data()
                .map_err(|e| Error::invalid_input("module", format!("`{key}`: {e:?}")))?
                .convert_dtype(DType::F32);
            let shape = data.shape.to_vec();
            let values = data
                .to_vec::<f32>()
                .map_err(|e| Error::invalid_input("module", format!("`{key}`: {e:?}")))?;
            Ok(NamedTensor { key, shape, values })
        })
        .collect()
}

/// Gives 2-d `weight`s whose key ends with one of `suffixes` the 1×1-convolution shape
/// `[out, in, 1, 1]` (SD1 transformers' `proj_in`/`proj_out`, which this workspace holds as
/// `Linear`s and the loaders squeeze).
pub fn unsqueeze_conv_projections(tensors: &mut [NamedTensor], suffixes: &[&str]) {
    for t in tensors {
        if t.shape.len() == 2 && suffixes.iter().any(|s| t.key.ends_with(s)) {
            t.shape.extend([1, 1]);
        }
    }
}

/// Writes `tensors` as a safetensors file in `dtype` (`F32`, `F16` or `BF16`), with
/// `{"format": "pt"}` metadata as `save_pretrained` writes it.
///
/// # Errors
/// [`Error::InvalidInput`] for another dtype or a tensor whose values do not fill its shape,
/// [`Error::Format`] / [`Error::Io`] when the file cannot be written.
pub fn save_safetensors(path: &Path, tensors: &[NamedTensor], dtype: DType) -> Result<()> {
    let file_dtype = match dtype {
        DType::F32 => Dtype::F32,
        DType::F16 => Dtype::F16,
        DType::BF16 => Dtype::BF16,
        other => {
            return Err(Error::invalid_input(
                "weight dtype",
                format!("{other:?} (F32, F16 or BF16 expected)"),
            ));
        }
    };
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|t| match file_dtype {
            Dtype::F16 => t
                .values
                .iter()
                .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                .collect(),
            Dtype::BF16 => t
                .values
                .iter()
                .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
                .collect(),
            _ => t.values.iter().flat_map(|&v| v.to_le_bytes()).collect(),
        })
        .collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|(t, b)| {
            TensorView::new(file_dtype, t.shape.clone(), b)
                .map(|v| (t.key.clone(), v))
                .map_err(|e| Error::invalid_input("state dict", format!("`{}`: {e}", t.key)))
        })
        .collect::<Result<Vec<_>>>()?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(views, Some(metadata), path)
        .map_err(|e| Error::format(path, e.to_string()))
}

/// Writes `config` as a pretty-printed `config.json`, without `null` fields, with the given
/// extra keys (such as `_class_name`) first.
///
/// # Errors
/// [`Error::InvalidInput`] when `config` is not a JSON object, [`Error::Io`] when the file
/// cannot be written.
pub fn save_config_json(
    path: &Path,
    config: &impl Serialize,
    extra: &[(&str, serde_json::Value)],
) -> Result<()> {
    let value =
        serde_json::to_value(config).map_err(|e| Error::invalid_input("config", e.to_string()))?;
    let serde_json::Value::Object(fields) = value else {
        return Err(Error::invalid_input("config", "not a JSON object"));
    };
    let mut map = serde_json::Map::new();
    for (key, value) in extra {
        map.insert((*key).to_string(), value.clone());
    }
    for (key, value) in fields {
        if !value.is_null() {
            map.insert(key, value);
        }
    }
    let text = serde_json::to_string_pretty(&serde_json::Value::Object(map))
        .map_err(|e| Error::invalid_input("config", e.to_string()))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    std::fs::write(path, text + "\n").map_err(|e| Error::io(path, e))
}
