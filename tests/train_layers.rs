//! Networks with the parameter-free layers: squeeze-excite (a global pool and dense layers, or
//! torchvision's 1×1 convolutions, then the channel-wise multiply), a DenseNet-style concat,
//! adaptive average pooling, the channel-last flatten and dropout. The GPU's gradients equal the
//! float64 reference's (dropout's mask made explicit) and its central differences; evaluation
//! and prediction take dropout as the identity; training follows the reference trainer step by
//! step, masks included, reruns are bit-identical and another seed draws other masks; the layers
//! survive a checkpoint.
mod common;
use common::trainer::{RefOpt, reference_train};
use common::*;
use headswap::Rng;
use headswap::data::{Dataset, Targets};
use headswap::kernels::Activation;
use headswap::nn::{
    AdaptivePoolSpec, CnnBuilder, ConcatSpec, Conv2dSpec, DenseSpec, DropoutSpec, Head, HeadKind, Init, LayerSpec, Network, Trunk,
};
use headswap::reference::layers::dropout_mask;
use headswap::reference::network::{RefLayer, RefLoss, forward_graph, loss, loss_and_grads_graph};
use headswap::reference::optim::{Adam, Sgd};
use headswap::train::{BceSettings, Freeze, Optimizer, ThreadGroup, TrainConfig, Trainer, gradients, predict};

/// conv → squeeze-excite (pool, dense, dense, multiply) → concat(conv(x), x) → dropout →
/// adaptive pool 3×2 → channel-last flatten → dense → dropout, over 2×6×5.
fn se_concat_trunk(p: f32) -> Trunk {
    CnnBuilder::new(2, 6, 5)
        .conv(4, 3, 1, 1, Activation::Tanh)
        .squeeze_excite(|b| b.global_avg_pool().dense(3, Activation::Relu).dense(4, Activation::Hardsigmoid))
        .concat(|b| b.conv(3, 3, 1, 1, Activation::Tanh), |b| b)
        .dropout(p)
        .adaptive_avg_pool(3, 2)
        .channel_last()
        .dense(6, Activation::Tanh)
        .dropout(p)
        .build_graph()
        .unwrap()
}

/// torchvision's SqueezeExcitation: AdaptiveAvgPool2d(1), 1×1 conv, ReLU, 1×1 conv, sigmoid,
/// multiply; then a concat of four branches and a channel-last flatten.
fn torchvision_se_trunk(p: f32) -> Trunk {
    CnnBuilder::new(3, 5, 4)
        .conv(4, 3, 1, 1, Activation::Relu)
        .squeeze_excite(|b| b.adaptive_avg_pool(1, 1).conv(2, 1, 1, 0, Activation::Relu).conv(4, 1, 1, 0, Activation::Sigmoid))
        // four parts: two convolutions and x twice (its gradient gathered from four readers)
        .concat_branches(vec![
            Box::new(|b: CnnBuilder| b.conv(2, 1, 1, 0, Activation::Tanh)),
            Box::new(|b: CnnBuilder| b),
            Box::new(|b: CnnBuilder| b.conv(3, 3, 1, 1, Activation::Tanh)),
            Box::new(|b: CnnBuilder| b),
        ])
        .adaptive_avg_pool(2, 3)
        .dropout(p)
        .channel_last()
        .build_graph()
        .unwrap()
}

fn dense(inputs: usize, outputs: usize, activation: Activation) -> LayerSpec {
    LayerSpec::Dense(DenseSpec { inputs, outputs, activation })
}

struct Case {
    trunk: Trunk,
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
    Case { trunk, head, values, data, target: RefLoss::Softmax(y) }
}

fn network(c: &Case) -> Network {
    Network::from_graph_layers(&gpu(), c.trunk.clone(), c.head.clone(), HeadKind::Classes, &c.values).unwrap()
}

/// The reference layers, each dropout's mask that of seed `seed`, step `step` at offset 0 for
/// `m` rows (`None`: evaluation, the identity).
fn ref_layers(c: &Case, masks: Option<(u64, u32)>) -> (Vec<RefLayer>, Vec<Vec<usize>>) {
    let all: Vec<LayerSpec> = c.trunk.layers.iter().chain(&c.head).copied().collect();
    let m = c.data.n;
    let layers = all
        .iter()
        .zip(&c.values)
        .map(|(s, (w, b))| match (s, masks) {
            (LayerSpec::Dropout(d), Some((seed, step))) => {
                RefLayer::new(*s, dropout_mask(seed, step, 0, m, d.features, d.p as f64), Vec::new())
            }
            _ => RefLayer::new(*s, to_f64(w), to_f64(b)),
        })
        .collect();
    let t = c.trunk.layers.len();
    let mut sources = c.trunk.sources.clone();
    sources.extend((t..all.len()).map(|i| vec![i]));
    (layers, sources)
}

/// The GPU's gradients (dropout at seed 0, step 1, offset 0: what `gradients` draws) against
/// the reference's with those masks, and both against the reference's central differences.
fn check_gradients(c: &Case, what: &str) {
    let net = network(c);
    let (gpu_loss, gpu_grads) = gradients(&gpu(), &net, &c.data, &BceSettings::default()).unwrap();
    let (mut layers, sources) = ref_layers(c, Some((0, 1)));
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
    let mut checked = 0;
    let with_params: Vec<usize> = (0..layers.len()).filter(|&li| layers[li].spec.has_params()).collect();
    for li in with_params {
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
            let name = format!("{what}: layer {li} ({}) {}", layers[li].spec.describe(), if which == 0 { "weight" } else { "bias" });
            let a32: Vec<f32> = analytic.iter().map(|&v| v as f32).collect();
            assert_close(&format!("{name} (reference vs differences)"), &a32, &fd, Tolerance { rel: 1e-5, abs: 1e-6 });
            assert_close(&format!("{name} (GPU vs differences)"), gpu_g, &fd, Tolerance { rel: 1e-3, abs: 1e-4 });
            checked += n;
        }
    }
    assert!(checked > 100, "{what}: only {checked} parameters checked");
}

#[test]
fn gradients_through_se_concat_pool_channel_last_and_dropout_equal_central_differences() {
    for p in [0.0, 0.3] {
        check_gradients(&case(se_concat_trunk(p), 3, 7, 1), &format!("pool SE, concat(conv, x), dropout {p}"));
        check_gradients(&case(torchvision_se_trunk(p), 4, 5, 2), &format!("torchvision SE, concat of branches, dropout {p}"));
    }
}

#[test]
fn the_builder_wires_squeeze_excite_and_concat() {
    let t = se_concat_trunk(0.2);
    // 0 conv; 1 pool, 2 dense, 3 dense, 4 multiply(0's output, 3's); 5 conv, 6 concat(5's, 0's → 4's); 7 dropout; ...
    assert_eq!(t.sources[4], vec![1, 4]);
    assert_eq!(t.sources[5], vec![5]);
    assert_eq!(t.sources[6], vec![6, 5]);
    assert!(matches!(t.layers[6], LayerSpec::Concat(c) if c.part_channels() == [3, 4] && c.out_channels() == 7));
    assert!(matches!(t.layers[7], LayerSpec::Dropout(d) if d.chw == Some([7, 6, 5]) && d.p == 0.2));
    assert!(matches!(t.layers[11], LayerSpec::Dropout(d) if d.chw.is_none() && d.features == 6));
    assert_eq!(t.layers[9].outputs(), 42);
    // a chain-only build refuses the wiring instead of dropping it
    let err = CnnBuilder::new(1, 4, 4).squeeze_excite(|b| b.global_avg_pool().dense(1, Activation::Sigmoid)).build().unwrap_err();
    assert!(err.to_string().contains("build_graph"), "{err}");
    // a convolution reading a dense layer's output is still refused
    let err = CnnBuilder::new(1, 4, 4).dense(16, Activation::Relu).conv(1, 3, 1, 1, Activation::Relu).build_graph().unwrap_err();
    assert!(err.to_string().contains("must come before the dense layers"), "{err}");
    // parts of different heights do not concatenate, even where their sizes agree
    let err = CnnBuilder::new(2, 6, 6).concat(|b| b.conv(2, 3, 2, 1, Activation::Relu), |b| b).build_graph();
    assert!(err.is_err());
    // a 2×3 plane and a 3×2 one have the same size: still refused
    let conv = LayerSpec::Conv2d(Conv2dSpec::square([1, 2, 3], 2, 1, 1, 0, Activation::Identity, true));
    let pool = LayerSpec::AdaptiveAvgPool2d(AdaptivePoolSpec { channels: 2, height: 2, width: 3, out_height: 3, out_width: 2 });
    let cat = LayerSpec::Concat(ConcatSpec::new(&[2, 2], 2, 3).unwrap());
    let trunk = Trunk { layers: vec![conv, pool, cat], sources: vec![vec![0], vec![1], vec![1, 2]], names: vec![None; 3] };
    let err = Network::from_trunk(&gpu(), 6, trunk.clone(), Init::KaimingUniform, Head::classes(2), 1).unwrap_err();
    assert!(err.to_string().contains("planes"), "{err}");
    let fine = Trunk { sources: vec![vec![0], vec![1], vec![1, 1]], ..trunk };
    Network::from_trunk(&gpu(), 6, fine, Init::KaimingUniform, Head::classes(2), 1).unwrap();
    let t = CnnBuilder::new(2, 4, 4).concat_branches(vec![
        Box::new(|b: CnnBuilder| b),
        Box::new(|b: CnnBuilder| b),
        Box::new(|b: CnnBuilder| b),
        Box::new(|b: CnnBuilder| b),
        Box::new(|b: CnnBuilder| b),
    ]);
    let err = t.build_graph().unwrap_err();
    assert!(err.to_string().contains("2 to 4"), "{err}");
    // dropout's probability is checked
    let err = CnnBuilder::new(2, 4, 4).dropout(1.5).build_graph().unwrap_err();
    assert!(err.to_string().contains("[0, 1]"), "{err}");
}

/// Softmax of each row of `[m, k]` logits.
fn softmax(logits: &[f64], k: usize) -> Vec<f64> {
    logits
        .chunks(k)
        .flat_map(|row| {
            let max = row.iter().cloned().fold(f64::MIN, f64::max);
            let e: Vec<f64> = row.iter().map(|v| (v - max).exp()).collect();
            let s: f64 = e.iter().sum();
            e.into_iter().map(move |v| v / s)
        })
        .collect()
}

#[test]
fn evaluation_and_prediction_take_dropout_as_the_identity() {
    let c = case(se_concat_trunk(0.5), 3, 11, 3);
    let net = network(&c);
    let (layers, sources) = ref_layers(&c, None);
    let x = to_f64(&c.data.x);
    let (_, a) = forward_graph(&layers, &sources, &x, c.data.n);
    let logits = a.last().unwrap();
    let probs = predict(&net, &c.data.x, c.data.n, 4).unwrap();
    assert_close("predict with dropout 0.5", &probs, &softmax(logits, 3), Tolerance::F32);
    let (ref_loss, _) = loss(logits, c.data.n, 3, &c.target);
    let eval = Trainer::new(&gpu(), TrainConfig::default()).evaluate(&net, &c.data).unwrap();
    // (the reference's batch loss is already the mean over the rows)
    assert!((eval.loss - ref_loss).abs() <= 1e-5 * ref_loss.abs().max(1.0), "evaluation loss {} vs the identity's {ref_loss}", eval.loss);
}

#[test]
fn training_follows_the_reference_masks_included_and_reruns_are_bit_identical() {
    let gpu = gpu();
    let c = case(se_concat_trunk(0.3), 3, 21, 4);
    let (layers, sources) = ref_layers(&c, None);
    let specs: Vec<LayerSpec> = layers.iter().map(|l| l.spec).collect();
    let adam = Adam { lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, decoupled: false };
    let cfg = TrainConfig { optimizer: Optimizer::adam(0.01), batch_size: 8, seed: 5, ..TrainConfig::default() };
    let mut net = network(&c);
    Trainer::new(&gpu, cfg.clone()).fit(&mut net, &c.data, 2).unwrap();
    let all: Vec<Option<f64>> = specs.iter().map(|s| s.has_params().then_some(1.0)).collect();
    // three steps an epoch (8, 8 and 5 rows), each with its own masks
    let want = reference_train(&specs, &sources, &c.values, &c.data, RefOpt::Adam(adam), &all, 8, 2, 5);
    let got = net.values().unwrap();
    for (i, (g, r)) in got.iter().zip(&want).enumerate() {
        assert_close(&format!("layer {i} weight"), &g.0, &r.0, Tolerance::F32);
        assert_close(&format!("layer {i} bias"), &g.1, &r.1, Tolerance::F32);
    }
    // masks that ignored the step (or identity) would give other weights: the check has teeth
    let no_dropout = reference_train(
        &se_concat_trunk(0.0).layers.iter().chain(&c.head).copied().collect::<Vec<_>>(),
        &sources,
        &c.values,
        &c.data,
        RefOpt::Adam(adam),
        &all,
        8,
        2,
        5,
    );
    let far = got.iter().zip(&no_dropout).any(|(g, r)| g.0.iter().zip(&r.0).any(|(a, b)| (*a as f64 - b).abs() > 1e-3));
    assert!(far, "training with dropout 0.3 ended where training without it does");

    // the same seed: the same bits; another seed: other masks, other weights
    let mut again = network(&c);
    Trainer::new(&gpu, cfg.clone()).fit(&mut again, &c.data, 2).unwrap();
    assert_eq!(again.values().unwrap(), got, "a rerun gave other bits");
    let mut other = network(&c);
    // the shuffle depends on the seed too: keep the order, so only the masks differ
    let cfg_order = TrainConfig { shuffle: false, ..cfg.clone() };
    Trainer::new(&gpu, cfg_order.clone()).fit(&mut other, &c.data, 1).unwrap();
    let mut other_seed = network(&c);
    Trainer::new(&gpu, TrainConfig { seed: 6, ..cfg_order }).fit(&mut other_seed, &c.data, 1).unwrap();
    assert_ne!(other.values().unwrap(), other_seed.values().unwrap(), "another seed drew the same masks");
}

#[test]
fn a_network_with_dropout_se_and_concat_learns() {
    let gpu = gpu();
    // labels that depend on the input: the class of the largest of three input regions' sums
    let mut c = case(se_concat_trunk(0.2), 3, 96, 7);
    let d = c.data.d;
    let y: Vec<u32> = (0..c.data.n)
        .map(|r| {
            let row = &c.data.x[r * d..(r + 1) * d];
            let sums: Vec<f32> = row.chunks(d.div_ceil(3)).map(|p| p.iter().sum()).collect();
            (0..3).max_by(|&a, &b| sums[a].total_cmp(&sums[b])).unwrap() as u32
        })
        .collect();
    c.data.targets = Targets::Classes { y, num_classes: 3 };
    let mut net = network(&c);
    let cfg = TrainConfig { optimizer: Optimizer::adam(0.01), batch_size: 16, seed: 1, ..TrainConfig::default() };
    let report = Trainer::new(&gpu, cfg).fit(&mut net, &c.data, 30).unwrap();
    let first = report.epochs.first().unwrap().train.loss;
    let last = report.last().unwrap().train.loss;
    assert!(last < 0.7 * first, "the training loss went from {first} to {last}");
}

#[test]
fn the_layers_survive_a_checkpoint() {
    let gpu = gpu();
    for trunk in [se_concat_trunk(0.25), torchvision_se_trunk(0.1)] {
        let c = case(trunk, 3, 10, 5);
        let net = network(&c);
        let dir = TempDir::new("layers-ckpt");
        let path = dir.path().join("layers.safetensors");
        net.save(&path, headswap::checkpoint::StorageDtype::F32).unwrap();
        let back = Network::load(&gpu, &path).unwrap();
        assert_eq!(back.sources(), net.sources());
        assert_eq!(back.layers(), net.layers());
        assert_eq!(back.values().unwrap(), net.values().unwrap());
        let t = Trainer::new(&gpu, TrainConfig::default());
        assert_eq!(t.evaluate(&back, &c.data).unwrap().loss, t.evaluate(&net, &c.data).unwrap().loss);
    }
    // a head swapped for one with dropout, under torchvision's classifier names
    let c = case(se_concat_trunk(0.0), 3, 10, 6);
    let mut net = network(&c);
    net.swap_head(Head::classes(4).dropout(0.2).module("classifier"), 1).unwrap();
    let dir = TempDir::new("layers-head-ckpt");
    let path = dir.path().join("head.safetensors");
    net.save(&path, headswap::checkpoint::StorageDtype::F32).unwrap();
    let back = Network::load(&gpu, &path).unwrap();
    assert_eq!(back.layers(), net.layers());
    assert_eq!(back.module_names(), net.module_names());
    assert_eq!(back.head_module(), Some("classifier"));
    assert_eq!(back.values().unwrap(), net.values().unwrap());
}

#[test]
fn a_head_with_dropout_draws_masks_on_cached_features() {
    let gpu = gpu();
    let c = case(torchvision_se_trunk(0.0), 3, 19, 6);
    let width = c.trunk.layers.last().unwrap().outputs();
    let make = || {
        let head = Head::classes(3).dropout(0.4).module("classifier");
        Network::from_trunk(&gpu, c.data.d, c.trunk.clone(), Init::KaimingUniform, head, 8).unwrap()
    };
    let net = make();
    // torchvision's classifier: Sequential(Dropout(p), Linear) → classifier.1.weight
    let names = net.module_names();
    assert_eq!(&names[names.len() - 2..], ["classifier.0", "classifier.1"]);
    assert!(net.param_names().contains(&"classifier.1.weight".to_string()), "{:?}", net.param_names());
    assert!(matches!(net.layers()[names.len() - 2], LayerSpec::Dropout(d) if d.features == width && d.p == 0.4));
    let err = Network::from_trunk(&gpu, c.data.d, c.trunk.clone(), Init::KaimingUniform, Head::classes(3).dropout(2.0), 8);
    assert!(err.is_err());

    // only the head's Linear trains, on the trunk's cached features; its dropout still draws a
    // mask per step, as the reference trainer does
    let cfg = TrainConfig { optimizer: Optimizer::sgd(0.1).momentum(0.9), batch_size: 8, seed: 3, ..TrainConfig::default() };
    let mut net = make();
    let values = net.values().unwrap();
    let report = Trainer::new(&gpu, cfg).fine_tune(&mut net, &c.data, Freeze::Trunk, 2).unwrap();
    assert!(report.cached_features);
    let specs = net.layers();
    let mults: Vec<Option<f64>> = (0..specs.len()).map(|i| (i == specs.len() - 1).then_some(1.0)).collect();
    let sgd = Sgd { lr: 0.1, momentum: 0.9, dampening: 0.0, weight_decay: 0.0, nesterov: false };
    let want = reference_train(&specs, net.sources(), &values, &c.data, RefOpt::Sgd(sgd), &mults, 8, 2, 3);
    let top = specs.len() - 1;
    let got = net.values().unwrap();
    assert_close("head weight", &got[top].0, &want[top].0, Tolerance::F32);
    assert_close("head bias", &got[top].1, &want[top].1, Tolerance::F32);
    // without the masks the head would have ended elsewhere
    let no_masks: Vec<LayerSpec> =
        specs.iter().map(|s| if let LayerSpec::Dropout(d) = s { LayerSpec::Dropout(DropoutSpec { p: 0.0, ..*d }) } else { *s }).collect();
    let identity = reference_train(&no_masks, net.sources(), &values, &c.data, RefOpt::Sgd(sgd), &mults, 8, 2, 3);
    assert!(got[top].0.iter().zip(&identity[top].0).any(|(a, b)| (*a as f64 - b).abs() > 1e-3), "the head's dropout did nothing");
}

#[test]
fn replicas_draw_the_masks_of_one_trainer() {
    let gpu = gpu();
    let c = case(se_concat_trunk(0.3), 3, 37, 9);
    let cfg = TrainConfig { optimizer: Optimizer::adam(0.01), batch_size: 16, seed: 4, ..TrainConfig::default() };
    let run = |replica: Option<ThreadGroup>| {
        let mut net = network(&c);
        let mut t = Trainer::new(&gpu, cfg.clone());
        if let Some(r) = replica {
            t = t.with_replicas(r);
        }
        t.fit(&mut net, &c.data, 2).unwrap();
        net.values().unwrap()
    };
    let alone = run(None);
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = ThreadGroup::new(2).unwrap().into_iter().map(|r| s.spawn(|| run(Some(r)))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(results[0] == results[1], "the replicas differ");
    for (l, ((aw, _), (rw, _))) in alone.iter().zip(&results[0]).enumerate() {
        let scale = aw.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-3) as f64;
        let worst = aw.iter().zip(rw).map(|(x, y)| (x - y).abs() as f64).fold(0.0, f64::max);
        assert!(worst <= 1e-5 * scale, "layer {l}: replicas differ from one trainer by {worst:e} (scale {scale:e})");
    }
}

#[test]
fn a_resumed_run_draws_the_masks_of_the_uninterrupted_one() {
    let gpu = gpu();
    let c = case(se_concat_trunk(0.4), 3, 20, 11);
    let cfg = TrainConfig { optimizer: Optimizer::adam(0.01), batch_size: 8, seed: 2, ..TrainConfig::default() };
    let mut straight = network(&c);
    Trainer::new(&gpu, cfg.clone()).fit(&mut straight, &c.data, 3).unwrap();
    let mut first = network(&c);
    let mut trainer = Trainer::new(&gpu, cfg.clone());
    trainer.fit(&mut first, &c.data, 1).unwrap();
    let state = trainer.training_state().unwrap().clone();
    Trainer::new(&gpu, cfg).resume(&mut first, &c.data, &state, 3).unwrap();
    assert_eq!(first.values().unwrap(), straight.values().unwrap(), "the resumed run drew other masks");
}
