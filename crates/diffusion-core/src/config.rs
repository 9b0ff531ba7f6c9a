//! Reading reference `config.json` files into typed configs.
//!
//! Config structs are plain `serde` types whose fields carry the reference's names and
//! defaults. Keys the struct does not know are reported with `tracing::warn!` (keys beginning
//! with `_`, such as `_class_name` and `_diffusers_version`, are bookkeeping and skipped), the
//! way diffusers' `ConfigMixin` warns about unexpected keys.

use std::path::Path;

use serde::de::DeserializeOwned;

use crate::{Error, Result};

/// Parses a JSON config file into `T`, warning about keys `T` does not use.
///
/// # Errors
/// [`Error::Io`] when the file cannot be read, [`Error::Config`] (naming the file and the field
/// path) when the JSON is invalid or a value has the wrong type.
pub fn read_config<T: DeserializeOwned>(path: impl AsRef<Path>) -> Result<T> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse_config(&text).map_err(|e| e.with_config_origin(path))
}

/// [`read_config`] followed by `validate`, whose error is given the file as its origin.
///
/// # Errors
/// As [`read_config`], and `validate`'s error.
pub fn read_validated<T: DeserializeOwned>(
    path: impl AsRef<Path>,
    validate: impl FnOnce(&T) -> Result<()>,
) -> Result<T> {
    let path = path.as_ref();
    let config: T = read_config(path)?;
    validate(&config).map_err(|e| e.with_config_origin(path))?;
    Ok(config)
}

/// Parses a JSON config string into `T`, warning about keys `T` does not use.
pub fn parse_config<T: DeserializeOwned>(text: &str) -> Result<T> {
    let mut unknown = Vec::new();
    let mut callback = |path: serde_ignored::Path<'_>| {
        let key = path.to_string();
        if !key.split('.').any(|segment| segment.starts_with('_')) {
            unknown.push(key);
        }
    };
    let mut json = serde_json::Deserializer::from_str(text);
    let de = serde_ignored::Deserializer::new(&mut json, &mut callback);
    let value: T = serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        Error::config(
            if field == "." { "<root>".into() } else { field },
            e.into_inner().to_string(),
        )
    })?;
    if !unknown.is_empty() {
        tracing::warn!(
            "config keys not used by {}: {}",
            std::any::type_name::<T>(),
            unknown.join(", ")
        );
    }
    Ok(value)
}

/// A field that diffusers accepts either as one value for every block or as a per-block list
/// (e.g. `attention_head_dim: 8` or `[5, 10, 20, 20]`).
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    /// The same value for every block.
    One(T),
    /// One value per block.
    Many(Vec<T>),
}

impl<T: Clone> OneOrMany<T> {
    /// The value for each of `n` blocks.
    ///
    /// # Errors
    /// [`Error::Config`] naming `field` when a list's length is not `n`.
    pub fn per_block(&self, n: usize, field: &str) -> Result<Vec<T>> {
        match self {
            OneOrMany::One(v) => Ok(vec![v.clone(); n]),
            OneOrMany::Many(vs) if vs.len() == n => Ok(vs.clone()),
            OneOrMany::Many(vs) => Err(Error::config(
                field,
                format!("has {} entries, expected one per block ({n})", vs.len()),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    struct Demo {
        #[serde(default = "three")]
        a: usize,
        heads: OneOrMany<usize>,
    }

    fn three() -> usize {
        3
    }

    #[test]
    fn defaults_lists_and_unknown_keys() {
        let d: Demo = parse_config(r#"{"_class_name": "X", "heads": [1, 2], "extra": 1}"#).unwrap();
        assert_eq!(d.a, 3);
        assert_eq!(d.heads.per_block(2, "heads").unwrap(), vec![1, 2]);
        assert!(d.heads.per_block(3, "heads").is_err());
        let d: Demo = parse_config(r#"{"heads": 8}"#).unwrap();
        assert_eq!(d.heads.per_block(4, "heads").unwrap(), vec![8; 4]);
    }

    #[test]
    fn wrong_type_names_the_field() {
        let err = parse_config::<Demo>(r#"{"heads": "x"}"#).unwrap_err();
        assert!(matches!(err, Error::Config { .. }), "{err}");
        let err = parse_config::<Demo>(r#"{"a": "x", "heads": 1}"#).unwrap_err();
        match err {
            Error::Config { field, .. } => assert_eq!(field, "a"),
            other => panic!("unexpected error {other}"),
        }
    }
}
