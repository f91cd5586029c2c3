//! Losses and their gradients in float64: the specification of `kernels::loss`. Inputs are
//! row-major; every loss is returned per row, already divided by the normaliser (so the sum of
//! the rows is the batch loss), with the gradient of that batch loss w.r.t. the logits.
//!
//! Numerically sound forms only: the row maximum is subtracted before `exp`, `ln_1p` is used
//! where its argument can be tiny, and BCE is written as a sum of non-negative softplus terms.

use crate::kernels::loss::{BceReduction, IGNORE_CLASS, MaskedReduction, RegressionLoss};

/// `log(1 + e^z)` without overflow, accurate for any z.
pub fn softplus(z: f64) -> f64 {
    z.max(0.0) + (-z.abs()).exp().ln_1p()
}

/// Softmax cross-entropy with integer targets over logits `[m, c]`:
/// `loss_rows[i] = (logsumexp(x_i) − x_i[t_i]) / m`, `dlogits = (softmax(x_i) − onehot(t_i)) / m`.
/// A target `≥ c` gives a NaN loss and a zero gradient for its row (what the kernel does).
pub fn softmax_xent(logits: &[f64], targets: &[u32], m: usize, c: usize) -> (Vec<f64>, Vec<f64>) {
    assert_eq!(logits.len(), m * c, "softmax_xent: logits have {} elements, not {m}x{c}", logits.len());
    assert_eq!(targets.len(), m, "softmax_xent: {} targets for {m} rows", targets.len());
    let scale = 1.0 / m.max(1) as f64;
    let mut loss = vec![0.0; m];
    let mut grad = vec![0.0; m * c];
    for i in 0..m {
        let x = &logits[i * c..(i + 1) * c];
        let t = targets[i] as usize;
        if t >= c {
            loss[i] = f64::NAN;
            continue;
        }
        let mx = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = x.iter().map(|&v| (v - mx).exp()).collect();
        let s: f64 = e.iter().sum();
        // logsumexp − x_t = (M − x_t) + log Σ e_j. Σ e_j = 1 + (the other terms), and ln_1p of
        // those keeps a tiny loss (a confident right answer) accurate.
        let a = if x[t] == mx { t } else { x.iter().position(|&v| v == mx).expect("the max is an element") };
        let rest: f64 = e.iter().enumerate().filter(|&(j, _)| j != a).map(|(_, v)| v).sum();
        loss[i] = ((mx - x[t]) + rest.ln_1p()) * scale;
        // softmax_t − 1 = −(Σ_{j≠t} e_j)/s, computed without the cancellation
        let other: f64 = e.iter().enumerate().filter(|&(j, _)| j != t).map(|(_, v)| v).sum();
        for j in 0..c {
            grad[i * c + j] = if j == t { -other / s } else { e[j] / s } * scale;
        }
    }
    (loss, grad)
}

/// The BCE normaliser N of `reduction` for `m` examples, `k` labels and `labelled` known entries.
pub fn bce_normaliser(reduction: BceReduction, m: usize, k: usize, labelled: usize) -> f64 {
    match reduction {
        BceReduction::SumLabelsMeanExamples => m.max(1) as f64,
        BceReduction::MeanAll => (m * k).max(1) as f64,
        BceReduction::MeanLabelled => labelled.max(1) as f64,
    }
}

/// One BCE-with-logits entry (PyTorch semantics, `pos_weight` p, `weight` w) and its derivative:
/// `l = w·[p·y·softplus(−x) + (1 − y)·softplus(x)]` (= PyTorch's
/// `w·[(1−y)·x + (1+(p−1)·y)·(log1p(exp(−|x|)) + max(−x, 0))]`, without its cancellation),
/// `dl/dx = w·[(1 − y)·σ(x) − p·y·σ(−x)]`.
pub fn bce_entry(x: f64, y: f64, p: f64, w: f64) -> (f64, f64) {
    let l = w * (p * y * softplus(-x) + (1.0 - y) * softplus(x));
    let g = w * ((1.0 - y) * super::sigmoid(x) - p * y * super::sigmoid(-x));
    (l, g)
}

/// Per-label sigmoid BCE with logits over `[m, k]`; a NaN target is an unknown label that
/// contributes 0 to the loss and the gradient. `loss_rows[i] = Σ_j l_ij / N`,
/// `dlogits = dl/dx / N`, N from [`bce_normaliser`].
pub fn bce_logits(
    logits: &[f64],
    targets: &[f64],
    m: usize,
    k: usize,
    pos_weight: Option<&[f64]>,
    label_weight: Option<&[f64]>,
    reduction: BceReduction,
) -> (Vec<f64>, Vec<f64>) {
    assert_eq!(logits.len(), m * k, "bce_logits: logits have {} elements, not {m}x{k}", logits.len());
    assert_eq!(targets.len(), m * k, "bce_logits: targets have {} elements, not {m}x{k}", targets.len());
    let labelled = targets.iter().filter(|y| !y.is_nan()).count();
    let n = bce_normaliser(reduction, m, k, labelled);
    let mut loss = vec![0.0; m];
    let mut grad = vec![0.0; m * k];
    for i in 0..m {
        for j in 0..k {
            let y = targets[i * k + j];
            if y.is_nan() {
                continue;
            }
            let p = pos_weight.map_or(1.0, |p| p[j]);
            let w = label_weight.map_or(1.0, |w| w[j]);
            let (l, g) = bce_entry(logits[i * k + j], y, p, w);
            loss[i] += l;
            grad[i * k + j] = g / n;
        }
        loss[i] /= n;
    }
    (loss, grad)
}

/// One regression entry's loss and its derivative w.r.t. the prediction, for error
/// `e = prediction − target` (PyTorch's `MSELoss`, `L1Loss`, `HuberLoss(delta)` per element):
/// MSE `e²` and `2e`; L1 `|e|` and `sign(e)` (0 at 0); Huber `e²/2` and `e` for `|e| < δ`, else
/// `δ·(|e| − δ/2)` and `δ·sign(e)`.
pub fn regression_entry(kind: RegressionLoss, e: f64) -> (f64, f64) {
    let sign = if e > 0.0 {
        1.0
    } else if e < 0.0 {
        -1.0
    } else {
        0.0
    };
    match kind {
        RegressionLoss::Mse => (e * e, 2.0 * e),
        RegressionLoss::L1 => (e.abs(), sign),
        RegressionLoss::Huber(d) => {
            let d = d as f64;
            if e.abs() < d { (0.5 * e * e, e) } else { (d * (e.abs() - 0.5 * d), d * sign) }
        }
    }
}

/// The normaliser of a head's loss over `known` known targets: the count (at least 1) for the
/// mean, 1 for the sum.
pub fn masked_normaliser(reduction: MaskedReduction, known: usize) -> f64 {
    match reduction {
        MaskedReduction::MeanKnown => known.max(1) as f64,
        MaskedReduction::Sum => 1.0,
    }
}

/// A regression head's loss over predictions and targets `[m, k]` (NaN target = unknown: no
/// loss, no gradient), weighted by `w`: `loss_rows[i] = w·Σ_j l_ij / N`,
/// `grad = w·∂l/∂prediction / N`, N from [`masked_normaliser`].
pub fn regression(
    preds: &[f64],
    targets: &[f64],
    m: usize,
    k: usize,
    kind: RegressionLoss,
    reduction: MaskedReduction,
    w: f64,
) -> (Vec<f64>, Vec<f64>) {
    assert_eq!(preds.len(), m * k, "regression: predictions have {} elements, not {m}x{k}", preds.len());
    assert_eq!(targets.len(), m * k, "regression: targets have {} elements, not {m}x{k}", targets.len());
    let n = masked_normaliser(reduction, targets.iter().filter(|y| !y.is_nan()).count());
    let mut loss = vec![0.0; m];
    let mut grad = vec![0.0; m * k];
    for i in 0..m {
        for j in 0..k {
            let y = targets[i * k + j];
            if y.is_nan() {
                continue;
            }
            let (l, g) = regression_entry(kind, preds[i * k + j] - y);
            loss[i] += l;
            grad[i * k + j] = w * g / n;
        }
        loss[i] = w * loss[i] / n;
    }
    (loss, grad)
}

/// Softmax cross-entropy with unknown classes ([`IGNORE_CLASS`], −1 as u32: no loss, no
/// gradient), weighted by `w`: the other rows as [`softmax_xent`] with the normaliser m replaced
/// by N from [`masked_normaliser`] over the rows not ignored.
pub fn softmax_xent_masked(
    logits: &[f64],
    targets: &[u32],
    m: usize,
    c: usize,
    reduction: MaskedReduction,
    w: f64,
) -> (Vec<f64>, Vec<f64>) {
    let (mut loss, mut grad) = softmax_xent(logits, targets, m, c);
    let n = masked_normaliser(reduction, targets.iter().filter(|&&t| t != IGNORE_CLASS).count());
    // softmax_xent divided by m; undo that and divide by N instead
    let f = w * m.max(1) as f64 / n;
    for (i, &t) in targets.iter().enumerate() {
        if t == IGNORE_CLASS {
            loss[i] = 0.0;
        } else {
            loss[i] *= f;
            grad[i * c..(i + 1) * c].iter_mut().for_each(|g| *g *= f);
        }
    }
    (loss, grad)
}
