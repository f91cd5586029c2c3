//! Training options as a `TrainConfig`, the checks that relate options to each other or to the
//! data, and the checks on output paths that run before any training, so that a typo cannot
//! cost a finished run.

use crate::args::{Given, OptimizerName, TrainingOptions};
use crate::{CliResult, failed, usage};
use headswap::data::{Dataset, Targets};
use headswap::train::{Optimizer, Precision, TrainConfig};
use std::path::{Path, PathBuf};

/// The run the training options describe.
pub fn train_config(o: &TrainingOptions, given: &Given) -> CliResult<TrainConfig> {
    let sgd = o.optimizer == OptimizerName::Sgd;
    if let Some(flag) = ["momentum", "nesterov"].into_iter().find(|f| !sgd && given.has(f)) {
        return Err(usage(format!("--{flag} applies to --optimizer sgd only")));
    }
    let lr = o.lr.unwrap_or(if sgd { 0.05 } else { 1e-3 });
    let mut optimizer = match o.optimizer {
        OptimizerName::Sgd => Optimizer::sgd(lr).momentum(o.momentum).nesterov(o.nesterov),
        OptimizerName::Adam => Optimizer::adam(lr),
        OptimizerName::Adamw => Optimizer::adamw(lr),
    };
    if let Some(wd) = o.weight_decay {
        optimizer = optimizer.weight_decay(wd);
    }
    if o.early_stop.is_some() && o.val == 0.0 {
        return Err(usage("--early-stop watches the validation loss: give --val F too (e.g. --val 0.2)"));
    }
    let mut cfg = TrainConfig {
        optimizer,
        batch_size: o.batch,
        schedule: o.schedule,
        shuffle: !o.no_shuffle,
        seed: o.seed,
        validation_fraction: o.val,
        early_stopping: o.early_stop,
        threshold: o.threshold,
        batch_norm: o.batch_norm,
        augment: o.augment.then(headswap::train::Augment::torchvision),
        cache_features: !o.no_cache,
        head_weighting: o.head_weighting,
        overlap_exchange: o.overlap_exchange,
        accumulate_steps: o.accumulate,
        frozen_storage: if o.frozen_f16 { Precision::F16 } else { Precision::F32 },
        ..TrainConfig::default()
    };
    cfg.bce.pos_weight = o.pos_weight.clone();
    Ok(cfg)
}

/// `--pos-weight` weighs each label's positives, so it needs label data with that many labels.
pub fn check_pos_weight(cfg: &TrainConfig, data: &Dataset) -> CliResult<()> {
    match (&cfg.bce.pos_weight, &data.targets) {
        (None, _) => Ok(()),
        (Some(_), Targets::Classes { .. }) => {
            Err(usage("--pos-weight weighs the positives of each label; --data has one class per example, not labels"))
        }
        (Some(w), Targets::Labels { k, .. }) if w.len() != *k => {
            Err(usage(format!("--pos-weight has {} values; --data has {k} labels", w.len())))
        }
        _ => Ok(()),
    }
}

/// Checks before training that `path` can be written, so a typo in `--out` does not throw away
/// a finished run: its folder must exist and accept a new file, and it must not be a folder.
fn check_writable(flag: &str, path: &Path) -> CliResult<()> {
    if path.is_dir() {
        return Err(usage(format!("--{flag} {} is a folder; give a file name", path.display())));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(failed(format!("--{flag} {}: the folder {} does not exist", path.display(), dir.display())));
    }
    let probe = dir.join(format!(".headswap-write-check-{}", std::process::id()));
    std::fs::File::create(&probe).map_err(|e| failed(format!("--{flag} {}: cannot write in {}: {e}", path.display(), dir.display())))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// `--report DIR`, created and checked to be writable before any training, so that a bad path
/// cannot cost a finished run.
pub fn report_dir(dir: Option<&Path>) -> CliResult<Option<PathBuf>> {
    let Some(dir) = dir else { return Ok(None) };
    if dir.exists() && !dir.is_dir() {
        return Err(usage(format!("--report {} is a file; give a folder for the report", dir.display())));
    }
    std::fs::create_dir_all(dir).map_err(|e| failed(format!("--report {}: cannot create the folder: {e}", dir.display())))?;
    let probe = dir.join(format!(".headswap-write-check-{}", std::process::id()));
    std::fs::File::create(&probe).map_err(|e| failed(format!("--report {}: cannot write in it: {e}", dir.display())))?;
    let _ = std::fs::remove_file(&probe);
    Ok(Some(dir.to_path_buf()))
}

/// Whether two paths name the same file (as written, or once made absolute; an existing file
/// also through its canonical path).
pub fn same_path(a: &Path, b: &Path) -> bool {
    a == b
        || std::path::absolute(a).ok() == std::path::absolute(b).ok()
        || matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
}

/// `--out` and `--save-state`: both writable, and not the same file (the checkpoint would
/// silently replace the state file).
pub fn check_outputs(out: &Path, state: Option<&Path>) -> CliResult<()> {
    check_writable("out", out)?;
    if let Some(state) = state {
        check_writable("save-state", state)?;
        if same_path(out, state) {
            return Err(usage("--save-state and --out must be different files"));
        }
    }
    Ok(())
}
