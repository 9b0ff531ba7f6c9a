//! The PEFT adapter configs diffusers stores in a LoRA file's safetensors header, and the
//! `alpha / rank` factor they give each layer.
//!
//! diffusers' `save_lora_weights` writes `__metadata__.lora_adapter_metadata`, a JSON object of
//! each model's `LoraConfig` with the model's name as prefix (`unet.r`, `unet.lora_alpha`,
//! `unet.alpha_pattern`, `text_encoder.use_rslora`, …); a model's own `save_lora_adapter`
//! writes the same fields without a prefix.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use regex::Regex;
use serde_json::{Map, Value};

use crate::{Error, Result};

/// The header entry diffusers writes the adapter configs to.
pub const LORA_ADAPTER_METADATA_KEY: &str = "lora_adapter_metadata";

/// The largest safetensors header read for its metadata.
const MAX_HEADER_BYTES: u64 = 100 << 20;

/// The adapter configs of a safetensors file's header (`lora_adapter_metadata`), when the file
/// is a safetensors file that has them.
///
/// # Errors
/// [`Error::Io`] when the file cannot be read, [`Error::Format`] for a header that is not
/// JSON or an adapter-config entry that is not a JSON object.
pub fn safetensors_metadata(path: &Path) -> Result<Option<Map<String, Value>>> {
    let is_safetensors = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"));
    if !is_safetensors {
        return Ok(None);
    }
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len).map_err(|e| Error::io(path, e))?;
    let len = u64::from_le_bytes(len);
    if len > MAX_HEADER_BYTES {
        return Err(Error::format(
            path,
            format!("safetensors header of {len} bytes"),
        ));
    }
    let mut header = Vec::new();
    file.take(len)
        .read_to_end(&mut header)
        .map_err(|e| Error::io(path, e))?;
    let header: Value = serde_json::from_slice(&header)
        .map_err(|e| Error::format(path, format!("safetensors header: {e}")))?;
    let Some(text) = header
        .get("__metadata__")
        .and_then(|m| m.get(LORA_ADAPTER_METADATA_KEY))
        .and_then(Value::as_str)
    else {
        return Ok(None);
    };
    match serde_json::from_str(text) {
        Ok(Value::Object(map)) => Ok(Some(map)),
        Ok(_) => Err(Error::format(
            path,
            format!("{LORA_ADAPTER_METADATA_KEY} is not a JSON object"),
        )),
        Err(e) => Err(Error::format(
            path,
            format!("{LORA_ADAPTER_METADATA_KEY}: {e}"),
        )),
    }
}

/// One model's adapter config: what the factor of its layers depends on.
#[derive(Debug, Clone)]
struct PeftConfig {
    /// `lora_alpha`.
    alpha: f64,
    /// `alpha_pattern`: PEFT's `(.*\.)?(pattern)$`, in the config's order.
    alpha_pattern: Vec<(Regex, f64)>,
    /// `use_rslora`: the factor is `alpha / √rank`.
    rslora: bool,
}

/// The adapter configs of a file, by model prefix (`unet`, `text_encoder`; `""` for a
/// config without prefix).
#[derive(Debug, Clone, Default)]
pub(super) struct PeftConfigs {
    configs: BTreeMap<String, PeftConfig>,
}

impl PeftConfigs {
    /// Reads the configs of a `lora_adapter_metadata` object.
    ///
    /// # Errors
    /// [`Error::Format`] naming the file for a field of the wrong type or an invalid pattern,
    /// [`Error::Unsupported`] for DoRA (`use_dora`) and biased LoRA (`lora_bias`).
    pub(super) fn from_metadata(
        path: &Path,
        metadata: Option<&Map<String, Value>>,
    ) -> Result<Self> {
        let mut fields: BTreeMap<&str, Map<String, Value>> = BTreeMap::new();
        for (key, value) in metadata.into_iter().flatten() {
            let (prefix, field) = key.rsplit_once('.').unwrap_or(("", key));
            fields
                .entry(prefix)
                .or_default()
                .insert(field.to_string(), value.clone());
        }
        let mut configs = BTreeMap::new();
        for (prefix, fields) in fields {
            if let Some(config) = config(path, prefix, &fields)? {
                configs.insert(prefix.to_string(), config);
            }
        }
        Ok(Self { configs })
    }

    /// The factor of layer `key` of rank `rank`: `alpha / rank` with the layer's own alpha
    /// (`.alpha` tensor) when it has one, else with its model's config (`key`'s first segment
    /// names the model; the rest is matched against `alpha_pattern`), else 1.
    pub(super) fn factor(&self, key: &str, rank: usize, alpha: Option<f32>) -> f32 {
        let rank = rank as f64;
        if let Some(alpha) = alpha {
            return (f64::from(alpha) / rank) as f32;
        }
        let found = key
            .split_once('.')
            .and_then(|(prefix, rest)| Some((self.configs.get(prefix)?, rest)))
            .or_else(|| Some((self.configs.get("")?, key)));
        let Some((config, name)) = found else {
            return 1.0;
        };
        let alpha = config
            .alpha_pattern
            .iter()
            .find(|(pattern, _)| pattern.is_match(name))
            .map_or(config.alpha, |&(_, alpha)| alpha);
        let divisor = if config.rslora { rank.sqrt() } else { rank };
        (alpha / divisor) as f32
    }
}

/// One model's config from its fields; `None` when it has no `lora_alpha` (not a LoRA config).
fn config(path: &Path, prefix: &str, fields: &Map<String, Value>) -> Result<Option<PeftConfig>> {
    let name = |field: &str| {
        if prefix.is_empty() {
            field.to_string()
        } else {
            format!("{prefix}.{field}")
        }
    };
    let invalid = |field: &str, what: &str| {
        Error::format(
            path,
            format!("{LORA_ADAPTER_METADATA_KEY}: `{}` {what}", name(field)),
        )
    };
    let flag = |field: &str| -> Result<bool> {
        match fields.get(field) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(invalid(field, "is not true or false")),
        }
    };
    let model = if prefix.is_empty() { "(model)" } else { prefix };
    for (field, what) in [
        ("use_dora", "is DoRA (`use_dora`)"),
        ("lora_bias", "has LoRA biases (`lora_bias`)"),
    ] {
        if flag(field)? {
            return Err(Error::Unsupported(format!(
                "{}: the adapter of `{model}` {what}, not a plain LoRA",
                path.display()
            )));
        }
    }
    let Some(alpha) = fields.get("lora_alpha") else {
        return Ok(None);
    };
    let alpha = alpha
        .as_f64()
        .ok_or_else(|| invalid("lora_alpha", "is not a number"))?;
    let mut alpha_pattern = Vec::new();
    match fields.get("alpha_pattern") {
        None | Some(Value::Null) => {}
        Some(Value::Object(patterns)) => {
            for (pattern, value) in patterns {
                let value = value.as_f64().ok_or_else(|| {
                    invalid("alpha_pattern", &format!("[{pattern:?}] is not a number"))
                })?;
                let regex = Regex::new(&format!(r"^(?:.*\.)?(?:{pattern})$")).map_err(|e| {
                    invalid(
                        "alpha_pattern",
                        &format!("key {pattern:?} is not a valid pattern: {e}"),
                    )
                })?;
                alpha_pattern.push((regex, value));
            }
        }
        Some(_) => return Err(invalid("alpha_pattern", "is not an object")),
    }
    Ok(Some(PeftConfig {
        alpha,
        alpha_pattern,
        rslora: flag("use_rslora")?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configs(json: &str) -> PeftConfigs {
        let map: Map<String, Value> = serde_json::from_str(json).unwrap();
        PeftConfigs::from_metadata(Path::new("x.safetensors"), Some(&map)).unwrap()
    }

    #[test]
    fn factors_follow_the_prefixed_configs_and_patterns() {
        let c = configs(
            r#"{"unet.r": 4, "unet.lora_alpha": 8, "unet.alpha_pattern": {"ff.net.2": 2},
                "text_encoder.lora_alpha": 3, "text_encoder.use_rslora": true}"#,
        );
        assert_eq!(c.factor("unet.down.attn1.to_q", 4, None), 2.0);
        assert_eq!(c.factor("unet.down.ff.net.2", 4, None), 0.5);
        // The pattern matches whole segments only.
        assert_eq!(c.factor("unet.down.xff.net.2", 4, None), 2.0);
        assert_eq!(c.factor("text_encoder.layers.0.q_proj", 4, None), 1.5);
        // A layer's own alpha wins; no config: alpha = rank.
        assert_eq!(c.factor("unet.down.attn1.to_q", 4, Some(1.0)), 0.25);
        assert_eq!(c.factor("lora_unet_down", 4, None), 1.0);
        let bare = configs(r#"{"r": 2, "lora_alpha": 1}"#);
        assert_eq!(bare.factor("down_blocks.0.to_q", 2, None), 0.5);
    }

    #[test]
    fn dora_and_bad_fields_are_errors() {
        for json in [
            r#"{"unet.lora_alpha": 8, "unet.use_dora": true}"#,
            r#"{"unet.lora_alpha": "8"}"#,
            r#"{"unet.lora_alpha": 8, "unet.alpha_pattern": {"(": 1}}"#,
        ] {
            let map: Map<String, Value> = serde_json::from_str(json).unwrap();
            assert!(
                PeftConfigs::from_metadata(Path::new("x"), Some(&map)).is_err(),
                "{json}"
            );
        }
    }
}
