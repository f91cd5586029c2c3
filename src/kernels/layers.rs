//! The parameter-free layers that move or scale activation rows (kernels in
//! `shaders/layers.wgsl`, float64 references in [`crate::reference::layers`]):
//!
//! * dropout: `y = x · mask / (1 − p)`, the mask a counter-based hash of (seed, step, the row's
//!   position in the epoch's order, the feature): deterministic, nothing uploaded, and the
//!   backward regenerates it (the same launch over `dy`) instead of keeping a mask buffer of the
//!   activation's size; [`DropoutLaunch`] takes the step and the batch offset per step;
//! * the channel-last permute: rows `[C, H, W]` to `[H, W, C]` (`x.permute(0, 2, 3, 1)` then a
//!   flatten), and back for the gradient;
//! * channel concatenation (`torch.cat(dim=1)`), one block copy per part, and its gradient;
//! * the channel-wise multiply of squeeze-excite (`x * s[:, :, None, None]`) and its gradients.
//!
//! Tensors are rows of examples; launchers check lengths, not shapes, so `[rows, features]` and
//! `[rows, C, H, W]` views both bind.

use super::reduce::ensure_loop_budget;
use super::{Kernel, R, RW, ensure, source};
use crate::error::{Error, Result};
use crate::gpu::pipelines::{StepUniforms, groups_1d};
use crate::gpu::tensor::DType;
use crate::gpu::{Dispatch, Gpu, Tensor};

pub(crate) const DROPOUT: Kernel = Kernel { source: &source::LAYERS, entry: "dropout", bindings: &[R, RW] };
pub(crate) const TRANSPOSE_ROWS: Kernel = Kernel { source: &source::LAYERS, entry: "transpose_rows", bindings: &[R, RW] };
pub(crate) const COPY_BLOCK: Kernel = Kernel { source: &source::LAYERS, entry: "copy_block", bindings: &[R, RW] };
pub(crate) const CHANNEL_MUL: Kernel = Kernel { source: &source::LAYERS, entry: "channel_mul", bindings: &[R, R, RW] };
pub(crate) const CHANNEL_MUL_GRAD: Kernel = Kernel { source: &source::LAYERS, entry: "channel_mul_grad", bindings: &[R, R, RW] };

/// `DropoutParams` in layers.wgsl.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct DropoutParams {
    n: u32,
    features: u32,
    seed_lo: u32,
    seed_hi: u32,
    step: u32,
    offset: u32,
    threshold: u32,
    scale: f32,
}

/// `LayoutParams` in layers.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct LayoutParams {
    n: u32,
    a: u32,
    b: u32,
    src_offset: u32,
    dst_offset: u32,
    len: u32,
    _pad0: u32,
    _pad1: u32,
}

fn u32_len(v: usize, op: &str, what: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::shape(format!("{op}: {what} = {v} does not fit the kernels' 32-bit indices")))
}

fn ensure_f32_len(t: &Tensor, len: usize, op: &str, name: &str) -> Result<()> {
    ensure(t.len() == len, op, || format!("{name} {:?} holds {} elements, expected {len}", t.shape(), t.len()))?;
    ensure(t.dtype() == DType::F32, op, || format!("{name} must be f32, it is {:?}", t.dtype()))
}

fn ensure_apart(op: &str, inputs: &[&Tensor], out: &Tensor) -> Result<()> {
    // wgpu refuses one buffer bound read-only and read-write in one launch
    ensure(inputs.iter().all(|t| !t.same_buffer(out)), op, || "the output must not share a buffer with an input".into())
}

/// A dropout layer's settings: drop probability `p` in [0, 1] and the run's seed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dropout {
    pub p: f32,
    pub seed: u64,
}

impl Dropout {
    /// `Err(Invalid)` unless `0 ≤ p ≤ 1`.
    pub fn validate(&self) -> Result<()> {
        if (0.0..=1.0).contains(&self.p) {
            Ok(())
        } else {
            Err(Error::invalid(format!("dropout probability must be in [0, 1], got {}", self.p)))
        }
    }
    /// `round(p·2²⁴)`: a 24-bit hash at least this keeps its element.
    fn threshold(&self) -> u32 {
        (self.p as f64 * (1u32 << 24) as f64).round() as u32
    }
    /// `1/(1 − p)`, 0 for `p = 1` (everything dropped, as PyTorch).
    fn scale(&self) -> f32 {
        if self.p >= 1.0 { 0.0 } else { (1.0 / (1.0 - self.p as f64)) as f32 }
    }
}

/// One dropout launch (`y = x · mask(seed, step, offset + r, j) / (1 − p)`), built once and
/// replayed every step; built ready for step 1 at batch offset 0, the step and the offset set per
/// step ([`set`](Self::set), [`stage`](Self::stage)) like the optimizer's step number and the
/// gathers' offset. The gradient is the same launch over `dy` and `dx` with the same values: the
/// mask is regenerated, not stored.
#[derive(Debug)]
pub struct DropoutLaunch {
    dispatch: Dispatch,
    params: DropoutParams,
}

impl DropoutLaunch {
    fn params_at(&self, offset: u32, step: u32) -> DropoutParams {
        DropoutParams { offset, step, ..self.params }
    }
    /// Sets the step number and the batch's offset in the epoch's order; takes effect at the
    /// next submission.
    pub fn set(&self, gpu: &Gpu, offset: u32, step: u32) {
        self.dispatch.write_params(gpu, bytemuck::bytes_of(&self.params_at(offset, step)));
    }
    /// Stages the step number and offset as the current step's values (several steps per submission).
    pub(crate) fn stage(&self, uniforms: &mut StepUniforms, offset: u32, step: u32) {
        uniforms.set(&self.dispatch, bytemuck::bytes_of(&self.params_at(offset, step)));
    }
    /// The launch, to record.
    pub fn dispatch(&self) -> &Dispatch {
        &self.dispatch
    }
}

/// Builds dropout over `x` (`rows` rows of `features`) into `y` (same length): the forward, or,
/// over `dy` into `dx` with the same settings, the backward.
pub fn dropout_dispatch(gpu: &Gpu, d: Dropout, features: usize, x: &Tensor, y: &Tensor) -> Result<DropoutLaunch> {
    let op = "dropout";
    d.validate()?;
    ensure(features > 0 && x.len().is_multiple_of(features), op, || format!("x {:?} is not rows of {features} features", x.shape()))?;
    ensure_f32_len(x, x.len(), op, "x")?;
    ensure_f32_len(y, x.len(), op, "y")?;
    ensure_apart(op, &[x], y)?;
    let params = DropoutParams {
        n: u32_len(x.len(), op, "rows·features")?,
        features: features as u32,
        seed_lo: d.seed as u32,
        seed_hi: (d.seed >> 32) as u32,
        step: 1,
        offset: 0,
        threshold: d.threshold(),
        scale: d.scale(),
    };
    let dispatch = Dispatch::new(gpu, DROPOUT, &[], bytemuck::bytes_of(&params), &[x, y], groups_1d(x.len(), 256))?;
    Ok(DropoutLaunch { dispatch, params })
}

/// Dropout at step `step` for rows at positions `offset..` of the epoch's order, run at once.
pub fn dropout(gpu: &Gpu, d: Dropout, features: usize, x: &Tensor, y: &mut Tensor, offset: u32, step: u32) -> Result<()> {
    let launch = dropout_dispatch(gpu, d, features, x, y)?;
    launch.set(gpu, offset, step);
    gpu.run("dropout", &[launch.dispatch()])
}

/// Builds `y[r, j, i] = x[r, i, j]` for rows of `[a, b]`.
fn transpose_rows_dispatch(gpu: &Gpu, op: &str, a: usize, b: usize, x: &Tensor, y: &Tensor) -> Result<Dispatch> {
    let row = a * b;
    ensure(row > 0 && x.len().is_multiple_of(row), op, || format!("x {:?} is not rows of {a}×{b}", x.shape()))?;
    ensure_f32_len(x, x.len(), op, "x")?;
    ensure_f32_len(y, x.len(), op, "y")?;
    ensure_apart(op, &[x], y)?;
    let p = LayoutParams { n: u32_len(x.len(), op, "elements")?, a: a as u32, b: b as u32, ..LayoutParams::default() };
    Dispatch::new(gpu, TRANSPOSE_ROWS, &[], bytemuck::bytes_of(&p), &[x, y], groups_1d(x.len(), 256))
}

/// Builds the channel-last permute: rows `[c, hw]` of `x` (NCHW, `hw = H·W`) to rows `[hw, c]`
/// of `y` (PyTorch's `x.permute(0, 2, 3, 1).reshape(n, -1)`).
pub fn channel_last_dispatch(gpu: &Gpu, c: usize, hw: usize, x: &Tensor, y: &Tensor) -> Result<Dispatch> {
    transpose_rows_dispatch(gpu, "channel_last", c, hw, x, y)
}

/// The channel-last permute, run at once.
pub fn channel_last(gpu: &Gpu, c: usize, hw: usize, x: &Tensor, y: &mut Tensor) -> Result<()> {
    gpu.run("channel_last", &[&channel_last_dispatch(gpu, c, hw, x, y)?])
}

/// Builds the channel-last permute's gradient: rows `[hw, c]` of `dy` back to `[c, hw]`.
pub fn channel_last_backward_dispatch(gpu: &Gpu, c: usize, hw: usize, dy: &Tensor, dx: &Tensor) -> Result<Dispatch> {
    transpose_rows_dispatch(gpu, "channel_last_backward", hw, c, dy, dx)
}

/// The channel-last permute's gradient, run at once.
pub fn channel_last_backward(gpu: &Gpu, c: usize, hw: usize, dy: &Tensor, dx: &mut Tensor) -> Result<()> {
    gpu.run("channel_last_backward", &[&channel_last_backward_dispatch(gpu, c, hw, dy, dx)?])
}

/// Builds `dst[r, dst_offset + j] = src[r, src_offset + j]` for `j < len` and every row `r` of
/// `rows` (row strides `src_stride`, `dst_stride`).
#[allow(clippy::too_many_arguments)]
fn copy_block_dispatch(
    gpu: &Gpu,
    op: &str,
    rows: usize,
    len: usize,
    (src, src_stride, src_offset): (&Tensor, usize, usize),
    (dst, dst_stride, dst_offset): (&Tensor, usize, usize),
) -> Result<Dispatch> {
    ensure(len > 0 && src_offset + len <= src_stride && dst_offset + len <= dst_stride, op, || {
        format!("a block of {len} at {src_offset} of rows of {src_stride} into {dst_offset} of rows of {dst_stride}")
    })?;
    ensure_f32_len(src, rows * src_stride, op, "the source")?;
    ensure_f32_len(dst, rows * dst_stride, op, "the destination")?;
    ensure_apart(op, &[src], dst)?;
    let n = rows * len;
    let p = LayoutParams {
        n: u32_len(n, op, "elements")?,
        a: u32_len(src_stride, op, "row")?,
        b: u32_len(dst_stride, op, "row")?,
        src_offset: src_offset as u32,
        dst_offset: dst_offset as u32,
        len: len as u32,
        ..LayoutParams::default()
    };
    u32_len(rows * src_stride.max(dst_stride), op, "elements")?;
    Dispatch::new(gpu, COPY_BLOCK, &[], bytemuck::bytes_of(&p), &[src, dst], groups_1d(n, 256))
}

/// Builds the concatenation along channels of `parts` (part `k`: rows of `channels[k]·plane`)
/// into `y` (rows of `Σ channels · plane`): one copy per part.
pub fn concat_dispatches(gpu: &Gpu, plane: usize, channels: &[usize], parts: &[&Tensor], y: &Tensor) -> Result<Vec<Dispatch>> {
    let op = "concat";
    ensure(!channels.is_empty() && channels.len() == parts.len(), op, || {
        format!("{} parts for {} channel counts", parts.len(), channels.len())
    })?;
    let row: usize = channels.iter().sum::<usize>() * plane;
    ensure(row > 0 && y.len().is_multiple_of(row), op, || format!("y {:?} is not rows of {row}", y.shape()))?;
    let rows = y.len() / row;
    let mut at = 0;
    let mut out = Vec::new();
    for (&c, part) in channels.iter().zip(parts) {
        out.push(copy_block_dispatch(gpu, op, rows, c * plane, (part, c * plane, 0), (y, row, at))?);
        at += c * plane;
    }
    Ok(out)
}

/// The concatenation along channels, run at once.
pub fn concat(gpu: &Gpu, plane: usize, channels: &[usize], parts: &[&Tensor], y: &mut Tensor) -> Result<()> {
    let d = concat_dispatches(gpu, plane, channels, parts, y)?;
    gpu.run("concat", &d.iter().collect::<Vec<_>>())
}

/// Builds part `k`'s gradient of a concatenation: `dx_k` = its slice of `dy`'s rows.
pub fn concat_backward_dispatch(gpu: &Gpu, plane: usize, channels: &[usize], k: usize, dy: &Tensor, dx: &Tensor) -> Result<Dispatch> {
    let op = "concat_backward";
    ensure(k < channels.len(), op, || format!("part {k} of {}", channels.len()))?;
    let row: usize = channels.iter().sum::<usize>() * plane;
    ensure(row > 0 && dy.len().is_multiple_of(row), op, || format!("dy {:?} is not rows of {row}", dy.shape()))?;
    let rows = dy.len() / row;
    let at: usize = channels[..k].iter().sum::<usize>() * plane;
    let len = channels[k] * plane;
    copy_block_dispatch(gpu, op, rows, len, (dy, row, at), (dx, len, 0))
}

/// Part `k`'s gradient of a concatenation, run at once.
pub fn concat_backward(gpu: &Gpu, plane: usize, channels: &[usize], k: usize, dy: &Tensor, dx: &mut Tensor) -> Result<()> {
    gpu.run("concat_backward", &[&concat_backward_dispatch(gpu, plane, channels, k, dy, dx)?])
}

/// Builds `y[r, c, s] = x[r, c, s] · scale[r, c]` (`plane = H·W` values of `s`): squeeze-excite's
/// multiply, and its input gradient (`dx = dy · scale`).
pub fn channel_mul_dispatch(gpu: &Gpu, plane: usize, x: &Tensor, scale: &Tensor, y: &Tensor) -> Result<Dispatch> {
    let op = "channel_mul";
    ensure(plane > 0 && !scale.is_empty(), op, || "empty planes or no scales".into())?;
    ensure_f32_len(x, scale.len() * plane, op, "x")?;
    ensure_f32_len(scale, scale.len(), op, "scale")?;
    ensure_f32_len(y, x.len(), op, "y")?;
    ensure_apart(op, &[x, scale], y)?;
    let p = LayoutParams { n: u32_len(x.len(), op, "elements")?, len: plane as u32, ..LayoutParams::default() };
    Dispatch::new(gpu, CHANNEL_MUL, &[], bytemuck::bytes_of(&p), &[x, scale, y], groups_1d(x.len(), 256))
}

/// The channel-wise multiply, run at once.
pub fn channel_mul(gpu: &Gpu, plane: usize, x: &Tensor, scale: &Tensor, y: &mut Tensor) -> Result<()> {
    gpu.run("channel_mul", &[&channel_mul_dispatch(gpu, plane, x, scale, y)?])
}

/// Builds the scale's gradient of the channel-wise multiply:
/// `dscale[r, c] = Σ_s dy[r, c, s] · x[r, c, s]`, one invocation per (r, c) summing in order.
pub fn channel_mul_grad_dispatch(gpu: &Gpu, plane: usize, dy: &Tensor, x: &Tensor, dscale: &Tensor) -> Result<Dispatch> {
    let op = "channel_mul_grad";
    ensure(plane > 0 && !dscale.is_empty(), op, || "empty planes or no scales".into())?;
    ensure_f32_len(dy, dscale.len() * plane, op, "dy")?;
    ensure_f32_len(x, dy.len(), op, "x")?;
    ensure_f32_len(dscale, dscale.len(), op, "dscale")?;
    ensure_apart(op, &[dy, x], dscale)?;
    ensure_loop_budget(op, plane + 3, || format!("a sum over planes of {plane}"))?;
    u32_len(dy.len(), op, "elements")?;
    let p = LayoutParams { n: u32_len(dscale.len(), op, "planes")?, len: plane as u32, ..LayoutParams::default() };
    Dispatch::new(gpu, CHANNEL_MUL_GRAD, &[], bytemuck::bytes_of(&p), &[dy, x, dscale], groups_1d(dscale.len(), 64))
}

/// The scale's gradient of the channel-wise multiply, run at once.
pub fn channel_mul_grad(gpu: &Gpu, plane: usize, dy: &Tensor, x: &Tensor, dscale: &mut Tensor) -> Result<()> {
    gpu.run("channel_mul_grad", &[&channel_mul_grad_dispatch(gpu, plane, dy, x, dscale)?])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::wgsl_struct_bytes;

    #[test]
    fn params_match_wgsl_size() {
        let src = source::LAYERS_WGSL;
        assert_eq!(std::mem::size_of::<DropoutParams>(), wgsl_struct_bytes(src, "DropoutParams"));
        assert_eq!(std::mem::size_of::<LayoutParams>(), wgsl_struct_bytes(src, "LayoutParams"));
    }

    #[test]
    fn dropout_threshold_matches_the_reference() {
        for p in [0.0f32, 0.1, 0.2, 0.5, 0.999, 1.0] {
            let d = Dropout { p, seed: 1 };
            assert_eq!(d.threshold(), crate::reference::layers::dropout_threshold(p as f64), "p = {p}");
        }
        assert!(Dropout { p: 1.5, seed: 0 }.validate().is_err());
        assert!(Dropout { p: f32::NAN, seed: 0 }.validate().is_err());
    }
}
