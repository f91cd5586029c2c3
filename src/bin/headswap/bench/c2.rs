//! C2 (issue 13): torchvision's ResNet-18 (`Arch::ResNet18`) on this adapter — the frozen trunk's
//! features at 224×224 and 64×64 (what caching them costs: inference-mode BatchNorm folded into
//! the convolutions) and a whole fine-tuning step at 64×64 (every layer trainable, BatchNorm in
//! training mode, SGD momentum), batch 32, images/s; and the bytes the network and the run hold
//! on the device. Random weights with BatchNorm γ, β and running statistics that are not the
//! defaults (as tests/models.rs), seeded data (the work per image does not depend on the values).
//!
//! The f16 features row stores the frozen trunk's weights in f16 too (`frozen_storage = f16`
//! with the whole trunk frozen): its network bytes count the trunk at 2 bytes a value.
//!
//! The features are timed as a head-only fine-tune with cached features does them: `fine_tune`
//! with the trunk frozen computes every image's trunk output once (batches of 32, each one
//! submission) and then trains the 512→10 head on those. The figure is images over the run's
//! time outside its epochs — upload of the images, the plans (their pipelines compiled by a
//! warm-up run before), the folds and the trunk's forward passes; the head's epochs (a few
//! milliseconds on 512 features) are left out.

use super::Scale;
use super::table::{ModelResult, Profile};
use super::{median, rand_vec};
use headswap::Result;
use headswap::data::{Dataset, Targets};
use headswap::gpu::Gpu;
use headswap::nn::models::Arch;
use headswap::nn::{Head, Init, LayerSpec, LoadOptions, Network};
use headswap::rng::Rng;
use headswap::train::profile::{ProfileOptions, Timing, profile_step};
use headswap::train::{BatchNormMode, FitReport, Freeze, Optimizer, Precision, TrainConfig, Trainer};

/// The head both rows put on the trunk: 10 classes, softmax cross-entropy.
const CLASSES: usize = 10;

struct C2Scale {
    batch: usize,
    /// Image sides: the large and small feature rows and the fine-tune (issue: 224, 64, 64).
    large: usize,
    small: usize,
    /// Images per feature run at each side, and feature runs (rounds) per side.
    large_n: usize,
    small_n: usize,
    feature_rounds: usize,
    /// Fine-tune: images per epoch and epochs (the first a warm-up, not counted).
    finetune_n: usize,
    finetune_epochs: usize,
    profile_reps: usize,
}

impl C2Scale {
    fn of(scale: Scale) -> C2Scale {
        match scale {
            Scale::Full => C2Scale {
                batch: 32,
                large: 224,
                small: 64,
                large_n: 64,
                small_n: 256,
                feature_rounds: 2,
                finetune_n: 96,
                finetune_epochs: 4,
                profile_reps: 3,
            },
            Scale::Quick => C2Scale {
                batch: 32,
                large: 224,
                small: 64,
                large_n: 32,
                small_n: 96,
                feature_rounds: 1,
                finetune_n: 64,
                finetune_epochs: 3,
                profile_reps: 1,
            },
            Scale::Smoke => C2Scale {
                batch: 2,
                large: 40,
                small: 32,
                large_n: 4,
                small_n: 4,
                feature_rounds: 1,
                finetune_n: 4,
                finetune_epochs: 2,
                profile_reps: 1,
            },
        }
    }
}

/// ResNet-18 for 3×`side`×`side` images with a 10-class head at `fc`, its BatchNorms given
/// random γ, β and running statistics (the defaults 1, 0, 0, 1 would let a fold be a no-op).
fn resnet18(gpu: &Gpu, side: usize, seed: u64) -> Result<Network> {
    let arch = Arch::ResNet18;
    let trunk = arch.trunk(3, side, side)?;
    let mut net = Network::from_trunk(gpu, 3 * side * side, trunk, Init::KaimingUniform, arch.head(Head::classes(CLASSES)), seed)?;
    let mut sd = net.to_checkpoint()?;
    let buffers = net.buffer_names();
    let is_bn = |name: &str, suffix: &str| {
        buffers.iter().any(|b| b.strip_suffix("running_mean").is_some_and(|m| name.strip_suffix(suffix) == Some(m)))
    };
    let mut rng = Rng::new(seed ^ 0xb4);
    for t in sd.tensors.iter_mut() {
        let (lo, hi) = if t.name.ends_with("running_var") {
            (0.5, 1.5)
        } else if t.name.ends_with("running_mean") {
            (-0.2, 0.2)
        } else if is_bn(&t.name, "weight") {
            (0.6, 1.2)
        } else if is_bn(&t.name, "bias") {
            (-0.1, 0.1)
        } else {
            continue;
        };
        t.data = (0..t.data.len()).map(|_| rng.uniform(lo, hi) as f32).collect();
    }
    net.load_state_dict(&sd, LoadOptions { strict: true, ..Default::default() }, "c2-random")?;
    Ok(net)
}

/// What the network itself holds on the device: its parameters and the BatchNorms' running mean
/// and variance, 4 bytes each (the arena's alignment padding, at most 255 bytes a tensor, not
/// counted).
fn network_bytes(net: &Network) -> u64 {
    let running: usize = net.layers().iter().map(|l| if let LayerSpec::BatchNorm(b) = l { 2 * b.channels } else { 0 }).sum();
    let params = |l: &LayerSpec| l.weight_shape().map_or(0, |s| s.iter().product::<usize>()) + l.bias_len();
    let trunk: usize = net.trunk_layers().iter().map(params).sum();
    // a trunk stored in f16 (a head-only run with frozen_storage f16) holds 2 bytes a value
    let trunk_bytes = if net.trunk_storage() == Precision::F16 { 2 * trunk } else { 4 * trunk };
    (trunk_bytes + 4 * (net.num_params() - trunk + running)) as u64
}

/// `n` seeded images 3×`side`×`side`, values in [−2, 2) (roughly what ImageNet normalisation
/// gives), with random class targets.
fn images(n: usize, side: usize, seed: u64) -> Dataset {
    let d = 3 * side * side;
    let mut rng = Rng::new(seed);
    let x = rand_vec(&mut rng, n * d, -2.0, 2.0);
    let y = (0..n).map(|_| rng.below(CLASSES as u64) as u32).collect();
    Dataset {
        x,
        n,
        d,
        input_shape: vec![3, side, side],
        targets: Targets::Classes { y, num_classes: CLASSES },
        label_names: (0..CLASSES).map(|i| format!("class{i}")).collect(),
    }
}

fn config(batch: usize, seed: u64, lr: f32) -> TrainConfig {
    TrainConfig {
        optimizer: Optimizer::sgd(lr).momentum(0.9),
        batch_size: batch,
        shuffle: true,
        seed,
        cache_features: true,
        ..TrainConfig::default()
    }
}

/// The time of a head-only fine-tune spent outside its epochs: upload, plans and the cached
/// trunk features.
fn caching_seconds(fit: &FitReport) -> f64 {
    (fit.seconds - fit.epochs.iter().map(|e| e.seconds).sum::<f64>()).max(1e-9)
}

/// The features of `side`×`side` images: a warm-up run on one batch and a half (pipelines,
/// autotuned convolution choices), then `rounds` runs of `n` images.
/// `precision`: how the cached features are stored (`TrainConfig::frozen_storage`).
fn features(gpu: &Gpu, cs: &C2Scale, side: usize, n: usize, rounds: usize, seed: u64, precision: Precision) -> Result<ModelResult> {
    let id = match precision {
        Precision::F32 => format!("C2-features-{side}"),
        p => format!("C2-features-{side}-{}", p.name()),
    };
    let data = images(n, side, seed ^ side as u64);
    let cfg = TrainConfig { frozen_storage: precision, ..config(cs.batch, seed, 0.01) };
    let net = resnet18(gpu, side, seed)?;
    {
        let _span = tracing::info_span!("bench", id, warm_up = true).entered();
        let mut warm = net.try_clone()?;
        Trainer::new(gpu, cfg.clone()).fine_tune(&mut warm, &data.take(cs.batch + cs.batch / 2), Freeze::Trunk, 1)?;
    }
    let mut rates = Vec::new();
    let mut last = None;
    for round in 0..rounds {
        let _span = tracing::info_span!("bench", id, round).entered();
        let mut run = net.try_clone()?;
        let fit = Trainer::new(gpu, cfg.clone()).fine_tune(&mut run, &data, Freeze::Trunk, 1)?;
        if !fit.cached_features {
            return Err(headswap::Error::InvalidInput("C2: the frozen ResNet-18 trunk's features were not cached".into()));
        }
        rates.push(n as f64 / caching_seconds(&fit));
        last = Some((fit, run));
    }
    let (fit, run) = last.ok_or_else(|| headswap::Error::InvalidInput("C2: no feature run".into()))?;
    Ok(ModelResult {
        id,
        name: match precision {
            Precision::F32 => format!(
                "ResNet-18 trunk features, {side}×{side}, eval-mode BatchNorm folded into the convolutions, cached in f32 by a head-only fine-tune (upload and plans included, head epochs excluded)"
            ),
            p => format!(
                "ResNet-18 trunk features, {side}×{side}, trunk weights stored in {0} (each layer widened to f32 as it runs; BatchNorm not folded, its own eval launch), features cached in {0} by a head-only fine-tune (upload and plans included, head epochs excluded)",
                p.name()
            ),
        },
        image: side,
        batch: cs.batch,
        n,
        runs: rounds,
        images_per_sec: median(&rates),
        run_images_per_sec: rates,
        network_bytes: network_bytes(&run),
        run_bytes: fit.bytes_allocated,
        dispatches_per_step: None,
        final_loss: None,
        profile: None,
    })
}

/// A whole fine-tuning step at `side`: every layer trainable, BatchNorm in training mode, SGD
/// momentum 0.9 lr 0.01; images/s the median over the epochs after the first, then a step profile.
fn finetune(gpu: &Gpu, cs: &C2Scale, side: usize, seed: u64) -> Result<ModelResult> {
    let id = format!("C2-finetune-{side}");
    let data = images(cs.finetune_n, side, seed ^ 0xf7 ^ side as u64);
    let cfg = TrainConfig { batch_norm: BatchNormMode::Train, ..config(cs.batch, seed, 0.01) };
    let net = resnet18(gpu, side, seed)?;
    {
        let _span = tracing::info_span!("bench", id, warm_up = true).entered();
        let mut warm = net.try_clone()?;
        // whole batches: a training-mode BatchNorm over one image of layer4's 1×1 maps at 32×32
        // (the smoke size) has one value per channel, which PyTorch and headswap refuse
        Trainer::new(gpu, cfg.clone()).fine_tune(&mut warm, &data.take(2 * cs.batch), Freeze::All, 1)?;
    }
    let _span = tracing::info_span!("bench", id).entered();
    let mut run = net.try_clone()?;
    let mut trainer = Trainer::new(gpu, cfg);
    let fit = trainer.fine_tune(&mut run, &data, Freeze::All, cs.finetune_epochs)?;
    let rates: Vec<f64> = fit.epochs.iter().map(|e| e.samples_per_sec).collect();
    let timed = &rates[usize::from(rates.len() > 1)..];
    let p = profile_step(&trainer, &run, &data, Freeze::All, ProfileOptions { reps: cs.profile_reps, timing: Timing::Auto })?;
    Ok(ModelResult {
        id,
        name: format!(
            "ResNet-18 fine-tune step, {side}×{side}, every layer trainable, BatchNorm in training mode, 512→{CLASSES} head, softmax CE, SGD momentum 0.9 lr 0.01"
        ),
        image: side,
        batch: cs.batch,
        n: data.n,
        runs: cs.finetune_epochs,
        images_per_sec: median(timed),
        run_images_per_sec: rates,
        network_bytes: network_bytes(&net),
        run_bytes: fit.bytes_allocated,
        dispatches_per_step: Some(fit.dispatches_per_step),
        final_loss: fit.last().map(|e| e.train.loss),
        profile: Some(Profile::from(&p)),
    })
}

/// C2's three rows, in the order, and the small features again with the cache in f16.
pub fn bench_c2(gpu: &Gpu, scale: Scale, seed: u64) -> Result<Vec<ModelResult>> {
    let cs = C2Scale::of(scale);
    Ok(vec![
        features(gpu, &cs, cs.large, cs.large_n, cs.feature_rounds, seed, Precision::F32)?,
        features(gpu, &cs, cs.small, cs.small_n, cs.feature_rounds, seed, Precision::F32)?,
        features(gpu, &cs, cs.small, cs.small_n, cs.feature_rounds, seed, Precision::F16)?,
        finetune(gpu, &cs, cs.small, seed)?,
    ])
}

/// C2's 64×64 rows alone: the features in f32 and the fine-tune step (`--only c2-64`).
pub fn bench_c2_small(gpu: &Gpu, scale: Scale, seed: u64) -> Result<Vec<ModelResult>> {
    let cs = C2Scale::of(scale);
    Ok(vec![features(gpu, &cs, cs.small, cs.small_n, cs.feature_rounds, seed, Precision::F32)?, finetune(gpu, &cs, cs.small, seed)?])
}
