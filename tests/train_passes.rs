//! The training passes end to end: learning works, head-swap + fine-tune works, frozen layers
//! stay bit-identical and cost less, cached trunk features give the same results, runs are
//! deterministic.
mod common;
use common::*;
use headswap::Rng;
use headswap::data::{Dataset, Targets};
use headswap::nn::{Head, HeadKind, Network};
use headswap::train::{Freeze, Optimizer, TrainConfig, Trainer};

/// `n` points around 8 well-separated centres in 16-D. Task A: which centre (8 classes).
/// Task B (related): 4 labels per point, label j = bit j of a fixed code of its centre.
fn clusters(n: usize, seed: u64, multi_label: bool) -> Dataset {
    let (d, c) = (16, 8);
    let mut centres = Rng::new(99); // the same centres for both tasks: they are related
    let centre: Vec<f32> = (0..c * d).map(|_| centres.uniform(-2.0, 2.0) as f32).collect();
    let codes: [[u8; 4]; 8] =
        [[1, 0, 0, 1], [0, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [1, 0, 1, 1], [0, 1, 1, 0], [1, 1, 1, 0], [0, 0, 0, 1]];
    let mut r = Rng::new(seed);
    let mut x = Vec::with_capacity(n * d);
    let mut classes = Vec::new();
    let mut labels = Vec::new();
    for _ in 0..n {
        let k = r.below(c as u64) as usize;
        for j in 0..d {
            x.push(centre[k * d + j] + 0.35 * r.normal() as f32);
        }
        classes.push(k as u32);
        labels.extend(codes[k].iter().map(|&b| b as f32));
    }
    let targets = if multi_label { Targets::Labels { y: labels, k: 4 } } else { Targets::Classes { y: classes, num_classes: c } };
    let names = (0..if multi_label { 4 } else { c }).map(|i| format!("l{i}")).collect();
    Dataset { x, n, d, input_shape: vec![d], targets, label_names: names }
}

fn config(seed: u64) -> TrainConfig {
    TrainConfig { optimizer: Optimizer::sgd(0.05).momentum(0.9), batch_size: 32, seed, ..TrainConfig::default() }
}

fn pretrained(seed: u64) -> Network {
    let gpu = gpu();
    let mut net = Network::new(&gpu, &[16, 32, 24], Head::classes(8), seed).unwrap();
    Trainer::new(&gpu, config(seed)).fit(&mut net, &clusters(600, seed, false), 3).unwrap();
    net
}

#[test]
fn pretraining_learns_a_separable_task() {
    let gpu = gpu();
    let mut net = Network::new(&gpu, &[16, 32, 24], Head::classes(8), 1).unwrap();
    let mut trainer = Trainer::new(&gpu, config(1));
    let report = trainer.fit(&mut net, &clusters(800, 1, false), 5).unwrap();
    let first = report.epochs[0].train.loss;
    let last = report.last().unwrap().train.loss;
    assert!(last < first, "loss did not fall: {first} → {last}");
    let test = trainer.evaluate(&net, &clusters(400, 2, false)).unwrap();
    assert!(test.accuracy.unwrap() > 0.95, "held-out accuracy {:?}", test.accuracy);
    // 800 samples in batches of 32: 25 steps per epoch, 16 per submission → 2 submissions an epoch
    assert_eq!(report.submissions_per_step, 10.0 / 125.0, "steps are batched 16 to a submission");
}

#[test]
fn steps_per_submission_does_not_change_the_result() {
    // Each step must read its own batch offset, learning rate and step number although several
    // share a submission: a per-step schedule (warm-up + cosine), momentum's first-step rule and a
    // last partial batch (203 = 6·32 + 11) would all show a step reading another's values.
    let gpu = gpu();
    let data = clusters(203, 51, false);
    let run = |per_submission: usize| {
        let mut net = Network::new(&gpu, &[16, 32, 24], Head::classes(8), 51).unwrap();
        let cfg = TrainConfig {
            steps_per_submission: per_submission,
            schedule: headswap::train::Schedule::Cosine { warmup_steps: 5, min_lr: 0.001 },
            ..config(51)
        };
        let r = Trainer::new(&gpu, cfg).fit(&mut net, &data, 3).unwrap();
        (net.values().unwrap(), r.submissions_per_step, r.last().unwrap().train.loss)
    };
    let (one, one_rate, one_loss) = run(1);
    assert_eq!(one_rate, 1.0);
    for per in [3, 7, 64] {
        let (many, rate, loss) = run(per);
        assert_eq!(rate, (3 * 7usize.div_ceil(per)) as f64 / 21.0, "{per} steps per submission");
        assert_eq!(loss.to_bits(), one_loss.to_bits(), "epoch loss with {per} steps per submission");
        for (la, lb) in one.iter().zip(&many) {
            assert!(la.0.iter().zip(&lb.0).all(|(x, y)| x.to_bits() == y.to_bits()), "weights differ at {per} steps per submission");
            assert!(la.1.iter().zip(&lb.1).all(|(x, y)| x.to_bits() == y.to_bits()), "biases differ at {per} steps per submission");
        }
    }
}

#[test]
fn head_swap_then_fine_tune_reaches_f1() {
    let gpu = gpu();
    let mut net = pretrained(3);
    let report = net.swap_head(Head::labels(4), 5).unwrap();
    assert_eq!(report.kept.len(), 2);
    assert_eq!(report.created.len(), 1);
    assert_eq!(net.head_kind(), HeadKind::Labels);
    let mut trainer = Trainer::new(&gpu, config(3));
    trainer.fine_tune(&mut net, &clusters(300, 7, true), Freeze::Trunk, 15).unwrap();
    let m = trainer.evaluate(&net, &clusters(400, 8, true)).unwrap();
    let labels = m.labels.unwrap();
    assert!(labels.mean_f1.is_some_and(|f| f > 0.9), "mean F1 {:?} per label {:?}", labels.mean_f1, labels.f1);
}

#[test]
fn frozen_trunk_is_bit_identical_and_cheaper() {
    let gpu = gpu();
    let mut net = pretrained(11);
    let trunk_before: Vec<_> = (0..2).map(|i| net.layer_values(i).unwrap()).collect();
    net.swap_head(Head::labels(4), 12).unwrap();
    let head_before = net.layer_values(2).unwrap();
    let data = clusters(200, 13, true);
    let mut trainer = Trainer::new(&gpu, config(11));
    let uploads_before = gpu.counters().uploads;
    let trunk_only = trainer.fine_tune(&mut net, &data, Freeze::Trunk, 2).unwrap();
    let _ = uploads_before;
    for (i, before) in trunk_before.iter().enumerate() {
        let after = net.layer_values(i).unwrap();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&before.0), bits(&after.0), "trunk layer {i} weights changed");
        assert_eq!(bits(&before.1), bits(&after.1), "trunk layer {i} bias changed");
    }
    assert_ne!(head_before.0, net.layer_values(2).unwrap().0, "the head did not train");

    let mut net_all = pretrained(11);
    net_all.swap_head(Head::labels(4), 12).unwrap();
    let all = Trainer::new(&gpu, config(11)).fine_tune(&mut net_all, &data, Freeze::All, 2).unwrap();
    assert!(
        trunk_only.bytes_allocated < all.bytes_allocated,
        "Trunk allocated {} bytes, All {}",
        trunk_only.bytes_allocated,
        all.bytes_allocated
    );
    assert!(
        trunk_only.dispatches_per_step < all.dispatches_per_step,
        "Trunk {} dispatches per step, All {}",
        trunk_only.dispatches_per_step,
        all.dispatches_per_step
    );
    assert!(trunk_only.cached_features);
}

#[test]
fn last_k_trains_only_the_top_trunk_layers() {
    let gpu = gpu();
    let mut net = pretrained(21);
    net.swap_head(Head::labels(4), 22).unwrap();
    let l0 = net.layer_values(0).unwrap();
    let l1 = net.layer_values(1).unwrap();
    let report = Trainer::new(&gpu, config(21)).fine_tune(&mut net, &clusters(200, 23, true), Freeze::LastK(1), 2).unwrap();
    assert_eq!(report.lowest_trainable, 1);
    assert_eq!(net.layer_values(0).unwrap(), l0, "layer 0 is below last:1 and must not change");
    assert_ne!(net.layer_values(1).unwrap(), l1, "layer 1 is in last:1 and must train");
}

#[test]
fn cached_features_give_the_same_head_as_running_the_trunk() {
    let gpu = gpu();
    let data = clusters(150, 31, true);
    let mut heads = Vec::new();
    for cache in [true, false] {
        let mut net = pretrained(31);
        net.swap_head(Head::labels(4), 32).unwrap();
        let mut cfg = config(31);
        cfg.cache_features = cache;
        let r = Trainer::new(&gpu, cfg).fine_tune(&mut net, &data, Freeze::Trunk, 3).unwrap();
        assert_eq!(r.cached_features, cache);
        heads.push(net.layer_values(2).unwrap());
    }
    let expected: Vec<f64> = heads[1].0.iter().map(|&v| v as f64).collect();
    assert_close("head weights, cached vs uncached", &heads[0].0, &expected, Tolerance { rel: 1e-5, abs: 1e-6 });
}

#[test]
fn same_seed_gives_bit_identical_weights() {
    let run = || {
        let net = pretrained(41);
        net.values().unwrap()
    };
    let (a, b) = (run(), run());
    for (la, lb) in a.iter().zip(&b) {
        assert!(la.0.iter().zip(&lb.0).all(|(x, y)| x.to_bits() == y.to_bits()), "weights differ between identical runs");
        assert!(la.1.iter().zip(&lb.1).all(|(x, y)| x.to_bits() == y.to_bits()), "biases differ between identical runs");
    }
}

#[test]
fn auto_freeze_follows_the_data_size() {
    let gpu = gpu();
    let mut net = pretrained(51);
    net.swap_head(Head::labels(4), 52).unwrap();
    let mut cfg = config(51);
    cfg.auto_threshold = 100;
    let t = Trainer::new(&gpu, cfg);
    assert_eq!(t.lowest_trainable(&net, &clusters(50, 1, true), Freeze::Auto).unwrap(), 2);
    assert_eq!(t.lowest_trainable(&net, &clusters(500, 1, true), Freeze::Auto).unwrap(), 0);
    assert!(t.lowest_trainable(&net, &clusters(50, 1, true), Freeze::LastK(3)).is_err());
}

#[test]
fn mismatched_data_is_a_clear_error() {
    let gpu = gpu();
    let mut net = pretrained(61);
    let mut trainer = Trainer::new(&gpu, config(61));
    let err = trainer.fine_tune(&mut net, &clusters(50, 1, true), Freeze::Trunk, 1).unwrap_err();
    assert!(err.to_string().contains("Head::labels"), "{err}");
    let mut wrong_width = clusters(50, 1, false);
    wrong_width.d = 8;
    wrong_width.x.truncate(50 * 8);
    assert!(trainer.fit(&mut net, &wrong_width, 1).is_err());
}

#[test]
fn early_stopping_keeps_the_best_weights() {
    let gpu = gpu();
    // few examples, a large learning rate: the validation loss gets worse after a while
    let data = clusters(120, 71, false);
    let mut net = Network::new(&gpu, &[16, 64, 64], Head::classes(8), 71).unwrap();
    let cfg = TrainConfig {
        optimizer: Optimizer::sgd(0.3).momentum(0.9),
        batch_size: 8,
        seed: 71,
        validation_fraction: 0.5,
        early_stopping: Some(2),
        ..TrainConfig::default()
    };
    let mut trainer = Trainer::new(&gpu, cfg.clone());
    let report = trainer.fit(&mut net, &data, 40).unwrap();
    let best = report.best_epoch.unwrap();
    assert!(report.epochs.len() < 40 && best < report.epochs.len() - 1, "the run must stop early, after its best epoch");
    let best_loss = report.epochs.iter().find(|e| e.epoch == best).unwrap().validation.as_ref().unwrap().loss;
    let min_loss = report.epochs.iter().map(|e| e.validation.as_ref().unwrap().loss).fold(f64::INFINITY, f64::min);
    assert_eq!(best_loss, min_loss, "best_epoch must be the epoch of the lowest validation loss");
    // the network holds the best epoch's weights: its validation loss is the best one
    let (_, val) = data.split(0.5, 71);
    let now = Trainer::new(&gpu, cfg).evaluate(&net, &val).unwrap().loss;
    assert!((now - best_loss).abs() <= 1e-4 * best_loss.max(1.0), "restored weights give {now}, best epoch had {best_loss}");
    assert_eq!(report.epochs.last().unwrap().epoch, best + 2, "stops when patience (2) runs out");
}
