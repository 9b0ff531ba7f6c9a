//! The crate's integration tests, gathered in one binary so they compile and link once.

mod common;
mod loading_errors;
mod prompt_weighting;
mod text_model;
mod textual_inversion;
mod tokenizer;
mod vision_model;
