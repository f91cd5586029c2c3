//! BatchNorm as a network layer: a torchvision-style ResNet with BatchNorm loads PyTorch's
//! state_dict (running statistics and `num_batches_tracked` included, from `.safetensors` and
//! `.pth`) and gives PyTorch's evaluation-mode outputs; one training-mode step equals PyTorch's,
//! running statistics included; folded (conv → BN in one launch) and unfolded forwards agree;
//! gradients in both modes equal the float64 reference's and its central differences; head-only
//! fine-tuning leaves trunk and statistics untouched; the statistics survive a checkpoint.
//!
//! The fixture is `tests/fixtures/batchnorm/`, written by `scripts/batchnorm_fixture.py` (torch).
mod common;
use common::*;
use headswap::Rng;
use headswap::checkpoint::{self, StorageDtype};
use headswap::data::{Dataset, Targets};
use headswap::kernels::Activation::{self, Identity, Relu, Tanh};
use headswap::nn::{CnnBuilder, Head, HeadKind, Init, LayerSpec, LoadOptions, Network, Trunk};
use headswap::reference::network::{RefLayer, RefLoss, RefNorm, forward_graph_norm, loss, loss_and_grads_graph_norm};
use headswap::train::{BatchNormMode, BceSettings, Freeze, Optimizer, TrainConfig, Trainer, gradients_with};
use std::path::Path;

fn fixture(name: &str) -> checkpoint::Checkpoint {
    checkpoint::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/batchnorm").join(name)).unwrap()
}

/// The fixture's `TinyResNet`, written as its PyTorch class is.
fn tiny_resnet_bn() -> Trunk {
    let block = |b: CnnBuilder, out: usize, stride: usize, project: bool| {
        let body = move |b: CnnBuilder| {
            b.conv(out, 3, stride, 1, Identity)
                .name("conv1")
                .batch_norm(Relu)
                .name("bn1")
                .conv(out, 3, 1, 1, Identity)
                .name("conv2")
                .batch_norm(Identity)
                .name("bn2")
        };
        if project {
            b.residual_with(body, |s| s.conv(out, 1, stride, 0, Identity).name("0").batch_norm(Identity).name("1"), Relu)
        } else {
            b.residual(body, Relu)
        }
    };
    CnnBuilder::new(3, 13, 13)
        .conv_bias(false)
        .conv(8, 3, 1, 1, Identity)
        .name("conv1")
        .batch_norm(Relu)
        .name("bn1")
        .max_pool_padded(3, 2, 1)
        .name("maxpool")
        .scope("layer1", |b| b.scope("0", |b| block(b, 8, 1, false)))
        .scope("layer2", |b| b.scope("0", |b| block(b, 16, 2, true)))
        .global_avg_pool()
        .name("avgpool")
        .build_graph()
        .unwrap()
}

fn loaded(file: &str) -> Network {
    let mut net =
        Network::from_trunk(&gpu(), 3 * 13 * 13, tiny_resnet_bn(), Init::KaimingUniform, Head::classes(5).module("fc"), 3).unwrap();
    let report = net.load_state_dict(&fixture(file), LoadOptions { strict: true, ..Default::default() }, file).unwrap();
    assert!(report.is_exact(), "{report}");
    net
}

fn softmax(logits: &[f32], classes: usize) -> Vec<f64> {
    logits
        .chunks(classes)
        .flat_map(|row| {
            let m = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
            let e: Vec<f64> = row.iter().map(|&v| (v as f64 - m).exp()).collect();
            let s: f64 = e.iter().sum();
            e.into_iter().map(move |v| v / s)
        })
        .collect()
}

fn io_data() -> Dataset {
    let io = fixture("tiny_resnet_bn_io.safetensors");
    let x = io.get("x").unwrap();
    let y: Vec<u32> = io.get("y").unwrap().data.iter().map(|&v| v as u32).collect();
    let n = x.shape[0];
    Dataset {
        x: x.data.clone(),
        n,
        d: 3 * 13 * 13,
        input_shape: vec![3, 13, 13],
        targets: Targets::Classes { y, num_classes: 5 },
        label_names: (0..5).map(|i| format!("c{i}")).collect(),
    }
}

/// Index of the layer named `name`.
fn layer(net: &Network, name: &str) -> usize {
    net.module_names().iter().position(|n| n == name).unwrap_or_else(|| panic!("no layer {name}"))
}

#[test]
fn a_torchvision_style_resnet_with_batchnorm_loads_and_gives_pytorchs_eval_outputs() {
    let sd = fixture("tiny_resnet_bn.safetensors");
    let mut theirs: Vec<String> = sd.names().chain(sd.int_names()).map(str::to_string).collect();
    theirs.sort_unstable();
    let io = fixture("tiny_resnet_bn_io.safetensors");
    let data = io_data();
    let want = softmax(&io.get("logits").unwrap().data, 5);
    for file in ["tiny_resnet_bn.safetensors", "tiny_resnet_bn.pth"] {
        let net = loaded(file);
        let mut ours: Vec<String> = net.param_names().into_iter().chain(net.buffer_names()).collect();
        ours.sort_unstable();
        assert_eq!(ours, theirs, "{file}: the network's keys are the PyTorch class's");
        let bn = layer(&net, "layer2.0.downsample.1");
        let stats = net.running_stats(bn).unwrap().unwrap();
        assert_eq!(stats.running_mean, sd.get("layer2.0.downsample.1.running_mean").unwrap().data);
        assert_eq!(stats.running_var, sd.get("layer2.0.downsample.1.running_var").unwrap().data);
        assert_eq!(stats.num_batches_tracked, 7);
        let probs = headswap::train::predict(&net, &data.x, data.n, 4).unwrap();
        assert_close(&format!("{file}: outputs against PyTorch's eval()"), &probs, &want, Tolerance { rel: 1e-4, abs: 1e-6 });
    }
}

#[test]
fn folded_and_unfolded_batchnorm_forwards_agree() {
    // evaluation folds every conv → BN pair into one convolution; the gradient probe runs every
    // BatchNorm as its own layer (inference mode): the same loss
    let net = loaded("tiny_resnet_bn.safetensors");
    let data = io_data();
    let cfg = TrainConfig { batch_size: 6, ..Default::default() };
    let folded = Trainer::new(&gpu(), cfg).evaluate(&net, &data).unwrap().loss;
    let (unfolded, _) = gradients_with(&gpu(), &net, &data, &BceSettings::default(), BatchNormMode::Frozen).unwrap();
    assert!((folded - unfolded).abs() <= 1e-5 * unfolded.abs().max(1.0), "folded {folded} vs unfolded {unfolded}");
    // and nothing in the network moved (the probe runs inference mode)
    let bn = layer(&net, "bn1");
    assert_eq!(net.running_stats(bn).unwrap().unwrap().num_batches_tracked, 7);
}

#[test]
fn a_training_mode_step_equals_pytorchs_with_its_running_statistics() {
    let mut net = loaded("tiny_resnet_bn.safetensors");
    let io = fixture("tiny_resnet_bn_io.safetensors");
    let data = io_data();
    let cfg = TrainConfig { optimizer: Optimizer::sgd(0.1), batch_size: 6, shuffle: false, ..Default::default() };
    let report = Trainer::new(&gpu(), cfg).fit(&mut net, &data, 1).unwrap();
    let want_loss = io.get("loss").unwrap().data[0] as f64;
    assert!((report.epochs[0].train.loss - want_loss).abs() < 1e-5, "loss {} vs PyTorch {want_loss}", report.epochs[0].train.loss);
    let after = net.to_checkpoint().unwrap();
    let mut compared = 0;
    for t in &after.tensors {
        let want = io.get(&format!("after.{}", t.name)).unwrap_or_else(|| panic!("PyTorch has no {}", t.name));
        assert_close(&format!("{} after one step", t.name), &t.data, &to_f64(&want.data), Tolerance { rel: 1e-4, abs: 1e-5 });
        compared += 1;
    }
    // 6 convolutions, 6 BatchNorms (γ, β, mean, var), fc weight and bias
    assert_eq!(compared, 6 + 6 * 4 + 2);
    for b in after.int_tensors.iter() {
        assert_eq!(b.data, [8], "{}: one more batch tracked", b.name);
    }
}

#[test]
fn head_only_fine_tuning_on_cached_features_trains_nothing_but_the_head() {
    let mut net = loaded("tiny_resnet_bn.safetensors");
    net.swap_head(Head::labels(3).module("fc"), 9).unwrap();
    let data = io_data();
    let mut rng = Rng::new(4);
    let y: Vec<f32> = (0..data.n * 3).map(|_| rng.below(2) as f32).collect();
    let data = Dataset { targets: Targets::Labels { y, k: 3 }, label_names: vec!["a".into(), "b".into(), "c".into()], ..data };
    let t = net.trunk_layers().len();
    let before: Vec<_> = (0..t).map(|i| (net.layer_values(i).unwrap(), net.running_stats(i).unwrap())).collect();
    let cfg = TrainConfig { optimizer: Optimizer::adam(0.01), batch_size: 4, ..Default::default() };
    let mut trainer = Trainer::new(&gpu(), cfg);
    let report = trainer.fine_tune(&mut net, &data, Freeze::Trunk, 3).unwrap();
    assert!(report.cached_features, "a frozen BatchNorm trunk is a fixed function: its features are cached");
    for (i, (values, stats)) in before.iter().enumerate() {
        assert_eq!(&net.layer_values(i).unwrap(), values, "trunk layer {i} is bit-identical");
        assert_eq!(&net.running_stats(i).unwrap(), stats, "trunk layer {i}'s statistics are untouched");
    }
    let state = trainer.training_state().unwrap();
    assert!(state.optimizer_state.iter().all(|(name, _)| name.starts_with("fc.")), "only the head has optimizer state");
}

#[test]
fn fine_tuning_everything_works_with_batchnorm_frozen_and_training() {
    let data = io_data();
    let bn = |net: &Network| net.running_stats(layer(net, "layer1.0.bn2")).unwrap().unwrap();
    for mode in [BatchNormMode::Frozen, BatchNormMode::Train] {
        let mut net = loaded("tiny_resnet_bn.safetensors");
        let before = bn(&net);
        let cfg = TrainConfig { optimizer: Optimizer::sgd(0.02).momentum(0.9), batch_size: 3, batch_norm: mode, ..Default::default() };
        let report = Trainer::new(&gpu(), cfg).fine_tune(&mut net, &data, Freeze::All, 6).unwrap();
        let (first, last) = (report.epochs[0].train.loss, report.epochs.last().unwrap().train.loss);
        assert!(last < first, "{mode:?}: the loss falls ({first} → {last})");
        let after = bn(&net);
        match mode {
            BatchNormMode::Frozen => assert_eq!(after, before, "frozen statistics stay"),
            _ => {
                assert_ne!(after.running_mean, before.running_mean, "training-mode statistics move");
                assert_eq!(after.num_batches_tracked, 7 + 6 * 2, "one batch tracked per step");
            }
        }
    }
}

#[test]
fn running_statistics_survive_a_checkpoint() {
    let mut net = loaded("tiny_resnet_bn.pth");
    let data = io_data();
    let cfg = TrainConfig { optimizer: Optimizer::sgd(0.05), batch_size: 4, ..Default::default() };
    Trainer::new(&gpu(), cfg).fit(&mut net, &data, 1).unwrap();
    let dir = TempDir::new("bn-ckpt");
    let path = dir.path().join("net.safetensors");
    net.save(&path, StorageDtype::F32).unwrap();
    let back = Network::load(&gpu(), &path).unwrap();
    for i in 0..net.layers().len() {
        assert_eq!(back.running_stats(i).unwrap(), net.running_stats(i).unwrap(), "layer {i}");
        assert_eq!(back.layer_values(i).unwrap(), net.layer_values(i).unwrap(), "layer {i}");
    }
    assert_eq!(back.running_stats(layer(&back, "bn1")).unwrap().unwrap().num_batches_tracked, 9);
    let p1 = headswap::train::predict(&net, &data.x, data.n, 6).unwrap();
    let p2 = headswap::train::predict(&back, &data.x, data.n, 6).unwrap();
    assert_eq!(p1, p2);
}

/// A network with BatchNorm after a convolution (foldable), after an activation (CREPE's
/// order, an affine op of its own), in a residual block, and a BatchNorm1d after a dense layer,
/// with γ, β and running statistics that are not the defaults.
fn mixed_network(seed: u64) -> (Network, Vec<RefLayer>, Vec<Vec<usize>>) {
    let trunk = CnnBuilder::new(2, 7, 5)
        .conv_bias(false)
        .conv(3, 3, 1, 1, Identity)
        .batch_norm(Tanh)
        .conv_bias(true)
        .conv(4, 3, 2, 1, Relu)
        .batch_norm_with(1e-3, 0.3, Identity)
        .residual(|b| b.conv(4, 3, 1, 1, Identity).batch_norm(Identity), Activation::Relu)
        .global_avg_pool()
        .dense(5, Tanh)
        .batch_norm(Identity)
        .build_graph()
        .unwrap();
    let head = vec![LayerSpec::Dense(headswap::nn::DenseSpec { inputs: 5, outputs: 3, activation: Identity })];
    let all: Vec<LayerSpec> = trunk.layers.iter().chain(&head).copied().collect();
    let mut rng = Rng::new(seed);
    let mut values = Vec::new();
    let mut running = Vec::new();
    for spec in &all {
        let (mut w, mut b) = Init::KaimingUniform.layer(spec, &mut rng);
        let mut stats = None;
        if let LayerSpec::BatchNorm(bn) = spec {
            let c = bn.channels;
            w = (0..c).map(|_| rng.uniform(0.5, 1.5) as f32).collect();
            b = (0..c).map(|_| rng.uniform(-0.3, 0.3) as f32).collect();
            let mean: Vec<f32> = (0..c).map(|_| rng.uniform(-0.4, 0.4) as f32).collect();
            let var: Vec<f32> = (0..c).map(|_| rng.uniform(0.3, 2.0) as f32).collect();
            stats = Some((mean, var));
        }
        values.push((w, b));
        running.push(stats);
    }
    let mut net = Network::from_graph_layers(&gpu(), trunk, head, HeadKind::Classes, &values).unwrap();
    let mut refs = Vec::new();
    for (i, (spec, (w, b))) in all.iter().zip(&values).enumerate() {
        let mut r = RefLayer::new(*spec, to_f64(w), to_f64(b));
        if let Some((mean, var)) = &running[i] {
            net.set_running_stats(i, mean, var, 0).unwrap();
            r.running = to_f64(mean).into_iter().chain(to_f64(var)).collect();
        }
        refs.push(r);
    }
    let sources = net.sources().to_vec();
    (net, refs, sources)
}

fn param(l: &mut [RefLayer], li: usize, which: usize, j: usize) -> &mut f64 {
    if which == 0 { &mut l[li].w[j] } else { &mut l[li].b[j] }
}

fn check_mode(mode: BatchNormMode, norm: RefNorm) {
    let (net, mut layers, sources) = mixed_network(11);
    let m = 7;
    let d = net.input_dim();
    let x32 = rand_range(5, m * d, -1.5, 1.5);
    let mut rng = Rng::new(6);
    let y: Vec<u32> = (0..m).map(|_| rng.below(3) as u32).collect();
    let data = Dataset {
        x: x32.clone(),
        n: m,
        d,
        input_shape: vec![2, 7, 5],
        targets: Targets::Classes { y: y.clone(), num_classes: 3 },
        label_names: vec!["a".into(), "b".into(), "c".into()],
    };
    let target = RefLoss::Softmax(y);
    let x = to_f64(&x32);
    let (gpu_loss, gpu_grads) = gradients_with(&gpu(), &net, &data, &BceSettings::default(), mode).unwrap();
    let (ref_loss, ref_grads) = loss_and_grads_graph_norm(&layers, &sources, &x, m, &target, norm);
    assert!((gpu_loss - ref_loss).abs() <= 1e-4 * ref_loss.abs().max(1.0), "{mode:?}: loss {gpu_loss} vs {ref_loss}");
    let loss_of = |layers: &[RefLayer]| {
        let (_, a) = forward_graph_norm(layers, &sources, &x, m, norm);
        loss(a.last().unwrap(), m, 3, &target).0
    };
    let eps = 1e-6;
    for li in 0..layers.len() {
        for which in 0..2 {
            let n = if which == 0 { layers[li].w.len() } else { layers[li].b.len() };
            let fd: Vec<f64> = (0..n)
                .map(|j| {
                    let orig = *param(&mut layers, li, which, j);
                    *param(&mut layers, li, which, j) = orig + eps;
                    let up = loss_of(&layers);
                    *param(&mut layers, li, which, j) = orig - eps;
                    let down = loss_of(&layers);
                    *param(&mut layers, li, which, j) = orig;
                    (up - down) / (2.0 * eps)
                })
                .collect();
            let (analytic, gpu_g) = if which == 0 { (&ref_grads[li].0, &gpu_grads[li].0) } else { (&ref_grads[li].1, &gpu_grads[li].1) };
            let name = format!("{mode:?}: layer {li} ({}) {}", net.layers()[li].describe(), if which == 0 { "weight" } else { "bias" });
            let a32: Vec<f32> = analytic.iter().map(|&v| v as f32).collect();
            assert_close(&format!("{name} (reference vs differences)"), &a32, &fd, Tolerance { rel: 1e-5, abs: 1e-6 });
            assert_close(&format!("{name} (GPU vs differences)"), gpu_g, &fd, Tolerance { rel: 1e-3, abs: 1e-4 });
        }
    }
}

#[test]
fn inference_mode_gradients_equal_central_differences() {
    check_mode(BatchNormMode::Frozen, RefNorm::Running);
}

#[test]
fn training_mode_gradients_equal_central_differences() {
    check_mode(BatchNormMode::Train, RefNorm::Batch);
}

#[test]
fn a_batch_of_one_in_training_mode_is_refused_with_the_reason() {
    let (mut net, _, _) = mixed_network(2);
    let d = net.input_dim();
    let data = Dataset {
        x: rand_vec(1, d),
        n: 1,
        d,
        input_shape: vec![2, 7, 5],
        targets: Targets::Classes { y: vec![1], num_classes: 3 },
        label_names: vec!["a".into(), "b".into(), "c".into()],
    };
    let cfg = TrainConfig { batch_size: 1, ..Default::default() };
    let err = Trainer::new(&gpu(), cfg).fit(&mut net, &data, 1).unwrap_err().to_string();
    assert!(err.contains("more than one value per channel"), "{err}");
}

/// Two data-parallel replicas with BatchNorm in training mode (each normalising its share of the
/// batch, as PyTorch's DDP without SyncBatchNorm) train, and end with the same parameters and
/// the same running statistics: rank 0's, as DDP's `broadcast_buffers` gives.
#[test]
fn data_parallel_replicas_end_with_one_set_of_running_statistics() {
    use headswap::train::ThreadGroup;
    let data = io_data();
    let group = ThreadGroup::new(2).unwrap();
    let cfg = TrainConfig {
        optimizer: Optimizer::sgd(0.05),
        batch_size: 6,
        shuffle: false,
        batch_norm: BatchNormMode::Train,
        ..Default::default()
    };
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = group
            .into_iter()
            .map(|r| {
                let (data, cfg) = (&data, cfg.clone());
                s.spawn(move || {
                    let mut net = loaded("tiny_resnet_bn.safetensors");
                    Trainer::new(&gpu(), cfg).with_replicas(r).fit(&mut net, data, 2).unwrap();
                    let stats: Vec<_> = (0..net.layers().len()).map(|i| net.running_stats(i).unwrap()).collect();
                    (net.values().unwrap(), stats)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(results[0] == results[1], "the replicas end apart");
    let bn1 = results[0].1.iter().flatten().next().unwrap();
    assert_eq!(bn1.num_batches_tracked, 7 + 2);
    let single = loaded("tiny_resnet_bn.safetensors");
    assert_ne!(single.running_stats(1).unwrap().unwrap().running_mean, bn1.running_mean, "the statistics moved");
}
