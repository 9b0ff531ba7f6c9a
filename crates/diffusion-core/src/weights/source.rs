//! [`TensorSource`]: the named tensors of one or more weight files, read lazily.
//!
//! A source is opened from a safetensors file, a sharded safetensors index, or a PyTorch pickle
//! (`.ckpt`, `.pt`, `.pth`, `.bin`); it can then be narrowed to a key prefix (the components of an
//! original single-file checkpoint) and have its keys renamed by a crate's key table before it is
//! loaded into a module with [`load_module`](super::load_module). Tensor data is read only when
//! a parameter takes it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use burn::module::ParamId;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData};
use burn_store::{ModuleStore, SafetensorsStore, TensorSnapshot, TensorSnapshotError};

use crate::{Error, Result};

/// Lazily computed tensor data, as burn-store snapshots carry it.
pub type DataFn = Rc<dyn Fn() -> std::result::Result<TensorData, TensorSnapshotError>>;

#[derive(Clone)]
struct Entry {
    snapshot: TensorSnapshot,
    file: Rc<PathBuf>,
}

/// Named tensors from one or more weight files, read lazily.
///
/// Keys are the tensor names of the file (for diffusers files: the diffusers/transformers
/// attribute paths such as `down_blocks.0.resnets.1.conv1.weight`). Cloning is cheap: data is
/// shared, not copied.
#[derive(Clone, Default)]
pub struct TensorSource {
    entries: BTreeMap<String, Entry>,
    description: String,
}

impl std::fmt::Debug for TensorSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TensorSource")
            .field("description", &self.description)
            .field("tensors", &self.entries.len())
            .finish()
    }
}

/// Weight file formats that [`TensorSource::open`] recognises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightFormat {
    /// A `.safetensors` file.
    Safetensors,
    /// A `*.safetensors.index.json` file listing shards.
    SafetensorsIndex,
    /// A PyTorch pickle (`.ckpt`, `.pt`, `.pth`, `.bin`), zip or legacy.
    Pickle,
}

impl WeightFormat {
    /// Guesses the format from a file name.
    pub fn from_path(path: &Path) -> Option<Self> {
        let name = path.file_name()?.to_str()?.to_ascii_lowercase();
        if name.ends_with(".safetensors") {
            Some(Self::Safetensors)
        } else if name.ends_with(".json") && name.contains(".safetensors.index") {
            Some(Self::SafetensorsIndex)
        } else if [".ckpt", ".pt", ".pth", ".bin"]
            .iter()
            .any(|ext| name.ends_with(ext))
        {
            Some(Self::Pickle)
        } else {
            None
        }
    }
}

impl TensorSource {
    /// Opens a weight file, choosing the reader from its extension.
    ///
    /// # Errors
    /// [`Error::Io`] when the file is absent, [`Error::Format`] when it cannot be parsed or the
    /// extension is unknown.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        match WeightFormat::from_path(path) {
            Some(WeightFormat::Safetensors) => Self::from_safetensors(path),
            Some(WeightFormat::SafetensorsIndex) => Self::from_safetensors_index(path),
            Some(WeightFormat::Pickle) => Self::from_pickle(path),
            None => Err(Error::format(
                path,
                "unknown weight file extension (expected .safetensors, .safetensors.index.json, .ckpt, .pt, .pth or .bin)",
            )),
        }
    }

    /// Opens a safetensors file (memory-mapped; tensors are read on demand).
    pub fn from_safetensors(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        check_file(path)?;
        let mut store = SafetensorsStore::from_file(path).map_indices_contiguous(false);
        let snapshots = store
            .get_all_snapshots()
            .map_err(|e| Error::format(path, format!("not a valid safetensors file: {e}")))?
            .clone();
        Ok(Self::from_snapshots(snapshots, path))
    }

    /// Opens a PyTorch pickle checkpoint (`.ckpt`, `.pt`, `.pth`, `.bin`).
    ///
    /// The pickle is interpreted without running any code, and every storage is checked
    /// against the size its tensors need before anything is read (see `docs/security.md`).
    /// Non-tensor values are ignored. When every tensor sits under a top-level `state_dict`
    /// (as in Lightning/LDM checkpoints, sometimes nested twice), that prefix is removed.
    pub fn from_pickle(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        check_file(path)?;
        let snapshots = super::torch::read_checkpoint(path)?;
        let mut source = Self::from_snapshots(snapshots, path);
        while !source.is_empty() && source.keys().all(|k| k.starts_with("state_dict.")) {
            source = source.strip_prefix("state_dict.");
        }
        Ok(source)
    }

    /// Opens a sharded safetensors checkpoint through its `*.safetensors.index.json`.
    ///
    /// Every shard named in `weight_map` is opened; a tensor listed in the index but absent from
    /// its shard, or a shard that is missing, is an error.
    pub fn from_safetensors_index(path: impl AsRef<Path>) -> Result<Self> {
        #[derive(serde::Deserialize)]
        struct Index {
            weight_map: BTreeMap<String, String>,
        }
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let index: Index = serde_json::from_str(&text)
            .map_err(|e| Error::format(path, format!("invalid shard index: {e}")))?;
        let dir = path.parent().unwrap_or_else(|| Path::new("."));
        let mut shards: Vec<&String> = index.weight_map.values().collect();
        shards.sort();
        shards.dedup();
        let mut merged = TensorSource {
            entries: BTreeMap::new(),
            description: path.display().to_string(),
        };
        for shard in shards {
            let part = Self::from_safetensors(dir.join(shard))?;
            merged.entries.extend(part.entries);
        }
        for (key, shard) in &index.weight_map {
            if !merged.entries.contains_key(key) {
                return Err(Error::format(
                    path,
                    format!("tensor `{key}` is listed in the index but absent from shard {shard}"),
                ));
            }
        }
        Ok(merged)
    }

    /// Builds a source from in-memory tensors (tests, derived weights).
    pub fn from_tensors(
        description: impl Into<String>,
        tensors: impl IntoIterator<Item = (String, TensorData)>,
    ) -> Self {
        let mut source = TensorSource {
            entries: BTreeMap::new(),
            description: description.into(),
        };
        for (key, data) in tensors {
            source.insert_data(key, data);
        }
        source
    }

    fn from_snapshots(snapshots: BTreeMap<String, TensorSnapshot>, path: &Path) -> Self {
        let file = Rc::new(path.to_path_buf());
        let entries = snapshots
            .into_iter()
            .map(|(key, snapshot)| {
                let entry = Entry {
                    snapshot,
                    file: file.clone(),
                };
                (key, entry)
            })
            .collect();
        TensorSource {
            entries,
            description: path.display().to_string(),
        }
    }

    /// A human-readable name of where the tensors came from (a path, or a path and prefix).
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the source holds no tensor.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The tensor names, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// True when a tensor of that name exists.
    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    /// The shape of a tensor, if present.
    pub fn shape(&self, key: &str) -> Option<&[usize]> {
        self.entries.get(key).map(|e| e.snapshot.shape.as_slice())
    }

    /// The dtype of a tensor as stored, if present.
    pub fn dtype(&self, key: &str) -> Option<DType> {
        self.entries.get(key).map(|e| e.snapshot.dtype)
    }

    /// The file a tensor comes from, if present.
    pub fn file_of(&self, key: &str) -> Option<&Path> {
        self.entries.get(key).map(|e| e.file.as_path())
    }

    /// Reads a tensor's data in its stored dtype.
    pub fn data(&self, key: &str) -> Result<TensorData> {
        let entry = self.entries.get(key).ok_or_else(|| {
            Error::format(
                PathBuf::from(&self.description),
                format!("no tensor named `{key}`"),
            )
        })?;
        let data = entry
            .snapshot
            .to_data()
            .map_err(|e| Error::format(entry.file.as_path(), format!("tensor `{key}`: {e}")))?;
        super::load::check_data(&entry.snapshot, &data).map_err(|reason| {
            Error::format(entry.file.as_path(), format!("tensor `{key}`: {reason}"))
        })?;
        Ok(data)
    }

    /// Reads a float tensor onto a device, cast to `dtype` (the device's default float dtype when
    /// `None`), checking its rank.
    pub fn tensor<B: Backend, const D: usize>(
        &self,
        key: &str,
        device: &B::Device,
        dtype: Option<DType>,
    ) -> Result<Tensor<B, D>> {
        let data = self.data(key)?;
        if !data.dtype.is_float() {
            return Err(Error::DType {
                origin: self.file_of(key).map(Path::to_path_buf),
                key: key.to_string(),
                expected: "a float dtype".into(),
                found: format!("{:?}", data.dtype),
            });
        }
        if data.shape.len() != D {
            return Err(Error::Shape {
                origin: self.file_of(key).map(Path::to_path_buf),
                key: key.to_string(),
                expected: format!("rank {D}"),
                found: data.shape.to_vec(),
            });
        }
        let dtype = dtype.unwrap_or_else(|| crate::dtype::default_float_dtype::<B>(device));
        Ok(Tensor::from_data(
            data.convert_dtype(dtype),
            (device, dtype),
        ))
    }

    /// Keeps the tensors whose name starts with `prefix` and removes the prefix from their names.
    pub fn strip_prefix(&self, prefix: &str) -> TensorSource {
        let entries = self
            .entries
            .iter()
            .filter_map(|(k, e)| k.strip_prefix(prefix).map(|k| (k.to_string(), e.clone())))
            .collect();
        TensorSource {
            entries,
            description: format!("{} [{}*]", self.description, prefix),
        }
    }

    /// True when at least one tensor name starts with `prefix`.
    pub fn has_prefix(&self, prefix: &str) -> bool {
        self.entries
            .range(prefix.to_string()..)
            .next()
            .is_some_and(|(k, _)| k.starts_with(prefix))
    }

    /// Renames every tensor with `rename`; a tensor for which it returns `None` is dropped.
    ///
    /// # Errors
    /// [`Error::Format`] when two tensors would receive the same name.
    pub fn rename(&self, mut rename: impl FnMut(&str) -> Option<String>) -> Result<TensorSource> {
        let mut entries = BTreeMap::new();
        for (key, entry) in &self.entries {
            let Some(new_key) = rename(key) else { continue };
            if entries.insert(new_key.clone(), entry.clone()).is_some() {
                return Err(Error::format(
                    PathBuf::from(&self.description),
                    format!(
                        "two tensors map to the same name `{new_key}` (one of them is `{key}`)"
                    ),
                ));
            }
        }
        Ok(TensorSource {
            entries,
            description: self.description.clone(),
        })
    }

    /// Adds the tensors of `other`; a name present in both is an error.
    pub fn merge(mut self, other: TensorSource) -> Result<TensorSource> {
        for (key, entry) in other.entries {
            if self.entries.contains_key(&key) {
                return Err(Error::format(
                    PathBuf::from(&self.description),
                    format!("tensor `{key}` is defined twice"),
                ));
            }
            self.entries.insert(key, entry);
        }
        Ok(self)
    }

    /// Removes a tensor, returning whether it was present.
    pub fn remove(&mut self, key: &str) -> bool {
        self.entries.remove(key).is_some()
    }

    /// Adds (or replaces) a tensor from in-memory data.
    pub fn insert_data(&mut self, key: impl Into<String>, data: TensorData) {
        let key = key.into();
        let dtype = data.dtype;
        let shape = data.shape.to_vec();
        let data = Rc::new(data);
        self.insert_lazy(key, dtype, shape, Rc::new(move || Ok((*data).clone())));
    }

    /// Adds (or replaces) a tensor computed on demand, e.g. one third of a fused `qkv` weight.
    /// The tensor inherits the source's description as its file.
    pub fn insert_lazy(
        &mut self,
        key: impl Into<String>,
        dtype: DType,
        shape: Vec<usize>,
        data: DataFn,
    ) {
        let key = key.into();
        let path_stack = key.split('.').map(str::to_string).collect();
        let snapshot = TensorSnapshot::from_closure(
            data,
            dtype,
            shape.into(),
            path_stack,
            Vec::new(),
            ParamId::new(),
        );
        let file = Rc::new(PathBuf::from(&self.description));
        self.entries.insert(key, Entry { snapshot, file });
    }

    /// The lazy reader of a tensor, to derive new tensors from it with
    /// [`insert_lazy`](Self::insert_lazy).
    pub fn data_fn(&self, key: &str) -> Option<DataFn> {
        self.entries.get(key).map(|e| e.snapshot.clone_data_fn())
    }

    /// Snapshots named by their keys, ready for `ModuleSnapshot::apply`.
    pub(crate) fn snapshots(&self) -> Vec<TensorSnapshot> {
        self.entries
            .iter()
            .map(|(key, entry)| {
                let mut snapshot = entry.snapshot.clone();
                snapshot.path_stack = Some(key.split('.').map(str::to_string).collect());
                snapshot
            })
            .collect()
    }
}

fn check_file(path: &Path) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(Error::format(path, "is not a file")),
        Err(e) => Err(Error::io(path, e)),
    }
}
