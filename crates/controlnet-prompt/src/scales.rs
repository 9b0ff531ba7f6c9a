//! How a ControlNet's residuals are scaled before they reach the UNet.
//!
//! diffusers multiplies every residual by `conditioning_scale`, or — in guess mode — by
//! `logspace(−1, 0, n) · conditioning_scale` (0.1 for the first skip up to 1.0 for the mid
//! block). The original ControlNet/Prompt Diffusion code (`cldm/ddim_hacked.py` callers) uses
//! `strength · 0.825^(n−1−i)` in guess mode instead (0.0994 … 1.0). Both are offered, plus
//! explicit per-residual scales.

use prompt_diffusion_core::{Error, Result};

/// Scales of the ControlNet residuals, in residual order (down residuals first, the mid
/// residual last).
#[derive(Debug, Clone, PartialEq)]
pub enum ControlScales {
    /// Every residual times the same factor (diffusers' `conditioning_scale`, the original
    /// `strength`).
    Uniform(f32),
    /// diffusers' `guess_mode=True`: `logspace(−1, 0, n)[i] · scale`.
    GuessMode(f32),
    /// The original repositories' guess mode: `scale · 0.825^(n−1−i)`.
    LdmGuessMode(f32),
    /// One factor per residual (down residuals, then the mid residual).
    PerResidual(Vec<f32>),
}

impl Default for ControlScales {
    fn default() -> Self {
        Self::Uniform(1.0)
    }
}

impl ControlScales {
    /// Whether this is one of the guess-mode schedules (which `global_pool_conditions`
    /// ControlNets ignore, as diffusers does).
    pub fn is_guess_mode(&self) -> bool {
        matches!(self, Self::GuessMode(_) | Self::LdmGuessMode(_))
    }

    /// The factors for `n` residuals (13 for SD: 12 down + mid).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when explicit scales do not number `n`, or a scale is not
    /// finite.
    pub fn resolve(&self, n: usize) -> Result<Vec<f32>> {
        let scales = match self {
            Self::Uniform(s) => vec![*s; n],
            Self::GuessMode(s) => (0..n)
                .map(|i| {
                    // torch.logspace(-1, 0, n): 10^(−1 + i/(n−1)).
                    let exponent = if n > 1 {
                        -1.0 + i as f64 / (n - 1) as f64
                    } else {
                        -1.0
                    };
                    (10f64.powf(exponent) as f32) * s
                })
                .collect(),
            Self::LdmGuessMode(s) => (0..n)
                .map(|i| s * 0.825f64.powi((n - 1 - i) as i32) as f32)
                .collect(),
            Self::PerResidual(scales) => {
                if scales.len() != n {
                    return Err(Error::invalid_input(
                        "control scales",
                        format!("{} scales for {n} residuals", scales.len()),
                    ));
                }
                scales.clone()
            }
        };
        if let Some(bad) = scales.iter().find(|s| !s.is_finite()) {
            return Err(Error::invalid_input(
                "control scales",
                format!("{bad} is not finite"),
            ));
        }
        Ok(scales)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guess_mode_schedules() {
        let d = ControlScales::GuessMode(1.0).resolve(13).unwrap();
        assert!((d[0] - 0.1).abs() < 1e-7 && (d[12] - 1.0).abs() < 1e-7);
        assert!((d[6] - 10f32.powf(-0.5)).abs() < 1e-6);
        let l = ControlScales::LdmGuessMode(2.0).resolve(13).unwrap();
        assert!((l[0] - 2.0 * 0.825f32.powi(12)).abs() < 1e-6);
        assert_eq!(l[12], 2.0);
        assert_eq!(
            ControlScales::Uniform(0.5).resolve(3).unwrap(),
            vec![0.5; 3]
        );
    }

    #[test]
    fn explicit_scales_are_checked() {
        assert!(
            ControlScales::PerResidual(vec![1.0; 12])
                .resolve(13)
                .is_err()
        );
        assert!(ControlScales::Uniform(f32::NAN).resolve(13).is_err());
    }
}
