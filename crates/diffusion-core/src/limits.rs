//! Bounds on config values, and the agreement of a config with its weight file's header.
//!
//! A config is read before its weights, and a module is allocated from the config before the
//! weights fill it, so a hostile or broken `config.json` (a width of 10⁹, 10⁹ layers, zero
//! GroupNorm groups) must be stopped before any allocation. Every model crate's `validate()`
//! checks its fields against the maxima here, and its loader runs a [`HeaderCheck`] on the
//! weight file's header (shapes only, no tensor data is read) before building the module: a
//! width, a layer count or a vocabulary that disagrees with the file is reported as
//! [`Error::ConfigMismatch`] naming the file, the key, the field and both values.
//!
//! The maxima are far above every published checkpoint (SD1.5's widest level is 1280
//! channels, CLIP ViT-bigG is 1664 wide with 48 layers) and far below sizes that would exhaust
//! memory by the module structure alone.

use crate::weights::TensorSource;
use crate::{ConfigMismatch, Error, Result};

/// The widest channel count or hidden size accepted (model widths, MLP widths, projections).
pub const MAX_WIDTH: usize = 65_536;
/// The most layers accepted in one stack (`num_hidden_layers`, resnets per block,
/// transformer blocks per attention layer).
pub const MAX_LAYERS: usize = 256;
/// The most resolution levels of a UNet, VAE or ControlNet (`block_out_channels` entries).
pub const MAX_LEVELS: usize = 8;
/// The most attention heads accepted.
pub const MAX_HEADS: usize = 4096;
/// The largest vocabulary accepted (`vocab_size`).
pub const MAX_VOCAB: usize = 1 << 20;
/// The most positions (tokens) accepted (`max_position_embeddings`, image sizes in patches).
pub const MAX_POSITIONS: usize = 65_536;
/// The largest `sample_size` (latent side of a UNet, or image side of a VAE) accepted.
pub const MAX_SAMPLE_SIZE: usize = 16_384;
/// The largest convolution kernel side accepted.
pub const MAX_KERNEL: usize = 31;

/// Checks `1 ≤ value ≤ max`.
///
/// # Errors
/// [`Error::Config`] naming `field`.
pub fn check_count(field: &str, value: usize, max: usize) -> Result<()> {
    if value == 0 {
        Err(Error::config(field, "must be at least 1"))
    } else if value > max {
        Err(Error::config(
            field,
            format!("{value} is above the supported maximum {max}"),
        ))
    } else {
        Ok(())
    }
}

/// [`check_count`] on every entry of a list, naming the entry (`field[i]`).
///
/// # Errors
/// [`Error::Config`] naming the first offending entry.
pub fn check_counts(field: &str, values: &[usize], max: usize) -> Result<()> {
    values
        .iter()
        .enumerate()
        .try_for_each(|(i, &v)| check_count(&format!("{field}[{i}]"), v, max))
}

/// Checks that the list `field` has one entry per resolution level (`levels`, the length of
/// `block_out_channels`).
///
/// # Errors
/// [`Error::Config`] naming `field`.
pub fn check_per_level(field: &str, entries: usize, levels: usize) -> Result<()> {
    if entries == levels {
        Ok(())
    } else {
        Err(Error::config(
            field,
            format!("has {entries} entries, block_out_channels has {levels}"),
        ))
    }
}

/// Checks that `divisor` (already known to be positive) divides `value`.
///
/// # Errors
/// [`Error::Config`] naming `field`.
pub fn check_divides(field: &str, value: usize, divisor_field: &str, divisor: usize) -> Result<()> {
    if divisor == 0 || !value.is_multiple_of(divisor) {
        Err(Error::config(
            field,
            format!("{value} is not a multiple of {divisor_field} ({divisor})"),
        ))
    } else {
        Ok(())
    }
}

/// Checks that a float value (an epsilon, a scale) is finite and positive.
///
/// # Errors
/// [`Error::Config`] naming `field`.
pub fn check_positive_float(field: &str, value: f64) -> Result<()> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(Error::config(
            field,
            format!("{value} is not a positive number"),
        ))
    }
}

/// Checks a config against the shapes in a weight file's header, before the module is built.
///
/// Keys absent from the file are skipped (the strict loader names them later); a key that is
/// present with another shape, or a counted key pattern with another count, is an
/// [`Error::ConfigMismatch`].
#[derive(Debug, Clone, Copy)]
pub struct HeaderCheck<'a> {
    source: &'a TensorSource,
    module: &'a str,
}

impl<'a> HeaderCheck<'a> {
    /// Checks against `source` (keys in the module's own naming) the config of `module` (a
    /// type name such as `UNet2DConditionModel`, for messages).
    pub fn new(source: &'a TensorSource, module: &'a str) -> Self {
        Self { source, module }
    }

    fn file(&self, key: &str) -> String {
        match self.source.file_of(key) {
            Some(path) => path.display().to_string(),
            None => self.source.description().to_string(),
        }
    }

    /// The shape of `key` in the file, if it is there.
    pub fn shape(&self, key: &str) -> Option<&'a [usize]> {
        self.source.shape(key)
    }

    /// Checks that `key`, when present, has `expected` as its shape; `field` names the config
    /// field (with its value) that implies it.
    ///
    /// # Errors
    /// [`Error::ConfigMismatch`].
    pub fn shape_is(&self, key: &str, expected: &[usize], field: &str) -> Result<()> {
        match self.source.shape(key) {
            Some(found) if found != expected => Err(self.mismatch(
                key,
                field,
                format!("shape {expected:?}"),
                format!("shape {found:?}"),
            )),
            _ => Ok(()),
        }
    }

    /// Checks dimension `dim` of `key`, when present (a negative `dim` counts from the end),
    /// against `expected`. Lets one check the width a tensor shares with the config without
    /// restating the dimensions the config does not fix.
    ///
    /// # Errors
    /// [`Error::ConfigMismatch`].
    pub fn dim_is(&self, key: &str, dim: isize, expected: usize, field: &str) -> Result<()> {
        let Some(found) = self.source.shape(key) else {
            return Ok(());
        };
        let index = if dim < 0 {
            found.len().checked_sub(dim.unsigned_abs())
        } else {
            Some(dim as usize)
        };
        match index.and_then(|i| found.get(i)) {
            Some(&value) if value == expected => Ok(()),
            _ => {
                let mut implied = found.iter().map(|d| d.to_string()).collect::<Vec<_>>();
                if let Some(slot) = index.and_then(|i| implied.get_mut(i)) {
                    *slot = expected.to_string();
                }
                Err(self.mismatch(
                    key,
                    field,
                    format!("shape [{}]", implied.join(", ")),
                    format!("shape {found:?}"),
                ))
            }
        }
    }

    /// Checks the number of indexed modules `{prefix}{i}{suffix}` in the file (one more than
    /// the highest index present, so a tensor missing in the middle is left to the strict
    /// loader), when the file has any; `what` names the counted things.
    ///
    /// # Errors
    /// [`Error::ConfigMismatch`].
    pub fn count_is(
        &self,
        prefix: &str,
        suffix: &str,
        expected: usize,
        field: &str,
        what: &str,
    ) -> Result<()> {
        let found = self.count(prefix, suffix);
        if found == 0 || found == expected {
            return Ok(());
        }
        let key = format!("{prefix}*{suffix}");
        let file = self
            .source
            .file_of(&format!("{prefix}{}{suffix}", found - 1))
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| self.source.description().to_string());
        Err(ConfigMismatch {
            file,
            module: self.module.to_string(),
            key,
            field: field.to_string(),
            expected: format!("{expected} {what}"),
            found: format!("{found} {what}"),
        }
        .into())
    }

    /// One more than the highest index `i` with `{prefix}{i}{suffix}` in the file (0 when
    /// there is none).
    pub fn count(&self, prefix: &str, suffix: &str) -> usize {
        self.source
            .keys()
            .filter_map(|key| key.strip_prefix(prefix)?.strip_suffix(suffix))
            .filter_map(|index| index.parse::<usize>().ok())
            .max()
            .map_or(0, |i| i.saturating_add(1))
    }

    fn mismatch(&self, key: &str, field: &str, expected: String, found: String) -> Error {
        ConfigMismatch {
            file: self.file(key),
            module: self.module.to_string(),
            key: key.to_string(),
            field: field.to_string(),
            expected,
            found,
        }
        .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    fn source() -> TensorSource {
        let t = |shape: &[usize]| {
            let n = shape.iter().product::<usize>();
            TensorData::new(vec![0f32; n], shape.to_vec())
        };
        TensorSource::from_tensors(
            "demo",
            [
                ("conv_in.weight".to_string(), t(&[8, 4, 3, 3])),
                ("blocks.0.w".to_string(), t(&[2])),
                ("blocks.1.w".to_string(), t(&[2])),
            ],
        )
    }

    #[test]
    fn bounds() {
        assert!(check_count("x", 0, 4).is_err());
        assert!(check_count("x", 5, 4).is_err());
        check_count("x", 4, 4).unwrap();
        let err = check_counts("c", &[1, 9], 4).unwrap_err();
        assert!(
            matches!(&err, Error::Config { field, .. } if field == "c[1]"),
            "{err}"
        );
        assert!(check_divides("c", 10, "groups", 0).is_err());
        assert!(check_divides("c", 10, "groups", 3).is_err());
        check_divides("c", 12, "groups", 3).unwrap();
        assert!(check_positive_float("eps", f64::NAN).is_err());
        assert!(check_positive_float("eps", 0.0).is_err());
    }

    #[test]
    fn header_checks() {
        let source = source();
        let check = HeaderCheck::new(&source, "Demo");
        check
            .shape_is("conv_in.weight", &[8, 4, 3, 3], "c")
            .unwrap();
        check.shape_is("absent", &[1], "c").unwrap();
        let err = check.dim_is("conv_in.weight", 0, 9, "c = 9").unwrap_err();
        assert!(
            err.to_string().ends_with(
                "`conv_in.weight` is shape [8, 4, 3, 3] in the weights, but the Demo config `c = 9` implies shape [9, 4, 3, 3]"
            ),
            "{err}"
        );
        check.dim_is("conv_in.weight", -1, 3, "k").unwrap();
        check.count_is("blocks.", ".w", 2, "n", "blocks").unwrap();
        check.count_is("other.", ".w", 7, "n", "blocks").unwrap();
        let err = check
            .count_is("blocks.", ".w", 3, "n = 3", "blocks")
            .unwrap_err();
        assert!(matches!(err, Error::ConfigMismatch(_)), "{err}");
    }
}
