//! T1–T3 and C1: training through [`Trainer`] on seeded data (the work per step does not depend
//! on the values). samples/s is the median over the epochs after a warm-up epoch, plus the
//! end-to-end rate (everything `fit`/`fine_tune` does, feature caching included). Each workload
//! also gets a [`profile_step`]: the step's time next to the sum of its kernels' times. T1–T3
//! have a CPU baseline (the same model, batch, loss and optimizer, `cpu_baseline`), run after
//! every GPU side of the workload; C1 (the demo's CNN) has none.

use super::cpu_baseline::{self, BATCH, Opt};
use super::table::{CpuTrainResult, Profile, TrainResult};
use super::{Scale, median, rand_vec};
use headswap::Result;
use headswap::data::{Dataset, Targets};
use headswap::gpu::Gpu;
use headswap::nn::{Head, Network};
use headswap::rng::Rng;
use headswap::train::profile::{ProfileOptions, Timing, profile_step};
use headswap::train::{FitReport, Freeze, Optimizer, Precision, TrainConfig, Trainer};

struct TrainScale {
    t1_n: usize,
    t1_epochs: usize,
    t2_n: usize,
    t2_epochs: usize,
    /// T2: cached and uncached runs alternate this many times (a burst of load elsewhere then
    /// hits both, not just one side of the ratio).
    t2_rounds: usize,
    t3_n: usize,
    t3_epochs: usize,
    /// C1: task-A images, task-B scenes, epochs of each run.
    c1_a_n: usize,
    c1_b_n: usize,
    c1_epochs: usize,
    profile_reps: usize,
}

impl TrainScale {
    fn of(scale: Scale) -> TrainScale {
        match scale {
            Scale::Full => TrainScale {
                t1_n: 60_000,
                t1_epochs: 4,
                t2_n: 5_000,
                t2_epochs: 10,
                t2_rounds: 3,
                t3_n: 20_000,
                t3_epochs: 10,
                c1_a_n: 6_000,
                c1_b_n: 2_000,
                c1_epochs: 4,
                profile_reps: 10,
            },
            Scale::Quick => TrainScale {
                t1_n: 6_000,
                t1_epochs: 4,
                t2_n: 500,
                t2_epochs: 10,
                t2_rounds: 2,
                t3_n: 2_000,
                t3_epochs: 10,
                c1_a_n: 600,
                c1_b_n: 200,
                c1_epochs: 4,
                profile_reps: 5,
            },
            Scale::Smoke => TrainScale {
                t1_n: 300,
                t1_epochs: 2,
                t2_n: 200,
                t2_epochs: 2,
                t2_rounds: 1,
                t3_n: 200,
                t3_epochs: 2,
                c1_a_n: 200,
                c1_b_n: 200,
                c1_epochs: 2,
                profile_reps: 1,
            },
        }
    }
}

const INPUTS: usize = 784;
const TRUNK: [usize; 3] = [784, 512, 256];

fn class_data(n: usize, classes: usize, seed: u64) -> Dataset {
    let mut rng = Rng::new(seed);
    let x = rand_vec(&mut rng, n * INPUTS, 0.0, 1.0);
    let y = (0..n).map(|_| rng.below(classes as u64) as u32).collect();
    Dataset {
        x,
        n,
        d: INPUTS,
        input_shape: vec![INPUTS],
        targets: Targets::Classes { y, num_classes: classes },
        label_names: (0..classes).map(|i| format!("class{i}")).collect(),
    }
}

fn label_data(n: usize, k: usize, seed: u64) -> Dataset {
    let mut rng = Rng::new(seed);
    let x = rand_vec(&mut rng, n * INPUTS, 0.0, 1.0);
    let y = (0..n * k).map(|_| if rng.next_f64() < 0.4 { 1.0 } else { 0.0 }).collect();
    Dataset {
        x,
        n,
        d: INPUTS,
        input_shape: vec![INPUTS],
        targets: Targets::Labels { y, k },
        label_names: (0..k).map(|i| format!("label{i}")).collect(),
    }
}

fn config(optimizer: Optimizer, seed: u64, cache: bool) -> TrainConfig {
    TrainConfig { optimizer, batch_size: BATCH, shuffle: true, seed, cache_features: cache, ..TrainConfig::default() }
}

/// One workload's result from `fits`, runs of the same configuration: samples/s is the median
/// over every run's epochs after its first, end to end the median over the runs; counts and bytes
/// are the last run's.
fn summarize(
    id: &str,
    name: String,
    data: &Dataset,
    epochs: usize,
    fits: &[FitReport],
    cpu: Option<CpuTrainResult>,
    profile: Option<Profile>,
) -> TrainResult {
    let rates = |f: &FitReport| f.epochs.iter().map(|e| e.samples_per_sec).collect::<Vec<f64>>();
    let per_epoch: Vec<f64> = fits.iter().flat_map(rates).collect();
    let timed: Vec<f64> = fits.iter().flat_map(|f| rates(f).into_iter().skip(usize::from(f.epochs.len() > 1))).collect();
    let end_to_end: Vec<f64> = fits.iter().map(|f| (data.n * f.epochs.len()) as f64 / f.seconds.max(1e-9)).collect();
    let fit = fits.last().expect("at least one run");
    TrainResult {
        id: id.into(),
        name,
        n: data.n,
        batch: BATCH,
        epochs,
        samples_per_sec: median(&timed),
        epoch_samples_per_sec: per_epoch,
        end_to_end_samples_per_sec: median(&end_to_end),
        final_loss: fit.last().map(|e| e.train.loss).unwrap_or(f64::NAN),
        dispatches_per_step: fit.dispatches_per_step,
        submissions_per_step: fit.submissions_per_step,
        bytes_allocated: fit.bytes_allocated,
        cached_features: fit.cached_features,
        cpu,
        profile,
    }
}

/// One short epoch of the same kind of run on a throwaway network, so that pipeline compilation
/// (a once-per-process cost, seconds on lavapipe) stays out of the measured run.
fn warm_up(gpu: &Gpu, data: &Dataset, head: Head, freeze: Option<Freeze>, cfg: TrainConfig, seed: u64) -> Result<()> {
    let small = data.take(BATCH + BATCH / 2);
    let mut net = Network::new(gpu, &TRUNK, head, seed)?;
    let mut trainer = Trainer::new(gpu, cfg);
    match freeze {
        None => trainer.fit(&mut net, &small, 1)?,
        Some(f) => trainer.fine_tune(&mut net, &small, f, 1)?,
    };
    Ok(())
}

/// Profiles one step of `trainer`'s run of `net` on `data`.
fn profile_of(trainer: &Trainer, net: &Network, data: &Dataset, freeze: Freeze, reps: usize) -> Result<Profile> {
    let p = profile_step(trainer, net, data, freeze, ProfileOptions { reps, timing: Timing::Auto })?;
    Ok(Profile::from(&p))
}

/// T1: pretraining the MLP with SGD and with Adam. Both GPU runs (and their profiles) come
/// before both CPU baselines.
pub fn bench_t1(gpu: &Gpu, scale: Scale, seed: u64) -> Result<Vec<TrainResult>> {
    let ts = TrainScale::of(scale);
    let data = class_data(ts.t1_n, 10, seed ^ 0x7431);
    let runs = [
        ("T1-sgd", Optimizer::sgd(0.05).momentum(0.9), Opt::Sgd { lr: 0.05, momentum: 0.9 }, "SGD momentum 0.9 lr 0.05"),
        ("T1-adam", Optimizer::adam(1e-3), Opt::adam(1e-3), "Adam lr 1e-3"),
    ];
    let mut gpu_side = Vec::new();
    for (id, opt, _, _) in runs {
        let _span = tracing::info_span!("bench", id).entered();
        warm_up(gpu, &data, Head::classes(10), None, config(opt, seed, true), seed)?;
        let mut net = Network::new(gpu, &TRUNK, Head::classes(10), seed)?;
        let mut trainer = Trainer::new(gpu, config(opt, seed, true));
        let fit = trainer.fit(&mut net, &data, ts.t1_epochs)?;
        gpu_side.push((fit, profile_of(&trainer, &net, &data, Freeze::All, ts.profile_reps)?));
    }
    let mut out = Vec::new();
    for ((id, _, cpu_opt, what), (fit, profile)) in runs.into_iter().zip(gpu_side) {
        let _span = tracing::info_span!("bench-cpu", id).entered();
        let cpu = cpu_baseline::fit(&data, &[784, 512, 256, 10], 2, 0, false, cpu_opt, ts.t1_epochs, seed);
        let name = format!("pretrain 784→512→256→10 ReLU, softmax CE, {what}");
        out.push(summarize(id, name, &data, ts.t1_epochs, std::slice::from_ref(&fit), Some(cpu), Some(profile)));
    }
    Ok(out)
}

/// T2: a head-only fine-tune with and without cached trunk features, and with the cached features
/// stored in f16 (`TrainConfig::frozen_storage`), the three alternating; the profiles, then the
/// CPU baselines (of the f32 runs; the f16 run's model and arithmetic are the cached f32 run's),
/// after every GPU run.
pub fn bench_t2(gpu: &Gpu, scale: Scale, seed: u64) -> Result<Vec<TrainResult>> {
    let ts = TrainScale::of(scale);
    let data = label_data(ts.t2_n, 4, seed ^ 0x7432);
    let runs = [("T2-cached", true, Precision::F32), ("T2-uncached", false, Precision::F32), ("T2-cached-f16", true, Precision::F16)];
    let cfg = |cache, precision| TrainConfig { frozen_storage: precision, ..config(Optimizer::sgd(0.05).momentum(0.9), seed, cache) };
    for (id, cache, precision) in runs {
        let _span = tracing::info_span!("bench", id, warm_up = true).entered();
        warm_up(gpu, &data, Head::labels(4), Some(Freeze::Trunk), cfg(cache, precision), seed)?;
    }
    // the runs alternate, so the ratios compare like with like on a loaded machine
    let mut fits: [Vec<FitReport>; 3] = Default::default();
    let mut trainers = Vec::new();
    for round in 0..ts.t2_rounds {
        for (i, (id, cache, precision)) in runs.into_iter().enumerate() {
            let _span = tracing::info_span!("bench", id, round).entered();
            let mut net = Network::new(gpu, &TRUNK, Head::classes(10), seed)?;
            net.swap_head(Head::labels(4), seed + 1)?;
            let mut trainer = Trainer::new(gpu, cfg(cache, precision));
            fits[i].push(trainer.fine_tune(&mut net, &data, Freeze::Trunk, ts.t2_epochs)?);
            if round + 1 == ts.t2_rounds {
                trainers.push((trainer, net));
            }
        }
    }
    let profiles = trainers
        .iter()
        .map(|(trainer, net)| profile_of(trainer, net, &data, Freeze::Trunk, ts.profile_reps))
        .collect::<Result<Vec<_>>>()?;
    let mut out = Vec::new();
    for (((id, cache, precision), fits), profile) in runs.into_iter().zip(&fits).zip(profiles) {
        let _span = tracing::info_span!("bench-cpu", id).entered();
        let cpu = (precision == Precision::F32)
            .then(|| cpu_baseline::fit(&data, &[784, 512, 256, 4], 2, 2, cache, Opt::Sgd { lr: 0.05, momentum: 0.9 }, ts.t2_epochs, seed));
        let name = format!(
            "head-only fine-tune: frozen 784→512→256 trunk, new 256→4 sigmoid head, per-label BCE, SGD momentum 0.9 lr 0.05, {}",
            match (cache, precision) {
                (false, _) => "no cached trunk features".to_string(),
                (true, Precision::F32) => "cached trunk features stored in f32".to_string(),
                // the whole trunk is frozen: its weights are stored in f16 too
                (true, p) => format!("trunk weights and cached trunk features stored in {}", p.name()),
            }
        );
        out.push(summarize(id, name, &data, ts.t2_epochs, fits, cpu, Some(profile)));
    }
    Ok(out)
}

/// T3: a full fine-tune, every layer trainable.
pub fn bench_t3(gpu: &Gpu, scale: Scale, seed: u64) -> Result<Vec<TrainResult>> {
    let ts = TrainScale::of(scale);
    let data = label_data(ts.t3_n, 4, seed ^ 0x7433);
    let _span = tracing::info_span!("bench", id = "T3").entered();
    let cfg = config(Optimizer::sgd(0.01).momentum(0.9), seed, true);
    warm_up(gpu, &data, Head::labels(4), Some(Freeze::All), cfg.clone(), seed)?;
    let mut net = Network::new(gpu, &TRUNK, Head::classes(10), seed)?;
    net.swap_head(Head::labels(4), seed + 1)?;
    let mut trainer = Trainer::new(gpu, cfg);
    let fit = trainer.fine_tune(&mut net, &data, Freeze::All, ts.t3_epochs)?;
    let profile = profile_of(&trainer, &net, &data, Freeze::All, ts.profile_reps)?;
    let cpu = cpu_baseline::fit(&data, &[784, 512, 256, 4], 2, 0, false, Opt::Sgd { lr: 0.01, momentum: 0.9 }, ts.t3_epochs, seed);
    let name = "full fine-tune: every layer trainable, 784→512→256→4, per-label BCE, SGD momentum 0.9 lr 0.01".to_string();
    Ok(vec![summarize("T3", name, &data, ts.t3_epochs, std::slice::from_ref(&fit), Some(cpu), Some(profile))])
}

/// C1: the demo's CNN (`headswap demo --trunk cnn`) on its 16×16 synthetic shape images: conv
/// 3×3 ×8 + ReLU, max pool 2, conv 3×3 ×16 + ReLU, max pool 2, dense 64 + ReLU; pretrained on
/// task A (8 shape classes, softmax CE, SGD momentum 0.9 lr 0.05), then head-swapped to task B
/// (4 labels per scene, per-label BCE, Adam lr 3e-3) and fine-tuned head-only on cached features
/// and with every layer trainable. Batch 128 like T1–T3 (the demo uses 64 and 32). No CPU baseline:
/// the CPU trainer is an MLP.
pub fn bench_c1(gpu: &Gpu, scale: Scale, seed: u64) -> Result<Vec<TrainResult>> {
    let ts = TrainScale::of(scale);
    let a = headswap::data::synthetic::shapes_task_a(ts.c1_a_n, 16, seed ^ 0xc1a);
    let b = headswap::data::synthetic::scenes_task_b(ts.c1_b_n, 16, seed ^ 0xc1b);
    let trunk = headswap::demo::DemoConfig::default().cnn_trunk(&a.input_shape)?;
    let classes = a.num_outputs();
    let k = b.num_outputs();
    let describe = trunk.iter().map(|l| l.describe()).collect::<Vec<_>>().join(" | ");
    let new_net = |head: Head, seed: u64| Network::from_specs(gpu, a.d, trunk.clone(), Default::default(), head, seed);
    let sgd = config(Optimizer::sgd(0.05).momentum(0.9), seed, true);
    let adam = config(Optimizer::adam(3e-3), seed, true);
    let mut out = Vec::new();
    // warm-up: compile every pipeline of the three runs on a few batches
    {
        let _span = tracing::info_span!("bench", id = "C1-warm-up").entered();
        let mut net = new_net(Head::classes(classes), seed)?;
        Trainer::new(gpu, sgd.clone()).fit(&mut net, &a.take(BATCH + BATCH / 2), 1)?;
        for freeze in [Freeze::Trunk, Freeze::All] {
            let mut n = net.try_clone()?;
            n.swap_head(Head::labels(k), seed + 1)?;
            Trainer::new(gpu, adam.clone()).fine_tune(&mut n, &b.take(BATCH + BATCH / 2), freeze, 1)?;
        }
    }
    let _span = tracing::info_span!("bench", id = "C1").entered();
    let mut base = new_net(Head::classes(classes), seed)?;
    let mut trainer = Trainer::new(gpu, sgd);
    let fit = trainer.fit(&mut base, &a, ts.c1_epochs)?;
    let profile = profile_of(&trainer, &base, &a, Freeze::All, ts.profile_reps)?;
    let name = format!("CNN pretrain {describe} → {classes} classes, 16×16 shapes, softmax CE, SGD momentum 0.9 lr 0.05");
    out.push(summarize("C1-pretrain", name, &a, ts.c1_epochs, std::slice::from_ref(&fit), None, Some(profile)));
    for (id, freeze, what) in
        [("C1-head", Freeze::Trunk, "head only, cached trunk features"), ("C1-all", Freeze::All, "every layer trainable")]
    {
        let mut net = base.try_clone()?;
        net.swap_head(Head::labels(k), seed + 1)?;
        let mut trainer = Trainer::new(gpu, adam.clone());
        let fit = trainer.fine_tune(&mut net, &b, freeze, ts.c1_epochs)?;
        let profile = profile_of(&trainer, &net, &b, freeze, ts.profile_reps)?;
        let name = format!("CNN fine-tune on 4-label scenes, new 64→{k} head, per-label BCE, Adam lr 3e-3, {what}");
        out.push(summarize(id, name, &b, ts.c1_epochs, std::slice::from_ref(&fit), None, Some(profile)));
    }
    Ok(out)
}
