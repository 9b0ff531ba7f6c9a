//! Key tables of the official Versatile Diffusion checkpoints.
//!
//! * `vd-four-flow-v1-0.pth` (official `VD_v2_0`): `diffuser.image.time_embed.{0,2}.*` (the
//!   global layer), `diffuser.{image,text}.data_blocks.N.0.*` and
//!   `diffuser.{image,text}.context_blocks.N.0.*`, numbered in construction order (the
//!   `add_data_layer`/`add_context_layer` calls of `UNetModel2D_Next`/`UNetModel0D_Next`, each
//!   wrapping one module in a `TimestepEmbedSequential`, hence the `.0`). Data blocks: `conv_in`;
//!   per level the resnets and the downsampler; the two mid resnets; per decoder level the
//!   resnets and the upsampler; the output head `N.0.0` (GroupNorm) / `N.0.2` (conv). Context
//!   blocks: every cross-attention in execution order. Resnets use LDM names (`in_layers.0/2`,
//!   `emb_layers.1`, `out_layers.0/3`, `skip_connection`), image down/upsamplers `op`/`conv`,
//!   the text UNet's `Linear_MultiDim` layers are plain `weight`/`bias`.
//! * `optimus-vae.pth`: `encoder.*` (BERT: `embeddings`, `encoder.layer.N`, `pooler`, `linear`)
//!   and `decoder.*` (`transformer.{wte, wpe, h.N, ln_f, linear, linear_emb}`, `lm_head`). Old
//!   checkpoints may name LayerNorm parameters `gamma`/`beta` and carry `module.` (DataParallel)
//!   segments; both are accepted.
//! * `kl-f8.pth`: the LDM VAE layout, read by the VAE crate (training-only `loss.*` tensors are
//!   dropped).
//!
//! Every table is checked against the reference key lists in `fixtures/versatile/reference/`.

use prompt_diffusion_core::config::OneOrMany;
use prompt_diffusion_core::weights::TensorSource;
use prompt_diffusion_core::{Error, Result};
use prompt_diffusion_unet::weights::{Entry, entry, rename_ldm};
use prompt_diffusion_unet::{DataLayerKind, UNet2DConditionConfig};

use crate::flow::Modality;

/// Prefix of the diffusers in the official checkpoint.
pub const DIFFUSER_PREFIX: &str = "diffuser.";

/// The official → diffusers prefix table of one diffuser of `config` (the image UNet or, with
/// flat data layers, the text UNet). Entries with `resnet: true` also rename the LDM resnet
/// members.
///
/// # Errors
/// [`Error::Config`] when a per-level list of the config has the wrong length.
pub fn official_unet_table(config: &UNet2DConditionConfig) -> Result<Vec<Entry>> {
    let n = config.block_out_channels.len();
    let layers = per_block(&config.layers_per_block, n)?;
    let flat = config.data_layers != DataLayerKind::Conv2D;
    let mut table = vec![
        entry("time_embed.0", "time_embedding.linear_1", false),
        entry("time_embed.2", "time_embedding.linear_2", false),
    ];
    let (mut d, mut c) = (0, 0);
    let mut data = |table: &mut Vec<Entry>, suffix: &str, diffusers: String, resnet: bool| {
        table.push(entry(
            format!("data_blocks.{d}.0{suffix}"),
            diffusers,
            resnet,
        ));
        d += 1;
    };
    let mut context = |table: &mut Vec<Entry>, diffusers: String| {
        table.push(entry(format!("context_blocks.{c}.0"), diffusers, false));
        c += 1;
    };
    // The image UNet's samplers are `op`/`conv` convolutions (diffusers `conv`); the text
    // UNet's are the layers themselves.
    let (down_op, up_op, sampler) = if flat {
        ("", "", "")
    } else {
        (".op", ".conv", ".conv")
    };
    data(&mut table, "", "conv_in".into(), false);
    for (i, &count) in layers.iter().enumerate() {
        for j in 0..count {
            data(&mut table, "", format!("down_blocks.{i}.resnets.{j}"), true);
            if config.down_block_types[i].has_attention() {
                context(&mut table, format!("down_blocks.{i}.attentions.{j}"));
            }
        }
        if i + 1 < n {
            let name = format!("down_blocks.{i}.downsamplers.0{sampler}");
            data(&mut table, down_op, name, false);
        }
    }
    data(&mut table, "", "mid_block.resnets.0".into(), true);
    context(&mut table, "mid_block.attentions.0".into());
    data(&mut table, "", "mid_block.resnets.1".into(), true);
    for (b, kind) in config.up_block_types.iter().enumerate() {
        for j in 0..=layers[n - 1 - b] {
            data(&mut table, "", format!("up_blocks.{b}.resnets.{j}"), true);
            if kind.has_attention() {
                context(&mut table, format!("up_blocks.{b}.attentions.{j}"));
            }
        }
        if b + 1 < n {
            let name = format!("up_blocks.{b}.upsamplers.0{sampler}");
            data(&mut table, up_op, name, false);
        }
    }
    table.push(entry(
        format!("data_blocks.{d}.0.0"),
        "conv_norm_out",
        false,
    ));
    table.push(entry(format!("data_blocks.{d}.0.2"), "conv_out", false));
    Ok(table)
}

fn per_block(value: &OneOrMany<usize>, n: usize) -> Result<Vec<usize>> {
    value.per_block(n, "layers_per_block")
}

/// Drops DataParallel `module.` segments from every key.
pub fn without_module_prefix(source: &TensorSource) -> Result<TensorSource> {
    if !source.keys().any(|k| k.split('.').any(|s| s == "module")) {
        return Ok(source.clone());
    }
    source.rename(|key| {
        Some(
            key.split('.')
                .filter(|s| *s != "module")
                .collect::<Vec<_>>()
                .join("."),
        )
    })
}

/// The tensors of one diffuser of an official checkpoint, in diffusers names for a UNet of
/// `config`. The text diffuser has no time embedding of its own: the image diffuser's (the
/// global layer) is added.
///
/// # Errors
/// [`Error::Format`] when the checkpoint holds no `diffuser.<modality>.*` tensors.
pub fn official_diffuser_source(
    checkpoint: &TensorSource,
    modality: Modality,
    config: &UNet2DConditionConfig,
) -> Result<TensorSource> {
    let root = without_module_prefix(checkpoint)?;
    let prefix = format!("{DIFFUSER_PREFIX}{modality}.");
    let part = root.strip_prefix(&prefix);
    if part.is_empty() {
        return Err(Error::format(
            checkpoint.description(),
            format!("no `{prefix}*` tensors: not an official Versatile Diffusion checkpoint"),
        ));
    }
    let table = official_unet_table(config)?;
    let mut source = part.rename(|key| Some(rename_ldm(key, &table)))?;
    if modality == Modality::Text && !source.has_prefix("time_embedding.") {
        let global = root
            .strip_prefix(&format!("{DIFFUSER_PREFIX}image."))
            .rename(|key| {
                key.starts_with("time_embed.")
                    .then(|| rename_ldm(key, &table))
            })?;
        source = source.merge(global)?;
    }
    Ok(source)
}

/// The tensors of an `optimus-vae.pth` in the names of [`Optimus`](crate::optimus::Optimus):
/// `module.` segments dropped, `gamma`/`beta` → `weight`/`bias`, `LayerNorm` → `layer_norm`,
/// BERT's `attention.self` → `attention.self_attention` (`self` cannot be a field name).
pub fn optimus_source(checkpoint: &TensorSource) -> Result<TensorSource> {
    let source = without_module_prefix(checkpoint)?;
    source.rename(|key| Some(optimus_key(key)))
}

/// One key of an Optimus checkpoint in this port's names (see [`optimus_source`]).
pub fn optimus_key(key: &str) -> String {
    let mut parts: Vec<&str> = key.split('.').collect();
    for i in 0..parts.len() {
        parts[i] = match (parts[i], i > 0 && parts[i - 1] == "attention") {
            ("self", true) => "self_attention",
            ("LayerNorm", _) => "layer_norm",
            ("gamma", _) if i + 1 == parts.len() => "weight",
            ("beta", _) if i + 1 == parts.len() => "bias",
            (other, _) => other,
        };
    }
    parts.join(".")
}

/// Patterns of Optimus checkpoint tensors that are not parameters: GPT-2's causal-mask buffers
/// and the LM head, which is tied to the token embedding.
pub const OPTIMUS_IGNORED: [&str; 2] = [r"\.attn\.(masked_)?bias$", r"^decoder\.lm_head\.weight$"];

/// The VAE tensors of `kl-f8.pth` without training-only entries (`loss.*`).
pub fn kl_f8_source(checkpoint: &TensorSource) -> Result<TensorSource> {
    without_module_prefix(checkpoint)?
        .rename(|key| (!key.starts_with("loss.")).then(|| key.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optimus_keys_are_normalised() {
        assert_eq!(
            optimus_key("encoder.encoder.layer.3.attention.self.query.weight"),
            "encoder.encoder.layer.3.attention.self_attention.query.weight"
        );
        assert_eq!(
            optimus_key("encoder.embeddings.LayerNorm.gamma"),
            "encoder.embeddings.layer_norm.weight"
        );
        assert_eq!(
            optimus_key("decoder.transformer.h.0.ln_1.bias"),
            "decoder.transformer.h.0.ln_1.bias"
        );
    }
}
