//! LoRA key tables of the text encoder: from the layer names of LoRA files to this crate's
//! module paths (`text_model.encoder.layers.0.self_attn.q_proj`, transformers' names).
//!
//! | layout | text-encoder layer names | handled by |
//! |---|---|---|
//! | PEFT / diffusers with transformers 5 | `text_encoder.encoder.layers.0.self_attn.q_proj` (no `text_model` level) | [`PEFT_PREFIX`] stripped, `text_model.` added |
//! | PEFT / diffusers with transformers 4 | `text_encoder.text_model.encoder.…` | [`PEFT_PREFIX`] stripped |
//! | diffusers' older layers | `text_encoder.text_model.….self_attn.to_q_lora` (`to_k_lora`, `to_v_lora`, `to_out_lora`) | renamed to `q_proj`, `k_proj`, `v_proj`, `out_proj` |
//! | kohya-ss | `lora_te_` (SDXL's first encoder: `lora_te1_`) + module path with `.` → `_` | aliases built from the module paths |
//!
//! The factor suffixes (`.lora_A.weight`, `.lora_linear_layer.down.weight`, …) are the core's
//! ([`LoraFile`](prompt_diffusion_core::lora::LoraFile)).

use burn::module::Module;
use burn::prelude::*;
use prompt_diffusion_core::lora::LoraTargets;

/// The prefix of the text encoder's layers in PEFT/diffusers LoRA files.
pub const PEFT_PREFIX: &str = "text_encoder.";

/// kohya-ss's prefixes of the (first) text encoder's layers.
pub const KOHYA_PREFIXES: [&str; 2] = ["lora_te_", "lora_te1_"];

/// The level transformers' `CLIPTextModel` keeps its layers under.
const LEVEL: &str = "text_model.";

/// diffusers' older attention names and the projections they stand for.
const OLD_ATTENTION_NAMES: [(&str, &str); 4] = [
    ("to_q_lora", "q_proj"),
    ("to_k_lora", "k_proj"),
    ("to_v_lora", "v_proj"),
    ("to_out_lora", "out_proj"),
];

/// Whether a LoRA layer name belongs to the (first) text encoder (`text_encoder.…`,
/// `lora_te_…`, `lora_te1_…`).
pub fn is_text_encoder_key(key: &str) -> bool {
    key.starts_with(PEFT_PREFIX) || KOHYA_PREFIXES.iter().any(|p| key.starts_with(p))
}

/// The layers of a text model (`CLIPTextModel`, `CLIPTextModelWithProjection`) a LoRA can
/// update, with kohya-ss's names for them.
pub fn lora_targets<B: Backend, M: Module<B>>(model: &M) -> LoraTargets {
    let mut targets = LoraTargets::of(model);
    for prefix in KOHYA_PREFIXES {
        targets.add_kohya_aliases(prefix);
    }
    targets
}

/// The module path of the text-encoder layer a LoRA layer name stands for, if any (see the
/// module docs for the layouts).
pub fn lora_module<'a>(key: &str, targets: &'a LoraTargets) -> Option<&'a str> {
    if KOHYA_PREFIXES.iter().any(|p| key.starts_with(p)) {
        return targets.resolve(key);
    }
    let name = key.strip_prefix(PEFT_PREFIX)?;
    let name = match OLD_ATTENTION_NAMES
        .iter()
        .find_map(|(old, new)| Some((name.strip_suffix(old)?, new)))
    {
        Some((parent, new)) => format!("{parent}{new}"),
        None => name.to_string(),
    };
    // Layers of the projection model sit beside `text_model` (`text_projection`).
    targets
        .resolve(&name)
        .or_else(|| targets.resolve(&format!("{LEVEL}{name}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CLIPTextConfig, CLIPTextModel};
    use burn_ndarray::NdArray;

    #[test]
    fn every_layout_names_the_same_module() {
        let config = CLIPTextConfig {
            hidden_size: 8,
            intermediate_size: 16,
            num_hidden_layers: 2,
            num_attention_heads: 2,
            ..CLIPTextConfig::sd_v1_5()
        };
        let model = CLIPTextModel::<NdArray>::init(&config, &Default::default());
        let targets = lora_targets(&model);
        let q = "text_model.encoder.layers.1.self_attn.q_proj";
        let fc1 = "text_model.encoder.layers.0.mlp.fc1";
        let cases = [
            ("text_encoder.encoder.layers.1.self_attn.q_proj", q),
            (
                "text_encoder.text_model.encoder.layers.1.self_attn.q_proj",
                q,
            ),
            (
                "text_encoder.text_model.encoder.layers.1.self_attn.to_q_lora",
                q,
            ),
            ("text_encoder.text_model.encoder.layers.0.mlp.fc1", fc1),
            ("lora_te_text_model_encoder_layers_1_self_attn_q_proj", q),
            ("lora_te1_text_model_encoder_layers_0_mlp_fc1", fc1),
        ];
        for (key, module) in cases {
            assert!(is_text_encoder_key(key), "{key}");
            assert_eq!(lora_module(key, &targets), Some(module), "{key}");
        }
        for key in [
            "text_encoder.encoder.layers.2.self_attn.q_proj",
            "text_encoder_2.encoder.layers.0.self_attn.q_proj",
            "lora_te2_text_model_encoder_layers_0_mlp_fc1",
            "unet.conv_in",
        ] {
            assert_eq!(lora_module(key, &targets), None, "{key}");
        }
        assert!(!is_text_encoder_key("text_encoder_2.x") && !is_text_encoder_key("lora_te2_x"));
    }
}
