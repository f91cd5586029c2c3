//! Losses with their gradients w.r.t. the logits: softmax cross-entropy over integer classes, and
//! per-label sigmoid binary cross-entropy with logits (multi-task, NaN = unknown label).
//!
//! Both write per-row losses already divided by the normaliser, so that the sum of `loss_rows`
//! (see [`crate::kernels::reduce::sum`]) is the batch loss, and `dlogits` is the gradient of that
//! batch loss. Formulas and their numerically stable forms are in `shaders/loss.wgsl`; the
//! float64 specification is [`crate::reference::loss`].

use super::gather::IndexedDispatch;
use super::reduce::ensure_loop_budget;
use super::{Kernel, R, RW, ensure, source};
use crate::error::Result;
use crate::gpu::pipelines::groups_1d;
use crate::gpu::tensor::DType;
use crate::gpu::{Dispatch, Gpu, Tensor};
use bytemuck::Zeroable;

pub(crate) const SOFTMAX_XENT: Kernel = Kernel { source: &source::LOSS, entry: "softmax_xent", bindings: &[R, R, RW, RW] };
pub(crate) const BCE_LOGITS: Kernel = Kernel { source: &source::LOSS, entry: "bce_logits", bindings: &[R, R, R, R, R, RW, RW] };
// the last binding of each: the index buffer of GATHER_TARGETS
pub(crate) const HEAD_SOFTMAX: Kernel = Kernel { source: &source::LOSS, entry: "head_softmax", bindings: &[R, R, RW, RW, RW, RW, RW, R] };
pub(crate) const HEAD_BCE: Kernel = Kernel { source: &source::LOSS, entry: "head_bce", bindings: &[R, R, R, R, RW, RW, RW, RW, R] };
pub(crate) const LINEAR_HEAD_BCE: Kernel =
    Kernel { source: &source::LOSS, entry: "linear_head_bce", bindings: &[R, R, R, R, RW, RW, RW, RW, R, R, R, RW] };
pub(crate) const COUNT_LABELLED: Kernel = Kernel { source: &source::LOSS, entry: "count_labelled", bindings: &[R, RW] };
pub(crate) const REGRESSION_LOSS: Kernel = Kernel { source: &source::LOSS, entry: "regression_loss", bindings: &[R, R, R, RW, RW] };
pub(crate) const SOFTMAX_XENT_MASKED: Kernel = Kernel { source: &source::LOSS, entry: "softmax_xent_masked", bindings: &[R, R, RW, RW, R] };
pub(crate) const UNCERTAINTY_SCALE: Kernel = Kernel { source: &source::LOSS, entry: "uncertainty_scale", bindings: &[R, R, RW, RW] };
pub(crate) const COUNT_KNOWN_CLASSES: Kernel = Kernel { source: &source::LOSS, entry: "count_known_classes", bindings: &[R, RW] };

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

/// Whether `d` is a loss launch whose scale a data-parallel or accumulating step may rescale
/// ([`rescaled_params`]): a named head's `bce_logits`, `softmax_xent_masked` or
/// `regression_loss`, or a single head's `softmax_xent`, `head_softmax`, `head_bce` or
/// `linear_head_bce` (the fused ones add the scaled loss to the accumulator and write the scaled
/// gradient and bias gradient).
pub(crate) fn is_scaled_head_loss(d: &Dispatch) -> bool {
    [
        BCE_LOGITS.entry,
        SOFTMAX_XENT_MASKED.entry,
        REGRESSION_LOSS.entry,
        SOFTMAX_XENT.entry,
        HEAD_SOFTMAX.entry,
        HEAD_BCE.entry,
        LINEAR_HEAD_BCE.entry,
    ]
    .contains(&d.name())
}

/// The params block of head loss launch `d` ([`is_scaled_head_loss`]) with its scale multiplied
/// by `factor`: the loss and the gradient it writes are then `factor` times those it was built
/// for (every one of these kernels multiplies both by the scale, after dividing by the count of
/// known targets where it counts them). The scale is the third word of [`LossParams`] and of
/// [`RegressionParams`].
pub(crate) fn rescaled_params(d: &Dispatch, factor: f32) -> Result<Vec<u8>> {
    if !is_scaled_head_loss(d) {
        return Err(crate::Error::invalid(format!("{} is not a head's loss launch", d.name())));
    }
    let mut p = d.initial_params().to_vec();
    rescale(&mut p, factor);
    Ok(p)
}

/// Multiplies the scale word of a loss launch's params block `p` (its third word) by `factor`.
pub(crate) fn rescale(p: &mut [u8], factor: f32) {
    let scale: LossParams = bytemuck::pod_read_unaligned(&p[..std::mem::size_of::<LossParams>()]);
    p[8..12].copy_from_slice(&(scale.scale * factor).to_ne_bytes());
}
const _: () = assert!(
    std::mem::offset_of!(LossParams, scale) == 8
        && std::mem::offset_of!(RegressionParams, scale) == 8
        && std::mem::offset_of!(HeadParams, scale) == 8
);

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

/// Whether a training or evaluation step on `gpu` takes the fused head kernel for a batch of `m`
/// rows and `outputs` columns: small enough ([`fits_fused_head`]), and the device binds as many
/// storage buffers as the kernel needs (`head_softmax` 8, `head_bce` 9: more than WebGPU's
/// default 8). Otherwise the loss, its sum, the metric and the bias gradient run separately.
pub fn fused_head_runs(gpu: &Gpu, labels: bool, m: usize, outputs: usize) -> bool {
    let kernel = if labels { HEAD_BCE } else { HEAD_SOFTMAX };
    fits_fused_head(m, outputs) && kernel.fits(gpu)
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct HeadParams {
    pub rows: u32,
    pub cols: u32,
    pub scale: f32,
    /// Targets read through indices, linear_head_bce: the batch's first index position (word 3).
    pub offset: u32,
    pub logit_threshold: f32,
    /// linear_head_bce: features per row.
    pub d: u32,
    /// Targets read through indices, linear_head_bce: rows of the data set's targets.
    pub n: u32,
    pub _pad: u32,
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
    Ok(head_softmax_build(gpu, logits, targets, None, loss_rows, out)?.0)
}

/// As [`head_softmax_dispatch`], reading the batch's targets in place: `targets` is the data set's
/// u32 `[n]` classes and batch row i's is `targets[indices[offset + i]]` (an index ≥ n gives that
/// row a NaN loss and no gradient, as a class out of range does). Set the offset per step.
pub fn head_softmax_gathered_dispatch(
    gpu: &Gpu,
    logits: &Tensor,
    targets: &Tensor,
    indices: &Tensor,
    loss_rows: &Tensor,
    out: &HeadOutputs<'_>,
) -> Result<IndexedDispatch> {
    let (d, p) = head_softmax_build(gpu, logits, targets, Some(indices), loss_rows, out)?;
    Ok(IndexedDispatch::new(d, bytemuck::cast(p), 3, indices.len(), p.rows as usize))
}

/// `targets` (with `indices`: the data set's, read through them) checked against the batch rows.
fn check_targets(op: &str, targets: &Tensor, indices: Option<&Tensor>, m: usize, row: &[usize]) -> Result<()> {
    match indices {
        None => {
            let mut shape = vec![m];
            shape.extend_from_slice(row);
            ensure(targets.shape() == shape || (row.is_empty() && targets.len() == m), op, || {
                format!("targets are {:?}, the batch needs {shape:?}", targets.shape())
            })
        }
        Some(ix) => {
            ensure(ix.dtype() == DType::U32 && ix.shape().len() == 1, op, || {
                format!("indices must be a u32 vector, are {:?} {:?}", ix.dtype(), ix.shape())
            })?;
            ensure(m <= ix.len(), op, || format!("a batch of {m} rows needs at least {m} indices, there are {}", ix.len()))?;
            let per: usize = row.iter().product();
            ensure(targets.len().is_multiple_of(per.max(1)) && (row.is_empty() || targets.shape().last() == row.last()), op, || {
                format!("targets are {:?}, rows of {row:?} expected", targets.shape())
            })?;
            u32::try_from(targets.len()).map(|_| ()).map_err(|_| crate::Error::invalid(format!("{op}: targets exceed 2^32 elements")))
        }
    }
}

fn head_softmax_build(
    gpu: &Gpu,
    logits: &Tensor,
    targets: &Tensor,
    indices: Option<&Tensor>,
    loss_rows: &Tensor,
    out: &HeadOutputs<'_>,
) -> Result<(Dispatch, HeadParams)> {
    let op = "head_softmax";
    let (m, c) = check_outputs(op, logits, loss_rows, out.dlogits)?;
    ensure(c >= 1 || m == 0, op, || format!("logits {:?} have no classes", logits.shape()))?;
    ensure_dtype(targets, DType::U32, op, "targets")?;
    check_targets(op, targets, indices, m, &[])?;
    check_head_outputs(op, m, c, out, 2)?;
    let p = HeadParams { rows: m as u32, cols: c as u32, scale: 1.0 / m.max(1) as f32, n: targets.len() as u32, ..HeadParams::zeroed() };
    let db = out.db.unwrap_or(out.loss_acc);
    let consts = [("HAS_DB", out.db.is_some() as u32 as f64), ("GATHER_TARGETS", indices.is_some() as u32 as f64)];
    let rows = indices.unwrap_or(targets);
    let buffers = [logits, targets, loss_rows, out.dlogits, out.loss_acc, out.counts, db, rows];
    Ok((Dispatch::new(gpu, HEAD_SOFTMAX, &consts, bytemuck::bytes_of(&p), &buffers, [1, 1, 1])?, p))
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
    Ok(head_bce_build(gpu, logits, targets, None, opts, threshold, out)?.0)
}

/// As [`head_bce_dispatch`], reading the batch's targets in place: `targets` is the data set's
/// `[n, k]` labels and batch row i's are row `indices[offset + i]` of them (an index ≥ n reads
/// nothing: its labels count as unknown). Set the offset per step.
pub fn head_bce_gathered_dispatch(
    gpu: &Gpu,
    logits: &Tensor,
    targets: &Tensor,
    indices: &Tensor,
    opts: &BceOptions,
    threshold: f32,
    out: &HeadOutputs<'_>,
) -> Result<IndexedDispatch> {
    let (d, p) = head_bce_build(gpu, logits, targets, Some(indices), opts, threshold, out)?;
    Ok(IndexedDispatch::new(d, bytemuck::cast(p), 3, indices.len(), p.rows as usize))
}

fn head_bce_build(
    gpu: &Gpu,
    logits: &Tensor,
    targets: &Tensor,
    indices: Option<&Tensor>,
    opts: &BceOptions,
    threshold: f32,
    out: &HeadOutputs<'_>,
) -> Result<(Dispatch, HeadParams)> {
    let op = "head_bce";
    ensure(logits.shape().len() == 2, op, || format!("logits must be 2-D [m, labels], they are {:?}", logits.shape()))?;
    let (m, k) = (logits.shape()[0], logits.shape()[1]);
    ensure_dtype(logits, DType::F32, op, "logits")?;
    ensure_dtype(targets, DType::F32, op, "targets")?;
    check_targets(op, targets, indices, m, &[k])?;
    check_bce_inputs(op, targets, targets, opts, k)?; // the per-label weights' dtype and length
    check_head_outputs(op, m, k, out, 4 * k)?;
    let p = HeadParams {
        rows: m as u32,
        cols: k as u32,
        scale: bce_scale(opts.reduction, m, k),
        logit_threshold: super::metrics::logit_threshold(op, threshold)?,
        n: (targets.len() / k.max(1)) as u32,
        ..HeadParams::zeroed()
    };
    let mut consts = bce_constants(opts, out.db.is_some()).to_vec();
    consts.push(("GATHER_TARGETS", indices.is_some() as u32 as f64));
    // absent optional inputs are bound to buffers the kernel never reads through them
    let pos_weight = opts.pos_weight.as_ref().unwrap_or(logits);
    let label_weight = opts.label_weight.as_ref().unwrap_or(logits);
    let db = out.db.unwrap_or(out.loss_acc);
    let rows = indices.unwrap_or(targets);
    let buffers = [logits, targets, pos_weight, label_weight, out.dlogits, out.loss_acc, out.counts, db, rows];
    Ok((Dispatch::new(gpu, HEAD_BCE, &consts, bytemuck::bytes_of(&p), &buffers, [1, 1, 1])?, p))
}

/// The fused head kernels' loss scale: 1 / the reduction's normaliser (MeanLabelled counts its
/// own on the GPU).
fn bce_scale(reduction: BceReduction, m: usize, k: usize) -> f32 {
    match reduction {
        BceReduction::SumLabelsMeanExamples => (1.0 / m.max(1) as f64) as f32,
        BceReduction::MeanAll => (1.0 / (m * k).max(1) as f64) as f32,
        BceReduction::MeanLabelled => 1.0,
    }
}

fn bce_constants(opts: &BceOptions, has_db: bool) -> [(&'static str, f64); 4] {
    [
        ("HAS_POS_WEIGHT", opts.pos_weight.is_some() as u32 as f64),
        ("HAS_LABEL_WEIGHT", opts.label_weight.is_some() as u32 as f64),
        ("MEAN_LABELLED", (opts.reduction == BceReduction::MeanLabelled) as u32 as f64),
        ("HAS_DB", has_db as u32 as f64),
    ]
}

/// The most multiply-adds, `m·k·d`, one fused linear head step may do: it runs in one workgroup
/// (one core of a CPU adapter), and each invocation's loops stay well inside llvmpipe's 65,535
/// iterations.
pub const LINEAR_HEAD_MAX_MACS: usize = 1 << 21;

/// Whether a batch of `m` rows through a dense output layer `d → k` fits the fused linear head
/// step ([`linear_head_bce_dispatch`]).
pub fn fits_linear_head(m: usize, k: usize, d: usize) -> bool {
    fits_fused_head(m, k) && m.saturating_mul(k).saturating_mul(d) <= LINEAR_HEAD_MAX_MACS && k >= 1 && d >= 1
}

/// The output layer a fused linear head step trains: `logits = features[rows] · weightᵀ + bias`.
#[derive(Debug, Clone, Copy)]
pub struct LinearHead<'a> {
    /// `[n, d]` f32: every sample's input to the layer (cached trunk features), resident.
    pub features: &'a Tensor,
    /// u32 `[total]`: the epoch's order; the batch is `indices[offset .. offset + m]`.
    pub indices: &'a Tensor,
    /// `[k, d]` f32, as a dense layer stores it (`[out, in]`).
    pub weight: &'a Tensor,
    /// `[k]` f32.
    pub bias: &'a Tensor,
    /// `[k, d]` f32: the weight gradient (overwritten).
    pub dweight: &'a Tensor,
}

/// Builds the fused linear head step with BCE for a batch of `m = out.dlogits.shape()[0]` rows
/// ([`fits_linear_head`]): in one launch of one workgroup, what gathering the batch's features and
/// targets, the logits matmul (with bias), [`head_bce_dispatch`] (loss gradient, summed loss and
/// metric counts, `out.db`, which is required) and the weight-gradient matmul do. The batch is read
/// in place through `head.indices` at an offset set per step on the returned launch. `targets` is
/// the data set's `[n, k]` labels (NaN = unknown). An index ≥ n reads nothing: that row counts as
/// unlabelled.
pub fn linear_head_bce_dispatch(
    gpu: &Gpu,
    head: &LinearHead<'_>,
    targets: &Tensor,
    opts: &BceOptions,
    threshold: f32,
    out: &HeadOutputs<'_>,
) -> Result<IndexedDispatch> {
    let op = "linear_head_bce";
    let f = head.features;
    ensure(f.shape().len() == 2, op, || format!("features must be 2-D [n, d], they are {:?}", f.shape()))?;
    let (n, d) = (f.shape()[0], f.shape()[1]);
    ensure(out.dlogits.shape().len() == 2, op, || format!("dlogits must be 2-D [m, k], they are {:?}", out.dlogits.shape()))?;
    let (m, k) = (out.dlogits.shape()[0], out.dlogits.shape()[1]);
    ensure(fits_linear_head(m, k, d), op, || {
        format!(
            "a batch of {m} rows through {d} → {k} is past the fused step's limits ({FUSED_HEAD_MAX_ENTRIES} entries, {LINEAR_HEAD_MAX_MACS} multiply-adds)"
        )
    })?;
    for (t, name, shape) in
        [(f, "features", [n, d]), (head.weight, "weight", [k, d]), (head.dweight, "dweight", [k, d]), (targets, "targets", [n, k])]
    {
        ensure_dtype(t, DType::F32, op, name)?;
        ensure(t.shape() == shape, op, || format!("{name} are {:?}, expected {shape:?}", t.shape()))?;
    }
    ensure_dtype(head.bias, DType::F32, op, "bias")?;
    ensure(head.bias.len() == k, op, || format!("bias has {} elements, the layer {k} outputs", head.bias.len()))?;
    let ix = head.indices;
    check_targets(op, targets, Some(ix), m, &[k])?;
    check_bce_inputs(op, targets, targets, opts, k)?; // the per-label weights' dtype and length
    let db = out.db.ok_or_else(|| crate::Error::shape(format!("{op}: the fused step writes the bias gradient: out.db is required")))?;
    check_head_outputs(op, m, k, out, 4 * k)?;
    let fits = |v: usize| u32::try_from(v).map_err(|_| crate::Error::invalid(format!("{op}: {v} exceeds u32")));
    fits(f.len())?;
    fits(targets.len())?;
    fits(ix.len())?;
    let p = HeadParams {
        rows: m as u32,
        cols: k as u32,
        scale: bce_scale(opts.reduction, m, k),
        offset: 0,
        logit_threshold: super::metrics::logit_threshold(op, threshold)?,
        d: d as u32,
        n: n as u32,
        _pad: 0,
    };
    // the longest loop walk of one invocation: its forward entries (d/4 + 3 each), the label count,
    // the dW sums (m per (4 labels, column)), the reductions
    let per = if k <= 64 { 64 / k } else { 1 };
    let entries = if k <= 64 { m.div_ceil(per) } else { k.div_ceil(64) * m };
    let iterations = entries * (d / 4 + 4) + m.div_ceil(64) * (k + 1) + k.div_ceil(4) * d.div_ceil(64) * (m + 1) + 64;
    ensure_loop_budget(op, iterations, || format!("a batch of {m} rows through {d} → {k}"))?;
    let pos_weight = opts.pos_weight.as_ref().unwrap_or(targets);
    let label_weight = opts.label_weight.as_ref().unwrap_or(targets);
    let buffers =
        [f, targets, pos_weight, label_weight, out.dlogits, out.loss_acc, out.counts, db, ix, head.weight, head.bias, head.dweight];
    let mut consts = bce_constants(opts, true).to_vec();
    consts.push(("GATHER_TARGETS", 1.0));
    let dispatch = Dispatch::new(gpu, LINEAR_HEAD_BCE, &consts, bytemuck::bytes_of(&p), &buffers, [1, 1, 1])?;
    Ok(IndexedDispatch::new(dispatch, bytemuck::cast(p), 3, ix.len(), m))
}

/// How a training step runs a small dense BCE output layer on cached features.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinearHeadAlgo {
    /// [`linear_head_bce_dispatch`]: one launch of one workgroup.
    Fused,
    /// Matmul, [`head_bce_gathered_dispatch`], matmul (each reading the batch in place): three
    /// launches over every core.
    Separate,
}

impl LinearHeadAlgo {
    pub fn name(self) -> &'static str {
        match self {
            LinearHeadAlgo::Fused => "fused",
            LinearHeadAlgo::Separate => "separate",
        }
    }
    pub fn from_name(name: &str) -> Option<LinearHeadAlgo> {
        [LinearHeadAlgo::Fused, LinearHeadAlgo::Separate].into_iter().find(|a| a.name() == name)
    }
}

impl super::tune::Tunable for LinearHeadAlgo {
    const ENV: &'static str = "HEADSWAP_LINEAR_HEAD";
    const WHAT: &'static str = "linear head algorithm";
    const ALL: &'static [LinearHeadAlgo] = &[LinearHeadAlgo::Fused, LinearHeadAlgo::Separate];
    fn name(self) -> &'static str {
        LinearHeadAlgo::name(self)
    }
}

/// The faster way to run a training step of a batch of `m` rows through a dense BCE output layer
/// `d → k` on cached features, on this device: measured on first use per shape class (powers of
/// two of m, k, d) and remembered in the autotune cache like the matmul's choices. The fused step
/// saves launches but runs on one core (one SM); which wins depends on the adapter and the size.
/// `HEADSWAP_LINEAR_HEAD=fused|separate` forces one (fused only where it fits);
/// `HEADSWAP_AUTOTUNE=0` pins the static choice, fused wherever it fits. It fits a batch
/// ([`fits_linear_head`]) on a device that binds its 12 storage buffers (WebGPU's default limits
/// give 8).
pub fn choose_linear_head(gpu: &Gpu, m: usize, k: usize, d: usize) -> Result<LinearHeadAlgo> {
    if !fits_linear_head(m, k, d) || !LINEAR_HEAD_BCE.fits(gpu) {
        return Ok(LinearHeadAlgo::Separate);
    }
    let usable = |_: LinearHeadAlgo| true; // both run where the fused one fits
    let ask = super::tune::Ask {
        class: format!("linear_head_bce m{} k{} d{}", m.next_power_of_two(), k.next_power_of_two(), d.next_power_of_two()),
        static_choice: LinearHeadAlgo::Fused,
        fallback: LinearHeadAlgo::Separate,
        usable: &usable,
    };
    Ok(super::tune::choose(gpu, ask, || measure_linear_head(gpu, m, k, d))?.0)
}

/// Times both ways on scratch buffers of the given shape; returns the faster.
fn measure_linear_head(gpu: &Gpu, m: usize, k: usize, d: usize) -> Result<LinearHeadAlgo> {
    use super::matmul::{Epilogue, Gathered, Transpose, matmul_dispatch_gathered};
    let started = std::time::Instant::now();
    let t = |dims: &[usize]| super::tune::scratch(gpu, dims);
    let (feat, targets, w, b, dw, db) = (t(&[m, d])?, t(&[m, k])?, t(&[k, d])?, t(&[k])?, t(&[k, d])?, t(&[k])?);
    let (logits, dlogits, acc) = (t(&[m, k])?, t(&[m, k])?, t(&[1])?);
    let order: Vec<u32> = (0..m as u32).collect();
    let indices = Tensor::from_u32(gpu, &[m], &order)?;
    let counts = Tensor::alloc(gpu, &[k, 4], DType::U32, "linear_head_autotune_counts")?;
    let out = HeadOutputs { dlogits: &dlogits, loss_acc: &acc, counts: &counts, db: Some(&db) };
    let head = LinearHead { features: &feat, indices: &indices, weight: &w, bias: &b, dweight: &dw };
    let opts = BceOptions::default();
    let fused = vec![linear_head_bce_dispatch(gpu, &head, &targets, &opts, 0.5, &out)?.into_dispatch()];
    // the separate launches as a training step records them: both products and the loss read the
    // batch in place through the indices
    let separate = vec![
        matmul_dispatch_gathered(
            gpu,
            &feat,
            &w,
            &logits,
            Transpose::NT,
            Epilogue { bias: Some(&b), ..Epilogue::default() },
            Gathered::A,
            &indices,
        )?
        .into_dispatch(),
        head_bce_gathered_dispatch(gpu, &logits, &targets, &indices, &opts, 0.5, &out)?.into_dispatch(),
        matmul_dispatch_gathered(gpu, &dlogits, &feat, &dw, Transpose::TN, Epilogue::default(), Gathered::B, &indices)?.into_dispatch(),
    ];
    let algos = [LinearHeadAlgo::Fused, LinearHeadAlgo::Separate];
    let lists: Vec<Vec<&Dispatch>> = [&fused, &separate].iter().map(|ds| ds.iter().collect()).collect();
    // several steps per submission, as training records them
    let secs = super::tune::time_candidates(gpu, "linear_head_autotune", &lists, 8)?;
    Ok(super::tune::fastest(&format!("linear head {m}x{d}->{k}"), &algos, &secs, started).unwrap_or(LinearHeadAlgo::Separate))
}

// ---------------------------------------------------------------- heads of a multi-task network

/// The class of an example with no target in a classification head: −1 stored as u32
/// (PyTorch's `ignore_index=-1`). [`softmax_xent_masked_dispatches`] gives it no loss and no
/// gradient and leaves it out of the mean.
pub const IGNORE_CLASS: u32 = u32::MAX;

/// The per-entry loss of a regression head (PyTorch's `MSELoss`, `L1Loss`, `HuberLoss(delta)`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RegressionLoss {
    /// `e²`, e = prediction − target.
    Mse,
    /// `|e|` (gradient `sign(e)`, 0 at e = 0 as PyTorch's).
    L1,
    /// `e²/2` for `|e| < δ`, else `δ·(|e| − δ/2)`: PyTorch's `HuberLoss(delta=δ)`. Its
    /// `SmoothL1Loss(beta=δ)` is this divided by δ, i.e. `Huber(δ)` with the head weight `w/δ`.
    Huber(f32),
}

impl RegressionLoss {
    fn code(self) -> u32 {
        match self {
            RegressionLoss::Mse => 0,
            RegressionLoss::L1 => 1,
            RegressionLoss::Huber(_) => 2,
        }
    }
}

/// How a head's per-entry losses are normalised; unknown targets are never counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MaskedReduction {
    /// The mean over the known targets (PyTorch's `reduction='mean'` over the unmasked elements,
    /// or over the rows not ignored); no known target gives loss 0 and gradient 0, not NaN.
    #[default]
    MeanKnown,
    /// The sum over the known targets (`reduction='sum'`).
    Sum,
}

/// A head's loss options: the normaliser and the head's weight `w` (the network's loss is
/// `Σ_t w_t·L_t`; the kernels write `w·L` and its gradient, and `w = 0` gives exact zeros).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeadLoss {
    pub reduction: MaskedReduction,
    pub weight: f32,
}

impl Default for HeadLoss {
    fn default() -> HeadLoss {
        HeadLoss { reduction: MaskedReduction::MeanKnown, weight: 1.0 }
    }
}

/// Where a head's loss kernel puts its results.
#[derive(Debug, Clone, Copy)]
pub struct LossOutputs<'a> {
    /// `[m]` f32: each row's share of `w·L` (overwritten); their sum is the batch's `w·L`.
    pub loss_rows: &'a Tensor,
    /// `[m, outputs]` f32: `∂(w·L)/∂(predictions or logits)` (overwritten).
    pub dlogits: &'a Tensor,
    /// `[1]` f32: the batch's `w·L` is ADDED to it (an epoch's running sum), or none.
    pub loss_acc: Option<&'a Tensor>,
}

fn check_head_loss(op: &str, opts: &HeadLoss) -> Result<()> {
    if !opts.weight.is_finite() || opts.weight < 0.0 {
        return Err(crate::Error::invalid(format!("{op}: the head weight must be finite and ≥ 0, got {}", opts.weight)));
    }
    Ok(())
}

/// The known-target count pass (MeanKnown) ahead of a head's loss: a one-element scratch buffer
/// allocated here, kept alive by the dispatches. `None` for a sum.
fn known_count(gpu: &Gpu, kernel: Kernel, opts: &HeadLoss, targets: &Tensor, dispatches: &mut Vec<Dispatch>) -> Result<Option<Tensor>> {
    if opts.reduction != MaskedReduction::MeanKnown {
        return Ok(None);
    }
    let op = kernel.entry;
    ensure(targets.len() <= u32::MAX as usize, op, || format!("targets {:?} have more than 2^32 elements", targets.shape()))?;
    // 256 invocations unrolled by 4, then an 8-level tree
    ensure_loop_budget(op, targets.len().div_ceil(256).div_ceil(4) + 4 + 9, || format!("targets {:?}", targets.shape()))?;
    let count = Tensor::alloc(gpu, &[1], DType::U32, "head_known_count")?;
    let p = LossParams { rows: targets.len() as u32, cols: 1, scale: 1.0, _pad: 0 };
    dispatches.push(Dispatch::new(gpu, kernel, &[], bytemuck::bytes_of(&p), &[targets, &count], [1, 1, 1])?);
    Ok(Some(count))
}

/// The closing sum of the rows into `out.loss_acc`, if any.
fn accumulate(gpu: &Gpu, out: &LossOutputs<'_>, dispatches: &mut Vec<Dispatch>) -> Result<()> {
    if let Some(acc) = out.loss_acc {
        dispatches.push(super::reduce::sum_dispatch(gpu, out.loss_rows, acc, true)?);
    }
    Ok(())
}

/// Builds a regression head's loss: predictions and f32 `targets` are `[m, k]`, a NaN target is
/// unknown and contributes exactly 0 to the loss and the gradient. Per known entry, with
/// `e = prediction − target`, the loss of `kind` ([`RegressionLoss`]);
/// `out.loss_rows[i] = w·Σ_j l_ij / N`, `out.dlogits = w·∂l/∂prediction / N`, N the number of
/// known targets in the batch (at least 1) or 1 for [`MaskedReduction::Sum`]; with
/// `out.loss_acc` the batch's `w·L` is added to it. Returns the dispatches to record in order
/// (the count of known targets, the loss, the sum into the accumulator). Sums run in a fixed
/// order: repeats are bit-identical.
pub fn regression_loss_dispatches(
    gpu: &Gpu,
    preds: &Tensor,
    targets: &Tensor,
    kind: RegressionLoss,
    opts: &HeadLoss,
    out: &LossOutputs<'_>,
) -> Result<Vec<Dispatch>> {
    let op = "regression_loss";
    let (m, k) = check_outputs(op, preds, out.loss_rows, out.dlogits)?;
    ensure_dtype(targets, DType::F32, op, "targets")?;
    ensure(targets.shape() == preds.shape(), op, || format!("targets are {:?}, predictions {:?}", targets.shape(), preds.shape()))?;
    check_head_loss(op, opts)?;
    let delta = match kind {
        RegressionLoss::Huber(d) if !(d.is_finite() && d > 0.0) => {
            return Err(crate::Error::invalid(format!("{op}: Huber's delta must be finite and > 0, got {d}")));
        }
        RegressionLoss::Huber(d) => d,
        _ => 1.0,
    };
    ensure_loop_budget(op, k + 1, || format!("a row of {k} outputs"))?;
    let mut dispatches = Vec::with_capacity(3);
    let count = known_count(gpu, COUNT_LABELLED, opts, targets, &mut dispatches)?;
    let p = RegressionParams { rows: m as u32, cols: k as u32, scale: opts.weight, delta };
    let consts = [("REG_KIND", kind.code() as f64), ("MEAN_KNOWN", count.is_some() as u32 as f64)];
    // without a count, `targets` stands in for it (bound, never read)
    let known = count.as_ref().unwrap_or(targets);
    let buffers = [preds, targets, known, out.loss_rows, out.dlogits];
    dispatches.push(Dispatch::new(gpu, REGRESSION_LOSS, &consts, bytemuck::bytes_of(&p), &buffers, groups_1d(m, ROW_WG))?);
    accumulate(gpu, out, &mut dispatches)?;
    Ok(dispatches)
}

/// A regression head's loss, run at once (see [`regression_loss_dispatches`]).
pub fn regression_loss(
    gpu: &Gpu,
    preds: &Tensor,
    targets: &Tensor,
    kind: RegressionLoss,
    opts: &HeadLoss,
    out: &LossOutputs<'_>,
) -> Result<()> {
    let ds = regression_loss_dispatches(gpu, preds, targets, kind, opts, out)?;
    gpu.run("regression_loss", &ds.iter().collect::<Vec<_>>())
}

/// Builds a classification head's softmax cross-entropy with unknown classes: logits `[m, c]`,
/// u32 `targets` `[m]`, where [`IGNORE_CLASS`] (−1) is unknown and contributes exactly 0 to the
/// loss and the gradient (PyTorch's `cross_entropy(ignore_index=-1)`). Every other row as
/// [`softmax_xent_dispatch`] (a class ≥ c other than −1 gets a NaN loss and no gradient), scaled
/// by `w / N`, N the rows not ignored (at least 1) or 1 for [`MaskedReduction::Sum`]; with
/// `out.loss_acc` the batch's `w·L` is added to it. Returns the dispatches to record in order.
pub fn softmax_xent_masked_dispatches(
    gpu: &Gpu,
    logits: &Tensor,
    targets: &Tensor,
    opts: &HeadLoss,
    out: &LossOutputs<'_>,
) -> Result<Vec<Dispatch>> {
    let op = "softmax_xent_masked";
    let (m, c) = check_outputs(op, logits, out.loss_rows, out.dlogits)?;
    ensure(c >= 1 || m == 0, op, || format!("logits {:?} have no classes", logits.shape()))?;
    ensure_dtype(targets, DType::U32, op, "targets")?;
    ensure(targets.len() == m, op, || format!("targets have {} elements, logits {:?} have {m} rows", targets.len(), logits.shape()))?;
    check_head_loss(op, opts)?;
    ensure_loop_budget(op, 3 * (c.div_ceil(4) + 4), || format!("a row of {c} classes"))?;
    let mut dispatches = Vec::with_capacity(3);
    let count = known_count(gpu, COUNT_KNOWN_CLASSES, opts, targets, &mut dispatches)?;
    let p = LossParams { rows: m as u32, cols: c as u32, scale: opts.weight, _pad: 0 };
    let consts = [("MEAN_KNOWN", count.is_some() as u32 as f64)];
    let known = count.as_ref().unwrap_or(targets);
    let buffers = [logits, targets, out.loss_rows, out.dlogits, known];
    dispatches.push(Dispatch::new(gpu, SOFTMAX_XENT_MASKED, &consts, bytemuck::bytes_of(&p), &buffers, groups_1d(m, ROW_WG))?);
    accumulate(gpu, out, &mut dispatches)?;
    Ok(dispatches)
}

/// Softmax cross-entropy with unknown classes, run at once (see
/// [`softmax_xent_masked_dispatches`]).
pub fn softmax_xent_masked(gpu: &Gpu, logits: &Tensor, targets: &Tensor, opts: &HeadLoss, out: &LossOutputs<'_>) -> Result<()> {
    let ds = softmax_xent_masked_dispatches(gpu, logits, targets, opts, out)?;
    gpu.run("softmax_xent_masked", &ds.iter().collect::<Vec<_>>())
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct UncertaintyParams {
    pub n: u32,
    pub head: u32,
    pub in_loss: u32,
    pub _pad: u32,
}

/// One head's share of uncertainty weighting (Kendall, Gal & Cipolla 2018; see
/// [`crate::train::HeadWeighting::Uncertainty`]), after its loss kernel: with
/// `s = log_var[head]` and `L = batch_loss[0]` (the head's batch loss, read on the GPU), scales
/// `dlogits` (`∂L/∂outputs`, any shape) by `exp(−s)` in place and writes
/// `dlog_var[head] = 1 − exp(−s)·L`, or 0 when not `active` (a head left out of the loss).
/// Nothing else of `dlog_var` is written.
pub fn uncertainty_scale_dispatch(
    gpu: &Gpu,
    log_var: &Tensor,
    head: usize,
    active: bool,
    batch_loss: &Tensor,
    dlogits: &Tensor,
    dlog_var: &Tensor,
) -> Result<Dispatch> {
    let op = "uncertainty_scale";
    for (t, what) in [(log_var, "log_var"), (batch_loss, "batch_loss"), (dlogits, "dlogits"), (dlog_var, "dlog_var")] {
        ensure_dtype(t, DType::F32, op, what)?;
    }
    ensure(head < log_var.len(), op, || format!("head {head} is past the {} log-variances", log_var.len()))?;
    ensure(dlog_var.len() == log_var.len(), op, || format!("dlog_var has {} elements, log_var {}", dlog_var.len(), log_var.len()))?;
    ensure(batch_loss.len() == 1, op, || format!("batch_loss must have one element, it is {:?}", batch_loss.shape()))?;
    ensure(dlogits.len() <= u32::MAX as usize, op, || format!("dlogits {:?} have more than 2^32 elements", dlogits.shape()))?;
    let p = UncertaintyParams { n: dlogits.len() as u32, head: head as u32, in_loss: active as u32, _pad: 0 };
    // at least one workgroup: dlog_var is written even for an empty batch
    let groups = groups_1d(dlogits.len().max(1), 256);
    Dispatch::new(gpu, UNCERTAINTY_SCALE, &[], bytemuck::bytes_of(&p), &[log_var, batch_loss, dlogits, dlog_var], groups)
}

/// [`uncertainty_scale_dispatch`], run at once.
pub fn uncertainty_scale(
    gpu: &Gpu,
    log_var: &Tensor,
    head: usize,
    active: bool,
    batch_loss: &Tensor,
    dlogits: &Tensor,
    dlog_var: &Tensor,
) -> Result<()> {
    let d = uncertainty_scale_dispatch(gpu, log_var, head, active, batch_loss, dlogits, dlog_var)?;
    gpu.run("uncertainty_scale", &[&d])
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct RegressionParams {
    pub rows: u32,
    pub cols: u32,
    pub scale: f32,
    pub delta: f32,
}

#[cfg(test)]
mod tests {
    #[test]
    fn params_match_wgsl_size() {
        assert_eq!(
            crate::kernels::wgsl_struct_bytes(crate::kernels::source::LOSS_WGSL, "UncertaintyParams"),
            std::mem::size_of::<super::UncertaintyParams>()
        );
        assert_eq!(
            crate::kernels::wgsl_struct_bytes(crate::kernels::source::LOSS_WGSL, "RegressionParams"),
            std::mem::size_of::<super::RegressionParams>()
        );
        // struct Params { rows, cols: u32, scale: f32, _pad: u32 } = 16 bytes in WGSL
        assert_eq!(std::mem::size_of::<super::LossParams>(), 16);
        assert_eq!(
            crate::kernels::wgsl_struct_bytes(crate::kernels::source::LOSS_WGSL, "HeadParams"),
            std::mem::size_of::<super::HeadParams>()
        );
    }
}
