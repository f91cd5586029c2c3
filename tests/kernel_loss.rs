//! Loss kernels against the float64 reference: softmax cross-entropy (integer classes) and
//! per-label sigmoid BCE with logits (pos_weight, label_weight, every reduction, soft targets,
//! NaN = unknown label), at odd and non-square shapes with outputs poisoned with NaN first; large
//! logits (±100, ±1e4); invisibility of unknown labels; bad class targets; bit-identical repeats;
//! shape errors. The reference's own gradients are proven by central finite differences.
//! The heads of a multi-task network (issue 14): regression losses (MSE, L1, Huber) and softmax
//! cross-entropy with ignore_index −1, NaN/−1 masked, with a head weight, against the reference
//! and against PyTorch (`tests/fixtures/torch_multitask_loss.safetensors`).
mod common;
use common::*;
use headswap::kernels::loss::{self, BceOptions, BceReduction};
use headswap::kernels::reduce;
use headswap::{Gpu, Rng, Tensor, reference};

const REDUCTIONS: [BceReduction; 3] = [BceReduction::SumLabelsMeanExamples, BceReduction::MeanLabelled, BceReduction::MeanAll];

fn rand_classes(seed: u64, m: usize, c: usize) -> Vec<u32> {
    let mut r = Rng::new(seed);
    (0..m).map(|_| r.below(c as u64) as u32).collect()
}

/// BCE targets: hard 0/1 or soft in [0, 1], a fraction `unknown` of them NaN.
fn rand_labels(seed: u64, n: usize, soft: bool, unknown: f64) -> Vec<f32> {
    let mut r = Rng::new(seed);
    (0..n)
        .map(|_| {
            if r.next_f64() < unknown {
                f32::NAN
            } else if soft {
                r.next_f64() as f32
            } else {
                (r.next_f64() < 0.5) as u32 as f32
            }
        })
        .collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn run_xent(gpu: &Gpu, logits: &[f32], targets: &[u32], m: usize, c: usize) -> (Vec<f32>, Vec<f32>) {
    let gl = upload(gpu, &[m, c], logits);
    let gt = Tensor::from_u32(gpu, &[m], targets).unwrap();
    let mut loss_rows = poisoned(gpu, &[m]);
    let mut dlogits = poisoned(gpu, &[m, c]);
    loss::softmax_xent(gpu, &gl, &gt, &mut loss_rows, &mut dlogits).unwrap();
    (loss_rows.download(gpu).unwrap(), dlogits.download(gpu).unwrap())
}

/// Loss rows are O(log c)/m and the gradients O(1)/m; f32 exp/log and the row sums give a few
/// ulp of relative error, and entries whose softmax underflows need a small absolute floor.
fn xent_tols(m: usize) -> (Tolerance, Tolerance) {
    let s = 1.0 / m as f64;
    (Tolerance { rel: 2e-5, abs: 1e-6 * s }, Tolerance { rel: 2e-5, abs: 1e-9 * s })
}

fn check_xent(what: &str, logits: &[f32], targets: &[u32], m: usize, c: usize) {
    let gpu = gpu();
    let (l, g) = run_xent(&gpu, logits, targets, m, c);
    let (el, eg) = reference::loss::softmax_xent(&to_f64(logits), targets, m, c);
    let (tl, tg) = xent_tols(m);
    assert_close(&format!("{what}: softmax_xent loss_rows m={m} c={c}"), &l, &el, tl);
    assert_close(&format!("{what}: softmax_xent dlogits m={m} c={c}"), &g, &eg, tg);
}

#[test]
fn softmax_xent_odd_sizes() {
    for (i, &m) in ODD_SIZES.iter().enumerate() {
        for (j, &c) in ODD_SIZES.iter().enumerate() {
            let seed = 10 * i as u64 + j as u64;
            check_xent("odd", &rand_range(seed, m * c, -3.0, 3.0), &rand_classes(seed + 1000, m, c), m, c);
        }
    }
}

#[test]
fn softmax_xent_non_square_shapes() {
    for (i, &(m, c)) in [(1, 1000), (1000, 1), (64, 10), (127, 1000), (3, 5000), (257, 2), (10, 65)].iter().enumerate() {
        let seed = 200 + i as u64;
        check_xent("non-square", &rand_range(seed, m * c, -5.0, 5.0), &rand_classes(seed + 1000, m, c), m, c);
    }
}

#[test]
fn softmax_xent_one_class_is_zero_loss() {
    let gpu = gpu();
    let (l, g) = run_xent(&gpu, &[3.0, -1e4, 7.5], &[0, 0, 0], 3, 1);
    assert_eq!(l, vec![0.0; 3]);
    assert_eq!(g.iter().map(|v| v.abs()).collect::<Vec<_>>(), vec![0.0; 3]);
}

#[test]
fn softmax_xent_large_logits_are_finite_and_right() {
    let gpu = gpu();
    let (m, c) = (33, 17);
    for (i, &s) in [100.0f64, 1e4].iter().enumerate() {
        let seed = 300 + 10 * i as u64;
        let targets = rand_classes(seed, m, c);
        // uniform in [-s, s]
        let uniform = rand_range(seed + 1, m * c, -s, s);
        // exactly ±s: ties at the maximum, and targets either at it or 2s below it
        let mut r = Rng::new(seed + 2);
        let signs: Vec<f32> = (0..m * c).map(|_| if r.next_f64() < 0.5 { s as f32 } else { -s as f32 }).collect();
        // every row constant (uniform softmax), then one row with the target far above the rest
        let mut flat = vec![-s as f32; m * c];
        flat[targets[0] as usize] = s as f32;
        for (what, x) in [("uniform", &uniform), ("signs", &signs), ("flat", &flat)] {
            let (l, g) = run_xent(&gpu, x, &targets, m, c);
            assert!(l.iter().chain(&g).all(|v| v.is_finite()), "±{s} {what}: non-finite output");
            check_xent(&format!("±{s} {what}"), x, &targets, m, c);
        }
    }
}

#[test]
fn softmax_xent_tiny_losses_keep_their_digits() {
    // a confident right answer: loss ≈ Σ_{j≠t} exp(x_j − x_t), far below f32's epsilon of 1
    let (m, c) = (4, 5);
    let mut x = vec![-20.0f32; m * c];
    let targets = [0u32, 1, 2, 4];
    for (i, &t) in targets.iter().enumerate() {
        x[i * c + t as usize] = 10.0 + i as f32;
    }
    let gpu = gpu();
    let (l, g) = run_xent(&gpu, &x, &targets, m, c);
    let (el, eg) = reference::loss::softmax_xent(&to_f64(&x), &targets, m, c);
    assert!(el.iter().all(|&v| v > 0.0 && v < 1e-12), "{el:?}");
    assert_close("tiny loss rows", &l, &el, Tolerance { rel: 1e-5, abs: 0.0 });
    assert_close("tiny loss dlogits", &g, &eg, Tolerance { rel: 1e-5, abs: 0.0 });
}

#[test]
fn softmax_xent_bad_target_gives_nan_loss_and_no_gradient() {
    let gpu = gpu();
    let (m, c) = (5, 7);
    let x = rand_vec(400, m * c);
    let targets = [0u32, 7, 3, 1000, u32::MAX];
    let (l, g) = run_xent(&gpu, &x, &targets, m, c);
    let (el, eg) = reference::loss::softmax_xent(&to_f64(&x), &targets, m, c);
    let (tl, tg) = xent_tols(m);
    for i in 0..m {
        let row = &g[i * c..(i + 1) * c];
        if targets[i] as usize >= c {
            assert!(l[i].is_nan(), "row {i}: target {} ≥ {c} must give a NaN loss, got {}", targets[i], l[i]);
            assert!(el[i].is_nan());
            assert!(row.iter().all(|&v| v == 0.0), "row {i}: gradient must be 0, got {row:?}");
        } else {
            assert_close(&format!("good row {i} loss"), &l[i..=i], &el[i..=i], tl);
            assert_close(&format!("good row {i} dlogits"), row, &eg[i * c..(i + 1) * c], tg);
        }
    }
}

#[test]
fn softmax_xent_wide_rows_and_the_loop_budget() {
    // wider than llvmpipe's 65,535 loop iterations per invocation: unrolled passes still fit
    let (m, c) = (2, 70_001);
    check_xent("wide", &rand_range(450, m * c, -4.0, 4.0), &[5, 70_000], m, c);
    // past the budget: an error, never a silently truncated loop
    let gpu = gpu();
    let c = 100_000;
    let logits = Tensor::zeros(&gpu, &[1, c]).unwrap();
    let targets = Tensor::from_u32(&gpu, &[1], &[0]).unwrap();
    let (loss_rows, dlogits) = (poisoned(&gpu, &[1]), poisoned(&gpu, &[1, c]));
    let err = loss::softmax_xent_dispatch(&gpu, &logits, &targets, &loss_rows, &dlogits).unwrap_err();
    assert!(err.to_string().contains("loop iterations"), "{err}");
}

#[test]
fn batch_loss_is_the_sum_of_loss_rows() {
    // the trainer's path: loss rows summed on the GPU, accumulated over batches
    let gpu = gpu();
    let (m, c) = (127, 10);
    let mut total = upload(&gpu, &[1], &[0.0]);
    let mut expected = 0.0;
    for b in 0..3u64 {
        let x = rand_range(500 + b, m * c, -2.0, 2.0);
        let t = rand_classes(600 + b, m, c);
        let gl = upload(&gpu, &[m, c], &x);
        let gt = Tensor::from_u32(&gpu, &[m], &t).unwrap();
        let (loss_rows, dlogits) = (poisoned(&gpu, &[m]), poisoned(&gpu, &[m, c]));
        let d1 = loss::softmax_xent_dispatch(&gpu, &gl, &gt, &loss_rows, &dlogits).unwrap();
        let d2 = reduce::sum_dispatch(&gpu, &loss_rows, &total, true).unwrap();
        gpu.run("step", &[&d1, &d2]).unwrap();
        // the batch mean of −log softmax_t, straight from the definition
        let xd = to_f64(&x);
        expected += (0..m)
            .map(|i| {
                let row = &xd[i * c..(i + 1) * c];
                let lse = row.iter().map(|v| v.exp()).sum::<f64>().ln();
                lse - row[t[i] as usize]
            })
            .sum::<f64>()
            / m as f64;
    }
    reduce::sum(&gpu, &Tensor::zeros(&gpu, &[0]).unwrap(), &mut total, true).unwrap();
    assert_close("3 batch mean losses", &total.download(&gpu).unwrap(), &[expected], Tolerance::F32);
}

// ------------------------------------------------------------------------------------- BCE

struct BceCase<'a> {
    m: usize,
    k: usize,
    logits: &'a [f32],
    targets: &'a [f32],
    pos_weight: Option<&'a [f32]>,
    label_weight: Option<&'a [f32]>,
    reduction: BceReduction,
}

fn run_bce(gpu: &Gpu, case: &BceCase<'_>) -> (Vec<f32>, Vec<f32>) {
    let (m, k) = (case.m, case.k);
    let gl = upload(gpu, &[m, k], case.logits);
    let gt = upload(gpu, &[m, k], case.targets);
    let opts = BceOptions {
        pos_weight: case.pos_weight.map(|p| upload(gpu, &[k], p)),
        label_weight: case.label_weight.map(|w| upload(gpu, &[k], w)),
        reduction: case.reduction,
    };
    let mut loss_rows = poisoned(gpu, &[m]);
    let mut dlogits = poisoned(gpu, &[m, k]);
    loss::bce_logits(gpu, &gl, &gt, &opts, &mut loss_rows, &mut dlogits).unwrap();
    (loss_rows.download(gpu).unwrap(), dlogits.download(gpu).unwrap())
}

fn reference_bce(case: &BceCase<'_>) -> (Vec<f64>, Vec<f64>) {
    let pw = case.pos_weight.map(to_f64);
    let lw = case.label_weight.map(to_f64);
    reference::loss::bce_logits(&to_f64(case.logits), &to_f64(case.targets), case.m, case.k, pw.as_deref(), lw.as_deref(), case.reduction)
}

fn check_bce(what: &str, case: &BceCase<'_>) {
    let gpu = gpu();
    let (l, g) = run_bce(&gpu, case);
    let (el, eg) = reference_bce(case);
    let labelled = case.targets.iter().filter(|y| !y.is_nan()).count();
    let n = reference::loss::bce_normaliser(case.reduction, case.m, case.k, labelled);
    let wmax = |w: Option<&[f32]>| w.map_or(1.0, |w| w.iter().fold(1.0f64, |a, &b| a.max(b.abs() as f64)));
    let scale = wmax(case.pos_weight) * wmax(case.label_weight) / n;
    // per-entry terms are O(1)·weights/N; a soft target's gradient subtracts two such terms
    let tl = Tolerance { rel: 2e-5, abs: 1e-6 * scale };
    let tg = Tolerance { rel: 2e-5, abs: 1e-6 * scale };
    let desc = format!(
        "{what}: bce m={} k={} {:?} pos={} weight={}",
        case.m,
        case.k,
        case.reduction,
        case.pos_weight.is_some(),
        case.label_weight.is_some()
    );
    assert_close(&format!("{desc} loss_rows"), &l, &el, tl);
    assert_close(&format!("{desc} dlogits"), &g, &eg, tg);
}

#[test]
fn bce_odd_sizes() {
    for (i, &m) in ODD_SIZES.iter().enumerate() {
        for (j, &k) in ODD_SIZES.iter().enumerate() {
            let seed = 1000 + 10 * i as u64 + j as u64;
            let logits = rand_range(seed, m * k, -6.0, 6.0);
            let targets = rand_labels(seed + 1, m * k, (i + j) % 2 == 1, 0.3);
            let pos = rand_range(seed + 2, k, 0.5, 3.0);
            let weight = rand_range(seed + 3, k, 0.0, 2.0);
            let v = i + j;
            let case = BceCase {
                m,
                k,
                logits: &logits,
                targets: &targets,
                pos_weight: (v % 4 >= 2).then_some(&pos[..]),
                label_weight: (v % 2 == 1).then_some(&weight[..]),
                reduction: REDUCTIONS[v % 3],
            };
            check_bce("odd", &case);
        }
    }
}

#[test]
fn bce_every_option_and_reduction_hard_and_soft_targets() {
    for (s, &(m, k)) in [(33usize, 7usize), (127, 33), (1, 257), (257, 1)].iter().enumerate() {
        let seed = 2000 + 100 * s as u64;
        let logits = rand_range(seed, m * k, -8.0, 8.0);
        let pos = rand_range(seed + 2, k, 0.25, 4.0);
        let weight = rand_range(seed + 3, k, 0.0, 2.0);
        for soft in [false, true] {
            let targets = rand_labels(seed + 1 + soft as u64, m * k, soft, 0.25);
            for reduction in REDUCTIONS {
                for (pw, lw) in [(None, None), (Some(&pos[..]), None), (None, Some(&weight[..])), (Some(&pos[..]), Some(&weight[..]))] {
                    let case = BceCase { m, k, logits: &logits, targets: &targets, pos_weight: pw, label_weight: lw, reduction };
                    check_bce(if soft { "soft" } else { "hard" }, &case);
                }
            }
        }
    }
}

#[test]
fn bce_large_logits_are_finite_and_right() {
    let gpu = gpu();
    let (m, k) = (33, 9);
    let pos = rand_range(3001, k, 0.5, 3.0);
    for (i, &s) in [100.0f64, 1e4].iter().enumerate() {
        let seed = 3000 + 10 * i as u64;
        let uniform = rand_range(seed, m * k, -s, s);
        let mut r = Rng::new(seed + 1);
        let signs: Vec<f32> = (0..m * k).map(|_| if r.next_f64() < 0.5 { s as f32 } else { -s as f32 }).collect();
        for soft in [false, true] {
            let targets = rand_labels(seed + 2 + soft as u64, m * k, soft, 0.2);
            for (what, x) in [("uniform", &uniform), ("signs", &signs)] {
                for reduction in REDUCTIONS {
                    let case = BceCase { m, k, logits: x, targets: &targets, pos_weight: Some(&pos), label_weight: None, reduction };
                    let (l, g) = run_bce(&gpu, &case);
                    assert!(l.iter().chain(&g).all(|v| v.is_finite()), "±{s} {what}: non-finite output");
                    check_bce(&format!("±{s} {what} soft={soft}"), &case);
                }
            }
        }
    }
}

#[test]
fn bce_unknown_labels_are_invisible() {
    let gpu = gpu();
    let (m, k) = (33, 7);
    let logits = rand_range(4000, m * k, -4.0, 4.0);
    let pos = rand_range(4001, k, 0.5, 3.0);
    let weight = rand_range(4002, k, 0.1, 2.0);
    for soft in [false, true] {
        let targets = rand_labels(4003 + soft as u64, m * k, soft, 0.35);
        let unknown: Vec<usize> = (0..m * k).filter(|&i| targets[i].is_nan()).collect();
        assert!(unknown.len() > 10 && unknown.len() < m * k - 10);
        // the unknown entries' logits replaced by anything at all, NaN and infinities included
        let wild = [1e4, -1e4, 1e30, -1e30, f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, 55.0];
        let mut changed = logits.clone();
        for (n, &i) in unknown.iter().enumerate() {
            changed[i] = wild[n % wild.len()];
        }
        for reduction in REDUCTIONS {
            for (pw, lw) in [(None, None), (Some(&pos[..]), Some(&weight[..]))] {
                let case = BceCase { m, k, logits: &logits, targets: &targets, pos_weight: pw, label_weight: lw, reduction };
                let (l1, g1) = run_bce(&gpu, &case);
                let (l2, g2) = run_bce(&gpu, &BceCase { logits: &changed, ..case });
                let what = format!("soft={soft} {reduction:?} weighted={}", pw.is_some());
                assert_eq!(bits(&l1), bits(&l2), "{what}: an unknown label's logit changed loss_rows");
                assert_eq!(bits(&g1), bits(&g2), "{what}: an unknown label's logit changed a gradient");
                for &i in &unknown {
                    assert_eq!(g2[i], 0.0, "{what}: unknown entry {i} has gradient {}", g2[i]);
                }
                assert!(l1.iter().all(|v| v.is_finite()), "{what}: {l1:?}");
            }
        }
    }
}

#[test]
fn bce_with_no_known_label_is_zero_not_nan() {
    let gpu = gpu();
    let (m, k) = (7, 3);
    let logits = rand_vec(4100, m * k);
    let targets = vec![f32::NAN; m * k];
    for reduction in REDUCTIONS {
        let case = BceCase { m, k, logits: &logits, targets: &targets, pos_weight: None, label_weight: None, reduction };
        let (l, g) = run_bce(&gpu, &case);
        assert_eq!(l, vec![0.0; m], "{reduction:?}");
        assert_eq!(g, vec![0.0; m * k], "{reduction:?}");
    }
}

#[test]
fn bce_mean_labelled_counts_on_the_gpu_first() {
    let gpu = gpu();
    let (m, k) = (5, 3);
    let logits = upload(&gpu, &[m, k], &rand_vec(4200, m * k));
    let targets = upload(&gpu, &[m, k], &rand_labels(4201, m * k, false, 0.3));
    let (loss_rows, dlogits) = (poisoned(&gpu, &[m]), poisoned(&gpu, &[m, k]));
    for (reduction, n) in [(BceReduction::SumLabelsMeanExamples, 1), (BceReduction::MeanLabelled, 2), (BceReduction::MeanAll, 1)] {
        let opts = BceOptions { reduction, ..Default::default() };
        let ds = loss::bce_logits_dispatches(&gpu, &logits, &targets, &opts, &loss_rows, &dlogits).unwrap();
        assert_eq!(ds.len(), n, "{reduction:?}: {ds:?}");
    }
    assert_eq!(BceOptions::default().reduction, BceReduction::SumLabelsMeanExamples);
}

// ---------------------------------------------------------------- the reference, proven

/// Σ_i loss_rows[i] as a function of the logits.
fn total(rows: &[f64]) -> f64 {
    rows.iter().sum()
}

/// Central differences (eps 1e-6) of `f` at `x` against the analytic gradient `g`.
fn check_finite_differences(what: &str, x: &[f64], g: &[f64], f: impl Fn(&[f64]) -> f64) {
    let eps = 1e-6;
    for i in 0..x.len() {
        let (mut xp, mut xm) = (x.to_vec(), x.to_vec());
        xp[i] += eps;
        xm[i] -= eps;
        let fd = (f(&xp) - f(&xm)) / (2.0 * eps);
        let tol = 1e-8 + 1e-6 * g[i].abs().max(fd.abs());
        assert!((fd - g[i]).abs() <= tol, "{what}: d/dx[{i}]: finite difference {fd:e}, reference gradient {:e}", g[i]);
    }
}

#[test]
fn reference_softmax_xent_gradient_matches_finite_differences() {
    let (m, c) = (4, 6);
    let mut r = Rng::new(5000);
    for scale in [1.0, 5.0, 20.0] {
        let x: Vec<f64> = (0..m * c).map(|_| r.uniform(-scale, scale)).collect();
        let t: Vec<u32> = (0..m).map(|_| r.below(c as u64) as u32).collect();
        let (_, g) = reference::loss::softmax_xent(&x, &t, m, c);
        check_finite_differences(&format!("softmax_xent scale {scale}"), &x, &g, |x| total(&reference::loss::softmax_xent(x, &t, m, c).0));
    }
}

#[test]
fn reference_bce_gradient_matches_finite_differences() {
    let (m, k) = (4, 5);
    let mut r = Rng::new(5100);
    let pos: Vec<f64> = (0..k).map(|_| r.uniform(0.25, 4.0)).collect();
    let weight: Vec<f64> = (0..k).map(|_| r.uniform(0.0, 2.0)).collect();
    for scale in [1.0, 6.0, 20.0] {
        let x: Vec<f64> = (0..m * k).map(|_| r.uniform(-scale, scale)).collect();
        for soft in [false, true] {
            let y: Vec<f64> = to_f64(&rand_labels(5200 + soft as u64, m * k, soft, 0.3));
            for reduction in REDUCTIONS {
                for (pw, lw) in [(None, None), (Some(&pos[..]), Some(&weight[..]))] {
                    let (_, g) = reference::loss::bce_logits(&x, &y, m, k, pw, lw, reduction);
                    let what = format!("bce scale {scale} soft={soft} {reduction:?} weighted={}", pw.is_some());
                    check_finite_differences(&what, &x, &g, |x| total(&reference::loss::bce_logits(x, &y, m, k, pw, lw, reduction).0));
                }
            }
        }
    }
}

#[test]
fn reference_losses_equal_their_textbook_forms() {
    let mut r = Rng::new(5300);
    // BCE: PyTorch's BCEWithLogitsLoss formula, fine at moderate logits
    for _ in 0..200 {
        let (x, y, p, w) = (r.uniform(-10.0, 10.0), r.next_f64(), r.uniform(0.1, 5.0), r.uniform(0.0, 3.0));
        let torch = w * ((1.0 - y) * x + (1.0 + (p - 1.0) * y) * ((-x.abs()).exp().ln_1p() + (-x).max(0.0)));
        let sig = 1.0 / (1.0 + (-x).exp());
        let torch_grad = w * (sig * (1.0 + (p - 1.0) * y) - p * y);
        let (l, g) = reference::loss::bce_entry(x, y, p, w);
        assert!((l - torch).abs() <= 1e-12 * (1.0 + torch.abs()), "bce({x}, {y}, {p}, {w}) = {l}, PyTorch's form {torch}");
        assert!((g - torch_grad).abs() <= 1e-12 * (1.0 + torch_grad.abs()), "dbce({x}, {y}, {p}, {w}) = {g}, PyTorch's form {torch_grad}");
    }
    // softmax cross-entropy: −log softmax_t and softmax − onehot, straight from the definition
    let (m, c) = (6, 9);
    let x: Vec<f64> = (0..m * c).map(|_| r.uniform(-5.0, 5.0)).collect();
    let t: Vec<u32> = (0..m).map(|_| r.below(c as u64) as u32).collect();
    let (l, g) = reference::loss::softmax_xent(&x, &t, m, c);
    for i in 0..m {
        let row = &x[i * c..(i + 1) * c];
        let z: f64 = row.iter().map(|v| v.exp()).sum();
        let naive = -(row[t[i] as usize].exp() / z).ln() / m as f64;
        assert!((l[i] - naive).abs() <= 1e-12 * naive.abs(), "row {i}: {} vs {naive}", l[i]);
        for j in 0..c {
            let naive_g = (row[j].exp() / z - (j == t[i] as usize) as u32 as f64) / m as f64;
            assert!((g[i * c + j] - naive_g).abs() <= 1e-14, "row {i} col {j}: {} vs {naive_g}", g[i * c + j]);
        }
    }
}

// ---------------------------------------------------------------- determinism and errors

#[test]
fn repeat_runs_are_bit_identical() {
    let gpu = gpu();
    let (m, c) = (257, 33);
    let x = rand_range(6000, m * c, -10.0, 10.0);
    let t = rand_classes(6001, m, c);
    let first = run_xent(&gpu, &x, &t, m, c);
    for _ in 0..2 {
        let again = run_xent(&gpu, &x, &t, m, c);
        assert_eq!((bits(&again.0), bits(&again.1)), (bits(&first.0), bits(&first.1)), "softmax_xent repeat differs");
    }
    let y = rand_labels(6002, m * c, true, 0.3);
    let pos = rand_range(6003, c, 0.5, 3.0);
    let weight = rand_range(6004, c, 0.0, 2.0);
    for reduction in REDUCTIONS {
        let case = BceCase { m, k: c, logits: &x, targets: &y, pos_weight: Some(&pos), label_weight: Some(&weight), reduction };
        let first = run_bce(&gpu, &case);
        for _ in 0..2 {
            let again = run_bce(&gpu, &case);
            assert_eq!((bits(&again.0), bits(&again.1)), (bits(&first.0), bits(&first.1)), "bce {reduction:?} repeat differs");
        }
    }
}

#[test]
fn shape_mismatch_is_an_error_not_a_panic() {
    let gpu = gpu();
    let (m, c) = (4, 3);
    let logits = upload(&gpu, &[m, c], &rand_vec(7000, m * c));
    let classes = Tensor::from_u32(&gpu, &[m], &[0, 1, 2, 0]).unwrap();
    let rows = poisoned(&gpu, &[m]);
    let grads = poisoned(&gpu, &[m, c]);
    let xent = |l: &Tensor, t: &Tensor, r: &Tensor, g: &Tensor| loss::softmax_xent_dispatch(&gpu, l, t, r, g).map(|_| ());
    xent(&logits, &classes, &rows, &grads).unwrap();
    let f32_classes = upload(&gpu, &[m], &[0.0, 1.0, 2.0, 0.0]);
    let err = xent(&logits, &f32_classes, &rows, &grads).unwrap_err();
    assert!(err.to_string().contains("softmax_xent"), "{err}");
    assert!(xent(&logits, &Tensor::from_u32(&gpu, &[m + 1], &[0; 5]).unwrap(), &rows, &grads).is_err());
    assert!(xent(&logits, &classes, &poisoned(&gpu, &[m - 1]), &grads).is_err());
    assert!(xent(&logits, &classes, &rows, &poisoned(&gpu, &[c, m])).is_err());
    assert!(xent(&upload(&gpu, &[m * c], &[0.0; 12]), &classes, &rows, &grads).is_err());
    let no_classes = Tensor::zeros(&gpu, &[m, 0]).unwrap();
    assert!(xent(&no_classes, &classes, &rows, &no_classes).is_err());

    let labels = upload(&gpu, &[m, c], &rand_labels(7001, m * c, false, 0.2));
    let bce = |t: &Tensor, o: &BceOptions, r: &Tensor, g: &Tensor| loss::bce_logits_dispatches(&gpu, &logits, t, o, r, g).map(|_| ());
    let ok = BceOptions::default();
    bce(&labels, &ok, &rows, &grads).unwrap();
    let err = bce(&Tensor::from_u32(&gpu, &[m, c], &[0; 12]).unwrap(), &ok, &rows, &grads).unwrap_err();
    assert!(err.to_string().contains("bce_logits"), "{err}");
    assert!(bce(&upload(&gpu, &[c, m], &[0.0; 12]), &ok, &rows, &grads).is_err());
    assert!(bce(&labels, &ok, &poisoned(&gpu, &[m + 1]), &grads).is_err());
    assert!(bce(&labels, &ok, &rows, &poisoned(&gpu, &[m, c + 1])).is_err());
    let bad_pos = BceOptions { pos_weight: Some(upload(&gpu, &[c + 1], &[1.0; 4])), ..Default::default() };
    assert!(bce(&labels, &bad_pos, &rows, &grads).is_err());
    let bad_weight = BceOptions {
        label_weight: Some(Tensor::from_u32(&gpu, &[c], &[1; 3]).unwrap()),
        reduction: BceReduction::MeanLabelled,
        ..Default::default()
    };
    assert!(bce(&labels, &bad_weight, &rows, &grads).is_err());
}

/// More rows than 65,535 workgroups of 64 hold: the grid folds into y; every row still written.
#[test]
fn folded_grids_cover_every_row() {
    let (m, c) = (65_535 * 64 + 5, 1);
    let x = rand_range(8000, m * c, -3.0, 3.0);
    let t = rand_classes(8001, m, c);
    check_xent("folded", &x, &t, m, c);
    let y = rand_labels(8002, m * c, true, 0.2);
    let case = BceCase { m, k: c, logits: &x, targets: &y, pos_weight: None, label_weight: None, reduction: BceReduction::MeanLabelled };
    check_bce("folded", &case);
}

// ---------------------------------------------------------------- fused head kernels

/// Counts already in the epoch's counters before the batch (the kernels add to them).
fn prior_counts(seed: u64, n: usize) -> Vec<u32> {
    let mut r = Rng::new(seed);
    (0..n).map(|_| r.below(50) as u32).collect()
}

/// Runs `head_bce` on a case (threshold 0.5 or `threshold`) with the accumulators pre-filled;
/// returns (dlogits, loss_acc, counts, db).
fn run_head_bce(
    gpu: &Gpu,
    case: &BceCase<'_>,
    threshold: f32,
    with_db: bool,
    prior_loss: f32,
    prior: &[u32],
) -> (Vec<f32>, f32, Vec<u32>, Vec<f32>) {
    let (m, k) = (case.m, case.k);
    let gl = upload(gpu, &[m, k], case.logits);
    let gt = upload(gpu, &[m, k], case.targets);
    let opts = BceOptions {
        pos_weight: case.pos_weight.map(|p| upload(gpu, &[k], p)),
        label_weight: case.label_weight.map(|w| upload(gpu, &[k], w)),
        reduction: case.reduction,
    };
    let dlogits = poisoned(gpu, &[m, k]);
    let loss_acc = upload(gpu, &[1], &[prior_loss]);
    let counts = Tensor::from_u32(gpu, &[k, 4], prior).unwrap();
    let db = poisoned(gpu, &[k]);
    let out = loss::HeadOutputs { dlogits: &dlogits, loss_acc: &loss_acc, counts: &counts, db: with_db.then_some(&db) };
    let d = loss::head_bce_dispatch(gpu, &gl, &gt, &opts, threshold, &out).unwrap();
    gpu.run("head_bce", &[&d]).unwrap();
    (dlogits.download(gpu).unwrap(), loss_acc.download(gpu).unwrap()[0], counts.download_u32(gpu).unwrap(), db.download(gpu).unwrap())
}

fn check_head_bce(case: &BceCase<'_>, threshold: f32, seed: u64) {
    let gpu = gpu();
    let (m, k) = (case.m, case.k);
    let prior = prior_counts(seed, 4 * k);
    let (g, acc, counts, db) = run_head_bce(&gpu, case, threshold, true, 1.5, &prior);
    let (el, eg) = reference_bce(case);
    let desc =
        format!("head_bce m={m} k={k} {:?} pos={} weight={}", case.reduction, case.pos_weight.is_some(), case.label_weight.is_some());
    let labelled = case.targets.iter().filter(|y| !y.is_nan()).count();
    let n = reference::loss::bce_normaliser(case.reduction, m, k, labelled);
    let wmax = |w: Option<&[f32]>| w.map_or(1.0, |w| w.iter().fold(1.0f64, |a, &b| a.max(b.abs() as f64)));
    let scale = wmax(case.pos_weight) * wmax(case.label_weight) / n;
    let tol = Tolerance { rel: 2e-5, abs: 1e-6 * scale };
    assert_close(&format!("{desc} dlogits"), &g, &eg, tol);
    // the batch loss added to the accumulator
    let batch: f64 = el.iter().sum();
    assert_close(&format!("{desc} loss_acc"), &[acc], &[1.5 + batch], Tolerance { rel: 2e-5, abs: 1e-6 * scale * (m * k) as f64 });
    // the bias gradient is the column sum of the gradient
    let edb = reference::reduce::col_sum(&eg, m, k);
    assert_close(&format!("{desc} db"), &db, &edb, Tolerance { rel: 1e-4, abs: 1e-6 * scale * m as f64 });
    // counts added to the prior ones (logits well away from the threshold: no ties in rounding)
    let ec = reference::metrics::label_confusion(&to_f64(case.logits), &to_f64(case.targets), m, k, threshold as f64);
    let expected: Vec<u32> = prior.iter().zip(&ec).map(|(a, b)| a + b).collect();
    assert_eq!(counts, expected, "{desc} counts");
}

#[test]
fn head_bce_matches_the_separate_kernels_reference() {
    // k ≤ 64 (several invocations per label, some idle when 64 % k ≠ 0) and k > 64 (whole labels
    // per invocation), around the workgroup's 64
    let shapes = [(1, 1), (7, 1), (1, 7), (33, 4), (127, 7), (128, 33), (50, 64), (9, 65), (7, 255), (33, 257), (2, 300), (63, 260)];
    for (s, &(m, k)) in shapes.iter().enumerate() {
        let seed = 5000 + 10 * s as u64;
        let mut logits = rand_range(seed, m * k, -6.0, 6.0);
        // large logits stay finite
        for (i, x) in logits.iter_mut().enumerate().step_by(5) {
            *x = if i % 2 == 0 { 100.0 } else { -100.0 };
        }
        let targets = rand_labels(seed + 1, m * k, s % 2 == 1, 0.25);
        let pos = rand_range(seed + 2, k, 0.5, 3.0);
        let weight = rand_range(seed + 3, k, 0.2, 2.0);
        for (r, &reduction) in REDUCTIONS.iter().enumerate() {
            let (pw, lw) = match (s + r) % 3 {
                0 => (None, None),
                1 => (Some(&pos[..]), None),
                _ => (Some(&pos[..]), Some(&weight[..])),
            };
            let case = BceCase { m, k, logits: &logits, targets: &targets, pos_weight: pw, label_weight: lw, reduction };
            check_head_bce(&case, if r == 1 { 0.7 } else { 0.5 }, seed + r as u64);
        }
    }
}

#[test]
fn head_bce_without_db_and_with_no_known_label() {
    let gpu = gpu();
    let (m, k) = (5, 3);
    let logits = rand_range(77, m * k, -3.0, 3.0);
    let targets = vec![f32::NAN; m * k];
    let case =
        BceCase { m, k, logits: &logits, targets: &targets, pos_weight: None, label_weight: None, reduction: BceReduction::MeanLabelled };
    let prior = prior_counts(78, 4 * k);
    let (g, acc, counts, db) = run_head_bce(&gpu, &case, 0.5, false, 2.0, &prior);
    assert!(g.iter().all(|&x| x == 0.0), "no known label: zero gradient, not NaN: {g:?}");
    assert_eq!(acc, 2.0, "no known label adds 0 to the loss");
    assert_eq!(counts, prior, "no known label: no counts");
    assert!(db.iter().all(|x| x.is_nan()), "without db the poisoned buffer stays untouched");
}

fn run_head_softmax(
    gpu: &Gpu,
    logits: &[f32],
    targets: &[u32],
    m: usize,
    c: usize,
    prior: [u32; 2],
) -> (Vec<f32>, Vec<f32>, f32, Vec<u32>, Vec<f32>) {
    let gl = upload(gpu, &[m, c], logits);
    let gt = Tensor::from_u32(gpu, &[m], targets).unwrap();
    let loss_rows = poisoned(gpu, &[m]);
    let dlogits = poisoned(gpu, &[m, c]);
    let loss_acc = upload(gpu, &[1], &[0.25]);
    let counts = Tensor::from_u32(gpu, &[2], &prior).unwrap();
    let db = poisoned(gpu, &[c]);
    let out = loss::HeadOutputs { dlogits: &dlogits, loss_acc: &loss_acc, counts: &counts, db: Some(&db) };
    let d = loss::head_softmax_dispatch(gpu, &gl, &gt, &loss_rows, &out).unwrap();
    gpu.run("head_softmax", &[&d]).unwrap();
    (
        loss_rows.download(gpu).unwrap(),
        dlogits.download(gpu).unwrap(),
        loss_acc.download(gpu).unwrap()[0],
        counts.download_u32(gpu).unwrap(),
        db.download(gpu).unwrap(),
    )
}

#[test]
fn head_softmax_matches_the_separate_kernels_reference() {
    let gpu = gpu();
    for (s, &(m, c)) in [(1, 1), (1, 7), (7, 3), (33, 10), (127, 7), (257, 33), (128, 127), (60, 270)].iter().enumerate() {
        let seed = 6000 + 10 * s as u64;
        let mut logits = rand_range(seed, m * c, -5.0, 5.0);
        for (i, x) in logits.iter_mut().enumerate().step_by(7) {
            *x = if i % 2 == 0 { 100.0 } else { -100.0 };
        }
        let targets = rand_classes(seed + 1, m, c);
        let prior = [3, 11];
        let (rows, g, acc, counts, db) = run_head_softmax(&gpu, &logits, &targets, m, c, prior);
        let (el, eg) = reference::loss::softmax_xent(&to_f64(&logits), &targets, m, c);
        let (tl, tg) = xent_tols(m);
        let desc = format!("head_softmax m={m} c={c}");
        assert_close(&format!("{desc} loss_rows"), &rows, &el, tl);
        assert_close(&format!("{desc} dlogits"), &g, &eg, tg);
        let batch: f64 = el.iter().sum();
        assert_close(&format!("{desc} loss_acc"), &[acc], &[0.25 + batch], Tolerance { rel: 2e-5, abs: 1e-6 });
        let edb = reference::reduce::col_sum(&eg, m, c);
        assert_close(&format!("{desc} db"), &db, &edb, Tolerance { rel: 1e-4, abs: 1e-6 });
        let (correct, total) = reference::metrics::argmax_correct(&to_f64(&logits), &targets, m, c);
        assert_eq!(counts, vec![prior[0] + correct, prior[1] + total], "{desc} counts");
    }
}

#[test]
fn head_kernels_refuse_large_batches_and_bad_shapes() {
    let gpu = gpu();
    let (m, k) = (loss::FUSED_HEAD_MAX_ENTRIES / 4 + 1, 4);
    assert!(!loss::fits_fused_head(m, k));
    let logits = poisoned(&gpu, &[m, k]);
    let dlogits = poisoned(&gpu, &[m, k]);
    let acc = poisoned(&gpu, &[1]);
    let counts = Tensor::from_u32(&gpu, &[k, 4], &[0; 16]).unwrap();
    let out = loss::HeadOutputs { dlogits: &dlogits, loss_acc: &acc, counts: &counts, db: None };
    assert!(loss::head_bce_dispatch(&gpu, &logits, &logits, &BceOptions::default(), 0.5, &out).is_err(), "too large");
    let small = poisoned(&gpu, &[4, 4]);
    let out = loss::HeadOutputs { dlogits: &small, loss_acc: &acc, counts: &counts, db: None };
    assert!(loss::head_bce_dispatch(&gpu, &small, &small, &BceOptions::default(), 1.0, &out).is_err(), "threshold 1");
    let wrong_counts = Tensor::from_u32(&gpu, &[3], &[0; 3]).unwrap();
    let out = loss::HeadOutputs { dlogits: &small, loss_acc: &acc, counts: &wrong_counts, db: None };
    assert!(loss::head_bce_dispatch(&gpu, &small, &small, &BceOptions::default(), 0.5, &out).is_err(), "counts shape");
    let targets = Tensor::from_u32(&gpu, &[4], &[0; 4]).unwrap();
    let rows = poisoned(&gpu, &[4]);
    let bad_db = poisoned(&gpu, &[5]);
    let out = loss::HeadOutputs { dlogits: &small, loss_acc: &acc, counts: &wrong_counts, db: Some(&bad_db) };
    assert!(loss::head_softmax_dispatch(&gpu, &small, &targets, &rows, &out).is_err(), "softmax counts/db shapes");
}

// ---------------------------------------------------------------- fused linear head step

/// A linear head step case: data set `feat` `[n, d]` and `targets` `[n, k]`, the batch
/// `indices[offset .. offset + m]` (entries ≥ n allowed), the layer `w` `[k, d]`, `b` `[k]`.
struct LinearCase {
    m: usize,
    k: usize,
    d: usize,
    n: usize,
    offset: usize,
    indices: Vec<u32>,
    feat: Vec<f32>,
    targets: Vec<f32>,
    w: Vec<f32>,
    b: Vec<f32>,
}

impl LinearCase {
    fn new(seed: u64, m: usize, k: usize, d: usize, n: usize, offset: usize, bad_index: bool) -> LinearCase {
        let mut r = Rng::new(seed);
        let mut indices: Vec<u32> = (0..offset + m + 3).map(|_| r.below(n as u64) as u32).collect();
        if bad_index {
            indices[offset + m / 2] = (n + 5) as u32;
        }
        // logits in about ±6, a few at ±100 (a large weight on one row's features)
        let feat = rand_range(seed + 1, n * d, -1.0, 1.0);
        let scale = (3.0 / d as f64).sqrt();
        let mut w = rand_range(seed + 2, k * d, -scale, scale);
        if k > 2 {
            w[d..2 * d].iter_mut().for_each(|v| *v *= 60.0);
        }
        let b = rand_range(seed + 3, k, -1.0, 1.0);
        let targets = rand_labels(seed + 4, n * k, seed % 2 == 1, 0.25);
        LinearCase { m, k, d, n, offset, indices, feat, targets, w, b }
    }

    /// The batch's rows (`None`: an index past the data set).
    fn rows(&self) -> Vec<Option<usize>> {
        self.indices[self.offset..self.offset + self.m]
            .iter()
            .map(|&r| (r as usize) < self.n)
            .zip(&self.indices[self.offset..])
            .map(|(ok, &r)| ok.then_some(r as usize))
            .collect()
    }

    /// float64 logits `[m, k]` and batch targets (NaN for a missing row).
    fn reference_batch(&self) -> (Vec<f64>, Vec<f64>) {
        let (k, d) = (self.k, self.d);
        let mut logits = Vec::new();
        let mut targets = Vec::new();
        for row in self.rows() {
            for j in 0..k {
                match row {
                    Some(r) => {
                        let dot: f64 = (0..d).map(|c| self.feat[r * d + c] as f64 * self.w[j * d + c] as f64).sum();
                        logits.push(dot + self.b[j] as f64);
                        targets.push(self.targets[r * k + j] as f64);
                    }
                    None => {
                        logits.push(0.0);
                        targets.push(f64::NAN);
                    }
                }
            }
        }
        (logits, targets)
    }
}

/// Runs the fused step; returns (dlogits, loss_acc, counts, db, dW).
fn run_linear_head(
    gpu: &Gpu,
    c: &LinearCase,
    opts: &BceOptions,
    threshold: f32,
    prior: &[u32],
) -> (Vec<f32>, f32, Vec<u32>, Vec<f32>, Vec<f32>) {
    let (m, k, d, n) = (c.m, c.k, c.d, c.n);
    let feat = upload(gpu, &[n, d], &c.feat);
    let targets = upload(gpu, &[n, k], &c.targets);
    let indices = Tensor::from_u32(gpu, &[c.indices.len()], &c.indices).unwrap();
    let (w, b, dw) = (upload(gpu, &[k, d], &c.w), upload(gpu, &[k], &c.b), poisoned(gpu, &[k, d]));
    let dlogits = poisoned(gpu, &[m, k]);
    let loss_acc = upload(gpu, &[1], &[1.5]);
    let counts = Tensor::from_u32(gpu, &[k, 4], prior).unwrap();
    let db = poisoned(gpu, &[k]);
    let out = loss::HeadOutputs { dlogits: &dlogits, loss_acc: &loss_acc, counts: &counts, db: Some(&db) };
    let head = loss::LinearHead { features: &feat, indices: &indices, weight: &w, bias: &b, dweight: &dw };
    let step = loss::linear_head_bce_dispatch(gpu, &head, &targets, opts, threshold, &out).unwrap();
    step.set_offset(gpu, c.offset as u32).unwrap();
    step.run(gpu).unwrap();
    (
        dlogits.download(gpu).unwrap(),
        loss_acc.download(gpu).unwrap()[0],
        counts.download_u32(gpu).unwrap(),
        db.download(gpu).unwrap(),
        dw.download(gpu).unwrap(),
    )
}

#[test]
fn linear_head_bce_matches_gather_matmul_and_loss_references() {
    let gpu = gpu();
    // (m, k, d, n): k ≤ 64 and > 64, d not a multiple of 4 or of 64, T2's 128 × 256 → 4
    let shapes = [
        (1, 1, 1, 1),
        (7, 3, 33, 20),
        (33, 4, 256, 100),
        (128, 4, 256, 300),
        (127, 7, 5, 130),
        (50, 64, 7, 60),
        (9, 65, 3, 30),
        (5, 130, 17, 9),
        (2, 1, 127, 3),
    ];
    for (s, &(m, k, d, n)) in shapes.iter().enumerate() {
        let seed = 7000 + 10 * s as u64;
        let case = LinearCase::new(seed, m, k, d, n, s % 3, s % 2 == 1);
        let (el_logits, e_targets) = case.reference_batch();
        let pos = rand_range(seed + 5, k, 0.5, 3.0);
        let weight = rand_range(seed + 6, k, 0.2, 2.0);
        for (r, &reduction) in REDUCTIONS.iter().enumerate() {
            let (pw, lw) = match (s + r) % 3 {
                0 => (None, None),
                1 => (Some(pos.clone()), None),
                _ => (Some(pos.clone()), Some(weight.clone())),
            };
            let opts = BceOptions {
                pos_weight: pw.as_ref().map(|p| upload(&gpu, &[k], p)),
                label_weight: lw.as_ref().map(|p| upload(&gpu, &[k], p)),
                reduction,
            };
            let threshold = if r == 1 { 0.7 } else { 0.5 };
            let prior = prior_counts(seed + r as u64, 4 * k);
            let (g, acc, counts, db, dw) = run_linear_head(&gpu, &case, &opts, threshold, &prior);
            let (el, eg) = reference::loss::bce_logits(
                &el_logits,
                &e_targets,
                m,
                k,
                pw.map(|p| to_f64(&p)).as_deref(),
                lw.map(|p| to_f64(&p)).as_deref(),
                reduction,
            );
            let desc = format!("linear_head_bce m={m} k={k} d={d} {reduction:?}");
            let labelled = e_targets.iter().filter(|y| !y.is_nan()).count();
            let scale = 3.0 * 2.0 / reference::loss::bce_normaliser(reduction, m, k, labelled);
            // logits carry f32 rounding of a d-term dot product (≈ 1e-7·√d relative)
            let tol = Tolerance { rel: 1e-4, abs: 1e-6 * scale };
            assert_close(&format!("{desc} dlogits"), &g, &eg, tol);
            let batch: f64 = el.iter().sum();
            assert_close(&format!("{desc} loss_acc"), &[acc], &[1.5 + batch], Tolerance { rel: 1e-4, abs: 1e-6 * scale * (m * k) as f64 });
            let edb = reference::reduce::col_sum(&eg, m, k);
            assert_close(&format!("{desc} db"), &db, &edb, Tolerance { rel: 1e-4, abs: 1e-6 * scale * m as f64 });
            // dW[j, c] = Σ_i dlogits_ij · feat[r_i, c] over the rows that exist
            let mut edw = vec![0.0; k * d];
            for (i, row) in case.rows().iter().enumerate() {
                let Some(row) = row else { continue };
                for j in 0..k {
                    for c in 0..d {
                        edw[j * d + c] += eg[i * k + j] * case.feat[row * d + c] as f64;
                    }
                }
            }
            assert_close(&format!("{desc} dW"), &dw, &edw, Tolerance { rel: 1e-4, abs: 1e-6 * scale * m as f64 });
            // counts, unless a logit sits within rounding of the threshold
            let t_logit = (threshold as f64 / (1.0 - threshold as f64)).ln();
            let ambiguous = el_logits.iter().zip(&e_targets).any(|(x, y)| !y.is_nan() && (x - t_logit).abs() < 1e-3);
            if !ambiguous {
                let ec = reference::metrics::label_confusion(&el_logits, &e_targets, m, k, threshold as f64);
                let expected: Vec<u32> = prior.iter().zip(&ec).map(|(a, b)| a + b).collect();
                assert_eq!(counts, expected, "{desc} counts");
            }
        }
    }
}

#[test]
fn linear_head_bce_is_deterministic_and_reads_each_steps_offset() {
    let gpu = gpu();
    let case = LinearCase::new(7100, 16, 4, 40, 64, 0, false);
    let opts = BceOptions::default();
    let prior = vec![0; 16];
    let first = run_linear_head(&gpu, &case, &opts, 0.5, &prior);
    let again = run_linear_head(&gpu, &case, &opts, 0.5, &prior);
    assert_eq!(bits(&first.4), bits(&again.4), "repeat runs give the same dW bits");
    assert_eq!(first.1.to_bits(), again.1.to_bits(), "and the same loss");
    // another offset reads other rows
    let moved = LinearCase { offset: 2, ..LinearCase::new(7100, 16, 4, 40, 64, 0, false) };
    let other = run_linear_head(&gpu, &moved, &opts, 0.5, &prior);
    let (el_logits, e_targets) = moved.reference_batch();
    let (_, eg) = reference::loss::bce_logits(&el_logits, &e_targets, 16, 4, None, None, BceReduction::SumLabelsMeanExamples);
    assert_close("offset 2 dlogits", &other.0, &eg, Tolerance { rel: 1e-4, abs: 1e-7 });
}

#[test]
fn linear_head_bce_refuses_bad_shapes_and_large_steps() {
    let gpu = gpu();
    let (m, k, d, n) = (8, 3, 10, 20);
    let feat = poisoned(&gpu, &[n, d]);
    let targets = poisoned(&gpu, &[n, k]);
    let indices = Tensor::from_u32(&gpu, &[m], &[0; 8]).unwrap();
    let (w, b, dw) = (poisoned(&gpu, &[k, d]), poisoned(&gpu, &[k]), poisoned(&gpu, &[k, d]));
    let dlogits = poisoned(&gpu, &[m, k]);
    let acc = poisoned(&gpu, &[1]);
    let counts = Tensor::from_u32(&gpu, &[k, 4], &[0; 12]).unwrap();
    let db = poisoned(&gpu, &[k]);
    let out = loss::HeadOutputs { dlogits: &dlogits, loss_acc: &acc, counts: &counts, db: Some(&db) };
    let head = loss::LinearHead { features: &feat, indices: &indices, weight: &w, bias: &b, dweight: &dw };
    let opts = BceOptions::default();
    assert!(loss::linear_head_bce_dispatch(&gpu, &head, &targets, &opts, 0.5, &out).is_ok());
    let bad_w = poisoned(&gpu, &[k, d + 1]);
    assert!(
        loss::linear_head_bce_dispatch(&gpu, &loss::LinearHead { weight: &bad_w, ..head }, &targets, &opts, 0.5, &out).is_err(),
        "weight shape"
    );
    let bad_t = poisoned(&gpu, &[n, k + 1]);
    assert!(loss::linear_head_bce_dispatch(&gpu, &head, &bad_t, &opts, 0.5, &out).is_err(), "targets shape");
    let short = Tensor::from_u32(&gpu, &[m - 1], &[0; 7]).unwrap();
    assert!(
        loss::linear_head_bce_dispatch(&gpu, &loss::LinearHead { indices: &short, ..head }, &targets, &opts, 0.5, &out).is_err(),
        "too few indices"
    );
    let no_db = loss::HeadOutputs { db: None, ..out };
    assert!(loss::linear_head_bce_dispatch(&gpu, &head, &targets, &opts, 0.5, &no_db).is_err(), "db is required");
    let step = loss::linear_head_bce_dispatch(&gpu, &head, &targets, &opts, 0.5, &out).unwrap();
    assert!(step.set_offset(&gpu, 1).is_err(), "an offset past the indices");
    assert!(!loss::fits_linear_head(128, 4, loss::LINEAR_HEAD_MAX_MACS / 512 + 1));
}

// ---------------------------------------------------------------- head kernels reading targets in place

/// The gathered head kernels read the batch's targets through the index buffer: their results
/// equal, bit for bit, the plain kernels' on the batch copied out on the CPU (those are checked
/// against the reference above), with an index past the data set reading as an unknown label /
/// an out-of-range class.
#[test]
fn head_kernels_read_targets_through_indices_like_a_copied_batch() {
    let gpu = gpu();
    for (s, &(m, k)) in [(1, 1), (7, 3), (33, 4), (128, 4), (9, 65), (40, 10)].iter().enumerate() {
        let seed = 8000 + 10 * s as u64;
        let n = m + 6;
        let offset = 2;
        let mut r = Rng::new(seed);
        let mut indices: Vec<u32> = (0..offset + m + 1).map(|_| r.below(n as u64) as u32).collect();
        indices[offset + m / 2] = (n + 3) as u32; // past the data set
        let rows = &indices[offset..offset + m];
        let logits = rand_range(seed + 1, m * k, -5.0, 5.0);
        let gl = upload(&gpu, &[m, k], &logits);
        let gi = Tensor::from_u32(&gpu, &[indices.len()], &indices).unwrap();
        // BCE: the data set's labels, and the batch copied out (NaN for the missing row)
        let labels = rand_labels(seed + 2, n * k, s % 2 == 0, 0.2);
        let lab = &labels;
        let batch: Vec<f32> =
            rows.iter().flat_map(|&i| (0..k).map(move |j| if (i as usize) < n { lab[i as usize * k + j] } else { f32::NAN })).collect();
        for reduction in REDUCTIONS {
            let opts =
                BceOptions { pos_weight: Some(upload(&gpu, &[k], &rand_range(seed + 3, k, 0.5, 2.0))), label_weight: None, reduction };
            let run = |gathered: bool| {
                let (dl, acc, counts, db) = (
                    poisoned(&gpu, &[m, k]),
                    upload(&gpu, &[1], &[0.5]),
                    Tensor::from_u32(&gpu, &[k, 4], &vec![1; 4 * k]).unwrap(),
                    poisoned(&gpu, &[k]),
                );
                let out = loss::HeadOutputs { dlogits: &dl, loss_acc: &acc, counts: &counts, db: Some(&db) };
                if gathered {
                    let d = loss::head_bce_gathered_dispatch(&gpu, &gl, &upload(&gpu, &[n, k], &labels), &gi, &opts, 0.5, &out).unwrap();
                    d.set_offset(&gpu, offset as u32).unwrap();
                    d.run(&gpu).unwrap();
                } else {
                    let d = loss::head_bce_dispatch(&gpu, &gl, &upload(&gpu, &[m, k], &batch), &opts, 0.5, &out).unwrap();
                    gpu.run("head_bce", &[&d]).unwrap();
                }
                (
                    bits(&dl.download(&gpu).unwrap()),
                    bits(&acc.download(&gpu).unwrap()),
                    counts.download_u32(&gpu).unwrap(),
                    bits(&db.download(&gpu).unwrap()),
                )
            };
            assert_eq!(run(true), run(false), "head_bce gathered m={m} k={k} {reduction:?}");
        }
        // softmax: the data set's classes; the missing row's class is out of range
        let classes = rand_classes(seed + 4, n, k);
        let batch: Vec<u32> = rows.iter().map(|&i| if (i as usize) < n { classes[i as usize] } else { k as u32 }).collect();
        let run = |gathered: bool| {
            let (lr, dl, acc, counts, db) = (
                poisoned(&gpu, &[m]),
                poisoned(&gpu, &[m, k]),
                upload(&gpu, &[1], &[0.5]),
                Tensor::from_u32(&gpu, &[2], &[1, 2]).unwrap(),
                poisoned(&gpu, &[k]),
            );
            let out = loss::HeadOutputs { dlogits: &dl, loss_acc: &acc, counts: &counts, db: Some(&db) };
            if gathered {
                let t = Tensor::from_u32(&gpu, &[n], &classes).unwrap();
                let d = loss::head_softmax_gathered_dispatch(&gpu, &gl, &t, &gi, &lr, &out).unwrap();
                d.set_offset(&gpu, offset as u32).unwrap();
                d.run(&gpu).unwrap();
            } else {
                let t = Tensor::from_u32(&gpu, &[m], &batch).unwrap();
                let d = loss::head_softmax_dispatch(&gpu, &gl, &t, &lr, &out).unwrap();
                gpu.run("head_softmax", &[&d]).unwrap();
            }
            (
                bits(&lr.download(&gpu).unwrap()),
                bits(&dl.download(&gpu).unwrap()),
                counts.download_u32(&gpu).unwrap(),
                bits(&db.download(&gpu).unwrap()),
            )
        };
        let (g, p) = (run(true), run(false));
        assert_eq!(g, p, "head_softmax gathered m={m} c={k}");
        assert!(f32::from_bits(g.0[m / 2]).is_nan(), "the row past the data set has a NaN loss");
    }
    // too few indices, or targets that are not rows of k labels
    let (m, k) = (6, 3);
    let gl = poisoned(&gpu, &[m, k]);
    let (dl, acc, db) = (poisoned(&gpu, &[m, k]), poisoned(&gpu, &[1]), poisoned(&gpu, &[k]));
    let counts = Tensor::from_u32(&gpu, &[k, 4], &[0; 12]).unwrap();
    let out = loss::HeadOutputs { dlogits: &dl, loss_acc: &acc, counts: &counts, db: Some(&db) };
    let few = Tensor::from_u32(&gpu, &[5], &[0; 5]).unwrap();
    assert!(loss::head_bce_gathered_dispatch(&gpu, &gl, &poisoned(&gpu, &[10, k]), &few, &BceOptions::default(), 0.5, &out).is_err());
    let enough = Tensor::from_u32(&gpu, &[6], &[0; 6]).unwrap();
    assert!(
        loss::head_bce_gathered_dispatch(&gpu, &gl, &poisoned(&gpu, &[10, k + 1]), &enough, &BceOptions::default(), 0.5, &out).is_err()
    );
    assert!(loss::head_bce_gathered_dispatch(&gpu, &gl, &poisoned(&gpu, &[10, k]), &enough, &BceOptions::default(), 0.5, &out).is_ok());
}

// ---------------------------------------------------------------- heads of a multi-task network

use headswap::kernels::loss::{HeadLoss, IGNORE_CLASS, LossOutputs, MaskedReduction, RegressionLoss};

const REG_KINDS: [RegressionLoss; 4] = [RegressionLoss::Mse, RegressionLoss::L1, RegressionLoss::Huber(1.0), RegressionLoss::Huber(0.75)];
const MASKED: [MaskedReduction; 2] = [MaskedReduction::MeanKnown, MaskedReduction::Sum];
/// The sizes the head kernels are swept over: rows, and outputs per row.
const HEAD_ROWS: [usize; 4] = [1, 7, 33, 127];
const HEAD_COLS: [usize; 3] = [1, 3, 5];
/// What the loss accumulators hold before a launch: the kernels add to it.
const ACC0: f32 = 1.25;

/// Regression targets in [-2, 2), a fraction `unknown` of them NaN.
fn rand_targets(seed: u64, n: usize, unknown: f64) -> Vec<f32> {
    let mut r = Rng::new(seed);
    (0..n).map(|_| if r.next_f64() < unknown { f32::NAN } else { r.uniform(-2.0, 2.0) as f32 }).collect()
}

/// Classes below c, a fraction `unknown` of them IGNORE_CLASS.
fn rand_classes_masked(seed: u64, m: usize, c: usize, unknown: f64) -> Vec<u32> {
    let mut r = Rng::new(seed);
    (0..m).map(|_| if r.next_f64() < unknown { IGNORE_CLASS } else { r.below(c as u64) as u32 }).collect()
}

/// (loss_rows, dlogits, the accumulator after adding to ACC0) of a head's loss kernel.
type HeadRun = (Vec<f32>, Vec<f32>, f32);

fn run_head_loss(gpu: &Gpu, m: usize, k: usize, launch: impl FnOnce(&LossOutputs<'_>)) -> HeadRun {
    let loss_rows = poisoned(gpu, &[m]);
    let dlogits = poisoned(gpu, &[m, k]);
    let acc = upload(gpu, &[1], &[ACC0]);
    launch(&LossOutputs { loss_rows: &loss_rows, dlogits: &dlogits, loss_acc: Some(&acc) });
    (loss_rows.download(gpu).unwrap(), dlogits.download(gpu).unwrap(), acc.download(gpu).unwrap()[0])
}

fn run_regression(gpu: &Gpu, preds: &[f32], targets: &[f32], m: usize, k: usize, kind: RegressionLoss, opts: HeadLoss) -> HeadRun {
    let (gp, gt) = (upload(gpu, &[m, k], preds), upload(gpu, &[m, k], targets));
    run_head_loss(gpu, m, k, |out| loss::regression_loss(gpu, &gp, &gt, kind, &opts, out).unwrap())
}

fn run_xent_masked(gpu: &Gpu, logits: &[f32], targets: &[u32], m: usize, c: usize, opts: HeadLoss) -> HeadRun {
    let gl = upload(gpu, &[m, c], logits);
    let gt = Tensor::from_u32(gpu, &[m], targets).unwrap();
    run_head_loss(gpu, m, c, |out| loss::softmax_xent_masked(gpu, &gl, &gt, &opts, out).unwrap())
}

/// Compares a head run with the reference's rows and gradient; the accumulator must hold ACC0
/// plus the batch loss.
fn check_head_run(what: &str, run: &HeadRun, rows: &[f64], grad: &[f64], tol: Tolerance) {
    assert_close(&format!("{what}: loss_rows"), &run.0, rows, tol);
    assert_close(&format!("{what}: dlogits"), &run.1, grad, tol);
    let batch: f64 = rows.iter().sum();
    let acc_tol = Tolerance { rel: tol.rel, abs: tol.abs * rows.len() as f64 + 1e-6 };
    assert_close(&format!("{what}: accumulator"), &[run.2], &[ACC0 as f64 + batch], acc_tol);
}

fn check_regression(what: &str, preds: &[f32], targets: &[f32], m: usize, k: usize, kind: RegressionLoss, opts: HeadLoss) {
    let gpu = gpu();
    let run = run_regression(&gpu, preds, targets, m, k, kind, opts);
    let (rows, grad) = reference::loss::regression(&to_f64(preds), &to_f64(targets), m, k, kind, opts.reduction, opts.weight as f64);
    let what = format!("{what}: {kind:?} {:?} w={} m={m} k={k}", opts.reduction, opts.weight);
    check_head_run(&what, &run, &rows, &grad, Tolerance { rel: 2e-6, abs: 1e-7 });
}

#[test]
fn regression_loss_odd_sizes_every_kind_reduction_and_weight() {
    let mut seed = 7000;
    for &m in &HEAD_ROWS {
        for &k in &HEAD_COLS {
            for kind in REG_KINDS {
                for reduction in MASKED {
                    seed += 1;
                    let weight = [1.0, 0.5, 2.5][seed as usize % 3];
                    let preds = rand_range(seed, m * k, -3.0, 3.0);
                    let targets = rand_targets(seed + 500, m * k, 0.3);
                    check_regression("odd", &preds, &targets, m, k, kind, HeadLoss { reduction, weight });
                }
            }
        }
    }
}

#[test]
fn regression_loss_large_predictions_are_finite_and_right() {
    let gpu = gpu();
    let (m, k) = (33, 5);
    let mut r = Rng::new(7100);
    let preds: Vec<f32> = (0..m * k).map(|_| if r.next_f64() < 0.5 { 1e4 } else { -1e4 }).collect();
    let targets = rand_targets(7101, m * k, 0.25);
    for kind in REG_KINDS {
        for reduction in MASKED {
            let opts = HeadLoss { reduction, weight: 1.5 };
            let run = run_regression(&gpu, &preds, &targets, m, k, kind, opts);
            assert!(run.0.iter().chain(&run.1).chain([&run.2]).all(|v| v.is_finite()), "{kind:?} {reduction:?}: non-finite output");
            check_regression("±1e4", &preds, &targets, m, k, kind, opts);
        }
    }
}

#[test]
fn regression_unknown_targets_are_invisible() {
    // The predictions at unknown targets may be anything, NaN and ±inf included: the loss, the
    // gradient and the accumulator keep their bits, and those entries' gradients are exactly 0.
    let gpu = gpu();
    let (m, k) = (33, 3);
    let preds = rand_range(7200, m * k, -3.0, 3.0);
    let targets = rand_targets(7201, m * k, 0.4);
    let mut wild = preds.clone();
    for (i, y) in targets.iter().enumerate() {
        if y.is_nan() {
            wild[i] = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1e30][i % 4];
        }
    }
    for kind in REG_KINDS {
        for reduction in MASKED {
            let opts = HeadLoss { reduction, weight: 0.75 };
            let a = run_regression(&gpu, &preds, &targets, m, k, kind, opts);
            let b = run_regression(&gpu, &wild, &targets, m, k, kind, opts);
            assert_eq!((bits(&a.0), bits(&a.1), a.2.to_bits()), (bits(&b.0), bits(&b.1), b.2.to_bits()), "{kind:?} {reduction:?}");
            for (i, y) in targets.iter().enumerate() {
                if y.is_nan() {
                    assert_eq!(b.1[i], 0.0, "{kind:?} {reduction:?}: gradient at unknown entry {i}");
                }
            }
        }
    }
    // a whole row unknown: its loss row is 0; a batch with nothing known: loss and gradient 0
    let nothing = vec![f32::NAN; m * k];
    for kind in REG_KINDS {
        for reduction in MASKED {
            let run = run_regression(&gpu, &preds, &nothing, m, k, kind, HeadLoss { reduction, weight: 1.0 });
            assert!(run.0.iter().chain(&run.1).all(|&v| v == 0.0), "{kind:?} {reduction:?}: no known target must give zeros");
            assert_eq!(run.2, ACC0);
        }
    }
}

#[test]
fn head_weight_zero_gives_exact_zeros() {
    let gpu = gpu();
    let (m, k) = (127, 5);
    let preds: Vec<f32> = rand_range(7300, m * k, -1e4, 1e4);
    let targets = rand_targets(7301, m * k, 0.2);
    let classes = rand_classes_masked(7302, m, k, 0.2);
    for reduction in MASKED {
        let opts = HeadLoss { reduction, weight: 0.0 };
        let mut runs: Vec<(String, HeadRun)> =
            REG_KINDS.iter().map(|&kind| (format!("{kind:?}"), run_regression(&gpu, &preds, &targets, m, k, kind, opts))).collect();
        runs.push(("xent".into(), run_xent_masked(&gpu, &preds, &classes, m, k, opts)));
        for (what, run) in runs {
            assert!(run.0.iter().chain(&run.1).all(|&v| v == 0.0), "{what} {reduction:?}: weight 0 must give exact zeros");
            assert_eq!(run.2, ACC0, "{what} {reduction:?}: weight 0 adds nothing");
        }
    }
}

#[test]
fn head_weight_scales_loss_and_gradient() {
    // w·L: the weighted run is the unweighted one times w (a power of two: exactly)
    let gpu = gpu();
    let (m, k) = (33, 5);
    let preds = rand_range(7400, m * k, -3.0, 3.0);
    let targets = rand_targets(7401, m * k, 0.3);
    let classes = rand_classes_masked(7402, m, k, 0.3);
    for reduction in MASKED {
        let (one, four) = (HeadLoss { reduction, weight: 1.0 }, HeadLoss { reduction, weight: 4.0 });
        let pairs = [
            (
                run_regression(&gpu, &preds, &targets, m, k, RegressionLoss::Huber(1.0), one),
                run_regression(&gpu, &preds, &targets, m, k, RegressionLoss::Huber(1.0), four),
            ),
            (run_xent_masked(&gpu, &preds, &classes, m, k, one), run_xent_masked(&gpu, &preds, &classes, m, k, four)),
        ];
        for (a, b) in pairs {
            let times4 = |v: &[f32]| bits(&v.iter().map(|x| 4.0 * x).collect::<Vec<_>>());
            assert_eq!((times4(&a.0), times4(&a.1)), (bits(&b.0), bits(&b.1)), "{reduction:?}");
        }
    }
}

fn check_xent_masked(what: &str, logits: &[f32], targets: &[u32], m: usize, c: usize, opts: HeadLoss) {
    let gpu = gpu();
    let run = run_xent_masked(&gpu, logits, targets, m, c, opts);
    let (rows, grad) = reference::loss::softmax_xent_masked(&to_f64(logits), targets, m, c, opts.reduction, opts.weight as f64);
    let what = format!("{what}: softmax_xent_masked {:?} w={} m={m} c={c}", opts.reduction, opts.weight);
    check_head_run(&what, &run, &rows, &grad, Tolerance { rel: 2e-5, abs: 1e-7 });
}

#[test]
fn softmax_xent_masked_odd_sizes() {
    let mut seed = 7500;
    for &m in &HEAD_ROWS {
        for &c in HEAD_COLS.iter().chain(&[33]) {
            for reduction in MASKED {
                seed += 1;
                let weight = [1.0, 0.5, 2.5][seed as usize % 3];
                let logits = rand_range(seed, m * c, -4.0, 4.0);
                let targets = rand_classes_masked(seed + 500, m, c, 0.3);
                check_xent_masked("odd", &logits, &targets, m, c, HeadLoss { reduction, weight });
            }
        }
    }
}

#[test]
fn softmax_xent_masked_ignored_rows_are_invisible_and_bad_classes_show() {
    let gpu = gpu();
    let (m, c) = (7, 5);
    let logits = rand_range(7600, m * c, -4.0, 4.0);
    // rows 1 and 4 ignored, row 5 a bad class (NaN loss, zero gradient, as softmax_xent)
    let targets = [0, IGNORE_CLASS, 2, 4, IGNORE_CLASS, 5, 1];
    let opts = HeadLoss::default();
    let run = run_xent_masked(&gpu, &logits, &targets, m, c, opts);
    for i in [1, 4, 5] {
        assert!(run.1[i * c..(i + 1) * c].iter().all(|&v| v == 0.0), "row {i}: gradient must be 0");
    }
    assert_eq!((run.0[1], run.0[4]), (0.0, 0.0));
    assert!(run.0[5].is_nan() && run.2.is_nan(), "a bad class must show as a NaN loss");
    // with row 5's class fixed, the mean is over the 5 rows not ignored: each row as plain
    // softmax_xent over those 5 rows gives it
    let targets_ok: Vec<u32> = targets.iter().map(|&t| if t == 5 { 3 } else { t }).collect();
    let run = run_xent_masked(&gpu, &logits, &targets_ok, m, c, opts);
    let kept = [0usize, 2, 3, 5, 6];
    let kept_logits: Vec<f32> = kept.iter().flat_map(|&i| logits[i * c..(i + 1) * c].to_vec()).collect();
    let kept_targets: Vec<u32> = kept.iter().map(|&i| targets_ok[i]).collect();
    let (rows, grad) = reference::loss::softmax_xent(&to_f64(&kept_logits), &kept_targets, kept.len(), c);
    let tol = Tolerance { rel: 2e-5, abs: 1e-7 };
    for (n, &i) in kept.iter().enumerate() {
        assert_close(&format!("row {i}"), &run.0[i..=i], &rows[n..=n], tol);
        assert_close(&format!("row {i} dlogits"), &run.1[i * c..(i + 1) * c], &grad[n * c..(n + 1) * c], tol);
    }
    // every row ignored: zeros, not NaN
    let run = run_xent_masked(&gpu, &logits, &[IGNORE_CLASS; 7], m, c, opts);
    assert!(run.0.iter().chain(&run.1).all(|&v| v == 0.0));
    assert_eq!(run.2, ACC0);
}

#[test]
fn softmax_xent_masked_large_logits_are_finite_and_right() {
    let gpu = gpu();
    let (m, c) = (33, 5);
    let mut r = Rng::new(7700);
    let logits: Vec<f32> = (0..m * c).map(|_| if r.next_f64() < 0.5 { 1e4 } else { -1e4 }).collect();
    let targets = rand_classes_masked(7701, m, c, 0.3);
    for reduction in MASKED {
        let opts = HeadLoss { reduction, weight: 1.5 };
        let run = run_xent_masked(&gpu, &logits, &targets, m, c, opts);
        assert!(run.0.iter().chain(&run.1).chain([&run.2]).all(|v| v.is_finite()), "{reduction:?}: non-finite output");
        check_xent_masked("±1e4", &logits, &targets, m, c, opts);
    }
}

#[test]
fn head_losses_repeat_bit_identically() {
    let gpu = gpu();
    let (m, k) = (257, 5);
    let preds = rand_range(7800, m * k, -3.0, 3.0);
    let targets = rand_targets(7801, m * k, 0.3);
    let classes = rand_classes_masked(7802, m, k, 0.3);
    let key = |r: &HeadRun| (bits(&r.0), bits(&r.1), r.2.to_bits());
    for reduction in MASKED {
        let opts = HeadLoss { reduction, weight: 0.3 };
        for kind in REG_KINDS {
            let first = key(&run_regression(&gpu, &preds, &targets, m, k, kind, opts));
            assert_eq!(key(&run_regression(&gpu, &preds, &targets, m, k, kind, opts)), first, "{kind:?} {reduction:?}");
        }
        let first = key(&run_xent_masked(&gpu, &preds, &classes, m, k, opts));
        assert_eq!(key(&run_xent_masked(&gpu, &preds, &classes, m, k, opts)), first, "xent {reduction:?}");
    }
}

#[test]
fn head_losses_refuse_bad_options_and_shapes() {
    let gpu = gpu();
    let x = upload(&gpu, &[3, 2], &[0.0; 6]);
    let y = upload(&gpu, &[3, 2], &[0.0; 6]);
    let y_bad = upload(&gpu, &[2, 3], &[0.0; 6]);
    let classes = Tensor::from_u32(&gpu, &[3], &[0, 1, IGNORE_CLASS]).unwrap();
    let classes_bad = Tensor::from_u32(&gpu, &[2], &[0, 1]).unwrap();
    let rows = Tensor::zeros(&gpu, &[3]).unwrap();
    let d = Tensor::zeros(&gpu, &[3, 2]).unwrap();
    let d_bad = Tensor::zeros(&gpu, &[3, 3]).unwrap();
    let acc_bad = Tensor::zeros(&gpu, &[2]).unwrap();
    let out = LossOutputs { loss_rows: &rows, dlogits: &d, loss_acc: None };
    let ok = HeadLoss::default();
    let reg = |t: &Tensor, kind, opts: HeadLoss, out: &LossOutputs<'_>| loss::regression_loss(&gpu, &x, t, kind, &opts, out);
    assert!(reg(&y, RegressionLoss::Huber(0.5), ok, &out).is_ok());
    for delta in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        assert!(reg(&y, RegressionLoss::Huber(delta), ok, &out).is_err(), "delta {delta}");
    }
    for weight in [-1.0, f32::NAN, f32::INFINITY] {
        let bad = HeadLoss { weight, ..ok };
        assert!(reg(&y, RegressionLoss::Mse, bad, &out).is_err(), "weight {weight}");
        assert!(loss::softmax_xent_masked(&gpu, &x, &classes, &bad, &out).is_err(), "xent weight {weight}");
    }
    assert!(reg(&y_bad, RegressionLoss::Mse, ok, &out).is_err());
    assert!(reg(&classes, RegressionLoss::Mse, ok, &out).is_err());
    let out_bad = LossOutputs { dlogits: &d_bad, ..out };
    assert!(reg(&y, RegressionLoss::L1, ok, &out_bad).is_err());
    assert!(loss::softmax_xent_masked(&gpu, &x, &classes, &ok, &out_bad).is_err());
    let out_acc_bad = LossOutputs { loss_acc: Some(&acc_bad), ..out };
    assert!(reg(&y, RegressionLoss::L1, ok, &out_acc_bad).is_err());
    assert!(loss::softmax_xent_masked(&gpu, &x, &classes, &ok, &out).is_ok());
    assert!(loss::softmax_xent_masked(&gpu, &x, &classes_bad, &ok, &out).is_err());
    assert!(loss::softmax_xent_masked(&gpu, &x, &y, &ok, &out).is_err());
}

#[test]
fn reference_head_loss_gradients_match_finite_differences() {
    let (m, k) = (5, 3);
    let mut r = Rng::new(7900);
    for scale in [1.0, 4.0] {
        let x: Vec<f64> = (0..m * k).map(|_| r.uniform(-scale, scale)).collect();
        let y = to_f64(&rand_targets(7901, m * k, 0.3));
        let classes = rand_classes_masked(7902, m, k, 0.3);
        for reduction in MASKED {
            for w in [1.0, 0.3] {
                for kind in REG_KINDS {
                    let (_, g) = reference::loss::regression(&x, &y, m, k, kind, reduction, w);
                    // keep away from the kinks (e = 0 for L1, |e| = δ for Huber), where the
                    // central difference straddles two branches
                    let smooth = (0..m * k).all(|i| {
                        y[i].is_nan()
                            || ((x[i] - y[i]).abs() > 1e-3
                                && ((x[i] - y[i]).abs() - 1.0).abs() > 1e-3
                                && ((x[i] - y[i]).abs() - 0.75).abs() > 1e-3)
                    });
                    assert!(smooth, "the seed put an entry on a kink");
                    let what = format!("{kind:?} {reduction:?} w={w} scale {scale}");
                    check_finite_differences(&what, &x, &g, |x| total(&reference::loss::regression(x, &y, m, k, kind, reduction, w).0));
                }
                let (_, g) = reference::loss::softmax_xent_masked(&x, &classes, m, k, reduction, w);
                check_finite_differences(&format!("xent masked {reduction:?} w={w}"), &x, &g, |x| {
                    total(&reference::loss::softmax_xent_masked(x, &classes, m, k, reduction, w).0)
                });
            }
        }
    }
}

/// The regression losses and cross-entropy with ignore_index −1 equal what PyTorch itself
/// computes (torch 2.15 in float64, `scripts/multitask_loss_fixture.py`): mean over the known
/// entries and sum, Huber at three deltas, predictions of ±1e4; the float64 reference and the GPU.
#[test]
fn head_losses_equal_pytorch() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torch_multitask_loss.safetensors");
    let torch = headswap::checkpoint::load(&path).unwrap();
    let get = |name: &str| torch.get(name).unwrap_or_else(|| panic!("{name} missing from the fixture")).clone();
    let gpu = gpu();
    let kinds = [
        ("mse", RegressionLoss::Mse),
        ("l1", RegressionLoss::L1),
        ("huber", RegressionLoss::Huber(1.0)),
        ("huber075", RegressionLoss::Huber(0.75)),
        ("huber2", RegressionLoss::Huber(2.0)),
    ];
    let reductions = [("mean", MaskedReduction::MeanKnown), ("sum", MaskedReduction::Sum)];
    let tol = Tolerance { rel: 2e-6, abs: 1e-7 };
    for case in ["reg", "big"] {
        let (pred, target) = (get(&format!("{case}.pred")), get(&format!("{case}.target")));
        let (m, k) = (pred.shape[0], pred.shape[1]);
        assert!(target.data.iter().any(|v| v.is_nan()), "the fixture must mask some targets");
        for (kname, kind) in kinds {
            for (rname, reduction) in reductions {
                let key = format!("{case}.{kname}.{rname}");
                let (loss_t, grad_t) = (to_f64(&get(&format!("{key}.loss")).data), to_f64(&get(&format!("{key}.grad")).data));
                let (rows, grad) = reference::loss::regression(&to_f64(&pred.data), &to_f64(&target.data), m, k, kind, reduction, 1.0);
                let total: f64 = rows.iter().sum();
                let fixture_tol = Tolerance { rel: 1e-6, abs: 1e-9 };
                assert!((total - loss_t[0]).abs() <= 1e-6 * loss_t[0].abs(), "{key}: reference {total}, torch {}", loss_t[0]);
                assert_close(
                    &format!("{key}: reference grad vs torch"),
                    &grad.iter().map(|&v| v as f32).collect::<Vec<_>>(),
                    &grad_t,
                    fixture_tol,
                );
                let opts = HeadLoss { reduction, weight: 1.0 };
                let run = run_regression(&gpu, &pred.data, &target.data, m, k, kind, opts);
                assert_close(&format!("{key}: GPU grad vs torch"), &run.1, &grad_t, tol);
                assert_close(&format!("{key}: GPU loss vs torch"), &[run.2 - ACC0], &loss_t, Tolerance { rel: 2e-6, abs: 1e-6 });
            }
        }
    }
    let (logits, classes) = (get("xent.logits"), get("xent.target"));
    let (m, c) = (logits.shape[0], logits.shape[1]);
    let targets: Vec<u32> = classes.data.iter().map(|&v| if v < 0.0 { IGNORE_CLASS } else { v as u32 }).collect();
    assert_eq!(targets.iter().filter(|&&t| t == IGNORE_CLASS).count(), 3);
    for (rname, reduction) in reductions {
        let (loss_t, grad_t) = (to_f64(&get(&format!("xent.{rname}.loss")).data), to_f64(&get(&format!("xent.{rname}.grad")).data));
        let (rows, grad) = reference::loss::softmax_xent_masked(&to_f64(&logits.data), &targets, m, c, reduction, 1.0);
        let total: f64 = rows.iter().sum();
        assert!((total - loss_t[0]).abs() <= 1e-6 * loss_t[0].abs(), "xent {rname}: reference {total}, torch {}", loss_t[0]);
        assert_close(
            &format!("xent {rname}: reference grad vs torch"),
            &grad.iter().map(|&v| v as f32).collect::<Vec<_>>(),
            &grad_t,
            Tolerance { rel: 1e-6, abs: 1e-9 },
        );
        let run = run_xent_masked(&gpu, &logits.data, &targets, m, c, HeadLoss { reduction, weight: 1.0 });
        assert_close(&format!("xent {rname}: GPU grad vs torch"), &run.1, &grad_t, Tolerance { rel: 2e-5, abs: 1e-7 });
        assert_close(&format!("xent {rname}: GPU loss vs torch"), &[run.2 - ACC0], &loss_t, Tolerance { rel: 2e-5, abs: 1e-6 });
    }
}

/// Three heads of one network (regression, classes with −1, labels with NaN) with unequal
/// weights, recorded in one submission and adding to ONE accumulator: it holds Σ_t w_t·L_t of
/// the references. A labels head takes its weight through `label_weight` (w on every label).
#[test]
fn several_heads_add_their_weighted_losses_to_one_accumulator() {
    let gpu = gpu();
    let m = 33;
    let (kr, c, kl) = (3, 5, 4);
    let (wr, wc, wl) = (0.5f32, 2.0f32, 0.25f32);
    let preds = rand_range(8000, m * kr, -3.0, 3.0);
    let targets = rand_targets(8001, m * kr, 0.3);
    let logits = rand_range(8002, m * c, -4.0, 4.0);
    let classes = rand_classes_masked(8003, m, c, 0.3);
    let label_logits = rand_range(8004, m * kl, -4.0, 4.0);
    let labels = rand_labels(8005, m * kl, false, 0.3);
    let acc = upload(&gpu, &[1], &[0.0]);
    let t = |shape: &[usize], v: &[f32]| upload(&gpu, shape, v);
    let (gp, gy) = (t(&[m, kr], &preds), t(&[m, kr], &targets));
    let (gl, gc) = (t(&[m, c], &logits), Tensor::from_u32(&gpu, &[m], &classes).unwrap());
    let (gll, gly, glw) = (t(&[m, kl], &label_logits), t(&[m, kl], &labels), t(&[kl], &vec![wl; kl]));
    let (rows_r, d_r) = (poisoned(&gpu, &[m]), poisoned(&gpu, &[m, kr]));
    let (rows_c, d_c) = (poisoned(&gpu, &[m]), poisoned(&gpu, &[m, c]));
    let (rows_l, d_l) = (poisoned(&gpu, &[m]), poisoned(&gpu, &[m, kl]));
    let mut ds = loss::regression_loss_dispatches(
        &gpu,
        &gp,
        &gy,
        RegressionLoss::Huber(1.0),
        &HeadLoss { reduction: MaskedReduction::MeanKnown, weight: wr },
        &LossOutputs { loss_rows: &rows_r, dlogits: &d_r, loss_acc: Some(&acc) },
    )
    .unwrap();
    ds.extend(
        loss::softmax_xent_masked_dispatches(
            &gpu,
            &gl,
            &gc,
            &HeadLoss { reduction: MaskedReduction::MeanKnown, weight: wc },
            &LossOutputs { loss_rows: &rows_c, dlogits: &d_c, loss_acc: Some(&acc) },
        )
        .unwrap(),
    );
    let bce = BceOptions { label_weight: Some(glw), reduction: BceReduction::MeanLabelled, ..BceOptions::default() };
    ds.extend(loss::bce_logits_dispatches(&gpu, &gll, &gly, &bce, &rows_l, &d_l).unwrap());
    ds.push(reduce::sum_dispatch(&gpu, &rows_l, &acc, true).unwrap());
    gpu.run("three heads", &ds.iter().collect::<Vec<_>>()).unwrap();

    let (er, gr) = reference::loss::regression(
        &to_f64(&preds),
        &to_f64(&targets),
        m,
        kr,
        RegressionLoss::Huber(1.0),
        MaskedReduction::MeanKnown,
        wr as f64,
    );
    let (ec, gc_ref) = reference::loss::softmax_xent_masked(&to_f64(&logits), &classes, m, c, MaskedReduction::MeanKnown, wc as f64);
    let wls = vec![wl as f64; kl];
    let (el, gl_ref) =
        reference::loss::bce_logits(&to_f64(&label_logits), &to_f64(&labels), m, kl, None, Some(&wls), BceReduction::MeanLabelled);
    let total: f64 = er.iter().chain(&ec).chain(&el).sum();
    assert_close("Σ_t w_t·L_t", &acc.download(&gpu).unwrap(), &[total], Tolerance { rel: 1e-5, abs: 1e-6 });
    let tol = Tolerance { rel: 2e-5, abs: 1e-7 };
    assert_close("regression head gradient", &d_r.download(&gpu).unwrap(), &gr, tol);
    assert_close("class head gradient", &d_c.download(&gpu).unwrap(), &gc_ref, tol);
    assert_close("labels head gradient", &d_l.download(&gpu).unwrap(), &gl_ref, tol);
}
