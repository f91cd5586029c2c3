//! The safetensors encoding of a [`Checkpoint`]: an 8-byte little-endian header length, a JSON
//! header (`{"__metadata__": {..}, "<name>": {"dtype", "shape", "data_offsets"}, ..}`, padded with
//! spaces to a multiple of 8 bytes), then the tensors' bytes back to back, little-endian.

use super::{Checkpoint, NamedTensor, StorageDtype, numel};
use crate::{Error, Result};
use safetensors::{Dtype, SafeTensors};
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The safetensors reference implementation refuses headers larger than this; so do we.
const MAX_HEADER: u64 = 100_000_000;

/// Writes `ckpt` to `path` as a safetensors file, tensors in the order given, each stored as
/// `dtype`, the metadata in the header's `__metadata__`.
///
/// The file is written to a temporary file beside `path` (`.<name>.<pid>.<n>.tmp`), fsynced, then
/// renamed over `path`: `path` is either the old file or the complete new one, never a part.
/// Nothing is written unless the checkpoint is valid: unique non-empty names (not
/// `__metadata__`), data lengths matching shapes, and for F16 every finite value within f16's
/// range. An unwritable directory is an [`Error::Io`] naming `path`.
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
    for t in &ckpt.tensors {
        check_tensor(t, dtype)?;
        if !names.insert(t.name.as_str()) {
            return Err(Error::invalid(format!("checkpoint has two tensors named {}", t.name)));
        }
        let end =
            t.data.len().checked_mul(width).and_then(|n| n.checked_add(offset)).ok_or_else(|| Error::invalid("checkpoint too large"))?;
        if h.len() > 1 {
            h.push(',');
        }
        h.push_str(&serde_json::to_string(&t.name).map_err(json_err)?);
        let shape: Vec<String> = t.shape.iter().map(usize::to_string).collect();
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

/// Reads a safetensors file: every tensor converted to f32 (from F32, F16, BF16 or F64), in the
/// file's data order, and the `__metadata__` map.
///
/// A missing or unreadable file is an [`Error::Io`]; a file that is not a complete, well-formed
/// safetensors file, or that holds a tensor of another dtype (integers, FP8, ...), is an
/// [`Error::Format`] naming `path` and what is wrong.
pub fn load(path: &Path) -> Result<Checkpoint> {
    let bytes = read_file(path)?;
    let bad = |m: String| Error::format(path, m);
    let (n, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| bad(format!("not a valid safetensors file: {e}")))?;
    let data = bytes.get(8 + n..).ok_or_else(|| bad("header runs past the end of the file".into()))?;

    let mut tensors = Vec::new();
    for name in meta.offset_keys() {
        let info = meta.info(&name).ok_or_else(|| bad(format!("tensor {name} vanished from the header")))?;
        let (s, e) = info.data_offsets;
        let raw = data.get(s..e).ok_or_else(|| bad(format!("tensor {name}: data offsets [{s}, {e}] lie beyond the file")))?;
        let values = decode(raw, info.dtype)
            .ok_or_else(|| bad(format!("tensor {name} has dtype {:?}; headswap loads only F32, F16, BF16 and F64", info.dtype)))?;
        if numel(&info.shape) != Some(values.len()) {
            return Err(bad(format!("tensor {name}: shape {:?} does not match its {} elements", info.shape, values.len())));
        }
        tensors.push(NamedTensor { name, shape: info.shape.clone(), data: values });
    }
    let metadata = meta.metadata().as_ref().map(|m| m.clone().into_iter().collect()).unwrap_or_default();
    Ok(Checkpoint { tensors, metadata })
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
