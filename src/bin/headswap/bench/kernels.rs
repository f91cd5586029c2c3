//! K1: f32 matmul on resident data (upload and read-back excluded), each product checked against
//! the float64 [`reference::matmul`] first (on sampled rows and columns for the largest shapes; a
//! product that fails gets no number), then timed: a warm-up, and the median of many timed
//! submissions, each holding `batch` copies of the dispatch in one compute pass and waited for
//! inside the timed region (`batch` is chosen so a submission lasts tens of milliseconds and its
//! fixed cost does not dominate small shapes). Baseline: the `gemm` crate (f32,
//! `Parallelism::Rayon(0)`: every core) on the same operands, also checked first, and timed
//! after every GPU product, so that no GPU figure follows a gemm call.

use super::cpu_baseline::gemm_f32;
use super::table::{Check, MatmulResult, Timed};
use super::{Scale, median, rand_vec};
use headswap::Result;
use headswap::gpu::{Dispatch, Gpu, Tensor};
use headswap::kernels::matmul::{Epilogue, Transpose, matmul_dispatch};
use headswap::reference;
use headswap::rng::Rng;
use std::time::Instant;

/// How long to time things.
#[derive(Debug, Clone, Copy)]
pub(super) struct Reps {
    min_runs: usize,
    max_runs: usize,
    /// Keep timing until this many seconds have passed (and `min_runs` are done).
    budget_s: f64,
    /// Aim for GPU submissions of about this many milliseconds.
    target_ms: f64,
    max_batch: usize,
}

impl Reps {
    pub(super) fn of(scale: Scale) -> Reps {
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

pub(super) fn flags(t: Transpose) -> (bool, bool) {
    match t {
        Transpose::NN => (false, false),
        Transpose::NT => (false, true),
        Transpose::TN => (true, false),
        Transpose::TT => (true, true),
    }
}

pub(super) fn form_name(t: Transpose) -> &'static str {
    match t {
        Transpose::NN => "NN",
        Transpose::NT => "NT",
        Transpose::TN => "TN",
        Transpose::TT => "TT",
    }
}

/// The operands of the `i`-th product (the same on every call: the CPU side regenerates them
/// after the GPU side, instead of holding every shape's operands at once).
fn operands(s: &Shape, i: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let mut rng = Rng::new(seed ^ (0x4b31_0000 + i as u64));
    let a = rand_vec(&mut rng, s.m * s.k, -1.0, 1.0);
    let b = rand_vec(&mut rng, s.k * s.n, -1.0, 1.0);
    (a, b)
}

/// Every product on the GPU (checked, then timed), then every product on the CPU.
pub fn bench_matmul(gpu: &Gpu, scale: Scale, seed: u64) -> Result<Vec<MatmulResult>> {
    let reps = Reps::of(scale);
    let shapes = k1_shapes(scale);
    let mut gpu_side = Vec::new();
    for (i, s) in shapes.iter().enumerate() {
        let _span = tracing::info_span!("k1", shape = %s.name).entered();
        let (ta, tb) = flags(s.t);
        let (m, n, k) = (s.m, s.n, s.k);
        let ashape = if ta { [k, m] } else { [m, k] };
        let bshape = if tb { [n, k] } else { [k, n] };
        let (a, b) = operands(s, i, seed);
        let ga = Tensor::from_slice(gpu, &ashape, &a)?;
        let gb = Tensor::from_slice(gpu, &bshape, &b)?;
        let gc = Tensor::zeros(gpu, &[m, n])?;
        gc.fill(gpu, f32::NAN)?;
        let d = matmul_dispatch(gpu, &ga, &gb, &gc, s.t, Epilogue::default())?;
        gpu.run("k1_check", &[&d])?;
        let c = gc.download(gpu)?;
        let check = check_product(&c, &a, &b, m, n, k, s.t, seed + i as u64);
        let (timed, batch) = if check.passed {
            let (t, b) = time_gpu(gpu, &d, flops(s), reps)?;
            (Some(t), b)
        } else {
            tracing::error!(shape = %s.name, worst = check.worst, "matmul failed its check; no number");
            (None, 0)
        };
        gpu_side.push((check, batch, timed));
    }
    let mut out = Vec::new();
    for ((i, s), (check, batch, gpu_timed)) in shapes.into_iter().enumerate().zip(gpu_side) {
        let _span = tracing::info_span!("k1-cpu", shape = %s.name).entered();
        let (m, n, k) = (s.m, s.n, s.k);
        let (a, b) = operands(&s, i, seed);
        let mut cc = vec![f32::NAN; m * n];
        cpu_matmul(&mut cc, &a, &b, m, n, k, s.t);
        let cpu_check = check_product(&cc, &a, &b, m, n, k, s.t, seed + i as u64);
        let cpu = if cpu_check.passed { Some(time_cpu(|| cpu_matmul(&mut cc, &a, &b, m, n, k, s.t), flops(&s), reps)) } else { None };
        out.push(MatmulResult { name: s.name, form: form_name(s.t).into(), m, n, k, check, batch, gpu: gpu_timed, cpu_check, cpu });
    }
    Ok(out)
}

fn flops(s: &Shape) -> f64 {
    2.0 * (s.m * s.n * s.k) as f64
}

/// Warm-up, then the median over timed submissions of `batch` copies of `d` in one pass.
pub(super) fn time_gpu(gpu: &Gpu, d: &Dispatch, flops: f64, reps: Reps) -> Result<(Timed, usize)> {
    time_gpu_all(gpu, std::slice::from_ref(d), flops, reps)
}

/// [`time_gpu`] for an operation of several launches `ds`, recorded in order `batch` times per
/// submission; `flops` is the whole operation's.
pub(super) fn time_gpu_all(gpu: &Gpu, ds: &[Dispatch], flops: f64, reps: Reps) -> Result<(Timed, usize)> {
    let submit = |batch: usize| -> Result<f64> {
        let t0 = Instant::now();
        let mut enc = gpu.device().create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("k1") });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("k1"), timestamp_writes: None });
            for _ in 0..batch {
                for d in ds {
                    d.encode(gpu, &mut pass);
                }
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

/// Compares `c` with the float64 reference on every element, or on sampled rows and columns when
/// `m·n·k > 2^30`.
#[allow(clippy::too_many_arguments)]
pub(super) fn check_product(c: &[f32], a: &[f32], b: &[f32], m: usize, n: usize, k: usize, t: Transpose, seed: u64) -> Check {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn random_operands(m: usize, n: usize, k: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
        let mut rng = Rng::new(seed);
        (rand_vec(&mut rng, m * k, -1.0, 1.0), rand_vec(&mut rng, k * n, -1.0, 1.0))
    }

    #[test]
    fn cpu_gemm_matches_the_reference_in_every_form() {
        for (i, t) in [Transpose::NN, Transpose::NT, Transpose::TN, Transpose::TT].into_iter().enumerate() {
            let (m, n, k) = (5, 7, 9);
            let (a, b) = random_operands(m, n, k, i as u64);
            let mut c = vec![f32::NAN; m * n];
            cpu_matmul(&mut c, &a, &b, m, n, k, t);
            let check = check_product(&c, &a, &b, m, n, k, t, 0);
            assert!(check.passed && check.checked == m * n, "{t:?}: {check:?}");
        }
    }

    #[test]
    fn the_check_rejects_wrong_and_missing_values() {
        let (m, n, k) = (6, 4, 8);
        let (a, b) = random_operands(m, n, k, 9);
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
        let (a, b) = random_operands(m, n, k, 4);
        let mut c = vec![0.0; m * n];
        cpu_matmul(&mut c, &a, &b, m, n, k, Transpose::TN);
        let check = check_product(&c, &a, &b, m, n, k, Transpose::TN, 1);
        assert!(check.passed, "{check:?}");
        assert!(check.checked < check.total && check.checked >= 2 * m, "{check:?}");
        c[m * n - 1] = -c[m * n - 1] + 1.0; // the last row and column are always sampled
        assert!(!check_product(&c, &a, &b, m, n, k, Transpose::TN, 1).passed);
    }
}
