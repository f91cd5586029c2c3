//! Where a run stopped ([`TrainingState`]) and the settings it ran with ([`RunSettings`]): what a
//! resume file holds besides the weights, and its metadata keys.

use super::{Optimizer, Schedule, TrainConfig};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::nn::Network;
use crate::rng::Rng;

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
    pub(crate) fn of(cfg: &TrainConfig, n: usize) -> RunSettings {
        RunSettings { optimizer: cfg.optimizer, batch_size: cfg.batch_size, schedule: cfg.schedule, seed: cfg.seed, n }
    }

    /// `cfg` with the saved optimizer, batch size, schedule and seed in place of its own.
    pub fn apply(&self, cfg: &TrainConfig) -> TrainConfig {
        TrainConfig { optimizer: self.optimizer, batch_size: self.batch_size, schedule: self.schedule, seed: self.seed, ..cfg.clone() }
    }
}

/// PyTorch's names for an optimizer's per-parameter buffers, in the order it keeps them.
pub(crate) fn state_slots(opt: &Optimizer) -> &'static [&'static str] {
    match opt {
        Optimizer::Sgd(c) if c.momentum != 0.0 => &["momentum_buffer"],
        Optimizer::Sgd(_) => &[],
        Optimizer::Adam(_) => &["exp_avg", "exp_avg_sq"],
    }
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
    /// buffers are cut per parameter when the run resumes ([`Trainer::resume`](super::Trainer::resume)), where the
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

    /// This state for `after`, a network whose heads were edited ([`Network::add_head`],
    /// [`Network::remove_head`], [`Network::swap_named_head`]) from one whose layers were named
    /// `before` ([`Network::module_names`]), so that [`Trainer::resume`](super::Trainer::resume)
    /// continues the run: every kept layer keeps its learning-rate multiplier and optimizer
    /// buffers (found by module path), the layers of a removed head take theirs away, and the
    /// layers `report` created train at the base rate from fresh (zero) buffers of `opt`'s kind.
    pub fn after_head_edit(
        &self,
        before: &[String],
        report: &crate::nn::HeadSwapReport,
        after: &Network,
        opt: &Optimizer,
    ) -> Result<TrainingState> {
        if before.len() != self.lr_mults.len() {
            return Err(Error::invalid(format!(
                "the saved run trained a network of {} layers, but {} names were given for it",
                self.lr_mults.len(),
                before.len()
            )));
        }
        let layers = after.layers();
        let names = after.module_names();
        let slots = state_slots(opt);
        let mut lr_mults = Vec::new();
        let mut optimizer_state = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let params: Vec<(String, usize)> = match layers[i].weight_shape() {
                Some(shape) => vec![(format!("{name}.weight"), shape.iter().product()), (format!("{name}.bias"), layers[i].bias_len())],
                None => Vec::new(),
            };
            let created = report.created_modules.contains(name);
            let mult = match before.iter().position(|b| b == name) {
                _ if created => layers[i].has_params().then_some(1.0),
                Some(j) => self.lr_mults[j],
                None => return Err(Error::invalid(format!("layer {i} ({name}) is neither in the saved run nor created by the edit"))),
            };
            lr_mults.push(mult);
            if mult.is_none() {
                continue;
            }
            for (param, len) in params {
                for slot in slots {
                    let key = format!("{param}.{slot}");
                    let values = match self.optimizer_state.iter().find(|(n, _)| *n == key) {
                        Some((_, v)) if !created => v.clone(),
                        _ => vec![0.0; len],
                    };
                    optimizer_state.push((key, values));
                }
            }
        }
        // uncertainty weighting's log-variances: kept per head, fresh for a head the edit created
        let weighted = self.optimizer_state.iter().any(|(n, _)| slots.iter().any(|s| n.ends_with(&format!(".log_var.{s}"))));
        if weighted {
            for h in after.heads() {
                let module = format!("heads.{}", h.name);
                let created = report.created_modules.iter().any(|m| *m == module || m.starts_with(&format!("{module}.")));
                for slot in slots {
                    let key = format!("{}.{slot}", super::optimizer::log_var_name(&h.name));
                    let values = match self.optimizer_state.iter().find(|(n, _)| *n == key) {
                        Some((_, v)) if !created => v.clone(),
                        _ => vec![0.0],
                    };
                    optimizer_state.push((key, values));
                }
            }
        }
        let lowest_trainable = lr_mults
            .iter()
            .position(Option::is_some)
            .ok_or_else(|| Error::invalid("nothing to train after the edit: every layer is frozen"))?;
        Ok(TrainingState { lowest_trainable, lr_mults, optimizer_state, ..self.clone() })
    }

    /// The optimizer state named per parameter. A state read from a file written before
    /// parameter groups holds the buffers of the head arena and then of the trunk arena's
    /// trainable suffix (`state.<i>`, each slot of a range in turn); they are cut per parameter
    /// with `net`'s layout, which is the layout they were written in.
    pub(crate) fn named_optimizer_state(&self, net: &Network, opt: &Optimizer) -> Result<Vec<(String, Vec<f32>)>> {
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
