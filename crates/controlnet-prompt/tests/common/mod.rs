//! Fixture access shared by the parity tests (`fixtures/controlnet/`, written by
//! `tools/fixtures/gen_controlnet.py`).
#![allow(dead_code)]

use std::path::PathBuf;

use prompt_diffusion_controlnet_prompt::UNetResiduals;
use prompt_diffusion_core::testing::{TestBackend, assert_close};

pub type B = TestBackend;

pub fn fixtures() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures"))
}

pub fn controlnet_fixture(name: &str) -> PathBuf {
    fixtures().join("controlnet").join(name)
}

/// Inputs and reference outputs of one fixture file, read as f32.
pub use prompt_diffusion_core::testing::Fixture as Io;

/// Comparing ControlNet residuals with a fixture's references.
pub trait AssertResiduals {
    /// Asserts every residual within `tol` of the reference `{prefix}down.{i}` / `{prefix}mid`.
    fn assert_residuals(&self, what: &str, prefix: &str, residuals: &UNetResiduals<B>, tol: f32);
}

impl AssertResiduals for Io {
    fn assert_residuals(&self, what: &str, prefix: &str, residuals: &UNetResiduals<B>, tol: f32) {
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
