//! Strict loading of a [`TensorSource`] into a burn module.

use std::rc::Rc;

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, TensorData};
use burn_store::{
    ApplyError, ModuleAdapter, ModuleSnapshot, PyTorchToBurnAdapter, TensorSnapshot,
    TensorSnapshotError,
};
use regex::Regex;

use super::TensorSource;
use crate::Result;
use crate::error::{ShapeMismatch, WeightsError};
use crate::hub::HubOptions;

/// How [`load_module`] treats dtypes and tolerated extra tensors.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct LoadOptions {
    /// Float dtype every parameter is cast to; `None` means the device's default float dtype.
    pub dtype: Option<DType>,
    /// Patterns of tensor names that may be present without a parameter (buffers the reference
    /// keeps in its state dict, such as CLIP's `position_ids`). Anything else unexpected is an
    /// error.
    pub ignore_unexpected: Vec<Regex>,
    /// Weight-file variant to prefer in diffusers folders (e.g. `fp16` for
    /// `diffusion_pytorch_model.fp16.safetensors`).
    pub variant: Option<String>,
    /// Where a component named by Hugging Face repository id is found and downloaded
    /// ([`Pretrained::from_pretrained`](super::Pretrained::from_pretrained)).
    pub hub: HubOptions,
    /// The folder of the component inside the folder or repository given (diffusers'
    /// `subfolder=`, e.g. `unet` of a pipeline).
    pub subfolder: Option<String>,
}

impl LoadOptions {
    crate::setters! {
        /// Options that cast to `dtype`.
        with_dtype(dtype: DType) = Some(dtype);
        /// Prefers the given weight-file variant in diffusers folders.
        with_variant(variant: impl Into<String>) = Some(variant.into());
        /// Finds components named by repository id with these hub options.
        with_hub(hub: HubOptions);
        /// Loads the component from a sub-folder of the folder or repository given.
        with_subfolder(subfolder: impl Into<String>) = Some(subfolder.into());
    }

    /// Tolerates unexpected tensors whose name matches `pattern` (a regex).
    ///
    /// # Panics
    /// When `pattern` is not a valid regex; patterns are compile-time constants of the crates.
    pub fn ignore(mut self, pattern: &str) -> Self {
        self.ignore_unexpected
            .push(Regex::new(pattern).expect("ignore pattern must be a valid regex"));
        self
    }
}

/// Loads `source` into `module`, strictly.
///
/// Tensor names must equal the module's parameter paths (burn's derived names: field names
/// joined by `.`, `Vec` indices as segments). PyTorch conventions are adapted on the way:
/// `Linear` weights are transposed from `[out, in]`, 1×1-conv weights `[out, in, 1, 1]` going into
/// a `Linear` are squeezed, norm `weight`/`bias` fill burn's `gamma`/`beta`, and every float
/// tensor is cast to the target dtype. On burn-wgpu and burn-cuda the loaded `Conv2d` weights
/// are then stored channels-last ([`channels_last_conv_weights`](crate::nn::channels_last_conv_weights)).
///
/// # Errors
/// [`Error::Weights`](crate::Error::Weights) listing every missing parameter, unexpected tensor (not matched by
/// `options.ignore_unexpected`), shape mismatch and unreadable tensor.
pub fn load_module<B: Backend, M: Module<B>>(
    mut module: M,
    source: &TensorSource,
    module_name: &str,
    options: &LoadOptions,
) -> Result<M> {
    let dtype = match options.dtype {
        Some(dtype) => dtype,
        None => match module.devices().first() {
            Some(device) => crate::dtype::default_float_dtype::<B>(device),
            None => DType::F32,
        },
    };
    let adapter = CheckedData
        .chain(SqueezeConv1x1)
        .chain(PyTorchToBurnAdapter)
        .chain(CastFloats(dtype));
    // Enum variants are not path segments, so an enum module (a layer that exists in several
    // kinds) loads from the reference's names.
    let result = module.apply(source.snapshots(), None, Some(Box::new(adapter)), true);

    let mut report = WeightsError {
        source: source.description().to_string(),
        module: module_name.to_string(),
        missing: result.missing.into_iter().map(|(path, _)| path).collect(),
        unexpected: result
            .unused
            .into_iter()
            .filter(|k| !options.ignore_unexpected.iter().any(|re| re.is_match(k)))
            .collect(),
        ..Default::default()
    };
    for error in result.errors {
        match error {
            ApplyError::ShapeMismatch {
                path,
                expected,
                found,
            } => report.shapes.push(ShapeMismatch {
                key: path,
                expected: expected.to_vec(),
                found: found.to_vec(),
            }),
            ApplyError::DTypeMismatch { path, .. } => {
                report.unreadable.push((path, "unsupported dtype".into()))
            }
            ApplyError::AdapterError { path, message }
            | ApplyError::LoadError { path, message } => {
                report.unreadable.push((path, load_message(&message)))
            }
        }
    }
    if report.is_empty() {
        Ok(crate::nn::channels_last_conv_weights(module))
    } else {
        Err(report.into())
    }
}

/// burn-store wraps a reader's message as `Failed to load tensor data: DataError("…")`; keeps
/// the reader's own words.
fn load_message(message: &str) -> String {
    let inner = message
        .strip_prefix("Failed to load tensor data: ")
        .unwrap_or(message);
    for kind in ["DataError(", "IoError(", "PanicError("] {
        if let Some(quoted) = inner.strip_prefix(kind).and_then(|s| s.strip_suffix(')'))
            && let Ok(text) = serde_json::from_str::<String>(quoted)
        {
            return text;
        }
    }
    inner.to_string()
}

/// Refuses, before any module sees it, a tensor that is not a float where a float weight
/// belongs (every parameter of the workspace's modules is a float), and data whose dtype or
/// byte count disagrees with what the file announced.
#[derive(Debug, Clone, Copy)]
pub struct CheckedData;

impl ModuleAdapter for CheckedData {
    fn adapt(&self, snapshot: &TensorSnapshot) -> TensorSnapshot {
        let declared = snapshot.dtype;
        if !declared.is_float() {
            let reason = format!(
                "dtype {declared:?} where a float weight belongs (expected F32, F16, BF16 or F64)"
            );
            return rebuild(
                snapshot,
                declared,
                snapshot.shape.to_vec(),
                Rc::new(move || Err(TensorSnapshotError::DataError(reason.clone()))),
            );
        }
        let load = snapshot.clone_data_fn();
        let checked = snapshot.clone();
        rebuild(
            snapshot,
            declared,
            snapshot.shape.to_vec(),
            Rc::new(move || {
                let data = load()?;
                check_data(&checked, &data).map_err(TensorSnapshotError::DataError)?;
                Ok(data)
            }),
        )
    }

    fn clone_box(&self) -> Box<dyn ModuleAdapter> {
        Box::new(*self)
    }
}

/// Checks that data read for `snapshot` has the announced dtype and shape and exactly
/// numel × dtype-size bytes.
pub(crate) fn check_data(
    snapshot: &TensorSnapshot,
    data: &TensorData,
) -> std::result::Result<(), String> {
    if data.dtype != snapshot.dtype {
        return Err(format!(
            "read as {:?}, announced as {:?}",
            data.dtype, snapshot.dtype
        ));
    }
    if data.shape.as_slice() != snapshot.shape.as_slice() {
        return Err(format!(
            "read with shape {:?}, announced as {:?}",
            data.shape.as_slice(),
            snapshot.shape.as_slice()
        ));
    }
    let numel = data
        .shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d));
    let expected = numel.and_then(|n| n.checked_mul(data.dtype.size()));
    if expected != Some(data.bytes.len()) {
        return Err(format!(
            "{} bytes for shape {:?} of {:?}",
            data.bytes.len(),
            data.shape.as_slice(),
            data.dtype
        ));
    }
    Ok(())
}

/// Casts float tensors to one dtype as they are loaded.
#[derive(Debug, Clone, Copy)]
pub struct CastFloats(pub DType);

impl ModuleAdapter for CastFloats {
    fn adapt(&self, snapshot: &TensorSnapshot) -> TensorSnapshot {
        let to = self.0;
        if !snapshot.dtype.is_float() || snapshot.dtype == to {
            return snapshot.clone();
        }
        let load = snapshot.clone_data_fn();
        rebuild(
            snapshot,
            to,
            snapshot.shape.to_vec(),
            Rc::new(move || load().map(|d| d.convert_dtype(to))),
        )
    }

    fn clone_box(&self) -> Box<dyn ModuleAdapter> {
        Box::new(*self)
    }
}

/// Squeezes a 1×1-convolution weight `[out, in, 1, 1]` to `[out, in]` when it fills a `Linear`
/// (original LDM VAE attention and SD1 `proj_in`/`proj_out` stored as convolutions).
#[derive(Debug, Clone, Copy)]
pub struct SqueezeConv1x1;

impl ModuleAdapter for SqueezeConv1x1 {
    fn adapt(&self, snapshot: &TensorSnapshot) -> TensorSnapshot {
        let shape = snapshot.shape.to_vec();
        let is_linear_weight = snapshot.module_type().as_deref() == Some("Struct:Linear")
            && snapshot
                .path_stack
                .as_ref()
                .and_then(|p| p.last())
                .is_some_and(|name| name == "weight");
        if !is_linear_weight || shape.len() != 4 || shape[2] != 1 || shape[3] != 1 {
            return snapshot.clone();
        }
        let (out, inp) = (shape[0], shape[1]);
        let load = snapshot.clone_data_fn();
        rebuild(
            snapshot,
            snapshot.dtype,
            vec![out, inp],
            Rc::new(move || load().map(|d| TensorData::from_bytes(d.bytes, [out, inp], d.dtype))),
        )
    }

    fn clone_box(&self) -> Box<dyn ModuleAdapter> {
        Box::new(*self)
    }
}

fn rebuild(
    snapshot: &TensorSnapshot,
    dtype: DType,
    shape: Vec<usize>,
    data: super::DataFn,
) -> TensorSnapshot {
    TensorSnapshot::from_closure(
        data,
        dtype,
        shape.into(),
        snapshot.path_stack.clone().unwrap_or_default(),
        snapshot.container_stack.clone().unwrap_or_default(),
        snapshot.tensor_id.unwrap_or_default(),
    )
}
