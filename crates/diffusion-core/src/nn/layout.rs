//! Memory layouts that suit the backend a model runs on.

use burn::module::{Module, ModuleMapper, Param};
use burn::prelude::*;

use super::fused::channels_last;

/// Stores every `Conv2d` weight of `module` channels-last on burn-wgpu and burn-cuda (crate
/// features `wgpu` / `cuda`); returns `module` unchanged on other backends.
///
/// burn-cubecl runs convolutions in NHWC and copies an NCHW-stored weight into that layout at
/// every call; a weight stored channels-last (same logical `[out, in, kh, kw]` shape and values)
/// is used in place. [`load_module`](crate::weights::load_module) applies this to every module
/// it loads; call it on models built with random weights (`init`) to time them as loaded
/// models run.
pub fn channels_last_conv_weights<B: Backend, M: Module<B>>(module: M) -> M {
    if !super::fused_kernels_available::<B>() {
        return module;
    }
    module.map(&mut ConvWeights::default())
}

/// Rewrites the `weight` of every `Conv2d` it visits.
#[derive(Default)]
struct ConvWeights {
    /// `(field, container type)` of the modules entered so far.
    path: Vec<(String, String)>,
}

impl<B: Backend> ModuleMapper<B> for ConvWeights {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path
            .push((name.to_string(), container_type.to_string()));
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let conv_weight = matches!(
            self.path.last(),
            Some((name, container)) if name == "weight" && container == "Struct:Conv2d"
        );
        if D == 4 && conv_weight {
            param.map(channels_last)
        } else {
            param
        }
    }
}
