//! Float64 references of the parameter-free layers: dropout (its mask), adaptive average
//! pooling, the channel-last permute, channel concatenation and the channel-wise
//! (squeeze-excite) multiply. Rows are examples; spatial rows are `[C, H, W]` flattened.

/// One step of Chris Wellons' `lowbias32` integer mix (the GPU's `mix32` in layers.wgsl).
fn lowbias32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^= x >> 16;
    x
}

/// Whether dropout keeps feature `j` of the row at position `q` of the epoch's order at
/// optimizer step `step` under `seed`, for drop probability `p`: the 24 high bits of the chained
/// hash of (seed's low word, seed's high word, step, q, j) are at least `round(p·2²⁴)`.
pub fn dropout_keep(seed: u64, step: u32, q: u32, j: u32, p: f64) -> bool {
    (seeded_hash(seed, step, q, j) >> 8) >= dropout_threshold(p)
}

/// `lowbias32` chained over the seed's two words, the step, the position `q` and the draw `k`:
/// the hash behind dropout's masks and the augmentation's draws (`seeded_hash` in common.wgsl).
pub(crate) fn seeded_hash(seed: u64, step: u32, q: u32, k: u32) -> u32 {
    let mut h = lowbias32(seed as u32);
    h = lowbias32(h ^ (seed >> 32) as u32);
    h = lowbias32(h ^ step);
    h = lowbias32(h ^ q);
    lowbias32(h ^ k)
}

/// `round(p·2²⁴)`, the 24-bit threshold a hash must reach to keep an element.
pub fn dropout_threshold(p: f64) -> u32 {
    (p.clamp(0.0, 1.0) * (1u32 << 24) as f64).round() as u32
}

/// Dropout's multiplier for every element of `rows` rows of `features` starting at position
/// `offset` of the epoch's order: `1/(1 − p)` where kept, 0 where dropped (0 everywhere for
/// `p = 1`, as PyTorch). The forward is `y = x·mask`, the backward `dx = dy·mask`.
pub fn dropout_mask(seed: u64, step: u32, offset: u32, rows: usize, features: usize, p: f64) -> Vec<f64> {
    let scale = if p >= 1.0 { 0.0 } else { 1.0 / (1.0 - p) };
    (0..rows * features)
        .map(|i| {
            let (r, j) = (i / features, i % features);
            if dropout_keep(seed, step, offset + r as u32, j as u32, p) { scale } else { 0.0 }
        })
        .collect()
}

/// The window PyTorch's adaptive pooling gives output index `o` of `out` along an axis of `size`:
/// `[⌊o·size/out⌋, ⌈(o+1)·size/out⌉)`.
pub fn adaptive_window(o: usize, size: usize, out: usize) -> (usize, usize) {
    ((o * size) / out, ((o + 1) * size).div_ceil(out))
}

/// `AdaptiveAvgPool2d((oh, ow))` over `[n, c, h, w]`: `[n, c, oh, ow]`.
pub fn adaptive_avg_pool2d_forward(n: usize, c: usize, h: usize, w: usize, oh: usize, ow: usize, x: &[f64]) -> Vec<f64> {
    let mut y = vec![0.0; n * c * oh * ow];
    for plane in 0..n * c {
        for oy in 0..oh {
            let (y0, y1) = adaptive_window(oy, h, oh);
            for ox in 0..ow {
                let (x0, x1) = adaptive_window(ox, w, ow);
                let mut s = 0.0;
                for iy in y0..y1 {
                    for ix in x0..x1 {
                        s += x[plane * h * w + iy * w + ix];
                    }
                }
                y[plane * oh * ow + oy * ow + ox] = s / ((y1 - y0) * (x1 - x0)) as f64;
            }
        }
    }
    y
}

/// The gradient of [`adaptive_avg_pool2d_forward`]: each output's gradient spread evenly over its
/// window (a scatter; the GPU gathers).
pub fn adaptive_avg_pool2d_backward(n: usize, c: usize, h: usize, w: usize, oh: usize, ow: usize, dy: &[f64]) -> Vec<f64> {
    let mut dx = vec![0.0; n * c * h * w];
    for plane in 0..n * c {
        for oy in 0..oh {
            let (y0, y1) = adaptive_window(oy, h, oh);
            for ox in 0..ow {
                let (x0, x1) = adaptive_window(ox, w, ow);
                let g = dy[plane * oh * ow + oy * ow + ox] / ((y1 - y0) * (x1 - x0)) as f64;
                for iy in y0..y1 {
                    for ix in x0..x1 {
                        dx[plane * h * w + iy * w + ix] += g;
                    }
                }
            }
        }
    }
    dx
}

/// `x.permute(0, 2, 3, 1).reshape(n, -1)`: rows `[c, h, w]` to rows `[h, w, c]`.
pub fn channel_last(n: usize, c: usize, h: usize, w: usize, x: &[f64]) -> Vec<f64> {
    let mut y = vec![0.0; x.len()];
    for r in 0..n {
        for ch in 0..c {
            for s in 0..h * w {
                y[r * c * h * w + s * c + ch] = x[r * c * h * w + ch * h * w + s];
            }
        }
    }
    y
}

/// The gradient of [`channel_last`]: rows `[h, w, c]` back to `[c, h, w]`.
pub fn channel_last_backward(n: usize, c: usize, h: usize, w: usize, dy: &[f64]) -> Vec<f64> {
    let mut dx = vec![0.0; dy.len()];
    for r in 0..n {
        for ch in 0..c {
            for s in 0..h * w {
                dx[r * c * h * w + ch * h * w + s] = dy[r * c * h * w + s * c + ch];
            }
        }
    }
    dx
}

/// `torch.cat(parts, dim=1)` of `n` rows: part `k` is `[n, channels[k], h, w]` (any per-channel
/// size `plane = h·w`).
pub fn concat(n: usize, plane: usize, channels: &[usize], parts: &[&[f64]]) -> Vec<f64> {
    let total: usize = channels.iter().sum();
    let mut y = Vec::with_capacity(n * total * plane);
    for r in 0..n {
        for (k, &c) in channels.iter().enumerate() {
            y.extend_from_slice(&parts[k][r * c * plane..(r + 1) * c * plane]);
        }
    }
    y
}

/// The gradient of [`concat`]: `dy`'s slice of each part.
pub fn concat_backward(n: usize, plane: usize, channels: &[usize], dy: &[f64]) -> Vec<Vec<f64>> {
    let total: usize = channels.iter().sum();
    let mut out: Vec<Vec<f64>> = channels.iter().map(|&c| Vec::with_capacity(n * c * plane)).collect();
    for r in 0..n {
        let mut at = r * total * plane;
        for (k, &c) in channels.iter().enumerate() {
            out[k].extend_from_slice(&dy[at..at + c * plane]);
            at += c * plane;
        }
    }
    out
}

/// `y[r, c, s] = x[r, c, s] · scale[r, c]` (squeeze-excite's `x * s`), `plane = h·w`.
pub fn channel_mul(plane: usize, x: &[f64], scale: &[f64]) -> Vec<f64> {
    x.iter().enumerate().map(|(i, &v)| v * scale[i / plane]).collect()
}

/// The gradients of [`channel_mul`]: `(dx, dscale)`, `dx = dy·scale`,
/// `dscale[r, c] = Σ_s dy[r, c, s]·x[r, c, s]`.
pub fn channel_mul_backward(plane: usize, x: &[f64], scale: &[f64], dy: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let dx = channel_mul(plane, dy, scale);
    let mut ds = vec![0.0; scale.len()];
    for (i, (&g, &v)) in dy.iter().zip(x).enumerate() {
        ds[i / plane] += g * v;
    }
    (dx, ds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adaptive_windows_are_pytorchs() {
        // AdaptiveAvgPool2d(3) over 5: [0, 2), [1, 4), [3, 5)
        let w: Vec<_> = (0..3).map(|o| adaptive_window(o, 5, 3)).collect();
        assert_eq!(w, [(0, 2), (1, 4), (3, 5)]);
        // to 1: the whole axis; to the same size: single elements
        assert_eq!(adaptive_window(0, 7, 1), (0, 7));
        assert!((0..4).all(|o| adaptive_window(o, 4, 4) == (o, o + 1)));
    }

    #[test]
    fn channel_last_is_a_permutation_and_backward_inverts_it() {
        let x: Vec<f64> = (0..2 * 3 * 2 * 2).map(f64::from).collect();
        let y = channel_last(2, 3, 2, 2, &x);
        // row 0, pixel 0: channels 0, 1, 2 at x[0], x[4], x[8]
        assert_eq!(&y[..3], &[0.0, 4.0, 8.0]);
        assert_eq!(channel_last_backward(2, 3, 2, 2, &y), x);
    }

    #[test]
    fn dropout_mask_rate_and_scale() {
        let m = dropout_mask(7, 1, 0, 100, 100, 0.25);
        let kept = m.iter().filter(|&&v| v != 0.0).count();
        assert!((7200..=7800).contains(&kept), "{kept} of 10,000 kept at p = 0.25");
        assert!(m.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.75).abs() < 1e-15));
        assert!(dropout_mask(7, 1, 0, 3, 5, 0.0).iter().all(|&v| v == 1.0));
        assert!(dropout_mask(7, 1, 0, 3, 5, 1.0).iter().all(|&v| v == 0.0));
    }
}
