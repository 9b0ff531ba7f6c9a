//! The crate's integration tests, gathered in one binary so they compile and link once.

mod common;
mod modules;
mod optimus;
mod shared_weights;
mod weights;
