//! Key tables from the VAE checkpoint layouts to diffusers' names.
//!
//! * diffusers ≥ 0.14 — the module's own names; nothing to do.
//! * diffusers ≤ 0.13 — mid-block attention as `query`/`key`/`value`/`proj_attn`
//!   (diffusers' `_convert_deprecated_attention_blocks`).
//! * original LDM / CompVis (`first_stage_model.*` of single-file checkpoints, `kl-f8.pth`) —
//!   `encoder.down.{i}.block.{j}`, `decoder.up.{i}` in reverse order, `mid.block_1`,
//!   `mid.attn_1.{norm,q,k,v,proj_out}` with 1×1-conv weights, `norm_out`, `nin_shortcut`
//!   (diffusers' `convert_ldm_vae_checkpoint`). The 1×1 weights are squeezed on load.

use burn::prelude::Backend;
use burn::tensor::DType;
use prompt_diffusion_core::Result;
use prompt_diffusion_core::dtype::default_float_dtype;
use prompt_diffusion_core::limits::HeaderCheck;
use prompt_diffusion_core::weights::{LoadOptions, TensorSource, WeightNaming};

use crate::AutoencoderKLConfig;

/// The options to load a VAE of `config` with: `options` with its dtype (an explicit
/// `options.dtype`, else the device's default float dtype) upcast to f32 when the config has
/// `force_upcast` and that dtype is not f32.
pub fn upcast_options<B: Backend>(
    config: &AutoencoderKLConfig,
    options: &LoadOptions,
    device: &B::Device,
) -> LoadOptions {
    let mut options = options.clone();
    let dtype = options
        .dtype
        .unwrap_or_else(|| default_float_dtype::<B>(device));
    if config.force_upcast && dtype != DType::F32 {
        options.dtype = Some(DType::F32);
    }
    options
}

/// Module paths found only in original LDM KL-autoencoder files ([`WeightNaming::detect`];
/// diffusers' names, current or ≤ 0.13 attention names, have none of them).
pub const LDM_ROOTS: [&str; 2] = ["encoder.down.", "decoder.up."];

/// Checks `config` against the header of `source` (diffusers names) before the model is
/// allocated: the encoder's and decoder's input and output convolutions, the number of levels
/// and the resnets per level. Keys the file lacks are left to the strict loader.
///
/// # Errors
/// [`Error::ConfigMismatch`](prompt_diffusion_core::Error::ConfigMismatch) naming the file,
/// the key, the config field and both values.
pub fn check_weights(config: &AutoencoderKLConfig, source: &TensorSource) -> Result<()> {
    config.validate()?;
    let check = HeaderCheck::new(source, "AutoencoderKL");
    let boc = &config.block_out_channels;
    let (n, first, last) = (boc.len(), boc[0], boc[boc.len() - 1]);
    let c0 = format!("block_out_channels[0] = {first}");
    let cn = format!("block_out_channels[{}] = {last}", n - 1);
    let latent = config.latent_channels;
    let lc = format!("latent_channels = {latent}");
    check.dim_is("encoder.conv_in.weight", 0, first, &c0)?;
    let field = format!("in_channels = {}", config.in_channels);
    check.dim_is("encoder.conv_in.weight", 1, config.in_channels, &field)?;
    check.dim_is("encoder.conv_out.weight", 1, last, &cn)?;
    check.dim_is("encoder.conv_out.weight", 0, 2 * latent, &lc)?;
    check.dim_is("decoder.conv_in.weight", 0, last, &cn)?;
    check.dim_is("decoder.conv_in.weight", 1, latent, &lc)?;
    check.dim_is("decoder.conv_out.weight", 1, first, &c0)?;
    let field = format!("out_channels = {}", config.out_channels);
    check.dim_is("decoder.conv_out.weight", 0, config.out_channels, &field)?;
    let field = format!("block_out_channels (length {n})");
    check.count_is(
        "encoder.down_blocks.",
        ".resnets.0.conv1.weight",
        n,
        &field,
        "levels",
    )?;
    check.count_is(
        "decoder.up_blocks.",
        ".resnets.0.conv1.weight",
        n,
        &field,
        "levels",
    )?;
    let layers = config.layers_per_block;
    let field = format!("layers_per_block = {layers}");
    for b in 0..n {
        let prefix = format!("encoder.down_blocks.{b}.resnets.");
        check.count_is(&prefix, ".conv1.weight", layers, &field, "resnets")?;
        let prefix = format!("decoder.up_blocks.{b}.resnets.");
        check.count_is(&prefix, ".conv1.weight", layers + 1, &field, "resnets")?;
    }
    Ok(())
}

/// Renames the tensors of `source` (in `naming`, of a VAE with `num_blocks` resolution levels)
/// to the current diffusers names. LDM training leftovers (`loss.*`) are dropped.
///
/// # Errors
/// When two tensors map to the same name.
pub fn to_diffusers_names(
    source: &TensorSource,
    naming: WeightNaming,
    num_blocks: usize,
) -> Result<TensorSource> {
    match naming {
        WeightNaming::Diffusers => source.rename(|key| Some(legacy_attention(key))),
        WeightNaming::Original => source.rename(|key| ldm_key(key, num_blocks)),
    }
}

/// `mid_block.attentions.0.query.*` → `…to_q.*` and the other ≤ 0.13 names.
fn legacy_attention(key: &str) -> String {
    const NAMES: [(&str, &str); 4] = [
        (".query.", ".to_q."),
        (".key.", ".to_k."),
        (".value.", ".to_v."),
        (".proj_attn.", ".to_out.0."),
    ];
    if key.contains(".mid_block.attentions.") {
        for (old, new) in NAMES {
            if key.contains(old) {
                return key.replacen(old, new, 1);
            }
        }
    }
    key.to_string()
}

fn ldm_key(key: &str, num_blocks: usize) -> Option<String> {
    if key.starts_with("loss.") {
        return None;
    }
    let Some((side, rest)) = key.split_once('.') else {
        return Some(key.to_string());
    };
    if side != "encoder" && side != "decoder" {
        return Some(key.to_string());
    }
    let parts: Vec<&str> = rest.split('.').collect();
    let mapped = match parts.as_slice() {
        ["norm_out", tail @ ..] => format!("conv_norm_out.{}", tail.join(".")),
        ["down", i, "block", j, tail @ ..] => {
            format!("down_blocks.{i}.resnets.{j}.{}", resnet_tail(tail))
        }
        ["down", i, "downsample", tail @ ..] => {
            format!("down_blocks.{i}.downsamplers.0.{}", tail.join("."))
        }
        ["up", i, "block", j, tail @ ..] => {
            format!(
                "up_blocks.{}.resnets.{j}.{}",
                reverse(i, num_blocks)?,
                resnet_tail(tail)
            )
        }
        ["up", i, "upsample", tail @ ..] => {
            format!(
                "up_blocks.{}.upsamplers.0.{}",
                reverse(i, num_blocks)?,
                tail.join(".")
            )
        }
        ["mid", block, tail @ ..] if block.starts_with("block_") => {
            let n: usize = block["block_".len()..].parse().ok()?;
            format!(
                "mid_block.resnets.{}.{}",
                n.checked_sub(1)?,
                resnet_tail(tail)
            )
        }
        ["mid", "attn_1", name, tail @ ..] => {
            let name = match *name {
                "norm" => "group_norm",
                "q" => "to_q",
                "k" => "to_k",
                "v" => "to_v",
                "proj_out" => "to_out.0",
                other => other,
            };
            format!("mid_block.attentions.0.{name}.{}", tail.join("."))
        }
        _ => rest.to_string(),
    };
    Some(format!("{side}.{mapped}"))
}

fn resnet_tail(tail: &[&str]) -> String {
    let joined = tail.join(".");
    match joined.strip_prefix("nin_shortcut.") {
        Some(rest) => format!("conv_shortcut.{rest}"),
        None => joined,
    }
}

/// LDM numbers decoder levels from the smallest resolution; diffusers from the largest.
fn reverse(index: &str, num_blocks: usize) -> Option<usize> {
    let i: usize = index.parse().ok()?;
    num_blocks.checked_sub(1)?.checked_sub(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldm_names_map_to_diffusers() {
        let cases = [
            (
                "encoder.down.1.block.0.nin_shortcut.weight",
                "encoder.down_blocks.1.resnets.0.conv_shortcut.weight",
            ),
            (
                "encoder.down.2.downsample.conv.bias",
                "encoder.down_blocks.2.downsamplers.0.conv.bias",
            ),
            (
                "decoder.up.0.block.2.conv1.weight",
                "decoder.up_blocks.3.resnets.2.conv1.weight",
            ),
            (
                "decoder.up.3.upsample.conv.weight",
                "decoder.up_blocks.0.upsamplers.0.conv.weight",
            ),
            (
                "decoder.mid.block_2.norm1.bias",
                "decoder.mid_block.resnets.1.norm1.bias",
            ),
            (
                "encoder.mid.attn_1.proj_out.weight",
                "encoder.mid_block.attentions.0.to_out.0.weight",
            ),
            (
                "encoder.mid.attn_1.norm.weight",
                "encoder.mid_block.attentions.0.group_norm.weight",
            ),
            ("decoder.norm_out.weight", "decoder.conv_norm_out.weight"),
            ("quant_conv.weight", "quant_conv.weight"),
        ];
        for (ldm, diffusers) in cases {
            assert_eq!(ldm_key(ldm, 4).as_deref(), Some(diffusers), "{ldm}");
        }
        assert_eq!(ldm_key("loss.logvar", 4), None);
    }

    #[test]
    fn legacy_attention_names_map_to_current() {
        assert_eq!(
            legacy_attention("decoder.mid_block.attentions.0.proj_attn.bias"),
            "decoder.mid_block.attentions.0.to_out.0.bias"
        );
        assert_eq!(
            legacy_attention("encoder.mid_block.attentions.0.query.weight"),
            "encoder.mid_block.attentions.0.to_q.weight"
        );
        assert_eq!(
            legacy_attention("encoder.conv_in.weight"),
            "encoder.conv_in.weight"
        );
    }
}
