//! End to end with the activations MobileNet-style models use (ReLU6, SiLU, Hardswish,
//! Hardsigmoid): a small MLP and a small CNN, every layer trained, follow the float64 reference
//! trainer step for step; and head-only fine-tuning on cached trunk features (whose forward fuses
//! the activation into the matmul and convolution epilogues) trains the head as the reference
//! does and leaves the trunk bit-identical.
mod common;
use common::trainer::{RefOpt, reference_train};
use common::*;
use headswap::Rng;
use headswap::data::{Dataset, Targets};
use headswap::kernels::Activation;
use headswap::nn::{CnnBuilder, DenseSpec, HeadKind, Init, LayerSpec, Network};
use headswap::reference::optim::Adam;
use headswap::train::{Freeze, Optimizer, TrainConfig, Trainer};

const NEW: [Activation; 4] = [Activation::Relu6, Activation::Silu, Activation::Hardswish, Activation::Hardsigmoid];

struct Case {
    trunk: Vec<LayerSpec>,
    head: Vec<LayerSpec>,
    values: Vec<(Vec<f32>, Vec<f32>)>,
    data: Dataset,
}

fn case(trunk: Vec<LayerSpec>, input_shape: Vec<usize>, classes: usize, m: usize, seed: u64) -> Case {
    let width = trunk.last().unwrap().outputs();
    let head = vec![LayerSpec::Dense(DenseSpec { inputs: width, outputs: classes, activation: Activation::Identity })];
    let mut rng = Rng::new(seed);
    let values = trunk.iter().chain(&head).map(|s| Init::KaimingUniform.layer(s, &mut rng)).collect();
    let d: usize = input_shape.iter().product();
    // ±4: pre-activations on both sides of every kink
    let x = rand_range(seed + 100, m * d, -4.0, 4.0);
    let y: Vec<u32> = (0..m).map(|_| rng.below(classes as u64) as u32).collect();
    let targets = Targets::Classes { y, num_classes: classes };
    let data = Dataset { x, n: m, d, input_shape, targets, label_names: (0..classes).map(|i| format!("c{i}")).collect() };
    Case { trunk, head, values, data }
}

fn mlp(act: Activation, seed: u64) -> Case {
    let trunk = vec![
        LayerSpec::Dense(DenseSpec { inputs: 6, outputs: 9, activation: act }),
        LayerSpec::Dense(DenseSpec { inputs: 9, outputs: 7, activation: act }),
    ];
    case(trunk, vec![6], 3, 21, seed)
}

fn cnn(act: Activation, seed: u64) -> Case {
    let mut trunk = CnnBuilder::new(2, 7, 6).conv(3, 3, 1, 1, act).max_pool(2, 2).conv(4, 3, 1, 1, act).build().unwrap();
    let flat = trunk.last().unwrap().outputs();
    trunk.push(LayerSpec::Dense(DenseSpec { inputs: flat, outputs: 5, activation: act }));
    case(trunk, vec![2, 7, 6], 3, 19, seed)
}

fn network(c: &Case) -> Network {
    Network::from_layers(&gpu(), c.trunk.clone(), c.head.clone(), HeadKind::Classes, &c.values).unwrap()
}

fn train_and_compare(c: &Case, what: &str) {
    let gpu = gpu();
    let specs: Vec<LayerSpec> = c.trunk.iter().chain(&c.head).copied().collect();
    let sources: Vec<Vec<usize>> = (0..specs.len()).map(|i| vec![i]).collect();
    let adam = Adam { lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, decoupled: false };
    let cfg = TrainConfig { optimizer: Optimizer::adam(0.01), batch_size: 8, seed: 3, ..TrainConfig::default() };

    let mut net = network(c);
    Trainer::new(&gpu, cfg.clone()).fit(&mut net, &c.data, 2).unwrap();
    let all: Vec<Option<f64>> = specs.iter().map(|s| s.has_params().then_some(1.0)).collect();
    let want = reference_train(&specs, &sources, &c.values, &c.data, RefOpt::Adam(adam), &all, 8, 2, 3);
    for (i, (g, r)) in net.values().unwrap().iter().zip(&want).enumerate() {
        assert_close(&format!("{what}: layer {i} weight"), &g.0, &r.0, Tolerance::F32);
        assert_close(&format!("{what}: layer {i} bias"), &g.1, &r.1, Tolerance::F32);
    }

    // head only, on cached trunk features
    let mut net = network(c);
    let report = Trainer::new(&gpu, cfg).fine_tune(&mut net, &c.data, Freeze::Trunk, 2).unwrap();
    assert!(report.cached_features, "{what}: the frozen trunk's features are cached");
    let head = specs.len() - 1;
    let mut mults = vec![None; specs.len()];
    mults[head] = Some(1.0);
    let want = reference_train(&specs, &sources, &c.values, &c.data, RefOpt::Adam(adam), &mults, 8, 2, 3);
    let got = net.values().unwrap();
    assert_close(&format!("{what} head only: head weight"), &got[head].0, &want[head].0, Tolerance::F32);
    assert_close(&format!("{what} head only: head bias"), &got[head].1, &want[head].1, Tolerance::F32);
    for (i, (g, v)) in got.iter().zip(&c.values).enumerate().take(head) {
        assert!(g.0.iter().zip(&v.0).all(|(a, b)| a.to_bits() == b.to_bits()), "{what}: frozen layer {i} changed");
    }
}

#[test]
fn mlp_with_each_new_activation_trains_like_the_reference() {
    for (i, act) in NEW.into_iter().enumerate() {
        train_and_compare(&mlp(act, 40 + i as u64), &format!("MLP {act:?}"));
    }
}

#[test]
fn cnn_with_each_new_activation_trains_like_the_reference() {
    for (i, act) in NEW.into_iter().enumerate() {
        train_and_compare(&cnn(act, 50 + i as u64), &format!("CNN {act:?}"));
    }
}
