//! A restricted reader for the pickles inside PyTorch checkpoints.
//!
//! It interprets the pickle opcodes as data only: `GLOBAL`/`REDUCE`/`BUILD` record what would be
//! called, and only the handful of constructors that `torch.save` relies on (`OrderedDict`,
//! `_rebuild_tensor_v2`, `_rebuild_parameter`, …) are given a meaning. No code is ever run and
//! no module is ever imported, whatever the file names.
//!
//! Every value lives in one arena and refers to others by index, so a hostile file can neither
//! nest values deeply enough to overflow the stack when they are dropped nor make memory grow
//! faster than its own length: each opcode adds at most one value, and every length read from
//! the file is checked against the bytes that remain.

use std::collections::HashMap;
use std::io::{BufRead, Read};

/// Index of a value in the [`Pickle`] arena.
pub(crate) type Id = usize;

/// A value built by the pickle program.
#[derive(Debug, Clone)]
pub(crate) enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer too large for `i64`, as its little-endian two's-complement bytes.
    BigInt(Vec<u8>),
    /// A float (its value is never needed).
    Float,
    Str(String),
    /// Bytes (their value is never needed).
    Bytes,
    Tuple(Vec<Id>),
    List(Vec<Id>),
    Dict(Vec<(Id, Id)>),
    /// A `module.name` reference (`GLOBAL`, `STACK_GLOBAL`), never resolved.
    Global {
        module: String,
        name: String,
    },
    /// The result of calling an unknown callable: never evaluated, only a placeholder.
    Object,
    /// A persistent reference (`BINPERSID`): in checkpoints, a storage descriptor tuple.
    Persistent(Id),
    /// A tensor view rebuilt by `torch._utils._rebuild_tensor[_v2]`.
    Tensor(TensorView),
}

/// A tensor as `torch.save` describes it: a view into a storage.
#[derive(Debug, Clone)]
pub(crate) struct TensorView {
    /// The persistent storage descriptor (a `Persistent` value).
    pub storage: Id,
    /// Offset of the first element in the storage, in elements.
    pub offset: usize,
    /// The tensor's shape.
    pub shape: Vec<usize>,
    /// The tensor's strides, in elements.
    pub stride: Vec<usize>,
}

/// Why a pickle could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PickleError(pub String);

impl std::fmt::Display for PickleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

type Result<T> = std::result::Result<T, PickleError>;

fn err<T>(message: impl Into<String>) -> Result<T> {
    Err(PickleError(message.into()))
}

/// The most dimensions a tensor may have (PyTorch itself allows 64).
const MAX_RANK: usize = 64;

/// The longest text line (`GLOBAL` names, `INT`, …) accepted.
const MAX_LINE: u64 = 64 * 1024;

/// A pickle program's values, after it ran to `STOP`.
#[derive(Debug, Default)]
pub(crate) struct Pickle {
    values: Vec<Value>,
}

impl Pickle {
    /// The value at `id`.
    pub fn get(&self, id: Id) -> &Value {
        &self.values[id]
    }

    /// The number of values built.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    fn push(&mut self, value: Value) -> Id {
        self.values.push(value);
        self.values.len() - 1
    }

    /// The string at `id`, if it is one.
    pub fn str(&self, id: Id) -> Option<&str> {
        match self.get(id) {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The integer at `id`, if it is one.
    pub fn int(&self, id: Id) -> Option<i64> {
        match self.get(id) {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(i64::from(*b)),
            _ => None,
        }
    }

    /// The items of the tuple or list at `id`.
    pub fn items(&self, id: Id) -> Option<&[Id]> {
        match self.get(id) {
            Value::Tuple(items) | Value::List(items) => Some(items),
            _ => None,
        }
    }

    /// A tuple or list of at most [`MAX_RANK`] non-negative integers (a shape or strides).
    fn usizes(&self, id: Id) -> Option<Vec<usize>> {
        let items = self.items(id)?;
        if items.len() > MAX_RANK {
            return None;
        }
        items
            .iter()
            .map(|&i| self.int(i).and_then(|v| usize::try_from(v).ok()))
            .collect()
    }
}

/// Reads one pickle (up to and including `STOP`) from `input`, returning the arena and the
/// top-level value.
pub(crate) fn read<R: BufRead>(input: &mut R) -> Result<(Pickle, Id)> {
    Machine::default().run(input)
}

#[derive(Default)]
struct Machine {
    pickle: Pickle,
    stack: Vec<Id>,
    marks: Vec<usize>,
    memo: HashMap<u32, Id>,
}

fn read_exact<R: Read>(input: &mut R, n: usize) -> Result<Vec<u8>> {
    // `take` + `read_to_end` grows the buffer only as bytes arrive, so a forged length cannot
    // allocate more than the input holds.
    let mut buf = Vec::new();
    input
        .take(n as u64)
        .read_to_end(&mut buf)
        .map_err(|e| PickleError(format!("read failed: {e}")))?;
    if buf.len() != n {
        return err(format!(
            "truncated: {n} bytes announced, {} present",
            buf.len()
        ));
    }
    Ok(buf)
}

fn read_array<const N: usize, R: Read>(input: &mut R) -> Result<[u8; N]> {
    let mut buf = [0u8; N];
    input
        .read_exact(&mut buf)
        .map_err(|_| PickleError("truncated pickle".into()))?;
    Ok(buf)
}

fn read_line<R: BufRead>(input: &mut R) -> Result<String> {
    let mut buf = Vec::new();
    input
        .take(MAX_LINE)
        .read_until(b'\n', &mut buf)
        .map_err(|e| PickleError(format!("read failed: {e}")))?;
    if buf.pop() != Some(b'\n') {
        return err("unterminated or overlong text line");
    }
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    String::from_utf8(buf).map_err(|_| PickleError("text line is not UTF-8".into()))
}

fn utf8(bytes: Vec<u8>) -> Result<String> {
    String::from_utf8(bytes).map_err(|_| PickleError("string is not valid UTF-8".into()))
}

/// Length prefixes: a length larger than `usize` cannot be present in the input.
fn len_u64(n: u64) -> Result<usize> {
    usize::try_from(n).map_err(|_| PickleError(format!("length {n} is too large")))
}

impl Machine {
    fn pop(&mut self) -> Result<Id> {
        if self.marks.last().is_some_and(|&m| m >= self.stack.len()) {
            return err("stack underflow past a mark");
        }
        self.stack
            .pop()
            .ok_or_else(|| PickleError("stack underflow".into()))
    }

    fn top(&self) -> Result<Id> {
        self.stack
            .last()
            .copied()
            .ok_or_else(|| PickleError("stack underflow".into()))
    }

    fn pop_mark(&mut self) -> Result<Vec<Id>> {
        let mark = self
            .marks
            .pop()
            .ok_or_else(|| PickleError("no mark on the stack".into()))?;
        if mark > self.stack.len() {
            return err("mark beyond the stack");
        }
        Ok(self.stack.split_off(mark))
    }

    fn push(&mut self, value: Value) {
        let id = self.pickle.push(value);
        self.stack.push(id);
    }

    fn memo_get(&self, index: u32) -> Result<Id> {
        self.memo
            .get(&index)
            .copied()
            .ok_or_else(|| PickleError(format!("memo entry {index} is not set")))
    }

    fn memo_put(&mut self, index: u32) -> Result<()> {
        let top = self.top()?;
        self.memo.insert(index, top);
        Ok(())
    }

    fn run<R: BufRead>(mut self, input: &mut R) -> Result<(Pickle, Id)> {
        loop {
            let [op] = read_array::<1, _>(input)?;
            match op {
                0x80 => {
                    let [proto] = read_array::<1, _>(input)?;
                    if proto > 5 {
                        return err(format!("unsupported pickle protocol {proto}"));
                    }
                }
                0x95 => {
                    read_array::<8, _>(input)?;
                }
                b'.' => {
                    let top = self.pop()?;
                    return Ok((self.pickle, top));
                }
                b'(' => self.marks.push(self.stack.len()),
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let top = self.top()?;
                    self.stack.push(top);
                }
                b'N' => self.push(Value::None),
                0x88 => self.push(Value::Bool(true)),
                0x89 => self.push(Value::Bool(false)),
                b'J' => self.push(Value::Int(i32::from_le_bytes(read_array(input)?).into())),
                b'K' => self.push(Value::Int(read_array::<1, _>(input)?[0].into())),
                b'M' => self.push(Value::Int(u16::from_le_bytes(read_array(input)?).into())),
                0x8a => {
                    let [n] = read_array::<1, _>(input)?;
                    let bytes = read_exact(input, n.into())?;
                    self.push(long(bytes));
                }
                0x8b => {
                    let n = u32::from_le_bytes(read_array(input)?);
                    let bytes = read_exact(input, len_u64(n.into())?)?;
                    self.push(long(bytes));
                }
                b'I' | b'L' => {
                    let line = read_line(input)?;
                    let text = line.trim_end_matches('L');
                    let value = match text {
                        "01" => Value::Bool(true),
                        "00" => Value::Bool(false),
                        _ => text
                            .parse::<i64>()
                            .map(Value::Int)
                            .map_err(|_| PickleError(format!("invalid integer `{line}`")))?,
                    };
                    self.push(value);
                }
                b'G' => {
                    read_array::<8, _>(input)?;
                    self.push(Value::Float);
                }
                b'F' => {
                    let line = read_line(input)?;
                    line.parse::<f64>()
                        .map_err(|_| PickleError(format!("invalid float `{line}`")))?;
                    self.push(Value::Float);
                }
                b'X' => {
                    let n = u32::from_le_bytes(read_array(input)?);
                    let s = utf8(read_exact(input, len_u64(n.into())?)?)?;
                    self.push(Value::Str(s));
                }
                0x8c => {
                    let [n] = read_array::<1, _>(input)?;
                    let s = utf8(read_exact(input, n.into())?)?;
                    self.push(Value::Str(s));
                }
                0x8d => {
                    let n = u64::from_le_bytes(read_array(input)?);
                    let s = utf8(read_exact(input, len_u64(n)?)?)?;
                    self.push(Value::Str(s));
                }
                b'V' => self.push(Value::Str(read_line(input)?)),
                b'S' => {
                    let line = read_line(input)?;
                    let unquoted = line
                        .strip_prefix('\'')
                        .and_then(|s| s.strip_suffix('\''))
                        .or_else(|| line.strip_prefix('"').and_then(|s| s.strip_suffix('"')))
                        .ok_or_else(|| PickleError("STRING is not quoted".into()))?;
                    self.push(Value::Str(unquoted.to_string()));
                }
                b'T' | b'B' => {
                    let n = u32::from_le_bytes(read_array(input)?);
                    let bytes = read_exact(input, len_u64(n.into())?)?;
                    self.push(bytes_value(op, bytes));
                }
                b'U' | b'C' => {
                    let [n] = read_array::<1, _>(input)?;
                    let bytes = read_exact(input, n.into())?;
                    self.push(bytes_value(op, bytes));
                }
                0x8e | 0x96 => {
                    let n = u64::from_le_bytes(read_array(input)?);
                    read_exact(input, len_u64(n)?)?;
                    self.push(Value::Bytes);
                }
                b')' => self.push(Value::Tuple(Vec::new())),
                b']' => self.push(Value::List(Vec::new())),
                b'}' => self.push(Value::Dict(Vec::new())),
                0x8f => self.push(Value::List(Vec::new())),
                b't' => {
                    let items = self.pop_mark()?;
                    self.push(Value::Tuple(items));
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    if self.stack.len() < n {
                        return err("stack underflow");
                    }
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.push(Value::Tuple(items));
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push(Value::List(items));
                }
                0x91 => {
                    let items = self.pop_mark()?;
                    self.push(Value::List(items));
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    let pairs = pairs(&items)?;
                    self.push(Value::Dict(pairs));
                }
                b'a' => {
                    let item = self.pop()?;
                    let list = self.top()?;
                    self.extend(list, &[item])?;
                }
                b'e' | 0x90 => {
                    let items = self.pop_mark()?;
                    let list = self.top()?;
                    self.extend(list, &items)?;
                }
                b's' => {
                    let value = self.pop()?;
                    let key = self.pop()?;
                    let dict = self.top()?;
                    self.set_items(dict, &[key, value])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let dict = self.top()?;
                    self.set_items(dict, &items)?;
                }
                b'c' => {
                    let module = read_line(input)?;
                    let name = read_line(input)?;
                    self.push(Value::Global { module, name });
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Some(module), Some(name)) =
                        (self.pickle.str(module), self.pickle.str(name))
                    else {
                        return err("STACK_GLOBAL needs two strings");
                    };
                    let global = Value::Global {
                        module: module.to_string(),
                        name: name.to_string(),
                    };
                    self.push(global);
                }
                b'R' | 0x81 => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let id = self.call(callable, args, 0)?;
                    self.stack.push(id);
                }
                0x92 => {
                    let _kwargs = self.pop()?;
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let id = self.call(callable, args, 0)?;
                    self.stack.push(id);
                }
                b'i' => {
                    let module = read_line(input)?;
                    let name = read_line(input)?;
                    let items = self.pop_mark()?;
                    let callable = self.pickle.push(Value::Global { module, name });
                    let args = self.pickle.push(Value::Tuple(items));
                    let id = self.call(callable, args, 0)?;
                    self.stack.push(id);
                }
                b'o' => {
                    let mut items = self.pop_mark()?;
                    if items.is_empty() {
                        return err("OBJ without a class");
                    }
                    let callable = items.remove(0);
                    let args = self.pickle.push(Value::Tuple(items));
                    let id = self.call(callable, args, 0)?;
                    self.stack.push(id);
                }
                b'b' => {
                    // `obj.__setstate__(state)`: object attributes are never needed.
                    self.pop()?;
                    self.top()?;
                }
                b'Q' => {
                    let pid = self.pop()?;
                    self.push(Value::Persistent(pid));
                }
                b'P' => {
                    let line = read_line(input)?;
                    let pid = self.pickle.push(Value::Str(line));
                    self.push(Value::Persistent(pid));
                }
                b'q' => self.memo_put(read_array::<1, _>(input)?[0].into())?,
                b'r' => self.memo_put(u32::from_le_bytes(read_array(input)?))?,
                b'p' => {
                    let line = read_line(input)?;
                    let index = line
                        .parse()
                        .map_err(|_| PickleError(format!("invalid memo index `{line}`")))?;
                    self.memo_put(index)?;
                }
                0x94 => {
                    let index = u32::try_from(self.memo.len())
                        .map_err(|_| PickleError("memo is full".into()))?;
                    self.memo_put(index)?;
                }
                b'h' => {
                    let id = self.memo_get(read_array::<1, _>(input)?[0].into())?;
                    self.stack.push(id);
                }
                b'j' => {
                    let id = self.memo_get(u32::from_le_bytes(read_array(input)?))?;
                    self.stack.push(id);
                }
                b'g' => {
                    let line = read_line(input)?;
                    let index = line
                        .parse()
                        .map_err(|_| PickleError(format!("invalid memo index `{line}`")))?;
                    let id = self.memo_get(index)?;
                    self.stack.push(id);
                }
                other => return err(format!("unsupported pickle opcode 0x{other:02x}")),
            }
        }
    }

    fn extend(&mut self, list: Id, items: &[Id]) -> Result<()> {
        match &mut self.pickle.values[list] {
            Value::List(existing) => {
                existing.extend_from_slice(items);
                Ok(())
            }
            // `list.extend` on an object (e.g. a custom container): keep the record unchanged.
            Value::Object => Ok(()),
            _ => err("APPEND to a value that is not a list"),
        }
    }

    fn set_items(&mut self, dict: Id, items: &[Id]) -> Result<()> {
        let new = pairs(items)?;
        match &mut self.pickle.values[dict] {
            Value::Dict(existing) => {
                existing.extend(new);
                Ok(())
            }
            Value::Object => Ok(()),
            _ => err("SETITEM on a value that is not a dict"),
        }
    }

    /// `callable(*args)`, for the constructors a checkpoint is made of; anything else gives an
    /// opaque [`Value::Object`]. Returns the id of the result.
    fn call(&mut self, callable: Id, args: Id, depth: usize) -> Result<Id> {
        let p = &self.pickle;
        let (module, name) = match p.get(callable) {
            Value::Global { module, name } => (module.as_str(), name.as_str()),
            _ => ("", ""),
        };
        let items = p.items(args).unwrap_or_default();
        let value = match (module, name) {
            ("collections", "OrderedDict") if items.is_empty() => Value::Dict(Vec::new()),
            ("torch._utils", "_rebuild_tensor" | "_rebuild_tensor_v2") => {
                self.rebuild_tensor(items)?
            }
            ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state")
                if !items.is_empty() =>
            {
                return Ok(items[0]);
            }
            // `func(*args)` re-typed to a tensor subclass: the subclass is not kept.
            ("torch._tensor", "_rebuild_from_type_v2") if items.len() >= 3 && depth < 2 => {
                let (func, inner_args) = (items[0], items[2]);
                return self.call(func, inner_args, depth + 1);
            }
            _ => Value::Object,
        };
        Ok(self.pickle.push(value))
    }

    fn rebuild_tensor(&self, items: &[Id]) -> Result<Value> {
        if items.len() < 4 {
            return err("_rebuild_tensor needs (storage, offset, size, stride)");
        }
        let p = &self.pickle;
        if !matches!(p.get(items[0]), Value::Persistent(_)) {
            return err("_rebuild_tensor: the storage is not a persistent reference");
        }
        let offset = p
            .int(items[1])
            .and_then(|o| usize::try_from(o).ok())
            .ok_or_else(|| PickleError("_rebuild_tensor: invalid storage offset".into()))?;
        let shape = p
            .usizes(items[2])
            .ok_or_else(|| PickleError("_rebuild_tensor: invalid size".into()))?;
        let stride = p
            .usizes(items[3])
            .ok_or_else(|| PickleError("_rebuild_tensor: invalid stride".into()))?;
        if stride.len() != shape.len() {
            return err(format!(
                "_rebuild_tensor: {} strides for {} dimensions",
                stride.len(),
                shape.len()
            ));
        }
        Ok(Value::Tensor(TensorView {
            storage: items[0],
            offset,
            shape,
            stride,
        }))
    }
}

fn long(bytes: Vec<u8>) -> Value {
    if bytes.len() <= 8 {
        let fill = if bytes.last().is_some_and(|b| b & 0x80 != 0) {
            0xff
        } else {
            0
        };
        let mut full = [fill; 8];
        full[..bytes.len()].copy_from_slice(&bytes);
        Value::Int(i64::from_le_bytes(full))
    } else {
        Value::BigInt(bytes)
    }
}

fn bytes_value(op: u8, bytes: Vec<u8>) -> Value {
    // Python 2 `str` (BINSTRING) holds names in old pickles; Python 3 `bytes` stays bytes.
    match String::from_utf8(bytes) {
        Ok(s) if matches!(op, b'T' | b'U') => Value::Str(s),
        _ => Value::Bytes,
    }
}

fn pairs(items: &[Id]) -> Result<Vec<(Id, Id)>> {
    if !items.len().is_multiple_of(2) {
        return err("odd number of items for a dict");
    }
    Ok(items.chunks_exact(2).map(|kv| (kv[0], kv[1])).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(bytes: &[u8]) -> Result<(Pickle, Id)> {
        read(&mut &bytes[..])
    }

    #[test]
    fn a_self_referencing_rebuild_does_not_recurse_forever() {
        // L = [rebuild_from_type_v2, None, L]; rebuild_from_type_v2(*L)
        let mut p = b"\x80\x02]q\x00(ctorch._tensor\n_rebuild_from_type_v2\n".to_vec();
        p.extend_from_slice(b"Nh\x00e");
        p.extend_from_slice(b"ctorch._tensor\n_rebuild_from_type_v2\nh\x00R.");
        let (pickle, top) = run(&p).unwrap();
        assert!(matches!(pickle.get(top), Value::Object));
    }

    #[test]
    fn lengths_beyond_the_input_are_errors_not_allocations() {
        // BINUNICODE8 announcing 2^62 bytes, then nothing.
        let mut p = b"\x80\x04\x8d".to_vec();
        p.extend_from_slice(&(1u64 << 62).to_le_bytes());
        assert!(run(&p).unwrap_err().0.contains("truncated"));
        // A shape of 100 dimensions is refused.
        let mut p = b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n(NQK\x00(".to_vec();
        p.extend(std::iter::repeat_n(b"K\x01".as_slice(), 100).flatten());
        p.extend_from_slice(b"t)tR.");
        assert!(run(&p).unwrap_err().0.contains("invalid size"));
    }

    #[test]
    fn stack_and_memo_misuse_are_errors() {
        for bad in [&b"."[..], b"\x80\x020", b"h\x05.", b"(s.", b"a.", b"\xff"] {
            assert!(run(bad).is_err(), "{bad:?}");
        }
    }
}
