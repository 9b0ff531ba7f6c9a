//! [`Pretrained`]: one loading convention for every component.
//!
//! A component (UNet, VAE, text encoder, ControlNet, …) has a config read from a diffusers
//! `config.json`, a diffusers class name, weights in diffusers naming (a component folder) and
//! a key prefix in original single-file checkpoints. It implements
//! [`Pretrained::from_config`] (its constructor) and [`Pretrained::module_tensors`] (tensors in
//! any naming its crate's `weights.rs` knows, under the module's paths) and gets
//! [`from_source`](Pretrained::from_source),
//! [`from_pretrained`](Pretrained::from_pretrained) (a folder, or a Hugging Face repository id)
//! and [`from_single_file`](Pretrained::from_single_file) (its part of a checkpoint) for free.

use std::path::{Path, PathBuf};

use burn::prelude::*;

use super::{LoadOptions, TensorSource, load_module, open_component_weights};
use crate::{Error, Result};

/// A config read from a component's `config.json`.
pub trait ComponentConfig: Sized {
    /// Reads and checks the config file.
    ///
    /// # Errors
    /// [`Error::Io`], or [`Error::Config`] naming the file and the field at fault.
    fn read(path: &Path) -> Result<Self>;
}

/// Implements [`ComponentConfig`] for config types with an inherent
/// `from_file(path) -> Result<Self>`.
#[macro_export]
macro_rules! component_configs {
    ($($config:ty),* $(,)?) => {
        $(
            impl $crate::weights::ComponentConfig for $config {
                fn read(path: &std::path::Path) -> $crate::Result<Self> {
                    <$config>::from_file(path)
                }
            }
        )*
    };
}

/// The folder a component loads from: `dir` (with `~` expanded) or, for a Hugging Face
/// repository id, its snapshot in the cache (downloaded first when needed and allowed by
/// `options.hub`), then `options.subfolder` inside it.
///
/// # Errors
/// As [`hub::resolve`](crate::hub::resolve).
pub fn component_folder(dir: &Path, options: &LoadOptions) -> Result<PathBuf> {
    let subfolder = options.subfolder.as_deref();
    let wanted = crate::hub::Wanted::Component(subfolder);
    let root = crate::hub::resolve(dir, &options.hub, wanted, options.variant.as_deref())?;
    Ok(match subfolder {
        Some(subfolder) => root.join(subfolder),
        None => root,
    })
}

/// A model component loaded the same way as every other.
pub trait Pretrained<B: Backend>: Module<B> {
    /// The component's config.
    type Config: ComponentConfig;

    /// The diffusers class name (`"UNet2DConditionModel"`), used in messages.
    const CLASS_NAME: &'static str;

    /// The prefixes of the component's tensors in original single-file checkpoints, tried in
    /// order (`["model.diffusion_model."]` for the SD UNet); empty when the component does not
    /// come in single files.
    const SINGLE_FILE_PREFIXES: &'static [&'static str];

    /// The component for `config` with freshly initialised weights (what loading fills), as
    /// diffusers' `ModelMixin.from_config`.
    ///
    /// # Errors
    /// An invalid config.
    fn from_config(config: &Self::Config, device: &B::Device) -> Result<Self>;

    /// `source` (tensors in diffusers naming or in the original naming, the single-file prefix
    /// stripped) under the component's parameter paths, after checking `config` and the
    /// tensors' shapes against it. The conversion is the crate's `weights.rs`.
    ///
    /// # Errors
    /// An invalid config, tensors in no naming the component knows, or shapes that do not
    /// fit the config.
    fn module_tensors(config: &Self::Config, source: &TensorSource) -> Result<TensorSource>;

    /// `options` as this component loads with them (by default unchanged; a component whose
    /// files hold tensors it does not use tolerates them here).
    fn load_options(options: &LoadOptions) -> LoadOptions {
        options.clone()
    }

    /// A loading error with its tensor names as the checkpoint spells them, where the module's
    /// parameter paths differ (by default unchanged).
    fn checkpoint_names(error: Error) -> Error {
        error
    }

    /// Builds the component from `config` and tensors in diffusers naming or in the original
    /// naming (the prefix stripped): [`module_tensors`](Self::module_tensors) loaded strictly
    /// into [`from_config`](Self::from_config)'s model.
    ///
    /// # Errors
    /// An invalid config, or [`Error::Weights`] naming every missing, unexpected or
    /// mis-shaped tensor.
    fn from_source(
        config: &Self::Config,
        source: &TensorSource,
        options: &LoadOptions,
        device: &B::Device,
    ) -> Result<Self> {
        let tensors = Self::module_tensors(config, source)?;
        let model = Self::from_config(config, device)?;
        let options = Self::load_options(options);
        load_module(model, &tensors, Self::CLASS_NAME, &options).map_err(Self::checkpoint_names)
    }

    /// Loads a diffusers component folder: `config.json` and the weights (in the variant of
    /// `options` when present). `dir` may be a Hugging Face repository id (`org/name`), found
    /// in the cache or downloaded with `options.hub`, and `options.subfolder` names the
    /// component's folder inside it (see [`component_folder`]).
    ///
    /// # Errors
    /// A missing or invalid config or weight file, weights that do not match the config, or
    /// [`Error::Hub`] for a repository that is neither cached nor downloadable.
    fn from_pretrained(
        dir: impl AsRef<Path>,
        options: &LoadOptions,
        device: &B::Device,
    ) -> Result<Self> {
        let dir = &component_folder(dir.as_ref(), options)?;
        let config = Self::Config::read(&dir.join("config.json"))?;
        let source = open_component_weights(dir, options.variant.as_deref())?;
        Self::from_source(&config, &source, options, device)
    }

    /// The component's tensors in an original single-file checkpoint: those under the first
    /// of [`SINGLE_FILE_PREFIXES`](Self::SINGLE_FILE_PREFIXES) the checkpoint has, the prefix
    /// stripped.
    ///
    /// # Errors
    /// [`Error::Format`] when the checkpoint holds no tensor under any of the prefixes.
    fn single_file_tensors(checkpoint: &TensorSource) -> Result<TensorSource> {
        let prefixes = Self::SINGLE_FILE_PREFIXES;
        match prefixes.iter().find(|p| checkpoint.has_prefix(p)) {
            Some(prefix) => Ok(checkpoint.strip_prefix(prefix)),
            None => Err(Error::format(
                checkpoint.description(),
                format!(
                    "no {} tensors (`{}*`)",
                    Self::CLASS_NAME,
                    prefixes.first().copied().unwrap_or_default()
                ),
            )),
        }
    }

    /// Loads the component's part of an original single-file checkpoint (see
    /// [`single_file_tensors`](Self::single_file_tensors)).
    ///
    /// # Errors
    /// As [`single_file_tensors`](Self::single_file_tensors) and
    /// [`from_source`](Self::from_source).
    fn from_single_file(
        config: &Self::Config,
        checkpoint: &TensorSource,
        options: &LoadOptions,
        device: &B::Device,
    ) -> Result<Self> {
        let source = Self::single_file_tensors(checkpoint)?;
        Self::from_source(config, &source, options, device)
    }
}
