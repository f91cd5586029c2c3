//! Argmax accuracy and per-label confusion counts against the float64 reference: odd sizes, ties,
//! NaN logits and NaN-masked targets, soft targets, thresholds, and counts that accumulate
//! across launches (the counters start non-zero to show the kernels add). The metrics of a
//! multi-task network's heads (issue 14): accuracy over the examples that have a class (−1 left
//! out), and a regression head's per-column error sums, MAE and RMSE with n/a for a column with
//! no known target.
mod common;
use common::*;
use headswap::kernels::metrics::{self, LabelMetrics};
use headswap::{Gpu, Rng, Tensor, reference};

fn labels(seed: u64, m: usize, c: usize) -> Vec<u32> {
    let mut r = Rng::new(seed);
    (0..m).map(|_| r.below(c as u64) as u32).collect()
}

/// Logits on a coarse grid (multiples of 0.5 in [-1, 1]), so most rows hold ties.
fn tied_logits(seed: u64, n: usize) -> Vec<f32> {
    rand_vec(seed, n).iter().map(|x| (x * 2.0).round() / 2.0).collect()
}

fn counters(gpu: &Gpu, init: &[u32]) -> Tensor {
    Tensor::from_u32(gpu, &[init.len()], init).unwrap()
}

fn check_argmax(m: usize, c: usize, logits: &[f32], targets: &[u32]) {
    let gpu = gpu();
    let gl = upload(&gpu, &[m, c], logits);
    let gt = Tensor::from_u32(&gpu, &[m], targets).unwrap();
    let counts = counters(&gpu, &[5, 11]);
    metrics::argmax_correct(&gpu, &gl, &gt, &counts).unwrap();
    let (correct, total) = reference::metrics::argmax_correct(&to_f64(logits), targets, m, c);
    assert_eq!(counts.download_u32(&gpu).unwrap(), vec![5 + correct, 11 + total], "argmax m={m} c={c}");
}

#[test]
fn argmax_odd_sizes() {
    for (i, &m) in ODD_SIZES.iter().enumerate() {
        for (j, &c) in [1, 2, 7, 33, 127].iter().enumerate() {
            let seed = 10 * i as u64 + j as u64;
            let logits = rand_vec(seed, m * c);
            // targets: the true argmax for about half the rows, so both outcomes are exercised
            let mut targets = labels(seed + 1000, m, c);
            for r in (0..m).step_by(2) {
                targets[r] = reference::metrics::argmax(&to_f64(&logits[r * c..(r + 1) * c])).unwrap() as u32;
            }
            check_argmax(m, c, &logits, &targets);
        }
    }
}

#[test]
fn argmax_ties_pick_the_first_index() {
    let gpu = gpu();
    // by hand: [1, 3, 3, 0] → 1; [2, 2, 2, 2] → 0; [-1, 0, 5, 5] → 2; [0, NaN, 9, NaN] → 1 (NaN is the max)
    let logits = [1., 3., 3., 0., 2., 2., 2., 2., -1., 0., 5., 5., 0., f32::NAN, 9., f32::NAN];
    let gl = upload(&gpu, &[4, 4], &logits);
    for (targets, correct) in [([1, 0, 2, 1], 4), ([2, 3, 3, 2], 0), ([1, 1, 2, 0], 2)] {
        let gt = Tensor::from_u32(&gpu, &[4], &targets).unwrap();
        let counts = counters(&gpu, &[0, 0]);
        metrics::argmax_correct(&gpu, &gl, &gt, &counts).unwrap();
        assert_eq!(counts.download_u32(&gpu).unwrap(), vec![correct, 4], "targets {targets:?}");
    }
    // random rows full of ties, with some NaNs and out-of-range targets
    for (i, &(m, c)) in [(257, 7), (127, 33), (1000, 3)].iter().enumerate() {
        let mut logits = tied_logits(50 + i as u64, m * c);
        for k in (3..logits.len()).step_by(37) {
            logits[k] = f32::NAN;
        }
        let mut targets = labels(60 + i as u64, m, c);
        for r in (0..m).step_by(3) {
            targets[r] = reference::metrics::argmax(&to_f64(&logits[r * c..(r + 1) * c])).unwrap() as u32;
        }
        targets[m - 1] = c as u32; // never correct, still counted
        check_argmax(m, c, &logits, &targets);
    }
}

#[test]
fn argmax_accumulates_over_launches() {
    let gpu = gpu();
    let (m, c) = (33, 7);
    let (la, lb) = (rand_vec(70, m * c), rand_vec(71, m * c));
    let (ta, tb) = (labels(72, m, c), labels(73, m, c));
    let counts = counters(&gpu, &[0, 0]);
    let logits = upload(&gpu, &[m, c], &la);
    let targets = Tensor::from_u32(&gpu, &[m], &ta).unwrap();
    // one dispatch built once, replayed over two "batches" written into the same buffers
    let d = metrics::argmax_correct_dispatch(&gpu, &logits, &targets, &counts).unwrap();
    gpu.run("batch 1", &[&d]).unwrap();
    logits.write(&gpu, &lb).unwrap();
    targets.write_u32(&gpu, &tb).unwrap();
    gpu.run("batch 2", &[&d]).unwrap();
    let (ca, _) = reference::metrics::argmax_correct(&to_f64(&la), &ta, m, c);
    let (cb, _) = reference::metrics::argmax_correct(&to_f64(&lb), &tb, m, c);
    assert_eq!(counts.download_u32(&gpu).unwrap(), vec![ca + cb, 2 * m as u32]);
    // twice in one submission
    let counts2 = counters(&gpu, &[0, 0]);
    let d2 = metrics::argmax_correct_dispatch(&gpu, &logits, &targets, &counts2).unwrap();
    gpu.run("twice", &[&d2, &d2]).unwrap();
    assert_eq!(counts2.download_u32(&gpu).unwrap(), vec![2 * cb, 2 * m as u32]);
}

/// `[m, k]` soft targets in [0, 1] with about a fifth NaN (unknown), some exactly 0.5.
fn masked_targets(seed: u64, n: usize) -> Vec<f32> {
    let mut r = Rng::new(seed);
    (0..n)
        .map(|_| match r.below(10) {
            0 | 1 => f32::NAN,
            2 => 0.5,
            3 => 0.0,
            4 => 1.0,
            _ => r.uniform(0.0, 1.0) as f32,
        })
        .collect()
}

fn check_confusion(m: usize, k: usize, logits: &[f32], targets: &[f32], threshold: f32) -> Vec<u32> {
    let gpu = gpu();
    let gl = upload(&gpu, &[m, k], logits);
    let gt = upload(&gpu, &[m, k], targets);
    let init: Vec<u32> = (0..4 * k as u32).collect();
    let counts = Tensor::from_u32(&gpu, &[k, 4], &init).unwrap();
    metrics::label_confusion(&gpu, &gl, &gt, threshold, &counts).unwrap();
    let expected = reference::metrics::label_confusion(&to_f64(logits), &to_f64(targets), m, k, threshold as f64);
    let got: Vec<u32> = counts.download_u32(&gpu).unwrap().iter().zip(&init).map(|(g, i)| g - i).collect();
    assert_eq!(got, expected, "label_confusion m={m} k={k} threshold={threshold}");
    let known = targets.iter().filter(|y| !y.is_nan()).count() as u32;
    assert_eq!(got.iter().sum::<u32>(), known, "every known target is counted once, unknown ones never");
    got
}

#[test]
fn confusion_odd_sizes_and_masks() {
    for (i, &m) in ODD_SIZES.iter().enumerate() {
        for (j, &k) in [1, 3, 7, 33, 65].iter().enumerate() {
            let seed = 100 + 10 * i as u64 + j as u64;
            let logits: Vec<f32> = rand_vec(seed, m * k).iter().map(|x| 4.0 * x).collect();
            check_confusion(m, k, &logits, &masked_targets(seed + 1, m * k), 0.5);
        }
    }
}

#[test]
fn confusion_thresholds_and_ties() {
    let (m, k) = (257, 7);
    // exact zeros, and logits at the grid, so σ(logit) = 0.5 ties at the default threshold
    let logits = tied_logits(200, m * k);
    assert!(logits.iter().filter(|&&x| x == 0.0).count() > 100);
    let targets = masked_targets(201, m * k);
    for t in [0.5, 0.3, 0.8, 0.05, 0.95] {
        check_confusion(m, k, &logits, &targets, t);
    }
    // by hand at 0.5: logit 0 is positive, NaN logit negative; targets 0.5 positive, NaN skipped
    let logits = [0.0, -0.1, f32::NAN, 2.0, -3.0, 1.0];
    let targets = [0.5, 0.49, 1.0, f32::NAN, 0.0, 0.0];
    let got = check_confusion(6, 1, &logits, &targets, 0.5);
    assert_eq!(got, vec![1, 1, 2, 1]); // TP: 0; FP: 1.0; TN: -0.1, -3; FN: NaN logit
}

#[test]
fn confusion_accumulates_over_launches() {
    let gpu = gpu();
    let (m, k) = (33, 5);
    let (la, lb) = (rand_vec(300, m * k), rand_vec(301, m * k));
    let (ta, tb) = (masked_targets(302, m * k), masked_targets(303, m * k));
    let logits = upload(&gpu, &[m, k], &la);
    let targets = upload(&gpu, &[m, k], &ta);
    let counts = Tensor::alloc(&gpu, &[k, 4], headswap::gpu::tensor::DType::U32, "counts").unwrap();
    let d = metrics::label_confusion_dispatch(&gpu, &logits, &targets, 0.5, &counts).unwrap();
    gpu.run("batch 1", &[&d]).unwrap();
    logits.write(&gpu, &lb).unwrap();
    targets.write(&gpu, &tb).unwrap();
    gpu.run("batch 2", &[&d]).unwrap();
    let a = reference::metrics::label_confusion(&to_f64(&la), &to_f64(&ta), m, k, 0.5);
    let b = reference::metrics::label_confusion(&to_f64(&lb), &to_f64(&tb), m, k, 0.5);
    let expected: Vec<u32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
    let got = counts.download_u32(&gpu).unwrap();
    assert_eq!(got, expected);
    // the host-side scores from those counts; sklearn's zero_division=np.nan: an undefined
    // score is None and left out of the mean
    let s = LabelMetrics::from_counts(&got, k).unwrap();
    let div = |n: f64, d: f64| (d > 0.0).then(|| n / d);
    for l in 0..k {
        let [tp, fp, tn, fneg] = [got[4 * l], got[4 * l + 1], got[4 * l + 2], got[4 * l + 3]].map(|v| v as f64);
        let (p, r) = (div(tp, tp + fp), div(tp, tp + fneg));
        let f1 = match (p, r) {
            (Some(p), Some(r)) if p + r > 0.0 => Some(2.0 * p * r / (p + r)),
            (None, None) => None,
            _ => Some(0.0),
        };
        let close = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => (a - b).abs() < 1e-12,
            (a, b) => a == b,
        };
        assert!(close(s.precision[l], p) && close(s.recall[l], r) && close(s.f1[l], f1), "label {l}: {s:?}");
        assert!(close(s.accuracy[l], div(tp + tn, tp + fp + tn + fneg)));
    }
    let defined: Vec<f64> = s.f1.iter().flatten().copied().collect();
    assert!((s.mean_f1.unwrap() - defined.iter().sum::<f64>() / defined.len() as f64).abs() < 1e-12);
}

/// Labels that no pass could score, counted on the GPU: one with every target unknown, one
/// whose known targets are all negative and never predicted positive. Their F1 is n/a (None),
/// not 0, and the mean F1 is the mean over the labels that have one.
#[test]
fn labels_without_positives_are_na_not_zero() {
    let gpu = gpu();
    let (m, k) = (7, 3);
    let mut logits = Vec::new();
    let mut targets = Vec::new();
    for i in 0..m {
        // label 0: alternating positives, all predicted right; label 1: all unknown; label 2:
        // all negative, predicted negative
        let y0 = (i % 2) as f32;
        logits.extend([4.0 * y0 - 2.0, 3.0, -1.0]);
        targets.extend([y0, f32::NAN, 0.0]);
    }
    let counts = Tensor::from_u32(&gpu, &[k, 4], &[0; 12]).unwrap();
    metrics::label_confusion(&gpu, &upload(&gpu, &[m, k], &logits), &upload(&gpu, &[m, k], &targets), 0.5, &counts).unwrap();
    let got = counts.download_u32(&gpu).unwrap();
    assert_eq!(got, reference::metrics::label_confusion(&to_f64(&logits), &to_f64(&targets), m, k, 0.5));
    assert_eq!(got, vec![3, 0, 4, 0, 0, 0, 0, 0, 0, 0, 7, 0]);
    let s = LabelMetrics::from_counts(&got, k).unwrap();
    assert_eq!(s.f1, vec![Some(1.0), None, None]);
    assert_eq!(s.mean_f1, Some(1.0), "undefined labels would drag a mean of 0.333");
    assert_eq!((s.precision[2], s.recall[2], s.accuracy[2]), (None, None, Some(1.0)));
    assert_eq!((s.precision[1], s.recall[1], s.accuracy[1]), (None, None, None));
    assert_eq!(s.support, vec![7, 0, 7]);
    assert_eq!(s.scored_labels(), 1);
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let gpu = gpu();
    let logits = upload(&gpu, &[3, 4], &[0.0; 12]);
    let t_ok = Tensor::from_u32(&gpu, &[3], &[0; 3]).unwrap();
    let t_f32 = upload(&gpu, &[3], &[0.0; 3]);
    let c2 = counters(&gpu, &[0, 0]);
    let c3 = counters(&gpu, &[0, 0, 0]);
    assert!(metrics::argmax_correct(&gpu, &logits, &t_f32, &c2).is_err(), "f32 targets");
    assert!(metrics::argmax_correct(&gpu, &logits, &t_ok, &c3).is_err(), "counts of 3");
    assert!(metrics::argmax_correct(&gpu, &logits.reshape(&[12]).unwrap(), &t_ok, &c2).is_err(), "1-D logits");
    let y = upload(&gpu, &[3, 4], &[0.0; 12]);
    let y_bad = upload(&gpu, &[4, 3], &[0.0; 12]);
    let c16 = Tensor::from_u32(&gpu, &[4, 4], &[0; 16]).unwrap();
    assert!(metrics::label_confusion(&gpu, &logits, &y_bad, 0.5, &c16).is_err(), "targets shape");
    assert!(metrics::label_confusion(&gpu, &logits, &y, 0.5, &c2).is_err(), "counts shape");
    for t in [0.0, 1.0, f32::NAN, -0.5] {
        assert!(metrics::label_confusion(&gpu, &logits, &y, t, &c16).is_err(), "threshold {t}");
    }
    metrics::label_confusion(&gpu, &logits, &y, 0.5, &c16).unwrap();
}

// ---------------------------------------------------------------- heads of a multi-task network

use headswap::kernels::loss::IGNORE_CLASS;
use headswap::kernels::metrics::RegressionMetrics;

const HEAD_ROWS: [usize; 4] = [1, 7, 33, 127];
const HEAD_COLS: [usize; 3] = [1, 3, 5];

#[test]
fn argmax_known_leaves_ignored_rows_out() {
    let gpu = gpu();
    for (i, &m) in HEAD_ROWS.iter().chain(&[257, 1000]).enumerate() {
        for (j, &c) in HEAD_COLS.iter().enumerate() {
            let seed = 9000 + 10 * i as u64 + j as u64;
            let logits = rand_vec(seed, m * c);
            let mut targets = labels(seed + 1, m, c);
            let mut r = Rng::new(seed + 2);
            for (row, t) in targets.iter_mut().enumerate() {
                match r.below(3) {
                    0 => *t = IGNORE_CLASS,
                    1 => *t = reference::metrics::argmax(&to_f64(&logits[row * c..(row + 1) * c])).unwrap() as u32,
                    _ => {}
                }
            }
            let gl = upload(&gpu, &[m, c], &logits);
            let gt = Tensor::from_u32(&gpu, &[m], &targets).unwrap();
            let counts = counters(&gpu, &[5, 11]);
            metrics::argmax_known(&gpu, &gl, &gt, &counts).unwrap();
            metrics::argmax_known(&gpu, &gl, &gt, &counts).unwrap();
            let (correct, known) = reference::metrics::argmax_known(&to_f64(&logits), &targets, m, c);
            let ignored = targets.iter().filter(|&&t| t == IGNORE_CLASS).count() as u32;
            assert_eq!(known, m as u32 - ignored);
            assert_eq!(counts.download_u32(&gpu).unwrap(), vec![5 + 2 * correct, 11 + 2 * known], "argmax_known m={m} c={c}");
        }
    }
    // every row ignored: nothing counted
    let gl = upload(&gpu, &[3, 2], &[0.0; 6]);
    let gt = Tensor::from_u32(&gpu, &[3], &[IGNORE_CLASS; 3]).unwrap();
    let counts = counters(&gpu, &[0, 0]);
    metrics::argmax_known(&gpu, &gl, &gt, &counts).unwrap();
    assert_eq!(counts.download_u32(&gpu).unwrap(), vec![0, 0]);
}

fn rand_regression_targets(seed: u64, n: usize, unknown: f64) -> Vec<f32> {
    let mut r = Rng::new(seed);
    (0..n).map(|_| if r.next_f64() < unknown { f32::NAN } else { r.uniform(-2.0, 2.0) as f32 }).collect()
}

#[test]
fn regression_sums_odd_sizes_accumulate_over_launches() {
    let gpu = gpu();
    for (i, &m) in HEAD_ROWS.iter().enumerate() {
        for (j, &k) in HEAD_COLS.iter().enumerate() {
            let seed = 9100 + 10 * i as u64 + j as u64;
            // two batches of an epoch; the counters and sums start non-zero
            let batches: Vec<(Vec<f32>, Vec<f32>)> = (0..2)
                .map(|b| (rand_range(seed + 100 * b, m * k, -3.0, 3.0), rand_regression_targets(seed + 100 * b + 1, m * k, 0.3)))
                .collect();
            let sums0: Vec<f32> = (0..2 * k).map(|v| 0.5 * v as f32).collect();
            let counts0: Vec<u32> = (0..k as u32).map(|v| 3 * v).collect();
            let sums = upload(&gpu, &[k, 2], &sums0);
            let counts = counters(&gpu, &counts0);
            let mut expected: Vec<(f64, f64, u32)> = (0..k).map(|l| (sums0[2 * l] as f64, sums0[2 * l + 1] as f64, counts0[l])).collect();
            for (preds, targets) in &batches {
                let (gp, gt) = (upload(&gpu, &[m, k], preds), upload(&gpu, &[m, k], targets));
                metrics::regression_sums(&gpu, &gp, &gt, &sums, &counts).unwrap();
                for (e, r) in expected.iter_mut().zip(reference::metrics::regression_sums(&to_f64(preds), &to_f64(targets), m, k)) {
                    *e = (e.0 + r.0, e.1 + r.1, e.2 + r.2);
                }
            }
            let what = format!("regression_sums m={m} k={k}");
            assert_eq!(counts.download_u32(&gpu).unwrap(), expected.iter().map(|e| e.2).collect::<Vec<_>>(), "{what}: counts");
            let flat: Vec<f64> = expected.iter().flat_map(|e| [e.0, e.1]).collect();
            assert_close(&format!("{what}: sums"), &sums.download(&gpu).unwrap(), &flat, Tolerance { rel: 1e-5, abs: 1e-6 });
        }
    }
}

#[test]
fn regression_sums_ignore_unknown_targets_and_large_errors_stay_finite() {
    let gpu = gpu();
    let (m, k) = (33, 3);
    let targets = rand_regression_targets(9200, m * k, 0.4);
    // predictions at unknown targets may be anything; known ones at ±1e4
    let mut r = Rng::new(9201);
    let preds: Vec<f32> = targets
        .iter()
        .enumerate()
        .map(|(i, y)| {
            if y.is_nan() {
                [f32::NAN, f32::INFINITY, 1e30][i % 3]
            } else if r.next_f64() < 0.5 {
                1e4
            } else {
                -1e4
            }
        })
        .collect();
    let sums = upload(&gpu, &[k, 2], &[0.0; 6]);
    let counts = counters(&gpu, &[0; 3]);
    let (gp, gt) = (upload(&gpu, &[m, k], &preds), upload(&gpu, &[m, k], &targets));
    metrics::regression_sums(&gpu, &gp, &gt, &sums, &counts).unwrap();
    let expected = reference::metrics::regression_sums(&to_f64(&preds), &to_f64(&targets), m, k);
    let got = sums.download(&gpu).unwrap();
    assert!(got.iter().all(|v| v.is_finite()), "{got:?}");
    assert_eq!(counts.download_u32(&gpu).unwrap(), expected.iter().map(|e| e.2).collect::<Vec<_>>());
    assert_close("±1e4 sums", &got, &expected.iter().flat_map(|e| [e.0, e.1]).collect::<Vec<_>>(), Tolerance { rel: 1e-5, abs: 0.0 });
    // the same sums twice: bit-identical
    let again = upload(&gpu, &[k, 2], &[0.0; 6]);
    metrics::regression_sums(&gpu, &gp, &gt, &again, &counters(&gpu, &[0; 3])).unwrap();
    assert_eq!(
        again.download(&gpu).unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        got.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
}

#[test]
fn regression_metrics_report_na_for_a_column_with_no_known_target() {
    // column 0: errors 1, −3 (MAE 2, RMSE √5); column 1: every target unknown; column 2: one
    // exact prediction (MAE 0, RMSE 0)
    let gpu = gpu();
    let nan = f32::NAN;
    let preds = [1.0, 5.0, 2.0, -1.0, 7.0, 9.0];
    let targets = [0.0, nan, 2.0, 2.0, nan, nan];
    let sums = upload(&gpu, &[3, 2], &[0.0; 6]);
    let counts = counters(&gpu, &[0; 3]);
    let (gp, gt) = (upload(&gpu, &[2, 3], &preds), upload(&gpu, &[2, 3], &targets));
    metrics::regression_sums(&gpu, &gp, &gt, &sums, &counts).unwrap();
    let s = RegressionMetrics::from_sums(&sums.download(&gpu).unwrap(), &counts.download_u32(&gpu).unwrap(), 3).unwrap();
    assert_eq!(s.support, vec![2, 0, 1]);
    assert_eq!(s.mae, vec![Some(2.0), None, Some(0.0)]);
    assert_eq!(s.rmse[1], None);
    assert!((s.rmse[0].unwrap() - 5f64.sqrt()).abs() < 1e-12 && s.rmse[2] == Some(0.0));
    // the means leave the n/a column out (they are not zeros)
    assert_eq!(s.mean_mae, Some(1.0));
    assert!((s.mean_rmse.unwrap() - 5f64.sqrt() / 2.0).abs() < 1e-12);
    let none = RegressionMetrics::from_sums(&[0.0, 0.0], &[0], 1).unwrap();
    assert_eq!((none.mae[0], none.rmse[0], none.mean_mae, none.mean_rmse), (None, None, None, None));
    assert!(RegressionMetrics::from_sums(&[0.0; 3], &[0; 2], 2).is_err());
}

#[test]
fn head_metrics_refuse_bad_input() {
    let gpu = gpu();
    let x = upload(&gpu, &[3, 2], &[0.0; 6]);
    let y_bad = upload(&gpu, &[2, 3], &[0.0; 6]);
    let sums = upload(&gpu, &[2, 2], &[0.0; 4]);
    let counts = counters(&gpu, &[0; 2]);
    let sums_bad = upload(&gpu, &[2], &[0.0; 2]);
    let counts_bad = counters(&gpu, &[0; 3]);
    assert!(metrics::regression_sums(&gpu, &x, &x, &sums, &counts).is_ok());
    assert!(metrics::regression_sums(&gpu, &x, &y_bad, &sums, &counts).is_err());
    assert!(metrics::regression_sums(&gpu, &x, &x, &sums_bad, &counts).is_err());
    assert!(metrics::regression_sums(&gpu, &x, &x, &sums, &counts_bad).is_err());
    assert!(metrics::regression_sums(&gpu, &x, &x, &counts_bad, &counts).is_err());
    let classes = Tensor::from_u32(&gpu, &[2], &[0, IGNORE_CLASS]).unwrap();
    assert!(metrics::argmax_known(&gpu, &x, &classes, &counts).is_err());
    assert!(metrics::argmax_known(&gpu, &x, &Tensor::from_u32(&gpu, &[3], &[0, 1, IGNORE_CLASS]).unwrap(), &counts).is_ok());
}
