//! The im2col form of the convolution: im2col into a column buffer per chunk of images, the
//! matmul kernel, a permute between the matmul's pixel-major rows and NCHW, and col2im as a
//! gather. See the [module docs](super).

use super::{Conv2dShape, ConvScratch, sum_parts};
use crate::error::Result;
use crate::gpu::pipelines::groups_1d;
use crate::gpu::{Dispatch, Gpu, Tensor};
use crate::kernels::matmul::{Epilogue, Transpose, matmul_dispatch};
use crate::kernels::reduce::LOOP_BUDGET;
use crate::kernels::window::{WG, WindowParams, fits_grid, nest_cost};
use crate::kernels::{Activation, Kernel, R, RW, ensure, source};

pub(crate) const IM2COL: Kernel = Kernel { source: &source::CONV, entry: "im2col", bindings: &[R, RW] };
pub(crate) const IM2COL_ROWS: Kernel = Kernel { source: &source::CONV, entry: "im2col_rows", bindings: &[R, RW] };
pub(crate) const IM2COL_ROWS4: Kernel = Kernel { source: &source::CONV, entry: "im2col_rows4", bindings: &[R, RW] };
pub(crate) const PAD_COLS: Kernel = Kernel { source: &source::CONV, entry: "pad_cols", bindings: &[R, RW] };
pub(crate) const COL2IM: Kernel = Kernel { source: &source::CONV, entry: "col2im", bindings: &[R, RW] };
pub(crate) const COL2IM_ROWS: Kernel = Kernel { source: &source::CONV, entry: "col2im_rows", bindings: &[R, RW] };
pub(crate) const NCHW_TRANSPOSE: Kernel = Kernel { source: &source::CONV, entry: "nchw_transpose", bindings: &[R, RW] };

/// Rows (`images·OH·OW`) of one im2col chunk: bounds the matmul's inner dimension for dW
/// (about 1.25 loop iterations per element) well within [`LOOP_BUDGET`].
const IM2COL_MAX_ROWS: usize = 32_768;
/// Bytes of the im2col buffer of one chunk, at most (unless one image alone needs more).
const IM2COL_MAX_BYTES: usize = 64 << 20;

/// A chunk's weight gradient `dW = dYᵀ·cols` sums over its `chunk·OH·OW` rows (the matmul's
/// K). Past [`DW_SPLIT_MIN`] rows it runs as several products over consecutive slices of those
/// rows, each into its own partial gradient, added in slice order afterwards (split-K, the
/// existing per-chunk `sum_parts`): on lavapipe the TN product with a long K streams both
/// operands' rows once per workgroup column/row, and slices whose operands fit the caches (about
/// [`DW_SLICE_BYTES`] of both) run 3–4× faster (BENCHMARKS.md, C2: `64x576x8192` TN 6.7 GFLOP/s,
/// `64x576x1024` 29; `headswap bench kernel matmul --form tn`).
const DW_SPLIT_MIN: usize = 1024;
/// Bytes of both operands' rows one weight-gradient slice reads, at most (see [`DW_SPLIT_MIN`]).
const DW_SLICE_BYTES: usize = 5 << 19;
/// Bytes of partial weight gradients a scratch may hold for the slices (the direct form's cap).
const DW_PARTS_BYTES: usize = 16 << 20;

/// Rows per weight-gradient slice for chunks of `rows` output pixels (`chunks` of them) and
/// weight rows of `dw_len` values: `rows` itself (one product) up to [`DW_SPLIT_MIN`], else
/// slices of equal length (a multiple of 64, so that every slice's views start 256-byte aligned)
/// reading about [`DW_SLICE_BYTES`] (at least 512 rows), fewer where the partials of all chunks
/// would pass [`DW_PARTS_BYTES`].
pub(super) fn dw_split_rows(s: &Conv2dShape, rows: usize, dw_len: usize, chunks: usize) -> usize {
    if rows <= DW_SPLIT_MIN {
        return rows.max(1);
    }
    let by_cache = (DW_SLICE_BYTES / (4 * (s.o + dw_len))).max(512);
    let part_bytes = 4 * (s.o * dw_len).next_multiple_of(64);
    let max_slices = (DW_PARTS_BYTES / part_bytes / chunks.max(1)).max(1);
    let slices = rows.div_ceil(by_cache).min(max_slices);
    rows.div_ceil(slices).next_multiple_of(64).min(rows)
}

/// Whether im2col can run `shape`: an ungrouped convolution (the one matmul has no groups) whose
/// image's output pixels fit one chunk of columns.
pub(super) fn fits(shape: &Conv2dShape) -> bool {
    let (oh, ow) = shape.out_hw();
    shape.groups == 1 && oh * ow <= IM2COL_MAX_ROWS
}

/// Images per chunk of `shape`: as many as keep the columns within [`IM2COL_MAX_ROWS`] rows and
/// [`IM2COL_MAX_BYTES`], at least one; an error where one image alone has too many rows.
pub(super) fn images_per_chunk(shape: &Conv2dShape) -> Result<usize> {
    let (oh, ow) = shape.out_hw();
    let plane = oh * ow;
    ensure(fits(shape), "conv2d im2col", || {
        if shape.groups != 1 {
            format!("{} groups: im2col runs ungrouped convolutions only; use ConvAlgo::Direct", shape.groups)
        } else {
            format!("one image has {plane} output pixels, more than the {IM2COL_MAX_ROWS} of one chunk; use ConvAlgo::Direct")
        }
    })?;
    let by_rows = IM2COL_MAX_ROWS / plane;
    let by_bytes = IM2COL_MAX_BYTES / (plane * shape.patch_len() * 4).max(1);
    Ok(shape.n.min(by_rows).min(by_bytes).max(1))
}

/// Whether im2col's row kernel (one invocation per output pixel) runs `s` for a chunk of `images`:
/// its loop fits the loop budget and the chunk its grid.
fn rows_kernel_fits(gpu: &Gpu, s: &Conv2dShape, images: usize) -> bool {
    let (oh, ow) = s.out_hw();
    s.c * nest_cost(s.kh, s.kw) + 2 <= LOOP_BUDGET && fits_grid(gpu, [ow.div_ceil(8), oh.div_ceil(8), images])
}

/// The forward's column row length: `C·KH·KW` rounded up to a multiple of 4 where it is not one
/// and the padding adds at most 5 % (the 3-channel 7×7 stem: 147 → 148), so that the matmul
/// reads both the columns and the (padded) weight as vec4s; else `C·KH·KW` itself. Measured on
/// lavapipe for ResNet-18's stem at 64×64 (BENCHMARKS.md, C2): the vec4 product takes the forward
/// 1.31× and the weight gradient 1.26× faster than the scalar-load one (medians of alternating
/// runs). The backward pads too where the batch is one chunk (its weight gradient is made
/// `[O, row_len]` in the padded weight's buffer and cut back); its dx columns stay unpadded.
pub(super) fn forward_row_len(gpu: &Gpu, s: &Conv2dShape, images: usize) -> usize {
    let patch = s.patch_len();
    let padded = patch.next_multiple_of(4);
    if padded != patch && padded * 20 <= patch * 21 && rows_kernel_fits(gpu, s, images) { padded } else { patch }
}

/// im2col of the `b` images from `n0` into `cols`, rows of `row_len ≥ C·KH·KW` values (zeros
/// past `C·KH·KW`): one invocation per output pixel writing its row, where that row's loop fits
/// the loop budget and the image its grid; else one per column element (unpadded rows only).
fn im2col(gpu: &Gpu, s: &Conv2dShape, x: &Tensor, cols: &Tensor, n0: usize, b: usize, row_len: usize) -> Result<Dispatch> {
    let p = WindowParams { n: b as u32, total: n0 as u32, ..s.params() };
    let (oh, ow) = s.out_hw();
    let pad = row_len - s.patch_len();
    if rows_kernel_fits(gpu, s, b) {
        let groups = [ow.div_ceil(8), oh.div_ceil(8), b].map(|g| g as u32);
        let consts = [("IC", s.c as f64), ("KH", s.kh as f64), ("KW", s.kw as f64), ("ROW_PAD", pad as f64)];
        // rows of a multiple of 4 values are written as vec4s (im2col_rows4)
        let kernel = if row_len.is_multiple_of(4) { IM2COL_ROWS4 } else { IM2COL_ROWS };
        return Dispatch::new(gpu, kernel, &consts, bytemuck::bytes_of(&p), &[x, cols], groups);
    }
    ensure(pad == 0, "conv2d im2col", || "padded columns need the row kernel".into())?;
    Dispatch::new(gpu, IM2COL, &[], bytemuck::bytes_of(&p), &[x, cols], groups_1d(cols.len(), WG))
}

/// `dst [O, dst_len]` = `src [O, src_len]` with each row cut or widened with zeros to `dst_len`:
/// the weight widened to the forward's padded rows, and the padded weight gradient cut back.
fn resize_rows(gpu: &Gpu, s: &Conv2dShape, src: &Tensor, dst: &Tensor) -> Result<Dispatch> {
    let (src_len, dst_len) = (src.len() / s.o, dst.len() / s.o);
    let p = WindowParams { n: s.o as u32, c: src_len as u32, w: dst_len as u32, ..WindowParams::default() };
    Dispatch::new(gpu, PAD_COLS, &[], bytemuck::bytes_of(&p), &[src, dst], [dst_len.div_ceil(8) as u32, s.o.div_ceil(8) as u32, 1])
}

/// dx of the `b` images from `n0`, gathered from `dcols`: one invocation per input pixel for all
/// its channels, where that loop fits the loop budget and the image its grid; else one per
/// element.
fn col2im(gpu: &Gpu, s: &Conv2dShape, dcols: &Tensor, dx: &Tensor, n0: usize, b: usize) -> Result<Dispatch> {
    let p = WindowParams { n: b as u32, total: n0 as u32, ..s.params() };
    let groups = [s.w.div_ceil(8), s.h.div_ceil(8), b];
    if s.c * s.window().gather_cost() + 2 <= LOOP_BUDGET && fits_grid(gpu, groups) {
        let groups = groups.map(|g| g as u32);
        return Dispatch::new(gpu, COL2IM_ROWS, &[("IC", s.c as f64)], bytemuck::bytes_of(&p), &[dcols, dx], groups);
    }
    Dispatch::new(gpu, COL2IM, &[], bytemuck::bytes_of(&p), &[dcols, dx], groups_1d(b * s.c * s.h * s.w, WG))
}

/// `dst[b, k, r] = src[b, r, k]` for `b` images, the NCHW side offset by image `n0`: from
/// pixel-major `[b, OH·OW, O]` to NCHW `y` (`to_nchw`), or from NCHW `dy` to pixel-major.
fn transpose(gpu: &Gpu, s: &Conv2dShape, src: &Tensor, dst: &Tensor, n0: usize, b: usize, to_nchw: bool) -> Result<Dispatch> {
    let (oh, ow) = s.out_hw();
    let plane = (oh * ow) as u32;
    let (r, k) = if to_nchw { (plane, s.o as u32) } else { (s.o as u32, plane) };
    let p = WindowParams { n: b as u32, h: r, w: k, c: (!to_nchw) as u32, total: n0 as u32, ..WindowParams::default() };
    Dispatch::new(gpu, NCHW_TRANSPOSE, &[], bytemuck::bytes_of(&p), &[src, dst], [r.div_ceil(8), k.div_ceil(8), b as u32])
}

#[allow(clippy::too_many_arguments)]
pub(super) fn forward(
    gpu: &Gpu,
    s: &Conv2dShape,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    act: Activation,
    y: &Tensor,
    scratch: &ConvScratch,
) -> Result<Vec<Dispatch>> {
    let mut w2 = w.reshape(&[s.o, s.patch_len()])?;
    let mut out = Vec::new();
    if let Some(wpad) = &scratch.wpad {
        out.push(resize_rows(gpu, s, w, wpad)?);
        w2 = wpad.clone();
    }
    let row_len = w2.shape()[1];
    for (n0, nb) in scratch.chunks() {
        let (cols, rows) = scratch.views_with(nb, row_len)?;
        out.push(im2col(gpu, s, x, &cols, n0, nb, row_len)?);
        out.push(matmul_dispatch(gpu, &cols, &w2, &rows, Transpose::NT, Epilogue { bias: b, activation: act })?);
        out.push(transpose(gpu, s, &rows, y, n0, nb, true)?);
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
pub(super) fn backward(
    gpu: &Gpu,
    s: &Conv2dShape,
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
    dx: Option<&Tensor>,
    dw: Option<&Tensor>,
    scratch: &ConvScratch,
) -> Result<Vec<Dispatch>> {
    let patch = s.patch_len();
    let w2 = w.reshape(&[s.o, patch])?;
    // the weight gradient's rows: padded ones (the stem) where the batch is one chunk — dW
    // [O, row_len] then lands in the padded weight's buffer (the forward refills it) and is cut
    // back to [O, C·KH·KW]
    let single = s.n <= scratch.chunk;
    let padded = scratch.wpad.as_ref().filter(|_| single);
    let dw_len = padded.map_or(patch, |w| w.shape()[1]);
    let mut parts_used = 0;
    let mut out = Vec::new();
    for (n0, nb) in scratch.chunks() {
        let (_, rows) = scratch.views(nb)?;
        out.push(transpose(gpu, s, dy, &rows, n0, nb, false)?);
        // a frozen layer (no dw) only needs dx, which does not read the columns of x
        if let Some(dw) = dw {
            let (cols, _) = scratch.views_with(nb, dw_len)?;
            out.push(im2col(gpu, s, x, &cols, n0, nb, dw_len)?);
            match &scratch.parts {
                Some(parts) => {
                    // split-K: slices of the chunk's rows, each into its own partial gradient
                    let total = rows.shape()[0];
                    for r0 in (0..total).step_by(scratch.dw_split_rows) {
                        let len = scratch.dw_split_rows.min(total - r0);
                        let a = rows.view(r0 * s.o, &[len, s.o])?;
                        let b = cols.view(r0 * dw_len, &[len, dw_len])?;
                        let target = parts.view(parts_used * scratch.part_stride, &[s.o, dw_len])?;
                        out.push(matmul_dispatch(gpu, &a, &b, &target, Transpose::TN, Epilogue::default())?);
                        parts_used += 1;
                    }
                }
                None => {
                    let target = match padded {
                        Some(wpad) => wpad.clone(),
                        None => dw.reshape(&[s.o, patch])?,
                    };
                    out.push(matmul_dispatch(gpu, &rows, &cols, &target, Transpose::TN, Epilogue::default())?);
                }
            }
        }
        if let Some(dx) = dx {
            // dcols = dY·W into the column buffer (its columns are no longer needed), then gather
            let (cols, _) = scratch.views(nb)?;
            out.push(matmul_dispatch(gpu, &rows, &w2, &cols, Transpose::NN, Epilogue::default())?);
            out.push(col2im(gpu, s, &cols, dx, n0, nb)?);
        }
    }
    if let Some(dw) = dw {
        let dw2 = dw.reshape(&[s.o, patch])?;
        if let Some(parts) = &scratch.parts {
            let sum_target = padded.cloned().unwrap_or_else(|| dw2.clone());
            out.push(sum_parts(gpu, parts, &sum_target, parts_used, scratch.part_stride)?);
        }
        if let Some(wpad) = padded {
            out.push(resize_rows(gpu, s, wpad, &dw2)?);
        }
    }
    Ok(out)
}
