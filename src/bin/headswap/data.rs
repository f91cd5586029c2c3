//! Reading `--data`: built-in sets (the training or the held-out part), image folders, CSV
//! manifests and tensor files; the image options that apply to each; and matching a data set's
//! classes or labels to a model's.

use crate::args::{ImageArgs, Normalize};
use crate::{CliResult, failed, usage};
use headswap::Error;
use headswap::data::{self, Dataset, ImageOptions, Targets};
use headswap::nn::{HeadKind, Network};
use std::path::Path;

/// Where a data set comes from, which decides what the image options mean for it and whether a
/// model trained on it can read image files (`predict`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum DataKind {
    Synthetic,
    Digits,
    /// A folder of class sub-folders or a CSV manifest: images read at `--size`.
    Images,
    /// A `.safetensors` file of feature vectors: no images involved.
    Tensor,
}

/// Which part of a built-in data set to draw: training commands take the training part, `eval`
/// the held-out part, so that it never scores examples a model was trained on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Split {
    Train,
    HeldOut,
}

/// A data set as loaded from `--data`.
pub struct Loaded {
    pub data: Dataset,
    pub kind: DataKind,
    /// Files and folders an image folder's walk passed over, with why.
    pub skipped: Vec<data::Skipped>,
    /// How image pixels became inputs (recorded with a model trained on the data).
    pub normalize: Normalize,
}

/// The `--normalize` that `opts` are (images only: other data ignores the option).
pub fn normalize_of(opts: &ImageOptions) -> Normalize {
    if *opts == ImageOptions::imagenet(opts.size.0, opts.size.1) { Normalize::Imagenet } else { Normalize::None }
}

const BUILT_IN: &str = "synthetic-a[:N], synthetic-b[:N], digits, digits-scenes[:N]";

/// A built-in data set named by `spec`: `(name, count)`. The name must match exactly, so a typo
/// such as `synthetic-abc` is an error rather than `synthetic-a`.
fn built_in(spec: &str) -> CliResult<Option<(&str, Option<usize>)>> {
    let (name, count) = match spec.split_once(':') {
        Some((name, n)) => (name, Some(n)),
        None => (spec, None),
    };
    let known = ["synthetic-a", "synthetic-b", "digits", "digits-scenes"];
    if !known.contains(&name) {
        let looks_built_in = name.starts_with("synthetic") || name.starts_with("digits");
        if looks_built_in && !Path::new(spec).exists() {
            return Err(usage(format!("unknown built-in data set {spec:?} (built-in: {BUILT_IN})")));
        }
        return Ok(None);
    }
    let count = match count {
        None => None,
        Some(_) if name == "digits" => return Err(usage("--data digits takes no count: it is every digit of the split")),
        Some(n) => match n.parse::<usize>() {
            Ok(n) if n > 0 => Some(n),
            _ => return Err(usage(format!("{spec:?}: the count after ':' must be a number of at least 1"))),
        },
    };
    Ok(Some((name, count)))
}

pub fn data_kind(spec: &str) -> CliResult<DataKind> {
    Ok(match built_in(spec)? {
        Some((name, _)) if name.starts_with("synthetic") => DataKind::Synthetic,
        Some(_) => DataKind::Digits,
        None if spec.ends_with(".safetensors") => DataKind::Tensor,
        None => DataKind::Images,
    })
}

/// `--size` / `--rgb` for data of `kind`. They shape images read from files; synthetic data is
/// drawn square and gray at any `--size` from 8 to 256; digits and tensor files have a fixed
/// layout, so the options would silently do nothing there (and be recorded in the checkpoint).
pub fn image_options(args: &ImageArgs, kind: DataKind) -> CliResult<ImageOptions> {
    let (size, rgb) = (args.size, args.rgb);
    let normalize = args.normalize.unwrap_or_default();
    if normalize != Normalize::None && kind != DataKind::Images {
        return Err(usage(format!(
            "--normalize {} applies only to images read from folders and CSV manifests (a .safetensors file holds its inputs as they are)",
            normalize.name()
        )));
    }
    match kind {
        DataKind::Images => {
            let (w, h) = size.unwrap_or((16, 16));
            Ok(match normalize {
                // ImageNet's statistics are per RGB channel
                Normalize::Imagenet => ImageOptions::imagenet(w, h),
                Normalize::None if rgb => ImageOptions::rgb(w, h),
                Normalize::None => ImageOptions::gray(w, h),
            })
        }
        DataKind::Synthetic => {
            if rgb {
                return Err(usage("--rgb applies only to image folders and CSV manifests; synthetic data is gray"));
            }
            let (w, h) = size.unwrap_or((16, 16));
            let range = data::synthetic::MIN_SIZE..=data::synthetic::MAX_SIZE;
            if w != h || !range.contains(&(w as usize)) {
                return Err(usage(format!(
                    "synthetic data is drawn square, from {0}x{0} to {1}x{1}; --size {w}x{h} is not",
                    range.start(),
                    range.end()
                )));
            }
            Ok(ImageOptions::gray(w, h))
        }
        DataKind::Digits | DataKind::Tensor => {
            if size.is_some() || rgb {
                let what = if kind == DataKind::Digits { "the built-in digits (16x16 gray)" } else { "a .safetensors file" };
                return Err(usage(format!("--size and --rgb apply only to image folders and CSV manifests, not to {what}")));
            }
            Ok(ImageOptions::gray(16, 16))
        }
    }
}

/// The seed `eval` draws synthetic data from: a stream of its own, derived from `--seed`, that the
/// training commands (which use `--seed` itself) do not draw from.
fn held_out_seed(seed: u64) -> u64 {
    seed ^ 0xE7A1_5EED_0000_0000
}

/// Loads `spec` (see `headswap --help`), the `split` part of a built-in set, with images read
/// as `opts` says.
pub fn load_data(spec: &str, opts: &ImageOptions, split: Split, seed: u64) -> CliResult<Loaded> {
    load_data_for(spec, opts, split, seed, &[])
}

/// [`load_data`] for a model whose named heads `known` decide the kinds (and class order) of a
/// grouped CSV manifest's bare columns.
pub fn load_data_for(
    spec: &str,
    opts: &ImageOptions,
    split: Split,
    seed: u64,
    known: &[data::manifest::ManifestHead],
) -> CliResult<Loaded> {
    let kind = data_kind(spec)?;
    let (data, skipped) = match built_in(spec)? {
        Some((name, count)) => (load_built_in(name, count, opts, split, seed)?, Vec::new()),
        None => load_file(spec, opts, known)?,
    };
    data.validate()?;
    let normalize = if kind == DataKind::Images { normalize_of(opts) } else { Normalize::None };
    Ok(Loaded { data, kind, skipped, normalize })
}

fn load_built_in(name: &str, count: Option<usize>, opts: &ImageOptions, split: Split, seed: u64) -> CliResult<Dataset> {
    let seed = if split == Split::HeldOut { held_out_seed(seed) } else { seed };
    let size = opts.size.0 as usize;
    Ok(match name {
        "synthetic-a" => data::synthetic::try_shapes_task_a(count.unwrap_or(12000), size, seed)?,
        "synthetic-b" => data::synthetic::try_scenes_task_b(count.unwrap_or(500), size, seed)?,
        _ => {
            let dir = data::digits::default_dir()
                .ok_or_else(|| Error::InvalidInput(format!("the digits data set was not found; set {}", data::digits::ENV_DIR)))?;
            let (train, test) = data::digits::fixed_split(&data::digits::load(&dir)?);
            let digits = if split == Split::HeldOut { test } else { train };
            if name == "digits" {
                data::digits::single_as_scene_input(&digits, seed)?
            } else {
                data::digits::scenes(&digits, count.unwrap_or(500), data::digits::TASK_B_DIGITS, seed)?
            }
        }
    })
}

/// The data set in `spec`, and what an image folder's walk skipped.
fn load_file(spec: &str, opts: &ImageOptions, known: &[data::manifest::ManifestHead]) -> CliResult<(Dataset, Vec<data::Skipped>)> {
    let path = Path::new(spec);
    if path.extension().is_some_and(|e| e == "safetensors") {
        Ok((data::tensor_file::load(path)?, Vec::new()))
    } else if path.extension().is_some_and(|e| e == "csv") {
        let (data, report) = data::manifest::load_heads_with_report(path, opts, known)?;
        Ok((data, report.skipped))
    } else if path.is_dir() {
        let (data, report) = data::image_folder::load_with_report(path, opts)?;
        Ok((data, report.skipped))
    } else if !path.exists() {
        Err(Error::Io {
            path: spec.into(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or directory, and not a built-in data set name"),
        }
        .into())
    } else {
        Err(usage(format!("{spec:?}: expected a built-in data set, a folder, a .csv manifest or a .safetensors file")))
    }
}

/// The line printed once a data set is loaded: how many examples, and per class how many (or
/// per label how many are present), so that a missing or nearly empty folder shows at once.
pub fn describe_loaded(spec: &str, data: &Dataset, skipped: &[data::Skipped]) -> String {
    const SHOWN: usize = 20;
    let counts = data.positives_per_output();
    let name = |j: usize| data.label_names.get(j).cloned().unwrap_or_else(|| j.to_string());
    let mut parts: Vec<String> = counts.iter().take(SHOWN).enumerate().map(|(j, c)| format!("{} {c}", name(j))).collect();
    if counts.len() > SHOWN {
        parts.push(format!("and {} more", counts.len() - SHOWN));
    }
    let what = match data.targets {
        Targets::Classes { num_classes, .. } => format!("{num_classes} classes"),
        Targets::Labels { k, .. } => format!("{k} labels, present in"),
        ref t => format!("{} targets", t.kind_name()),
    };
    let mut line = format!("data {spec}: {} examples, {what}: {}", data.n, parts.join(", "));
    if !skipped.is_empty() {
        const SKIPPED_SHOWN: usize = 5;
        let root = Path::new(spec);
        let shown: Vec<String> = skipped
            .iter()
            .take(SKIPPED_SHOWN)
            .map(|s| format!("{} ({})", s.path.strip_prefix(root).unwrap_or(&s.path).display(), s.reason))
            .collect();
        line += &format!("; skipped {}: {}", skipped.len(), shown.join(", "));
        if skipped.len() > SKIPPED_SHOWN {
            line += &format!(", and {} more", skipped.len() - SKIPPED_SHOWN);
        }
    }
    line
}

/// The line `eval` prints about what it scores, so nobody mistakes training data for a test.
pub fn describe_split(spec: &str, kind: DataKind, data: &Dataset) -> String {
    match kind {
        DataKind::Digits => format!("evaluating on held-out digits: {} examples from the fixed split's test digits", data.n),
        DataKind::Synthetic => format!("evaluating on held-out synthetic data: {} examples from a seed stream training never uses", data.n),
        DataKind::Images | DataKind::Tensor => format!("evaluating on all {} examples of {spec}", data.n),
    }
}

pub fn head_kind_of(data: &Dataset) -> HeadKind {
    if data.targets.is_multi_label() { HeadKind::Labels } else { HeadKind::Classes }
}

/// A training run needs at least two classes: a one-class softmax has nothing to learn.
pub fn check_trainable(data: &Dataset) -> CliResult<()> {
    if let Targets::Classes { num_classes: 1, .. } = data.targets {
        let name = data.label_names.first().map_or(String::new(), |n| format!(" ({n:?})"));
        return Err(failed(format!("--data has only one class{name}: a classifier needs at least two")));
    }
    Ok(())
}

/// The model's head and the data's targets must be the same kind; said in CLI terms (the
/// library's own message speaks of `Head::labels`).
pub fn check_head_kind(net: &Network, data: &Dataset) -> CliResult<()> {
    match (net.head_kind(), data.targets.is_multi_label()) {
        (HeadKind::Classes, true) => Err(failed(
            "the model picks one class per example, but --data has several labels per example; \
             train a label head on it first with `headswap finetune --from MODEL --data DATA --out NEW`",
        )),
        (HeadKind::Labels, false) => Err(failed(
            "the model predicts independent labels, but --data has one class per example; \
             train a class head on it first with `headswap finetune --from MODEL --data DATA --out NEW`",
        )),
        _ => Ok(()),
    }
}

/// The network reads as many input features as the data has, said with both numbers before
/// training or scoring starts (the library would say it mid-run).
pub fn check_input_width(net: &Network, spec: &str, data: &Dataset) -> CliResult<()> {
    if net.input_dim() == data.d { Ok(()) } else { Err(width_mismatch(net.input_dim(), spec, data)) }
}

pub fn width_mismatch(model_width: usize, spec: &str, data: &Dataset) -> crate::CliError {
    failed(format!("the model takes {model_width} input features; --data {spec} has {} per example", data.d))
}

/// Puts `data`'s classes or labels in the model's order by name, so that a folder with only some
/// of the classes, renamed folders, or manifest columns in another order are scored against the
/// right outputs. Without names on either side the match stays positional.
pub fn align_to_model(mut data: Dataset, names: &[String], outputs: usize) -> CliResult<Dataset> {
    // Data without names (a tensor file without label_names), or a model trained on such data,
    // is matched by position, and says so.
    if names.is_empty() || data.label_names.is_empty() {
        if names.len() != data.label_names.len() {
            eprintln!("matched the data's outputs to the model's by position: one of them has no names");
        }
        return Ok(data);
    }
    if names == data.label_names || names.len() != outputs {
        return Ok(data);
    }
    let unknown: Vec<&str> = data.label_names.iter().filter(|n| !names.contains(n)).map(String::as_str).collect();
    let what = if data.targets.is_multi_label() { "labels" } else { "classes" };
    if !unknown.is_empty() {
        return Err(failed(format!(
            "--data has {what} the model does not know: {}; the model knows {}",
            unknown.join(", "),
            names.join(", ")
        )));
    }
    match &mut data.targets {
        Targets::Classes { y, num_classes } => {
            let to_model: Vec<u32> = data.label_names.iter().map(|n| names.iter().position(|m| m == n).unwrap_or(0) as u32).collect();
            y.iter_mut().for_each(|c| *c = to_model[*c as usize]);
            *num_classes = names.len();
        }
        Targets::Labels { y, k } => {
            if data.label_names.len() != names.len() {
                let missing: Vec<&str> = names.iter().filter(|n| !data.label_names.contains(n)).map(String::as_str).collect();
                return Err(failed(format!("--data lacks labels the model predicts: {}", missing.join(", "))));
            }
            let from: Vec<usize> = names.iter().map(|m| data.label_names.iter().position(|n| n == m).unwrap_or(0)).collect();
            let old = std::mem::take(y);
            *y = old.chunks_exact(*k).flat_map(|row| from.iter().map(|&j| row[j]).collect::<Vec<_>>()).collect();
        }
        t => return Err(failed(format!("--data has {} targets, which cannot be matched to the model's names", t.kind_name()))),
    }
    eprintln!("matched the data's {what} to the model's by name");
    data.label_names = names.to_vec();
    data.validate()?;
    Ok(data)
}
