//! Saving a Task-Plugin in the official training-checkpoint layout (`train.py`):
//! `checkpoint-N/scb_net/` (a diffusers folder: `config.json` and
//! `diffusion_pytorch_model.safetensors`, as `save_pretrained` writes it) and
//! `checkpoint-N/tpb_net.pt` (`torch.save({"model": tpb.state_dict()})`). Both load with the
//! official code and with [`TaskPlugin::from_dir`](crate::TaskPlugin::from_dir).

use std::collections::HashMap;
use std::path::Path;

use burn::prelude::*;
use burn::tensor::DType;
use burn_store::{BurnToPyTorchAdapter, ModuleSnapshot};
use prompt_diffusion_core::{Error, Result};
use safetensors::Dtype;
use safetensors::tensor::TensorView;

use crate::torch_save::{NamedTensor, save_state_dict};
use crate::{CHECKPOINT_LAYOUT, SCBNet, TPBNet, TaskPlugin, weights};

/// The weight file `save_pretrained` writes into a diffusers folder.
pub const SCB_WEIGHTS: &str = "diffusion_pytorch_model.safetensors";

/// The tensors of a module under PyTorch's conventions (Linear weights `[out, in]`), as
/// float32, keyed by the module paths.
fn pytorch_tensors<B: Backend, M: ModuleSnapshot<B>>(module: &M) -> Result<Vec<NamedTensor>> {
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

/// The SCB's state dict as the official class holds it (1×1-convolution projections of SD1
/// transformers back to `[out, in, 1, 1]`).
pub fn scb_state_dict<B: Backend>(scb: &SCBNet<B>) -> Result<Vec<NamedTensor>> {
    let conv_projections = !scb.config().use_linear_projection;
    let mut tensors = pytorch_tensors(scb)?;
    for t in &mut tensors {
        let projection = t.key.ends_with("proj_in.weight") || t.key.ends_with("proj_out.weight");
        if conv_projections && projection && t.shape.len() == 2 {
            t.shape.extend([1, 1]);
        }
    }
    Ok(tensors)
}

/// The TPB's state dict under the official `visual_projection.{0,1,3,4,6}` names.
pub fn tpb_state_dict<B: Backend>(tpb: &TPBNet<B>) -> Result<Vec<NamedTensor>> {
    let layers = tpb.config().num_cross_proj_layers;
    pytorch_tensors(tpb)?
        .into_iter()
        .map(|mut t| {
            t.key = weights::tpb_official_key(&t.key, layers).ok_or_else(|| {
                Error::invalid_input("TPB", format!("no official name for `{}`", t.key))
            })?;
            Ok(t)
        })
        .collect()
}

/// Writes `dir/scb_net/` and `dir/tpb_net.pt` (creating `dir`).
///
/// # Errors
/// [`Error::Io`] when a file cannot be written.
pub fn save_checkpoint<B: Backend>(plugin: &TaskPlugin<B>, dir: impl AsRef<Path>) -> Result<()> {
    let dir = dir.as_ref();
    let (tpb_file, scb_dir) = CHECKPOINT_LAYOUT;
    let scb_dir = dir.join(scb_dir);
    std::fs::create_dir_all(&scb_dir).map_err(|e| Error::io(&scb_dir, e))?;

    let mut config = serde_json::to_value(plugin.scb.config())
        .map_err(|e| Error::invalid_input("SCB config", e.to_string()))?;
    if let Some(map) = config.as_object_mut() {
        map.retain(|_, v| !v.is_null());
        map.insert("_class_name".into(), "SCBNet".into());
    }
    let text = serde_json::to_string_pretty(&config)
        .map_err(|e| Error::invalid_input("SCB config", e.to_string()))?;
    let path = scb_dir.join("config.json");
    std::fs::write(&path, text + "\n").map_err(|e| Error::io(&path, e))?;

    let tensors = scb_state_dict(&plugin.scb)?;
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|t| t.values.iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|(t, b)| {
            TensorView::new(Dtype::F32, t.shape.clone(), b)
                .map(|v| (t.key.clone(), v))
                .map_err(|e| Error::invalid_input("SCB", format!("`{}`: {e}", t.key)))
        })
        .collect::<Result<Vec<_>>>()?;
    let path = scb_dir.join(SCB_WEIGHTS);
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(views, Some(metadata), &path)
        .map_err(|e| Error::format(&path, e.to_string()))?;

    save_state_dict(&dir.join(tpb_file), "model", &tpb_state_dict(&plugin.tpb)?)
}
