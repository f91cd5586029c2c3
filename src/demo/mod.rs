//! The transfer-learning demo: pretrain on task A, head-swap, fine-tune on task B (head only,
//! and everything), and train the same network on B from scratch, at several task-B sizes, so
//! the value of transfer shows where B is small. `headswap demo` prints [`DemoReport`].
//!
//! [`street`] is the multi-task demo (`headswap demo --street`): one network with three heads
//! against one network per task, on street scenes.

use crate::data::{self, Dataset, Targets};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernels::Activation;
use crate::kernels::metrics::OrNa;
use crate::nn::{Head, Network};
use crate::train::{Freeze, Optimizer, TrainConfig, Trainer};
use std::path::PathBuf;
use std::time::Instant;

pub mod street;

/// Which data the demo runs on.
#[derive(Debug, Clone, PartialEq)]
pub enum DemoData {
    /// Built-in synthetic shapes: task A names the one object shown (8 classes); task B says
    /// which of 4 objects a scene of several contains.
    Synthetic,
    /// Real handwritten digits (`../shared/data/digits` or the folder given): task A classifies
    /// one digit; task B says which of the digits 2, 3, 5, 7 appear in a 2×2 scene of digits.
    Digits(Option<PathBuf>),
}

/// The kind of trunk the demo pretrains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trunk {
    /// Dense layers over the flattened image.
    Mlp,
    /// 3×3 convolutions with 2×2 max pooling, then a dense layer.
    Cnn,
    /// A small ResNet: a convolution with BatchNorm, then per entry of `channels` a residual
    /// block (torchvision's BasicBlock, conv → BN → ReLU → conv → BN, plus the identity or a
    /// 1×1 conv → BN projection), then global average pooling.
    ResNet,
}

/// Demo settings.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    pub data: DemoData,
    /// Task-B training-set sizes to compare at.
    pub sizes: Vec<usize>,
    pub trunk: Trunk,
    /// Hidden layer widths of the MLP trunk (of the CNN's dense part: the last one).
    pub hidden: Vec<usize>,
    /// Channels of the CNN trunk's convolutions (of the ResNet's blocks).
    pub channels: Vec<usize>,
    pub pretrain_epochs: usize,
    pub seed: u64,
    /// A smaller, faster run (CI, smoke tests).
    pub quick: bool,
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig {
            data: DemoData::Synthetic,
            sizes: vec![40, 150, 600],
            trunk: Trunk::Mlp,
            hidden: vec![128, 64],
            channels: vec![8, 16],
            pretrain_epochs: 20,
            seed: 7,
            quick: false,
        }
    }
}

impl DemoConfig {
    /// The demo's convolutional trunk for inputs of `input_shape`: [`cnn_trunk`] with this
    /// config's channels and its last hidden width as the one dense layer.
    pub fn cnn_trunk(&self, input_shape: &[usize]) -> Result<Vec<crate::nn::LayerSpec>> {
        cnn_trunk(input_shape, &self.channels, &self.hidden[self.hidden.len().saturating_sub(1)..], Activation::Relu)
    }
}

/// One task-B result.
#[derive(Debug, Clone)]
pub struct DemoRow {
    pub size: usize,
    pub method: &'static str,
    /// Mean F1 over the labels that have one; `None` (n/a) when none has (see [`LabelMetrics`]).
    ///
    /// [`LabelMetrics`]: crate::kernels::metrics::LabelMetrics
    pub mean_f1: Option<f64>,
    /// F1 per label; `None` (n/a) for a label with no known positive and none predicted.
    pub per_label_f1: Vec<Option<f64>>,
    pub seconds: f64,
    /// Training samples per second over the run (epochs × examples / time).
    pub samples_per_sec: f64,
    /// Training loss per epoch.
    pub train_loss: Vec<f64>,
}

/// What the demo measured.
#[derive(Debug, Clone)]
pub struct DemoReport {
    pub adapter: String,
    /// The trunk's layers, described.
    pub trunk: String,
    /// The kind of trunk.
    pub trunk_kind: Trunk,
    pub data: String,
    pub task_a_examples: usize,
    pub task_a_test_accuracy: f64,
    pub task_a_seconds: f64,
    pub task_a_samples_per_sec: f64,
    pub task_a_loss: Vec<f64>,
    pub label_names: Vec<String>,
    pub test_examples: usize,
    pub rows: Vec<DemoRow>,
}

pub const HEAD_ONLY: &str = "head-swap + head only (trunk frozen)";
pub const FINE_TUNE_ALL: &str = "head-swap + fine-tune all";
pub const SCRATCH: &str = "from scratch";

struct Tasks {
    name: String,
    a_train: Dataset,
    a_test: Dataset,
    b_pool: Dataset,
    b_test: Dataset,
}

fn concat(parts: &[Dataset]) -> Result<Dataset> {
    let first = parts.first().ok_or_else(|| Error::invalid("nothing to concatenate"))?;
    let mut out = first.clone();
    for p in &parts[1..] {
        out.x.extend_from_slice(&p.x);
        out.n += p.n;
        match (&mut out.targets, &p.targets) {
            (Targets::Classes { y, .. }, Targets::Classes { y: y2, .. }) => y.extend_from_slice(y2),
            (Targets::Labels { y, .. }, Targets::Labels { y: y2, .. }) => y.extend_from_slice(y2),
            _ => return Err(Error::invalid("cannot concatenate class and label data")),
        }
    }
    Ok(out)
}

fn tasks(cfg: &DemoConfig, largest_b: usize) -> Result<Tasks> {
    let s = cfg.seed;
    match &cfg.data {
        DemoData::Synthetic => {
            // a convolutional trunk learns from fewer examples and costs more per example
            let n_a = match (cfg.quick, cfg.trunk) {
                (true, _) => 3000,
                (false, Trunk::Mlp) => 12000,
                (false, Trunk::Cnn | Trunk::ResNet) => 6000,
            };
            Ok(Tasks {
                name: "synthetic shapes (16×16)".into(),
                a_train: data::synthetic::try_shapes_task_a(n_a, 16, s)?,
                a_test: data::synthetic::try_shapes_task_a(1000, 16, s + 1)?,
                b_pool: data::synthetic::try_scenes_task_b(largest_b, 16, s + 2)?,
                b_test: data::synthetic::try_scenes_task_b(if cfg.quick { 500 } else { 1000 }, 16, s + 3)?,
            })
        }
        DemoData::Digits(dir) => {
            let dir = match dir {
                Some(d) => d.clone(),
                None => data::digits::default_dir().ok_or_else(|| {
                    Error::invalid(format!("the digits data set was not found: pass --digits-dir DIR or set {}", data::digits::ENV_DIR))
                })?,
            };
            let digits = data::digits::load(&dir)?;
            // A fixed, seeded split of the real digits: the test digits never appear in training,
            // neither as task-A examples nor inside task-B scenes.
            let (train, test) = data::digits::fixed_split(&digits);
            let copies = if cfg.quick { 2 } else { 4 };
            let a_parts: Vec<Dataset> = (0..copies).map(|i| data::digits::single_as_scene_input(&train, s + i)).collect::<Result<_>>()?;
            let chosen = data::digits::TASK_B_DIGITS;
            Ok(Tasks {
                name: format!(
                    "real handwritten digits ({} train / {} test digits, split seed {})",
                    train.n,
                    test.n,
                    data::digits::SPLIT_SEED
                ),
                a_train: concat(&a_parts)?,
                a_test: data::digits::single_as_scene_input(&test, s + 100)?,
                b_pool: data::digits::scenes(&train, largest_b, chosen, s + 2)?,
                b_test: data::digits::scenes(&test, if cfg.quick { 400 } else { 1000 }, chosen, s + 3)?,
            })
        }
    }
}

/// A small convolutional trunk over `[C, H, W]` images: per entry of `channels` a 3×3
/// convolution (padding 1) and a 2×2 max pool, then dense layers of `dense` units.
pub fn cnn_trunk(input_shape: &[usize], channels: &[usize], dense: &[usize], act: Activation) -> Result<Vec<crate::nn::LayerSpec>> {
    let [c, h, w] = match *input_shape {
        [c, h, w] => [c, h, w],
        [d] => [1, 1, d],
        _ => return Err(Error::invalid(format!("a CNN needs [C, H, W] inputs, the data has {input_shape:?}"))),
    };
    let mut b = crate::nn::CnnBuilder::new(c, h, w);
    for &ch in channels {
        b = b.conv(ch, 3, 1, 1, act).max_pool(2, 2);
    }
    for &units in dense {
        b = b.dense(units, act);
    }
    b.build()
}

/// A small ResNet over `[C, H, W]` images, written as torchvision writes its ResNets: `conv1`
/// (3×3, `channels[0]` filters, no bias) → `bn1` → ReLU → `maxpool` (3×3, stride 2), then per entry of `channels` a stage
/// `layer<i>` of one BasicBlock (stride 2 from the second stage on, with the `downsample`
/// projection where the shape changes), then global average pooling: every BatchNorm follows a
/// convolution, so a frozen trunk folds them all.
pub fn resnet_trunk(input_shape: &[usize], channels: &[usize]) -> Result<crate::nn::Trunk> {
    use Activation::{Identity, Relu};
    let [c, h, w] = match *input_shape {
        [c, h, w] => [c, h, w],
        _ => return Err(Error::invalid(format!("a ResNet needs [C, H, W] inputs, the data has {input_shape:?}"))),
    };
    let first = *channels.first().ok_or_else(|| Error::invalid("a ResNet needs at least one stage"))?;
    let mut b = crate::nn::CnnBuilder::new(c, h, w)
        .conv_bias(false)
        .conv(first, 3, 1, 1, Identity)
        .name("conv1")
        .batch_norm(Relu)
        .name("bn1")
        .max_pool_padded(3, 2, 1)
        .name("maxpool");
    let mut inplanes = first;
    for (i, &planes) in channels.iter().enumerate() {
        let stride = if i == 0 { 1 } else { 2 };
        let body = move |b: crate::nn::CnnBuilder| {
            b.conv(planes, 3, stride, 1, Identity)
                .name("conv1")
                .batch_norm(Relu)
                .name("bn1")
                .conv(planes, 3, 1, 1, Identity)
                .name("conv2")
                .batch_norm(Identity)
                .name("bn2")
        };
        let project = stride != 1 || inplanes != planes;
        b = b.scope(&format!("layer{}", i + 1), |b| {
            b.scope("0", |b| {
                if project {
                    b.residual_with(body, |s| s.conv(planes, 1, stride, 0, Identity).name("0").batch_norm(Identity).name("1"), Relu)
                } else {
                    b.residual(body, Relu)
                }
            })
        });
        inplanes = planes;
    }
    b.global_avg_pool().name("avgpool").build_graph()
}

/// Epochs for a task-B run of `n` examples: enough optimizer steps for small sets to converge.
fn epochs_for(n: usize, quick: bool, trunk: Trunk) -> usize {
    let budget = match (quick, trunk) {
        (true, _) | (false, Trunk::Cnn | Trunk::ResNet) => 6000,
        (false, Trunk::Mlp) => 12000,
    };
    (budget / n.max(1)).clamp(10, 120)
}

/// Task-B runs use Adam: it is robust to the scale of the trunk's features, which differs between
/// a pretrained trunk and a fresh one, so every method gets the same optimizer and budget.
fn config(seed: u64, optimizer: Optimizer) -> TrainConfig {
    TrainConfig { optimizer, batch_size: 32, seed, ..TrainConfig::default() }
}

/// Runs the whole demo; `progress` receives a line per stage.
pub fn run(gpu: &Gpu, cfg: &DemoConfig, progress: &mut dyn FnMut(&str)) -> Result<DemoReport> {
    if cfg.sizes.is_empty() || cfg.sizes.contains(&0) {
        return Err(Error::invalid("task-B sizes must be positive"));
    }
    let largest = *cfg.sizes.iter().max().unwrap_or(&1);
    let t = tasks(cfg, largest)?;
    let classes = t.a_train.num_outputs();
    let k = t.b_pool.num_outputs();
    let trunk = match cfg.trunk {
        Trunk::Mlp => {
            let mut sizes: Vec<usize> = vec![t.a_train.d];
            sizes.extend(&cfg.hidden);
            crate::nn::Trunk::chain(
                sizes
                    .windows(2)
                    .map(|w| {
                        crate::nn::LayerSpec::Dense(crate::nn::DenseSpec { inputs: w[0], outputs: w[1], activation: Activation::Relu })
                    })
                    .collect(),
            )
        }
        Trunk::Cnn => crate::nn::Trunk::chain(cfg.cnn_trunk(&t.a_train.input_shape)?),
        Trunk::ResNet => resnet_trunk(&t.a_train.input_shape, &cfg.channels)?,
    };
    let trunk_text = trunk.layers.iter().map(|l| l.describe()).collect::<Vec<_>>().join(" | ");
    let new_net = |head: Head, seed: u64| Network::from_trunk(gpu, t.a_train.d, trunk.clone(), Default::default(), head, seed);

    progress(&format!("task A: {} — {} examples, {classes} classes; pretraining {trunk_text} → {classes}", t.name, t.a_train.n));
    let mut base = new_net(Head::classes(classes), cfg.seed)?;
    let mut trainer = Trainer::new(gpu, TrainConfig { batch_size: 64, ..config(cfg.seed, Optimizer::sgd(0.05).momentum(0.9)) });
    let started = Instant::now();
    let epochs_a = match (cfg.quick, cfg.trunk) {
        (true, _) => cfg.pretrain_epochs.min(8),
        (false, Trunk::Mlp) => cfg.pretrain_epochs,
        (false, Trunk::Cnn | Trunk::ResNet) => cfg.pretrain_epochs.min(10),
    };
    let pre = trainer.fit(&mut base, &t.a_train, epochs_a)?;
    let task_a_seconds = started.elapsed().as_secs_f64();
    let a_metrics = trainer.evaluate(&base, &t.a_test)?;
    let task_a_samples = (pre.epochs.len() * t.a_train.n) as f64;
    progress(&format!("task A: test accuracy {:.1}% after {:.1}s", 100.0 * a_metrics.accuracy.unwrap_or(0.0), task_a_seconds));

    let mut rows = Vec::new();
    for &size in &cfg.sizes {
        let b_train = t.b_pool.take(size);
        let epochs = epochs_for(size, cfg.quick, cfg.trunk);
        for method in [HEAD_ONLY, FINE_TUNE_ALL, SCRATCH] {
            progress(&format!("task B, {size} examples: {method} ({epochs} epochs)"));
            let started = Instant::now();
            let mut trainer = Trainer::new(gpu, config(cfg.seed + 1, Optimizer::adam(3e-3)));
            let (net, reports) = match method {
                HEAD_ONLY => {
                    let mut net = base.try_clone()?;
                    net.swap_head(Head::labels(k), cfg.seed + 2)?;
                    let r = trainer.fine_tune(&mut net, &b_train, Freeze::Trunk, epochs)?;
                    (net, vec![r])
                }
                FINE_TUNE_ALL => {
                    let mut net = base.try_clone()?;
                    net.swap_head(Head::labels(k), cfg.seed + 2)?;
                    let head = epochs / 2;
                    let (a, b) = trainer.fine_tune_recipe(&mut net, &b_train, head, epochs - head)?;
                    (net, vec![a, b])
                }
                _ => {
                    let mut net = new_net(Head::labels(k), cfg.seed + 3)?;
                    let r = trainer.fit(&mut net, &b_train, epochs)?;
                    (net, vec![r])
                }
            };
            let seconds = started.elapsed().as_secs_f64();
            let m = trainer.evaluate(&net, &t.b_test)?;
            let labels = m.labels.unwrap_or_default();
            let trained: usize = reports.iter().map(|r| r.epochs.len() * size).sum();
            rows.push(DemoRow {
                size,
                method,
                mean_f1: labels.mean_f1,
                per_label_f1: labels.f1.clone(),
                seconds,
                samples_per_sec: trained as f64 / seconds.max(1e-9),
                train_loss: reports.iter().flat_map(|r| r.epochs.iter().map(|e| e.train.loss)).collect(),
            });
        }
    }
    Ok(DemoReport {
        adapter: format!("{} ({:?})", gpu.adapter_info().name, gpu.adapter_info().backend),
        trunk: trunk_text,
        trunk_kind: cfg.trunk,
        data: t.name,
        task_a_examples: t.a_train.n,
        task_a_test_accuracy: a_metrics.accuracy.unwrap_or(0.0),
        task_a_seconds,
        task_a_samples_per_sec: task_a_samples / task_a_seconds.max(1e-9),
        task_a_loss: pre.epochs.iter().map(|e| e.train.loss).collect(),
        label_names: t.b_pool.label_names.clone(),
        test_examples: t.b_test.n,
        rows,
    })
}

impl DemoReport {
    /// "cnn" or "mlp": the kind of trunk, read from its layers (a report names its trunk by
    /// layers, which is too long for a column heading).
    pub fn trunk_name(&self) -> &'static str {
        match self.trunk_kind {
            Trunk::Mlp => "mlp",
            Trunk::Cnn => "cnn",
            Trunk::ResNet => "resnet",
        }
    }

    /// The mean F1 at `size` for `method`: `None` without such a row, or when its mean F1 is n/a.
    pub fn f1(&self, size: usize, method: &str) -> Option<f64> {
        self.rows.iter().find(|r| r.size == size && r.method == method).and_then(|r| r.mean_f1)
    }

    pub fn to_json(&self) -> String {
        let rows: Vec<serde_json::Value> = self
            .rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "task_b_examples": r.size, "method": r.method, "mean_f1": r.mean_f1,
                    "per_label_f1": r.per_label_f1, "seconds": r.seconds, "samples_per_sec": r.samples_per_sec,
                })
            })
            .collect();
        serde_json::json!({
            "adapter": self.adapter, "trunk": self.trunk, "data": self.data,
            "task_a": {"examples": self.task_a_examples, "test_accuracy": self.task_a_test_accuracy,
                       "seconds": self.task_a_seconds, "samples_per_sec": self.task_a_samples_per_sec},
            "labels": self.label_names, "task_b_test_examples": self.test_examples, "results": rows,
        })
        .to_string()
    }
}

impl std::fmt::Display for DemoReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "adapter: {}", self.adapter)?;
        writeln!(f, "trunk:   {}", self.trunk)?;
        writeln!(f, "data:    {}", self.data)?;
        writeln!(
            f,
            "task A:  {} examples, test accuracy {:.1}%, {:.1}s ({:.0} samples/s)",
            self.task_a_examples,
            100.0 * self.task_a_test_accuracy,
            self.task_a_seconds,
            self.task_a_samples_per_sec
        )?;
        writeln!(f, "task B:  labels {:?}; mean F1 on {} held-out examples\n", self.label_names, self.test_examples)?;
        // Each label column is a space and 8 characters, as in the rows below, so that names
        // of 8 characters ("triangle") do not run into their neighbour.
        let names: String = self.label_names.iter().map(|n| format!(" {:>8}", truncate(n, 8))).collect();
        writeln!(f, "{:>6}  {:<38} {:>7}{} {:>8} {:>10}", "B size", "method", "mean F1", names, "time", "samples/s")?;
        let mut last = 0;
        for r in &self.rows {
            if r.size != last && last != 0 {
                writeln!(f)?;
            }
            last = r.size;
            let per: String = r.per_label_f1.iter().map(|&v| format!(" {:>8.3}", OrNa(v))).collect();
            writeln!(f, "{:>6}  {:<38} {:>7.3}{} {:>7.1}s {:>10.0}", r.size, r.method, OrNa(r.mean_f1), per, r.seconds, r.samples_per_sec)?;
        }
        if self.rows.iter().any(|r| r.mean_f1.is_none() || r.per_label_f1.contains(&None)) {
            writeln!(f, "\nn/a: F1 is undefined for a label no held-out example has and none was predicted to have; means leave it out")?;
        }
        Ok(())
    }
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// Several demo runs (one per trunk) side by side: task-A quality and speed, then per task-B
/// size the mean F1 of each method, and the training speed of each pass.
pub fn side_by_side(reports: &[DemoReport]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "side by side ({}):", reports.first().map_or("", |r| r.adapter.as_str()));
    let _ = writeln!(out, "{:<58} {:>12} {:>14}", "trunk", "A accuracy", "A samples/s");
    for r in reports {
        let _ =
            writeln!(out, "{:<58} {:>11.1}% {:>14.0}", truncate(&r.trunk, 58), 100.0 * r.task_a_test_accuracy, r.task_a_samples_per_sec);
    }
    let _ = writeln!(
        out,
        "\n{:>6}  {:<38} {}",
        "B size",
        "mean F1 (samples/s)",
        reports.iter().map(|r| format!("{:>22}", r.trunk_name())).collect::<String>()
    );
    let sizes: Vec<usize> = reports
        .first()
        .map(|r| {
            let mut s: Vec<usize> = r.rows.iter().map(|x| x.size).collect();
            s.dedup();
            s
        })
        .unwrap_or_default();
    for size in sizes {
        for method in [HEAD_ONLY, FINE_TUNE_ALL, SCRATCH] {
            let cells: String = reports
                .iter()
                .map(|r| match r.rows.iter().find(|x| x.size == size && x.method == method) {
                    Some(x) => format!("{:>22}", format!("{:.3} ({:.0}/s)", OrNa(x.mean_f1), x.samples_per_sec)),
                    None => format!("{:>22}", "-"),
                })
                .collect();
            let _ = writeln!(out, "{size:>6}  {method:<38} {cells}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report_with(mean_f1: Option<f64>, per_label_f1: Vec<Option<f64>>) -> DemoReport {
        DemoReport {
            adapter: "test".into(),
            trunk: "dense".into(),
            trunk_kind: Trunk::Mlp,
            data: "hand-made".into(),
            task_a_examples: 1,
            task_a_test_accuracy: 1.0,
            task_a_seconds: 1.0,
            task_a_samples_per_sec: 1.0,
            task_a_loss: vec![],
            label_names: vec!["a".into(), "b".into()],
            test_examples: 10,
            rows: vec![DemoRow {
                size: 40,
                method: HEAD_ONLY,
                mean_f1,
                per_label_f1,
                seconds: 1.0,
                samples_per_sec: 1.0,
                train_loss: vec![],
            }],
        }
    }

    /// An undefined F1 is shown as n/a (text) and null (JSON), never as 0.
    #[test]
    fn undefined_f1_is_na_in_the_table_and_null_in_json() {
        let r = report_with(Some(0.75), vec![Some(0.75), None]);
        let text = r.to_string();
        let row = text.lines().find(|l| l.contains(HEAD_ONLY)).unwrap();
        assert!(row.contains("  0.750    0.750      n/a "), "{row:?}");
        assert!(text.contains("n/a: F1 is undefined"), "{text}");
        let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(json["results"][0]["per_label_f1"], serde_json::json!([0.75, null]));
        assert_eq!(json["results"][0]["mean_f1"], serde_json::json!(0.75));

        let none = report_with(None, vec![None, None]);
        let row = none.to_string().lines().find(|l| l.contains(HEAD_ONLY)).unwrap().to_string();
        assert!(row.contains("    n/a      n/a      n/a "), "{row:?}");
        assert!(!row.contains("0.000"), "{row:?}");
        assert_eq!(none.f1(40, HEAD_ONLY), None);
        let json: serde_json::Value = serde_json::from_str(&none.to_json()).unwrap();
        assert!(json["results"][0]["mean_f1"].is_null());
        assert!(side_by_side(&[none]).contains("n/a (1/s)"));

        // All defined: no footnote.
        assert!(!report_with(Some(0.5), vec![Some(0.5), Some(0.5)]).to_string().contains("n/a"));
    }
}
