//! LoRA key tables of the UNet: from the layer names of LoRA files to this crate's module
//! paths (diffusers' names).
//!
//! | layout | UNet layer names | handled by |
//! |---|---|---|
//! | PEFT / diffusers `save_lora_weights` | `unet.<module>` (`unet.down_blocks.0.attentions.0.proj_in`) | [`PEFT_PREFIX`] stripped |
//! | diffusers' model-level files (`save_lora_adapter`, `save_attn_procs`) | `<module>` without prefix | as is |
//! | diffusers' older attention processors | `….attn1.processor.to_q_lora`, `to_k_lora`, `to_v_lora`, `to_out_lora` | renamed to `….attn1.to_q` … `to_out.0` |
//! | kohya-ss (sd-scripts trains SD1/SD2 on diffusers' UNet) | `lora_unet_` + module path with `.` → `_` | aliases built from the module paths |
//! | kohya-ss names of the original LDM UNet | `lora_unet_input_blocks_1_1_proj_in`, `…_middle_block_0_in_layers_2`, … | aliases built through [`ldm_table`] |
//!
//! The `.lora_A`/`.lora_down`/`.lora.down` factor suffixes are the core's
//! ([`LoraFile`](prompt_diffusion_core::lora::LoraFile)).

use burn::prelude::*;
use prompt_diffusion_core::lora::LoraTargets;

use crate::UNet2DConditionModel;
use crate::weights::ldm_table;

/// The prefix of the UNet's layers in PEFT/diffusers LoRA files.
pub const PEFT_PREFIX: &str = "unet.";

/// kohya-ss's prefix of the UNet's layers.
pub const KOHYA_PREFIX: &str = "lora_unet_";

/// diffusers' older attention-processor names and the projections they stand for.
const PROCESSOR_NAMES: [(&str, &str); 4] = [
    ("to_q_lora", "to_q"),
    ("to_k_lora", "to_k"),
    ("to_v_lora", "to_v"),
    ("to_out_lora", "to_out.0"),
];

/// diffusers `ResnetBlock2D` members → LDM `ResBlock` members (the LoRA-able ones).
const LDM_RESNET_MEMBERS: [(&str, &str); 4] = [
    ("conv1", "in_layers.2"),
    ("time_emb_proj", "emb_layers.1"),
    ("conv2", "out_layers.3"),
    ("conv_shortcut", "skip_connection"),
];

/// Whether a LoRA layer name says it belongs to the UNet (`unet.…`, `lora_unet_…`); names
/// without a model prefix are UNet names in diffusers' model-level files too.
pub fn is_unet_key(key: &str) -> bool {
    key.starts_with(PEFT_PREFIX) || key.starts_with(KOHYA_PREFIX)
}

/// The layers of `unet` a LoRA can update, with kohya-ss's names for them: from diffusers'
/// module names, and from the original LDM UNet's (`input_blocks`, `middle_block`,
/// `output_blocks`, `time_embed`, `out`) through the config's block table.
pub fn lora_targets<B: Backend>(unet: &UNet2DConditionModel<B>) -> LoraTargets {
    let mut targets = LoraTargets::of(unet);
    targets.add_kohya_aliases(KOHYA_PREFIX);
    // The table exists for every config a model was built from.
    let table = ldm_table(unet.config()).unwrap_or_default();
    let paths: Vec<String> = targets.paths().map(str::to_string).collect();
    for path in paths {
        let best = table
            .iter()
            .filter(|e| {
                path == e.diffusers
                    || (path.starts_with(&e.diffusers)
                        && path.as_bytes().get(e.diffusers.len()) == Some(&b'.'))
            })
            .max_by_key(|e| e.diffusers.len());
        let Some(entry) = best else { continue };
        let rest = path[entry.diffusers.len()..].trim_start_matches('.');
        let rest = match LDM_RESNET_MEMBERS.iter().find(|(d, _)| *d == rest) {
            Some((_, ldm)) if entry.resnet => *ldm,
            _ => rest,
        };
        let ldm = if rest.is_empty() {
            entry.ldm.clone()
        } else {
            format!("{}.{rest}", entry.ldm)
        };
        targets.add_alias(format!("{KOHYA_PREFIX}{}", ldm.replace('.', "_")), &path);
    }
    targets
}

/// The module path of the UNet layer a LoRA layer name stands for, if any (see the module
/// docs for the layouts).
pub fn lora_module<'a>(key: &str, targets: &'a LoraTargets) -> Option<&'a str> {
    if key.starts_with(KOHYA_PREFIX) {
        return targets.resolve(key);
    }
    let name = key.strip_prefix(PEFT_PREFIX).unwrap_or(key);
    for (old, new) in PROCESSOR_NAMES {
        let Some(parent) = name.strip_suffix(old) else {
            continue;
        };
        let parent = parent.strip_suffix("processor.").unwrap_or(parent);
        return targets.resolve(&format!("{parent}{new}"));
    }
    targets.resolve(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::UNet2DConditionConfig;
    use burn_ndarray::NdArray;

    #[test]
    fn prefixes_tell_unet_layers() {
        assert!(is_unet_key("unet.conv_in") && is_unet_key("lora_unet_conv_in"));
        assert!(!is_unet_key("text_encoder.x") && !is_unet_key("lora_te_x"));
    }

    fn tiny() -> UNet2DConditionModel<NdArray> {
        let config = UNet2DConditionConfig::from_json(
            r#"{"block_out_channels": [8, 16], "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
                "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"], "layers_per_block": 1,
                "cross_attention_dim": 8, "attention_head_dim": 2, "norm_num_groups": 4}"#,
        )
        .unwrap();
        UNet2DConditionModel::new(&config, &Default::default()).unwrap()
    }

    #[test]
    fn every_layout_names_the_same_module() {
        let targets = lora_targets(&tiny());
        let to_q = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q";
        // Two levels of one resnet each: up_blocks.1.attentions.1 is output_blocks.3.1.
        let to_out = "up_blocks.1.attentions.1.transformer_blocks.0.attn2.to_out.0";
        let cases = [
            (format!("unet.{to_q}"), to_q),
            (to_q.to_string(), to_q),
            (
                "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_q_lora"
                    .into(),
                to_q,
            ),
            (
                "up_blocks.1.attentions.1.transformer_blocks.0.attn2.processor.to_out_lora".into(),
                to_out,
            ),
            (
                "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q".into(),
                to_q,
            ),
            (
                "lora_unet_up_blocks_1_attentions_1_transformer_blocks_0_attn2_to_out_0".into(),
                to_out,
            ),
            // Original LDM names: input_blocks.1 is level 0's first resnet and attention.
            (
                "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q".into(),
                to_q,
            ),
            (
                "lora_unet_input_blocks_1_0_in_layers_2".into(),
                "down_blocks.0.resnets.0.conv1",
            ),
            (
                "lora_unet_input_blocks_2_0_op".into(),
                "down_blocks.0.downsamplers.0.conv",
            ),
            (
                "lora_unet_middle_block_1_proj_in".into(),
                "mid_block.attentions.0.proj_in",
            ),
            (
                "lora_unet_output_blocks_3_1_transformer_blocks_0_attn2_to_out_0".into(),
                to_out,
            ),
            (
                "lora_unet_output_blocks_0_0_emb_layers_1".into(),
                "up_blocks.0.resnets.0.time_emb_proj",
            ),
            (
                "lora_unet_output_blocks_0_0_skip_connection".into(),
                "up_blocks.0.resnets.0.conv_shortcut",
            ),
            (
                "lora_unet_output_blocks_1_1_conv".into(),
                "up_blocks.0.upsamplers.0.conv",
            ),
            (
                "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_ff_net_2".into(),
                "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.2",
            ),
            ("lora_unet_time_embed_0".into(), "time_embedding.linear_1"),
            ("lora_unet_out_2".into(), "conv_out"),
        ];
        for (key, module) in cases {
            assert_eq!(lora_module(&key, &targets), Some(module), "{key}");
        }
        for key in [
            "unet.down_blocks.9.resnets.0.conv1",
            "lora_unet_down_blocks_0_norm",
            "lora_te_text_model_x",
        ] {
            assert_eq!(lora_module(key, &targets), None, "{key}");
        }
    }
}
