//! Data parallelism on one device: the parts of a batch run forward and backward on their own
//! threads (each on a fork of the model: the same parameters and ids, its own autodiff graph)
//! and their gradients are summed. burn-flex runs element-wise operations on one thread, so
//! two parts keep both cores of a small CPU busy.

use burn::module::AutodiffModule;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

use crate::core::{Error, Result};

/// The summed loss and gradients of `loss(model, part)` over `parts`, each part on its own
/// thread (one part runs on the calling thread, on `model` itself). Each part's loss must be
/// weighted by its share of the batch, so the sum is the batch loss.
///
/// # Errors
/// The first error of a part, or [`Error::InvalidInput`] when a part's thread panicked.
pub(super) fn summed_gradients<B, M, I, F>(
    model: &M,
    parts: Vec<I>,
    device: &B::Device,
    loss: F,
) -> Result<(f32, GradientsParams)>
where
    B: AutodiffBackend,
    M: AutodiffModule<B> + Send,
    I: Send,
    F: Fn(&M, I) -> Result<Tensor<B, 1>> + Sync,
{
    let run = |model: &M, part: I| -> Result<(f32, GradientsParams)> {
        let loss = loss(model, part)?;
        let value = loss.clone().into_scalar().elem::<f32>();
        Ok((value, GradientsParams::from_grads(loss.backward(), model)))
    };
    let mut parts = parts.into_iter();
    let Some(first) = parts.next() else {
        return Err(Error::invalid_input("batch", "no part to train on"));
    };
    let rest: Vec<I> = parts.collect();
    if rest.is_empty() {
        return run(model, first);
    }
    let results: Vec<Result<(f32, GradientsParams)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = rest
            .into_iter()
            .map(|part| {
                let fork = model.clone().fork(device);
                let run = &run;
                scope.spawn(move || run(&fork, part))
            })
            .collect();
        let mut results = vec![run(model, first)];
        for handle in handles {
            results.push(handle.join().unwrap_or_else(|_| {
                Err(Error::invalid_input("training", "a worker thread panicked"))
            }));
        }
        results
    });
    let mut total = 0.0;
    let mut accumulator = GradientsAccumulator::<M>::new();
    for result in results {
        let (value, grads) = result?;
        total += value;
        accumulator.accumulate(model, grads);
    }
    Ok((total, accumulator.grads()))
}

/// Splits `batch` items into `parts` contiguous ranges as even as possible (no empty one).
pub(super) fn split(batch: usize, parts: usize) -> Vec<std::ops::Range<usize>> {
    let parts = parts.clamp(1, batch.max(1));
    let (size, extra) = (batch / parts, batch % parts);
    let mut start = 0;
    (0..parts)
        .map(|i| {
            let len = size + usize::from(i < extra);
            let range = start..start + len;
            start += len;
            range
        })
        .collect()
}
