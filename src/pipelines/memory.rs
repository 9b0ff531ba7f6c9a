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
//!   (`images × tokens² × 4` bytes, materialised everywhere but on burn-flex), for the largest
//!   decoder call: one tile with VAE tiling, one image with slicing
//!   (`vae::VaeOptions::decoder_pass`);
//! * the latents and the scheduler's copies of them.
//!
//! The batch is `num_images`, doubled by classifier-free guidance. [`check_folder`] makes the
//! same estimate for a diffusers folder before it is loaded, from its configs and weight-file
//! headers alone.

use std::path::Path;

use burn::module::Module;
use burn::prelude::*;
use burn::tensor::DType;
use prompt_diffusion_core::Result;
use prompt_diffusion_core::dtype::default_float_dtype;
use prompt_diffusion_core::memory::{MemoryEstimate, MemoryLimit, tensor_bytes};
use prompt_diffusion_core::nn::fused_attention_available;
use prompt_diffusion_core::weights::open_component_weights;
use prompt_diffusion_unet::UNet2DConditionConfig;
use prompt_diffusion_vae::{AutoencoderKLConfig, VaeOptions};

use super::loading::{Components, SD_FOLDERS, check_model_index, require_dir};
use super::stable_diffusion::native_size;
use super::{Generation, ModelOptions};

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

/// What the estimate needs to know of a model: its UNet and VAE configs, the bytes of its
/// weights, the dtypes it computes in and which attention scores its backend materialises.
#[derive(Debug, Clone, Copy)]
struct ModelProfile<'a> {
    unet: &'a UNet2DConditionConfig,
    vae: &'a AutoencoderKLConfig,
    weights: u64,
    model_dtype: DType,
    vae_dtype: DType,
    /// The UNet's `tokens²` attention scores are materialised (not flex, no fused kernel).
    unet_scores: bool,
    /// The VAE's single-head attention scores are materialised (everywhere but flex).
    vae_scores: bool,
    /// The VAE's tiling and slicing.
    vae_options: VaeOptions,
}

impl<'a> ModelProfile<'a> {
    fn on<B: Backend>(
        unet: &'a UNet2DConditionConfig,
        vae: &'a AutoencoderKLConfig,
        weights: u64,
        vae_dtype: DType,
        device: &B::Device,
    ) -> Self {
        // burn-flex switches to a tiled (flash) attention on long sequences, the wgpu/CUDA
        // fused kernel never materialises scores for the UNet's head sizes; the rest (ndarray,
        // the reference path of other backends) materialise `tokens²` scores per head.
        let flex = B::name(device).contains("flex");
        Self {
            unet,
            vae,
            weights,
            model_dtype: default_float_dtype::<B>(device),
            vae_dtype,
            unet_scores: !fused_attention_available::<B>() && !flex,
            vae_scores: !flex,
            vae_options: VaeOptions::default(),
        }
    }
}

/// Estimates the peak memory of a generation of `shape` with `components`; `extra_weights`
/// (bytes) adds models loaded beside them (a ControlNet, plug-ins).
pub fn estimate<B: Backend>(
    components: &Components<B>,
    shape: RunShape,
    extra_weights: u64,
    device: &B::Device,
) -> MemoryEstimate {
    let model_dtype = default_float_dtype::<B>(device);
    let vae_dtype = components.vae.dtype();
    let weights = weight_bytes(&components.unet, model_dtype)
        .saturating_add(weight_bytes(&components.text_encoder, model_dtype))
        .saturating_add(weight_bytes(&components.vae, vae_dtype))
        .saturating_add(extra_weights);
    let profile = ModelProfile {
        vae_options: components.vae.options(),
        ..ModelProfile::on::<B>(
            components.unet.config(),
            components.vae.config(),
            weights,
            vae_dtype,
            device,
        )
    };
    estimate_profile(&profile, shape)
}

fn estimate_profile(model: &ModelProfile<'_>, shape: RunShape) -> MemoryEstimate {
    let mut estimate = MemoryEstimate::default();
    estimate.add("weights", model.weights);

    let factor = model.vae.downsampling_factor().max(1);
    let (h, w) = (shape.height / factor, shape.width / factor);
    let batch = shape
        .images
        .saturating_mul(if shape.guided { 2 } else { 1 });
    let unet = model.unet;
    let n = unet.block_out_channels.len();
    let act = element_bytes(model.model_dtype);

    if model.unet_scores {
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

    let vae = model.vae;
    let widest = vae
        .block_out_channels
        .iter()
        .take(2)
        .max()
        .copied()
        .unwrap_or(0);
    let vae_act = element_bytes(model.vae_dtype);
    let [images, height, width] =
        model
            .vae_options
            .decoder_pass(vae, shape.images, shape.height, shape.width);
    estimate.add(
        "VAE decoder feature maps",
        tensor_bytes(&[images, widest, height, width, 4], vae_act),
    );
    if vae.mid_block_add_attention && model.vae_scores {
        let tokens = (height / factor).saturating_mul(width / factor);
        estimate.add(
            "VAE attention scores",
            tensor_bytes(&[images, tokens, tokens], 4),
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
    estimate.check(&describe(shape), limit)
}

fn describe(shape: RunShape) -> String {
    format!(
        "a {}×{} generation of {} image{}{}",
        shape.width,
        shape.height,
        shape.images,
        if shape.images == 1 { "" } else { "s" },
        if shape.guided { " with guidance" } else { "" }
    )
}

/// Refuses, before the diffusers folder `dir` is loaded, a `generation` (of an init image of
/// `init_size` for img2img) that cannot fit in `options`' memory limit. A Hugging Face
/// repository id is resolved first ([`ModelOptions::resolve_pipeline`]).
///
/// The estimate needs only the UNet and VAE configs and the tensor shapes in the weight
/// files' headers, so a refusal costs milliseconds instead of a model load; the weights count
/// against the available memory too, since they are not loaded yet.
///
/// # Errors
/// [`Error::OutOfMemory`](prompt_diffusion_core::Error::OutOfMemory), or the error of a config
/// or weight file that cannot be read.
pub fn check_folder<B: Backend>(
    dir: &Path,
    options: &ModelOptions,
    generation: &Generation,
    init_size: Option<(usize, usize)>,
    device: &B::Device,
) -> Result<()> {
    let dir = &options.resolve_pipeline(dir, &SD_FOLDERS)?;
    require_dir(dir, "model folder")?;
    check_model_index(dir)?;
    let unet = UNet2DConditionConfig::from_file(dir.join("unet/config.json"))?;
    let vae = AutoencoderKLConfig::from_file(dir.join("vae/config.json"))?;
    let load = options.load_options();
    let model_dtype = default_float_dtype::<B>(device);
    let vae_dtype = prompt_diffusion_vae::upcast_options::<B>(&vae, &load, device)
        .dtype
        .unwrap_or(model_dtype);
    let mut weights = 0u64;
    for (component, dtype) in [
        ("unet", model_dtype),
        ("text_encoder", model_dtype),
        ("vae", vae_dtype),
    ] {
        let source = open_component_weights(dir.join(component), load.variant.as_deref())?;
        let numel: u64 = source
            .keys()
            .filter_map(|key| source.shape(key))
            .map(|shape| shape.iter().map(|&d| d as u64).product::<u64>())
            .fold(0, u64::saturating_add);
        weights = weights.saturating_add(numel.saturating_mul(element_bytes(dtype) as u64));
    }
    let (width, height) = match init_size {
        None => generation.size(native_size(&unet, &vae), vae.downsampling_factor()),
        Some((w, h)) => generation.image_size((w as u32, h as u32)),
    };
    let shape = RunShape {
        width,
        height,
        images: generation.num_images,
        guided: generation.guided(),
    };
    options.vae.validate(&vae)?;
    let mut profile = ModelProfile::on::<B>(&unet, &vae, weights, vae_dtype, device);
    profile.vae_options = options.vae;
    estimate_profile(&profile, shape).check(&describe(shape), options.memory_limit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prompt_diffusion_vae::VaeTiling;

    #[test]
    fn vae_tiling_bounds_the_decode_estimate() {
        let (unet, vae) = (
            UNet2DConditionConfig::sd_v1_5(),
            AutoencoderKLConfig::sd_v1_5(),
        );
        let estimate = |vae_options| {
            let profile = ModelProfile {
                unet: &unet,
                vae: &vae,
                weights: 0,
                model_dtype: DType::F32,
                vae_dtype: DType::F32,
                unet_scores: false,
                vae_scores: true,
                vae_options,
            };
            let shape = RunShape {
                width: 2048,
                height: 2048,
                images: 2,
                guided: true,
            };
            let parts = estimate_profile(&profile, shape).parts;
            let part = |what: &str| parts.iter().find(|(w, _)| w == what).map(|p| p.1);
            (
                part("VAE decoder feature maps").unwrap(),
                part("VAE attention scores").unwrap(),
            )
        };
        let plain = estimate(VaeOptions::default());
        let tiled = estimate(VaeOptions::default().with_tiling(VaeTiling::default()));
        let sliced = estimate(VaeOptions::default().with_slicing(true));
        // 2048² in 512² tiles: 1/16 of the feature maps, 4096² instead of 65536² scores.
        assert_eq!(tiled.0 * 16, plain.0);
        assert_eq!(tiled.1, 2 * 4096 * 4096 * 4);
        assert_eq!((sliced.0 * 2, sliced.1 * 2), plain);
    }
}
