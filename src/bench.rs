//! Benchmarks: the matrix products and training workloads of issue 6, each figure next to a
//! baseline measured in the same run.
//!
//! * **K1** — f32 matmul on resident data (upload and read-back excluded): square 256…2048, the
//!   MLP's forward products and the NT/TN forms its backward pass needs. Every product is first
//!   checked against the float64 [`reference::matmul`] (on a sample of rows and columns for the
//!   largest shapes); a product that fails gets no number. Then: a warm-up, and the median of
//!   many timed submissions, each holding `batch` copies of the dispatch in one compute pass and
//!   waited for inside the timed region (`batch` is chosen so a submission lasts tens of
//!   milliseconds and its fixed cost does not dominate small shapes). Baseline: the `gemm` crate
//!   (f32, `Parallelism::Rayon(0)`: every core) on the same operands, also checked first.
//! * **T1–T3** — training through [`Trainer`] on seeded random data (the work per step does
//!   not depend on the values): samples/s is the median over the epochs after a warm-up epoch,
//!   plus the end-to-end rate (everything `fit`/`fine_tune` does, feature caching included).
//!   Baseline: the same model, batch, loss and optimizer trained by a plain CPU implementation
//!   built on `gemm` (every core for the matrix products), in the same run. Each workload also
//!   gets a [`profile_step`]: the step's time next to the sum of its kernels' times.
//! * **C1** — the demo's CNN on its 16×16 shape images: pretraining, head-only fine-tuning on
//!   cached trunk features, full fine-tuning (no CPU baseline: the CPU trainer is an MLP).
//!
//! [`run`] returns a [`BenchReport`]: a table through `Display`, JSON through
//! [`BenchReport::to_json`]. With `HEADSWAP_BENCH_SMOKE=1` in the environment (or
//! [`Scale::Smoke`] through [`run_at`]) everything runs at a tiny size once: enough to prove the
//! code works, the numbers mean nothing.

use crate::data::{Dataset, Targets};
use crate::error::{Error, Result};
use crate::gpu::{Dispatch, Gpu, Tensor};
use crate::kernels::matmul::{Epilogue, Transpose, matmul_dispatch};
use crate::nn::{Head, Network};
use crate::reference;
use crate::rng::Rng;
use crate::train::profile::{ProfileOptions, StepProfile, Timing, profile_step};
use crate::train::{FitReport, Freeze, Optimizer, TrainConfig, Trainer};
use serde_json::{Value, json};
use std::fmt;
use std::time::Instant;

/// What `headswap bench` was asked for.
#[derive(Debug, Clone, Default)]
pub struct BenchOptions {
    /// Scale the training workloads' data down (T1: 6,000 samples instead of 60,000) and time
    /// fewer repetitions. The report says so.
    pub quick: bool,
    /// The caller prints [`BenchReport::to_json`] instead of the table.
    pub json: bool,
    /// Run only these workloads: `k1`, `t1`, `t2`, `t3`, comma-separated. `None`: all.
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

/// The workloads [`BenchOptions::only`] can name.
pub const WORKLOADS: [&str; 5] = ["k1", "t1", "t2", "t3", "c1"];

/// One K1 product's correctness check against the float64 reference.
#[derive(Debug, Clone)]
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
#[derive(Debug, Clone, Copy)]
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
#[derive(Debug, Clone)]
pub struct MatmulResult {
    pub name: String,
    /// `NN`, `NT` (`A·Bᵀ`) or `TN` (`Aᵀ·B`).
    pub form: &'static str,
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
#[derive(Debug, Clone)]
pub struct CpuTrainResult {
    /// Median over the timed epochs.
    pub samples_per_sec: f64,
    pub epoch_samples_per_sec: Vec<f64>,
    /// Samples × epochs over the whole run (feature caching included).
    pub end_to_end_samples_per_sec: f64,
    /// Mean batch loss of the last epoch.
    pub final_loss: f64,
}

/// One training workload.
#[derive(Debug, Clone)]
pub struct TrainResult {
    /// `T1-sgd`, `T1-adam`, `T2-cached`, `T2-uncached`, `T3`.
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
    pub profile: Option<StepProfile>,
}

impl TrainResult {
    /// GPU samples/s over the CPU baseline's (median epochs).
    pub fn ratio(&self) -> Option<f64> {
        Some(self.samples_per_sec / self.cpu.as_ref()?.samples_per_sec.max(1e-12))
    }
}

/// Everything one `headswap bench` measured.
#[derive(Debug, Clone)]
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
    /// Seconds the whole run took.
    pub seconds: f64,
}

/// Runs the workloads `opts` asks for at [`Scale::of`]`(opts)`.
pub fn run(gpu: &Gpu, opts: &BenchOptions) -> Result<BenchReport> {
    run_at(gpu, opts, Scale::of(opts))
}

/// Runs the workloads `opts` asks for at `scale` (`opts.quick` is ignored).
pub fn run_at(gpu: &Gpu, opts: &BenchOptions, scale: Scale) -> Result<BenchReport> {
    let started = Instant::now();
    let wanted = selected(opts.only.as_deref())?;
    let s = gpu.summary();
    let cpu_threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mut notes = vec![
        "K1: data resident on the device; upload and read-back excluded. GPU: median over timed submissions, each holding `batch` copies of the dispatch in one compute pass, submitted and waited for (device poll) inside the timed region; time per product = submission time / batch. CPU: gemm crate 0.19, f32, Parallelism::Rayon(0) (all cores), same operands, median of calls after warm-up.".to_string(),
        "K1 check: every product (GPU and CPU) against the float64 reference before timing, tolerance 1e-5·√k + 1e-4·|ref|; products with m·n·k > 2^30 are checked on 16 sampled rows and 16 sampled columns. A failed check prints no number.".to_string(),
        "T: seeded uniform random inputs in [0, 1) and random targets (the work per step does not depend on the values); batch 128, a new shuffle every epoch, the last partial batch trained. samples/s = median over the epochs after the first (warm-up); end-to-end = samples × epochs / the whole fit (upload, plans, feature caching included; pipelines are compiled beforehand by a one-epoch warm-up run on 192 samples). T2: the cached and uncached runs alternate (3 rounds at full scale), samples/s the median over every round's timed epochs, end to end the median over the rounds. CPU baseline: the same model, loss and optimizer in plain Rust, matrix products through gemm on all cores, elementwise work on one core.".to_string(),
        "Step profile: the same step as Trainer builds it; step = one compute pass, one submission, wait (median); Σ kernels = each dispatch timed alone (see the method), medians summed.".to_string(),
    ];
    match scale {
        Scale::Full => {}
        Scale::Quick => notes.push(
            "QUICK: training data scaled down 10× (T1 6,000 samples, T2 500, T3 2,000) and fewer timed repetitions; not the issue's sizes."
                .into(),
        ),
        Scale::Smoke => notes.push("SMOKE: tiny shapes and one repetition to prove the code runs; the numbers mean nothing.".into()),
    }
    let mut report = BenchReport {
        date: utc_date(),
        adapter: s.name,
        backend: s.backend,
        device_type: s.device_type,
        driver: s.driver,
        driver_info: s.driver_info,
        timestamp_queries: s.timestamp_queries,
        scale,
        seed: opts.seed,
        cpu_threads,
        notes,
        matmul: Vec::new(),
        training: Vec::new(),
        seconds: 0.0,
    };
    if wanted.contains(&"k1") {
        report.matmul = bench_matmul(gpu, scale, opts.seed)?;
    }
    for w in ["t1", "t2", "t3", "c1"] {
        if wanted.contains(&w) {
            let mut r = match w {
                "t1" => bench_t1(gpu, scale, opts.seed)?,
                "t2" => bench_t2(gpu, scale, opts.seed)?,
                "t3" => bench_t3(gpu, scale, opts.seed)?,
                _ => bench_c1(gpu, scale, opts.seed)?,
            };
            report.training.append(&mut r);
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

fn selected(only: Option<&str>) -> Result<Vec<&'static str>> {
    let Some(only) = only else { return Ok(WORKLOADS.to_vec()) };
    let mut out = Vec::new();
    for part in only.split(',').map(|p| p.trim().to_ascii_lowercase()).filter(|p| !p.is_empty()) {
        match WORKLOADS.iter().find(|w| **w == part) {
            Some(w) => out.push(*w),
            None => return Err(Error::invalid(format!("unknown benchmark {part:?}; the workloads are {}", WORKLOADS.join(", ")))),
        }
    }
    if out.is_empty() {
        return Err(Error::invalid(format!("--only names no workload; the workloads are {}", WORKLOADS.join(", "))));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// K1: matrix products

/// How long to time things.
#[derive(Debug, Clone, Copy)]
struct Reps {
    min_runs: usize,
    max_runs: usize,
    /// Keep timing until this many seconds have passed (and `min_runs` are done).
    budget_s: f64,
    /// Aim for GPU submissions of about this many milliseconds.
    target_ms: f64,
    max_batch: usize,
}

impl Reps {
    fn of(scale: Scale) -> Reps {
        match scale {
            Scale::Full => Reps { min_runs: 7, max_runs: 50, budget_s: 3.0, target_ms: 40.0, max_batch: 64 },
            Scale::Quick => Reps { min_runs: 3, max_runs: 10, budget_s: 1.0, target_ms: 20.0, max_batch: 32 },
            Scale::Smoke => Reps { min_runs: 1, max_runs: 1, budget_s: 0.0, target_ms: 0.0, max_batch: 1 },
        }
    }
}

struct Shape {
    name: String,
    t: Transpose,
    m: usize,
    n: usize,
    k: usize,
}

fn k1_shapes(scale: Scale) -> Vec<Shape> {
    let sh = |name: String, t, m, n, k| Shape { name, t, m, n, k };
    if scale == Scale::Smoke {
        return vec![
            sh("square 64".into(), Transpose::NN, 64, 64, 64),
            sh("(32×48)·(48×40)".into(), Transpose::NN, 32, 40, 48),
            sh("dW = Xᵀ·dY (X 32×48, dY 32×40)".into(), Transpose::TN, 48, 40, 32),
            sh("dX = dY·Wᵀ (dY 32×40, W 48×40)".into(), Transpose::NT, 32, 48, 40),
        ];
    }
    let mut v: Vec<Shape> = [256, 512, 1024, 2048].iter().map(|&s| sh(format!("square {s}"), Transpose::NN, s, s, s)).collect();
    v.push(sh("(256×784)·(784×512)".into(), Transpose::NN, 256, 512, 784));
    v.push(sh("(256×512)·(512×256)".into(), Transpose::NN, 256, 256, 512));
    v.push(sh("dW = Xᵀ·dY (X 256×784, dY 256×512)".into(), Transpose::TN, 784, 512, 256));
    v.push(sh("dX = dY·Wᵀ (dY 256×512, W 784×512)".into(), Transpose::NT, 256, 784, 512));
    v
}

fn flags(t: Transpose) -> (bool, bool) {
    match t {
        Transpose::NN => (false, false),
        Transpose::NT => (false, true),
        Transpose::TN => (true, false),
        Transpose::TT => (true, true),
    }
}

fn form_name(t: Transpose) -> &'static str {
    match t {
        Transpose::NN => "NN",
        Transpose::NT => "NT",
        Transpose::TN => "TN",
        Transpose::TT => "TT",
    }
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

fn bench_matmul(gpu: &Gpu, scale: Scale, seed: u64) -> Result<Vec<MatmulResult>> {
    let reps = Reps::of(scale);
    let mut out = Vec::new();
    for (i, s) in k1_shapes(scale).into_iter().enumerate() {
        let _span = tracing::info_span!("k1", shape = %s.name).entered();
        let (ta, tb) = flags(s.t);
        let (m, n, k) = (s.m, s.n, s.k);
        let ashape = if ta { [k, m] } else { [m, k] };
        let bshape = if tb { [n, k] } else { [k, n] };
        let mut rng = Rng::new(seed ^ (0x4b31_0000 + i as u64));
        let a = rand_vec(&mut rng, m * k, -1.0, 1.0);
        let b = rand_vec(&mut rng, k * n, -1.0, 1.0);
        let flops = 2.0 * (m * n * k) as f64;

        // GPU: check, then time.
        let ga = Tensor::from_slice(gpu, &ashape, &a)?;
        let gb = Tensor::from_slice(gpu, &bshape, &b)?;
        let gc = Tensor::zeros(gpu, &[m, n])?;
        gc.fill(gpu, f32::NAN)?;
        let d = matmul_dispatch(gpu, &ga, &gb, &gc, s.t, Epilogue::default())?;
        gpu.run("k1_check", &[&d])?;
        let c = gc.download(gpu)?;
        let check = check_product(&c, &a, &b, m, n, k, s.t, seed + i as u64);
        let (gpu_timed, batch) = if check.passed {
            let (t, b) = time_gpu(gpu, &d, flops, reps)?;
            (Some(t), b)
        } else {
            tracing::error!(shape = %s.name, worst = check.worst, "matmul failed its check; no number");
            (None, 0)
        };
        drop((ga, gb, gc, d));

        // CPU baseline: check, then time.
        let mut cc = vec![f32::NAN; m * n];
        cpu_matmul(&mut cc, &a, &b, m, n, k, s.t);
        let cpu_check = check_product(&cc, &a, &b, m, n, k, s.t, seed + i as u64);
        let cpu = if cpu_check.passed { Some(time_cpu(|| cpu_matmul(&mut cc, &a, &b, m, n, k, s.t), flops, reps)) } else { None };
        out.push(MatmulResult { name: s.name, form: form_name(s.t), m, n, k, check, batch, gpu: gpu_timed, cpu_check, cpu });
    }
    Ok(out)
}

/// Warm-up, then the median over timed submissions of `batch` copies of `d` in one pass.
fn time_gpu(gpu: &Gpu, d: &Dispatch, flops: f64, reps: Reps) -> Result<(Timed, usize)> {
    let submit = |batch: usize| -> Result<f64> {
        let t0 = Instant::now();
        let mut enc = gpu.device().create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("k1") });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("k1"), timestamp_writes: None });
            for _ in 0..batch {
                d.encode(gpu, &mut pass);
            }
        }
        gpu.submit(enc);
        gpu.sync()?;
        Ok(t0.elapsed().as_secs_f64() * 1e3)
    };
    let one = submit(1)?;
    let batch = if reps.target_ms > 0.0 { ((reps.target_ms / one.max(1e-3)).round() as usize).clamp(1, reps.max_batch) } else { 1 };
    if reps.max_runs > 1 {
        submit(batch)?;
    }
    let mut times = Vec::new();
    let t0 = Instant::now();
    while times.len() < reps.min_runs || (times.len() < reps.max_runs && t0.elapsed().as_secs_f64() < reps.budget_s) {
        times.push(submit(batch)? / batch as f64);
    }
    gpu.check("k1")?;
    let med = median(&times);
    let min = times.iter().cloned().fold(f64::INFINITY, f64::min);
    Ok((Timed { runs: times.len(), median_ms: med, min_ms: min, gflops: flops / (med * 1e-3) / 1e9 }, batch))
}

fn time_cpu(mut f: impl FnMut(), flops: f64, reps: Reps) -> Timed {
    f();
    if reps.max_runs > 1 {
        f();
    }
    let mut times = Vec::new();
    let t0 = Instant::now();
    let budget = reps.budget_s / 3.0;
    while times.len() < reps.min_runs || (times.len() < reps.max_runs && t0.elapsed().as_secs_f64() < budget) {
        let t = Instant::now();
        f();
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let med = median(&times);
    let min = times.iter().cloned().fold(f64::INFINITY, f64::min);
    Timed { runs: times.len(), median_ms: med, min_ms: min, gflops: flops / (med * 1e-3) / 1e9 }
}

/// `C[m, n] = op(A)·op(B)` with the gemm crate on every core; `a`, `b` laid out as for the GPU.
fn cpu_matmul(c: &mut [f32], a: &[f32], b: &[f32], m: usize, n: usize, k: usize, t: Transpose) {
    let (ta, tb) = flags(t);
    // (row stride, column stride) of op(A) [m, k] and op(B) [k, n].
    let (a_rs, a_cs) = if ta { (1, m) } else { (k, 1) };
    let (b_rs, b_cs) = if tb { (1, k) } else { (n, 1) };
    gemm_f32(c, m, n, k, a, a_rs, a_cs, b, b_rs, b_cs, false);
}

/// `dst[m, n] (row-major) = [dst +] A·B` where `A[i, p] = a[i·a_rs + p·a_cs]` and
/// `B[p, j] = b[p·b_rs + j·b_cs]`, through `gemm::gemm` on every core.
#[allow(clippy::too_many_arguments)]
fn gemm_f32(
    dst: &mut [f32],
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    a_rs: usize,
    a_cs: usize,
    b: &[f32],
    b_rs: usize,
    b_cs: usize,
    accumulate: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(dst.len() >= m * n, "gemm: dst too small");
    if k > 0 {
        assert!(a.len() > (m - 1) * a_rs + (k - 1) * a_cs, "gemm: lhs too small");
        assert!(b.len() > (k - 1) * b_rs + (n - 1) * b_cs, "gemm: rhs too small");
    }
    // SAFETY: the asserts above keep every strided access of `gemm` inside the slices; `dst` does
    // not alias `a` or `b` (it is borrowed mutably).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            1.0f32, // dst coefficient (read only with `accumulate`)
            1.0f32, // product coefficient
            false,
            false,
            false,
            gemm::Parallelism::Rayon(0),
        );
    }
}

/// Compares `c` with the float64 reference on every element, or on sampled rows and columns when
/// `m·n·k > 2^30`.
#[allow(clippy::too_many_arguments)]
fn check_product(c: &[f32], a: &[f32], b: &[f32], m: usize, n: usize, k: usize, t: Transpose, seed: u64) -> Check {
    let (ta, tb) = flags(t);
    let a64: Vec<f64> = a.iter().map(|&v| v as f64).collect();
    let b64: Vec<f64> = b.iter().map(|&v| v as f64).collect();
    let tol = |r: f64| 1e-5 * (k as f64).sqrt() + 1e-4 * r.abs();
    let mut check = Check { checked: 0, total: m * n, max_abs_err: 0.0, worst: 0.0, passed: true };
    let mut compare = |got: f32, want: f64| {
        let err = (got as f64 - want).abs();
        check.checked += 1;
        if !err.is_finite() || !got.is_finite() {
            check.passed = false;
            check.worst = f64::INFINITY;
            check.max_abs_err = f64::INFINITY;
            return;
        }
        check.max_abs_err = check.max_abs_err.max(err);
        check.worst = check.worst.max(err / tol(want));
    };
    if (m as u128) * (n as u128) * (k as u128) <= 1 << 30 {
        let r = reference::matmul(&a64, &b64, m, n, k, t);
        for (&g, &w) in c.iter().zip(&r) {
            compare(g, w);
        }
    } else {
        let mut rng = Rng::new(seed ^ 0x5a4d_504c);
        let mut pick = |count: usize, of: usize| -> Vec<usize> {
            let mut v: Vec<usize> = vec![0, of - 1];
            v.extend((0..count.saturating_sub(2)).map(|_| rng.below(of as u64) as usize));
            v.sort_unstable();
            v.dedup();
            v
        };
        let rows = pick(16, m);
        let cols = pick(16, n);
        // Sampled rows of op(A) as a row-major [r, k], times the whole op(B).
        let op_a = |i: usize, p: usize| if ta { a64[p * m + i] } else { a64[i * k + p] };
        let op_b = |p: usize, j: usize| if tb { b64[j * k + p] } else { b64[p * n + j] };
        let a_rows: Vec<f64> = rows.iter().flat_map(|&i| (0..k).map(move |p| op_a(i, p))).collect();
        let r = reference::matmul(&a_rows, &b64, rows.len(), n, k, if tb { Transpose::NT } else { Transpose::NN });
        for (ri, &i) in rows.iter().enumerate() {
            for j in 0..n {
                compare(c[i * n + j], r[ri * n + j]);
            }
        }
        // The whole op(A) times sampled columns of op(B) as a row-major [k, s].
        let b_cols: Vec<f64> = (0..k).flat_map(|p| cols.iter().map(move |&j| op_b(p, j))).collect();
        let r = reference::matmul(&a64, &b_cols, m, cols.len(), k, if ta { Transpose::TN } else { Transpose::NN });
        for i in 0..m {
            for (cj, &j) in cols.iter().enumerate() {
                compare(c[i * n + j], r[i * cols.len() + cj]);
            }
        }
    }
    check.passed = check.passed && check.worst <= 1.0;
    check
}

// ---------------------------------------------------------------------------------------------
// T1–T3: training

struct TrainScale {
    t1_n: usize,
    t1_epochs: usize,
    t2_n: usize,
    t2_epochs: usize,
    /// T2: cached and uncached runs alternate this many times (a burst of load elsewhere then
    /// hits both, not just one side of the ratio).
    t2_rounds: usize,
    t3_n: usize,
    t3_epochs: usize,
    /// C1: task-A images, task-B scenes, epochs of each run.
    c1_a_n: usize,
    c1_b_n: usize,
    c1_epochs: usize,
    profile_reps: usize,
}

impl TrainScale {
    fn of(scale: Scale) -> TrainScale {
        match scale {
            Scale::Full => TrainScale {
                t1_n: 60_000,
                t1_epochs: 4,
                t2_n: 5_000,
                t2_epochs: 10,
                t2_rounds: 3,
                t3_n: 20_000,
                t3_epochs: 10,
                c1_a_n: 6_000,
                c1_b_n: 2_000,
                c1_epochs: 4,
                profile_reps: 10,
            },
            Scale::Quick => TrainScale {
                t1_n: 6_000,
                t1_epochs: 4,
                t2_n: 500,
                t2_epochs: 10,
                t2_rounds: 2,
                t3_n: 2_000,
                t3_epochs: 10,
                c1_a_n: 600,
                c1_b_n: 200,
                c1_epochs: 4,
                profile_reps: 5,
            },
            Scale::Smoke => TrainScale {
                t1_n: 300,
                t1_epochs: 2,
                t2_n: 200,
                t2_epochs: 2,
                t2_rounds: 1,
                t3_n: 200,
                t3_epochs: 2,
                c1_a_n: 200,
                c1_b_n: 200,
                c1_epochs: 2,
                profile_reps: 1,
            },
        }
    }
}

const INPUTS: usize = 784;
const TRUNK: [usize; 3] = [784, 512, 256];
const BATCH: usize = 128;

fn class_data(n: usize, classes: usize, seed: u64) -> Dataset {
    let mut rng = Rng::new(seed);
    let x = rand_vec(&mut rng, n * INPUTS, 0.0, 1.0);
    let y = (0..n).map(|_| rng.below(classes as u64) as u32).collect();
    Dataset {
        x,
        n,
        d: INPUTS,
        input_shape: vec![INPUTS],
        targets: Targets::Classes { y, num_classes: classes },
        label_names: (0..classes).map(|i| format!("class{i}")).collect(),
    }
}

fn label_data(n: usize, k: usize, seed: u64) -> Dataset {
    let mut rng = Rng::new(seed);
    let x = rand_vec(&mut rng, n * INPUTS, 0.0, 1.0);
    let y = (0..n * k).map(|_| if rng.next_f64() < 0.4 { 1.0 } else { 0.0 }).collect();
    Dataset {
        x,
        n,
        d: INPUTS,
        input_shape: vec![INPUTS],
        targets: Targets::Labels { y, k },
        label_names: (0..k).map(|i| format!("label{i}")).collect(),
    }
}

fn config(optimizer: Optimizer, seed: u64, cache: bool) -> TrainConfig {
    TrainConfig { optimizer, batch_size: BATCH, shuffle: true, seed, cache_features: cache, ..TrainConfig::default() }
}

/// One workload's result from `fits`, runs of the same configuration: samples/s is the median
/// over every run's epochs after its first, end to end the median over the runs; counts and bytes
/// are the last run's.
fn summarize(
    id: &str,
    name: String,
    data: &Dataset,
    epochs: usize,
    fits: &[FitReport],
    cpu: Option<CpuTrainResult>,
    profile: Option<StepProfile>,
) -> TrainResult {
    let rates = |f: &FitReport| f.epochs.iter().map(|e| e.samples_per_sec).collect::<Vec<f64>>();
    let per_epoch: Vec<f64> = fits.iter().flat_map(rates).collect();
    let timed: Vec<f64> = fits.iter().flat_map(|f| rates(f).into_iter().skip(usize::from(f.epochs.len() > 1))).collect();
    let end_to_end: Vec<f64> = fits.iter().map(|f| (data.n * f.epochs.len()) as f64 / f.seconds.max(1e-9)).collect();
    let fit = fits.last().expect("at least one run");
    TrainResult {
        id: id.into(),
        name,
        n: data.n,
        batch: BATCH,
        epochs,
        samples_per_sec: median(&timed),
        epoch_samples_per_sec: per_epoch,
        end_to_end_samples_per_sec: median(&end_to_end),
        final_loss: fit.last().map(|e| e.train.loss).unwrap_or(f64::NAN),
        dispatches_per_step: fit.dispatches_per_step,
        submissions_per_step: fit.submissions_per_step,
        bytes_allocated: fit.bytes_allocated,
        cached_features: fit.cached_features,
        cpu,
        profile,
    }
}

/// One short epoch of the same kind of run on a throwaway network, so that pipeline compilation
/// (a once-per-process cost, seconds on lavapipe) stays out of the measured run.
fn warm_up(gpu: &Gpu, data: &Dataset, head: Head, freeze: Option<Freeze>, cfg: TrainConfig, seed: u64) -> Result<()> {
    let small = data.take(BATCH + BATCH / 2);
    let mut net = Network::new(gpu, &TRUNK, head, seed)?;
    let mut trainer = Trainer::new(gpu, cfg);
    match freeze {
        None => trainer.fit(&mut net, &small, 1)?,
        Some(f) => trainer.fine_tune(&mut net, &small, f, 1)?,
    };
    Ok(())
}

fn bench_t1(gpu: &Gpu, scale: Scale, seed: u64) -> Result<Vec<TrainResult>> {
    let ts = TrainScale::of(scale);
    let data = class_data(ts.t1_n, 10, seed ^ 0x7431);
    let mut out = Vec::new();
    for (id, opt, cpu_opt, what) in [
        ("T1-sgd", Optimizer::sgd(0.05).momentum(0.9), cpu::Opt::Sgd { lr: 0.05, momentum: 0.9 }, "SGD momentum 0.9 lr 0.05"),
        ("T1-adam", Optimizer::adam(1e-3), cpu::Opt::adam(1e-3), "Adam lr 1e-3"),
    ] {
        let _span = tracing::info_span!("bench", id).entered();
        warm_up(gpu, &data, Head::classes(10), None, config(opt, seed, true), seed)?;
        let mut net = Network::new(gpu, &TRUNK, Head::classes(10), seed)?;
        let mut trainer = Trainer::new(gpu, config(opt, seed, true));
        let fit = trainer.fit(&mut net, &data, ts.t1_epochs)?;
        let profile = profile_step(&trainer, &net, &data, Freeze::All, ProfileOptions { reps: ts.profile_reps, timing: Timing::Auto })?;
        let cpu = cpu::fit(&data, &[784, 512, 256, 10], 2, 0, false, cpu_opt, ts.t1_epochs, seed);
        let name = format!("pretrain 784→512→256→10 ReLU, softmax CE, {what}");
        out.push(summarize(id, name, &data, ts.t1_epochs, std::slice::from_ref(&fit), Some(cpu), Some(profile)));
    }
    Ok(out)
}

fn bench_t2(gpu: &Gpu, scale: Scale, seed: u64) -> Result<Vec<TrainResult>> {
    let ts = TrainScale::of(scale);
    let data = label_data(ts.t2_n, 4, seed ^ 0x7432);
    let runs = [("T2-cached", true), ("T2-uncached", false)];
    let cfg = |cache| config(Optimizer::sgd(0.05).momentum(0.9), seed, cache);
    for (id, cache) in runs {
        let _span = tracing::info_span!("bench", id, warm_up = true).entered();
        warm_up(gpu, &data, Head::labels(4), Some(Freeze::Trunk), cfg(cache), seed)?;
    }
    // cached and uncached runs alternate, so the ratio compares like with like on a loaded machine
    let mut fits: [Vec<FitReport>; 2] = Default::default();
    let mut trainers = Vec::new();
    for round in 0..ts.t2_rounds {
        for (i, (id, cache)) in runs.into_iter().enumerate() {
            let _span = tracing::info_span!("bench", id, round).entered();
            let mut net = Network::new(gpu, &TRUNK, Head::classes(10), seed)?;
            net.swap_head(Head::labels(4), seed + 1)?;
            let mut trainer = Trainer::new(gpu, cfg(cache));
            fits[i].push(trainer.fine_tune(&mut net, &data, Freeze::Trunk, ts.t2_epochs)?);
            if round + 1 == ts.t2_rounds {
                trainers.push((trainer, net));
            }
        }
    }
    let mut out = Vec::new();
    for (((id, cache), fits), (trainer, net)) in runs.into_iter().zip(&fits).zip(&trainers) {
        let profile = profile_step(trainer, net, &data, Freeze::Trunk, ProfileOptions { reps: ts.profile_reps, timing: Timing::Auto })?;
        let cpu = cpu::fit(&data, &[784, 512, 256, 4], 2, 2, cache, cpu::Opt::Sgd { lr: 0.05, momentum: 0.9 }, ts.t2_epochs, seed);
        let name = format!(
            "head-only fine-tune: frozen 784→512→256 trunk, new 256→4 sigmoid head, per-label BCE, SGD momentum 0.9 lr 0.05, {} trunk features",
            if cache { "cached" } else { "no cached" }
        );
        out.push(summarize(id, name, &data, ts.t2_epochs, fits, Some(cpu), Some(profile)));
    }
    Ok(out)
}

fn bench_t3(gpu: &Gpu, scale: Scale, seed: u64) -> Result<Vec<TrainResult>> {
    let ts = TrainScale::of(scale);
    let data = label_data(ts.t3_n, 4, seed ^ 0x7433);
    let _span = tracing::info_span!("bench", id = "T3").entered();
    let cfg = config(Optimizer::sgd(0.01).momentum(0.9), seed, true);
    warm_up(gpu, &data, Head::labels(4), Some(Freeze::All), cfg.clone(), seed)?;
    let mut net = Network::new(gpu, &TRUNK, Head::classes(10), seed)?;
    net.swap_head(Head::labels(4), seed + 1)?;
    let mut trainer = Trainer::new(gpu, cfg);
    let fit = trainer.fine_tune(&mut net, &data, Freeze::All, ts.t3_epochs)?;
    let profile = profile_step(&trainer, &net, &data, Freeze::All, ProfileOptions { reps: ts.profile_reps, timing: Timing::Auto })?;
    let cpu = cpu::fit(&data, &[784, 512, 256, 4], 2, 0, false, cpu::Opt::Sgd { lr: 0.01, momentum: 0.9 }, ts.t3_epochs, seed);
    let name = "full fine-tune: every layer trainable, 784→512→256→4, per-label BCE, SGD momentum 0.9 lr 0.01".to_string();
    Ok(vec![summarize("T3", name, &data, ts.t3_epochs, std::slice::from_ref(&fit), Some(cpu), Some(profile))])
}

/// C1: the demo's CNN (`headswap demo --trunk cnn`) on its 16×16 synthetic shape images: conv
/// 3×3 ×8 + ReLU, max pool 2, conv 3×3 ×16 + ReLU, max pool 2, dense 64 + ReLU; pretrained on
/// task A (8 shape classes, softmax CE, SGD momentum 0.9 lr 0.05), then head-swapped to task B
/// (4 labels per scene, per-label BCE, Adam lr 3e-3) and fine-tuned head-only on cached features
/// and with every layer trainable. Batch 128 like T1–T3 (the demo uses 64 and 32). No CPU baseline:
/// the CPU trainer is an MLP.
fn bench_c1(gpu: &Gpu, scale: Scale, seed: u64) -> Result<Vec<TrainResult>> {
    let ts = TrainScale::of(scale);
    let a = crate::data::synthetic::shapes_task_a(ts.c1_a_n, 16, seed ^ 0xc1a);
    let b = crate::data::synthetic::scenes_task_b(ts.c1_b_n, 16, seed ^ 0xc1b);
    let trunk = crate::demo::DemoConfig::default().cnn_trunk(&a.input_shape)?;
    let classes = a.num_outputs();
    let k = b.num_outputs();
    let describe = trunk.iter().map(|l| l.describe()).collect::<Vec<_>>().join(" | ");
    let new_net = |head: Head, seed: u64| Network::from_specs(gpu, a.d, trunk.clone(), Default::default(), head, seed);
    let sgd = config(Optimizer::sgd(0.05).momentum(0.9), seed, true);
    let adam = config(Optimizer::adam(3e-3), seed, true);
    let reps = ProfileOptions { reps: ts.profile_reps, timing: Timing::Auto };
    let mut out = Vec::new();
    // warm-up: compile every pipeline of the three runs on a few batches
    {
        let _span = tracing::info_span!("bench", id = "C1-warm-up").entered();
        let mut net = new_net(Head::classes(classes), seed)?;
        Trainer::new(gpu, sgd.clone()).fit(&mut net, &a.take(BATCH + BATCH / 2), 1)?;
        for freeze in [Freeze::Trunk, Freeze::All] {
            let mut n = net.try_clone()?;
            n.swap_head(Head::labels(k), seed + 1)?;
            Trainer::new(gpu, adam.clone()).fine_tune(&mut n, &b.take(BATCH + BATCH / 2), freeze, 1)?;
        }
    }
    let _span = tracing::info_span!("bench", id = "C1").entered();
    let mut base = new_net(Head::classes(classes), seed)?;
    let mut trainer = Trainer::new(gpu, sgd);
    let fit = trainer.fit(&mut base, &a, ts.c1_epochs)?;
    let profile = profile_step(&trainer, &base, &a, Freeze::All, reps)?;
    let name = format!("CNN pretrain {describe} → {classes} classes, 16×16 shapes, softmax CE, SGD momentum 0.9 lr 0.05");
    out.push(summarize("C1-pretrain", name, &a, ts.c1_epochs, std::slice::from_ref(&fit), None, Some(profile)));
    for (id, freeze, what) in
        [("C1-head", Freeze::Trunk, "head only, cached trunk features"), ("C1-all", Freeze::All, "every layer trainable")]
    {
        let mut net = base.try_clone()?;
        net.swap_head(Head::labels(k), seed + 1)?;
        let mut trainer = Trainer::new(gpu, adam.clone());
        let fit = trainer.fine_tune(&mut net, &b, freeze, ts.c1_epochs)?;
        let profile = profile_step(&trainer, &net, &b, freeze, reps)?;
        let name = format!("CNN fine-tune on 4-label scenes, new 64→{k} head, per-label BCE, Adam lr 3e-3, {what}");
        out.push(summarize(id, name, &b, ts.c1_epochs, std::slice::from_ref(&fit), None, Some(profile)));
    }
    Ok(out)
}

/// The CPU baseline trainer: an MLP with ReLU hidden layers, softmax CE or per-label BCE (summed
/// over labels, averaged over examples: the engine's default), SGD with momentum or Adam
/// (PyTorch's update rules), matrix products through gemm on every core.
mod cpu {
    use super::{CpuTrainResult, gemm_f32, median};
    use crate::data::{Dataset, Targets};
    use crate::rng::Rng;
    use std::time::Instant;

    #[derive(Debug, Clone, Copy)]
    pub enum Opt {
        Sgd { lr: f32, momentum: f32 },
        Adam { lr: f32, beta1: f32, beta2: f32, eps: f32 },
    }

    impl Opt {
        pub fn adam(lr: f32) -> Opt {
            Opt::Adam { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8 }
        }
    }

    struct Layer {
        inputs: usize,
        outputs: usize,
        relu: bool,
        /// `[outputs, inputs]`, then the bias: one flat parameter vector.
        p: Vec<f32>,
        g: Vec<f32>,
        m: Vec<f32>,
        v: Vec<f32>,
    }

    impl Layer {
        fn w(&self) -> &[f32] {
            &self.p[..self.outputs * self.inputs]
        }
    }

    /// Forward through `layers[from..]` for `rows` rows of `x`; `acts[i]` receives layer i's
    /// output `[rows, outputs]` (after ReLU for hidden layers, logits for the last).
    fn forward(layers: &[Layer], from: usize, x: &[f32], rows: usize, acts: &mut [Vec<f32>]) {
        for i in from..layers.len() {
            let l = &layers[i];
            let (before, rest) = acts.split_at_mut(i);
            let input: &[f32] = if i == from { x } else { &before[i - 1] };
            let out = &mut rest[0];
            out.resize(rows * l.outputs, 0.0);
            // out = input · Wᵀ: op(B)[p, j] = W[j, p].
            gemm_f32(out, rows, l.outputs, l.inputs, input, l.inputs, 1, l.w(), 1, l.inputs, false);
            let bias = &l.p[l.outputs * l.inputs..];
            for row in out.chunks_exact_mut(l.outputs) {
                for (v, b) in row.iter_mut().zip(bias) {
                    *v += b;
                    if l.relu && *v < 0.0 {
                        *v = 0.0;
                    }
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub fn fit(
        data: &Dataset,
        sizes: &[usize],
        trunk_len: usize,
        lowest: usize,
        cache: bool,
        opt: Opt,
        epochs: usize,
        seed: u64,
    ) -> CpuTrainResult {
        let started = Instant::now();
        let mut init = Rng::new(seed ^ 0xc0);
        let nl = sizes.len() - 1;
        let mut layers: Vec<Layer> = (0..nl)
            .map(|i| {
                let (fan_in, out) = (sizes[i], sizes[i + 1]);
                let bound = 1.0 / (fan_in as f64).sqrt();
                let len = fan_in * out + out;
                Layer {
                    inputs: fan_in,
                    outputs: out,
                    relu: i + 1 < nl,
                    p: (0..len).map(|_| init.uniform(-bound, bound) as f32).collect(),
                    g: vec![0.0; len],
                    m: vec![0.0; len],
                    v: vec![0.0; len],
                }
            })
            .collect();
        let n = data.n;
        let b = super::BATCH.min(n);
        let out_dim = sizes[nl];
        let mut acts: Vec<Vec<f32>> = vec![Vec::new(); nl];
        // Cached trunk features: computed once, the head trains on them.
        let cached = cache && lowest >= trunk_len && trunk_len > 0;
        let first = if cached { trunk_len } else { 0 };
        let source: Vec<f32> = if cached {
            let mut f = vec![0.0; n * sizes[trunk_len]];
            let mut tmp: Vec<Vec<f32>> = vec![Vec::new(); nl];
            let w = sizes[trunk_len];
            for start in (0..n).step_by(b) {
                let rows = b.min(n - start);
                forward(&layers[..trunk_len], 0, &data.x[start * data.d..(start + rows) * data.d], rows, &mut tmp[..trunk_len]);
                f[start * w..(start + rows) * w].copy_from_slice(&tmp[trunk_len - 1]);
            }
            f
        } else {
            data.x.clone()
        };
        let d_in = sizes[first];
        let mut shuffle = Rng::new(seed);
        let mut xb = vec![0.0f32; b * d_in];
        let mut da: Vec<Vec<f32>> = vec![Vec::new(); nl];
        let mut epoch_rates = Vec::new();
        let mut last_loss = f64::NAN;
        let mut step: i32 = 0;
        for _ in 0..epochs {
            let t0 = Instant::now();
            let order = shuffle.permutation(n);
            let mut loss_sum = 0.0f64;
            let mut batches = 0;
            for chunk in order.chunks(b) {
                let rows = chunk.len();
                xb.resize(rows * d_in, 0.0);
                for (r, &i) in chunk.iter().enumerate() {
                    let i = i as usize;
                    xb[r * d_in..(r + 1) * d_in].copy_from_slice(&source[i * d_in..(i + 1) * d_in]);
                }
                forward(&layers, first, &xb, rows, &mut acts);
                // Loss and dlogits into da[last].
                let logits = &acts[nl - 1];
                let dl = &mut da[nl - 1];
                dl.resize(rows * out_dim, 0.0);
                let scale = 1.0 / rows as f32;
                let mut loss = 0.0f64;
                match &data.targets {
                    Targets::Classes { y, .. } => {
                        for (r, &i) in chunk.iter().enumerate() {
                            let z = &logits[r * out_dim..(r + 1) * out_dim];
                            let g = &mut dl[r * out_dim..(r + 1) * out_dim];
                            let max = z.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                            let sum: f32 = z.iter().map(|v| (v - max).exp()).sum();
                            let target = y[i as usize] as usize;
                            loss += (sum.ln() + max - z[target]) as f64;
                            for (j, (gv, zv)) in g.iter_mut().zip(z).enumerate() {
                                *gv = ((zv - max).exp() / sum - if j == target { 1.0 } else { 0.0 }) * scale;
                            }
                        }
                    }
                    Targets::Labels { y, k } => {
                        for (r, &i) in chunk.iter().enumerate() {
                            for j in 0..*k {
                                let z = logits[r * out_dim + j];
                                let t = y[i as usize * k + j];
                                loss += (z.max(0.0) - z * t + (-z.abs()).exp().ln_1p()) as f64;
                                dl[r * out_dim + j] = (1.0 / (1.0 + (-z).exp()) - t) * scale;
                            }
                        }
                    }
                }
                loss_sum += loss / rows as f64;
                batches += 1;
                // Backward down to `lowest`.
                for i in (lowest..nl).rev() {
                    let (below, rest) = da.split_at_mut(i);
                    let dz = &mut rest[0];
                    let l = &layers[i];
                    if l.relu {
                        for (g, a) in dz.iter_mut().zip(&acts[i]) {
                            if *a <= 0.0 {
                                *g = 0.0;
                            }
                        }
                    }
                    let input: &[f32] = if i == first { &xb } else { &acts[i - 1] };
                    let (o, n_in) = (l.outputs, l.inputs);
                    let layer = &mut layers[i];
                    let (gw, gb) = layer.g.split_at_mut(o * n_in);
                    // dW[o, in] = dzᵀ · input: op(A)[j, r] = dz[r, j].
                    gemm_f32(gw, o, n_in, rows, dz, 1, o, input, n_in, 1, false);
                    gb.fill(0.0);
                    for row in dz.chunks_exact(o) {
                        for (s, v) in gb.iter_mut().zip(row) {
                            *s += v;
                        }
                    }
                    if i > lowest {
                        let da_below = &mut below[i - 1];
                        da_below.resize(rows * n_in, 0.0);
                        // da_below[rows, in] = dz · W.
                        gemm_f32(da_below, rows, n_in, o, dz, o, 1, layer.w(), n_in, 1, false);
                    }
                }
                step += 1;
                for l in &mut layers[lowest..] {
                    update(l, opt, step);
                }
            }
            last_loss = loss_sum / batches.max(1) as f64;
            epoch_rates.push(n as f64 / t0.elapsed().as_secs_f64().max(1e-9));
        }
        let timed = if epoch_rates.len() > 1 { &epoch_rates[1..] } else { &epoch_rates[..] };
        CpuTrainResult {
            samples_per_sec: median(timed),
            epoch_samples_per_sec: epoch_rates.clone(),
            end_to_end_samples_per_sec: (n * epochs) as f64 / started.elapsed().as_secs_f64().max(1e-9),
            final_loss: last_loss,
        }
    }

    fn update(l: &mut Layer, opt: Opt, step: i32) {
        match opt {
            Opt::Sgd { lr, momentum } => {
                for ((p, g), m) in l.p.iter_mut().zip(&l.g).zip(l.m.iter_mut()) {
                    *m = if step == 1 { *g } else { momentum * *m + g };
                    *p -= lr * *m;
                }
            }
            Opt::Adam { lr, beta1, beta2, eps } => {
                let bc1 = 1.0 - beta1.powi(step);
                let bc2_sqrt = (1.0 - beta2.powi(step)).sqrt();
                let step_size = lr / bc1;
                for (((p, g), m), v) in l.p.iter_mut().zip(&l.g).zip(l.m.iter_mut()).zip(l.v.iter_mut()) {
                    *m = beta1 * *m + (1.0 - beta1) * g;
                    *v = beta2 * *v + (1.0 - beta2) * g * g;
                    *p -= step_size * *m / (v.sqrt() / bc2_sqrt + eps);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Output

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

fn timed_json(t: &Option<Timed>) -> Value {
    match t {
        Some(t) => json!({ "runs": t.runs, "median_ms": t.median_ms, "min_ms": t.min_ms, "gflops": t.gflops }),
        None => Value::Null,
    }
}

fn check_json(c: &Check) -> Value {
    let finite = |v: f64| if v.is_finite() { json!(v) } else { Value::Null };
    json!({ "checked": c.checked, "total": c.total, "max_abs_err": finite(c.max_abs_err), "worst_over_tolerance": finite(c.worst), "passed": c.passed })
}

fn profile_json(p: &StepProfile) -> Value {
    json!({
        "timing": p.timing.name(),
        "timing_note": p.timing_note,
        "reps": p.reps,
        "batch": p.batch,
        "dispatches": p.dispatches,
        "step_ms": p.step_ms,
        "pipelined_step_ms": p.pipelined_step_ms,
        "kernel_sum_ms": p.kernel_sum_ms,
        "step_over_kernel_sum": p.overhead_ratio(),
        "kernels": p.kernels.iter().map(|k| json!({ "kernel": k.kernel, "calls": k.calls, "total_ms": k.total_ms })).collect::<Vec<_>>(),
        "dispatches_timed": p.per_dispatch.iter().map(|d| json!({ "index": d.index, "kernel": d.kernel, "detail": d.detail, "ms": d.ms })).collect::<Vec<_>>(),
    })
}

impl BenchReport {
    /// Training results by id.
    pub fn training_result(&self, id: &str) -> Option<&TrainResult> {
        self.training.iter().find(|t| t.id == id)
    }

    /// T2 with cached features over T2 without: (median epochs, end to end).
    pub fn t2_cache_speedup(&self) -> Option<(f64, f64)> {
        let (c, u) = (self.training_result("T2-cached")?, self.training_result("T2-uncached")?);
        Some((c.samples_per_sec / u.samples_per_sec, c.end_to_end_samples_per_sec / u.end_to_end_samples_per_sec))
    }

    /// Everything, as one JSON object.
    pub fn to_json(&self) -> String {
        let matmul: Vec<Value> = self
            .matmul
            .iter()
            .map(|r| {
                json!({
                    "name": r.name, "form": r.form, "m": r.m, "n": r.n, "k": r.k,
                    "check": check_json(&r.check), "batch": r.batch, "gpu": timed_json(&r.gpu),
                    "cpu_check": check_json(&r.cpu_check), "cpu_gemm": timed_json(&r.cpu), "gpu_over_cpu": r.ratio(),
                })
            })
            .collect();
        let training: Vec<Value> = self
            .training
            .iter()
            .map(|t| {
                json!({
                    "id": t.id, "name": t.name, "n": t.n, "batch": t.batch, "epochs": t.epochs,
                    "samples_per_sec": t.samples_per_sec, "epoch_samples_per_sec": t.epoch_samples_per_sec,
                    "end_to_end_samples_per_sec": t.end_to_end_samples_per_sec, "final_loss": t.final_loss,
                    "dispatches_per_step": t.dispatches_per_step, "submissions_per_step": t.submissions_per_step,
                    "bytes_allocated": t.bytes_allocated, "cached_features": t.cached_features,
                    "cpu_baseline": t.cpu.as_ref().map(|c| json!({
                        "samples_per_sec": c.samples_per_sec, "epoch_samples_per_sec": c.epoch_samples_per_sec,
                        "end_to_end_samples_per_sec": c.end_to_end_samples_per_sec, "final_loss": c.final_loss,
                    })),
                    "gpu_over_cpu": t.ratio(),
                    "profile": t.profile.as_ref().map(profile_json),
                })
            })
            .collect();
        let v = json!({
            "date": self.date,
            "adapter": { "name": self.adapter, "backend": self.backend, "device_type": self.device_type, "driver": self.driver, "driver_info": self.driver_info, "timestamp_queries": self.timestamp_queries },
            "scale": self.scale.name(),
            "seed": self.seed,
            "cpu_threads": self.cpu_threads,
            "notes": self.notes,
            "k1": matmul,
            "training": training,
            "t2_cached_over_uncached": self.t2_cache_speedup().map(|(a, b)| json!({ "median_epochs": a, "end_to_end": b })),
            "seconds": self.seconds,
        });
        serde_json::to_string_pretty(&v).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
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
                    Some(p) => (format!("{:.2}", p.step_ms), format!("{:.2}", p.kernel_sum_ms), format!("{:.2}", p.overhead_ratio())),
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
            for t in &self.training {
                let Some(p) = &t.profile else { continue };
                writeln!(f)?;
                writeln!(
                    f,
                    "{} step profile: {} dispatches, step {:.2} ms (back to back {:.2} ms), Σ kernels {:.2} ms, step/Σ {:.2}; {} reps; {}",
                    t.id,
                    p.dispatches,
                    p.step_ms,
                    p.pipelined_step_ms,
                    p.kernel_sum_ms,
                    p.overhead_ratio(),
                    p.reps,
                    p.timing_note
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
        writeln!(f)?;
        self.fmt_targets(f)?;
        write!(f, "total {:.1} s", self.seconds)
    }
}

impl BenchReport {
    fn fmt_targets(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "issue 6 targets{}:", if self.scale == Scale::Full { "" } else { " (NOT at the issue's sizes)" })?;
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
        if let Some(p) = self.training_result("T1-sgd").and_then(|t| t.profile.as_ref()) {
            writeln!(f, "  T1 step within 20% of Σ kernels: step/Σ = {:.2} — {}", p.overhead_ratio(), mark(p.overhead_ratio() <= 1.2))?;
        }
        Ok(())
    }
}

/// The `main` of `benches/kernels.rs` and `benches/training.rs`: runs `only` and prints the
/// table (or JSON). Arguments after `cargo bench --bench NAME --`: `--quick`, `--json`,
/// `--seed N`, `--json-out PATH` (also write the JSON there); `HEADSWAP_BENCH_SMOKE=1` runs the
/// smoke size. Anything else (cargo passes `--bench`) is ignored.
pub fn bench_main(only: &str) -> std::process::ExitCode {
    use std::process::ExitCode;
    let mut opts = BenchOptions { only: Some(only.to_string()), ..BenchOptions::default() };
    let mut json_out = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => opts.quick = true,
            "--json" => opts.json = true,
            "--seed" => match args.next().and_then(|s| s.parse().ok()) {
                Some(s) => opts.seed = s,
                None => {
                    eprintln!("--seed needs a number");
                    return ExitCode::FAILURE;
                }
            },
            "--json-out" => json_out = args.next(),
            _ => {}
        }
    }
    let gpu = match Gpu::new() {
        Ok(g) => g,
        Err(e) => {
            eprintln!("no GPU adapter for the benchmark: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = match run(&gpu, &opts) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("benchmark failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    if opts.json {
        println!("{}", report.to_json());
    } else {
        println!("{report}");
    }
    if let Some(path) = json_out
        && let Err(e) = std::fs::write(&path, report.to_json())
    {
        eprintln!("writing {path}: {e}");
        return ExitCode::FAILURE;
    }
    let failed = report.matmul.iter().any(|r| !r.check.passed || !r.cpu_check.passed);
    if failed {
        eprintln!("a matrix product failed its check against the float64 reference");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn operands(m: usize, n: usize, k: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
        let mut rng = Rng::new(seed);
        (rand_vec(&mut rng, m * k, -1.0, 1.0), rand_vec(&mut rng, k * n, -1.0, 1.0))
    }

    #[test]
    fn cpu_gemm_matches_the_reference_in_every_form() {
        for (i, t) in [Transpose::NN, Transpose::NT, Transpose::TN, Transpose::TT].into_iter().enumerate() {
            let (m, n, k) = (5, 7, 9);
            let (a, b) = operands(m, n, k, i as u64);
            let mut c = vec![f32::NAN; m * n];
            cpu_matmul(&mut c, &a, &b, m, n, k, t);
            let check = check_product(&c, &a, &b, m, n, k, t, 0);
            assert!(check.passed && check.checked == m * n, "{t:?}: {check:?}");
        }
    }

    #[test]
    fn the_check_rejects_wrong_and_missing_values() {
        let (m, n, k) = (6, 4, 8);
        let (a, b) = operands(m, n, k, 9);
        let mut c = vec![0.0; m * n];
        cpu_matmul(&mut c, &a, &b, m, n, k, Transpose::NN);
        let mut wrong = c.clone();
        wrong[5] += 0.01;
        assert!(!check_product(&wrong, &a, &b, m, n, k, Transpose::NN, 0).passed);
        wrong[5] = f32::NAN;
        assert!(!check_product(&wrong, &a, &b, m, n, k, Transpose::NN, 0).passed);
    }

    #[test]
    fn large_products_are_checked_on_sampled_rows_and_columns() {
        let (m, n, k) = (1032, 1032, 1032); // m·n·k > 2^30
        let (a, b) = operands(m, n, k, 4);
        let mut c = vec![0.0; m * n];
        cpu_matmul(&mut c, &a, &b, m, n, k, Transpose::TN);
        let check = check_product(&c, &a, &b, m, n, k, Transpose::TN, 1);
        assert!(check.passed, "{check:?}");
        assert!(check.checked < check.total && check.checked >= 2 * m, "{check:?}");
        c[m * n - 1] = -c[m * n - 1] + 1.0; // the last row and column are always sampled
        assert!(!check_product(&c, &a, &b, m, n, k, Transpose::TN, 1).passed);
    }

    #[test]
    fn only_names_workloads() {
        assert_eq!(selected(None).unwrap(), WORKLOADS.to_vec());
        assert_eq!(selected(Some("K1, t3")).unwrap(), vec!["k1", "t3"]);
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
    fn the_cpu_baseline_learns() {
        // Two classes separated by the sign of the first feature.
        let mut rng = Rng::new(5);
        let (n, d) = (256, 4);
        let x: Vec<f32> = (0..n * d).map(|_| rng.uniform(-1.0, 1.0) as f32).collect();
        let y = (0..n).map(|i| (x[i * d] > 0.0) as u32).collect();
        let data = Dataset {
            x,
            n,
            d,
            input_shape: vec![d],
            targets: Targets::Classes { y, num_classes: 2 },
            label_names: vec!["neg".into(), "pos".into()],
        };
        let first = cpu::fit(&data, &[4, 16, 2], 1, 0, false, cpu::Opt::Sgd { lr: 0.1, momentum: 0.9 }, 1, 0);
        let later = cpu::fit(&data, &[4, 16, 2], 1, 0, false, cpu::Opt::Sgd { lr: 0.1, momentum: 0.9 }, 30, 0);
        assert!(later.final_loss < 0.5 * first.final_loss, "{} → {}", first.final_loss, later.final_loss);
        let adam = cpu::fit(&data, &[4, 16, 2], 1, 0, false, cpu::Opt::adam(0.01), 30, 0);
        assert!(adam.final_loss < 0.5 * first.final_loss, "adam {} → {}", first.final_loss, adam.final_loss);
        assert_eq!(later.epoch_samples_per_sec.len(), 30);
    }
}
