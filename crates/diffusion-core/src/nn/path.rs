//! Module mappers and visitors that know where a parameter sits in the module tree.

use burn::module::{ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;

/// The `(field, container type)` of each module entered on the way to a parameter, e.g.
/// `[…, ("to_q", "Struct:Linear"), ("weight", "Struct:Linear")]`.
pub(crate) type ModulePath = [(String, String)];

/// Rewrites float parameters, told the path of each.
pub(crate) trait MapAt<B: Backend> {
    /// The parameter at `path`, rewritten or as it is.
    fn map_at<const D: usize>(
        &mut self,
        path: &ModulePath,
        param: Param<Tensor<B, D>>,
    ) -> Param<Tensor<B, D>>;
}

/// Reads float parameters, told the path of each.
pub(crate) trait VisitAt<B: Backend> {
    /// Reads the parameter at `path`.
    fn visit_at<const D: usize>(&mut self, path: &ModulePath, param: &Param<Tensor<B, D>>);
}

/// A [`ModuleMapper`] or [`ModuleVisitor`] from a [`MapAt`] or [`VisitAt`]: it keeps the path
/// of the modules entered and hands it to the inner one with each parameter.
pub(crate) struct Tracked<T> {
    path: Vec<(String, String)>,
    /// The mapper or visitor told the paths.
    pub inner: T,
}

impl<T> Tracked<T> {
    /// `inner`, at the root of the tree.
    pub fn new(inner: T) -> Self {
        Self {
            path: Vec::new(),
            inner,
        }
    }

    fn enter(&mut self, name: &str, container_type: &str) {
        self.path
            .push((name.to_string(), container_type.to_string()));
    }
}

impl<B: Backend, T: MapAt<B>> ModuleMapper<B> for Tracked<T> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        self.inner.map_at(&self.path, param)
    }
}

impl<B: Backend, T: VisitAt<B>> ModuleVisitor<B> for Tracked<T> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.inner.visit_at(&self.path, param);
    }
}
