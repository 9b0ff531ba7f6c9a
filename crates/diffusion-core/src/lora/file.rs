//! Reading LoRA files: the tensor-name layouts, the pairs of low-rank factors they hold and
//! each layer's `alpha / rank` factor.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::{DType, TensorData};

use super::peft::PeftConfigs;
use crate::weights::TensorSource;
use crate::{Error, Result};

/// What a tensor of a LoRA file is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The down (`A`) factor, `[rank, in, …]`.
    Down,
    /// The up (`B`) factor, `[out, rank, …]`.
    Up,
    /// The 0-d `alpha` of a layer.
    Alpha,
}

/// Tensor-name endings of the layouts LoRA files come in, and the role of each.
const SUFFIXES: [(&str, Role); 11] = [
    // PEFT (diffusers' `save_lora_weights`, peft's `save_pretrained`).
    (".lora_A.weight", Role::Down),
    (".lora_B.weight", Role::Up),
    // kohya-ss.
    (".lora_down.weight", Role::Down),
    (".lora_up.weight", Role::Up),
    // diffusers' `LoRACompatibleLinear`/`LoRACompatibleConv` (`…proj_in.lora.down.weight`).
    (".lora.down.weight", Role::Down),
    (".lora.up.weight", Role::Up),
    // diffusers' older text-encoder layers (`…mlp.fc1.lora_linear_layer.down.weight`).
    (".lora_linear_layer.down.weight", Role::Down),
    (".lora_linear_layer.up.weight", Role::Up),
    // diffusers' attention processors (`…attn1.processor.to_q_lora.down.weight`): the module
    // name keeps `to_q_lora`, which the model's key table renames.
    ("_lora.down.weight", Role::Down),
    ("_lora.up.weight", Role::Up),
    // kohya-ss, and diffusers' network alphas.
    (".alpha", Role::Alpha),
];

/// Tensor-name fragments of adapter kinds that are not plain LoRA, with what they are.
const UNSUPPORTED: [(&str, &str); 7] = [
    ("lora_magnitude_vector", "DoRA"),
    ("dora_scale", "DoRA"),
    (".lora_B.bias", "LoRA with a bias (`lora_bias`)"),
    (".lora_mid.", "LoCon with a Tucker middle factor"),
    (".hada_", "LoHa (LyCORIS)"),
    (".lokr_", "LoKr (LyCORIS)"),
    ("lora_embedding_", "embedding LoRA"),
];

/// The adapter kind a tensor name belongs to when it is not plain LoRA.
fn unsupported_kind(key: &str) -> Option<&'static str> {
    if key.ends_with(".diff") || key.ends_with(".diff_b") {
        return Some("a full weight difference (LyCORIS `diff`)");
    }
    UNSUPPORTED
        .iter()
        .find(|(fragment, _)| key.contains(fragment))
        .map(|&(_, kind)| kind)
}

/// Splits a LoRA tensor name into the module it updates and the tensor's role.
fn split_key(key: &str) -> Option<(&str, Role)> {
    SUFFIXES.iter().find_map(|&(suffix, role)| {
        let module = key.strip_suffix(suffix)?;
        // `_lora.down.weight` keeps its `_lora` on the module name (`to_q_lora`).
        let module = if suffix.starts_with("_lora") {
            &key[..module.len() + "_lora".len()]
        } else {
            module
        };
        (!module.is_empty()).then_some((module, role))
    })
}

/// The low-rank update of one layer, as the file holds it.
#[derive(Debug, Clone)]
pub struct LoraLayer {
    /// The layer's name in the file, without the factor suffix (`unet.down_blocks.0.…to_q`,
    /// `lora_unet_down_blocks_0_…_to_q`, `text_encoder.…q_proj`); the model's key tables map it
    /// to a module path.
    pub key: String,
    /// The down factor (PEFT `lora_A`, kohya `lora_down`) in f32, `[rank, in]` for a linear
    /// layer, `[rank, in, kh, kw]` for a convolution.
    pub down: TensorData,
    /// The up factor (PEFT `lora_B`, kohya `lora_up`) in f32, `[out, rank]` or
    /// `[out, rank, 1, 1]`.
    pub up: TensorData,
    /// `alpha / rank` (`alpha / √rank` for rsLoRA): the factor the product `up · down` is
    /// multiplied by before the user's scale.
    pub factor: f32,
}

impl LoraLayer {
    /// The rank of the update (the down factor's first dimension).
    pub fn rank(&self) -> usize {
        self.down.shape.first().copied().unwrap_or(0)
    }
}

/// The layers of a LoRA file, in name order.
///
/// Reads the PEFT/diffusers layout (`<model>.<module>.lora_A.weight` / `lora_B`, with the
/// adapter configs diffusers stores under the safetensors header's `lora_adapter_metadata`
/// for `lora_alpha`, `rank_pattern`, `alpha_pattern` and `use_rslora`), kohya-ss's
/// (`lora_unet_…`/`lora_te_…` with `.lora_down.weight`, `.lora_up.weight` and a 0-d `.alpha`)
/// and diffusers' older ones (`….lora.down.weight`, `…processor.to_q_lora.down.weight`,
/// `….lora_linear_layer.down.weight`). A layer's alpha is its `.alpha` tensor, else the
/// adapter config's (patterns matched as PEFT matches them), else its rank (PEFT's and kohya's
/// default; kohya also reads an alpha of 0 as the rank).
#[derive(Debug, Clone)]
pub struct LoraFile {
    path: PathBuf,
    layers: Vec<LoraLayer>,
}

/// The tensors of one layer while they are gathered.
#[derive(Default)]
struct Parts {
    down: Option<(String, TensorData)>,
    up: Option<(String, TensorData)>,
    alpha: Option<(String, f32)>,
}

impl LoraFile {
    /// Reads a LoRA file (`.safetensors`, or a PyTorch pickle `.pt`/`.bin`/`.ckpt`).
    ///
    /// # Errors
    /// [`Error::Io`]/[`Error::Format`] for a file that cannot be read, [`Error::Format`] naming
    /// the tensor for names that are not LoRA tensors, a layer without its down or up factor,
    /// an invalid adapter config, and [`Error::Unsupported`] for DoRA, LoHa, LoKr and other
    /// adapter kinds; [`Error::Shape`] for factors whose ranks disagree.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let source = TensorSource::open(path)?;
        let metadata = super::peft::safetensors_metadata(path)?;
        let configs = PeftConfigs::from_metadata(path, metadata.as_ref())?;
        Self::from_source(path, &source, &configs)
    }

    /// Reads the layers of an opened file, with the adapter configs of its header.
    fn from_source(path: &Path, source: &TensorSource, configs: &PeftConfigs) -> Result<Self> {
        let mut parts: BTreeMap<String, Parts> = BTreeMap::new();
        for key in source.keys() {
            if let Some(kind) = unsupported_kind(key) {
                return Err(Error::Unsupported(format!(
                    "{}: tensor `{key}` belongs to {kind}, which is not a plain LoRA",
                    path.display()
                )));
            }
            let (module, role) = split_key(key).ok_or_else(|| {
                Error::format(
                    path,
                    format!(
                        "tensor `{key}` is not a LoRA tensor (expected names ending in \
                         .lora_A.weight/.lora_B.weight, .lora_down.weight/.lora_up.weight/.alpha, \
                         or diffusers' .lora.down.weight/.lora.up.weight)"
                    ),
                )
            })?;
            let entry = parts.entry(module.to_string()).or_default();
            match role {
                Role::Down => entry.down = Some((key.to_string(), read_f32(source, path, key)?)),
                Role::Up => entry.up = Some((key.to_string(), read_f32(source, path, key)?)),
                Role::Alpha => {
                    entry.alpha = Some((key.to_string(), read_alpha(source, path, key)?))
                }
            }
        }
        let mut layers = Vec::with_capacity(parts.len());
        for (module, part) in parts {
            layers.push(layer(path, module, part, configs)?);
        }
        if layers.is_empty() {
            return Err(Error::format(path, "no LoRA tensors"));
        }
        Ok(Self {
            path: path.to_path_buf(),
            layers,
        })
    }

    /// The file read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The layers, in name order.
    pub fn layers(&self) -> &[LoraLayer] {
        &self.layers
    }
}

/// Checks one layer's parts and computes its factor.
fn layer(path: &Path, key: String, part: Parts, configs: &PeftConfigs) -> Result<LoraLayer> {
    let missing = |what: &str| {
        Error::format(
            path,
            format!(
                "LoRA layer `{key}` has no {what} factor (its tensors: down, up and alpha must come together)"
            ),
        )
    };
    let (down_key, down) = part
        .down
        .ok_or_else(|| missing("down (lora_A/lora_down)"))?;
    let (up_key, up) = part.up.ok_or_else(|| missing("up (lora_B/lora_up)"))?;
    let rank = down.shape.first().copied().unwrap_or(0);
    if down.shape.len() < 2 || rank == 0 {
        return Err(shape_error(
            path,
            &down_key,
            "[rank ≥ 1, in, …]",
            &down.shape,
        ));
    }
    if up.shape.len() < 2 || up.shape[1] != rank || up.shape[2..].iter().any(|&d| d != 1) {
        let expected = format!("[out, {rank}] or [out, {rank}, 1, 1] (the rank of `{down_key}`)");
        return Err(shape_error(path, &up_key, &expected, &up.shape));
    }
    let alpha = match part.alpha {
        // kohya-ss reads a missing or zero alpha as the rank.
        Some((_, alpha)) if alpha != 0.0 => Some(alpha),
        Some(_) => Some(rank as f32),
        None => None,
    };
    let factor = configs.factor(&key, rank, alpha);
    if !factor.is_finite() {
        return Err(Error::format(
            path,
            format!("LoRA layer `{key}`: alpha / rank is not finite"),
        ));
    }
    Ok(LoraLayer {
        key,
        down,
        up,
        factor,
    })
}

fn shape_error(path: &Path, key: &str, expected: &str, found: &[usize]) -> Error {
    Error::Shape {
        origin: Some(path.to_path_buf()),
        key: key.to_string(),
        expected: expected.to_string(),
        found: found.to_vec(),
    }
}

/// Reads a float tensor as f32.
fn read_f32(source: &TensorSource, path: &Path, key: &str) -> Result<TensorData> {
    let data = source.data(key)?;
    if !data.dtype.is_float() {
        return Err(Error::DType {
            origin: Some(path.to_path_buf()),
            key: key.to_string(),
            expected: "a float dtype".into(),
            found: format!("{:?}", data.dtype),
        });
    }
    let data = data.convert_dtype(DType::F32);
    let finite = data
        .as_slice::<f32>()
        .map(|v| v.iter().all(|x| x.is_finite()))
        .unwrap_or(false);
    if !finite {
        return Err(Error::format(
            path,
            format!("tensor `{key}` holds NaN or infinite values"),
        ));
    }
    Ok(data)
}

/// Reads a 0-d (or one-element) alpha.
fn read_alpha(source: &TensorSource, path: &Path, key: &str) -> Result<f32> {
    let data = read_f32(source, path, key)?;
    match data.as_slice::<f32>() {
        Ok([alpha]) => Ok(*alpha),
        _ => Err(shape_error(path, key, "[] (one value)", &data.shape)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_layout_splits_into_module_and_role() {
        let cases = [
            ("unet.a.to_q.lora_A.weight", "unet.a.to_q", Role::Down),
            ("unet.a.to_q.lora_B.weight", "unet.a.to_q", Role::Up),
            (
                "lora_unet_a_to_q.lora_down.weight",
                "lora_unet_a_to_q",
                Role::Down,
            ),
            (
                "lora_unet_a_to_q.lora_up.weight",
                "lora_unet_a_to_q",
                Role::Up,
            ),
            ("lora_unet_a_to_q.alpha", "lora_unet_a_to_q", Role::Alpha),
            (
                "unet.a.proj_in.lora.down.weight",
                "unet.a.proj_in",
                Role::Down,
            ),
            (
                "t.mlp.fc1.lora_linear_layer.up.weight",
                "t.mlp.fc1",
                Role::Up,
            ),
            (
                "unet.a.attn1.processor.to_out_lora.up.weight",
                "unet.a.attn1.processor.to_out_lora",
                Role::Up,
            ),
        ];
        for (key, module, role) in cases {
            assert_eq!(split_key(key), Some((module, role)), "{key}");
        }
        assert_eq!(split_key("unet.a.to_q.weight"), None);
        assert_eq!(split_key(".alpha"), None);
    }
}
