//! Strict reading of PyTorch checkpoints (`torch.save`: `.ckpt`, `.pt`, `.pth`, `.bin`).
//!
//! Two layouts are read: the zip archive that `torch.save` has written since PyTorch 1.6
//! (`archive/data.pkl` plus one stored entry per storage, `archive/data/<key>`) and the older
//! sequential layout (five pickles followed by the raw storages). The pickles are interpreted by
//! the restricted reader of [`super::pickle`], which runs no code.
//!
//! Nothing is taken on trust. Before any tensor is read, every storage a tensor refers to must
//! exist, hold exactly the element count its descriptor announces (× the dtype's size), lie
//! inside the file, and be stored uncompressed (as `torch.save` writes it, so an entry can never
//! inflate); every tensor view must fit inside its storage. When a tensor is read, its storage's
//! CRC-32 is checked against the archive's. A truncated, partially downloaded or tampered file
//! is therefore an error that names the file and the tensor, never zero-filled weights.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use burn::module::ParamId;
use burn::tensor::{BoolStore, DType, TensorData};
use burn_store::{TensorSnapshot, TensorSnapshotError};

use super::pickle::{self, Id, Pickle, TensorView, Value};
use crate::{Error, Result};

/// The largest `data.pkl` accepted (the pickle of an SD checkpoint is well under 1 MiB).
pub const MAX_PICKLE_BYTES: u64 = 256 * 1024 * 1024;

/// How deeply nested dictionaries are searched for tensors.
const MAX_DEPTH: usize = 32;

/// The legacy layout's first pickle: `torch.serialization.MAGIC_NUMBER`.
const LEGACY_MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

/// Where one storage's bytes lie in the file.
#[derive(Debug, Clone)]
struct Storage {
    /// Byte offset of the first element in the file.
    start: u64,
    /// Number of elements.
    numel: usize,
    dtype: DType,
    /// The zip entry's CRC-32 (legacy files have none).
    crc32: Option<u32>,
    /// The zip entry's or the storage record's name, for messages.
    name: String,
}

/// The string values of a PyTorch checkpoint's top-level dictionary by key (such as the `name`
/// of an AUTOMATIC1111 embedding); other values are skipped. The file is checked as
/// [`read_checkpoint`] checks it.
pub(crate) fn read_strings(path: &Path) -> Result<BTreeMap<String, String>> {
    let (pickle, top, _, _) = parse(path)?;
    let mut strings = BTreeMap::new();
    if let Value::Dict(items) = pickle.get(top) {
        for &(k, v) in items {
            if let (Some(k), Some(v)) = (pickle.str(k), pickle.str(v)) {
                strings.insert(k.to_string(), v.to_string());
            }
        }
    }
    Ok(strings)
}

/// Parses a checkpoint in either layout.
fn parse(path: &Path) -> Result<Parsed> {
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut head = [0u8; 4];
    let n = read_up_to(&mut file, &mut head).map_err(|e| Error::io(path, e))?;
    file.seek(SeekFrom::Start(0))
        .map_err(|e| Error::io(path, e))?;
    if head[..n] == *b"PK\x03\x04" {
        read_zip(path, file, file_len)
    } else if n >= 1 && head[0] == 0x80 {
        read_legacy(path, file, file_len)
    } else {
        Err(Error::format(
            path,
            "not a PyTorch checkpoint (neither a torch.save zip archive nor a pickle)",
        ))
    }
}

/// Reads the tensors of a PyTorch checkpoint, checking every byte count up front.
///
/// Nested dictionaries are flattened with `.` (`{"state_dict": {"a": t}}` → `state_dict.a`);
/// values that are not tensors are ignored.
pub(crate) fn read_checkpoint(path: &Path) -> Result<BTreeMap<String, TensorSnapshot>> {
    let (pickle, _, tensors, storages) = parse(path)?;
    let path = Rc::new(path.to_path_buf());
    let mut out = BTreeMap::new();
    for (key, view) in tensors {
        let snapshot = snapshot(&path, &pickle, &storages, &key, view)?;
        out.insert(key, snapshot);
    }
    Ok(out)
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

type Parsed = (
    Pickle,
    Id,
    BTreeMap<String, TensorView>,
    HashMap<String, Storage>,
);

/// The tensors reachable from the top-level value, by their flattened names.
fn tensors_of(pickle: &Pickle, top: Id) -> BTreeMap<String, TensorView> {
    let mut tensors = BTreeMap::new();
    collect(
        pickle,
        top,
        String::new(),
        0,
        &mut HashSet::new(),
        &mut tensors,
    );
    tensors
}

fn read_zip(path: &Path, file: File, file_len: u64) -> Result<Parsed> {
    let zip_error =
        |e: zip::result::ZipError| Error::format(path, format!("unreadable zip archive: {e}"));
    let mut archive = zip::ZipArchive::new(BufReader::new(file)).map_err(|e| {
        Error::format(
            path,
            format!("unreadable zip archive (truncated or partially downloaded?): {e}"),
        )
    })?;
    let mut pickle_entry = None;
    let mut entries = HashMap::new();
    for i in 0..archive.len() {
        let entry = archive.by_index_raw(i).map_err(zip_error)?;
        let name = entry.name().to_string();
        if name.ends_with("/data.pkl") || name == "data.pkl" {
            if pickle_entry.is_some() {
                return Err(Error::format(
                    path,
                    "the archive holds two data.pkl entries",
                ));
            }
            pickle_entry = Some((i, name.clone(), entry.size()));
        }
        let start = entry
            .data_start()
            .ok_or_else(|| Error::format(path, format!("zip entry {name}: no local header")))?;
        let stored = entry.compression() == zip::CompressionMethod::Stored;
        let info = (
            start,
            entry.compressed_size(),
            entry.size(),
            entry.crc32(),
            stored,
        );
        entries.insert(name, info);
    }
    let (index, pickle_name, pickle_size) = pickle_entry.ok_or_else(|| {
        Error::format(path, "zip archive without data.pkl: not a torch.save file")
    })?;
    let prefix = pickle_name.trim_end_matches("data.pkl").to_string();
    if pickle_size > MAX_PICKLE_BYTES {
        return Err(Error::format(
            path,
            format!("{pickle_name} announces {pickle_size} bytes (limit {MAX_PICKLE_BYTES})"),
        ));
    }
    if entries.contains_key(&format!("{prefix}byteorder")) {
        let mut order = Vec::new();
        archive
            .by_name(&format!("{prefix}byteorder"))
            .map_err(zip_error)?
            .take(16)
            .read_to_end(&mut order)
            .map_err(|e| Error::format(path, format!("{prefix}byteorder: {e}")))?;
        if order != b"little" {
            return Err(Error::Unsupported(format!(
                "{}: byte order `{}` (only little-endian checkpoints are read)",
                path.display(),
                String::from_utf8_lossy(&order)
            )));
        }
    }
    let mut bytes = Vec::new();
    archive
        .by_index(index)
        .map_err(zip_error)?
        .take(MAX_PICKLE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::format(path, format!("{pickle_name}: {e}")))?;
    if bytes.len() as u64 != pickle_size {
        return Err(Error::format(
            path,
            format!(
                "{pickle_name}: {} bytes read, {pickle_size} announced",
                bytes.len()
            ),
        ));
    }
    let (pickle, top) = pickle::read(&mut bytes.as_slice())
        .map_err(|e| Error::format(path, format!("{pickle_name}: {e}")))?;

    let tensors = tensors_of(&pickle, top);
    // Storage key → the first tensor that uses it, to name in messages.
    let mut used: HashMap<String, &str> = HashMap::new();
    for (tensor, view) in &tensors {
        if let Value::Persistent(pid) = pickle.get(view.storage)
            && let Some((key, _, _)) = storage_ref(&pickle, *pid)
        {
            used.entry(key).or_insert(tensor);
        }
    }
    let mut storages = HashMap::new();
    for (key, storage_type, numel) in storage_refs(&pickle, path)? {
        let Some(tensor) = used.get(&key) else {
            continue;
        };
        let name = format!("tensor `{tensor}`: storage {prefix}data/{key}");
        let Some(&(start, csize, size, crc, stored)) = entries.get(&format!("{prefix}data/{key}"))
        else {
            return Err(Error::format(
                path,
                format!("{name} is missing from the archive (incomplete file?)"),
            ));
        };
        let dtype = storage_dtype(&storage_type)
            .ok_or_else(|| Error::format(path, format!("{name}: unknown type `{storage_type}`")))?;
        if !stored {
            return Err(Error::format(
                path,
                format!("{name} is compressed; torch.save stores storages uncompressed"),
            ));
        }
        let expected = byte_len(numel, dtype)
            .ok_or_else(|| Error::format(path, format!("{name}: size overflows")))?;
        if size != csize || size != expected {
            return Err(Error::format(
                path,
                format!(
                    "{name}: the zip entry holds {size} bytes ({csize} stored), \
                     {numel} × {} = {expected} expected",
                    dtype.size()
                ),
            ));
        }
        if start.checked_add(size).is_none_or(|end| end > file_len) {
            return Err(Error::format(
                path,
                format!("{name} ends past the end of the file ({file_len} bytes): truncated?"),
            ));
        }
        let storage = Storage {
            start,
            numel,
            dtype,
            crc32: Some(crc),
            name,
        };
        storages.insert(key, storage);
    }
    Ok((pickle, top, tensors, storages))
}

/// Counts the bytes consumed from a reader, to locate the legacy layout's storages.
struct Counting<R> {
    inner: R,
    read: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Counting<R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        self.inner.fill_buf()
    }
    fn consume(&mut self, amt: usize) {
        self.read += amt as u64;
        self.inner.consume(amt);
    }
}

fn read_legacy(path: &Path, file: File, file_len: u64) -> Result<Parsed> {
    let mut input = Counting {
        inner: BufReader::new(file),
        read: 0,
    };
    let mut next = |what: &str| {
        pickle::read(&mut input)
            .map_err(|e| Error::format(path, format!("legacy checkpoint, {what}: {e}")))
    };
    let (magic, id) = next("magic number")?;
    if !matches!(magic.get(id), Value::BigInt(b) if *b == LEGACY_MAGIC) {
        return Err(Error::format(
            path,
            "a pickle, but not a torch.save checkpoint (wrong magic number)",
        ));
    }
    let (version, id) = next("protocol version")?;
    if version.int(id) != Some(1001) {
        return Err(Error::Unsupported(format!(
            "{}: legacy checkpoint protocol version {:?}",
            path.display(),
            version.get(id)
        )));
    }
    let (info, id) = next("system info")?;
    if let Value::Dict(items) = info.get(id) {
        for &(k, v) in items {
            if info.str(k) == Some("little_endian") && info.int(v) == Some(0) {
                return Err(Error::Unsupported(format!(
                    "{}: big-endian checkpoint",
                    path.display()
                )));
            }
        }
    }
    let (pickle, top) = next("object")?;
    let (keys, id) = next("storage keys")?;
    let order: Vec<String> = keys
        .items(id)
        .and_then(|items| {
            items
                .iter()
                .map(|&k| keys.str(k).map(String::from))
                .collect()
        })
        .ok_or_else(|| Error::format(path, "legacy checkpoint: the storage key list is invalid"))?;
    let refs: HashMap<String, (String, usize)> = storage_refs(&pickle, path)?
        .into_iter()
        .map(|(key, ty, numel)| (key, (ty, numel)))
        .collect();
    let mut position = input.read;
    let mut file = input.inner.into_inner();
    let mut storages = HashMap::new();
    for key in order {
        let name = format!("storage {key}");
        let (ty, numel) = refs.get(&key).ok_or_else(|| {
            Error::format(path, format!("{name} is listed but no tensor refers to it"))
        })?;
        let dtype = storage_dtype(ty)
            .ok_or_else(|| Error::format(path, format!("{name}: unknown type `{ty}`")))?;
        let mut count = [0u8; 8];
        file.seek(SeekFrom::Start(position))
            .and_then(|_| file.read_exact(&mut count))
            .map_err(|_| {
                Error::format(
                    path,
                    format!("{name}: the file ends before it (truncated?)"),
                )
            })?;
        let count = u64::from_le_bytes(count);
        if count != *numel as u64 {
            return Err(Error::format(
                path,
                format!("{name}: {count} elements recorded, {numel} announced"),
            ));
        }
        let bytes = byte_len(*numel, dtype)
            .ok_or_else(|| Error::format(path, format!("{name}: size overflows")))?;
        let start = position + 8;
        position = start
            .checked_add(bytes)
            .filter(|&end| end <= file_len)
            .ok_or_else(|| {
                Error::format(
                    path,
                    format!("{name} ends past the end of the file ({file_len} bytes): truncated?"),
                )
            })?;
        let storage = Storage {
            start,
            numel: *numel,
            dtype,
            crc32: None,
            name,
        };
        storages.insert(key, storage);
    }
    if let Some(key) = refs.keys().find(|k| !storages.contains_key(*k)) {
        return Err(Error::format(
            path,
            format!("storage {key} is referred to but absent from the file"),
        ));
    }
    if position != file_len {
        return Err(Error::format(
            path,
            format!(
                "{} unexpected bytes after the last storage",
                file_len - position
            ),
        ));
    }
    let tensors = tensors_of(&pickle, top);
    Ok((pickle, top, tensors, storages))
}

/// Every persistent storage descriptor `('storage', type, key, location, numel, …)`, checked
/// for consistency: one key always has one type and one size.
fn storage_refs(pickle: &Pickle, path: &Path) -> Result<Vec<(String, String, usize)>> {
    let mut refs: BTreeMap<String, (String, usize)> = BTreeMap::new();
    for id in 0..pickle.len() {
        let Value::Persistent(pid) = pickle.get(id) else {
            continue;
        };
        let (key, ty, numel) = storage_ref(pickle, *pid).ok_or_else(|| {
            Error::format(
                path,
                format!("invalid storage descriptor {:?}", pickle.get(*pid)),
            )
        })?;
        match refs.get(&key) {
            Some(existing) if *existing != (ty.clone(), numel) => {
                return Err(Error::format(
                    path,
                    format!("storage {key} is described twice, differently"),
                ));
            }
            _ => {
                refs.insert(key, (ty, numel));
            }
        }
    }
    Ok(refs
        .into_iter()
        .map(|(key, (ty, numel))| (key, ty, numel))
        .collect())
}

fn storage_ref(pickle: &Pickle, pid: Id) -> Option<(String, String, usize)> {
    let items = pickle.items(pid)?;
    if items.len() < 5 || pickle.str(items[0]) != Some("storage") {
        return None;
    }
    // The legacy layout's storage views `(view_key, offset, size)` are not read.
    if items
        .get(5)
        .is_some_and(|&v| !matches!(pickle.get(v), Value::None))
    {
        return None;
    }
    let ty = match pickle.get(items[1]) {
        Value::Global { name, .. } => name.clone(),
        Value::Str(s) => s.clone(),
        _ => return None,
    };
    let key = match pickle.get(items[2]) {
        Value::Str(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        _ => return None,
    };
    let numel = usize::try_from(pickle.int(items[4])?).ok()?;
    Some((key, ty, numel))
}

fn storage_dtype(storage_type: &str) -> Option<DType> {
    Some(match storage_type {
        "FloatStorage" => DType::F32,
        "DoubleStorage" => DType::F64,
        "HalfStorage" => DType::F16,
        "BFloat16Storage" => DType::BF16,
        "LongStorage" => DType::I64,
        "IntStorage" => DType::I32,
        "ShortStorage" => DType::I16,
        "CharStorage" => DType::I8,
        "ByteStorage" => DType::U8,
        "BoolStorage" => DType::Bool(BoolStore::Native),
        _ => return None,
    })
}

fn byte_len(numel: usize, dtype: DType) -> Option<u64> {
    (numel as u64).checked_mul(dtype.size() as u64)
}

/// Walks nested dictionaries, naming each tensor by its path of keys.
fn collect(
    pickle: &Pickle,
    id: Id,
    prefix: String,
    depth: usize,
    seen: &mut HashSet<Id>,
    out: &mut BTreeMap<String, TensorView>,
) {
    match pickle.get(id) {
        Value::Tensor(view) if !prefix.is_empty() => {
            out.entry(prefix).or_insert_with(|| view.clone());
        }
        Value::Dict(items) if depth < MAX_DEPTH && seen.insert(id) => {
            for &(k, v) in items {
                let key = match pickle.get(k) {
                    Value::Str(s) => s.clone(),
                    Value::Int(i) => i.to_string(),
                    _ => continue,
                };
                let name = if prefix.is_empty() {
                    key
                } else {
                    format!("{prefix}.{key}")
                };
                collect(pickle, v, name, depth + 1, seen, out);
            }
        }
        _ => {}
    }
}

/// The elements of `view` as storage indices, or `None` when the view leaves the storage.
fn view_extent(view: &TensorView) -> Option<usize> {
    let mut last = view.offset;
    for (&size, &stride) in view.shape.iter().zip(&view.stride) {
        if size == 0 {
            return Some(0);
        }
        last = last.checked_add((size - 1).checked_mul(stride)?)?;
    }
    last.checked_add(1)
}

fn snapshot(
    path: &Rc<PathBuf>,
    pickle: &Pickle,
    storages: &HashMap<String, Storage>,
    key: &str,
    view: TensorView,
) -> Result<TensorSnapshot> {
    let bad = |reason: String| Error::format(path.as_path(), format!("tensor `{key}`: {reason}"));
    let Value::Persistent(pid) = pickle.get(view.storage) else {
        return Err(bad("no storage".into()));
    };
    let (storage_key, _, _) =
        storage_ref(pickle, *pid).ok_or_else(|| bad("invalid storage descriptor".into()))?;
    let storage = storages
        .get(&storage_key)
        .ok_or_else(|| bad(format!("storage {storage_key} is absent")))?
        .clone();
    let numel = view
        .shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| bad(format!("shape {:?} overflows", view.shape)))?;
    let extent =
        view_extent(&view).ok_or_else(|| bad(format!("view {:?} overflows", view.shape)))?;
    if numel > storage.numel {
        // Only a stride-0 (expanded) view can: it would inflate a tiny file without bound.
        return Err(bad(format!(
            "shape {:?} has more elements than {} holds ({})",
            view.shape, storage.name, storage.numel
        )));
    }
    if extent > storage.numel {
        return Err(bad(format!(
            "shape {:?} at offset {} needs {extent} elements, {} holds {}",
            view.shape, view.offset, storage.name, storage.numel
        )));
    }
    let dtype = storage.dtype;
    let shape = view.shape.clone();
    let file = path.clone();
    let read = Rc::new(move || {
        read_view(&file, &storage, &view, numel).map_err(TensorSnapshotError::DataError)
    });
    let path_stack = key.split('.').map(str::to_string).collect();
    Ok(TensorSnapshot::from_closure(
        read,
        dtype,
        shape.into(),
        path_stack,
        Vec::new(),
        ParamId::new(),
    ))
}

fn read_view(
    path: &Path,
    storage: &Storage,
    view: &TensorView,
    numel: usize,
) -> std::result::Result<TensorData, String> {
    let size = storage.dtype.size();
    let len = storage.numel * size;
    let mut bytes = vec![0u8; len];
    let mut file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    file.seek(SeekFrom::Start(storage.start))
        .and_then(|_| file.read_exact(&mut bytes))
        .map_err(|e| format!("{}: {}: {e} (truncated?)", path.display(), storage.name))?;
    if let Some(expected) = storage.crc32 {
        let found = crc32fast::hash(&bytes);
        if found != expected {
            return Err(format!(
                "{}: {}: CRC-32 {found:08x}, the archive records {expected:08x} (corrupt file)",
                path.display(),
                storage.name
            ));
        }
    }
    let contiguous = is_contiguous(&view.shape, &view.stride);
    let data = if contiguous && view.offset == 0 && numel == storage.numel {
        bytes
    } else if contiguous {
        bytes[view.offset * size..(view.offset + numel) * size].to_vec()
    } else {
        gather(&bytes, size, view, numel)
    };
    Ok(TensorData::from_bytes_vec(
        data,
        view.shape.clone(),
        storage.dtype,
    ))
}

fn is_contiguous(shape: &[usize], stride: &[usize]) -> bool {
    let mut expected = 1;
    for (&size, &s) in shape.iter().zip(stride).rev() {
        if size != 1 && s != expected {
            return false;
        }
        expected *= size;
    }
    true
}

/// Copies a strided view into row-major order (extents were checked against the storage).
fn gather(bytes: &[u8], size: usize, view: &TensorView, numel: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(numel * size);
    let rank = view.shape.len();
    let mut index = vec![0usize; rank];
    for _ in 0..numel {
        let element = view.offset
            + index
                .iter()
                .zip(&view.stride)
                .map(|(i, s)| i * s)
                .sum::<usize>();
        out.extend_from_slice(&bytes[element * size..(element + 1) * size]);
        for d in (0..rank).rev() {
            index[d] += 1;
            if index[d] < view.shape[d] {
                break;
            }
            index[d] = 0;
        }
    }
    out
}
