//! Key tables from UNet checkpoint layouts to diffusers' names.
//!
//! * diffusers — the module's own names.
//! * original LDM (`model.diffusion_model.*` of single-file checkpoints, prefix stripped):
//!   `input_blocks.N.{0,1}`, `middle_block.{0,1,2}`, `output_blocks.N.{0,1,2}`, `time_embed.{0,2}`,
//!   `out.{0,2}`, resnets as `in_layers`/`emb_layers`/`out_layers`/`skip_connection`
//!   (diffusers' `convert_ldm_unet_checkpoint`). The table depends on the config (levels,
//!   layers per level, which levels have attention). SD1's 1×1-conv `proj_in`/`proj_out` are
//!   squeezed on load.

use prompt_diffusion_core::Result;
use prompt_diffusion_core::limits::HeaderCheck;
use prompt_diffusion_core::weights::{TensorSource, WeightNaming};

use crate::UNet2DConditionConfig;
use crate::data_layers::DataLayerKind;

/// Module paths found only in original LDM `openaimodel` UNet files
/// ([`WeightNaming::detect`]).
pub const LDM_ROOTS: [&str; 2] = ["input_blocks.", "middle_block."];

/// Renames the tensors of `source` (in `naming`) to diffusers' names for a UNet of `config`.
///
/// # Errors
/// An invalid config, or two tensors mapping to the same name.
pub fn to_diffusers_names(
    source: &TensorSource,
    naming: WeightNaming,
    config: &UNet2DConditionConfig,
) -> Result<TensorSource> {
    match naming {
        WeightNaming::Diffusers => Ok(source.clone()),
        WeightNaming::Original => {
            let table = ldm_table(config)?;
            source.rename(|key| Some(rename_ldm(key, &table)))
        }
    }
}

/// One LDM module prefix and the diffusers prefix it becomes.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The LDM module path (e.g. `input_blocks.1.0`).
    pub ldm: String,
    /// The diffusers module path (e.g. `down_blocks.0.resnets.0`).
    pub diffusers: String,
    /// Whether the module is a resnet, whose members are renamed too.
    pub resnet: bool,
}

/// Shorthand for an [`Entry`].
pub fn entry(ldm: impl Into<String>, diffusers: impl Into<String>, resnet: bool) -> Entry {
    Entry {
        ldm: ldm.into(),
        diffusers: diffusers.into(),
        resnet,
    }
}

/// The LDM → diffusers prefix table for `config` (the block-index arithmetic of
/// `convert_ldm_unet_checkpoint`).
pub fn ldm_table(config: &UNet2DConditionConfig) -> Result<Vec<Entry>> {
    let layers = config.levels()?.layers;
    let n = layers.len();
    let mut table = vec![
        entry("time_embed.0", "time_embedding.linear_1", false),
        entry("time_embed.2", "time_embedding.linear_2", false),
        entry("input_blocks.0.0", "conv_in", false),
        entry("middle_block.0", "mid_block.resnets.0", true),
        entry("middle_block.1", "mid_block.attentions.0", false),
        entry("middle_block.2", "mid_block.resnets.1", true),
        entry("out.0", "conv_norm_out", false),
        entry("out.2", "conv_out", false),
    ];
    let mut i = 1;
    for (b, &count) in layers.iter().enumerate() {
        for j in 0..count {
            table.push(entry(
                format!("input_blocks.{i}.0"),
                format!("down_blocks.{b}.resnets.{j}"),
                true,
            ));
            if config.down_block_types[b].has_attention() {
                table.push(entry(
                    format!("input_blocks.{i}.1"),
                    format!("down_blocks.{b}.attentions.{j}"),
                    false,
                ));
            }
            i += 1;
        }
        if b + 1 < n {
            table.push(entry(
                format!("input_blocks.{i}.0.op"),
                format!("down_blocks.{b}.downsamplers.0.conv"),
                false,
            ));
            i += 1;
        }
    }
    let mut i = 0;
    for (b, up_type) in config.up_block_types.iter().enumerate() {
        let count = layers[n - 1 - b] + 1;
        let attn = up_type.has_attention();
        for j in 0..count {
            table.push(entry(
                format!("output_blocks.{i}.0"),
                format!("up_blocks.{b}.resnets.{j}"),
                true,
            ));
            if attn {
                table.push(entry(
                    format!("output_blocks.{i}.1"),
                    format!("up_blocks.{b}.attentions.{j}"),
                    false,
                ));
            }
            if j + 1 == count && b + 1 < n {
                let k = if attn { 2 } else { 1 };
                table.push(entry(
                    format!("output_blocks.{i}.{k}.conv"),
                    format!("up_blocks.{b}.upsamplers.0.conv"),
                    false,
                ));
            }
            i += 1;
        }
    }
    Ok(table)
}

/// Checks `config` against the header of `source` (diffusers names) before the model is
/// allocated (`module` names the model in messages): the widths of `conv_in`, `conv_out` and the time embedding, the number of levels,
/// the resnets per level and the transformer blocks per attention layer. Keys the file lacks,
/// and the widths of inner layers, are left to the strict loader (which names every
/// mis-shaped tensor).
///
/// # Errors
/// [`Error::ConfigMismatch`](prompt_diffusion_core::Error::ConfigMismatch) naming the file,
/// the key, the config field and both values; [`Error::Config`](prompt_diffusion_core::Error::Config)
/// for an invalid config.
pub fn check_weights(
    config: &UNet2DConditionConfig,
    source: &TensorSource,
    module: &str,
) -> Result<()> {
    config.validate()?;
    let check = HeaderCheck::new(source, module);
    let levels = config.levels()?;
    let boc = &config.block_out_channels;
    let c0 = format!("block_out_channels[0] = {}", boc[0]);
    let n = boc.len();
    if config.data_layers == DataLayerKind::Conv2D {
        let (k_in, k_out) = (config.conv_in_kernel, config.conv_out_kernel);
        check.dim_is("conv_in.weight", 0, boc[0], &c0)?;
        let field = format!("in_channels = {}", config.in_channels);
        check.dim_is("conv_in.weight", 1, config.in_channels, &field)?;
        let field = format!("conv_in_kernel = {k_in}");
        check.dim_is("conv_in.weight", 2, k_in, &field)?;
        check.dim_is("conv_out.weight", 1, boc[0], &c0)?;
        let field = format!("out_channels = {}", config.out_channels);
        check.dim_is("conv_out.weight", 0, config.out_channels, &field)?;
        let field = format!("conv_out_kernel = {k_out}");
        check.dim_is("conv_out.weight", 2, k_out, &field)?;
    }
    let ted = config.time_embed_dim();
    check.shape_is("time_embedding.linear_1.weight", &[ted, boc[0]], &c0)?;
    let field = format!("time_embedding_dim = {ted}");
    check.dim_is("time_embedding.linear_2.weight", 0, ted, &field)?;
    let field = format!("block_out_channels (length {n})");
    check.count_is(
        "down_blocks.",
        ".resnets.0.conv1.weight",
        n,
        &field,
        "levels",
    )?;
    check.count_is("up_blocks.", ".resnets.0.conv1.weight", n, &field, "levels")?;
    for (b, &layers) in levels.layers.iter().enumerate() {
        if config.data_layers == DataLayerKind::Conv2D {
            let field = format!("block_out_channels[{b}] = {}", boc[b]);
            let key = format!("down_blocks.{b}.resnets.0.conv1.weight");
            check.dim_is(&key, 0, boc[b], &field)?;
        }
        let field = format!("layers_per_block[{b}] = {layers}");
        let prefix = format!("down_blocks.{b}.resnets.");
        check.count_is(&prefix, ".conv1.weight", layers, &field, "resnets")?;
        let prefix = format!("up_blocks.{}.resnets.", n - 1 - b);
        check.count_is(&prefix, ".conv1.weight", layers + 1, &field, "resnets")?;
        if config.down_block_types[b].has_attention() {
            let depth = levels.transformer_layers[b];
            let prefix = format!("down_blocks.{b}.attentions.0.transformer_blocks.");
            let field = format!("transformer_layers_per_block[{b}] = {depth}");
            check.count_is(
                &prefix,
                ".attn1.to_q.weight",
                depth,
                &field,
                "transformer blocks",
            )?;
        }
    }
    Ok(())
}

/// LDM `ResBlock` member names → diffusers `ResnetBlock2D` names.
pub fn resnet_member(rest: &str) -> String {
    const NAMES: [(&str, &str); 6] = [
        ("in_layers.0.", "norm1."),
        ("in_layers.2.", "conv1."),
        ("emb_layers.1.", "time_emb_proj."),
        ("out_layers.0.", "norm2."),
        ("out_layers.3.", "conv2."),
        ("skip_connection.", "conv_shortcut."),
    ];
    for (old, new) in NAMES {
        if let Some(tail) = rest.strip_prefix(old) {
            return format!("{new}{tail}");
        }
    }
    rest.to_string()
}

/// Renames one key with the longest matching table prefix; unknown keys are kept (and then
/// reported as unexpected by the loader).
pub fn rename_ldm(key: &str, table: &[Entry]) -> String {
    let best = table
        .iter()
        .filter(|e| {
            key.len() > e.ldm.len()
                && key.starts_with(&e.ldm)
                && key.as_bytes()[e.ldm.len()] == b'.'
        })
        .max_by_key(|e| e.ldm.len());
    match best {
        Some(e) => {
            let rest = &key[e.ldm.len() + 1..];
            let rest = if e.resnet {
                resnet_member(rest)
            } else {
                rest.to_string()
            };
            format!("{}.{rest}", e.diffusers)
        }
        None => key.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sd15_table_matches_the_reference_layout() {
        let table = ldm_table(&UNet2DConditionConfig::sd_v1_5()).unwrap();
        let cases = [
            (
                "input_blocks.1.0.in_layers.2.weight",
                "down_blocks.0.resnets.0.conv1.weight",
            ),
            (
                "input_blocks.2.1.proj_in.weight",
                "down_blocks.0.attentions.1.proj_in.weight",
            ),
            (
                "input_blocks.3.0.op.bias",
                "down_blocks.0.downsamplers.0.conv.bias",
            ),
            (
                "input_blocks.4.0.skip_connection.weight",
                "down_blocks.1.resnets.0.conv_shortcut.weight",
            ),
            (
                "input_blocks.11.0.emb_layers.1.weight",
                "down_blocks.3.resnets.1.time_emb_proj.weight",
            ),
            (
                "middle_block.1.transformer_blocks.0.attn2.to_k.weight",
                "mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight",
            ),
            (
                "middle_block.2.out_layers.3.bias",
                "mid_block.resnets.1.conv2.bias",
            ),
            (
                "output_blocks.2.1.conv.weight",
                "up_blocks.0.upsamplers.0.conv.weight",
            ),
            (
                "output_blocks.5.2.conv.weight",
                "up_blocks.1.upsamplers.0.conv.weight",
            ),
            (
                "output_blocks.8.2.conv.bias",
                "up_blocks.2.upsamplers.0.conv.bias",
            ),
            (
                "output_blocks.11.1.norm.weight",
                "up_blocks.3.attentions.2.norm.weight",
            ),
            (
                "output_blocks.3.0.out_layers.0.weight",
                "up_blocks.1.resnets.0.norm2.weight",
            ),
            ("out.2.weight", "conv_out.weight"),
            ("time_embed.2.bias", "time_embedding.linear_2.bias"),
        ];
        for (ldm, diffusers) in cases {
            assert_eq!(rename_ldm(ldm, &table), diffusers, "{ldm}");
        }
    }
}
