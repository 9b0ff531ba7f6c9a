//! [`WeightNaming`]: whether a component's weight file uses diffusers' names or the original
//! repository's.

use super::TensorSource;

/// The naming of a component's weight file. Each model crate's `weights.rs` knows the original
/// naming of its component (LDM's `openaimodel` UNet and KL autoencoder, `cldm` ControlNets) and
/// converts it to diffusers'.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightNaming {
    /// diffusers' names.
    Diffusers,
    /// The original repository's names (a single file's prefix removed).
    Original,
}

impl WeightNaming {
    /// [`Original`](Self::Original) when a key of `source` starts with one of `original_roots`
    /// (module paths only the original naming has), [`Diffusers`](Self::Diffusers) otherwise.
    pub fn detect(source: &TensorSource, original_roots: &[&str]) -> Self {
        if original_roots.iter().any(|root| source.has_prefix(root)) {
            Self::Original
        } else {
            Self::Diffusers
        }
    }
}
