//! Memory layouts that suit the backend a model runs on.

use burn::module::{Module, Param};
use burn::prelude::*;

use super::fused::channels_last;
use super::path::{MapAt, ModulePath, Tracked};

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
    module.map(&mut Tracked::new(ConvWeights))
}

/// Rewrites the `weight` of every `Conv2d` it visits.
struct ConvWeights;

impl<B: Backend> MapAt<B> for ConvWeights {
    fn map_at<const D: usize>(
        &mut self,
        path: &ModulePath,
        param: Param<Tensor<B, D>>,
    ) -> Param<Tensor<B, D>> {
        let conv_weight = matches!(
            path.last(),
            Some((name, container)) if name == "weight" && container == "Struct:Conv2d"
        );
        if D == 4 && conv_weight {
            param.map(channels_last)
        } else {
            param
        }
    }
}
