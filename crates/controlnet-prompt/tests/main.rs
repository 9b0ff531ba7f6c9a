//! The crate's integration tests, gathered in one binary so they compile and link once.

mod common;
mod prompt_diffusion;
mod standard;
mod weights;
