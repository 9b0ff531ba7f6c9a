//! The scheduler kinds, their command-line names and diffusers class names (the entries of
//! `KarrasDiffusionSchedulers` in diffusers' `schedulers/scheduling_utils.py` that this crate
//! implements).

use std::fmt;
use std::str::FromStr;

use prompt_diffusion_core::{Error, Result};

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

impl fmt::Display for SchedulerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SchedulerKind {
    type Err = Error;

    /// Parses a command-line name; [`Error::InvalidInput`] listing the valid names otherwise.
    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                Error::invalid_input(
                    "scheduler",
                    format!(
                        "unknown scheduler `{s}`; valid names: {}",
                        Self::ALL.map(|k| k.name()).join(", ")
                    ),
                )
            })
    }
}

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
