//! Key tables from ControlNet checkpoint layouts to diffusers' names.
//!
//! * diffusers (`ControlNetModel`, and the converted Prompt Diffusion
//!   `PromptDiffusionControlNetModel`): the modules' own names — `conv_in`, `time_embedding`,
//!   `controlnet_cond_embedding`, `controlnet_query_cond_embedding`, `down_blocks`, `mid_block`,
//!   `controlnet_down_blocks.N`, `controlnet_mid_block`. No table.
//! * original (`control_model.*` of the official single files, prefix stripped; also the bare
//!   lllyasviel ControlNet files): [`original_table`]. The encoder part (`time_embed`,
//!   `input_blocks`, `middle_block`) is the UNet's LDM table
//!   ([`prompt_diffusion_unet::weights::ldm_table`]); the ControlNet part is
//!
//!   | original | diffusers |
//!   |---|---|
//!   | `input_hint_block.0` / `.{2k+2}` / `.{2(blocks+1)}` | `controlnet_cond_embedding.conv_in` / `.blocks.{k}` / `.conv_out` |
//!   | `input_cond_block.…` (Prompt Diffusion's query encoder) | `controlnet_query_cond_embedding.…` (same indices) |
//!   | `zero_convs.{i}.0` | `controlnet_down_blocks.{i}` |
//!   | `middle_block_out.0` | `controlnet_mid_block` |
//!
//!   (diffusers' `convert_controlnet_checkpoint` and Prompt Diffusion's
//!   `convert_original_promptdiffusion_to_diffusers.py`).

use prompt_diffusion_core::weights::{TensorSource, WeightNaming};
use prompt_diffusion_core::{Error, Result};
use prompt_diffusion_unet::weights::{
    Entry, check_weights as check_unet_weights, entry, ldm_table, rename_ldm,
};

use crate::ControlNetConfig;

/// The prefix of the ControlNet in original single-file checkpoints.
pub const CONTROL_MODEL_PREFIX: &str = "control_model.";

/// Checks `config` against the header of `source` (diffusers names) before the model
/// (`module`, for messages) is allocated: the UNet encoder it copies (`conv_in`, the time embedding, the levels and
/// resnets). Keys the file lacks, the hint encoder and the zero convolutions are left to the
/// strict loader.
///
/// # Errors
/// [`Error::ConfigMismatch`] naming the file,
/// the key, the config field and both values; [`Error::Config`]
/// for an invalid config.
pub fn check_weights(config: &ControlNetConfig, source: &TensorSource, module: &str) -> Result<()> {
    config.validate()?;
    check_unet_weights(&config.to_unet_config(), source, module)
}

/// Module paths found only in original `cldm` ControlNet files, `control_model.` removed
/// ([`WeightNaming::detect`]).
pub const ORIGINAL_ROOTS: [&str; 4] = [
    "input_hint_block.",
    "input_blocks.",
    "zero_convs.",
    "time_embed.",
];

/// The hint encoders a model has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HintEncoders {
    /// One hint (standard ControlNets): `input_hint_block` ↔ `controlnet_cond_embedding`.
    Single,
    /// Prompt Diffusion: the example-pair encoder (`input_hint_block` ↔
    /// `controlnet_cond_embedding`) and the query encoder (`input_cond_block` ↔
    /// `controlnet_query_cond_embedding`).
    PairAndQuery,
}

impl HintEncoders {
    /// `(original, diffusers)` module names of each encoder.
    pub fn names(self) -> &'static [(&'static str, &'static str)] {
        const ALL: [(&str, &str); 2] = [
            ("input_hint_block", "controlnet_cond_embedding"),
            ("input_cond_block", "controlnet_query_cond_embedding"),
        ];
        match self {
            Self::Single => &ALL[..1],
            Self::PairAndQuery => &ALL,
        }
    }
}

/// The original → diffusers prefix table of a ControlNet of `config` with `hints`.
///
/// # Errors
/// [`Error::Config`] for an invalid config.
pub fn original_table(config: &ControlNetConfig, hints: HintEncoders) -> Result<Vec<Entry>> {
    let encoder_modules = ["time_embed.", "input_blocks.", "middle_block."];
    let mut table: Vec<Entry> = ldm_table(&config.to_unet_config())?
        .into_iter()
        .filter(|e| encoder_modules.iter().any(|m| e.ldm.starts_with(m)))
        .collect();
    let blocks = 2 * (config.hint_channels()?.len() - 1);
    for (ldm, diffusers) in hints.names() {
        table.push(entry(
            format!("{ldm}.0"),
            format!("{diffusers}.conv_in"),
            false,
        ));
        for k in 0..blocks {
            table.push(entry(
                format!("{ldm}.{}", 2 * k + 2),
                format!("{diffusers}.blocks.{k}"),
                false,
            ));
        }
        table.push(entry(
            format!("{ldm}.{}", 2 * (blocks + 1)),
            format!("{diffusers}.conv_out"),
            false,
        ));
    }
    for i in 0..config.num_down_residuals() {
        table.push(entry(
            format!("zero_convs.{i}.0"),
            format!("controlnet_down_blocks.{i}"),
            false,
        ));
    }
    table.push(entry("middle_block_out.0", "controlnet_mid_block", false));
    Ok(table)
}

/// Renames the tensors of `source` (in `layout`, without `control_model.`) to diffusers'
/// names for a ControlNet of `config` with `hints`. Unknown keys are kept, so loading reports
/// them as unexpected.
///
/// # Errors
/// An invalid config, or two tensors mapping to the same name.
pub fn to_diffusers_names(
    source: &TensorSource,
    naming: WeightNaming,
    config: &ControlNetConfig,
    hints: HintEncoders,
) -> Result<TensorSource> {
    match naming {
        WeightNaming::Diffusers => Ok(source.clone()),
        WeightNaming::Original => {
            let table = original_table(config, hints)?;
            source.rename(|key| Some(rename_ldm(key, &table)))
        }
    }
}

/// The ControlNet's tensors of `source`: those under `control_model.` with the prefix removed
/// when the source is an original single file, else the source itself.
pub fn controlnet_tensors(source: &TensorSource) -> TensorSource {
    if source.has_prefix(CONTROL_MODEL_PREFIX) {
        source.strip_prefix(CONTROL_MODEL_PREFIX)
    } else {
        source.clone()
    }
}

/// The query encoder's prefix in Prompt Diffusion's diffusers names (kept as it is).
const QUERY_PREFIX: &str = "controlnet_query_cond_embedding.";
/// Where the inner ControlNet's parameters sit in `PromptDiffusionControlNet`.
const INNER_PREFIX: &str = "controlnet.";

/// Prompt Diffusion's diffusers names to the module's parameter paths: the inner ControlNet's
/// tensors move under `controlnet.`, the query encoder's stay.
///
/// # Errors
/// [`Error::Format`] when two names collide.
pub fn to_module_paths(source: &TensorSource) -> Result<TensorSource> {
    source.rename(|key| {
        Some(if key.starts_with(QUERY_PREFIX) {
            key.to_string()
        } else {
            format!("{INNER_PREFIX}{key}")
        })
    })
}

/// Rewrites a loading report from the module's paths (`controlnet.down_blocks…`) back to the
/// checkpoint's diffusers names (`down_blocks…`), the inverse of [`to_module_paths`].
pub fn diffusers_names_in_report(error: Error) -> Error {
    match error {
        Error::Weights(mut report) => {
            let strip = |key: &mut String| {
                if let Some(rest) = key.strip_prefix(INNER_PREFIX) {
                    *key = rest.to_string();
                }
            };
            report.missing.iter_mut().for_each(strip);
            report.unexpected.iter_mut().for_each(strip);
            report.shapes.iter_mut().for_each(|s| strip(&mut s.key));
            report.unreadable.iter_mut().for_each(|(k, _)| strip(k));
            Error::Weights(report)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hint_encoder_indices_follow_the_sequential() {
        let config = ControlNetConfig::prompt_diffusion();
        let table = original_table(&config, HintEncoders::PairAndQuery).unwrap();
        let cases = [
            (
                "input_hint_block.0.weight",
                "controlnet_cond_embedding.conv_in.weight",
            ),
            (
                "input_hint_block.2.bias",
                "controlnet_cond_embedding.blocks.0.bias",
            ),
            (
                "input_hint_block.12.weight",
                "controlnet_cond_embedding.blocks.5.weight",
            ),
            (
                "input_hint_block.14.bias",
                "controlnet_cond_embedding.conv_out.bias",
            ),
            (
                "input_cond_block.10.weight",
                "controlnet_query_cond_embedding.blocks.4.weight",
            ),
            ("zero_convs.11.0.weight", "controlnet_down_blocks.11.weight"),
            ("middle_block_out.0.bias", "controlnet_mid_block.bias"),
            (
                "input_blocks.3.0.op.weight",
                "down_blocks.0.downsamplers.0.conv.weight",
            ),
            (
                "middle_block.2.in_layers.0.weight",
                "mid_block.resnets.1.norm1.weight",
            ),
            // Not part of a ControlNet: left for the loader to report.
            ("out.0.weight", "out.0.weight"),
        ];
        for (ldm, diffusers) in cases {
            assert_eq!(rename_ldm(ldm, &table), diffusers, "{ldm}");
        }
        let single = original_table(&config, HintEncoders::Single).unwrap();
        assert_eq!(
            rename_ldm("input_cond_block.0.weight", &single),
            "input_cond_block.0.weight"
        );
    }
}
