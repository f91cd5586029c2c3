//! Optimizer steps: SGD (momentum, dampening, Nesterov, weight decay) and Adam / AdamW, each one
//! dispatch over a whole flat parameter range (the trainer's parameter, gradient and moment
//! arenas, or any view of them).
//!
//! The updates are PyTorch's single-tensor `torch.optim.SGD` / `Adam` / `AdamW` operation by
//! operation in f32 (see `shaders/optim.wgsl`); the scalars PyTorch computes in Python floats are
//! computed here in f64. Config values are f32; they are widened through their shortest decimal
//! form (`0.9_f32` becomes `0.9_f64`, not `0.899999976...`), which is the number a PyTorch script
//! writing `betas=(0.9, 0.999)` uses.
//!
//! ```no_run
//! use headswap::{Gpu, Tensor, kernels::optim::{self, AdamConfig}};
//! let gpu = Gpu::new()?;
//! let p = Tensor::from_slice(&gpu, &[3], &[1., 2., 3.])?;
//! let g = Tensor::from_slice(&gpu, &[3], &[0.1, 0.2, 0.3])?;
//! let (m, v) = (Tensor::zeros(&gpu, &[3])?, Tensor::zeros(&gpu, &[3])?);
//! let step = optim::adam_step(&gpu, &p, &g, &m, &v, &AdamConfig::adamw(1e-3))?;
//! for t in 1..=10 {
//!     step.set(&gpu, 1e-3, t)?; // a schedule would change the learning rate here
//!     step.run(&gpu)?;
//! }
//! # Ok::<(), headswap::Error>(())
//! ```

use super::{Kernel, R, RW, ensure, source};
use crate::error::{Error, Result};
use crate::gpu::pipelines::{StepUniforms, groups_1d};
use crate::gpu::tensor::DType;
use crate::gpu::{Dispatch, Gpu, Tensor};

pub(crate) const SGD: Kernel = Kernel { source: &source::OPTIM, entry: "sgd", bindings: &[R, RW] };
pub(crate) const SGD_MOMENTUM: Kernel = Kernel { source: &source::OPTIM, entry: "sgd_momentum", bindings: &[R, RW, RW] };
pub(crate) const ADAM: Kernel = Kernel { source: &source::OPTIM, entry: "adam", bindings: &[R, RW, RW, RW] };
pub(crate) const SGD_2: Kernel = Kernel { source: &source::OPTIM, entry: "sgd_2", bindings: &[R, RW, R, RW] };
pub(crate) const SGD_MOMENTUM_2: Kernel = Kernel { source: &source::OPTIM, entry: "sgd_momentum_2", bindings: &[R, RW, RW, R, RW, RW] };
pub(crate) const ADAM_2: Kernel = Kernel { source: &source::OPTIM, entry: "adam_2", bindings: &[R, RW, RW, RW, R, RW, RW, RW] };

/// The most parameter ranges one optimizer dispatch updates (the `_2` entry points). A step over
/// more ranges (one per parameter group) takes one dispatch per pair, or one per range.
pub const RANGES_PER_DISPATCH: usize = 2;

/// `torch.optim.SGD`'s hyper-parameters (without `maximize`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdConfig {
    pub lr: f32,
    pub momentum: f32,
    pub dampening: f32,
    pub weight_decay: f32,
    pub nesterov: bool,
}

impl SgdConfig {
    /// Plain SGD with PyTorch's defaults: no momentum, dampening, weight decay or Nesterov.
    pub fn new(lr: f32) -> SgdConfig {
        SgdConfig { lr, momentum: 0.0, dampening: 0.0, weight_decay: 0.0, nesterov: false }
    }

    /// PyTorch's constructor checks: lr, momentum, weight decay ≥ 0 (and finite); Nesterov needs
    /// momentum > 0 and dampening = 0.
    pub fn validate(&self) -> Result<()> {
        check_lr(self.lr)?;
        if !(self.momentum >= 0.0 && self.momentum.is_finite()) {
            return Err(Error::invalid(format!("SGD momentum must be ≥ 0, got {}", self.momentum)));
        }
        if !self.dampening.is_finite() {
            return Err(Error::invalid(format!("SGD dampening must be finite, got {}", self.dampening)));
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return Err(Error::invalid(format!("SGD weight_decay must be ≥ 0, got {}", self.weight_decay)));
        }
        if self.nesterov && (self.momentum <= 0.0 || self.dampening != 0.0) {
            return Err(Error::invalid("Nesterov momentum requires a momentum and zero dampening"));
        }
        Ok(())
    }
}

/// `torch.optim.Adam` / `AdamW`'s hyper-parameters (without `amsgrad` and `maximize`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamConfig {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// `true` = AdamW: `p ← p·(1 − lr·wd)` before the update; `false` = Adam: `g ← g + wd·p`.
    pub decoupled_weight_decay: bool,
}

impl AdamConfig {
    /// `torch.optim.Adam` defaults: betas (0.9, 0.999), eps 1e-8, no weight decay.
    pub fn adam(lr: f32) -> AdamConfig {
        AdamConfig { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, decoupled_weight_decay: false }
    }

    /// `torch.optim.AdamW` defaults: betas (0.9, 0.999), eps 1e-8, decoupled weight decay 0.01.
    pub fn adamw(lr: f32) -> AdamConfig {
        AdamConfig { weight_decay: 0.01, decoupled_weight_decay: true, ..AdamConfig::adam(lr) }
    }

    /// PyTorch's constructor checks: lr, eps, weight decay ≥ 0 (and finite), 0 ≤ β < 1.
    pub fn validate(&self) -> Result<()> {
        check_lr(self.lr)?;
        for (name, b) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&b) {
                return Err(Error::invalid(format!("Adam {name} must be in [0, 1), got {b}")));
            }
        }
        if !(self.eps >= 0.0 && self.eps.is_finite()) {
            return Err(Error::invalid(format!("Adam eps must be ≥ 0, got {}", self.eps)));
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return Err(Error::invalid(format!("Adam weight_decay must be ≥ 0, got {}", self.weight_decay)));
        }
        Ok(())
    }
}

/// The optimizer and its hyper-parameters (PyTorch's update rules exactly).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Optimizer {
    Sgd(SgdConfig),
    Adam(AdamConfig),
}

impl Optimizer {
    /// SGD (no momentum until [`Optimizer::momentum`]).
    pub fn sgd(lr: f32) -> Optimizer {
        Optimizer::Sgd(SgdConfig::new(lr))
    }
    /// Adam with PyTorch's defaults.
    pub fn adam(lr: f32) -> Optimizer {
        Optimizer::Adam(AdamConfig::adam(lr))
    }
    /// AdamW with PyTorch's defaults (weight decay 0.01).
    pub fn adamw(lr: f32) -> Optimizer {
        Optimizer::Adam(AdamConfig::adamw(lr))
    }
    /// Sets SGD's momentum (no effect on Adam).
    pub fn momentum(mut self, m: f32) -> Optimizer {
        if let Optimizer::Sgd(c) = &mut self {
            c.momentum = m;
        }
        self
    }
    /// Nesterov momentum for SGD.
    pub fn nesterov(mut self, on: bool) -> Optimizer {
        if let Optimizer::Sgd(c) = &mut self {
            c.nesterov = on;
        }
        self
    }
    /// Weight decay (L2 for SGD and Adam, decoupled for AdamW).
    pub fn weight_decay(mut self, wd: f32) -> Optimizer {
        match &mut self {
            Optimizer::Sgd(c) => c.weight_decay = wd,
            Optimizer::Adam(c) => c.weight_decay = wd,
        }
        self
    }
    /// The base learning rate.
    pub fn lr(&self) -> f32 {
        match self {
            Optimizer::Sgd(c) => c.lr,
            Optimizer::Adam(c) => c.lr,
        }
    }
    /// The same optimizer with another base learning rate.
    pub fn with_lr(mut self, lr: f32) -> Optimizer {
        match &mut self {
            Optimizer::Sgd(c) => c.lr = lr,
            Optimizer::Adam(c) => c.lr = lr,
        }
        self
    }
    /// State buffers it keeps per parameter (each as long as the parameters): SGD with momentum
    /// 1 (the momentum buffer), Adam 2 (m, v), plain SGD 0.
    pub fn state_len(&self) -> usize {
        match self {
            Optimizer::Sgd(c) => (c.momentum != 0.0) as usize,
            Optimizer::Adam(_) => 2,
        }
    }
    /// One step over `ranges` in one dispatch ([`sgd_step_ranges`] / [`adam_step_ranges`]).
    pub fn step_ranges(&self, gpu: &Gpu, ranges: &[ParamRange]) -> Result<OptimStep> {
        match self {
            Optimizer::Sgd(c) => sgd_step_ranges(gpu, ranges, c),
            Optimizer::Adam(c) => adam_step_ranges(gpu, ranges, c),
        }
    }
    /// The steps that update any number of `ranges` (PyTorch param groups), launched as `launch`
    /// says: [`RANGES_PER_DISPATCH`] ranges per dispatch, or one dispatch per range (each range
    /// at its own learning rate either way). The update is element-wise, so both give the same bits.
    pub fn steps(&self, gpu: &Gpu, ranges: &[ParamRange], launch: RangeLaunch) -> Result<Vec<OptimStep>> {
        if ranges.is_empty() {
            return Err(Error::invalid("an optimizer step needs at least one parameter range"));
        }
        let per = match launch {
            RangeLaunch::OneDispatch => RANGES_PER_DISPATCH,
            RangeLaunch::PerRange => 1,
        };
        ranges.chunks(per).map(|chunk| self.step_ranges(gpu, chunk)).collect()
    }
    /// The entry point it runs on one range (the name autotune choices are keyed by).
    fn kernel_name(&self) -> &'static str {
        match self {
            Optimizer::Sgd(c) if c.momentum != 0.0 => SGD_MOMENTUM.entry,
            Optimizer::Sgd(_) => SGD.entry,
            Optimizer::Adam(_) => ADAM.entry,
        }
    }
}

fn check_lr(lr: f32) -> Result<()> {
    if lr >= 0.0 && lr.is_finite() { Ok(()) } else { Err(Error::invalid(format!("learning rate must be finite and ≥ 0, got {lr}"))) }
}

/// An f32 hyper-parameter as the f64 a Python script would have written: through its shortest
/// round-trip decimal form.
pub(crate) fn widen(x: f32) -> f64 {
    x.to_string().parse::<f64>().unwrap_or(x as f64)
}

/// Uniform block of the SGD entry points (`SgdParams` in optim.wgsl).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct SgdParams {
    pub n: u32,
    pub step: u32,
    pub neg_lr: f32,
    pub weight_decay: f32,
    pub momentum: f32,
    pub one_minus_dampening: f32,
    pub nesterov: u32,
    pub n_b: u32,
    pub neg_lr_b: f32,
    pub _pad: [u32; 3],
}

impl SgdParams {
    /// `ranges`: (elements, learning rate) of range a and, if any, range b.
    fn new(cfg: &SgdConfig, ranges: &[(u32, f32)], step: u32) -> SgdParams {
        let (n, lr) = ranges[0];
        let (n_b, lr_b) = ranges.get(1).copied().unwrap_or((0, 0.0));
        SgdParams {
            n,
            step,
            neg_lr: (-widen(lr)) as f32,
            weight_decay: cfg.weight_decay,
            momentum: cfg.momentum,
            one_minus_dampening: (1.0 - widen(cfg.dampening)) as f32,
            nesterov: cfg.nesterov as u32,
            n_b,
            neg_lr_b: (-widen(lr_b)) as f32,
            _pad: [0; 3],
        }
    }
}

/// Uniform block of the Adam entry points (`AdamParams` in optim.wgsl).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct AdamParams {
    pub n: u32,
    pub step: u32,
    pub neg_step_size: f32,
    pub bc2_sqrt: f32,
    pub beta2: f32,
    pub one_minus_beta1: f32,
    pub one_minus_beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    pub decay_factor: f32,
    pub decoupled: u32,
    pub n_b: u32,
    pub neg_step_size_b: f32,
    pub decay_factor_b: f32,
    pub _pad: [u32; 2],
}

impl AdamParams {
    /// The f64 host half of PyTorch's `_single_tensor_adam` for step `t`; `ranges` as for
    /// [`SgdParams::new`].
    fn new(cfg: &AdamConfig, ranges: &[(u32, f32)], step: u32) -> AdamParams {
        let (b1, b2, wd) = (widen(cfg.beta1), widen(cfg.beta2), widen(cfg.weight_decay));
        let t = step as f64;
        let bc1 = 1.0 - b1.powf(t);
        let bc2 = 1.0 - b2.powf(t);
        // (−step_size, 1 − lr·wd) of one range
        let scalars = |lr: f32| {
            let lr = widen(lr);
            ((-(lr / bc1)) as f32, (1.0 - lr * wd) as f32)
        };
        let (n, lr) = ranges[0];
        let (n_b, lr_b) = ranges.get(1).copied().unwrap_or((0, 0.0));
        let (neg_step_size, decay_factor) = scalars(lr);
        let (neg_step_size_b, decay_factor_b) = scalars(lr_b);
        AdamParams {
            n,
            step,
            neg_step_size,
            bc2_sqrt: bc2.sqrt() as f32,
            beta2: cfg.beta2,
            one_minus_beta1: (1.0 - b1) as f32,
            one_minus_beta2: (1.0 - b2) as f32,
            eps: cfg.eps,
            weight_decay: cfg.weight_decay,
            decay_factor,
            decoupled: cfg.decoupled_weight_decay as u32,
            n_b,
            neg_step_size_b,
            decay_factor_b,
            _pad: [0; 2],
        }
    }
}

/// One optimizer step over one or two parameter ranges, one dispatch, built once and replayed
/// every training step. Built ready for step 1 at the config's learning rate; call
/// [`OptimStep::set`] before each later step (the step number drives Adam's bias correction and
/// SGD's first-step momentum).
#[derive(Debug)]
pub struct OptimStep {
    dispatch: Dispatch,
    rule: Optimizer,
    ranges: RangeSizes,
}

impl OptimStep {
    /// Rewrites the uniform for step `step` (t ≥ 1) at base learning rate `lr` (each range at
    /// `lr` times its multiplier), without rebuilding anything; takes effect at the next
    /// submission that records this step.
    pub fn set(&self, gpu: &Gpu, lr: f32, step: u32) -> Result<()> {
        let p = self.params_at(lr, step)?;
        self.dispatch.write_params(gpu, &p);
        Ok(())
    }

    /// Stages step `step` at base rate `lr` as the current step's value in `uniforms` (several
    /// steps per submission).
    pub(crate) fn stage(&self, uniforms: &mut StepUniforms, lr: f32, step: u32) -> Result<()> {
        let p = self.params_at(lr, step)?;
        uniforms.set(&self.dispatch, &p);
        Ok(())
    }

    fn params_at(&self, lr: f32, step: u32) -> Result<Vec<u8>> {
        check_lr(lr)?;
        if step == 0 {
            return Err(Error::invalid("optimizer steps are numbered from 1"));
        }
        // Each range's rate is rounded to f32 as a PyTorch param group's `lr` would be set.
        let ranges: Vec<(u32, f32)> = self.ranges.iter().map(|&(n, mult)| (n, lr * mult)).collect();
        for &(_, range_lr) in &ranges {
            check_lr(range_lr)?; // lr × a multiplier can overflow f32
        }
        Ok(match &self.rule {
            Optimizer::Sgd(c) => bytemuck::bytes_of(&SgdParams::new(c, &ranges, step)).to_vec(),
            Optimizer::Adam(c) => bytemuck::bytes_of(&AdamParams::new(c, &ranges, step)).to_vec(),
        })
    }

    /// The launch, to record into a training step's pass.
    pub fn dispatch(&self) -> &Dispatch {
        &self.dispatch
    }

    /// Runs the step at once, in its own submission.
    pub fn run(&self, gpu: &Gpu) -> Result<()> {
        gpu.run(self.dispatch.name(), &[&self.dispatch])
    }

    /// Number of parameters it updates, over all its ranges.
    pub fn len(&self) -> usize {
        self.ranges.iter().map(|&(n, _)| n as usize).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of parameter ranges it updates (1 to [`RANGES_PER_DISPATCH`]).
    pub fn ranges(&self) -> usize {
        self.ranges.len()
    }
}

/// One parameter range of an optimizer step: a PyTorch param group over a flat slice.
#[derive(Debug, Clone, Copy)]
pub struct ParamRange<'a> {
    pub params: &'a Tensor,
    pub grads: &'a Tensor,
    /// The optimizer's state for this range, each the length of `params`: `[momentum_buf]` for
    /// SGD with momentum, `[m, v]` for Adam (start at zero), `[]` for plain SGD.
    pub state: &'a [&'a Tensor],
    /// This range's learning rate relative to the step's base rate.
    pub lr_mult: f32,
}

impl<'a> ParamRange<'a> {
    /// A range at the base learning rate.
    pub fn new(params: &'a Tensor, grads: &'a Tensor, state: &'a [&'a Tensor]) -> ParamRange<'a> {
        ParamRange { params, grads, state, lr_mult: 1.0 }
    }
}

fn overlaps(a: &Tensor, b: &Tensor) -> bool {
    a.same_buffer(b) && a.offset() < b.offset() + b.bytes() && b.offset() < a.offset() + a.bytes()
}

/// Per range: (elements, learning-rate multiplier).
type RangeSizes = Vec<(u32, f32)>;

/// Checks `ranges` for a step that keeps `state_len` state buffers per range, and returns the
/// buffers to bind (per range: grads, params, state…) and the per-range (elements, lr multiplier).
fn check_ranges<'a>(op: &str, ranges: &[ParamRange<'a>], state_len: usize) -> Result<(Vec<&'a Tensor>, RangeSizes)> {
    if ranges.is_empty() || ranges.len() > RANGES_PER_DISPATCH {
        return Err(Error::invalid(format!(
            "{op}: one dispatch updates 1 to {RANGES_PER_DISPATCH} parameter ranges, got {}",
            ranges.len()
        )));
    }
    let mut bound = Vec::new();
    let mut sizes = Vec::new();
    for (k, r) in ranges.iter().enumerate() {
        let n = check_params(op, r.params)?;
        check_operand(op, r.params, "grads", r.grads)?;
        ensure(r.state.len() == state_len, op, || format!("range {k} has {} state buffers, the rule keeps {state_len}", r.state.len()))?;
        for s in r.state {
            check_operand(op, r.params, "state", s)?;
        }
        if !(r.lr_mult >= 0.0 && r.lr_mult.is_finite()) {
            return Err(Error::invalid(format!("{op}: range {k}'s learning-rate multiplier must be finite and ≥ 0, got {}", r.lr_mult)));
        }
        bound.push(r.grads);
        bound.push(r.params);
        bound.extend(r.state.iter().copied());
        sizes.push((n, r.lr_mult));
    }
    // A gradient read while a parameter or a state value is written, or two written ranges that
    // overlap, would race within the dispatch.
    let grads: Vec<&Tensor> = ranges.iter().map(|r| r.grads).collect();
    let written: Vec<&Tensor> = ranges.iter().flat_map(|r| std::iter::once(r.params).chain(r.state.iter().copied())).collect();
    ensure(grads.iter().all(|g| written.iter().all(|w| !g.same_buffer(w))), op, || {
        "grads must not share a buffer with params or the optimizer state".into()
    })?;
    for (i, a) in written.iter().enumerate() {
        ensure(written[i + 1..].iter().all(|b| !overlaps(a, b)), op, || "params and optimizer state must not overlap".into())?;
    }
    let total: u64 = sizes.iter().map(|&(n, _)| n as u64).sum();
    ensure(total <= u32::MAX as u64, op, || format!("{total} parameters exceed u32"))?;
    Ok((bound, sizes))
}

fn check_operand(op: &str, params: &Tensor, name: &str, t: &Tensor) -> Result<()> {
    ensure(t.dtype() == DType::F32, op, || format!("{name} must be f32, is {:?}", t.dtype()))?;
    ensure(t.len() == params.len(), op, || format!("params {:?} and {name} {:?} differ in length", params.shape(), t.shape()))
}

fn check_params(op: &str, params: &Tensor) -> Result<u32> {
    ensure(params.dtype() == DType::F32, op, || format!("params must be f32, are {:?}", params.dtype()))?;
    u32::try_from(params.len()).map_err(|_| Error::invalid(format!("{op}: {} parameters exceed u32", params.len())))
}

/// An SGD step: `params -= lr · direction(grads)` (see [`SgdConfig`]). `momentum_buf` (same
/// length as `params`) is required when `cfg.momentum != 0` and ignored otherwise. `grads` must
/// not share a buffer with `params`.
pub fn sgd_step(gpu: &Gpu, params: &Tensor, grads: &Tensor, momentum_buf: Option<&Tensor>, cfg: &SgdConfig) -> Result<OptimStep> {
    let buf = if cfg.momentum != 0.0 {
        Some(momentum_buf.ok_or_else(|| Error::invalid("SGD with momentum needs a momentum buffer"))?)
    } else {
        None
    };
    let state: Vec<&Tensor> = buf.into_iter().collect();
    sgd_step_ranges(gpu, &[ParamRange::new(params, grads, &state)], cfg)
}

/// An SGD step over one or two parameter ranges in one dispatch, each at its own learning rate
/// (`lr · lr_mult`); each range's `state` is `[momentum_buf]` when `cfg.momentum != 0`, else `[]`.
pub fn sgd_step_ranges(gpu: &Gpu, ranges: &[ParamRange], cfg: &SgdConfig) -> Result<OptimStep> {
    cfg.validate()?;
    let momentum = cfg.momentum != 0.0;
    if momentum && ranges.iter().any(|r| r.state.is_empty()) {
        return Err(Error::invalid("SGD with momentum needs a momentum buffer"));
    }
    let (bound, sizes) = check_ranges("sgd", ranges, momentum as usize)?;
    let kernel = match (momentum, ranges.len()) {
        (false, 1) => SGD,
        (true, 1) => SGD_MOMENTUM,
        (false, _) => SGD_2,
        (true, _) => SGD_MOMENTUM_2,
    };
    let first: Vec<(u32, f32)> = sizes.iter().map(|&(n, m)| (n, cfg.lr * m)).collect();
    let p = SgdParams::new(cfg, &first, 1);
    let total: usize = sizes.iter().map(|&(n, _)| n as usize).sum();
    let dispatch = Dispatch::new(gpu, kernel, &[], bytemuck::bytes_of(&p), &bound, groups_1d(total, 256))?;
    Ok(OptimStep { dispatch, rule: Optimizer::Sgd(*cfg), ranges: sizes })
}

/// An Adam or AdamW step (see [`AdamConfig`]) updating `params` and the moments `m`, `v` (same
/// length, start at zero). `grads` must not share a buffer with the others.
pub fn adam_step(gpu: &Gpu, params: &Tensor, grads: &Tensor, m: &Tensor, v: &Tensor, cfg: &AdamConfig) -> Result<OptimStep> {
    adam_step_ranges(gpu, &[ParamRange::new(params, grads, &[m, v])], cfg)
}

/// An Adam or AdamW step over one or two parameter ranges in one dispatch, each at its own
/// learning rate (`lr · lr_mult`); each range's `state` is `[m, v]`.
pub fn adam_step_ranges(gpu: &Gpu, ranges: &[ParamRange], cfg: &AdamConfig) -> Result<OptimStep> {
    cfg.validate()?;
    let (bound, sizes) = check_ranges("adam", ranges, 2)?;
    let kernel = if ranges.len() == 1 { ADAM } else { ADAM_2 };
    let first: Vec<(u32, f32)> = sizes.iter().map(|&(n, m)| (n, cfg.lr * m)).collect();
    let p = AdamParams::new(cfg, &first, 1);
    let total: usize = sizes.iter().map(|&(n, _)| n as usize).sum();
    let dispatch = Dispatch::new(gpu, kernel, &[], bytemuck::bytes_of(&p), &bound, groups_1d(total, 256))?;
    Ok(OptimStep { dispatch, rule: Optimizer::Adam(*cfg), ranges: sizes })
}

/// How a step over several parameter ranges is launched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeLaunch {
    /// One dispatch over every [`RANGES_PER_DISPATCH`] ranges (the `_2` entry points).
    OneDispatch,
    /// One dispatch per range.
    PerRange,
}

impl RangeLaunch {
    pub fn name(self) -> &'static str {
        match self {
            RangeLaunch::OneDispatch => "one",
            RangeLaunch::PerRange => "per-range",
        }
    }
    pub fn from_name(name: &str) -> Option<RangeLaunch> {
        [RangeLaunch::OneDispatch, RangeLaunch::PerRange].into_iter().find(|l| l.name() == name)
    }
}

/// Whether `opt`'s step over ranges of `sizes` parameters is faster as one dispatch or one per
/// range on this device: measured on first use per optimizer kernel and size class (powers of
/// two) and remembered in the autotune cache like the matmul's choices. One dispatch saves a
/// launch, and on a GPU the branch between the ranges splits at most one warp; on lavapipe it was
/// slower than the two dispatches (BENCHMARKS.md, "Both sides of a branch run"), as if every SIMD
/// lane ran both ranges' code under a mask. `HEADSWAP_OPTIM_LAUNCH=one|per-range` forces one; `HEADSWAP_AUTOTUNE=0` pins one
/// dispatch.
pub fn choose_range_launch(gpu: &Gpu, opt: &Optimizer, sizes: &[usize]) -> Result<RangeLaunch> {
    if sizes.len() <= 1 {
        return Ok(RangeLaunch::OneDispatch);
    }
    // the one-dispatch form binds the buffers of RANGES_PER_DISPATCH ranges
    let bound = sizes.len().min(RANGES_PER_DISPATCH) * (2 + opt.state_len());
    if bound > gpu.limits().max_storage_buffers_per_shader_stage as usize {
        return Ok(RangeLaunch::PerRange);
    }
    let usable = |_: RangeLaunch| true; // both bind few enough buffers, checked above
    let classes: Vec<String> = sizes.iter().map(|n| n.next_power_of_two().to_string()).collect();
    let ask = super::tune::Ask {
        class: format!("optim_ranges {} n{}", opt.kernel_name(), classes.join(",")),
        static_choice: RangeLaunch::OneDispatch,
        fallback: RangeLaunch::OneDispatch,
        usable: &usable,
    };
    Ok(super::tune::choose(gpu, ask, || measure_range_launch(gpu, opt, sizes))?.0)
}

impl super::tune::Tunable for RangeLaunch {
    const ENV: &'static str = "HEADSWAP_OPTIM_LAUNCH";
    const WHAT: &'static str = "launch form";
    const ALL: &'static [RangeLaunch] = &[RangeLaunch::OneDispatch, RangeLaunch::PerRange];
    fn name(self) -> &'static str {
        RangeLaunch::name(self)
    }
}

/// Elements per range the launch forms are timed on, at most: enough to show the per-element
/// cost, without doubling a large model's optimizer memory while measuring.
const MEASURE_MAX_ELEMENTS: usize = 1 << 20;

/// Times both launch forms on scratch buffers of the given sizes (capped at
/// [`MEASURE_MAX_ELEMENTS`]); returns the faster.
fn measure_range_launch(gpu: &Gpu, opt: &Optimizer, sizes: &[usize]) -> Result<RangeLaunch> {
    let started = std::time::Instant::now();
    let bufs: Vec<Vec<Tensor>> = sizes
        .iter()
        .map(|&n| (0..2 + opt.state_len()).map(|_| super::tune::scratch(gpu, &[n.min(MEASURE_MAX_ELEMENTS)])).collect::<Result<_>>())
        .collect::<Result<_>>()?;
    let states: Vec<Vec<&Tensor>> = bufs.iter().map(|b| b[2..].iter().collect()).collect();
    let ranges: Vec<ParamRange> = bufs.iter().zip(&states).map(|(b, s)| ParamRange::new(&b[0], &b[1], s)).collect();
    let forms = [RangeLaunch::OneDispatch, RangeLaunch::PerRange];
    let steps: Vec<Vec<OptimStep>> = forms.iter().map(|&l| opt.steps(gpu, &ranges, l)).collect::<Result<_>>()?;
    let lists: Vec<Vec<&Dispatch>> = steps.iter().map(|st| st.iter().map(OptimStep::dispatch).collect()).collect();
    // several steps per submission, as training records them
    let secs = super::tune::time_candidates(gpu, "optim_autotune", &lists, 8)?;
    Ok(super::tune::fastest(&format!("optimizer ranges {sizes:?}"), &forms, &secs, started).unwrap_or(RangeLaunch::OneDispatch))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::wgsl_struct_bytes;
    #[test]
    fn params_match_wgsl_size() {
        let src = crate::kernels::source::OPTIM_WGSL;
        assert_eq!(std::mem::size_of::<SgdParams>(), 48);
        assert_eq!(std::mem::size_of::<AdamParams>(), 64);
        assert_eq!(wgsl_struct_bytes(src, "SgdParams"), std::mem::size_of::<SgdParams>());
        assert_eq!(wgsl_struct_bytes(src, "AdamParams"), std::mem::size_of::<AdamParams>());
    }
    #[test]
    fn hyper_parameters_widen_through_their_decimal_form() {
        assert_eq!(widen(0.9), 0.9);
        assert_eq!(widen(0.999), 0.999);
        assert_eq!(widen(1e-8), 1e-8);
        let p = AdamParams::new(&AdamConfig::adam(1e-3), &[(1, 1e-3)], 1);
        assert_eq!(p.one_minus_beta1, (1.0 - 0.9_f64) as f32);
        assert_eq!(p.neg_step_size, (-(1e-3 / (1.0 - 0.9_f64))) as f32);
    }
    #[test]
    fn pytorch_defaults_and_checks() {
        let w = AdamConfig::adamw(1e-3);
        assert!(w.decoupled_weight_decay && w.weight_decay == 0.01 && w.beta1 == 0.9 && w.beta2 == 0.999 && w.eps == 1e-8);
        assert!(!AdamConfig::adam(1e-3).decoupled_weight_decay && AdamConfig::adam(1e-3).weight_decay == 0.0);
        assert!(SgdConfig { nesterov: true, ..SgdConfig::new(0.1) }.validate().is_err());
        assert!(SgdConfig { nesterov: true, momentum: 0.9, dampening: 0.1, ..SgdConfig::new(0.1) }.validate().is_err());
        assert!(SgdConfig::new(-1.0).validate().is_err());
        assert!(AdamConfig { beta1: 1.0, ..AdamConfig::adam(1e-3) }.validate().is_err());
    }
}
