//! Parameter groups: any set of layers trains, each group at its own learning-rate multiplier,
//! the rest frozen (bit-identical, no gradient or optimizer memory); trajectories equal a float64
//! reference trainer that applies the same per-layer rates; a frozen prefix is cached; resume
//! files name the optimizer state per parameter.
mod common;
use common::trainer::RefOpt as Opt;
use common::*;
use headswap::Rng;
use headswap::data::{Dataset, Targets};
use headswap::kernels::Activation;
use headswap::nn::{Conv2dSpec, DenseSpec, HeadKind, LayerSpec, Network, Pool2dSpec};
use headswap::reference::optim::{Adam, Sgd};
use headswap::train::{Freeze, Optimizer, ParamGroups, TrainConfig, Trainer, TrainingState};

struct Setup {
    trunk: Vec<LayerSpec>,
    head: Vec<LayerSpec>,
    values: Vec<(Vec<f32>, Vec<f32>)>,
    data: Dataset,
}

fn dense(inputs: usize, outputs: usize, activation: Activation) -> LayerSpec {
    LayerSpec::Dense(DenseSpec { inputs, outputs, activation })
}

fn setup(trunk: Vec<LayerSpec>, head: Vec<LayerSpec>, n: usize, seed: u64) -> Setup {
    let all: Vec<LayerSpec> = trunk.iter().chain(&head).copied().collect();
    let values = all
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let w = s.weight_shape().map_or(0, |sh| sh.iter().product());
            // small weights keep tanh and the softmax away from saturation
            let scale = |v: Vec<f32>| v.into_iter().map(|x| 0.5 * x).collect::<Vec<f32>>();
            (scale(rand_vec(seed + i as u64, w)), scale(rand_vec(seed + 20 + i as u64, s.bias_len())))
        })
        .collect();
    let d = all[0].inputs();
    let c = all.last().unwrap().outputs();
    let x = rand_range(seed + 50, n * d, -1.0, 1.0);
    let mut r = Rng::new(seed);
    let y = (0..n).map(|_| r.below(c as u64) as u32).collect();
    let data = Dataset {
        x,
        n,
        d,
        input_shape: vec![d],
        targets: Targets::Classes { y, num_classes: c },
        label_names: (0..c).map(|i| format!("c{i}")).collect(),
    };
    Setup { trunk, head, values, data }
}

fn mlp(n: usize, seed: u64) -> Setup {
    let trunk = vec![dense(6, 9, Activation::Tanh), dense(9, 8, Activation::Relu), dense(8, 7, Activation::Tanh)];
    setup(trunk, vec![dense(7, 3, Activation::Identity)], n, seed)
}

fn net_of(gpu: &headswap::Gpu, s: &Setup) -> Network {
    Network::from_layers(gpu, s.trunk.clone(), s.head.clone(), HeadKind::Classes, &s.values).unwrap()
}

fn reference_train(s: &Setup, opt: Opt, mults: &[Option<f64>], batch: usize, epochs: usize, seed: u64) -> Vec<(Vec<f64>, Vec<f64>)> {
    let specs: Vec<LayerSpec> = s.trunk.iter().chain(&s.head).copied().collect();
    let sources = headswap::reference::network::chain(specs.len());
    common::trainer::reference_train(&specs, &sources, &s.values, &s.data, opt, mults, batch, epochs, seed)
}

fn bits(v: &[(Vec<f32>, Vec<f32>)], layer: usize) -> Vec<u32> {
    v[layer].0.iter().chain(&v[layer].1).map(|x| x.to_bits()).collect()
}

#[test]
fn groups_at_different_rates_follow_the_reference_and_frozen_layers_keep_their_bits() {
    let gpu = gpu();
    let s = mlp(29, 11);
    assert_eq!(net_of(&gpu, &s).module_names(), ["0", "2", "4", "6"]);
    // three trainable ranges at three rates (more than one optimizer dispatch takes), layer 2 frozen
    let groups = ParamGroups::new().train("head", 1.0).train("0", 0.5).train("4", 0.1);
    let mults = [Some(0.5), None, Some(0.1), Some(1.0)];
    let sgd = Sgd { lr: 0.1, momentum: 0.9, dampening: 0.0, weight_decay: 1e-3, nesterov: true };
    let adamw = Adam { lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01, decoupled: true };
    for (opt, reference) in
        [(Optimizer::sgd(0.1).momentum(0.9).nesterov(true).weight_decay(1e-3), Opt::Sgd(sgd)), (Optimizer::adamw(0.01), Opt::Adam(adamw))]
    {
        let mut net = net_of(&gpu, &s);
        let cfg = TrainConfig { optimizer: opt, batch_size: 8, seed: 7, ..TrainConfig::default() };
        let report = Trainer::new(&gpu, cfg).fine_tune_groups(&mut net, &s.data, &groups, 3).unwrap();
        assert_eq!(report.lowest_trainable, 0);
        assert!(!report.cached_features, "layer 0 trains: nothing below it to cache");
        let got = net.values().unwrap();
        let want = reference_train(&s, reference, &mults, 8, 3, 7);
        for (i, (g, r)) in got.iter().zip(&want).enumerate() {
            assert_close(&format!("{opt:?}: layer {i} weight"), &g.0, &r.0, Tolerance::F32);
            assert_close(&format!("{opt:?}: layer {i} bias"), &g.1, &r.1, Tolerance::F32);
        }
        assert_eq!(bits(&got, 1), bits(&s.values, 1), "{opt:?}: the frozen layer changed");
        for i in [0, 2, 3] {
            assert_ne!(bits(&got, i), bits(&s.values, i), "{opt:?}: layer {i} did not train");
        }
    }
}

#[test]
fn a_frozen_layer_has_no_gradient_or_optimizer_memory() {
    let gpu = gpu();
    let s = mlp(64, 12);
    let cfg = TrainConfig { optimizer: Optimizer::adam(1e-3), batch_size: 16, seed: 1, ..TrainConfig::default() };
    let bytes = |groups: &ParamGroups| {
        let mut net = net_of(&gpu, &s);
        Trainer::new(&gpu, cfg.clone()).fine_tune_groups(&mut net, &s.data, groups, 1).unwrap().bytes_allocated
    };
    let all = bytes(&ParamGroups::new().train("*", 1.0));
    let middle_frozen = bytes(&ParamGroups::new().train("0", 1.0).train("4", 1.0).train("head", 1.0));
    // layer 2 is [8, 9] + [8]: 72 weights padded to 128, the bias to 64 (each view starts on a
    // 64-element boundary)
    let slot = 128 + 64;
    // one gradient and Adam's two moments, f32
    assert_eq!(all - middle_frozen, 3 * 4 * slot, "freezing layer 2 saves exactly its gradient and moments");
}

#[test]
fn a_frozen_prefix_is_cached_and_gives_the_uncached_result() {
    let gpu = gpu();
    let s = mlp(40, 13);
    let groups = ParamGroups::new().train("4", 0.3).train("head", 1.0);
    let run = |cache: bool| {
        let mut net = net_of(&gpu, &s);
        let cfg =
            TrainConfig { optimizer: Optimizer::adam(1e-2), batch_size: 16, seed: 2, cache_features: cache, ..TrainConfig::default() };
        let report = Trainer::new(&gpu, cfg).fine_tune_groups(&mut net, &s.data, &groups, 2).unwrap();
        (report, net.values().unwrap())
    };
    let (cached, with) = run(true);
    let (uncached, without) = run(false);
    assert!(cached.cached_features && !uncached.cached_features);
    assert_eq!(cached.lowest_trainable, 2);
    for i in 0..4 {
        let w: Vec<f64> = without[i].0.iter().map(|&v| v as f64).collect();
        assert_close(&format!("layer {i}"), &with[i].0, &w, Tolerance::STRICT);
    }
    // the frozen layers kept their bits on both paths
    for i in 0..2 {
        assert_eq!(bits(&with, i), bits(&s.values, i));
    }
    let reference = reference_train(
        &s,
        Opt::Adam(Adam { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, decoupled: false }),
        &[None, None, Some(0.3), Some(1.0)],
        16,
        2,
        2,
    );
    for i in 2..4 {
        assert_close(&format!("layer {i} vs reference"), &with[i].0, &reference[i].0, Tolerance::F32);
    }

    // Freeze::LastK leaves a frozen prefix too
    let mut net = net_of(&gpu, &s);
    let report = Trainer::new(&gpu, TrainConfig::default()).fine_tune(&mut net, &s.data, Freeze::LastK(1), 1).unwrap();
    assert!(report.cached_features && report.lowest_trainable == 2);
}

#[test]
fn a_frozen_convolution_between_trainable_layers_passes_the_gradient_down() {
    let gpu = gpu();
    // conv(1→3) relu → max pool → conv(3→4) relu [frozen] → avg pool → dense → head
    let c1 = Conv2dSpec {
        in_channels: 1,
        height: 8,
        width: 8,
        out_channels: 3,
        kernel: [3; 2],
        stride: [1; 2],
        padding: [1; 4],
        groups: 1,
        activation: Activation::Relu,
        bias: true,
    };
    let p1 = Pool2dSpec { channels: 3, height: 8, width: 8, kernel: [2; 2], stride: [2; 2], padding: [0; 2], ceil_mode: false };
    let c2 = Conv2dSpec {
        in_channels: 3,
        height: 4,
        width: 4,
        out_channels: 4,
        kernel: [3; 2],
        stride: [1; 2],
        padding: [1; 4],
        groups: 1,
        activation: Activation::Relu,
        bias: true,
    };
    let p2 = Pool2dSpec { channels: 4, height: 4, width: 4, kernel: [2; 2], stride: [2; 2], padding: [0; 2], ceil_mode: false };
    let trunk = vec![
        LayerSpec::Conv2d(c1),
        LayerSpec::MaxPool2d(p1),
        LayerSpec::Conv2d(c2),
        LayerSpec::AvgPool2d(p2),
        dense(16, 6, Activation::Tanh),
    ];
    let s = setup(trunk, vec![dense(6, 3, Activation::Identity)], 11, 14);
    let names = net_of(&gpu, &s).module_names();
    // the convolution at index 2 is frozen; the one below it and the layers above it train
    let frozen = names[2].clone();
    let groups = ParamGroups::new().train(&names[0], 1.0).train(&names[4], 1.0).train("head", 1.0);
    let mut net = net_of(&gpu, &s);
    let cfg = TrainConfig { optimizer: Optimizer::sgd(0.1), batch_size: 11, seed: 3, ..TrainConfig::default() };
    let report = Trainer::new(&gpu, cfg).fine_tune_groups(&mut net, &s.data, &groups, 1).unwrap();
    assert_eq!(report.lowest_trainable, 0);
    let got = net.values().unwrap();
    let sgd = Sgd { lr: 0.1, momentum: 0.0, dampening: 0.0, weight_decay: 0.0, nesterov: false };
    let mults = [Some(1.0), None, None, None, Some(1.0), Some(1.0)];
    let want = reference_train(&s, Opt::Sgd(sgd), &mults, 11, 1, 3);
    for i in [0, 4, 5] {
        assert_close(&format!("layer {i} weight"), &got[i].0, &want[i].0, Tolerance::F32);
        assert_close(&format!("layer {i} bias"), &got[i].1, &want[i].1, Tolerance::F32);
    }
    assert_eq!(bits(&got, 2), bits(&s.values, 2), "the frozen convolution {frozen} changed");
    assert_ne!(bits(&got, 0), bits(&s.values, 0), "the lowest convolution did not train");
}

#[test]
fn resuming_a_grouped_run_names_the_optimizer_state_per_parameter_and_continues_exactly() {
    let gpu = gpu();
    let s = mlp(50, 15);
    let groups = ParamGroups::new().train("0", 0.5).train("head", 1.0);
    let cfg = TrainConfig { optimizer: Optimizer::adam(1e-2), batch_size: 16, seed: 4, ..TrainConfig::default() };
    let mut straight = net_of(&gpu, &s);
    let mut t = Trainer::new(&gpu, cfg.clone());
    t.fine_tune_groups(&mut straight, &s.data, &groups, 2).unwrap();
    let state = t.training_state().unwrap().clone();
    t.resume(&mut straight, &s.data, &state, 4).unwrap();

    let mut first = net_of(&gpu, &s);
    let mut t = Trainer::new(&gpu, cfg.clone());
    t.fine_tune_groups(&mut first, &s.data, &groups, 2).unwrap();
    let dir = TempDir::new("groups-resume");
    let path = dir.path().join("state.safetensors");
    t.training_state().unwrap().save(&first, &path).unwrap();
    let ckpt = headswap::checkpoint::load(&path).unwrap();
    let m = ckpt.get("optim.0.weight.exp_avg").expect("Adam's first moment of 0.weight");
    assert_eq!(m.shape, vec![9, 6], "optimizer state has its parameter's shape");
    assert!(ckpt.get("optim.6.bias.exp_avg_sq").is_some());
    assert!(ckpt.names().all(|n| !n.starts_with("optim.2.") && !n.starts_with("optim.4.")), "frozen layers have no state");
    assert_eq!(ckpt.metadata.get("train.lr_mults").map(String::as_str), Some("[0.5,null,null,1]"));

    let (mut resumed, loaded) = TrainingState::load(&gpu, &path).unwrap();
    assert_eq!(loaded.lr_mults, vec![Some(0.5), None, None, Some(1.0)]);
    Trainer::new(&gpu, cfg).resume(&mut resumed, &s.data, &loaded, 4).unwrap();
    let (a, b) = (straight.values().unwrap(), resumed.values().unwrap());
    for i in 0..4 {
        assert_eq!(bits(&a, i), bits(&b, i), "layer {i}: the resumed run diverged");
    }
}

#[test]
fn groups_that_select_nothing_or_a_bad_rate_are_refused() {
    let gpu = gpu();
    let s = mlp(8, 16);
    let mut net = net_of(&gpu, &s);
    let mut t = Trainer::new(&gpu, TrainConfig::default());
    let err = t.fine_tune_groups(&mut net, &s.data, &ParamGroups::new().train("3", 1.0), 1).unwrap_err().to_string();
    assert!(err.contains("\"3\" matches no layer") && err.contains("0, 2, 4 (trunk) and 6 (head)"), "{err}");
    let err = t.fine_tune_groups(&mut net, &s.data, &ParamGroups::new().train("head", -1.0), 1).unwrap_err().to_string();
    assert!(err.contains("multiplier"), "{err}");
    let err = t.fine_tune_groups(&mut net, &s.data, &ParamGroups::new(), 1).unwrap_err().to_string();
    assert!(err.contains("train nothing"), "{err}");
    // the first matching rule wins: "*" after "head" gives the trunk 0.1 and the head 1
    let mults = ParamGroups::new().train("head", 1.0).train("*", 0.1).resolve(&net).unwrap();
    assert_eq!(mults, vec![Some(0.1), Some(0.1), Some(0.1), Some(1.0)]);
}
