//! Step plans: every dispatch of a training (or evaluation) step, with its pipeline and bind
//! group, built once per (network, trainable set, batch size) and re-recorded every step.
//!
//! Data flow of a training step with batch B (shapes in comments):
//!
//! ```text
//! gather x[idx], y[idx] ─► layer 0 … layer L−1 (matmul NT + bias + act, fused) ─► logits (B, out)
//!   ─► loss kernel: loss_rows (B), dlogits (B, out) ─► sum into the epoch's loss accumulator
//!   ─► metrics kernel: counts accumulate
//!      (a small batch, B·out ≤ 16,384: all of it and the output layer's db in one fused launch)
//!   ─► backward, top layer down to the lowest trainable one:
//!        dz = da ⊙ f'(·)  │  dW = dzᵀ·input (matmul TN)  │  db = Σ_rows dz  │  da_below = dz·W (NN,
//!        skipped for the lowest trainable layer: nothing below needs it)
//!   ─► optimizer: each trainable range (a param group) at its learning rate, two ranges per
//!      dispatch or one per range, whichever the device measured faster
//! ```
//! Frozen layers get no grad/moment buffers and no weight-gradient dispatches; below the lowest
//! trainable layer they get no da/dz buffers and no backward dispatches at all. A dense BCE output
//! layer trained alone on cached features can take one fused launch for everything up to the
//! optimizer (`linear_head_bce`), where this device measured it faster.

use crate::error::{Error, Result};
use crate::gpu::pipelines::StepUniforms;
use crate::gpu::tensor::DType;
use crate::gpu::{Dispatch, Gpu, Tensor};
use crate::kernels::augment::{self, Augment, AugmentLaunch};
use crate::kernels::conv::{self, ConvScratch, ConvUse};
use crate::kernels::gather::{IndexedDispatch, gather_rows_pair};
use crate::kernels::layers::{self as layer_kernels, DropoutLaunch};
use crate::kernels::matmul::{Epilogue, Transpose, matmul_dispatch};
use crate::kernels::matmul::{Gathered, Operand, Options, matmul_dispatch_gathered_ops, matmul_dispatch_ops};
use crate::kernels::optim::OptimStep;
use crate::kernels::pool::AdaptivePool2dShape;
use crate::kernels::{Activation, elementwise, loss, metrics, norm, reduce};
use crate::nn::{HeadKind, LayerSpec, Network};
use crate::train::Precision;
pub(crate) use crate::train::device_data::{DeviceData, Rows};
use crate::train::optimizer::{Grads, Optim};

/// Loss settings that apply to a label (BCE) head.
#[derive(Debug, Clone, Default)]
pub struct BceSettings {
    /// Per-label positive weight (PyTorch `pos_weight`), length k.
    pub pos_weight: Option<Vec<f32>>,
    /// Per-label loss weight, length k.
    pub label_weight: Option<Vec<f32>>,
    pub reduction: loss::BceReduction,
}

/// GPU accumulators for an epoch: the loss sum and the metric counts, read once per epoch.
pub(crate) struct Accumulators {
    pub loss: Tensor,   // (1)
    pub counts: Tensor, // u32 (2) correct/total, or (k, 4) TP/FP/TN/FN
    /// A network of named heads: one set per head, in the network's order (`loss` and `counts`
    /// above are then unused).
    pub heads: Vec<HeadAccumulators>,
}

/// One named head's epoch sums: its weighted loss `w·L` and its metric counts.
pub(crate) struct HeadAccumulators {
    pub loss: Tensor, // (1)
    /// u32: (2) correct/total over known classes, (k, 4) TP/FP/TN/FN, or (k) known targets
    pub counts: Tensor,
    /// Regression: f32 (k, 2) Σ|e|, Σe².
    pub sums: Option<Tensor>,
}

fn counts_of(gpu: &Gpu, kind: HeadKind, outputs: usize) -> Result<Tensor> {
    match kind {
        HeadKind::Classes => Tensor::alloc(gpu, &[2], DType::U32, "acc_counts"),
        HeadKind::Labels => Tensor::alloc(gpu, &[outputs, 4], DType::U32, "acc_counts"),
        HeadKind::Regression(_) => Tensor::alloc(gpu, &[outputs], DType::U32, "acc_counts"),
    }
}

impl Accumulators {
    pub fn new(gpu: &Gpu, kind: HeadKind, outputs: usize) -> Result<Accumulators> {
        let counts = counts_of(gpu, kind, outputs)?;
        Ok(Accumulators { loss: Tensor::alloc(gpu, &[1], DType::F32, "acc_loss")?, counts, heads: Vec::new() })
    }
    /// The accumulators `net`'s loss section adds to: one set, or one per named head.
    pub fn for_net(gpu: &Gpu, net: &Network) -> Result<Accumulators> {
        let mut acc = Accumulators::new(gpu, net.head_kind, if net.is_multi_head() { 1 } else { net.output_dim() })?;
        for h in net.heads() {
            let sums = match h.kind {
                HeadKind::Regression(_) => Some(Tensor::alloc(gpu, &[h.outputs, 2], DType::F32, "acc_sums")?),
                _ => None,
            };
            acc.heads.push(HeadAccumulators {
                loss: Tensor::alloc(gpu, &[1], DType::F32, "acc_loss")?,
                counts: counts_of(gpu, h.kind, h.outputs)?,
                sums,
            });
        }
        Ok(acc)
    }
    pub fn tensors(&self) -> Vec<&Tensor> {
        let mut v = vec![&self.loss, &self.counts];
        for h in &self.heads {
            v.push(&h.loss);
            v.push(&h.counts);
            v.extend(h.sums.iter());
        }
        v
    }
    pub fn reset(&self, gpu: &Gpu) -> Result<()> {
        self.loss.write(gpu, &[0.0])?;
        self.counts.write_u32(gpu, &vec![0; self.counts.len()])?;
        for h in &self.heads {
            h.loss.write(gpu, &[0.0])?;
            h.counts.write_u32(gpu, &vec![0; h.counts.len()])?;
            if let Some(sums) = &h.sums {
                sums.write(gpu, &vec![0.0; sums.len()])?;
            }
        }
        Ok(())
    }
}

/// Per-step scratch tensors sized for the largest batch; partial batches use row views.
pub(crate) struct Scratch {
    rows: usize,
    x: Tensor,
    y: Tensor,
    z: Vec<Option<Tensor>>,
    a: Vec<Tensor>,
    da: Vec<Option<Tensor>>,
    dz: Vec<Option<Tensor>>,
    /// Max-pool layers: the argmax of every output (u32), for the backward pass.
    argmax: Vec<Option<Tensor>>,
    /// Outputs read by several layers: where a second reader's gradient goes before it is added
    /// into `da` (the first reader writes `da` directly).
    grad_tmp: Vec<Option<Tensor>>,
    /// Training-mode BatchNorm layers: the step's batch mean and inverse std `[2, C]`, which
    /// the backward pass reads; `None` for every other layer (inference-mode BNs included).
    saved: Vec<Option<Tensor>>,
    loss_rows: Tensor,
    dlogits: Tensor,
    /// A network of named heads, per head: the batch's targets (u32 `[rows, 1]` classes, f32
    /// `[rows, k]` labels or regression values) and the gradient of `w·L` w.r.t. its outputs
    /// (its output layer's `da` where that trains).
    head_y: Vec<Tensor>,
    head_dlogits: Vec<Tensor>,
    /// With augmentation: the gathered batch before it (the layers read `x`, the augmented one).
    x_raw: Option<Tensor>,
}

/// What a plan computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Forward, loss, metrics, backward down to layer `lowest`.
    Train { lowest: usize },
    /// Forward, loss, metrics.
    Eval,
}

fn needs_z(mode: Mode, layer: usize, act: Activation) -> bool {
    matches!(mode, Mode::Train { lowest } if layer >= lowest && !act.grad_from_output())
}

impl Scratch {
    pub fn tensors(&self) -> Vec<&Tensor> {
        let mut v = vec![&self.x, &self.y, &self.loss_rows, &self.dlogits];
        v.extend(self.x_raw.iter());
        v.extend(self.a.iter());
        v.extend(self.head_y.iter().chain(&self.head_dlogits));
        for t in self.z.iter().chain(&self.da).chain(&self.dz).chain(&self.argmax).chain(&self.grad_tmp).chain(&self.saved).flatten() {
            v.push(t);
        }
        v
    }

    /// `first` is the first layer computed (the trunk's depth when reading cached features);
    /// `batch_stats[i]`: BatchNorm layer `i` trains in training mode (empty: none does);
    /// `augmented`: the batch is augmented before the first layer (a second batch buffer).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        gpu: &Gpu,
        net: &Network,
        first: usize,
        rows: usize,
        mode: Mode,
        data: &DeviceData,
        batch_stats: &[bool],
        augmented: bool,
    ) -> Result<Scratch> {
        let layers = net.layers();
        let in_dim = if first == 0 { net.input_dim() } else { layers[first - 1].outputs() };
        let mut z = Vec::new();
        let mut a = Vec::new();
        let mut da = Vec::new();
        let mut dz = Vec::new();
        let mut argmax = Vec::new();
        let mut grad_tmp = Vec::new();
        let mut saved = Vec::new();
        let f32a = |shape: &[usize], label: &str| Tensor::alloc(gpu, shape, DType::F32, label);
        // readers of each layer's output among the layers computed
        let mut readers = vec![0usize; layers.len()];
        for v in net.sources()[first..].iter().flatten().filter(|&&v| v > first) {
            readers[v - 1] += 1;
        }
        for (i, s) in layers.iter().enumerate() {
            let shape = [rows, s.outputs()];
            let active = i >= first;
            z.push(if active && needs_z(mode, i, s.activation()) { Some(f32a(&shape, "z")?) } else { None });
            a.push(if active { f32a(&shape, "a")? } else { f32a(&[1], "unused")? });
            let trainable = matches!(mode, Mode::Train { lowest } if i >= lowest);
            da.push(if trainable { Some(f32a(&shape, "da")?) } else { None });
            dz.push(if trainable && s.activation() != Activation::Identity { Some(f32a(&shape, "dz")?) } else { None });
            argmax.push(match s {
                LayerSpec::MaxPool2d(_) if active => Some(Tensor::alloc(gpu, &shape, DType::U32, "argmax")?),
                _ => None,
            });
            grad_tmp.push(if trainable && readers[i] > 1 { Some(f32a(&shape, "grad_tmp")?) } else { None });
            saved.push(match s {
                LayerSpec::BatchNorm(bn) if active && trainable && batch_stats.get(i) == Some(&true) => {
                    if bn.height * bn.width * rows < 2 {
                        return Err(Error::invalid(format!(
                            "layer {i} ({}) trains in training mode, which needs more than one value per channel: a batch of {rows} has {}; use a larger batch, or BatchNormMode::Frozen",
                            s.describe(),
                            rows * bn.height * bn.width
                        )));
                    }
                    Some(f32a(&[2, bn.channels], "bn_saved")?)
                }
                _ => None,
            });
        }
        let out = net.output_dim();
        let y = match data.kind {
            HeadKind::Classes => Tensor::alloc(gpu, &[rows, 1], DType::U32, "batch_y")?,
            HeadKind::Labels | HeadKind::Regression(_) => f32a(&[rows, data.outputs], "batch_y")?,
        };
        let dlogits = match da.last() {
            Some(Some(t)) => t.clone(),
            _ => f32a(&[rows, out], "dlogits_eval")?,
        };
        let (mut head_y, mut head_dlogits) = (Vec::new(), Vec::new());
        for h in net.heads() {
            head_y.push(match h.kind {
                HeadKind::Classes => Tensor::alloc(gpu, &[rows, 1], DType::U32, "batch_y")?,
                _ => f32a(&[rows, h.outputs], "batch_y")?,
            });
            head_dlogits.push(match &da[h.layers.end - 1] {
                Some(t) => t.clone(),
                None => f32a(&[rows, h.outputs], "dlogits_eval")?,
            });
        }
        let (x, loss_rows) = (f32a(&[rows, in_dim], "batch_x")?, f32a(&[rows], "loss_rows")?);
        let x_raw = if augmented { Some(f32a(&[rows, in_dim], "batch_x_raw")?) } else { None };
        Ok(Scratch { rows, x, y, z, a, da, dz, argmax, grad_tmp, saved, loss_rows, dlogits, head_y, head_dlogits, x_raw })
    }
}

fn rows_view(t: &Tensor, rows: usize) -> Result<Tensor> {
    let mut shape = t.shape().to_vec();
    shape[0] = rows;
    t.view(0, &shape)
}

fn opt_rows(t: &Option<Tensor>, rows: usize) -> Result<Option<Tensor>> {
    t.as_ref().map(|t| rows_view(t, rows)).transpose()
}

/// `t` (rows × features) seen as `[rows, C, H, W]`.
fn nchw(t: &Tensor, rows: usize, chw: [usize; 3]) -> Result<Tensor> {
    t.reshape(&[rows, chw[0], chw[1], chw[2]])
}

/// The `[C, H, W]` a spatial layer reads.
fn in_chw(spec: &LayerSpec) -> [usize; 3] {
    match *spec {
        LayerSpec::Conv2d(c) => [c.in_channels, c.height, c.width],
        LayerSpec::MaxPool2d(p) | LayerSpec::AvgPool2d(p) => [p.channels, p.height, p.width],
        LayerSpec::GlobalAvgPool { channels, height, width } => [channels, height, width],
        LayerSpec::Dense(d) => [d.inputs, 1, 1],
        LayerSpec::Add(a) => a.chw.unwrap_or([a.features, 1, 1]),
        LayerSpec::BatchNorm(b) => [b.channels, b.height, b.width],
        LayerSpec::Dropout(d) => d.chw.unwrap_or([d.features, 1, 1]),
        LayerSpec::AdaptiveAvgPool2d(a) => [a.channels, a.height, a.width],
        LayerSpec::ChannelLast { channels, height, width } => [channels, height, width],
        LayerSpec::ChannelMul(m) => [m.channels, m.height, m.width],
        LayerSpec::Concat(c) => [c.channels[0], c.height, c.width],
    }
}

/// The adaptive pool's kernel shape for a batch of `rows`.
fn adaptive_shape(a: &crate::nn::AdaptivePoolSpec, rows: usize) -> AdaptivePool2dShape {
    AdaptivePool2dShape { n: rows, c: a.channels, h: a.height, w: a.width, oh: a.out_height, ow: a.out_width }
}

/// Where a layer reading several values writes value `v`'s gradient: `v`'s `da` if no reader
/// wrote it yet, else the value's scratch, to be added into `da` (the second of the pair).
fn grad_target(s: &Scratch, rows: usize, written: &mut [bool], v: usize) -> Result<(Tensor, Option<Tensor>)> {
    let dv = opt_rows(&s.da[v - 1], rows)?.ok_or_else(|| Error::invalid("missing gradient below"))?;
    if !std::mem::replace(&mut written[v], true) {
        return Ok((dv, None));
    }
    let tmp = opt_rows(&s.grad_tmp[v - 1], rows)?.ok_or_else(|| Error::invalid("missing gradient scratch"))?;
    Ok((tmp, Some(dv)))
}

/// The `[C, H, W]` images the network's first layer reads, `None` where it reads flat rows.
pub(crate) fn image_input(net: &Network) -> Option<[usize; 3]> {
    let first = *net.layers().first()?;
    match first {
        LayerSpec::Dense(_) | LayerSpec::Dropout(_) | LayerSpec::Add(_) | LayerSpec::Concat(_) | LayerSpec::ChannelMul(_) => None,
        LayerSpec::BatchNorm(b) if !b.spatial => None,
        spec => Some(in_chw(&spec)),
    }
}

/// Per-layer buffers a plan keeps alive besides the scratch: convolution workspaces, and the
/// folded weight and bias of a frozen convolution whose BatchNorm is folded into it.
#[derive(Default)]
pub(crate) struct Workspaces {
    conv: Vec<Option<ConvScratch>>,
    folded: Vec<Option<(Tensor, Tensor)>>,
    /// Layers whose parameters are stored in f16: one f32 buffer, sized for the largest such
    /// layer, that each of them is widened into right before it runs (the same submission), so
    /// a plan holds the f16 trunk and one layer in f32.
    widened: Option<Tensor>,
    /// f16 conv → BN pairs, folded as they run: the BatchNorm's γ and β widened (sized for the
    /// largest BatchNorm), and the folded weight and bias (sized for the largest convolution),
    /// each one buffer shared by every such pair, so the f16 trunk keeps its saving.
    widened_bn: Option<Tensor>,
    folded_f16: Option<Tensor>,
}

impl Workspaces {
    /// Layer `i`'s weight and bias views in f32: its own for an f32 layer; for an f16 one, the
    /// shared widening buffer, after a launch (pushed to `out`) that widens the layer into it.
    fn params_f32(&mut self, gpu: &Gpu, net: &Network, i: usize, out: &mut Launches) -> Result<(Tensor, Tensor)> {
        let spec = net.layers()[i];
        if net.layer_storage(i) != Precision::F16 || !spec.has_params() {
            return net.param_views(i);
        }
        let (arena, slot) = net.slot(i);
        let wide = self.widened(gpu, arena)?;
        let span = wide.view(0, &[slot.end - slot.w])?;
        out.push(crate::kernels::gather::widen_f16(gpu, &arena.buf, slot.w / 2, &span)?);
        let shape = spec.weight_shape().unwrap_or_default();
        Ok((wide.view(0, &shape)?, wide.view(slot.b - slot.w, &[spec.bias_len()])?))
    }

    /// Layer `j`'s BatchNorm γ and β widened to f32 into their own shared buffer (after a launch
    /// pushed to `out`), apart from the convolution's widened weight that they fold into.
    fn bn_params_f32(&mut self, gpu: &Gpu, net: &Network, j: usize, out: &mut Launches) -> Result<(Tensor, Tensor)> {
        if net.layer_storage(j) != Precision::F16 {
            return net.param_views(j);
        }
        let (arena, slot) = net.slot(j);
        if self.widened_bn.is_none() {
            let largest = net
                .layers()
                .iter()
                .enumerate()
                .filter(|(k, l)| matches!(l, LayerSpec::BatchNorm(_)) && net.layer_storage(*k) == Precision::F16)
                .map(|(k, _)| net.slot(k).1)
                .map(|s| s.end - s.w)
                .max()
                .unwrap_or(0);
            self.widened_bn = Some(Tensor::alloc(gpu, &[largest.max(2)], DType::F32, "widened_bn_params")?);
        }
        let wide = self.widened_bn.clone().ok_or_else(|| Error::invalid("no widening buffer"))?;
        out.push(crate::kernels::gather::widen_f16(gpu, &arena.buf, slot.w / 2, &wide.view(0, &[slot.end - slot.w])?)?);
        let c = net.layers()[j].bias_len();
        Ok((wide.view(0, &[c])?, wide.view(slot.b - slot.w, &[c])?))
    }

    /// Where an f16 conv → BN pair's folded weight (`shape`) and bias (`channels`) go: one
    /// buffer for every such pair, allocated at first use for the largest convolution.
    fn folded_f16(&mut self, gpu: &Gpu, net: &Network, shape: &[usize], channels: usize) -> Result<(Tensor, Tensor)> {
        let bias_at = shape.iter().product::<usize>().next_multiple_of(crate::nn::ALIGN);
        if self.folded_f16.is_none() {
            let largest = net
                .layers()
                .iter()
                .filter_map(|l| match l {
                    LayerSpec::Conv2d(c) => Some(
                        l.weight_shape().map_or(0, |s| s.iter().product::<usize>()).next_multiple_of(crate::nn::ALIGN) + c.out_channels,
                    ),
                    _ => None,
                })
                .max()
                .unwrap_or(0);
            self.folded_f16 = Some(Tensor::alloc(gpu, &[largest], DType::F32, "folded_f16_pairs")?);
        }
        let buf = self.folded_f16.clone().ok_or_else(|| Error::invalid("no folding buffer"))?;
        Ok((buf.view(0, shape)?, buf.view(bias_at, &[channels])?))
    }

    /// The widening buffer, allocated at first use for the largest layer of `arena`.
    fn widened(&mut self, gpu: &Gpu, arena: &crate::nn::Arena) -> Result<Tensor> {
        if self.widened.is_none() {
            let largest = arena.slots.iter().map(|s| s.end - s.w).max().unwrap_or(0);
            self.widened = Some(Tensor::alloc(gpu, &[largest], DType::F32, "widened_params")?);
        }
        self.widened.clone().ok_or_else(|| Error::invalid("no widening buffer"))
    }

    /// A dense layer stored in f16 whose rows start on whole words (an even input width): its
    /// packed weight `[outputs, inputs / 2]` words, read by the matrix product as an f16 operand
    /// without widening, and its bias widened into the shared buffer (after a launch pushed to
    /// `out`). `None` for any other layer, which [`Workspaces::params_f32`] serves.
    fn direct_f16(&mut self, gpu: &Gpu, net: &Network, i: usize, out: &mut Launches) -> Result<Option<(Tensor, Tensor)>> {
        let LayerSpec::Dense(d) = net.layers()[i] else { return Ok(None) };
        if net.layer_storage(i) != Precision::F16 || d.inputs % 2 != 0 || std::env::var_os("HEADSWAP_F16_WIDEN_WEIGHTS").is_some() {
            return Ok(None);
        }
        let (arena, slot) = net.slot(i);
        let words = arena.buf.view(slot.w / 2, &[d.outputs, d.inputs / 2])?;
        let wide = self.widened(gpu, arena)?;
        out.push(crate::kernels::gather::widen_f16(gpu, &arena.buf, slot.b / 2, &wide.view(0, &[2 * d.outputs.div_ceil(2)])?)?);
        Ok(Some((words, wide.view(0, &[d.outputs])?)))
    }
}

/// Per layer of `first..upto`: `Some(j)` for a convolution that BatchNorm layer `j` is folded
/// into. That is where the BN runs in inference mode (no `saved` statistics), reads the
/// convolution's output and is its only reader, the convolution has no activation of its own,
/// and nothing of the pair trains (both below `lowest`, or a forward-only plan): then
/// conv → BN is one convolution with `W' = W·s`, `b' = β + (b − μ)·s`, and a frozen trunk
/// costs no launch for its BatchNorms. A BN above the lowest trainable layer stays a layer of
/// its own: the gradient passes through it.
pub(crate) fn fold_targets(
    net: &Network,
    first: usize,
    upto: usize,
    saved: &[Option<Tensor>],
    lowest: Option<usize>,
) -> Vec<Option<usize>> {
    let layers = net.layers();
    let sources = net.sources();
    let mut folds = vec![None; layers.len()];
    for j in first..upto {
        let (LayerSpec::BatchNorm(_), [v]) = (layers[j], &sources[j][..]) else { continue };
        if *v <= first || saved.get(j).is_some_and(Option::is_some) || lowest.is_some_and(|lo| j >= lo) {
            continue;
        }
        let i = v - 1;
        let only_reader = (first..layers.len()).filter(|&r| sources[r].contains(v)).count() == 1;
        if let LayerSpec::Conv2d(c) = layers[i]
            && c.activation == Activation::Identity
            && only_reader
        {
            folds[i] = Some(j);
        }
    }
    folds
}

/// One launch of a step: fixed, or reading the batch through the index buffer (a gather, or a
/// kernel that reads its rows in place), whose offset is set per step.
pub(crate) enum Launch {
    Fixed(Dispatch),
    Batch(IndexedDispatch),
    /// Dropout (forward or backward): its mask depends on the step number and the batch offset.
    Step(DropoutLaunch),
    /// Input augmentation: its draws depend on the step number and the batch offset.
    Augment(AugmentLaunch),
}

impl Launch {
    pub fn dispatch(&self) -> &Dispatch {
        match self {
            Launch::Fixed(d) => d,
            Launch::Batch(b) => b.dispatch(),
            Launch::Step(s) => s.dispatch(),
            Launch::Augment(a) => a.dispatch(),
        }
    }
    fn batch(&self) -> Option<&IndexedDispatch> {
        match self {
            Launch::Batch(b) => Some(b),
            _ => None,
        }
    }
}

impl From<Dispatch> for Launch {
    fn from(d: Dispatch) -> Launch {
        Launch::Fixed(d)
    }
}

impl From<DropoutLaunch> for Launch {
    fn from(d: DropoutLaunch) -> Launch {
        Launch::Step(d)
    }
}

impl From<AugmentLaunch> for Launch {
    fn from(a: AugmentLaunch) -> Launch {
        Launch::Augment(a)
    }
}

impl From<IndexedDispatch> for Launch {
    fn from(d: IndexedDispatch) -> Launch {
        Launch::Batch(d)
    }
}

/// Launches in recording order, with the offset of the ones that read the batch set per step.
#[derive(Default)]
pub(crate) struct Launches(Vec<Launch>);

impl Launches {
    fn push(&mut self, l: impl Into<Launch>) {
        self.0.push(l.into());
    }
    fn extend<L: Into<Launch>>(&mut self, ls: impl IntoIterator<Item = L>) {
        self.0.extend(ls.into_iter().map(Into::into));
    }
    fn batch(&self) -> impl Iterator<Item = &IndexedDispatch> {
        self.0.iter().filter_map(Launch::batch)
    }
    /// Points every batch read at `offset` in the index buffer (takes effect at the next submit).
    pub fn set_offset(&self, gpu: &Gpu, offset: usize) -> Result<()> {
        self.batch().try_for_each(|g| g.set_offset(gpu, offset as u32))
    }
    /// Stages `offset` as the current step's batch offset (several steps per submission).
    pub fn stage_offset(&self, uniforms: &mut StepUniforms, offset: usize) -> Result<()> {
        self.batch().try_for_each(|g| g.stage_offset(uniforms, offset as u32))
    }
    /// Sets the step number and batch offset of the launches that read them (dropout's masks,
    /// the augmentation's draws); takes effect at the next submit.
    fn set_step(&self, gpu: &Gpu, offset: usize, step: u32) {
        for l in &self.0 {
            match l {
                Launch::Step(d) => d.set(gpu, offset as u32, step),
                Launch::Augment(a) => a.set(gpu, offset as u32, step),
                _ => {}
            }
        }
    }
    /// Stages the step number and batch offset as the current step's (several steps per submission).
    fn stage_step(&self, uniforms: &mut StepUniforms, offset: usize, step: u32) {
        for l in &self.0 {
            match l {
                Launch::Step(d) => d.stage(uniforms, offset as u32, step),
                Launch::Augment(a) => a.stage(uniforms, offset as u32, step),
                _ => {}
            }
        }
    }
    /// Every launch's dispatch, in recording order.
    pub fn dispatches(&self) -> impl Iterator<Item = &Dispatch> {
        self.0.iter().map(Launch::dispatch)
    }
}

/// The input of layer `first`: the batch, copied out, or the data set's rows (one buffer) that a
/// dense layer reads through the index buffer in place (rows stored in f16 too: its products
/// read the halves directly, see [`Input::operand`]).
#[derive(Clone, Copy)]
pub(crate) enum Input<'a> {
    Batch(&'a Tensor),
    /// `f16`: `Some(d)` where `rows` holds rows of `d` values in f16, two per u32 word.
    Gathered {
        rows: &'a Tensor,
        indices: &'a Tensor,
        f16: Option<usize>,
    },
}

impl Input<'_> {
    /// The input as the layers from `first` read it: in place, where its only reader is a dense
    /// layer and `source` is one buffer; else the gathered batch.
    fn choose<'a>(net: &Network, first: usize, source: &'a Rows, indices: &'a Tensor, batch: &'a Tensor) -> Input<'a> {
        let readers: Vec<usize> = (first..net.sources.len()).filter(|&i| net.sources[i].contains(&first)).collect();
        match (&readers[..], &source.chunks[..]) {
            (&[i], [(_, rows)]) if matches!(net.layers()[i], LayerSpec::Dense(_)) && !widen_f16() => {
                Input::Gathered { rows, indices, f16: source.f16_width }
            }
            _ => Input::Batch(batch),
        }
    }

    /// The data set's rows as a matmul operand, for an `Input::Gathered`'s `rows` and `f16`.
    fn operand<'a>(rows: &'a Tensor, f16: Option<usize>) -> Operand<'a> {
        match f16 {
            Some(cols) => Operand::F16 { words: rows, cols },
            None => Operand::F32(rows),
        }
    }
}

/// `HEADSWAP_F16_WIDEN=1`: a dense first layer does not read rows stored in f16 in place; the
/// batch is gathered out of them widened to f32 first, as before the products read f16 operands
/// (tests compare the two; each gives the same bits).
fn widen_f16() -> bool {
    std::env::var("HEADSWAP_F16_WIDEN").is_ok_and(|v| v == "1")
}

/// Records layers `first..upto` reading `x` (rows × features); each layer writes `a[i]` (and
/// `z[i]` first when the backward pass needs the pre-activation). Convolutions get their
/// workspaces in `ws`, with the algorithm measured fastest for what the layer does (`lowest`:
/// the lowest trainable layer of a training step, `None` for forward-only work); max pooling
/// writes its argmax to `argmax[i]`. A BatchNorm with `saved[i]` normalises with the batch's
/// statistics (training mode: it saves them there and updates its running statistics), without
/// with its running statistics; an inference-mode BatchNorm that is a frozen convolution's only
/// reader is folded into it (see [`fold_targets`]).
/// Dropout draws its masks from `seed` in a training step and is a copy in forward-only work.
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward_dispatches(
    gpu: &Gpu,
    net: &Network,
    first: usize,
    upto: usize,
    x: Input<'_>,
    z: &[Option<Tensor>],
    a: &[Tensor],
    argmax: &[Option<Tensor>],
    saved: &[Option<Tensor>],
    lowest: Option<usize>,
    seed: u64,
    ws: &mut Workspaces,
    out: &mut Launches,
) -> Result<()> {
    let layers = net.layers();
    ws.conv.resize_with(layers.len(), || None);
    ws.folded.resize_with(layers.len(), || None);
    if !net.is_cut(first) {
        return Err(Error::invalid(format!("layers from {first} on read outputs of layers below {first}: they cannot start there")));
    }
    let folds = fold_targets(net, first, upto, saved, lowest);
    // value v: the input at `first`, else the output of layer v − 1
    let batch = match x {
        Input::Batch(x) => Some(x),
        Input::Gathered { .. } => None,
    };
    let value = |v: usize| -> Result<&Tensor> {
        if v == first { batch.ok_or_else(|| Error::invalid("the batch is read in place by one layer only")) } else { Ok(&a[v - 1]) }
    };
    for i in first..upto {
        let spec = layers[i];
        let src = &net.sources[i];
        let rows = a[i].shape()[0];
        // folded into the convolution it reads, which wrote this layer's output
        if matches!(spec, LayerSpec::BatchNorm(_)) && folds[..i].contains(&Some(i)) {
            continue;
        }
        // a dense layer stored in f16 reads its weight as an f16 operand; other f16 layers are
        // widened first
        let direct = ws.direct_f16(gpu, net, i, out)?;
        let (w, b) = match &direct {
            Some((_, bias)) => (bias.clone(), bias.clone()),
            None => ws.params_f32(gpu, net, i, out)?,
        };
        let w_op: Operand<'_> = match (&direct, spec) {
            (Some((words, _)), LayerSpec::Dense(d)) => Operand::F16 { words, cols: d.inputs },
            _ => (&w).into(),
        };
        // where the layer's own output goes before an unfused activation
        let target = z[i].as_ref().unwrap_or(&a[i]);
        let fused = if z[i].is_some() { Activation::Identity } else { spec.activation() };
        let input = match (src[0] == first, x) {
            (false, _) | (true, Input::Batch(_)) => value(src[0])?,
            (true, Input::Gathered { rows: src, indices, f16 }) => {
                let epi = Epilogue { bias: Some(&b), activation: fused };
                let src = Input::operand(src, f16);
                out.push(matmul_dispatch_gathered_ops(
                    gpu,
                    src,
                    w_op,
                    target,
                    Transpose::NT,
                    epi,
                    Gathered::A,
                    indices,
                    Options::default(),
                )?);
                if let Some(z) = &z[i] {
                    out.push(elementwise::act_forward_dispatch(gpu, spec.activation(), z, &a[i])?);
                }
                continue;
            }
        };
        let out_chw = spec.out_chw().unwrap_or_default();
        match spec {
            LayerSpec::Dense(_) => {
                let epi = Epilogue { bias: Some(&b), activation: fused };
                out.push(matmul_dispatch_ops(gpu, input.into(), w_op, target, Transpose::NT, epi, Options::default())?)
            }
            LayerSpec::Conv2d(c) => {
                let shape = c.shape(rows);
                let usage = match lowest {
                    Some(lowest) if i >= lowest => ConvUse::Train { dx: i > lowest },
                    _ => ConvUse::Forward,
                };
                let scratch = ConvScratch::with_algo(gpu, &shape, conv::choose_algo(gpu, &shape, usage)?)?;
                let x4 = nchw(input, rows, in_chw(&spec))?;
                if let Some(j) = folds[i] {
                    // conv → BN in one launch, into the BN's output with its activation
                    let LayerSpec::BatchNorm(bn) = layers[j] else {
                        return Err(Error::invalid("a fold into a layer that is no BatchNorm"));
                    };
                    // an f16 pair folds as it runs, into buffers shared by every such pair
                    // (its weights were just widened into the shared buffer, in `out`)
                    let f16_pair = net.layer_storage(i) == Precision::F16 || net.layer_storage(j) == Precision::F16;
                    let (gamma, beta) = ws.bn_params_f32(gpu, net, j, out)?;
                    let (mean, var) =
                        net.running.views(j, bn.channels)?.ok_or_else(|| Error::invalid("a BatchNorm without running statistics"))?;
                    let k = norm::BatchNorm {
                        shape: bn.shape(rows),
                        eps: bn.eps,
                        gamma: &gamma,
                        beta: &beta,
                        running_mean: &mean,
                        running_var: &var,
                    };
                    let (fw, fb) = if f16_pair {
                        ws.folded_f16(gpu, net, w.shape(), c.out_channels)?
                    } else {
                        (
                            Tensor::alloc(gpu, w.shape(), DType::F32, "folded_weight")?,
                            Tensor::alloc(gpu, &[c.out_channels], DType::F32, "folded_bias")?,
                        )
                    };
                    let fold = norm::fold_conv_dispatches(gpu, &k, &w, c.bias.then_some(&b), &fw, &fb)?;
                    match lowest {
                        // frozen for the whole run: folded once, now
                        Some(_) if !f16_pair => gpu.run("bn_fold_conv", &fold.iter().collect::<Vec<_>>())?,
                        // forward-only plans may outlive a run that trains these layers, and
                        // f16 pairs share their buffers: fold every time
                        _ => out.extend(fold),
                    }
                    let j_target = z[j].as_ref().unwrap_or(&a[j]);
                    let j_fused = if z[j].is_some() { Activation::Identity } else { bn.activation };
                    let y4 = nchw(j_target, rows, out_chw)?;
                    out.extend(conv::conv2d_forward_dispatches(gpu, &shape, &x4, &fw, Some(&fb), j_fused, &y4, &scratch)?);
                    if let Some(zj) = &z[j] {
                        out.push(elementwise::act_forward_dispatch(gpu, bn.activation, zj, &a[j])?);
                    }
                    if !f16_pair {
                        ws.folded[i] = Some((fw, fb));
                    }
                } else {
                    let y4 = nchw(target, rows, out_chw)?;
                    out.extend(conv::conv2d_forward_dispatches(gpu, &shape, &x4, &w, c.bias.then_some(&b), fused, &y4, &scratch)?);
                }
                ws.conv[i] = Some(scratch);
            }
            LayerSpec::BatchNorm(bn) => {
                let (mean, var) =
                    net.running.views(i, bn.channels)?.ok_or_else(|| Error::invalid("a BatchNorm without running statistics"))?;
                let k = norm::BatchNorm { shape: bn.shape(rows), eps: bn.eps, gamma: &w, beta: &b, running_mean: &mean, running_var: &var };
                match &saved[i] {
                    Some(saved) => {
                        let saved = saved.clone();
                        out.push(norm::train_stats_dispatch(gpu, &k, Some(bn.momentum), input, &saved)?);
                        out.push(norm::train_forward_dispatch(gpu, &k, fused, input, &saved, target)?);
                    }
                    None => out.push(norm::eval_forward_dispatch(gpu, &k, fused, input, target)?),
                }
            }
            LayerSpec::MaxPool2d(p) => {
                let arg = argmax[i].as_ref().ok_or_else(|| Error::invalid("max pool without an argmax buffer"))?;
                let (x4, y4, a4) = (nchw(input, rows, in_chw(&spec))?, nchw(target, rows, out_chw)?, nchw(arg, rows, out_chw)?);
                out.push(conv::max_pool2d_forward_dispatch(gpu, &p.shape(rows), &x4, &y4, &a4)?);
            }
            LayerSpec::AvgPool2d(p) => {
                let (x4, y4) = (nchw(input, rows, in_chw(&spec))?, nchw(target, rows, out_chw)?);
                out.push(conv::avg_pool2d_forward_dispatch(gpu, &p.shape(rows), &x4, &y4)?);
            }
            LayerSpec::GlobalAvgPool { .. } => {
                out.push(conv::global_avg_pool_forward_dispatch(gpu, &nchw(input, rows, in_chw(&spec))?, target)?)
            }
            LayerSpec::Add(_) => out.push(elementwise::add_act_dispatch(gpu, fused, input, value(src[1])?, target)?),
            LayerSpec::Dropout(dr) => match lowest {
                Some(_) => {
                    out.push(layer_kernels::dropout_dispatch(gpu, layer_kernels::Dropout { p: dr.p, seed }, dr.features, input, target)?)
                }
                None => out.push(elementwise::copy_dispatch(gpu, input, target)?),
            },
            LayerSpec::AdaptiveAvgPool2d(ap) => {
                let (x4, y4) = (nchw(input, rows, in_chw(&spec))?, nchw(target, rows, out_chw)?);
                out.push(crate::kernels::pool::adaptive_avg_pool2d_forward_dispatch(gpu, &adaptive_shape(&ap, rows), &x4, &y4)?);
            }
            LayerSpec::ChannelLast { channels, height, width } => {
                out.push(layer_kernels::channel_last_dispatch(gpu, channels, height * width, input, target)?)
            }
            LayerSpec::ChannelMul(m) => {
                out.push(layer_kernels::channel_mul_dispatch(gpu, m.height * m.width, input, value(src[1])?, target)?)
            }
            LayerSpec::Concat(c) => {
                let parts = src.iter().map(|&v| value(v)).collect::<Result<Vec<_>>>()?;
                out.extend(layer_kernels::concat_dispatches(gpu, c.height * c.width, c.part_channels(), &parts, target)?);
            }
        }
        if let Some(z) = &z[i] {
            out.push(elementwise::act_forward_dispatch(gpu, spec.activation(), z, &a[i])?);
        }
    }
    Ok(())
}

/// The loss section of a network of named heads: per head, its loss kernel with its weight `w`
/// (writing `w·L` into the head's loss accumulator and `∂(w·L)/∂outputs` into its output
/// layer's gradient), masked where its target is unknown, then its metric counts. The trunk's
/// gradient is then the sum of what each head passes back, which the backward pass adds up.
/// Returns, per head, the index in `d` of its loss launch (whose scale a data-parallel step
/// rescales: [`Plan::stage_head_shares`]).
fn head_losses(gpu: &Gpu, p: &PlanInputs<'_>, rows: usize, a: &[Tensor], d: &mut Launches) -> Result<Vec<usize>> {
    let s = p.scratch;
    let mut scaled = Vec::new();
    let loss_rows = rows_view(&s.loss_rows, rows)?;
    for (k, h) in p.net.heads().iter().enumerate() {
        let logits = &a[h.layers.end - 1];
        let y = rows_view(&s.head_y[k], rows)?;
        let dlogits = rows_view(&s.head_dlogits[k], rows)?;
        let acc = p.acc.heads.get(k).ok_or_else(|| Error::invalid("missing head accumulators"))?;
        let out = loss::LossOutputs { loss_rows: &loss_rows, dlogits: &dlogits, loss_acc: Some(&acc.loss) };
        let opts = loss::HeadLoss { reduction: loss::MaskedReduction::MeanKnown, weight: h.weight };
        let from = d.0.len();
        match h.kind {
            HeadKind::Classes => {
                let targets = y.reshape(&[rows])?;
                d.extend(loss::softmax_xent_masked_dispatches(gpu, logits, &targets, &opts, &out)?);
                d.push(metrics::argmax_known_dispatch(gpu, logits, &targets, &acc.counts)?);
            }
            HeadKind::Labels => {
                // the head's weight scales every label's loss: w·L is BCE with label weights w
                let label_weight =
                    if h.weight == 1.0 { None } else { Some(Tensor::from_slice(gpu, &[h.outputs], &vec![h.weight; h.outputs])?) };
                let pos_weight = h.pos_weight.as_ref().map(|p| Tensor::from_slice(gpu, &[h.outputs], p)).transpose()?;
                let opts = loss::BceOptions { pos_weight, label_weight, reduction: h.bce_reduction.unwrap_or(p.bce.reduction) };
                d.extend(loss::bce_logits_dispatches(gpu, logits, &y, &opts, &loss_rows, &dlogits)?);
                d.push(reduce::sum_dispatch(gpu, &loss_rows, &acc.loss, true)?);
                d.push(metrics::label_confusion_dispatch(gpu, logits, &y, p.threshold, &acc.counts)?);
            }
            HeadKind::Regression(kind) => {
                d.extend(loss::regression_loss_dispatches(gpu, logits, &y, kind, &opts, &out)?);
                let sums = acc.sums.as_ref().ok_or_else(|| Error::invalid("missing regression sums"))?;
                d.push(metrics::regression_sums_dispatch(gpu, logits, &y, sums, &acc.counts)?);
            }
        }
        if let (Some(lv), Mode::Train { .. }) = (p.log_vars, p.mode) {
            // L = Σ exp(−s_t)·(w_t·L_t) + s_t: the head's batch loss, read on the GPU, gives
            // ∂L/∂s_t, and its gradient is scaled by exp(−s_t) before the backward pass
            d.push(reduce::sum_dispatch(gpu, &loss_rows, &lv.batch_loss[k], false)?);
            d.push(loss::uncertainty_scale_dispatch(gpu, &lv.params, k, h.weight > 0.0, &lv.batch_loss[k], &dlogits, &lv.grad)?);
        }
        let at = (from..d.0.len())
            .find(|&i| loss::is_scaled_head_loss(d.0[i].dispatch()))
            .ok_or_else(|| Error::invalid(format!("head {:?} has no loss launch", h.name)))?;
        scaled.push(at);
    }
    Ok(scaled)
}

/// Forward-only work for a batch of `rows`: read the inputs (a dense first layer reads them in
/// place, else they are gathered first), run layers `first..upto`. Used to cache trunk features
/// and to predict.
pub(crate) struct ForwardPlan {
    launches: Launches,
    _ws: Workspaces,
    pub output: Tensor,
}

impl ForwardPlan {
    pub fn build(
        gpu: &Gpu,
        net: &Network,
        source_x: &Rows,
        indices: &Tensor,
        first: usize,
        upto: usize,
        rows: usize,
    ) -> Result<ForwardPlan> {
        let layers = net.layers();
        let in_dim = if first == 0 { net.input_dim() } else { layers[first - 1].outputs() };
        let x = Tensor::alloc(gpu, &[rows, in_dim], DType::F32, "fwd_x")?;
        let active = |i: usize| i >= first && i < upto;
        let a: Vec<Tensor> = layers
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let shape = if active(i) { vec![rows, s.outputs()] } else { vec![1] };
                Tensor::alloc(gpu, &shape, DType::F32, "fwd_a")
            })
            .collect::<Result<_>>()?;
        let argmax: Vec<Option<Tensor>> = layers
            .iter()
            .enumerate()
            .map(|(i, s)| match s {
                LayerSpec::MaxPool2d(_) if active(i) => Tensor::alloc(gpu, &[rows, s.outputs()], DType::U32, "argmax").map(Some),
                _ => Ok(None),
            })
            .collect::<Result<_>>()?;
        let z = vec![None; layers.len()];
        let mut launches = Launches::default();
        let input = Input::choose(net, first, source_x, indices, &x);
        if let Input::Batch(x) = input {
            launches.extend(source_x.gathers(gpu, indices, x)?);
        }
        let mut ws = Workspaces::default();
        let saved = vec![None; layers.len()];
        forward_dispatches(gpu, net, first, upto, input, &z, &a, &argmax, &saved, None, 0, &mut ws, &mut launches)?;
        Ok(ForwardPlan { launches, _ws: ws, output: a[upto - 1].clone() })
    }

    pub fn set_offset(&self, gpu: &Gpu, offset: usize) -> Result<()> {
        self.launches.set_offset(gpu, offset)
    }

    /// Every dispatch, in recording order.
    pub fn dispatches(&self) -> impl Iterator<Item = &Dispatch> {
        self.launches.dispatches()
    }
}

/// The recorded launches of one step at one batch size.
pub(crate) struct Plan {
    pub rows: usize,
    /// Gathers, forward, loss and metrics, backward: everything up to the gradients.
    launches: Launches,
    /// The optimizer's update of every trainable range, after the gradients are ready (empty
    /// for forward-only plans).
    update: Vec<OptimStep>,
    /// Per named head, or for the single head, the index in `launches` of its loss launch.
    head_loss: Vec<usize>,
    /// Per layer the backward visits, top down: (layer, index in `launches` of its first launch).
    backward_at: Vec<(usize, usize)>,
    _ws: Workspaces,
}

/// Everything `Plan::build` reads.
pub(crate) struct PlanInputs<'a> {
    pub net: &'a Network,
    pub mode: Mode,
    pub first: usize,
    pub source_x: &'a Rows,
    pub source_y: &'a Rows,
    /// A network of named heads: each head's targets by name (the data's
    /// [`DeviceData::heads`]); `source_y` is then unused.
    pub source_heads: &'a [(String, Rows)],
    pub indices: &'a Tensor,
    pub scratch: &'a Scratch,
    pub grads: Option<&'a Grads>,
    pub acc: &'a Accumulators,
    pub bce: &'a BceSettings,
    pub bce_tensors: &'a (Option<Tensor>, Option<Tensor>),
    pub threshold: f32,
    /// The optimizer a training step ends with (`None`: the step stops at the gradients).
    pub optimizer: Option<&'a Optim>,
    /// The run's seed: dropout's masks and the augmentation's draws in a training step.
    pub seed: u64,
    /// Augmentation of the batch's images `[C, H, W]` before the first layer (training steps
    /// that compute the whole network; the scratch holds the augmented batch).
    pub augment: Option<(Augment, [usize; 3])>,
    /// Uncertainty weighting of the named heads ([`super::HeadWeighting::Uncertainty`]) in a
    /// training step: the heads' log-variances and their gradient; `None`: fixed weights.
    pub log_vars: Option<&'a LogVars>,
}

/// The buffers of uncertainty weighting ([`super::HeadWeighting::Uncertainty`]): the named heads'
/// learned log-variances `s_t` (a parameter group of their own, updated by the run's optimizer),
/// their gradient `∂L/∂s_t`, and each head's batch loss, which the step's head section writes and
/// reads on the GPU.
pub(crate) struct LogVars {
    /// `[heads]`: `s_t`, from the network's [`crate::nn::HeadInfo::log_var`] (0 where unset).
    pub params: Tensor,
    /// `[heads]`: `∂L/∂s_t = 1 − exp(−s_t)·L_t` of the last step (0 for a head of weight 0).
    pub grad: Tensor,
    /// Per head `[1]`: its batch loss `w_t·L_t`.
    pub batch_loss: Vec<Tensor>,
}

impl LogVars {
    pub fn new(gpu: &Gpu, net: &Network) -> Result<LogVars> {
        let n = net.heads().len();
        if n == 0 {
            return Err(Error::invalid(
                "uncertainty weighting weighs the losses of a network's named heads; this network has one unnamed head",
            ));
        }
        let values: Vec<f32> = net.heads().iter().map(|h| h.log_var.unwrap_or(0.0)).collect();
        Ok(LogVars {
            params: Tensor::from_slice(gpu, &[n], &values)?,
            grad: Tensor::alloc(gpu, &[n], DType::F32, "log_var_grad")?,
            batch_loss: (0..n).map(|_| Tensor::alloc(gpu, &[1], DType::F32, "head_batch_loss")).collect::<Result<_>>()?,
        })
    }

    pub fn tensors(&self) -> Vec<&Tensor> {
        let mut v = vec![&self.params, &self.grad];
        v.extend(&self.batch_loss);
        v
    }
}

impl Plan {
    pub fn build(gpu: &Gpu, p: &PlanInputs<'_>, rows: usize) -> Result<Plan> {
        let net = p.net;
        let s = p.scratch;
        if rows == 0 || rows > s.rows {
            return Err(Error::invalid(format!("a plan for {rows} rows on scratch of {}", s.rows)));
        }
        let mut d = Launches::default();
        if let Some(step) = Plan::linear_head_step(gpu, p, rows)? {
            d.push(step);
            let update = Plan::update(gpu, p)?;
            return Ok(Plan { rows, launches: d, update, head_loss: vec![0], backward_at: Vec::new(), _ws: Workspaces::default() });
        }
        let layers = net.layers();
        let l = layers.len();
        let x = rows_view(&s.x, rows)?;
        let y = rows_view(&s.y, rows)?;
        // With augmentation the batch is gathered into `raw`, then augmented into `x`, which the
        // layers read (and the first layer's weight gradient).
        let raw = match (&p.augment, &s.x_raw) {
            (Some(_), Some(r)) => Some(rows_view(r, rows)?),
            (Some(_), None) => return Err(Error::invalid("augmentation without its scratch buffer")),
            _ => None,
        };
        let gathered_x = raw.as_ref().unwrap_or(&x);
        // A dense first layer reads the batch's inputs in place, and a fused head kernel its
        // targets, where the data set is one buffer; the rest is gathered into the batch buffers
        // first (inputs and targets in one launch where the sources allow).
        let input = if raw.is_some() { Input::Batch(&x) } else { Input::choose(net, p.first, p.source_x, p.indices, &x) };
        let multi = net.is_multi_head();
        let fused = !multi && loss::fused_head_runs(gpu, net.head_kind == HeadKind::Labels, rows, net.output_dim());
        let targets_in_place = match (&p.source_y.chunks[..], fused) {
            ([(_, t)], true) => Some(t),
            _ => None,
        };
        if multi {
            // every head's targets gathered into its own batch buffer
            if let Input::Batch(_) = input {
                d.extend(p.source_x.gathers(gpu, p.indices, gathered_x)?);
            }
            for (h, y) in net.heads().iter().zip(&s.head_y) {
                let (_, src) = p
                    .source_heads
                    .iter()
                    .find(|(n, _)| *n == h.name)
                    .ok_or_else(|| Error::invalid(format!("the data has no targets for head {:?}", h.name)))?;
                d.extend(src.gathers(gpu, p.indices, &rows_view(y, rows)?)?);
            }
        } else {
            match (input, targets_in_place) {
                (Input::Batch(_), None) => {
                    let pair = match (&p.source_x.chunks[..], &p.source_y.chunks[..]) {
                        ([(_, sx)], [(_, sy)]) if !p.source_x.is_f16() => gather_rows_pair(gpu, sx, gathered_x, sy, &y, p.indices)?,
                        _ => None,
                    };
                    match pair {
                        Some(g) => d.push(g),
                        None => {
                            d.extend(p.source_x.gathers(gpu, p.indices, gathered_x)?);
                            d.extend(p.source_y.gathers(gpu, p.indices, &y)?);
                        }
                    }
                }
                (Input::Batch(_), Some(_)) => d.extend(p.source_x.gathers(gpu, p.indices, gathered_x)?),
                (Input::Gathered { .. }, None) => d.extend(p.source_y.gathers(gpu, p.indices, &y)?),
                (Input::Gathered { .. }, Some(_)) => {}
            }
        }
        if let (Some((aug, chw)), Some(raw)) = (&p.augment, &raw) {
            d.push(augment::augment_dispatch(gpu, aug, p.seed, *chw, raw, &x)?);
        }
        // forward
        let a: Vec<Tensor> =
            s.a.iter().map(|t| if t.shape().len() == 2 { rows_view(t, rows) } else { Ok(t.clone()) }).collect::<Result<_>>()?;
        let z: Vec<Option<Tensor>> = s.z.iter().map(|t| opt_rows(t, rows)).collect::<Result<_>>()?;
        let argmax: Vec<Option<Tensor>> = s.argmax.iter().map(|t| opt_rows(t, rows)).collect::<Result<_>>()?;
        let saved: Vec<Option<Tensor>> = s.saved.to_vec();
        let mut ws = Workspaces::default();
        let lowest = match p.mode {
            Mode::Train { lowest } => Some(lowest),
            Mode::Eval => None,
        };
        forward_dispatches(gpu, net, p.first, l, input, &z, &a, &argmax, &saved, lowest, p.seed, &mut ws, &mut d)?;
        // loss + metrics
        let logits = &a[l - 1];
        let loss_rows = rows_view(&s.loss_rows, rows)?;
        let dlogits = rows_view(&s.dlogits, rows)?;
        // A small batch takes the fused head kernel: loss gradient, loss and metric accumulation
        // and, when the output layer's gradient is the loss gradient itself (dense, identity
        // activation, trainable), that layer's bias gradient, in one launch instead of four.
        let top = l - 1;
        let fused_db = match (p.mode, layers[top], p.grads) {
            (Mode::Train { lowest }, LayerSpec::Dense(_), Some(g)) if fused && top >= lowest && g.has(top) && s.dz[top].is_none() => {
                Some(g.views(net, top)?.1)
            }
            _ => None,
        };
        let head_out = loss::HeadOutputs { dlogits: &dlogits, loss_acc: &p.acc.loss, counts: &p.acc.counts, db: fused_db.as_ref() };
        let mut head_loss = Vec::new();
        let mut backward_at = Vec::new();
        let single_loss_from = d.0.len();
        if multi {
            head_loss = head_losses(gpu, p, rows, &a, &mut d)?;
        } else {
            match net.head_kind {
                HeadKind::Classes => {
                    let targets = y.reshape(&[rows])?;
                    if let Some(all) = targets_in_place {
                        let all = all.reshape(&[all.len()])?;
                        d.push(loss::head_softmax_gathered_dispatch(gpu, logits, &all, p.indices, &loss_rows, &head_out)?);
                    } else if fused {
                        d.push(loss::head_softmax_dispatch(gpu, logits, &targets, &loss_rows, &head_out)?);
                    } else {
                        d.push(loss::softmax_xent_dispatch(gpu, logits, &targets, &loss_rows, &dlogits)?);
                        d.push(reduce::sum_dispatch(gpu, &loss_rows, &p.acc.loss, true)?);
                        d.push(metrics::argmax_correct_dispatch(gpu, logits, &targets, &p.acc.counts)?);
                    }
                }
                HeadKind::Labels => {
                    let opts = loss::BceOptions {
                        pos_weight: p.bce_tensors.0.clone(),
                        label_weight: p.bce_tensors.1.clone(),
                        reduction: p.bce.reduction,
                    };
                    if let Some(all) = targets_in_place {
                        d.push(loss::head_bce_gathered_dispatch(gpu, logits, all, p.indices, &opts, p.threshold, &head_out)?);
                    } else if fused {
                        d.push(loss::head_bce_dispatch(gpu, logits, &y, &opts, p.threshold, &head_out)?);
                    } else {
                        d.extend(loss::bce_logits_dispatches(gpu, logits, &y, &opts, &loss_rows, &dlogits)?);
                        d.push(reduce::sum_dispatch(gpu, &loss_rows, &p.acc.loss, true)?);
                        d.push(metrics::label_confusion_dispatch(gpu, logits, &y, p.threshold, &p.acc.counts)?);
                    }
                }
                HeadKind::Regression(_) => return Err(Error::invalid("a regression head needs a network of named heads")),
            }
            head_loss.extend(
                d.0.iter().skip(single_loss_from).position(|l| loss::is_scaled_head_loss(l.dispatch())).map(|i| i + single_loss_from),
            );
        }
        // backward
        if let Mode::Train { .. } = p.mode {
            let grads = p.grads.ok_or_else(|| Error::invalid("a training plan needs gradient buffers"))?;
            let sources = net.sources();
            // `reaches[i]`: layer i trains, or a layer it reads from (however far down) does: its
            // output needs a gradient. The batch input (value `first`) never does.
            // a head of weight 0 passes back nothing: no backward work for its layers at all
            let mut silent = vec![false; l];
            for h in net.heads().iter().filter(|h| h.weight == 0.0) {
                silent[h.layers.clone()].iter_mut().for_each(|v| *v = true);
            }
            let mut reaches = vec![false; l];
            for i in p.first..l {
                reaches[i] = !silent[i] && (grads.has(i) || sources[i].iter().any(|&v| v > p.first && reaches[v - 1]));
            }
            let needs = |v: usize| v > p.first && reaches[v - 1];
            let value = |v: usize| if v == p.first { &x } else { &a[v - 1] };
            // per value: whether a reader has written its gradient yet (readers are visited top
            // down, so a value's gradient is complete before the layer that made it is visited)
            let mut written = vec![false; l + 1];
            let da_of = |v: usize| opt_rows(&s.da[v - 1], rows)?.ok_or_else(|| Error::invalid("missing gradient below"));
            let input_of_first = input;
            for i in (p.first..l).rev() {
                if !reaches[i] {
                    continue;
                }
                backward_at.push((i, d.0.len()));
                let spec = layers[i];
                let src = &sources[i];
                let da = opt_rows(&s.da[i], rows)?.ok_or_else(|| Error::invalid("missing activation gradient"))?;
                let dz = match opt_rows(&s.dz[i], rows)? {
                    Some(dz) => {
                        let (input, from_output) = match opt_rows(&s.z[i], rows)? {
                            Some(z) => (z, false),
                            None => (a[i].clone(), true),
                        };
                        d.push(elementwise::act_backward_dispatch(gpu, spec.activation(), &da, &input, &dz, from_output)?);
                        dz
                    }
                    None => da,
                };
                let input = value(src[0]);
                // a layer reading the batch in place reads it so for its weight gradient too
                let gathered = match (src[0] == p.first, input_of_first) {
                    (true, Input::Gathered { rows: src, indices, f16 }) => Some((Input::operand(src, f16), indices)),
                    _ => None,
                };
                // where the gradient for the value this layer reads goes, unless nothing below
                // trains: its `da` if no other reader wrote it yet, else a scratch then added to it
                let (below, accumulate) = if needs(src[0]) && spec.input_widths().len() == 1 {
                    let dv = da_of(src[0])?;
                    let first_write = !std::mem::replace(&mut written[src[0]], true);
                    if first_write {
                        (Some(dv), None)
                    } else {
                        let tmp = opt_rows(&s.grad_tmp[src[0] - 1], rows)?.ok_or_else(|| Error::invalid("missing gradient scratch"))?;
                        (Some(tmp), Some(dv))
                    }
                } else {
                    (None, None)
                };
                let (chw_in, chw_out) = (in_chw(&spec), spec.out_chw().unwrap_or_default());
                // a frozen layer above the lowest trainable one only passes the gradient down
                let trains = grads.has(i);
                match spec {
                    LayerSpec::Dense(_) => {
                        if trains {
                            let (gw, gb) = grads.views(net, i)?;
                            match gathered {
                                Some((src, indices)) => d.push(matmul_dispatch_gathered_ops(
                                    gpu,
                                    (&dz).into(),
                                    src,
                                    &gw,
                                    Transpose::TN,
                                    Epilogue::default(),
                                    Gathered::B,
                                    indices,
                                    Options::default(),
                                )?),
                                None => d.push(matmul_dispatch(gpu, &dz, input, &gw, Transpose::TN, Epilogue::default())?),
                            }
                            if !(i == top && fused_db.is_some()) {
                                d.push(reduce::col_sum_dispatch(gpu, &dz, &gb)?);
                            }
                        }
                        if let Some(below) = &below {
                            let (w, _) = net.param_views(i)?;
                            d.push(matmul_dispatch(gpu, &dz, &w, below, Transpose::NN, Epilogue::default())?);
                        }
                    }
                    LayerSpec::Conv2d(c) => {
                        let (w, _) = net.param_views(i)?;
                        let ws =
                            ws.conv.get(i).and_then(Option::as_ref).ok_or_else(|| Error::invalid("convolution without a workspace"))?;
                        let dx = below.as_ref().map(|t| nchw(t, rows, chw_in)).transpose()?;
                        let (x4, dy4) = (nchw(input, rows, chw_in)?, nchw(&dz, rows, chw_out)?);
                        let shape = c.shape(rows);
                        if trains {
                            let (gw, gb) = grads.views(net, i)?;
                            d.extend(conv::conv2d_backward_dispatches(
                                gpu,
                                &shape,
                                &x4,
                                &w,
                                &dy4,
                                dx.as_ref(),
                                &gw,
                                c.bias.then_some(&gb),
                                ws,
                            )?);
                        } else if let Some(dx) = &dx {
                            d.extend(conv::conv2d_backward_input_dispatches(gpu, &shape, &x4, &w, &dy4, dx, ws)?);
                        }
                    }
                    LayerSpec::MaxPool2d(pool) => {
                        if let Some(below) = &below {
                            let arg = argmax[i].as_ref().ok_or_else(|| Error::invalid("max pool without an argmax buffer"))?;
                            let (dy4, a4, dx4) = (nchw(&dz, rows, chw_out)?, nchw(arg, rows, chw_out)?, nchw(below, rows, chw_in)?);
                            d.push(conv::max_pool2d_backward_dispatch(gpu, &pool.shape(rows), &dy4, &a4, &dx4)?);
                        }
                    }
                    LayerSpec::AvgPool2d(pool) => {
                        if let Some(below) = &below {
                            let (dy4, dx4) = (nchw(&dz, rows, chw_out)?, nchw(below, rows, chw_in)?);
                            d.push(conv::avg_pool2d_backward_dispatch(gpu, &pool.shape(rows), &dy4, &dx4)?);
                        }
                    }
                    LayerSpec::GlobalAvgPool { .. } => {
                        if let Some(below) = &below {
                            d.push(conv::global_avg_pool_backward_dispatch(gpu, &dz, &nchw(below, rows, chw_in)?)?);
                        }
                    }
                    LayerSpec::BatchNorm(bn) => {
                        let (gamma, beta) = net.param_views(i)?;
                        let (mean, var) =
                            net.running.views(i, bn.channels)?.ok_or_else(|| Error::invalid("a BatchNorm without running statistics"))?;
                        let k = norm::BatchNorm {
                            shape: bn.shape(rows),
                            eps: bn.eps,
                            gamma: &gamma,
                            beta: &beta,
                            running_mean: &mean,
                            running_var: &var,
                        };
                        let param_grads = if trains { Some(grads.views(net, i)?) } else { None };
                        let g = norm::BatchNormGrads {
                            dx: below.as_ref(),
                            dgamma: param_grads.as_ref().map(|(gw, _)| gw),
                            dbeta: param_grads.as_ref().map(|(_, gb)| gb),
                        };
                        match &saved[i] {
                            Some(saved) => d.extend(norm::train_backward_dispatches(gpu, &k, &dz, input, saved, &g)?),
                            None => d.extend(norm::eval_backward_dispatches(gpu, &k, &dz, input, &g)?),
                        }
                    }
                    LayerSpec::Add(_) => {
                        // both summands' gradient is dz: copied into the first written, added to the rest
                        for &v in src.iter().filter(|&&v| needs(v)) {
                            let dv = da_of(v)?;
                            let first_write = !std::mem::replace(&mut written[v], true);
                            d.push(if first_write {
                                elementwise::copy_dispatch(gpu, &dz, &dv)?
                            } else {
                                elementwise::add_assign_dispatch(gpu, &dz, &dv)?
                            });
                        }
                    }
                    LayerSpec::Dropout(dr) => {
                        // the same mask regenerated: the launch of the forward over dz
                        if let Some(below) = &below {
                            d.push(layer_kernels::dropout_dispatch(
                                gpu,
                                layer_kernels::Dropout { p: dr.p, seed: p.seed },
                                dr.features,
                                &dz,
                                below,
                            )?);
                        }
                    }
                    LayerSpec::AdaptiveAvgPool2d(ap) => {
                        if let Some(below) = &below {
                            let (dy4, dx4) = (nchw(&dz, rows, chw_out)?, nchw(below, rows, chw_in)?);
                            d.push(crate::kernels::pool::adaptive_avg_pool2d_backward_dispatch(
                                gpu,
                                &adaptive_shape(&ap, rows),
                                &dy4,
                                &dx4,
                            )?);
                        }
                    }
                    LayerSpec::ChannelLast { channels, height, width } => {
                        if let Some(below) = &below {
                            d.push(layer_kernels::channel_last_backward_dispatch(gpu, channels, height * width, &dz, below)?);
                        }
                    }
                    LayerSpec::ChannelMul(m) => {
                        let plane = m.height * m.width;
                        if needs(src[0]) {
                            let (t, add) = grad_target(s, rows, &mut written, src[0])?;
                            d.push(layer_kernels::channel_mul_dispatch(gpu, plane, &dz, value(src[1]), &t)?);
                            if let Some(dv) = add {
                                d.push(elementwise::add_assign_dispatch(gpu, &t, &dv)?);
                            }
                        }
                        if needs(src[1]) {
                            let (t, add) = grad_target(s, rows, &mut written, src[1])?;
                            d.push(layer_kernels::channel_mul_grad_dispatch(gpu, plane, &dz, value(src[0]), &t)?);
                            if let Some(dv) = add {
                                d.push(elementwise::add_assign_dispatch(gpu, &t, &dv)?);
                            }
                        }
                    }
                    LayerSpec::Concat(c) => {
                        for (k, &v) in src.iter().enumerate().filter(|&(_, &v)| needs(v)) {
                            let (t, add) = grad_target(s, rows, &mut written, v)?;
                            d.push(layer_kernels::concat_backward_dispatch(gpu, c.height * c.width, c.part_channels(), k, &dz, &t)?);
                            if let Some(dv) = add {
                                d.push(elementwise::add_assign_dispatch(gpu, &t, &dv)?);
                            }
                        }
                    }
                }
                if let (Some(tmp), Some(dv)) = (&below, &accumulate) {
                    d.push(elementwise::add_assign_dispatch(gpu, tmp, dv)?);
                }
            }
        }
        // gradients ready: every trainable range's gradient is complete here, before any update
        // (the point where data-parallel training exchanges them)
        Ok(Plan { rows, launches: d, update: Plan::update(gpu, p)?, head_loss, backward_at, _ws: ws })
    }

    /// The whole training step as one fused launch, where it is one: a dense BCE output layer
    /// (identity activation) alone trains on cached features held in one buffer, the batch fits
    /// the fused kernel, and this device measured it faster than the separate launches
    /// ([`loss::choose_linear_head`]). It reads the batch in place through the index buffer.
    fn linear_head_step(gpu: &Gpu, p: &PlanInputs<'_>, rows: usize) -> Result<Option<IndexedDispatch>> {
        let net = p.net;
        let layers = net.layers();
        let top = layers.len() - 1;
        let (Mode::Train { lowest }, LayerSpec::Dense(dense), HeadKind::Labels, Some(grads)) =
            (p.mode, layers[top], net.head_kind, p.grads)
        else {
            return Ok(None);
        };
        if net.is_multi_head() {
            return Ok(None);
        }
        if p.first != top || lowest != top || layers[top].activation() != Activation::Identity {
            return Ok(None);
        }
        let ([(_, features)], [(_, targets)]) = (&p.source_x.chunks[..], &p.source_y.chunks[..]) else {
            return Ok(None);
        };
        if p.source_x.is_f16() {
            // it reads f32 features in place
            return Ok(None);
        }
        if loss::choose_linear_head(gpu, rows, dense.outputs, dense.inputs)? != loss::LinearHeadAlgo::Fused {
            return Ok(None);
        }
        let (w, b) = net.param_views(top)?;
        let (dw, db) = grads.views(net, top)?;
        let dlogits = rows_view(&p.scratch.dlogits, rows)?;
        let out = loss::HeadOutputs { dlogits: &dlogits, loss_acc: &p.acc.loss, counts: &p.acc.counts, db: Some(&db) };
        let opts =
            loss::BceOptions { pos_weight: p.bce_tensors.0.clone(), label_weight: p.bce_tensors.1.clone(), reduction: p.bce.reduction };
        let head = loss::LinearHead { features, indices: p.indices, weight: &w, bias: &b, dweight: &dw };
        Ok(Some(loss::linear_head_bce_dispatch(gpu, &head, targets, &opts, p.threshold, &out)?))
    }

    /// Points the step's batch reads at `offset` in the index buffer (takes effect at the next submit).
    pub fn set_offset(&self, gpu: &Gpu, offset: usize) -> Result<()> {
        self.launches.set_offset(gpu, offset)
    }

    /// The optimizer's update launches over the gradients this plan computes.
    fn update(gpu: &Gpu, p: &PlanInputs<'_>) -> Result<Vec<OptimStep>> {
        match (p.mode, p.optimizer, p.grads) {
            (Mode::Train { .. }, Some(optim), Some(grads)) => optim.steps(gpu, grads),
            _ => Ok(Vec::new()),
        }
    }

    /// Stages step `step` (numbered from 1) as the current step's values in `uniforms` (several
    /// steps per submission): the batch's `offset` in the index buffer and the update's learning
    /// rate `lr`.
    pub(crate) fn stage(&self, uniforms: &mut StepUniforms, offset: usize, lr: f32, step: u32) -> Result<()> {
        self.launches.stage_offset(uniforms, offset)?;
        self.launches.stage_step(uniforms, offset, step);
        self.update.iter().try_for_each(|u| u.stage(uniforms, lr, step))
    }

    /// Stages, for a network of named heads, each head's share of the batch's loss as the current
    /// step's (a data-parallel replica: see [`collective::head_shares`](super::collective::head_shares)):
    /// the head's loss launch computes `share · w·L` of its rows' mean, so the replicas' sum of
    /// it, and of its gradient, is the whole batch's. `shares` has one entry per head.
    /// A single head has one share (gradient accumulation scales each micro-batch's loss by its
    /// share of the step's); `offset` is the batch's, as staged by [`Plan::stage`] (a fused head
    /// that reads its targets in place takes both in one block).
    pub(crate) fn stage_head_shares(&self, uniforms: &mut StepUniforms, offset: usize, shares: &[f32]) -> Result<()> {
        if shares.len() != self.head_loss.len() {
            return Err(Error::invalid(format!("{} head shares for {} heads", shares.len(), self.head_loss.len())));
        }
        for (&at, &share) in self.head_loss.iter().zip(shares) {
            let d = self.launches.0[at].dispatch();
            let p = match &self.launches.0[at] {
                Launch::Batch(b) if loss::is_scaled_head_loss(d) => {
                    let mut p = bytemuck::bytes_of(&b.params_at(offset as u32)?).to_vec();
                    loss::rescale(&mut p, share);
                    p
                }
                _ => loss::rescaled_params(d, share)?,
            };
            uniforms.set(d, &p);
        }
        Ok(())
    }

    /// Sets the values of the next submission that records this plan alone: the batch's
    /// `offset`, the update's learning rate `lr` and step number `step`.
    pub(crate) fn set_step(&self, gpu: &Gpu, offset: usize, lr: f32, step: u32) -> Result<()> {
        self.launches.set_offset(gpu, offset)?;
        self.launches.set_step(gpu, offset, step);
        self.update.iter().try_for_each(|u| u.set(gpu, lr, step))
    }

    /// Every dispatch of the step in recording order: the launches up to the gradients, then
    /// the update. A step records them into one compute pass.
    pub(crate) fn dispatches(&self) -> impl Iterator<Item = &Dispatch> {
        self.gradient_dispatches().chain(self.update_dispatches())
    }

    /// The step up to the "gradients ready" point: gathers, forward, loss and metrics, backward.
    /// Data-parallel training exchanges the gradients after these.
    pub(crate) fn gradient_dispatches(&self) -> impl Iterator<Item = &Dispatch> {
        self.launches.dispatches()
    }

    /// The number of launches up to the gradients ([`Plan::gradient_dispatches`]) before the
    /// backward of the layers below `layer` starts: everything from there on computes only their
    /// gradients (and passes gradients down among them). All of them when nothing below runs.
    pub(crate) fn launches_before_backward_below(&self, layer: usize) -> usize {
        self.backward_at.iter().find(|&&(i, _)| i < layer).map_or(self.launches.0.len(), |&(_, at)| at)
    }

    /// The optimizer's update of every trainable range from the gradients.
    pub(crate) fn update_dispatches(&self) -> impl Iterator<Item = &Dispatch> {
        self.update.iter().map(OptimStep::dispatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::{CnnBuilder, Head, Init};

    /// conv → BN → [conv → BN(relu), conv] + identity → BN after a ReLU → pool.
    fn net(gpu: &Gpu) -> Network {
        let trunk = CnnBuilder::new(2, 6, 6)
            .conv(3, 3, 1, 1, Activation::Identity)
            .batch_norm(Activation::Relu)
            .residual(
                |b| b.conv(3, 3, 1, 1, Activation::Identity).batch_norm(Activation::Relu).conv(3, 3, 1, 1, Activation::Relu),
                Activation::Relu,
            )
            .batch_norm(Activation::Identity)
            .global_avg_pool()
            .build_graph()
            .unwrap();
        Network::from_trunk(gpu, 72, trunk, Init::KaimingUniform, Head::classes(2), 1).unwrap()
    }

    #[test]
    fn frozen_conv_batchnorm_pairs_fold_and_nothing_else_does() {
        let gpu = Gpu::new().unwrap();
        let net = net(&gpu);
        let l = net.layers().len();
        let none = vec![None; l];
        // layers: 0 conv, 1 bn, 2 conv, 3 bn, 4 conv(relu), 5 add, 6 bn (after the add), 7 pool, 8 fc
        let forward_only = fold_targets(&net, 0, l, &none, None);
        assert_eq!(forward_only.iter().enumerate().filter_map(|(i, j)| j.map(|j| (i, j))).collect::<Vec<_>>(), [(0, 1), (2, 3)]);
        // a pair at or above the lowest trainable layer stays two layers: the gradient passes through
        assert_eq!(fold_targets(&net, 0, l, &none, Some(3))[..4], [Some(1), None, None, None]);
        assert!(fold_targets(&net, 0, l, &none, Some(0)).iter().all(Option::is_none));
        // a training-mode BN (saved statistics) never folds
        let mut saved = none.clone();
        saved[1] = Some(Tensor::alloc(&gpu, &[2, 3], DType::F32, "saved").unwrap());
        assert_eq!(fold_targets(&net, 0, l, &saved, None)[..3], [None, None, Some(3)]);
        // starting above the first conv (its outputs cached): that BN reads the input, unfolded
        assert_eq!(fold_targets(&net, 1, l, &none, None)[..3], [None, None, Some(3)]);
        // a trunk stored in f16 folds the same pairs (as it runs, into shared buffers)
        let mut net = net;
        net.set_trunk_storage(Precision::F16).unwrap();
        assert_eq!(fold_targets(&net, 0, l, &none, None), forward_only);
    }
}
