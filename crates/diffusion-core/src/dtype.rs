//! Floating-point precision selection.

use std::fmt;
use std::str::FromStr;

use burn::tensor::backend::Backend;
use burn::tensor::{DType, FloatDType, get_device_settings};

use crate::Error;

/// The float type models are loaded and run in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Precision {
    /// 32-bit IEEE floats (the reference precision).
    #[default]
    F32,
    /// 16-bit IEEE floats.
    F16,
    /// 16-bit brain floats.
    BF16,
}

impl Precision {
    /// The burn dtype.
    pub fn dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::F16 => DType::F16,
            Precision::BF16 => DType::BF16,
        }
    }

    /// The burn float dtype.
    pub fn float_dtype(self) -> FloatDType {
        match self {
            Precision::F32 => FloatDType::F32,
            Precision::F16 => FloatDType::F16,
            Precision::BF16 => FloatDType::BF16,
        }
    }

    /// True when `B` can hold tensors of this precision on `device`.
    pub fn supported_by<B: Backend>(self, device: &B::Device) -> bool {
        B::supports_dtype(device, self.dtype())
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::BF16 => "bf16",
        })
    }
}

impl FromStr for Precision {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(Precision::F32),
            "f16" | "fp16" | "float16" | "half" => Ok(Precision::F16),
            "bf16" | "bfloat16" => Ok(Precision::BF16),
            other => Err(Error::invalid_input(
                "precision",
                format!("`{other}` is not one of f32, f16, bf16"),
            )),
        }
    }
}

/// The float dtype new tensors get on `device` (the backend's element type unless changed with
/// `burn::tensor::backend::set_default_float_dtype`).
pub fn default_float_dtype<B: Backend>(device: &B::Device) -> DType {
    get_device_settings::<B>(device).float_dtype.into()
}
