//! Classification metrics counted on the GPU: argmax accuracy for single-label classification
//! and a per-label confusion matrix for multi-label (sigmoid) outputs with unknown targets.
//!
//! Both kernels ADD to u32 counters, so a whole epoch accumulates on the GPU and is downloaded
//! once: zero the counters at the start of the epoch, record the dispatch after every batch's
//! forward pass, read at the end. [`LabelMetrics`] turns the confusion counts into scores.

use super::{Kernel, R, RW, ensure, source};
use crate::error::{Error, Result};
use crate::gpu::pipelines::groups_1d;
use crate::gpu::tensor::DType;
use crate::gpu::{Dispatch, Gpu, Tensor};

pub(crate) const ARGMAX_CORRECT: Kernel = Kernel { source: &source::METRICS, entry: "argmax_correct", bindings: &[R, R, RW] };
pub(crate) const LABEL_CONFUSION: Kernel = Kernel { source: &source::METRICS, entry: "label_confusion", bindings: &[R, R, RW] };
pub(crate) const ARGMAX_KNOWN: Kernel = Kernel { source: &source::METRICS, entry: "argmax_known", bindings: &[R, R, RW] };
pub(crate) const REGRESSION_SUMS: Kernel = Kernel { source: &source::METRICS, entry: "regression_sums", bindings: &[R, R, RW, RW] };

/// Uniform block of `argmax_correct` (`ArgmaxParams` in metrics.wgsl).
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct ArgmaxParams {
    pub m: u32,
    pub c: u32,
    pub _pad: [u32; 2],
}

/// Uniform block of `label_confusion` (`ConfusionParams` in metrics.wgsl).
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct ConfusionParams {
    pub m: u32,
    pub k: u32,
    pub logit_threshold: f32,
    pub _pad: u32,
}

/// `(rows, columns)` of a 2-D tensor, or a shape error naming `op` and `name`.
fn dims2(op: &str, name: &str, t: &Tensor) -> Result<(usize, usize)> {
    match *t.shape() {
        [r, c] => Ok((r, c)),
        _ => Err(Error::shape(format!("{op}: {name} must be 2-D, is {:?}", t.shape()))),
    }
}

fn to_u32(op: &str, what: &str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::invalid(format!("{op}: {what} {v} exceeds u32")))
}

/// Adds `#(argmax_j logits[r, j] == targets[r])` to `counts[0]` and `m` to `counts[1]`.
/// `logits` is f32 `[m, c]` (c ≥ 1), `targets` u32 `[m]`, `counts` u32 `[2]`. Ties pick the
/// lowest index and a NaN logit counts as the maximum, as `torch.argmax`; a target ≥ c is never
/// correct.
pub fn argmax_correct_dispatch(gpu: &Gpu, logits: &Tensor, targets: &Tensor, counts: &Tensor) -> Result<Dispatch> {
    argmax_dispatch(gpu, ARGMAX_CORRECT, logits, targets, counts)
}

/// As [`argmax_correct_dispatch`], for a head whose examples may have no class: a target
/// [`IGNORE_CLASS`](crate::kernels::loss::IGNORE_CLASS) (−1) counts neither as correct nor in the
/// total, so `counts[0] / counts[1]` is the accuracy over the examples that have a class.
pub fn argmax_known_dispatch(gpu: &Gpu, logits: &Tensor, targets: &Tensor, counts: &Tensor) -> Result<Dispatch> {
    argmax_dispatch(gpu, ARGMAX_KNOWN, logits, targets, counts)
}

/// [`argmax_known_dispatch`], run at once.
pub fn argmax_known(gpu: &Gpu, logits: &Tensor, targets: &Tensor, counts: &Tensor) -> Result<()> {
    gpu.run("argmax_known", &[&argmax_known_dispatch(gpu, logits, targets, counts)?])
}

fn argmax_dispatch(gpu: &Gpu, kernel: Kernel, logits: &Tensor, targets: &Tensor, counts: &Tensor) -> Result<Dispatch> {
    let op = kernel.entry;
    let (m, c) = dims2(op, "logits", logits)?;
    ensure(logits.dtype() == DType::F32, op, || "logits must be f32".into())?;
    ensure(c >= 1, op, || format!("logits {:?} have no classes", logits.shape()))?;
    ensure(targets.dtype() == DType::U32 && targets.len() == m, op, || {
        format!("targets must be u32 with {m} elements, are {:?} {:?}", targets.dtype(), targets.shape())
    })?;
    ensure(counts.dtype() == DType::U32 && counts.len() == 2, op, || {
        format!("counts must be u32 [2] (correct, total), are {:?} {:?}", counts.dtype(), counts.shape())
    })?;
    let p = ArgmaxParams { m: to_u32(op, "rows", m)?, c: to_u32(op, "classes", c)?, _pad: [0; 2] };
    Dispatch::new(gpu, kernel, &[], bytemuck::bytes_of(&p), &[logits, targets, counts], groups_1d(m, 256))
}

/// [`argmax_correct_dispatch`], run at once.
pub fn argmax_correct(gpu: &Gpu, logits: &Tensor, targets: &Tensor, counts: &Tensor) -> Result<()> {
    gpu.run("argmax_correct", &[&argmax_correct_dispatch(gpu, logits, targets, counts)?])
}

/// Adds each label's confusion counts to `counts` (u32 `[k, 4]`: TP, FP, TN, FN).
/// `logits` and `targets` are f32 `[m, k]`; a NaN target is unknown and not counted; a target
/// ≥ 0.5 is positive (soft targets). Predicted positive when `sigmoid(logit) ≥ threshold`,
/// compared as `logit ≥ ln(threshold / (1 − threshold))`; `threshold` must be in (0, 1).
pub fn label_confusion_dispatch(gpu: &Gpu, logits: &Tensor, targets: &Tensor, threshold: f32, counts: &Tensor) -> Result<Dispatch> {
    let op = "label_confusion";
    let (m, k) = dims2(op, "logits", logits)?;
    ensure(logits.dtype() == DType::F32, op, || "logits must be f32".into())?;
    ensure(targets.dtype() == DType::F32 && targets.shape() == logits.shape(), op, || {
        format!("targets must be f32 {:?} like the logits, are {:?} {:?}", logits.shape(), targets.dtype(), targets.shape())
    })?;
    ensure(counts.dtype() == DType::U32 && counts.len() == 4 * k, op, || {
        format!("counts must be u32 [{k}, 4] (TP, FP, TN, FN), are {:?} {:?}", counts.dtype(), counts.shape())
    })?;
    let p = ConfusionParams {
        m: to_u32(op, "rows", m)?,
        k: to_u32(op, "labels", k)?,
        logit_threshold: logit_threshold(op, threshold)?,
        _pad: 0,
    };
    Dispatch::new(gpu, LABEL_CONFUSION, &[], bytemuck::bytes_of(&p), &[logits, targets, counts], groups_1d(k, 64))
}

/// The logit at which `sigmoid(logit) = threshold` (computed in f64), so kernels compare logits
/// instead of computing probabilities; `threshold` must be in (0, 1).
pub(crate) fn logit_threshold(op: &str, threshold: f32) -> Result<f32> {
    if !(threshold > 0.0 && threshold < 1.0) {
        return Err(Error::invalid(format!("{op}: the probability threshold must be in (0, 1), got {threshold}")));
    }
    let t = threshold as f64;
    Ok((t / (1.0 - t)).ln() as f32)
}

/// [`label_confusion_dispatch`], run at once.
pub fn label_confusion(gpu: &Gpu, logits: &Tensor, targets: &Tensor, threshold: f32, counts: &Tensor) -> Result<()> {
    gpu.run("label_confusion", &[&label_confusion_dispatch(gpu, logits, targets, threshold, counts)?])
}

/// Per-label scores from [`label_confusion`]'s counts, and their unweighted (macro) means.
///
/// A score whose denominator is 0 is undefined: `None`, shown as "n/a", and left out of the
/// means. That is
/// * precision, TP / (TP + FP), for a label never predicted positive;
/// * recall, TP / (TP + FN), for a label with no known positives;
/// * F1, 2·TP / (2·TP + FP + FN), for a label with neither (no known positive and none
///   predicted), which includes a label with no known targets at all;
/// * accuracy for a label with no known targets (support 0).
///
/// This is scikit-learn's `zero_division=np.nan`, whose macro averages also leave such labels
/// out. Its default (`"warn"`, scored as 0) would report a label nobody could score as one the
/// model gets wrong, and drag the mean down. A mean over no defined scores is `None` too.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LabelMetrics {
    /// TP / (TP + FP)
    pub precision: Vec<Option<f64>>,
    /// TP / (TP + FN)
    pub recall: Vec<Option<f64>>,
    /// 2·TP / (2·TP + FP + FN), the harmonic mean of precision and recall where both are defined
    pub f1: Vec<Option<f64>>,
    /// (TP + TN) / (TP + FP + TN + FN), over the known targets
    pub accuracy: Vec<Option<f64>>,
    /// Known targets per label: TP + FP + TN + FN
    pub support: Vec<u64>,
    /// Means over the labels whose score is defined.
    pub mean_precision: Option<f64>,
    pub mean_recall: Option<f64>,
    pub mean_f1: Option<f64>,
    pub mean_accuracy: Option<f64>,
}

impl LabelMetrics {
    /// Scores from the downloaded `[k, 4]` counts (TP, FP, TN, FN per label).
    pub fn from_counts(counts: &[u32], k: usize) -> Result<LabelMetrics> {
        if counts.len() != 4 * k {
            return Err(Error::shape(format!("LabelMetrics: {} counts for {k} labels, expected {}", counts.len(), 4 * k)));
        }
        let ratio = |num: u64, den: u64| (den > 0).then(|| num as f64 / den as f64);
        let mut s = LabelMetrics::default();
        for c in counts.chunks_exact(4) {
            let [tp, fp, tn, fneg] = [c[0] as u64, c[1] as u64, c[2] as u64, c[3] as u64];
            s.precision.push(ratio(tp, tp + fp));
            s.recall.push(ratio(tp, tp + fneg));
            s.f1.push(ratio(2 * tp, 2 * tp + fp + fneg));
            s.accuracy.push(ratio(tp + tn, tp + fp + tn + fneg));
            s.support.push(tp + fp + tn + fneg);
        }
        s.mean_precision = mean_defined(&s.precision);
        s.mean_recall = mean_defined(&s.recall);
        s.mean_f1 = mean_defined(&s.f1);
        s.mean_accuracy = mean_defined(&s.accuracy);
        Ok(s)
    }

    /// How many labels have an F1 (the labels `mean_f1` averages).
    pub fn scored_labels(&self) -> usize {
        self.f1.iter().flatten().count()
    }
}

/// The mean of the defined values; `None` when there are none.
pub fn mean_defined(v: &[Option<f64>]) -> Option<f64> {
    let defined: Vec<f64> = v.iter().flatten().copied().collect();
    (!defined.is_empty()).then(|| defined.iter().sum::<f64>() / defined.len() as f64)
}

/// Uniform block of `regression_sums` (`RegressionSumsParams` in metrics.wgsl).
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct RegressionSumsParams {
    pub m: u32,
    pub k: u32,
    pub _pad: [u32; 2],
}

/// Adds, per output column of a regression head, the sums over its known targets (not NaN) of
/// `|e|` and `e²` (e = prediction − target) to `sums` (f32 `[k, 2]`) and their number to
/// `counts` (u32 `[k]`). `preds` and `targets` are f32 `[m, k]`. One invocation per column adds
/// the rows in order, so repeats are bit-identical. [`RegressionMetrics`] turns the epoch's sums
/// into MAE and RMSE.
pub fn regression_sums_dispatch(gpu: &Gpu, preds: &Tensor, targets: &Tensor, sums: &Tensor, counts: &Tensor) -> Result<Dispatch> {
    let op = "regression_sums";
    let (m, k) = dims2(op, "predictions", preds)?;
    ensure(preds.dtype() == DType::F32, op, || "predictions must be f32".into())?;
    ensure(targets.dtype() == DType::F32 && targets.shape() == preds.shape(), op, || {
        format!("targets must be f32 {:?} like the predictions, are {:?} {:?}", preds.shape(), targets.dtype(), targets.shape())
    })?;
    ensure(sums.dtype() == DType::F32 && sums.len() == 2 * k, op, || {
        format!("sums must be f32 [{k}, 2] (Σ|e|, Σe²), are {:?} {:?}", sums.dtype(), sums.shape())
    })?;
    ensure(counts.dtype() == DType::U32 && counts.len() == k, op, || {
        format!("counts must be u32 [{k}], are {:?} {:?}", counts.dtype(), counts.shape())
    })?;
    to_u32(op, "elements", preds.len())?;
    // one invocation walks its column's m rows
    super::reduce::ensure_loop_budget(op, m + 1, || format!("a column of {m} rows"))?;
    let p = RegressionSumsParams { m: m as u32, k: k as u32, _pad: [0; 2] };
    Dispatch::new(gpu, REGRESSION_SUMS, &[], bytemuck::bytes_of(&p), &[preds, targets, sums, counts], groups_1d(k, 64))
}

/// [`regression_sums_dispatch`], run at once.
pub fn regression_sums(gpu: &Gpu, preds: &Tensor, targets: &Tensor, sums: &Tensor, counts: &Tensor) -> Result<()> {
    gpu.run("regression_sums", &[&regression_sums_dispatch(gpu, preds, targets, sums, counts)?])
}

/// Per-column scores of a regression head from [`regression_sums`]'s sums, and their means.
/// A column with no known target has no score: `None` ("n/a"), left out of the means (a mean
/// over no defined scores is `None` too).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RegressionMetrics {
    /// Σ|e| / count
    pub mae: Vec<Option<f64>>,
    /// √(Σe² / count)
    pub rmse: Vec<Option<f64>>,
    /// Known targets per column.
    pub support: Vec<u64>,
    pub mean_mae: Option<f64>,
    pub mean_rmse: Option<f64>,
}

impl RegressionMetrics {
    /// Scores from the downloaded `[k, 2]` sums (Σ|e|, Σe²) and `[k]` counts.
    pub fn from_sums(sums: &[f32], counts: &[u32], k: usize) -> Result<RegressionMetrics> {
        if sums.len() != 2 * k || counts.len() != k {
            return Err(Error::shape(format!(
                "RegressionMetrics: {} sums and {} counts for {k} columns, expected {} and {k}",
                sums.len(),
                counts.len(),
                2 * k
            )));
        }
        let mut s = RegressionMetrics::default();
        for (pair, &n) in sums.chunks_exact(2).zip(counts) {
            let known = n > 0;
            s.mae.push(known.then(|| pair[0] as f64 / n as f64));
            s.rmse.push(known.then(|| (pair[1] as f64 / n as f64).sqrt()));
            s.support.push(n as u64);
        }
        s.mean_mae = mean_defined(&s.mae);
        s.mean_rmse = mean_defined(&s.rmse);
        Ok(s)
    }
}

/// Shows a score that may be undefined: the number, honouring the format's precision, or `n/a`,
/// either one padded to the format's width (right-aligned unless the format says otherwise).
/// `format!("{:>7.3}", OrNa(Some(0.5)))` is `"  0.500"`, with `None` it is `"    n/a"`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OrNa(pub Option<f64>);

impl std::fmt::Display for OrNa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = match (self.0, f.precision()) {
            (Some(v), Some(p)) => format!("{v:.p$}"),
            (Some(v), None) => v.to_string(),
            (None, _) => "n/a".to_string(),
        };
        let pad = f.width().unwrap_or(0).saturating_sub(text.chars().count());
        let (left, right) = match f.align() {
            Some(std::fmt::Alignment::Left) => (0, pad),
            Some(std::fmt::Alignment::Center) => (pad / 2, pad - pad / 2),
            _ => (pad, 0),
        };
        let fill = f.fill();
        for _ in 0..left {
            write!(f, "{fill}")?;
        }
        f.write_str(&text)?;
        for _ in 0..right {
            write!(f, "{fill}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::wgsl_struct_bytes;
    #[test]
    fn params_match_wgsl_size() {
        let src = crate::kernels::source::METRICS_WGSL;
        assert_eq!(std::mem::size_of::<ArgmaxParams>(), 16);
        assert_eq!(std::mem::size_of::<ConfusionParams>(), 16);
        assert_eq!(wgsl_struct_bytes(src, "ArgmaxParams"), std::mem::size_of::<ArgmaxParams>());
        assert_eq!(wgsl_struct_bytes(src, "ConfusionParams"), std::mem::size_of::<ConfusionParams>());
        assert_eq!(wgsl_struct_bytes(src, "RegressionSumsParams"), std::mem::size_of::<RegressionSumsParams>());
    }
    #[test]
    fn label_metrics_by_hand() {
        // label 0: TP 3, FP 1, TN 4, FN 2; label 1: nothing predicted or positive (5 TN);
        // label 2: no known targets; label 3: 2 false alarms, no positives; label 4: 3 positives
        // all missed
        let s = LabelMetrics::from_counts(&[3, 1, 4, 2, 0, 0, 5, 0, 0, 0, 0, 0, 0, 2, 1, 0, 0, 0, 1, 3], 5).unwrap();
        assert_eq!(s.precision, vec![Some(0.75), None, None, Some(0.0), None]);
        assert_eq!(s.recall, vec![Some(0.6), None, None, None, Some(0.0)]);
        let f0 = 2.0 * 0.75 * 0.6 / (0.75 + 0.6);
        assert!((s.f1[0].unwrap() - f0).abs() < 1e-15);
        assert_eq!(s.f1[1..], [None, None, Some(0.0), Some(0.0)]);
        assert_eq!(s.accuracy, vec![Some(0.7), Some(1.0), None, Some(1.0 / 3.0), Some(0.25)]);
        assert_eq!(s.support, vec![10, 5, 0, 3, 4]);
        assert_eq!(s.scored_labels(), 3);
        // The means leave the undefined scores out (they are not zeros).
        assert!((s.mean_f1.unwrap() - f0 / 3.0).abs() < 1e-15);
        assert!((s.mean_precision.unwrap() - 0.375).abs() < 1e-15);
        assert!((s.mean_recall.unwrap() - 0.3).abs() < 1e-15);
        assert!((s.mean_accuracy.unwrap() - (0.7 + 1.0 + 1.0 / 3.0 + 0.25) / 4.0).abs() < 1e-15);
        assert!(LabelMetrics::from_counts(&[1, 2, 3], 1).is_err());
        let empty = LabelMetrics::from_counts(&[], 0).unwrap();
        assert_eq!((empty.mean_f1, empty.mean_accuracy), (None, None));
        // One label with no known targets at all: everything n/a, no mean.
        let unknown = LabelMetrics::from_counts(&[0, 0, 0, 0], 1).unwrap();
        assert_eq!((unknown.f1[0], unknown.mean_f1, unknown.mean_accuracy), (None, None, None));
    }

    #[test]
    fn or_na_formats_like_a_number_or_says_na() {
        assert_eq!(format!("{:>7.3}", OrNa(Some(0.5))), "  0.500");
        assert_eq!(format!("{:>7.3}", OrNa(None)), "    n/a");
        assert_eq!(format!("{:<6.1}|", OrNa(None)), "n/a   |");
        assert_eq!(format!("{:.2}", OrNa(Some(1.0 / 3.0))), "0.33");
        assert_eq!(format!("{}", OrNa(Some(0.25))), "0.25");
        assert_eq!(format!("{:^7}", OrNa(None)), "  n/a  ");
        assert_eq!(format!("{:5.3}", OrNa(Some(0.123456))), "0.123");
    }
}
