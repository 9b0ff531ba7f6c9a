//! Helpers for tests: the backend they run on, comparing tensors with reference outputs,
//! and damaged or fake files.

use burn::prelude::*;
use burn::tensor::DType;

/// The backend of every crate's CPU tests (burn-ndarray, f32): change it here to run them
/// all on another backend.
pub type TestBackend = burn_ndarray::NdArray<f32>;

/// The device of [`TestBackend`].
pub type TestDevice = burn_ndarray::NdArrayDevice;

/// The largest absolute elementwise difference between two tensors of the same shape.
///
/// # Panics
/// When the shapes differ (a test failure).
pub fn max_abs_diff<B: Backend, const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    (a.cast(DType::F32) - b.cast(DType::F32))
        .abs()
        .max()
        .into_scalar()
        .elem::<f32>()
}

/// Asserts that `actual` is within `tol` (max-abs) of `expected`, printing the difference.
///
/// # Panics
/// When the shapes differ or the difference exceeds `tol`, or is NaN.
pub fn assert_close<B: Backend, const D: usize>(
    what: &str,
    actual: Tensor<B, D>,
    expected: Tensor<B, D>,
    tol: f32,
) {
    let diff = max_abs_diff(actual, expected);
    eprintln!("{what}: max abs difference {diff:e} (tolerance {tol:e})");
    assert!(
        diff <= tol,
        "{what}: max abs difference {diff:e} exceeds {tol:e}"
    );
}

/// One fixture file of inputs and reference outputs (written by the fixture tools), read on
/// the [`TestDevice`].
#[derive(Debug)]
pub struct Fixture {
    /// The file's tensors.
    pub source: crate::weights::TensorSource,
    /// The device tensors are read to.
    pub device: TestDevice,
}

impl Fixture {
    /// Opens the fixture file at `path`.
    ///
    /// # Panics
    /// When the file cannot be opened (a test failure).
    pub fn open(path: impl AsRef<std::path::Path>) -> Self {
        Self {
            source: crate::weights::TensorSource::open(path.as_ref()).expect("a fixture file"),
            device: Default::default(),
        }
    }

    /// The tensor `key` as f32.
    ///
    /// # Panics
    /// When the file has no such tensor or its rank is not `D` (a test failure).
    pub fn t<const D: usize>(&self, key: &str) -> Tensor<TestBackend, D> {
        self.source.tensor(key, &self.device, None).unwrap()
    }

    /// The rows of the integer tensor `key` (`[rows, cols]`), as token ids.
    ///
    /// # Panics
    /// When the file has no such tensor or it is not 2-D (a test failure).
    pub fn ids(&self, key: &str) -> Vec<Vec<u32>> {
        let data = self.source.data(key).unwrap().convert::<i64>();
        let cols = data.shape[1];
        let values: Vec<i64> = data.to_vec().unwrap();
        values
            .chunks(cols)
            .map(|row| row.iter().map(|&v| v as u32).collect())
            .collect()
    }
}

/// Builds a component from `config` and `source` with the default options on the
/// [`TestDevice`].
///
/// # Errors
/// As [`Pretrained::from_source`](crate::weights::Pretrained::from_source).
pub fn load_default<M: crate::weights::Pretrained<TestBackend>>(
    config: &M::Config,
    source: &crate::weights::TensorSource,
) -> crate::Result<M> {
    let options = crate::weights::LoadOptions::default();
    M::from_source(config, source, &options, &Default::default())
}

/// The message of the [`Error::Weights`](crate::Error::Weights) that loading a component from
/// `config` and `source` ([`load_default`]) gives.
///
/// # Panics
/// When loading succeeds or fails with another error (a test failure).
pub fn weights_error<M: crate::weights::Pretrained<TestBackend>>(
    config: &M::Config,
    source: &crate::weights::TensorSource,
) -> String {
    let err = load_default::<M>(config, source).expect_err("loading fails");
    assert!(matches!(err, crate::Error::Weights(_)), "{err}");
    err.to_string()
}

/// The config and weights (`diffusion_pytorch_model.safetensors`) of a diffusers component
/// folder.
///
/// # Panics
/// When either cannot be read (a test failure).
pub fn folder_source<C: crate::weights::ComponentConfig>(
    dir: &std::path::Path,
) -> (C, crate::weights::TensorSource) {
    let config = C::read(&dir.join("config.json")).expect("a readable config");
    let source =
        crate::weights::TensorSource::open(dir.join("diffusion_pytorch_model.safetensors"))
            .expect("readable weights");
    (config, source)
}

/// Rewrites the zip archive `from` (a `torch.save` checkpoint) into `to`, entry by entry:
/// `edit` receives each entry's name and bytes and returns the new bytes with the compression
/// to store them with, or `None` to leave the entry out. Tests make damaged checkpoints with it.
///
/// # Panics
/// When a file cannot be read or written (a test failure).
pub fn rezip(
    from: &std::path::Path,
    to: &std::path::Path,
    mut edit: impl FnMut(&str, Vec<u8>) -> Option<(Vec<u8>, zip::CompressionMethod)>,
) {
    use std::io::{Read, Write};
    let mut archive = zip::ZipArchive::new(std::fs::File::open(from).expect("readable zip"))
        .expect("a zip archive");
    let mut writer = zip::ZipWriter::new(std::fs::File::create(to).expect("writable output"));
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).expect("a readable entry");
        let name = entry.name().to_string();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).expect("a readable entry");
        if let Some((bytes, method)) = edit(&name, bytes) {
            let options = zip::write::SimpleFileOptions::default().compression_method(method);
            writer
                .start_file(name, options)
                .expect("an entry is started");
            writer.write_all(&bytes).expect("an entry is written");
        }
    }
    writer.finish().expect("the archive is finished");
}

/// A PNG file of a few dozen bytes whose header claims `side`×`side` 8-bit RGB pixels and whose
/// pixel data is missing: decoding it would allocate `3·side²` bytes, so readers must refuse
/// it from its header.
pub fn png_claiming(side: u32) -> Vec<u8> {
    let mut header = b"IHDR".to_vec();
    header.extend_from_slice(&side.to_be_bytes());
    header.extend_from_slice(&side.to_be_bytes());
    header.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\x0d".to_vec();
    png.extend_from_slice(&header);
    png.extend_from_slice(&crc32fast::hash(&header).to_be_bytes());
    // An empty first data chunk: the header is complete, the pixels are missing.
    png.extend_from_slice(b"\0\0\0\0IDAT");
    png.extend_from_slice(&crc32fast::hash(b"IDAT").to_be_bytes());
    png
}

/// The names of the entries of the folder `dir`, sorted (to check that no temporary file is
/// left behind).
///
/// # Panics
/// When the folder cannot be read (a test failure).
pub fn file_names(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("a readable folder")
        .map(|e| {
            let entry = e.expect("a readable entry");
            entry.file_name().to_string_lossy().into_owned()
        })
        .collect();
    names.sort();
    names
}

/// Rewrites the safetensors file `from` into `to` with the tensor `key` stored as `dtype`
/// (same shape, every byte 1): a weight file holding a tensor of the wrong dtype.
///
/// # Panics
/// When a file cannot be read or written (a test failure).
pub fn retype_safetensors(
    from: &std::path::Path,
    to: &std::path::Path,
    key: &str,
    dtype: safetensors::Dtype,
) {
    let original = std::fs::read(from).expect("a readable file");
    let tensors = safetensors::SafeTensors::deserialize(&original).expect("a safetensors file");
    let owned: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = tensors
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let shape = view.shape().to_vec();
            if name == key {
                let numel: usize = shape.iter().product();
                let bytes = vec![1u8; numel * dtype.bitsize() / 8];
                (name, dtype, shape, bytes)
            } else {
                (name, view.dtype(), shape, view.data().to_vec())
            }
        })
        .collect();
    let views = owned.iter().map(|(name, dtype, shape, data)| {
        let view = safetensors::tensor::TensorView::new(*dtype, shape.clone(), data)
            .expect("the shape matches the data");
        (name.clone(), view)
    });
    safetensors::serialize_to_file(views, None, to).expect("the file is written");
}

/// Writes `contents` to `target` and makes `link` a symbolic link to it: an output path that
/// writers must replace, not write through.
///
/// # Panics
/// When a file cannot be written (a test failure).
#[cfg(unix)]
pub fn symlink_to(target: &std::path::Path, contents: &[u8], link: &std::path::Path) {
    std::fs::write(target, contents).expect("the target is written");
    std::os::unix::fs::symlink(target, link).expect("the link is made");
}

/// Asserts that `link` (a symbolic link to `target`, made by [`symlink_to`] with `contents`)
/// was replaced by a file and that `target` still holds `contents`.
///
/// # Panics
/// When it was not (a test failure).
pub fn assert_link_replaced(link: &std::path::Path, target: &std::path::Path, contents: &[u8]) {
    assert_eq!(std::fs::read(target).expect("a readable target"), contents);
    let metadata = std::fs::symlink_metadata(link).expect("the output exists");
    assert!(!metadata.is_symlink(), "{} is still a link", link.display());
}
