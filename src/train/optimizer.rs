//! The gradients of the trainable ranges ([`Grads`]) and a run's optimizer state over them: per
//! trainable range (a PyTorch param group over a flat slice of an
//! arena), the optimizer's buffers and, with early stopping, a backup of the parameters. The
//! launches that update the ranges belong to each step plan ([`super::plan::Plan`]), built from
//! this state by [`Optim::steps`]; resume files read and write the state per parameter.

use super::groups::{TrainRange, train_ranges};
use super::plan::LogVars;
use super::state::state_slots;
use crate::error::{Error, Result};
use crate::gpu::tensor::DType;
use crate::gpu::{Dispatch, Gpu, Recorder, Tensor};
use crate::kernels::elementwise;
use crate::kernels::optim::{OptimStep, Optimizer, ParamRange, RangeLaunch, choose_range_launch};
use crate::nn::Network;

/// Gradient buffers of the trainable parameters: one per trainable range (a run of adjacent
/// trainable layers in one arena at one learning rate), laid out like the arena it mirrors.
/// Frozen layers have no gradient memory.
pub(crate) struct Grads {
    pub ranges: Vec<TrainRange>,
    /// Per range: `[end - start]`.
    pub bufs: Vec<Tensor>,
}

impl Grads {
    /// `mults`: per layer, the learning-rate multiplier of a trainable layer or `None`.
    pub fn new(gpu: &Gpu, net: &Network, mults: &[Option<f32>]) -> Result<Grads> {
        let ranges = train_ranges(net, mults);
        let bufs = ranges
            .iter()
            .map(|r| Tensor::alloc(gpu, &[r.end - r.start], DType::F32, if r.head { "grads_head" } else { "grads_trunk" }))
            .collect::<Result<_>>()?;
        Ok(Grads { ranges, bufs })
    }

    pub fn tensors(&self) -> Vec<&Tensor> {
        self.bufs.iter().collect()
    }

    /// The range holding layer `i`'s gradient, if it trains.
    fn range_of(&self, i: usize) -> Option<usize> {
        self.ranges.iter().position(|r| r.layers.contains(&i))
    }

    /// Whether layer `i` has parameters that train (and so a gradient).
    pub fn has(&self, i: usize) -> bool {
        self.range_of(i).is_some()
    }

    /// The gradient views (dW `[out, in]`, db `[out]`) of layer `i`.
    pub(crate) fn views(&self, net: &Network, i: usize) -> Result<(Tensor, Tensor)> {
        let s = net.layers()[i];
        let r = self.range_of(i).ok_or_else(|| Error::invalid(format!("layer {i} is frozen and has no gradient")))?;
        let (_, slot) = net.slot(i);
        let (buf, base) = (&self.bufs[r], self.ranges[r].start);
        let shape = s.weight_shape().ok_or_else(|| Error::invalid(format!("layer {i} ({}) has no parameters", s.describe())))?;
        Ok((buf.view(slot.w - base, &shape)?, buf.view(slot.b - base, &[s.bias_len()])?))
    }
}

/// Gradient accumulation's running sum ([`super::TrainConfig::accumulate_steps`]): a buffer per
/// gradient range, and the launches that fold one pass's gradients (each micro-batch's loss
/// already scaled by its share of the step's) into it on the device. Of a step's passes, the first
/// copies its gradients into the sum, the middle ones add theirs, and the last adds the sum to its
/// own, so the gradient buffers then hold the step's gradient for the exchange and the update.
pub(crate) struct GradSum {
    bufs: Vec<Tensor>,
    start: Vec<Dispatch>,
    add: Vec<Dispatch>,
    finish: Vec<Dispatch>,
}

impl GradSum {
    pub fn new(gpu: &Gpu, grads: &Grads) -> Result<GradSum> {
        let bufs: Vec<Tensor> = grads.bufs.iter().map(|g| Tensor::alloc(gpu, g.shape(), DType::F32, "grads_sum")).collect::<Result<_>>()?;
        let each = |f: &dyn Fn(&Tensor, &Tensor) -> Result<Dispatch>| -> Result<Vec<Dispatch>> {
            grads.bufs.iter().zip(&bufs).map(|(g, a)| f(g, a)).collect()
        };
        let start = each(&|g, a| elementwise::copy_dispatch(gpu, g, a))?;
        let add = each(&|g, a| elementwise::add_assign_dispatch(gpu, g, a))?;
        let finish = each(&|g, a| elementwise::add_assign_dispatch(gpu, a, g))?;
        Ok(GradSum { bufs, start, add, finish })
    }

    /// The launches after pass `i` of a step's `n` passes (none for a step of one pass).
    pub fn after_pass(&self, i: usize, n: usize) -> &[Dispatch] {
        match (i, n) {
            (_, 0 | 1) => &[],
            (0, _) => &self.start,
            (i, n) if i + 1 == n => &self.finish,
            _ => &self.add,
        }
    }

    pub fn tensors(&self) -> Vec<&Tensor> {
        self.bufs.iter().collect()
    }
}

/// Optimizer state for one trainable range.
pub(crate) struct Group {
    /// Optimizer state buffers (momentum, or Adam's moments), each as long as the range.
    pub state: Vec<Tensor>,
    /// The range's parameters (a view of its arena).
    pub params: Tensor,
    /// Backup of the parameters for early stopping.
    pub best: Option<Tensor>,
}

/// The optimizer over a run's trainable ranges, in the order of the gradient ranges
/// ([`Grads::ranges`]), with state for those ranges only, and how this device launches its
/// update: two ranges per dispatch, or one per range, whichever it measured faster.
pub(crate) struct Optim {
    pub rule: Optimizer,
    pub groups: Vec<Group>,
    launch: RangeLaunch,
    /// Uncertainty weighting: the heads' log-variances, a parameter group of their own (the
    /// run's rule and learning rate, no weight decay), and their gradient.
    log_var: Option<(Group, Tensor)>,
}

impl Optim {
    /// Zeroed state for every trainable range of `grads` (with parameter backups when
    /// `keep_best`).
    /// `log_vars`: uncertainty weighting's log-variances, trained as one more group.
    pub fn new(gpu: &Gpu, net: &Network, grads: &Grads, rule: Optimizer, keep_best: bool, log_vars: Option<&LogVars>) -> Result<Optim> {
        let group = |params: Tensor| -> Result<Group> {
            let n = params.len();
            let labels: &[&str] = match rule {
                Optimizer::Sgd(c) if c.momentum != 0.0 => &["momentum"],
                Optimizer::Sgd(_) => &[],
                Optimizer::Adam(_) => &["adam_m", "adam_v"],
            };
            let state = labels.iter().map(|l| Tensor::alloc(gpu, &[n], DType::F32, l)).collect::<Result<_>>()?;
            let best = if keep_best { Some(Tensor::alloc(gpu, &[n], DType::F32, "best_params")?) } else { None };
            Ok(Group { state, params, best })
        };
        let mut groups = Vec::new();
        for r in &grads.ranges {
            let arena = if r.head { &net.head_params } else { &net.trunk_params };
            groups.push(group(arena.buf.view(r.start, &[r.end - r.start])?)?);
        }
        let sizes: Vec<usize> = groups.iter().map(|g| g.params.len()).collect();
        let launch = choose_range_launch(gpu, &rule, &sizes)?;
        let log_var = log_vars.map(|lv| Ok::<_, Error>((group(lv.params.clone())?, lv.grad.clone()))).transpose()?;
        Ok(Optim { rule, groups, launch, log_var })
    }

    /// The groups with their parameters: the trainable ranges', then the log-variances'.
    fn all_groups(&self) -> impl Iterator<Item = &Group> {
        self.groups.iter().chain(self.log_var.as_ref().map(|(g, _)| g))
    }

    /// The launches of one update of every range at its learning-rate multiplier, reading
    /// `grads`: what a step plan records after its backward pass.
    pub fn steps(&self, gpu: &Gpu, grads: &Grads) -> Result<Vec<OptimStep>> {
        let states: Vec<Vec<&Tensor>> = self.groups.iter().map(|g| g.state.iter().collect()).collect();
        let ranges: Vec<ParamRange> = self
            .groups
            .iter()
            .zip(&states)
            .zip(grads.ranges.iter().zip(&grads.bufs))
            .map(|((g, state), (r, grad))| ParamRange { params: &g.params, grads: grad, state, lr_mult: r.lr_mult })
            .collect();
        let mut steps = if ranges.is_empty() { Vec::new() } else { self.rule.steps(gpu, &ranges, self.launch)? };
        if let Some((g, grad)) = &self.log_var {
            let state: Vec<&Tensor> = g.state.iter().collect();
            let range = ParamRange { params: &g.params, grads: grad, state: &state, lr_mult: 1.0 };
            steps.extend(self.rule.weight_decay(0.0).steps(gpu, &[range], RangeLaunch::PerRange)?);
        }
        Ok(steps)
    }

    /// Every buffer it allocated, for the run's byte count.
    pub fn tensors(&self) -> Vec<&Tensor> {
        self.all_groups().flat_map(|g| g.state.iter().chain(g.best.as_ref())).collect()
    }

    /// Copies every range's parameters to its backup (or back, with `restore`), on the GPU.
    pub fn backup(&self, gpu: &Gpu, restore: bool) -> Result<()> {
        let mut rec = Recorder::new(gpu, "best_weights");
        for g in self.all_groups() {
            if let Some(b) = &g.best {
                let (src, dst) = if restore { (b, &g.params) } else { (&g.params, b) };
                rec.copy_all(src, dst)?;
            }
        }
        rec.submit();
        Ok(())
    }

    /// The optimizer's buffers, read back and cut per parameter (see
    /// [`super::TrainingState::optimizer_state`]).
    pub fn named_state(&self, gpu: &Gpu, net: &Network, grads: &Grads) -> Result<Vec<(String, Vec<f32>)>> {
        let slots = state_slots(&self.rule);
        let host: Vec<Vec<Vec<f32>>> =
            self.groups.iter().map(|g| g.state.iter().map(|t| t.download(gpu)).collect::<Result<_>>()).collect::<Result<_>>()?;
        let mut out = Vec::new();
        for (r, name, off, len) in trainable_params(net, grads) {
            for (k, slot) in slots.iter().enumerate() {
                out.push((format!("{name}.{slot}"), host[r][k][off..off + len].to_vec()));
            }
        }
        if let Some((g, _)) = &self.log_var {
            let host: Vec<Vec<f32>> = g.state.iter().map(|t| t.download(gpu)).collect::<Result<_>>()?;
            for (h, head) in net.heads().iter().enumerate() {
                for (k, slot) in slots.iter().enumerate() {
                    out.push((format!("{}.{slot}", log_var_name(&head.name)), vec![host[k][h]]));
                }
            }
        }
        Ok(out)
    }

    /// Writes saved per-parameter buffers into this run's state: every trainable parameter's
    /// every slot must be there with its parameter's length, and nothing else.
    pub fn restore_state(&self, gpu: &Gpu, net: &Network, grads: &Grads, saved: &[(String, Vec<f32>)]) -> Result<()> {
        let slots = state_slots(&self.rule);
        let params = trainable_params(net, grads);
        let mut host: Vec<Vec<Vec<f32>>> = self.groups.iter().map(|g| vec![vec![0f32; g.params.len()]; slots.len()]).collect();
        let mut wanted = std::collections::BTreeSet::new();
        let mut params = params;
        if self.log_var.is_some() {
            // after the ranges: range index `groups.len()`, one value per head
            let r = self.groups.len();
            params.extend(net.heads().iter().enumerate().map(|(h, head)| (r, log_var_name(&head.name), h, 1)));
            host.push(vec![vec![0f32; net.heads().len()]; slots.len()]);
        }
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
        for (g, bufs) in self.all_groups().zip(&host) {
            for (t, v) in g.state.iter().zip(bufs) {
                t.write(gpu, v)?;
            }
        }
        Ok(())
    }
}

/// The name a head's log-variance goes by in a run's optimizer state, `heads.<name>.log_var`
/// (uncertainty weighting).
pub(crate) fn log_var_name(head: &str) -> String {
    format!("heads.{head}.log_var")
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
