//! Fuzz target: see `prompt_diffusion::fuzzing::tokenizer`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| prompt_diffusion::fuzzing::tokenizer(data));
