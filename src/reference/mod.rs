//! Plain float64 CPU implementations of every kernel and of a whole network: the specification
//! the GPU is tested against. Written to be obviously right, not fast, and kept independent of
//! the GPU code so the two cannot share a bug. Inputs and outputs are row-major `f64` slices.

pub mod augment;
pub mod conv;
pub mod layers;
pub mod loss;
pub mod metrics;
pub mod network;
pub mod norm;
pub mod optim;
pub mod reduce;

use crate::kernels::{Activation, Transpose};

/// `C[m, n] = op(A)·op(B)`; `a` is `[m, k]` (or `[k, m]` if transposed), `b` is `[k, n]` (or `[n, k]`).
pub fn matmul(a: &[f64], b: &[f64], m: usize, n: usize, k: usize, t: Transpose) -> Vec<f64> {
    let (ta, tb) = match t {
        Transpose::NN => (false, false),
        Transpose::NT => (false, true),
        Transpose::TN => (true, false),
        Transpose::TT => (true, true),
    };
    let mut c = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = 0.0;
            for p in 0..k {
                let av = if ta { a[p * m + i] } else { a[i * k + p] };
                let bv = if tb { b[j * k + p] } else { b[p * n + j] };
                s += av * bv;
            }
            c[i * n + j] = s;
        }
    }
    c
}

/// `x[r, c] += bias[c]`.
pub fn bias_add(x: &mut [f64], bias: &[f64]) {
    let cols = bias.len();
    for (i, v) in x.iter_mut().enumerate() {
        *v += bias[i % cols];
    }
}

/// The logistic function, stable for large |x|.
pub fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

const GELU_K: f64 = 0.797_884_560_802_865_4; // √(2/π)
const GELU_C: f64 = 0.044715;

/// f(x).
pub fn activate(act: Activation, x: f64) -> f64 {
    match act {
        Activation::Identity => x,
        Activation::Relu => x.max(0.0),
        Activation::LeakyRelu(a) => {
            if x > 0.0 {
                x
            } else {
                a as f64 * x
            }
        }
        Activation::Sigmoid => sigmoid(x),
        Activation::Tanh => x.tanh(),
        Activation::Gelu => 0.5 * x * (1.0 + (GELU_K * (x + GELU_C * x * x * x)).tanh()),
        Activation::Relu6 => x.clamp(0.0, 6.0),
        Activation::Silu => x * sigmoid(x),
        Activation::Hardswish => x * (x + 3.0).clamp(0.0, 6.0) / 6.0,
        Activation::Hardsigmoid => (x + 3.0).clamp(0.0, 6.0) / 6.0,
    }
}

/// f'(z), from the pre-activation z.
pub fn activate_grad(act: Activation, z: f64) -> f64 {
    match act {
        Activation::Identity => 1.0,
        Activation::Relu => {
            if z > 0.0 {
                1.0
            } else {
                0.0
            }
        }
        Activation::LeakyRelu(a) => {
            if z > 0.0 {
                1.0
            } else {
                a as f64
            }
        }
        Activation::Sigmoid => {
            let s = sigmoid(z);
            s * (1.0 - s)
        }
        Activation::Tanh => 1.0 - z.tanh().powi(2),
        Activation::Gelu => {
            let u = GELU_K * (z + GELU_C * z * z * z);
            let t = u.tanh();
            0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * GELU_K * (1.0 + 3.0 * GELU_C * z * z)
        }
        // the values at the kinks are PyTorch's (hardtanh_backward, hardswish_backward,
        // hardsigmoid_backward in aten/src/ATen/native/cpu/Activation.cpp; hardswish as of
        // pytorch/pytorch#148049), checked against torch 2.15 in tests/kernel_elementwise.rs
        Activation::Relu6 => {
            if z > 0.0 && z < 6.0 {
                1.0
            } else {
                0.0
            }
        }
        Activation::Silu => sigmoid(z) * (1.0 + z * sigmoid(-z)),
        Activation::Hardswish => {
            if z <= -3.0 {
                0.0
            } else if z < 3.0 {
                z / 3.0 + 0.5
            } else {
                1.0
            }
        }
        Activation::Hardsigmoid => {
            if z > -3.0 && z < 3.0 {
                1.0 / 6.0
            } else {
                0.0
            }
        }
    }
}
