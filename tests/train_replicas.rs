//! Data-parallel training within one process: replicas (threads, here on one adapter) that each
//! take a share of every global batch and average their gradients give the weights one trainer
//! gets with the whole batch, to rounding; the replicas stay bit-identical to each other; frozen
//! parameters never change. The same code path runs over MPI (`tests/distributed_mpi.rs`).
mod common;
use common::*;
use headswap::Gpu;
use headswap::Rng;
use headswap::data::{Dataset, HeadTargets, Targets};
use headswap::kernels::Activation;
use headswap::kernels::loss::{BceReduction, IGNORE_CLASS, RegressionLoss};
use headswap::nn::{CnnBuilder, DenseSpec, Head, Init, LayerSpec, Network, Trunk};
use headswap::train::{BceSettings, Collective, FitReport, Freeze, HeadWeighting, Optimizer, ThreadGroup, TrainConfig, Trainer};

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

/// Every layer's (weights, biases), as `Network::values` gives them.
type Values = Vec<(Vec<f32>, Vec<f32>)>;

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
) -> (Values, FitReport) {
    let mut net = make(gpu);
    let mut trainer = Trainer::new(gpu, cfg.clone());
    if let Some(r) = replica {
        trainer = trainer.with_replicas(r);
    }
    let report = match job {
        Job::Fit => trainer.fit(&mut net, data, epochs).unwrap(),
        Job::FineTune(f) => trainer.fine_tune(&mut net, data, f, epochs).unwrap(),
    };
    (net.values().unwrap(), report)
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
) -> Values {
    compare_reports(make, data, cfg, job, epochs, replicas, tol).0
}

/// [`compare`], also returning the single trainer's report and replica 0's.
fn compare_reports(
    make: &(dyn Fn(&Gpu) -> Network + Sync),
    data: &Dataset,
    cfg: &TrainConfig,
    job: Job,
    epochs: usize,
    replicas: usize,
    tol: f64,
) -> (Values, FitReport, FitReport) {
    let gpu = gpu();
    let (alone, alone_report) = train(&gpu, make, data, cfg, job, epochs, None);
    let group = ThreadGroup::new(replicas).unwrap();
    let results: Vec<(Values, FitReport)> = std::thread::scope(|s| {
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
        assert!(other.0 == results[0].0, "replica {i} differs from replica 0");
    }
    for (l, ((aw, ab), (rw, rb))) in alone.iter().zip(&results[0].0).enumerate() {
        for (what, a, r) in [("weight", aw, rw), ("bias", ab, rb)] {
            let scale = a.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-3) as f64;
            let worst = a.iter().zip(r).map(|(x, y)| (x - y).abs() as f64).fold(0.0, f64::max);
            assert!(worst <= tol * scale, "layer {l} {what}: replicas differ from one trainer by {worst:e} (scale {scale:e})");
        }
    }
    let (values, report) = results.into_iter().next().unwrap();
    (values, alone_report, report)
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

/// A trunk under four named heads, each kind with unknown targets: labels averaged over the known
/// ones (behind a hidden layer, with positive weights), labels averaged over rows (NaN still
/// masked), classes with −1, and Huber regression with NaN.
fn multi_head_net(gpu: &Gpu) -> Network {
    let trunk = Trunk::chain(vec![
        LayerSpec::Dense(DenseSpec { inputs: 5, outputs: 8, activation: Activation::Tanh }),
        LayerSpec::Dense(DenseSpec { inputs: 8, outputs: 6, activation: Activation::Tanh }),
    ]);
    let heads = [
        Head::labels(3)
            .hidden(4, Activation::Tanh)
            .named("objects")
            .weight(0.7)
            .pos_weight(vec![2.0, 0.5, 1.5])
            .bce_reduction(BceReduction::MeanLabelled),
        Head::labels(2).named("tags").weight(1.3),
        Head::classes(4).named("scene").weight(0.5),
        Head::regression(2, RegressionLoss::Huber(0.5)).named("distance"),
    ];
    Network::from_trunk_heads(gpu, 5, trunk, Init::KaimingUniform, &heads, 3).unwrap()
}

/// `len` values of `draw`, a quarter of them (at random) unknown: NaN.
fn masked(r: &mut Rng, len: usize, draw: impl Fn(&mut Rng) -> f32) -> Vec<f32> {
    (0..len).map(|_| if r.next_f64() < 0.25 { f32::NAN } else { draw(r) }).collect()
}

/// About a quarter of each head's targets unknown, unevenly over the replicas' shares; the first
/// 8 examples have no known object label (a whole share without one).
fn multi_head_data(n: usize, seed: u64) -> Dataset {
    let mut r = Rng::new(seed);
    let mut objects = masked(&mut r, n * 3, |r| r.below(2) as f32);
    objects[..24].fill(f32::NAN);
    let tags = masked(&mut r, n * 2, |r| r.below(2) as f32);
    let distance = masked(&mut r, n * 2, |r| r.uniform(-2.0, 2.0) as f32);
    let mut r = Rng::new(seed + 7);
    let scene: Vec<u32> = (0..n).map(|_| if r.next_f64() < 0.3 { IGNORE_CLASS } else { r.below(4) as u32 }).collect();
    Dataset {
        x: rand_range(seed + 1, n * 5, -1.5, 1.5),
        n,
        d: 5,
        input_shape: vec![5],
        targets: Targets::Heads(vec![
            HeadTargets::new("objects", Targets::Labels { y: objects, k: 3 }),
            HeadTargets::new("tags", Targets::Labels { y: tags, k: 2 }),
            HeadTargets::new("scene", Targets::Classes { y: scene, num_classes: 4 }),
            HeadTargets::new("distance", Targets::Regression { y: distance, k: 2 }),
        ]),
        label_names: Vec::new(),
    }
}

#[test]
fn replicas_train_a_network_of_named_heads_like_one_trainer_with_every_head_weighted_by_its_known_targets() {
    // batch 16 over 3 replicas (6 + 5 + 5 rows), 49 examples: a last batch of 1 that only replica
    // 0 computes; each head's mean runs over its own known targets, which the shares hold unevenly
    let data = multi_head_data(49, 4);
    for (opt, replicas) in [(Optimizer::adam(5e-3), 3), (Optimizer::sgd(0.2).momentum(0.9), 2)] {
        let cfg = TrainConfig { batch_size: 16, optimizer: opt, seed: 5, ..Default::default() };
        let (_, alone, together) = compare_reports(&multi_head_net, &data, &cfg, Job::Fit, 3, replicas, 1e-5);
        // every head's loss and metrics reduced over the replicas, as one trainer reports them
        for (a, t) in alone.epochs.iter().zip(&together.epochs) {
            assert_eq!(a.train.heads.len(), 4);
            let close = |x: f64, y: f64| (x - y).abs() <= 1e-5 * x.abs().max(1e-3);
            assert!(close(a.train.loss, t.train.loss), "epoch {}: loss {} alone, {} together", a.epoch, a.train.loss, t.train.loss);
            for (ha, ht) in a.train.heads.iter().zip(&t.train.heads) {
                assert_eq!(ha.name, ht.name);
                assert!(
                    close(ha.weighted_loss, ht.weighted_loss),
                    "{}: {} alone, {} together",
                    ha.name,
                    ha.weighted_loss,
                    ht.weighted_loss
                );
                assert_eq!(ha.accuracy, ht.accuracy, "{}", ha.name);
                assert_eq!(ha.labels.as_ref().map(|l| &l.support), ht.labels.as_ref().map(|l| &l.support), "{}", ha.name);
                assert_eq!(ha.labels.as_ref().map(|l| &l.f1), ht.labels.as_ref().map(|l| &l.f1), "{}", ha.name);
                if let (Some(ra), Some(rt)) = (&ha.regression, &ht.regression) {
                    assert_eq!(ra.support, rt.support);
                    for (x, y) in ra.mae.iter().zip(&rt.mae) {
                        assert!(close(x.unwrap(), y.unwrap()), "{}: MAE {x:?} alone, {y:?} together", ha.name);
                    }
                }
            }
        }
    }
}

#[test]
fn replicas_fine_tune_named_heads_on_a_frozen_trunk_like_one_trainer() {
    // the trunk's cached features feed every head; only the heads' gradients are exchanged
    let data = multi_head_data(30, 8);
    let before = multi_head_net(&gpu()).values().unwrap();
    let cfg = TrainConfig { batch_size: 10, optimizer: Optimizer::sgd(0.3), seed: 1, ..Default::default() };
    let after = compare(&multi_head_net, &data, &cfg, Job::FineTune(Freeze::Trunk), 2, 2, 1e-5);
    assert_eq!(after[..2], before[..2], "the frozen trunk keeps its bits");
    assert_ne!(after[2..], before[2..], "the heads train");
}

/// Learned uncertainty weights are not exchanged between replicas (and each replica's ∂L/∂s
/// would count its constant term once per replica): every replica refuses, none hangs.
#[test]
fn uncertainty_weighting_across_replicas_is_refused() {
    let gpu = gpu();
    let data = multi_head_data(20, 3);
    let group = ThreadGroup::new(2).unwrap();
    let errs: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = group
            .into_iter()
            .map(|r| {
                let (gpu, data) = (gpu.clone(), &data);
                s.spawn(move || {
                    let mut net = multi_head_net(&gpu);
                    let cfg = TrainConfig { batch_size: 10, head_weighting: HeadWeighting::Uncertainty, ..Default::default() };
                    Trainer::new(&gpu, cfg).with_replicas(r).fit(&mut net, data, 1).unwrap_err().to_string()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(errs.iter().all(|e| e.contains("uncertainty") && e.contains("data-parallel")), "{errs:?}");
}

#[test]
fn overlapping_the_exchange_with_the_backward_gives_the_same_bits() {
    // the upper layers' gradients summed while the lowest layer's backward runs: the same sums in
    // the same order as one exchange after the whole backward, for one head and for named heads
    let gpu = gpu();
    let run = |make: &(dyn Fn(&Gpu) -> Network + Sync), data: &Dataset, overlap: bool| -> Vec<Values> {
        let cfg =
            TrainConfig { batch_size: 16, optimizer: Optimizer::adam(5e-3), seed: 2, overlap_exchange: overlap, ..Default::default() };
        let group = ThreadGroup::new(3).unwrap();
        std::thread::scope(|s| {
            let handles: Vec<_> = group
                .into_iter()
                .map(|r| {
                    let (gpu, cfg) = (gpu.clone(), &cfg);
                    s.spawn(move || train(&gpu, make, data, cfg, Job::Fit, 2, Some(r)).0)
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    };
    let mlp = |gpu: &Gpu| Network::mlp(gpu, &[5, 8, 7], Activation::Relu, Init::KaimingUniform, Head::labels(4), 3).unwrap();
    let labels = labels(49, 5, 4, 2);
    let heads = multi_head_data(49, 4);
    for (make, data) in [(&mlp as &(dyn Fn(&Gpu) -> Network + Sync), &labels), (&multi_head_net, &heads)] {
        let (plain, overlapped) = (run(make, data, false), run(make, data, true));
        assert!(overlapped.iter().all(|r| r == &overlapped[0]), "the replicas differ");
        assert!(plain[0] == overlapped[0], "overlapping the exchange changed the result");
    }
}

/// The largest difference of `b` from `a`, tensor by tensor, within `tol` of each tensor's
/// largest value in `a`.
fn assert_close_values(a: &Values, b: &Values, tol: f64, what: &str) {
    for (l, ((aw, ab), (bw, bb))) in a.iter().zip(b).enumerate() {
        for (part, x, y) in [("weight", aw, bw), ("bias", ab, bb)] {
            let scale = x.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-3) as f64;
            let worst = x.iter().zip(y).map(|(p, q)| (p - q).abs() as f64).fold(0.0, f64::max);
            assert!(worst <= tol * scale, "{what}: layer {l} {part} differs from the plain batch by {worst:e} (scale {scale:e})");
        }
    }
}

/// Trains with the whole batch per pass, then accumulating `k` micro-batches per step alone and
/// as `replicas` replicas: both give the plain run's weights and epoch losses to 1e-5 relative,
/// and the replicas agree bit for bit.
fn compare_accumulated(
    make: &(dyn Fn(&Gpu) -> Network + Sync),
    data: &Dataset,
    cfg: &TrainConfig,
    job: Job,
    epochs: usize,
    k: usize,
    replicas: usize,
) {
    let tol = 1e-5;
    let gpu = gpu();
    let (plain, plain_report) = train(&gpu, make, data, cfg, job, epochs, None);
    let acc = TrainConfig { accumulate_steps: k, ..cfg.clone() };
    let (alone, alone_report) = train(&gpu, make, data, &acc, job, epochs, None);
    assert_close_values(&plain, &alone, tol, &format!("accumulate {k}, one trainer"));
    let group = ThreadGroup::new(replicas).unwrap();
    let results: Vec<(Values, FitReport)> = std::thread::scope(|s| {
        let handles: Vec<_> = group
            .into_iter()
            .map(|r| {
                let (gpu, acc) = (gpu.clone(), &acc);
                s.spawn(move || train(&gpu, make, data, acc, job, epochs, Some(r)))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, other) in results.iter().enumerate().skip(1) {
        assert!(other.0 == results[0].0, "accumulate {k}: replica {i} differs from replica 0");
    }
    assert_close_values(&plain, &results[0].0, tol, &format!("accumulate {k}, {replicas} replicas"));
    // the epoch's loss is the mean of the steps' batch losses, however they are computed
    for report in [&alone_report, &results[0].1] {
        for (p, a) in plain_report.epochs.iter().zip(&report.epochs) {
            let (x, y) = (p.train.loss, a.train.loss);
            assert!((x - y).abs() <= 1e-5 * x.abs().max(1e-3), "accumulate {k}: epoch {} loss {y}, plain {x}", p.epoch);
            assert_eq!(p.train.accuracy, a.train.accuracy);
        }
    }
}

#[test]
fn accumulating_micro_batches_trains_an_mlp_like_the_whole_batch_alone_and_across_replicas() {
    // 50 examples, batch 16: three full steps and a last one of 2 rows; k = 3 splits a full step
    // into 6 + 5 + 5 rows and the last into 1 + 1 + nothing
    let data = classes(50, vec![7], 3, 1);
    let make = |gpu: &Gpu| Network::mlp(gpu, &[7, 9, 6], Activation::Tanh, Init::KaimingUniform, Head::classes(3), 4).unwrap();
    for opt in [Optimizer::sgd(0.1).momentum(0.9), Optimizer::adam(1e-2)] {
        let cfg = TrainConfig { batch_size: 16, optimizer: opt, seed: 9, ..Default::default() };
        compare_accumulated(&make, &data, &cfg, Job::Fit, 3, 2, 2);
        compare_accumulated(&make, &data, &cfg, Job::Fit, 3, 3, 3);
    }
}

#[test]
fn accumulating_micro_batches_trains_a_cnn_like_the_whole_batch() {
    let data = classes(20, vec![1, 8, 8], 3, 7);
    let make = |gpu: &Gpu| {
        let trunk = CnnBuilder::new(1, 8, 8).conv(3, 3, 1, 1, Activation::Relu).max_pool(2, 2).dense(8, Activation::Tanh).build().unwrap();
        Network::from_specs(gpu, 64, trunk, Init::KaimingUniform, Head::classes(3), 8).unwrap()
    };
    for opt in [Optimizer::sgd(0.05).momentum(0.9), Optimizer::adam(5e-3)] {
        let cfg = TrainConfig { batch_size: 8, optimizer: opt, seed: 3, ..Default::default() };
        compare_accumulated(&make, &data, &cfg, Job::Fit, 2, 2, 2);
    }
}

#[test]
fn accumulating_weights_each_micro_batch_by_its_known_labels_and_draws_the_batch_dropout_masks() {
    // MeanLabelled divides by the step's known labels, which the micro-batches hold unevenly; the
    // head's dropout draws each example's mask from its place in the epoch's order
    let data = labels(49, 5, 4, 7);
    let make = |gpu: &Gpu| Network::mlp(gpu, &[5, 8], Activation::Tanh, Init::KaimingUniform, Head::labels(4).dropout(0.3), 3).unwrap();
    for reduction in [BceReduction::MeanLabelled, BceReduction::SumLabelsMeanExamples] {
        let bce = BceSettings { reduction, ..Default::default() };
        let cfg = TrainConfig { batch_size: 16, optimizer: Optimizer::sgd(0.3), seed: 2, bce, ..Default::default() };
        compare_accumulated(&make, &data, &cfg, Job::Fit, 2, 2, 3);
    }
}

#[test]
fn accumulating_trains_a_head_on_cached_features_like_the_whole_batch() {
    // a label head alone on the frozen trunk's cached features (the fused head kernels)
    let data = labels(40, 6, 3, 5);
    let make = |gpu: &Gpu| Network::mlp(gpu, &[6, 8, 8], Activation::Tanh, Init::KaimingUniform, Head::labels(3), 6).unwrap();
    let cfg = TrainConfig { batch_size: 12, optimizer: Optimizer::adam(1e-2), seed: 1, ..Default::default() };
    compare_accumulated(&make, &data, &cfg, Job::FineTune(Freeze::Trunk), 3, 3, 2);
}

#[test]
fn accumulating_weights_named_heads_by_their_known_targets_over_the_micro_batches() {
    let data = multi_head_data(49, 4);
    let cfg = TrainConfig { batch_size: 16, optimizer: Optimizer::adam(5e-3), seed: 5, ..Default::default() };
    compare_accumulated(&multi_head_net, &data, &cfg, Job::Fit, 2, 2, 2);
}

#[test]
fn accumulation_settings_it_cannot_honour_are_refused() {
    let gpu = gpu();
    let data = classes(10, vec![4], 2, 1);
    let fit = |cfg: TrainConfig| {
        let mut net = Network::new(&gpu, &[4, 3], Head::classes(2), 1).unwrap();
        Trainer::new(&gpu, cfg).fit(&mut net, &data, 1).unwrap_err().to_string()
    };
    assert!(fit(TrainConfig { accumulate_steps: 0, ..Default::default() }).contains("accumulate_steps must be at least 1"));
    let e = fit(TrainConfig { accumulate_steps: 2, overlap_exchange: true, ..Default::default() });
    assert!(e.contains("overlap_exchange"), "{e}");
    let e = fit(TrainConfig { accumulate_steps: 2, head_weighting: HeadWeighting::Uncertainty, ..Default::default() });
    assert!(e.contains("uncertainty"), "{e}");
    let e = fit(TrainConfig { batch_size: 3, accumulate_steps: 4, ..Default::default() });
    assert!(e.contains("micro-batch"), "{e}");
}

#[test]
fn batchnorm_in_training_mode_sees_each_micro_batch_as_a_forward() {
    // PyTorch's rule: each pass normalises with its own statistics and moves the running ones, and
    // num_batches_tracked counts the passes; 20 examples, batch 8, 2 micro-batches per step: steps
    // of 8, 8 and 4 rows, passes of 4, 4, 4, 4, 2, 2
    let gpu = gpu();
    let data = classes(20, vec![1, 6, 6], 3, 4);
    let make = |gpu: &Gpu| {
        let trunk =
            CnnBuilder::new(1, 6, 6).conv(3, 3, 1, 1, Activation::Identity).batch_norm(Activation::Relu).max_pool(2, 2).build().unwrap();
        Network::from_specs(gpu, 36, trunk, Init::KaimingUniform, Head::classes(3), 2).unwrap()
    };
    let tracked = |k: usize| {
        let mut net = make(&gpu);
        let cfg = TrainConfig { batch_size: 8, accumulate_steps: k, seed: 1, ..Default::default() };
        Trainer::new(&gpu, cfg).fit(&mut net, &data, 2).unwrap();
        let stats = net.running_stats(1).unwrap().expect("layer 1 is the BatchNorm");
        (stats.num_batches_tracked, stats.running_mean)
    };
    let ((plain, plain_mean), (acc, acc_mean)) = (tracked(1), tracked(2));
    assert_eq!((plain, acc), (6, 12));
    assert_ne!(plain_mean, acc_mean, "the running statistics move once per pass, from the pass's statistics");
}
