//! Counting the parameters a model holds, each shared tensor once.
//!
//! burn parameters are reference-counted: cloning one (or a module) shares its storage and keeps
//! its [`ParamId`]. Counting by id therefore measures what is really held, which is how the
//! multi-flow diffuser shows that switching flows reuses the loaded weights.

use std::collections::HashSet;
use std::fmt;

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::prelude::*;

/// Tensors, scalar parameters and bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParamStats {
    /// Number of parameter tensors.
    pub tensors: usize,
    /// Number of scalar parameters.
    pub params: usize,
    /// Bytes of parameter data (in each tensor's dtype).
    pub bytes: usize,
}

impl std::ops::Add for ParamStats {
    type Output = ParamStats;

    fn add(self, other: ParamStats) -> ParamStats {
        ParamStats {
            tensors: self.tensors + other.tensors,
            params: self.params + other.params,
            bytes: self.bytes + other.bytes,
        }
    }
}

impl fmt::Display for ParamStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} parameters in {} tensors ({:.2} MB)",
            self.params,
            self.tensors,
            self.bytes as f64 / 1e6
        )
    }
}

/// Counts parameters over several modules, each [`ParamId`] once.
#[derive(Debug, Default, Clone)]
pub struct ParamCounter {
    seen: HashSet<ParamId>,
    stats: ParamStats,
}

impl ParamCounter {
    /// An empty counter.
    pub fn new() -> Self {
        Self::default()
    }

    /// A counter that treats `ids` as already counted (to leave them out).
    pub fn excluding(ids: impl IntoIterator<Item = ParamId>) -> Self {
        Self {
            seen: ids.into_iter().collect(),
            stats: ParamStats::default(),
        }
    }

    /// Counts the parameters of `module` not seen before.
    pub fn count<B: Backend, M: Module<B>>(&mut self, module: &M) -> &mut Self {
        module.visit(&mut Visitor {
            counter: self,
            _backend: std::marker::PhantomData::<B>,
        });
        self
    }

    /// What has been counted.
    pub fn stats(&self) -> ParamStats {
        self.stats
    }

    /// The ids counted (and excluded) so far.
    pub fn ids(&self) -> &HashSet<ParamId> {
        &self.seen
    }
}

/// The ids of every parameter of `module`.
pub fn param_ids<B: Backend, M: Module<B>>(module: &M) -> HashSet<ParamId> {
    let mut counter = ParamCounter::new();
    counter.count(module);
    counter.seen
}

struct Visitor<'a, B> {
    counter: &'a mut ParamCounter,
    _backend: std::marker::PhantomData<B>,
}

impl<B: Backend> ModuleVisitor<B> for Visitor<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if !self.counter.seen.insert(param.id) {
            return;
        }
        let elements = param.lazy_shape().num_elements();
        // An uninitialised parameter has no data yet; count it at the backend's float size.
        let width = if param.is_initialized() {
            param.val().dtype().size()
        } else {
            std::mem::size_of::<B::FloatElem>()
        };
        let stats = &mut self.counter.stats;
        stats.tensors += 1;
        stats.params += elements;
        stats.bytes += elements * width;
    }
}
