//! The scheduler kinds, their command-line names and diffusers class names (the entries of
//! `KarrasDiffusionSchedulers` in diffusers' `schedulers/scheduling_utils.py` that this crate
//! implements), and the factory that builds each kind from a [`SchedulerConfig`]: the one place
//! that reads the config, fills absent keys with the class's own defaults and rejects what
//! diffusers rejects or this crate does not implement.

use burn::prelude::Backend;
use prompt_diffusion_core::{Error, Result};

use crate::config::SchedulerConfig;
use crate::dpmsolver_multistep::DpmSolverOptions;
use crate::options::{
    AlgorithmType, FinalSigmasType, InterpolationType, PredictionType, SolverType, TimestepSpacing,
    TimestepType, VarianceType,
};
use crate::schedule::{
    DiscreteState, Form, NoiseSchedule, ScheduleParams, SigmaOptions, SigmaSpacing, SigmaState,
};
use crate::unipc_multistep::UniPcOptions;
use crate::{
    DdimScheduler, DdpmScheduler, DpmSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler, LmsDiscreteScheduler, PndmScheduler, Scheduler,
    UniPcMultistepScheduler,
};

/// A supported scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SchedulerKind {
    /// `DDIMScheduler` (`ddim`).
    Ddim,
    /// `DDPMScheduler` (`ddpm`).
    Ddpm,
    /// `PNDMScheduler` (`pndm`), SD1.5's default.
    Pndm,
    /// `EulerDiscreteScheduler` (`euler`).
    Euler,
    /// `EulerAncestralDiscreteScheduler` (`euler-ancestral`).
    EulerAncestral,
    /// `DPMSolverMultistepScheduler` (`dpm++2m`).
    DpmSolverMultistep,
    /// `DPMSolverMultistepScheduler` with `use_karras_sigmas = true` (`dpm++2m-karras`).
    DpmSolverMultistepKarras,
    /// `UniPCMultistepScheduler` (`unipc`).
    UniPc,
    /// `LMSDiscreteScheduler` (`lms`).
    Lms,
}

impl SchedulerKind {
    /// Every kind, in command-line order.
    pub const ALL: [SchedulerKind; 9] = [
        SchedulerKind::Ddim,
        SchedulerKind::Ddpm,
        SchedulerKind::Pndm,
        SchedulerKind::Euler,
        SchedulerKind::EulerAncestral,
        SchedulerKind::DpmSolverMultistep,
        SchedulerKind::DpmSolverMultistepKarras,
        SchedulerKind::UniPc,
        SchedulerKind::Lms,
    ];

    /// The command-line name (`ddim`, `dpm++2m-karras`, …).
    pub fn name(self) -> &'static str {
        match self {
            SchedulerKind::Ddim => "ddim",
            SchedulerKind::Ddpm => "ddpm",
            SchedulerKind::Pndm => "pndm",
            SchedulerKind::Euler => "euler",
            SchedulerKind::EulerAncestral => "euler-ancestral",
            SchedulerKind::DpmSolverMultistep => "dpm++2m",
            SchedulerKind::DpmSolverMultistepKarras => "dpm++2m-karras",
            SchedulerKind::UniPc => "unipc",
            SchedulerKind::Lms => "lms",
        }
    }

    /// The diffusers class implementing this kind.
    pub fn class_name(self) -> &'static str {
        match self {
            SchedulerKind::Ddim => "DDIMScheduler",
            SchedulerKind::Ddpm => "DDPMScheduler",
            SchedulerKind::Pndm => "PNDMScheduler",
            SchedulerKind::Euler => "EulerDiscreteScheduler",
            SchedulerKind::EulerAncestral => "EulerAncestralDiscreteScheduler",
            SchedulerKind::DpmSolverMultistep | SchedulerKind::DpmSolverMultistepKarras => {
                "DPMSolverMultistepScheduler"
            }
            SchedulerKind::UniPc => "UniPCMultistepScheduler",
            SchedulerKind::Lms => "LMSDiscreteScheduler",
        }
    }

    /// The kind for a diffusers class name (`"EulerDiscreteScheduler"` → [`SchedulerKind::Euler`];
    /// `"DPMSolverMultistepScheduler"` → [`SchedulerKind::DpmSolverMultistep`]).
    ///
    /// # Errors
    /// [`Error::Unsupported`] for any other class.
    pub fn from_class_name(name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.class_name() == name)
            .ok_or_else(|| {
                Error::Unsupported(format!(
                    "scheduler class `{name}` (supported: {})",
                    Self::ALL
                        .iter()
                        .filter(|k| **k != SchedulerKind::DpmSolverMultistepKarras)
                        .map(|k| k.class_name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
    }
}

impl SchedulerKind {
    /// Builds this scheduler from `config`, like diffusers'
    /// `OtherScheduler.from_config(pipe.scheduler.config)`: every key the class takes is read
    /// from the file when the file sets it, and the class's own defaults fill the rest.
    /// Defaults the folder's own class filled in are not carried over, because diffusers records
    /// them in `_use_default_values` and drops them (so SD1.5's PNDM config switched to Euler
    /// gets Euler's `timestep_spacing = "linspace"`, not PNDM's `"leading"`). Keys a class does
    /// not take but diffusers reads through `hasattr(self.config, …)` (`sigma_min`/`sigma_max`
    /// for DPM-Solver's Karras and LMS's exponential sigmas) are honoured the same way.
    /// [`SchedulerKind::DpmSolverMultistepKarras`] forces `use_karras_sigmas = true`.
    /// `device` is where the scheduler will be used; no tensor is created before `step`.
    ///
    /// # Errors
    /// [`Error::Config`] for values diffusers rejects, [`Error::Unsupported`] for options this
    /// crate does not implement (e.g. thresholding, learned variances, flow sigmas).
    pub fn build<B: Backend>(
        self,
        config: &SchedulerConfig,
        device: &B::Device,
    ) -> Result<Box<dyn Scheduler<B>>> {
        // Schedulers allocate nothing up front: their tensors follow the inputs of `step`.
        let _ = device;
        let karras;
        let c = if self == SchedulerKind::DpmSolverMultistepKarras {
            karras = SchedulerConfig {
                use_karras_sigmas: Some(true),
                ..config.clone()
            };
            &karras
        } else {
            config
        };
        let class = self.class_name();
        let clip_sample = || {
            c.clip_sample
                .unwrap_or(true)
                .then(|| c.clip_sample_range.unwrap_or(1.0) as f32)
        };
        Ok(match self {
            SchedulerKind::Ddim => {
                reject_flags(class, &[("thresholding", c.thresholding)])?;
                let alpha_to_one = c.set_alpha_to_one.unwrap_or(true);
                let state = DiscreteState::new(self.params(c)?, alpha_to_one);
                Box::new(DdimScheduler::new(state, clip_sample()))
            }
            SchedulerKind::Ddpm => {
                reject_flags(class, &[("thresholding", c.thresholding)])?;
                let variance_type = c.variance_type.unwrap_or(VarianceType::FixedSmall);
                reject_learned(class, Some(variance_type))?;
                let state = DiscreteState::new(self.params(c)?, true);
                Box::new(DdpmScheduler::new(state, variance_type, clip_sample()))
            }
            SchedulerKind::Pndm => {
                let alpha_to_one = c.set_alpha_to_one.unwrap_or(false);
                let state = DiscreteState::new(self.params(c)?, alpha_to_one);
                Box::new(PndmScheduler::new(state, c.skip_prk_steps.unwrap_or(false)))
            }
            SchedulerKind::Euler => {
                let state = self.sigma_state(c, sigma_options(c)?)?;
                let interpolation = c.interpolation_type.unwrap_or(InterpolationType::Linear);
                let continuous = c.timestep_type == Some(TimestepType::Continuous);
                Box::new(EulerDiscreteScheduler::new(
                    state,
                    interpolation,
                    continuous,
                ))
            }
            SchedulerKind::EulerAncestral => {
                let options = SigmaOptions {
                    spacing: SigmaSpacing::Interpolated,
                    bounds: (None, None),
                    final_sigmas_type: FinalSigmasType::Zero,
                };
                Box::new(EulerAncestralDiscreteScheduler::new(
                    self.sigma_state(c, options)?,
                ))
            }
            SchedulerKind::Lms => {
                let mut options = sigma_options(c)?;
                options.final_sigmas_type = FinalSigmasType::Zero;
                // Karras spacing ignores the configured bounds in LMS.
                if options.spacing == SigmaSpacing::Karras {
                    options.bounds = (None, None);
                }
                Box::new(LmsDiscreteScheduler::new(self.sigma_state(c, options)?)?)
            }
            SchedulerKind::DpmSolverMultistep | SchedulerKind::DpmSolverMultistepKarras => {
                reject_flags(class, &multistep_flags(c))?;
                reject_learned(class, c.variance_type)?;
                let sigmas = sigma_options(c)?;
                let algorithm = match c.algorithm_type.unwrap_or(AlgorithmType::DpmSolverPlusPlus) {
                    AlgorithmType::Deis => AlgorithmType::DpmSolverPlusPlus,
                    AlgorithmType::SdeDpmSolver => {
                        return Err(Error::Unsupported(
                            "DPM-Solver algorithm_type sde-dpmsolver (deprecated in diffusers)"
                                .into(),
                        ));
                    }
                    other => other,
                };
                if algorithm == AlgorithmType::DpmSolver
                    && sigmas.final_sigmas_type == FinalSigmasType::Zero
                {
                    return Err(Error::config(
                        "final_sigmas_type",
                        "`zero` is not supported for algorithm_type dpmsolver; choose `sigma_min`",
                    ));
                }
                let options = DpmSolverOptions {
                    solver_order: solver_order(c)?,
                    algorithm,
                    heun: c.solver_type == Some(SolverType::Heun),
                    lower_order_final: c.lower_order_final.unwrap_or(true),
                    euler_at_final: c.euler_at_final.unwrap_or(false),
                    lu_lambdas: c.use_lu_lambdas.unwrap_or(false),
                    lambda_min_clipped: c.lambda_min_clipped.unwrap_or(f64::NEG_INFINITY),
                };
                let state = self.sigma_state(c, sigmas)?;
                Box::new(DpmSolverMultistepScheduler::new(state, options))
            }
            SchedulerKind::UniPc => {
                reject_flags(class, &multistep_flags(c))?;
                if c.solver_p.as_ref().is_some_and(|v| !v.is_null()) {
                    return Err(Error::Unsupported("UniPC with an external solver_p".into()));
                }
                if c.shift_terminal.is_some() {
                    return Err(Error::config(
                        "shift_terminal",
                        "is only supported with use_flow_sigmas",
                    ));
                }
                let sigmas = sigma_options(c)?;
                let options = UniPcOptions {
                    solver_order: solver_order(c)?,
                    predict_x0: c.predict_x0.unwrap_or(true),
                    bh1: c.solver_type == Some(SolverType::Bh1),
                    lower_order_final: c.lower_order_final.unwrap_or(true),
                    disable_corrector: c.disable_corrector.clone().unwrap_or_default(),
                };
                let degenerate =
                    !options.predict_x0 || (!options.lower_order_final && options.solver_order > 1);
                if sigmas.final_sigmas_type == FinalSigmasType::Zero && degenerate {
                    return Err(Error::config(
                        "final_sigmas_type",
                        "`zero` with predict_x0 = false or lower_order_final = false divides by \
                         an infinite log-SNR step on the last step (diffusers returns NaN/inf); \
                         use `sigma_min`",
                    ));
                }
                let state = self.sigma_state(c, sigmas)?;
                Box::new(UniPcMultistepScheduler::new(state, options))
            }
        })
    }

    /// The training schedule, timestep layout and prediction type of this class, with its
    /// defaults (N = 1000, linear betas 0.0001–0.02, its own `timestep_spacing`, epsilon).
    fn params(self, config: &SchedulerConfig) -> Result<ScheduleParams> {
        use PredictionType::{Epsilon, FlowPrediction, OriginalSample, Sample, VPrediction};
        use TimestepSpacing::{Leading, Linspace};
        // (takes rescale_betas_zero_snr, floors ᾱ_{N−1} after rescaling, default spacing,
        // accepted prediction types)
        let (rescale, floor, spacing, accepted): (_, _, _, &[PredictionType]) = match self {
            SchedulerKind::Ddim | SchedulerKind::Ddpm => {
                (true, false, Leading, &[Epsilon, Sample, VPrediction])
            }
            SchedulerKind::Pndm => (false, false, Leading, &[Epsilon, VPrediction]),
            SchedulerKind::Euler => (
                true,
                true,
                Linspace,
                &[Epsilon, VPrediction, Sample, OriginalSample],
            ),
            SchedulerKind::EulerAncestral => (true, true, Linspace, &[Epsilon, VPrediction]),
            SchedulerKind::Lms => (false, false, Linspace, &[Epsilon, VPrediction, Sample]),
            SchedulerKind::DpmSolverMultistep
            | SchedulerKind::DpmSolverMultistepKarras
            | SchedulerKind::UniPc => (
                true,
                true,
                Linspace,
                &[Epsilon, Sample, VPrediction, FlowPrediction],
            ),
        };
        let schedule = NoiseSchedule::new(config, rescale, floor)?;
        Ok(ScheduleParams {
            schedule,
            timestep_spacing: config.timestep_spacing.unwrap_or(spacing),
            steps_offset: config.steps_offset.unwrap_or(0),
            prediction_type: prediction_type(config, self.class_name(), accepted)?,
        })
    }

    /// The sigma state of this class (exploding form for Euler, Euler ancestral and LMS).
    fn sigma_state(self, config: &SchedulerConfig, options: SigmaOptions) -> Result<SigmaState> {
        let form = match self {
            SchedulerKind::Euler | SchedulerKind::EulerAncestral | SchedulerKind::Lms => {
                Form::Exploding
            }
            _ => Form::Preserving,
        };
        Ok(SigmaState::new(self.params(config)?, form, options))
    }
}

/// The sigma options: spacing, `sigma_min`/`sigma_max`, `final_sigmas_type` (default zero).
fn sigma_options(config: &SchedulerConfig) -> Result<SigmaOptions> {
    Ok(SigmaOptions {
        spacing: SigmaSpacing::from_config(config)?,
        bounds: (config.sigma_min, config.sigma_max),
        final_sigmas_type: config.final_sigmas_type.unwrap_or(FinalSigmasType::Zero),
    })
}

/// The flags DPM-Solver and UniPC do not implement.
fn multistep_flags(config: &SchedulerConfig) -> [(&'static str, Option<bool>); 3] {
    [
        ("thresholding", config.thresholding),
        ("use_flow_sigmas", config.use_flow_sigmas),
        ("use_dynamic_shifting", config.use_dynamic_shifting),
    ]
}

/// `solver_order` (default 2, at least 1).
fn solver_order(config: &SchedulerConfig) -> Result<usize> {
    match config.solver_order.unwrap_or(2) {
        0 => Err(Error::config("solver_order", "must be at least 1")),
        order => Ok(order),
    }
}

/// Rejects the flags (`field: true`) this crate does not implement for `class`.
fn reject_flags(class: &str, flags: &[(&str, Option<bool>)]) -> Result<()> {
    match flags.iter().find(|(_, value)| *value == Some(true)) {
        Some((field, _)) => Err(Error::Unsupported(format!("{class} with `{field}: true`"))),
        None => Ok(()),
    }
}

/// Rejects the learned variances (a model predicting its variance).
fn reject_learned(class: &str, variance_type: Option<VarianceType>) -> Result<()> {
    match variance_type {
        Some(v @ (VarianceType::Learned | VarianceType::LearnedRange)) => Err(Error::Unsupported(
            format!("{class} with variance_type {v:?} (a model predicting its variance)"),
        )),
        _ => Ok(()),
    }
}

/// The configured prediction type (default epsilon), if `class` accepts it.
fn prediction_type(
    config: &SchedulerConfig,
    class: &str,
    accepted: &[PredictionType],
) -> Result<PredictionType> {
    let p = config.prediction_type.unwrap_or(PredictionType::Epsilon);
    if p == PredictionType::FlowPrediction && accepted.contains(&p) {
        return Err(Error::Unsupported(format!(
            "{class} with prediction_type flow_prediction"
        )));
    }
    if !accepted.contains(&p) {
        return Err(Error::config(
            "prediction_type",
            format!("{p:?} is not supported by {class} (diffusers rejects it too)"),
        ));
    }
    Ok(p)
}

prompt_diffusion_core::named_values!(SchedulerKind: "scheduler");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for kind in SchedulerKind::ALL {
            assert_eq!(kind.to_string().parse::<SchedulerKind>().unwrap(), kind);
        }
        assert_eq!(
            SchedulerKind::from_class_name("EulerDiscreteScheduler").unwrap(),
            SchedulerKind::Euler
        );
        assert_eq!(
            SchedulerKind::from_class_name("DPMSolverMultistepScheduler").unwrap(),
            SchedulerKind::DpmSolverMultistep
        );
    }

    #[test]
    fn unknown_names_list_the_valid_ones() {
        let err = "heun".parse::<SchedulerKind>().unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::InvalidInput { .. }));
        assert!(
            text.contains("dpm++2m-karras") && text.contains("euler-ancestral"),
            "{text}"
        );
        let err = SchedulerKind::from_class_name("HeunDiscreteScheduler").unwrap_err();
        assert!(matches!(err, Error::Unsupported(_)), "{err}");
    }
}
