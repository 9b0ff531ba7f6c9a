//! Key tables: from the checkpoint layouts CLIP weights come in to this crate's parameter paths.
//!
//! | layout | where | handled by |
//! |---|---|---|
//! | transformers, released files | `text_model.*`, `text_projection.weight`, `vision_model.*`, `visual_projection.weight` | identity |
//! | transformers 5 bare towers | `embeddings.*`, `encoder.*`, `final_layer_norm.*` (`CLIPTextModel.save_pretrained`), `pre_layrnorm.*`, `post_layernorm.*` (`CLIPVisionModel`) | [`text_model_keys`], [`vision_model_keys`] add the level |
//! | full `CLIPModel` | both towers + `logit_scale` | [`text_tower`], [`vision_tower`] keep one |
//! | SD1 single file | `cond_stage_model.transformer.` + transformers names, with or without `text_model.` ([`SD1_TEXT_PREFIXES`]) | strip the prefix, then as above |
//! | SD2 single file (OpenCLIP) | `cond_stage_model.model.*` ([`OPEN_CLIP_TEXT_PREFIX`]) | [`open_clip_text`] |
//!
//! The OpenCLIP table follows diffusers' `convert_open_clip_checkpoint`
//! (`loaders/single_file_utils.py`): `in_proj_weight`/`in_proj_bias` are split in three into
//! `q_proj`/`k_proj`/`v_proj`, `text_projection` (`[D, P]`, applied as `x @ P`) is transposed,
//! and the blocks beyond the configured depth (SD2 keeps 23 of OpenCLIP's 24) are dropped.

use std::rc::Rc;

use burn::tensor::{DType, TensorData};
use burn_store::TensorSnapshotError;
use prompt_diffusion_core::Result;
use prompt_diffusion_core::limits::HeaderCheck;
use prompt_diffusion_core::weights::{DataFn, LoadOptions, TensorSource};

use crate::{CLIPTextConfig, CLIPVisionConfig};

/// Prefixes of the SD1 text encoder inside original single-file checkpoints (SD1.x; SDXL's
/// first encoder); the rest of each key is a transformers name.
pub const SD1_TEXT_PREFIXES: [&str; 2] = [
    "cond_stage_model.transformer.",
    "conditioner.embedders.0.transformer.",
];

/// Prefix of the OpenCLIP text encoder inside SD2 single-file checkpoints.
pub const OPEN_CLIP_TEXT_PREFIX: &str = "cond_stage_model.model.";

/// Buffers transformers keeps in some state dicts; present without a parameter, never an error.
const BUFFERS: &str = r"(^|\.)position_ids$";

/// `options` plus the tolerated CLIP buffers (`position_ids`).
pub(crate) fn tolerate_buffers(options: &LoadOptions) -> LoadOptions {
    options.clone().ignore(BUFFERS)
}

/// Adds `level.` in front of the keys that start with one of `roots`, unless some key already
/// starts with `level.`.
fn add_level(source: &TensorSource, level: &str, roots: &[&str]) -> Result<TensorSource> {
    let prefix = format!("{level}.");
    if source.has_prefix(&prefix) {
        return Ok(source.clone());
    }
    source.rename(|key| {
        Some(if roots.iter().any(|r| key.starts_with(r)) {
            format!("{prefix}{key}")
        } else {
            key.to_string()
        })
    })
}

/// Checks a text config against the header of `source` (keys with the `text_model.` level)
/// before the model is allocated: the token and position embeddings, the number of layers
/// and, when `projection` is set, `text_projection`. Keys the file lacks are left to
/// the strict loader.
///
/// # Errors
/// [`Error::ConfigMismatch`](prompt_diffusion_core::Error::ConfigMismatch) naming the file,
/// the key, the config field and both values.
pub fn check_text_weights(
    config: &CLIPTextConfig,
    source: &TensorSource,
    projection: bool,
) -> Result<()> {
    let d = config.hidden_size;
    let projection = projection.then_some(("text_projection.weight", config.projection_dim, d));
    let tower = ("CLIPTextModel", "text_model", config.num_hidden_layers);
    check_tower(source, tower, projection, |check| {
        let width = format!("hidden_size = {d}");
        let key = "text_model.embeddings.token_embedding.weight";
        check.dim_is(key, 1, d, &width)?;
        let field = format!("vocab_size = {}", config.vocab_size);
        check.dim_is(key, 0, config.vocab_size, &field)?;
        let key = "text_model.embeddings.position_embedding.weight";
        check.dim_is(key, 1, d, &width)?;
        let positions = config.max_position_embeddings;
        let field = format!("max_position_embeddings = {positions}");
        check.dim_is(key, 0, positions, &field)
    })
}

/// [`check_text_weights`] for the vision tower (keys with the `vision_model.` level): the patch
/// and position embeddings, the number of layers and `visual_projection`.
///
/// # Errors
/// As [`check_text_weights`].
pub fn check_vision_weights(
    config: &CLIPVisionConfig,
    source: &TensorSource,
    projection: bool,
) -> Result<()> {
    let d = config.hidden_size;
    let projection = projection.then_some(("visual_projection.weight", config.projection_dim, d));
    let tower = ("CLIPVisionModel", "vision_model", config.num_hidden_layers);
    check_tower(source, tower, projection, |check| {
        let (c, p) = (config.num_channels, config.patch_size);
        let field = format!("hidden_size = {d}, num_channels = {c}, patch_size = {p}");
        let key = "vision_model.embeddings.patch_embedding.weight";
        check.shape_is(key, &[d, c, p, p], &field)?;
        let positions = config.num_positions();
        let field = format!(
            "image_size = {}, patch_size = {p} ({positions} positions), hidden_size = {d}",
            config.image_size,
        );
        let key = "vision_model.embeddings.position_embedding.weight";
        check.shape_is(key, &[positions, d], &field)
    })
}

/// The header checks of a tower `(model, level, layers)`: `embeddings`, then the layer count
/// (the MLP width is left to the strict loader, which names every mis-shaped tensor), then the
/// projection `(key, projection_dim, hidden_size)` when there is one (the module named in
/// errors is then `{model}WithProjection`).
fn check_tower(
    source: &TensorSource,
    (model, level, layers): (&str, &str, usize),
    projection: Option<(&str, usize, usize)>,
    embeddings: impl FnOnce(&HeaderCheck<'_>) -> Result<()>,
) -> Result<()> {
    let module = match projection {
        Some(_) => format!("{model}WithProjection"),
        None => model.to_string(),
    };
    let check = HeaderCheck::new(source, &module);
    embeddings(&check)?;
    let prefix = format!("{level}.encoder.layers.");
    let field = format!("num_hidden_layers = {layers}");
    let probe = ".self_attn.q_proj.weight";
    check.count_is(&prefix, probe, layers, &field, "layers")?;
    if let Some((key, dim, d)) = projection {
        check.shape_is(key, &[dim, d], &format!("projection_dim = {dim}"))?;
    }
    Ok(())
}

/// Text-tower keys with the `text_model.` level: files without it (older single files,
/// `CLIPTextModel.save_pretrained` in transformers 5) get it added.
///
/// # Errors
/// [`Error::Format`](prompt_diffusion_core::Error::Format) when two keys collide.
pub fn text_model_keys(source: &TensorSource) -> Result<TensorSource> {
    add_level(
        source,
        "text_model",
        &["embeddings.", "encoder.", "final_layer_norm."],
    )
}

/// Vision-tower keys with the `vision_model.` level (see [`text_model_keys`]).
pub fn vision_model_keys(source: &TensorSource) -> Result<TensorSource> {
    add_level(
        source,
        "vision_model",
        &[
            "embeddings.",
            "pre_layrnorm.",
            "encoder.",
            "post_layernorm.",
        ],
    )
}

/// The text tower of a full `CLIPModel` checkpoint (drops `vision_model.*`,
/// `visual_projection.*` and `logit_scale`).
pub fn text_tower(source: &TensorSource) -> TensorSource {
    keep(source, |k| {
        !(k.starts_with("vision_model.")
            || k.starts_with("visual_projection.")
            || k == "logit_scale")
    })
}

/// The vision tower of a full `CLIPModel` checkpoint (drops `text_model.*`,
/// `text_projection.*` and `logit_scale`).
pub fn vision_tower(source: &TensorSource) -> TensorSource {
    keep(source, |k| {
        !(k.starts_with("text_model.") || k.starts_with("text_projection.") || k == "logit_scale")
    })
}

fn keep(source: &TensorSource, pred: impl Fn(&str) -> bool) -> TensorSource {
    let mut out = source.clone();
    let drop: Vec<String> = source
        .keys()
        .filter(|k| !pred(k))
        .map(String::from)
        .collect();
    for key in drop {
        out.remove(&key);
    }
    out
}

/// The SD1 text encoder of an original single-file checkpoint, under its transformers names
/// (`text_model.*`), or `None` when the checkpoint has none under [`SD1_TEXT_PREFIXES`].
pub fn sd1_text_encoder(checkpoint: &TensorSource) -> Result<Option<TensorSource>> {
    for prefix in SD1_TEXT_PREFIXES {
        if checkpoint.has_prefix(prefix) {
            return text_model_keys(&checkpoint.strip_prefix(prefix)).map(Some);
        }
    }
    Ok(None)
}

/// Converts an OpenCLIP text encoder (SD2's `cond_stage_model.model.*`, prefix already
/// stripped) to transformers names.
///
/// Blocks `transformer.resblocks.{i}` with `i >= num_hidden_layers` are dropped (SD2 uses 23 of
/// 24); `text_projection` becomes `text_projection.weight` (transposed) when
/// `with_projection`, else it is dropped, as are `logit_scale` and `attn_mask`. Keys the table
/// does not know are kept as they are, so loading reports them as unexpected.
///
/// # Errors
/// [`Error::Format`](prompt_diffusion_core::Error::Format) when a fused projection does not
/// have three equal parts.
pub fn open_clip_text(
    source: &TensorSource,
    num_hidden_layers: usize,
    with_projection: bool,
) -> Result<TensorSource> {
    let mut fused = Vec::new();
    let mut out = source.rename(|key| {
        let mapped = map_open_clip_key(key, num_hidden_layers);
        if let Mapped::Fused(dst) = &mapped {
            fused.push((key.to_string(), dst.clone()));
        }
        match mapped {
            Mapped::To(name) => Some(name),
            Mapped::Drop | Mapped::Fused(_) => None,
        }
    })?;
    for (key, dst) in fused {
        let shape = source.shape(&key).unwrap_or_default().to_vec();
        let (Some(&rows), Some(load)) = (shape.first(), source.data_fn(&key)) else {
            continue;
        };
        if rows % 3 != 0 {
            return Err(prompt_diffusion_core::Error::format(
                source.description(),
                format!("`{key}` has {rows} rows, not three equal q/k/v parts"),
            ));
        }
        let part = rows / 3;
        let row_len: usize = shape[1..].iter().product();
        let (stem, leaf) = dst;
        for (i, name) in ["q_proj", "k_proj", "v_proj"].into_iter().enumerate() {
            let mut part_shape = shape.clone();
            part_shape[0] = part;
            let range = i * part * row_len..(i + 1) * part * row_len;
            out.insert_lazy(
                format!("{stem}.{name}.{leaf}"),
                DType::F32,
                part_shape.clone(),
                derived(load.clone(), move |v| {
                    (v[range.clone()].to_vec(), part_shape.clone())
                }),
            );
        }
    }
    if with_projection
        && let (Some([d, p]), Some(load)) = (
            source
                .shape("text_projection")
                .and_then(|s| <[usize; 2]>::try_from(s).ok()),
            source.data_fn("text_projection"),
        )
    {
        out.insert_lazy(
            "text_projection.weight",
            DType::F32,
            vec![p, d],
            derived(load, move |v| {
                let t = (0..p * d).map(|j| v[(j % d) * p + j / d]).collect();
                (t, vec![p, d])
            }),
        );
    }
    Ok(out)
}

enum Mapped {
    To(String),
    /// A fused `in_proj` tensor: (destination stem, `weight` or `bias`).
    Fused((String, String)),
    Drop,
}

fn map_open_clip_key(key: &str, num_hidden_layers: usize) -> Mapped {
    let simple = match key {
        "positional_embedding" => Some("text_model.embeddings.position_embedding.weight"),
        "token_embedding.weight" => Some("text_model.embeddings.token_embedding.weight"),
        "ln_final.weight" => Some("text_model.final_layer_norm.weight"),
        "ln_final.bias" => Some("text_model.final_layer_norm.bias"),
        "text_projection" | "logit_scale" | "attn_mask" => return Mapped::Drop,
        _ => None,
    };
    if let Some(name) = simple {
        return Mapped::To(name.to_string());
    }
    let Some(rest) = key.strip_prefix("transformer.resblocks.") else {
        return Mapped::To(key.to_string());
    };
    let Some((index, tail)) = rest.split_once('.') else {
        return Mapped::To(key.to_string());
    };
    let Ok(layer) = index.parse::<usize>() else {
        return Mapped::To(key.to_string());
    };
    if layer >= num_hidden_layers {
        return Mapped::Drop;
    }
    let stem = format!("text_model.encoder.layers.{layer}");
    let renamed = match tail {
        "attn.in_proj_weight" => {
            return Mapped::Fused((format!("{stem}.self_attn"), "weight".into()));
        }
        "attn.in_proj_bias" => return Mapped::Fused((format!("{stem}.self_attn"), "bias".into())),
        t => [
            ("ln_1.", "layer_norm1."),
            ("ln_2.", "layer_norm2."),
            ("mlp.c_fc.", "mlp.fc1."),
            ("mlp.c_proj.", "mlp.fc2."),
            ("attn.out_proj.", "self_attn.out_proj."),
        ]
        .iter()
        .find_map(|(from, to)| t.strip_prefix(from).map(|leaf| format!("{to}{leaf}"))),
    };
    match renamed {
        Some(tail) => Mapped::To(format!("{stem}.{tail}")),
        None => Mapped::To(key.to_string()),
    }
}

/// A lazily computed f32 tensor derived from another tensor's values.
fn derived(load: DataFn, f: impl Fn(&[f32]) -> (Vec<f32>, Vec<usize>) + 'static) -> DataFn {
    Rc::new(move || {
        let values = load()?
            .convert::<f32>()
            .into_vec::<f32>()
            .map_err(|e| TensorSnapshotError::DataError(format!("{e:?}")))?;
        let (values, shape) = f(&values);
        Ok(TensorData::new(values, shape))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(keys: &[&str]) -> TensorSource {
        TensorSource::from_tensors(
            "test",
            keys.iter()
                .map(|k| (k.to_string(), TensorData::new(vec![0f32; 2], [2]))),
        )
    }

    #[test]
    fn levels_are_added_only_when_absent() {
        let bare = source(&[
            "embeddings.token_embedding.weight",
            "text_projection.weight",
        ]);
        let fixed = text_model_keys(&bare).unwrap();
        let keys: Vec<&str> = fixed.keys().collect();
        assert_eq!(
            keys,
            [
                "text_model.embeddings.token_embedding.weight",
                "text_projection.weight"
            ]
        );
        let released = source(&["text_model.encoder.x", "embeddings.odd"]);
        let same = text_model_keys(&released).unwrap();
        assert!(same.contains("embeddings.odd"));
        let vision = vision_model_keys(&source(&["pre_layrnorm.weight"])).unwrap();
        assert!(vision.contains("vision_model.pre_layrnorm.weight"));
    }

    #[test]
    fn towers_of_a_clip_model() {
        let full = source(&[
            "text_model.a",
            "text_projection.weight",
            "vision_model.b",
            "visual_projection.weight",
            "logit_scale",
        ]);
        let text: Vec<String> = text_tower(&full).keys().map(String::from).collect();
        assert_eq!(text, ["text_model.a", "text_projection.weight"]);
        let vision: Vec<String> = vision_tower(&full).keys().map(String::from).collect();
        assert_eq!(vision, ["vision_model.b", "visual_projection.weight"]);
    }

    #[test]
    fn open_clip_names() {
        let map = |k| match map_open_clip_key(k, 2) {
            Mapped::To(s) => s,
            Mapped::Fused((s, leaf)) => format!("fused {s} {leaf}"),
            Mapped::Drop => "drop".into(),
        };
        assert_eq!(
            map("transformer.resblocks.1.mlp.c_fc.bias"),
            "text_model.encoder.layers.1.mlp.fc1.bias"
        );
        assert_eq!(
            map("transformer.resblocks.0.attn.out_proj.weight"),
            "text_model.encoder.layers.0.self_attn.out_proj.weight"
        );
        assert_eq!(
            map("transformer.resblocks.0.attn.in_proj_bias"),
            "fused text_model.encoder.layers.0.self_attn bias"
        );
        assert_eq!(map("transformer.resblocks.2.ln_1.weight"), "drop");
        assert_eq!(map("logit_scale"), "drop");
        assert_eq!(map("something.else"), "something.else");
    }
}
