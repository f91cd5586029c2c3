//! `headswap bench`: the matrix products and training workloads of issue 6, each figure next to
//! a baseline measured in the same run.
//!
//! * **K1** (`kernels`): f32 matmul on resident data, every product checked against the float64
//!   reference before it is timed, beside the `gemm` crate on every CPU core.
//! * **T1–T3** (`training`): MLP training through `Trainer` — pretraining (SGD, Adam), a
//!   head-only fine-tune with and without cached trunk features, a full fine-tune — beside the
//!   same training on the CPU (`cpu_baseline`), each with a step profile.
//! * **C1** (`training`): the demo's CNN, pretraining and both fine-tunes (no CPU baseline).
//! * **C2** (`c2`, issue 13): torchvision's ResNet-18, the frozen trunk's features at 224×224 and
//!   64×64 and a whole fine-tuning step at 64×64, batch 32, images/s and bytes on the device; its
//!   PyTorch side is `scripts/c2_pytorch.py`, run beside it. Not in the default set (minutes on
//!   lavapipe): `--only c2`; `--only c2-64` runs its 64×64 rows alone (the f32 features and the
//!   fine-tune step), for A/B runs of kernel changes.
//! * **DP** (`data_parallel`, issue 15): T1's and T2's shapes trained by this binary under
//!   `mpirun -np N`, N = 1, 2, 4: step time, bytes exchanged per step, gradient accumulation
//!   against plain steps per example, and the exchange overlapped
//!   with the backward against the plain one in alternating runs. Needs the `distributed` feature
//!   and `mpirun` on PATH; without them the default set skips it with one line, and `--only dp`
//!   fails.
//!
//! [`run`] returns a [`BenchReport`]: a table through `Display` (`table`), JSON through
//! `to_json` and back through `from_json` (`json`). With `HEADSWAP_BENCH_SMOKE=1` everything runs
//! at a tiny size once: enough to prove the code works, the numbers mean nothing.
//!
//! **Method: a workload's figure does not depend on what ran before it.** A run of several
//! workloads starts this binary once per workload (`headswap bench --only W --json`), one after
//! another, and merges their reports; `HEADSWAP_BENCH_ISOLATE=0` runs them in this process
//! instead. What one workload leaves behind — the rayon threads `gemm` starts for a CPU baseline,
//! the device's allocations and pipelines, the allocator's heap — then cannot slow the next. Inside
//! a workload every GPU side (its runs, then its step profiles) is timed before any CPU baseline
//! runs, and each GPU run is preceded by a warm-up run of its own that compiles its pipelines.

mod c2;
mod cpu_baseline;
mod data_parallel;
mod json;
pub mod kernel_cmd;
mod kernels;
mod table;
mod training;

pub use table::BenchReport;

use crate::{CliResult, failed, usage};
use headswap::gpu::Gpu;
use headswap::rng::Rng;
use std::process::{Command, Stdio};
use std::time::Instant;

/// What `headswap bench` was asked for.
#[derive(Debug, Clone, Default)]
pub struct BenchOptions {
    /// Scale the training workloads' data down (T1: 6,000 samples instead of 60,000) and time
    /// fewer repetitions. The report says so.
    pub quick: bool,
    /// Run only these workloads: `k1`, `t1`, `t2`, `t3`, `c1`, `c2`, `dp`, comma-separated. `None`:
    /// [`DEFAULT_WORKLOADS`].
    pub only: Option<String>,
    /// Seeds the data, the networks and the shuffles.
    pub seed: u64,
}

/// How big the workloads are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// The sizes of issue 6.
    Full,
    /// Training data scaled down 10×, fewer timed repetitions.
    Quick,
    /// Tiny shapes, one repetition: proves the code runs (CI); the numbers mean nothing.
    Smoke,
}

impl Scale {
    /// `Smoke` when `HEADSWAP_BENCH_SMOKE=1` is set, else `Quick` or `Full` from `opts.quick`.
    pub fn of(opts: &BenchOptions) -> Scale {
        if std::env::var("HEADSWAP_BENCH_SMOKE").is_ok_and(|v| v == "1") {
            Scale::Smoke
        } else if opts.quick {
            Scale::Quick
        } else {
            Scale::Full
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Scale::Full => "full",
            Scale::Quick => "quick",
            Scale::Smoke => "smoke",
        }
    }
}

/// The workloads [`BenchOptions::only`] can name, in the order they run.
pub const WORKLOADS: [&str; 8] = ["k1", "t1", "t2", "t3", "c1", "c2", "c2-64", "dp"];

/// What runs without `--only`: every workload but C2, whose ResNet-18 at 224×224 takes minutes
/// on lavapipe by itself (DP only where it can run: [`data_parallel::unavailable`]).
pub const DEFAULT_WORKLOADS: [&str; 6] = ["k1", "t1", "t2", "t3", "c1", "dp"];

/// Runs the workloads `opts` asks for at [`Scale::of`]`(opts)`: one in this process, several
/// each in a process of its own (unless `HEADSWAP_BENCH_ISOLATE=0`).
pub fn run(opts: &BenchOptions) -> CliResult<BenchReport> {
    let mut wanted = selected(opts.only.as_deref())?;
    if wanted.contains(&"dp")
        && let Some(why) = data_parallel::unavailable()
    {
        // asked for by name it fails; in the default set it is skipped, with one line saying why
        if opts.only.is_some() {
            return Err(failed(format!("the dp workload cannot run: {why}")));
        }
        eprintln!("bench: dp skipped: {why}");
        wanted.retain(|w| *w != "dp");
    }
    let scale = Scale::of(opts);
    let isolate = std::env::var("HEADSWAP_BENCH_ISOLATE").map_or(true, |v| v != "0");
    if wanted.len() > 1 && isolate {
        run_isolated(opts, &wanted, scale)
    } else {
        let gpu = crate::gpu()?;
        run_here(&gpu, opts.seed, &wanted, scale)
    }
}

fn selected(only: Option<&str>) -> CliResult<Vec<&'static str>> {
    let Some(only) = only else { return Ok(DEFAULT_WORKLOADS.to_vec()) };
    let mut out = Vec::new();
    for part in only.split(',').map(|p| p.trim().to_ascii_lowercase()).filter(|p| !p.is_empty()) {
        match WORKLOADS.iter().find(|w| **w == part) {
            Some(w) if !out.contains(w) => out.push(*w),
            Some(_) => {}
            None => return Err(usage(format!("unknown benchmark {part:?}; the workloads are {}", WORKLOADS.join(", ")))),
        }
    }
    if out.is_empty() {
        return Err(usage(format!("--only names no workload; the workloads are {}", WORKLOADS.join(", "))));
    }
    // the documented order, whatever order they were named in
    out.sort_by_key(|w| WORKLOADS.iter().position(|x| x == w));
    Ok(out)
}

/// What the figures mean and how they were taken.
fn notes(scale: Scale, isolated: bool) -> Vec<String> {
    let mut notes = vec![
        if isolated {
            "Method: each workload ran in a fresh process of its own (this binary, `bench --only W`), one after another; inside a workload every GPU side (runs, then step profiles) was timed before any CPU baseline ran.".to_string()
        } else {
            "Method: the workloads ran one after another in this one process (one workload alone, or HEADSWAP_BENCH_ISOLATE=0); inside a workload every GPU side (runs, then step profiles) was timed before any CPU baseline ran.".to_string()
        },
        "K1: data resident on the device; upload and read-back excluded. GPU: median over timed submissions, each holding `batch` copies of the dispatch in one compute pass, submitted and waited for (device poll) inside the timed region; time per product = submission time / batch. CPU: gemm crate 0.19, f32, Parallelism::Rayon(0) (all cores), same operands, median of calls after warm-up, after every GPU product.".to_string(),
        "K1 check: every product (GPU and CPU) against the float64 reference before timing, tolerance 1e-5·√k + 1e-4·|ref|; products with m·n·k > 2^30 are checked on 16 sampled rows and 16 sampled columns. A failed check prints no number.".to_string(),
        "T: seeded uniform random inputs in [0, 1) and random targets (the work per step does not depend on the values); batch 128, a new shuffle every epoch, the last partial batch trained. samples/s = median over the epochs after the first (warm-up); end-to-end = samples × epochs / the whole fit (upload, plans, feature caching included; pipelines are compiled beforehand by a one-epoch warm-up run on 192 samples). T2: the cached and uncached runs alternate (3 rounds at full scale), samples/s the median over every round's timed epochs, end to end the median over the rounds. CPU baseline: the same model, loss and optimizer in plain Rust, matrix products through gemm on all cores, elementwise work on one core.".to_string(),
        "Step profile: the same step as Trainer builds it; step = one compute pass, one submission, wait (median); Σ kernels = each dispatch timed alone (see the method), medians summed.".to_string(),
        "DP: this binary under `mpirun --oversubscribe --bind-to none -np N` (N = 1, 2, 4; every rank its own device on this adapter), T1's shape (synthetic-a 28×28, 784→512→256→8, SGD, global batch 64, everything trains) and T2's (a 256→4 label head on the frozen trunk's cached features, the trunk from one epoch of T1 alone); ms/step = each run's median epoch after the first over its steps, the median over runs; T1 at N = 2 alternates plain and overlapped (--overlap-exchange) runs. Accumulation rows (acc K): at N ≥ 2, T1 and T2 at 32 rows per rank per pass, plain steps of 32·N examples (one exchange per step) alternating with --accumulate 4 steps of 4·32·N (one exchange per 4 passes); µs/ex and bytes/ex per example of the step. Ranks beyond the cores run oversubscribed.".to_string(),
        "C2: torchvision's ResNet-18, random weights with non-default BatchNorm statistics, seeded images in [-2, 2), batch 32. Features: a head-only fine-tune with cached features, images over the run's time outside its epochs (upload, plans, folds, the frozen trunk's forward passes; pipelines compiled by a warm-up run), median over the runs. Fine-tune: every layer trainable, BatchNorm in training mode, SGD momentum 0.9, median over the epochs after the first. Bytes: the network's parameters and running statistics plus what the run allocated (FitReport::bytes_allocated).".to_string(),
    ];
    match scale {
        Scale::Full => {}
        Scale::Quick => notes.push(
            "QUICK: training data scaled down 10× (T1 6,000 samples, T2 500, T3 2,000) and fewer timed repetitions; not the issue's sizes."
                .into(),
        ),
        Scale::Smoke => notes.push("SMOKE: tiny shapes and one repetition to prove the code runs; the numbers mean nothing.".into()),
    }
    notes
}

/// Runs `wanted` in this process, in [`WORKLOADS`] order.
fn run_here(gpu: &Gpu, seed: u64, wanted: &[&str], scale: Scale) -> CliResult<BenchReport> {
    let started = Instant::now();
    let s = gpu.summary();
    let mut report = BenchReport {
        date: utc_date(),
        adapter: s.name,
        backend: s.backend,
        device_type: s.device_type,
        driver: s.driver,
        driver_info: s.driver_info,
        timestamp_queries: s.timestamp_queries,
        scale,
        seed,
        cpu_threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        notes: notes(scale, false),
        matmul: Vec::new(),
        training: Vec::new(),
        models: Vec::new(),
        data_parallel: Vec::new(),
        seconds: 0.0,
    };
    for &w in wanted {
        match w {
            "k1" => report.matmul = kernels::bench_matmul(gpu, scale, seed)?,
            "t1" => report.training.extend(training::bench_t1(gpu, scale, seed)?),
            "t2" => report.training.extend(training::bench_t2(gpu, scale, seed)?),
            "t3" => report.training.extend(training::bench_t3(gpu, scale, seed)?),
            "c1" => report.training.extend(training::bench_c1(gpu, scale, seed)?),
            "dp" => report.data_parallel = data_parallel::bench_dp(scale, seed)?,
            "c2-64" => report.models.extend(c2::bench_c2_small(gpu, scale, seed)?),
            _ => report.models.extend(c2::bench_c2(gpu, scale, seed)?),
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Runs each of `wanted` as `headswap bench --only W --json` in a process of its own, one after
/// another (their log output goes to this process's stderr), and merges the reports.
fn run_isolated(opts: &BenchOptions, wanted: &[&str], scale: Scale) -> CliResult<BenchReport> {
    let started = Instant::now();
    let exe = std::env::current_exe().map_err(|e| failed(format!("cannot find the headswap binary to run each workload in: {e}")))?;
    let mut merged: Option<BenchReport> = None;
    for &w in wanted {
        let mut cmd = Command::new(&exe);
        cmd.args(["bench", "--only", w, "--json", "--seed", &opts.seed.to_string()]);
        if opts.quick {
            cmd.arg("--quick");
        }
        let out = cmd
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| failed(format!("cannot start {} for the {w} workload: {e}", exe.display())))?;
        let text = String::from_utf8_lossy(&out.stdout);
        // A workload whose matmul check failed exits non-zero after printing its report: keep the
        // report (this run fails at the end, as a single-process run would); anything else is fatal.
        let part = match BenchReport::from_json(&text) {
            Ok(r) => r,
            Err(e) if out.status.success() => return Err(failed(format!("the {w} workload's report: {e}"))),
            Err(_) => return Err(failed(format!("the {w} workload's process failed ({})", out.status))),
        };
        if part.scale != scale {
            return Err(failed(format!("the {w} workload ran at scale {}, not {}", part.scale.name(), scale.name())));
        }
        match &mut merged {
            None => merged = Some(part),
            Some(m) => {
                m.matmul.extend(part.matmul);
                m.training.extend(part.training);
                m.models.extend(part.models);
                m.data_parallel.extend(part.data_parallel);
            }
        }
    }
    let mut report = merged.ok_or_else(|| failed("no workload ran"))?;
    report.notes = notes(scale, true);
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

fn rand_vec(rng: &mut Rng, n: usize, lo: f64, hi: f64) -> Vec<f32> {
    (0..n).map(|_| rng.uniform(lo, hi) as f32).collect()
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { 0.5 * (v[n / 2 - 1] + v[n / 2]) }
}

/// Today's UTC date as `YYYY-MM-DD`.
fn utc_date() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let days = (secs / 86_400) as i64;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_names_workloads() {
        assert_eq!(selected(None).ok().unwrap(), DEFAULT_WORKLOADS.to_vec());
        assert_eq!(selected(Some("c2,k1")).ok().unwrap(), vec!["k1", "c2"]);
        assert_eq!(selected(Some("T3, k1")).ok().unwrap(), vec!["k1", "t3"]);
        assert_eq!(selected(Some("t1,t1")).ok().unwrap(), vec!["t1"]);
        assert!(selected(Some("t4")).is_err());
        assert!(selected(Some(",")).is_err());
    }

    #[test]
    fn the_date_is_iso() {
        let d = utc_date();
        assert_eq!(d.len(), 10, "{d}");
        assert_eq!((&d[4..5], &d[7..8]), ("-", "-"));
        assert!(d[..4].parse::<u32>().unwrap() >= 2024);
    }

    #[test]
    fn the_median_of_even_and_odd_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}
