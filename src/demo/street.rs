//! The multi-task demo (`headswap demo --street`): synthetic street scenes
//! ([`data::street`](crate::data::street)) read by three tasks — which objects are present
//! (labels), the street's type (classes), how many objects there are (regression) — learned by
//! **one network with three heads** and by **one network per task**, each on the same trunk, on a
//! small and a large trunk. [`StreetReport`] holds each setup's quality per task on held-out
//! scenes and what its training cost (networks, parameters, multiply-adds per example, steps,
//! wall time), beside what the training set's priors alone score.
//!
//! Everything is drawn from [`StreetConfig::seed`]: the data, the initial weights (every network
//! on a trunk starts from the same trunk weights) and the shuffles, so a rerun trains the same
//! networks bit for bit (the wall times differ).
//!
//! ```no_run
//! # fn main() -> headswap::Result<()> {
//! use headswap::demo::street::{self, StreetConfig};
//! let gpu = headswap::Gpu::new()?;
//! let report = street::run(&gpu, &StreetConfig::quick(7), &mut |line| eprintln!("{line}"))?;
//! println!("{report}");
//! # Ok(()) }
//! ```

use crate::data::street::{HEAD_COUNT, HEAD_OBJECTS, HEAD_SCENE, SceneType, Thing, street_scenes};
use crate::data::{Dataset, Targets};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernels::Activation;
use crate::kernels::loss::RegressionLoss;
use crate::kernels::metrics::OrNa;
use crate::nn::{Head, Init, Network, Trunk};
use crate::train::{Metrics, Optimizer, TrainConfig, Trainer};
use std::time::Instant;

/// One network, three heads on one trunk.
pub const MULTI_TASK: &str = "multi-task: 1 network, 3 heads";
/// One network with the objects (labels) head alone.
pub const OBJECTS_ONLY: &str = "single-task: objects";
/// One network with the scene (classes) head alone.
pub const SCENE_ONLY: &str = "single-task: scene";
/// One network with the count (regression) head alone.
pub const COUNT_ONLY: &str = "single-task: count";
/// The three single-task networks together: each task's quality from its own network, the costs
/// summed.
pub const SEPARATE: &str = "3 single-task networks (sum)";
/// Every setup of a trunk, in the report's order.
pub const SETUPS: [&str; 5] = [MULTI_TASK, OBJECTS_ONLY, SCENE_ONLY, COUNT_ONLY, SEPARATE];

/// A trunk the demo compares on: 3×3 convolutions (each with a 2×2 max pool), then dense layers
/// ([`super::cnn_trunk`], ReLU).
#[derive(Debug, Clone, PartialEq)]
pub struct StreetTrunk {
    /// "small", "large": the report's name for it.
    pub name: String,
    pub channels: Vec<usize>,
    pub dense: Vec<usize>,
}

/// The demo's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct StreetConfig {
    /// Training scenes.
    pub train: usize,
    /// Held-out scenes every setup is scored on.
    pub test: usize,
    /// Image side in pixels.
    pub size: usize,
    /// Fraction of the training scenes whose stop-sign and traffic-light labels are unknown.
    pub unknown: f64,
    /// Epochs every network trains for.
    pub epochs: usize,
    pub batch_size: usize,
    /// Adam's learning rate.
    pub lr: f32,
    /// The count head's loss weight (the objects and scene heads weigh 1): the count's squared
    /// error starts near its mean squared (about 6 here), several times the other two losses, and
    /// at weight 1 takes most of a shared trunk's gradient early on (with the quick run's budget,
    /// the small multi-task network's objects F1 halves); 0.25 by default.
    pub count_weight: f32,
    pub trunks: Vec<StreetTrunk>,
    pub seed: u64,
}

impl StreetConfig {
    /// The full demo: 4000 training scenes, 1000 held out, 16×16, 20 % with unknown sign and
    /// light labels, 15 epochs, a small trunk (4 and 8 channels, 16 dense units) and a large one
    /// (16 and 32 channels, 96 dense units).
    pub fn full(seed: u64) -> StreetConfig {
        StreetConfig {
            train: 4000,
            test: 1000,
            size: 16,
            unknown: 0.2,
            epochs: 15,
            batch_size: 32,
            lr: 3e-3,
            count_weight: 0.25,
            trunks: vec![
                StreetTrunk { name: "small".into(), channels: vec![4, 8], dense: vec![16] },
                StreetTrunk { name: "large".into(), channels: vec![16, 32], dense: vec![96] },
            ],
            seed,
        }
    }

    /// The seed of the held-out scenes (the training scenes' is [`StreetConfig::seed`]).
    pub fn held_out_seed(&self) -> u64 {
        self.seed.wrapping_add(1)
    }

    /// A smaller, faster run (CI, tests): 600 training scenes, 400 held out, 6 epochs, the same
    /// trunks.
    pub fn quick(seed: u64) -> StreetConfig {
        StreetConfig { train: 600, test: 400, epochs: 6, ..StreetConfig::full(seed) }
    }
}

/// Quality on held-out scenes; `None` where a setup has no head for the task, or the score is
/// undefined (n/a).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Quality {
    /// Mean F1 over the object labels.
    pub objects_f1: Option<f64>,
    /// F1 per object label (pedestrian, car, stop sign, traffic light); empty without the head.
    pub label_f1: Vec<Option<f64>>,
    /// Scene-type accuracy.
    pub scene_accuracy: Option<f64>,
    /// Mean absolute error of the object count.
    pub count_mae: Option<f64>,
    /// Root mean squared error of the object count.
    pub count_rmse: Option<f64>,
}

/// One setup on one trunk.
#[derive(Debug, Clone)]
pub struct StreetRow {
    /// The trunk's name ([`StreetTrunk::name`]).
    pub trunk: String,
    /// One of [`SETUPS`].
    pub setup: &'static str,
    pub quality: Quality,
    /// Networks trained.
    pub networks: usize,
    /// Parameters of all its networks.
    pub params: usize,
    /// Forward multiply-adds per example through all its networks ([`Network::multiply_adds`]).
    pub multiply_adds: usize,
    /// Optimizer steps of all its networks.
    pub steps: usize,
    /// Examples passed through a training step, over all its networks.
    pub examples_trained: usize,
    /// Training wall time of all its networks, seconds.
    pub seconds: f64,
    /// Per head it trained (by name), the head's own training loss per epoch (unweighted).
    pub head_loss: Vec<(String, Vec<f64>)>,
}

/// What the demo measured.
#[derive(Debug, Clone)]
pub struct StreetReport {
    pub adapter: String,
    pub config: StreetConfig,
    /// Each trunk's name and layers, described.
    pub trunks: Vec<(String, String)>,
    /// The object labels' names.
    pub label_names: Vec<String>,
    /// The scene types' names.
    pub scene_names: Vec<String>,
    /// What guessing from the training set's priors scores, with no image: every object present,
    /// the most frequent scene type, the mean count.
    pub baseline: Quality,
    /// Per trunk, the rows of [`SETUPS`] in order.
    pub rows: Vec<StreetRow>,
}

impl StreetReport {
    /// The row of `setup` on the trunk named `trunk`.
    pub fn row(&self, trunk: &str, setup: &str) -> Option<&StreetRow> {
        self.rows.iter().find(|r| r.trunk == trunk && r.setup == setup)
    }
}

fn heads(count_weight: f32) -> [Head; 3] {
    [
        Head::labels(Thing::OBJECTS.len()).named(HEAD_OBJECTS),
        Head::classes(SceneType::ALL.len()).named(HEAD_SCENE),
        Head::regression(1, RegressionLoss::Mse).named(HEAD_COUNT).weight(count_weight),
    ]
}

/// What the priors of `train` score on `test` (see [`StreetReport::baseline`]).
fn baseline(train: &Dataset, test: &Dataset) -> Result<Quality> {
    let missing = |h: &str| Error::invalid(format!("street data without {h:?} targets"));
    let (
        Some(Targets::Labels { y: labels, k }),
        Some(Targets::Classes { y: train_scene, num_classes }),
        Some(Targets::Regression { y: train_count, .. }),
    ) = (test.targets.head(HEAD_OBJECTS), train.targets.head(HEAD_SCENE), train.targets.head(HEAD_COUNT))
    else {
        return Err(missing("objects, scene and count"));
    };
    // "present" everywhere: precision = the positive rate p, recall 1, F1 = 2p / (1 + p)
    let label_f1: Vec<Option<f64>> = (0..*k)
        .map(|j| {
            let known: Vec<f32> = labels.iter().skip(j).step_by(*k).copied().filter(|v| !v.is_nan()).collect();
            let positives = known.iter().filter(|&&v| v == 1.0).count();
            (positives > 0).then(|| 2.0 * positives as f64 / (known.len() + positives) as f64)
        })
        .collect();
    let defined: Vec<f64> = label_f1.iter().flatten().copied().collect();
    let mut per_class = vec![0usize; *num_classes];
    for &c in train_scene {
        per_class[c as usize] += 1;
    }
    let majority = (0..*num_classes).max_by_key(|&c| (per_class[c], std::cmp::Reverse(c))).unwrap_or(0) as u32;
    let Some(Targets::Classes { y: test_scene, .. }) = test.targets.head(HEAD_SCENE) else { return Err(missing(HEAD_SCENE)) };
    let Some(Targets::Regression { y: test_count, .. }) = test.targets.head(HEAD_COUNT) else { return Err(missing(HEAD_COUNT)) };
    let mean = train_count.iter().map(|&v| v as f64).sum::<f64>() / train_count.len().max(1) as f64;
    let n = test_count.len().max(1) as f64;
    Ok(Quality {
        objects_f1: (!defined.is_empty()).then(|| defined.iter().sum::<f64>() / defined.len() as f64),
        label_f1,
        scene_accuracy: Some(test_scene.iter().filter(|&&c| c == majority).count() as f64 / test_scene.len().max(1) as f64),
        count_mae: Some(test_count.iter().map(|&v| (v as f64 - mean).abs()).sum::<f64>() / n),
        count_rmse: Some((test_count.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n).sqrt()),
    })
}

/// The quality of the heads `m` scored.
fn quality(m: &Metrics) -> Quality {
    let mut q = Quality::default();
    for h in &m.heads {
        match h.name.as_str() {
            HEAD_OBJECTS => {
                if let Some(l) = &h.labels {
                    q.objects_f1 = l.mean_f1;
                    q.label_f1 = l.f1.clone();
                }
            }
            HEAD_SCENE => q.scene_accuracy = h.accuracy,
            HEAD_COUNT => {
                if let Some(r) = &h.regression {
                    q.count_mae = r.mean_mae;
                    q.count_rmse = r.mean_rmse;
                }
            }
            _ => {}
        }
    }
    q
}

/// Runs the demo; `progress` receives a line per network trained.
pub fn run(gpu: &Gpu, cfg: &StreetConfig, progress: &mut dyn FnMut(&str)) -> Result<StreetReport> {
    if cfg.train == 0 || cfg.test == 0 || cfg.epochs == 0 || cfg.batch_size == 0 {
        return Err(Error::invalid("the street demo needs training and test scenes, epochs and a batch size"));
    }
    if cfg.trunks.is_empty() {
        return Err(Error::invalid("the street demo needs at least one trunk"));
    }
    let train = street_scenes(cfg.train, cfg.size, cfg.seed, cfg.unknown)?;
    let test = street_scenes(cfg.test, cfg.size, cfg.held_out_seed(), 0.0)?;
    if !(cfg.count_weight.is_finite() && cfg.count_weight > 0.0) {
        return Err(Error::invalid(format!("the count head's weight must be positive, not {}", cfg.count_weight)));
    }
    let all_heads = heads(cfg.count_weight);
    let train_config =
        || TrainConfig { optimizer: Optimizer::adam(cfg.lr), batch_size: cfg.batch_size, seed: cfg.seed + 2, ..TrainConfig::default() };
    let mut rows = Vec::new();
    let mut trunks = Vec::new();
    for (t, spec) in cfg.trunks.iter().enumerate() {
        let layers = super::cnn_trunk(&train.input_shape, &spec.channels, &spec.dense, Activation::Relu)?;
        let trunk = Trunk::chain(layers);
        trunks.push((spec.name.clone(), trunk.layers.iter().map(|l| l.describe()).collect::<Vec<_>>().join(" | ")));
        // every network on this trunk starts from the same trunk weights and sees the same batches
        let net_seed = cfg.seed + 100 + t as u64;
        // Warm-up, untimed: one epoch of the three heads on a few batches builds and tunes the
        // kernels of every layer shape the setups use, so the first network timed pays no more
        // for that than the others do.
        let mut warm = Network::from_trunk_heads(gpu, train.d, trunk.clone(), Init::KaimingUniform, &all_heads, net_seed)?;
        Trainer::new(gpu, train_config()).fit(&mut warm, &train.take(2 * cfg.batch_size), 1)?;
        let mut singles = Vec::new();
        for (setup, heads) in
            [(MULTI_TASK, &all_heads[..]), (OBJECTS_ONLY, &all_heads[0..1]), (SCENE_ONLY, &all_heads[1..2]), (COUNT_ONLY, &all_heads[2..3])]
        {
            progress(&format!("{} trunk, {setup}: {} epochs of {} scenes", spec.name, cfg.epochs, train.n));
            let mut net = Network::from_trunk_heads(gpu, train.d, trunk.clone(), Init::KaimingUniform, heads, net_seed)?;
            let config = TrainConfig {
                optimizer: Optimizer::adam(cfg.lr),
                batch_size: cfg.batch_size,
                seed: cfg.seed + 2,
                ..TrainConfig::default()
            };
            let mut trainer = Trainer::new(gpu, config);
            let started = Instant::now();
            let fit = trainer.fit(&mut net, &train, cfg.epochs)?;
            let seconds = started.elapsed().as_secs_f64();
            let m = trainer.evaluate(&net, &test)?;
            let head_loss = net
                .heads()
                .iter()
                .enumerate()
                .map(|(i, h)| {
                    let w = f64::from(h.weight).max(f64::MIN_POSITIVE);
                    (h.name.clone(), fit.epochs.iter().map(|e| e.train.heads.get(i).map_or(f64::NAN, |m| m.weighted_loss / w)).collect())
                })
                .collect();
            let row = StreetRow {
                trunk: spec.name.clone(),
                setup,
                quality: quality(&m),
                networks: 1,
                params: net.num_params(),
                multiply_adds: net.multiply_adds(),
                steps: fit.epochs.len() * train.n.div_ceil(cfg.batch_size),
                examples_trained: fit.epochs.len() * train.n,
                seconds,
                head_loss,
            };
            if setup != MULTI_TASK {
                singles.push(row.clone());
            }
            rows.push(row);
        }
        let pick = |setup: &str| singles.iter().find(|r| r.setup == setup).map(|r| r.quality.clone()).unwrap_or_default();
        let (objects, scene, count) = (pick(OBJECTS_ONLY), pick(SCENE_ONLY), pick(COUNT_ONLY));
        rows.push(StreetRow {
            trunk: spec.name.clone(),
            setup: SEPARATE,
            quality: Quality {
                objects_f1: objects.objects_f1,
                label_f1: objects.label_f1,
                scene_accuracy: scene.scene_accuracy,
                count_mae: count.count_mae,
                count_rmse: count.count_rmse,
            },
            networks: singles.len(),
            params: singles.iter().map(|r| r.params).sum(),
            multiply_adds: singles.iter().map(|r| r.multiply_adds).sum(),
            steps: singles.iter().map(|r| r.steps).sum(),
            examples_trained: singles.iter().map(|r| r.examples_trained).sum(),
            seconds: singles.iter().map(|r| r.seconds).sum(),
            head_loss: singles.iter().flat_map(|r| r.head_loss.clone()).collect(),
        });
    }
    Ok(StreetReport {
        adapter: format!("{} ({:?})", gpu.adapter_info().name, gpu.adapter_info().backend),
        config: cfg.clone(),
        trunks,
        label_names: Thing::OBJECTS.iter().map(|t| t.name().to_string()).collect(),
        scene_names: SceneType::ALL.iter().map(|t| t.name().to_string()).collect(),
        baseline: baseline(&train, &test)?,
        rows,
    })
}

impl StreetReport {
    /// One line describing the data.
    pub fn data_description(&self) -> String {
        let c = &self.config;
        format!(
            "synthetic street scenes {}×{}: {} for training ({:.0}% with unknown stop-sign and traffic-light labels), {} held out",
            c.size,
            c.size,
            c.train,
            100.0 * c.unknown,
            c.test
        )
    }

    /// One line describing the training.
    pub fn training_description(&self) -> String {
        let c = &self.config;
        format!(
            "every network: Adam (lr {}), batch {}, {} epochs, seed {}; loss weights: objects 1 (BCE), scene 1 (cross-entropy), count {} (squared error)",
            c.lr, c.batch_size, c.epochs, c.seed, c.count_weight
        )
    }

    pub fn to_json(&self) -> String {
        let quality = |q: &Quality| {
            serde_json::json!({
                "objects_mean_f1": q.objects_f1, "objects_f1": q.label_f1, "scene_accuracy": q.scene_accuracy,
                "count_mae": q.count_mae, "count_rmse": q.count_rmse,
            })
        };
        let rows: Vec<serde_json::Value> = self
            .rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "trunk": r.trunk, "setup": r.setup, "quality": quality(&r.quality), "networks": r.networks,
                    "params": r.params, "multiply_adds_per_example": r.multiply_adds, "steps": r.steps,
                    "examples_trained": r.examples_trained, "seconds": r.seconds,
                })
            })
            .collect();
        let trunks: Vec<serde_json::Value> = self.trunks.iter().map(|(n, d)| serde_json::json!({"name": n, "layers": d})).collect();
        serde_json::json!({
            "adapter": self.adapter, "data": self.data_description(), "training": self.training_description(),
            "trunks": trunks, "labels": self.label_names, "scenes": self.scene_names,
            "baseline": quality(&self.baseline), "results": rows,
        })
        .to_string()
    }
}

/// `v` as a percentage with one decimal, or n/a / "-".
fn percent(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{:.1}%", 100.0 * v))
}

/// `v` with 3 decimals, or "-" where the setup has no such head and n/a where it is undefined.
fn score(v: Option<f64>, has_head: bool) -> String {
    if has_head { format!("{:.3}", OrNa(v)) } else { "-".to_string() }
}

impl std::fmt::Display for StreetReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "adapter:  {}", self.adapter)?;
        writeln!(f, "data:     {}", self.data_description())?;
        writeln!(f, "training: {}", self.training_description())?;
        for (name, layers) in &self.trunks {
            writeln!(f, "trunk {name:<5} {layers}")?;
        }
        writeln!(f, "\nquality on the held-out scenes; training cost (MMAC/ex: forward multiply-adds per example, millions)\n")?;
        writeln!(
            f,
            "{:<6} {:<32} {:>10} {:>9} {:>9} {:>10} {:>4} {:>8} {:>8} {:>6} {:>8}",
            "trunk", "setup", "objects F1", "scene acc", "count MAE", "count RMSE", "nets", "params", "MMAC/ex", "steps", "time (s)"
        )?;
        let b = &self.baseline;
        writeln!(
            f,
            "{:<6} {:<32} {:>10} {:>9} {:>9} {:>10}",
            "-",
            "no image: training-set priors",
            score(b.objects_f1, true),
            percent(b.scene_accuracy),
            score(b.count_mae, true),
            score(b.count_rmse, true)
        )?;
        for r in &self.rows {
            let q = &r.quality;
            let (objects, scene, count) = match r.setup {
                OBJECTS_ONLY => (true, false, false),
                SCENE_ONLY => (false, true, false),
                COUNT_ONLY => (false, false, true),
                _ => (true, true, true),
            };
            if r.setup == MULTI_TASK {
                writeln!(f)?;
            }
            writeln!(
                f,
                "{:<6} {:<32} {:>10} {:>9} {:>9} {:>10} {:>4} {:>8} {:>8.3} {:>6} {:>8.1}",
                r.trunk,
                r.setup,
                score(q.objects_f1, objects),
                if scene { percent(q.scene_accuracy) } else { "-".into() },
                score(q.count_mae, count),
                score(q.count_rmse, count),
                r.networks,
                r.params,
                r.multiply_adds as f64 / 1e6,
                r.steps,
                r.seconds
            )?;
        }
        writeln!(f, "\nobjects F1 per label ({}):", self.label_names.join(", "))?;
        let per = |v: &[Option<f64>]| v.iter().map(|&x| format!("{:>7.3}", OrNa(x))).collect::<Vec<_>>().join(" ");
        writeln!(f, "{:<6} {:<32} {}", "-", "no image: training-set priors", per(&b.label_f1))?;
        for r in self.rows.iter().filter(|r| matches!(r.setup, MULTI_TASK | OBJECTS_ONLY)) {
            writeln!(f, "{:<6} {:<32} {}", r.trunk, r.setup, per(&r.quality.label_f1))?;
        }
        Ok(())
    }
}
