//! The two scheduler families and the one [`Scheduler`] implementation they share.
//!
//! Every scheduler is its family's shared state ([`DiscreteState`](super::DiscreteState) for
//! DDIM, DDPM and PNDM; [`SigmaState`](super::SigmaState) for Euler, Euler ancestral, LMS,
//! DPM-Solver and UniPC) plus its own update rule ([`Rule`]). The state holds the schedule,
//! the timesteps, the step bookkeeping and the guards of `step`; the blanket implementation
//! below wires a rule and its state into a [`Scheduler`].

use burn::prelude::*;
use prompt_diffusion_core::Result;
use prompt_diffusion_core::noise::NoiseSource;

use super::NoiseSchedule;
use crate::options::{PredictionType, TimestepSpacing};
use crate::tensor::{
    check_history, check_step_shapes, check_steps, f32, not_initialised, to_dtype,
};
use crate::{Scheduler, SchedulerKind};

/// The options every scheduler takes: its training schedule, how inference timesteps are laid
/// out over it, and what the model predicts.
#[derive(Debug, Clone)]
pub struct ScheduleParams {
    /// The training noise schedule.
    pub schedule: NoiseSchedule,
    /// `timestep_spacing`.
    pub timestep_spacing: TimestepSpacing,
    /// `steps_offset`.
    pub steps_offset: usize,
    /// `prediction_type`.
    pub prediction_type: PredictionType,
}

/// The state a scheduler family keeps once for all its members.
pub trait Family {
    /// The options the state was built with.
    fn params(&self) -> &ScheduleParams;

    /// The current timesteps.
    fn timesteps(&self) -> &[f64];

    /// [`Scheduler::set_begin_index`].
    fn set_begin_index(&mut self, index: usize);

    /// [`Scheduler::init_noise_sigma`].
    fn init_noise_sigma(&self) -> f64;

    /// [`Scheduler::scale_model_input`].
    fn scale_model_input<B: Backend>(
        &mut self,
        sample: Tensor<B, 4>,
        timestep: f64,
    ) -> Tensor<B, 4>;

    /// [`Scheduler::add_noise`]'s factors of the original and of the noise at `timestep`.
    fn noise_scales(&self, timestep: f64) -> (f32, f32);

    /// Lays out the family's default schedule for `n` steps (already checked against the
    /// training range).
    fn lay_out(&mut self, n: usize);

    /// Resets the step bookkeeping after the rule laid out a schedule of `n` steps.
    fn restarted(&mut self, n: usize);

    /// Whether `step` may run ("set_timesteps was not called" otherwise).
    fn ready(&self) -> bool;

    /// The family's guards of `step` on the timestep (not in the schedule, schedule exhausted);
    /// returns where the rule steps from: the training timestep (discrete family) or the step
    /// index (sigma family).
    fn enter(&mut self, timestep: f64) -> Result<usize>;

    /// Records that the step from `at` was taken.
    fn leave(&mut self, at: usize);
}

/// One step's float32 inputs and where the rule steps from (see [`Family::enter`]).
pub struct Step<B: Backend> {
    /// The training timestep (discrete family) or the step index (sigma family).
    pub at: usize,
    /// The model output.
    pub model_output: Tensor<B, 4>,
    /// The sample.
    pub sample: Tensor<B, 4>,
}

/// A scheduler's own part: its update rule on top of its family's state.
pub trait Rule<B: Backend> {
    /// The family state.
    type State: Family;

    /// Which scheduler this is.
    const KIND: SchedulerKind;

    /// The shared state.
    fn state(&self) -> &Self::State;

    /// The shared state, mutably.
    fn state_mut(&mut self) -> &mut Self::State;

    /// Which scheduler this is, when it depends on the options.
    fn scheduler_kind(&self) -> SchedulerKind {
        Self::KIND
    }

    /// Lays out the timesteps (and sigmas) for `n` steps, already checked against the training
    /// range, and clears the rule's history.
    fn lay_out(&mut self, n: usize) -> Result<()> {
        self.state_mut().lay_out(n);
        Ok(())
    }

    /// The shape of the tensors kept from earlier steps, if any.
    fn history(&self) -> Option<[usize; 4]> {
        None
    }

    /// One step on float32 tensors: the sample at the next timestep.
    fn update(&mut self, step: Step<B>, noise: &mut dyn NoiseSource) -> Result<Tensor<B, 4>>;

    /// DDIM's η; ignored by the other rules.
    fn use_eta(&mut self, eta: f64) {
        let _ = eta;
    }
}

/// The state accessors of a [`Rule`] whose state is its field `state`.
macro_rules! rule_state {
    ($state:ty, $kind:expr) => {
        type State = $state;

        const KIND: $crate::SchedulerKind = $kind;

        fn state(&self) -> &$state {
            &self.state
        }

        fn state_mut(&mut self) -> &mut $state {
            &mut self.state
        }
    };
}
pub(crate) use rule_state;

impl<B: Backend, R: Rule<B>> Scheduler<B> for R {
    fn kind(&self) -> SchedulerKind {
        self.scheduler_kind()
    }

    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<()> {
        let n_train = self.state().params().schedule.num_train_timesteps;
        check_steps(num_inference_steps, n_train)?;
        self.lay_out(num_inference_steps)?;
        self.state_mut().restarted(num_inference_steps);
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        self.state().timesteps()
    }

    fn set_begin_index(&mut self, index: usize) {
        self.state_mut().set_begin_index(index);
    }

    fn init_noise_sigma(&self) -> f64 {
        self.state().init_noise_sigma()
    }

    fn scale_model_input(&mut self, sample: Tensor<B, 4>, timestep: f64) -> Tensor<B, 4> {
        self.state_mut().scale_model_input(sample, timestep)
    }

    fn step(
        &mut self,
        model_output: Tensor<B, 4>,
        timestep: f64,
        sample: Tensor<B, 4>,
        noise: &mut dyn NoiseSource,
    ) -> Result<Tensor<B, 4>> {
        if !self.state().ready() {
            return Err(not_initialised());
        }
        check_step_shapes(&model_output, &sample)?;
        check_history(self.history(), &sample)?;
        let at = self.state_mut().enter(timestep)?;
        let dtype = model_output.dtype();
        let (model_output, sample) = (f32(model_output), f32(sample));
        let step = Step {
            at,
            model_output,
            sample,
        };
        let prev = self.update(step, noise)?;
        self.state_mut().leave(at);
        Ok(to_dtype(prev, dtype))
    }

    fn add_noise(
        &self,
        original: Tensor<B, 4>,
        noise: Tensor<B, 4>,
        timestep: f64,
    ) -> Tensor<B, 4> {
        let (original_scale, noise_scale) = self.state().noise_scales(timestep);
        original
            .mul_scalar(original_scale)
            .add(noise.mul_scalar(noise_scale))
    }

    fn set_eta(&mut self, eta: f64) {
        self.use_eta(eta);
    }
}
