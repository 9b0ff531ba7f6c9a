//! Reproducible Gaussian noise.
//!
//! Noise is drawn on the host from a seeded ChaCha8 stream with the Box–Muller transform and
//! uploaded, so the same seed gives the same numbers on every backend, run and machine. To
//! reproduce another implementation's run exactly, replay its noise with [`ReplayNoise`].

use std::collections::VecDeque;

use burn::prelude::*;
use burn::tensor::DType;
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use crate::{Error, Result};

/// A stream of standard-normal noise tensors (f32 host data).
pub trait NoiseSource {
    /// The next `shape`-sized block of N(0, 1) samples.
    ///
    /// # Errors
    /// A replayed source reports [`Error::InvalidInput`] when it has no tensor left or the next
    /// one has another shape.
    fn sample(&mut self, shape: &[usize]) -> Result<TensorData>;

    /// The next block as a tensor on `device` in `dtype`.
    fn tensor<B: Backend, const D: usize>(
        &mut self,
        shape: [usize; D],
        device: &B::Device,
        dtype: DType,
    ) -> Result<Tensor<B, D>>
    where
        Self: Sized,
    {
        noise_tensor(self, shape, device, dtype)
    }
}

/// The next `shape`-sized block of `noise` as a tensor on `device` in `dtype` (for a
/// `dyn NoiseSource`, whose generic method is unavailable).
pub fn noise_tensor<B: Backend, const D: usize>(
    noise: &mut dyn NoiseSource,
    shape: [usize; D],
    device: &B::Device,
    dtype: DType,
) -> Result<Tensor<B, D>> {
    let data = noise.sample(&shape)?.convert_dtype(dtype);
    Ok(Tensor::from_data(data, (device, dtype)))
}

/// Seeded noise: ChaCha8 uniforms through Box–Muller.
#[derive(Debug, Clone)]
pub struct SeededNoise {
    rng: ChaCha8Rng,
    spare: Option<f32>,
}

impl SeededNoise {
    /// A stream determined entirely by `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
            spare: None,
        }
    }

    /// A uniform sample in (0, 1] with 53 bits of resolution.
    fn uniform(&mut self) -> f64 {
        ((self.rng.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    /// One N(0, 1) sample.
    pub fn next_normal(&mut self) -> f32 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        let radius = (-2.0 * self.uniform().ln()).sqrt();
        let theta = std::f64::consts::TAU * self.uniform();
        self.spare = Some((radius * theta.sin()) as f32);
        (radius * theta.cos()) as f32
    }
}

impl NoiseSource for SeededNoise {
    fn sample(&mut self, shape: &[usize]) -> Result<TensorData> {
        let n = shape.iter().product();
        let values: Vec<f32> = (0..n).map(|_| self.next_normal()).collect();
        Ok(TensorData::new(values, shape.to_vec()))
    }
}

/// Noise given in advance (e.g. the noise a reference implementation drew), returned in order.
#[derive(Debug, Clone, Default)]
pub struct ReplayNoise {
    queue: VecDeque<TensorData>,
}

impl ReplayNoise {
    /// Replays `tensors` in order.
    pub fn new(tensors: impl IntoIterator<Item = TensorData>) -> Self {
        Self {
            queue: tensors.into_iter().collect(),
        }
    }

    /// Number of tensors not yet used.
    pub fn remaining(&self) -> usize {
        self.queue.len()
    }
}

impl NoiseSource for ReplayNoise {
    fn sample(&mut self, shape: &[usize]) -> Result<TensorData> {
        let next = self
            .queue
            .pop_front()
            .ok_or_else(|| Error::invalid_input("noise", "the replayed noise is exhausted"))?;
        if next.shape.as_slice() != shape {
            return Err(Error::invalid_input(
                "noise",
                format!(
                    "replayed noise has shape {:?}, expected {shape:?}",
                    next.shape
                ),
            ));
        }
        Ok(next.convert_dtype(DType::F32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_numbers_and_normal_moments() {
        let a = SeededNoise::new(7).sample(&[4, 1000]).unwrap();
        let b = SeededNoise::new(7).sample(&[4, 1000]).unwrap();
        assert_eq!(a, b);
        let c = SeededNoise::new(8).sample(&[4, 1000]).unwrap();
        assert_ne!(a, c);
        let v: Vec<f32> = a.to_vec().unwrap();
        let mean = v.iter().sum::<f32>() / v.len() as f32;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / v.len() as f32;
        assert!(mean.abs() < 0.05, "mean {mean}");
        assert!((var - 1.0).abs() < 0.05, "var {var}");
    }

    #[test]
    fn replay_checks_shape_and_exhaustion() {
        let mut r = ReplayNoise::new([TensorData::new(vec![1.0f32, 2.0], [2])]);
        assert!(r.sample(&[3]).is_err());
        let mut r = ReplayNoise::new([TensorData::new(vec![1.0f32, 2.0], [2])]);
        assert_eq!(
            r.sample(&[2]).unwrap().to_vec::<f32>().unwrap(),
            vec![1.0, 2.0]
        );
        assert!(r.sample(&[2]).is_err());
    }
}
