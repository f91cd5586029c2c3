//! Networks with grouped and depthwise convolutions, rectangular kernels and strides, asymmetric
//! padding and ceil_mode pooling (issue 13's MobileNetV2, CREPE and GoogLeNet layers): the
//! GPU's gradients equal the float64 reference's and its central differences, training follows
//! the reference trainer, and the layers survive a checkpoint whose JSON stays what it was for
//! the layers that existed before.
mod common;
use common::trainer::{RefOpt, reference_train};
use common::*;
use headswap::Rng;
use headswap::data::{Dataset, Targets};
use headswap::kernels::Activation;
use headswap::nn::{CnnBuilder, Conv2dSpec, DenseSpec, HeadKind, Init, LayerSpec, Network, Pool2dSpec, Trunk};
use headswap::reference::network::{RefLayer, RefLoss, forward_graph, loss, loss_and_grads_graph};
use headswap::reference::optim::Adam;
use headswap::train::{BceSettings, Optimizer, TrainConfig, Trainer, gradients};

/// A MobileNetV2-style block over 2×7×7 (3×3 conv, depthwise 3×3 stride 2, pointwise 1×1), a
/// grouped 3×3 (2 groups), a CREPE-style tall kernel with a stride (2, 1) after an asymmetric
/// pad, an average pool with ceil_mode (a partial window), then the global pool.
fn mobile_trunk() -> Trunk {
    let tall = Conv2dSpec {
        out_channels: 4,
        kernel: [3, 1],
        stride: [2, 1],
        padding: [1, 0, 0, 1],
        ..Conv2dSpec::square([0; 3], 4, 1, 1, 0, Activation::Tanh, true)
    };
    let ceil_avg = Pool2dSpec { ceil_mode: true, ..Pool2dSpec::square([0; 3], 2, 2, 0) };
    CnnBuilder::new(2, 7, 7)
        .conv(4, 3, 1, 1, Activation::Relu6) //      4×7×7
        .conv_bias(false)
        .depthwise(3, 2, 1, Activation::Tanh) //     4×4×4, weight [4, 1, 3, 3]
        .conv(6, 1, 1, 0, Activation::Identity) //   6×4×4
        .conv_bias(true)
        .conv_grouped(4, 3, 1, 1, 2, Activation::Tanh) // 4×4×4, weight [4, 3, 3, 3]
        .conv_spec(tall) //                          4×2×5
        .pool_spec(ceil_avg, false) //               4×1×3
        .global_avg_pool()
        .build_graph()
        .unwrap()
}

/// GoogLeNet's `MaxPool2d(3, 2, ceil_mode=True)` between a convolution and a depthwise one with
/// a channel multiplier (groups = 3, 6 outputs).
fn ceil_max_trunk() -> Trunk {
    CnnBuilder::new(3, 8, 8)
        .conv(3, 3, 1, 0, Activation::Tanh) //        3×6×6
        .max_pool_ceil(3, 2, 0) //                     3×3×3 (floor would give 2×2)
        .conv_grouped(6, 2, 1, 1, 3, Activation::Relu) // 6×4×4
        .global_avg_pool()
        .build_graph()
        .unwrap()
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
    let head = vec![LayerSpec::Dense(DenseSpec { inputs: width, outputs: classes, activation: Activation::Identity })];
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

fn ref_layers(c: &Case) -> (Vec<RefLayer>, Vec<Vec<usize>>) {
    let all: Vec<LayerSpec> = c.trunk.layers.iter().chain(&c.head).copied().collect();
    let layers = all.iter().zip(&c.values).map(|(s, (w, b))| RefLayer::new(*s, to_f64(w), to_f64(b))).collect();
    let t = c.trunk.layers.len();
    let mut sources = c.trunk.sources.clone();
    sources.extend((t..all.len()).map(|i| vec![i]));
    (layers, sources)
}

/// Every weight and bias gradient: the reference's analytic one against its central
/// differences, and the GPU's against those.
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
            let a32: Vec<f32> = analytic.iter().map(|&v| v as f32).collect();
            assert_close(&format!("{name} (reference vs differences)"), &a32, &fd, Tolerance { rel: 1e-5, abs: 1e-6 });
            assert_close(&format!("{name} (GPU vs differences)"), gpu_g, &fd, Tolerance { rel: 1e-3, abs: 1e-4 });
        }
    }
}

#[test]
fn the_trunks_have_the_shapes_pytorch_gives() {
    let t = mobile_trunk();
    let shapes: Vec<Option<[usize; 3]>> = t.layers.iter().map(|l| l.out_chw()).collect();
    let want = [[4, 7, 7], [4, 4, 4], [6, 4, 4], [4, 4, 4], [4, 2, 5], [4, 1, 3]];
    assert_eq!(shapes[..6], want.map(Some));
    assert_eq!(t.layers[1].weight_shape(), Some(vec![4, 1, 3, 3]));
    assert_eq!(t.layers[1].bias_len(), 0);
    assert_eq!(t.layers[3].weight_shape(), Some(vec![4, 3, 3, 3]));
    assert_eq!(t.layers[4].weight_shape(), Some(vec![4, 4, 3, 1]));
    // PyTorch's fans: fan_in = C/groups·KH·KW, fan_out = O·KH·KW
    assert_eq!(t.layers[1].fans(), (9, 36));
    assert_eq!(t.layers[3].fans(), (27, 36));
    assert_eq!(t.layers[4].fans(), (12, 12));
    assert_eq!(ceil_max_trunk().layers[1].out_chw(), Some([3, 3, 3]));
    // groups that do not divide the channels: a typed shape error at build, naming the op
    let e = CnnBuilder::new(3, 5, 5).conv_grouped(4, 3, 1, 1, 2, Activation::Relu).build_graph().unwrap_err();
    assert!(matches!(e, headswap::Error::Shape { .. }) && e.to_string().contains("groups"), "{e}");
}

#[test]
fn grouped_networks_gradients_equal_central_differences() {
    check_gradients(&case(mobile_trunk(), 3, 5, 1), "depthwise, grouped, tall kernel, ceil avg pool");
    check_gradients(&case(ceil_max_trunk(), 3, 4, 2), "ceil max pool, channel multiplier");
}

#[test]
fn grouped_networks_train_like_the_reference() {
    let gpu = gpu();
    for (trunk, name) in [(mobile_trunk(), "mobile"), (ceil_max_trunk(), "ceil max")] {
        let c = case(trunk, 3, 21, 3);
        let (layers, sources) = ref_layers(&c);
        let specs: Vec<LayerSpec> = layers.iter().map(|l| l.spec).collect();
        let adam = Adam { lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, decoupled: false };
        let cfg = TrainConfig { optimizer: Optimizer::adam(0.01), batch_size: 8, seed: 5, ..TrainConfig::default() };
        let mut net = network(&c);
        let mut t = Trainer::new(&gpu, cfg);
        let before = t.evaluate(&net, &c.data).unwrap().loss;
        t.fit(&mut net, &c.data, 3).unwrap();
        let after = t.evaluate(&net, &c.data).unwrap().loss;
        assert!(after < before, "{name}: loss {before} → {after}");
        let all: Vec<Option<f64>> = specs.iter().map(|s| s.has_params().then_some(1.0)).collect();
        let want = reference_train(&specs, &sources, &c.values, &c.data, RefOpt::Adam(adam), &all, 8, 3, 5);
        for (i, (g, r)) in net.values().unwrap().iter().zip(&want).enumerate() {
            assert_close(&format!("{name}: layer {i} weight"), &g.0, &r.0, Tolerance::F32);
            assert_close(&format!("{name}: layer {i} bias"), &g.1, &r.1, Tolerance::F32);
        }
    }
}

#[test]
fn grouped_layers_survive_a_checkpoint_and_old_layers_keep_their_json() {
    let gpu = gpu();
    let c = case(mobile_trunk(), 3, 6, 4);
    let net = network(&c);
    let dir = TempDir::new("grouped-ckpt");
    let path = dir.path().join("mobile.safetensors");
    net.save(&path, headswap::checkpoint::StorageDtype::F32).unwrap();
    let back = Network::load(&gpu, &path).unwrap();
    assert_eq!(back.layers(), net.layers());
    assert_eq!(back.values().unwrap(), net.values().unwrap());
    let t = Trainer::new(&gpu, TrainConfig::default());
    assert_eq!(t.evaluate(&back, &c.data).unwrap().loss, t.evaluate(&net, &c.data).unwrap().loss);
    // the JSON: lists and groups only where a layer needs them
    let ckpt = headswap::checkpoint::load(&path).unwrap();
    let json: serde_json::Value = serde_json::from_str(&ckpt.metadata[headswap::checkpoint::LAYERS_KEY]).unwrap();
    let layer = |i: usize| json[i].as_object().unwrap().clone();
    let plain = layer(0);
    assert_eq!((plain["kernel"].clone(), plain["stride"].clone(), plain["padding"].clone()), (3.into(), 1.into(), 1.into()));
    assert!(!plain.contains_key("groups") && !plain.contains_key("bias"), "{plain:?}");
    assert_eq!(layer(1)["groups"], 4);
    assert_eq!(layer(3)["groups"], 2);
    let tall = layer(4);
    assert_eq!(tall["kernel"], serde_json::json!([3, 1]));
    assert_eq!(tall["stride"], serde_json::json!([2, 1]));
    assert_eq!(tall["padding"], serde_json::json!([1, 0, 0, 1]));
    assert_eq!(layer(5)["ceil_mode"], true);
    assert_eq!(layer(5)["kernel"], 2);
}

#[test]
fn bad_grouped_layer_json_is_a_readable_error() {
    let gpu = gpu();
    let c = case(mobile_trunk(), 3, 6, 4);
    let dir = TempDir::new("grouped-json");
    let path = dir.path().join("mobile.safetensors");
    network(&c).save(&path, headswap::checkpoint::StorageDtype::F32).unwrap();
    let ckpt = headswap::checkpoint::load(&path).unwrap();
    let key = headswap::checkpoint::LAYERS_KEY;
    let json: serde_json::Value = serde_json::from_str(&ckpt.metadata[key]).unwrap();
    for (layer, field, value, needle) in [
        (4, "kernel", serde_json::json!([3, 1, 2]), "a list of 2"),
        (4, "padding", serde_json::json!([1, 0]), "a list of 4"),
        (5, "ceil_mode", serde_json::json!(1), "true or false"),
        (1, "groups", serde_json::json!(-1), "non-negative integer"),
        // 3 groups do not divide the 4 channels: the kernel library's shape error, naming groups
        (1, "groups", serde_json::json!(3), "groups"),
    ] {
        let mut bad = json.clone();
        bad[layer][field] = value;
        let mut tampered = ckpt.clone();
        tampered.metadata.insert(key.into(), bad.to_string());
        let p = dir.path().join("bad.safetensors");
        headswap::checkpoint::save(&p, &tampered, headswap::checkpoint::StorageDtype::F32).unwrap();
        let e = Network::load(&gpu, &p).unwrap_err().to_string();
        assert!(e.contains(needle), "{field}: {e}");
    }
}
