//! A float64 reference network: forward, loss and backward by the textbook formulas, used to
//! check the GPU trainer's gradients (against finite differences of this) and trajectories.

use super::{activate, activate_grad, matmul};
use crate::kernels::{Activation, Transpose};

/// One dense layer in f64: W `[outputs, inputs]`, b `[outputs]`.
#[derive(Debug, Clone)]
pub struct RefLayer {
    pub inputs: usize,
    pub outputs: usize,
    pub activation: Activation,
    pub w: Vec<f64>,
    pub b: Vec<f64>,
}

/// The loss at the top of the reference network.
#[derive(Debug, Clone)]
pub enum RefLoss {
    /// Softmax cross-entropy with these class targets.
    Softmax(Vec<u32>),
    /// Per-label BCE with these `[m, k]` targets (NaN = unknown), default reduction
    /// (sum over labels, mean over examples).
    Bce(Vec<f64>),
}

/// Per layer: (dW `[out, in]`, db `[out]`).
pub type RefGrads = Vec<(Vec<f64>, Vec<f64>)>;

/// Pre-activations and outputs of every layer for a batch of `m` rows.
pub fn forward(layers: &[RefLayer], x: &[f64], m: usize) -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
    let mut zs = Vec::new();
    let mut as_ = Vec::new();
    let mut input = x.to_vec();
    for l in layers {
        let mut z = matmul(&input, &l.w, m, l.outputs, l.inputs, Transpose::NT);
        super::bias_add(&mut z, &l.b);
        let a: Vec<f64> = z.iter().map(|&v| activate(l.activation, v)).collect();
        zs.push(z);
        input = a.clone();
        as_.push(a);
    }
    (zs, as_)
}

/// The batch loss (sum of the loss kernel's `loss_rows`) and the logits' gradient.
pub fn loss(logits: &[f64], m: usize, k: usize, target: &RefLoss) -> (f64, Vec<f64>) {
    match target {
        RefLoss::Softmax(t) => {
            let (rows, d) = super::loss::softmax_xent(logits, t, m, k);
            (rows.iter().sum(), d)
        }
        RefLoss::Bce(y) => {
            let (rows, d) = super::loss::bce_logits(logits, y, m, k, None, None, crate::kernels::loss::BceReduction::SumLabelsMeanExamples);
            (rows.iter().sum(), d)
        }
    }
}

/// Loss and the gradients `(dW, db)` of every layer.
pub fn loss_and_grads(layers: &[RefLayer], x: &[f64], m: usize, target: &RefLoss) -> (f64, RefGrads) {
    let (zs, as_) = forward(layers, x, m);
    let top = layers.last().expect("a network has layers");
    let (l, dlogits) = loss(as_.last().expect("outputs"), m, top.outputs, target);
    let mut grads = vec![(Vec::new(), Vec::new()); layers.len()];
    let mut da = dlogits;
    for i in (0..layers.len()).rev() {
        let layer = &layers[i];
        let dz: Vec<f64> = da.iter().zip(&zs[i]).map(|(&g, &z)| g * activate_grad(layer.activation, z)).collect();
        let input = if i == 0 { x } else { &as_[i - 1] };
        let dw = matmul(&dz, input, layer.outputs, layer.inputs, m, Transpose::TN);
        let mut db = vec![0.0; layer.outputs];
        for r in 0..m {
            for c in 0..layer.outputs {
                db[c] += dz[r * layer.outputs + c];
            }
        }
        grads[i] = (dw, db);
        if i > 0 {
            da = matmul(&dz, &layer.w, m, layer.inputs, layer.outputs, Transpose::NN);
        }
    }
    (l, grads)
}
