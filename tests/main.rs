//! The facade's integration tests, gathered in one binary so the pipelines compile and link once.

mod cli;
mod cli_inputs;
mod cli_outputs;
mod cli_prompt_diffusion;
mod cli_versatile;
mod cli_weights;
#[cfg(feature = "wgpu")]
mod cli_wgpu;
mod common;
mod compose;
mod diff_plugin;
mod fuzz_seeded;
mod hub;
mod inpaint;
mod lora;
mod metadata;
mod pipeline_parity;
#[path = "prompt_diffusion.rs"]
mod prompt_diffusion_pipelines;
mod robustness;
mod scenes;
mod text_conditioning;
mod train;
mod versatile_pipelines;
