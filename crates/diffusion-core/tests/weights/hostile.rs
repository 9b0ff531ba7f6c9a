//! Damaged and hostile weight files: each is a typed error naming the file and the tensor, never
//! zero-filled weights, an unbounded allocation or a panic. The checkpoints are made from the
//! `torch.save` fixtures of `fixtures/core/` by rewriting their zip archives.

use std::io::Write;
use std::path::{Path, PathBuf};

use burn::tensor::{DType, TensorData};
use prompt_diffusion_core::Error;
use prompt_diffusion_core::testing::{retype_safetensors, rezip};
use prompt_diffusion_core::weights::TensorSource;
use zip::CompressionMethod;
use zip::write::SimpleFileOptions;

use super::{check_output, fixture, load, weights_error};

/// Sets the sizes the central directory records for `name` (the local header is left as is).
fn patch_central_sizes(bytes: &mut [u8], name: &str, compressed: u32, size: u32) {
    let mut i = 0;
    while i + 46 <= bytes.len() {
        if bytes[i..i + 4] == *b"PK\x01\x02" {
            let name_len = u16::from_le_bytes([bytes[i + 28], bytes[i + 29]]) as usize;
            if &bytes[i + 46..i + 46 + name_len] == name.as_bytes() {
                bytes[i + 20..i + 24].copy_from_slice(&compressed.to_le_bytes());
                bytes[i + 24..i + 28].copy_from_slice(&size.to_le_bytes());
                return;
            }
        }
        i += 1;
    }
    panic!("no central directory entry {name}");
}

fn open_err(path: &Path) -> String {
    let err = TensorSource::open(path).expect_err("the damaged file was accepted");
    assert!(matches!(err, Error::Format { .. }), "{err}");
    let message = err.to_string();
    let file = path.file_name().unwrap().to_str().unwrap();
    assert!(message.contains(file), "{message}");
    message
}

fn copy_to(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// The [`open_err`] message of `flat.ckpt` rewritten by `edit` (see [`rezip`]) into `name`.
fn rezipped_flat_err(
    name: &str,
    edit: impl FnMut(&str, Vec<u8>) -> Option<(Vec<u8>, CompressionMethod)>,
) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    rezip(&fixture("flat.ckpt"), &path, edit);
    open_err(&path)
}

#[test]
fn truncated_checkpoints_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for fixture_name in ["flat.ckpt", "legacy.pt"] {
        let bytes = std::fs::read(fixture(fixture_name)).unwrap();
        // A partial download: every cut is refused at open, before any tensor is read.
        for keep in [bytes.len() - 1, bytes.len() - 100, bytes.len() / 2, 64] {
            let path = copy_to(
                dir.path(),
                &format!("cut-{keep}-{fixture_name}"),
                &bytes[..keep],
            );
            open_err(&path);
        }
    }
    // Bytes after the last storage of a legacy file mean its size fields are wrong.
    let mut bytes = std::fs::read(fixture("legacy.pt")).unwrap();
    bytes.extend_from_slice(&[0; 16]);
    let message = open_err(&copy_to(dir.path(), "long.pt", &bytes));
    assert!(message.contains("16 unexpected bytes"), "{message}");
}

#[test]
fn a_missing_storage_entry_is_refused_naming_the_tensor() {
    let message = rezipped_flat_err("missing.ckpt", |name, bytes| {
        (name != "flat/data/6").then_some((bytes, CompressionMethod::Stored))
    });
    assert!(message.contains("flat/data/6"), "{message}");
    assert!(message.contains("tensor `"), "{message}");
    assert!(message.contains("missing"), "{message}");
}

#[test]
fn a_short_storage_entry_is_refused() {
    let message = rezipped_flat_err("short.ckpt", |name, mut bytes| {
        if name == "flat/data/4" {
            bytes.truncate(40);
        }
        Some((bytes, CompressionMethod::Stored))
    });
    assert!(
        message.contains("flat/data/4: the zip entry holds 40 bytes"),
        "{message}"
    );
}

#[test]
fn lying_zip_size_fields_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let original = std::fs::read(fixture("flat.ckpt")).unwrap();
    for (compressed, size) in [(24, 24), (4800, 4800), (48, 96), (1 << 30, 1 << 30)] {
        let mut bytes = original.clone();
        patch_central_sizes(&mut bytes, "flat/data/0", compressed, size);
        let path = copy_to(
            dir.path(),
            &format!("lying-{compressed}-{size}.ckpt"),
            &bytes,
        );
        let message = open_err(&path);
        assert!(message.contains("flat/data/0"), "{message}");
    }
    // A data.pkl announcing a terabyte is refused before anything is allocated.
    let mut bytes = original.clone();
    patch_central_sizes(&mut bytes, "flat/data.pkl", u32::MAX, u32::MAX);
    let message = open_err(&copy_to(dir.path(), "huge-pickle.ckpt", &bytes));
    assert!(message.contains("data.pkl"), "{message}");
}

#[test]
fn compressed_storages_cannot_inflate() {
    // torch.save stores storages uncompressed; a deflated entry is how a zip bomb hides.
    let message = rezipped_flat_err("bomb.ckpt", |name, bytes| {
        let method = if name.contains("/data/") {
            CompressionMethod::Deflated
        } else {
            CompressionMethod::Stored
        };
        Some((bytes, method))
    });
    assert!(message.contains("is compressed"), "{message}");
}

#[test]
fn corrupt_storage_bytes_fail_the_crc_when_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(fixture("flat.ckpt")).unwrap();
    let start = {
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes.clone())).unwrap();
        let entry = archive.by_name("flat/data/6").unwrap();
        entry.data_start().unwrap() as usize
    };
    bytes[start + 5] ^= 0x40;
    let path = copy_to(dir.path(), "flipped.ckpt", &bytes);
    let source = TensorSource::open(&path).unwrap();
    let report = weights_error(load(&source));
    let message = report.to_string();
    assert_eq!(report.unreadable.len(), 1, "{message}");
    assert!(message.contains("CRC-32"), "{message}");
    assert!(message.contains("flipped.ckpt"), "{message}");
}

#[test]
fn pickles_run_no_code() {
    // `os.system("touch <file>")` as the whole checkpoint: recorded, never called.
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("pwned");
    let command = format!("touch {}", marker.display());
    let mut pickle = b"\x80\x02cos\nsystem\nq\x00X".to_vec();
    pickle.extend_from_slice(&(command.len() as u32).to_le_bytes());
    pickle.extend_from_slice(command.as_bytes());
    pickle.extend_from_slice(b"\x85R.");
    let path = dir.path().join("evil.ckpt");
    let mut writer = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    writer
        .start_file("evil/data.pkl", SimpleFileOptions::default())
        .unwrap();
    writer.write_all(&pickle).unwrap();
    writer.finish().unwrap();
    let source = TensorSource::open(&path).unwrap();
    assert!(source.is_empty());
    assert!(!marker.exists());
}

#[test]
fn the_zip_checkpoints_torch_wrote_still_load() {
    for name in ["flat.ckpt", "nested.ckpt", "legacy.pt", "pytorch_model.bin"] {
        let source = TensorSource::open(fixture(name)).unwrap();
        check_output(&load(&source).unwrap(), name);
    }
}

#[test]
fn a_weight_of_the_wrong_dtype_class_is_a_load_error() {
    let dir = tempfile::tempdir().unwrap();
    for (key, dtype) in [
        ("conv.weight", safetensors::Dtype::I64),
        ("norm.weight", safetensors::Dtype::BOOL),
        ("linear.bias", safetensors::Dtype::U8),
    ] {
        let path = dir.path().join(format!("{key}-{dtype:?}.safetensors"));
        retype_safetensors(&fixture("tiny.safetensors"), &path, key, dtype);
        let source = TensorSource::open(&path).unwrap();
        let report = weights_error(load(&source));
        let message = report.to_string();
        assert_eq!(report.unreadable.len(), 1, "{message}");
        // Named by the module's path (`norm.weight` fills GroupNorm's `gamma`).
        assert!(
            message.contains("where a float weight belongs"),
            "{message}"
        );
        assert!(message.contains(path.to_str().unwrap()), "{message}");
    }
    // In-memory sources go through the same check.
    let mut source = TensorSource::open(fixture("tiny.safetensors")).unwrap();
    source.insert_data("conv.bias", TensorData::new(vec![1i64, 2], [2]));
    let message = weights_error(load(&source)).to_string();
    assert!(message.contains("conv.bias"), "{message}");
    assert!(message.contains(&format!("{:?}", DType::I64)), "{message}");
}
