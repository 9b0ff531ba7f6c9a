//! The fused (flash) attention kernel for CubeCL backends, and the run-time check that routes
//! [`attention`](super::attention) to it.
//!
//! The kernel is written once with CubeCL, so the same source compiles to WGSL/SPIR-V for
//! burn-wgpu and to CUDA C++ for burn-cuda. It is built with this crate's `wgpu` and `cuda`
//! features; without them (or on any other backend) [`fused_attention_available`] is false and
//! every call takes burn's `module::attention`.
//!
//! The dispatcher needs no trait bound on the backend: the float tensor primitive of `B` is
//! `'static`, so its [`TypeId`](std::any::TypeId) is compared with the primitives of
//! `burn_cubecl::CubeBackend<WgpuRuntime | CudaRuntime, ..>` (`CubeTensor<R>`) and of the
//! fusion-wrapped backends that `burn_wgpu::Wgpu` and `burn_cuda::Cuda` are by default
//! (`FusionTensor<FusionCubeRuntime<R>>`). On a fusion backend the kernel is queued as a custom
//! operation of the fusion stream (`OperationIr::Custom`): pending fused work on the inputs is
//! flushed first and the kernel receives the resolved CubeCL tensors when the stream runs.

use std::sync::atomic::{AtomicU64, Ordering};

use burn::prelude::*;
use burn::tensor::DType;

#[cfg(feature = "cubecl-kernels")]
mod kernel;
#[cfg(feature = "cubecl-kernels")]
mod launch;

/// The largest head dimension the kernel takes; wider heads (the VAE's 512-channel
/// single-head attention) use burn's op.
pub const FUSED_ATTENTION_MAX_HEAD_DIM: usize = 256;

/// Largest `batch·heads` (the launch grid's second dimension, 65535 on CUDA).
const MAX_BATCH_HEADS: usize = 65_535;

/// Calls routed to the kernel since the process started.
static LAUNCHES: AtomicU64 = AtomicU64::new(0);

/// Whether backend `B` has the fused attention kernel in this build (burn-wgpu or burn-cuda,
/// with or without fusion, and the matching crate feature).
pub fn fused_attention_available<B: Backend>() -> bool {
    #[cfg(feature = "cubecl-kernels")]
    {
        launch::supported_primitive::<B::FloatTensorPrimitive>()
    }
    #[cfg(not(feature = "cubecl-kernels"))]
    {
        false
    }
}

/// How many [`attention`](super::attention) calls have run the fused kernel in this process
/// (all threads and devices together). Lets tests and benchmarks check which path ran.
pub fn fused_attention_launches() -> u64 {
    LAUNCHES.load(Ordering::Relaxed)
}

/// Whether a call with these inputs takes the kernel: non-causal, f32/f16/bf16, matching
/// `[batch, heads]`, equal key and value head dimensions of at most
/// [`FUSED_ATTENTION_MAX_HEAD_DIM`], and at least one key.
fn eligible<B: Backend>(
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
        && matches!(dtype, DType::F32 | DType::F16 | DType::BF16)
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

/// Runs the kernel when the backend has it and the inputs are [`eligible`]; gives the inputs
/// back otherwise.
#[allow(clippy::type_complexity)]
pub(super) fn try_fused<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    causal: bool,
) -> Result<Tensor<B, 4>, (Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>)> {
    if !fused_attention_available::<B>() || !eligible(&q, &k, &v, causal) {
        return Err((q, k, v));
    }
    #[cfg(feature = "cubecl-kernels")]
    {
        let (q, k, v) = (
            q.into_primitive().tensor(),
            k.into_primitive().tensor(),
            v.into_primitive().tensor(),
        );
        use burn::tensor::TensorPrimitive;
        let wrap = |p| Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(p));
        match launch::run(q, k, v) {
            Ok(out) => {
                LAUNCHES.fetch_add(1, Ordering::Relaxed);
                Ok(wrap(out))
            }
            Err((q, k, v)) => Err((wrap(q), wrap(k), wrap(v))),
        }
    }
    #[cfg(not(feature = "cubecl-kernels"))]
    {
        Err((q, k, v))
    }
}
