//! Losses with their gradients w.r.t. the logits: softmax cross-entropy over integer classes, and
//! per-label sigmoid binary cross-entropy with logits (multi-task, NaN = unknown label).
//!
//! Both write per-row losses already divided by the normaliser, so that the sum of `loss_rows`
//! (see [`crate::kernels::reduce::sum`]) is the batch loss, and `dlogits` is the gradient of that
//! batch loss. Formulas and their numerically stable forms are in `shaders/loss.wgsl`; the
//! float64 specification is [`crate::reference::loss`].

use super::reduce::ensure_loop_budget;
use super::{Family, Kernel, R, RW, ensure};
use crate::error::Result;
use crate::gpu::pipelines::groups_1d;
use crate::gpu::tensor::DType;
use crate::gpu::{Dispatch, Gpu, Tensor};

pub(crate) const SOFTMAX_XENT: Kernel = Kernel { family: Family::Loss, entry: "softmax_xent", bindings: &[R, R, RW, RW] };
pub(crate) const BCE_LOGITS: Kernel = Kernel { family: Family::Loss, entry: "bce_logits", bindings: &[R, R, R, R, R, RW, RW] };
pub(crate) const HEAD_SOFTMAX: Kernel = Kernel { family: Family::Loss, entry: "head_softmax", bindings: &[R, R, RW, RW, RW, RW, RW] };
pub(crate) const HEAD_BCE: Kernel = Kernel { family: Family::Loss, entry: "head_bce", bindings: &[R, R, R, R, RW, RW, RW, RW] };
pub(crate) const COUNT_LABELLED: Kernel = Kernel { family: Family::Loss, entry: "count_labelled", bindings: &[R, RW] };

/// Invocations per workgroup of the one-invocation-per-row kernels (`@workgroup_size(64)`).
const ROW_WG: u32 = 64;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct LossParams {
    pub rows: u32,
    pub cols: u32,
    pub scale: f32,
    pub _pad: u32,
}

/// How the per-entry BCE losses are normalised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BceReduction {
    /// `(1/m) Σ_i Σ_j l_ij`: the labels' losses add up, averaged over examples (the default).
    #[default]
    SumLabelsMeanExamples,
    /// The mean over the entries whose label is known (not NaN). A batch with no known label has
    /// loss 0 and gradient 0, not NaN.
    MeanLabelled,
    /// PyTorch's `reduction='mean'`: `Σ_i Σ_j l_ij / (m·k)`.
    MeanAll,
}

/// Options of [`bce_logits`]; the default is unweighted, [`BceReduction::SumLabelsMeanExamples`].
#[derive(Debug, Clone, Default)]
pub struct BceOptions {
    /// `[k]` f32: the weight of the positive term of each label (PyTorch `pos_weight`).
    pub pos_weight: Option<Tensor>,
    /// `[k]` f32: a weight multiplying each label's whole loss (PyTorch `weight`, per label).
    pub label_weight: Option<Tensor>,
    pub reduction: BceReduction,
}

fn ensure_dtype(t: &Tensor, dtype: DType, op: &str, name: &str) -> Result<()> {
    ensure(t.dtype() == dtype, op, || format!("{name} must be {dtype:?}, it is {:?}", t.dtype()))
}

/// (m, cols) of 2-D f32 logits, with `dlogits` the same shape and `loss_rows` `m` f32 elements.
fn check_outputs(op: &str, logits: &Tensor, loss_rows: &Tensor, dlogits: &Tensor) -> Result<(usize, usize)> {
    ensure(logits.shape().len() == 2, op, || format!("logits must be 2-D [m, classes], they are {:?}", logits.shape()))?;
    let (m, cols) = (logits.shape()[0], logits.shape()[1]);
    ensure(logits.len() <= u32::MAX as usize, op, || format!("logits {:?} have more than 2^32 elements", logits.shape()))?;
    ensure_dtype(logits, DType::F32, op, "logits")?;
    ensure_dtype(loss_rows, DType::F32, op, "loss_rows")?;
    ensure_dtype(dlogits, DType::F32, op, "dlogits")?;
    ensure(loss_rows.len() == m, op, || format!("loss_rows has {} elements, logits {:?} have {m} rows", loss_rows.len(), logits.shape()))?;
    ensure(dlogits.shape() == logits.shape(), op, || format!("dlogits are {:?}, logits {:?}", dlogits.shape(), logits.shape()))?;
    Ok((m, cols))
}

/// BCE targets like the logits, and per-label weights of length `k`.
fn check_bce_inputs(op: &str, logits: &Tensor, targets: &Tensor, opts: &BceOptions, k: usize) -> Result<()> {
    ensure_dtype(targets, DType::F32, op, "targets")?;
    ensure(targets.shape() == logits.shape(), op, || format!("targets are {:?}, logits {:?}", targets.shape(), logits.shape()))?;
    for (t, name) in [(&opts.pos_weight, "pos_weight"), (&opts.label_weight, "label_weight")] {
        if let Some(t) = t {
            ensure_dtype(t, DType::F32, op, name)?;
            ensure(t.len() == k, op, || format!("{name} has {} elements, logits {:?} have {k} labels", t.len(), logits.shape()))?;
        }
    }
    Ok(())
}

/// Builds softmax cross-entropy with integer class targets: for logits `[m, c]` and u32
/// `targets` `[m]`, `loss_rows[i] = (logsumexp(x_i) − x_i[t_i]) / m` (their sum is the batch mean
/// loss) and `dlogits = (softmax(x) − onehot(t)) / m`. Stable for any finite logits (the row max
/// is subtracted). A target `≥ c` reads nothing out of bounds: its row gets a NaN loss and a zero
/// gradient (labels are validated on the host when loaded; this only makes a bad one visible).
pub fn softmax_xent_dispatch(gpu: &Gpu, logits: &Tensor, targets: &Tensor, loss_rows: &Tensor, dlogits: &Tensor) -> Result<Dispatch> {
    let op = "softmax_xent";
    let (m, c) = check_outputs(op, logits, loss_rows, dlogits)?;
    ensure(c >= 1 || m == 0, op, || format!("logits {:?} have no classes", logits.shape()))?;
    ensure_dtype(targets, DType::U32, op, "targets")?;
    ensure(targets.len() == m, op, || format!("targets have {} elements, logits {:?} have {m} rows", targets.len(), logits.shape()))?;
    // three passes over the row, each unrolled by 4 with a tail of < 4
    ensure_loop_budget(op, 3 * (c.div_ceil(4) + 4), || format!("a row of {c} classes"))?;
    let p = LossParams { rows: m as u32, cols: c as u32, scale: 1.0 / m.max(1) as f32, _pad: 0 };
    Dispatch::new(gpu, SOFTMAX_XENT, &[], bytemuck::bytes_of(&p), &[logits, targets, loss_rows, dlogits], groups_1d(m, ROW_WG))
}

/// Softmax cross-entropy and its gradient, run at once (see [`softmax_xent_dispatch`]).
pub fn softmax_xent(gpu: &Gpu, logits: &Tensor, targets: &Tensor, loss_rows: &mut Tensor, dlogits: &mut Tensor) -> Result<()> {
    gpu.run("softmax_xent", &[&softmax_xent_dispatch(gpu, logits, targets, loss_rows, dlogits)?])
}

/// Builds per-label sigmoid BCE with logits: logits and f32 `targets` are `[m, k]`, a NaN target
/// is an unknown label and contributes exactly 0 to the loss and the gradient; soft targets in
/// [0, 1] are allowed. Per entry (PyTorch `BCEWithLogitsLoss` with `pos_weight` p_j and `weight`
/// w_j): `l = w_j·[(1−y)·x + (1+(p_j−1)·y)·(log1p(exp(−|x|)) + max(−x, 0))]`, computed in an
/// equivalent cancellation-free form. `loss_rows[i] = Σ_j l_ij / N`, `dlogits = ∂l/∂x / N`, with N
/// from `opts.reduction`.
///
/// Returns the dispatches to record in order: with [`BceReduction::MeanLabelled`] a count pass
/// (into a one-element scratch buffer allocated here and kept alive by the dispatches) comes
/// first, then the loss/gradient pass; otherwise only the latter.
pub fn bce_logits_dispatches(
    gpu: &Gpu,
    logits: &Tensor,
    targets: &Tensor,
    opts: &BceOptions,
    loss_rows: &Tensor,
    dlogits: &Tensor,
) -> Result<Vec<Dispatch>> {
    let op = "bce_logits";
    let (m, k) = check_outputs(op, logits, loss_rows, dlogits)?;
    check_bce_inputs(op, logits, targets, opts, k)?;
    ensure_loop_budget(op, k + 1, || format!("a row of {k} labels"))?;
    // the count pass: 256 invocations unrolled by 4, then an 8-level tree
    ensure_loop_budget(op, logits.len().div_ceil(256).div_ceil(4) + 4 + 9, || format!("logits {:?}", logits.shape()))?;
    let mut dispatches = Vec::with_capacity(2);
    let mean_labelled = opts.reduction == BceReduction::MeanLabelled;
    let count = if mean_labelled {
        let count = Tensor::alloc(gpu, &[1], DType::U32, "bce_labelled_count")?;
        let p = LossParams { rows: m as u32, cols: k as u32, scale: 1.0, _pad: 0 };
        dispatches.push(Dispatch::new(gpu, COUNT_LABELLED, &[], bytemuck::bytes_of(&p), &[targets, &count], [1, 1, 1])?);
        Some(count)
    } else {
        None
    };
    let scale = match opts.reduction {
        BceReduction::SumLabelsMeanExamples => 1.0 / m.max(1) as f64,
        BceReduction::MeanAll => 1.0 / (m * k).max(1) as f64,
        BceReduction::MeanLabelled => 1.0, // read from the count on the GPU
    };
    let p = LossParams { rows: m as u32, cols: k as u32, scale: scale as f32, _pad: 0 };
    let consts = [
        ("HAS_POS_WEIGHT", opts.pos_weight.is_some() as u32 as f64),
        ("HAS_LABEL_WEIGHT", opts.label_weight.is_some() as u32 as f64),
        ("MEAN_LABELLED", mean_labelled as u32 as f64),
    ];
    // absent optional inputs are bound to `logits` (read-only, never read by the kernel)
    let pos_weight = opts.pos_weight.as_ref().unwrap_or(logits);
    let label_weight = opts.label_weight.as_ref().unwrap_or(logits);
    let count = count.as_ref().unwrap_or(logits);
    let buffers = [logits, targets, pos_weight, label_weight, count, loss_rows, dlogits];
    dispatches.push(Dispatch::new(gpu, BCE_LOGITS, &consts, bytemuck::bytes_of(&p), &buffers, groups_1d(m, ROW_WG))?);
    Ok(dispatches)
}

/// Per-label sigmoid BCE with logits and its gradient, run at once (see [`bce_logits_dispatches`]).
pub fn bce_logits(
    gpu: &Gpu,
    logits: &Tensor,
    targets: &Tensor,
    opts: &BceOptions,
    loss_rows: &mut Tensor,
    dlogits: &mut Tensor,
) -> Result<()> {
    let ds = bce_logits_dispatches(gpu, logits, targets, opts, loss_rows, dlogits)?;
    let refs: Vec<&Dispatch> = ds.iter().collect();
    gpu.run("bce_logits", &refs)
}

/// The largest batch, in entries `m × outputs`, the fused head kernels take: they run in one
/// workgroup (one core of a CPU adapter, one SM of a GPU), which beats four launches only while
/// the batch is small.
pub const FUSED_HEAD_MAX_ENTRIES: usize = 16_384;

/// Whether a batch of `m` rows and `outputs` columns is small enough for the fused head kernels.
pub fn fits_fused_head(m: usize, outputs: usize) -> bool {
    m.saturating_mul(outputs) <= FUSED_HEAD_MAX_ENTRIES
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct HeadParams {
    pub rows: u32,
    pub cols: u32,
    pub scale: f32,
    pub logit_threshold: f32,
}

/// Where a fused head kernel puts its results.
#[derive(Debug, Clone, Copy)]
pub struct HeadOutputs<'a> {
    /// `[m, outputs]` f32: the gradient of the batch loss w.r.t. the logits (overwritten).
    pub dlogits: &'a Tensor,
    /// `[1]` f32: the batch loss is ADDED to it (an epoch's running sum).
    pub loss_acc: &'a Tensor,
    /// u32 counts ADDED to: `[2]` (correct, total) for softmax, `[k, 4]` (TP, FP, TN, FN) for BCE.
    pub counts: &'a Tensor,
    /// `[outputs]` f32: the output layer's bias gradient `Σ_rows dlogits` (overwritten), or none.
    pub db: Option<&'a Tensor>,
}

fn check_head_outputs(op: &str, m: usize, cols: usize, out: &HeadOutputs<'_>, counts_len: usize) -> Result<()> {
    ensure(fits_fused_head(m, cols), op, || {
        format!("a batch of {m} × {cols} entries is past the fused kernel's {FUSED_HEAD_MAX_ENTRIES}: use the separate kernels")
    })?;
    ensure_dtype(out.dlogits, DType::F32, op, "dlogits")?;
    ensure(out.dlogits.shape() == [m, cols], op, || format!("dlogits are {:?}, the logits [{m}, {cols}]", out.dlogits.shape()))?;
    ensure_dtype(out.loss_acc, DType::F32, op, "loss_acc")?;
    ensure(out.loss_acc.len() == 1, op, || format!("loss_acc has {} elements, not 1", out.loss_acc.len()))?;
    ensure_dtype(out.counts, DType::U32, op, "counts")?;
    ensure(out.counts.len() == counts_len, op, || format!("counts have {} elements, not {counts_len}", out.counts.len()))?;
    if let Some(db) = out.db {
        ensure_dtype(db, DType::F32, op, "db")?;
        ensure(db.len() == cols, op, || format!("db has {} elements, the logits {cols} columns", db.len()))?;
    }
    Ok(())
}

/// Builds the fused softmax head kernel for a small batch ([`fits_fused_head`]): what
/// [`softmax_xent_dispatch`], a summing [`crate::kernels::reduce::sum_dispatch`] into
/// `out.loss_acc`, [`crate::kernels::metrics::argmax_correct_dispatch`] into `out.counts` and
/// [`crate::kernels::reduce::col_sum_dispatch`] into `out.db` do, in one launch of one workgroup.
pub fn head_softmax_dispatch(gpu: &Gpu, logits: &Tensor, targets: &Tensor, loss_rows: &Tensor, out: &HeadOutputs<'_>) -> Result<Dispatch> {
    let op = "head_softmax";
    let (m, c) = check_outputs(op, logits, loss_rows, out.dlogits)?;
    ensure(c >= 1 || m == 0, op, || format!("logits {:?} have no classes", logits.shape()))?;
    ensure_dtype(targets, DType::U32, op, "targets")?;
    ensure(targets.len() == m, op, || format!("targets have {} elements, logits {:?} have {m} rows", targets.len(), logits.shape()))?;
    check_head_outputs(op, m, c, out, 2)?;
    let p = HeadParams { rows: m as u32, cols: c as u32, scale: 1.0 / m.max(1) as f32, logit_threshold: 0.0 };
    let db = out.db.unwrap_or(out.loss_acc);
    let consts = [("HAS_DB", out.db.is_some() as u32 as f64)];
    Dispatch::new(
        gpu,
        HEAD_SOFTMAX,
        &consts,
        bytemuck::bytes_of(&p),
        &[logits, targets, loss_rows, out.dlogits, out.loss_acc, out.counts, db],
        [1, 1, 1],
    )
}

/// Builds the fused BCE head kernel for a small batch ([`fits_fused_head`]): what
/// [`bce_logits_dispatches`], a summing [`crate::kernels::reduce::sum_dispatch`] into
/// `out.loss_acc`, [`crate::kernels::metrics::label_confusion_dispatch`] (at probability
/// `threshold`) into `out.counts` and [`crate::kernels::reduce::col_sum_dispatch`] into `out.db`
/// do, in one launch of one workgroup.
pub fn head_bce_dispatch(
    gpu: &Gpu,
    logits: &Tensor,
    targets: &Tensor,
    opts: &BceOptions,
    threshold: f32,
    out: &HeadOutputs<'_>,
) -> Result<Dispatch> {
    let op = "head_bce";
    ensure(logits.shape().len() == 2, op, || format!("logits must be 2-D [m, labels], they are {:?}", logits.shape()))?;
    let (m, k) = (logits.shape()[0], logits.shape()[1]);
    ensure_dtype(logits, DType::F32, op, "logits")?;
    check_bce_inputs(op, logits, targets, opts, k)?;
    check_head_outputs(op, m, k, out, 4 * k)?;
    let mean_labelled = opts.reduction == BceReduction::MeanLabelled;
    let scale = match opts.reduction {
        BceReduction::SumLabelsMeanExamples => 1.0 / m.max(1) as f64,
        BceReduction::MeanAll => 1.0 / (m * k).max(1) as f64,
        BceReduction::MeanLabelled => 1.0, // counted in the kernel
    };
    let p = HeadParams {
        rows: m as u32,
        cols: k as u32,
        scale: scale as f32,
        logit_threshold: super::metrics::logit_threshold(op, threshold)?,
    };
    let consts = [
        ("HAS_POS_WEIGHT", opts.pos_weight.is_some() as u32 as f64),
        ("HAS_LABEL_WEIGHT", opts.label_weight.is_some() as u32 as f64),
        ("MEAN_LABELLED", mean_labelled as u32 as f64),
        ("HAS_DB", out.db.is_some() as u32 as f64),
    ];
    // absent optional inputs are bound to buffers the kernel never reads through them
    let pos_weight = opts.pos_weight.as_ref().unwrap_or(logits);
    let label_weight = opts.label_weight.as_ref().unwrap_or(logits);
    let db = out.db.unwrap_or(out.loss_acc);
    let buffers = [logits, targets, pos_weight, label_weight, out.dlogits, out.loss_acc, out.counts, db];
    Dispatch::new(gpu, HEAD_BCE, &consts, bytemuck::bytes_of(&p), &buffers, [1, 1, 1])
}

#[cfg(test)]
mod tests {
    #[test]
    fn params_match_wgsl_size() {
        // struct Params { rows, cols: u32, scale: f32, _pad: u32 } = 16 bytes in WGSL
        assert_eq!(std::mem::size_of::<super::LossParams>(), 16);
        assert_eq!(crate::kernels::wgsl_struct_bytes(crate::kernels::source::LOSS, "HeadParams"), std::mem::size_of::<super::HeadParams>());
    }
}
