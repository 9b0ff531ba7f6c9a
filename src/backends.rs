//! Choosing a backend and a precision at run time.
//!
//! Every model is generic over `burn::tensor::backend::Backend`; applications that let users
//! pick the backend (the CLI, benches) write their work once as a [`BackendTask`] and run it
//! with [`run_on`]. The backends are cargo features of this crate:
//!
//! | [`BackendKind`] | feature | device | precisions |
//! |---|---|---|---|
//! | `ndarray` | `ndarray` (default) | CPU | f32 (f16/bf16 run on `flex`) |
//! | `flex` | `ndarray` | CPU (burn-flex, pure Rust) | f32, f16, bf16 |
//! | `wgpu` | `wgpu` | GPU through Vulkan/Metal/DX12 (or lavapipe on a CPU) | f32, f16 where the adapter has it |
//! | `cuda` | `cuda` | NVIDIA GPU | f32, f16, bf16 |
//!
//! The backend types are re-exported here ([`Flex`], [`NdArray`], `Wgpu`, `Cuda` and their
//! devices), so an application depends on this crate alone.
//!
//! The precision is set as the device's default float type before anything is created, so
//! models load (and are cast) straight into it. On the GPU backends [`run_on`] first points
//! cubecl's autotune and compiled-kernel caches at a persistent folder ([`kernel_cache_dir`];
//! see [`cache`] for the order of precedence and the files), so only the first run on a machine
//! pays for kernel tuning.

use burn::tensor::backend::Backend;
use prompt_diffusion_core::{Error, Precision, Result};

pub mod cache;

#[cfg(feature = "cuda")]
pub use burn_cuda::{Cuda, CudaDevice};
#[cfg(feature = "ndarray")]
pub use burn_flex::{Flex, FlexDevice};
#[cfg(feature = "ndarray")]
pub use burn_ndarray::{NdArray, NdArrayDevice};
#[cfg(feature = "wgpu")]
pub use burn_wgpu::{Wgpu, WgpuDevice};

pub use cache::{
    CACHE_DIR_ENV, DeviceMemory, device_memory, kernel_cache_dir, set_kernel_cache_dir,
    warm_up_message,
};

/// The backends this crate knows (whether compiled in or not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum BackendKind {
    /// burn-ndarray on the CPU.
    #[default]
    Ndarray,
    /// burn-flex on the CPU (also half precision).
    Flex,
    /// burn-wgpu.
    Wgpu,
    /// burn-cuda.
    Cuda,
}

impl BackendKind {
    /// Every kind, in CLI order.
    pub const ALL: [BackendKind; 4] = [Self::Ndarray, Self::Flex, Self::Wgpu, Self::Cuda];

    /// The CLI name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ndarray => "ndarray",
            Self::Flex => "flex",
            Self::Wgpu => "wgpu",
            Self::Cuda => "cuda",
        }
    }

    /// Whether the backend runs on a GPU (through cubecl), where the first use of each kernel
    /// compiles and autotunes it.
    pub fn is_gpu(self) -> bool {
        matches!(self, Self::Wgpu | Self::Cuda)
    }

    /// Whether this build includes the backend.
    pub fn compiled(self) -> bool {
        match self {
            Self::Ndarray | Self::Flex => cfg!(feature = "ndarray"),
            Self::Wgpu => cfg!(feature = "wgpu"),
            Self::Cuda => cfg!(feature = "cuda"),
        }
    }
}

prompt_diffusion_core::named_values!(BackendKind: "backend");

/// Work that runs on whichever backend [`run_on`] picks.
pub trait BackendTask {
    /// What the work returns.
    type Output;

    /// Runs on backend `B`, whose `device` already has the requested default float type.
    fn run<B: Backend>(self, device: B::Device) -> Result<Self::Output>;
}

/// Runs `task` on `kind` in `precision`.
///
/// # Errors
/// [`Error::Unsupported`] when the backend is not compiled in or cannot compute in
/// `precision`; otherwise the task's own result.
pub fn run_on<T: BackendTask>(
    kind: BackendKind,
    precision: Precision,
    task: T,
) -> Result<T::Output> {
    if !kind.compiled() {
        return Err(Error::Unsupported(format!(
            "backend `{kind}` is not compiled into this build (rebuild with `--features {}`)",
            match kind {
                BackendKind::Ndarray | BackendKind::Flex => "ndarray",
                BackendKind::Wgpu => "wgpu",
                BackendKind::Cuda => "cuda",
            }
        )));
    }
    match kind {
        #[cfg(feature = "ndarray")]
        BackendKind::Ndarray if precision == Precision::F32 => {
            task.run::<burn_ndarray::NdArray<f32>>(burn_ndarray::NdArrayDevice::Cpu)
        }
        #[cfg(feature = "ndarray")]
        BackendKind::Ndarray | BackendKind::Flex => {
            start::<burn_flex::Flex, T>(burn_flex::FlexDevice, kind, precision, task)
        }
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => {
            warm_up_notice(kind);
            start::<burn_wgpu::Wgpu, T>(Default::default(), kind, precision, task)
        }
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => {
            warm_up_notice(kind);
            start::<burn_cuda::Cuda, T>(Default::default(), kind, precision, task)
        }
        #[allow(unreachable_patterns)]
        _ => {
            // Only reached in a build without any backend, where `compiled()` is false.
            let _ = (precision, task);
            unreachable!("checked by BackendKind::compiled")
        }
    }
}

/// Configures the kernel cache before the first GPU kernel and logs where it is.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn warm_up_notice(kind: BackendKind) {
    let dir = cache::configure_kernel_cache();
    tracing::info!("{}", warm_up_message(kind.name(), dir.as_deref()));
}

/// Sets the device's default float type, then runs the task.
#[allow(dead_code)]
fn start<B: Backend, T: BackendTask>(
    device: B::Device,
    kind: BackendKind,
    precision: Precision,
    task: T,
) -> Result<T::Output> {
    set_precision::<B>(&device, precision).map_err(|reason| {
        Error::Unsupported(format!("backend `{kind}` in {precision}: {reason}"))
    })?;
    task.run::<B>(device)
}

/// Makes `precision` the default float type of `device` (once per device and process; asking
/// again for the precision already set is fine).
///
/// # Errors
/// A description when the device lacks the type or was set to another one.
pub fn set_precision<B: Backend>(
    device: &B::Device,
    precision: Precision,
) -> std::result::Result<(), String> {
    use burn::tensor::backend::{DeviceError, set_default_float_dtype};
    if !B::supports_dtype(device, precision.dtype()) {
        return Err(format!("the device has no {precision} arithmetic"));
    }
    match set_default_float_dtype::<B>(device, precision.float_dtype()) {
        Ok(()) => Ok(()),
        Err(DeviceError::AlreadyInitialized { .. })
            if prompt_diffusion_core::dtype::default_float_dtype::<B>(device)
                == precision.dtype() =>
        {
            Ok(())
        }
        Err(e) => Err(e.to_string()),
    }
}
