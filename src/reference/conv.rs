//! Float64 references for `shaders/conv.wgsl` and `shaders/pool.wgsl`: convolution, max/average
//! pooling and global average pooling, forward and backward, NCHW, as plain loops over every
//! output and tap.
//! The backward passes scatter (each output adds into the inputs it read), the transpose of the
//! forward loop, where the GPU kernels gather; the two forms share no index arithmetic.

use crate::kernels::Activation;
use crate::kernels::conv::{Conv2dShape, Pool2dShape};

/// The index of `x[n, c, iy, ix]` in an `[N, C, H, W]` tensor (`chw` = (C, H, W)), `None` in the
/// padding (iy, ix signed).
fn at(chw: (usize, usize, usize), n: usize, c: usize, iy: isize, ix: isize) -> Option<usize> {
    let (cs, h, w) = chw;
    if iy < 0 || ix < 0 || iy as usize >= h || ix as usize >= w {
        return None;
    }
    Some(((n * cs + c) * h + iy as usize) * w + ix as usize)
}

/// The pre-activation output `z[n, o, oy, ox] = b[o] + Σ_{c, ky, kx} w[o, c, ky, kx] · x[n,
/// g·C/G + c, oy·SH + ky − PH, ox·SW + kx − PW]` (zero outside the image), c over the `C/G`
/// input channels of o's group g = o / (O/G).
pub fn conv2d_forward(s: &Conv2dShape, x: &[f64], w: &[f64], b: Option<&[f64]>) -> Vec<f64> {
    let (oh, ow) = s.out_hw();
    let mut y = vec![0.0; s.n * s.o * oh * ow];
    for n in 0..s.n {
        for o in 0..s.o {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = b.map_or(0.0, |b| b[o]);
                    let (cg, c_first) = group_inputs(s, o);
                    for c in 0..cg {
                        for ky in 0..s.kh {
                            for kx in 0..s.kw {
                                let iy = (oy * s.sh + ky) as isize - s.ph as isize;
                                let ix = (ox * s.sw + kx) as isize - s.pw as isize;
                                if let Some(i) = at((s.c, s.h, s.w), n, c_first + c, iy, ix) {
                                    acc += w[((o * cg + c) * s.kh + ky) * s.kw + kx] * x[i];
                                }
                            }
                        }
                    }
                    y[((n * s.o + o) * oh + oy) * ow + ox] = acc;
                }
            }
        }
    }
    y
}

/// (input channels per group, the first input channel of output channel `o`'s group).
fn group_inputs(s: &Conv2dShape, o: usize) -> (usize, usize) {
    let (cg, og) = (s.c / s.groups, s.o / s.groups);
    (cg, (o / og) * cg)
}

/// `act(conv2d_forward(...))`.
pub fn conv2d_forward_act(s: &Conv2dShape, x: &[f64], w: &[f64], b: Option<&[f64]>, act: Activation) -> Vec<f64> {
    conv2d_forward(s, x, w, b).into_iter().map(|z| super::activate(act, z)).collect()
}

/// The gradients of a convolution given `dy`, the gradient of the pre-activation output.
#[derive(Debug, Clone, PartialEq)]
pub struct Conv2dGrads {
    pub dx: Vec<f64>,
    pub dw: Vec<f64>,
    pub db: Vec<f64>,
}

/// dx, dw and db: every (output, tap) pair of the forward loop adds `dy · w` to dx and
/// `dy · x` to dw; db sums dy over n, oy, ox.
pub fn conv2d_backward(s: &Conv2dShape, x: &[f64], w: &[f64], dy: &[f64]) -> Conv2dGrads {
    let (oh, ow) = s.out_hw();
    let mut g = Conv2dGrads { dx: vec![0.0; x.len()], dw: vec![0.0; w.len()], db: vec![0.0; s.o] };
    for n in 0..s.n {
        for o in 0..s.o {
            for oy in 0..oh {
                for ox in 0..ow {
                    let d = dy[((n * s.o + o) * oh + oy) * ow + ox];
                    g.db[o] += d;
                    let (cg, c_first) = group_inputs(s, o);
                    for c in 0..cg {
                        for ky in 0..s.kh {
                            for kx in 0..s.kw {
                                let iy = (oy * s.sh + ky) as isize - s.ph as isize;
                                let ix = (ox * s.sw + kx) as isize - s.pw as isize;
                                if let Some(i) = at((s.c, s.h, s.w), n, c_first + c, iy, ix) {
                                    let wi = ((o * cg + c) * s.kh + ky) * s.kw + kx;
                                    g.dx[i] += d * w[wi];
                                    g.dw[wi] += d * x[i];
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    g
}

/// Calls `f(out_index, n, c, oy, ox)` for every output of a pooling, in NCHW order.
fn for_each_output(s: &Pool2dShape, mut f: impl FnMut(usize, usize, usize, usize, usize)) {
    let (oh, ow) = s.out_hw();
    for n in 0..s.n {
        for c in 0..s.c {
            for oy in 0..oh {
                for ox in 0..ow {
                    f(((n * s.c + c) * oh + oy) * ow + ox, n, c, oy, ox);
                }
            }
        }
    }
}

/// The input indices of the window of output (n, c, oy, ox), in row-major window order, padding
/// left out.
fn window(s: &Pool2dShape, n: usize, c: usize, oy: usize, ox: usize) -> Vec<usize> {
    let mut v = Vec::new();
    for ky in 0..s.kh {
        for kx in 0..s.kw {
            let iy = (oy * s.sh + ky) as isize - s.ph as isize;
            let ix = (ox * s.sw + kx) as isize - s.pw as isize;
            if let Some(i) = at((s.c, s.h, s.w), n, c, iy, ix) {
                v.push(i);
            }
        }
    }
    v
}

/// Max pooling: the maximum of each window and its index `iy·W + ix` in the input plane (the
/// first on ties; a NaN wins, the last NaN if several, as PyTorch's CPU kernel:
/// `if (val > maxval || isnan(val))` from maxval = −∞ and the window's first element).
pub fn max_pool2d_forward(s: &Pool2dShape, x: &[f64]) -> (Vec<f64>, Vec<u32>) {
    let (oh, ow) = s.out_hw();
    let mut y = vec![0.0; s.n * s.c * oh * ow];
    let mut arg = vec![0u32; y.len()];
    let plane = s.h * s.w;
    for_each_output(s, |o, n, c, oy, ox| {
        let win = window(s, n, c, oy, ox);
        let mut best = f64::NEG_INFINITY;
        let mut besti = win[0];
        for &i in &win {
            if x[i] > best || x[i].is_nan() {
                best = x[i];
                besti = i;
            }
        }
        y[o] = best;
        arg[o] = (besti % plane) as u32;
    });
    (y, arg)
}

/// The max-pool gradient: each output's dy goes to its argmax.
pub fn max_pool2d_backward(s: &Pool2dShape, dy: &[f64], argmax: &[u32]) -> Vec<f64> {
    let mut dx = vec![0.0; s.n * s.c * s.h * s.w];
    let plane = s.h * s.w;
    for_each_output(s, |o, n, c, _, _| {
        dx[(n * s.c + c) * plane + argmax[o] as usize] += dy[o];
    });
    dx
}

/// The divisor of average-pool window (oy, ox) with the padding counted: its taps inside the
/// padded input `[−PH, H + PB) × [−PW, W + PR)` (PyTorch's `pool_size`), `KH·KW` unless
/// `ceil_mode` lets the window reach past that.
fn avg_divisor(s: &Pool2dShape, oy: usize, ox: usize) -> f64 {
    let taps = |o: usize, stride: usize, k: usize, input: usize, hi: usize| (input + hi).min(o * stride + k) - o * stride;
    // both ends shifted by the leading padding, so the unsigned arithmetic stays non-negative
    let rows = taps(oy, s.sh, s.kh, s.h + s.ph, s.pb);
    let cols = taps(ox, s.sw, s.kw, s.w + s.pw, s.pr);
    (rows * cols) as f64
}

/// Average pooling with the padding counted (`count_include_pad = True`): each window's sum over
/// its input elements divided by the window's taps inside the padded input (`avg_divisor`).
pub fn avg_pool2d_forward(s: &Pool2dShape, x: &[f64]) -> Vec<f64> {
    let (oh, ow) = s.out_hw();
    let mut y = vec![0.0; s.n * s.c * oh * ow];
    for_each_output(s, |o, n, c, oy, ox| {
        y[o] = window(s, n, c, oy, ox).iter().map(|&i| x[i]).sum::<f64>() / avg_divisor(s, oy, ox);
    });
    y
}

/// The average-pool gradient: each output's dy / divisor to every element of its window.
pub fn avg_pool2d_backward(s: &Pool2dShape, dy: &[f64]) -> Vec<f64> {
    let mut dx = vec![0.0; s.n * s.c * s.h * s.w];
    for_each_output(s, |o, n, c, oy, ox| {
        let k = avg_divisor(s, oy, ox);
        for i in window(s, n, c, oy, ox) {
            dx[i] += dy[o] / k;
        }
    });
    dx
}

/// `y[n, c] = mean of x[n, c, :, :]`; x is `[n, c, h, w]`.
pub fn global_avg_pool_forward(n: usize, c: usize, h: usize, w: usize, x: &[f64]) -> Vec<f64> {
    (0..n * c).map(|nc| x[nc * h * w..(nc + 1) * h * w].iter().sum::<f64>() / (h * w) as f64).collect()
}

/// `dx[n, c, h, w] = dy[n, c] / (H·W)`.
pub fn global_avg_pool_backward(n: usize, c: usize, h: usize, w: usize, dy: &[f64]) -> Vec<f64> {
    (0..n * c * h * w).map(|i| dy[i / (h * w)] / (h * w) as f64).collect()
}
