//! The crate's integration tests, gathered in one binary so they compile and link once.

mod common;
mod parity;
// Run by `cargo test --workspace`, which turns `train` on (the facade's dev-dependency), or by
// `cargo test -p prompt-diffusion-diff-plugin --features train`.
#[cfg(feature = "train")]
mod train;
mod weights;
