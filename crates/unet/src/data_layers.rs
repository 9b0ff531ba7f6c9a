//! The UNet's data layers (everything that touches the sample except attention) in two kinds:
//! the 2-D convolutional layers of Stable Diffusion's UNet and the fully connected layers of
//! Versatile Diffusion's text UNet (`UNetFlatConditionModel`).
//!
//! The block code is the same for both kinds; only the layers below differ. Each layer is an
//! enum module whose variants load from the reference names (enum variants are not path
//! segments), so `down_blocks.0.resnets.0.conv1.weight` fills a 3×3 convolution in the image UNet
//! and a 1×1 (linear) one in the text UNet, and `downsamplers.0.conv.weight` (image) or
//! `downsamplers.0.weight` (text) fill the downsampler of either kind.

use burn::nn::conv::Conv2d;
use burn::prelude::*;
use prompt_diffusion_core::nn::{Downsample2D, ResnetBlock2D, Upsample2D, conv2d};
use prompt_diffusion_core::{Error, Result};
use serde_json::Value;

use crate::resnet_flat::{LinearMultiDim, ResnetBlockFlat, flat_shape};

/// Which data layers a UNet has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DataLayerKind {
    /// Convolutions on `[batch, C, h, w]` feature maps (`UNet2DConditionModel`).
    #[default]
    Conv2D,
    /// Fully connected layers on `[batch, C, 4, 1]` pseudo-images (`UNetFlatConditionModel`,
    /// Versatile Diffusion's text UNet). `sample_in`/`sample_out` are the sample's shape after
    /// the batch dimension (`[768, 1, 1]` for Versatile Diffusion).
    Flat {
        /// Shape of the input sample, `in_channels` of the config.
        sample_in: [usize; 3],
        /// Shape of the output, `out_channels` of the config.
        sample_out: [usize; 3],
    },
}

impl DataLayerKind {
    /// Checks that flat sample shapes agree with the config's channel counts.
    ///
    /// # Errors
    /// [`Error::Config`] naming `in_channels` when they differ.
    pub fn check_channels(&self, in_channels: usize, out_channels: usize) -> Result<()> {
        match *self {
            DataLayerKind::Flat {
                sample_in,
                sample_out,
            } if sample_in[0] != in_channels || sample_out[0] != out_channels => {
                Err(Error::config(
                    "in_channels",
                    format!(
                        "flat sample shapes {sample_in:?} → {sample_out:?} disagree with in_channels {in_channels} / out_channels {out_channels}"
                    ),
                ))
            }
            _ => Ok(()),
        }
    }
}

/// A residual block of either kind.
// Both variants are a few hundred bytes of handles; a UNet holds only one kind, so boxing would
// add an indirection without saving memory.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum DataResnet<B: Backend> {
    /// `ResnetBlock2D`.
    Conv(ResnetBlock2D<B>),
    /// `ResnetBlockFlat`.
    Flat(ResnetBlockFlat<B>),
}

impl<B: Backend> DataResnet<B> {
    /// Applies the block.
    ///
    /// # Shapes
    /// `x: [batch, in, h, w]` (`[batch, in, 4, 1]` when flat), `temb: [batch, temb]` →
    /// `[batch, out, h, w]`.
    pub fn forward(&self, x: Tensor<B, 4>, temb: Option<&Tensor<B, 2>>) -> Tensor<B, 4> {
        match self {
            Self::Conv(block) => block.forward(x, temb),
            Self::Flat(block) => block.forward(x, temb),
        }
    }
}

/// A downsampler of either kind: a stride-2 convolution, or a same-size `LinearMultiDim`.
#[derive(Module, Debug)]
pub enum DataDownsample<B: Backend> {
    /// `Downsample2D` (`downsamplers.0.conv`).
    Conv(Downsample2D<B>),
    /// `LinearMultiDim` (`downsamplers.0`).
    Flat(LinearMultiDim<B>),
}

impl<B: Backend> DataDownsample<B> {
    /// # Shapes
    /// `[batch, c, h, w]` → `[batch, c, ⌈h/2⌉, ⌈w/2⌉]` (flat: the same shape).
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        match self {
            Self::Conv(layer) => layer.forward(x),
            Self::Flat(layer) => layer.forward(x),
        }
    }
}

/// An upsampler of either kind: nearest ×2 and a convolution, or a same-size
/// `LinearMultiDim`.
#[derive(Module, Debug)]
pub enum DataUpsample<B: Backend> {
    /// `Upsample2D` (`upsamplers.0.conv`).
    Conv(Upsample2D<B>),
    /// `LinearMultiDim` (`upsamplers.0`).
    Flat(LinearMultiDim<B>),
}

impl<B: Backend> DataUpsample<B> {
    /// `size` is the target size of the convolutional kind (ignored when flat).
    ///
    /// # Shapes
    /// `[batch, c, h, w]` → `[batch, c, size]` (flat: the same shape).
    pub fn forward(&self, x: Tensor<B, 4>, size: Option<[usize; 2]>) -> Tensor<B, 4> {
        match self {
            Self::Conv(layer) => layer.forward(x, size),
            Self::Flat(layer) => layer.forward(x),
        }
    }
}

/// The UNet's input or output projection: a convolution, or a `LinearMultiDim`.
#[derive(Module, Debug)]
pub enum DataProjection<B: Backend> {
    /// `conv_in`/`conv_out` as convolutions.
    Conv(Conv2d<B>),
    /// `conv_in`/`conv_out` as `LinearMultiDim`.
    Flat(LinearMultiDim<B>),
}

impl<B: Backend> DataProjection<B> {
    /// # Shapes
    /// `[batch, in, h, w]` → `[batch, out, h, w]` (flat: `[batch, *in_shape]` →
    /// `[batch, *out_shape]`).
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        match self {
            Self::Conv(layer) => conv2d(layer, x),
            Self::Flat(layer) => layer.forward(x),
        }
    }

    /// The layer's weight dtype.
    pub fn dtype(&self) -> burn::tensor::DType {
        match self {
            Self::Conv(layer) => layer.weight.val().dtype(),
            Self::Flat(layer) => layer.weight.val().dtype(),
        }
    }
}

/// diffusers' flat block names and the 2-D names of the same block structure.
const FLAT_BLOCKS: [(&str, &str); 5] = [
    ("CrossAttnDownBlockFlat", "CrossAttnDownBlock2D"),
    ("DownBlockFlat", "DownBlock2D"),
    ("UpBlockFlat", "UpBlock2D"),
    ("CrossAttnUpBlockFlat", "CrossAttnUpBlock2D"),
    ("UNetMidBlockFlatCrossAttn", "UNetMidBlock2DCrossAttn"),
];

/// diffusers' `UNetFlatConditionModel` defaults for the block types.
const FLAT_DEFAULT_BLOCKS: [(&str, &[&str]); 3] = [
    (
        "down_block_types",
        &[
            "CrossAttnDownBlockFlat",
            "CrossAttnDownBlockFlat",
            "CrossAttnDownBlockFlat",
            "DownBlockFlat",
        ],
    ),
    (
        "up_block_types",
        &[
            "UpBlockFlat",
            "CrossAttnUpBlockFlat",
            "CrossAttnUpBlockFlat",
            "CrossAttnUpBlockFlat",
        ],
    ),
    ("mid_block_type", &["UNetMidBlockFlatCrossAttn"]),
];

/// Rewrites a `UNetFlatConditionModel` `config.json` (already parsed) into the
/// `UNet2DConditionModel` form the config type reads, returning the data-layer kind.
///
/// A config is flat when its `_class_name` is `UNetFlatConditionModel` or it names `*Flat`
/// blocks. Flat block names become the 2-D names of the same structure; `in_channels` and
/// `out_channels` (an integer `n` meaning `[n, 4, 1]`, or a list such as `[768, 1, 1]`) become
/// their first entry, the full shape going into [`DataLayerKind::Flat`].
///
/// # Errors
/// [`Error::Config`] when flat and 2-D blocks are mixed or a channel shape is not 3-D,
/// [`Error::Unsupported`] for a flat block kind without a 2-D counterpart here.
pub(crate) fn normalize_flat_config(config: &mut Value) -> Result<DataLayerKind> {
    let Some(object) = config.as_object_mut() else {
        return Ok(DataLayerKind::Conv2D);
    };
    let class_flat =
        object.get("_class_name").and_then(Value::as_str) == Some("UNetFlatConditionModel");
    let names = |v: Option<&Value>| -> Vec<String> {
        match v {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect(),
            _ => Vec::new(),
        }
    };
    let keys = ["down_block_types", "up_block_types", "mid_block_type"];
    let listed: Vec<String> = keys.iter().flat_map(|k| names(object.get(*k))).collect();
    let flat_named = listed.iter().filter(|n| n.contains("Flat")).count();
    if !class_flat && flat_named == 0 {
        return Ok(DataLayerKind::Conv2D);
    }
    if flat_named != listed.len() {
        return Err(Error::config(
            "down_block_types",
            "flat (`*Flat`) and 2-D block types cannot be mixed",
        ));
    }
    for (key, default) in FLAT_DEFAULT_BLOCKS {
        let entry = object.entry(key).or_insert_with(|| {
            if key == "mid_block_type" {
                Value::String(default[0].into())
            } else {
                Value::Array(default.iter().map(|s| Value::String((*s).into())).collect())
            }
        });
        rename_blocks(entry, key)?;
    }
    let sample_in = flat_channels(object, "in_channels", 4)?;
    let sample_out = flat_channels(object, "out_channels", 4)?;
    Ok(DataLayerKind::Flat {
        sample_in,
        sample_out,
    })
}

fn rename_blocks(value: &mut Value, key: &str) -> Result<()> {
    let rename = |v: &mut Value| -> Result<()> {
        let Some(name) = v.as_str() else {
            return Ok(());
        };
        match FLAT_BLOCKS.iter().find(|(flat, _)| *flat == name) {
            Some((_, conv)) => {
                *v = Value::String((*conv).into());
                Ok(())
            }
            None => Err(Error::Unsupported(format!(
                "UNetFlatConditionModel block type `{name}` in `{key}`"
            ))),
        }
    };
    match value {
        Value::Array(items) => items.iter_mut().try_for_each(rename),
        other => rename(other),
    }
}

/// Reads a flat channel spec (diffusers: an int `n` means `[n, 4, 1]`) and replaces it by its
/// leading channel count.
fn flat_channels(
    object: &mut serde_json::Map<String, Value>,
    key: &str,
    default: usize,
) -> Result<[usize; 3]> {
    let shape = match object.get(key) {
        None => flat_shape(default),
        Some(Value::Number(n)) => flat_shape(as_count(n.as_u64(), key)?),
        Some(Value::Array(items)) => {
            let dims = items
                .iter()
                .map(|v| as_count(v.as_u64(), key))
                .collect::<Result<Vec<_>>>()?;
            <[usize; 3]>::try_from(dims.as_slice()).map_err(|_| {
                Error::config(
                    key,
                    format!("{dims:?} is not a 3-D shape such as [768, 1, 1]"),
                )
            })?
        }
        Some(other) => {
            return Err(Error::config(
                key,
                format!("{other} is not a channel count or shape"),
            ));
        }
    };
    object.insert(key.into(), Value::from(shape[0]));
    Ok(shape)
}

fn as_count(value: Option<u64>, key: &str) -> Result<usize> {
    match value {
        Some(n) if n > 0 => Ok(n as usize),
        _ => Err(Error::config(key, "entries must be positive integers")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_config_becomes_the_2d_structure() {
        let mut value: Value = serde_json::from_str(
            r#"{"_class_name": "UNetFlatConditionModel", "in_channels": [768, 1, 1],
                "out_channels": [768, 1, 1],
                "down_block_types": ["CrossAttnDownBlockFlat", "DownBlockFlat"],
                "up_block_types": ["UpBlockFlat", "CrossAttnUpBlockFlat"]}"#,
        )
        .unwrap();
        let kind = normalize_flat_config(&mut value).unwrap();
        assert_eq!(
            kind,
            DataLayerKind::Flat {
                sample_in: [768, 1, 1],
                sample_out: [768, 1, 1]
            }
        );
        assert_eq!(value["in_channels"], 768);
        assert_eq!(value["down_block_types"][1], "DownBlock2D");
        assert_eq!(value["mid_block_type"], "UNetMidBlock2DCrossAttn");
    }

    #[test]
    fn mixed_or_unknown_flat_blocks_are_rejected() {
        let mut mixed: Value = serde_json::from_str(
            r#"{"down_block_types": ["CrossAttnDownBlockFlat", "DownBlock2D"]}"#,
        )
        .unwrap();
        assert!(normalize_flat_config(&mut mixed).is_err());
        let mut unknown: Value = serde_json::from_str(
            r#"{"_class_name": "UNetFlatConditionModel", "mid_block_type": "UNetMidBlockFlat"}"#,
        )
        .unwrap();
        assert!(matches!(
            normalize_flat_config(&mut unknown),
            Err(Error::Unsupported(_))
        ));
        let mut image: Value = serde_json::from_str(r#"{"in_channels": 4}"#).unwrap();
        assert_eq!(
            normalize_flat_config(&mut image).unwrap(),
            DataLayerKind::Conv2D
        );
    }
}
