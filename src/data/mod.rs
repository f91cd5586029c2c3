//! Data sets on the CPU: the [`Dataset`] container the trainer uploads, and its sources.
//!
//! * [`synthetic`] — seeded, download-free images of simple shapes: task A (which single shape is
//!   shown, 8 classes) and task B (multi-label scenes: which of 4 chosen shapes are present).
//! * [`street`] — seeded synthetic street scenes for multi-task learning: which of pedestrian,
//!   car, stop sign, traffic light are present (labels, some unknown), the street's type
//!   (classes) and the number of objects (regression), as the targets of three named heads.
//! * [`digits`] — the real 8×8 handwritten digits (UCI, CC BY 4.0) from `../shared/data/digits`,
//!   and a transfer scenario on them (single digits → 2×2 scenes of digits, multi-label).
//! * [`image_folder`] — a folder of class sub-folders of PNG/JPEG files (torchvision's
//!   `ImageFolder` convention).
//! * [`manifest`] — a CSV of `path,label_1,...,label_k` rows for multi-label image data, with
//!   unknown labels.
//! * [`tensor_file`] — a safetensors file with tensors `x` and `y` (load and save).
//! * [`preview`] — grids of images written as PNG files, to look at a data set.
//!
//! Nothing here touches the GPU. Every loader validates what it returns (see
//! [`Dataset::validate`]) and reports a bad input as an [`Error`] naming the file, line, row or
//! field, never by panicking. The folder and manifest loaders also say what they read:
//! `load_with_report` returns a [`LoadReport`] with the examples per class or label and every
//! file passed over, with why ([`LoadReport::of`] makes one for any data set).

pub mod digits;
pub mod image_folder;
pub mod manifest;
pub mod preview;
pub mod street;
pub mod synthetic;
pub mod tensor_file;

pub use image_folder::{Channels, ImageOptions, Resize};

use std::path::{Path, PathBuf};

use crate::{Error, Result, Rng};

/// The most bytes of images one generator call makes (synthetic or digit scenes): 8 GiB, e.g. 8 Mi images of 16×16. The
/// generators build the whole data set in host memory before anything reaches the GPU, so a
/// request beyond this would be refused by the host allocator with an abort, not an error.
pub const MAX_BYTES: u64 = 8 << 30;

/// Refuses `n` images of `size × size` (size already clamped) whose pixels exceed [`MAX_BYTES`].
pub(crate) fn check_n(task: &str, n: usize, size: usize) -> Result<()> {
    let bytes = (n as u64).checked_mul((size * size * 4) as u64);
    match bytes {
        Some(b) if b <= MAX_BYTES => Ok(()),
        _ => Err(Error::invalid(format!(
            "{task}: {n} images of {size}×{size} need {} bytes, more than the generators' limit of {MAX_BYTES} bytes \
             (headswap::data::MAX_BYTES)",
            bytes.map_or_else(|| "over 2^64".to_string(), |b| b.to_string())
        ))),
    }
}

/// What a loader read, and what it passed over: examples per class (or per label), and each
/// file or folder skipped with the reason. `Display` writes it as one line, e.g.
/// `5 examples: ant 2, zebra 3; skipped 2: zebra/notes.txt (not an image), stray.png (not in a
/// class folder)`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LoadReport {
    /// The folder or file loaded (empty for a data set made in memory); skipped paths are shown
    /// relative to it.
    pub source: PathBuf,
    /// Examples loaded.
    pub examples: usize,
    /// One entry per class ([`Targets::Classes`]) or per label ([`Targets::Labels`]), in output
    /// order.
    pub outputs: Vec<OutputCount>,
    /// True for multi-label data: [`OutputCount::count`] is then the known positives.
    pub multi_label: bool,
    /// Files and folders passed over, in the order they were met.
    pub skipped: Vec<Skipped>,
}

/// Examples of one class, or known positives and unknowns of one label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputCount {
    /// The class or label name (its index when the data set has no names).
    pub name: String,
    /// Examples of the class, or examples where the label is known to apply.
    pub count: usize,
    /// Examples where the label is unknown (always 0 for classes).
    pub unknown: usize,
}

/// A file or folder a loader passed over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: SkipReason,
}

/// Why a file or folder was passed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SkipReason {
    /// Hidden (its name starts with `.`, e.g. `.DS_Store`, `.ipynb_checkpoints`); a hidden
    /// folder is not entered.
    Hidden,
    /// A file directly in an image folder's root, outside every class folder.
    NotInClassFolder,
    /// An image type torchvision's `ImageFolder` reads (`.bmp`, `.ppm`, `.pgm`, `.tif`,
    /// `.tiff`, `.webp`) that this build does not decode (PNG and JPEG only).
    UnsupportedImage,
    /// Not an image, by its extension.
    NotAnImage,
    /// A link to a folder that contains it: following it would never end.
    LinkCycle,
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SkipReason::Hidden => "hidden",
            SkipReason::NotInClassFolder => "not in a class folder",
            SkipReason::UnsupportedImage => "image type not decoded here: PNG and JPEG only",
            SkipReason::NotAnImage => "not an image",
            SkipReason::LinkCycle => "a link to a folder that contains it",
        })
    }
}

impl LoadReport {
    /// The counts of `ds` (examples per class, or known positives and unknowns per label), read
    /// from `source`, with nothing skipped.
    pub fn of(ds: &Dataset, source: &Path) -> LoadReport {
        let unknown = match &ds.targets {
            Targets::Labels { y, k } => {
                let mut u = vec![0usize; *k];
                for (i, v) in y.iter().enumerate() {
                    if v.is_nan() {
                        u[i % k] += 1;
                    }
                }
                u
            }
            _ => vec![0; ds.num_outputs()],
        };
        let outputs = ds
            .positives_per_output()
            .into_iter()
            .zip(unknown)
            .enumerate()
            .map(|(j, (count, unknown))| OutputCount {
                name: ds.label_names.get(j).cloned().unwrap_or_else(|| j.to_string()),
                count,
                unknown,
            })
            .collect();
        LoadReport { source: source.to_path_buf(), examples: ds.n, outputs, multi_label: ds.targets.is_multi_label(), skipped: Vec::new() }
    }

    /// `path` relative to [`LoadReport::source`] where it lies inside it.
    pub fn shown_path<'a>(&self, path: &'a Path) -> std::path::Display<'a> {
        path.strip_prefix(&self.source).ok().filter(|p| !p.as_os_str().is_empty()).unwrap_or(path).display()
    }
}

impl std::fmt::Display for LoadReport {
    /// One line: the examples, the count per class or label (the first 12), and the skipped
    /// paths with their reasons (the first 5), each list ending with how many more there are.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const CLASSES_SHOWN: usize = 12;
        const SKIPPED_SHOWN: usize = 5;
        write!(f, "{} examples", self.examples)?;
        if !self.outputs.is_empty() {
            f.write_str(if self.multi_label { "; positives per label: " } else { ": " })?;
            for (i, o) in self.outputs.iter().take(CLASSES_SHOWN).enumerate() {
                let sep = if i == 0 { "" } else { ", " };
                write!(f, "{sep}{} {}", o.name, o.count)?;
                if o.unknown > 0 {
                    write!(f, " ({} unknown)", o.unknown)?;
                }
            }
            if self.outputs.len() > CLASSES_SHOWN {
                let what = if self.multi_label { "labels" } else { "classes" };
                write!(f, ", and {} more {what}", self.outputs.len() - CLASSES_SHOWN)?;
            }
        }
        if !self.skipped.is_empty() {
            write!(f, "; skipped {}: ", self.skipped.len())?;
            for (i, s) in self.skipped.iter().take(SKIPPED_SHOWN).enumerate() {
                let sep = if i == 0 { "" } else { ", " };
                write!(f, "{sep}{} ({})", self.shown_path(&s.path), s.reason)?;
            }
            if self.skipped.len() > SKIPPED_SHOWN {
                write!(f, ", and {} more", self.skipped.len() - SKIPPED_SHOWN)?;
            }
        }
        Ok(())
    }
}

/// What a data set asks a model to predict.
#[derive(Debug, Clone, PartialEq)]
pub enum Targets {
    /// Single-label classification: `y[i]` is the class of example `i`, in `0..num_classes`.
    Classes { y: Vec<u32>, num_classes: usize },
    /// Multi-label (multi-task) binary targets, `[n, k]` row-major: `y[i * k + j]` is 1.0 when
    /// label `j` applies to example `i`, 0.0 when it does not, and NaN when it is unknown (the
    /// loss masks it out).
    Labels { y: Vec<f32>, k: usize },
    /// Real-valued targets of a regression head, `[n, k]` row-major, NaN where unknown (the
    /// loss masks it out). Only as one head's targets in [`Targets::Heads`].
    Regression { y: Vec<f32>, k: usize },
    /// One target per head of a network of named heads, in any order, matched by name. A
    /// head's [`Targets::Classes`] may hold [`IGNORE_CLASS`](crate::kernels::loss::IGNORE_CLASS)
    /// (−1 as u32) for an example without a class.
    Heads(Vec<HeadTargets>),
}

/// The targets of one named head (see [`Targets::Heads`]).
#[derive(Debug, Clone, PartialEq)]
pub struct HeadTargets {
    pub name: String,
    pub targets: Targets,
    /// One name per class, label or regression column, or empty (known by index).
    pub label_names: Vec<String>,
}

impl HeadTargets {
    pub fn new(name: &str, targets: Targets) -> HeadTargets {
        HeadTargets { name: name.to_string(), targets, label_names: Vec::new() }
    }
    /// Names the head's outputs (checked by [`Dataset::validate`]).
    pub fn with_names<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> HeadTargets {
        self.label_names = names.into_iter().map(Into::into).collect();
        self
    }
}

impl Targets {
    /// The number of model outputs these targets need: `num_classes`, or `k` (for
    /// [`Targets::Heads`], the sum over the heads).
    pub fn num_outputs(&self) -> usize {
        match self {
            Targets::Classes { num_classes, .. } => *num_classes,
            Targets::Labels { k, .. } | Targets::Regression { k, .. } => *k,
            Targets::Heads(h) => h.iter().map(|h| h.targets.num_outputs()).sum(),
        }
    }

    /// `classes`, `labels`, `regression` or `heads`.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Targets::Classes { .. } => "classes",
            Targets::Labels { .. } => "labels",
            Targets::Regression { .. } => "regression",
            Targets::Heads(_) => "heads",
        }
    }

    /// The targets of the head named `name` ([`Targets::Heads`]).
    pub fn head(&self, name: &str) -> Option<&Targets> {
        match self {
            Targets::Heads(h) => h.iter().find(|h| h.name == name).map(|h| &h.targets),
            _ => None,
        }
    }

    /// Whether these targets have one entry (or row of `k`) per example of `n`.
    fn lengths_match(&self, n: usize) -> bool {
        match self {
            Targets::Classes { y, .. } => y.len() == n,
            Targets::Labels { y, k } | Targets::Regression { y, k } => n.checked_mul(*k) == Some(y.len()),
            Targets::Heads(h) => h.iter().all(|h| h.targets.lengths_match(n)),
        }
    }

    /// Rows `idx`; rows missing from inconsistent (unvalidated) vectors are skipped.
    fn gather(&self, idx: &[usize]) -> Targets {
        let rows = |y: &[f32], k: usize| {
            let mut out = Vec::with_capacity(idx.len().saturating_mul(k));
            for &i in idx {
                if let Some(r) = i.checked_mul(k).and_then(|s| s.checked_add(k).and_then(|e| y.get(s..e))) {
                    out.extend_from_slice(r);
                }
            }
            out
        };
        match self {
            Targets::Classes { y, num_classes } => {
                Targets::Classes { y: idx.iter().filter_map(|&i| y.get(i).copied()).collect(), num_classes: *num_classes }
            }
            Targets::Labels { y, k } => Targets::Labels { y: rows(y, *k), k: *k },
            Targets::Regression { y, k } => Targets::Regression { y: rows(y, *k), k: *k },
            Targets::Heads(h) => Targets::Heads(h.iter().map(|h| HeadTargets { targets: h.targets.gather(idx), ..h.clone() }).collect()),
        }
    }

    /// Checks one head's (or the only head's) targets for `n` examples; `head` names it in the
    /// messages, and a head of a network of named heads may leave a class unknown (−1).
    fn validate(&self, n: usize, head: Option<&str>, label_names: &[String]) -> Result<()> {
        let of = match head {
            Some(h) => format!("head {h:?}: "),
            None => String::new(),
        };
        match self {
            Targets::Classes { y, num_classes } => {
                if *num_classes == 0 {
                    return Err(Error::invalid(format!("{of}num_classes is 0")));
                }
                if y.len() != n {
                    return Err(Error::shape(format!("{of}{} class targets for n = {n} examples", y.len())));
                }
                let unknown_ok = |c: u32| head.is_some() && c == crate::kernels::loss::IGNORE_CLASS;
                if let Some((i, &c)) = y.iter().enumerate().find(|&(_, &c)| c as usize >= *num_classes && !unknown_ok(c)) {
                    return Err(Error::invalid(format!("{of}row {i}: class {c} is not below num_classes = {num_classes}")));
                }
            }
            Targets::Labels { y, k } => {
                if *k == 0 {
                    return Err(Error::invalid(format!("{of}multi-label targets with k = 0 labels")));
                }
                if Some(y.len()) != n.checked_mul(*k) {
                    return Err(Error::shape(format!("{of}{} label values, expected n * k = {n} * {k}", y.len())));
                }
                if let Some((i, &v)) = y.iter().enumerate().find(|&(_, &v)| !(v.is_nan() || (0.0..=1.0).contains(&v))) {
                    return Err(Error::invalid(format!(
                        "{of}row {}, label {} ({}): value {v} is neither in [0, 1] nor NaN (unknown)",
                        i / k,
                        i % k,
                        label_names.get(i % k).map(String::as_str).unwrap_or("?")
                    )));
                }
            }
            Targets::Regression { y, k } => {
                if head.is_none() {
                    return Err(Error::invalid("regression targets belong to a named head: put them in Targets::Heads"));
                }
                if *k == 0 {
                    return Err(Error::invalid(format!("{of}regression targets with k = 0 columns")));
                }
                if Some(y.len()) != n.checked_mul(*k) {
                    return Err(Error::shape(format!("{of}{} regression values, expected n * k = {n} * {k}", y.len())));
                }
                if let Some((i, &v)) = y.iter().enumerate().find(|&(_, &v)| v.is_infinite()) {
                    return Err(Error::invalid(format!("{of}row {}, column {}: value {v} is infinite (NaN marks unknown)", i / k, i % k)));
                }
            }
            Targets::Heads(heads) => {
                if head.is_some() {
                    return Err(Error::invalid(format!("{of}targets of several heads inside one head's")));
                }
                if heads.is_empty() {
                    return Err(Error::invalid("targets of several heads, but no head"));
                }
                for (i, h) in heads.iter().enumerate() {
                    crate::nn::check_head_name(&h.name)?;
                    if heads[..i].iter().any(|o| o.name == h.name) {
                        return Err(Error::invalid(format!("head {:?} has targets twice", h.name)));
                    }
                    h.targets.validate(n, Some(&h.name), &h.label_names)?;
                    let outputs = h.targets.num_outputs();
                    if !h.label_names.is_empty() && h.label_names.len() != outputs {
                        return Err(Error::shape(format!("head {:?}: {} label names for {outputs} outputs", h.name, h.label_names.len())));
                    }
                    if let Some((i, name)) = h.label_names.iter().enumerate().find(|(i, n)| h.label_names[..*i].contains(n)) {
                        return Err(Error::invalid(format!("head {:?}: label name {name:?} is given twice (output {i})", h.name)));
                    }
                }
            }
        }
        Ok(())
    }

    /// True for [`Targets::Labels`].
    pub fn is_multi_label(&self) -> bool {
        matches!(self, Targets::Labels { .. })
    }
}

/// An in-memory data set: `n` examples of `d` features each, and their targets.
///
/// `x` is `[n, d]` row-major. `input_shape` says how one row is laid out, e.g. `[1, 16, 16]`
/// (channels, height, width, row-major within) for images, or `[d]` for plain feature vectors;
/// its product is `d`. `label_names` has one name per class ([`Targets::Classes`]) or per label
/// ([`Targets::Labels`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// Features, `[n, d]` row-major.
    pub x: Vec<f32>,
    /// Number of examples.
    pub n: usize,
    /// Features per example.
    pub d: usize,
    /// Layout of one example, e.g. `[1, 16, 16]` (C, H, W) or `[d]`.
    pub input_shape: Vec<usize>,
    /// Classes or multi-labels.
    pub targets: Targets,
    /// One name per class or per label.
    pub label_names: Vec<String>,
}

impl Dataset {
    /// Checks every invariant: `n > 0`, `d > 0`, `x.len() == n * d`, `input_shape` multiplies
    /// to `d`, one target per example, classes below `num_classes`, labels 0..=1 or NaN, one
    /// label name per class/label, and every feature finite. The error names the offending row.
    pub fn validate(&self) -> Result<()> {
        if self.n == 0 {
            return Err(Error::invalid("data set is empty (n = 0)"));
        }
        if self.d == 0 {
            return Err(Error::invalid("data set has no features (d = 0)"));
        }
        let nd = self.n.checked_mul(self.d).ok_or_else(|| Error::shape(format!("n = {} times d = {} overflows", self.n, self.d)))?;
        if self.x.len() != nd {
            return Err(Error::shape(format!("x has {} values, expected n * d = {} * {} = {nd}", self.x.len(), self.n, self.d)));
        }
        let prod = self.input_shape.iter().try_fold(1usize, |a, &b| a.checked_mul(b));
        if self.input_shape.is_empty() || prod != Some(self.d) {
            return Err(Error::shape(format!("input_shape {:?} does not multiply to d = {}", self.input_shape, self.d)));
        }
        self.targets.validate(self.n, None, &self.label_names)?;
        // Names say which output is which, so two outputs cannot share one.
        if let Some((i, name)) = self.label_names.iter().enumerate().find(|(i, n)| self.label_names[..*i].contains(n)) {
            return Err(Error::invalid(format!("label name {name:?} is given twice (output {i}); names must be distinct")));
        }
        // No names at all is fine (outputs are then known by index); a partial list is a mistake.
        if !self.label_names.is_empty() && self.label_names.len() != self.targets.num_outputs() {
            return Err(Error::shape(format!(
                "{} label names for {} {}",
                self.label_names.len(),
                self.targets.num_outputs(),
                if self.targets.is_multi_label() { "labels" } else { "classes" }
            )));
        }
        if let Some((i, &v)) = self.x.iter().enumerate().find(|&(_, v)| !v.is_finite()) {
            return Err(Error::invalid(format!("x: row {}, feature {}: value {v} is not finite", i / self.d, i % self.d)));
        }
        Ok(())
    }

    /// The features of example `i` (`None` when `i >= n` or `x` is too short).
    pub fn row(&self, i: usize) -> Option<&[f32]> {
        let start = i.checked_mul(self.d)?;
        if i >= self.n {
            return None;
        }
        self.x.get(start..start.checked_add(self.d)?)
    }

    /// The number of classes or labels ([`Targets::num_outputs`]).
    pub fn num_outputs(&self) -> usize {
        self.targets.num_outputs()
    }

    /// For multi-label targets: `(targets, mask)`, both `[n, k]`, with unknown (NaN) targets
    /// replaced by 0 and masked by 0 (known entries have mask 1). `None` for class targets.
    pub fn labels_and_mask(&self) -> Option<(Vec<f32>, Vec<f32>)> {
        match &self.targets {
            Targets::Labels { y, .. } => Some((
                y.iter().map(|&v| if v.is_nan() { 0.0 } else { v }).collect(),
                y.iter().map(|&v| if v.is_nan() { 0.0 } else { 1.0 }).collect(),
            )),
            _ => None,
        }
    }

    /// Examples per class (class targets), or known positives per label (multi-label).
    pub fn positives_per_output(&self) -> Vec<usize> {
        let mut counts = vec![0usize; self.num_outputs()];
        match &self.targets {
            Targets::Classes { y, .. } => {
                for &c in y {
                    if let Some(slot) = counts.get_mut(c as usize) {
                        *slot += 1;
                    }
                }
            }
            Targets::Labels { y, k } => {
                for (i, &v) in y.iter().enumerate() {
                    if v >= 0.5 {
                        counts[i % k] += 1;
                    }
                }
            }
            Targets::Regression { .. } | Targets::Heads(_) => {}
        }
        counts
    }

    /// A seeded random split into `(train, val)`: the examples are shuffled by `Rng::new(seed)`
    /// and the first `round(n * val_fraction)` go to `val`, the rest to `train`, both in that
    /// shuffled order. `val_fraction` is clamped to `[0, 1]` (NaN counts as 0); when it is
    /// strictly between 0 and 1 and `n >= 2`, each part gets at least one example. A part can
    /// be empty (n = 0) when the fraction is 0 or 1.
    pub fn split(&self, val_fraction: f32, seed: u64) -> (Dataset, Dataset) {
        let f = if val_fraction.is_nan() { 0.0 } else { val_fraction.clamp(0.0, 1.0) } as f64;
        let mut n_val = ((self.n as f64) * f).round() as usize;
        if f > 0.0 && f < 1.0 && self.n >= 2 {
            n_val = n_val.clamp(1, self.n - 1);
        }
        let n_val = n_val.min(self.n);
        let perm = permutation(self.n, seed);
        (self.gather(&perm[n_val..]), self.gather(&perm[..n_val]))
    }

    /// The examples at `idx`, in that order (repeats allowed). Errors when an index is `>= n`.
    pub fn subset(&self, idx: &[usize]) -> Result<Dataset> {
        if let Some((pos, &i)) = idx.iter().enumerate().find(|&(_, &i)| i >= self.n) {
            return Err(Error::invalid(format!("subset: index {i} (position {pos}) is out of range for n = {}", self.n)));
        }
        self.check_lengths()?;
        Ok(self.gather(idx))
    }

    /// The first `min(n, self.n)` examples.
    pub fn take(&self, n: usize) -> Dataset {
        let idx: Vec<usize> = (0..n.min(self.n)).collect();
        self.gather(&idx)
    }

    /// All examples in an order shuffled by `Rng::new(seed)`.
    pub fn shuffled(&self, seed: u64) -> Dataset {
        self.gather(&permutation(self.n, seed))
    }

    fn check_lengths(&self) -> Result<()> {
        let ok_x = self.n.checked_mul(self.d) == Some(self.x.len());
        let ok_y = self.targets.lengths_match(self.n);
        if ok_x && ok_y {
            Ok(())
        } else {
            Err(Error::shape(format!("data set lengths disagree: x has {} values for n = {}, d = {}", self.x.len(), self.n, self.d)))
        }
    }

    /// Rows `idx` (all `< n`). Rows missing from inconsistent (unvalidated) vectors are skipped
    /// rather than panicking; `validate` reports such a data set.
    fn gather(&self, idx: &[usize]) -> Dataset {
        let d = self.d;
        let mut x = Vec::with_capacity(idx.len().saturating_mul(d));
        for &i in idx {
            if let Some(r) = self.row(i) {
                x.extend_from_slice(r);
            }
        }
        let targets = self.targets.gather(idx);
        Dataset { x, n: idx.len(), d, input_shape: self.input_shape.clone(), targets, label_names: self.label_names.clone() }
    }
}

/// A seeded permutation of `0..n`.
fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut p: Vec<usize> = (0..n).collect();
    Rng::new(seed).shuffle(&mut p);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Dataset {
        Dataset {
            x: (0..12).map(|v| v as f32).collect(),
            n: 4,
            d: 3,
            input_shape: vec![3],
            targets: Targets::Classes { y: vec![0, 1, 2, 1], num_classes: 3 },
            label_names: vec!["0".into(), "1".into(), "2".into()],
        }
    }

    #[test]
    fn split_subset_take_shuffle_keep_rows_together() {
        let ds = small();
        ds.validate().unwrap();
        let (tr, va) = ds.split(0.25, 5);
        assert_eq!((tr.n, va.n), (3, 1));
        tr.validate().unwrap();
        va.validate().unwrap();
        let mut seen: Vec<f32> = tr.x.iter().chain(&va.x).copied().collect();
        seen.sort_by(f32::total_cmp);
        assert_eq!(seen, ds.x);
        let s = ds.subset(&[3, 0]).unwrap();
        assert_eq!(s.x, vec![9.0, 10.0, 11.0, 0.0, 1.0, 2.0]);
        assert_eq!(s.targets, Targets::Classes { y: vec![1, 0], num_classes: 3 });
        assert!(ds.subset(&[4]).is_err());
        assert_eq!(ds.take(10).n, 4);
        assert_eq!(ds.take(2).x.len(), 6);
        let sh = ds.shuffled(1);
        for i in 0..4 {
            let r = sh.row(i).unwrap();
            let orig = (r[0] / 3.0) as usize;
            let Targets::Classes { y, .. } = &sh.targets else { unreachable!() };
            let Targets::Classes { y: y0, .. } = &ds.targets else { unreachable!() };
            assert_eq!(y[i], y0[orig]);
        }
        let (tr, va) = ds.split(f32::NAN, 1);
        assert_eq!((tr.n, va.n), (4, 0));
        let (tr, va) = ds.split(0.01, 1);
        assert_eq!((tr.n, va.n), (3, 1));
    }

    #[test]
    fn labels_and_mask_masks_nan() {
        let ds = Dataset {
            x: vec![0.0; 4],
            n: 2,
            d: 2,
            input_shape: vec![2],
            targets: Targets::Labels { y: vec![1.0, f32::NAN, 0.0, 1.0], k: 2 },
            label_names: vec!["a".into(), "b".into()],
        };
        ds.validate().unwrap();
        let (t, m) = ds.labels_and_mask().unwrap();
        assert_eq!(t, vec![1.0, 0.0, 0.0, 1.0]);
        assert_eq!(m, vec![1.0, 0.0, 1.0, 1.0]);
        assert_eq!(ds.positives_per_output(), vec![1, 1]);
    }
}
