//! Weight files: reading them ([`TensorSource`]), finding them in diffusers folders
//! ([`find_component_weights`]) and loading them strictly into modules ([`load_module`]).
//!
//! Every model crate addresses tensors by the reference's own names and keeps the key tables for
//! other checkpoint layouts (original LDM single files, official repositories) in its
//! `weights.rs`, as functions passed to [`TensorSource::rename`].

mod load;
mod naming;
mod pickle;
mod pretrained;
mod save;
mod source;
mod torch;

use std::path::{Path, PathBuf};

pub use load::{CastFloats, CheckedData, LoadOptions, SqueezeConv1x1, load_module};
pub use naming::WeightNaming;
pub use pretrained::{ComponentConfig, Pretrained, component_folder};
pub use save::{
    NamedTensor, save_config_json, save_safetensors, state_dict, unsqueeze_conv_projections,
};
pub use source::{DataFn, TensorSource, WeightFormat};
pub use torch::MAX_PICKLE_BYTES;

use crate::{Error, Result};

/// The string values of a PyTorch checkpoint's top-level dictionary, by key (such as the
/// `name` of an AUTOMATIC1111 textual-inversion embedding); other values are skipped. The
/// pickle is read without running code, and the file is checked as [`TensorSource::from_pickle`]
/// checks it.
///
/// # Errors
/// [`Error::Io`] or [`Error::Format`] naming the file.
pub fn checkpoint_strings(
    path: impl AsRef<Path>,
) -> Result<std::collections::BTreeMap<String, String>> {
    torch::read_strings(path.as_ref())
}

/// The weight-file stems diffusers and transformers use, in the order they are looked for.
pub const WEIGHT_STEMS: [&str; 3] = ["diffusion_pytorch_model", "model", "pytorch_model"];

/// Finds the weights of a diffusers component folder (`unet/`, `vae/`, `text_encoder/`, …).
///
/// Looks, for each stem of [`WEIGHT_STEMS`], for `<stem>.<variant>.safetensors`, the sharded
/// `<stem>.safetensors.index.<variant>.json`, then the same without the variant, then the
/// legacy `<stem>[.<variant>].bin`. A requested variant that is absent falls back to the
/// default files with a warning, as diffusers does for folders without that variant.
///
/// # Errors
/// [`Error::Io`] when the folder does not exist, [`Error::Format`] when it has no weight file.
pub fn find_component_weights(dir: impl AsRef<Path>, variant: Option<&str>) -> Result<PathBuf> {
    let dir = dir.as_ref();
    if !dir.is_dir() {
        return Err(Error::io(
            dir,
            std::io::Error::new(std::io::ErrorKind::NotFound, "component folder not found"),
        ));
    }
    let found = weight_file_names(variant)
        .iter()
        .map(|name| dir.join(name))
        .find(|path| path.is_file())
        .ok_or_else(|| {
            Error::format(
                dir,
                "no weight file (expected diffusion_pytorch_model.safetensors, model.safetensors, a sharded .safetensors.index.json or a .bin)",
            )
        })?;
    if let Some(v) = variant {
        let name = found
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if !name.contains(&format!(".{v}.")) {
            tracing::warn!("{}: no `{v}` variant, using {name}", dir.display());
        }
    }
    Ok(found)
}

/// The weight-file names [`find_component_weights`] looks for, in its order.
pub fn weight_file_names(variant: Option<&str>) -> Vec<String> {
    let mut candidates = Vec::new();
    if let Some(v) = variant {
        for stem in WEIGHT_STEMS {
            candidates.push(format!("{stem}.{v}.safetensors"));
            candidates.push(format!("{stem}.safetensors.index.{v}.json"));
        }
    }
    for stem in WEIGHT_STEMS {
        candidates.push(format!("{stem}.safetensors"));
        candidates.push(format!("{stem}.safetensors.index.json"));
    }
    for stem in WEIGHT_STEMS {
        if let Some(v) = variant {
            candidates.push(format!("{stem}.{v}.bin"));
        }
        candidates.push(format!("{stem}.bin"));
    }
    candidates
}

/// Opens the weights of a diffusers component folder (see [`find_component_weights`]).
pub fn open_component_weights(
    dir: impl AsRef<Path>,
    variant: Option<&str>,
) -> Result<TensorSource> {
    TensorSource::open(find_component_weights(dir, variant)?)
}
