//! What the text and vision towers share around their modules: reading a transformers folder
//! (a standalone tower or a full `CLIPModel`) and the checked, strict load of a tower's
//! weights. Each config type says how its tower's keys are named.

use std::path::Path;

use prompt_diffusion_core::Result;
use prompt_diffusion_core::weights::{LoadOptions, TensorSource, open_component_weights};
use serde::de::DeserializeOwned;

use crate::config::{Tower, parse_tower, read_tower};
use crate::encoder::CLIPEncoderConfig;
use crate::weights;
use crate::{CLIPTextConfig, CLIPVisionConfig};

/// A tower's config and the naming of its weights.
pub(crate) trait TowerConfig: DeserializeOwned {
    /// Which part of a `CLIPConfig` holds this tower.
    const TOWER: Tower;

    /// Checks the values a model can be built from.
    fn check(&self) -> Result<()>;

    /// The shared encoder's hyper-parameters.
    fn encoder(&self) -> CLIPEncoderConfig;

    /// Checks the config against the header of `source` (keys with the tower's level).
    fn check_weights(&self, source: &TensorSource, projection: bool) -> Result<()>;

    /// `source` with the tower's level (`text_model.`, `vision_model.`) on every key.
    fn with_level(source: &TensorSource) -> Result<TensorSource>;

    /// This tower's tensors of a full `CLIPModel` file.
    fn tower_of(source: &TensorSource) -> TensorSource;
}

/// Implements [`TowerConfig`] and the readers `from_file`/`from_json` for a config type from
/// its tower and its key functions (both configs name the encoder fields alike).
macro_rules! tower_config {
    (
        $config:ty, $tower:expr, $part:literal,
        $check_weights:path, $with_level:path, $tower_of:path
    ) => {
        impl $config {
            #[doc = concat!("Reads a `config.json` holding a `", stringify!($config), "` or a")]
            #[doc = concat!("`CLIPConfig` (its `", $part, "`).")]
            ///
            /// # Errors
            /// [`Error::Io`](prompt_diffusion_core::Error::Io) when the file cannot be read,
            /// [`Error::Config`](prompt_diffusion_core::Error::Config) naming the file and field
            /// when a value has the wrong type.
            pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
                Ok(read_tower(path.as_ref(), $tower)?.0)
            }

            #[doc = concat!("Parses a `", stringify!($config), "` or `CLIPConfig` JSON string.")]
            ///
            /// # Errors
            /// [`Error::Config`](prompt_diffusion_core::Error::Config) naming the field at fault.
            pub fn from_json(text: &str) -> Result<Self> {
                Ok(parse_tower(text, $tower)?.0)
            }
        }

        impl TowerConfig for $config {
            const TOWER: Tower = $tower;

            fn check(&self) -> Result<()> {
                self.validate()
            }

            fn encoder(&self) -> CLIPEncoderConfig {
                CLIPEncoderConfig {
                    hidden_size: self.hidden_size,
                    intermediate_size: self.intermediate_size,
                    num_attention_heads: self.num_attention_heads,
                    num_hidden_layers: self.num_hidden_layers,
                    hidden_act: self.hidden_act,
                    layer_norm_eps: self.layer_norm_eps,
                }
            }

            fn check_weights(&self, source: &TensorSource, projection: bool) -> Result<()> {
                $check_weights(self, source, projection)
            }

            fn with_level(source: &TensorSource) -> Result<TensorSource> {
                $with_level(source)
            }

            fn tower_of(source: &TensorSource) -> TensorSource {
                $tower_of(source)
            }
        }
    };
}

tower_config!(
    CLIPTextConfig,
    Tower::Text,
    "text_config",
    weights::check_text_weights,
    weights::text_model_keys,
    weights::text_tower
);
tower_config!(
    CLIPVisionConfig,
    Tower::Vision,
    "vision_config",
    weights::check_vision_weights,
    weights::vision_model_keys,
    weights::vision_tower
);

/// Reads a transformers folder's `config.json` (validated, errors naming the file) and opens
/// its weights (in `options.variant`), keeping only this tower's tensors of a full `CLIPModel`.
pub(crate) fn open_folder<C: TowerConfig>(
    dir: &Path,
    options: &LoadOptions,
) -> Result<(C, TensorSource)> {
    let dir = &prompt_diffusion_core::weights::component_folder(dir, options)?;
    let path = dir.join("config.json");
    let (config, full_clip): (C, bool) = read_tower(&path, C::TOWER)?;
    // Validated here too, so that an error names the config file.
    config.check().map_err(|e| e.with_config_origin(&path))?;
    let source = open_component_weights(dir, options.variant.as_deref())?;
    let source = if full_clip {
        C::tower_of(&source)
    } else {
        source
    };
    Ok((config, source))
}

/// Validates `config`, names `source`'s keys as the tower's and checks them against the
/// config (`projection`: whether the model has the tower's projection).
pub(crate) fn module_tensors<C: TowerConfig>(
    config: &C,
    source: &TensorSource,
    projection: bool,
) -> Result<TensorSource> {
    config.check()?;
    let source = C::with_level(source)?;
    config.check_weights(&source, projection)?;
    Ok(source)
}

/// Implements [`Pretrained`](prompt_diffusion_core::weights::Pretrained) for a tower model
/// `$model<B>` built by its `init` from a `$config`: `projection` says whether the model has the
/// tower's projection, `prefixes` are its single-file prefixes, `ignore` lists the patterns of
/// tensors a folder may hold that the model does not use. The doc comments of the two methods
/// are given before `fn from_pretrained;` and `fn module_tensors;`. Loading tolerates the
/// `position_ids` buffers transformers saves.
macro_rules! loaders {
    (
        $model:ident, $config:ty, projection: $projection:expr, prefixes: $prefixes:expr,
        ignore: [$($ignore:expr),*],
        $(#[$folder_doc:meta])*
        fn from_pretrained;
        $(#[$source_doc:meta])*
        fn module_tensors;
    ) => {
        impl<B: Backend> prompt_diffusion_core::weights::Pretrained<B> for $model<B> {
            type Config = $config;
            const CLASS_NAME: &'static str = stringify!($model);
            const SINGLE_FILE_PREFIXES: &'static [&'static str] = $prefixes;

            fn from_config(config: &$config, device: &B::Device) -> Result<Self> {
                config.validate()?;
                Ok(Self::init(config, device))
            }

            $(#[$source_doc])*
            fn module_tensors(config: &$config, source: &TensorSource) -> Result<TensorSource> {
                $crate::tower::module_tensors(config, source, $projection)
            }

            fn load_options(options: &LoadOptions) -> LoadOptions {
                $crate::weights::tolerate_buffers(options)
            }

            $(#[$folder_doc])*
            fn from_pretrained(
                dir: impl AsRef<std::path::Path>,
                options: &LoadOptions,
                device: &B::Device,
            ) -> Result<Self> {
                let (config, source) = $crate::tower::open_folder(dir.as_ref(), options)?;
                let options = options.clone()$(.ignore($ignore))*;
                Self::from_source(&config, &source, &options, device)
            }
        }
    };
}
pub(crate) use loaders;
