//! The error type shared by every prompt-diffusion crate.
//!
//! Each variant names what was at fault — the file, the tensor key, the expected and the found
//! shape or dtype, the config field — so that a message read by a user points at the cause.

use std::fmt;
use std::path::PathBuf;

/// Result alias used across the workspace.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every failure a prompt-diffusion library function can report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file or folder could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The operating-system error.
        #[source]
        source: std::io::Error,
    },

    /// A file exists but its contents are not what its format requires (truncated safetensors,
    /// broken pickle, invalid JSON, …).
    #[error("{}: {reason}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// A config value is invalid or unsupported.
    #[error("{}config field `{field}`: {reason}", fmt_origin(origin))]
    Config {
        /// The config file, when the config came from one.
        origin: Option<PathBuf>,
        /// The offending field.
        field: String,
        /// Why it was rejected.
        reason: String,
    },

    /// Tensors in a weight file do not match the module they are loaded into.
    #[error(transparent)]
    Weights(Box<WeightsError>),

    /// A single tensor has the wrong shape (outside module loading, e.g. a latents file).
    #[error(
        "{}tensor `{key}` has shape {found:?}, expected {expected}",
        fmt_origin(origin)
    )]
    Shape {
        /// The file the tensor came from, when there is one.
        origin: Option<PathBuf>,
        /// The tensor's name.
        key: String,
        /// A description of the accepted shapes.
        expected: String,
        /// The shape that was found.
        found: Vec<usize>,
    },

    /// A tensor has a dtype that cannot be used here.
    #[error(
        "{}tensor `{key}` has dtype {found}, expected {expected}",
        fmt_origin(origin)
    )]
    DType {
        /// The file the tensor came from, when there is one.
        origin: Option<PathBuf>,
        /// The tensor's name.
        key: String,
        /// A description of the accepted dtypes.
        expected: String,
        /// The dtype that was found.
        found: String,
    },

    /// A caller-supplied value is out of range or inconsistent.
    #[error("invalid {what}: {reason}")]
    InvalidInput {
        /// The argument or value (e.g. `height`, `strength`).
        what: String,
        /// Why it was rejected.
        reason: String,
    },

    /// The tokenizer could not be built or failed on an input.
    #[error("tokenizer{}: {reason}", path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    Tokenizer {
        /// The tokenizer file or folder, when there is one.
        path: Option<PathBuf>,
        /// What went wrong.
        reason: String,
    },

    /// An image could not be decoded or encoded.
    #[error("image {}: {source}", path.display())]
    Image {
        /// The image file.
        path: PathBuf,
        /// The decoder's error.
        #[source]
        source: image::ImageError,
    },

    /// A feature, backend, dtype or model variant that this build does not support.
    #[error("unsupported: {0}")]
    Unsupported(String),

    /// A progress callback asked to stop.
    #[error("cancelled at step {step}")]
    Cancelled {
        /// The step at which the run stopped (0-based).
        step: usize,
    },

    /// A config value disagrees with the shapes in the weight file's header (checked before
    /// any module is allocated).
    #[error(transparent)]
    ConfigMismatch(Box<ConfigMismatch>),

    /// A run would need more memory than allowed; refused before allocating.
    #[error(
        "{what} needs about {} ({breakdown}), more than the memory limit of {} ({limit_source}); lower the size, the number of images or the batch, or raise the limit (--max-memory)",
        crate::memory::format_bytes(*needed),
        crate::memory::format_bytes(*limit)
    )]
    OutOfMemory {
        /// The run (e.g. `txt2img 8192×8192`).
        what: String,
        /// The estimated peak, in bytes.
        needed: u64,
        /// The largest contributions to the estimate.
        breakdown: String,
        /// The limit, in bytes.
        limit: u64,
        /// Where the limit comes from (an option, or the available memory).
        limit_source: String,
    },

    /// NaN or infinite values appeared in a tensor the pipeline checks.
    #[error("{count_desc} in {stage}; {hint}")]
    NonFinite {
        /// Where they appeared (e.g. `the latents after denoising step 3`).
        stage: String,
        /// What was found (e.g. `NaN values`).
        count_desc: String,
        /// What to try.
        hint: String,
    },

    /// A model named by a Hugging Face repository id is neither in the cache nor downloadable.
    #[error("model `{repo}` (revision {revision}): {reason}")]
    Hub {
        /// The repository id (`org/name`).
        repo: String,
        /// The branch, tag or commit asked for.
        revision: String,
        /// What was looked for, where, and why it was not found.
        reason: String,
        /// The download client's error, when there is one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },

    /// Another error, with advice on what to do about it.
    #[error("{source}; {hint}")]
    WithHint {
        /// The error.
        source: Box<Error>,
        /// What to do.
        hint: String,
    },
}

fn fmt_origin(origin: &Option<PathBuf>) -> String {
    origin
        .as_ref()
        .map(|p| format!("{}: ", p.display()))
        .unwrap_or_default()
}

impl From<WeightsError> for Error {
    fn from(report: WeightsError) -> Self {
        Error::Weights(Box::new(report))
    }
}

impl Error {
    /// Shorthand for [`Error::InvalidInput`].
    pub fn invalid_input(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidInput {
            what: what.into(),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`Error::Config`] without a file.
    pub fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Config {
            origin: None,
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`Error::Io`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Shorthand for [`Error::Format`].
    pub fn format(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Format {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// Adds advice to an error ([`Error::WithHint`]).
    pub fn with_hint(self, hint: impl Into<String>) -> Self {
        Error::WithHint {
            source: Box::new(self),
            hint: hint.into(),
        }
    }

    /// Attaches a config file to a [`Error::Config`] that has none; other errors pass through.
    pub fn with_config_origin(self, path: impl Into<PathBuf>) -> Self {
        match self {
            Error::Config {
                origin: None,
                field,
                reason,
            } => Error::Config {
                origin: Some(path.into()),
                field,
                reason,
            },
            other => other,
        }
    }
}

/// A tensor whose shape in the file differs from the parameter it should fill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeMismatch {
    /// The tensor's name (in the module's naming, after key remapping).
    pub key: String,
    /// The parameter's shape.
    pub expected: Vec<usize>,
    /// The shape in the file.
    pub found: Vec<usize>,
}

/// Everything that did not match when loading a weight file into a module.
///
/// Loading is strict: a module parameter without a tensor (`missing`), a tensor without a
/// parameter (`unexpected`), a shape that differs (`shapes`) and a tensor that could not be read
/// (`unreadable`) are all reported together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WeightsError {
    /// The weight file(s) or folder that were loaded.
    pub source: String,
    /// The module being loaded (e.g. `UNet2DConditionModel`).
    pub module: String,
    /// Parameters of the module that no tensor filled.
    pub missing: Vec<String>,
    /// Tensors of the file that no parameter took.
    pub unexpected: Vec<String>,
    /// Tensors whose shape does not match their parameter.
    pub shapes: Vec<ShapeMismatch>,
    /// Tensors whose data could not be read, with the reason.
    pub unreadable: Vec<(String, String)>,
}

impl WeightsError {
    /// True when nothing is wrong.
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty()
            && self.unexpected.is_empty()
            && self.shapes.is_empty()
            && self.unreadable.is_empty()
    }
}

const LISTED: usize = 8;

fn list(f: &mut fmt::Formatter<'_>, label: &str, items: &[String]) -> fmt::Result {
    if items.is_empty() {
        return Ok(());
    }
    write!(f, "; {} {label}: ", items.len())?;
    for (i, item) in items.iter().take(LISTED).enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "`{item}`")?;
    }
    if items.len() > LISTED {
        write!(f, ", … ({} more)", items.len() - LISTED)?;
    }
    Ok(())
}

impl fmt::Display for WeightsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: weights do not match {}", self.source, self.module)?;
        list(f, "missing", &self.missing)?;
        list(f, "unexpected", &self.unexpected)?;
        let shapes: Vec<String> = self
            .shapes
            .iter()
            .map(|s| format!("{} (expected {:?}, found {:?})", s.key, s.expected, s.found))
            .collect();
        list(f, "with wrong shape", &shapes)?;
        let unreadable: Vec<String> = self
            .unreadable
            .iter()
            .map(|(k, why)| format!("{k}: {why}"))
            .collect();
        list(f, "unreadable", &unreadable)
    }
}

impl std::error::Error for WeightsError {}

/// What [`Error::ConfigMismatch`] reports: a config field that disagrees with a tensor (or a
/// count of tensors) in the weight file's header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{file}: `{key}` is {found} in the weights, but the {module} config `{field}` implies {expected}"
)]
pub struct ConfigMismatch {
    /// The weight file (or its description).
    pub file: String,
    /// The module being built (e.g. `UNet2DConditionModel`).
    pub module: String,
    /// The tensor key, or the key pattern that was counted.
    pub key: String,
    /// The config field and its value (e.g. `block_out_channels[0] = 320`).
    pub field: String,
    /// What the config implies (a shape or a count).
    pub expected: String,
    /// What the weight file holds.
    pub found: String,
}

impl From<ConfigMismatch> for Error {
    fn from(mismatch: ConfigMismatch) -> Self {
        Error::ConfigMismatch(Box::new(mismatch))
    }
}
