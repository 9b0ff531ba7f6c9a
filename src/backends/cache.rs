//! The persistent kernel cache of the GPU backends, and their device-memory figures.
//!
//! cubecl (under burn-wgpu and burn-cuda) autotunes kernels (matmul, convolution, attention,
//! reductions) the first time it meets a shape and, with the `std` feature that burn enables,
//! appends each result to a file; a later process reads that file back and skips the tuning.
//! Compiled kernels (CUDA PTX, Vulkan SPIR-V) can be cached the same way. cubecl's own default
//! puts the autotune files in the `target/` folder of the Cargo project around the current
//! directory (or in the platform cache folder outside one) and keeps no compiled kernels, so an
//! installed program run from different folders tunes again and again.
//!
//! [`run_on`](super::run_on) therefore points both caches at one folder before the first
//! kernel runs:
//!
//! 1. the folder given to [`set_kernel_cache_dir`] (the CLI's `--cache-dir`), else
//! 2. `$PROMPT_DIFFUSION_CACHE_DIR` ([`CACHE_DIR_ENV`]; empty keeps cubecl's own defaults), else
//! 3. `<platform cache folder>/prompt-diffusion/cubecl`: `$XDG_CACHE_HOME` or `~/.cache` on
//!    Linux, `~/Library/Caches` on macOS, `%LOCALAPPDATA%` on Windows.
//!
//! Inside it cubecl writes `autotune/<cubecl version>/<device>/<operation>.json.log` and, on
//! CUDA or Vulkan SPIR-V, `cuda/…` or `vulkan/…` compiled-kernel chunks. A `cubecl.toml`
//! (or a `[cubecl]` section of `burn.toml`) in the current directory or above still wins for
//! the settings it names; `CUBECL_AUTOTUNE_LEVEL` and `CUBECL_DEBUG_LOG` keep working.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use burn::tensor::backend::Backend;
use prompt_diffusion_core::{Error, Result};

/// The environment variable naming the kernel cache folder (empty: leave cubecl's defaults).
pub const CACHE_DIR_ENV: &str = "PROMPT_DIFFUSION_CACHE_DIR";

/// A folder set by [`set_kernel_cache_dir`], taking precedence over the environment.
static CACHE_DIR_OVERRIDE: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Sets the kernel cache folder for this process (takes precedence over [`CACHE_DIR_ENV`]).
///
/// # Errors
/// [`Error::InvalidInput`] when `dir` is empty, or when a GPU backend already started (the
/// cache folder is read once, before the first kernel).
pub fn set_kernel_cache_dir(dir: impl Into<PathBuf>) -> Result<()> {
    let dir = dir.into();
    if dir.as_os_str().is_empty() {
        return Err(Error::invalid_input(
            "cache_dir",
            "the folder name is empty",
        ));
    }
    if gpu_cache_configured() {
        return Err(Error::invalid_input(
            "cache_dir",
            "set it before the first GPU kernel runs",
        ));
    }
    *CACHE_DIR_OVERRIDE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(dir);
    Ok(())
}

/// The folder the GPU backends keep autotune results and compiled kernels in, or `None` when
/// cubecl's own defaults apply (`PROMPT_DIFFUSION_CACHE_DIR=""`, or no home folder is known).
/// See the [module documentation](self) for the order of precedence.
pub fn kernel_cache_dir() -> Option<PathBuf> {
    let set = CACHE_DIR_OVERRIDE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone();
    resolve_cache_dir(
        set,
        std::env::var_os(CACHE_DIR_ENV),
        platform_cache_dir(|key| std::env::var_os(key)),
    )
}

/// The kernel cache folder from an explicit folder, the environment variable's value and the
/// platform cache folder, in that order of precedence.
fn resolve_cache_dir(
    set: Option<PathBuf>,
    env: Option<OsString>,
    platform: Option<PathBuf>,
) -> Option<PathBuf> {
    if let Some(dir) = set {
        return Some(dir);
    }
    match env {
        Some(value) if value.is_empty() => None,
        Some(value) => Some(PathBuf::from(value)),
        None => platform.map(|dir| dir.join("prompt-diffusion").join("cubecl")),
    }
}

/// The platform's per-user cache folder, read through `var` (the environment).
fn platform_cache_dir(var: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    let absolute = |value: Option<OsString>| {
        value
            .map(PathBuf::from)
            .filter(|p| p.is_absolute() && !p.as_os_str().is_empty())
    };
    if cfg!(windows) {
        return absolute(var("LOCALAPPDATA"));
    }
    if cfg!(target_os = "macos") {
        return absolute(var("HOME")).map(|home| home.join("Library").join("Caches"));
    }
    absolute(var("XDG_CACHE_HOME")).or_else(|| absolute(var("HOME")).map(|h| h.join(".cache")))
}

/// The cache folder a GPU run configured, once [`run_on`](super::run_on) started one.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
static CONFIGURED: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();

/// Whether a GPU backend already fixed the cache configuration in this process.
fn gpu_cache_configured() -> bool {
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    {
        CONFIGURED.get().is_some()
    }
    #[cfg(not(any(feature = "wgpu", feature = "cuda")))]
    {
        false
    }
}

/// Points cubecl's autotune and compilation caches at [`kernel_cache_dir`] (once per process,
/// before the first kernel) and returns the folder in use, if this process chose it.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub(crate) fn configure_kernel_cache() -> Option<PathBuf> {
    use cubecl::config::cache::CacheConfig;
    use cubecl::config::{CubeClRuntimeConfig, RuntimeConfig};

    CONFIGURED
        .get_or_init(|| {
            let dir = kernel_cache_dir()?;
            if CubeClRuntimeConfig::storage().lock().is_some() {
                tracing::warn!(
                    "cubecl was configured before the kernel cache folder could be set; \
                     its own cache settings apply"
                );
                return None;
            }
            // Start from what cubecl itself would read (cubecl.toml, CUBECL_* variables) and
            // only replace the cache locations left at their defaults.
            let mut config = CubeClRuntimeConfig::from_current_dir().override_from_env();
            if matches!(config.autotune.cache, CacheConfig::Target) {
                config.autotune.cache = CacheConfig::File(dir.clone());
            }
            if config.compilation.cache.is_none() {
                config.compilation.cache = Some(CacheConfig::File(dir.clone()));
            }
            let mut storage = CubeClRuntimeConfig::storage().lock();
            if storage.is_some() {
                return None;
            }
            *storage = Some(std::sync::Arc::new(config));
            tracing::info!(dir = %dir.display(), "kernel cache folder");
            Some(dir)
        })
        .clone()
}

/// The line the CLI prints before the first step on a GPU backend: the first step compiles
/// and autotunes kernels, unless an earlier run left its results in `dir`.
pub fn warm_up_message(backend: &str, dir: Option<&Path>) -> String {
    match dir {
        Some(dir) if dir.join("autotune").is_dir() => format!(
            "{backend}: reusing the kernels earlier runs tuned, from {}; shapes not met \
             before are compiled and autotuned on first use",
            dir.display()
        ),
        Some(dir) => format!(
            "{backend}: the first step compiles and autotunes kernels (minutes on a cold \
             cache); the results are kept in {} for later runs",
            dir.display()
        ),
        None => format!(
            "{backend}: the first step compiles and autotunes kernels (minutes on a cold \
             cache); cubecl's default cache location applies"
        ),
    }
}

/// Device memory of a cubecl backend (wgpu, cuda) at the time of the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceMemory {
    /// Bytes held by live tensors.
    pub bytes_in_use: u64,
    /// Bytes the memory pools reserved from the driver (pools keep pages, so after a step
    /// this is close to the step's peak).
    pub bytes_reserved: u64,
}

/// The memory `device` uses now, where the backend reports it (wgpu and cuda); `None` on the
/// CPU backends (use the process's peak resident memory there).
pub fn device_memory<B: Backend>(device: &B::Device) -> Option<DeviceMemory> {
    let any: &dyn std::any::Any = device;
    #[cfg(feature = "wgpu")]
    if let Some(device) = any.downcast_ref::<burn_wgpu::WgpuDevice>() {
        return runtime_memory::<cubecl::wgpu::WgpuRuntime>(device);
    }
    #[cfg(feature = "cuda")]
    if let Some(device) = any.downcast_ref::<burn_cuda::CudaDevice>() {
        return runtime_memory::<cubecl::cuda::CudaRuntime>(device);
    }
    let _ = any;
    None
}

/// The memory a cubecl runtime's client reports for `device`.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn runtime_memory<R: cubecl::Runtime>(device: &R::Device) -> Option<DeviceMemory> {
    let usage = R::client(device).memory_usage().ok()?;
    Some(DeviceMemory {
        bytes_in_use: usage.bytes_in_use,
        bytes_reserved: usage.bytes_reserved,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_folder_wins() {
        let dir = resolve_cache_dir(
            Some("/a".into()),
            Some("/b".into()),
            Some("/home/u/.cache".into()),
        );
        assert_eq!(dir, Some(PathBuf::from("/a")));
    }

    #[test]
    fn environment_beats_platform_and_empty_disables() {
        let platform = Some(PathBuf::from("/home/u/.cache"));
        assert_eq!(
            resolve_cache_dir(None, Some("/b".into()), platform.clone()),
            Some(PathBuf::from("/b"))
        );
        assert_eq!(resolve_cache_dir(None, Some("".into()), platform), None);
    }

    #[test]
    fn default_is_under_the_platform_cache() {
        assert_eq!(
            resolve_cache_dir(None, None, Some("/home/u/.cache".into())),
            Some(PathBuf::from("/home/u/.cache/prompt-diffusion/cubecl"))
        );
        assert_eq!(resolve_cache_dir(None, None, None), None);
    }

    #[cfg(all(unix, not(target_os = "macos")))]
    #[test]
    fn platform_folder_follows_xdg_then_home() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |key: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        let xdg = env(&[("XDG_CACHE_HOME", "/x"), ("HOME", "/home/u")]);
        assert_eq!(platform_cache_dir(xdg), Some(PathBuf::from("/x")));
        // A relative XDG_CACHE_HOME is invalid by the XDG spec and ignored.
        let relative = env(&[("XDG_CACHE_HOME", "x"), ("HOME", "/home/u")]);
        assert_eq!(
            platform_cache_dir(relative),
            Some(PathBuf::from("/home/u/.cache"))
        );
        assert_eq!(platform_cache_dir(env(&[])), None);
    }

    #[test]
    fn warm_up_message_tells_a_warm_cache_from_a_cold_one() {
        let dir = std::env::temp_dir().join(format!("pd-cache-{}", std::process::id()));
        let cold = warm_up_message("wgpu", Some(&dir));
        assert!(cold.contains("first step compiles"), "{cold}");
        std::fs::create_dir_all(dir.join("autotune")).unwrap();
        let warm = warm_up_message("wgpu", Some(&dir));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(warm.contains("reusing the kernels"), "{warm}");
        assert!(warm_up_message("cuda", None).contains("default cache location"));
    }

    #[test]
    fn empty_folder_is_rejected() {
        assert!(set_kernel_cache_dir("").is_err());
    }

    #[test]
    fn cpu_devices_report_no_device_memory() {
        let device = burn_ndarray::NdArrayDevice::Cpu;
        assert_eq!(device_memory::<burn_ndarray::NdArray<f32>>(&device), None);
    }
}
