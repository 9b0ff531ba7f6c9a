//! Layers shared by every model crate: normalisations with f32 statistics, the attention entry
//! point, and activations by their config names.

mod activation;
mod attention;
mod norm;

pub use activation::Activation;
pub use attention::{AttentionOptions, attention};
pub use norm::{GroupNorm, GroupNormConfig, LayerNorm, LayerNormConfig};
