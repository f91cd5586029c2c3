//! Layers named by module path: a network built the way its PyTorch class is written
//! (`CnnBuilder::name`/`scope`, `Head::module`) has exactly that class's state_dict keys, loads
//! PyTorch's own state_dict under them and computes PyTorch's outputs; the names survive a
//! checkpoint, a head-swap and freezing by name; a pretrained file loads into a network with a new
//! head with a report of what was applied, missing, unexpected and of another shape.
//!
//! The fixture is `tests/fixtures/module-paths/`, written by `scripts/module_paths_fixture.py`
//! (torch): a small ResNet-style network without BatchNorm, its state_dict, an input batch and
//! PyTorch's logits.
mod common;
use common::*;
use headswap::Error;
use headswap::checkpoint::{self, StorageDtype};
use headswap::data::{Dataset, Targets};
use headswap::kernels::Activation;
use headswap::nn::{CnnBuilder, Head, Init, LoadOptions, Network, Trunk};
use headswap::train::{Optimizer, ParamGroups, TrainConfig, Trainer};
use std::path::Path;

fn fixture(name: &str) -> checkpoint::Checkpoint {
    checkpoint::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/module-paths").join(name)).unwrap()
}

/// `TinyResNet` of the fixture script, block by block as torchvision writes `BasicBlock`.
fn tiny_resnet() -> Trunk {
    let block = |b: CnnBuilder, out: usize, stride: usize| {
        b.residual(
            |b| b.conv(out, 3, stride, 1, Activation::Relu).name("conv1").conv(out, 3, 1, 1, Activation::Identity).name("conv2"),
            Activation::Relu,
        )
    };
    CnnBuilder::new(3, 9, 9)
        .conv(8, 3, 1, 1, Activation::Relu)
        .name("conv1")
        .scope("layer1", |b| b.scope("0", |b| block(b, 8, 1)).scope("1", |b| block(b, 16, 2)))
        .global_avg_pool()
        .name("avgpool")
        .build_graph()
        .unwrap()
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

#[test]
fn a_network_written_like_its_pytorch_class_has_its_state_dict_keys_and_outputs() {
    let gpu = gpu();
    let sd = fixture("tiny_resnet.safetensors");
    let mut net = Network::from_trunk(&gpu, 3 * 9 * 9, tiny_resnet(), Init::KaimingUniform, Head::classes(10).module("fc"), 1).unwrap();
    // exactly PyTorch's keys (safetensors stores them sorted; ours come in module order)
    let ours = net.param_names();
    let mut theirs: Vec<&str> = sd.names().collect();
    theirs.sort_unstable();
    let mut sorted = ours.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, theirs);
    assert_eq!(net.module_names()[..5], ["conv1", "layer1.0.conv1", "layer1.0.conv2", "layer1.0", "layer1.1.conv1"]);
    assert_eq!(net.module_names()[6..9], ["layer1.1.downsample.0", "layer1.1", "avgpool"]);

    let report = net.load_state_dict(&sd, LoadOptions { strict: true, ..Default::default() }, "tiny_resnet").unwrap();
    assert!(report.is_exact(), "{report}");
    assert_eq!(report.applied.len(), 14);

    let io = fixture("tiny_resnet_io.safetensors");
    let x = io.get("input").unwrap();
    let logits = io.get("logits").unwrap();
    let n = x.shape[0];
    let probs = headswap::train::predict(&net, &x.data, n, 2).unwrap();
    assert_close("softmax of the logits against PyTorch's", &probs, &softmax(&logits.data, 10), Tolerance { rel: 1e-4, abs: 1e-6 });

    // a checkpoint keeps the names: saved, loaded, the same keys and the same outputs
    let dir = TempDir::new("module-paths");
    let path = dir.path().join("net.safetensors");
    net.save(&path, StorageDtype::F32).unwrap();
    let saved = checkpoint::load(&path).unwrap();
    assert_eq!(saved.names().collect::<Vec<_>>(), ours);
    let back = Network::load(&gpu, &path).unwrap();
    assert_eq!(back.module_names(), net.module_names());
    assert_eq!(back.head_module(), Some("fc"));
    assert_eq!(headswap::train::predict(&back, &x.data, n, 2).unwrap(), probs);
}

#[test]
fn a_pretrained_file_loads_into_a_network_with_a_new_head_and_reports_what_it_did() {
    let gpu = gpu();
    let sd = fixture("tiny_resnet.safetensors");
    // the task-B network: the same trunk, a fresh 3-label head at the same path
    let mut net = Network::from_trunk(&gpu, 3 * 9 * 9, tiny_resnet(), Init::KaimingUniform, Head::labels(3).module("fc"), 5).unwrap();
    let fresh_head = net.layer_values(net.layers().len() - 1).unwrap();
    let report = net.load_state_dict(&sd, LoadOptions::default(), "tiny_resnet").unwrap();
    assert_eq!(report.applied.len(), 12);
    assert!(report.applied.iter().all(|n| !n.starts_with("fc.")));
    assert_eq!(report.mismatched, vec![("fc.weight".into(), vec![10, 16], vec![3, 16]), ("fc.bias".into(), vec![10], vec![3])]);
    assert!(report.missing.is_empty() && report.unexpected.is_empty());
    assert!(report.to_string().contains("fc.weight [10, 16] in the file, [3, 16] here"), "{report}");
    // the trunk holds the file's values, the head its initialisation
    let conv1 = net.layer_values(0).unwrap();
    assert_eq!(conv1.0, sd.get("conv1.weight").unwrap().data);
    assert_eq!(net.layer_values(net.layers().len() - 1).unwrap(), fresh_head);
    // strict refuses the same file, and leaves the network as it was
    let before = net.values().unwrap();
    let mut other = Network::from_trunk(&gpu, 3 * 9 * 9, tiny_resnet(), Init::KaimingUniform, Head::labels(3).module("fc"), 6).unwrap();
    let other_before = other.values().unwrap();
    let err = other.load_state_dict(&sd, LoadOptions { strict: true, ..Default::default() }, "tiny_resnet").unwrap_err();
    assert!(err.to_string().contains("strict") && err.to_string().contains("fc.weight"), "{err}");
    assert_eq!(other.values().unwrap(), other_before);
    assert_eq!(net.values().unwrap(), before);

    // the head under another name: the file's fc is unexpected, the new head missing
    let mut renamed =
        Network::from_trunk(&gpu, 3 * 9 * 9, tiny_resnet(), Init::KaimingUniform, Head::labels(3).module("classifier"), 5).unwrap();
    let report = renamed.load_state_dict(&sd, LoadOptions::default(), "tiny_resnet").unwrap();
    let mut unexpected = report.unexpected.clone();
    unexpected.sort_unstable();
    assert_eq!(unexpected, ["fc.bias", "fc.weight"]);
    assert_eq!(report.missing, ["classifier.weight", "classifier.bias"]);
}

#[test]
fn missing_or_reshaped_trunk_tensors_are_refused_unless_asked_to_initialise_them() {
    let gpu = gpu();
    let mut sd = fixture("tiny_resnet.safetensors");
    sd.tensors.retain(|t| t.name != "layer1.0.conv2.bias");
    let mut net = Network::from_trunk(&gpu, 3 * 9 * 9, tiny_resnet(), Init::KaimingUniform, Head::classes(10).module("fc"), 1).unwrap();
    let before = net.values().unwrap();
    let err = net.load_state_dict(&sd, LoadOptions::default(), "partial.safetensors").unwrap_err();
    assert!(matches!(err, Error::Format { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("partial.safetensors") && msg.contains("layer1.0.conv2.bias is missing") && msg.contains("init_missing_trunk"),
        "{msg}"
    );
    assert_eq!(net.values().unwrap(), before, "a refused load changes nothing");
    let report = net.load_state_dict(&sd, LoadOptions { init_missing_trunk: true, ..Default::default() }, "partial").unwrap();
    assert_eq!(report.missing, ["layer1.0.conv2.bias"]);
    assert_eq!(report.applied.len(), 13);
    // a trunk model of another width: every conv has another shape
    let narrow = CnnBuilder::new(3, 9, 9).conv(4, 3, 1, 1, Activation::Relu).name("conv1").global_avg_pool().build_graph().unwrap();
    let mut net = Network::from_trunk(&gpu, 3 * 9 * 9, narrow, Init::KaimingUniform, Head::classes(10).module("fc"), 1).unwrap();
    let msg = net.load_state_dict(&sd, LoadOptions::default(), "wide").unwrap_err().to_string();
    assert!(msg.contains("conv1.weight has shape [8, 3, 3, 3], the network's is [4, 3, 3, 3]"), "{msg}");
}

#[test]
fn names_survive_a_head_swap_and_select_what_trains() {
    let gpu = gpu();
    let mut net = Network::from_trunk(&gpu, 3 * 9 * 9, tiny_resnet(), Init::KaimingUniform, Head::classes(10).module("fc"), 1).unwrap();
    net.load_state_dict(&fixture("tiny_resnet.safetensors"), LoadOptions::default(), "tiny_resnet").unwrap();
    // a swapped head keeps its path unless given another
    let report = net.swap_head(Head::labels(2), 3).unwrap();
    assert_eq!(net.head_module(), Some("fc"));
    assert!(report.to_string().contains("(fc)"), "{report}");
    assert_eq!(net.param_names()[12..], ["fc.weight", "fc.bias"]);
    net.swap_head(Head::labels(2).hidden(4, Activation::Relu).module("classifier"), 3).unwrap();
    assert_eq!(net.param_names()[12..], ["classifier.0.weight", "classifier.0.bias", "classifier.2.weight", "classifier.2.bias"]);

    // freeze the first block by its module path: it stays bit-identical, the rest trains
    let before = net.values().unwrap();
    let n = 24;
    let x = rand_vec(9, n * 3 * 9 * 9);
    let y: Vec<f32> = (0..n * 2).map(|i| ((i * 7) % 3 == 0) as u8 as f32).collect();
    let d = 3 * 9 * 9;
    let data =
        Dataset { x, n, d, input_shape: vec![3, 9, 9], targets: Targets::Labels { y, k: 2 }, label_names: vec!["a".into(), "b".into()] };
    let groups = ParamGroups::new().freeze("layer1.0").train("*", 1.0);
    let cfg = TrainConfig { batch_size: 8, optimizer: Optimizer::adam(1e-2), seed: 4, ..Default::default() };
    Trainer::new(&gpu, cfg).fine_tune_groups(&mut net, &data, &groups, 1).unwrap();
    let after = net.values().unwrap();
    for (i, name) in net.module_names().iter().enumerate() {
        if !net.layers()[i].has_params() {
            continue;
        }
        if name.starts_with("layer1.0.") {
            assert_eq!(after[i], before[i], "{name} is frozen");
        } else {
            assert_ne!(after[i], before[i], "{name} trains");
        }
    }
}

#[test]
fn bad_module_paths_and_duplicate_names_are_refused() {
    let gpu = gpu();
    for bad in ["", "layer1..conv", ".x", "a b", "fc.weight!"] {
        let err = CnnBuilder::new(1, 4, 4).conv(2, 3, 1, 1, Activation::Relu).name(bad).build_graph().unwrap_err();
        assert!(err.to_string().contains("not a module path"), "{bad:?}: {err}");
    }
    let err = CnnBuilder::new(1, 4, 4).name("conv1").conv(2, 3, 1, 1, Activation::Relu).build_graph().unwrap_err();
    assert!(err.to_string().contains("before any layer"), "{err}");
    let twice = CnnBuilder::new(1, 4, 4)
        .conv(2, 3, 1, 1, Activation::Relu)
        .name("conv")
        .conv(2, 3, 1, 1, Activation::Relu)
        .name("conv")
        .global_avg_pool()
        .build_graph()
        .unwrap();
    let err = Network::from_trunk(&gpu, 16, twice, Init::KaimingUniform, Head::classes(2), 1).unwrap_err();
    assert!(err.to_string().contains("two layers are named \"conv\""), "{err}");
    // a head path that collides with a trunk layer
    let t = CnnBuilder::new(1, 4, 4).conv(2, 3, 1, 1, Activation::Relu).name("fc").global_avg_pool().build_graph().unwrap();
    assert!(Network::from_trunk(&gpu, 16, t, Init::KaimingUniform, Head::classes(2).module("fc"), 1).is_err());
    // unnamed layers keep their Sequential index, beside named ones
    let mixed = CnnBuilder::new(1, 4, 4)
        .conv(2, 3, 1, 1, Activation::Relu)
        .name("stem")
        .global_avg_pool()
        .dense(3, Activation::Relu)
        .build_graph()
        .unwrap();
    let net = Network::from_trunk(&gpu, 16, mixed, Init::KaimingUniform, Head::classes(2), 1).unwrap();
    // (conv 0, its ReLU 1, the pool 2 and its flatten 3, dense 4, its ReLU 5, the head 6)
    assert_eq!(net.module_names(), ["stem", "2", "4", "6"]);
}

/// `TinyResNet(bias=False)`: torchvision's convolutions have no bias (a BatchNorm follows each).
/// `CnnBuilder::conv_bias(false)` builds it, projection shortcut included: no `.bias` keys for the
/// convolutions, PyTorch's state_dict loads strictly, the outputs are PyTorch's, and a checkpoint
/// keeps it.
#[test]
fn convolutions_without_bias_match_pytorch_bias_false() {
    let gpu = gpu();
    let sd = fixture("tiny_resnet_nobias.safetensors");
    let block = |b: CnnBuilder, out: usize, stride: usize| {
        b.residual(
            |b| b.conv(out, 3, stride, 1, Activation::Relu).name("conv1").conv(out, 3, 1, 1, Activation::Identity).name("conv2"),
            Activation::Relu,
        )
    };
    let trunk = CnnBuilder::new(3, 9, 9)
        .conv_bias(false)
        .conv(8, 3, 1, 1, Activation::Relu)
        .name("conv1")
        .scope("layer1", |b| b.scope("0", |b| block(b, 8, 1)).scope("1", |b| block(b, 16, 2)))
        .global_avg_pool()
        .build_graph()
        .unwrap();
    let mut net = Network::from_trunk(&gpu, 3 * 9 * 9, trunk, Init::KaimingUniform, Head::classes(10).module("fc"), 1).unwrap();
    let mut ours = net.param_names();
    ours.sort_unstable();
    let mut theirs: Vec<String> = sd.names().map(str::to_string).collect();
    theirs.sort_unstable();
    assert_eq!(ours, theirs);
    assert!(!ours.iter().any(|n| n.ends_with(".bias") && n != "fc.bias"), "{ours:?}");
    let report = net.load_state_dict(&sd, LoadOptions { strict: true, ..Default::default() }, "nobias").unwrap();
    assert!(report.is_exact(), "{report}");
    let io = fixture("tiny_resnet_nobias_io.safetensors");
    let (x, logits) = (io.get("input").unwrap(), io.get("logits").unwrap());
    let probs = headswap::train::predict(&net, &x.data, x.shape[0], 2).unwrap();
    assert_close(
        "softmax of the logits against PyTorch's (bias=False)",
        &probs,
        &softmax(&logits.data, 10),
        Tolerance { rel: 1e-4, abs: 1e-6 },
    );
    let dir = TempDir::new("module-paths-nobias");
    let path = dir.path().join("net.safetensors");
    net.save(&path, StorageDtype::F32).unwrap();
    let back = Network::load(&gpu, &path).unwrap();
    assert_eq!(back.trunk_layers(), net.trunk_layers());
    assert_eq!(headswap::train::predict(&back, &x.data, x.shape[0], 2).unwrap(), probs);
    // it trains: the convolutions' weights move, and nothing asks for a bias gradient
    let before = back.values().unwrap();
    let mut back = back;
    let n = 12;
    let data = Dataset {
        x: rand_vec(3, n * 243),
        n,
        d: 243,
        input_shape: vec![3, 9, 9],
        targets: Targets::Classes { y: (0..n as u32).map(|i| i % 10).collect(), num_classes: 10 },
        label_names: (0..10).map(|i| format!("c{i}")).collect(),
    };
    let cfg = TrainConfig { batch_size: 4, optimizer: Optimizer::adam(1e-2), seed: 1, ..Default::default() };
    Trainer::new(&gpu, cfg).fit(&mut back, &data, 1).unwrap();
    let after = back.values().unwrap();
    assert_ne!(after[0].0, before[0].0);
    assert!(after[0].1.is_empty());
}

/// ResNet's stem as torchvision writes it: a 7×7/2 convolution without bias, ReLU,
/// `MaxPool2d(3, 2, 1)` (windows past both edges of an odd-sized input), a block, the head.
#[test]
fn resnets_stem_with_padded_max_pooling_matches_pytorch() {
    let gpu = gpu();
    let sd = fixture("stem.safetensors");
    let trunk = CnnBuilder::new(3, 19, 17)
        .conv_bias(false)
        .conv(8, 7, 2, 3, Activation::Relu)
        .name("conv1")
        .max_pool_padded(3, 2, 1)
        .name("maxpool")
        .scope("layer1", |b| {
            b.scope("0", |b| {
                b.residual(
                    |b| b.conv(8, 3, 1, 1, Activation::Relu).name("conv1").conv(8, 3, 1, 1, Activation::Identity).name("conv2"),
                    Activation::Relu,
                )
            })
        })
        .global_avg_pool()
        .build_graph()
        .unwrap();
    assert_eq!(trunk.layers[1].out_chw(), Some([8, 5, 5]));
    let mut net = Network::from_trunk(&gpu, 3 * 19 * 17, trunk, Init::KaimingUniform, Head::classes(10).module("fc"), 1).unwrap();
    let report = net.load_state_dict(&sd, LoadOptions { strict: true, ..Default::default() }, "stem").unwrap();
    assert!(report.is_exact(), "{report}");
    let io = fixture("stem_io.safetensors");
    let (x, logits) = (io.get("input").unwrap(), io.get("logits").unwrap());
    let probs = headswap::train::predict(&net, &x.data, x.shape[0], 3).unwrap();
    assert_close("softmax of the stem's logits against PyTorch's", &probs, &softmax(&logits.data, 10), Tolerance { rel: 1e-4, abs: 1e-6 });
}
