//! Fixture access shared by the parity tests (`fixtures/controlnet/`, written by
//! `tools/fixtures/gen_controlnet.py`).
#![allow(dead_code)]

use std::path::PathBuf;

use burn::prelude::*;
use prompt_diffusion_controlnet_prompt::UNetResiduals;
use prompt_diffusion_core::testing::{TestBackend, TestDevice, assert_close};
use prompt_diffusion_core::weights::TensorSource;

pub type B = TestBackend;

pub fn fixtures() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures"))
}

pub fn controlnet_fixture(name: &str) -> PathBuf {
    fixtures().join("controlnet").join(name)
}

/// Inputs and reference outputs of one fixture file, read as f32.
pub struct Io {
    pub source: TensorSource,
    pub device: TestDevice,
}

impl Io {
    pub fn open(name: &str) -> Self {
        Self {
            source: TensorSource::open(controlnet_fixture(name)).unwrap(),
            device: Default::default(),
        }
    }

    pub fn t<const D: usize>(&self, key: &str) -> Tensor<B, D> {
        self.source.tensor(key, &self.device, None).unwrap()
    }

    /// Asserts every residual within `tol` of the reference `{prefix}down.{i}` / `{prefix}mid`,
    /// returning the worst difference.
    pub fn assert_residuals(
        &self,
        what: &str,
        prefix: &str,
        residuals: &UNetResiduals<B>,
        tol: f32,
    ) {
        let n = self
            .source
            .keys()
            .filter(|k| k.starts_with(&format!("{prefix}down.")))
            .count();
        assert_eq!(residuals.down.len(), n, "{what}: number of down residuals");
        for (i, r) in residuals.down.iter().enumerate() {
            let r = r.clone().expect("every down residual is present");
            assert_close(
                &format!("{what} down[{i}]"),
                r,
                self.t(&format!("{prefix}down.{i}")),
                tol,
            );
        }
        let mid = residuals.mid.clone().expect("the mid residual is present");
        assert_close(
            &format!("{what} mid"),
            mid,
            self.t(&format!("{prefix}mid")),
            tol,
        );
    }
}
