//! The bodies of the fuzz targets in `fuzz/` (run with `cargo +nightly fuzz run <target>`),
//! also run over seeded mutations by the test suite.
//!
//! Each takes arbitrary bytes, feeds them to one of the readers that face user files, and
//! returns normally whatever the bytes are: a reader may answer with an error, but a panic, an
//! abort or an allocation beyond the input's worth is a bug. Readers work on paths, so the bytes
//! are written to a scratch file first (point `TMPDIR` at a RAM disk to fuzz faster).

use std::path::{Path, PathBuf};

use crate::clip::{CLIPTextConfig, CLIPVisionConfig, ClipTokenizer};
use crate::core::weights::TensorSource;
use crate::schedulers::SchedulerConfig;
use crate::unet::UNet2DConditionConfig;
use crate::vae::AutoencoderKLConfig;

/// A fuzz target: its name and its body.
pub type Target = (&'static str, fn(&[u8]));

/// The fuzz targets, by name.
pub const TARGETS: [Target; 5] = [
    ("safetensors", safetensors),
    ("checkpoint", checkpoint),
    ("config", config),
    ("tokenizer", tokenizer),
    ("image", image),
];

/// The scratch folder of this process (remove it when done).
pub fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("prompt-diffusion-fuzz-{}", std::process::id()));
    // Creation races between threads are harmless: the second call finds the folder.
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// Writes `data` to a scratch file named `name` (unique per thread) and returns its path.
fn scratch_file(name: &str, data: &[u8]) -> Option<PathBuf> {
    let thread = format!("{:?}", std::thread::current().id());
    let thread: String = thread.chars().filter(char::is_ascii_digit).collect();
    let dir = scratch().join(thread);
    std::fs::create_dir_all(&dir).ok()?;
    let path = dir.join(name);
    std::fs::write(&path, data).ok()?;
    Some(path)
}

/// Opens a weight file and reads every tensor it lists.
fn weights_file(path: &Path) {
    if let Ok(source) = TensorSource::open(path) {
        let keys: Vec<String> = source.keys().map(String::from).collect();
        for key in keys {
            let _ = source.data(&key);
        }
    }
}

/// A `.safetensors` file: header parsing, offsets, dtypes, data reads.
pub fn safetensors(data: &[u8]) {
    if let Some(path) = scratch_file("weights.safetensors", data) {
        weights_file(&path);
    }
}

/// A PyTorch checkpoint (`.ckpt`): the zip archive or legacy layout, the restricted pickle
/// reader, storage size and CRC checks, strided views.
pub fn checkpoint(data: &[u8]) {
    if let Some(path) = scratch_file("weights.ckpt", data) {
        weights_file(&path);
    }
}

/// A `config.json` read as each component's config, then validated.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = UNet2DConditionConfig::from_json(text) {
        let _ = c.validate();
    }
    if let Ok(c) = crate::core::config::parse_config::<AutoencoderKLConfig>(text) {
        let _ = c.validate();
    }
    if let Ok(c) = CLIPTextConfig::from_json(text) {
        let _ = c.validate();
    }
    if let Ok(c) = CLIPVisionConfig::from_json(text) {
        let _ = c.validate();
    }
    if let Ok(c) = SchedulerConfig::from_json(text) {
        let _ = c.kind();
    }
}

/// A tokenizer folder and a prompt: the input is split at NUL bytes into `vocab.json`,
/// `merges.txt`, `tokenizer_config.json` and the prompt to encode.
pub fn tokenizer(data: &[u8]) {
    let mut parts = data.splitn(4, |&b| b == 0);
    let vocab = parts.next().unwrap_or_default();
    let merges = parts.next().unwrap_or_default();
    let config = parts.next().unwrap_or_default();
    let prompt = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let (Some(vocab_path), Some(_), Some(_)) = (
        scratch_file("vocab.json", vocab),
        scratch_file("merges.txt", merges),
        scratch_file("tokenizer_config.json", config),
    ) else {
        return;
    };
    let Some(dir) = vocab_path.parent() else {
        return;
    };
    if let Ok(tokenizer) = ClipTokenizer::from_folder(dir) {
        let _ = tokenizer.encode(&prompt);
    }
}

/// An input image (PNG, JPEG, or whatever the header claims), with the size limits of
/// [`crate::core::image::load_rgb`].
pub fn image(data: &[u8]) {
    if let Some(path) = scratch_file("input.img", data) {
        let _ = crate::core::image::load_rgb(&path);
    }
}
