//! A trunk whose parameters are stored in f16 (`Network::set_trunk_storage`): the conversion
//! on the GPU against the `half` crate bit for bit (round to nearest, ties to even; widening
//! back exact), half the bytes on the device, values and checkpoints read back widened, a
//! save → load round trip that keeps f16 and the exact values, a value beyond f16's range
//! refused, training such a trunk refused with what to do, and the frozen forward pass of
//! torchvision-style resnet18 and mobilenet_v2 (random weights, non-default BatchNorm
//! statistics): its logits within 1e-3 relative of the f32 network's, and equal to the float64
//! reference of the f16 values at f32 tolerance (so what is left is the rounding of the
//! weights, not the mechanism); a head trained alone on a small conv + BatchNorm trunk in f16 the
//! same cached, uncached and on the same values in f32. Reruns are bit-identical.
mod common;
use common::models::{reference_logits, torchvision_model};
use common::*;
use half::f16;
use headswap::Rng;
use headswap::nn::models::Arch;
use headswap::nn::{DenseSpec, Head, HeadKind, Init, LayerSpec, Network};
use headswap::train::{Freeze, Precision, TrainConfig, Trainer};

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// f16 bytes of a trunk: half its f32 bytes, plus at most 256 bytes a layer (views of an f16
/// arena are 256-byte aligned, 128 halves, against 64 values in f32).
fn assert_halved(what: &str, b16: u64, b32: u64, layers: usize) {
    assert!(b16 >= b32 / 2 && b16 <= b32 / 2 + 256 * layers as u64, "{what}: {b16} bytes in f16 against {b32} in f32");
}

fn rounded(v: &[f32]) -> Vec<u32> {
    v.iter().map(|&x| f16::from_f32(x).to_f32().to_bits()).collect()
}

/// A dense trunk of odd widths (7 → 33 → 127 → 1) and a 3-class head.
fn odd_mlp(seed: u64) -> Network {
    Network::new(&gpu(), &[7, 33, 127, 1], Head::classes(3), seed).unwrap()
}

#[test]
fn trunk_to_f16_and_back_matches_half_bit_for_bit() {
    let mut net = odd_mlp(3);
    let before = net.values().unwrap();
    let t = net.trunk_layers().len();
    let bytes32 = net.trunk_param_bytes();
    assert_eq!(net.trunk_storage(), Precision::F32);
    net.set_trunk_storage(Precision::F16).unwrap();
    assert_eq!(net.trunk_storage(), Precision::F16);
    assert_halved("odd mlp", net.trunk_param_bytes(), bytes32, t);
    let half = net.values().unwrap();
    for (i, ((w0, b0), (w, b))) in before.iter().zip(&half).enumerate() {
        if i < t {
            assert_eq!(bits(w), rounded(w0), "layer {i}: weights rounded like half::f16::from_f32");
            assert_eq!(bits(b), rounded(b0), "layer {i}: bias");
            assert_eq!(net.layer_storage(i), Precision::F16);
        } else {
            assert_eq!((bits(w), bits(b)), (bits(w0), bits(b0)), "head layer {i} untouched");
            assert_eq!(net.layer_storage(i), Precision::F32);
        }
    }
    // a copy keeps the storage and the bits
    let copy = net.try_clone().unwrap();
    assert_eq!(copy.trunk_storage(), Precision::F16);
    assert_eq!(copy.values().unwrap(), half);
    // widening back is exact: the f16 values, now in f32
    net.set_trunk_storage(Precision::F32).unwrap();
    assert_eq!((net.trunk_storage(), net.trunk_param_bytes()), (Precision::F32, bytes32));
    assert_eq!(net.values().unwrap(), half);
    // converting twice changes nothing
    net.set_trunk_storage(Precision::F16).unwrap();
    net.set_trunk_storage(Precision::F16).unwrap();
    assert_eq!(net.values().unwrap(), half);
}

#[test]
fn a_value_beyond_f16s_range_is_refused() {
    let gpu = gpu();
    let d = |i, o| DenseSpec { inputs: i, outputs: o, activation: headswap::kernels::Activation::Relu };
    let mut w0 = vec![0.5f32; 6];
    w0[4] = 65520.0; // rounds to infinity in f16
    let values = vec![(w0, vec![0.0; 2]), (vec![0.1; 4], vec![0.0; 2])];
    let mut net = Network::from_values(&gpu, vec![d(3, 2)], vec![d(2, 2)], HeadKind::Classes, &values).unwrap();
    let err = net.set_trunk_storage(Precision::F16).unwrap_err().to_string();
    assert!(err.contains("65504") && err.contains("layer 0"), "{err}");
    assert_eq!(net.trunk_storage(), Precision::F32, "nothing changed");
    assert_eq!(net.values().unwrap(), values);
}

#[test]
fn save_and_load_keep_the_f16_trunk_and_its_exact_values() {
    let dir = TempDir::new("nn-f16");
    let mut net = odd_mlp(5);
    net.set_trunk_storage(Precision::F16).unwrap();
    let values = net.values().unwrap();
    for dtype in [headswap::checkpoint::StorageDtype::F32, headswap::checkpoint::StorageDtype::F16] {
        let path = dir.path().join(format!("{dtype:?}.safetensors"));
        net.save(&path, dtype).unwrap();
        let ckpt = headswap::checkpoint::load(&path).unwrap();
        assert_eq!(ckpt.metadata.get(headswap::nn::state::TRUNK_STORAGE_KEY).map(String::as_str), Some("f16"));
        let back = Network::load(&gpu(), &path).unwrap();
        assert_eq!(back.trunk_storage(), Precision::F16, "{dtype:?}");
        assert_eq!(back.trunk_param_bytes(), net.trunk_param_bytes());
        let got = back.values().unwrap();
        let t = net.trunk_layers().len();
        assert_eq!(got[..t], values[..t], "{dtype:?}: the trunk's exact values");
        if dtype == headswap::checkpoint::StorageDtype::F32 {
            assert_eq!(got, values, "the head's too");
        }
    }
    // an f32 network records nothing
    let plain = odd_mlp(5);
    assert!(!plain.to_checkpoint().unwrap().metadata.contains_key(headswap::nn::state::TRUNK_STORAGE_KEY));
}

#[test]
fn training_an_f16_trunk_is_refused_with_what_to_do() {
    let gpu = gpu();
    let mut net = Network::new(&gpu, &[16, 8], Head::classes(2), 1).unwrap();
    net.set_trunk_storage(Precision::F16).unwrap();
    let mut rng = Rng::new(2);
    let x: Vec<f32> = (0..32 * 16).map(|_| rng.next_f64() as f32).collect();
    let y = (0..32).map(|i| (i % 2) as u32).collect();
    let data = headswap::data::Dataset {
        x,
        n: 32,
        d: 16,
        input_shape: vec![16],
        targets: headswap::data::Targets::Classes { y, num_classes: 2 },
        label_names: vec!["a".into(), "b".into()],
    };
    let before = net.values().unwrap();
    let cfg = TrainConfig { batch_size: 8, ..TrainConfig::default() };
    for freeze in [Freeze::All, Freeze::LastK(1)] {
        let err = Trainer::new(&gpu, cfg.clone()).fine_tune(&mut net, &data, freeze, 1).unwrap_err().to_string();
        assert!(err.contains("f16") && err.contains("set_trunk_storage(Precision::F32)"), "{err}");
    }
    // a step profile sets a run up without fitting: refused the same way
    let trainer = Trainer::new(&gpu, cfg.clone());
    let opts = headswap::train::profile::ProfileOptions { reps: 1, ..Default::default() };
    let err = headswap::train::profile::profile_step(&trainer, &net, &data, Freeze::All, opts).unwrap_err().to_string();
    assert!(err.contains("f16") && err.contains("set_trunk_storage(Precision::F32)"), "{err}");
    assert_eq!(net.values().unwrap(), before, "nothing trained");
    // head-only fine-tuning runs, the trunk untouched
    Trainer::new(&gpu, cfg).fine_tune(&mut net, &data, Freeze::Trunk, 2).unwrap();
    let after = net.values().unwrap();
    assert_eq!(after[0], before[0], "the f16 trunk did not change");
    assert_ne!(after[1], before[1], "the head trained");
}

/// The frozen forward pass with the trunk in f16 against the same network in f32.
fn frozen_forward_matches_f32(arch: Arch, h: usize, w: usize, seed: u64) {
    let n = 2;
    let mut net = torchvision_model(arch, h, w, seed);
    let x = rand_range(seed + 10, n * 3 * h * w, -2.0, 2.0);
    let logits32 = headswap::train::predict_logits(&net, &x, n, n).unwrap();
    let bytes32 = net.trunk_param_bytes();
    net.set_trunk_storage(Precision::F16).unwrap();
    assert_halved(arch.name(), net.trunk_param_bytes(), bytes32, net.trunk_layers().len());
    eprintln!("{}: trunk weights {bytes32} bytes in f32, {} in f16", arch.name(), net.trunk_param_bytes());
    let logits16 = headswap::train::predict_logits(&net, &x, n, n).unwrap();
    let again = headswap::train::predict_logits(&net, &x, n, n).unwrap();
    assert_eq!(bits(&logits16), bits(&again), "{}: reruns are bit-identical", arch.name());
    let scale = logits32.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
    assert!(scale > 1e-3, "the logits are not all ~0 ({scale})");
    let worst = logits16.iter().zip(&logits32).map(|(a, b)| (a - b).abs() as f64).fold(0.0, f64::max) / scale;
    eprintln!("{}: f16 trunk logits vs f32: largest difference {worst:.2e} of the largest logit ({scale:.3})", arch.name());
    assert_close(
        &format!("{} logits, f16 trunk vs f32", arch.name()),
        &logits16,
        &to_f64(&logits32),
        Tolerance { rel: 1e-3, abs: 1e-3 * scale },
    );
    // the mechanism is exact: the float64 forward of the f16 values, at f32 tolerance
    let want = reference_logits(&net, &x, n);
    assert_close(
        &format!("{} f16 trunk vs its float64 reference", arch.name()),
        &logits16,
        &want,
        Tolerance { rel: 1e-4, abs: 1e-4 * scale },
    );
}

#[test]
fn resnet18_frozen_forward_on_an_f16_trunk_is_within_1e3_of_f32() {
    frozen_forward_matches_f32(Arch::ResNet18, 37, 45, 5);
}

#[test]
fn mobilenet_v2_frozen_forward_on_an_f16_trunk_is_within_1e3_of_f32() {
    frozen_forward_matches_f32(Arch::MobileNetV2, 35, 32, 7);
}

/// A small convolutional trunk (conv → BN → conv → BN, global pooling) stored in f16, its head
/// trained alone three ways: on cached features, uncached (the frozen trunk runs every step,
/// each layer widened as it runs and each conv → BN pair folded as it runs, into shared
/// buffers), and on the same values in an f32 trunk (BatchNorm folded once, per-layer copies). The three heads agree to f32 tolerance: the
/// training plan reads an f16 trunk correctly.
#[test]
fn head_only_runs_on_an_f16_conv_trunk_agree_cached_uncached_and_f32() {
    use headswap::kernels::Activation;
    use headswap::nn::CnnBuilder;
    let gpu = gpu();
    let (c, h, w, n) = (3, 9, 11, 37);
    let trunk = CnnBuilder::new(c, h, w)
        .conv(8, 3, 1, 1, Activation::Identity)
        .batch_norm(Activation::Relu)
        .conv(5, 3, 2, 1, Activation::Identity)
        .batch_norm(Activation::Relu)
        .global_avg_pool()
        .build_graph()
        .unwrap();
    let mut net = Network::from_trunk(&gpu, c * h * w, trunk, Init::KaimingUniform, Head::labels(3), 21).unwrap();
    // BatchNorm statistics that are not the defaults
    for i in 0..net.trunk_layers().len() {
        if let LayerSpec::BatchNorm(bn) = net.trunk_layers()[i] {
            let mean = rand_range(30 + i as u64, bn.channels, -0.2, 0.2);
            let var = rand_range(40 + i as u64, bn.channels, 0.5, 1.5);
            net.set_running_stats(i, &mean, &var, 1).unwrap();
        }
    }
    net.set_trunk_storage(Precision::F16).unwrap();
    let x = rand_range(22, n * c * h * w, -2.0, 2.0);
    let mut rng = Rng::new(23);
    let y = (0..n * 3).map(|_| if rng.below(2) == 1 { 1.0 } else { 0.0 }).collect();
    let data = headswap::data::Dataset {
        x,
        n,
        d: c * h * w,
        input_shape: vec![c, h, w],
        targets: headswap::data::Targets::Labels { y, k: 3 },
        label_names: (0..3).map(|i| format!("l{i}")).collect(),
    };
    let run = |net: &Network, cache: bool| -> (headswap::train::FitReport, Vec<f32>) {
        let mut net = net.try_clone().unwrap();
        let cfg = TrainConfig { batch_size: 8, seed: 24, cache_features: cache, ..TrainConfig::default() };
        let r = Trainer::new(&gpu, cfg).fine_tune(&mut net, &data, Freeze::Trunk, 3).unwrap();
        (r, net.layer_values(net.layers().len() - 1).unwrap().0)
    };
    let initial = net.layer_values(net.layers().len() - 1).unwrap().0;
    let (cached, head_cached) = run(&net, true);
    assert_ne!(bits(&head_cached), bits(&initial), "the head trained");
    let (uncached, head_uncached) = run(&net, false);
    let mut wide = net.try_clone().unwrap();
    wide.set_trunk_storage(Precision::F32).unwrap();
    let (f32_run, head_f32) = run(&wide, true);
    assert!(cached.cached_features && !uncached.cached_features);
    assert_eq!((cached.frozen_weights, uncached.frozen_weights, f32_run.frozen_weights), (Precision::F16, Precision::F16, Precision::F32));
    assert_halved("conv trunk", cached.frozen_weights_bytes, f32_run.frozen_weights_bytes, net.trunk_layers().len());
    let tol = Tolerance { rel: 1e-4, abs: 1e-5 };
    assert_close("head trained uncached vs cached, f16 trunk", &head_uncached, &to_f64(&head_cached), tol);
    assert_close("head on the f16 trunk vs the same values in f32", &head_cached, &to_f64(&head_f32), tol);
    // a rerun is bit-identical
    assert_eq!(bits(&run(&net, false).1), bits(&head_uncached));
}

/// A dense trunk of even input widths stored in f16: each layer's matrix product reads the packed
/// weight directly as an f16 operand (the first layer through the index buffer, in place), in
/// batches of 7 with a partial last one; the logits equal the float64 forward of the f16 values.
#[test]
fn a_dense_f16_trunk_read_directly_matches_the_float64_reference() {
    let gpu = gpu();
    let mut net = Network::new(&gpu, &[8, 34, 126, 6], Head::classes(5), 9).unwrap();
    net.set_trunk_storage(Precision::F16).unwrap();
    let n = 33;
    let x = rand_range(10, n * 8, -2.0, 2.0);
    let logits = headswap::train::predict_logits(&net, &x, n, 7).unwrap();
    let want = reference_logits(&net, &x, n);
    assert_close("dense f16 trunk logits vs float64", &logits, &want, Tolerance { rel: 1e-4, abs: 1e-5 });
    assert_eq!(bits(&logits), bits(&headswap::train::predict_logits(&net, &x, n, 7).unwrap()), "reruns are bit-identical");
}
