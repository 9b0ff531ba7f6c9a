//! Text decoding from an Optimus latent (official `optimus_vae_next.decode` and
//! `sample_single_sequence_conditional`): start from `<BOS>`, append the next token until
//! `<EOS>`; at the length limit the last token is replaced by `<EOS>`. The official sampler
//! (temperature 1, no top-k, top-p 1.0) draws from the full softmax; greedy takes the arg-max.

use prompt_diffusion_core::{Error, Result};
use rand_chacha::ChaCha8Rng;
use rand_core::RngCore;

/// The official length limit (tokens, `<BOS>` and `<EOS>` included).
pub const MAX_LENGTH: usize = 30;

/// How the next token is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TextDecoding {
    /// The most probable token (deterministic; the first on ties).
    Greedy,
    /// A draw from `softmax(logits / temperature)` (the official decoding, temperature 1).
    Sample {
        /// Softmax temperature, > 0.
        temperature: f64,
    },
}

impl Default for TextDecoding {
    fn default() -> Self {
        TextDecoding::Sample { temperature: 1.0 }
    }
}

impl TextDecoding {
    /// Checks the temperature.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a temperature that is not a positive number.
    pub fn validate(&self) -> Result<()> {
        match *self {
            TextDecoding::Sample { temperature }
                if !(temperature.is_finite() && temperature > 0.0) =>
            {
                Err(Error::invalid_input(
                    "temperature",
                    format!("{temperature} is not a positive number"),
                ))
            }
            _ => Ok(()),
        }
    }

    /// The index of the next token given the last position's logits.
    pub fn choose(&self, logits: &[f32], rng: &mut ChaCha8Rng) -> usize {
        match *self {
            TextDecoding::Greedy => argmax(logits),
            TextDecoding::Sample { temperature } => {
                let scaled: Vec<f64> = logits.iter().map(|&l| f64::from(l) / temperature).collect();
                let max = scaled.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let weights: Vec<f64> = scaled.iter().map(|l| (l - max).exp()).collect();
                let total: f64 = weights.iter().sum();
                let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * total;
                let mut acc = 0.0;
                for (i, w) in weights.iter().enumerate() {
                    acc += w;
                    if u < acc {
                        return i;
                    }
                }
                argmax(logits)
            }
        }
    }
}

fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best
}

/// Runs the decoding loop. `next_logits` returns the logits of the last position for the ids so
/// far.
///
/// # Errors
/// The errors of `next_logits`; [`Error::InvalidInput`] for a `max_length` below 2.
pub fn decode_tokens(
    bos: u32,
    eos: u32,
    max_length: usize,
    decoding: TextDecoding,
    rng: &mut ChaCha8Rng,
    mut next_logits: impl FnMut(&[u32]) -> Result<Vec<f32>>,
) -> Result<Vec<u32>> {
    decoding.validate()?;
    if max_length < 2 {
        return Err(Error::invalid_input("max length", "must be at least 2"));
    }
    let mut ids = vec![bos];
    loop {
        let logits = next_logits(&ids)?;
        let next = decoding.choose(&logits, rng) as u32;
        ids.push(next);
        if next == eos {
            return Ok(ids);
        }
        if ids.len() >= max_length {
            if let Some(last) = ids.last_mut() {
                *last = eos;
            }
            return Ok(ids);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::SeedableRng;

    #[test]
    fn stops_at_eos_or_forces_it_at_the_limit() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        // Token 2 until the third step, then EOS (3).
        let ids = decode_tokens(0, 3, 30, TextDecoding::Greedy, &mut rng, |ids| {
            Ok(if ids.len() < 3 {
                vec![0.0, 0.0, 1.0, 0.0]
            } else {
                vec![0.0, 0.0, 0.0, 1.0]
            })
        })
        .unwrap();
        assert_eq!(ids, [0, 2, 2, 3]);
        let ids = decode_tokens(0, 3, 5, TextDecoding::Greedy, &mut rng, |_| {
            Ok(vec![0.0, 1.0, 0.0, 0.0])
        })
        .unwrap();
        assert_eq!(ids, [0, 1, 1, 1, 3]);
    }

    #[test]
    fn sampling_is_seeded_and_follows_the_temperature() {
        let logits = [0.0f32, 1.0, 2.0, 0.5];
        let draw = |seed, temperature| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            (0..200)
                .map(|_| TextDecoding::Sample { temperature }.choose(&logits, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(7, 1.0), draw(7, 1.0));
        assert!(draw(7, 1.0).iter().any(|&i| i != 2));
        assert!(draw(7, 1e-3).iter().all(|&i| i == 2));
        assert!(
            TextDecoding::Sample { temperature: 0.0 }
                .validate()
                .is_err()
        );
    }
}
