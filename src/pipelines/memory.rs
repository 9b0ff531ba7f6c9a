//! The memory estimate of a generation, checked before anything is allocated for it.
//!
//! The estimate is deliberately simple and counts what dominates at large sizes:
//!
//! * the weights (parameters × the dtype's size) — only against an explicit limit, since the
//!   machine's available memory is measured after they were loaded;
//! * the UNet's self-attention scores at the highest resolution that has attention,
//!   `batch × heads × tokens² × 4` bytes (f32 softmax), when the backend materialises them
//!   (not burn-flex, whose long-sequence attention is tiled, nor the fused-kernel GPU ones);
//! * the UNet's feature maps at the latent resolution (the first level's skips and working
//!   tensors);
//! * the VAE decoder's feature maps at full resolution and its single-head mid-block attention
//!   (`images × tokens² × 4` bytes, materialised everywhere but on burn-flex);
//! * the latents and the scheduler's copies of them.
//!
//! The batch is `num_images`, doubled by classifier-free guidance.

use burn::module::Module;
use burn::prelude::*;
use burn::tensor::DType;
use prompt_diffusion_core::Result;
use prompt_diffusion_core::dtype::default_float_dtype;
use prompt_diffusion_core::memory::{MemoryEstimate, MemoryLimit, tensor_bytes};
use prompt_diffusion_core::nn::fused_attention_available;

use super::loading::Components;

/// The shape of a generation, for [`estimate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunShape {
    /// Output width in pixels.
    pub width: usize,
    /// Output height in pixels.
    pub height: usize,
    /// Images generated.
    pub images: usize,
    /// Whether classifier-free guidance doubles the UNet batch.
    pub guided: bool,
}

/// Bytes of one element of `dtype`.
fn element_bytes(dtype: DType) -> usize {
    dtype.size()
}

/// The bytes the parameters of `module` take in `dtype`.
pub fn weight_bytes<B: Backend, M: Module<B>>(module: &M, dtype: DType) -> u64 {
    (module.num_params() as u64).saturating_mul(element_bytes(dtype) as u64)
}

/// Estimates the peak memory of a generation of `shape` with `components`; `extra_weights`
/// (bytes) adds models loaded beside them (a ControlNet, plug-ins).
pub fn estimate<B: Backend>(
    components: &Components<B>,
    shape: RunShape,
    extra_weights: u64,
    device: &B::Device,
) -> MemoryEstimate {
    let mut estimate = MemoryEstimate::default();
    let model_dtype = default_float_dtype::<B>(device);
    let vae_dtype = components.vae.decoder.conv_in.weight.val().dtype();
    let weights = weight_bytes(&components.unet, model_dtype)
        .saturating_add(weight_bytes(&components.text_encoder, model_dtype))
        .saturating_add(weight_bytes(&components.vae, vae_dtype))
        .saturating_add(extra_weights);
    estimate.add("weights", weights);

    let factor = components.vae.config().downsampling_factor().max(1);
    let (h, w) = (shape.height / factor, shape.width / factor);
    let batch = shape
        .images
        .saturating_mul(if shape.guided { 2 } else { 1 });
    let unet = components.unet.config();
    let n = unet.block_out_channels.len();
    let act = element_bytes(model_dtype);

    // burn-flex switches to a tiled (flash) attention on long sequences, the wgpu/CUDA fused
    // kernel never materialises scores for the UNet's head sizes; the rest (ndarray, the
    // reference path of other backends) materialise `tokens²` scores per head.
    let flex = B::name(device).contains("flex");
    if !fused_attention_available::<B>() && !flex {
        let heads = unet
            .attention_head_dim
            .per_block(n, "attention_head_dim")
            .unwrap_or_default();
        let level = unet
            .down_block_types
            .iter()
            .position(|kind| kind.has_attention());
        if let Some(level) = level {
            let tokens = (h >> level).saturating_mul(w >> level);
            let heads = heads.get(level).copied().unwrap_or(1);
            estimate.add(
                "UNet attention scores",
                tensor_bytes(&[batch, heads, tokens, tokens], 4),
            );
        }
    }
    let c0 = unet.block_out_channels.first().copied().unwrap_or(0);
    estimate.add(
        "UNet feature maps",
        tensor_bytes(&[batch, c0, h, w, 8], act),
    );

    let vae = components.vae.config();
    let widest = vae
        .block_out_channels
        .iter()
        .take(2)
        .max()
        .copied()
        .unwrap_or(0);
    let vae_act = element_bytes(vae_dtype);
    estimate.add(
        "VAE decoder feature maps",
        tensor_bytes(
            &[shape.images, widest, shape.height, shape.width, 4],
            vae_act,
        ),
    );
    if vae.mid_block_add_attention && !flex {
        let tokens = h.saturating_mul(w);
        estimate.add(
            "VAE attention scores",
            tensor_bytes(&[shape.images, tokens, tokens], 4),
        );
    }
    let latent = vae.latent_channels;
    estimate.add("latents", tensor_bytes(&[batch, latent, h, w, 6], 4));
    estimate
}

/// Refuses a generation of `shape` that does not fit in `limit` (see [`estimate`]); against
/// the machine's available memory the weights, already loaded, are not counted again.
///
/// # Errors
/// [`Error::OutOfMemory`](prompt_diffusion_core::Error::OutOfMemory) with the estimate, its
/// largest parts and the limit.
pub fn check<B: Backend>(
    components: &Components<B>,
    shape: RunShape,
    extra_weights: u64,
    limit: MemoryLimit,
    device: &B::Device,
) -> Result<()> {
    let mut estimate = estimate(components, shape, extra_weights, device);
    if limit == MemoryLimit::Available {
        estimate.parts.retain(|(what, _)| what != "weights");
    }
    let what = format!(
        "a {}×{} generation of {} image{}{}",
        shape.width,
        shape.height,
        shape.images,
        if shape.images == 1 { "" } else { "s" },
        if shape.guided { " with guidance" } else { "" }
    );
    estimate.check(&what, limit)
}
