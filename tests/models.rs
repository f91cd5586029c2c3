//! Built-in architectures (resnet18/34/50, mobilenet_v2): exactly torchvision's state_dict keys and shapes (the lists in
//! `tests/fixtures/torchvision/`, written by `scripts/torchvision_keys.py` from torchvision's own
//! classes), and evaluation-mode outputs equal to the float64 reference of the same network, with
//! γ, β and running statistics that are not the defaults.
mod common;
use common::models::{reference_logits, torchvision_model};
use common::*;
use headswap::nn::Network;
use headswap::nn::models::Arch;
use std::path::Path;

/// torchvision's `(key, shape)` list for `arch`.
fn torchvision_keys(arch: &str) -> Vec<(String, Vec<usize>)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torchvision").join(format!("{arch}.keys"));
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let (k, s) = l.split_once(' ').unwrap();
            let shape = if s == "-" { Vec::new() } else { s.split('x').map(|d| d.parse().unwrap()).collect() };
            (k.to_string(), shape)
        })
        .collect()
}

#[test]
fn every_builtin_architecture_has_torchvisions_keys_and_shapes() {
    for arch in Arch::ALL {
        let net = torchvision_model(arch, 32, 32, 1);
        let sd = net.to_checkpoint().unwrap();
        let ours: Vec<(String, Vec<usize>)> = sd
            .tensors
            .iter()
            .map(|t| (t.name.clone(), t.shape.clone()))
            .chain(sd.int_tensors.iter().map(|t| (t.name.clone(), t.shape.clone())))
            .collect();
        let mut ours_sorted = ours.clone();
        ours_sorted.sort();
        let mut theirs = torchvision_keys(arch.name());
        theirs.sort();
        assert_eq!(ours_sorted, theirs, "{}", arch.name());
        assert_eq!(net.trunk_output_dim(), arch.features());
    }
}

#[test]
fn resnet18_eval_outputs_equal_the_float64_reference() {
    // 3×37×45: odd sizes through every stride
    let (h, w, n) = (37, 45, 2);
    let net = torchvision_model(Arch::ResNet18, h, w, 5);
    let x = rand_range(9, n * 3 * h * w, -2.0, 2.0);
    // the logits: the network's outputs before the softmax predict applies
    let logits = logits(&net, &x, n);
    let want = reference_logits(&net, &x, n);
    let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
    assert!(scale > 1e-3, "the logits are not all ~0 ({scale})");
    assert_close("resnet18 logits against the float64 reference", &logits, &want, Tolerance { rel: 1e-4, abs: 1e-4 * scale });
}

#[test]
fn resnet50_eval_outputs_equal_the_float64_reference() {
    let (h, w, n) = (33, 32, 1);
    let net = torchvision_model(Arch::ResNet50, h, w, 6);
    let x = rand_range(10, n * 3 * h * w, -2.0, 2.0);
    let logits = logits(&net, &x, n);
    let want = reference_logits(&net, &x, n);
    let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
    assert_close("resnet50 logits against the float64 reference", &logits, &want, Tolerance { rel: 1e-4, abs: 1e-4 * scale });
}

#[test]
fn mobilenet_v2_eval_outputs_equal_the_float64_reference() {
    let (h, w, n) = (35, 32, 2);
    let net = torchvision_model(Arch::MobileNetV2, h, w, 7);
    // depthwise convolutions, ReLU6, inverted residuals without an activation after the add,
    // and the classifier's dropout, the identity in evaluation
    assert!(net.module_names().iter().any(|m| m == "features.3.conv.1.0"));
    assert_eq!(net.module_names().last().map(String::as_str), Some("classifier.1"));
    let x = rand_range(11, n * 3 * h * w, -2.0, 2.0);
    let logits = logits(&net, &x, n);
    let want = reference_logits(&net, &x, n);
    let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
    assert!(scale > 1e-3, "the logits are not all ~0 ({scale})");
    assert_close("mobilenet_v2 logits against the float64 reference", &logits, &want, Tolerance { rel: 1e-4, abs: 1e-4 * scale });
}

#[test]
fn a_too_small_input_is_refused_up_front() {
    let err = Arch::ResNet18.trunk(3, 16, 64).unwrap_err().to_string();
    assert!(err.contains("at least 32×32"), "{err}");
    assert_eq!(Arch::parse("resnet50"), Some(Arch::ResNet50));
    assert_eq!(Arch::parse("resnet51"), None);
}

/// The network's logits (evaluation mode).
fn logits(net: &Network, x: &[f32], n: usize) -> Vec<f32> {
    headswap::train::predict_logits(net, x, n, n).unwrap()
}
