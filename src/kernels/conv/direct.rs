//! The direct convolution kernels: one launch each for y, dx and dw (the bias gradient and the
//! slice sum are the parent module's, shared with im2col). See the [module docs](super).
//!
//! Grouped convolutions run the same kernels with channel blocks that stay inside one group;
//! depthwise ones (`groups = C = O`) have kernels of their own (`dw_*` in conv.wgsl), one
//! channel per invocation, since a block of channels there shares no input.

use super::{Conv2dShape, ConvScratch, sum_parts};
use crate::error::Result;
use crate::gpu::{Dispatch, Gpu, Tensor};
use crate::kernels::reduce::{SLICE_LEN, ensure_loop_budget};
use crate::kernels::window::{WG, WindowParams, nest_cost};
use crate::kernels::{Activation, Kernel, R, RW, ensure, source};

pub(crate) const CONV_FORWARD: Kernel = Kernel { source: &source::CONV, entry: "conv_forward", bindings: &[R, R, R, RW] };
pub(crate) const CONV_BACKWARD_INPUT: Kernel = Kernel { source: &source::CONV, entry: "conv_backward_input", bindings: &[R, R, RW] };
pub(crate) const CONV_BACKWARD_WEIGHT: Kernel = Kernel { source: &source::CONV, entry: "conv_backward_weight", bindings: &[R, R, RW] };
pub(crate) const DW_FORWARD: Kernel = Kernel { source: &source::CONV, entry: "dw_forward", bindings: &[R, R, R, RW] };
pub(crate) const DW_BACKWARD_INPUT: Kernel = Kernel { source: &source::CONV, entry: "dw_backward_input", bindings: &[R, R, RW] };
pub(crate) const DW_BACKWARD_WEIGHT: Kernel = Kernel { source: &source::CONV, entry: "dw_backward_weight", bindings: &[R, R, RW] };

/// Input channels per invocation of `conv_backward_input` (`CB` in conv.wgsl), output channels
/// per invocation of `conv_backward_weight`.
const CHANNEL_BLOCK: usize = 4;
/// Bytes of the per-slice weight gradients of the direct backward, at most (unless the loop
/// budget needs more slices).
const DW_PARTS_MAX_BYTES: usize = 16 << 20;

/// `y = act(conv(x, w) + b)` in one launch: 4 or 8 output channels of one pixel per invocation.
pub(super) fn forward(
    gpu: &Gpu,
    s: &Conv2dShape,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    act: Activation,
    y: &Tensor,
) -> Result<Dispatch> {
    let op = "conv2d_forward";
    ensure_loop_budget(op, s.c_per_group() * nest_cost(s.kh, s.kw) + 8, || format!("C/groups·KH·KW = {}", s.patch_len()))?;
    let (oh, ow) = s.out_hw();
    let p = WindowParams { alpha: act.alpha(), ..s.params() };
    let bias = ("HAS_BIAS", b.is_some() as u32 as f64);
    let (kh, kw) = (("KH", s.kh as f64), ("KW", s.kw as f64));
    let bindings = [x, w, b.unwrap_or(w), y];
    if s.is_depthwise() {
        let groups = grid(op, oh * ow, s.c, s.n)?;
        return Dispatch::new(gpu, DW_FORWARD, &[("ACT", act.code() as f64), bias, kh, kw], bytemuck::bytes_of(&p), &bindings, groups);
    }
    // 8 output channels per invocation where a group has that many (fewer gathers of x per FMA)
    let og = s.o_per_group();
    let ob = if og >= 8 { 8 } else { 4 };
    let consts = [("ACT", act.code() as f64), bias, ("OB", ob as f64), kh, kw];
    let groups = grid(op, oh * ow, s.groups * og.div_ceil(ob), s.n)?;
    Dispatch::new(gpu, CONV_FORWARD, &consts, bytemuck::bytes_of(&p), &bindings, groups)
}

/// dx in one launch: per input pixel and block of 4 input channels, the taps that reach it (a
/// col2im-style gather, no scatter, no atomics).
pub(super) fn backward_input(gpu: &Gpu, s: &Conv2dShape, dy: &Tensor, w: &Tensor, dx: &Tensor) -> Result<Dispatch> {
    let op = "conv2d_backward (dx)";
    // stride 1 visits the whole kernel, masked; a larger one only the taps that reach the pixel
    let og = s.o_per_group();
    ensure_loop_budget(op, og * s.window().gather_cost() + CHANNEL_BLOCK, || format!("O/groups = {og} output channels"))?;
    let consts = [("KH", s.kh as f64), ("KW", s.kw as f64)];
    if s.is_depthwise() {
        let groups = grid(op, s.h * s.w, s.c, s.n)?;
        return Dispatch::new(gpu, DW_BACKWARD_INPUT, &consts, bytemuck::bytes_of(&s.params()), &[dy, w, dx], groups);
    }
    let groups = grid(op, s.h * s.w, s.groups * s.c_per_group().div_ceil(CHANNEL_BLOCK), s.n)?;
    Dispatch::new(gpu, CONV_BACKWARD_INPUT, &consts, bytemuck::bytes_of(&s.params()), &[dy, w, dx], groups)
}

/// (slices, rows per slice) of the direct weight gradient: each slice sums whole rows (n, oy)
/// of OW pixels, about [`SLICE_LEN`] loop iterations, with the partial gradients under
/// [`DW_PARTS_MAX_BYTES`] unless the loop budget needs more slices.
pub(super) fn weight_slices(s: &Conv2dShape) -> Result<(usize, usize)> {
    let op = "conv2d_backward (dw)";
    let (oh, ow) = s.out_hw();
    let rows = s.n * oh;
    let per_row = ow + 3;
    let mut per_slice = (SLICE_LEN / per_row).max(1);
    let by_memory = (DW_PARTS_MAX_BYTES / (4 * s.o * s.patch_len())).clamp(1, 4096);
    if rows.div_ceil(per_slice) > by_memory {
        per_slice = rows.div_ceil(by_memory);
    }
    ensure_loop_budget(op, per_slice * per_row + 8, || format!("N·OH·OW = {} in at most {by_memory} slices", rows * ow))?;
    Ok((rows.div_ceil(per_slice), per_slice))
}

/// dw: per weight tap and block of 4 output channels, a sum over a slice of the `N·OH` output
/// rows, straight into dw with one slice, else into the scratch's partials and then their sum.
pub(super) fn backward_weight(
    gpu: &Gpu,
    s: &Conv2dShape,
    x: &Tensor,
    dy: &Tensor,
    dw: &Tensor,
    scratch: &ConvScratch,
) -> Result<Vec<Dispatch>> {
    let op = "conv2d_backward (dw)";
    let (slices, per_slice) = (scratch.dw_slices, scratch.dw_rows);
    let p = WindowParams { total: per_slice as u32, ..s.params() };
    let (kernel, groups) = if s.is_depthwise() {
        (DW_BACKWARD_WEIGHT, grid(op, s.o * s.patch_len(), 1, slices)?)
    } else {
        (CONV_BACKWARD_WEIGHT, grid(op, s.patch_len(), s.groups * s.o_per_group().div_ceil(CHANNEL_BLOCK), slices)?)
    };
    let Some(parts) = &scratch.parts else {
        return Ok(vec![Dispatch::new(gpu, kernel, &[], bytemuck::bytes_of(&p), &[x, dy, dw], groups)?]);
    };
    let partial = Dispatch::new(gpu, kernel, &[], bytemuck::bytes_of(&p), &[x, dy, parts], groups)?;
    Ok(vec![partial, sum_parts(gpu, parts, dw, slices, scratch.part_stride)?])
}

/// Workgroups `[pixels / 64, channel blocks, images]` of the direct kernels.
fn grid(op: &str, pixels: usize, blocks: usize, images: usize) -> Result<[u32; 3]> {
    let g = [pixels.div_ceil(WG as usize), blocks, images];
    ensure(g.iter().all(|&v| v <= 65_535), op, || format!("{g:?} workgroups: each dimension must stay within 65,535"))?;
    Ok(g.map(|v| v as u32))
}
