//! Convolutional trunks end to end: a CNN learns the shapes task, fine-tunes with its conv trunk
//! frozen (bit-identical, cached features), and round-trips through a checkpoint whose names and
//! layouts are a `torch.nn.Sequential` CNN's state_dict.
mod common;
use common::*;
use headswap::kernels::Activation;
use headswap::nn::{CnnBuilder, Head, LayerSpec, Network};
use headswap::train::{Freeze, Optimizer, TrainConfig, Trainer};

fn trunk() -> Vec<LayerSpec> {
    CnnBuilder::new(1, 16, 16)
        .conv(4, 3, 1, 1, Activation::Relu)
        .max_pool(2, 2)
        .conv(8, 3, 1, 1, Activation::Relu)
        .max_pool(2, 2)
        .dense(32, Activation::Relu)
        .build()
        .unwrap()
}

#[test]
fn cnn_pretrains_swaps_head_and_fine_tunes_with_a_frozen_conv_trunk() {
    let gpu = gpu();
    let mut net = Network::from_specs(&gpu, 256, trunk(), Default::default(), Head::classes(8), 1).unwrap();
    let cfg = TrainConfig { optimizer: Optimizer::sgd(0.05).momentum(0.9), batch_size: 32, seed: 1, ..TrainConfig::default() };
    let mut t = Trainer::new(&gpu, cfg);
    t.fit(&mut net, &headswap::data::synthetic::shapes_task_a(1500, 16, 1), 4).unwrap();
    let acc = t.evaluate(&net, &headswap::data::synthetic::shapes_task_a(400, 16, 2)).unwrap().accuracy.unwrap();
    assert!(acc > 0.6, "CNN task-A accuracy {acc} (chance: 0.125)");

    let before: Vec<_> = (0..5).map(|i| net.layer_values(i).unwrap()).collect();
    net.swap_head(Head::labels(4), 3).unwrap();
    let r = t.fine_tune(&mut net, &headswap::data::synthetic::scenes_task_b(100, 16, 3), Freeze::Trunk, 3).unwrap();
    assert!(r.cached_features, "a frozen conv trunk's features are cached");
    for (i, b) in before.iter().enumerate() {
        assert_eq!(&net.layer_values(i).unwrap(), b, "frozen layer {i} changed");
    }
    // LastK(1) trains the dense trunk layer only; the convolutions stay
    let r = t.fine_tune(&mut net, &headswap::data::synthetic::scenes_task_b(100, 16, 3), Freeze::LastK(1), 1).unwrap();
    assert_eq!(r.lowest_trainable, 4);
    assert_eq!(net.layer_values(0).unwrap(), before[0]);
    assert_ne!(net.layer_values(4).unwrap(), before[4]);
}

#[test]
fn cnn_checkpoint_has_sequential_names_and_round_trips() {
    let gpu = gpu();
    let net = Network::from_specs(&gpu, 256, trunk(), Default::default(), Head::labels(4), 5).unwrap();
    let ckpt = net.to_checkpoint().unwrap();
    // Sequential(Conv2d, ReLU, MaxPool2d, Conv2d, ReLU, MaxPool2d, Flatten, Linear, ReLU, Linear)
    let shapes: Vec<(String, Vec<usize>)> = ckpt.tensors.iter().map(|t| (t.name.clone(), t.shape.clone())).collect();
    let expected = [
        ("0.weight", vec![4, 1, 3, 3]),
        ("0.bias", vec![4]),
        ("3.weight", vec![8, 4, 3, 3]),
        ("3.bias", vec![8]),
        ("7.weight", vec![32, 128]),
        ("7.bias", vec![32]),
        ("9.weight", vec![4, 32]),
        ("9.bias", vec![4]),
    ];
    assert_eq!(shapes, expected.iter().map(|(n, s)| (n.to_string(), s.clone())).collect::<Vec<_>>());

    let path = std::env::temp_dir().join(format!("headswap-cnn-{}.safetensors", std::process::id()));
    net.save(&path, headswap::checkpoint::StorageDtype::F32).unwrap();
    let back = Network::load(&gpu, &path).unwrap();
    assert_eq!(back.layers(), net.layers());
    assert_eq!(back.values().unwrap(), net.values().unwrap());
    let x = rand_range(9, 3 * 256, 0.0, 1.0);
    assert_eq!(headswap::train::predict(&net, &x, 3, 2).unwrap(), headswap::train::predict(&back, &x, 3, 2).unwrap());
    let _ = std::fs::remove_file(path);
}

#[test]
fn a_pytorch_cnn_state_dict_without_metadata_loads_given_the_architecture() {
    use headswap::checkpoint::{Checkpoint, NamedTensor};
    use headswap::nn::{DenseSpec, HeadKind};
    let gpu = gpu();
    // what `save_file(model.state_dict(), ...)` writes for
    // Sequential(Conv2d(1,4,3,padding=1), ReLU, MaxPool2d(2), Conv2d(4,8,3,padding=1), ReLU,
    //            MaxPool2d(2), Flatten, Linear(128,32), ReLU, Linear(32,4))
    let shapes: [(&str, Vec<usize>); 8] = [
        ("0.weight", vec![4, 1, 3, 3]),
        ("0.bias", vec![4]),
        ("3.weight", vec![8, 4, 3, 3]),
        ("3.bias", vec![8]),
        ("7.weight", vec![32, 128]),
        ("7.bias", vec![32]),
        ("9.weight", vec![4, 32]),
        ("9.bias", vec![4]),
    ];
    let mut sd = Checkpoint::new();
    for (i, (name, shape)) in shapes.iter().enumerate() {
        let n = shape.iter().product();
        sd.push(NamedTensor::new(*name, shape.clone(), rand_vec(40 + i as u64, n)).unwrap()).unwrap();
    }
    sd.metadata.insert("format".into(), "pt".into());
    let head = vec![LayerSpec::Dense(DenseSpec { inputs: 32, outputs: 4, activation: Activation::Identity })];
    let net = Network::from_state_dict_layers(&gpu, &sd, trunk(), head.clone(), HeadKind::Labels, "torch.safetensors").unwrap();
    assert_eq!(net.layer_values(0).unwrap().0, sd.get("0.weight").unwrap().data);
    assert_eq!(net.layer_values(5).unwrap().1, sd.get("9.bias").unwrap().data);
    // a wrong architecture is an error that says what does not match
    let mut wrong = sd.clone();
    wrong.take("3.weight");
    let err = Network::from_state_dict_layers(&gpu, &wrong, trunk(), head, HeadKind::Labels, "torch.safetensors").unwrap_err();
    assert!(err.to_string().contains("3.weight"), "{err}");
}
