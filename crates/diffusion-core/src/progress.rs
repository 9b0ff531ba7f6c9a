//! Per-step progress reporting and cancellation.

use std::ops::ControlFlow;
use std::time::Duration;

/// What a denoising loop reports after each step.
#[derive(Debug, Clone, PartialEq)]
pub struct StepInfo {
    /// Steps completed so far (1-based after the first step).
    pub step: usize,
    /// Total number of steps of the run.
    pub total: usize,
    /// The timestep just processed.
    pub timestep: f64,
    /// Wall time of this step.
    pub elapsed: Duration,
}

/// Receives a [`StepInfo`] after every denoising step; returning `ControlFlow::Break(())`
/// stops the run, which then fails with `Error::Cancelled`.
///
/// Any `FnMut(&StepInfo) -> ControlFlow<()>` closure is a callback.
pub trait StepCallback {
    /// Called after each step.
    fn on_step(&mut self, info: &StepInfo) -> ControlFlow<()>;
}

impl<F: FnMut(&StepInfo) -> ControlFlow<()>> StepCallback for F {
    fn on_step(&mut self, info: &StepInfo) -> ControlFlow<()> {
        self(info)
    }
}

/// A callback that does nothing and never cancels.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl StepCallback for NoProgress {
    fn on_step(&mut self, _info: &StepInfo) -> ControlFlow<()> {
        ControlFlow::Continue(())
    }
}
