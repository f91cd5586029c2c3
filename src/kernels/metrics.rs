//! Classification metrics counted on the GPU: argmax accuracy for single-label classification
//! and a per-label confusion matrix for multi-label (sigmoid) outputs with unknown targets.
//!
//! Both kernels ADD to u32 counters, so a whole epoch accumulates on the GPU and is downloaded
//! once: zero the counters at the start of the epoch, record the dispatch after every batch's
//! forward pass, read at the end. [`LabelMetrics`] turns the confusion counts into scores.

use super::{Family, Kernel, R, RW, ensure};
use crate::error::{Error, Result};
use crate::gpu::pipelines::groups_1d;
use crate::gpu::tensor::DType;
use crate::gpu::{Dispatch, Gpu, Tensor};

pub(crate) const ARGMAX_CORRECT: Kernel = Kernel { family: Family::Metrics, entry: "argmax_correct", bindings: &[R, R, RW] };
pub(crate) const LABEL_CONFUSION: Kernel = Kernel { family: Family::Metrics, entry: "label_confusion", bindings: &[R, R, RW] };

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
    let op = "argmax_correct";
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
    Dispatch::new(gpu, ARGMAX_CORRECT, &[], bytemuck::bytes_of(&p), &[logits, targets, counts], groups_1d(m, 256))
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
/// A score whose denominator is 0 is 0, like scikit-learn's `zero_division=0`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LabelMetrics {
    /// TP / (TP + FP)
    pub precision: Vec<f64>,
    /// TP / (TP + FN)
    pub recall: Vec<f64>,
    /// 2·TP / (2·TP + FP + FN), the harmonic mean of precision and recall
    pub f1: Vec<f64>,
    /// (TP + TN) / (TP + FP + TN + FN), over the known targets
    pub accuracy: Vec<f64>,
    /// Known targets per label: TP + FP + TN + FN
    pub support: Vec<u64>,
    pub mean_precision: f64,
    pub mean_recall: f64,
    pub mean_f1: f64,
    pub mean_accuracy: f64,
}

impl LabelMetrics {
    /// Scores from the downloaded `[k, 4]` counts (TP, FP, TN, FN per label).
    pub fn from_counts(counts: &[u32], k: usize) -> Result<LabelMetrics> {
        if counts.len() != 4 * k {
            return Err(Error::shape(format!("LabelMetrics: {} counts for {k} labels, expected {}", counts.len(), 4 * k)));
        }
        let ratio = |num: u64, den: u64| if den == 0 { 0.0 } else { num as f64 / den as f64 };
        let mut s = LabelMetrics::default();
        for c in counts.chunks_exact(4) {
            let [tp, fp, tn, fneg] = [c[0] as u64, c[1] as u64, c[2] as u64, c[3] as u64];
            s.precision.push(ratio(tp, tp + fp));
            s.recall.push(ratio(tp, tp + fneg));
            s.f1.push(ratio(2 * tp, 2 * tp + fp + fneg));
            s.accuracy.push(ratio(tp + tn, tp + fp + tn + fneg));
            s.support.push(tp + fp + tn + fneg);
        }
        let mean = |v: &[f64]| if v.is_empty() { 0.0 } else { v.iter().sum::<f64>() / v.len() as f64 };
        s.mean_precision = mean(&s.precision);
        s.mean_recall = mean(&s.recall);
        s.mean_f1 = mean(&s.f1);
        s.mean_accuracy = mean(&s.accuracy);
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::wgsl_struct_bytes;
    #[test]
    fn params_match_wgsl_size() {
        let src = crate::kernels::source::METRICS;
        assert_eq!(std::mem::size_of::<ArgmaxParams>(), 16);
        assert_eq!(std::mem::size_of::<ConfusionParams>(), 16);
        assert_eq!(wgsl_struct_bytes(src, "ArgmaxParams"), std::mem::size_of::<ArgmaxParams>());
        assert_eq!(wgsl_struct_bytes(src, "ConfusionParams"), std::mem::size_of::<ConfusionParams>());
    }
    #[test]
    fn label_metrics_by_hand() {
        // label 0: TP 3, FP 1, TN 4, FN 2; label 1: nothing predicted or positive; label 2: empty
        let s = LabelMetrics::from_counts(&[3, 1, 4, 2, 0, 0, 5, 0, 0, 0, 0, 0], 3).unwrap();
        assert_eq!(s.precision, vec![0.75, 0.0, 0.0]);
        assert_eq!(s.recall, vec![0.6, 0.0, 0.0]);
        assert!((s.f1[0] - 2.0 * 0.75 * 0.6 / (0.75 + 0.6)).abs() < 1e-15);
        assert_eq!(s.accuracy, vec![0.7, 1.0, 0.0]);
        assert_eq!(s.support, vec![10, 5, 0]);
        assert!((s.mean_accuracy - 1.7 / 3.0).abs() < 1e-15);
        assert!((s.mean_precision - 0.25).abs() < 1e-15);
        assert!(LabelMetrics::from_counts(&[1, 2, 3], 1).is_err());
        assert_eq!(LabelMetrics::from_counts(&[], 0).unwrap().mean_f1, 0.0);
    }
}
