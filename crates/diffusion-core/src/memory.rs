//! Memory limits: parsing sizes, the machine's available memory, and refusing a run whose
//! estimated peak does not fit.
//!
//! The pipelines estimate what a generation needs (weights, the largest activations) before
//! allocating anything for it and compare it with a [`MemoryLimit`]; a run that cannot fit
//! fails at once with [`Error::OutOfMemory`] instead of being killed minutes later.

use crate::{Error, Result};

/// How much memory a run may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MemoryLimit {
    /// The memory the operating system reports as available when the run starts
    /// (`MemAvailable` of `/proc/meminfo` on Linux); no limit where it is unknown (default).
    #[default]
    Available,
    /// A fixed number of bytes.
    Bytes(u64),
    /// No limit.
    Unlimited,
}

impl MemoryLimit {
    /// The limit in bytes and a description of where it comes from; `None` when unlimited
    /// (or when the available memory is unknown).
    pub fn resolve(self) -> Option<(u64, String)> {
        match self {
            MemoryLimit::Available => {
                available_memory().map(|b| (b, "the memory available on this machine".into()))
            }
            MemoryLimit::Bytes(b) => Some((b, "the configured maximum".into())),
            MemoryLimit::Unlimited => None,
        }
    }

    /// Parses a size such as `8GiB`, `512MiB`, `1.5GB`, `4096` (bytes), or `none`/`unlimited`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for anything else.
    pub fn parse(text: &str) -> Result<Self> {
        let t = text.trim();
        if t.eq_ignore_ascii_case("none") || t.eq_ignore_ascii_case("unlimited") {
            return Ok(MemoryLimit::Unlimited);
        }
        parse_bytes(t).map(MemoryLimit::Bytes)
    }
}

impl std::str::FromStr for MemoryLimit {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

/// Parses a byte size: a number followed by an optional unit (`B`, `K`/`KB`/`KiB`, `M`…,
/// `G`…, `T`…; the `i` forms and the bare letters are powers of 1024, `KB`/`MB`/… powers of
/// 1000), case-insensitive.
///
/// # Errors
/// [`Error::InvalidInput`] naming the text.
pub fn parse_bytes(text: &str) -> Result<u64> {
    let invalid = || {
        Error::invalid_input(
            "memory size",
            format!("`{text}` is not a size such as 8GiB, 512MiB or 1000000"),
        )
    };
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number.parse().map_err(|_| invalid())?;
    let unit = unit.trim().to_ascii_lowercase();
    let scale: f64 = match unit.as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "kb" => 1e3,
        "m" | "mib" => 1024f64.powi(2),
        "mb" => 1e6,
        "g" | "gib" => 1024f64.powi(3),
        "gb" => 1e9,
        "t" | "tib" => 1024f64.powi(4),
        "tb" => 1e12,
        _ => return Err(invalid()),
    };
    let bytes = number * scale;
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
        return Err(invalid());
    }
    Ok(bytes as u64)
}

/// A byte count for messages (`1.5 GiB`, `512.0 MiB`, `12 B`).
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// The memory the operating system can give without swapping (`MemAvailable` of
/// `/proc/meminfo`), or `None` where it is unknown.
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_meminfo(&text)
}

fn parse_meminfo(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let mut fields = line.split_whitespace().skip(1);
    let value: u64 = fields.next()?.parse().ok()?;
    match fields.next() {
        Some("kB") | None => value.checked_mul(1024),
        _ => None,
    }
}

/// An estimate of a run's peak memory, as named parts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryEstimate {
    /// The parts (`weights`, `UNet attention scores`, …) in bytes.
    pub parts: Vec<(String, u64)>,
}

impl MemoryEstimate {
    /// Adds a part (saturating).
    pub fn add(&mut self, what: impl Into<String>, bytes: u64) {
        self.parts.push((what.into(), bytes));
    }

    /// The sum of the parts (saturating).
    pub fn total(&self) -> u64 {
        self.parts
            .iter()
            .fold(0u64, |sum, (_, b)| sum.saturating_add(*b))
    }

    /// The largest parts, for messages: `weights 1.6 GiB, UNet attention scores 40.0 GiB`.
    pub fn breakdown(&self) -> String {
        let mut parts = self.parts.clone();
        parts.sort_by_key(|part| std::cmp::Reverse(part.1));
        parts
            .iter()
            .take(3)
            .map(|(what, b)| format!("{what} {}", format_bytes(*b)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Refuses the run `what` when the estimate exceeds `limit`.
    ///
    /// # Errors
    /// [`Error::OutOfMemory`] with the figure, its largest parts and the limit.
    pub fn check(&self, what: &str, limit: MemoryLimit) -> Result<()> {
        let Some((limit, limit_source)) = limit.resolve() else {
            return Ok(());
        };
        let needed = self.total();
        if needed <= limit {
            return Ok(());
        }
        Err(Error::OutOfMemory {
            what: what.to_string(),
            needed,
            breakdown: self.breakdown(),
            limit,
            limit_source,
        })
    }
}

/// `∏ dims × bytes`, saturating (an estimate of a tensor's size that never overflows).
pub fn tensor_bytes(dims: &[usize], bytes_per_element: usize) -> u64 {
    dims.iter().fold(bytes_per_element as u64, |acc, &d| {
        acc.saturating_mul(d as u64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_print() {
        assert_eq!(parse_bytes("8GiB").unwrap(), 8 << 30);
        assert_eq!(parse_bytes("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("1.5 gb").unwrap(), 1_500_000_000);
        assert_eq!(parse_bytes("4096").unwrap(), 4096);
        assert_eq!(parse_bytes("2k").unwrap(), 2048);
        for bad in ["", "GiB", "-1GiB", "8 parsecs", "0", "1e400"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
        assert_eq!(MemoryLimit::parse("none").unwrap(), MemoryLimit::Unlimited);
        assert_eq!(format_bytes(512), "512 B");
        assert_eq!(format_bytes(3 << 29), "1.5 GiB");
        assert_eq!(tensor_bytes(&[usize::MAX, 4], 4), u64::MAX);
    }

    #[test]
    fn meminfo() {
        let text = "MemTotal:       16000000 kB\nMemAvailable:    8000000 kB\n";
        assert_eq!(parse_meminfo(text), Some(8_192_000_000));
        assert_eq!(parse_meminfo("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn estimates_are_refused_over_the_limit() {
        let mut estimate = MemoryEstimate::default();
        estimate.add("weights", 1 << 30);
        estimate.add("attention scores", 3 << 30);
        estimate.check("run", MemoryLimit::Unlimited).unwrap();
        estimate.check("run", MemoryLimit::Bytes(5 << 30)).unwrap();
        let err = estimate
            .check("txt2img 64×64", MemoryLimit::Bytes(1 << 30))
            .unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, Error::OutOfMemory { .. }));
        assert!(
            message.contains("4.0 GiB") && message.contains("1.0 GiB"),
            "{message}"
        );
        assert!(message.contains("attention scores 3.0 GiB"), "{message}");
    }
}
