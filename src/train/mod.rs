//! Training passes: pretrain, fine-tune under a freeze policy, evaluate.
//!
//! A step is recorded into one compute pass: gather → forward → loss → metrics → backward →
//! optimizer; [`TrainConfig::steps_per_submission`] steps share one command encoder and one queue
//! submission. Pipelines and bind groups are built once per run (see [`plan`]); per step only the
//! batch offset, the learning rate and the step number change, staged for all the submission's
//! steps in one upload and copied into the launches' uniform buffers in front of each step's
//! pass. Loss and metrics accumulate in GPU buffers and are read back once per epoch.

pub mod groups;
pub mod plan;
pub mod profile;
pub mod schedule;

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::gpu::pipelines::StepUniforms;
use crate::gpu::tensor::DType;
use crate::gpu::{Gpu, Tensor};
use crate::kernels::metrics::LabelMetrics;
pub use crate::kernels::optim::Optimizer;
use crate::kernels::optim::{OptimStep, ParamRange, RangeLaunch, choose_range_launch};
use crate::nn::{HeadKind, Network};
use crate::rng::Rng;
pub use groups::ParamGroups;
use plan::{Accumulators, ForwardPlan, Grads, Mode, Plan, PlanInputs, Rows, Scratch};
pub use plan::{BceSettings, DeviceData};
pub use schedule::Schedule;
use std::time::Instant;

/// Which layers train during fine-tuning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freeze {
    /// Only the head trains; the trunk is frozen (and its features can be cached).
    Trunk,
    /// Everything trains (the trunk at `trunk_lr_mult` × the learning rate).
    All,
    /// The head and the top `k` trunk layers train.
    LastK(usize),
    /// The rule of thumb: with fewer than `TrainConfig::auto_threshold` training examples train
    /// the head only, otherwise fine-tune everything.
    Auto,
}

impl Freeze {
    /// Parses `trunk`, `all`, `last:K`, `auto`.
    pub fn parse(s: &str) -> Option<Freeze> {
        match s {
            "trunk" => Some(Freeze::Trunk),
            "all" | "none" => Some(Freeze::All),
            "auto" => Some(Freeze::Auto),
            _ => s.strip_prefix("last:").and_then(|k| k.parse().ok()).map(Freeze::LastK),
        }
    }
}

/// Everything a training run needs besides the network and the data.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    pub optimizer: Optimizer,
    pub batch_size: usize,
    pub schedule: Schedule,
    /// A new seeded shuffle every epoch (else the data's order).
    pub shuffle: bool,
    /// Seeds the shuffles and the validation split.
    pub seed: u64,
    /// Fraction of the data held out for validation each epoch (0 = none).
    pub validation_fraction: f32,
    /// Stop after this many epochs without a better validation loss, keeping the best weights.
    pub early_stopping: Option<usize>,
    /// Loss settings for label heads.
    pub bce: BceSettings,
    /// Probability threshold for label metrics.
    pub threshold: f32,
    /// Learning-rate multiplier of trainable trunk layers in fine-tuning (discriminative rates).
    pub trunk_lr_mult: f32,
    /// [`Freeze::Auto`]: fewer training examples than this → head only.
    pub auto_threshold: usize,
    /// With the whole trunk frozen, compute its outputs once and train the head on them.
    pub cache_features: bool,
    /// Training steps recorded into one queue submission (≥ 1). Each step still reads its own
    /// batch offset and learning rate; more steps per submission amortise the submission's fixed
    /// cost, which dominates small steps (a head trained on cached features).
    pub steps_per_submission: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            optimizer: Optimizer::sgd(0.05).momentum(0.9),
            batch_size: 64,
            schedule: Schedule::Constant,
            shuffle: true,
            seed: 0,
            validation_fraction: 0.0,
            early_stopping: None,
            bce: BceSettings::default(),
            threshold: 0.5,
            trunk_lr_mult: 1.0,
            auto_threshold: 1000,
            cache_features: true,
            steps_per_submission: 16,
        }
    }
}

impl TrainConfig {
    /// Checks every setting before a run starts, so a bad value is refused with its name instead
    /// of surfacing later as an empty split, a NaN loss or meaningless metrics. The one place
    /// where a configuration is validated: every training and evaluation entry point calls it.
    pub fn validate(&self) -> Result<()> {
        match &self.optimizer {
            Optimizer::Sgd(c) => c.validate()?,
            Optimizer::Adam(c) => c.validate()?,
        }
        if self.batch_size == 0 {
            return Err(Error::invalid("batch size must be at least 1"));
        }
        if self.steps_per_submission == 0 {
            return Err(Error::invalid("steps_per_submission must be at least 1"));
        }
        // NaN fails every comparison, so the ranges are written as "inside" tests
        if !(0.0..1.0).contains(&self.validation_fraction) {
            return Err(Error::invalid(format!("validation_fraction must be in [0, 1), got {}", self.validation_fraction)));
        }
        if self.early_stopping.is_some() && self.validation_fraction == 0.0 {
            return Err(Error::invalid("early_stopping needs a validation split (validation_fraction > 0)"));
        }
        if !(self.threshold > 0.0 && self.threshold < 1.0) {
            return Err(Error::invalid(format!("threshold must be a probability in (0, 1), got {}", self.threshold)));
        }
        if !(self.trunk_lr_mult >= 0.0 && self.trunk_lr_mult.is_finite()) {
            return Err(Error::invalid(format!("trunk_lr_mult must be finite and ≥ 0, got {}", self.trunk_lr_mult)));
        }
        validate_bce(&self.bce)?;
        validate_schedule(&self.schedule)
    }
}

/// Negative or non-finite weights turn the loss negative or NaN; zero is allowed (it switches a
/// label or its positive term off).
fn validate_bce(bce: &BceSettings) -> Result<()> {
    for (name, weights) in [("pos_weight", &bce.pos_weight), ("label_weight", &bce.label_weight)] {
        if let Some(bad) = weights.iter().flatten().find(|w| !(w.is_finite() && **w >= 0.0)) {
            return Err(Error::invalid(format!("{name} values must be finite and ≥ 0, got {bad}")));
        }
    }
    Ok(())
}

fn validate_schedule(s: &Schedule) -> Result<()> {
    match *s {
        Schedule::Constant => Ok(()),
        Schedule::Step { every_epochs, gamma } => {
            if every_epochs == 0 || !(gamma > 0.0 && gamma.is_finite()) {
                return Err(Error::invalid(format!(
                    "a step schedule needs every_epochs ≥ 1 and a finite gamma > 0, got {every_epochs} and {gamma}"
                )));
            }
            Ok(())
        }
        Schedule::Cosine { min_lr, .. } if !(min_lr >= 0.0 && min_lr.is_finite()) => {
            Err(Error::invalid(format!("a cosine schedule's min_lr must be finite and ≥ 0, got {min_lr}")))
        }
        Schedule::Cosine { .. } => Ok(()),
    }
}

fn check_epochs(epochs: usize) -> Result<()> {
    if epochs == 0 { Err(Error::invalid("epochs must be at least 1")) } else { Ok(()) }
}

/// Loss and quality of a pass over a data set.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// Mean of the batch losses.
    pub loss: f64,
    /// Class heads: top-1 accuracy.
    pub accuracy: Option<f64>,
    /// Label heads: per-label precision, recall, F1 and their means (undefined scores are
    /// `None` and left out of the means; see [`LabelMetrics`]).
    pub labels: Option<LabelMetrics>,
}

impl Metrics {
    /// Accuracy for class heads, mean F1 for label heads; `None` when there is neither, or when
    /// no label has an F1 (no label had a known positive or a positive prediction), so that a
    /// score nobody could compute is not shown as 0. Show it with
    /// [`OrNa`](crate::kernels::metrics::OrNa).
    pub fn score(&self) -> Option<f64> {
        match &self.labels {
            Some(l) => l.mean_f1,
            None => self.accuracy,
        }
    }
}

/// One epoch's figures.
#[derive(Debug, Clone)]
pub struct EpochReport {
    pub epoch: usize,
    pub lr: f32,
    pub train: Metrics,
    pub validation: Option<Metrics>,
    pub seconds: f64,
    pub samples_per_sec: f64,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct FitReport {
    pub epochs: Vec<EpochReport>,
    /// The epoch whose weights the network holds at the end (early stopping), else the last.
    pub best_epoch: Option<usize>,
    /// Index of the lowest trainable layer.
    pub lowest_trainable: usize,
    /// Whether head-only epochs read cached trunk features.
    pub cached_features: bool,
    /// Dispatches recorded per training step (full batch), counted by the engine.
    pub dispatches_per_step: f64,
    /// Queue submissions per training step.
    pub submissions_per_step: f64,
    /// Bytes the run allocated on the GPU for its own state (scratch, gradients, optimizer
    /// moments, cached features, accumulators), counted by the engine.
    pub bytes_allocated: u64,
    pub seconds: f64,
}

impl FitReport {
    pub fn last(&self) -> Option<&EpochReport> {
        self.epochs.last()
    }
}

/// Optimizer state for one trainable range (a PyTorch param group over a flat slice).
struct Group {
    /// Optimizer state buffers (momentum, or Adam's moments).
    state: Vec<Tensor>,
    /// (params view, backup for early stopping)
    params: Tensor,
    best: Option<Tensor>,
}

/// A run's optimizer: the steps that update every trainable range — two ranges per dispatch, or
/// one per range, whichever this device measured faster — and the ranges' state, in the order of
/// the gradient ranges ([`Grads::ranges`]).
struct Optim {
    steps: Vec<OptimStep>,
    groups: Vec<Group>,
}

/// PyTorch's names for an optimizer's per-parameter buffers, in the order it keeps them.
fn state_slots(opt: &Optimizer) -> &'static [&'static str] {
    match opt {
        Optimizer::Sgd(c) if c.momentum != 0.0 => &["momentum_buffer"],
        Optimizer::Sgd(_) => &[],
        Optimizer::Adam(_) => &["exp_avg", "exp_avg_sq"],
    }
}

/// Every trainable parameter of `grads`' ranges: (range, name `<module>.weight|bias`, offset in
/// the range, length).
fn trainable_params(net: &Network, grads: &Grads) -> Vec<(usize, String, usize, usize)> {
    let names = net.module_names();
    let layers = net.layers();
    let mut out = Vec::new();
    for (r, range) in grads.ranges.iter().enumerate() {
        for i in range.layers.clone() {
            let Some(shape) = layers[i].weight_shape() else { continue };
            let (_, slot) = net.slot(i);
            out.push((r, format!("{}.weight", names[i]), slot.w - range.start, shape.iter().product()));
            out.push((r, format!("{}.bias", names[i]), slot.b - range.start, layers[i].bias_len()));
        }
    }
    out
}

impl Optim {
    /// The optimizer's buffers, read back and cut per parameter (see
    /// [`TrainingState::optimizer_state`]).
    fn named_state(&self, gpu: &Gpu, net: &Network, grads: &Grads, opt: &Optimizer) -> Result<Vec<(String, Vec<f32>)>> {
        let slots = state_slots(opt);
        let host: Vec<Vec<Vec<f32>>> =
            self.groups.iter().map(|g| g.state.iter().map(|t| t.download(gpu)).collect::<Result<_>>()).collect::<Result<_>>()?;
        let mut out = Vec::new();
        for (r, name, off, len) in trainable_params(net, grads) {
            for (k, slot) in slots.iter().enumerate() {
                out.push((format!("{name}.{slot}"), host[r][k][off..off + len].to_vec()));
            }
        }
        Ok(out)
    }

    /// Writes saved per-parameter buffers into this run's state: every trainable parameter's
    /// every slot must be there with its parameter's length, and nothing else.
    fn restore_state(&self, gpu: &Gpu, net: &Network, grads: &Grads, opt: &Optimizer, saved: &[(String, Vec<f32>)]) -> Result<()> {
        let slots = state_slots(opt);
        let params = trainable_params(net, grads);
        let mut host: Vec<Vec<Vec<f32>>> = self.groups.iter().map(|g| vec![vec![0f32; g.params.len()]; slots.len()]).collect();
        let mut wanted = std::collections::BTreeSet::new();
        for (r, name, off, len) in &params {
            for (k, slot) in slots.iter().enumerate() {
                let key = format!("{name}.{slot}");
                let values = saved.iter().find(|(n, _)| *n == key).map(|(_, v)| v).ok_or_else(|| {
                    Error::invalid(format!(
                        "the saved optimizer state has no {key} (another optimizer, or other layers trained?); it holds {}",
                        saved.iter().map(|(n, _)| n.as_str()).take(6).collect::<Vec<_>>().join(", ")
                    ))
                })?;
                if values.len() != *len {
                    return Err(Error::invalid(format!(
                        "the saved optimizer state {key} has {} values, the parameter has {len}",
                        values.len()
                    )));
                }
                host[*r][k][*off..off + len].copy_from_slice(values);
                wanted.insert(key);
            }
        }
        if let Some((extra, _)) = saved.iter().find(|(n, _)| !wanted.contains(n)) {
            return Err(Error::invalid(format!(
                "the saved optimizer state has {extra}, which this run does not train with this optimizer (another optimizer or freeze?)"
            )));
        }
        for (g, bufs) in self.groups.iter().zip(&host) {
            for (t, v) in g.state.iter().zip(bufs) {
                t.write(gpu, v)?;
            }
        }
        Ok(())
    }
}

/// Runs training passes over networks.
pub struct Trainer {
    gpu: Gpu,
    pub config: TrainConfig,
    rng: Rng,
    last_state: Option<TrainingState>,
    progress: Option<ProgressFn>,
}

type ProgressFn = Box<dyn FnMut(Progress<'_>)>;
/// Per layer, trunk then head: (dW `[out, in]`, db `[out]`).
pub type LayerGrads = Vec<(Vec<f32>, Vec<f32>)>;

/// What a progress callback hears: every recorded step (no GPU readback involved) and every
/// finished epoch.
#[derive(Debug)]
pub enum Progress<'a> {
    Step { epoch: usize, step: usize, steps_per_epoch: usize, epochs: usize },
    Epoch(&'a EpochReport),
}

/// Where a run stopped: with the network's weights, enough to resume it exactly.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingState {
    /// Epochs completed.
    pub epoch: usize,
    /// Optimizer steps taken.
    pub step: u32,
    /// The shuffle generator's state.
    pub rng: [u64; 4],
    /// The lowest layer that trained (the first `Some` of `lr_mults`).
    pub lowest_trainable: usize,
    /// Per layer (trunk then head), the learning-rate multiplier it trained at; `None` where it
    /// was frozen.
    pub lr_mults: Vec<Option<f32>>,
    /// The optimizer's buffers per trainable parameter, named `<param>.<slot>` like PyTorch's
    /// `optimizer.state_dict()` slots: `0.weight.momentum_buffer` (SGD with momentum),
    /// `0.weight.exp_avg` and `0.weight.exp_avg_sq` (Adam); each as long as its parameter. Named
    /// rather than dumped per arena, so a saved run does not depend on how parameters are laid out.
    pub optimizer_state: Vec<(String, Vec<f32>)>,
    /// The run's hyper-parameters and data size; `None` for a state saved before they were kept.
    pub run: Option<RunSettings>,
}

/// The hyper-parameters a run was started with, and the size of its data: saved with its
/// [`TrainingState`] so that a resume can continue with them instead of defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSettings {
    /// The optimizer and all its hyper-parameters (learning rate, momentum, betas, ...).
    pub optimizer: Optimizer,
    pub batch_size: usize,
    pub schedule: Schedule,
    pub seed: u64,
    /// Examples in the data the run was given (before any validation split).
    pub n: usize,
}

impl RunSettings {
    fn of(cfg: &TrainConfig, n: usize) -> RunSettings {
        RunSettings { optimizer: cfg.optimizer, batch_size: cfg.batch_size, schedule: cfg.schedule, seed: cfg.seed, n }
    }

    /// `cfg` with the saved optimizer, batch size, schedule and seed in place of its own.
    pub fn apply(&self, cfg: &TrainConfig) -> TrainConfig {
        TrainConfig { optimizer: self.optimizer, batch_size: self.batch_size, schedule: self.schedule, seed: self.seed, ..cfg.clone() }
    }
}

impl Trainer {
    pub fn new(gpu: &Gpu, config: TrainConfig) -> Trainer {
        let rng = Rng::new(config.seed);
        Trainer { gpu: gpu.clone(), config, rng, last_state: None, progress: None }
    }

    /// Calls `f` after every recorded step and every epoch (progress bars, logging).
    pub fn with_progress(mut self, f: impl FnMut(Progress<'_>) + 'static) -> Trainer {
        self.progress = Some(Box::new(f));
        self
    }

    /// The shuffle generator's state (saved with training checkpoints so a resumed run
    /// continues the same shuffles).
    pub fn rng_state(&self) -> [u64; 4] {
        self.rng.state()
    }
    /// Restores [`Trainer::rng_state`].
    pub fn set_rng_state(&mut self, s: [u64; 4]) {
        self.rng = Rng::from_state(s);
    }

    /// Trains every layer (pretraining, or training from scratch).
    pub fn fit(&mut self, net: &mut Network, data: &Dataset, epochs: usize) -> Result<FitReport> {
        check_epochs(epochs)?;
        let every = ParamGroups::new().train("*", 1.0).resolve(net)?;
        self.run(net, data, every, epochs, None)
    }

    /// Fine-tunes under `freeze`. Frozen layers stay resident and untouched: no gradients, no
    /// optimizer state, no backward work below the lowest trainable layer.
    pub fn fine_tune(&mut self, net: &mut Network, data: &Dataset, freeze: Freeze, epochs: usize) -> Result<FitReport> {
        check_epochs(epochs)?;
        self.fine_tune_phase(net, data, freeze, epochs)
    }

    /// [`Trainer::fine_tune`] allowing 0 epochs: one phase of the recipe may be empty.
    fn fine_tune_phase(&mut self, net: &mut Network, data: &Dataset, freeze: Freeze, epochs: usize) -> Result<FitReport> {
        // Freeze::Auto reads validation_fraction before the run validates the configuration
        self.config.validate()?;
        let mults = self.layer_lr_mults(net, data, freeze)?;
        self.run(net, data, mults, epochs, None)
    }

    /// Fine-tunes the layers `groups` selects, each at its group's learning-rate multiplier
    /// (PyTorch's param groups, fastai's discriminative rates); every other layer stays frozen
    /// and resident, with no gradient or optimizer memory. Backward stops below the lowest
    /// trainable layer and only passes gradients through frozen layers above it; the outputs of
    /// the frozen layers below it are computed once and cached (with `cache_features`).
    pub fn fine_tune_groups(&mut self, net: &mut Network, data: &Dataset, groups: &ParamGroups, epochs: usize) -> Result<FitReport> {
        check_epochs(epochs)?;
        self.config.validate()?;
        let mults = groups.resolve(net)?;
        self.run(net, data, mults, epochs, None)
    }

    /// Per layer, the learning-rate multiplier `freeze` trains it at, `None` where frozen: the
    /// head at the base rate, trainable trunk layers at `trunk_lr_mult`.
    pub(crate) fn layer_lr_mults(&self, net: &Network, data: &Dataset, freeze: Freeze) -> Result<Vec<Option<f32>>> {
        let lowest = self.lowest_trainable(net, data, freeze)?;
        ParamGroups::of_freeze(net, lowest, self.config.trunk_lr_mult).resolve(net)
    }

    /// fastai's `fine_tune` recipe in one call: `head_epochs` with the trunk frozen, then
    /// `full_epochs` with everything trainable at half the learning rate, the trunk at
    /// `trunk_lr_mult` of that (0.1 if it is left at 1).
    pub fn fine_tune_recipe(
        &mut self,
        net: &mut Network,
        data: &Dataset,
        head_epochs: usize,
        full_epochs: usize,
    ) -> Result<(FitReport, FitReport)> {
        check_epochs(head_epochs.saturating_add(full_epochs))?;
        let first = self.fine_tune_phase(net, data, Freeze::Trunk, head_epochs)?;
        let saved = self.config.clone();
        self.config.optimizer = saved.optimizer.with_lr(saved.optimizer.lr() / 2.0);
        if self.config.trunk_lr_mult == 1.0 {
            self.config.trunk_lr_mult = 0.1;
        }
        let second = self.fine_tune_phase(net, data, Freeze::All, full_epochs);
        self.config = saved;
        Ok((first, second?))
    }

    /// The index of the lowest layer `freeze` trains.
    pub fn lowest_trainable(&self, net: &Network, data: &Dataset, freeze: Freeze) -> Result<usize> {
        let t = net.trunk.len();
        Ok(match freeze {
            Freeze::Trunk => t,
            Freeze::All => 0,
            Freeze::LastK(k) => {
                if k > t {
                    return Err(Error::invalid(format!("last:{k} asks for more trunk layers than the {t} there are")));
                }
                t - k
            }
            Freeze::Auto => {
                let n_train = ((1.0 - self.config.validation_fraction as f64) * data.n as f64) as usize;
                if n_train < self.config.auto_threshold { t } else { 0 }
            }
        })
    }

    /// Loss and metrics of `net` on `data` (no training).
    pub fn evaluate(&self, net: &Network, data: &Dataset) -> Result<Metrics> {
        self.config.validate()?;
        check_fits(net, data)?;
        let gpu = &self.gpu;
        let dev = DeviceData::upload(gpu, data)?;
        let bce = bce_tensors(gpu, &self.config.bce, net)?;
        let eval = Evaluator::new(gpu, net, &dev, &dev.x, 0, self.config.batch_size, &self.config, &bce)?;
        eval.run(gpu, net.head_kind, net.output_dim())
    }

    /// Continues a run from `state` (see [`Trainer::training_state`]) until `epochs` epochs in
    /// all: the same optimizer moments, step count, shuffle stream and trainable layers, so the
    /// result equals a run that never stopped. The trainer's own configuration is used; to
    /// continue with the saved hyper-parameters, build it from [`RunSettings::apply`] on
    /// `state.run`. Refuses `epochs` not beyond the epochs already done, and data of another
    /// size than the saved run's.
    pub fn resume(&mut self, net: &mut Network, data: &Dataset, state: &TrainingState, epochs: usize) -> Result<FitReport> {
        let named;
        let state = if state.optimizer_state.iter().any(|(n, _)| n.starts_with("state.")) {
            named = TrainingState { optimizer_state: state.named_optimizer_state(net, &self.config.optimizer)?, ..state.clone() };
            &named
        } else {
            state
        };
        if epochs <= state.epoch {
            return Err(Error::invalid(format!(
                "the saved run has done {} epoch(s) already; ask for more epochs in all (got {epochs})",
                state.epoch
            )));
        }
        if let Some(run) = &state.run
            && run.n != data.n
        {
            return Err(Error::invalid(format!(
                "the saved run trained on {} examples, this data has {}: resume it on the same data",
                run.n, data.n
            )));
        }
        if state.lr_mults.len() != net.layers().len() {
            return Err(Error::invalid(format!(
                "the saved run trained a network of {} layers, this one has {}",
                state.lr_mults.len(),
                net.layers().len()
            )));
        }
        self.rng = Rng::from_state(state.rng);
        self.run(net, data, state.lr_mults.clone(), epochs, Some(state))
    }

    /// The state at the end of the last run: what a training checkpoint holds besides the weights.
    pub fn training_state(&self) -> Option<&TrainingState> {
        self.last_state.as_ref()
    }

    fn run(
        &mut self,
        net: &mut Network,
        data: &Dataset,
        lr_mults: Vec<Option<f32>>,
        epochs: usize,
        resume: Option<&TrainingState>,
    ) -> Result<FitReport> {
        self.config.validate()?;
        check_fits(net, data)?;
        let lowest = lowest_of(&lr_mults)?;
        let cfg = self.config.clone();
        let gpu = self.gpu.clone();
        let _span = tracing::info_span!("fit", lowest, epochs).entered();
        let started = Instant::now();

        let (train_data, val_data) = if cfg.validation_fraction > 0.0 {
            let (t, v) = data.split(cfg.validation_fraction, cfg.seed);
            (t, Some(v))
        } else {
            (data.clone(), None)
        };
        let train = DeviceData::upload(&gpu, &train_data)?;
        let val = val_data.as_ref().map(|v| DeviceData::upload(&gpu, v)).transpose()?;
        let sb = StepBuffers::new(&gpu, net, &train, &cfg, &lr_mults)?;
        let StepBuffers { first, cached, b, .. } = sb;
        let val_x = match (&val, cached) {
            (Some(v), true) => Some(frozen_features(&gpu, net, v, first, cfg.batch_size)?),
            (Some(v), false) => Some(v.x.clone()),
            _ => None,
        };
        let inputs = sb.inputs(net, &train, &cfg);
        let full = Plan::build(&gpu, &inputs, b)?;
        let rem = train.n % b;
        let partial = if rem > 0 { Some(Plan::build(&gpu, &inputs, rem)?) } else { None };
        let optim = self.optimizer(net, &sb.grads, cfg.early_stopping.is_some())?;
        let groups = &optim.groups;
        if let Some(r) = resume {
            optim.restore_state(&gpu, net, &sb.grads, &cfg.optimizer, &r.optimizer_state)?;
        }
        let evaluator = match (&val, &val_x) {
            (Some(v), Some(vx)) => Some(Evaluator::new(&gpu, net, v, vx, first, cfg.batch_size, &cfg, &sb.bce)?),
            _ => None,
        };
        // What this run allocated for itself, counted from its own tensors (a process-wide counter
        // would also see other work on the same device).
        let mut owned: Vec<&Tensor> = vec![&sb.indices];
        owned.extend(train.tensors());
        owned.extend(sb.train_x.tensors());
        owned.extend(sb.scratch.tensors());
        owned.extend(sb.grads.tensors());
        owned.extend(sb.acc.tensors());
        owned.extend(groups.iter().flat_map(|g| g.state.iter().chain(g.best.as_ref())));
        if let Some(v) = &val {
            owned.extend(v.tensors());
        }
        if let Some(vx) = &val_x {
            owned.extend(vx.tensors());
        }
        if let Some(e) = &evaluator {
            owned.extend(e.tensors());
        }
        let bytes_allocated = Tensor::total_allocation(&owned);

        let steps_per_epoch = train.n.div_ceil(b);
        let total_steps = steps_per_epoch * epochs;
        let mut reports = Vec::new();
        // Each run starts fresh optimizer state (as a new torch.optim optimizer would), so its
        // step count — SGD's first-step momentum rule, Adam's bias correction — starts at 1.
        let mut opt_step: u32 = resume.map_or(0, |r| r.step);
        let start_epoch = resume.map_or(0, |r| r.epoch);
        let mut best: Option<(f64, usize)> = None;
        let mut since_best = 0;
        let (mut step_dispatches, mut step_submits, mut counted_steps) = (0u64, 0u64, 0u64);
        let per_submission = cfg.steps_per_submission;
        let mut all_steps = 0u64;
        let mut uniforms = StepUniforms::default();
        for epoch in start_epoch..epochs {
            let _e = tracing::info_span!("epoch", epoch).entered();
            let t0 = Instant::now();
            let order: Vec<u32> = if cfg.shuffle { self.rng.permutation(train.n) } else { (0..train.n as u32).collect() };
            sb.indices.write_u32(&gpu, &order)?;
            sb.acc.reset(&gpu)?;
            let mut lr = cfg.optimizer.lr();
            let plan_of = |s: usize| if s == steps_per_epoch - 1 && rem > 0 { partial.as_ref().unwrap_or(&full) } else { &full };
            let mut first_step = 0;
            while first_step < steps_per_epoch {
                let steps = first_step..(first_step + per_submission).min(steps_per_epoch);
                uniforms.clear();
                for s in steps.clone() {
                    let global = epoch * steps_per_epoch + s;
                    lr = cfg.schedule.lr(cfg.optimizer.lr(), global, epoch, total_steps);
                    opt_step += 1;
                    uniforms.begin_step();
                    plan_of(s).stage_offset(&mut uniforms, s * b)?;
                    for step in &optim.steps {
                        step.stage(&mut uniforms, lr, opt_step)?;
                    }
                }
                uniforms.upload(&gpu);
                let mut enc = gpu.device().create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("train_steps") });
                for (k, s) in steps.clone().enumerate() {
                    uniforms.record(&mut enc, k);
                    let plan = plan_of(s);
                    let mut pass =
                        enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("train_step"), timestamp_writes: None });
                    let mut recorded = plan.encode(&gpu, &mut pass);
                    for step in &optim.steps {
                        recorded += step.dispatch().encode(&gpu, &mut pass);
                    }
                    if plan.rows == b {
                        step_dispatches += recorded as u64;
                        counted_steps += 1;
                    }
                }
                gpu.submit(enc);
                step_submits += 1;
                all_steps += steps.len() as u64;
                if let Some(p) = self.progress.as_mut() {
                    for s in steps.clone() {
                        p(Progress::Step { epoch, step: s, steps_per_epoch, epochs });
                    }
                }
                first_step = steps.end;
            }
            gpu.check("training step")?;
            let train_metrics = read_metrics(&gpu, &sb.acc, net.head_kind, net.output_dim(), steps_per_epoch)?;
            let validation = evaluator.as_ref().map(|e| e.run(&gpu, net.head_kind, net.output_dim())).transpose()?;
            let seconds = t0.elapsed().as_secs_f64();
            tracing::info!(epoch, loss = train_metrics.loss, score = train_metrics.score(), seconds, "epoch done");
            if let Some(v) = &validation {
                if !v.loss.is_finite() || !train_metrics.loss.is_finite() {
                    tracing::warn!("non-finite loss at epoch {epoch}");
                }
                if best.is_none_or(|(bl, _)| v.loss < bl) {
                    best = Some((v.loss, epoch));
                    since_best = 0;
                    if cfg.early_stopping.is_some() {
                        backup(&gpu, groups, false)?;
                    }
                } else {
                    since_best += 1;
                }
            }
            reports.push(EpochReport {
                epoch,
                lr,
                train: train_metrics,
                validation,
                seconds,
                samples_per_sec: train.n as f64 / seconds.max(1e-9),
            });
            if let (Some(p), Some(r)) = (self.progress.as_mut(), reports.last()) {
                p(Progress::Epoch(r));
            }
            if let Some(patience) = cfg.early_stopping
                && since_best >= patience
                && best.is_some()
            {
                tracing::info!(epoch, "early stopping");
                break;
            }
        }
        let best_epoch = match (cfg.early_stopping, best) {
            (Some(_), Some((_, e))) => {
                backup(&gpu, groups, true)?;
                Some(e)
            }
            _ => reports.last().map(|r| r.epoch),
        };
        gpu.sync()?;
        record_data_layout(net, data);
        self.last_state = Some(TrainingState {
            epoch: reports.last().map_or(start_epoch, |r: &EpochReport| r.epoch + 1),
            step: opt_step,
            rng: self.rng.state(),
            lowest_trainable: lowest,
            optimizer_state: optim.named_state(&gpu, net, &sb.grads, &cfg.optimizer)?,
            lr_mults,
            run: Some(RunSettings::of(&cfg, data.n)),
        });
        Ok(FitReport {
            epochs: reports,
            best_epoch,
            lowest_trainable: lowest,
            cached_features: cached,
            dispatches_per_step: step_dispatches as f64 / counted_steps.max(1) as f64,
            submissions_per_step: step_submits as f64 / all_steps.max(1) as f64,
            bytes_allocated,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// The optimizer over the network's trainable ranges (one PyTorch param group each, at its
    /// learning-rate multiplier), with state for those ranges only.
    fn optimizer(&self, net: &Network, grads: &Grads, keep_best: bool) -> Result<Optim> {
        let gpu = &self.gpu;
        let mut ranges = Vec::new();
        for (r, g) in grads.ranges.iter().zip(&grads.bufs) {
            let arena = if r.head { &net.head_params } else { &net.trunk_params };
            ranges.push((arena.buf.view(r.start, &[r.end - r.start])?, g.clone(), r.lr_mult));
        }
        let opt = self.config.optimizer;
        let mut groups = Vec::new();
        for (params, _, _) in &ranges {
            let n = params.len();
            let state = match opt {
                Optimizer::Sgd(c) if c.momentum != 0.0 => vec![Tensor::alloc(gpu, &[n], DType::F32, "momentum")?],
                Optimizer::Sgd(_) => vec![],
                Optimizer::Adam(_) => {
                    vec![Tensor::alloc(gpu, &[n], DType::F32, "adam_m")?, Tensor::alloc(gpu, &[n], DType::F32, "adam_v")?]
                }
            };
            let best = if keep_best { Some(Tensor::alloc(gpu, &[n], DType::F32, "best_params")?) } else { None };
            groups.push(Group { state, params: params.clone(), best });
        }
        let states: Vec<Vec<&Tensor>> = groups.iter().map(|g| g.state.iter().collect()).collect();
        let param_ranges: Vec<ParamRange> = ranges
            .iter()
            .zip(&states)
            .map(|((params, grads, lr_mult), state)| ParamRange { params, grads, state, lr_mult: *lr_mult })
            .collect();
        let sizes: Vec<usize> = groups.iter().map(|g| g.params.len()).collect();
        let launch: RangeLaunch = choose_range_launch(gpu, &opt, &sizes)?;
        Ok(Optim { steps: opt.steps(gpu, &param_ranges, launch)?, groups })
    }
}

/// Copies every group's parameters to its backup (or back, with `restore`), on the GPU.
fn backup(gpu: &Gpu, groups: &[Group], restore: bool) -> Result<()> {
    let mut enc = gpu.device().create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("best_weights") });
    for g in groups {
        if let Some(b) = &g.best {
            let (src, dst) = if restore { (b, &g.params) } else { (&g.params, b) };
            enc.copy_buffer_to_buffer(src.buffer(), src.offset(), dst.buffer(), dst.offset(), src.bytes());
        }
    }
    gpu.submit(enc);
    Ok(())
}

fn check_fits(net: &Network, data: &Dataset) -> Result<()> {
    data.validate()?;
    if data.d != net.input_dim() {
        return Err(Error::shape(format!("the data has {} input features, the network takes {}", data.d, net.input_dim())));
    }
    match (&data.targets, net.head_kind) {
        (crate::data::Targets::Classes { num_classes, .. }, HeadKind::Classes) if *num_classes <= net.output_dim() => Ok(()),
        (crate::data::Targets::Classes { num_classes, .. }, HeadKind::Classes) => {
            Err(Error::shape(format!("the data has {num_classes} classes, the head has {} outputs", net.output_dim())))
        }
        (crate::data::Targets::Labels { k, .. }, HeadKind::Labels) if *k == net.output_dim() => Ok(()),
        (crate::data::Targets::Labels { k, .. }, HeadKind::Labels) => {
            Err(Error::shape(format!("the data has {k} labels, the head has {} outputs", net.output_dim())))
        }
        (crate::data::Targets::Classes { .. }, HeadKind::Labels) => Err(Error::invalid(
            "the data has one class per example but the head predicts independent labels (a softmax head, Head::classes, is needed)",
        )),
        (crate::data::Targets::Labels { .. }, HeadKind::Classes) => Err(Error::invalid(
            "the data has several labels per example but the head is a softmax classifier (a per-label sigmoid head, Head::labels, is needed)",
        )),
    }
}

/// The buffers a run's step plans read, built one way for [`Trainer`] and for
/// [`profile::profile_step`], which must time the step the trainer runs.
pub(crate) struct StepBuffers {
    /// The first layer a step computes: the trunk's depth when training on cached features.
    pub first: usize,
    pub cached: bool,
    /// The full batch.
    pub b: usize,
    pub mode: Mode,
    /// The step's inputs: the data, or the frozen trunk's features computed once.
    pub train_x: Rows,
    pub bce: (Option<Tensor>, Option<Tensor>),
    pub scratch: Scratch,
    pub grads: Grads,
    pub acc: Accumulators,
    /// The epoch's shuffled order, read by the gathers.
    pub indices: Tensor,
}

impl StepBuffers {
    /// `lr_mults`: per layer, the learning-rate multiplier of a trainable layer, `None` if frozen.
    pub fn new(gpu: &Gpu, net: &Network, train: &DeviceData, cfg: &TrainConfig, lr_mults: &[Option<f32>]) -> Result<StepBuffers> {
        let lowest = lowest_of(lr_mults)?;
        // Every layer below the lowest trainable one is frozen and nothing flows back into it:
        // its outputs for the data set are computed once and stay resident for the whole run.
        // (With residual connections, only where no layer from `lowest` on reads an earlier output.)
        let cached = cfg.cache_features && lowest > 0 && net.is_cut(lowest);
        let first = if cached { lowest } else { 0 };
        let bce = bce_tensors(gpu, &cfg.bce, net)?;
        let train_x = if cached { frozen_features(gpu, net, train, first, cfg.batch_size)? } else { train.x.clone() };
        let b = cfg.batch_size.min(train.n);
        let mode = Mode::Train { lowest };
        let scratch = Scratch::new(gpu, net, first, b, mode, train)?;
        let grads = Grads::new(gpu, net, lr_mults)?;
        let acc = Accumulators::new(gpu, net.head_kind, net.output_dim())?;
        let indices = Tensor::alloc(gpu, &[train.n], DType::U32, "batch_indices")?;
        Ok(StepBuffers { first, cached, b, mode, train_x, bce, scratch, grads, acc, indices })
    }

    pub fn inputs<'a>(&'a self, net: &'a Network, train: &'a DeviceData, cfg: &'a TrainConfig) -> PlanInputs<'a> {
        PlanInputs {
            net,
            mode: self.mode,
            first: self.first,
            source_x: &self.train_x,
            source_y: &train.y,
            indices: &self.indices,
            scratch: &self.scratch,
            grads: Some(&self.grads),
            acc: &self.acc,
            bce: &cfg.bce,
            bce_tensors: &self.bce,
            threshold: cfg.threshold,
        }
    }
}

fn bce_tensors(gpu: &Gpu, bce: &BceSettings, net: &Network) -> Result<(Option<Tensor>, Option<Tensor>)> {
    let k = net.output_dim();
    let make = |v: &Option<Vec<f32>>, what: &str| -> Result<Option<Tensor>> {
        match v {
            Some(v) if net.head_kind == HeadKind::Labels => {
                if v.len() != k {
                    return Err(Error::shape(format!("{what} has {} values for {k} labels", v.len())));
                }
                Ok(Some(Tensor::from_slice(gpu, &[k], v)?))
            }
            _ => Ok(None),
        }
    };
    Ok((make(&bce.pos_weight, "pos_weight")?, make(&bce.label_weight, "label_weight")?))
}

fn read_metrics(gpu: &Gpu, acc: &Accumulators, kind: HeadKind, outputs: usize, batches: usize) -> Result<Metrics> {
    let loss = acc.loss.download(gpu)?[0] as f64 / batches.max(1) as f64;
    let counts = acc.counts.download_u32(gpu)?;
    Ok(match kind {
        HeadKind::Classes => Metrics { loss, accuracy: Some(counts[0] as f64 / counts[1].max(1) as f64), labels: None },
        HeadKind::Labels => Metrics { loss, accuracy: None, labels: Some(LabelMetrics::from_counts(&counts, outputs)?) },
    })
}

/// Computes the outputs of the frozen layers `0..upto` for every example of `data` once:
/// `[n, outputs of layer upto − 1]`, chunked like the data when it is larger than one binding.
pub(crate) fn frozen_features(gpu: &Gpu, net: &Network, data: &DeviceData, upto: usize, batch: usize) -> Result<Rows> {
    forward_rows(gpu, net, &data.x, data.n, upto, batch, "frozen_features")
}

/// Records on `net` what the data it was trained on says about its inputs and outputs, so that a
/// model saved from the library keeps them: the class or label names (where the data names every
/// output) and the shape of one example (kept where the network already records an image layout
/// of that shape, which says more).
fn record_data_layout(net: &mut Network, data: &Dataset) {
    if data.label_names.len() == net.output_dim() {
        // the count was just checked, so this cannot fail
        let _ = net.set_label_names(Some(data.label_names.clone()));
    }
    let shape = &data.input_shape;
    if net.input_layout().is_none_or(|l| l.shape() != *shape) {
        let _ = net.set_input_layout(Some(crate::nn::InputLayout::Shape(shape.clone())));
    }
}

/// The lowest layer that trains.
fn lowest_of(lr_mults: &[Option<f32>]) -> Result<usize> {
    lr_mults.iter().position(Option::is_some).ok_or_else(|| Error::invalid("nothing to train: every layer with parameters is frozen"))
}

/// Runs layers `0..upto` over all `n` rows of `x` in order, `batch` rows per submission, and
/// returns the last layer's outputs `[n, outputs]` (chunked like any resident data).
fn forward_rows(gpu: &Gpu, net: &Network, x: &Rows, n: usize, upto: usize, batch: usize, label: &str) -> Result<Rows> {
    let d = net.layers()[upto - 1].outputs();
    let out = Rows::alloc(gpu, n, &[d], DType::F32, label)?;
    let identity: Vec<u32> = (0..n as u32).collect();
    let indices = Tensor::from_u32(gpu, &[n], &identity)?;
    let b = batch.clamp(1, n);
    let full = ForwardPlan::build(gpu, net, x, &indices, 0, upto, b)?;
    let rem = n % b;
    let partial = if rem > 0 { Some(ForwardPlan::build(gpu, net, x, &indices, 0, upto, rem)?) } else { None };
    let mut start = 0;
    while start < n {
        let rows = b.min(n - start);
        let plan = if rows == b { &full } else { partial.as_ref().unwrap_or(&full) };
        plan.set_offset(gpu, start)?;
        let mut enc = gpu.device().create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some(label), timestamp_writes: None });
            plan.encode(gpu, &mut pass);
        }
        out.copy_rows_from(&mut enc, &plan.output, start, rows);
        gpu.submit(enc);
        start += rows;
    }
    gpu.check(label)?;
    Ok(out)
}

/// Evaluation over a resident data set: forward, loss, metrics; read once.
struct Evaluator {
    full: Plan,
    partial: Option<Plan>,
    acc: Accumulators,
    _scratch: Scratch,
    _indices: Tensor,
    n: usize,
    b: usize,
}

impl Evaluator {
    fn tensors(&self) -> Vec<&Tensor> {
        let mut v = self._scratch.tensors();
        v.extend(self.acc.tensors());
        v.push(&self._indices);
        v
    }

    #[allow(clippy::too_many_arguments)]
    fn new(
        gpu: &Gpu,
        net: &Network,
        data: &DeviceData,
        source_x: &Rows,
        first: usize,
        batch: usize,
        cfg: &TrainConfig,
        bce: &(Option<Tensor>, Option<Tensor>),
    ) -> Result<Evaluator> {
        let b = batch.min(data.n).max(1);
        let scratch = Scratch::new(gpu, net, first, b, Mode::Eval, data)?;
        let acc = Accumulators::new(gpu, net.head_kind, net.output_dim())?;
        let identity: Vec<u32> = (0..data.n as u32).collect();
        let indices = Tensor::from_u32(gpu, &[data.n], &identity)?;
        let inputs = PlanInputs {
            net,
            mode: Mode::Eval,
            first,
            source_x,
            source_y: &data.y,
            indices: &indices,
            scratch: &scratch,
            grads: None,
            acc: &acc,
            bce: &cfg.bce,
            bce_tensors: bce,
            threshold: cfg.threshold,
        };
        let full = Plan::build(gpu, &inputs, b)?;
        let rem = data.n % b;
        let partial = if rem > 0 { Some(Plan::build(gpu, &inputs, rem)?) } else { None };
        Ok(Evaluator { full, partial, acc, _scratch: scratch, _indices: indices, n: data.n, b })
    }

    fn run(&self, gpu: &Gpu, kind: HeadKind, outputs: usize) -> Result<Metrics> {
        self.acc.reset(gpu)?;
        let steps = self.n.div_ceil(self.b);
        for s in 0..steps {
            let plan = if s == steps - 1 && self.partial.is_some() { self.partial.as_ref().unwrap_or(&self.full) } else { &self.full };
            plan.set_offset(gpu, s * self.b)?;
            let mut enc = gpu.device().create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("eval_step") });
            {
                let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("eval_step"), timestamp_writes: None });
                plan.encode(gpu, &mut pass);
            }
            gpu.submit(enc);
        }
        read_metrics(gpu, &self.acc, kind, outputs, steps)
    }
}

/// The loss gradients of every layer for one batch holding all of `data` (no update): what
/// backward computes, read back for inspection and gradient checks. `(dW [out, in], db [out])`
/// per layer, trunk then head, and the batch loss.
pub fn gradients(gpu: &Gpu, net: &Network, data: &Dataset, bce: &BceSettings) -> Result<(f64, LayerGrads)> {
    validate_bce(bce)?;
    check_fits(net, data)?;
    let dev = DeviceData::upload(gpu, data)?;
    let mode = Mode::Train { lowest: 0 };
    let scratch = Scratch::new(gpu, net, 0, dev.n, mode, &dev)?;
    let every = ParamGroups::new().train("*", 1.0).resolve(net)?;
    let grads = Grads::new(gpu, net, &every)?;
    let acc = Accumulators::new(gpu, net.head_kind, net.output_dim())?;
    acc.reset(gpu)?;
    let identity: Vec<u32> = (0..dev.n as u32).collect();
    let indices = Tensor::from_u32(gpu, &[dev.n], &identity)?;
    let bce_t = bce_tensors(gpu, bce, net)?;
    let inputs = PlanInputs {
        net,
        mode,
        first: 0,
        source_x: &dev.x,
        source_y: &dev.y,
        indices: &indices,
        scratch: &scratch,
        grads: Some(&grads),
        acc: &acc,
        bce,
        bce_tensors: &bce_t,
        threshold: 0.5,
    };
    let plan = Plan::build(gpu, &inputs, dev.n)?;
    plan.set_offset(gpu, 0)?;
    let mut enc = gpu.device().create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("gradients") });
    {
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("gradients"), timestamp_writes: None });
        plan.encode(gpu, &mut pass);
    }
    gpu.submit(enc);
    let loss = acc.loss.download(gpu)?[0] as f64;
    let out = (0..net.layers().len())
        .map(|i| {
            if !net.layers()[i].has_params() {
                return Ok((Vec::new(), Vec::new()));
            }
            let (w, b) = grads.views(net, i)?;
            Ok((w.download(gpu)?, b.download(gpu)?))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((loss, out))
}

/// Outputs of `net` for `n` examples `x` (`[n, input_dim]`): class probabilities (softmax) for
/// class heads, per-label probabilities (sigmoid) for label heads. `[n, outputs]`.
pub fn predict(net: &Network, x: &[f32], n: usize, batch: usize) -> Result<Vec<f32>> {
    let gpu = net.gpu();
    let d = net.input_dim();
    if n == 0 || x.len() != n * d {
        return Err(Error::shape(format!("predict: {} values for {n} examples of {d} features", x.len())));
    }
    if x.iter().any(|v| !v.is_finite()) {
        return Err(Error::invalid("predict: the inputs contain NaN or infinity"));
    }
    let xs = Rows::alloc(gpu, n, &[d], DType::F32, "predict_x")?;
    xs.write_f32(gpu, x)?;
    let out_dim = net.output_dim();
    let logits = forward_rows(gpu, net, &xs, n, net.layers().len(), batch, "predict")?;
    let mut out = logits.download(gpu)?;
    match net.head_kind {
        HeadKind::Labels => out.iter_mut().for_each(|v| *v = crate::reference::sigmoid(*v as f64) as f32),
        HeadKind::Classes => {
            for row in out.chunks_mut(out_dim) {
                let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                let sum: f64 = row.iter().map(|&v| ((v - max) as f64).exp()).sum();
                row.iter_mut().for_each(|v| *v = (((*v - max) as f64).exp() / sum) as f32);
            }
        }
    }
    Ok(out)
}

/// Metadata key: the lowest trainable layer of the saved run.
pub const TRAIN_LOWEST_KEY: &str = "train.lowest_trainable";
/// Metadata key of states saved before parameter groups: the trunk's learning-rate multiplier
/// (read, no longer written; [`TRAIN_LR_MULTS_KEY`] replaces it).
pub const TRAIN_TRUNK_LR_KEY: &str = "train.trunk_lr_mult";
/// Metadata key: per layer, the learning-rate multiplier the saved run trained it at, as a JSON
/// array with `null` for frozen layers, e.g. `[null,null,0.1,1]`.
pub const TRAIN_LR_MULTS_KEY: &str = "train.lr_mults";
/// Metadata key: the saved run's optimizer, as `sgd lr=0.05 momentum=0.9 ...` or `adam lr=...`.
pub const TRAIN_OPTIMIZER_KEY: &str = "train.optimizer";
/// Metadata key: the saved run's batch size.
pub const TRAIN_BATCH_KEY: &str = "train.batch_size";
/// Metadata key: the saved run's schedule, as `constant`, `step every_epochs=.. gamma=..` or
/// `cosine warmup_steps=.. min_lr=..`.
pub const TRAIN_SCHEDULE_KEY: &str = "train.schedule";
/// Metadata key: the saved run's seed.
pub const TRAIN_SEED_KEY: &str = "train.seed";
/// Metadata key: the number of examples the saved run trained on.
pub const TRAIN_N_KEY: &str = "train.n";

/// [`TRAIN_LR_MULTS_KEY`]'s JSON array: a number (≥ 0, finite) or `null` per layer.
fn parse_lr_mults(json: &str, origin: &str) -> Result<Vec<Option<f32>>> {
    let bad = || Error::format(origin, format!("{TRAIN_LR_MULTS_KEY} must be a JSON array of numbers ≥ 0 and nulls, got {json:?}"));
    let v: serde_json::Value = serde_json::from_str(json).map_err(|_| bad())?;
    v.as_array()
        .ok_or_else(bad)?
        .iter()
        .map(|m| match m {
            serde_json::Value::Null => Ok(None),
            m => m.as_f64().map(|m| m as f32).filter(|m| m.is_finite() && *m >= 0.0).map(Some).ok_or_else(bad),
        })
        .collect()
}

/// The multipliers of a state saved before parameter groups: the head at the base rate, trunk
/// layers with parameters from `lowest` up at the saved trunk multiplier (read from the
/// architecture in the checkpoint's metadata).
fn legacy_lr_mults(c: &crate::checkpoint::Checkpoint, lowest: usize, trunk_mult: &str, origin: &str) -> Result<Vec<Option<f32>>> {
    let trunk_mult: f32 = trunk_mult.parse().map_err(|_| Error::format(origin, "bad trunk_lr_mult"))?;
    let json = c
        .metadata
        .get(crate::checkpoint::LAYERS_KEY)
        .ok_or_else(|| Error::format(origin, "a training checkpoint without its architecture"))?;
    let layers: serde_json::Value = serde_json::from_str(json).map_err(|e| Error::format(origin, format!("bad architecture JSON: {e}")))?;
    let layers = layers.as_array().ok_or_else(|| Error::format(origin, "the architecture is not a JSON array"))?;
    Ok(layers
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let has_params = matches!(l.get("type").and_then(|t| t.as_str()), Some("dense" | "conv2d"));
            match l.get("part").and_then(|p| p.as_str()) {
                Some("head") if has_params => Some(1.0),
                _ if has_params && i >= lowest => Some(trunk_mult),
                _ => None,
            }
        })
        .collect())
}

/// `kind key=value ...`: one metadata value per setting group, readable in any safetensors tool.
/// f32 values are written in their shortest round-trip form, so they read back bit for bit.
fn optimizer_to_string(o: &Optimizer) -> String {
    match o {
        Optimizer::Sgd(c) => format!(
            "sgd lr={} momentum={} dampening={} weight_decay={} nesterov={}",
            c.lr, c.momentum, c.dampening, c.weight_decay, c.nesterov
        ),
        Optimizer::Adam(c) => format!(
            "adam lr={} beta1={} beta2={} eps={} weight_decay={} decoupled_weight_decay={}",
            c.lr, c.beta1, c.beta2, c.eps, c.weight_decay, c.decoupled_weight_decay
        ),
    }
}

fn schedule_to_string(s: &Schedule) -> String {
    match *s {
        Schedule::Constant => "constant".into(),
        Schedule::Step { every_epochs, gamma } => format!("step every_epochs={every_epochs} gamma={gamma}"),
        Schedule::Cosine { warmup_steps, min_lr } => format!("cosine warmup_steps={warmup_steps} min_lr={min_lr}"),
    }
}

/// A `kind key=value ...` string split into its kind and a field reader that names `what` and
/// the file in errors.
struct Fields<'a> {
    kind: &'a str,
    pairs: Vec<(&'a str, &'a str)>,
    what: &'a str,
    origin: &'a str,
}

impl<'a> Fields<'a> {
    fn parse(s: &'a str, what: &'a str, origin: &'a str) -> Fields<'a> {
        let mut words = s.split_whitespace();
        let kind = words.next().unwrap_or("");
        Fields { kind, pairs: words.filter_map(|w| w.split_once('=')).collect(), what, origin }
    }
    fn get<T: std::str::FromStr>(&self, key: &str) -> Result<T> {
        let v = self.pairs.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
        v.and_then(|v| v.parse().ok())
            .ok_or_else(|| Error::format(self.origin, format!("{}: missing or bad {key} in {:?}", self.what, self.kind)))
    }
}

fn optimizer_from_str(s: &str, origin: &str) -> Result<Optimizer> {
    use crate::kernels::optim::{AdamConfig, SgdConfig};
    let f = Fields::parse(s, TRAIN_OPTIMIZER_KEY, origin);
    match f.kind {
        "sgd" => Ok(Optimizer::Sgd(SgdConfig {
            lr: f.get("lr")?,
            momentum: f.get("momentum")?,
            dampening: f.get("dampening")?,
            weight_decay: f.get("weight_decay")?,
            nesterov: f.get("nesterov")?,
        })),
        "adam" => Ok(Optimizer::Adam(AdamConfig {
            lr: f.get("lr")?,
            beta1: f.get("beta1")?,
            beta2: f.get("beta2")?,
            eps: f.get("eps")?,
            weight_decay: f.get("weight_decay")?,
            decoupled_weight_decay: f.get("decoupled_weight_decay")?,
        })),
        other => Err(Error::format(origin, format!("{TRAIN_OPTIMIZER_KEY}: unknown optimizer {other:?}"))),
    }
}

fn schedule_from_str(s: &str, origin: &str) -> Result<Schedule> {
    let f = Fields::parse(s, TRAIN_SCHEDULE_KEY, origin);
    match f.kind {
        "constant" => Ok(Schedule::Constant),
        "step" => Ok(Schedule::Step { every_epochs: f.get("every_epochs")?, gamma: f.get("gamma")? }),
        "cosine" => Ok(Schedule::Cosine { warmup_steps: f.get("warmup_steps")?, min_lr: f.get("min_lr")? }),
        other => Err(Error::format(origin, format!("{TRAIN_SCHEDULE_KEY}: unknown schedule {other:?}"))),
    }
}

impl RunSettings {
    fn write(&self, metadata: &mut std::collections::BTreeMap<String, String>) {
        metadata.insert(TRAIN_OPTIMIZER_KEY.into(), optimizer_to_string(&self.optimizer));
        metadata.insert(TRAIN_BATCH_KEY.into(), self.batch_size.to_string());
        metadata.insert(TRAIN_SCHEDULE_KEY.into(), schedule_to_string(&self.schedule));
        metadata.insert(TRAIN_SEED_KEY.into(), self.seed.to_string());
        metadata.insert(TRAIN_N_KEY.into(), self.n.to_string());
    }

    /// `None` when the state predates saved settings (no optimizer key); an error when they are
    /// there but incomplete or malformed.
    fn read(metadata: &std::collections::BTreeMap<String, String>, origin: &str) -> Result<Option<RunSettings>> {
        let Some(opt) = metadata.get(TRAIN_OPTIMIZER_KEY) else { return Ok(None) };
        let get = |k: &str| metadata.get(k).ok_or_else(|| Error::format(origin, format!("{TRAIN_OPTIMIZER_KEY} is saved but {k} is not")));
        let num = |k: &str| -> Result<u64> { get(k)?.parse().map_err(|_| Error::format(origin, format!("{k} is not a number"))) };
        Ok(Some(RunSettings {
            optimizer: optimizer_from_str(opt, origin)?,
            batch_size: num(TRAIN_BATCH_KEY)? as usize,
            schedule: schedule_from_str(get(TRAIN_SCHEDULE_KEY)?, origin)?,
            seed: num(TRAIN_SEED_KEY)?,
            n: num(TRAIN_N_KEY)? as usize,
        }))
    }
}

impl TrainingState {
    /// A training checkpoint: the network's parameters (PyTorch names) plus this state — the
    /// optimizer buffers as `optim.<param>.<slot>` tensors with their parameter's shape (see
    /// [`TrainingState::optimizer_state`]), and the epoch, step, RNG position and per-layer
    /// learning-rate multipliers in the metadata.
    pub fn to_checkpoint(&self, net: &Network) -> Result<crate::checkpoint::Checkpoint> {
        use crate::checkpoint as ck;
        let mut c = net.to_checkpoint()?;
        let shapes: std::collections::BTreeMap<String, Vec<usize>> = c.tensors.iter().map(|t| (t.name.clone(), t.shape.clone())).collect();
        for (name, values) in &self.optimizer_state {
            // `<param>.<slot>`: the parameter's shape where the network has it
            let shape =
                name.rsplit_once('.').and_then(|(param, _)| shapes.get(param)).filter(|s| s.iter().product::<usize>() == values.len());
            let shape = shape.cloned().unwrap_or_else(|| vec![values.len()]);
            c.push(ck::NamedTensor::new(format!("{}{name}", ck::OPTIM_PREFIX), shape, values.clone())?)?;
        }
        c.metadata.insert(ck::OPTIM_STEP_KEY.into(), self.step.to_string());
        c.metadata.insert(ck::TRAIN_EPOCH_KEY.into(), self.epoch.to_string());
        c.metadata.insert(ck::TRAIN_RNG_KEY.into(), ck::rng_state_to_string(&Rng::from_state(self.rng)));
        c.metadata.insert(TRAIN_LOWEST_KEY.into(), self.lowest_trainable.to_string());
        let mults: Vec<String> = self.lr_mults.iter().map(|m| m.map_or("null".into(), |m| m.to_string())).collect();
        c.metadata.insert(TRAIN_LR_MULTS_KEY.into(), format!("[{}]", mults.join(",")));
        if let Some(run) = &self.run {
            run.write(&mut c.metadata);
        }
        Ok(c)
    }

    /// Reads the state written by [`TrainingState::to_checkpoint`]; `origin` names the file in
    /// errors. States written before parameter groups (optimizer buffers dumped per arena as
    /// `optim.state.<i>`, a lowest trainable layer and a trunk multiplier) are read too; their
    /// buffers are cut per parameter when the run resumes ([`Trainer::resume`]), where the
    /// network's layout is known.
    pub fn from_checkpoint(c: &crate::checkpoint::Checkpoint, origin: &str) -> Result<TrainingState> {
        use crate::checkpoint as ck;
        let get =
            |k: &str| c.metadata.get(k).ok_or_else(|| Error::format(origin, format!("not a training checkpoint: no {k} in the metadata")));
        let num = |k: &str| -> Result<u64> { get(k)?.parse().map_err(|_| Error::format(origin, format!("{k} is not a number"))) };
        let lowest_trainable = num(TRAIN_LOWEST_KEY)? as usize;
        let lr_mults = match c.metadata.get(TRAIN_LR_MULTS_KEY) {
            Some(json) => parse_lr_mults(json, origin)?,
            None => legacy_lr_mults(c, lowest_trainable, get(TRAIN_TRUNK_LR_KEY)?, origin)?,
        };
        if lr_mults.iter().position(Option::is_some) != Some(lowest_trainable) {
            return Err(Error::format(origin, format!("{TRAIN_LR_MULTS_KEY} disagrees with {TRAIN_LOWEST_KEY} = {lowest_trainable}")));
        }
        let optimizer_state =
            c.tensors.iter().filter_map(|t| t.name.strip_prefix(ck::OPTIM_PREFIX).map(|name| (name.to_string(), t.data.clone()))).collect();
        Ok(TrainingState {
            epoch: num(ck::TRAIN_EPOCH_KEY)? as usize,
            step: u32::try_from(num(ck::OPTIM_STEP_KEY)?).map_err(|_| Error::format(origin, "optim.step out of range"))?,
            rng: ck::rng_state_from_str(get(ck::TRAIN_RNG_KEY)?)?.state(),
            lowest_trainable,
            lr_mults,
            optimizer_state,
            run: RunSettings::read(&c.metadata, origin)?,
        })
    }

    /// The optimizer state named per parameter. A state read from a file written before
    /// parameter groups holds the buffers of the head arena and then of the trunk arena's
    /// trainable suffix (`state.<i>`, each slot of a range in turn); they are cut per parameter
    /// with `net`'s layout, which is the layout they were written in.
    fn named_optimizer_state(&self, net: &Network, opt: &Optimizer) -> Result<Vec<(String, Vec<f32>)>> {
        let legacy: Vec<&Vec<f32>> =
            (0..).map_while(|i| self.optimizer_state.iter().find(|(n, _)| *n == format!("state.{i}"))).map(|(_, v)| v).collect();
        if legacy.is_empty() {
            return Ok(self.optimizer_state.clone());
        }
        let slots = state_slots(opt);
        let t = net.trunk.len();
        let trunk_start = net.trunk_params.slots.get(self.lowest_trainable).map_or(net.trunk_params.len, |s| s.w);
        // (arena is head, start) of each saved range, head first
        let mut ranges = vec![(true, 0usize)];
        if self.lowest_trainable < t {
            ranges.push((false, trunk_start));
        }
        if legacy.len() != ranges.len() * slots.len() {
            return Err(Error::invalid(format!(
                "the saved optimizer state has {} buffers, this optimizer keeps {} for each of {} ranges",
                legacy.len(),
                slots.len(),
                ranges.len()
            )));
        }
        let names = net.module_names();
        let layers = net.layers();
        let mut out = Vec::new();
        for (i, spec) in layers.iter().enumerate() {
            let (Some(shape), Some(_)) = (spec.weight_shape(), self.lr_mults.get(i).copied().flatten()) else { continue };
            let head = i >= t;
            let r =
                ranges.iter().position(|&(h, _)| h == head).ok_or_else(|| Error::invalid("the saved optimizer state misses a range"))?;
            let (_, slot) = net.slot(i);
            for (k, slot_name) in slots.iter().enumerate() {
                let buf = legacy[r * slots.len() + k];
                for (param, at, len) in [("weight", slot.w, shape.iter().product::<usize>()), ("bias", slot.b, spec.bias_len())] {
                    let from = at
                        .checked_sub(ranges[r].1)
                        .filter(|&f| f + len <= buf.len())
                        .ok_or_else(|| Error::invalid("the saved optimizer state does not match this network's layout".to_string()))?;
                    out.push((format!("{}.{param}.{slot_name}", names[i]), buf[from..from + len].to_vec()));
                }
            }
        }
        Ok(out)
    }

    /// Writes a training checkpoint (temporary file + rename; always f32: Adam's moments would
    /// underflow in f16).
    pub fn save(&self, net: &Network, path: &std::path::Path) -> Result<()> {
        crate::checkpoint::save(path, &self.to_checkpoint(net)?, crate::checkpoint::StorageDtype::F32)
    }

    /// Reads a training checkpoint: the network and where its run stopped.
    pub fn load(gpu: &Gpu, path: &std::path::Path) -> Result<(Network, TrainingState)> {
        let origin = path.display().to_string();
        let c = crate::checkpoint::load(path)?;
        let net = Network::from_checkpoint(gpu, &c, &origin)?;
        Ok((net, Self::from_checkpoint(&c, &origin)?))
    }
}
