//! Inference timesteps and sigmas: the `timestep_spacing` layouts of the `set_timesteps` methods,
//! `_convert_to_karras` / `_convert_to_exponential`, `_sigma_to_t`, and the `_step_index` /
//! `_begin_index` / `index_for_timestep` logic of `scheduling_euler_discrete.py` and the files
//! that copy it.

use prompt_diffusion_core::{Error, Result};

use super::numeric::{np_arange, np_linspace, round_even};
use crate::config::SchedulerConfig;
use crate::options::TimestepSpacing;

/// Descending `linspace(0, end, count)` (unrounded).
pub(crate) fn linspace_desc(end: f64, count: usize) -> Vec<f64> {
    let mut v = np_linspace(0.0, end, count);
    v.reverse();
    v
}

/// Descending `arange(0, count) · ratio + offset`.
pub(crate) fn leading_desc(ratio: usize, count: usize, offset: usize) -> Vec<f64> {
    (0..count)
        .rev()
        .map(|i| (i * ratio) as f64 + offset as f64)
        .collect()
}

/// `round(arange(start, 0, −ratio)) − 1` (descending).
pub(crate) fn trailing_desc(start: f64, ratio: f64) -> Vec<f64> {
    np_arange(start, 0.0, -ratio)
        .into_iter()
        .map(|t| round_even(t) - 1.0)
        .collect()
}

/// The timesteps of DPM-Solver and UniPC (integers, descending): `n + 1` points with the last
/// one (t = 0) dropped; `last` ends the usable training range (DPM-Solver's
/// `lambda_min_clipped`, else `num_train`).
pub(crate) fn multistep_timesteps(
    spacing: TimestepSpacing,
    num_train: usize,
    last: usize,
    n: usize,
    steps_offset: usize,
) -> Vec<f64> {
    let mut ts = match spacing {
        TimestepSpacing::Linspace => linspace_desc(last as f64 - 1.0, n + 1)
            .into_iter()
            .map(round_even)
            .collect(),
        TimestepSpacing::Leading => leading_desc(last / (n + 1), n + 1, steps_offset),
        TimestepSpacing::Trailing => {
            return trailing_desc(last as f64, num_train as f64 / n as f64);
        }
    };
    ts.pop();
    ts
}

/// The float32 timesteps of the sigma-based discrete schedulers (Euler, Euler ancestral, LMS):
/// `linspace` is not rounded there.
pub(crate) fn sigma_timesteps(
    spacing: TimestepSpacing,
    num_train: usize,
    n: usize,
    steps_offset: usize,
) -> Vec<f64> {
    let ts = match spacing {
        TimestepSpacing::Linspace => linspace_desc((num_train - 1) as f64, n),
        TimestepSpacing::Leading => leading_desc(num_train / n, n, 0)
            .into_iter()
            .map(|t| (t as f32 + steps_offset as f32) as f64)
            .collect(),
        TimestepSpacing::Trailing => {
            np_arange(num_train as f64, 0.0, -(num_train as f64 / n as f64))
                .into_iter()
                .map(|t| (round_even(t) as f32 - 1.0) as f64)
                .collect()
        }
    };
    ts.into_iter().map(|t| t as f32 as f64).collect()
}

/// The sigma schedule options shared by Euler, DPM-Solver, UniPC and LMS.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SigmaSpacing {
    /// The training sigmas interpolated at the timesteps.
    Interpolated,
    /// Karras et al. spacing.
    Karras,
    /// Exponential spacing.
    Exponential,
}

impl SigmaSpacing {
    /// Reads `use_karras_sigmas` / `use_exponential_sigmas` / `use_beta_sigmas`.
    pub fn from_config(config: &SchedulerConfig) -> Result<Self> {
        let karras = config.use_karras_sigmas.unwrap_or(false);
        let exponential = config.use_exponential_sigmas.unwrap_or(false);
        let beta = config.use_beta_sigmas.unwrap_or(false);
        if [karras, exponential, beta].iter().filter(|&&f| f).count() > 1 {
            return Err(Error::config(
                "use_karras_sigmas",
                "only one of use_beta_sigmas, use_exponential_sigmas, use_karras_sigmas can be used",
            ));
        }
        if beta {
            return Err(Error::Unsupported(
                "beta-distribution sigmas (`use_beta_sigmas: true`)".into(),
            ));
        }
        Ok(if karras {
            SigmaSpacing::Karras
        } else if exponential {
            SigmaSpacing::Exponential
        } else {
            SigmaSpacing::Interpolated
        })
    }

    /// Karras or exponential sigmas between the bounds (`None`: the ends of `in_sigmas`).
    pub fn convert(
        self,
        in_sigmas: &[f64],
        bounds: (Option<f64>, Option<f64>),
        n: usize,
    ) -> Vec<f64> {
        let sigma_min = bounds.0.unwrap_or(in_sigmas[in_sigmas.len() - 1]);
        let sigma_max = bounds.1.unwrap_or(in_sigmas[0]);
        match self {
            SigmaSpacing::Karras => karras_sigmas(sigma_min, sigma_max, n),
            SigmaSpacing::Exponential => exponential_sigmas(sigma_min, sigma_max, n),
            SigmaSpacing::Interpolated => in_sigmas.to_vec(),
        }
    }
}

/// Karras et al. (2022) sigmas, ρ = 7, from `sigma_max` down to `sigma_min`.
pub(crate) fn karras_sigmas(sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
    let rho = 7.0f64;
    let min_inv = sigma_min.powf(1.0 / rho);
    let max_inv = sigma_max.powf(1.0 / rho);
    np_linspace(0.0, 1.0, n)
        .into_iter()
        .map(|r| (max_inv + r * (min_inv - max_inv)).powf(rho))
        .collect()
}

/// Exponentially spaced sigmas from `sigma_max` down to `sigma_min`.
pub(crate) fn exponential_sigmas(sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
    np_linspace(sigma_max.ln(), sigma_min.ln(), n)
        .into_iter()
        .map(f64::exp)
        .collect()
}

/// `_sigma_to_t`: the fractional training timestep of `sigma` by interpolating `log_sigmas`
/// (float32, ascending in t).
pub(crate) fn sigma_to_t(sigma: f64, log_sigmas: &[f32]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    // argmax of the running count of `log_sigma >= log_sigmas[i]` (first maximum).
    let (mut count, mut best, mut low) = (0usize, 0usize, 0usize);
    for (i, &ls) in log_sigmas.iter().enumerate() {
        if log_sigma - ls as f64 >= 0.0 {
            count += 1;
        }
        if count > best {
            best = count;
            low = i;
        }
    }
    let low = low.min(log_sigmas.len() - 2);
    let (lo, hi) = (log_sigmas[low], log_sigmas[low + 1]);
    let w = ((lo as f64 - log_sigma) / (lo - hi) as f64).clamp(0.0, 1.0);
    (1.0 - w) * low as f64 + w * (low + 1) as f64
}

/// diffusers' `index_for_timestep`: the position of `t` in `timesteps`, the second one when it
/// occurs more than once (so that img2img starting mid-schedule does not skip a sigma).
pub(crate) fn index_for_timestep(timesteps: &[f64], t: f64) -> Option<usize> {
    let mut hits = timesteps
        .iter()
        .enumerate()
        .filter(|(_, s)| **s == t)
        .map(|(i, _)| i);
    let first = hits.next()?;
    Some(hits.next().unwrap_or(first))
}

/// The step index of the sigma-based schedulers (`_step_index` / `_begin_index`).
#[derive(Debug, Clone, Copy, Default)]
pub struct StepIndex {
    pub step: Option<usize>,
    pub begin: Option<usize>,
}

impl StepIndex {
    /// `_init_step_index` when no index is set yet; returns the current index. `last_fallback`:
    /// DPM-Solver and UniPC use the last index for a timestep not in the schedule, the others
    /// fail.
    pub fn current(&mut self, timesteps: &[f64], t: f64, last_fallback: bool) -> Result<usize> {
        if let Some(i) = self.step {
            return Ok(i);
        }
        let i = match self.begin {
            Some(b) => b,
            None => match index_for_timestep(timesteps, t) {
                Some(i) => i,
                None if last_fallback && !timesteps.is_empty() => timesteps.len() - 1,
                None => {
                    return Err(Error::invalid_input(
                        "timestep",
                        format!("{t} is not one of the scheduler's timesteps"),
                    ));
                }
            },
        };
        self.step = Some(i);
        Ok(i)
    }

    /// The index `add_noise` uses: the timestep's position without a begin index, else the
    /// current step (or the begin index before the first step). A timestep not in the schedule
    /// falls back to the nearest one.
    pub fn for_add_noise(&self, timesteps: &[f64], t: f64) -> usize {
        match (self.begin, self.step) {
            (None, _) => index_for_timestep(timesteps, t).unwrap_or_else(|| {
                tracing::warn!("add_noise: timestep {t} is not in the schedule; using the nearest");
                nearest(timesteps, t)
            }),
            (Some(_), Some(step)) => step,
            (Some(begin), None) => begin,
        }
    }
}

/// The index of the value closest to `t` (0 for an empty list).
pub(crate) fn nearest(timesteps: &[f64], t: f64) -> usize {
    timesteps
        .iter()
        .enumerate()
        .min_by(|a, b| (a.1 - t).abs().total_cmp(&(b.1 - t).abs()))
        .map(|(i, _)| i)
        .unwrap_or(0)
}
