//! The safetensors encoding of a [`Checkpoint`]: an 8-byte little-endian header length, a JSON
//! header (`{"__metadata__": {..}, "<name>": {"dtype", "shape", "data_offsets"}, ..}`, padded with
//! spaces to a multiple of 8 bytes), then the tensors' bytes back to back, little-endian.

use super::{Checkpoint, IntDtype, IntTensor, NamedTensor, StorageDtype, numel};
use crate::{Error, Result};
use safetensors::{Dtype, SafeTensors};
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The safetensors reference implementation refuses headers larger than this; so do we.
const MAX_HEADER: u64 = 100_000_000;

/// Writes `ckpt` to `path` as a safetensors file: the float tensors in the order given, each
/// stored as `dtype`, then the integer tensors in the order given, each in its own [`IntDtype`];
/// the metadata in the header's `__metadata__`.
///
/// The file is written to a temporary file beside `path` (`.<name>.<pid>.<n>.tmp`), fsynced, then
/// renamed over `path`: `path` is either the old file or the complete new one, never a part.
/// Nothing is written unless the checkpoint is valid: unique non-empty names (not
/// `__metadata__`) across float and integer tensors, data lengths matching shapes, every integer
/// within its dtype, and for F16 every finite value within f16's range. An unwritable directory
/// is an [`Error::Io`] naming `path`.
pub fn save(path: &Path, ckpt: &Checkpoint, dtype: StorageDtype) -> Result<()> {
    let header = header(ckpt, dtype)?;
    let (tmp, file) = create_temp(path)?;
    let written = write_body(file, &header, ckpt, dtype).and_then(|()| fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    sync_dir(path);
    Ok(())
}

/// Validates `ckpt` and builds the padded JSON header.
fn header(ckpt: &Checkpoint, dtype: StorageDtype) -> Result<Vec<u8>> {
    let (tag, width) = match dtype {
        StorageDtype::F32 => ("F32", 4usize),
        StorageDtype::F16 => ("F16", 2usize),
    };
    let json_err = |e: serde_json::Error| Error::invalid(format!("checkpoint header: {e}"));
    let mut names = std::collections::BTreeSet::new();
    let mut h = String::from("{");
    if !ckpt.metadata.is_empty() {
        h.push_str("\"__metadata__\":");
        h.push_str(&serde_json::to_string(&ckpt.metadata).map_err(json_err)?);
    }
    let mut offset = 0usize;
    let floats = ckpt.tensors.iter().map(|t| check_tensor(t, dtype).map(|()| (&t.name, &t.shape, tag, width, t.data.len())));
    let ints =
        ckpt.int_tensors.iter().map(|t| check_int_tensor(t).map(|()| (&t.name, &t.shape, t.dtype.name(), t.dtype.width(), t.data.len())));
    for entry in floats.chain(ints) {
        let (name, shape, tag, width, len) = entry?;
        if !names.insert(name.as_str()) {
            return Err(Error::invalid(format!("checkpoint has two tensors named {name}")));
        }
        let end = len.checked_mul(width).and_then(|n| n.checked_add(offset)).ok_or_else(|| Error::invalid("checkpoint too large"))?;
        if h.len() > 1 {
            h.push(',');
        }
        h.push_str(&serde_json::to_string(name).map_err(json_err)?);
        let shape: Vec<String> = shape.iter().map(usize::to_string).collect();
        h.push_str(&format!(":{{\"dtype\":\"{tag}\",\"shape\":[{}],\"data_offsets\":[{offset},{end}]}}", shape.join(",")));
        offset = end;
    }
    h.push('}');
    let mut bytes = h.into_bytes();
    bytes.resize(bytes.len().next_multiple_of(8), b' ');
    if bytes.len() as u64 > MAX_HEADER {
        return Err(Error::invalid(format!(
            "checkpoint header would be {} bytes, more than safetensors' limit of {MAX_HEADER}",
            bytes.len()
        )));
    }
    Ok(bytes)
}

fn check_tensor(t: &NamedTensor, dtype: StorageDtype) -> Result<()> {
    if t.name.is_empty() || t.name == "__metadata__" {
        return Err(Error::invalid(format!("{:?} cannot name a checkpoint tensor", t.name)));
    }
    if numel(&t.shape) != Some(t.data.len()) {
        return Err(Error::shape(format!("checkpoint tensor {}: shape {:?} does not hold its {} elements", t.name, t.shape, t.data.len())));
    }
    if dtype == StorageDtype::F16
        && let Some(i) = t.data.iter().position(|v| v.is_finite() && !half::f16::from_f32(*v).is_finite())
    {
        return Err(Error::invalid(format!(
            "checkpoint tensor {}: element {i} = {} is beyond f16's range (±65504); save as F32",
            t.name, t.data[i]
        )));
    }
    Ok(())
}

fn check_int_tensor(t: &IntTensor) -> Result<()> {
    if t.name.is_empty() || t.name == "__metadata__" {
        return Err(Error::invalid(format!("{:?} cannot name a checkpoint tensor", t.name)));
    }
    t.validate()
}

/// Creates a new, exclusive temporary file beside `path`.
fn create_temp(path: &Path) -> Result<(PathBuf, File)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let file_name = path.file_name().ok_or_else(|| Error::invalid(format!("{} does not name a file", path.display())))?.to_string_lossy();
    let dir = parent_dir(path);
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{file_name}.{}.{n}.tmp", std::process::id()));
        match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io(path, e)),
        }
    }
}

fn write_body(file: File, header: &[u8], ckpt: &Checkpoint, dtype: StorageDtype) -> std::io::Result<()> {
    let mut w = BufWriter::with_capacity(1 << 20, file);
    w.write_all(&(header.len() as u64).to_le_bytes())?;
    w.write_all(header)?;
    for t in &ckpt.tensors {
        match dtype {
            StorageDtype::F32 => {
                for v in &t.data {
                    w.write_all(&v.to_le_bytes())?;
                }
            }
            StorageDtype::F16 => {
                for v in &t.data {
                    w.write_all(&half::f16::from_f32(*v).to_le_bytes())?;
                }
            }
        }
    }
    for t in &ckpt.int_tensors {
        for &v in &t.data {
            // `check_int_tensor` has checked that every value fits the dtype, so the casts are exact.
            match t.dtype {
                IntDtype::Bool | IntDtype::U8 => w.write_all(&[v as u8])?,
                IntDtype::I8 => w.write_all(&(v as i8).to_le_bytes())?,
                IntDtype::U16 => w.write_all(&(v as u16).to_le_bytes())?,
                IntDtype::I16 => w.write_all(&(v as i16).to_le_bytes())?,
                IntDtype::U32 => w.write_all(&(v as u32).to_le_bytes())?,
                IntDtype::I32 => w.write_all(&(v as i32).to_le_bytes())?,
                IntDtype::I64 => w.write_all(&v.to_le_bytes())?,
                IntDtype::U64 => w.write_all(&(v as u64).to_le_bytes())?,
            }
        }
    }
    let file = w.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()
}

/// The directory `path` is in (`.` for a bare file name).
pub(super) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Makes the rename durable (best effort: not every platform can open a directory).
fn sync_dir(path: &Path) {
    #[cfg(unix)]
    if let Ok(d) = File::open(parent_dir(path)) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// Reads a checkpoint file: a PyTorch `.pth`/`.pt` file (recognised by its content, a zip
/// header, not by its name; see [`pth`](super::pth)) or a safetensors file. From a safetensors
/// file, every float tensor converted to f32 (from F32, F16, BF16 or F64)
/// into [`Checkpoint::tensors`], every integer tensor (BOOL, U8, I8, U16, I16, U32, I32, I64,
/// U64) exactly into [`Checkpoint::int_tensors`], each list in the file's data order, and the
/// `__metadata__` map.
///
/// A missing or unreadable file is an [`Error::Io`]; a file that is not a complete, well-formed
/// safetensors file, that holds a tensor of another dtype (FP8, FP4, complex, ...), a U64 beyond
/// 2^63 − 1 or a BOOL byte other than 0 and 1, is an [`Error::Format`] naming `path`, the
/// tensor and what is wrong.
pub fn load(path: &Path) -> Result<Checkpoint> {
    if super::pth::is_pth(path)? {
        return super::pth::load(path);
    }
    let bytes = read_file(path)?;
    let bad = |m: String| Error::format(path, m);
    let (n, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| bad(format!("not a valid safetensors file: {e}")))?;
    let data = bytes.get(8 + n..).ok_or_else(|| bad("header runs past the end of the file".into()))?;

    let mut tensors = Vec::new();
    let mut int_tensors = Vec::new();
    for name in meta.offset_keys() {
        let info = meta.info(&name).ok_or_else(|| bad(format!("tensor {name} vanished from the header")))?;
        let (s, e) = info.data_offsets;
        let raw = data.get(s..e).ok_or_else(|| bad(format!("tensor {name}: data offsets [{s}, {e}] lie beyond the file")))?;
        let shape = info.shape.clone();
        let fits = |len: usize| match numel(&shape) {
            Some(n) if n == len => Ok(()),
            _ => Err(bad(format!("tensor {name}: shape {shape:?} does not match its {len} elements"))),
        };
        if let Some(values) = decode(raw, info.dtype) {
            fits(values.len())?;
            tensors.push(NamedTensor { name, shape, data: values });
        } else if let Some(dtype) = int_dtype(info.dtype) {
            let values = decode_ints(raw, dtype).map_err(|m| bad(format!("tensor {name}: {m}")))?;
            fits(values.len())?;
            int_tensors.push(IntTensor { name, shape, dtype, data: values });
        } else {
            return Err(bad(format!(
                "tensor {name} has dtype {:?}; headswap loads F32, F16, BF16, F64 and the integer dtypes BOOL, U8, I8, U16, \
                 I16, U32, I32, I64 and U64",
                info.dtype
            )));
        }
    }
    let metadata = meta.metadata().as_ref().map(|m| m.clone().into_iter().collect()).unwrap_or_default();
    Ok(Checkpoint { tensors, int_tensors, metadata })
}

/// The whole file, after checking that its header length fits in it (so a random file that
/// happens to be huge is refused before it is read).
fn read_file(path: &Path) -> Result<Vec<u8>> {
    let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
    let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
    if len < 8 {
        return Err(Error::format(path, format!("not a safetensors file: {len} bytes, too short for the 8-byte header length")));
    }
    let mut prefix = [0u8; 8];
    f.read_exact(&mut prefix).map_err(|e| Error::io(path, e))?;
    let n = u64::from_le_bytes(prefix);
    if n > len - 8 || n > MAX_HEADER {
        return Err(Error::format(
            path,
            format!(
                "not a safetensors file (or truncated): the header claims {n} bytes but the file has {} \
                 after the length",
                len - 8
            ),
        ));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    bytes.extend_from_slice(&prefix);
    f.read_to_end(&mut bytes).map_err(|e| Error::io(path, e))?;
    Ok(bytes)
}

/// Little-endian `raw` of `dtype` as f32; `None` for a dtype headswap does not load.
fn decode(raw: &[u8], dtype: Dtype) -> Option<Vec<f32>> {
    Some(match dtype {
        Dtype::F32 => raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        Dtype::F16 => raw.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        Dtype::BF16 => raw.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        Dtype::F64 => raw.chunks_exact(8).map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32).collect(),
        _ => return None,
    })
}

/// The [`IntDtype`] of a safetensors integer dtype; `None` for every other dtype.
fn int_dtype(dtype: Dtype) -> Option<IntDtype> {
    Some(match dtype {
        Dtype::BOOL => IntDtype::Bool,
        Dtype::U8 => IntDtype::U8,
        Dtype::I8 => IntDtype::I8,
        Dtype::U16 => IntDtype::U16,
        Dtype::I16 => IntDtype::I16,
        Dtype::U32 => IntDtype::U32,
        Dtype::I32 => IntDtype::I32,
        Dtype::I64 => IntDtype::I64,
        Dtype::U64 => IntDtype::U64,
        _ => return None,
    })
}

/// Little-endian `raw` of `dtype` as exact `i64`s; a U64 beyond `i64::MAX` or a BOOL byte other
/// than 0 and 1 is refused (either would not save back as the same bytes).
fn decode_ints(raw: &[u8], dtype: IntDtype) -> std::result::Result<Vec<i64>, String> {
    let out: Vec<i64> = match dtype {
        IntDtype::Bool | IntDtype::U8 => raw.iter().map(|&b| i64::from(b)).collect(),
        IntDtype::I8 => raw.iter().map(|&b| i64::from(b as i8)).collect(),
        IntDtype::U16 => raw.chunks_exact(2).map(|c| i64::from(u16::from_le_bytes([c[0], c[1]]))).collect(),
        IntDtype::I16 => raw.chunks_exact(2).map(|c| i64::from(i16::from_le_bytes([c[0], c[1]]))).collect(),
        IntDtype::U32 => raw.chunks_exact(4).map(|c| i64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]]))).collect(),
        IntDtype::I32 => raw.chunks_exact(4).map(|c| i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]]))).collect(),
        IntDtype::I64 | IntDtype::U64 => {
            let words = raw.chunks_exact(8).map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]));
            if dtype == IntDtype::I64 {
                words.map(|w| w as i64).collect()
            } else {
                let mut v = Vec::with_capacity(raw.len() / 8);
                for (i, w) in words.enumerate() {
                    let x = i64::try_from(w)
                        .map_err(|_| format!("U64 element {i} = {w} is beyond 2^63 - 1, the largest integer headswap keeps"))?;
                    v.push(x);
                }
                v
            }
        }
    };
    if dtype == IntDtype::Bool
        && let Some(i) = out.iter().position(|&b| b > 1)
    {
        return Err(format!("BOOL element {i} is the byte {}, not 0 or 1", out[i]));
    }
    Ok(out)
}
