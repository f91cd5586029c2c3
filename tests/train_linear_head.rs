//! The fused linear head step (one launch for a BCE output layer trained on cached features)
//! against the separate launches it replaces, inside real training: same weights, losses and
//! metrics, fewer dispatches. Its own test binary: the choice is forced through
//! `HEADSWAP_LINEAR_HEAD`, a process-wide variable, set here by a single test.
mod common;
use common::*;
use headswap::Rng;
use headswap::data::{Dataset, Targets};
use headswap::kernels::loss::BceReduction;
use headswap::nn::{Head, Network};
use headswap::train::{BceSettings, Freeze, Optimizer, TrainConfig, Trainer};

/// 16-D inputs, 5 labels that depend on the inputs, a fifth of them unknown (NaN).
fn data(n: usize, seed: u64) -> Dataset {
    let (d, k) = (16, 5);
    let mut r = Rng::new(seed);
    let x: Vec<f32> = (0..n * d).map(|_| r.uniform(-1.0, 1.0) as f32).collect();
    let y = (0..n * k)
        .map(|e| {
            let (i, j) = (e / k, e % k);
            if r.next_f64() < 0.2 { f32::NAN } else { (x[i * d + j] + x[i * d + j + 5] > 0.0) as u32 as f32 }
        })
        .collect();
    Dataset { x, n, d, input_shape: vec![d], targets: Targets::Labels { y, k }, label_names: (0..k).map(|j| format!("l{j}")).collect() }
}

fn fine_tune(algo: &str, cache: bool) -> (Vec<f32>, Vec<f32>, Vec<f64>, f64) {
    // SAFETY of the environment write: this binary's only test, no other thread reads it
    unsafe { std::env::set_var("HEADSWAP_LINEAR_HEAD", algo) };
    let gpu = gpu();
    let mut net = Network::new(&gpu, &[16, 24, 12], Head::classes(3), 5).unwrap();
    net.swap_head(Head::labels(5), 6).unwrap();
    let cfg = TrainConfig {
        optimizer: Optimizer::sgd(0.1).momentum(0.9),
        batch_size: 24, // 100 samples: four full batches and a partial one of 4
        seed: 7,
        cache_features: cache,
        bce: BceSettings { pos_weight: Some(vec![1.0, 2.0, 0.5, 1.5, 3.0]), label_weight: None, reduction: BceReduction::MeanLabelled },
        ..TrainConfig::default()
    };
    let r = Trainer::new(&gpu, cfg).fine_tune(&mut net, &data(100, 8), Freeze::Trunk, 4).unwrap();
    assert_eq!(r.cached_features, cache);
    let (w, b) = net.layer_values(2).unwrap();
    let losses = r.epochs.iter().map(|e| e.train.loss).collect();
    (w, b, losses, r.dispatches_per_step)
}

#[test]
fn fused_linear_head_trains_like_the_separate_kernels() {
    let (fw, fb, fl, fd) = fine_tune("fused", true);
    let (sw, sb, sl, sd) = fine_tune("separate", true);
    let (uw, _, _, _) = fine_tune("fused", false); // no cached features: never fused
    let f64s = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
    let tol = Tolerance { rel: 1e-5, abs: 1e-6 };
    assert_close("head weights, fused vs separate", &fw, &f64s(&sw), tol);
    assert_close("head bias, fused vs separate", &fb, &f64s(&sb), tol);
    assert_close("head weights, fused vs the trunk run every step", &fw, &f64s(&uw), tol);
    let fl32: Vec<f32> = fl.iter().map(|&x| x as f32).collect();
    assert_close("epoch losses, fused vs separate", &fl32, &sl, tol);
    assert!(fl.iter().all(|l| l.is_finite() && *l > 0.0), "losses {fl:?}");
    // one launch for the head's whole step, then the optimizer: fewer than the separate path
    assert!(fd < sd, "dispatches per step: fused {fd}, separate {sd}");
    assert!(fd <= 2.0, "fused: the step and the optimizer, got {fd}");
}
