//! Data-parallel training within one process: replicas (threads, here on one adapter) that each
//! take a share of every global batch and average their gradients give the weights one trainer
//! gets with the whole batch, to rounding; the replicas stay bit-identical to each other; frozen
//! parameters never change. The same code path runs over MPI (`tests/distributed_mpi.rs`).
mod common;
use common::*;
use headswap::Gpu;
use headswap::Rng;
use headswap::data::{Dataset, Targets};
use headswap::kernels::Activation;
use headswap::kernels::loss::BceReduction;
use headswap::nn::{CnnBuilder, Head, Init, Network};
use headswap::train::{BceSettings, Collective, Freeze, Optimizer, ThreadGroup, TrainConfig, Trainer};

fn classes(n: usize, shape: Vec<usize>, c: usize, seed: u64) -> Dataset {
    let d: usize = shape.iter().product();
    let mut r = Rng::new(seed);
    let y = (0..n).map(|_| r.below(c as u64) as u32).collect();
    Dataset {
        x: rand_range(seed + 1, n * d, -1.0, 1.0),
        n,
        d,
        input_shape: shape,
        targets: Targets::Classes { y, num_classes: c },
        label_names: (0..c).map(|i| format!("c{i}")).collect(),
    }
}

fn labels(n: usize, d: usize, k: usize, seed: u64) -> Dataset {
    let mut r = Rng::new(seed);
    // a few unknown labels, which the loss masks out
    let y = (0..n * k).map(|i| if i % 11 == 5 { f32::NAN } else { (r.below(2)) as f32 }).collect();
    Dataset {
        x: rand_range(seed + 1, n * d, -1.0, 1.0),
        n,
        d,
        input_shape: vec![d],
        targets: Targets::Labels { y, k },
        label_names: (0..k).map(|i| format!("l{i}")).collect(),
    }
}

/// How a test trains a network: a pretraining fit, or a fine-tune under a freeze policy.
#[derive(Clone, Copy)]
enum Job {
    Fit,
    FineTune(Freeze),
}

fn train(
    gpu: &Gpu,
    make: &(dyn Fn(&Gpu) -> Network + Sync),
    data: &Dataset,
    cfg: &TrainConfig,
    job: Job,
    epochs: usize,
    replica: Option<ThreadGroup>,
) -> Vec<(Vec<f32>, Vec<f32>)> {
    let mut net = make(gpu);
    let mut trainer = Trainer::new(gpu, cfg.clone());
    if let Some(r) = replica {
        trainer = trainer.with_replicas(r);
    }
    match job {
        Job::Fit => trainer.fit(&mut net, data, epochs).unwrap(),
        Job::FineTune(f) => trainer.fine_tune(&mut net, data, f, epochs).unwrap(),
    };
    net.values().unwrap()
}

/// Trains alone and as `replicas` replicas; checks the replicas agree bit for bit and match the
/// single trainer to `tol` relative to each tensor's largest value. Returns the values.
fn compare(
    make: &(dyn Fn(&Gpu) -> Network + Sync),
    data: &Dataset,
    cfg: &TrainConfig,
    job: Job,
    epochs: usize,
    replicas: usize,
    tol: f64,
) -> Vec<(Vec<f32>, Vec<f32>)> {
    let gpu = gpu();
    let alone = train(&gpu, make, data, cfg, job, epochs, None);
    let group = ThreadGroup::new(replicas).unwrap();
    let results: Vec<Vec<(Vec<f32>, Vec<f32>)>> = std::thread::scope(|s| {
        let handles: Vec<_> = group
            .into_iter()
            .map(|r| {
                let gpu = gpu.clone();
                s.spawn(move || train(&gpu, make, data, cfg, job, epochs, Some(r)))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, other) in results.iter().enumerate().skip(1) {
        assert!(other == &results[0], "replica {i} differs from replica 0");
    }
    for (l, ((aw, ab), (rw, rb))) in alone.iter().zip(&results[0]).enumerate() {
        for (what, a, r) in [("weight", aw, rw), ("bias", ab, rb)] {
            let scale = a.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-3) as f64;
            let worst = a.iter().zip(r).map(|(x, y)| (x - y).abs() as f64).fold(0.0, f64::max);
            assert!(worst <= tol * scale, "layer {l} {what}: replicas differ from one trainer by {worst:e} (scale {scale:e})");
        }
    }
    results[0].clone()
}

#[test]
fn two_replicas_train_an_mlp_like_one_trainer_with_the_whole_batch() {
    // 50 examples, batch 16: three full batches of 8 + 8 rows and a last one of 1 + 1
    let data = classes(50, vec![7], 3, 1);
    let make = |gpu: &Gpu| Network::mlp(gpu, &[7, 9, 6], Activation::Tanh, Init::KaimingUniform, Head::classes(3), 4).unwrap();
    for opt in [Optimizer::sgd(0.1).momentum(0.9), Optimizer::adam(1e-2)] {
        let cfg = TrainConfig { batch_size: 16, optimizer: opt, seed: 9, ..Default::default() };
        compare(&make, &data, &cfg, Job::Fit, 3, 2, 1e-5);
    }
}

#[test]
fn uneven_shares_and_a_replica_without_rows_still_give_the_whole_batch_gradient() {
    // batch 16 over 3 replicas: 6 + 5 + 5 rows; 49 examples leave a last batch of 1, which only
    // replica 0 computes (the others send zeros and still apply the update)
    let data = labels(49, 5, 4, 2);
    let make = |gpu: &Gpu| Network::mlp(gpu, &[5, 8], Activation::Relu, Init::KaimingUniform, Head::labels(4), 3).unwrap();
    let cfg = TrainConfig { batch_size: 16, optimizer: Optimizer::adam(5e-3), seed: 2, ..Default::default() };
    compare(&make, &data, &cfg, Job::Fit, 2, 3, 1e-5);
}

#[test]
fn the_mean_over_known_labels_weights_each_replica_by_its_known_labels() {
    // MeanLabelled divides by the batch's known labels, which the replicas' shares hold unevenly
    let data = labels(49, 5, 4, 7);
    let make = |gpu: &Gpu| Network::mlp(gpu, &[5, 8], Activation::Tanh, Init::KaimingUniform, Head::labels(4), 3).unwrap();
    let bce = BceSettings { reduction: BceReduction::MeanLabelled, ..Default::default() };
    let cfg = TrainConfig { batch_size: 16, optimizer: Optimizer::sgd(0.3), seed: 2, bce, ..Default::default() };
    compare(&make, &data, &cfg, Job::Fit, 2, 3, 1e-5);
}

#[test]
fn a_frozen_trunk_is_never_touched_and_the_head_trains_like_one_trainer() {
    let data = classes(40, vec![6], 2, 5);
    let make = |gpu: &Gpu| Network::mlp(gpu, &[6, 8, 8], Activation::Tanh, Init::KaimingUniform, Head::classes(2), 6).unwrap();
    let before = make(&gpu()).values().unwrap();
    let cfg = TrainConfig { batch_size: 10, optimizer: Optimizer::sgd(0.2), seed: 1, cache_features: false, ..Default::default() };
    let after = compare(&make, &data, &cfg, Job::FineTune(Freeze::Trunk), 3, 2, 1e-5);
    assert_eq!(after[..2], before[..2], "the frozen trunk keeps its bits");
    assert_ne!(after[2], before[2], "the head trains");
}

#[test]
fn two_replicas_train_a_cnn_like_one_trainer() {
    let data = classes(20, vec![1, 8, 8], 3, 7);
    let make = |gpu: &Gpu| {
        let trunk = CnnBuilder::new(1, 8, 8).conv(3, 3, 1, 1, Activation::Relu).max_pool(2, 2).dense(8, Activation::Tanh).build().unwrap();
        Network::from_specs(gpu, 64, trunk, Init::KaimingUniform, Head::classes(3), 8).unwrap()
    };
    let cfg = TrainConfig { batch_size: 8, optimizer: Optimizer::sgd(0.05).momentum(0.9), seed: 3, ..Default::default() };
    compare(&make, &data, &cfg, Job::Fit, 2, 2, 1e-5);
}

#[test]
fn a_batch_smaller_than_the_replicas_is_refused() {
    let gpu = gpu();
    let data = classes(10, vec![4], 2, 1);
    let group = ThreadGroup::new(3).unwrap();
    let errs: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = group
            .into_iter()
            .map(|r| {
                let (gpu, data) = (gpu.clone(), &data);
                s.spawn(move || {
                    let mut net = Network::new(&gpu, &[4, 3], Head::classes(2), 1).unwrap();
                    let cfg = TrainConfig { batch_size: 2, ..Default::default() };
                    Trainer::new(&gpu, cfg).with_replicas(r).fit(&mut net, data, 1).unwrap_err().to_string()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(errs.iter().all(|e| e.contains("smaller than the 3 replicas")), "{errs:?}");
}

#[test]
fn a_replica_given_bad_data_stops_every_replica_with_its_error() {
    let gpu = gpu();
    let good = classes(12, vec![4], 2, 1);
    let bad = classes(12, vec![5], 2, 1);
    let group = ThreadGroup::new(3).unwrap();
    let errs: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = group
            .into_iter()
            .map(|r| {
                let gpu = gpu.clone();
                let data = if r.rank() == 1 { &bad } else { &good };
                s.spawn(move || {
                    let mut net = Network::new(&gpu, &[4, 3], Head::classes(2), 1).unwrap();
                    let cfg = TrainConfig { batch_size: 6, ..Default::default() };
                    Trainer::new(&gpu, cfg).with_replicas(r).fit(&mut net, data, 2).unwrap_err().to_string()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(errs[1].contains("5 input features"), "{errs:?}");
    for e in [&errs[0], &errs[2]] {
        assert!(e.contains("replica 1 failed") && e.contains("5 input features"), "{errs:?}");
    }
}
