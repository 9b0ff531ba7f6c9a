//! Shared helpers of the parity tests: fixture paths and reference tensors.
#![allow(dead_code)]

use std::path::PathBuf;

use burn::prelude::*;
use prompt_diffusion_core::testing::{TestBackend, TestDevice, max_abs_diff};
use prompt_diffusion_core::weights::{LoadOptions, TensorSource};

pub type B = TestBackend;

/// The parity target of the CLIP towers (f32, max-abs).
pub const TOL: f32 = 1e-4;

pub fn fixtures() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures"))
}

pub fn clip_fixture(name: &str) -> PathBuf {
    fixtures().join("clip").join(name)
}

pub fn device() -> TestDevice {
    Default::default()
}

/// A model loaded by `load` (a `from_folder`) from the fixture folder `name`, with the default
/// options.
pub fn load_fixture<M>(
    name: &str,
    load: impl FnOnce(PathBuf, &LoadOptions, &TestDevice) -> prompt_diffusion_core::Result<M>,
) -> M {
    load(clip_fixture(name), &LoadOptions::default(), &device()).unwrap()
}

/// Reference tensors written by `tools/fixtures/gen_clip.py`.
pub struct Reference(pub TensorSource);

impl Reference {
    pub fn open(path: PathBuf) -> Self {
        Self(TensorSource::open(path).expect("reference file"))
    }

    pub fn float<const D: usize>(&self, key: &str) -> Tensor<B, D> {
        self.0
            .tensor::<B, D>(key, &device(), None)
            .unwrap_or_else(|e| panic!("{key}: {e}"))
    }

    pub fn ids(&self, key: &str) -> Tensor<B, 2, Int> {
        let data = self.0.data(key).expect("ids");
        Tensor::from_data(data, &device())
    }

    pub fn count(&self, prefix: &str) -> usize {
        self.0.keys().filter(|k| k.starts_with(prefix)).count()
    }

    /// Checks `actual` against the reference tensor `key` within [`TOL`], reported as
    /// `{prefix}{key}`.
    pub fn check<const D: usize>(&self, prefix: &str, key: &str, actual: Tensor<B, D>) -> f32 {
        check(&format!("{prefix}{key}"), actual, self.float(key), TOL)
    }

    /// Checks `last_hidden_state` and `pooled_output` (see [`check`](Self::check)).
    pub fn check_outputs(&self, prefix: &str, last: Tensor<B, 3>, pooled: Tensor<B, 2>) {
        self.check(prefix, "last_hidden_state", last);
        self.check(prefix, "pooled_output", pooled);
    }
}

/// Asserts `actual` is within `tol` of `expected` and returns the difference.
pub fn check<const D: usize>(
    what: &str,
    actual: Tensor<B, D>,
    expected: Tensor<B, D>,
    tol: f32,
) -> f32 {
    let diff = max_abs_diff(actual, expected);
    println!("{what}: max abs diff {diff:e}");
    assert!(
        diff <= tol,
        "{what}: max abs difference {diff:e} exceeds {tol:e}"
    );
    diff
}

/// Compares every hidden state with `hidden_states.{i}` of the reference.
pub fn check_hidden_states(what: &str, actual: &[Tensor<B, 3>], reference: &Reference) -> f32 {
    assert_eq!(
        actual.len(),
        reference.count("hidden_states."),
        "{what}: number of hidden states"
    );
    let mut worst = 0f32;
    for (i, h) in actual.iter().enumerate() {
        let expected = reference.float::<3>(&format!("hidden_states.{i}"));
        worst = worst.max(check(
            &format!("{what} hidden_states[{i}]"),
            h.clone(),
            expected,
            TOL,
        ));
    }
    worst
}
