//! A1111's `Model hash` and `Model` of a model given as a checkpoint file or a diffusers folder.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use prompt_diffusion_core::weights::find_component_weights;
use prompt_diffusion_core::{Error, Result};
use sha2::{Digest, Sha256};

/// The SHA-256 of a file, in lower-case hex.
///
/// # Errors
/// [`Error::Io`] naming the file when it cannot be read.
pub fn file_sha256(path: impl AsRef<Path>) -> Result<String> {
    let path = path.as_ref();
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    sha256_hex(BufReader::with_capacity(1 << 20, file)).map_err(|e| Error::io(path, e))
}

/// A1111's short hash of a checkpoint: the first 10 hex digits of the file's SHA-256 (the
/// `Model hash` of its infotexts, Civitai's "AutoV2").
///
/// # Errors
/// As [`file_sha256`].
pub fn short_hash(path: impl AsRef<Path>) -> Result<String> {
    let mut hash = file_sha256(path)?;
    hash.truncate(10);
    Ok(hash)
}

/// A1111's short hash of a LoRA file, its `Lora hashes` entry: the first 12 hex digits of the
/// SHA-256 of the tensor data of a `.safetensors` file (the bytes after its header, the
/// "addnet hash" that stays the same when only the metadata changes), or of the whole file in
/// any other format.
///
/// # Errors
/// [`Error::Io`] naming the file when it cannot be read; [`Error::Format`] when a
/// `.safetensors` file is shorter than its header says.
pub fn lora_hash(path: impl AsRef<Path>) -> Result<String> {
    let path = path.as_ref();
    let safetensors = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"));
    let mut hash = if safetensors {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let mut length = [0u8; 8];
        reader
            .read_exact(&mut length)
            .map_err(|_| Error::format(path, "shorter than a safetensors header"))?;
        let header = u64::from_le_bytes(length);
        let skipped = std::io::copy(&mut reader.by_ref().take(header), &mut std::io::sink())
            .map_err(|e| Error::io(path, e))?;
        if skipped < header {
            return Err(Error::format(
                path,
                format!("the header of {header} bytes is cut off after {skipped}"),
            ));
        }
        sha256_hex(reader).map_err(|e| Error::io(path, e))?
    } else {
        file_sha256(path)?
    };
    hash.truncate(12);
    Ok(hash)
}

/// The SHA-256 of what `reader` gives, in lower-case hex.
fn sha256_hex(mut reader: impl Read) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = reader.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// The `Model hash` of a model: for a single file, its [`short_hash`]; for a diffusers folder,
/// which A1111 has no hash for, the short hash of the UNet's weight file (`unet/`, or
/// `base/unet/` of a Prompt Diffusion folder; the `variant` file when there is one, the index
/// file of sharded weights) — the file that decides what is generated, and the same for every
/// copy of the folder.
///
/// # Errors
/// [`Error::Io`] or [`Error::Format`] when the file cannot be found or read.
pub fn model_hash(path: impl AsRef<Path>, variant: Option<&str>) -> Result<String> {
    let path = path.as_ref();
    if !path.is_dir() {
        return short_hash(path);
    }
    let unet = ["unet", "base/unet"]
        .map(|dir| path.join(dir))
        .into_iter()
        .find(|dir| dir.is_dir())
        .ok_or_else(|| Error::format(path, "no unet/ folder to hash"))?;
    short_hash(find_component_weights(unet, variant)?)
}

/// The `Model` of a model, as A1111 names checkpoints: a file's name without its extension
/// (`v1-5-pruned-emaonly`), a folder's name (`stable-diffusion-v1-5`), or the text itself when
/// it names no file (e.g. a hub id).
pub fn model_name(path: impl AsRef<Path>) -> String {
    let path = path.as_ref();
    let own = |name: &std::ffi::OsStr| name.to_string_lossy().into_owned();
    let name = match path.is_dir() {
        // `.` and `..` have no name of their own: take the folder's.
        true => path.file_name().map(own).or_else(|| {
            let full = path.canonicalize().ok()?;
            full.file_name().map(own)
        }),
        false if path.exists() => path.file_stem().map(own),
        false => None,
    };
    name.unwrap_or_else(|| path.display().to_string())
}
