//! BatchNorm in float64, PyTorch's formulas written out (aten/src/ATen/native/Normalization.cpp):
//! the specification `kernels::norm` is tested against. x is NCHW, `n` examples of `c` channels
//! of `hw` values; per-channel slices have `c` elements.

/// The values of channel `ch`, example-major.
fn channel(x: &[f64], n: usize, c: usize, hw: usize, ch: usize) -> impl Iterator<Item = f64> + '_ {
    (0..n).flat_map(move |i| x[(i * c + ch) * hw..(i * c + ch + 1) * hw].iter().copied())
}

/// `f(channel, value)` for every element, in place.
fn per_element(x: &[f64], c: usize, hw: usize, f: impl Fn(usize, f64) -> f64) -> Vec<f64> {
    x.iter().enumerate().map(|(i, &v)| f((i / hw) % c, v)).collect()
}

/// `s = γ/√(σ² + ε)`, `t = β − μ·s` per channel: the affine form of an inference-mode BN.
pub fn scale_shift(gamma: &[f64], beta: &[f64], mean: &[f64], var: &[f64], eps: f64) -> (Vec<f64>, Vec<f64>) {
    let s: Vec<f64> = gamma.iter().zip(var).map(|(&g, &v)| g / (v + eps).sqrt()).collect();
    let t = beta.iter().zip(mean).zip(&s).map(|((&b, &m), &s)| b - m * s).collect();
    (s, t)
}

/// Inference mode: `y = (x − μ)/√(σ² + ε)·γ + β` with the running statistics.
#[allow(clippy::too_many_arguments)]
pub fn eval_forward(
    x: &[f64],
    n: usize,
    c: usize,
    hw: usize,
    gamma: &[f64],
    beta: &[f64],
    mean: &[f64],
    var: &[f64],
    eps: f64,
) -> Vec<f64> {
    assert_eq!(x.len(), n * c * hw);
    per_element(x, c, hw, |ch, v| (v - mean[ch]) / (var[ch] + eps).sqrt() * gamma[ch] + beta[ch])
}

/// A training-mode forward's results.
#[derive(Debug, Clone)]
pub struct TrainForward {
    pub y: Vec<f64>,
    /// Batch mean per channel.
    pub mean: Vec<f64>,
    /// `1/√(σ² + ε)` with the biased batch variance σ².
    pub invstd: Vec<f64>,
    /// The unbiased batch variance, `σ²·M/(M − 1)`: what the running variance is updated with.
    pub var_unbiased: Vec<f64>,
}

/// Training mode: batch statistics over the `M = n·hw` values of each channel.
pub fn train_forward(x: &[f64], n: usize, c: usize, hw: usize, gamma: &[f64], beta: &[f64], eps: f64) -> TrainForward {
    assert_eq!(x.len(), n * c * hw);
    let m = (n * hw) as f64;
    let mean: Vec<f64> = (0..c).map(|ch| channel(x, n, c, hw, ch).sum::<f64>() / m).collect();
    let var: Vec<f64> = (0..c).map(|ch| channel(x, n, c, hw, ch).map(|v| (v - mean[ch]).powi(2)).sum::<f64>() / m).collect();
    let invstd: Vec<f64> = var.iter().map(|&v| 1.0 / (v + eps).sqrt()).collect();
    let y = per_element(x, c, hw, |ch, v| (v - mean[ch]) * invstd[ch] * gamma[ch] + beta[ch]);
    let var_unbiased = var.iter().map(|&v| v * m / (m - 1.0)).collect();
    TrainForward { y, mean, invstd, var_unbiased }
}

/// PyTorch's running-statistics update: `running = (1 − momentum)·running + momentum·batch`.
pub fn update_running(running: &mut [f64], batch: &[f64], momentum: f64) {
    for (r, &b) in running.iter_mut().zip(batch) {
        *r = (1.0 - momentum) * *r + momentum * b;
    }
}

/// `(dx, dγ, dβ)` of a BN whose output gradient is `dy`, with statistics `mean`, `invstd`.
///
/// Inference mode (`training` false; `mean`, `invstd` from the running statistics): the
/// statistics are constants, `dx = dy·γ·invstd`. Training mode (the batch's): they depend on x,
/// `dx = γ·invstd·(dy − Σdy/M − x̂·Σ(dy·x̂)/M)`. Both: `dβ = Σ dy`, `dγ = Σ dy·x̂`.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    dy: &[f64],
    x: &[f64],
    n: usize,
    c: usize,
    hw: usize,
    gamma: &[f64],
    mean: &[f64],
    invstd: &[f64],
    training: bool,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let m = (n * hw) as f64;
    let xhat = per_element(x, c, hw, |ch, v| (v - mean[ch]) * invstd[ch]);
    let dbeta: Vec<f64> = (0..c).map(|ch| channel(dy, n, c, hw, ch).sum()).collect();
    let dgamma: Vec<f64> = (0..c).map(|ch| channel(dy, n, c, hw, ch).zip(channel(&xhat, n, c, hw, ch)).map(|(g, h)| g * h).sum()).collect();
    let dx = dy
        .iter()
        .zip(&xhat)
        .enumerate()
        .map(|(i, (&g, &h))| {
            let ch = (i / hw) % c;
            if training { gamma[ch] * invstd[ch] * (g - dbeta[ch] / m - h * dgamma[ch] / m) } else { g * gamma[ch] * invstd[ch] }
        })
        .collect();
    (dx, dgamma, dbeta)
}
