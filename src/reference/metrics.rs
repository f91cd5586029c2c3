//! Metric counts in f64: argmax accuracy, per-label confusion counts, and a regression head's
//! error sums.

/// torch.argmax of one row: the first index of the maximum, a NaN counting as the maximum (the
/// first NaN wins). `None` for an empty row.
pub fn argmax(row: &[f64]) -> Option<usize> {
    if let Some(i) = row.iter().position(|x| x.is_nan()) {
        return Some(i);
    }
    let mut best: Option<(usize, f64)> = None;
    for (j, &x) in row.iter().enumerate() {
        if best.is_none_or(|(_, b)| x > b) {
            best = Some((j, x));
        }
    }
    best.map(|(j, _)| j)
}

/// `(correct, total)` over the `m` rows of `logits` (`[m, c]`): rows whose argmax equals the
/// target.
pub fn argmax_correct(logits: &[f64], targets: &[u32], m: usize, c: usize) -> (u32, u32) {
    let correct = (0..m).filter(|&r| argmax(&logits[r * c..(r + 1) * c]) == Some(targets[r] as usize)).count();
    (correct as u32, m as u32)
}

/// Per-label `[TP, FP, TN, FN]` (flattened `[k, 4]`) for `[m, k]` logits and targets: a NaN
/// target is skipped, a target ≥ 0.5 is positive, the prediction is positive when
/// `sigmoid(logit) ≥ threshold` (a NaN logit is negative).
pub fn label_confusion(logits: &[f64], targets: &[f64], m: usize, k: usize, threshold: f64) -> Vec<u32> {
    let mut counts = vec![0u32; 4 * k];
    for r in 0..m {
        for l in 0..k {
            let y = targets[r * k + l];
            if y.is_nan() {
                continue;
            }
            let predicted = super::sigmoid(logits[r * k + l]) >= threshold;
            let actual = y >= 0.5;
            let slot = match (predicted, actual) {
                (true, true) => 0,
                (true, false) => 1,
                (false, false) => 2,
                (false, true) => 3,
            };
            counts[4 * l + slot] += 1;
        }
    }
    counts
}

/// `(correct, known)` over the rows whose target is not
/// [`IGNORE_CLASS`](crate::kernels::loss::IGNORE_CLASS): the ignored rows count in neither.
pub fn argmax_known(logits: &[f64], targets: &[u32], m: usize, c: usize) -> (u32, u32) {
    let known: Vec<usize> = (0..m).filter(|&r| targets[r] != crate::kernels::loss::IGNORE_CLASS).collect();
    let correct = known.iter().filter(|&&r| argmax(&logits[r * c..(r + 1) * c]) == Some(targets[r] as usize)).count();
    (correct as u32, known.len() as u32)
}

/// Per output column of `[m, k]` predictions and targets, over the known (non-NaN) targets:
/// `(Σ|e|, Σe², count)`, e = prediction − target.
pub fn regression_sums(preds: &[f64], targets: &[f64], m: usize, k: usize) -> Vec<(f64, f64, u32)> {
    (0..k)
        .map(|j| {
            let errors: Vec<f64> =
                (0..m).filter(|&i| !targets[i * k + j].is_nan()).map(|i| preds[i * k + j] - targets[i * k + j]).collect();
            (errors.iter().map(|e| e.abs()).sum(), errors.iter().map(|e| e * e).sum(), errors.len() as u32)
        })
        .collect()
}
