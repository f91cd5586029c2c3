//! Optimizer steps in f64, written from PyTorch's `_single_tensor_sgd` / `_single_tensor_adam`
//! (torch.optim.SGD, Adam, AdamW without `maximize`, `amsgrad`, `foreach`).

/// SGD hyper-parameters (f64 copies of [`crate::kernels::optim::SgdConfig`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sgd {
    pub lr: f64,
    pub momentum: f64,
    pub dampening: f64,
    pub weight_decay: f64,
    pub nesterov: bool,
}

/// Adam / AdamW hyper-parameters (f64 copies of [`crate::kernels::optim::AdamConfig`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Adam {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// AdamW
    pub decoupled: bool,
}

/// One SGD step `t` (t ≥ 1) in place. `buf` is the momentum buffer (unused without momentum);
/// on step 1 it is overwritten with the gradient, as PyTorch creates it.
pub fn sgd_step(p: &mut [f64], grad: &[f64], buf: &mut [f64], c: &Sgd, t: u32) {
    for i in 0..p.len() {
        let mut g = grad[i];
        if c.weight_decay != 0.0 {
            g += c.weight_decay * p[i];
        }
        if c.momentum != 0.0 {
            buf[i] = if t == 1 { g } else { c.momentum * buf[i] + (1.0 - c.dampening) * g };
            g = if c.nesterov { g + c.momentum * buf[i] } else { buf[i] };
        }
        p[i] -= c.lr * g;
    }
}

/// One Adam / AdamW step `t` (t ≥ 1) in place, updating the moments `m` and `v`.
pub fn adam_step(p: &mut [f64], grad: &[f64], m: &mut [f64], v: &mut [f64], c: &Adam, t: u32) {
    let bc1 = 1.0 - c.beta1.powi(t as i32);
    let bc2 = 1.0 - c.beta2.powi(t as i32);
    let step_size = c.lr / bc1;
    for i in 0..p.len() {
        let mut g = grad[i];
        if c.weight_decay != 0.0 {
            if c.decoupled {
                p[i] *= 1.0 - c.lr * c.weight_decay;
            } else {
                g += c.weight_decay * p[i];
            }
        }
        m[i] = c.beta1 * m[i] + (1.0 - c.beta1) * g;
        v[i] = c.beta2 * v[i] + (1.0 - c.beta2) * g * g;
        let denom = v[i].sqrt() / bc2.sqrt() + c.eps;
        p[i] -= step_size * m[i] / denom;
    }
}
