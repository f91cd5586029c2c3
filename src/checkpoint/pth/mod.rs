//! PyTorch's own checkpoint files (`torch.save(model.state_dict(), "model.pth")`), read without
//! Python and without running any of the pickle inside.
//!
//! Since torch 1.6 `torch.save` writes a zip archive (stored, not compressed) holding
//! - `<archive>/data.pkl`: a pickle (protocol 2) of the object saved: for a state_dict an
//!   `OrderedDict` of name → tensor, each tensor a `torch._utils._rebuild_tensor_v2(storage,
//!   offset, size, stride, ...)` call whose storage is a persistent id
//!   `('storage', torch.FloatStorage, key, location, numel)`;
//! - `<archive>/data/<key>`: each storage's raw bytes, in the byte order of
//! - `<archive>/byteorder` (`little`; absent in files from before torch 1.10, which are little too);
//! - `<archive>/version` and a few more entries this reader does not need.
//!
//! [`load`] reads the zip directory ([`zip`](self::zip)), interprets the pickle with an
//! allowlist instead of imports ([`pickle`](self::pickle): any other function or class is an
//! [`Error::Format`] naming it, and nothing is ever called), and copies each tensor's view
//! (storage offset, size, stride: transposed and sliced tensors come out as they index,
//! row-major, and tensors sharing a storage each get their own copy) into a [`Checkpoint`]:
//! float32/float16/bfloat16/float64 storages as f32 tensors, int64/int32/int16/int8/uint8/bool
//! ones (and uint16/32/64, which torch writes through `_rebuild_tensor_v3`) as exact
//! [`IntTensor`]s. Other dtypes (complex, float8, quantized) are refused, naming the type.
//!
//! The object saved must be a dict. Nested dicts (and lists) are flattened with dots, as
//! `state_dict()` itself names nested modules: `{"model": {"0.weight": w}, "epoch": 3}` gives the
//! tensor `model.0.weight`; a plain value (number, string, bool, None) goes into the metadata
//! under its flattened name (`epoch` → `"3"`), so nothing in the file is silently lost. The
//! attributes torch sets on a state_dict (`_metadata`: module versions) are dropped.
//!
//! Refused with an [`Error::Format`] saying what to do instead: a whole pickled `nn.Module`
//! (`torch.save(model)`), a TorchScript archive, the legacy non-zip format (torch < 1.6 or
//! `_use_new_zipfile_serialization=False`), big-endian storages, compressed zip entries other
//! than deflate, and any pickle that names a function or class beyond the allowlist.
//!
//! Bounds: everything the file declares is checked against its length before use, and nothing
//! is allocated from a declared size. The pickle's work is linear in its length, with its stack,
//! memo and tuple nesting capped; what it builds costs at most about a hundred bytes of memory per
//! byte of pickle (an empty dict takes one byte to write and a few dozen to hold). Nested dicts
//! are followed at most [`MAX_DEPTH`] deep. The tensors together may hold at most 4 elements per
//! byte of the file (plus 1024), so tensor data takes at most 32 bytes of memory per byte of file
//! (a float32 element takes 4 bytes of file, so even one storage shared by sixteen views fits).

mod pickle;
mod zip;

use super::{Checkpoint, IntDtype, IntTensor, NamedTensor, numel};
use crate::{Error, Result};
use pickle::{Arena, Key, StorageDtype, TensorRef, Value};
use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::io::Read;
use std::path::Path;

/// A zip archive's first local header: `torch.save`'s format since 1.6.
pub const ZIP_MAGIC: &[u8; 4] = b"PK\x03\x04";
/// `torch.save`'s legacy format starts with a pickled magic number (protocol 2, LONG1 of 10
/// bytes: 0x1950a86a20f9469cfc6c).
const LEGACY_MAGIC: &[u8] = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19";
/// Deepest nesting of dicts (and lists) in the saved object that is followed.
pub const MAX_DEPTH: usize = 32;

/// Whether the file at `path` starts like a PyTorch file (a zip archive, or torch's legacy
/// format), which [`load`] reads (or refuses with a clear message); anything else is left to the
/// safetensors reader. An unreadable file is an [`Error::Io`].
pub fn is_pth(path: &Path) -> Result<bool> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut head = Vec::with_capacity(LEGACY_MAGIC.len());
    f.take(LEGACY_MAGIC.len() as u64).read_to_end(&mut head).map_err(|e| Error::io(path, e))?;
    Ok(head.starts_with(ZIP_MAGIC) || head == LEGACY_MAGIC)
}

/// Reads a PyTorch `.pth`/`.pt` file (see the [module docs](self)). A missing or unreadable file
/// is an [`Error::Io`]; anything else wrong with it an [`Error::Format`] naming `path`.
pub fn load(path: &Path) -> Result<Checkpoint> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse(&bytes).map_err(|m| Error::format(path, m))
}

/// [`load`] on the file's bytes; the error is the message without the path.
pub(crate) fn parse(bytes: &[u8]) -> std::result::Result<Checkpoint, String> {
    if bytes.starts_with(LEGACY_MAGIC) {
        return Err("a PyTorch file in the legacy format (torch < 1.6, or saved with _use_new_zipfile_serialization=False), \
                    which headswap does not read: re-save it in a current torch with torch.save(torch.load(path), new_path)"
            .into());
    }
    if !bytes.starts_with(ZIP_MAGIC) {
        return Err("not a PyTorch file: it does not start with a zip header".into());
    }
    let archive = zip::Archive::parse(bytes)?;
    let pkl = archive.entries.iter().find(|e| e.name.ends_with("/data.pkl") && e.name.matches('/').count() == 1).ok_or_else(|| {
        if archive.entries.iter().any(|e| e.name.ends_with("/constants.pkl")) {
            "a TorchScript archive (torch.jit.save), not a state_dict: save the weights with \
                 torch.save(model.state_dict(), path) and load that"
                .to_string()
        } else {
            "a zip file without <archive>/data.pkl, so not one torch.save wrote".to_string()
        }
    })?;
    let prefix = pkl.name.strip_suffix("data.pkl").unwrap_or_default().to_string();
    if let Some(e) = archive.find(&format!("{prefix}byteorder")) {
        let order = archive.read(e)?;
        match order.as_ref() {
            b"little" => {}
            b"big" => {
                return Err("a big-endian PyTorch file (saved on a big-endian machine), which headswap does not read: \
                            load and re-save it on a little-endian one"
                    .into());
            }
            other => return Err(format!("byteorder entry {:?}, neither little nor big", String::from_utf8_lossy(other))),
        }
    }
    let pickled = archive.read(pkl)?;
    let unpickled = pickle::unpickle(&pickled).map_err(|e| format!("{}: {e}", pkl.name))?;
    let Value::Dict(root) = unpickled.value else {
        return Err(format!("the file holds {}, not a state_dict (a dict of tensors)", pickle::kind(&unpickled.value)));
    };

    let mut flat = Flat { tensors: Vec::new(), metadata: Vec::new(), visits_left: pickled.len() + 2 * MAX_DEPTH };
    flatten(&unpickled.arena, root, "", 0, &mut flat)?;

    let mut names = BTreeSet::new();
    for name in flat.tensors.iter().map(|(n, _)| n).chain(flat.metadata.iter().map(|(n, _)| n)) {
        if !names.insert(name.as_str()) {
            return Err(format!("two entries flatten to the name {name:?}"));
        }
    }

    let mut storages: HashMap<&str, Cow<[u8]>> = HashMap::new();
    let mut elements_left = (bytes.len() as u64).saturating_mul(4).saturating_add(1024);
    let mut ckpt = Checkpoint::new();
    for (name, t) in &flat.tensors {
        if !storages.contains_key(&*t.storage.key) {
            let entry_name = format!("{prefix}data/{}", t.storage.key);
            let entry = archive.find(&entry_name).ok_or_else(|| format!("tensor {name}: its storage {entry_name} is missing"))?;
            storages.insert(&t.storage.key, archive.read(entry)?);
        }
        let raw = &storages[&*t.storage.key];
        let n = numel(&t.size).ok_or_else(|| format!("tensor {name}: size {:?} overflows", t.size))?;
        elements_left = elements_left.checked_sub(n as u64).ok_or_else(|| {
            format!("tensor {name}: its {n} elements take the file's tensors beyond 4 per byte of the file, which no real checkpoint needs")
        })?;
        let offsets = element_offsets(t, raw.len()).map_err(|e| format!("tensor {name}: {e}"))?;
        let dtype = t.storage.dtype;
        let w = dtype.width();
        let at = |i: usize| &raw[i * w..i * w + w];
        let shape = t.size.clone();
        let float = |f: fn(&[u8]) -> f32| NamedTensor {
            name: name.clone(),
            shape: shape.clone(),
            data: offsets.iter().map(|&i| f(at(i))).collect(),
        };
        let int = |dt: IntDtype, f: fn(&[u8]) -> i64| IntTensor {
            name: name.clone(),
            shape: shape.clone(),
            dtype: dt,
            data: offsets.iter().map(|&i| f(at(i))).collect(),
        };
        match dtype {
            StorageDtype::F32 => ckpt.tensors.push(float(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
            StorageDtype::F16 => ckpt.tensors.push(float(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())),
            StorageDtype::BF16 => ckpt.tensors.push(float(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())),
            StorageDtype::F64 => ckpt.tensors.push(float(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32)),
            StorageDtype::I64 => {
                ckpt.int_tensors.push(int(IntDtype::I64, |b| i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])))
            }
            StorageDtype::I32 => ckpt.int_tensors.push(int(IntDtype::I32, |b| i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])))),
            StorageDtype::I16 => ckpt.int_tensors.push(int(IntDtype::I16, |b| i64::from(i16::from_le_bytes([b[0], b[1]])))),
            StorageDtype::I8 => ckpt.int_tensors.push(int(IntDtype::I8, |b| i64::from(b[0] as i8))),
            StorageDtype::U8 => ckpt.int_tensors.push(int(IntDtype::U8, |b| i64::from(b[0]))),
            StorageDtype::U16 => ckpt.int_tensors.push(int(IntDtype::U16, |b| i64::from(u16::from_le_bytes([b[0], b[1]])))),
            StorageDtype::U32 => ckpt.int_tensors.push(int(IntDtype::U32, |b| i64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])))),
            StorageDtype::U64 => {
                // i64 holds u64 up to 2^63 - 1; beyond wraps negative here and is refused
                let t = int(IntDtype::U64, |b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as i64);
                if let Some(i) = t.data.iter().position(|&v| v < 0) {
                    return Err(format!("tensor {name}: uint64 element {i} is beyond 2^63 - 1, the largest integer headswap keeps"));
                }
                ckpt.int_tensors.push(t);
            }
            StorageDtype::Bool => {
                let t = int(IntDtype::Bool, |b| i64::from(b[0]));
                if let Some(i) = t.data.iter().position(|&v| v > 1) {
                    return Err(format!("tensor {name}: bool element {i} is the byte {}, not 0 or 1", t.data[i]));
                }
                ckpt.int_tensors.push(t);
            }
        }
    }
    ckpt.metadata = flat.metadata.into_iter().collect();
    Ok(ckpt)
}

/// The storage element each element of `t` reads, in row-major order of `t`'s size, checked
/// against a storage of `storage_bytes`.
fn element_offsets(t: &TensorRef, storage_bytes: usize) -> std::result::Result<Vec<usize>, String> {
    let w = t.storage.dtype.width();
    if !storage_bytes.is_multiple_of(w) {
        return Err(format!("its storage has {storage_bytes} bytes, not a whole number of {w}-byte elements"));
    }
    let storage_len = storage_bytes / w;
    let n = numel(&t.size).ok_or("its size overflows")?;
    if n == 0 {
        return Ok(Vec::new());
    }
    // The last element the view reaches; every other lies between offset and it.
    let mut last = t.offset;
    for (&s, &st) in t.size.iter().zip(&t.stride) {
        last = (s - 1).checked_mul(st).and_then(|x| x.checked_add(last)).ok_or("its view overflows")?;
    }
    if last >= storage_len {
        return Err(format!(
            "the view (offset {}, size {:?}, stride {:?}) reaches element {last} of a storage of {storage_len}",
            t.offset, t.size, t.stride
        ));
    }
    let mut out = Vec::with_capacity(n);
    let mut idx = vec![0usize; t.size.len()];
    let mut pos = t.offset;
    loop {
        out.push(pos);
        // odometer over the dimensions, last fastest; `pos` stays within [offset, last], so
        // nothing overflows (a stride is added only when its index can still grow)
        let mut d = t.size.len();
        loop {
            if d == 0 {
                return Ok(out);
            }
            d -= 1;
            if idx[d] + 1 < t.size[d] {
                idx[d] += 1;
                pos += t.stride[d];
                break;
            }
            pos -= t.stride[d] * idx[d];
            idx[d] = 0;
        }
    }
}

/// The saved object flattened: tensors and plain values by dotted name, in dict order.
struct Flat {
    tensors: Vec<(String, std::rc::Rc<TensorRef>)>,
    metadata: Vec<(String, String)>,
    /// Entries still to visit: a dict shared many times over cannot make the walk exponential.
    visits_left: usize,
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() { key.to_string() } else { format!("{prefix}.{key}") }
}

fn flatten(arena: &Arena, dict: usize, prefix: &str, depth: usize, out: &mut Flat) -> std::result::Result<(), String> {
    for (k, v) in &arena.dicts[dict].entries {
        let name = join(
            prefix,
            &match k {
                Key::Str(s) => s.to_string(),
                Key::Int(i) => i.to_string(),
            },
        );
        flatten_value(arena, v, name, depth, out)?;
    }
    Ok(())
}

fn flatten_value(arena: &Arena, v: &Value, name: String, depth: usize, out: &mut Flat) -> std::result::Result<(), String> {
    out.visits_left = out.visits_left.checked_sub(1).ok_or("the saved object refers to its dicts more often than its size allows")?;
    let plain = |s: String, out: &mut Flat| out.metadata.push((name.clone(), s));
    match v {
        Value::Tensor(t) => out.tensors.push((name, t.clone())),
        Value::Dict(_) | Value::List(_) | Value::Tuple(..) if depth >= MAX_DEPTH => {
            return Err(format!("{name}: dicts nested more than {MAX_DEPTH} deep (or a dict that contains itself)"));
        }
        Value::Dict(d) => flatten(arena, *d, &name, depth + 1, out)?,
        Value::List(l) => {
            for (i, x) in arena.lists[*l].iter().enumerate() {
                flatten_value(arena, x, join(&name, &i.to_string()), depth + 1, out)?;
            }
        }
        Value::Tuple(t, _) => {
            for (i, x) in t.iter().enumerate() {
                flatten_value(arena, x, join(&name, &i.to_string()), depth + 1, out)?;
            }
        }
        Value::None => plain("None".into(), out),
        Value::Bool(b) => plain(if *b { "True" } else { "False" }.into(), out),
        Value::Int(i) => plain(i.to_string(), out),
        Value::Float(f) => plain(f.to_string(), out),
        Value::Str(s) => plain(s.to_string(), out),
        Value::Bytes(_) | Value::Global(_) | Value::Storage(_) => {
            return Err(format!("{name} is {}, which is not tensor data", pickle::kind(v)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A torch-like archive `a/` with `pkl` as data.pkl and `storages` as a/data/<key>.
    fn archive(pkl: &[u8], storages: &[(&str, &[u8])], byteorder: Option<&[u8]>) -> Vec<u8> {
        let names: Vec<String> = storages.iter().map(|(k, _)| format!("a/data/{k}")).collect();
        let mut entries: Vec<(&str, &[u8], u16)> = vec![("a/data.pkl", pkl, 0)];
        if let Some(b) = byteorder {
            entries.push(("a/byteorder", b, 0));
        }
        for (n, (_, d)) in names.iter().zip(storages) {
            entries.push((n, d, 0));
        }
        entries.push(("a/version", b"3\n", 0));
        zip::tests::write_zip(&entries, 0, false)
    }

    /// `{"t": _rebuild_tensor_v2(storage('0', FloatStorage), offset, size, stride, False, OrderedDict())}`
    fn one_tensor_pickle(offset: u8, size: &[u8], stride: &[u8]) -> Vec<u8> {
        let mut p = b"\x80\x02}q\x00X\x01\x00\x00\x00tctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x06tQK".to_vec();
        p.push(offset);
        p.push(b'(');
        for &s in size {
            p.extend_from_slice(&[b'K', s]);
        }
        p.push(b't');
        p.push(b'(');
        for &s in stride {
            p.extend_from_slice(&[b'K', s]);
        }
        p.extend_from_slice(b"t\x89ccollections\nOrderedDict\n)RtRs.");
        p
    }

    fn f32s(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn views_copy_out_in_row_major_order() {
        let storage = f32s(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        // a [2, 3] matrix transposed: size [3, 2], stride [1, 3]
        let ck = parse(&archive(&one_tensor_pickle(0, &[3, 2], &[1, 3]), &[("0", &storage)], Some(b"little"))).unwrap();
        assert_eq!(ck.tensors[0].shape, vec![3, 2]);
        assert_eq!(ck.tensors[0].data, vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
        // offset 1, every other element: [1, 3, 5]; and a scalar at offset 5
        let ck = parse(&archive(&one_tensor_pickle(1, &[3], &[2]), &[("0", &storage)], None)).unwrap();
        assert_eq!(ck.tensors[0].data, vec![1.0, 3.0, 5.0]);
        let ck = parse(&archive(&one_tensor_pickle(5, &[], &[]), &[("0", &storage)], None)).unwrap();
        assert_eq!((ck.tensors[0].shape.clone(), ck.tensors[0].data.clone()), (vec![], vec![5.0]));
        // stride 0 (an expanded tensor) repeats one element
        let ck = parse(&archive(&one_tensor_pickle(2, &[2, 2], &[0, 0]), &[("0", &storage)], None)).unwrap();
        assert_eq!(ck.tensors[0].data, vec![2.0; 4]);
        // a huge stride on a dimension of size 1 is never applied
        let p = one_tensor_pickle(0, &[1, 2], &[1, 1]);
        let i = p.windows(4).rposition(|w| w == b"(K\x01K").unwrap(); // the stride tuple (1, 1) -> (2^63 - 1, 1)
        let huge = [&p[..i], b"(\x8a\x08\xff\xff\xff\xff\xff\xff\xff\x7f", &p[i + 3..]].concat();
        let ck = parse(&archive(&huge, &[("0", &storage)], None)).unwrap();
        assert_eq!(ck.tensors[0].data, vec![0.0, 1.0]);
        // zero elements read nothing, even from an empty storage
        let ck = parse(&archive(&one_tensor_pickle(9, &[0, 4], &[4, 1]), &[("0", &[])], None)).unwrap();
        assert_eq!(ck.tensors[0].shape, vec![0, 4]);
    }

    #[test]
    fn views_beyond_their_storage_are_refused() {
        let storage = f32s(&[0.0; 6]);
        for (offset, size, stride) in [(0u8, &[3u8, 2][..], &[1u8, 4][..]), (6, &[], &[]), (0, &[7], &[1]), (0, &[2, 200], &[200, 200])] {
            let e = parse(&archive(&one_tensor_pickle(offset, size, stride), &[("0", &storage)], None)).unwrap_err();
            assert!(e.contains("reaches element"), "{e}");
        }
        let e = parse(&archive(&one_tensor_pickle(0, &[1], &[1]), &[("0", &[0; 5])], None)).unwrap_err();
        assert!(e.contains("not a whole number"), "{e}");
        let e = parse(&archive(&one_tensor_pickle(0, &[1], &[1]), &[("1", &[0; 4])], None)).unwrap_err();
        assert!(e.contains("a/data/0 is missing"), "{e}");
    }

    #[test]
    fn element_budget_bounds_memory_by_file_size() {
        // 255 × 255 × 255 views of one element: 16.6 million elements from a file of a few hundred bytes
        let e = parse(&archive(&one_tensor_pickle(0, &[255, 255, 255], &[0, 0, 0]), &[("0", &[0; 4])], None)).unwrap_err();
        assert!(e.contains("4 per byte"), "{e}");
    }

    #[test]
    fn refuses_big_endian_legacy_and_non_torch_zips() {
        let ok = one_tensor_pickle(0, &[1], &[1]);
        let e = parse(&archive(&ok, &[("0", &[0; 4])], Some(b"big"))).unwrap_err();
        assert!(e.contains("big-endian"), "{e}");
        let e = parse(&[LEGACY_MAGIC, b".\x80\x02M\xe9\x03."].concat()).unwrap_err();
        assert!(e.contains("legacy format"), "{e}");
        let e = parse(&zip::tests::write_zip(&[("a/constants.pkl", b"", 0), ("a/code/x.py", b"", 0)], 0, false)).unwrap_err();
        assert!(e.contains("TorchScript"), "{e}");
        let e = parse(&zip::tests::write_zip(&[("hello.txt", b"hi", 0)], 0, false)).unwrap_err();
        assert!(e.contains("without <archive>/data.pkl"), "{e}");
    }

    #[test]
    fn nested_dicts_flatten_and_plain_values_become_metadata() {
        // {"model": {"w": tensor}, "epoch": 3, "lr": 0.5, "opt": [None, True]}
        let inner = one_tensor_pickle(0, &[1], &[1]);
        let inner = &inner[2..inner.len() - 1]; // without PROTO and STOP: pushes {"t": tensor}
        let mut p = b"\x80\x02}(X\x05\x00\x00\x00model".to_vec();
        p.extend_from_slice(inner);
        p.extend_from_slice(
            b"X\x05\x00\x00\x00epochK\x03X\x02\x00\x00\x00lrG\x3f\xe0\x00\x00\x00\x00\x00\x00X\x03\x00\x00\x00opt](N\x88eu.",
        );
        let ck = parse(&archive(&p, &[("0", &f32s(&[7.0]))], None)).unwrap();
        assert_eq!(ck.tensors[0].name, "model.t");
        assert_eq!(ck.tensors[0].data, vec![7.0]);
        let meta: Vec<(&str, &str)> = ck.metadata.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(meta, vec![("epoch", "3"), ("lr", "0.5"), ("opt.0", "None"), ("opt.1", "True")]);
    }

    #[test]
    fn a_dict_containing_itself_is_an_error_not_a_stack_overflow() {
        let e = parse(&archive(b"\x80\x02}q\x00X\x01\x00\x00\x00dh\x00s.", &[], None)).unwrap_err();
        assert!(e.contains("nested more than"), "{e}");
    }
}
