//! Merging LoRA updates into a module's weights by module path, and putting the original
//! weights back.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use burn::module::{Module, Param};
use burn::prelude::*;
use burn::tensor::{DType, Shape, TensorPrimitive};

use super::LoraLayer;
use crate::nn::path::{MapAt, ModulePath, Tracked, VisitAt};
use crate::{Error, Result};

/// The kind of layer whose weight a LoRA updates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoraLayerKind {
    /// A burn `Linear` (weight `[in, out]`, the transpose of PyTorch's).
    Linear,
    /// A burn `Conv2d` (weight `[out, in, kh, kw]`, as PyTorch's).
    Conv2d,
}

/// A weight a LoRA can update: the `weight` of a `Linear` or `Conv2d`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoraTarget {
    /// The layer kind.
    pub kind: LoraLayerKind,
    /// The weight's shape in the module.
    pub shape: Vec<usize>,
}

/// The layers of a module a LoRA can update, by module path (the reference's names,
/// `down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q`; enum variants are not
/// segments), and other names that stand for them (kohya's underscore names, older layouts).
#[derive(Debug, Clone, Default)]
pub struct LoraTargets {
    modules: BTreeMap<String, LoraTarget>,
    aliases: HashMap<String, String>,
}

impl LoraTargets {
    /// Every `Linear` and `Conv2d` of `module`.
    pub fn of<B: Backend, M: Module<B>>(module: &M) -> Self {
        let mut collect = Tracked::new(Collect::default());
        module.visit(&mut collect);
        Self {
            modules: collect.inner.found,
            aliases: HashMap::new(),
        }
    }

    /// The layer at `module_path`.
    pub fn get(&self, module_path: &str) -> Option<&LoraTarget> {
        self.modules.get(module_path)
    }

    /// The module paths, in order.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.modules.keys().map(String::as_str)
    }

    /// Makes `alias` stand for the layer at `module_path`.
    pub fn add_alias(&mut self, alias: impl Into<String>, module_path: &str) {
        self.aliases.insert(alias.into(), module_path.to_string());
    }

    /// Adds kohya-ss's name of every layer: `prefix` followed by the module path with `.`
    /// replaced by `_` (`lora_unet_down_blocks_0_attentions_0_proj_in`). The names are built
    /// from the module's own paths, so no underscore ever has to be guessed back into a dot.
    pub fn add_kohya_aliases(&mut self, prefix: &str) {
        let names: Vec<(String, String)> = self
            .paths()
            .map(|p| (format!("{prefix}{}", p.replace('.', "_")), p.to_string()))
            .collect();
        self.aliases.extend(names);
    }

    /// The module path `name` stands for: `name` itself when it is a layer's path, else the
    /// layer it is an alias of.
    pub fn resolve(&self, name: &str) -> Option<&str> {
        match self.modules.get_key_value(name) {
            Some((path, _)) => Some(path),
            None => self.aliases.get(name).map(String::as_str),
        }
    }
}

/// Finds the `weight` of every `Linear` and `Conv2d`.
#[derive(Default)]
struct Collect {
    found: BTreeMap<String, LoraTarget>,
}

/// The module path of a parameter path, without enum variants and the parameter's own name.
fn module_path(path: &ModulePath) -> String {
    let Some((_, parents)) = path.split_last() else {
        return String::new();
    };
    let names: Vec<&str> = parents
        .iter()
        .filter(|(_, container)| !container.starts_with("Enum:"))
        .map(|(name, _)| name.as_str())
        .collect();
    names.join(".")
}

/// The kind of layer a parameter path ends in, when it is a `Linear`/`Conv2d` weight.
fn weight_kind(path: &ModulePath) -> Option<LoraLayerKind> {
    match path.last() {
        Some((name, container)) if name == "weight" => match container.as_str() {
            "Struct:Linear" => Some(LoraLayerKind::Linear),
            "Struct:Conv2d" => Some(LoraLayerKind::Conv2d),
            _ => None,
        },
        _ => None,
    }
}

impl<B: Backend> VisitAt<B> for Collect {
    fn visit_at<const D: usize>(&mut self, path: &ModulePath, param: &Param<Tensor<B, D>>) {
        if let Some(kind) = weight_kind(path) {
            let shape = param.lazy_shape().to_vec();
            self.found
                .insert(module_path(path), LoraTarget { kind, shape });
        }
    }
}

/// One layer's update on the device: its weight changes by the adapter's scale times
/// `left · right`, reshaped to the weight's shape (f32; the layer's `alpha / rank` is in `left`).
#[derive(Debug, Clone)]
pub struct LoraUpdate<B: Backend> {
    module: String,
    left: Tensor<B, 2>,
    right: Tensor<B, 2>,
    shape: Vec<usize>,
}

impl<B: Backend> LoraUpdate<B> {
    /// Prepares `layer` (read from `file`) for the layer `target` at `module`.
    ///
    /// A `Linear` takes factors `[out, r]`·`[r, in]` (or the same as 1×1 convolutions); a
    /// `Conv2d` takes `[out, r(, 1, 1)]`·`[r, in, kh, kw]` (LoCon; a 1×1 convolution also
    /// `[r, in]`). The delta is `up · down` in PyTorch's layout, transposed for a `Linear`.
    ///
    /// # Errors
    /// [`Error::Shape`] naming the file and the layer when the factors do not fit the weight.
    pub fn new(
        layer: &LoraLayer,
        module: &str,
        target: &LoraTarget,
        file: &Path,
        device: &B::Device,
    ) -> Result<Self> {
        let (down, up) = (&layer.down.shape, &layer.up.shape);
        let rank = layer.rank();
        let (out, inner): (usize, Vec<usize>) = match (target.kind, target.shape.as_slice()) {
            (LoraLayerKind::Linear, &[d_in, d_out]) => (d_out, vec![d_in]),
            (LoraLayerKind::Conv2d, &[d_out, d_in, kh, kw]) => (d_out, vec![d_in, kh, kw]),
            _ => {
                return Err(Error::Unsupported(format!(
                    "{}: LoRA layer `{}` targets `{module}`, a weight of shape {:?}",
                    file.display(),
                    layer.key,
                    target.shape
                )));
            }
        };
        let trailing_ones = |dims: &[usize]| dims.iter().all(|&d| d == 1);
        // Drop trailing 1×1 dimensions the down factor may carry beyond the weight's.
        let down_inner = &down[1..];
        let fits_down = down_inner == inner.as_slice()
            || (down_inner.len() > inner.len()
                && down_inner[..inner.len()] == inner[..]
                && trailing_ones(&down_inner[inner.len()..]))
            || (inner.len() > down_inner.len()
                && inner[..down_inner.len()] == *down_inner
                && trailing_ones(&inner[down_inner.len()..]));
        let shape_error = |part: &str, expected: String, found: &[usize]| Error::Shape {
            origin: Some(file.to_path_buf()),
            key: format!("{} ({part} factor)", layer.key),
            expected: format!(
                "{expected} for `{module}`, whose weight is {:?}",
                target.shape
            ),
            found: found.to_vec(),
        };
        if !fits_down {
            let inner: Vec<String> = inner.iter().map(usize::to_string).collect();
            return Err(shape_error(
                "down",
                format!("[rank, {}]", inner.join(", ")),
                down,
            ));
        }
        if up[0] != out {
            return Err(shape_error("up", format!("[{out}, rank]"), up));
        }
        let fan_in: usize = inner.iter().product();
        let factor2d =
            |data: &burn::tensor::TensorData, shape: [usize; 2]| -> Result<Tensor<B, 2>> {
                let values = data.to_vec::<f32>().map_err(|e| {
                    Error::format(file, format!("LoRA layer `{}`: {e:?}", layer.key))
                })?;
                Ok(Tensor::from_data(
                    burn::tensor::TensorData::new(values, shape),
                    (device, DType::F32),
                ))
            };
        let up = factor2d(&layer.up, [out, rank])? * layer.factor;
        let down = factor2d(&layer.down, [rank, fan_in])?;
        let (left, right) = match target.kind {
            LoraLayerKind::Linear => (down.transpose(), up.transpose()),
            LoraLayerKind::Conv2d => (up, down),
        };
        Ok(Self {
            module: module.to_string(),
            left,
            right,
            shape: target.shape.clone(),
        })
    }

    /// The module path of the layer it updates.
    pub fn module(&self) -> &str {
        &self.module
    }

    /// The unscaled delta of the weight, in f32.
    fn delta<const D: usize>(&self) -> Tensor<B, D> {
        self.left
            .clone()
            .matmul(self.right.clone())
            .reshape(Shape::from(self.shape.clone()))
    }
}

/// The weights of a module that LoRA updates have replaced, kept so the updates can change or
/// go: merging is always from the originals, and a weight no update touches any more gets its
/// original back, bit for bit.
pub struct MergedWeights<B: Backend> {
    originals: HashMap<String, TensorPrimitive<B>>,
}

impl<B: Backend> Default for MergedWeights<B> {
    fn default() -> Self {
        Self {
            originals: HashMap::new(),
        }
    }
}

impl<B: Backend> std::fmt::Debug for MergedWeights<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MergedWeights")
            .field("weights", &self.originals.len())
            .finish()
    }
}

impl<B: Backend> MergedWeights<B> {
    /// Sets the weights of `module` to their originals plus `Σ scale · delta` over `adapters`
    /// (`(scale, updates)` each; summed in f32, cast to the weight's dtype). Weights an earlier
    /// call changed that no update with a non-zero scale touches now get their originals back.
    /// On burn-wgpu and burn-cuda the convolution weights are then stored channels-last, as
    /// [`load_module`](crate::weights::load_module) leaves them.
    pub fn apply<M: Module<B>>(&mut self, module: M, adapters: &[(f32, &[LoraUpdate<B>])]) -> M {
        let mut plan: HashMap<&str, Vec<(f32, &LoraUpdate<B>)>> = HashMap::new();
        for &(scale, updates) in adapters {
            if scale == 0.0 {
                continue;
            }
            for update in updates {
                plan.entry(update.module.as_str())
                    .or_default()
                    .push((scale, update));
            }
        }
        let mut merge = Tracked::new(Merge {
            plan,
            originals: &mut self.originals,
        });
        let module = module.map(&mut merge);
        crate::nn::channels_last_conv_weights(module)
    }

    /// Forgets the originals: the current weights become the module's own, and the updates
    /// merged so far can no longer be taken out.
    pub fn fuse(&mut self) {
        self.originals.clear();
    }

    /// The number of weights holding merged updates.
    pub fn len(&self) -> usize {
        self.originals.len()
    }

    /// Whether no weight holds a merged update.
    pub fn is_empty(&self) -> bool {
        self.originals.is_empty()
    }
}

/// Rewrites the weights of the planned layers.
struct Merge<'a, B: Backend> {
    plan: HashMap<&'a str, Vec<(f32, &'a LoraUpdate<B>)>>,
    originals: &'a mut HashMap<String, TensorPrimitive<B>>,
}

impl<B: Backend> MapAt<B> for Merge<'_, B> {
    fn map_at<const D: usize>(
        &mut self,
        path: &ModulePath,
        param: Param<Tensor<B, D>>,
    ) -> Param<Tensor<B, D>> {
        if weight_kind(path).is_none() {
            return param;
        }
        let module = module_path(path);
        if let Some(updates) = self.plan.get(module.as_str()) {
            let original = self
                .originals
                .entry(module)
                .or_insert_with(|| param.val().into_primitive())
                .clone();
            param.map(|_| merged::<B, D>(original, updates))
        } else if let Some(original) = self.originals.remove(&module) {
            param.map(|_| Tensor::from_primitive(original))
        } else {
            param
        }
    }
}

/// `original + Σ scale · delta`, in f32, cast back to the original's dtype.
fn merged<B: Backend, const D: usize>(
    original: TensorPrimitive<B>,
    updates: &[(f32, &LoraUpdate<B>)],
) -> Tensor<B, D> {
    let original = Tensor::<B, D>::from_primitive(original);
    let dtype = original.dtype();
    let mut sum = original.cast(DType::F32);
    for &(scale, update) in updates {
        sum = sum + update.delta::<D>() * scale;
    }
    sum.cast(dtype)
}
