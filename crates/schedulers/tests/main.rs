//! The crate's integration tests, gathered in one binary so they compile and link once.

mod api;
mod common;
mod parity;
