//! Saving a Task-Plugin in the official training-checkpoint layout (`train.py`):
//! `checkpoint-N/scb_net/` (a diffusers folder: `config.json` and
//! `diffusion_pytorch_model.safetensors`, as `save_pretrained` writes it) and
//! `checkpoint-N/tpb_net.pt` (`torch.save({"model": tpb.state_dict()})`). Both load with the
//! official code and with [`TaskPlugin::from_dir`](crate::TaskPlugin::from_dir).

use std::path::Path;

use burn::prelude::*;
use burn::tensor::DType;
use prompt_diffusion_core::weights::{
    NamedTensor, save_config_json, save_safetensors, state_dict, unsqueeze_conv_projections,
};
use prompt_diffusion_core::{Error, Result};

use crate::torch_save::save_state_dict;
use crate::{CHECKPOINT_LAYOUT, SCBNet, TPBNet, TaskPlugin, weights};

/// The weight file `save_pretrained` writes into a diffusers folder.
pub const SCB_WEIGHTS: &str = "diffusion_pytorch_model.safetensors";

/// The SCB's state dict as the official class holds it (1×1-convolution projections of SD1
/// transformers back to `[out, in, 1, 1]`).
pub fn scb_state_dict<B: Backend>(scb: &SCBNet<B>) -> Result<Vec<NamedTensor>> {
    let conv_projections = !scb.config().use_linear_projection;
    let mut tensors = state_dict(scb)?;
    if conv_projections {
        unsqueeze_conv_projections(&mut tensors, &["proj_in.weight", "proj_out.weight"]);
    }
    Ok(tensors)
}

/// The TPB's state dict under the official `visual_projection.{0,1,3,4,6}` names.
pub fn tpb_state_dict<B: Backend>(tpb: &TPBNet<B>) -> Result<Vec<NamedTensor>> {
    let layers = tpb.config().num_cross_proj_layers;
    state_dict(tpb)?
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
    let class = [("_class_name", serde_json::Value::from("SCBNet"))];
    save_config_json(&scb_dir.join("config.json"), plugin.scb.config(), &class)?;
    let tensors = scb_state_dict(&plugin.scb)?;
    save_safetensors(&scb_dir.join(SCB_WEIGHTS), &tensors, DType::F32)?;
    save_state_dict(&dir.join(tpb_file), "model", &tpb_state_dict(&plugin.tpb)?)
}
