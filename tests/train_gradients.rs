//! Gradient evidence for the whole network: the GPU's backward pass equals float64 central
//! differences of the reference network's loss, for every activation and both losses; and the
//! reference's analytic gradients equal the same differences (so the reference is proven too).
mod common;
use common::*;
use headswap::data::{Dataset, Targets};
use headswap::kernels::Activation;
use headswap::nn::{DenseSpec, HeadKind, Network};
use headswap::reference::network::{RefLayer, RefLoss, forward, loss, loss_and_grads};
use headswap::train::{BceSettings, gradients};

const ACTIVATIONS: [Activation; 10] = [
    Activation::Identity,
    Activation::Relu,
    Activation::LeakyRelu(0.1),
    Activation::Sigmoid,
    Activation::Tanh,
    Activation::Gelu,
    Activation::Relu6,
    Activation::Silu,
    Activation::Hardswish,
    Activation::Hardsigmoid,
];

fn ref_loss(layers: &[RefLayer], x: &[f64], m: usize, t: &RefLoss) -> f64 {
    let (_, a) = forward(layers, x, m);
    loss(a.last().unwrap(), m, layers.last().unwrap().outputs(), t).0
}

fn param(layers: &mut [RefLayer], li: usize, which: usize, j: usize) -> &mut f64 {
    if which == 0 { &mut layers[li].w[j] } else { &mut layers[li].b[j] }
}

/// Central differences (ε = 1e-6) of the reference loss for every value of layer `li`'s weight
/// (`which` 0) or bias (1).
fn finite_differences(layers: &mut [RefLayer], li: usize, which: usize, n: usize, x: &[f64], m: usize, t: &RefLoss) -> Vec<f64> {
    let eps = 1e-6;
    (0..n)
        .map(|j| {
            let orig = *param(layers, li, which, j);
            *param(layers, li, which, j) = orig + eps;
            let up = ref_loss(layers, x, m, t);
            *param(layers, li, which, j) = orig - eps;
            let down = ref_loss(layers, x, m, t);
            *param(layers, li, which, j) = orig;
            (up - down) / (2.0 * eps)
        })
        .collect()
}

fn check(act: Activation, kind: HeadKind, seed: u64) {
    let gpu = gpu();
    let (d, h1, h2, k, m) = (5, 7, 6, 4, 9);
    let specs = [
        DenseSpec { inputs: d, outputs: h1, activation: act },
        DenseSpec { inputs: h1, outputs: h2, activation: act },
        DenseSpec { inputs: h2, outputs: k, activation: Activation::Identity },
    ];
    let values: Vec<(Vec<f32>, Vec<f32>)> = specs
        .iter()
        .enumerate()
        .map(|(i, s)| (rand_vec(seed * 10 + i as u64, s.inputs * s.outputs), rand_vec(seed * 10 + 5 + i as u64, s.outputs)))
        .collect();
    let x = rand_range(seed + 100, m * d, -2.0, 2.0);
    let mut r = headswap::Rng::new(seed);
    let (targets, ref_target) = match kind {
        HeadKind::Classes => {
            let y: Vec<u32> = (0..m).map(|_| r.below(k as u64) as u32).collect();
            (Targets::Classes { y: y.clone(), num_classes: k }, RefLoss::Softmax(y))
        }
        HeadKind::Labels => {
            let mut y: Vec<f32> = (0..m * k).map(|_| if r.next_f64() < 0.5 { 1.0 } else { 0.0 }).collect();
            y[3] = f32::NAN; // an unknown label: masked out of loss and gradient
            (Targets::Labels { y: y.clone(), k }, RefLoss::Bce(y.iter().map(|&v| v as f64).collect()))
        }
        HeadKind::Regression(_) => unreachable!("tests/multihead.rs checks regression heads"),
    };
    let data = Dataset { x: x.clone(), n: m, d, input_shape: vec![d], targets, label_names: (0..k).map(|i| format!("l{i}")).collect() };
    let net = Network::from_values(&gpu, specs[..2].to_vec(), specs[2..].to_vec(), kind, &values).unwrap();
    let (gpu_loss, gpu_grads) = gradients(&gpu, &net, &data, &BceSettings::default()).unwrap();

    let mut layers: Vec<RefLayer> =
        specs.iter().zip(&values).map(|(s, (w, b))| RefLayer::dense(s.inputs, s.outputs, s.activation, to_f64(w), to_f64(b))).collect();
    let xf = to_f64(&x);
    let (ref_l, ref_grads) = loss_and_grads(&layers, &xf, m, &ref_target);
    let what = format!("{act:?} {kind:?}");
    assert!((gpu_loss - ref_l).abs() <= 1e-4 * ref_l.abs().max(1.0), "{what}: loss {gpu_loss} vs reference {ref_l}");

    // central differences of the reference loss, every parameter
    for li in 0..layers.len() {
        for which in 0..2 {
            let n = if which == 0 { layers[li].w.len() } else { layers[li].b.len() };
            let fd = finite_differences(&mut layers, li, which, n, &xf, m, &ref_target);
            let (gpu_g, ref_g) = if which == 0 { (&gpu_grads[li].0, &ref_grads[li].0) } else { (&gpu_grads[li].1, &ref_grads[li].1) };
            let name = format!("{what} layer {li} {}", if which == 0 { "dW" } else { "db" });
            let tol = Tolerance { rel: 1e-3, abs: 1e-5 };
            assert_close(&format!("{name}: GPU vs finite differences"), gpu_g, &fd, tol);
            let ref_as_f32: Vec<f32> = ref_g.iter().map(|&v| v as f32).collect();
            assert_close(&format!("{name}: reference vs finite differences"), &ref_as_f32, &fd, Tolerance { rel: 1e-5, abs: 1e-7 });
        }
    }
}

#[test]
fn every_activation_with_softmax_cross_entropy() {
    for (i, act) in ACTIVATIONS.iter().enumerate() {
        check(*act, HeadKind::Classes, 1 + i as u64);
    }
}

#[test]
fn every_activation_with_masked_multi_label_bce() {
    for (i, act) in ACTIVATIONS.iter().enumerate() {
        check(*act, HeadKind::Labels, 20 + i as u64);
    }
}

/// A small CNN: every spatial layer kind, odd image sizes, stride 2 and padding, flattened into
/// a dense head; GPU gradients against central differences of the reference network.
fn check_cnn(act: Activation, kind: HeadKind, seed: u64, global_pool: bool) {
    use headswap::nn::{CnnBuilder, LayerSpec};
    let gpu = gpu();
    let (c, h, w, k, m) = (2, 9, 7, 3, 5);
    let mut b = CnnBuilder::new(c, h, w).conv(3, 3, 1, 1, act).max_pool(2, 2).conv(4, 3, 2, 1, act);
    b = if global_pool { b.global_avg_pool() } else { b.avg_pool(1, 1) };
    let mut trunk = b.build().unwrap();
    let flat = trunk.last().unwrap().outputs();
    trunk.push(LayerSpec::Dense(DenseSpec { inputs: flat, outputs: 6, activation: act }));
    let head = vec![LayerSpec::Dense(DenseSpec { inputs: 6, outputs: k, activation: Activation::Identity })];
    let all: Vec<LayerSpec> = trunk.iter().chain(&head).copied().collect();
    let values: Vec<(Vec<f32>, Vec<f32>)> = all
        .iter()
        .enumerate()
        .map(|(i, s)| match s.weight_shape() {
            Some(shape) => (rand_vec(seed * 10 + i as u64, shape.iter().product()), rand_vec(seed * 10 + 5 + i as u64, s.bias_len())),
            None => (Vec::new(), Vec::new()),
        })
        .collect();
    let d = c * h * w;
    let x = rand_range(seed + 100, m * d, -2.0, 2.0);
    let mut r = headswap::Rng::new(seed);
    let (targets, ref_target) = match kind {
        HeadKind::Classes => {
            let y: Vec<u32> = (0..m).map(|_| r.below(k as u64) as u32).collect();
            (Targets::Classes { y: y.clone(), num_classes: k }, RefLoss::Softmax(y))
        }
        HeadKind::Labels => {
            let y: Vec<f32> = (0..m * k).map(|_| if r.next_f64() < 0.5 { 1.0 } else { 0.0 }).collect();
            (Targets::Labels { y: y.clone(), k }, RefLoss::Bce(y.iter().map(|&v| v as f64).collect()))
        }
        HeadKind::Regression(_) => unreachable!("tests/multihead.rs checks regression heads"),
    };
    let data = Dataset { x: x.clone(), n: m, d, input_shape: vec![c, h, w], targets, label_names: vec![] };
    let net = Network::from_layers(&gpu, trunk, head, kind, &values).unwrap();
    let (_, gpu_grads) = gradients(&gpu, &net, &data, &BceSettings::default()).unwrap();
    let mut layers: Vec<RefLayer> = all.iter().zip(&values).map(|(s, (w, b))| RefLayer::new(*s, to_f64(w), to_f64(b))).collect();
    let xf = to_f64(&x);
    for li in 0..layers.len() {
        for which in 0..2 {
            let n = if which == 0 { layers[li].w.len() } else { layers[li].b.len() };
            let fd = finite_differences(&mut layers, li, which, n, &xf, m, &ref_target);
            let gpu_g = if which == 0 { &gpu_grads[li].0 } else { &gpu_grads[li].1 };
            let what = format!("CNN {act:?} {kind:?} layer {li} ({}) {}", all[li].describe(), if which == 0 { "dW" } else { "db" });
            assert_close(&format!("{what}: GPU vs finite differences"), gpu_g, &fd, Tolerance { rel: 1e-3, abs: 1e-5 });
        }
    }
}

#[test]
fn cnn_gradients_match_finite_differences() {
    check_cnn(Activation::Relu, HeadKind::Classes, 3, true);
    check_cnn(Activation::Tanh, HeadKind::Labels, 4, false);
    check_cnn(Activation::Gelu, HeadKind::Classes, 5, false);
    // the new activations: ReLU6 and Hardsigmoid differentiated from the output, SiLU and
    // Hardswish from the kept pre-activation (conv, pool and dense layers alike)
    check_cnn(Activation::Relu6, HeadKind::Labels, 6, true);
    check_cnn(Activation::Silu, HeadKind::Classes, 7, false);
    check_cnn(Activation::Hardswish, HeadKind::Labels, 8, false);
    check_cnn(Activation::Hardsigmoid, HeadKind::Classes, 9, true);
}
