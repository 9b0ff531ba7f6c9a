//! The crate's integration tests, gathered in one binary so they compile and link once.

mod common;
mod parity;
mod train;
mod weights;
