//! `scheduler_config.json`: one struct holding every key of every supported scheduler.
//!
//! Ports the parts of diffusers' `configuration_utils.py` (`ConfigMixin.from_config`,
//! `extract_init_dict`) that decide which values a scheduler is built with. A field is `None` when
//! the file does not contain the key; each scheduler then fills it with **its own** class default
//! (see the scheduler modules), never with another class's default and never with SD1.5 values.

use std::path::Path;

use burn::prelude::Backend;
use prompt_diffusion_core::config::parse_config;
use prompt_diffusion_core::{Error, Result};
use serde::{Deserialize, Deserializer, Serialize};

use crate::Scheduler;
use crate::kind::SchedulerKind;
use crate::options::{
    AlgorithmType, BetaSchedule, FinalSigmasType, InterpolationType, PredictionType, SolverType,
    TimestepSpacing, TimestepType, VarianceType,
};

/// The contents of a diffusers `scheduler_config.json`: every key of every supported scheduler,
/// each `None` when the file does not set it.
///
/// Keys are named exactly as in the file. Unknown keys are reported with a `tracing` warning;
/// `_diffusers_version` and other `_`-prefixed bookkeeping keys are ignored. Python's JSON
/// extensions `Infinity`, `-Infinity` and `NaN` (written by diffusers for e.g.
/// `lambda_min_clipped`) are accepted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct SchedulerConfig {
    /// `_class_name`: the diffusers class the file was written for (e.g. `"PNDMScheduler"`).
    #[serde(rename = "_class_name", skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,
    /// Number of training timesteps (default 1000).
    pub num_train_timesteps: Option<usize>,
    /// First beta of the `linear` / `scaled_linear` schedules (default 0.0001).
    #[serde(deserialize_with = "lenient_f64")]
    pub beta_start: Option<f64>,
    /// Last beta (default 0.02).
    #[serde(deserialize_with = "lenient_f64")]
    pub beta_end: Option<f64>,
    /// How betas are laid out (default `linear`).
    pub beta_schedule: Option<BetaSchedule>,
    /// Explicit betas; when set they replace `beta_start`/`beta_end`/`beta_schedule`.
    pub trained_betas: Option<Vec<f64>>,
    /// What the model predicts (default `epsilon`).
    pub prediction_type: Option<PredictionType>,
    /// How inference timesteps are spread (default `leading` for DDIM/DDPM/PNDM, `linspace` for
    /// the others).
    pub timestep_spacing: Option<TimestepSpacing>,
    /// Offset added to `leading` timesteps (default 0; SD1.5 uses 1).
    pub steps_offset: Option<usize>,
    /// Rescale betas to zero terminal SNR (default false; not taken by PNDM and LMS).
    pub rescale_betas_zero_snr: Option<bool>,
    /// DDIM/DDPM: clip the predicted x0 (default true).
    pub clip_sample: Option<bool>,
    /// DDIM/DDPM: clip range (default 1.0).
    #[serde(deserialize_with = "lenient_f64")]
    pub clip_sample_range: Option<f64>,
    /// DDIM (default true) / PNDM (default false): use alpha 1 after the last step.
    pub set_alpha_to_one: Option<bool>,
    /// Dynamic thresholding (default false; not supported by this crate).
    pub thresholding: Option<bool>,
    /// Dynamic thresholding quantile (default 0.995).
    #[serde(deserialize_with = "lenient_f64")]
    pub dynamic_thresholding_ratio: Option<f64>,
    /// Dynamic thresholding bound (default 1.0).
    #[serde(deserialize_with = "lenient_f64")]
    pub sample_max_value: Option<f64>,
    /// DDPM: the variance of the added noise (default `fixed_small`); DPM-Solver: learned
    /// variance channels (default none).
    pub variance_type: Option<VarianceType>,
    /// PNDM: skip the Runge–Kutta warm-up (default false; SD1.5 uses true).
    pub skip_prk_steps: Option<bool>,
    /// Euler: how sigmas are interpolated at the timesteps (default `linear`).
    pub interpolation_type: Option<InterpolationType>,
    /// Karras et al. sigma spacing (default false).
    pub use_karras_sigmas: Option<bool>,
    /// Exponential sigma spacing (default false).
    pub use_exponential_sigmas: Option<bool>,
    /// Beta-distribution sigma spacing (default false; not supported by this crate).
    pub use_beta_sigmas: Option<bool>,
    /// Lower sigma bound for Karras/exponential spacing (default: the schedule's).
    #[serde(deserialize_with = "lenient_f64")]
    pub sigma_min: Option<f64>,
    /// Upper sigma bound for Karras/exponential spacing (default: the schedule's).
    #[serde(deserialize_with = "lenient_f64")]
    pub sigma_max: Option<f64>,
    /// Euler: `discrete` timesteps or `continuous` (`0.25·ln σ`, v-prediction only).
    pub timestep_type: Option<TimestepType>,
    /// The sigma after the last step (default `zero`).
    pub final_sigmas_type: Option<FinalSigmasType>,
    /// DPM-Solver/UniPC: multistep order (default 2).
    pub solver_order: Option<usize>,
    /// DPM-Solver: algorithm (default `dpmsolver++`).
    pub algorithm_type: Option<AlgorithmType>,
    /// DPM-Solver (`midpoint`, default) / UniPC (`bh2`, default) solver variant.
    pub solver_type: Option<SolverType>,
    /// Lower the order on the last steps (default true).
    pub lower_order_final: Option<bool>,
    /// DPM-Solver: first-order last step (default false).
    pub euler_at_final: Option<bool>,
    /// DPM-Solver: uniform log-SNR spacing (default false).
    pub use_lu_lambdas: Option<bool>,
    /// Flow-matching sigmas (default false; not supported by this crate).
    pub use_flow_sigmas: Option<bool>,
    /// Flow-matching shift (default 1.0; unused here).
    #[serde(deserialize_with = "lenient_f64")]
    pub flow_shift: Option<f64>,
    /// DPM-Solver: clip log-SNR below this value (default −∞).
    #[serde(deserialize_with = "lenient_f64")]
    pub lambda_min_clipped: Option<f64>,
    /// Dynamic shifting (default false; not supported by this crate).
    pub use_dynamic_shifting: Option<bool>,
    /// Dynamic shifting kind (default `"exponential"`; unused here).
    pub time_shift_type: Option<String>,
    /// UniPC: solve in data-prediction form (default true).
    pub predict_x0: Option<bool>,
    /// UniPC: step indices whose corrector is skipped (default none).
    pub disable_corrector: Option<Vec<usize>>,
    /// UniPC: an external predictor scheduler (must be null).
    pub solver_p: Option<serde_json::Value>,
    /// UniPC: flow-matching terminal shift (must be null).
    #[serde(deserialize_with = "lenient_f64")]
    pub shift_terminal: Option<f64>,
}

impl SchedulerConfig {
    /// Reads a `scheduler_config.json`.
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be read, [`Error::Config`] naming the file and the field
    /// when the JSON is invalid or a value has the wrong type or an unknown enumerated value.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json(&text).map_err(|e| e.with_config_origin(path))
    }

    /// Parses the text of a `scheduler_config.json`.
    ///
    /// # Errors
    /// [`Error::Config`] naming the field when the JSON is invalid, a value is of the wrong
    /// type or an unknown enumerated value, or `steps_offset` would put timesteps past the
    /// training schedule.
    pub fn from_json(text: &str) -> Result<Self> {
        let config: Self = parse_config(&quote_non_finite(text))?;
        config.check_offset()?;
        Ok(config)
    }

    /// Checks that `steps_offset` is below `num_train_timesteps`: a larger offset makes every
    /// inference timestep fall outside the training schedule.
    fn check_offset(&self) -> Result<()> {
        let n = self.num_train_timesteps.unwrap_or(1000);
        match self.steps_offset {
            Some(offset) if offset >= n => Err(Error::config(
                "steps_offset",
                format!("{offset} is not below num_train_timesteps ({n})"),
            )),
            _ => Ok(()),
        }
    }

    /// SD1.5's `scheduler/scheduler_config.json` (a PNDM scheduler with PLMS steps).
    pub fn sd_v1_5() -> Self {
        Self {
            class_name: Some("PNDMScheduler".into()),
            num_train_timesteps: Some(1000),
            beta_start: Some(0.00085),
            beta_end: Some(0.012),
            beta_schedule: Some(BetaSchedule::ScaledLinear),
            set_alpha_to_one: Some(false),
            skip_prk_steps: Some(true),
            steps_offset: Some(1),
            clip_sample: Some(false),
            ..Self::default()
        }
    }

    /// The scheduler kind this file describes (from `_class_name`; a DPM-Solver file with
    /// `use_karras_sigmas: true` is [`SchedulerKind::DpmSolverMultistepKarras`]).
    ///
    /// # Errors
    /// [`Error::Config`] when `_class_name` is missing, [`Error::Unsupported`] for a class this
    /// crate does not implement.
    pub fn kind(&self) -> Result<SchedulerKind> {
        let name = self.class_name.as_deref().ok_or_else(|| {
            Error::config(
                "_class_name",
                "missing: name a scheduler kind to build from this config",
            )
        })?;
        let kind = SchedulerKind::from_class_name(name)?;
        Ok(match kind {
            SchedulerKind::DpmSolverMultistep if self.use_karras_sigmas == Some(true) => {
                SchedulerKind::DpmSolverMultistepKarras
            }
            other => other,
        })
    }

    /// Builds a scheduler: the class named by `_class_name` for `None`, else `kind` (see
    /// [`SchedulerKind::build`], which this delegates to).
    ///
    /// # Errors
    /// [`Error::Config`] when `kind` is `None` and `_class_name` is missing, and the errors of
    /// [`SchedulerKind::build`].
    pub fn build<B: Backend>(
        &self,
        kind: Option<SchedulerKind>,
        device: &B::Device,
    ) -> Result<Box<dyn Scheduler<B>>> {
        kind.map_or_else(|| self.kind(), Ok)?.build(self, device)
    }
}

/// Wraps the bare tokens `NaN`, `Infinity` and `-Infinity` (Python's JSON extensions) in quotes
/// so `serde_json` accepts them; float fields read them back through [`lenient_f64`].
fn quote_non_finite(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
        } else {
            let token = ["-Infinity", "Infinity", "NaN"]
                .into_iter()
                .find(|t| rest.starts_with(t));
            if let Some(token) = token {
                out.push('"');
                out.push_str(token);
                out.push('"');
                rest = &rest[token.len()..];
                continue;
            }
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// A float that may also be one of the strings `"Infinity"`, `"-Infinity"`, `"NaN"`.
fn lenient_f64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<f64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Lenient {
        Number(f64),
        Text(String),
    }
    match Option::<Lenient>::deserialize(deserializer)? {
        None => Ok(None),
        Some(Lenient::Number(v)) => Ok(Some(v)),
        Some(Lenient::Text(t)) => match t.as_str() {
            "Infinity" => Ok(Some(f64::INFINITY)),
            "-Infinity" => Ok(Some(f64::NEG_INFINITY)),
            "NaN" => Ok(Some(f64::NAN)),
            other => Err(serde::de::Error::custom(format!(
                "expected a number, found the string {other:?}"
            ))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_non_finite_floats_are_accepted() {
        let c = SchedulerConfig::from_json(
            r#"{"_class_name": "DPMSolverMultistepScheduler", "lambda_min_clipped": -Infinity,
                "sigma_max": Infinity, "time_shift_type": "-Infinity NaN"}"#,
        )
        .unwrap();
        assert_eq!(c.lambda_min_clipped, Some(f64::NEG_INFINITY));
        assert_eq!(c.sigma_max, Some(f64::INFINITY));
        assert_eq!(c.time_shift_type.as_deref(), Some("-Infinity NaN"));
    }

    #[test]
    fn unknown_enum_value_is_a_config_error() {
        let err = SchedulerConfig::from_json(r#"{"beta_schedule": "cubic"}"#).unwrap_err();
        match err {
            Error::Config { field, .. } => assert_eq!(field, "beta_schedule"),
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn sd15_preset_round_trips() {
        let text = r#"{"_class_name": "PNDMScheduler", "_diffusers_version": "0.6.0",
            "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
            "num_train_timesteps": 1000, "set_alpha_to_one": false, "skip_prk_steps": true,
            "steps_offset": 1, "clip_sample": false, "trained_betas": null}"#;
        assert_eq!(
            SchedulerConfig::from_json(text).unwrap(),
            SchedulerConfig::sd_v1_5()
        );
        assert_eq!(
            SchedulerConfig::sd_v1_5().kind().unwrap(),
            SchedulerKind::Pndm
        );
    }
}
