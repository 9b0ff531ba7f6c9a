//! Fused CubeCL kernels for burn-wgpu and burn-cuda — flash attention and normalisation — and
//! the run-time checks that route [`attention`](super::attention), [`GroupNorm`](super::GroupNorm)
//! and [`LayerNorm`](super::LayerNorm) to them.
//!
//! Each kernel is written once with CubeCL, so the same source compiles to WGSL/SPIR-V for
//! burn-wgpu and to CUDA C++ for burn-cuda. They are built with this crate's `wgpu` and `cuda`
//! features; without them (or on any other backend) [`fused_kernels_available`] is false and
//! every call takes burn's own operations.
//!
//! The dispatcher needs no trait bound on the backend: the float tensor primitive of `B` is
//! `'static`, so its [`TypeId`](std::any::TypeId) is compared with the primitives of
//! `burn_cubecl::CubeBackend<WgpuRuntime | CudaRuntime, ..>` (`CubeTensor<R>`) and of the
//! fusion-wrapped backends that `burn_wgpu::Wgpu` and `burn_cuda::Cuda` are by default
//! (`FusionTensor<FusionCubeRuntime<R>>`). On a fusion backend a kernel is queued as a custom
//! operation of the fusion stream (`OperationIr::Custom`): pending fused work on the inputs is
//! flushed first and the kernel receives the resolved CubeCL tensors when the stream runs.

use std::sync::atomic::{AtomicU64, Ordering};

use burn::prelude::*;
use burn::tensor::DType;

#[cfg(feature = "cubecl-kernels")]
mod attention_kernel;
#[cfg(feature = "cubecl-kernels")]
mod dispatch;
#[cfg(feature = "cubecl-kernels")]
mod layout;
#[cfg(feature = "cubecl-kernels")]
mod norm_kernel;

/// The largest head dimension the attention kernel takes; wider heads (the VAE's 512-channel
/// single-head attention) use burn's op.
pub const FUSED_ATTENTION_MAX_HEAD_DIM: usize = 256;

/// Largest `batch·heads` (the launch grid's second dimension, 65535 on CUDA).
const MAX_BATCH_HEADS: usize = 65_535;

/// Attention calls routed to the kernel since the process started.
static ATTENTION_LAUNCHES: AtomicU64 = AtomicU64::new(0);
/// Norm calls routed to the kernel since the process started.
static NORM_LAUNCHES: AtomicU64 = AtomicU64::new(0);

/// Whether backend `B` has the fused kernels in this build (burn-wgpu or burn-cuda, with or
/// without fusion, and the matching crate feature).
pub fn fused_kernels_available<B: Backend>() -> bool {
    #[cfg(feature = "cubecl-kernels")]
    {
        dispatch::supported_primitive::<B::FloatTensorPrimitive>()
    }
    #[cfg(not(feature = "cubecl-kernels"))]
    {
        false
    }
}

/// Whether backend `B` has the fused attention kernel in this build; the same answer as
/// [`fused_kernels_available`].
pub fn fused_attention_available<B: Backend>() -> bool {
    fused_kernels_available::<B>()
}

/// How many [`attention`](super::attention) calls have run the fused kernel in this process
/// (all threads and devices together). Lets tests and benchmarks check which path ran.
pub fn fused_attention_launches() -> u64 {
    ATTENTION_LAUNCHES.load(Ordering::Relaxed)
}

/// How many GroupNorm and LayerNorm calls have run the fused normalisation kernel in this
/// process (all threads and devices together).
pub fn fused_norm_launches() -> u64 {
    NORM_LAUNCHES.load(Ordering::Relaxed)
}

/// Whether an attention call with these inputs takes the kernel: non-causal, f32/f16/bf16,
/// matching `[batch, heads]`, equal key and value head dimensions of at most
/// [`FUSED_ATTENTION_MAX_HEAD_DIM`], and at least one key.
fn attention_eligible<B: Backend>(
    q: &Tensor<B, 4>,
    k: &Tensor<B, 4>,
    v: &Tensor<B, 4>,
    causal: bool,
) -> bool {
    let dtype = q.dtype();
    let [batch, heads, seq_q, head_dim] = q.dims();
    let [kb, kh, seq_k, kd] = k.dims();
    let [vb, vh, seq_v, vd] = v.dims();
    !causal
        && float_dtype(dtype)
        && k.dtype() == dtype
        && v.dtype() == dtype
        && (kb, kh, vb, vh) == (batch, heads, batch, heads)
        && kd == head_dim
        && vd == head_dim
        && seq_v == seq_k
        && (1..=FUSED_ATTENTION_MAX_HEAD_DIM).contains(&head_dim)
        && seq_k > 0
        && seq_q > 0
        && batch * heads <= MAX_BATCH_HEADS
        && seq_q <= u32::MAX as usize
        && seq_k <= u32::MAX as usize
}

/// The dtypes the kernels are compiled for.
fn float_dtype(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::F16 | DType::BF16)
}

/// Runs the attention kernel when the backend has it and the inputs are eligible; gives the
/// inputs back otherwise.
#[allow(clippy::type_complexity)]
pub(super) fn try_attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    causal: bool,
) -> Result<Tensor<B, 4>, (Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>)> {
    if !fused_kernels_available::<B>() || !attention_eligible(&q, &k, &v, causal) {
        return Err((q, k, v));
    }
    #[cfg(feature = "cubecl-kernels")]
    {
        match run(&attention_kernel::FlashAttention, [q, k, v]) {
            Ok(out) => {
                ATTENTION_LAUNCHES.fetch_add(1, Ordering::Relaxed);
                Ok(out)
            }
            Err([q, k, v]) => Err((q, k, v)),
        }
    }
    #[cfg(not(feature = "cubecl-kernels"))]
    {
        Err((q, k, v))
    }
}

/// How a [`try_norm`] call maps onto segments: see `norm_kernel`'s docs.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(feature = "cubecl-kernels"), allow(dead_code))]
pub(super) struct NormLayout {
    /// Number of normalised segments (`batch·groups` or rows).
    pub segments: usize,
    /// Values between consecutive affine channels (spatial size, or 1 for LayerNorm).
    pub inner: usize,
    /// Length of `weight` and `bias`.
    pub channels: usize,
}

/// Normalises `x` with the fused kernel (affine transform and, with `silu`, SiLU included) when
/// the backend has it, the dtypes agree and the layout divides `x`; gives `x` back otherwise.
pub(super) fn try_norm<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    weight: Tensor<B, 1>,
    bias: Tensor<B, 1>,
    layout: NormLayout,
    eps: f64,
    silu: bool,
) -> Result<Tensor<B, D>, Tensor<B, D>> {
    let dtype = x.dtype();
    let len = x.shape().num_elements();
    let eligible = fused_kernels_available::<B>()
        && float_dtype(dtype)
        && weight.dtype() == dtype
        && bias.dtype() == dtype
        && weight.dims()[0] == layout.channels
        && bias.dims()[0] == layout.channels
        && layout.segments > 0
        && len > 0
        && len.is_multiple_of(layout.segments)
        && len <= u32::MAX as usize;
    if !eligible {
        return Err(x);
    }
    #[cfg(feature = "cubecl-kernels")]
    {
        let op = norm_kernel::FusedNorm {
            segments: layout.segments,
            inner: layout.inner,
            channels: layout.channels,
            eps,
            silu,
        };
        let shape = x.shape();
        let flat = |t: Tensor<B, D>| t.reshape([len]);
        let unflat = |t: Tensor<B, 1>| t.reshape(shape.clone());
        match run(&op, [flat(x), weight, bias]) {
            Ok(out) => {
                NORM_LAUNCHES.fetch_add(1, Ordering::Relaxed);
                Ok(unflat(out))
            }
            Err([x, _, _]) => Err(unflat(x)),
        }
    }
    #[cfg(not(feature = "cubecl-kernels"))]
    {
        let _ = (weight, bias, eps, silu);
        Err(x)
    }
}

/// `x` with the same values and shape, stored channels-last (`[n, *spatial, c]` memory order)
/// on the backends with fused kernels; `x` itself elsewhere and for float dtypes the kernels
/// do not take.
pub(super) fn channels_last<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    if D < 3 || !fused_kernels_available::<B>() || !float_dtype(x.dtype()) {
        return x;
    }
    #[cfg(feature = "cubecl-kernels")]
    {
        match run(&layout::ChannelsLast, [x]) {
            Ok(out) => out,
            Err([x]) => x,
        }
    }
    #[cfg(not(feature = "cubecl-kernels"))]
    {
        x
    }
}

/// [`dispatch::run`] on burn tensors of one rank.
#[cfg(feature = "cubecl-kernels")]
fn run<B: Backend, const D: usize, const N: usize>(
    op: &impl dispatch::CubeOp,
    inputs: [Tensor<B, D>; N],
) -> Result<Tensor<B, D>, [Tensor<B, D>; N]> {
    use burn::tensor::TensorPrimitive;
    let wrap = |p| Tensor::<B, D>::from_primitive(TensorPrimitive::Float(p));
    let primitives = inputs.map(|t| t.into_primitive().tensor()).to_vec();
    match dispatch::run(op, primitives) {
        Ok(out) => Ok(wrap(out)),
        Err(back) => {
            let back: [_; N] = back
                .try_into()
                .unwrap_or_else(|_| unreachable!("the inputs come back whole"));
            Err(back.map(wrap))
        }
    }
}
