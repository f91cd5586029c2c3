//! What a bench run measured ([`BenchReport`] and its rows) and the table it prints.

use super::Scale;
use headswap::train::profile::StepProfile;
use std::fmt;

/// One K1 product's correctness check against the float64 reference.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// Output elements compared.
    pub checked: usize,
    /// Output elements in all.
    pub total: usize,
    /// The largest |result − reference|.
    pub max_abs_err: f64,
    /// The largest |result − reference| / tolerance (≤ 1 passes); the tolerance is
    /// `1e-5·√k + 1e-4·|reference|`, as in the kernel tests.
    pub worst: f64,
    pub passed: bool,
}

/// A median time and the rate it gives.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timed {
    /// Timed submissions (GPU) or calls (CPU).
    pub runs: usize,
    /// Median time of one product, milliseconds.
    pub median_ms: f64,
    /// Fastest time of one product, milliseconds.
    pub min_ms: f64,
    /// `2·m·n·k / median`.
    pub gflops: f64,
}

/// One K1 product.
#[derive(Debug, Clone, PartialEq)]
pub struct MatmulResult {
    pub name: String,
    /// `NN`, `NT` (`A·Bᵀ`) or `TN` (`Aᵀ·B`).
    pub form: String,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    /// The GPU result's check.
    pub check: Check,
    /// Dispatches per timed submission.
    pub batch: usize,
    /// The GPU's time; `None` when the check failed.
    pub gpu: Option<Timed>,
    /// The CPU baseline's check.
    pub cpu_check: Check,
    /// The CPU baseline's time; `None` when its check failed.
    pub cpu: Option<Timed>,
}

impl MatmulResult {
    /// GPU GFLOP/s over CPU GFLOP/s.
    pub fn ratio(&self) -> Option<f64> {
        Some(self.gpu?.gflops / self.cpu?.gflops)
    }
}

/// The CPU baseline of a training workload.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuTrainResult {
    /// Median over the timed epochs.
    pub samples_per_sec: f64,
    pub epoch_samples_per_sec: Vec<f64>,
    /// Samples × epochs over the whole run (feature caching included).
    pub end_to_end_samples_per_sec: f64,
    /// Mean batch loss of the last epoch.
    pub final_loss: f64,
}

/// One kernel's share of a profiled step.
#[derive(Debug, Clone, PartialEq)]
pub struct KernelTime {
    pub kernel: String,
    pub calls: usize,
    pub total_ms: f64,
}

/// One dispatch of a profiled step, timed alone.
#[derive(Debug, Clone, PartialEq)]
pub struct DispatchTime {
    pub index: usize,
    pub kernel: String,
    pub detail: String,
    pub ms: f64,
}

/// A training step's time next to the sum of its kernels' times: the library's
/// [`StepProfile`] as the report keeps it (owned names, so that a report read back from a
/// workload process's JSON is the same value).
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// How the dispatches were timed (`timestamps`, `cpu-wall`).
    pub timing: String,
    pub timing_note: String,
    pub reps: usize,
    pub batch: usize,
    pub dispatches: usize,
    pub step_ms: f64,
    pub pipelined_step_ms: f64,
    pub kernel_sum_ms: f64,
    /// `step_ms / kernel_sum_ms`.
    pub overhead_ratio: f64,
    /// By total time, largest first.
    pub kernels: Vec<KernelTime>,
    pub per_dispatch: Vec<DispatchTime>,
}

impl From<&StepProfile> for Profile {
    fn from(p: &StepProfile) -> Profile {
        Profile {
            timing: p.timing.name().to_string(),
            timing_note: p.timing_note.clone(),
            reps: p.reps,
            batch: p.batch,
            dispatches: p.dispatches,
            step_ms: p.step_ms,
            pipelined_step_ms: p.pipelined_step_ms,
            kernel_sum_ms: p.kernel_sum_ms,
            overhead_ratio: p.overhead_ratio(),
            kernels: p.kernels.iter().map(|k| KernelTime { kernel: k.kernel.to_string(), calls: k.calls, total_ms: k.total_ms }).collect(),
            per_dispatch: p
                .per_dispatch
                .iter()
                .map(|d| DispatchTime { index: d.index, kernel: d.kernel.to_string(), detail: d.detail.clone(), ms: d.ms })
                .collect(),
        }
    }
}

/// One training workload.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainResult {
    /// `T1-sgd`, `T1-adam`, `T2-cached`, `T2-uncached`, `T2-cached-f16`, `T3`, `C1-pretrain`, `C1-head`, `C1-all`.
    pub id: String,
    pub name: String,
    pub n: usize,
    pub batch: usize,
    pub epochs: usize,
    /// Median over epochs 2.. (the first is a warm-up).
    pub samples_per_sec: f64,
    pub epoch_samples_per_sec: Vec<f64>,
    /// Samples × epochs over `FitReport::seconds` (upload, plan building, feature caching and
    /// every epoch).
    pub end_to_end_samples_per_sec: f64,
    pub final_loss: f64,
    pub dispatches_per_step: f64,
    pub submissions_per_step: f64,
    pub bytes_allocated: u64,
    pub cached_features: bool,
    /// The CPU baseline trainer's run (MLP workloads; none for C1's CNN).
    pub cpu: Option<CpuTrainResult>,
    pub profile: Option<Profile>,
}

impl TrainResult {
    /// GPU samples/s over the CPU baseline's (median epochs).
    pub fn ratio(&self) -> Option<f64> {
        Some(self.samples_per_sec / self.cpu.as_ref()?.samples_per_sec.max(1e-12))
    }
}

/// One row of a whole-model workload (C2): images/s of a model's forward passes or training
/// steps, and what it holds on the device.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelResult {
    /// `C2-features-224`, `C2-features-64`, `C2-features-64-f16` (the cache in f16),
    /// `C2-finetune-64` (the side is the image's).
    pub id: String,
    pub name: String,
    /// Image side (square, 3 channels).
    pub image: usize,
    pub batch: usize,
    /// Images per run (feature rows) or per epoch (fine-tune).
    pub n: usize,
    /// Feature runs, or fine-tune epochs (the first a warm-up, not in the median).
    pub runs: usize,
    /// Median over the runs (features) or over the epochs after the first (fine-tune).
    pub images_per_sec: f64,
    /// Every run's (every epoch's) rate.
    pub run_images_per_sec: Vec<f64>,
    /// The network's parameters and BatchNorm running statistics, 4 bytes each.
    pub network_bytes: u64,
    /// What the run allocated for itself (`FitReport::bytes_allocated`).
    pub run_bytes: u64,
    pub dispatches_per_step: Option<f64>,
    pub final_loss: Option<f64>,
    pub profile: Option<Profile>,
}

impl ModelResult {
    /// Network and run together.
    pub fn device_bytes(&self) -> u64 {
        self.network_bytes + self.run_bytes
    }
}

/// One DP row: a training workload under `mpirun -np ranks` (issue 15).
#[derive(Debug, Clone, PartialEq)]
pub struct DpResult {
    /// `T1-dp` or `T2-dp`.
    pub id: String,
    pub name: String,
    pub ranks: usize,
    /// Whether the exchange overlapped the backward (`--overlap-exchange`).
    pub overlap: bool,
    /// Micro-batches per step (`--accumulate`; 1: each step is one pass).
    pub accumulate: usize,
    pub n: usize,
    /// The global batch of one optimizer step.
    pub batch: usize,
    pub epochs: usize,
    /// The median over the runs of each run's median epoch time after the first over its steps.
    pub ms_per_step: f64,
    /// Each run's figure (several where plain and overlapped runs alternated).
    pub run_ms_per_step: Vec<f64>,
    /// Global batch over the step time.
    pub samples_per_sec: f64,
    /// What one rank sends (and receives) per step: the trainable gradients, f32.
    pub bytes_per_step: u64,
    pub submissions_per_step: f64,
}

/// Everything one `headswap bench` measured.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchReport {
    /// UTC date of the run, `YYYY-MM-DD`.
    pub date: String,
    pub adapter: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub driver_info: String,
    pub timestamp_queries: bool,
    pub scale: Scale,
    pub seed: u64,
    /// Logical CPUs the CPU baselines may use.
    pub cpu_threads: usize,
    /// What the figures mean and how they were taken.
    pub notes: Vec<String>,
    pub matmul: Vec<MatmulResult>,
    pub training: Vec<TrainResult>,
    /// C2's whole-model rows.
    pub models: Vec<ModelResult>,
    /// DP's rows.
    pub data_parallel: Vec<DpResult>,
    /// Seconds the whole run took.
    pub seconds: f64,
}

impl BenchReport {
    /// Training results by id.
    pub fn training_result(&self, id: &str) -> Option<&TrainResult> {
        self.training.iter().find(|t| t.id == id)
    }

    /// A whole-model row by id.
    pub fn model_result(&self, id: &str) -> Option<&ModelResult> {
        self.models.iter().find(|t| t.id == id)
    }

    /// T2 with cached features over T2 without: (median epochs, end to end).
    pub fn t2_cache_speedup(&self) -> Option<(f64, f64)> {
        let (c, u) = (self.training_result("T2-cached")?, self.training_result("T2-uncached")?);
        Some((c.samples_per_sec / u.samples_per_sec, c.end_to_end_samples_per_sec / u.end_to_end_samples_per_sec))
    }

    /// T2's cached features in f16 against f32, measured in the same run: (bytes on the device f16
    /// over f32, samples/s f16 over f32, median epochs).
    pub fn t2_f16_vs_f32(&self) -> Option<(f64, f64)> {
        let (h, c) = (self.training_result("T2-cached-f16")?, self.training_result("T2-cached")?);
        Some((h.bytes_allocated as f64 / c.bytes_allocated.max(1) as f64, h.samples_per_sec / c.samples_per_sec))
    }

    /// Whether a K1 product (GPU or CPU baseline) failed its float64 check.
    pub fn any_check_failed(&self) -> bool {
        self.matmul.iter().any(|r| !r.check.passed || !r.cpu_check.passed)
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}
impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "headswap bench, {} (UTC), scale {}, seed {}", self.date, self.scale.name(), self.seed)?;
        writeln!(f, "adapter  {} ({}, {})", self.adapter, self.backend, self.device_type)?;
        writeln!(f, "driver   {} ({})", self.driver, self.driver_info)?;
        writeln!(f, "CPU baseline threads: {}", self.cpu_threads)?;
        for n in &self.notes {
            writeln!(f, "- {n}")?;
        }
        if !self.matmul.is_empty() {
            writeln!(f)?;
            writeln!(f, "K1  f32 matmul (GFLOP/s = 2·m·n·k / median time)")?;
            writeln!(
                f,
                "{:<38} {:<4} {:>5} {:>5} {:>5}  {:<18} {:>5} {:>4} {:>9} {:>9} {:>9} {:>9} {:>8}",
                "product", "form", "m", "n", "k", "check err/tol", "batch", "runs", "GPU ms", "GPU GF/s", "CPU ms", "CPU GF/s", "GPU/CPU"
            )?;
            for r in &self.matmul {
                let check = format!(
                    "{} {:.3}{}",
                    if r.check.passed { "ok" } else { "FAIL" },
                    r.check.worst,
                    if r.check.checked < r.check.total { " sampled" } else { "" }
                );
                let (gms, ggf) = match r.gpu {
                    Some(t) => (format!("{:.3}", t.median_ms), format!("{:.2}", t.gflops)),
                    None => ("-".into(), "refused".into()),
                };
                let (cms, cgf) = match r.cpu {
                    Some(t) => (format!("{:.3}", t.median_ms), format!("{:.1}", t.gflops)),
                    None => ("-".into(), if r.cpu_check.passed { "-".into() } else { "FAIL".into() }),
                };
                let ratio = r.ratio().map(|x| format!("{x:.3}")).unwrap_or_else(|| "-".into());
                let runs = r.gpu.map(|t| t.runs).unwrap_or(0);
                writeln!(
                    f,
                    "{:<38} {:<4} {:>5} {:>5} {:>5}  {:<18} {:>5} {:>4} {:>9} {:>9} {:>9} {:>9} {:>8}",
                    r.name, r.form, r.m, r.n, r.k, check, r.batch, runs, gms, ggf, cms, cgf, ratio
                )?;
            }
        }
        if !self.training.is_empty() {
            writeln!(f)?;
            writeln!(f, "T   training (samples/s: median over epochs after the first; e2e = whole fit incl. setup)")?;
            writeln!(
                f,
                "{:<12} {:>6} {:>3} {:>10} {:>10} {:>10} {:>10} {:>8} {:>6} {:>5} {:>10} {:>8} {:>8} {:>6} {:>8} {:>8}",
                "id",
                "n",
                "ep",
                "GPU smp/s",
                "GPU e2e",
                "CPU smp/s",
                "CPU e2e",
                "GPU/CPU",
                "disp",
                "subm",
                "GPU bytes",
                "step ms",
                "Σkern ms",
                "ratio",
                "GPU loss",
                "CPU loss"
            )?;
            for t in &self.training {
                let (step, sum, ratio) = match &t.profile {
                    Some(p) => (format!("{:.2}", p.step_ms), format!("{:.2}", p.kernel_sum_ms), format!("{:.2}", p.overhead_ratio)),
                    None => ("-".into(), "-".into(), "-".into()),
                };
                let dash = || "-".to_string();
                let cpu = |f: fn(&CpuTrainResult) -> f64, prec: usize| t.cpu.as_ref().map_or_else(dash, |c| format!("{:.prec$}", f(c)));
                writeln!(
                    f,
                    "{:<12} {:>6} {:>3} {:>10.0} {:>10.0} {:>10} {:>10} {:>8} {:>6.1} {:>5.2} {:>10} {:>8} {:>8} {:>6} {:>8.4} {:>8}",
                    t.id,
                    t.n,
                    t.epochs,
                    t.samples_per_sec,
                    t.end_to_end_samples_per_sec,
                    cpu(|c| c.samples_per_sec, 0),
                    cpu(|c| c.end_to_end_samples_per_sec, 0),
                    t.ratio().map_or_else(dash, |r| format!("{r:.3}")),
                    t.dispatches_per_step,
                    t.submissions_per_step,
                    mib(t.bytes_allocated),
                    step,
                    sum,
                    ratio,
                    t.final_loss,
                    cpu(|c| c.final_loss, 4)
                )?;
            }
            if let Some((e, e2e)) = self.t2_cache_speedup() {
                writeln!(f, "T2 cached / uncached: {e:.2}× (median epochs), {e2e:.2}× (end to end, feature caching included)")?;
            }
            if let Some((bytes, speed)) = self.t2_f16_vs_f32() {
                writeln!(
                    f,
                    "T2 cached features in f16 / f32: {bytes:.3}× the bytes on the device ({:.1}% less), {speed:.2}× the samples/s (median epochs)",
                    100.0 * (1.0 - bytes)
                )?;
            }
            for t in &self.training {
                let Some(p) = &t.profile else { continue };
                writeln!(f)?;
                writeln!(
                    f,
                    "{} step profile: {} dispatches, step {:.2} ms (back to back {:.2} ms), Σ kernels {:.2} ms, step/Σ {:.2}; {} reps; {}",
                    t.id, p.dispatches, p.step_ms, p.pipelined_step_ms, p.kernel_sum_ms, p.overhead_ratio, p.reps, p.timing_note
                )?;
                for k in p.kernels.iter().take(8) {
                    writeln!(
                        f,
                        "    {:<28} ×{:<3} {:>9.3} ms {:>5.1}%",
                        k.kernel,
                        k.calls,
                        k.total_ms,
                        100.0 * k.total_ms / p.kernel_sum_ms.max(1e-12)
                    )?;
                }
            }
        }
        if !self.models.is_empty() {
            self.fmt_models(f)?;
        }
        if !self.data_parallel.is_empty() {
            self.fmt_data_parallel(f)?;
        }
        writeln!(f)?;
        self.fmt_targets(f)?;
        write!(f, "total {:.1} s", self.seconds)
    }
}

/// Burn 0.22 (wgpu, lavapipe) and PyTorch (CPU, 2 threads) on ResNet-18, images/s, as issue 13
/// gives them: (row id, Burn, PyTorch).
pub const C2_ISSUE_FIGURES: [(&str, f64, f64); 3] =
    [("C2-features-224", 0.97, 46.0), ("C2-features-64", 14.0, 633.0), ("C2-finetune-64", 5.0, 177.0)];

impl BenchReport {
    fn fmt_models(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f)?;
        writeln!(f, "C2  ResNet-18 (images/s: median over runs, fine-tune over epochs after the first; bytes on the device)")?;
        writeln!(
            f,
            "{:<16} {:>5} {:>5} {:>5} {:>4} {:>9} {:>22} {:>11} {:>11} {:>11} {:>7}",
            "id", "image", "batch", "n", "runs", "img/s", "every run", "net bytes", "run bytes", "total", "disp"
        )?;
        for m in &self.models {
            let every = m.run_images_per_sec.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>().join(" ");
            writeln!(
                f,
                "{:<16} {:>5} {:>5} {:>5} {:>4} {:>9.2} {:>22} {:>11} {:>11} {:>11} {:>7}",
                m.id,
                m.image,
                m.batch,
                m.n,
                m.runs,
                m.images_per_sec,
                every,
                mib(m.network_bytes),
                mib(m.run_bytes),
                mib(m.device_bytes()),
                m.dispatches_per_step.map_or_else(|| "-".to_string(), |d| format!("{d:.0}"))
            )?;
        }
        for m in &self.models {
            writeln!(f, "  {}: {}", m.id, m.name)?;
        }
        for m in &self.models {
            let Some(p) = &m.profile else { continue };
            writeln!(
                f,
                "{} step profile: {} dispatches, step {:.1} ms (back to back {:.1} ms), Σ kernels {:.1} ms, step/Σ {:.2}; {} reps; {}",
                m.id, p.dispatches, p.step_ms, p.pipelined_step_ms, p.kernel_sum_ms, p.overhead_ratio, p.reps, p.timing_note
            )?;
            for k in p.kernels.iter().take(10) {
                writeln!(
                    f,
                    "    {:<28} ×{:<3} {:>10.2} ms {:>5.1}%",
                    k.kernel,
                    k.calls,
                    k.total_ms,
                    100.0 * k.total_ms / p.kernel_sum_ms.max(1e-12)
                )?;
            }
        }
        Ok(())
    }

    fn fmt_data_parallel(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f)?;
        writeln!(
            f,
            "DP  data-parallel training under mpirun -np N (ms/step: median epoch after the first over its steps; bytes: sent per rank per step)"
        )?;
        writeln!(
            f,
            "{:<6} {:>2} {:<8} {:>6} {:>5} {:>3} {:>9} {:>8} {:>11} {:>11} {:>8} {:>5}  runs (ms/step)",
            "id", "N", "exchange", "n", "batch", "ep", "ms/step", "µs/ex", "samples/s", "bytes/step", "bytes/ex", "subm"
        )?;
        for d in &self.data_parallel {
            let runs = d.run_ms_per_step.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>().join(" ");
            let exchange = match (d.overlap, d.accumulate) {
                (true, _) => "overlap".to_string(),
                (false, 1) => "plain".to_string(),
                (false, k) => format!("acc {k}"),
            };
            writeln!(
                f,
                "{:<6} {:>2} {:<8} {:>6} {:>5} {:>3} {:>9.2} {:>8.1} {:>11.0} {:>11} {:>8.1} {:>5.2}  {runs}",
                d.id,
                d.ranks,
                exchange,
                d.n,
                d.batch,
                d.epochs,
                d.ms_per_step,
                1000.0 * d.ms_per_step / d.batch as f64,
                d.samples_per_sec,
                d.bytes_per_step,
                d.bytes_per_step as f64 / d.batch as f64,
                d.submissions_per_step
            )?;
        }
        let pick = |overlap: bool| {
            self.data_parallel.iter().find(|d| d.id == "T1-dp" && d.ranks == 2 && d.overlap == overlap && d.accumulate == 1)
        };
        if let (Some(p), Some(o)) = (pick(false), pick(true)) {
            writeln!(f, "T1 N=2 overlapped / plain step time: {:.3} (alternating runs)", o.ms_per_step / p.ms_per_step)?;
        }
        // each accumulating row follows the plain row it alternated with (the same micro-batch)
        for w in self.data_parallel.windows(2) {
            let (p, a) = (&w[0], &w[1]);
            if a.accumulate > 1 && p.accumulate == 1 && !p.overlap && p.id == a.id && p.ranks == a.ranks {
                let per_example = |d: &DpResult| d.ms_per_step / d.batch as f64;
                writeln!(
                    f,
                    "{} N={} accumulate {} / plain, same micro-batch: time per example {:.3}, bytes per example {:.3} (alternating runs)",
                    a.id,
                    a.ranks,
                    a.accumulate,
                    per_example(a) / per_example(p),
                    (a.bytes_per_step as f64 / a.batch as f64) / (p.bytes_per_step as f64 / p.batch as f64)
                )?;
            }
        }
        for d in self.data_parallel.iter().filter(|d| !d.overlap).map(|d| (&d.id, &d.name)).collect::<std::collections::BTreeMap<_, _>>() {
            writeln!(f, "  {}: {}", d.0, d.1)?;
        }
        Ok(())
    }

    fn fmt_targets(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "targets (issue 6; C2 issue 13){}:", if self.scale == Scale::Full { "" } else { " (NOT at the issue's sizes)" })?;
        let mark = |ok: bool| if ok { "met" } else { "NOT met" };
        if let Some(r) = self.matmul.iter().find(|r| r.name == "square 1024")
            && let Some(t) = r.gpu
        {
            writeln!(
                f,
                "  K1 N=1024 ≥ 25 GFLOP/s (2× Burn's 12.7): {:.2} GFLOP/s = {:.2}× Burn — {}",
                t.gflops,
                t.gflops / 12.7,
                mark(t.gflops >= 25.0)
            )?;
        }
        for (id, burn) in [("T1-sgd", 2121.0), ("T1-adam", 2121.0), ("T3", 2091.0)] {
            if let Some(t) = self.training_result(id) {
                writeln!(
                    f,
                    "  {id} ≥ 3× Burn ({:.0} samples/s): {:.0} samples/s = {:.2}× Burn — {}",
                    3.0 * burn,
                    t.samples_per_sec,
                    t.samples_per_sec / burn,
                    mark(t.samples_per_sec >= 3.0 * burn)
                )?;
            }
        }
        if let Some(t) = self.training_result("T2-cached") {
            writeln!(
                f,
                "  T2 cached > 104,000 samples/s (PyTorch CPU): {:.0} samples/s — {}",
                t.samples_per_sec,
                mark(t.samples_per_sec > 104_000.0)
            )?;
        }
        if let Some((e, _)) = self.t2_cache_speedup() {
            writeln!(f, "  T2 cached ≥ 10× uncached: {e:.2}× — {}", mark(e >= 10.0))?;
        }
        for (id, burn, torch) in C2_ISSUE_FIGURES {
            if let Some(m) = self.model_result(id) {
                writeln!(
                    f,
                    "  {id} ≥ 3× Burn ({:.2} img/s; issue 13): {:.2} img/s = {:.2}× Burn, {:.3}× the issue's PyTorch ({torch}) — {}",
                    3.0 * burn,
                    m.images_per_sec,
                    m.images_per_sec / burn,
                    m.images_per_sec / torch,
                    mark(m.images_per_sec >= 3.0 * burn)
                )?;
            }
        }
        if let Some(p) = self.training_result("T1-sgd").and_then(|t| t.profile.as_ref()) {
            writeln!(f, "  T1 step within 20% of Σ kernels: step/Σ = {:.2} — {}", p.overhead_ratio, mark(p.overhead_ratio <= 1.2))?;
        }
        Ok(())
    }
}
