//! Forward-only work and evaluation: a network's loss and metrics over a data set
//! ([`Evaluator`]), outputs of its first layers for every example (cached frozen features,
//! predictions), and the gradients of one batch for inspection.

use super::Collective;
use super::optimizer::Grads;
use super::plan::{Accumulators, DeviceData, ForwardPlan, LogVars, Mode, Plan, PlanInputs, Rows, Scratch};
use super::{
    BatchNormMode, BceSettings, HeadWeighting, Metrics, ParamGroups, Precision, TrainConfig, bce_tensors, check_fits, validate_bce,
};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::gpu::tensor::DType;
use crate::gpu::{Gpu, Recorder, Tensor};
use crate::kernels::metrics::{LabelMetrics, RegressionMetrics};
use crate::nn::{HeadKind, Network};

/// Per layer, trunk then head: (dW `[out, in]`, db `[out]`).
pub type LayerGrads = Vec<(Vec<f32>, Vec<f32>)>;

/// The epoch's loss and metrics from the accumulators; with `replicas`, combined over them: the
/// counts summed, the loss (a sum of per-step means) averaged. A network of named heads reads
/// each head's.
pub(crate) fn read_metrics(
    gpu: &Gpu,
    acc: &Accumulators,
    net: &Network,
    batches: usize,
    replicas: Option<&dyn Collective>,
    loss_shares: bool,
) -> Result<Metrics> {
    if net.is_multi_head() {
        return read_head_metrics(gpu, acc, net, batches, replicas);
    }
    let (kind, outputs) = (net.head_kind, net.output_dim());
    let mut loss = acc.loss.download(gpu)?[0] as f64 / batches.max(1) as f64;
    let mut counts = acc.counts.download_u32(gpu)?;
    if let Some(r) = replicas {
        let mut all: Vec<f64> = std::iter::once(loss).chain(counts.iter().map(|&c| c as f64)).collect();
        r.sum_f64(&mut all)?;
        // each replica's loss is its share of each step's (gradient accumulation), or a mean
        // over its share
        loss = if loss_shares { all[0] } else { all[0] / r.size() as f64 };
        counts = all[1..].iter().map(|&c| c as u32).collect();
    }
    Ok(match kind {
        HeadKind::Classes => Metrics { loss, accuracy: Some(counts[0] as f64 / counts[1].max(1) as f64), ..Metrics::default() },
        HeadKind::Labels => Metrics { loss, labels: Some(LabelMetrics::from_counts(&counts, outputs)?), ..Metrics::default() },
        HeadKind::Regression(_) => return Err(Error::invalid("a regression head needs a network of named heads")),
    })
}

fn read_head_metrics(gpu: &Gpu, acc: &Accumulators, net: &Network, batches: usize, replicas: Option<&dyn Collective>) -> Result<Metrics> {
    let mut heads = Vec::new();
    for (h, a) in net.heads().iter().zip(&acc.heads) {
        let mut loss = a.loss.download(gpu)?[0] as f64 / batches.max(1) as f64;
        let mut counts = a.counts.download_u32(gpu)?;
        let mut sums = a.sums.as_ref().map(|t| t.download(gpu)).transpose()?.unwrap_or_default();
        if let Some(r) = replicas {
            let mut all: Vec<f64> =
                std::iter::once(loss).chain(counts.iter().map(|&c| c as f64)).chain(sums.iter().map(|&v| v as f64)).collect();
            r.sum_f64(&mut all)?;
            // each replica's loss is already its share of the batch's (`head_shares`)
            loss = all[0];
            counts = all[1..1 + counts.len()].iter().map(|&c| c as u32).collect();
            sums = all[1 + counts.len()..].iter().map(|&v| v as f32).collect();
        }
        let mut m = crate::train::HeadMetrics {
            name: h.name.clone(),
            kind: h.kind,
            weight: h.weight,
            weighted_loss: loss,
            log_var: h.log_var.map(f64::from),
            accuracy: None,
            labels: None,
            regression: None,
        };
        match h.kind {
            // no example with a class: no accuracy (n/a), not 0
            HeadKind::Classes => m.accuracy = (counts[1] > 0).then(|| counts[0] as f64 / counts[1] as f64),
            HeadKind::Labels => m.labels = Some(LabelMetrics::from_counts(&counts, h.outputs)?),
            HeadKind::Regression(_) => m.regression = Some(RegressionMetrics::from_sums(&sums, &counts, h.outputs)?),
        }
        heads.push(m);
    }
    let loss = heads.iter().map(|h| h.weighted_loss).sum();
    Ok(Metrics { loss, heads, ..Metrics::default() })
}

/// Computes the outputs of the frozen layers `0..upto` for every example of `data` once:
/// `[n, outputs of layer upto − 1]`, chunked like the data when it is larger than one binding.
/// With `precision` [`Precision::F16`] they are stored in f16, two per u32 word, and every batch
/// read from them is widened back to f32.
pub(crate) fn frozen_features(
    gpu: &Gpu,
    net: &Network,
    data: &DeviceData,
    upto: usize,
    batch: usize,
    precision: Precision,
) -> Result<Rows> {
    let f16 = precision == Precision::F16;
    let features = forward_rows_to(gpu, net, &data.x, data.n, 0, upto, batch, "frozen_features", f16)?;
    // Wait for them here, once per run (never in the epoch loop): the run's time outside its
    // epochs is then the features' time (FitReport, C2's rate), not the time to submit them
    // with the trunk's work left to slow the first epoch.
    gpu.sync()?;
    Ok(features)
}

/// Runs layers `0..upto` over all `n` rows of `x` in order, `batch` rows per submission, and
/// returns the last layer's outputs `[n, outputs]` (chunked like any resident data).
pub(crate) fn forward_rows(gpu: &Gpu, net: &Network, x: &Rows, n: usize, upto: usize, batch: usize, label: &str) -> Result<Rows> {
    forward_rows_from(gpu, net, x, n, 0, upto, batch, label)
}

/// [`forward_rows`] from layer `first` on, `x` being the input of layer `first`.
#[allow(clippy::too_many_arguments)]
fn forward_rows_from(gpu: &Gpu, net: &Network, x: &Rows, n: usize, first: usize, upto: usize, batch: usize, label: &str) -> Result<Rows> {
    forward_rows_to(gpu, net, x, n, first, upto, batch, label, false)
}

/// [`forward_rows_from`], the outputs stored in f16 where `f16` (each batch's rows packed as they
/// come out, so no f32 copy of the whole set is ever held).
#[allow(clippy::too_many_arguments)]
fn forward_rows_to(
    gpu: &Gpu,
    net: &Network,
    x: &Rows,
    n: usize,
    first: usize,
    upto: usize,
    batch: usize,
    label: &str,
    f16: bool,
) -> Result<Rows> {
    let d = net.layers()[upto - 1].outputs();
    let out = if f16 { Rows::alloc_f16(gpu, n, d, label)? } else { Rows::alloc(gpu, n, &[d], DType::F32, label)? };
    let identity: Vec<u32> = (0..n as u32).collect();
    let indices = Tensor::from_u32(gpu, &[n], &identity)?;
    let b = batch.clamp(1, n);
    let full = ForwardPlan::build(gpu, net, x, &indices, first, upto, b)?;
    let rem = n % b;
    let partial = if rem > 0 { Some(ForwardPlan::build(gpu, net, x, &indices, first, upto, rem)?) } else { None };
    // f16: per plan, one launch per chunk of `out` packing the plan's output rows
    let packs_of = |p: &ForwardPlan| if f16 { out.packs(gpu, &p.output) } else { Ok(Vec::new()) };
    let full_packs = packs_of(&full)?;
    let partial_packs = partial.as_ref().map(packs_of).transpose()?;
    let mut start = 0;
    while start < n {
        let rows = b.min(n - start);
        let (plan, packs) = match (&partial, &partial_packs) {
            (Some(p), Some(pk)) if rows != b => (p, pk),
            _ => (&full, &full_packs),
        };
        plan.set_offset(gpu, start)?;
        for p in packs {
            p.set_start(gpu, start)?;
        }
        let mut rec = Recorder::new(gpu, label);
        rec.pass(label, plan.dispatches().chain(packs.iter().map(|p| p.dispatch())));
        if !f16 {
            out.copy_rows_from(&mut rec, &plan.output, start, rows)?;
        }
        rec.submit();
        start += rows;
    }
    gpu.check(label)?;
    Ok(out)
}

/// Evaluation over a resident data set: forward, loss, metrics; read once.
pub(crate) struct Evaluator {
    full: Plan,
    partial: Option<Plan>,
    acc: Accumulators,
    _scratch: Scratch,
    _indices: Tensor,
    n: usize,
    b: usize,
}

impl Evaluator {
    pub(crate) fn tensors(&self) -> Vec<&Tensor> {
        let mut v = self._scratch.tensors();
        v.extend(self.acc.tensors());
        v.push(&self._indices);
        v
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
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
        let scratch = Scratch::new(gpu, net, first, b, Mode::Eval, data, &[], false)?;
        let acc = Accumulators::for_net(gpu, net)?;
        let identity: Vec<u32> = (0..data.n as u32).collect();
        let indices = Tensor::from_u32(gpu, &[data.n], &identity)?;
        let inputs = PlanInputs {
            net,
            mode: Mode::Eval,
            first,
            source_x,
            source_y: &data.y,
            source_heads: &data.heads,
            indices: &indices,
            scratch: &scratch,
            grads: None,
            acc: &acc,
            bce: &cfg.bce,
            bce_tensors: bce,
            threshold: cfg.threshold,
            optimizer: None,
            // an evaluation draws no dropout masks and augments nothing
            seed: 0,
            augment: None,
            log_vars: None,
        };
        let full = Plan::build(gpu, &inputs, b)?;
        let rem = data.n % b;
        let partial = if rem > 0 { Some(Plan::build(gpu, &inputs, rem)?) } else { None };
        Ok(Evaluator { full, partial, acc, _scratch: scratch, _indices: indices, n: data.n, b })
    }

    pub(crate) fn run(&self, gpu: &Gpu, net: &Network) -> Result<Metrics> {
        self.acc.reset(gpu)?;
        let steps = self.n.div_ceil(self.b);
        for s in 0..steps {
            let plan = if s == steps - 1 && self.partial.is_some() { self.partial.as_ref().unwrap_or(&self.full) } else { &self.full };
            plan.set_offset(gpu, s * self.b)?;
            let mut rec = Recorder::new(gpu, "eval_step");
            rec.pass("eval_step", plan.dispatches());
            rec.submit();
        }
        read_metrics(gpu, &self.acc, net, steps, None, false)
    }
}

/// The loss gradients of every layer for one batch holding all of `data` (no update): what
/// backward computes, read back for inspection and gradient checks. `(dW [out, in], db [out])`
/// per layer, trunk then head, and the batch loss. BatchNorm layers use their running
/// statistics (see [`gradients_with`]); dropout layers draw the masks of seed 0 at step 1 for
/// rows at positions 0.. (`reference::layers::dropout_mask(0, 1, 0, ..)`).
pub fn gradients(gpu: &Gpu, net: &Network, data: &Dataset, bce: &BceSettings) -> Result<(f64, LayerGrads)> {
    gradients_with(gpu, net, data, bce, BatchNormMode::Frozen)
}

/// [`gradients`] with the BatchNorm layers in `batch_norm`'s mode: with
/// [`BatchNormMode::Train`] (or `Auto`, every layer training here) they normalise with the
/// batch's statistics, the gradient flows through them, and — like a forward pass in PyTorch's
/// `model.train()` — their running statistics are updated once.
pub fn gradients_with(gpu: &Gpu, net: &Network, data: &Dataset, bce: &BceSettings, batch_norm: BatchNormMode) -> Result<(f64, LayerGrads)> {
    let (loss, grads, _) = gradients_inner(gpu, net, data, bce, batch_norm, HeadWeighting::Fixed)?;
    Ok((loss, grads))
}

/// [`gradients`] of a network of named heads under `weighting`: the loss
/// (`Σ_t exp(−s_t)·w_t·L_t + s_t` under [`HeadWeighting::Uncertainty`], with each head's
/// [`log_var`](crate::nn::HeadInfo::log_var) or 0 as `s_t`), every layer's gradient, and
/// `∂L/∂s_t` per head (empty under [`HeadWeighting::Fixed`]).
///
/// ```no_run
/// use headswap::{Gpu, kernels::loss::RegressionLoss, nn::{Head, Init, Network, Trunk}};
/// use headswap::train::{BceSettings, HeadWeighting, gradients_weighted};
/// # fn data() -> headswap::data::Dataset { unimplemented!() }
/// let gpu = Gpu::new()?;
/// let heads = [Head::classes(3).named("scene"), Head::regression(1, RegressionLoss::Mse).named("distance")];
/// let net = Network::from_trunk_heads(&gpu, 4, Trunk::chain(vec![]), Init::KaimingUniform, &heads, 1)?;
/// let (loss, layers, dlog_var) = gradients_weighted(&gpu, &net, &data(), &BceSettings::default(), HeadWeighting::Uncertainty)?;
/// assert_eq!(dlog_var.len(), 2);
/// # Ok::<(), headswap::Error>(())
/// ```
pub fn gradients_weighted(
    gpu: &Gpu,
    net: &Network,
    data: &Dataset,
    bce: &BceSettings,
    weighting: HeadWeighting,
) -> Result<(f64, LayerGrads, Vec<f32>)> {
    gradients_inner(gpu, net, data, bce, BatchNormMode::Frozen, weighting)
}

fn gradients_inner(
    gpu: &Gpu,
    net: &Network,
    data: &Dataset,
    bce: &BceSettings,
    batch_norm: BatchNormMode,
    weighting: HeadWeighting,
) -> Result<(f64, LayerGrads, Vec<f32>)> {
    validate_bce(bce)?;
    check_fits(net, data)?;
    let dev = DeviceData::upload(gpu, data)?;
    let mode = Mode::Train { lowest: 0 };
    let every = ParamGroups::new().train("*", 1.0).resolve(net)?;
    let batch_stats = batch_norm.batch_stats(&net.layers(), &every);
    let scratch = Scratch::new(gpu, net, 0, dev.n, mode, &dev, &batch_stats, false)?;
    let grads = Grads::new(gpu, net, &every)?;
    let acc = Accumulators::for_net(gpu, net)?;
    acc.reset(gpu)?;
    let identity: Vec<u32> = (0..dev.n as u32).collect();
    let indices = Tensor::from_u32(gpu, &[dev.n], &identity)?;
    let bce_t = bce_tensors(gpu, bce, net)?;
    let log_vars = match weighting {
        HeadWeighting::Fixed => None,
        HeadWeighting::Uncertainty => Some(LogVars::new(gpu, net)?),
    };
    let inputs = PlanInputs {
        net,
        mode,
        first: 0,
        source_x: &dev.x,
        source_y: &dev.y,
        source_heads: &dev.heads,
        indices: &indices,
        scratch: &scratch,
        grads: Some(&grads),
        acc: &acc,
        bce,
        bce_tensors: &bce_t,
        threshold: 0.5,
        optimizer: None,
        // dropout's masks: seed 0 at step 1, offset 0 (the launches' initial values)
        seed: 0,
        augment: None,
        log_vars: log_vars.as_ref(),
    };
    let plan = Plan::build(gpu, &inputs, dev.n)?;
    plan.set_offset(gpu, 0)?;
    let mut rec = Recorder::new(gpu, "gradients");
    rec.pass("gradients", plan.dispatches());
    rec.submit();
    let mut dlog_var = Vec::new();
    let loss = if let Some(lv) = &log_vars {
        // Σ exp(−s_t)·(w_t·L_t) + s_t over the heads in the loss (weight > 0)
        let s = lv.params.download(gpu)?;
        dlog_var = lv.grad.download(gpu)?;
        let mut total = 0.0;
        for ((h, acc), s) in net.heads().iter().zip(&acc.heads).zip(&s) {
            if h.weight > 0.0 {
                total += (-(*s as f64)).exp() * acc.loss.download(gpu)?[0] as f64 + *s as f64;
            }
        }
        total
    } else if net.is_multi_head() {
        acc.heads.iter().map(|h| Ok(h.loss.download(gpu)?[0] as f64)).sum::<Result<f64>>()?
    } else {
        acc.loss.download(gpu)?[0] as f64
    };
    let out = (0..net.layers().len())
        .map(|i| {
            if !net.layers()[i].has_params() {
                return Ok((Vec::new(), Vec::new()));
            }
            let (w, b) = grads.views(net, i)?;
            Ok((w.download(gpu)?, b.download(gpu)?))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((loss, out, dlog_var))
}

/// Outputs of `net` for `n` examples `x` (`[n, input_dim]`): class probabilities (softmax) for
/// class heads, per-label probabilities (sigmoid) for label heads. `[n, outputs]`.
pub fn predict(net: &Network, x: &[f32], n: usize, batch: usize) -> Result<Vec<f32>> {
    if net.is_multi_head() {
        return Err(Error::invalid("predict: this network has several heads; use predict_heads"));
    }
    let mut out = predict_logits(net, x, n, batch)?;
    activate_outputs(net.head_kind, &mut out, net.output_dim());
    Ok(out)
}

/// A head's logits into what it predicts, in place: class probabilities (softmax), label
/// probabilities (sigmoid) or the regression values themselves.
fn activate_outputs(kind: HeadKind, out: &mut [f32], k: usize) {
    match kind {
        HeadKind::Regression(_) => {}
        HeadKind::Labels => out.iter_mut().for_each(|v| *v = crate::reference::sigmoid(*v as f64) as f32),
        HeadKind::Classes => {
            for row in out.chunks_mut(k) {
                let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                let sum: f64 = row.iter().map(|&v| ((v - max) as f64).exp()).sum();
                row.iter_mut().for_each(|v| *v = (((*v - max) as f64).exp() / sum) as f32);
            }
        }
    }
}

/// What every named head of `net` predicts for `n` examples `x` (`[n, input_dim]`), in the
/// network's order: `(name, [n, outputs])` of class probabilities (softmax), label
/// probabilities (sigmoid) or regression values. The trunk runs once; each head reads its output.
pub fn predict_heads(net: &Network, x: &[f32], n: usize, batch: usize) -> Result<Vec<(String, Vec<f32>)>> {
    let mut out = predict_heads_logits(net, x, n, batch)?;
    for ((_, values), h) in out.iter_mut().zip(net.heads()) {
        activate_outputs(h.kind, values, h.outputs);
    }
    Ok(out)
}

/// Every named head's logits, `(name, [n, outputs])` in the network's order: its output layer's
/// values before any softmax or sigmoid, as [`predict_logits`] gives them for one head.
pub fn predict_heads_logits(net: &Network, x: &[f32], n: usize, batch: usize) -> Result<Vec<(String, Vec<f32>)>> {
    if !net.is_multi_head() {
        return Err(Error::invalid("predict_heads: this network has one unnamed head; use predict"));
    }
    let gpu = net.gpu();
    let xs = input_rows(net, x, n, "predict_heads")?;
    let t = net.trunk.len();
    let features = if t > 0 { forward_rows(gpu, net, &xs, n, t, batch, "predict_features")? } else { xs };
    let mut out = Vec::new();
    for h in net.heads() {
        let logits = forward_rows_from(gpu, net, &features, n, t, h.layers.end, batch, "predict_heads")?;
        out.push((h.name.clone(), logits.download(gpu)?));
    }
    Ok(out)
}

/// `x` (`[n, input_dim]`, checked) resident on the GPU.
fn input_rows(net: &Network, x: &[f32], n: usize, op: &str) -> Result<Rows> {
    let d = net.input_dim();
    if n == 0 || x.len() != n * d {
        return Err(Error::shape(format!("{op}: {} values for {n} examples of {d} features", x.len())));
    }
    if x.iter().any(|v| !v.is_finite()) {
        return Err(Error::invalid(format!("{op}: the inputs contain NaN or infinity")));
    }
    let xs = Rows::alloc(net.gpu(), n, &[d], DType::F32, &format!("{op}_x"))?;
    xs.write_f32(net.gpu(), x)?;
    Ok(xs)
}

/// The trunk's outputs of `net` for `n` examples `x` (`[n, input_dim]`): the features its head
/// reads, `[n, trunk_output_dim]` (torchvision's `fc` input, after the average pool), in
/// inference mode like [`predict_logits`]. A network without trunk layers gives `x` back.
pub fn predict_features(net: &Network, x: &[f32], n: usize, batch: usize) -> Result<Vec<f32>> {
    let gpu = net.gpu();
    let d = net.input_dim();
    if n == 0 || x.len() != n * d {
        return Err(Error::shape(format!("predict: {} values for {n} examples of {d} features", x.len())));
    }
    if x.iter().any(|v| !v.is_finite()) {
        return Err(Error::invalid("predict: the inputs contain NaN or infinity"));
    }
    let upto = net.trunk_layers().len();
    if upto == 0 {
        return Ok(x.to_vec());
    }
    let xs = Rows::alloc(gpu, n, &[d], DType::F32, "features_x")?;
    xs.write_f32(gpu, x)?;
    forward_rows(gpu, net, &xs, n, upto, batch, "features")?.download(gpu)
}

/// The logits of `net` for `n` examples `x` (`[n, input_dim]`): the output layer's values
/// before any softmax or sigmoid, `[n, outputs]` — what a PyTorch model returns in `eval()` mode
/// (BatchNorms use their running statistics).
pub fn predict_logits(net: &Network, x: &[f32], n: usize, batch: usize) -> Result<Vec<f32>> {
    let gpu = net.gpu();
    let xs = input_rows(net, x, n, "predict")?;
    let logits = forward_rows(gpu, net, &xs, n, net.layers().len(), batch, "predict")?;
    logits.download(gpu)
}
