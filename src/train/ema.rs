//! An exponential moving average of a model's weights (diffusers' `EMAModel`).

use burn::module::{AutodiffModule, Module, ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

/// The averaged weights of a module `M` being trained on `B`, held as a copy of the module
/// on the inner backend: `ema ← d · ema + (1 − d) · θ` after each step, with diffusers'
/// warm-up `d = min(decay, (1 + n) / (10 + n))` at the n-th update.
#[derive(Debug, Clone)]
pub struct Ema<M> {
    /// The averaged module.
    pub module: M,
    /// The bound of the decay.
    pub decay: f64,
    /// Updates applied so far.
    pub updates: usize,
}

impl<M> Ema<M> {
    /// Starts an average at `module` (a copy of the weights being trained).
    pub fn new(module: M, decay: f64) -> Self {
        Self {
            module,
            decay,
            updates: 0,
        }
    }

    /// The decay of the next update.
    pub fn current_decay(&self) -> f64 {
        let n = self.updates as f64;
        self.decay.min((1.0 + n) / (10.0 + n))
    }

    /// Moves the average towards `trained` (the module after an optimiser step).
    pub fn update<B, T>(&mut self, trained: &T)
    where
        B: AutodiffBackend,
        T: AutodiffModule<B, InnerModule = M>,
        M: Module<B::InnerBackend>,
    {
        let mut current = Collect::<B::InnerBackend>(Vec::new());
        trained.valid().visit(&mut current);
        let decay = self.current_decay();
        let mut blend = Blend {
            current: current.0.into_iter(),
            decay,
        };
        self.module = self.module.clone().map(&mut blend);
        self.updates += 1;
    }
}

/// Collects every float parameter, flattened, in visiting order.
struct Collect<B: Backend>(Vec<Tensor<B, 1>>);

impl<B: Backend> ModuleVisitor<B> for Collect<B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.0.push(param.val().flatten(0, D - 1));
    }
}

/// Blends each float parameter with the next collected one.
struct Blend<B: Backend> {
    current: std::vec::IntoIter<Tensor<B, 1>>,
    decay: f64,
}

impl<B: Backend> ModuleMapper<B> for Blend<B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let Some(current) = self.current.next() else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let current = current.reshape(tensor.shape());
        let blended = tensor * self.decay + current * (1.0 - self.decay);
        Param::from_mapped_value(id, blended, mapper)
    }
}
