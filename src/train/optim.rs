//! The optimiser both stages use.

use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;

use super::model::TrainConfig;
use crate::diff_plugin::train::clip_grad_norm;

/// AdamW (β 0.9/0.999, ε 1e-5 as burn's default) with the configured weight decay.
pub(super) fn adamw<B: AutodiffBackend, M: AutodiffModule<B>>(
    config: &TrainConfig,
) -> OptimizerAdaptor<AdamW, M, B> {
    AdamWConfig::new()
        .with_weight_decay(config.weight_decay)
        .init()
}

/// One optimiser step of `model` on `grads`, their global norm clipped to `max_grad_norm`, at
/// the learning rate of step `steps`, which then counts it.
pub(super) fn update<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &mut M,
    optimizer: &mut OptimizerAdaptor<AdamW, M, B>,
    mut grads: GradientsParams,
    config: &TrainConfig,
    steps: &mut usize,
) {
    clip_grad_norm(model, &mut grads, config.max_grad_norm);
    let rate = config.learning_rate_at(*steps);
    *model = optimizer.step(rate, model.clone(), grads);
    *steps += 1;
}
