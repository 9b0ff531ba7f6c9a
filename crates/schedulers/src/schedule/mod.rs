//! Noise-schedule math shared by every scheduler, computed once on the host.
//!
//! Ports `betas_for_alpha_bar` and `rescale_zero_terminal_snr` (diffusers'
//! `schedulers/scheduling_ddpm.py`, copied into every scheduler file) and the beta/alpha/sigma
//! tables each diffusers scheduler builds in its constructor, plus the NumPy/PyTorch primitives
//! they use, so that the tables equal diffusers' bit for bit: `torch.linspace` in float32 (PyTorch's CPU kernel
//! computes `start + step·i` below the midpoint and `end − step·(steps−1−i)` from it, each as one
//! fused multiply-add), betas squared and `1 − β` in float32, `cumprod` accumulated in float64 and
//! rounded to float32, `np.linspace`/`np.arange`/`np.interp` in float64 with NumPy's rounding.
//!
//! What cannot be bit-exact: PyTorch (MKL builds) computes `sqrt`, `exp` and `log` with MKL's
//! vector math, which is within one ulp but not always correctly rounded, so sigma tables and
//! the per-step scalars derived from them may differ from diffusers' in the last bit.
//!
//! The NumPy/PyTorch primitives live in [`numeric`], the inference timestep and sigma layouts
//! in [`timesteps`]; the state each scheduler family shares in [`discrete`] and [`sigmas`],
//! wired into [`Scheduler`](crate::Scheduler) by [`family`].

mod discrete;
mod family;
mod numeric;
mod sigmas;
mod timesteps;

pub(crate) use discrete::DiscreteState;
pub(crate) use family::{Rule, ScheduleParams, Step, rule_state};
pub(crate) use numeric::*;
pub(crate) use sigmas::{Form, SigmaOptions, SigmaState, sigma_x0};
pub(crate) use timesteps::*;

use prompt_diffusion_core::{Error, Result};

use crate::config::SchedulerConfig;
use crate::options::BetaSchedule;

/// The largest `num_train_timesteps` accepted (published models use 1000).
const MAX_TRAIN_TIMESTEPS: usize = 1_000_000;

/// The training noise schedule: `alphas_cumprod` as diffusers holds it (a float32 tensor).
#[derive(Debug, Clone)]
pub struct NoiseSchedule {
    /// `num_train_timesteps`.
    pub num_train_timesteps: usize,
    /// The beta schedule the table came from (`trained_betas` keep the configured name).
    pub beta_schedule: BetaSchedule,
    /// ᾱ_t for t = 0..N.
    pub alphas_cumprod: Vec<f32>,
}

impl NoiseSchedule {
    /// Builds the table from a config with the diffusers class defaults (N = 1000, linear betas
    /// from 0.0001 to 0.02). `rescale` is whether the class takes `rescale_betas_zero_snr`;
    /// `terminal_floor` whether it then sets ᾱ_{N−1} = 2⁻²⁴ (the sigma-based schedulers).
    pub fn new(config: &SchedulerConfig, rescale: bool, terminal_floor: bool) -> Result<Self> {
        let n = config.num_train_timesteps.unwrap_or(1000);
        if !(2..=MAX_TRAIN_TIMESTEPS).contains(&n) {
            return Err(Error::config(
                "num_train_timesteps",
                format!("{n} is outside 2..={MAX_TRAIN_TIMESTEPS}"),
            ));
        }
        let beta_start = config.beta_start.unwrap_or(0.0001);
        let beta_end = config.beta_end.unwrap_or(0.02);
        let beta_schedule = config.beta_schedule.unwrap_or(BetaSchedule::Linear);
        let mut betas = match (&config.trained_betas, beta_schedule) {
            (Some(trained), _) => {
                if trained.len() != n {
                    return Err(Error::config(
                        "trained_betas",
                        format!("has {} values, num_train_timesteps is {n}", trained.len()),
                    ));
                }
                trained.iter().map(|&b| b as f32).collect()
            }
            (None, BetaSchedule::Linear) => torch_linspace_f32(beta_start, beta_end, n),
            (None, BetaSchedule::ScaledLinear) => {
                torch_linspace_f32(beta_start.powf(0.5), beta_end.powf(0.5), n)
                    .into_iter()
                    .map(|b| b * b)
                    .collect()
            }
            (None, BetaSchedule::SquaredcosCapV2) => betas_for_alpha_bar(n),
            (None, other) => {
                return Err(Error::Unsupported(format!(
                    "beta_schedule {other:?} (DDPM-only in diffusers)"
                )));
            }
        };
        if let Some(bad) = betas.iter().find(|b| !(0.0..1.0).contains(*b)) {
            let field = match config.trained_betas {
                Some(_) => "trained_betas",
                None => "beta_end",
            };
            return Err(Error::config(
                field,
                format!("betas must lie in [0, 1), found {bad}"),
            ));
        }
        let rescaled = rescale && config.rescale_betas_zero_snr.unwrap_or(false);
        if rescaled {
            betas = rescale_zero_terminal_snr(&betas);
        }
        let alphas: Vec<f32> = betas.iter().map(|b| 1.0 - b).collect();
        let mut alphas_cumprod = cumprod(&alphas);
        if rescaled && terminal_floor {
            alphas_cumprod[n - 1] = 2f32.powi(-24);
        }
        Ok(Self {
            num_train_timesteps: n,
            beta_schedule,
            alphas_cumprod,
        })
    }

    /// σ_t = √((1 − ᾱ_t) / ᾱ_t) in float32, t = 0..N (ascending in t).
    pub fn sigmas(&self) -> Vec<f32> {
        self.alphas_cumprod.iter().map(|&a| sigma_of(a)).collect()
    }
}

/// σ = √((1 − ᾱ)/ᾱ) in float32.
pub(crate) fn sigma_of(alpha_cumprod: f32) -> f32 {
    ((1.0 - alpha_cumprod) / alpha_cumprod).sqrt()
}

/// `_sigma_to_alpha_sigma_t`: α = 1/√(σ² + 1), σ_t = σ·α (float32).
pub(crate) fn alpha_sigma(sigma: f32) -> (f32, f32) {
    let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
    (alpha, sigma * alpha)
}

/// λ = ln α − ln σ (float32; +∞ at σ = 0).
pub(crate) fn lambda(alpha: f32, sigma: f32) -> f32 {
    alpha.ln() - sigma.ln()
}

/// Glide's cosine schedule, computed in float64 (not with integer division) and rounded to f32.
fn betas_for_alpha_bar(n: usize) -> Vec<f32> {
    let alpha_bar = |t: f64| {
        let c = ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0).cos();
        c * c
    };
    (0..n)
        .map(|i| {
            let t1 = i as f64 / n as f64;
            let t2 = (i + 1) as f64 / n as f64;
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999) as f32
        })
        .collect()
}

/// `rescale_zero_terminal_snr` (Algorithm 1 of "Common Diffusion Noise Schedules and Sample
/// Steps are Flawed"), in float32 like the reference.
fn rescale_zero_terminal_snr(betas: &[f32]) -> Vec<f32> {
    let alphas: Vec<f32> = betas.iter().map(|b| 1.0 - b).collect();
    let mut sqrt: Vec<f32> = cumprod(&alphas).iter().map(|a| a.sqrt()).collect();
    let (first, last) = (sqrt[0], sqrt[sqrt.len() - 1]);
    let scale = first / (first - last);
    for s in &mut sqrt {
        *s = (*s - last) * scale;
    }
    let bar: Vec<f32> = sqrt.iter().map(|s| s * s).collect();
    let mut out = Vec::with_capacity(bar.len());
    out.push(1.0 - bar[0]);
    out.extend(bar.windows(2).map(|w| 1.0 - w[1] / w[0]));
    out
}

/// `torch.cumprod` of a float32 tensor on the CPU: accumulated in float64, stored as float32.
fn cumprod(values: &[f32]) -> Vec<f32> {
    let mut acc = 1.0f64;
    values
        .iter()
        .map(|&v| {
            acc *= v as f64;
            acc as f32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squaredcos_is_computed_in_floating_point() {
        let b = betas_for_alpha_bar(1000);
        // Integer division (candle, diffusers-rs) would give zeros and a single 0.999.
        assert!(b[0] > 0.0 && b[0] < 1e-4, "{}", b[0]);
        assert!(b[500] > 1e-3 && b[500] < 1e-2, "{}", b[500]);
        assert_eq!(b[999], 0.999);
    }

    /// ᾱ tables against diffusers' (`acp.*` in the scheduler fixtures): bit for bit where
    /// PyTorch's arithmetic is IEEE (linspace, squares, `1 − β`, cumprod), within 1e-6 where it
    /// goes through MKL's `sqrt` (zero-terminal-SNR rescaling).
    #[test]
    fn alphas_cumprod_match_diffusers() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/schedulers");
        let index: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap())
                .unwrap();
        let bytes = std::fs::read(dir.join("tensors.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let tables = index["alphas_cumprod"].as_object().unwrap();
        assert!(tables.len() >= 5);
        for (key, config) in tables {
            let config = SchedulerConfig::from_json(&config.to_string()).unwrap();
            let class = config.class_name.clone().unwrap();
            let (rescale, floor) = match class.as_str() {
                "PNDMScheduler" | "LMSDiscreteScheduler" => (false, false),
                "DDIMScheduler" | "DDPMScheduler" => (true, false),
                _ => (true, true),
            };
            let ours = NoiseSchedule::new(&config, rescale, floor)
                .unwrap()
                .alphas_cumprod;
            let view = st.tensor(&format!("acp.{key}")).unwrap();
            let theirs: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            assert_eq!(ours.len(), theirs.len(), "{key}");
            let ulps = ours
                .iter()
                .zip(&theirs)
                .map(|(a, b)| (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs())
                .max()
                .unwrap();
            let abs = ours
                .iter()
                .zip(&theirs)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            if config.rescale_betas_zero_snr == Some(true) {
                // √ᾱ shifted by √ᾱ_T: an ulp of MKL's sqrt becomes a few hundred ulp of the
                // small ᾱ near the end, but stays below 1e-6 in absolute terms.
                assert!(
                    abs <= 1e-6,
                    "{key}: alphas_cumprod differ by {abs:e} ({ulps} ulp)"
                );
            } else {
                assert_eq!(ulps, 0, "{key}: alphas_cumprod differ by {ulps} ulp");
            }
        }
    }
}
