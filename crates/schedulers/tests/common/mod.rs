//! Loading the diffusers reference fixtures written by `tools/fixtures/gen_schedulers.py`.
#![allow(dead_code)] // each test crate uses a different part

use std::collections::HashMap;
use std::path::PathBuf;

use burn::prelude::*;
use safetensors::SafeTensors;

pub type B = prompt_diffusion_core::testing::TestBackend;

/// `fixtures/schedulers/` at the workspace root.
pub fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/schedulers")
}

/// `cases.json` and every tensor of `tensors.safetensors` (as f32).
pub struct Fixtures {
    pub index: serde_json::Value,
    tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
}

impl Fixtures {
    pub fn load() -> Self {
        let dir = fixture_dir();
        let index: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("cases.json")).expect("cases.json"),
        )
        .expect("valid cases.json");
        let bytes = std::fs::read(dir.join("tensors.safetensors")).expect("tensors.safetensors");
        let st = SafeTensors::deserialize(&bytes).expect("valid safetensors");
        let tensors = st
            .tensors()
            .into_iter()
            .map(|(name, view)| {
                assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
                let values = view
                    .data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                (name, (view.shape().to_vec(), values))
            })
            .collect();
        Self { index, tensors }
    }

    pub fn has(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// The raw values and shape of a tensor.
    pub fn raw(&self, name: &str) -> &(Vec<usize>, Vec<f32>) {
        self.tensors
            .get(name)
            .unwrap_or_else(|| panic!("fixture tensor {name} missing"))
    }

    /// The whole tensor.
    pub fn data(&self, name: &str) -> TensorData {
        let (shape, values) = self.raw(name);
        TensorData::new(values.clone(), shape.clone())
    }

    /// Entry `i` of a stacked tensor (along dim 0).
    pub fn item(&self, name: &str, i: usize) -> TensorData {
        let (shape, values) = self.raw(name);
        let inner: usize = shape[1..].iter().product();
        TensorData::new(
            values[i * inner..(i + 1) * inner].to_vec(),
            shape[1..].to_vec(),
        )
    }

    /// Number of entries of a stacked tensor.
    pub fn count(&self, name: &str) -> usize {
        self.raw(name).0[0]
    }

    pub fn tensor4(&self, data: TensorData) -> Tensor<B, 4> {
        Tensor::from_data(data, &Default::default())
    }
}

/// Max-abs difference and the tolerance scale `max(1, max|ref|)`.
pub fn compare(actual: &Tensor<B, 4>, expected: &Tensor<B, 4>) -> (f32, f32) {
    let a: Vec<f32> = actual.to_data().to_vec().expect("f32");
    let e: Vec<f32> = expected.to_data().to_vec().expect("f32");
    assert_eq!(a.len(), e.len());
    let mut diff = 0f32;
    let mut scale = 1f32;
    for (x, y) in a.iter().zip(&e) {
        let d = (x - y).abs();
        diff = if d.is_nan() {
            f32::INFINITY
        } else {
            diff.max(d)
        };
        scale = scale.max(y.abs());
    }
    (diff, scale)
}
