//! A bounded, seeded run of every fuzz target (`prompt_diffusion::fuzzing`): the committed seeds
//! and regression inputs of `fuzz/`, then deterministic mutations of each. Any panic fails the
//! test; the outcome of each input (accepted or a typed error) is the reader's business.

use std::path::{Path, PathBuf};

use prompt_diffusion::fuzzing;

/// Mutated inputs tried per seed file.
const MUTATIONS_PER_SEED: usize = 150;

/// SplitMix64: a tiny deterministic generator, so every run tries the same inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Values that sit on size and sign boundaries, written over length fields.
const INTERESTING: [u64; 8] = [0, 1, 0x7f, 0xff, 0xffff, 0x7fff_ffff, 0xffff_ffff, u64::MAX];

fn mutate(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut data = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = data.len();
        match rng.below(7) {
            0 if len > 0 => {
                let i = rng.below(len);
                data[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                data[i] = INTERESTING[rng.below(INTERESTING.len())] as u8;
            }
            2 if len > 0 => data.truncate(rng.below(len)),
            3 if len > 8 => {
                let width = if rng.below(2) == 0 { 4 } else { 8 };
                let i = rng.below(len - width);
                let value = INTERESTING[rng.below(INTERESTING.len())].to_le_bytes();
                data[i..i + width].copy_from_slice(&value[..width]);
            }
            4 if len > 0 => {
                let start = rng.below(len);
                let end = (start + 1 + rng.below(64)).min(len);
                let chunk = data[start..end].to_vec();
                let at = rng.below(len);
                data.splice(at..at, chunk);
            }
            5 => {
                let at = rng.below(len + 1);
                let bytes: Vec<u8> = (0..1 + rng.below(16)).map(|_| rng.next() as u8).collect();
                data.splice(at..at, bytes);
            }
            _ if len > 1 => {
                let start = rng.below(len);
                let end = (start + 1 + rng.below(32)).min(len);
                data.drain(start..end);
            }
            _ => data.push(rng.next() as u8),
        }
    }
    data
}

fn inputs(target: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files = Vec::new();
    for folder in ["seeds", "regressions"] {
        if let Ok(entries) = std::fs::read_dir(root.join(folder).join(target)) {
            files.extend(entries.filter_map(|e| e.ok()).map(|e| e.path()));
        }
    }
    files.sort();
    files
}

#[test]
fn every_fuzz_target_survives_its_seeds_and_their_mutations() {
    for (target, body) in fuzzing::TARGETS {
        let files = inputs(target);
        assert!(!files.is_empty(), "no seeds for the fuzz target {target}");
        for (n, file) in files.iter().enumerate() {
            let seed = std::fs::read(file).unwrap();
            body(&seed);
            let mut rng = Rng(0x5eed ^ (n as u64) << 32 ^ target.len() as u64);
            for _ in 0..MUTATIONS_PER_SEED {
                body(&mutate(&seed, &mut rng));
            }
        }
    }
    let _ = std::fs::remove_dir_all(fuzzing::scratch());
}
