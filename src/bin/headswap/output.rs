//! What the CLI prints: lines on stdout that survive a closed pipe, each epoch's line as the epoch
//! ends, a progress bar only on a terminal, JSON documents, and `--report` charts.

use crate::{CliError, CliResult, failed};
use headswap::kernels::metrics::OrNa;
use headswap::train::{EpochReport, FitReport, Metrics, Precision, Progress, TrainConfig, Trainer};
use headswap::{Error, Gpu};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::cell::RefCell;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once stdout turns out to be a closed pipe; later output is dropped.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Writes one line to stdout and flushes it, so that a reader at the other end of a pipe sees
/// it now. A closed pipe (`headswap info | head -1`) is not a failure: the reader has what it
/// wanted, so the rest of the output is dropped and the command still finishes its work (a
/// training run still saves its checkpoint). Any other write error is reported.
pub fn emit(line: &str) -> CliResult<()> {
    // in an MPI job rank 0 speaks for all
    if STDOUT_CLOSED.load(Ordering::Relaxed) || !crate::replicas::is_primary() {
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{line}").and_then(|_| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            STDOUT_CLOSED.store(true, Ordering::Relaxed);
            Ok(())
        }
        Err(e) => Err(Error::Io { path: "stdout".into(), source: e }.into()),
        Ok(()) => Ok(()),
    }
}

/// `println!` through [`emit`]: `outln!("...")?`.
macro_rules! outln {
    ($($t:tt)*) => { $crate::output::emit(&format!($($t)*)) };
}

/// "15", "0.0638": a per-step ratio to three significant digits.
fn three_digits(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let decimals = (2 - x.abs().log10().floor() as i32).max(0) as usize;
    let s = format!("{x:.decimals$}");
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s }
}

/// One epoch's line. Epochs are counted from 1 here and in every JSON document.
/// A network of named heads shows each head's loss and quality where one head shows its score.
fn epoch_line(e: &EpochReport) -> String {
    let quality = |m: &Metrics| {
        if m.heads.is_empty() { format!("score {:.4}", OrNa(m.score())) } else { format!("[{}]", crate::heads::line(m)) }
    };
    let val = e.validation.as_ref().map(|v| format!("  val loss {:.4} {}", v.loss, quality(v))).unwrap_or_default();
    format!(
        "epoch {:>3}  lr {:.5}  loss {:.4}  {}{val}  {:.1}s  {:.0} samples/s",
        e.epoch + 1,
        e.lr,
        e.train.loss,
        quality(&e.train),
        e.seconds,
        e.samples_per_sec
    )
}

pub fn fit_json(report: &FitReport) -> serde_json::Value {
    let epochs: Vec<serde_json::Value> = report
        .epochs
        .iter()
        .map(|e| {
            let mut v = serde_json::json!({
                "epoch": e.epoch + 1, "lr": e.lr, "loss": e.train.loss, "score": e.train.score(),
                "val_loss": e.validation.as_ref().map(|v| v.loss), "val_score": e.validation.as_ref().map(|v| v.score()),
                "seconds": e.seconds, "samples_per_sec": e.samples_per_sec,
            });
            // a network of named heads: each head's loss and metrics (one head's JSON is unchanged)
            if !e.train.heads.is_empty()
                && let Some(o) = v.as_object_mut()
            {
                o.insert("heads".into(), crate::heads::json(&e.train));
                o.insert("val_heads".into(), e.validation.as_ref().map_or(serde_json::Value::Null, crate::heads::json));
            }
            v
        })
        .collect();
    serde_json::json!({
        "epochs": epochs, "best_epoch": report.best_epoch.map(|e| e + 1), "lowest_trainable_layer": report.lowest_trainable,
        "cached_features": report.cached_features, "frozen_storage": report.frozen_storage.name(),
        "frozen_weights": report.frozen_weights.name(), "frozen_weights_bytes": report.frozen_weights_bytes, "dispatches_per_step": report.dispatches_per_step,
        "submissions_per_step": report.submissions_per_step, "bytes_allocated": report.bytes_allocated,
        "bytes_exchanged_per_step": report.bytes_exchanged_per_step, "seconds": report.seconds,
    })
}

/// What follows a run's epoch lines (which [`Training`] printed as they happened): the epoch
/// whose weights were kept, and the engine's counts; or with `json` the whole run as one document.
pub fn print_summary(report: &FitReport, json: bool) -> CliResult<()> {
    if json {
        return outln!("{}", fit_json(report));
    }
    // with early stopping the network keeps the best epoch's weights, which need not be the last
    // epoch's (whether or not the patience ran out before the epochs asked for)
    if let (Some(best), Some(last)) = (report.best_epoch, report.last())
        && best != last.epoch
    {
        outln!("kept the weights of epoch {} (lowest validation loss), not those of the last epoch, {}", best + 1, last.epoch + 1)?;
    }
    outln!(
        "{} dispatches and {} submission per step; {} bytes of training state on the GPU{}",
        three_digits(report.dispatches_per_step),
        three_digits(report.submissions_per_step),
        report.bytes_allocated,
        match (report.cached_features, report.frozen_storage) {
            (false, _) => String::new(),
            (true, Precision::F32) => "; head trained on cached trunk features".into(),
            (true, p) => format!("; head trained on cached trunk features stored in {}", p.name()),
        }
    )?;
    if report.frozen_weights != Precision::F32 {
        outln!(
            "the frozen trunk's weights are stored in {}: {} bytes on the GPU",
            report.frozen_weights.name(),
            report.frozen_weights_bytes
        )?;
    }
    if report.bytes_exchanged_per_step > 0 {
        let (_, ranks) = crate::replicas::place();
        outln!("data parallel over {ranks} processes: {} bytes of gradients exchanged per step", report.bytes_exchanged_per_step)?;
    }
    Ok(())
}

/// A trainer whose progress shows as it happens: each epoch's line on stdout when the epoch ends
/// (not with `--json`, whose one document comes at the end), so that a run piped to a file or
/// another program is followed live; and, on a terminal only, a bar of the current epoch's steps
/// on stderr.
pub struct Training {
    pub trainer: Trainer,
    bar: ProgressBar,
    /// The first failure to write an epoch line (the progress callback cannot return it).
    failure: Rc<RefCell<Option<CliError>>>,
}

impl Training {
    pub fn new(gpu: &Gpu, cfg: TrainConfig, json: bool) -> Training {
        let target = if std::io::stderr().is_terminal() { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
        let bar = ProgressBar::with_draw_target(Some(1), target);
        if let Ok(style) = ProgressStyle::with_template("epoch {prefix:>7} [{bar:30}] {pos:>5}/{len} steps  {msg}") {
            bar.set_style(style.progress_chars("=> "));
        }
        let failure = Rc::new(RefCell::new(None));
        let (b, f) = (bar.clone(), failure.clone());
        let trainer = crate::replicas::attach(Trainer::new(gpu, cfg)).with_progress(move |p| match p {
            Progress::Step { epoch, step, steps_per_epoch, epochs } => {
                b.set_length(steps_per_epoch as u64);
                b.set_prefix(format!("{}/{}", epoch + 1, epochs));
                b.set_position(step as u64 + 1);
            }
            Progress::Epoch(r) => {
                b.set_message(format!("loss {:.4}  score {:.3}  {:.0} samples/s", r.train.loss, OrNa(r.train.score()), r.samples_per_sec));
                if !json {
                    let line = epoch_line(r);
                    if let Err(e) = b.suspend(|| emit(&line)) {
                        f.borrow_mut().get_or_insert(e);
                    }
                }
            }
        });
        Training { trainer, bar, failure }
    }

    /// Clears the bar; fails if an epoch line could not be written.
    pub fn finish(&self) -> CliResult<()> {
        self.bar.finish_and_clear();
        self.failure.borrow_mut().take().map_or(Ok(()), Err)
    }
}

impl Drop for Training {
    fn drop(&mut self) {
        // also when training failed: no half-drawn bar above the error line
        self.bar.finish_and_clear();
    }
}

/// Refuses to keep a run whose loss went non-finite in or before the epoch whose weights the
/// network holds: saving it would replace a good file at `--out` with NaN weights.
pub fn check_converged(report: &FitReport) -> CliResult<()> {
    let not_finite = |e: &&EpochReport| !e.train.loss.is_finite() || e.validation.as_ref().is_some_and(|v| !v.loss.is_finite());
    let held = report.best_epoch.or(report.last().map(|e| e.epoch));
    match report.epochs.iter().find(not_finite) {
        Some(e) if held.is_none_or(|h| e.epoch <= h) => {
            let loss = if e.train.loss.is_finite() { e.validation.as_ref().map_or(e.train.loss, |v| v.loss) } else { e.train.loss };
            Err(failed(format!("training diverged (loss {loss} at epoch {}); nothing saved — try a lower --lr", e.epoch + 1)))
        }
        _ => Ok(()),
    }
}

/// `--report DIR`: training curves, and per-label F1 bars for a label head, titled with the
/// data the F1 was measured on (the validation split, or without `--val` the training data).
pub fn write_report(dir: Option<&Path>, name: &str, report: &FitReport, label_names: &[String]) -> CliResult<()> {
    let Some(dir) = dir else { return Ok(()) };
    std::fs::create_dir_all(dir).map_err(|e| Error::Io { path: dir.display().to_string(), source: e })?;
    let curves = dir.join(format!("{name}_curves.png"));
    headswap::report::training_curves(&curves, name, report)?;
    eprintln!("report: {}", curves.display());
    // the epoch whose weights the model keeps
    let held = report.best_epoch.and_then(|b| report.epochs.iter().find(|e| e.epoch == b)).or(report.last());
    let Some(epoch) = held else { return Ok(()) };
    let (metrics, measured_on) = match &epoch.validation {
        Some(v) => (v, "the validation split"),
        None => (&epoch.train, "the training data (no --val split)"),
    };
    if let Some(labels) = &metrics.labels {
        let names: Vec<String> =
            if label_names.len() == labels.f1.len() { label_names.to_vec() } else { (0..labels.f1.len()).map(|i| i.to_string()).collect() };
        let bars = dir.join(format!("{name}_label_f1.png"));
        let title = format!("{name}: per-label F1 on {measured_on}, epoch {}", epoch.epoch + 1);
        headswap::report::label_f1_bars(&bars, &title, &names, &labels.f1)?;
        eprintln!("report: {} ({title})", bars.display());
    }
    Ok(())
}
