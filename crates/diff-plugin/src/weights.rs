//! Key tables and file layouts of the official Diff-Plugin weights.
//!
//! | file | container | keys | handled by |
//! |---|---|---|---|
//! | `pre-trained/<task>/scb/diffusion_pytorch_model.bin` (`checkpoint-N/scb_net/`) | diffusers folder, plain state dict | the official names = this crate's paths | identity ([`strip_data_parallel`]) |
//! | `pre-trained/<task>/tpb.pt` (`checkpoint-N/tpb_net.pt`) | `torch.save({"model": state_dict})` | `visual_projection.{0,1,3,4,6}.{weight,bias}` | [`unwrap_checkpoint`], [`tpb_key`] |
//! | `pre-trained/plugin_selector/PromptTunner.pt` | `torch.save({"model": state_dict})` | `proj_v.*`, `proj_t.*`, `logit_scale` (0-d) | [`unwrap_checkpoint`], [`split_logit_scale`] |
//!
//! Files written from a DDP/`DataParallel`-wrapped module carry a `module.` prefix on every
//! key; it is removed wherever present (the official loaders fall back to `DataParallel` or
//! strip it). The TPB's PyTorch `Sequential` numbers its LeakyReLUs too, so the parameter
//! indices have gaps: stage `i` is `visual_projection.{3i}` (Linear) and `.{3i+1}` (LayerNorm),
//! the output projection `visual_projection.{3n}`.

use std::path::Path;

use burn::prelude::*;
use burn::tensor::DType;
use prompt_diffusion_core::limits::{MAX_LAYERS, MAX_WIDTH};
use prompt_diffusion_core::weights::{LoadOptions, TensorSource, load_module};
use prompt_diffusion_core::{Error, Result};

use crate::{PluginSelector, TPBConfig, TPBNet};

/// The prefix `torch.nn.DataParallel` / DDP adds to every key.
pub const DATA_PARALLEL_PREFIX: &str = "module.";

/// The top-level key of the official `.pt` files (`{"model": state_dict}`), as a prefix of
/// the flattened names.
pub const CHECKPOINT_PREFIX: &str = "model.";

/// The official name of the TPB's `Sequential`.
pub const TPB_SEQUENTIAL: &str = "visual_projection";

/// `source` with a leading `module.` removed from every key that has one.
pub fn strip_data_parallel(source: &TensorSource) -> TensorSource {
    if !source.has_prefix(DATA_PARALLEL_PREFIX) {
        return source.clone();
    }
    source
        .rename(|k| {
            Some(
                k.strip_prefix(DATA_PARALLEL_PREFIX)
                    .unwrap_or(k)
                    .to_string(),
            )
        })
        // Keys differing only by the prefix cannot come from one module; keep the original
        // names so loading reports them.
        .unwrap_or_else(|_| source.clone())
}

/// The state dict of an official `.pt` file: the tensors under the top-level `model` key
/// (when the file has one), without `module.` prefixes.
pub fn unwrap_checkpoint(source: &TensorSource) -> TensorSource {
    let inner = if source.has_prefix(CHECKPOINT_PREFIX) {
        source.strip_prefix(CHECKPOINT_PREFIX)
    } else {
        source.clone()
    };
    strip_data_parallel(&inner)
}

/// The module path of an official TPB key for a branch with `layers` hidden stages, or `None`
/// for a key outside the table.
///
/// `visual_projection.{3i}.p` → `hidden.{i}.linear.p`, `.{3i+1}.p` → `hidden.{i}.norm.p`,
/// `.{3·layers}.p` → `out.p`.
pub fn tpb_key(official: &str, layers: usize) -> Option<String> {
    let rest = official.strip_prefix(TPB_SEQUENTIAL)?.strip_prefix('.')?;
    let (index, param) = rest.split_once('.')?;
    let k: usize = index.parse().ok()?;
    let (i, slot) = (k / 3, k % 3);
    match slot {
        0 if i == layers => Some(format!("out.{param}")),
        0 if i < layers => Some(format!("hidden.{i}.linear.{param}")),
        1 if i < layers => Some(format!("hidden.{i}.norm.{param}")),
        _ => None,
    }
}

/// The official key of a TPB module path (the inverse of [`tpb_key`]).
pub fn tpb_official_key(path: &str, layers: usize) -> Option<String> {
    if let Some(param) = path.strip_prefix("out.") {
        return Some(format!("{TPB_SEQUENTIAL}.{}.{param}", 3 * layers));
    }
    let rest = path.strip_prefix("hidden.")?;
    let (index, rest) = rest.split_once('.')?;
    let i: usize = index.parse().ok()?;
    let (module, param) = rest.split_once('.')?;
    let k = match module {
        "linear" => 3 * i,
        "norm" => 3 * i + 1,
        _ => return None,
    };
    (i < layers).then(|| format!("{TPB_SEQUENTIAL}.{k}.{param}"))
}

/// The shape of the TPB stored in `source` (official names): the stage count from the
/// highest `visual_projection` index, the widths from the output projection.
///
/// # Errors
/// [`Error::Format`] when the tensors do not describe a TPB.
pub fn tpb_config(source: &TensorSource) -> Result<TPBConfig> {
    let bad = |reason: String| Error::format(source.description(), reason);
    let last = source
        .keys()
        .filter_map(|k| k.strip_prefix("visual_projection."))
        .filter_map(|rest| rest.split_once('.')?.0.parse::<usize>().ok())
        .max()
        .ok_or_else(|| bad("no `visual_projection.*` tensor: not a Task-Prompt Branch".into()))?;
    if last % 3 != 0 {
        return Err(bad(format!(
            "the last `visual_projection` index is {last}, expected a multiple of 3"
        )));
    }
    let key = format!("visual_projection.{last}.weight");
    let within = |what: &str, value: usize, max: usize| {
        if value == 0 || value > max {
            Err(bad(format!(
                "`{key}` implies {what} = {value}, outside 1..={max}"
            )))
        } else {
            Ok(())
        }
    };
    match source.shape(&key) {
        Some(&[out_dim, clip_v_dim]) => {
            // Stages are counted from the key names alone: bound them before anything is built.
            within("num_cross_proj_layers", last / 3, MAX_LAYERS)?;
            within("out_dim", out_dim, MAX_WIDTH)?;
            within("clip_v_dim", clip_v_dim, MAX_WIDTH)?;
            Ok(TPBConfig {
                clip_v_dim,
                num_cross_proj_layers: last / 3,
                out_dim,
            })
        }
        other => Err(bad(format!(
            "`{key}` has shape {other:?}, expected [out, in]"
        ))),
    }
}

/// Renames an official TPB state dict to the module's paths (unknown keys are kept, so
/// loading reports them).
///
/// # Errors
/// [`Error::Format`] when the tensors do not describe a TPB.
pub fn tpb_to_module_names(source: &TensorSource) -> Result<(TPBConfig, TensorSource)> {
    let config = tpb_config(source)?;
    let layers = config.num_cross_proj_layers;
    let renamed = source.rename(|k| Some(tpb_key(k, layers).unwrap_or_else(|| k.to_string())))?;
    Ok((config, renamed))
}

/// Loads a TPB from an official `tpb.pt`/`tpb_net.pt` (or a safetensors file with the same
/// keys).
///
/// # Errors
/// [`Error::Io`] when the file is absent, [`Error::Format`] when it is not a TPB,
/// [`Error::Weights`] when tensors are missing, unexpected or mis-shaped.
pub fn load_tpb<B: Backend>(
    path: impl AsRef<Path>,
    options: &LoadOptions,
    device: &B::Device,
) -> Result<TPBNet<B>> {
    let source = unwrap_checkpoint(&TensorSource::open(path)?);
    let (config, source) = tpb_to_module_names(&source)?;
    load_module(config.init(device), &source, "TPBNet", options)
}

/// Removes the selector's 0-d `logit_scale` from `source`, returning its value.
///
/// # Errors
/// [`Error::Format`]/[`Error::Shape`] when it is absent or not a single value.
pub fn split_logit_scale(source: &TensorSource) -> Result<(f64, TensorSource)> {
    let key = "logit_scale";
    let data = source.data(key)?;
    if data.shape.iter().product::<usize>() != 1 || !data.dtype.is_float() {
        return Err(Error::Shape {
            origin: source.file_of(key).map(Path::to_path_buf),
            key: key.into(),
            expected: "a single float ([] or [1])".into(),
            found: data.shape.to_vec(),
        });
    }
    let values: Vec<f32> = data
        .convert_dtype(DType::F32)
        .to_vec()
        .map_err(|e| Error::format(source.description(), format!("`{key}`: {e:?}")))?;
    let mut rest = source.clone();
    rest.remove(key);
    Ok((f64::from(values[0]), rest))
}

/// Loads the Plugin-Selector head from the official `PromptTunner.pt`.
///
/// # Errors
/// As [`load_tpb`]; also when `logit_scale` is absent.
pub fn load_selector<B: Backend>(
    path: impl AsRef<Path>,
    options: &LoadOptions,
    device: &B::Device,
) -> Result<PluginSelector<B>> {
    let source = unwrap_checkpoint(&TensorSource::open(path)?);
    let (logit_scale, source) = split_logit_scale(&source)?;
    let dim = match source.shape("proj_v.weight") {
        Some(&[out, inp]) if out == inp => out,
        other => {
            return Err(Error::format(
                source.description(),
                format!("`proj_v.weight` has shape {other:?}, expected [dim, dim]"),
            ));
        }
    };
    let mut selector = load_module(
        PluginSelector::new(dim, device),
        &source,
        "PluginSelector",
        options,
    )?;
    selector.logit_scale = logit_scale;
    Ok(selector)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tpb_indices_skip_the_activations() {
        let cases = [
            ("visual_projection.0.weight", Some("hidden.0.linear.weight")),
            ("visual_projection.1.bias", Some("hidden.0.norm.bias")),
            ("visual_projection.3.bias", Some("hidden.1.linear.bias")),
            ("visual_projection.4.weight", Some("hidden.1.norm.weight")),
            ("visual_projection.6.weight", Some("out.weight")),
            ("visual_projection.2.weight", None),
            ("visual_projection.7.weight", None),
            ("visual_projection.9.weight", None),
            ("proj_v.weight", None),
        ];
        for (official, path) in cases {
            assert_eq!(tpb_key(official, 2).as_deref(), path, "{official}");
            if let Some(path) = path {
                assert_eq!(tpb_official_key(path, 2).as_deref(), Some(official));
            }
        }
        assert_eq!(tpb_official_key("hidden.2.linear.weight", 2), None);
    }

    #[test]
    fn prefixes_are_removed() {
        let t = |k: &str| (k.to_string(), TensorData::new(vec![0f32], [1]));
        let source = TensorSource::from_tensors(
            "test",
            [
                t("model.module.proj_v.weight"),
                t("model.module.logit_scale"),
            ],
        );
        let inner = unwrap_checkpoint(&source);
        let keys: Vec<&str> = inner.keys().collect();
        assert_eq!(keys, ["logit_scale", "proj_v.weight"]);
        let (scale, rest) = split_logit_scale(&inner).unwrap();
        assert_eq!(scale, 0.0);
        assert_eq!(rest.keys().collect::<Vec<_>>(), ["proj_v.weight"]);
    }
}
