//! Fixture access shared by the tests (`fixtures/diff_plugin/`, written by
//! `tools/fixtures/gen_diff_plugin.py`).
#![allow(dead_code)]

use std::path::PathBuf;

use burn::prelude::*;
use prompt_diffusion_core::testing::{TestBackend, TestDevice};
use prompt_diffusion_core::weights::TensorSource;

pub type B = TestBackend;

pub fn fixtures() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/diff_plugin"
    ))
}

pub fn pretrained() -> PathBuf {
    fixtures().join("pre-trained")
}

/// The reference tensors, read as f32.
pub struct Reference {
    pub source: TensorSource,
    pub device: TestDevice,
}

impl Reference {
    pub fn open() -> Self {
        Self {
            source: TensorSource::open(fixtures().join("reference.safetensors")).unwrap(),
            device: Default::default(),
        }
    }

    pub fn t<const D: usize>(&self, key: &str) -> Tensor<B, D> {
        self.source.tensor(key, &self.device, None).unwrap()
    }
}
