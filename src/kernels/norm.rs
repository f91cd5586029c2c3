//! BatchNorm (PyTorch's `nn.BatchNorm2d`, and `BatchNorm1d` with `H = W = 1`), forward and
//! backward, in inference mode (running statistics) and training mode (batch statistics). Kernels
//! in `shaders/norm.wgsl`, float64 references in [`crate::reference::norm`].
//!
//! x is NCHW: `[N, C·H·W]` rows or `[N, C, H, W]`, any shape with `N·C·H·W` elements. Per-channel
//! tensors (γ, β, running mean and variance, their gradients) have `C` elements; `saved` `[2, C]`
//! holds a training step's batch mean and inverse std (PyTorch's `save_mean`, `save_invstd`).
//!
//! * inference: `y = act(x·s + t)`, `s = γ/√(σ²_run + ε)`, `t = β − μ_run·s`: one launch
//!   ([`eval_forward_dispatch`]). A frozen BN right after a convolution is better folded into it
//!   ([`crate::nn::batchnorm`]); this is the op for the others.
//! * training: [`train_stats_dispatch`] (batch mean, biased variance → `saved`; and the running
//!   statistics updated with PyTorch's rule `running = (1 − momentum)·running + momentum·batch`,
//!   the variance unbiased, `·M/(M − 1)`, `M = N·H·W`), then [`train_forward_dispatch`].
//! * backward, from `dy`, the gradient of the pre-activation output (run
//!   [`crate::kernels::act_backward`] first when an activation was fused): dγ, dβ and dx for each
//!   mode ([`eval_backward_dispatches`], [`train_backward_dispatches`]).
//!
//! `num_batches_tracked` is host-side: PyTorch adds 1 per training-mode forward (a step that runs
//! [`train_stats_dispatch`] with a momentum), and only reads it when `momentum` is `None` (the
//! cumulative average, momentum `1/num_batches_tracked`, which would need a per-step uniform and
//! is not supported here). The owner of the running statistics keeps it as a `u64` beside them,
//! adds the number of training steps run, and writes it back to the checkpoint as the i64 tensor
//! `<module>.num_batches_tracked`.
//!
//! The per-channel reductions run one workgroup of 256 per channel in a fixed order (no atomics),
//! so reruns are bit-identical; each invocation walks about `⌈M/256⌉` values per pass, checked
//! against the llvmpipe/lavapipe loop budget (`kernels::reduce::ensure_loop_budget`): `M` up to
//! about 8 million (e.g. 256 images of 112×112 is 3.2 million).
//!
//! ```
//! use headswap::{Gpu, Tensor, kernels::{Activation, norm::{self, BatchNorm, BatchNormShape}}};
//! let gpu = Gpu::new()?;
//! let shape = BatchNormShape { n: 2, c: 1, h: 1, w: 2 };
//! let t = |v: &[f32]| Tensor::from_slice(&gpu, &[v.len()], v);
//! let (gamma, beta, mean, var) = (t(&[2.0])?, t(&[1.0])?, t(&[0.5])?, t(&[3.0])?);
//! let bn = BatchNorm { shape, eps: 1.0, gamma: &gamma, beta: &beta, running_mean: &mean, running_var: &var };
//! let x = t(&[0.5, 1.5, 2.5, -0.5])?;
//! let mut y = Tensor::zeros(&gpu, &[4])?;
//! norm::eval_forward(&gpu, &bn, Activation::Identity, &x, &mut y)?; // s = 2/√4 = 1, t = 1 − 0.5
//! assert_eq!(y.download(&gpu)?, vec![1.0, 2.0, 3.0, 0.0]);
//! # Ok::<(), headswap::Error>(())
//! ```

use super::reduce::{LOOP_BUDGET, ensure_loop_budget};
use super::{Activation, Kernel, R, RW, ensure, source};
use crate::error::{Error, Result};
use crate::gpu::pipelines::groups_1d;
use crate::gpu::tensor::DType;
use crate::gpu::{Dispatch, Gpu, Tensor};

pub(crate) const BN_EVAL_FORWARD: Kernel = Kernel { source: &source::NORM, entry: "bn_eval_forward", bindings: &[R, R, R, R, R, RW] };
pub(crate) const BN_TRAIN_STATS: Kernel = Kernel { source: &source::NORM, entry: "bn_train_stats", bindings: &[R, RW, RW, RW] };
pub(crate) const BN_TRAIN_FORWARD: Kernel = Kernel { source: &source::NORM, entry: "bn_train_forward", bindings: &[R, R, R, R, RW] };
pub(crate) const BN_PARAM_GRADS_TRAIN: Kernel =
    Kernel { source: &source::NORM, entry: "bn_param_grads_train", bindings: &[R, R, R, RW, RW] };
pub(crate) const BN_PARAM_GRADS_EVAL: Kernel =
    Kernel { source: &source::NORM, entry: "bn_param_grads_eval", bindings: &[R, R, R, R, RW, RW] };
pub(crate) const BN_EVAL_BACKWARD_INPUT: Kernel =
    Kernel { source: &source::NORM, entry: "bn_eval_backward_input", bindings: &[R, R, R, RW] };
pub(crate) const BN_TRAIN_BACKWARD_INPUT: Kernel =
    Kernel { source: &source::NORM, entry: "bn_train_backward_input", bindings: &[R, R, R, R, R, R, RW] };
pub(crate) const BN_FOLD_WEIGHT: Kernel = Kernel { source: &source::NORM, entry: "bn_fold_weight", bindings: &[R, R, R, RW] };
pub(crate) const BN_FOLD_BIAS: Kernel = Kernel { source: &source::NORM, entry: "bn_fold_bias", bindings: &[R, R, R, R, R, RW] };

/// Invocations per workgroup of the reductions (`WG` in norm.wgsl).
const WG: u32 = 256;
/// Invocations per workgroup of the element-wise kernels (`EWG`).
const EWG: usize = 64;
/// Planes at least this long take the element-wise kernels' per-plane grid (`PLANES`), and at
/// least [`WG`] long the reductions' per-example walk (`NESTED`): no integer division per element,
/// which lavapipe cannot vectorise (measured on a [32, 64, 56, 56] activation: the inference
/// forward with a division per element took about 3× a copy).
const PLANE_MIN: usize = 32;

/// The element-wise grid and its `PLANES` override: per plane where planes are long enough and
/// the grid fits (`⌈HW/64⌉` and the planes folded into y/z, each ≤ 65,535), else flat.
fn elementwise_grid(s: BatchNormShape) -> ([u32; 3], bool) {
    let hw = s.h * s.w;
    let planes = s.n * s.c;
    let (x, y, z) = (hw.div_ceil(EWG), planes.min(65_535), planes.div_ceil(65_535));
    if hw >= PLANE_MIN && x <= 65_535 && z <= 65_535 {
        return ([x as u32, y as u32, z as u32], true);
    }
    (groups_1d(s.len(), EWG as u32), false)
}

fn elementwise(gpu: &Gpu, kernel: Kernel, act: Activation, p: &NormParams, s: BatchNormShape, bufs: &[&Tensor]) -> Result<Dispatch> {
    let (groups, planes) = elementwise_grid(s);
    let consts = [("ACT", act.code() as f64), ("PLANES", planes as u32 as f64)];
    Dispatch::new(gpu, kernel, &consts, bytemuck::bytes_of(p), bufs, groups)
}

/// PyTorch's default ε.
pub const DEFAULT_EPS: f32 = 1e-5;
/// PyTorch's default momentum of the running statistics.
pub const DEFAULT_MOMENTUM: f32 = 0.1;

/// The activation's layout: `n` examples of `c` channels of `h × w` values, NCHW.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchNormShape {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

impl BatchNormShape {
    /// `N·C·H·W`.
    pub fn len(&self) -> usize {
        self.n * self.c * self.h * self.w
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Values per channel, `M = N·H·W`.
    pub fn per_channel(&self) -> usize {
        self.n * self.h * self.w
    }
}

/// One BatchNorm layer: its shape, ε and per-channel tensors (`C` f32 each). In training mode the
/// running statistics are updated in place by [`train_stats_dispatch`].
#[derive(Clone, Copy)]
pub struct BatchNorm<'a> {
    pub shape: BatchNormShape,
    pub eps: f32,
    pub gamma: &'a Tensor,
    pub beta: &'a Tensor,
    pub running_mean: &'a Tensor,
    pub running_var: &'a Tensor,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct NormParams {
    pub n: u32,
    pub c: u32,
    pub hw: u32,
    pub total: u32,
    pub eps: f32,
    pub momentum: f32,
    pub alpha: f32,
    pub _pad: u32,
}

fn f32_tensor(t: &Tensor, len: usize, op: &str, name: &str) -> Result<()> {
    ensure(t.dtype() == DType::F32, op, || format!("{name} must be f32, it is {:?}", t.dtype()))?;
    ensure(t.len() == len, op, || format!("{name} has {} elements ({:?}), it must have {len}", t.len(), t.shape()))
}

/// Checks the layer (shape, ε, per-channel tensors) and `x`-sized tensors; returns the params.
fn check(bn: &BatchNorm, op: &str, act: Activation, momentum: f32, full: &[(&Tensor, &str)]) -> Result<NormParams> {
    let s = bn.shape;
    ensure(s.c > 0, op, || "C must be at least 1".into())?;
    let total = s.n.checked_mul(s.c).and_then(|v| v.checked_mul(s.h)).and_then(|v| v.checked_mul(s.w));
    let total = total.filter(|&t| t <= u32::MAX as usize).ok_or_else(|| Error::shape(format!("{op}: {s:?} has 2^32 elements or more")))?;
    if !(bn.eps.is_finite() && bn.eps >= 0.0) {
        return Err(Error::invalid(format!("{op}: eps must be finite and ≥ 0, it is {}", bn.eps)));
    }
    for (t, name) in [(bn.gamma, "gamma"), (bn.beta, "beta"), (bn.running_mean, "running_mean"), (bn.running_var, "running_var")] {
        f32_tensor(t, s.c, op, name)?;
    }
    for &(t, name) in full {
        f32_tensor(t, total, op, name)?;
    }
    Ok(NormParams {
        n: s.n as u32,
        c: s.c as u32,
        hw: (s.h * s.w) as u32,
        total: total as u32,
        eps: bn.eps,
        momentum,
        alpha: act.alpha(),
        _pad: 0,
    })
}

/// Whether a reduction walks example by example (`NESTED`): planes of at least [`WG`] values,
/// unless that walk (`N·(⌈HW/256⌉ + 1)` iterations, more than the flat walk's `⌈M/256⌉`) would
/// take over a quarter of the loop budget per pass: many short planes walk flat.
fn nested(s: BatchNormShape) -> bool {
    let hw = s.h * s.w;
    hw >= WG as usize && s.n * (hw.div_ceil(WG as usize) + 1) <= LOOP_BUDGET / 4
}

/// A per-channel reduction walks `⌈M/256⌉` values per pass (nested: `N·(⌈HW/256⌉ + 1)` loop
/// iterations), `passes` passes, each then a tree of 8.
fn check_reduction(op: &str, s: BatchNormShape, passes: usize) -> Result<()> {
    let per_pass = if nested(s) { s.n * ((s.h * s.w).div_ceil(WG as usize) + 1) } else { s.per_channel().div_ceil(WG as usize) };
    let iterations = passes * (per_pass + 8) + 8;
    ensure_loop_budget(op, iterations, || format!("{} values per channel ({s:?})", s.per_channel()))
}

fn reduction(
    gpu: &Gpu,
    kernel: Kernel,
    consts: &[(&'static str, f64)],
    p: &NormParams,
    s: BatchNormShape,
    bufs: &[&Tensor],
) -> Result<Dispatch> {
    let mut all = vec![("NESTED", nested(s) as u32 as f64)];
    all.extend_from_slice(consts);
    Dispatch::new(gpu, kernel, &all, bytemuck::bytes_of(p), bufs, groups_1d(s.c, 1))
}

fn apart(op: &str, out: &Tensor, ins: &[(&Tensor, &str)], out_name: &str) -> Result<()> {
    for &(t, name) in ins {
        ensure(!out.same_buffer(t), op, || format!("{out_name} must not share a buffer with {name}"))?;
    }
    Ok(())
}

/// Builds the inference-mode forward `y = act(x·s + t)` with the running statistics.
pub fn eval_forward_dispatch(gpu: &Gpu, bn: &BatchNorm, act: Activation, x: &Tensor, y: &Tensor) -> Result<Dispatch> {
    let op = "bn_eval_forward";
    let p = check(bn, op, act, 0.0, &[(x, "x"), (y, "y")])?;
    apart(
        op,
        y,
        &[(x, "x"), (bn.gamma, "gamma"), (bn.beta, "beta"), (bn.running_mean, "running_mean"), (bn.running_var, "running_var")],
        "y",
    )?;
    let bufs = [x, bn.gamma, bn.beta, bn.running_mean, bn.running_var, y];
    elementwise(gpu, BN_EVAL_FORWARD, act, &p, bn.shape, &bufs)
}

/// The inference-mode forward, run at once.
pub fn eval_forward(gpu: &Gpu, bn: &BatchNorm, act: Activation, x: &Tensor, y: &mut Tensor) -> Result<()> {
    gpu.run("bn_eval_forward", &[&eval_forward_dispatch(gpu, bn, act, x, y)?])
}

/// Builds the training-mode statistics: `saved` `[2, C]` gets the batch mean and inverse std
/// `1/√(σ² + ε)` (σ² biased); with `momentum` the running statistics are updated in place
/// (running variance with the unbiased σ²·M/(M − 1)), with `None` they are left alone. Training
/// needs `M = N·H·W ≥ 2` (PyTorch: "Expected more than 1 value per channel when training").
pub fn train_stats_dispatch(gpu: &Gpu, bn: &BatchNorm, momentum: Option<f32>, x: &Tensor, saved: &Tensor) -> Result<Dispatch> {
    let op = "bn_train_stats";
    let p = check(bn, op, Activation::Identity, momentum.unwrap_or(0.0), &[(x, "x")])?;
    f32_tensor(saved, 2 * bn.shape.c, op, "saved")?;
    if bn.shape.per_channel() < 2 {
        return Err(Error::invalid(format!(
            "{op}: training needs more than one value per channel, {:?} has {}",
            bn.shape,
            bn.shape.per_channel()
        )));
    }
    if let Some(m) = momentum
        && !(m.is_finite() && (0.0..=1.0).contains(&m))
    {
        return Err(Error::invalid(format!("{op}: momentum must be in [0, 1], it is {m}")));
    }
    check_reduction(op, bn.shape, 2)?;
    apart(op, saved, &[(x, "x")], "saved")?;
    apart(op, bn.running_mean, &[(x, "x")], "running_mean")?;
    apart(op, bn.running_var, &[(x, "x")], "running_var")?;
    let consts = [("UPDATE_RUNNING", momentum.is_some() as u32 as f64)];
    let bufs = [x, saved, bn.running_mean, bn.running_var];
    reduction(gpu, BN_TRAIN_STATS, &consts, &p, bn.shape, &bufs)
}

/// Builds the training-mode forward `y = act(x·s + t)`, `s = γ·invstd`, `t = β − mean·s`, from
/// the `saved` statistics of [`train_stats_dispatch`].
pub fn train_forward_dispatch(gpu: &Gpu, bn: &BatchNorm, act: Activation, x: &Tensor, saved: &Tensor, y: &Tensor) -> Result<Dispatch> {
    let op = "bn_train_forward";
    let p = check(bn, op, act, 0.0, &[(x, "x"), (y, "y")])?;
    f32_tensor(saved, 2 * bn.shape.c, op, "saved")?;
    apart(op, y, &[(x, "x"), (bn.gamma, "gamma"), (bn.beta, "beta"), (saved, "saved")], "y")?;
    let bufs = [x, bn.gamma, bn.beta, saved, y];
    elementwise(gpu, BN_TRAIN_FORWARD, act, &p, bn.shape, &bufs)
}

/// The training-mode forward (statistics, running update with `momentum`, output), run at once.
pub fn train_forward(
    gpu: &Gpu,
    bn: &BatchNorm,
    momentum: Option<f32>,
    act: Activation,
    x: &Tensor,
    saved: &mut Tensor,
    y: &mut Tensor,
) -> Result<()> {
    let stats = train_stats_dispatch(gpu, bn, momentum, x, saved)?;
    let forward = train_forward_dispatch(gpu, bn, act, x, saved, y)?;
    gpu.run("bn_train_forward", &[&stats, &forward])
}

/// Where the gradients of a backward go. `dx` is skipped when `None` (nothing below trains);
/// `dgamma`, `dbeta` (`C` each) when `None` in inference mode (γ, β frozen). The training-mode
/// dx needs this batch's dγ and dβ, so there they are required: scratch tensors when γ and β
/// do not train.
pub struct BatchNormGrads<'a> {
    pub dx: Option<&'a Tensor>,
    pub dgamma: Option<&'a Tensor>,
    pub dbeta: Option<&'a Tensor>,
}

/// Whether dγ and dβ are wanted (both or neither).
fn wants_param_grads(grads: &BatchNormGrads, op: &str) -> Result<bool> {
    match (grads.dgamma.is_some(), grads.dbeta.is_some()) {
        (true, true) => Ok(true),
        (false, false) => Ok(false),
        _ => Err(Error::invalid(format!("{op}: dgamma and dbeta come together (γ and β train together)"))),
    }
}

/// Builds the inference-mode backward from `dy` (pre-activation): `dx = dy·s`, and with
/// `dgamma`/`dbeta`: `dβ = Σ dy`, `dγ = Σ dy·(x − μ_run)/√(σ²_run + ε)` (per channel over N·H·W).
pub fn eval_backward_dispatches(gpu: &Gpu, bn: &BatchNorm, dy: &Tensor, x: &Tensor, grads: &BatchNormGrads) -> Result<Vec<Dispatch>> {
    let mut out = Vec::new();
    if wants_param_grads(grads, "bn_eval_backward")? {
        let op = "bn_param_grads_eval";
        let (dgamma, dbeta) = (grads.dgamma.unwrap_or(dy), grads.dbeta.unwrap_or(dy));
        let p = check(bn, op, Activation::Identity, 0.0, &[(dy, "dy"), (x, "x")])?;
        f32_tensor(dgamma, bn.shape.c, op, "dgamma")?;
        f32_tensor(dbeta, bn.shape.c, op, "dbeta")?;
        check_reduction(op, bn.shape, 1)?;
        let ins = [(dy, "dy"), (x, "x"), (bn.running_mean, "running_mean"), (bn.running_var, "running_var")];
        apart(op, dgamma, &ins, "dgamma")?;
        apart(op, dbeta, &ins, "dbeta")?;
        let bufs = [dy, x, bn.running_mean, bn.running_var, dgamma, dbeta];
        out.push(reduction(gpu, BN_PARAM_GRADS_EVAL, &[], &p, bn.shape, &bufs)?);
    }
    if let Some(dx) = grads.dx {
        let op = "bn_eval_backward_input";
        let p = check(bn, op, Activation::Identity, 0.0, &[(dy, "dy"), (dx, "dx")])?;
        apart(op, dx, &[(dy, "dy"), (bn.gamma, "gamma"), (bn.running_var, "running_var")], "dx")?;
        let bufs = [dy, bn.gamma, bn.running_var, dx];
        out.push(elementwise(gpu, BN_EVAL_BACKWARD_INPUT, Activation::Identity, &p, bn.shape, &bufs)?);
    }
    Ok(out)
}

/// The inference-mode backward, run at once.
pub fn eval_backward(gpu: &Gpu, bn: &BatchNorm, dy: &Tensor, x: &Tensor, grads: &BatchNormGrads) -> Result<()> {
    let d = eval_backward_dispatches(gpu, bn, dy, x, grads)?;
    gpu.run("bn_eval_backward", &d.iter().collect::<Vec<_>>())
}

/// Builds the training-mode backward from `dy` (pre-activation), `x` and the step's `saved`
/// statistics (PyTorch's formulas): `dβ = Σ dy`, `dγ = invstd·Σ dy·(x − mean)`, and
/// `dx = γ·invstd·(dy − dβ/M − x̂·dγ/M)` with `x̂ = (x − mean)·invstd`. `dgamma` and `dbeta`
/// are required (see [`BatchNormGrads`]).
pub fn train_backward_dispatches(
    gpu: &Gpu,
    bn: &BatchNorm,
    dy: &Tensor,
    x: &Tensor,
    saved: &Tensor,
    grads: &BatchNormGrads,
) -> Result<Vec<Dispatch>> {
    let (Some(dgamma), Some(dbeta)) = (grads.dgamma, grads.dbeta) else {
        return Err(Error::invalid(
            "bn_train_backward: dgamma and dbeta are required (the input gradient needs them; pass scratch tensors when γ and β are frozen)",
        ));
    };
    let op = "bn_param_grads_train";
    let p = check(bn, op, Activation::Identity, 0.0, &[(dy, "dy"), (x, "x")])?;
    f32_tensor(saved, 2 * bn.shape.c, op, "saved")?;
    f32_tensor(dgamma, bn.shape.c, op, "dgamma")?;
    f32_tensor(dbeta, bn.shape.c, op, "dbeta")?;
    check_reduction(op, bn.shape, 1)?;
    let ins = [(dy, "dy"), (x, "x"), (saved, "saved")];
    apart(op, dgamma, &ins, "dgamma")?;
    apart(op, dbeta, &ins, "dbeta")?;
    let bufs = [dy, x, saved, dgamma, dbeta];
    let mut out = vec![reduction(gpu, BN_PARAM_GRADS_TRAIN, &[], &p, bn.shape, &bufs)?];
    if let Some(dx) = grads.dx {
        let op = "bn_train_backward_input";
        f32_tensor(dx, p.total as usize, op, "dx")?;
        let ins = [(dy, "dy"), (x, "x"), (saved, "saved"), (bn.gamma, "gamma"), (dgamma, "dgamma"), (dbeta, "dbeta")];
        apart(op, dx, &ins, "dx")?;
        let bufs = [dy, x, saved, bn.gamma, dgamma, dbeta, dx];
        out.push(elementwise(gpu, BN_TRAIN_BACKWARD_INPUT, Activation::Identity, &p, bn.shape, &bufs)?);
    }
    Ok(out)
}

/// The training-mode backward, run at once.
pub fn train_backward(gpu: &Gpu, bn: &BatchNorm, dy: &Tensor, x: &Tensor, saved: &Tensor, grads: &BatchNormGrads) -> Result<()> {
    let d = train_backward_dispatches(gpu, bn, dy, x, saved, grads)?;
    gpu.run("bn_train_backward", &d.iter().collect::<Vec<_>>())
}

/// Builds the fold of an inference-mode BN into the convolution before it: `folded_weight =
/// W·s` (any `[O, …]` layout, `O` the BN's channels) and `folded_bias = β + (b − μ)·s`, `b` the
/// conv's `bias` or 0 (see [`crate::nn::batchnorm::fold_into_conv`], its host twin): two
/// launches, after which the convolution computes conv → BN in one. `bn.shape` is used for its
/// channels only.
pub fn fold_conv_dispatches(
    gpu: &Gpu,
    bn: &BatchNorm,
    weight: &Tensor,
    bias: Option<&Tensor>,
    folded_weight: &Tensor,
    folded_bias: &Tensor,
) -> Result<Vec<Dispatch>> {
    let op = "bn_fold_conv";
    let o = bn.shape.c;
    ensure(o > 0 && weight.len().is_multiple_of(o) && !weight.is_empty(), op, || {
        format!("{} weights do not split into {o} output channels", weight.len())
    })?;
    let per = weight.len() / o;
    let weights = BatchNorm { shape: BatchNormShape { n: 1, c: o, h: per, w: 1 }, ..*bn };
    let p = check(&weights, op, Activation::Identity, 0.0, &[(weight, "weight"), (folded_weight, "folded_weight")])?;
    f32_tensor(folded_bias, o, op, "folded_bias")?;
    if let Some(b) = bias {
        f32_tensor(b, o, op, "bias")?;
    }
    let ins =
        [(weight, "weight"), (bn.gamma, "gamma"), (bn.beta, "beta"), (bn.running_mean, "running_mean"), (bn.running_var, "running_var")];
    apart(op, folded_weight, &ins, "folded_weight")?;
    apart(op, folded_bias, &ins, "folded_bias")?;
    if let Some(b) = bias {
        apart(op, folded_bias, &[(b, "bias")], "folded_bias")?;
    }
    let fold_w =
        elementwise(gpu, BN_FOLD_WEIGHT, Activation::Identity, &p, weights.shape, &[weight, bn.gamma, bn.running_var, folded_weight])?;
    let channels = BatchNorm { shape: BatchNormShape { n: 1, c: o, h: 1, w: 1 }, ..*bn };
    let p = check(&channels, op, Activation::Identity, 0.0, &[])?;
    let bufs = [bn.gamma, bn.beta, bn.running_mean, bn.running_var, bias.unwrap_or(bn.gamma), folded_bias];
    let consts = [("ACT", 0.0), ("PLANES", 0.0), ("HAS_BIAS", bias.is_some() as u32 as f64)];
    let fold_b = Dispatch::new(gpu, BN_FOLD_BIAS, &consts, bytemuck::bytes_of(&p), &bufs, groups_1d(o, EWG as u32))?;
    Ok(vec![fold_w, fold_b])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reductions_walk_nested_only_within_the_budget() {
        let shape = |n, c, h, w| BatchNormShape { n, c, h, w };
        assert!(nested(shape(256, 2, 112, 112)));
        assert!(!nested(shape(8, 3, 15, 16)), "planes shorter than a workgroup walk flat");
        // 15,000 planes of 300: nested needs 45,000 iterations per pass, flat 17,579
        let many = shape(15_000, 1, 15, 20);
        assert!(!nested(many));
        assert!(check_reduction("t", many, 2).is_ok());
        assert!(check_reduction("t", shape(256, 2, 112, 112), 2).is_ok());
        assert!(check_reduction("t", shape(1024, 1, 112, 112), 2).is_err());
    }

    #[test]
    fn params_match_wgsl_size() {
        let wgsl = super::super::wgsl_struct_bytes(source::NORM_WGSL, "Params");
        assert_eq!(std::mem::size_of::<NormParams>(), wgsl);
        assert_eq!(wgsl, 32);
    }
}
