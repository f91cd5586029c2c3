//! Trajectories: the GPU trainer's weights after one SGD step, one Adam step, and a few epochs
//! of shuffled mini-batch training equal a float64 reference trainer fed the same batches.
mod common;
use common::*;
use headswap::Rng;
use headswap::data::{Dataset, Targets};
use headswap::kernels::Activation;
use headswap::nn::{DenseSpec, HeadKind, Network};
use headswap::reference::network::{RefLayer, RefLoss, loss_and_grads};
use headswap::reference::optim::{Adam, Sgd, adam_step, sgd_step};
use headswap::train::{Optimizer, TrainConfig, Trainer};

#[derive(Clone, Copy)]
enum Opt {
    Sgd(Sgd),
    Adam(Adam),
}

struct Setup {
    specs: Vec<DenseSpec>,
    values: Vec<(Vec<f32>, Vec<f32>)>,
    data: Dataset,
}

fn setup(n: usize, seed: u64) -> Setup {
    let (d, h, c) = (6, 9, 3);
    let specs = vec![
        DenseSpec { inputs: d, outputs: h, activation: Activation::Tanh },
        DenseSpec { inputs: h, outputs: c, activation: Activation::Identity },
    ];
    let values = specs
        .iter()
        .enumerate()
        .map(|(i, s)| (rand_vec(seed + i as u64, s.inputs * s.outputs), rand_vec(seed + 10 + i as u64, s.outputs)))
        .collect();
    let x = rand_range(seed + 50, n * d, -1.5, 1.5);
    let mut r = Rng::new(seed);
    let y = (0..n).map(|_| r.below(c as u64) as u32).collect();
    let data = Dataset {
        x,
        n,
        d,
        input_shape: vec![d],
        targets: Targets::Classes { y, num_classes: c },
        label_names: (0..c).map(|i| i.to_string()).collect(),
    };
    Setup { specs, values, data }
}

/// The reference trainer: same shuffles (the trainer draws one permutation per epoch from
/// `Rng::new(seed)`), same batches, f64 arithmetic.
fn reference_train(s: &Setup, opt: Opt, batch: usize, epochs: usize, seed: u64) -> Vec<(Vec<f64>, Vec<f64>)> {
    let mut layers: Vec<RefLayer> = s
        .specs
        .iter()
        .zip(&s.values)
        .map(|(sp, (w, b))| RefLayer::dense(sp.inputs, sp.outputs, sp.activation, to_f64(w), to_f64(b)))
        .collect();
    let mut state: Vec<[Vec<f64>; 4]> =
        layers.iter().map(|l| [vec![0.0; l.w.len()], vec![0.0; l.w.len()], vec![0.0; l.b.len()], vec![0.0; l.b.len()]]).collect();
    let Targets::Classes { y, .. } = &s.data.targets else { unreachable!() };
    let d = s.data.d;
    let mut rng = Rng::new(seed);
    let mut t = 0;
    for _ in 0..epochs {
        let order = rng.permutation(s.data.n);
        for chunk in order.chunks(batch) {
            let m = chunk.len();
            let xb: Vec<f64> =
                chunk.iter().flat_map(|&i| s.data.x[i as usize * d..(i as usize + 1) * d].iter().map(|&v| v as f64)).collect();
            let yb: Vec<u32> = chunk.iter().map(|&i| y[i as usize]).collect();
            let (_, grads) = loss_and_grads(&layers, &xb, m, &RefLoss::Softmax(yb));
            t += 1;
            for (li, (gw, gb)) in grads.iter().enumerate() {
                let [s0, s1, s2, s3] = &mut state[li];
                let l = &mut layers[li];
                match opt {
                    Opt::Sgd(c) => {
                        sgd_step(&mut l.w, gw, s0, &c, t);
                        sgd_step(&mut l.b, gb, s2, &c, t);
                    }
                    Opt::Adam(c) => {
                        adam_step(&mut l.w, gw, s0, s1, &c, t);
                        adam_step(&mut l.b, gb, s2, s3, &c, t);
                    }
                }
            }
        }
    }
    layers.into_iter().map(|l| (l.w, l.b)).collect()
}

fn gpu_train(s: &Setup, opt: Optimizer, batch: usize, epochs: usize, seed: u64) -> Vec<(Vec<f32>, Vec<f32>)> {
    let gpu = gpu();
    let mut net = Network::from_values(&gpu, s.specs[..1].to_vec(), s.specs[1..].to_vec(), HeadKind::Classes, &s.values).unwrap();
    let cfg = TrainConfig { optimizer: opt, batch_size: batch, seed, ..TrainConfig::default() };
    Trainer::new(&gpu, cfg).fit(&mut net, &s.data, epochs).unwrap();
    net.values().unwrap()
}

fn compare(what: &str, gpu: &[(Vec<f32>, Vec<f32>)], reference: &[(Vec<f64>, Vec<f64>)], tol: Tolerance) {
    for (i, (g, r)) in gpu.iter().zip(reference).enumerate() {
        assert_close(&format!("{what}: layer {i} weight"), &g.0, &r.0, tol);
        assert_close(&format!("{what}: layer {i} bias"), &g.1, &r.1, tol);
    }
}

const SGD: Sgd = Sgd { lr: 0.1, momentum: 0.9, dampening: 0.0, weight_decay: 1e-3, nesterov: false };

#[test]
fn one_sgd_step_equals_the_reference() {
    let s = setup(13, 1);
    let opt = Optimizer::sgd(0.1).momentum(0.9).weight_decay(1e-3);
    let g = gpu_train(&s, opt, 13, 1, 5);
    compare("one SGD step", &g, &reference_train(&s, Opt::Sgd(SGD), 13, 1, 5), Tolerance { rel: 1e-5, abs: 1e-6 });
}

#[test]
fn one_adam_step_equals_the_reference() {
    let s = setup(13, 2);
    let g = gpu_train(&s, Optimizer::adam(0.01), 13, 1, 6);
    let adam = Adam { lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, decoupled: false };
    compare("one Adam step", &g, &reference_train(&s, Opt::Adam(adam), 13, 1, 6), Tolerance { rel: 1e-5, abs: 1e-6 });
}

#[test]
fn shuffled_epochs_with_a_partial_batch_follow_the_reference() {
    let s = setup(29, 3);
    let opt = Optimizer::sgd(0.1).momentum(0.9).nesterov(true).weight_decay(1e-3);
    let g = gpu_train(&s, opt, 8, 3, 7);
    let sgd = Sgd { nesterov: true, ..SGD };
    compare("3 epochs SGD nesterov", &g, &reference_train(&s, Opt::Sgd(sgd), 8, 3, 7), Tolerance { rel: 1e-4, abs: 1e-5 });

    let g = gpu_train(&s, Optimizer::adamw(0.01), 8, 3, 8);
    let adamw = Adam { lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01, decoupled: true };
    compare("3 epochs AdamW", &g, &reference_train(&s, Opt::Adam(adamw), 8, 3, 8), Tolerance { rel: 1e-4, abs: 1e-5 });
}

#[test]
fn large_batches_take_the_separate_loss_kernels_and_follow_the_reference() {
    // 5,500 rows × 3 classes is past the fused head kernel's 16,384 entries: the full batches run
    // softmax_xent + sum + argmax_correct + col_sum, the last partial batch (500) the fused kernel.
    assert!(!headswap::kernels::loss::fits_fused_head(5500, 3) && headswap::kernels::loss::fits_fused_head(500, 3));
    let s = setup(6000, 4);
    let opt = Optimizer::sgd(0.1).momentum(0.9).weight_decay(1e-3);
    let g = gpu_train(&s, opt, 5500, 2, 9);
    compare("large batches, SGD", &g, &reference_train(&s, Opt::Sgd(SGD), 5500, 2, 9), Tolerance { rel: 1e-4, abs: 1e-5 });
}
