//! A float64 reference network: forward, loss and backward by the textbook formulas for every
//! layer kind, used to check the GPU trainer's gradients (against finite differences of this)
//! and trajectories.

use super::{activate, activate_grad, conv as rconv, layers as rlayers, matmul, norm as rnorm};
use crate::kernels::{Activation, Transpose};
use crate::nn::{DenseSpec, LayerSpec};

/// One layer in f64: its spec and, for layers with parameters, weight and bias in PyTorch's
/// layouts (`[out, in]`, `[out, in, kh, kw]`). A dropout layer has no parameters; its `w` is the
/// mask made explicit, the multiplier of every element of the batch (`[m, features]`: 0 or
/// `1/(1 − p)`, [`crate::reference::layers::dropout_mask`]), or empty for evaluation (the
/// identity).
#[derive(Debug, Clone)]
pub struct RefLayer {
    pub spec: LayerSpec,
    pub w: Vec<f64>,
    pub b: Vec<f64>,
    /// A BatchNorm's running mean then running variance (`2·C`); empty for other layers.
    pub running: Vec<f64>,
}

/// Which statistics the reference's BatchNorm layers normalise with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RefNorm {
    /// The running statistics (inference mode, PyTorch's `model.eval()`).
    #[default]
    Running,
    /// The batch's (training mode, `model.train()`).
    Batch,
}

impl RefLayer {
    /// A layer with these parameters; a BatchNorm gets PyTorch's initial running statistics
    /// (mean 0, variance 1).
    pub fn new(spec: LayerSpec, w: Vec<f64>, b: Vec<f64>) -> RefLayer {
        let running = match spec {
            LayerSpec::BatchNorm(n) => [vec![0.0; n.channels], vec![1.0; n.channels]].concat(),
            _ => Vec::new(),
        };
        RefLayer { spec, w, b, running }
    }

    /// A dense layer.
    pub fn dense(inputs: usize, outputs: usize, activation: Activation, w: Vec<f64>, b: Vec<f64>) -> RefLayer {
        RefLayer::new(LayerSpec::Dense(DenseSpec { inputs, outputs, activation }), w, b)
    }
    pub fn outputs(&self) -> usize {
        self.spec.outputs()
    }
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

/// Per layer: (dW, db); empty for layers without parameters.
pub type RefGrads = Vec<(Vec<f64>, Vec<f64>)>;

/// The layer's pre-activation output for a batch of `m` rows reading `inputs` (one, or two for
/// an add).
fn pre_activation(l: &RefLayer, inputs: &[&[f64]], m: usize, norm: RefNorm) -> Vec<f64> {
    let input = inputs[0];
    match l.spec {
        LayerSpec::Dense(d) => {
            let mut z = matmul(input, &l.w, m, d.outputs, d.inputs, Transpose::NT);
            super::bias_add(&mut z, &l.b);
            z
        }
        LayerSpec::Conv2d(c) => rconv::conv2d_forward(&c.shape(m), input, &l.w, c.bias.then_some(&l.b[..])),
        LayerSpec::MaxPool2d(p) => rconv::max_pool2d_forward(&p.shape(m), input).0,
        LayerSpec::AvgPool2d(p) => rconv::avg_pool2d_forward(&p.shape(m), input),
        LayerSpec::GlobalAvgPool { channels, height, width } => rconv::global_avg_pool_forward(m, channels, height, width, input),
        LayerSpec::Add(_) => input.iter().zip(inputs[1]).map(|(a, b)| a + b).collect(),
        LayerSpec::BatchNorm(n) => {
            let (c, hw) = (n.channels, n.height * n.width);
            match norm {
                RefNorm::Running => {
                    let (mean, var) = l.running.split_at(c);
                    rnorm::eval_forward(input, m, c, hw, &l.w, &l.b, mean, var, n.eps as f64)
                }
                RefNorm::Batch => rnorm::train_forward(input, m, c, hw, &l.w, &l.b, n.eps as f64).y,
            }
        }
        LayerSpec::Dropout(_) if l.w.is_empty() => input.to_vec(),
        LayerSpec::Dropout(_) => input.iter().zip(&l.w).map(|(x, k)| x * k).collect(),
        LayerSpec::AdaptiveAvgPool2d(a) => {
            rlayers::adaptive_avg_pool2d_forward(m, a.channels, a.height, a.width, a.out_height, a.out_width, input)
        }
        LayerSpec::ChannelLast { channels, height, width } => rlayers::channel_last(m, channels, height, width, input),
        LayerSpec::ChannelMul(c) => rlayers::channel_mul(c.height * c.width, input, inputs[1]),
        LayerSpec::Concat(c) => rlayers::concat(m, c.height * c.width, c.part_channels(), inputs),
    }
}

/// The wiring of a chain: layer `i` reads value `i` (the output of layer `i − 1`, the input for
/// layer 0).
pub fn chain(layers: usize) -> Vec<Vec<usize>> {
    (0..layers).map(|i| vec![i]).collect()
}

/// Pre-activations and outputs of every layer of a chain for a batch of `m` rows.
pub fn forward(layers: &[RefLayer], x: &[f64], m: usize) -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
    forward_graph(layers, &chain(layers.len()), x, m)
}

/// Pre-activations and outputs of every layer for a batch of `m` rows, layer `i` reading the
/// values `sources[i]` names: `0` is `x`, `j + 1` the output of layer `j`.
pub fn forward_graph(layers: &[RefLayer], sources: &[Vec<usize>], x: &[f64], m: usize) -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
    forward_graph_norm(layers, sources, x, m, RefNorm::Running)
}

/// [`forward_graph`] with the BatchNorm layers normalising by `norm`'s statistics.
pub fn forward_graph_norm(
    layers: &[RefLayer],
    sources: &[Vec<usize>],
    x: &[f64],
    m: usize,
    norm: RefNorm,
) -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
    let mut zs: Vec<Vec<f64>> = Vec::new();
    let mut as_: Vec<Vec<f64>> = Vec::new();
    for (l, src) in layers.iter().zip(sources) {
        let inputs: Vec<&[f64]> = src.iter().map(|&v| if v == 0 { x } else { as_[v - 1].as_slice() }).collect();
        let z = pre_activation(l, &inputs, m, norm);
        let a: Vec<f64> = z.iter().map(|&v| activate(l.spec.activation(), v)).collect();
        zs.push(z);
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

/// Loss and the gradients of every layer of a chain.
pub fn loss_and_grads(layers: &[RefLayer], x: &[f64], m: usize, target: &RefLoss) -> (f64, RefGrads) {
    loss_and_grads_graph(layers, &chain(layers.len()), x, m, target)
}

/// Loss and the gradients of every layer of a network wired by `sources` (see
/// [`forward_graph`]): the gradient of a value read by several layers is the sum of what each
/// reader passes back.
pub fn loss_and_grads_graph(layers: &[RefLayer], sources: &[Vec<usize>], x: &[f64], m: usize, target: &RefLoss) -> (f64, RefGrads) {
    loss_and_grads_graph_norm(layers, sources, x, m, target, RefNorm::Running)
}

/// [`loss_and_grads_graph`] with the BatchNorm layers normalising by `norm`'s statistics (with
/// the batch's, their gradient flows through the mean and variance too).
pub fn loss_and_grads_graph_norm(
    layers: &[RefLayer],
    sources: &[Vec<usize>],
    x: &[f64],
    m: usize,
    target: &RefLoss,
    norm: RefNorm,
) -> (f64, RefGrads) {
    let (zs, as_) = forward_graph_norm(layers, sources, x, m, norm);
    let top = layers.last().expect("a network has layers");
    let (l, dlogits) = loss(as_.last().expect("outputs"), m, top.outputs(), target);
    let grads = backward(layers, sources, x, m, norm, &zs, &as_, vec![(layers.len() - 1, dlogits)]);
    (l, grads)
}

/// The loss of one head of a network of several heads (see [`loss_and_grads_heads`]).
#[derive(Debug, Clone)]
pub enum RefHeadLoss {
    /// Softmax cross-entropy over the rows whose class is not [`IGNORE_CLASS`](crate::kernels::loss::IGNORE_CLASS), their mean.
    Classes(Vec<u32>),
    /// Per-label BCE with these `[m, k]` targets (NaN = unknown), each label's positive weight
    /// (`None`: 1), under `reduction`.
    Labels { y: Vec<f64>, pos_weight: Option<Vec<f64>>, reduction: crate::kernels::loss::BceReduction },
    /// MSE, L1 or Huber over the known (not NaN) `[m, k]` targets, their mean.
    Regression(Vec<f64>, crate::kernels::loss::RegressionLoss),
}

/// One head of a network of several heads: the layer whose output it scores, its loss weight and
/// its loss.
#[derive(Debug, Clone)]
pub struct RefHead {
    pub output: usize,
    pub weight: f64,
    pub loss: RefHeadLoss,
}

/// One head's weighted batch loss `w·L` and its gradient w.r.t. the head's outputs `[m, k]`.
pub fn head_loss(outputs: &[f64], m: usize, k: usize, weight: f64, loss: &RefHeadLoss) -> (f64, Vec<f64>) {
    use crate::kernels::loss::MaskedReduction;
    let (rows, grad) = match loss {
        RefHeadLoss::Classes(t) => super::loss::softmax_xent_masked(outputs, t, m, k, MaskedReduction::MeanKnown, weight),
        RefHeadLoss::Labels { y, pos_weight, reduction } => {
            let w = vec![weight; k];
            super::loss::bce_logits(outputs, y, m, k, pos_weight.as_deref(), Some(&w), *reduction)
        }
        RefHeadLoss::Regression(y, kind) => super::loss::regression(outputs, y, m, k, *kind, MaskedReduction::MeanKnown, weight),
    };
    (rows.iter().sum(), grad)
}

/// The loss `Σ_t w_t·L_t` of a network of several heads wired by `sources` and the gradients of
/// every layer: each head's gradient flows back from its output layer, and the trunk's output,
/// read by every head, gets the sum of what they pass back. Also each head's `w·L`.
pub fn loss_and_grads_heads(
    layers: &[RefLayer],
    sources: &[Vec<usize>],
    x: &[f64],
    m: usize,
    heads: &[RefHead],
) -> (f64, Vec<f64>, RefGrads) {
    let (zs, as_) = forward_graph_norm(layers, sources, x, m, RefNorm::Running);
    let mut seeds = Vec::new();
    let mut per_head = Vec::new();
    for h in heads {
        let (l, d) = head_loss(&as_[h.output], m, layers[h.output].outputs(), h.weight, &h.loss);
        per_head.push(l);
        seeds.push((h.output, d));
    }
    let grads = backward(layers, sources, x, m, RefNorm::Running, &zs, &as_, seeds);
    (per_head.iter().sum(), per_head, grads)
}

/// Uncertainty weighting (Kendall, Gal & Cipolla 2018, `crate::train::HeadWeighting::Uncertainty`)
/// of [`loss_and_grads_heads`]: with `l_t = w_t·L_t` each head's weighted loss and `s_t =
/// log_vars[t]`, the loss `Σ_t exp(−s_t)·l_t + s_t` over the heads of weight > 0, every layer's
/// gradient (each head's seeded by `exp(−s_t)·∂l_t/∂outputs`), each head's `l_t`, and
/// `∂L/∂s_t = 1 − exp(−s_t)·l_t` (0 for a head of weight 0, which is not in the loss).
pub fn loss_and_grads_heads_uncertainty(
    layers: &[RefLayer],
    sources: &[Vec<usize>],
    x: &[f64],
    m: usize,
    heads: &[RefHead],
    log_vars: &[f64],
) -> (f64, Vec<f64>, RefGrads, Vec<f64>) {
    assert_eq!(heads.len(), log_vars.len(), "one log-variance per head");
    let (zs, as_) = forward_graph_norm(layers, sources, x, m, RefNorm::Running);
    let (mut seeds, mut per_head, mut dlog_var) = (Vec::new(), Vec::new(), Vec::new());
    let mut total = 0.0;
    for (h, &s) in heads.iter().zip(log_vars) {
        let (l, d) = head_loss(&as_[h.output], m, layers[h.output].outputs(), h.weight, &h.loss);
        let active = h.weight > 0.0;
        let scale = (-s).exp();
        if active {
            total += scale * l + s;
        }
        per_head.push(l);
        dlog_var.push(if active { 1.0 - scale * l } else { 0.0 });
        seeds.push((h.output, d.iter().map(|g| g * scale).collect()));
    }
    let grads = backward(layers, sources, x, m, RefNorm::Running, &zs, &as_, seeds);
    (total, per_head, grads, dlog_var)
}

/// Backward from the gradients `seeds` of the outputs of some layers (`(layer, d output)`).
#[allow(clippy::too_many_arguments)]
fn backward(
    layers: &[RefLayer],
    sources: &[Vec<usize>],
    x: &[f64],
    m: usize,
    norm: RefNorm,
    zs: &[Vec<f64>],
    as_: &[Vec<f64>],
    seeds: Vec<(usize, Vec<f64>)>,
) -> RefGrads {
    let mut grads = vec![(Vec::new(), Vec::new()); layers.len()];
    // the gradient of every value: the input's, then each layer's output
    let mut dvalues: Vec<Vec<f64>> = std::iter::once(vec![0.0; x.len()]).chain(as_.iter().map(|a| vec![0.0; a.len()])).collect();
    for (layer, d) in seeds {
        for (g, d) in dvalues[layer + 1].iter_mut().zip(d) {
            *g += d;
        }
    }
    for i in (0..layers.len()).rev() {
        let layer = &layers[i];
        let da = std::mem::take(&mut dvalues[i + 1]);
        let dz: Vec<f64> = da.iter().zip(&zs[i]).map(|(&g, &z)| g * activate_grad(layer.spec.activation(), z)).collect();
        let v = sources[i][0];
        let value = |v: usize| -> &[f64] { if v == 0 { x } else { &as_[v - 1] } };
        let input: &[f64] = value(v);
        // layers reading several values: the gradients of the others (the first's is `dx`)
        let mut more: Vec<Vec<f64>> = Vec::new();
        let dx = match layer.spec {
            LayerSpec::Dense(d) => {
                let dw = matmul(&dz, input, d.outputs, d.inputs, m, Transpose::TN);
                let mut db = vec![0.0; d.outputs];
                for r in 0..m {
                    for c in 0..d.outputs {
                        db[c] += dz[r * d.outputs + c];
                    }
                }
                grads[i] = (dw, db);
                matmul(&dz, &layer.w, m, d.inputs, d.outputs, Transpose::NN)
            }
            LayerSpec::Conv2d(c) => {
                let g = rconv::conv2d_backward(&c.shape(m), input, &layer.w, &dz);
                grads[i] = (g.dw, if c.bias { g.db } else { Vec::new() });
                g.dx
            }
            LayerSpec::MaxPool2d(p) => {
                let (_, argmax) = rconv::max_pool2d_forward(&p.shape(m), input);
                rconv::max_pool2d_backward(&p.shape(m), &dz, &argmax)
            }
            LayerSpec::AvgPool2d(p) => rconv::avg_pool2d_backward(&p.shape(m), &dz),
            LayerSpec::GlobalAvgPool { channels, height, width } => rconv::global_avg_pool_backward(m, channels, height, width, &dz),
            LayerSpec::Add(_) => {
                // the second summand's gradient is dz too
                more.push(dz.clone());
                dz.clone()
            }
            LayerSpec::BatchNorm(n) => {
                let (c, hw, eps) = (n.channels, n.height * n.width, n.eps as f64);
                let (mean, invstd) = match norm {
                    RefNorm::Running => {
                        let (mean, var) = layer.running.split_at(c);
                        (mean.to_vec(), var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect())
                    }
                    RefNorm::Batch => {
                        let f = rnorm::train_forward(input, m, c, hw, &layer.w, &layer.b, eps);
                        (f.mean, f.invstd)
                    }
                };
                let (dx, dgamma, dbeta) = rnorm::backward(&dz, input, m, c, hw, &layer.w, &mean, &invstd, norm == RefNorm::Batch);
                grads[i] = (dgamma, dbeta);
                dx
            }
            LayerSpec::Dropout(_) if layer.w.is_empty() => dz.clone(),
            LayerSpec::Dropout(_) => dz.iter().zip(&layer.w).map(|(g, k)| g * k).collect(),
            LayerSpec::AdaptiveAvgPool2d(a) => {
                rlayers::adaptive_avg_pool2d_backward(m, a.channels, a.height, a.width, a.out_height, a.out_width, &dz)
            }
            LayerSpec::ChannelLast { channels, height, width } => rlayers::channel_last_backward(m, channels, height, width, &dz),
            LayerSpec::ChannelMul(c) => {
                let (dx, ds) = rlayers::channel_mul_backward(c.height * c.width, input, value(sources[i][1]), &dz);
                more.push(ds);
                dx
            }
            LayerSpec::Concat(c) => {
                let mut parts = rlayers::concat_backward(m, c.height * c.width, c.part_channels(), &dz).into_iter();
                let first = parts.next().unwrap_or_default();
                more.extend(parts);
                first
            }
        };
        for (&v, d) in sources[i].iter().zip(std::iter::once(&dx).chain(&more)) {
            for (g, d) in dvalues[v].iter_mut().zip(d) {
                *g += d;
            }
        }
    }
    grads
}
