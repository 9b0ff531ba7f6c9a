//! Writing `torch.save({"model": state_dict})` files (the official `tpb_net.pt` layout) from
//! Rust: PyTorch's zip container with a protocol-2 pickle of float32 tensors.
//!
//! The archive holds `<name>/data.pkl`, one `<name>/data/<i>` record per tensor (raw
//! little-endian bytes, 64-byte aligned as PyTorch writes them), `<name>/byteorder` and
//! `<name>/version`. The pickle references only what `torch.load(..., weights_only=True)`
//! accepts: `collections.OrderedDict`, `torch._utils._rebuild_tensor_v2` and
//! `torch.FloatStorage`. Records are stored uncompressed.

use std::io::Write;
use std::path::Path;

use prompt_diffusion_core::{Error, Result};

pub use prompt_diffusion_core::weights::NamedTensor;

/// Writes `{top_level_key: OrderedDict(tensors)}` as PyTorch's `torch.save` does.
///
/// # Errors
/// [`Error::InvalidInput`] when a tensor's value count does not match its shape,
/// [`Error::Io`] when the file cannot be written.
pub fn save_state_dict(path: &Path, top_level_key: &str, tensors: &[NamedTensor]) -> Result<()> {
    for t in tensors {
        if t.shape.iter().product::<usize>() != t.values.len() {
            return Err(Error::invalid_input(
                "state dict",
                format!(
                    "`{}` has {} values for shape {:?}",
                    t.key,
                    t.values.len(),
                    t.shape
                ),
            ));
        }
    }
    let archive = path
        .file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or("archive");
    let mut zip = ZipWriter::default();
    zip.add(
        &format!("{archive}/data.pkl"),
        &pickle(top_level_key, tensors),
    );
    zip.add(&format!("{archive}/byteorder"), b"little");
    for (i, t) in tensors.iter().enumerate() {
        let bytes: Vec<u8> = t.values.iter().flat_map(|v| v.to_le_bytes()).collect();
        zip.add(&format!("{archive}/data/{i}"), &bytes);
    }
    zip.add(&format!("{archive}/version"), b"3\n");
    let bytes = zip.finish();
    std::fs::File::create(path)
        .and_then(|mut f| f.write_all(&bytes))
        .map_err(|e| Error::io(path, e))
}

/// The protocol-2 pickle of `{key: OrderedDict(name → tensor)}`.
fn pickle(top_level_key: &str, tensors: &[NamedTensor]) -> Vec<u8> {
    let mut p = Pickler(vec![0x80, 2]);
    p.op(b"}(");
    p.string(top_level_key);
    p.ordered_dict();
    p.op(b"(");
    for (i, t) in tensors.iter().enumerate() {
        p.string(&t.key);
        p.global("torch._utils", "_rebuild_tensor_v2");
        p.op(b"((");
        p.string("storage");
        p.global("torch", "FloatStorage");
        p.string(&i.to_string());
        p.string("cpu");
        p.int(t.values.len());
        p.op(b"tQ");
        p.int(0);
        p.op(b"(");
        t.shape.iter().for_each(|&d| p.int(d));
        p.op(b"t(");
        let mut stride = vec![1usize; t.shape.len()];
        for k in (0..t.shape.len().saturating_sub(1)).rev() {
            stride[k] = stride[k + 1] * t.shape[k + 1];
        }
        stride.iter().for_each(|&s| p.int(s));
        p.op(b"t\x89");
        p.ordered_dict();
        p.op(b"tR");
    }
    p.op(b"uu.");
    p.0
}

struct Pickler(Vec<u8>);

impl Pickler {
    fn op(&mut self, ops: &[u8]) {
        self.0.extend_from_slice(ops);
    }

    fn string(&mut self, s: &str) {
        self.0.push(b'X');
        self.0.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.0.extend_from_slice(s.as_bytes());
    }

    fn global(&mut self, module: &str, name: &str) {
        self.0.push(b'c');
        self.0
            .extend_from_slice(format!("{module}\n{name}\n").as_bytes());
    }

    /// An empty `collections.OrderedDict()`.
    fn ordered_dict(&mut self) {
        self.global("collections", "OrderedDict");
        self.op(b")R");
    }

    fn int(&mut self, v: usize) {
        match i32::try_from(v) {
            Ok(v) => {
                self.0.push(b'J');
                self.0.extend_from_slice(&v.to_le_bytes());
            }
            Err(_) => {
                // LONG1: 8 little-endian bytes (positive, so the top bit of a u64 < 2⁶³ is 0).
                self.0.extend_from_slice(&[0x8a, 8]);
                self.0.extend_from_slice(&(v as u64).to_le_bytes());
            }
        }
    }
}

/// A minimal writer of stored (uncompressed) zip archives with 64-byte aligned records.
#[derive(Default)]
struct ZipWriter {
    out: Vec<u8>,
    central: Vec<u8>,
    count: u16,
}

impl ZipWriter {
    const ALIGN: usize = 64;

    fn add(&mut self, name: &str, data: &[u8]) {
        let offset = self.out.len();
        let crc = crc32fast::hash(data);
        // An extra field ("FB", as PyTorch writes it) pads the record to the alignment.
        let header = offset + 30 + name.len() + 4;
        let pad = (Self::ALIGN - header % Self::ALIGN) % Self::ALIGN;
        let mut extra = vec![b'F', b'B'];
        extra.extend_from_slice(&(pad as u16).to_le_bytes());
        extra.extend(std::iter::repeat_n(b'Z', pad));
        let size = data.len() as u32;

        let w = &mut self.out;
        w.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        // Version 2.0, no flags, stored, time 00:00, date 1980-01-01.
        w.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0x21, 0]);
        w.extend_from_slice(&crc.to_le_bytes());
        w.extend_from_slice(&size.to_le_bytes());
        w.extend_from_slice(&size.to_le_bytes());
        w.extend_from_slice(&(name.len() as u16).to_le_bytes());
        w.extend_from_slice(&(extra.len() as u16).to_le_bytes());
        w.extend_from_slice(name.as_bytes());
        w.extend_from_slice(&extra);
        w.extend_from_slice(data);

        let c = &mut self.central;
        c.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        c.extend_from_slice(&[20, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0x21, 0]);
        c.extend_from_slice(&crc.to_le_bytes());
        c.extend_from_slice(&size.to_le_bytes());
        c.extend_from_slice(&size.to_le_bytes());
        c.extend_from_slice(&(name.len() as u16).to_le_bytes());
        c.extend_from_slice(&[0; 8]); // extra, comment, disk, internal attributes
        c.extend_from_slice(&[0; 4]); // external attributes
        c.extend_from_slice(&(offset as u32).to_le_bytes());
        c.extend_from_slice(name.as_bytes());
        self.count += 1;
    }

    fn finish(mut self) -> Vec<u8> {
        let start = self.out.len() as u32;
        let size = self.central.len() as u32;
        self.out.extend_from_slice(&self.central);
        self.out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
        self.out.extend_from_slice(&[0; 4]);
        self.out.extend_from_slice(&self.count.to_le_bytes());
        self.out.extend_from_slice(&self.count.to_le_bytes());
        self.out.extend_from_slice(&size.to_le_bytes());
        self.out.extend_from_slice(&start.to_le_bytes());
        self.out.extend_from_slice(&[0, 0]);
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prompt_diffusion_core::weights::TensorSource;

    #[test]
    fn written_files_read_back_through_the_pickle_reader() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tpb_net.pt");
        let tensors = vec![
            NamedTensor {
                key: "visual_projection.0.weight".into(),
                shape: vec![2, 3],
                values: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            },
            NamedTensor {
                key: "logit_scale".into(),
                shape: vec![],
                values: vec![2.5],
            },
        ];
        save_state_dict(&path, "model", &tensors).unwrap();
        let source = TensorSource::open(&path).unwrap();
        assert_eq!(
            source.shape("model.visual_projection.0.weight"),
            Some(&[2, 3][..])
        );
        let data = source.data("model.visual_projection.0.weight").unwrap();
        assert_eq!(data.to_vec::<f32>().unwrap(), tensors[0].values);
        let scale = source.data("model.logit_scale").unwrap();
        assert_eq!(scale.to_vec::<f32>().unwrap(), [2.5]);
        let bad = NamedTensor {
            key: "x".into(),
            shape: vec![2],
            values: vec![1.0],
        };
        assert!(save_state_dict(&path, "model", &[bad]).is_err());
    }
}
