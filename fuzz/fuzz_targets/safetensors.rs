//! Fuzz target: see `prompt_diffusion::fuzzing::safetensors`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| prompt_diffusion::fuzzing::safetensors(data));
