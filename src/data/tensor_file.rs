//! Data sets stored as safetensors files.
//!
//! A file holds two tensors:
//! * `x`: `[n, d]` (or `[n, ...]`, flattened per row), dtype F32 (also F16, BF16, F64) or U8
//!   (scaled by 1/255 into `[0, 1]`);
//! * `y`: either `[n]` integers (U8, I8, U16, I16, U32, I32, U64, I64) — class targets — or
//!   `[n, k]` floats (F32, also F16, BF16, F64) — multi-label targets, 0/1 with NaN for unknown.
//!   The number of classes is the metadata key `num_classes` when given (at least max + 1;
//!   classes without examples are then fine). Without it, it is max + 1 and every class below
//!   the largest must have an example: a gap (a stray 9 among classes 0–3) is refused rather
//!   than silently making a 10-class head.
//!
//! and optional string metadata: `input_shape` (`"1,16,16"`, multiplying to `d`; default `[d]`,
//! or `x`'s trailing dimensions when it has more than two), `label_names` (a comma-separated
//! list, one per class or label; without it the data set has no names, its outputs are known by
//! index and matched to a model's by position) and `num_classes`. [`save`] writes `x` as F32, `y`
//! as I64 (classes) or F32 (labels) and the metadata keys (`label_names` when there are names;
//! plus `format` = `headswap.dataset.v1`), so that
//! `load(save(ds)) == ds`. In Python: `safetensors.numpy.save_file({"x": x, "y": y}, path,
//! metadata={"input_shape": "1,16,16"})`.
//!
//! **Several heads.** A file for a network of named heads holds, instead of `y`, one tensor
//! `y.<head>` per head and the metadata `heads` listing them with their kinds, e.g.
//! `objects:labels,scene:classes,distance:regression`: a classes head's `[n]` integers (−1: the
//! example has no class for it; the count is `num_classes.<head>` or the largest + 1, gaps
//! refused as above), a labels head's `[n, k]` floats (0/1, NaN unknown), a regression head's
//! `[n, k]` (or `[n]`) floats (NaN unknown). A head listed without its tensor, a tensor whose
//! kind or row count does not fit its head, and bad values are errors naming the head (and the
//! row). `label_names.<head>` names a head's outputs. [`save`] writes such data sets back the
//! same way.

use std::collections::HashMap;
use std::path::Path;

use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use super::{Dataset, Targets};
use crate::{Error, Result};

/// The most classes a file may declare or imply.
pub const MAX_CLASSES: usize = 1 << 20;

/// Bytes per element of the dtypes read here.
fn dtype_bytes(dt: Dtype) -> Option<usize> {
    Some(match dt {
        Dtype::U8 | Dtype::I8 => 1,
        Dtype::U16 | Dtype::I16 | Dtype::F16 | Dtype::BF16 => 2,
        Dtype::U32 | Dtype::I32 | Dtype::F32 => 4,
        Dtype::U64 | Dtype::I64 | Dtype::F64 => 8,
        _ => return None,
    })
}

/// The elements of a float tensor as f32 (`None` for other dtypes). `data` has been checked to
/// hold a whole number of elements.
fn floats(dt: Dtype, data: &[u8]) -> Option<Vec<f32>> {
    Some(match dt {
        Dtype::F32 => data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        Dtype::F64 => data.chunks_exact(8).map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32).collect(),
        Dtype::F16 => data.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        Dtype::BF16 => data.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        _ => return None,
    })
}

/// The elements of an integer tensor as i128 (`None` for other dtypes).
fn integers(dt: Dtype, data: &[u8]) -> Option<Vec<i128>> {
    let size = match dt {
        Dtype::U8 | Dtype::I8 => 1,
        Dtype::U16 | Dtype::I16 => 2,
        Dtype::U32 | Dtype::I32 => 4,
        Dtype::U64 | Dtype::I64 => 8,
        _ => return None,
    };
    Some(
        data.chunks_exact(size)
            .map(|b| {
                let mut a = [0u8; 8];
                a[..size].copy_from_slice(b);
                let u = u64::from_le_bytes(a);
                match dt {
                    Dtype::I8 => b[0] as i8 as i128,
                    Dtype::I16 => i16::from_le_bytes([b[0], b[1]]) as i128,
                    Dtype::I32 => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i128,
                    Dtype::I64 => u as i64 as i128,
                    _ => u as i128,
                }
            })
            .collect(),
    )
}

/// A tensor's shape, dtype and bytes, with the byte count checked against the shape.
fn checked<'a>(path: &Path, name: &str, t: &TensorView<'a>) -> Result<(Vec<usize>, Dtype, &'a [u8])> {
    let shape = t.shape().to_vec();
    let dt = t.dtype();
    let size = dtype_bytes(dt).ok_or_else(|| Error::format(path, format!("tensor {name:?} has unsupported dtype {dt:?}")))?;
    let bytes = shape.iter().try_fold(size, |a, &b| a.checked_mul(b));
    if bytes != Some(t.data().len()) {
        return Err(Error::format(
            path,
            format!("tensor {name:?} of shape {shape:?} and dtype {dt:?} has {} bytes of data", t.data().len()),
        ));
    }
    Ok((shape, dt, t.data()))
}

/// The inputs of a tensor file without targets: `x` as [`load`] reads it, for prediction.
#[derive(Debug, Clone, PartialEq)]
pub struct Inputs {
    /// `[n, d]` row-major.
    pub x: Vec<f32>,
    pub n: usize,
    pub d: usize,
    /// One example's shape (multiplies to `d`): the metadata's `input_shape`, else `x`'s
    /// trailing dimensions.
    pub input_shape: Vec<usize>,
}

/// The parsed header and tensors of a file, with the metadata (empty when it has none).
fn open<'a>(path: &Path, bytes: &'a [u8]) -> Result<(SafeTensors<'a>, HashMap<String, String>)> {
    let bad = |e: safetensors::SafeTensorError| Error::format(path, format!("not a valid safetensors file: {e}"));
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(bad)?;
    let st = SafeTensors::deserialize(bytes).map_err(bad)?;
    Ok((st, meta.metadata().clone().unwrap_or_default()))
}

fn meta_usize(path: &Path, key: &str, s: &str) -> Result<usize> {
    s.trim().parse::<usize>().map_err(|_| Error::format(path, format!("metadata {key:?} = {s:?} is not a non-negative integer")))
}

/// `x` of an opened file, checked: `[n, ...]` of a float or U8 dtype, its `input_shape`.
fn read_x(path: &Path, st: &SafeTensors, meta: &HashMap<String, String>) -> Result<Inputs> {
    let xt = st.tensor("x").map_err(|_| {
        let mut names = st.names();
        names.sort();
        Error::format(path, format!("no tensor named \"x\" (the file has {names:?})"))
    })?;
    let (xs, xdt, xb) = checked(path, "x", &xt)?;
    if xs.len() < 2 {
        return Err(Error::format(path, format!("tensor \"x\" must be [n, d], not of shape {xs:?}")));
    }
    let n = xs[0];
    // With n = 0 the byte count is 0 whatever the other dimensions, so multiply them checked.
    let d = xs[1..]
        .iter()
        .try_fold(1usize, |a, &b| a.checked_mul(b))
        .ok_or_else(|| Error::format(path, format!("tensor \"x\" has shape {xs:?}, whose row size overflows")))?;
    let input_shape = match meta.get("input_shape") {
        Some(s) => {
            let dims = s.split(',').map(|p| meta_usize(path, "input_shape", p)).collect::<Result<Vec<_>>>()?;
            if dims.iter().try_fold(1usize, |a, &b| a.checked_mul(b)) != Some(d) {
                return Err(Error::format(path, format!("metadata input_shape {dims:?} does not multiply to d = {d}")));
            }
            dims
        }
        None if xs.len() > 2 => xs[1..].to_vec(),
        None => vec![d],
    };
    if n == 0 {
        return Err(Error::format(path, "the data set is empty (x has 0 rows)"));
    }
    let x = match xdt {
        Dtype::U8 => xb.iter().map(|&b| b as f32 / 255.0).collect(),
        dt => floats(dt, xb)
            .ok_or_else(|| Error::format(path, format!("tensor \"x\" has dtype {dt:?}; expected F32 or U8 (or F16, BF16, F64)")))?,
    };
    Ok(Inputs { x, n, d, input_shape })
}

/// Reads only `x` of a safetensors file (a `y`, if any, is not read): the examples to predict
/// on, e.g. a batch of images `[n, 3, H, W]` written from PyTorch to compare outputs with.
/// Errors (naming the file): as [`load`]'s for `x`, and non-finite values.
pub fn load_inputs(path: &Path) -> Result<Inputs> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let (st, meta) = open(path, &bytes)?;
    let inputs = read_x(path, &st, &meta)?;
    if let Some(i) = inputs.x.iter().position(|v| !v.is_finite()) {
        return Err(Error::format(path, format!("x holds a non-finite value (row {})", i / inputs.d)));
    }
    Ok(inputs)
}

/// Reads a data set from a safetensors file (format in the module docs). Errors (all naming the
/// file): unreadable, truncated or corrupt file, missing `x` or `y`, unsupported dtypes, shapes
/// that disagree, bad metadata, class values that are negative or too large, invalid values.
pub fn load(path: &Path) -> Result<Dataset> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let (st, meta) = open(path, &bytes)?;
    let meta = &meta;
    if let Some(list) = meta.get("heads") {
        let Inputs { x, n, d, input_shape } = read_x(path, &st, meta)?;
        let targets = load_heads(path, &st, meta, list, n)?;
        let ds = Dataset { x, n, d, input_shape, targets, label_names: Vec::new() };
        ds.validate().map_err(|e| Error::format(path, e.to_string()))?;
        return Ok(ds);
    }
    // y first: a file of inputs alone is a common mistake here, and x may be large
    let yt = st.tensor("y").map_err(|_| {
        let mut names = st.names();
        names.sort();
        Error::format(
            path,
            format!(
                "no tensor named \"y\" (the file has {names:?}): training and scoring need targets, y [n] (classes) or \
                 [n, k] (labels); only prediction reads x alone"
            ),
        )
    })?;
    let Inputs { x, n, d, input_shape } = read_x(path, &st, meta)?;
    let (ys, ydt, yb) = checked(path, "y", &yt)?;
    if ys.first() != Some(&n) || ys.len() > 2 {
        return Err(Error::format(path, format!("tensor \"y\" has shape {ys:?}; expected [{n}] or [{n}, k]")));
    }
    let meta_usize = |key: &str, s: &str| meta_usize(path, key, s);
    let targets = if ys.len() == 1 {
        let ints = integers(ydt, yb)
            .ok_or_else(|| Error::format(path, format!("tensor \"y\" of shape [n] must hold integer classes, not {ydt:?}")))?;
        let mut y = Vec::with_capacity(n);
        for (i, &v) in ints.iter().enumerate() {
            if v < 0 || v >= MAX_CLASSES as i128 {
                return Err(Error::format(path, format!("y[{i}] = {v}: classes must be in 0..{MAX_CLASSES}")));
            }
            y.push(v as u32);
        }
        let implied = y.iter().max().map_or(0, |&m| m as usize + 1);
        let num_classes = match meta.get("num_classes") {
            None => {
                refuse_class_gaps(path, "y", "num_classes", &y, implied)?;
                implied
            }
            Some(s) => {
                let c = meta_usize("num_classes", s)?;
                if c < implied || c > MAX_CLASSES {
                    return Err(Error::format(
                        path,
                        format!(
                            "metadata num_classes = {c}, but y holds class {} (and at most {MAX_CLASSES} are allowed)",
                            implied.saturating_sub(1)
                        ),
                    ));
                }
                c
            }
        };
        Targets::Classes { y, num_classes }
    } else {
        let y = floats(ydt, yb)
            .ok_or_else(|| Error::format(path, format!("tensor \"y\" of shape [n, k] must hold float labels (F32), not {ydt:?}")))?;
        Targets::Labels { y, k: ys[1] }
    };

    let outputs = targets.num_outputs();
    // Check the sizes before anything is allocated per label: an empty file can claim 2^62
    // labels (found by fuzzing).
    if outputs > MAX_CLASSES {
        return Err(Error::format(path, format!("{outputs} classes/labels; at most {MAX_CLASSES} are allowed")));
    }
    let label_names = match meta.get("label_names") {
        Some(s) => {
            let names: Vec<String> = s.split(',').map(|p| p.trim().to_string()).collect();
            if names.len() != outputs {
                return Err(Error::format(path, format!("metadata label_names has {} names for {outputs} classes/labels", names.len())));
            }
            names
        }
        // no names: the outputs are known by index (and matched to a model's by position)
        None => Vec::new(),
    };
    let ds = Dataset { x, n, d, input_shape, targets, label_names };
    ds.validate().map_err(|e| Error::format(path, e.to_string()))?;
    Ok(ds)
}

/// The targets of the heads the metadata `heads` lists (`objects:labels,scene:classes,
/// distance:regression`), each from its tensor `y.<head>`: classes `[n]` integers (−1: no
/// class; the count from `num_classes.<head>` or the largest + 1), labels `[n, k]` floats (0/1,
/// NaN unknown), regression `[n, k]` or `[n]` floats (NaN unknown). Every error names the head.
fn load_heads(path: &Path, st: &SafeTensors<'_>, meta: &HashMap<String, String>, list: &str, n: usize) -> Result<Targets> {
    let mut heads: Vec<super::HeadTargets> = Vec::new();
    for item in list.split(',') {
        let (name, kind) = item.trim().split_once(':').ok_or_else(|| {
            Error::format(
                path,
                format!("metadata heads: {item:?} is not NAME:KIND (e.g. objects:labels,scene:classes,distance:regression)"),
            )
        })?;
        let (name, kind) = (name.trim(), kind.trim());
        crate::nn::check_head_name(name).map_err(|e| Error::format(path, format!("metadata heads: {e}")))?;
        if heads.iter().any(|h| h.name == name) {
            return Err(Error::format(path, format!("metadata heads lists head {name:?} twice")));
        }
        let key = format!("y.{name}");
        let t = st.tensor(&key).map_err(|_| {
            Error::format(path, format!("head {name:?} is listed in the metadata heads but the file has no tensor {key:?}"))
        })?;
        let (shape, dt, bytes) = checked(path, &key, &t)?;
        if shape.first() != Some(&n) || shape.len() > 2 {
            return Err(Error::format(
                path,
                format!("head {name:?}: tensor {key:?} has shape {shape:?}, but x has {n} rows (expected [{n}] or [{n}, k])"),
            ));
        }
        let targets = match kind {
            "classes" => {
                let ints = integers(dt, bytes).filter(|_| shape.len() == 1).ok_or_else(|| {
                    Error::format(
                        path,
                        format!(
                            "head {name:?} is a classes head but {key:?} holds {dt:?} values of shape {shape:?}: classes are [n] integers"
                        ),
                    )
                })?;
                let mut y = Vec::with_capacity(n);
                for (i, &v) in ints.iter().enumerate() {
                    y.push(match v {
                        -1 => crate::kernels::loss::IGNORE_CLASS,
                        v if (0..MAX_CLASSES as i128).contains(&v) => v as u32,
                        v => {
                            return Err(Error::format(
                                path,
                                format!("head {name:?}, row {i}: class {v}; classes are 0..{MAX_CLASSES}, or −1 for none"),
                            ));
                        }
                    });
                }
                let known = || y.iter().copied().filter(|&c| c != crate::kernels::loss::IGNORE_CLASS);
                let implied = known().max().map_or(0, |m| m as usize + 1);
                let count_key = format!("num_classes.{name}");
                let num_classes = match meta.get(&count_key) {
                    Some(s) => s.trim().parse::<usize>().ok().filter(|&c| c >= implied && c <= MAX_CLASSES).ok_or_else(|| {
                        Error::format(
                            path,
                            format!("head {name:?}: metadata {count_key} = {s:?}, but {key:?} holds class {}", implied.saturating_sub(1)),
                        )
                    })?,
                    None => {
                        refuse_class_gaps(path, &key, &count_key, &known().collect::<Vec<_>>(), implied)?;
                        implied
                    }
                };
                Targets::Classes { y, num_classes }
            }
            "labels" | "regression" => {
                let y = floats(dt, bytes).ok_or_else(|| {
                    Error::format(
                        path,
                        format!("head {name:?} is a {kind} head but {key:?} holds {dt:?} values: {kind} targets are floats (NaN unknown)"),
                    )
                })?;
                let k = shape.get(1).copied().unwrap_or(1);
                if k == 0 || k > MAX_CLASSES {
                    return Err(Error::format(path, format!("head {name:?}: {key:?} has {k} columns")));
                }
                if kind == "labels" { Targets::Labels { y, k } } else { Targets::Regression { y, k } }
            }
            other => {
                return Err(Error::format(path, format!("head {name:?} has kind {other:?}; kinds are classes, labels, regression")));
            }
        };
        let label_names = match meta.get(&format!("label_names.{name}")) {
            Some(s) => s.split(',').map(|p| p.trim().to_string()).collect(),
            None => Vec::new(),
        };
        heads.push(super::HeadTargets { name: name.to_string(), targets, label_names });
    }
    Ok(Targets::Heads(heads))
}

/// Without a `num_classes` key the class count is read from `y` as its largest class + 1, so one
/// stray index (a 9 among classes 0–3) would make a 10-class head with six classes that never
/// occur. Such a gap is refused: every class below the largest must have an example, unless the
/// file gives its class count.
fn refuse_class_gaps(path: &Path, what: &str, count_key: &str, y: &[u32], implied: usize) -> Result<()> {
    let mut seen = vec![false; implied];
    for &c in y {
        seen[c as usize] = true;
    }
    let missing: Vec<usize> = (0..implied).filter(|&c| !seen[c]).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let largest = implied - 1;
    Err(Error::format(
        path,
        format!(
            "{what}'s classes go up to {largest} but no example has class {}; a stray class index would silently make a \
             {implied}-class head, so the file is refused. If there really are {implied} classes (some without examples \
             here), give the count as the metadata key {count_key}, e.g. in Python: \
             safetensors.numpy.save_file({{\"x\": x, \"{what}\": y}}, path, metadata={{\"{count_key}\": \"{implied}\"}})",
            class_ranges(&missing)
        ),
    ))
}

/// Sorted distinct classes as ranges: `2, 4–8, 11` (the first 8 ranges, then `...`).
fn class_ranges(sorted: &[usize]) -> String {
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    for &c in sorted {
        match ranges.last_mut() {
            Some((_, hi)) if *hi + 1 == c => *hi = c,
            _ => ranges.push((c, c)),
        }
    }
    let mut parts: Vec<String> =
        ranges.iter().take(8).map(|&(lo, hi)| if lo == hi { lo.to_string() } else { format!("{lo}–{hi}") }).collect();
    if ranges.len() > 8 {
        parts.push("...".into());
    }
    parts.join(", ")
}

fn le_bytes_f32(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|f| f.to_le_bytes()).collect()
}

/// Writes `ds` (validated first) as a safetensors file at `path`: to a temporary file in the
/// same folder, then renamed over `path`, so a reader never sees a half-written file. Errors
/// for an invalid data set, label names containing commas, or I/O failures (naming the file).
pub fn save(path: &Path, ds: &Dataset) -> Result<()> {
    ds.validate()?;
    if let Some(name) = ds.label_names.iter().find(|n| n.contains(',')) {
        return Err(Error::invalid(format!("label name {name:?} contains a comma, which the label_names metadata cannot hold")));
    }
    let file_name =
        path.file_name().and_then(|f| f.to_str()).ok_or_else(|| Error::invalid(format!("{} is not a file path", path.display())))?;
    let xb = le_bytes_f32(&ds.x);
    if let Targets::Heads(heads) = &ds.targets {
        return save_heads(path, file_name, ds, heads, &xb);
    }
    let (ydt, yshape, yb, num_classes) = match &ds.targets {
        Targets::Classes { y, num_classes } => {
            (Dtype::I64, vec![ds.n], y.iter().flat_map(|&c| (c as i64).to_le_bytes()).collect::<Vec<u8>>(), Some(*num_classes))
        }
        Targets::Labels { y, k } => (Dtype::F32, vec![ds.n, *k], le_bytes_f32(y), None),
        Targets::Regression { .. } | Targets::Heads(_) => {
            return Err(Error::invalid("regression targets belong to a named head: put them in Targets::Heads"));
        }
    };
    let shape_err = |e: safetensors::SafeTensorError| Error::shape(format!("cannot build tensor: {e}"));
    let xv = TensorView::new(Dtype::F32, vec![ds.n, ds.d], &xb).map_err(shape_err)?;
    let yv = TensorView::new(ydt, yshape, &yb).map_err(shape_err)?;
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), "headswap.dataset.v1".to_string());
    meta.insert("input_shape".to_string(), ds.input_shape.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(","));
    // no names: no key, so the file reads back unnamed (an empty value would read as one name)
    if !ds.label_names.is_empty() {
        meta.insert("label_names".to_string(), ds.label_names.join(","));
    }
    if let Some(c) = num_classes {
        meta.insert("num_classes".to_string(), c.to_string());
    }
    let bytes =
        safetensors::serialize([("x", xv), ("y", yv)], Some(meta)).map_err(|e| Error::format(path, format!("cannot serialise: {e}")))?;
    write_atomically(path, file_name, &bytes)
}

/// [`save`] for targets of several heads: `x`, one `y.<head>` per head (classes as I64 with −1
/// for none, labels and regression as F32) and the metadata `heads` (plus `num_classes.<head>`).
fn save_heads(path: &Path, file_name: &str, ds: &Dataset, heads: &[super::HeadTargets], xb: &[u8]) -> Result<()> {
    let shape_err = |e: safetensors::SafeTensorError| Error::shape(format!("cannot build tensor: {e}"));
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), "headswap.dataset.v1".to_string());
    meta.insert("input_shape".to_string(), ds.input_shape.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(","));
    let mut list = Vec::new();
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = vec![("x".into(), Dtype::F32, vec![ds.n, ds.d], xb.to_vec())];
    for h in heads {
        let (kind, dt, shape, bytes) = match &h.targets {
            Targets::Classes { y, num_classes } => {
                meta.insert(format!("num_classes.{}", h.name), num_classes.to_string());
                let ints = y.iter().flat_map(|&c| if c == crate::kernels::loss::IGNORE_CLASS { -1i64 } else { c as i64 }.to_le_bytes());
                ("classes", Dtype::I64, vec![ds.n], ints.collect())
            }
            Targets::Labels { y, k } => ("labels", Dtype::F32, vec![ds.n, *k], le_bytes_f32(y)),
            Targets::Regression { y, k } => ("regression", Dtype::F32, vec![ds.n, *k], le_bytes_f32(y)),
            Targets::Heads(_) => return Err(Error::invalid("targets of several heads inside one head's")),
        };
        list.push(format!("{}:{kind}", h.name));
        if let Some(bad) = h.label_names.iter().find(|n| n.contains(',')) {
            return Err(Error::invalid(format!(
                "head {:?}: label name {bad:?} contains a comma, which label_names.{} cannot hold",
                h.name, h.name
            )));
        }
        if !h.label_names.is_empty() {
            meta.insert(format!("label_names.{}", h.name), h.label_names.join(","));
        }
        tensors.push((format!("y.{}", h.name), dt, shape, bytes));
    }
    meta.insert("heads".to_string(), list.join(","));
    let views = tensors
        .iter()
        .map(|(name, dt, shape, bytes)| Ok((name.as_str(), TensorView::new(*dt, shape.clone(), bytes).map_err(shape_err)?)))
        .collect::<Result<Vec<_>>>()?;
    let bytes = safetensors::serialize(views, Some(meta)).map_err(|e| Error::format(path, format!("cannot serialise: {e}")))?;
    write_atomically(path, file_name, &bytes)
}

/// Writes `bytes` to a temporary file beside `path`, then renames it over `path`.
fn write_atomically(path: &Path, file_name: &str, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_file_name(format!(".{file_name}.{}.tmp", std::process::id()));
    let written = std::fs::write(&tmp, bytes)
        .map_err(|e| Error::io(&tmp, e))
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e)));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, tensors: &[(&str, Vec<usize>, Vec<f32>)]) {
        let bytes: Vec<(String, Vec<usize>, Vec<u8>)> =
            tensors.iter().map(|(n, s, v)| (n.to_string(), s.clone(), le_bytes_f32(v))).collect();
        let views = bytes.iter().map(|(n, s, b)| (n.as_str(), TensorView::new(Dtype::F32, s.clone(), b).unwrap()));
        std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
    }

    #[test]
    fn inputs_alone_load_for_prediction_and_are_refused_for_training() {
        let dir = std::env::temp_dir().join(format!("headswap-xonly-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("x.safetensors");
        let x: Vec<f32> = (0..2 * 3 * 4 * 5).map(|i| i as f32 * 0.25 - 3.0).collect();
        write(&p, &[("x", vec![2, 3, 4, 5], x.clone())]);
        let inputs = load_inputs(&p).unwrap();
        assert_eq!(inputs, Inputs { x: x.clone(), n: 2, d: 60, input_shape: vec![3, 4, 5] });
        let e = load(&p).unwrap_err().to_string();
        assert!(e.contains("no tensor named \"y\"") && e.contains("only prediction reads x alone"), "{e}");
        // a y, when there is one, is not read (nor checked)
        write(&p, &[("x", vec![2, 60], x.clone()), ("y", vec![7], vec![0.5; 7])]);
        assert_eq!(load_inputs(&p).unwrap().input_shape, [60]);
        let mut bad = x;
        bad[70] = f32::NAN;
        write(&p, &[("x", vec![2, 60], bad)]);
        assert!(load_inputs(&p).unwrap_err().to_string().contains("non-finite value (row 1)"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
