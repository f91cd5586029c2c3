//! `headswap bench kernel matmul --shape MxNxK` and `headswap bench kernel conv2d --shape
//! NxCxHxW --filters O --kernel K`: one kernel on the user's adapter and shape, every variant (the
//! matmul's kernels, the convolution's algorithms) or one checked against the float64 reference
//! and then timed, beside the one the autotuner picks for that shape and, where the adapter's f32
//! peak is known, the fraction of it each reaches.

use super::kernels::{Reps, check_product, flags, form_name, time_gpu};
use super::table::{Check, Timed};
use super::{Scale, rand_vec};
use crate::{CliResult, usage};
use headswap::gpu::{Dispatch, Gpu, Tensor};
use headswap::kernels::Activation;
use headswap::kernels::conv::{Conv2dShape, ConvAlgo, ConvScratch, ConvUse, choose_algo, conv2d_forward_dispatches};
use headswap::kernels::matmul::{
    Epilogue, Operand, Options, Transpose, Variant, matmul_dispatch, matmul_dispatch_ops, matmul_dispatch_variant, upload_f16,
};
use headswap::rng::Rng;
use serde_json::json;

/// What to time.
pub struct KernelRequest {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub t: Transpose,
    /// One variant, or every one.
    pub variant: Option<Variant>,
    /// Whether A, B are also timed stored in f16 (`--storage`); `None`: f32 only.
    pub f16: Option<(bool, bool)>,
    pub seed: u64,
    pub scale: Scale,
}

/// `D` positive integers separated by `x`, or `None`.
fn dims<const D: usize>(s: &str) -> Option<[usize; D]> {
    let dims: Option<Vec<usize>> = s.split(['x', 'X']).map(|d| d.trim().parse::<usize>().ok().filter(|&v| v > 0)).collect();
    dims?.try_into().ok()
}

/// `MxNxK` (each positive) as (m, n, k).
pub fn parse_shape(s: &str) -> CliResult<(usize, usize, usize)> {
    let [m, n, k] = dims::<3>(s).ok_or_else(|| {
        usage(format!("--shape {s:?} is not MxNxK with three positive integers (C[M×N] = A[M×K]·B[K×N]), e.g. 4096x4096x4096"))
    })?;
    Ok((m, n, k))
}

/// `nn`, `nt` or `tn`.
pub fn parse_form(s: &str) -> CliResult<Transpose> {
    match s.to_ascii_lowercase().as_str() {
        "nn" => Ok(Transpose::NN),
        "nt" => Ok(Transpose::NT),
        "tn" => Ok(Transpose::TN),
        _ => Err(usage(format!("--form {s:?} is not nn, nt or tn"))),
    }
}

/// `--storage`: `f32` (None) or which operands are stored in f16.
pub fn parse_storage(s: &str) -> CliResult<Option<(bool, bool)>> {
    match s {
        "f32" => Ok(None),
        "f16a" => Ok(Some((true, false))),
        "f16b" => Ok(Some((false, true))),
        "f16ab" => Ok(Some((true, true))),
        _ => Err(usage(format!("--storage {s:?} is not f32, f16a, f16b or f16ab"))),
    }
}

/// `all` (None) or a variant's name.
pub fn parse_variant(s: &str) -> CliResult<Option<Variant>> {
    if s == "all" {
        return Ok(None);
    }
    Variant::from_name(s).map(Some).ok_or_else(|| {
        let names: Vec<&str> = Variant::ALL.iter().map(|v| v.name()).collect();
        usage(format!("--variant {s:?} is not all or one of {}", names.join(", ")))
    })
}

/// One variant's outcome.
struct Row {
    variant: Variant,
    /// Why it did not run (cannot launch on this adapter), if it did not.
    skipped: Option<String>,
    check: Option<Check>,
    timed: Option<Timed>,
    batch: usize,
    /// The same product with the `--storage` operands in f16: its check and timing.
    f16: Option<(Check, Option<Timed>)>,
}

/// The f32 peak (GFLOP/s, without tensor cores) of adapters whose data sheet we know, by name.
fn known_peak(name: &str) -> Option<(f64, &'static str)> {
    let n = name.to_ascii_lowercase();
    // NVIDIA data sheets, FP32 (non-tensor) dense
    [
        ("h200", 66_900.0, "NVIDIA H200 data sheet, FP32"),
        ("h100 pcie", 51_200.0, "NVIDIA H100 PCIe data sheet, FP32"),
        ("h100", 66_900.0, "NVIDIA H100 SXM data sheet, FP32"),
        ("a100", 19_500.0, "NVIDIA A100 data sheet, FP32"),
    ]
    .into_iter()
    .find(|(key, _, _)| n.contains(key))
    .map(|(_, peak, src)| (peak, src))
}

/// Runs the request; returns the text or JSON to print, and whether every launched variant
/// passed its check.
pub fn run(gpu: &Gpu, r: &KernelRequest, as_json: bool) -> headswap::Result<(String, bool)> {
    let (ta, tb) = flags(r.t);
    let (m, n, k) = (r.m, r.n, r.k);
    let ashape = if ta { [k, m] } else { [m, k] };
    let bshape = if tb { [n, k] } else { [k, n] };
    let mut rng = Rng::new(r.seed ^ 0x6b65_726e);
    let a = rand_vec(&mut rng, m * k, -1.0, 1.0);
    let b = rand_vec(&mut rng, k * n, -1.0, 1.0);
    let ga = Tensor::from_slice(gpu, &ashape, &a)?;
    let gb = Tensor::from_slice(gpu, &bshape, &b)?;
    let gc = Tensor::zeros(gpu, &[m, n])?;
    // --storage: the f16 operands, and the values they hold (the reference's inputs)
    let (fa, fb) = r.f16.unwrap_or((false, false));
    let round = |v: &[f32]| v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect::<Vec<f32>>();
    let (a16, b16) = (if fa { round(&a) } else { a.clone() }, if fb { round(&b) } else { b.clone() });
    let wa = if fa { Some(upload_f16(gpu, ashape, &a)?) } else { None };
    let wb = if fb { Some(upload_f16(gpu, bshape, &b)?) } else { None };
    let op_a = wa.as_ref().map_or(Operand::F32(&ga), |w| Operand::F16 { words: w, cols: ashape[1] });
    let op_b = wb.as_ref().map_or(Operand::F32(&gb), |w| Operand::F16 { words: w, cols: bshape[1] });
    // the autotuner's pick for this shape (measured now if this adapter has not timed its class)
    let auto = matmul_dispatch(gpu, &ga, &gb, &gc, r.t, Epilogue::default())?;
    let pick = Variant::ALL.into_iter().find(|v| v.entry() == auto.name());
    let flops = 2.0 * (m * n * k) as f64;
    let reps = Reps::of(r.scale);
    let mut rows = Vec::new();
    for v in r.variant.map_or(Variant::ALL.to_vec(), |v| vec![v]) {
        if !v.fits(gpu, m, n) {
            rows.push(Row {
                variant: v,
                skipped: Some("cannot launch on this adapter (subgroups or workgroup counts)".into()),
                check: None,
                timed: None,
                batch: 0,
                f16: None,
            });
            continue;
        }
        let d = matmul_dispatch_variant(gpu, &ga, &gb, &gc, r.t, Epilogue::default(), v)?;
        gc.fill(gpu, f32::NAN)?;
        gpu.run("bench_kernel_check", &[&d])?;
        let c = gc.download(gpu)?;
        let check = check_product(&c, &a, &b, m, n, k, r.t, r.seed);
        let (timed, batch) = if check.passed {
            let (t, b) = time_gpu(gpu, &d, flops, reps)?;
            (Some(t), b)
        } else {
            (None, 0)
        };
        let f16 = match r.f16 {
            None => None,
            Some(_) => {
                let opts = Options { variant: Some(v), f16_read: None };
                let d = matmul_dispatch_ops(gpu, op_a, op_b, &gc, r.t, Epilogue::default(), opts)?;
                gc.fill(gpu, f32::NAN)?;
                gpu.run("bench_kernel_check_f16", &[&d])?;
                let check = check_product(&gc.download(gpu)?, &a16, &b16, m, n, k, r.t, r.seed);
                let timed = if check.passed { Some(time_gpu(gpu, &d, flops, reps)?.0) } else { None };
                Some((check, timed))
            }
        };
        rows.push(Row { variant: v, skipped: None, check: Some(check), timed, batch, f16 });
    }
    let all_passed = rows.iter().all(|row| row.check.as_ref().is_none_or(|c| c.passed) && row.f16.as_ref().is_none_or(|f| f.0.passed));
    let storage = match (fa, fb) {
        (true, true) => "f16ab",
        (true, false) => "f16a",
        (false, true) => "f16b",
        (false, false) => "f32",
    };
    let info = gpu.adapter_info();
    let peak = known_peak(&info.name);
    let fraction = |t: &Timed| peak.map(|(p, _)| t.gflops / p);
    if as_json {
        let variants: Vec<_> = rows
            .iter()
            .map(|row| {
                json!({
                    "variant": row.variant.name(),
                    "picked_by_autotuner": Some(row.variant) == pick,
                    "skipped": row.skipped,
                    "check": row.check.as_ref().map(|c| json!({"passed": c.passed, "checked": c.checked, "total": c.total, "max_abs_err": c.max_abs_err, "worst_over_tolerance": c.worst})),
                    "gflops": row.timed.as_ref().map(|t| t.gflops),
                    "median_ms": row.timed.as_ref().map(|t| t.median_ms),
                    "min_ms": row.timed.as_ref().map(|t| t.min_ms),
                    "runs": row.timed.as_ref().map(|t| t.runs),
                    "batch": row.batch,
                    "fraction_of_peak": row.timed.as_ref().and_then(fraction),
                    "f16": row.f16.as_ref().map(|(c, t)| json!({
                        "storage": storage,
                        "check": {"passed": c.passed, "checked": c.checked, "total": c.total, "max_abs_err": c.max_abs_err, "worst_over_tolerance": c.worst},
                        "gflops": t.as_ref().map(|t| t.gflops),
                        "median_ms": t.as_ref().map(|t| t.median_ms),
                    })),
                })
            })
            .collect();
        let doc = json!({
            "kernel": "matmul", "m": m, "n": n, "k": k, "form": form_name(r.t),
            "adapter": info.name, "backend": format!("{:?}", info.backend), "scale": r.scale.name(),
            "autotuner_pick": pick.map(|v| v.name()),
            "peak_gflops": peak.map(|(p, _)| p), "peak_source": peak.map(|(_, s)| s),
            "variants": variants,
        });
        return Ok((doc.to_string(), all_passed));
    }
    let mut out = format!(
        "matmul {} C[{m}×{n}] = A·B over k = {k} on {} ({:?}); each variant checked against the float64 reference, then timed\n",
        form_name(r.t),
        info.name,
        info.backend
    );
    out += &format!(
        "{:<12} {:>12} {:>12} {:>10} {:>10}  check (max |err|, worst/tolerance)\n",
        "variant", "GFLOP/s", "median ms", "of peak", "batch"
    );
    if r.f16.is_some() {
        out += &format!(
            "{storage}: the same product with {} stored in f16 (f32 arithmetic), checked against the float64 reference on the f16 values\n",
            match (fa, fb) {
                (true, true) => "A and B",
                (true, false) => "A",
                _ => "B",
            }
        );
    }
    for row in &rows {
        let mark = if Some(row.variant) == pick { "*" } else { " " };
        let name = format!("{}{mark}", row.variant.name());
        match (&row.skipped, &row.check, &row.timed) {
            (Some(why), _, _) => out += &format!("{name:<12} {why}\n"),
            (None, Some(c), Some(t)) => {
                let of_peak = fraction(t).map_or("n/a".to_string(), |f| format!("{:.1}%", 100.0 * f));
                out += &format!(
                    "{name:<12} {:>12.2} {:>12.4} {:>10} {:>10}  passed ({:.2e}, {:.2})\n",
                    t.gflops, t.median_ms, of_peak, row.batch, c.max_abs_err, c.worst
                );
                match &row.f16 {
                    Some((c, Some(t))) => {
                        out += &format!(
                            "  {storage:<10} {:>12.2} {:>12.4} {:>10} {:>10}  passed ({:.2e}, {:.2}), {:.2}× f32\n",
                            t.gflops,
                            t.median_ms,
                            "",
                            "",
                            c.max_abs_err,
                            c.worst,
                            t.gflops / row.timed.as_ref().map_or(f64::NAN, |f| f.gflops)
                        )
                    }
                    Some((c, None)) => {
                        out += &format!("  {storage:<10} FAILED its check ({:.2e}, {:.2}): no number\n", c.max_abs_err, c.worst)
                    }
                    None => {}
                }
            }
            (None, Some(c), None) => out += &format!("{name:<12} FAILED its check ({:.2e}, {:.2}): no number\n", c.max_abs_err, c.worst),
            (None, None, _) => {}
        }
    }
    out += &format!("* the autotuner's pick for this shape{}\n", if pick.is_none() { " (none of the listed variants)" } else { "" });
    out += &match peak {
        Some((p, src)) => format!("peak: {p:.0} GFLOP/s ({src})"),
        None => "peak: unknown for this adapter (no fraction printed)".to_string(),
    };
    Ok((out, all_passed))
}

/// A convolution to time: `y = conv(x, w) + b`, forward.
pub struct ConvRequest {
    pub shape: Conv2dShape,
    /// One algorithm, or both.
    pub algo: Option<ConvAlgo>,
    pub seed: u64,
    pub scale: Scale,
}

/// `NxCxHxW` (each positive).
pub fn parse_nchw(s: &str) -> CliResult<[usize; 4]> {
    dims::<4>(s).ok_or_else(|| {
        usage(format!("--shape {s:?} is not NxCxHxW with four positive integers (batch, channels, height, width), e.g. 32x64x56x56"))
    })
}

/// `all` (None), `direct` or `im2col`.
pub fn parse_algo(s: &str) -> CliResult<Option<ConvAlgo>> {
    match s {
        "all" => Ok(None),
        "direct" => Ok(Some(ConvAlgo::Direct)),
        "im2col" => Ok(Some(ConvAlgo::Im2col)),
        _ => Err(usage(format!("--variant {s:?} is not all, direct or im2col for conv2d"))),
    }
}

fn algo_name(a: ConvAlgo) -> &'static str {
    match a {
        ConvAlgo::Direct => "direct",
        ConvAlgo::Im2col => "im2col",
    }
}

/// Compares the GPU's `y` with the float64 convolution: every output for small problems, else
/// a seeded sample of 4,096 outputs computed one by one.
fn check_conv(s: &Conv2dShape, y: &[f32], x: &[f32], w: &[f32], b: &[f32], seed: u64) -> Check {
    let (oh, ow) = s.out_hw();
    let terms = s.patch_len();
    let (cg, og) = (s.c_per_group(), s.o_per_group());
    let tol = |r: f64| 1e-5 * (terms as f64).sqrt() + 1e-4 * r.abs();
    let mut check = Check { checked: 0, total: y.len(), max_abs_err: 0.0, worst: 0.0, passed: true };
    let one = |i: usize| -> f64 {
        let (ox, rest) = (i % ow, i / ow);
        let (oy, rest) = (rest % oh, rest / oh);
        let (o, n) = (rest % s.o, rest / s.o);
        let mut acc = b[o] as f64;
        for c in 0..cg {
            for ky in 0..s.kh {
                for kx in 0..s.kw {
                    let iy = (oy * s.sh + ky) as isize - s.ph as isize;
                    let ix = (ox * s.sw + kx) as isize - s.pw as isize;
                    if iy >= 0 && ix >= 0 && (iy as usize) < s.h && (ix as usize) < s.w {
                        let xi = ((n * s.c + (o / og) * cg + c) * s.h + iy as usize) * s.w + ix as usize;
                        acc += w[((o * cg + c) * s.kh + ky) * s.kw + kx] as f64 * x[xi] as f64;
                    }
                }
            }
        }
        acc
    };
    let picks: Vec<usize> = if (y.len() as u128) * (terms as u128) <= 1 << 28 {
        (0..y.len()).collect()
    } else {
        let mut rng = Rng::new(seed ^ 0x636f_6e76);
        let mut v: Vec<usize> = vec![0, y.len() - 1];
        v.extend((0..4094).map(|_| rng.below(y.len() as u64) as usize));
        v
    };
    for i in picks {
        let (got, want) = (y[i], one(i));
        let err = (got as f64 - want).abs();
        check.checked += 1;
        if !got.is_finite() {
            check.passed = false;
            check.worst = f64::INFINITY;
            check.max_abs_err = f64::INFINITY;
            break;
        }
        check.max_abs_err = check.max_abs_err.max(err);
        check.worst = check.worst.max(err / tol(want));
    }
    check.passed &= check.worst <= 1.0;
    check
}

/// One algorithm's outcome: its check, and its timing (with the batch of launches per
/// submission) where the check passed.
type AlgoRow = (ConvAlgo, Check, Option<(Timed, usize)>);

/// Runs the convolution request; as [`run`].
pub fn run_conv(gpu: &Gpu, r: &ConvRequest, as_json: bool) -> headswap::Result<(String, bool)> {
    let s = r.shape;
    s.validate()?;
    let mut rng = Rng::new(r.seed ^ 0x6b65_726e);
    let x = rand_vec(&mut rng, s.x_shape().iter().product(), -1.0, 1.0);
    let w = rand_vec(&mut rng, s.w_shape().iter().product(), -0.5, 0.5);
    let b = rand_vec(&mut rng, s.o, -0.5, 0.5);
    let gx = Tensor::from_slice(gpu, &s.x_shape(), &x)?;
    let gw = Tensor::from_slice(gpu, &s.w_shape(), &w)?;
    let gb = Tensor::from_slice(gpu, &[s.o], &b)?;
    let gy = Tensor::zeros(gpu, &s.y_shape())?;
    let pick = choose_algo(gpu, &s, ConvUse::Forward)?;
    let (oh, ow) = s.out_hw();
    let flops = 2.0 * (s.n * s.o * oh * ow * s.patch_len()) as f64;
    let reps = Reps::of(r.scale);
    let mut rows: Vec<AlgoRow> = Vec::new();
    // im2col has no groups: `all` is the direct form alone for a grouped convolution (asking
    // for im2col by name is the library's error)
    let all = if s.groups == 1 { vec![ConvAlgo::Direct, ConvAlgo::Im2col] } else { vec![ConvAlgo::Direct] };
    for algo in r.algo.map_or(all, |a| vec![a]) {
        let scratch = ConvScratch::with_algo(gpu, &s, algo)?;
        let ds = conv2d_forward_dispatches(gpu, &s, &gx, &gw, Some(&gb), Activation::Identity, &gy, &scratch)?;
        gy.fill(gpu, f32::NAN)?;
        gpu.run("bench_kernel_check", &ds.iter().collect::<Vec<&Dispatch>>())?;
        let check = check_conv(&s, &gy.download(gpu)?, &x, &w, &b, r.seed);
        // im2col is several launches: time the whole forward as one pass of them
        let timed = if check.passed { Some(time_dispatches(gpu, &ds, flops, reps)?) } else { None };
        rows.push((algo, check, timed));
    }
    let all_passed = rows.iter().all(|(_, c, _)| c.passed);
    let info = gpu.adapter_info();
    let peak = known_peak(&info.name);
    let fraction = |t: &Timed| peak.map(|(p, _)| t.gflops / p);
    if as_json {
        let algos: Vec<_> = rows
            .iter()
            .map(|(a, c, t)| {
                json!({
                    "variant": algo_name(*a), "picked_by_autotuner": *a == pick,
                    "check": {"passed": c.passed, "checked": c.checked, "total": c.total, "max_abs_err": c.max_abs_err, "worst_over_tolerance": c.worst},
                    "gflops": t.as_ref().map(|(t, _)| t.gflops), "median_ms": t.as_ref().map(|(t, _)| t.median_ms),
                    "min_ms": t.as_ref().map(|(t, _)| t.min_ms), "runs": t.as_ref().map(|(t, _)| t.runs),
                    "batch": t.as_ref().map_or(0, |(_, b)| *b), "fraction_of_peak": t.as_ref().and_then(|(t, _)| fraction(t)),
                })
            })
            .collect();
        let doc = json!({
            "kernel": "conv2d", "x": s.x_shape(), "w": s.w_shape(), "y": s.y_shape(), "stride": s.sh, "padding": s.ph, "groups": s.groups,
            "adapter": info.name, "backend": format!("{:?}", info.backend), "scale": r.scale.name(),
            "autotuner_pick": algo_name(pick), "peak_gflops": peak.map(|(p, _)| p), "peak_source": peak.map(|(_, s)| s),
            "variants": algos,
        });
        return Ok((doc.to_string(), all_passed));
    }
    let mut out = format!(
        "conv2d forward x {:?} * w {:?} (stride {}, padding {}, groups {}) -> y {:?} on {} ({:?}); each algorithm checked against the float64 reference, then timed\n",
        s.x_shape(),
        s.w_shape(),
        s.sh,
        s.ph,
        s.groups,
        s.y_shape(),
        info.name,
        info.backend
    );
    out += &format!(
        "{:<12} {:>12} {:>12} {:>10} {:>10}  check (max |err|, worst/tolerance)\n",
        "algorithm", "GFLOP/s", "median ms", "of peak", "batch"
    );
    for (a, c, t) in &rows {
        let name = format!("{}{}", algo_name(*a), if *a == pick { "*" } else { " " });
        match t {
            Some((t, batch)) => {
                let of_peak = fraction(t).map_or("n/a".to_string(), |f| format!("{:.1}%", 100.0 * f));
                out += &format!(
                    "{name:<12} {:>12.2} {:>12.4} {:>10} {:>10}  passed ({:.2e}, {:.2})\n",
                    t.gflops, t.median_ms, of_peak, batch, c.max_abs_err, c.worst
                );
            }
            None => out += &format!("{name:<12} FAILED its check ({:.2e}, {:.2}): no number\n", c.max_abs_err, c.worst),
        }
    }
    out += "* the autotuner's pick for this shape (forward use)\n";
    out += &match peak {
        Some((p, src)) => format!("peak: {p:.0} GFLOP/s ({src})"),
        None => "peak: unknown for this adapter (no fraction printed)".to_string(),
    };
    Ok((out, all_passed))
}

/// [`time_gpu`] for a forward of several launches: each timed repetition records all of them.
fn time_dispatches(gpu: &Gpu, ds: &[Dispatch], flops: f64, reps: Reps) -> headswap::Result<(Timed, usize)> {
    match ds {
        [one] => time_gpu(gpu, one, flops, reps),
        _ => super::kernels::time_gpu_all(gpu, ds, flops, reps),
    }
}
