//! Residual connections: networks whose layers read earlier outputs (identity and 1×1-projection
//! shortcuts, a shortcut from the input itself). The GPU's gradients equal the float64
//! reference's and its central differences; training follows the reference trainer, also with a
//! frozen block between trainable layers; a frozen prefix is cached only where it is a cut; the
//! wiring survives a checkpoint.
mod common;
use common::trainer::{RefOpt, reference_train};
use common::*;
use headswap::Rng;
use headswap::data::{Dataset, Targets};
use headswap::kernels::Activation;
use headswap::nn::{AddSpec, CnnBuilder, DenseSpec, Head, HeadKind, Init, LayerSpec, Network, Trunk};
use headswap::reference::network::{RefLayer, RefLoss, forward_graph, loss, loss_and_grads_graph};
use headswap::reference::optim::{Adam, Sgd};
use headswap::train::{BceSettings, Optimizer, ParamGroups, TrainConfig, Trainer, gradients};

/// conv → [conv, conv] + identity → [conv s2, conv] + 1×1 projection → global pool, over 2×5×5.
fn resnet_trunk() -> Trunk {
    CnnBuilder::new(2, 5, 5)
        .conv(3, 3, 1, 1, Activation::Relu)
        .residual(|b| b.conv(3, 3, 1, 1, Activation::Tanh).conv(3, 3, 1, 1, Activation::Identity), Activation::Relu)
        .residual(|b| b.conv(4, 3, 2, 1, Activation::Tanh).conv(4, 3, 1, 1, Activation::Identity), Activation::Tanh)
        .global_avg_pool()
        .build_graph()
        .unwrap()
}

fn dense(inputs: usize, outputs: usize, activation: Activation) -> LayerSpec {
    LayerSpec::Dense(DenseSpec { inputs, outputs, activation })
}

/// An MLP whose second layer adds the network's input back (the input read by two layers) and
/// whose last trunk layer has an identity shortcut over two dense layers.
fn mlp_trunk() -> Trunk {
    let add = |f: usize, a: Activation| LayerSpec::Add(AddSpec { features: f, chw: None, activation: a });
    Trunk {
        layers: vec![
            dense(5, 5, Activation::Tanh),
            add(5, Activation::Identity),
            dense(5, 6, Activation::Relu),
            dense(6, 6, Activation::Tanh),
            dense(6, 6, Activation::Identity),
            add(6, Activation::Relu),
        ],
        sources: vec![vec![0], vec![1, 0], vec![2], vec![3], vec![4], vec![5, 3]],
        names: vec![None; 6],
    }
}

struct Case {
    net_trunk: Trunk,
    head: Vec<LayerSpec>,
    values: Vec<(Vec<f32>, Vec<f32>)>,
    data: Dataset,
    target: RefLoss,
}

fn case(trunk: Trunk, classes: usize, m: usize, seed: u64) -> Case {
    let width = trunk.layers.last().unwrap().outputs();
    let head = vec![dense(width, classes, Activation::Identity)];
    let all: Vec<LayerSpec> = trunk.layers.iter().chain(&head).copied().collect();
    let mut rng = Rng::new(seed);
    let values: Vec<(Vec<f32>, Vec<f32>)> = all.iter().map(|s| Init::KaimingUniform.layer(s, &mut rng)).collect();
    let d = all[0].inputs();
    let x = rand_range(seed + 100, m * d, -1.5, 1.5);
    let y: Vec<u32> = (0..m).map(|_| rng.below(classes as u64) as u32).collect();
    let data = Dataset {
        x,
        n: m,
        d,
        input_shape: vec![d],
        targets: Targets::Classes { y: y.clone(), num_classes: classes },
        label_names: (0..classes).map(|i| format!("c{i}")).collect(),
    };
    Case { net_trunk: trunk, head, values, data, target: RefLoss::Softmax(y) }
}

fn network(c: &Case) -> Network {
    Network::from_graph_layers(&gpu(), c.net_trunk.clone(), c.head.clone(), HeadKind::Classes, &c.values).unwrap()
}

fn ref_layers(c: &Case) -> (Vec<RefLayer>, Vec<Vec<usize>>) {
    let all: Vec<LayerSpec> = c.net_trunk.layers.iter().chain(&c.head).copied().collect();
    let layers = all.iter().zip(&c.values).map(|(s, (w, b))| RefLayer::new(*s, to_f64(w), to_f64(b))).collect();
    let t = c.net_trunk.layers.len();
    let mut sources = c.net_trunk.sources.clone();
    sources.extend((t..all.len()).map(|i| vec![i]));
    (layers, sources)
}

fn check_gradients(c: &Case, what: &str) {
    let net = network(c);
    let (gpu_loss, gpu_grads) = gradients(&gpu(), &net, &c.data, &BceSettings::default()).unwrap();
    let (mut layers, sources) = ref_layers(c);
    let x = to_f64(&c.data.x);
    let m = c.data.n;
    let (ref_loss, ref_grads) = loss_and_grads_graph(&layers, &sources, &x, m, &c.target);
    assert!((gpu_loss - ref_loss).abs() <= 1e-4 * ref_loss.abs().max(1.0), "{what}: loss {gpu_loss} vs {ref_loss}");
    let k = layers.last().unwrap().outputs();
    let loss_of = |layers: &[RefLayer]| {
        let (_, a) = forward_graph(layers, &sources, &x, m);
        loss(a.last().unwrap(), m, k, &c.target).0
    };
    let eps = 1e-6;
    for li in 0..layers.len() {
        for which in 0..2 {
            let n = if which == 0 { layers[li].w.len() } else { layers[li].b.len() };
            let fd: Vec<f64> = (0..n)
                .map(|j| {
                    let get = |l: &[RefLayer]| if which == 0 { l[li].w[j] } else { l[li].b[j] };
                    let set = |l: &mut [RefLayer], v: f64| if which == 0 { l[li].w[j] = v } else { l[li].b[j] = v };
                    let orig = get(&layers);
                    set(&mut layers, orig + eps);
                    let up = loss_of(&layers);
                    set(&mut layers, orig - eps);
                    let down = loss_of(&layers);
                    set(&mut layers, orig);
                    (up - down) / (2.0 * eps)
                })
                .collect();
            let (analytic, gpu_g) = if which == 0 { (&ref_grads[li].0, &gpu_grads[li].0) } else { (&ref_grads[li].1, &gpu_grads[li].1) };
            let name = format!("{what}: layer {li} {}", if which == 0 { "weight" } else { "bias" });
            // the reference's analytic gradient against its central differences, then the GPU's
            let a32: Vec<f32> = analytic.iter().map(|&v| v as f32).collect();
            assert_close(&format!("{name} (reference vs differences)"), &a32, &fd, Tolerance { rel: 1e-5, abs: 1e-6 });
            assert_close(&format!("{name} (GPU vs differences)"), gpu_g, &fd, Tolerance { rel: 1e-3, abs: 1e-4 });
        }
    }
}

/// [`resnet_trunk`] with torchvision's convolutions: no bias, the projection shortcut's neither.
fn resnet_trunk_without_conv_bias() -> Trunk {
    CnnBuilder::new(2, 5, 5)
        .conv_bias(false)
        .conv(3, 3, 1, 1, Activation::Relu)
        .residual(|b| b.conv(3, 3, 1, 1, Activation::Tanh).conv(3, 3, 1, 1, Activation::Identity), Activation::Relu)
        .residual(|b| b.conv(4, 3, 2, 1, Activation::Tanh).conv(4, 3, 1, 1, Activation::Identity), Activation::Tanh)
        .global_avg_pool()
        .build_graph()
        .unwrap()
}

#[test]
fn residual_gradients_equal_central_differences() {
    check_gradients(&case(resnet_trunk(), 3, 7, 1), "conv blocks, identity and projection shortcuts");
    let no_bias = resnet_trunk_without_conv_bias();
    assert!(no_bias.layers.iter().all(|l| !matches!(l, LayerSpec::Conv2d(c) if c.bias) && (l.has_params() || l.bias_len() == 0)));
    check_gradients(&case(no_bias, 3, 7, 3), "the same without convolution biases");
    // ResNet's stem: a strided 5×5 convolution without bias, then MaxPool2d(3, 2, 1)
    let stem = CnnBuilder::new(2, 9, 9)
        .conv_bias(false)
        .conv(3, 5, 2, 2, Activation::Relu)
        .max_pool_padded(3, 2, 1)
        .residual(|b| b.conv(3, 3, 1, 1, Activation::Relu).conv(3, 3, 1, 1, Activation::Identity), Activation::Relu)
        .global_avg_pool()
        .build_graph()
        .unwrap();
    assert!(matches!(stem.layers[1], LayerSpec::MaxPool2d(p) if p.padding == [1, 1] && p.kernel == [3, 3] && p.stride == [2, 2]));
    check_gradients(&case(stem, 3, 5, 4), "a stem with padded max pooling");
    check_gradients(&case(mlp_trunk(), 4, 9, 2), "dense, a shortcut from the input and one over two layers");
}

#[test]
fn the_builder_wires_identity_and_projection_shortcuts() {
    let t = resnet_trunk();
    // 0 conv; 1 conv, 2 conv, 3 add(2's output, 0's output); 4 conv s2, 5 conv, 6 1×1 projection of 3's output, 7 add; 8 pool
    assert_eq!(t.sources, vec![vec![0], vec![1], vec![2], vec![3, 1], vec![4], vec![5], vec![4], vec![6, 7], vec![8]]);
    let LayerSpec::Conv2d(proj) = t.layers[6] else { panic!("layer 6 is the projection") };
    assert_eq!((proj.kernel, proj.stride, proj.in_channels, proj.out_channels), ([1, 1], [2, 2], 3, 4));
    // a chain-only build refuses residual blocks instead of dropping their wiring
    let err = CnnBuilder::new(1, 4, 4).residual(|b| b.conv(1, 3, 1, 1, Activation::Relu), Activation::Relu).build().unwrap_err();
    assert!(err.to_string().contains("build_graph"), "{err}");
    // wiring that reads a later layer, or the wrong width, is refused
    let mut bad = mlp_trunk();
    bad.sources[1] = vec![1, 3];
    let net = Network::from_trunk(&gpu(), 5, bad, Init::KaimingUniform, Head::classes(3), 1);
    assert!(net.unwrap_err().to_string().contains("not computed before it"));
    let mut bad = mlp_trunk();
    bad.sources[5] = vec![5, 1];
    let net = Network::from_trunk(&gpu(), 5, bad, Init::KaimingUniform, Head::classes(3), 1);
    assert!(net.unwrap_err().to_string().contains("takes 6 inputs, layer 0 gives 5"));
}

#[test]
fn residual_networks_train_like_the_reference_with_and_without_a_frozen_block() {
    let gpu = gpu();
    for (trunk, name) in [(resnet_trunk(), "conv"), (mlp_trunk(), "dense")] {
        let c = case(trunk, 3, 21, 3);
        let (layers, sources) = ref_layers(&c);
        let specs: Vec<LayerSpec> = layers.iter().map(|l| l.spec).collect();
        let adam = Adam { lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, decoupled: false };
        let cfg = TrainConfig { optimizer: Optimizer::adam(0.01), batch_size: 8, seed: 5, ..TrainConfig::default() };

        // everything trains
        let mut net = network(&c);
        Trainer::new(&gpu, cfg.clone()).fit(&mut net, &c.data, 2).unwrap();
        let all: Vec<Option<f64>> = specs.iter().map(|s| s.has_params().then_some(1.0)).collect();
        let want = reference_train(&specs, &sources, &c.values, &c.data, RefOpt::Adam(adam), &all, 8, 2, 5);
        for (i, (g, r)) in net.values().unwrap().iter().zip(&want).enumerate() {
            assert_close(&format!("{name}: layer {i} weight"), &g.0, &r.0, Tolerance::F32);
            assert_close(&format!("{name}: layer {i} bias"), &g.1, &r.1, Tolerance::F32);
        }

        // the first layer and the head train; everything between is frozen, so the gradient
        // passes down through frozen blocks and both branches of each shortcut
        let names = network(&c).module_names();
        let head = names.len() - 1;
        let groups = ParamGroups::new().train(&names[0], 0.5).train("head", 1.0);
        let mut net = network(&c);
        let report = Trainer::new(&gpu, cfg.clone()).fine_tune_groups(&mut net, &c.data, &groups, 2).unwrap();
        assert!(!report.cached_features);
        let mut mults = vec![None; specs.len()];
        mults[0] = Some(0.5);
        mults[head] = Some(1.0);
        let want = reference_train(&specs, &sources, &c.values, &c.data, RefOpt::Adam(adam), &mults, 8, 2, 5);
        let got = net.values().unwrap();
        for i in [0, head] {
            assert_close(&format!("{name} frozen middle: layer {i} weight"), &got[i].0, &want[i].0, Tolerance::F32);
        }
        for (i, (g, v)) in got.iter().zip(&c.values).enumerate().filter(|(i, _)| mults[*i].is_none()) {
            assert!(g.0.iter().zip(&v.0).all(|(a, b)| a.to_bits() == b.to_bits()), "{name}: frozen layer {i} changed");
        }
    }
}

#[test]
fn a_frozen_prefix_is_cached_only_where_it_is_a_cut() {
    let gpu = gpu();
    let c = case(resnet_trunk(), 3, 20, 4);
    let names = network(&c).module_names();
    let sgd = Sgd { lr: 0.1, momentum: 0.9, dampening: 0.0, weight_decay: 0.0, nesterov: false };
    let cfg = TrainConfig { optimizer: Optimizer::sgd(0.1).momentum(0.9), batch_size: 8, seed: 6, ..TrainConfig::default() };
    let (layers, sources) = ref_layers(&c);
    let specs: Vec<LayerSpec> = layers.iter().map(|l| l.spec).collect();
    // the second block and the head: everything from layer 4 on reads layer 3's output or later
    let groups = ParamGroups::new().train(&names[4], 1.0).train(&names[5], 1.0).train(&names[6], 1.0).train("head", 1.0);
    let mut net = network(&c);
    let report = Trainer::new(&gpu, cfg.clone()).fine_tune_groups(&mut net, &c.data, &groups, 2).unwrap();
    assert!(report.cached_features && report.lowest_trainable == 4);
    let mults: Vec<Option<f64>> = (0..specs.len()).map(|i| (i >= 4 && specs[i].has_params()).then_some(1.0)).collect();
    let want = reference_train(&specs, &sources, &c.values, &c.data, RefOpt::Sgd(sgd), &mults, 8, 2, 6);
    for (i, (g, r)) in net.values().unwrap().iter().zip(&want).enumerate() {
        assert_close(&format!("cached prefix: layer {i} weight"), &g.0, &r.0, Tolerance::F32);
    }
    // the first block's second convolution: the add above it also reads layer 0's output, below
    // the lowest trainable layer, so nothing can be cached
    let groups = ParamGroups::new().train(&names[2], 1.0).train("head", 1.0);
    let mut net = network(&c);
    let report = Trainer::new(&gpu, cfg).fine_tune_groups(&mut net, &c.data, &groups, 1).unwrap();
    assert!(!report.cached_features && report.lowest_trainable == 2);
}

#[test]
fn the_wiring_survives_a_checkpoint() {
    let gpu = gpu();
    let c = case(resnet_trunk(), 3, 10, 5);
    let net = network(&c);
    let dir = TempDir::new("residual-ckpt");
    let path = dir.path().join("resnet.safetensors");
    net.save(&path, headswap::checkpoint::StorageDtype::F32).unwrap();
    let back = Network::load(&gpu, &path).unwrap();
    assert_eq!(back.sources(), net.sources());
    assert_eq!(back.layers(), net.layers());
    assert_eq!(back.values().unwrap(), net.values().unwrap());
    let t = Trainer::new(&gpu, TrainConfig::default());
    assert_eq!(t.evaluate(&back, &c.data).unwrap().loss, t.evaluate(&net, &c.data).unwrap().loss);
}
