//! Batch assembly on the GPU: the data set is uploaded once, and every step copies its batch's
//! rows out of it through a (shuffled) index buffer, so no sample crosses the bus twice.
//!
//! ```no_run
//! use headswap::{Gpu, Tensor, kernels::gather};
//! let gpu = Gpu::new()?;
//! let xs = Tensor::from_slice(&gpu, &[4, 2], &[0., 1., 10., 11., 20., 21., 30., 31.])?;
//! let order = Tensor::from_u32(&gpu, &[4], &[2, 0, 3, 1])?; // an epoch's shuffle
//! let batch = Tensor::zeros(&gpu, &[2, 2])?;
//! let g = gather::gather_rows(&gpu, &xs, &order, &batch)?;
//! g.set_offset(&gpu, 2)?; // the second batch of the epoch: rows 3 and 1
//! g.run(&gpu)?;
//! assert_eq!(batch.download(&gpu)?, vec![30., 31., 10., 11.]);
//! # Ok::<(), headswap::Error>(())
//! ```

use super::{Kernel, R, RW, ensure, source};
use crate::error::{Error, Result};
use crate::gpu::pipelines::StepUniforms;
use crate::gpu::tensor::DType;
use crate::gpu::{Dispatch, Gpu, Tensor};

pub(crate) const GATHER_ROWS: Kernel = Kernel { source: &source::GATHER, entry: "gather_rows", bindings: &[R, R, RW] };
pub(crate) const GATHER_ROWS4: Kernel = Kernel { source: &source::GATHER, entry: "gather_rows4", bindings: &[R, R, RW] };
pub(crate) const GATHER_ROWS_F16: Kernel = Kernel { source: &source::GATHER, entry: "gather_rows_f16", bindings: &[R, R, RW] };
pub(crate) const PACK_ROWS_F16: Kernel = Kernel { source: &source::GATHER, entry: "pack_rows_f16", bindings: &[R, RW] };
pub(crate) const PACK_F16: Kernel = Kernel { source: &source::GATHER, entry: "pack_f16", bindings: &[R, RW] };
pub(crate) const WIDEN_F16: Kernel = Kernel { source: &source::GATHER, entry: "widen_f16", bindings: &[R, RW] };
pub(crate) const GATHER_ROWS_PAIR4: Kernel = Kernel { source: &source::GATHER, entry: "gather_rows_pair4", bindings: &[R, R, RW, R, RW] };

/// Uniform block of `gather_rows` (`GatherParams` in gather.wgsl).
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct GatherParams {
    pub n: u32,
    pub d: u32,
    pub b: u32,
    pub offset: u32,
    pub total: u32,
    pub base: u32,
    pub last: u32,
    /// `gather_rows_f16`: f32 elements per destination row; 0 otherwise.
    pub width: u32,
}

/// Uniform block of `gather_rows_pair4` (`PairParams` in gather.wgsl).
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct PairParams {
    pub n: u32,
    pub dx: u32,
    pub b: u32,
    pub offset: u32,
    pub total: u32,
    pub dy: u32,
    pub gx: u32,
    pub _pad: u32,
}

/// A launch that reads its batch through an index buffer, `indices[offset .. offset + b]`: a row
/// gather `dst[i, ..] = src[indices[offset + i], ..]` (or two, from [`gather_rows_pair`]), or the
/// fused linear head step ([`crate::kernels::loss::linear_head_bce_dispatch`]). Built once per
/// (data set, batch buffer) and replayed every step with a new offset.
#[derive(Debug)]
pub struct IndexedDispatch {
    dispatch: Dispatch,
    /// The uniform block as words, the offset at `offset_word`.
    params: [u32; 8],
    offset_word: usize,
    /// Length of the index buffer.
    total: u32,
    rows: u32,
}

/// A row gather (see [`IndexedDispatch`]).
pub type GatherRows = IndexedDispatch;

impl IndexedDispatch {
    /// `params`: the launch's uniform block as eight words, the batch offset at `offset_word`;
    /// `total`: the index buffer's length; `rows`: positions read per launch.
    pub(crate) fn new(dispatch: Dispatch, params: [u32; 8], offset_word: usize, total: usize, rows: usize) -> IndexedDispatch {
        IndexedDispatch { dispatch, params, offset_word, total: total as u32, rows: rows as u32 }
    }

    /// Points the gather at `indices[offset .. offset + b]`; takes effect at the next submission.
    /// `offset + b` must not pass the end of the index buffer.
    pub fn set_offset(&self, gpu: &Gpu, offset: u32) -> Result<()> {
        let p = self.params_at(offset)?;
        self.dispatch.write_params(gpu, bytemuck::bytes_of(&p));
        Ok(())
    }

    /// Stages the offset as the current step's value in `uniforms` (several steps per submission).
    pub(crate) fn stage_offset(&self, uniforms: &mut StepUniforms, offset: u32) -> Result<()> {
        let p = self.params_at(offset)?;
        uniforms.set(&self.dispatch, bytemuck::bytes_of(&p));
        Ok(())
    }

    /// The launch's uniform block pointed at `offset`.
    pub(crate) fn params_at(&self, offset: u32) -> Result<[u32; 8]> {
        let end = offset as u64 + self.rows as u64;
        let total = self.total;
        if end > total as u64 {
            let name = self.dispatch.name();
            return Err(Error::invalid(format!("{name}: positions {offset}..{end} pass the end of the {total} indices")));
        }
        let mut p = self.params;
        p[self.offset_word] = offset;
        Ok(p)
    }

    /// The launch, to record into a training step's pass.
    pub fn dispatch(&self) -> &Dispatch {
        &self.dispatch
    }

    /// The launch itself, at the offset last written.
    pub(crate) fn into_dispatch(self) -> Dispatch {
        self.dispatch
    }

    /// Runs the launch at once, in its own submission.
    pub fn run(&self, gpu: &Gpu) -> Result<()> {
        gpu.run(self.dispatch.name(), &[&self.dispatch])
    }

    /// Batch rows per launch (b).
    pub fn rows(&self) -> usize {
        self.rows as usize
    }
}

/// Checks one gather's operands: `src` `[n, ...]` and `dst` `[b, ...]` with the same rows and
/// dtype, u32 `indices` with at least `b` entries, `dst` apart from both. Returns (n, b, d).
fn check_rows(op: &str, src: &Tensor, dst: &Tensor, indices: &Tensor) -> Result<(usize, usize, usize)> {
    ensure(!src.shape().is_empty() && !dst.shape().is_empty(), op, || {
        format!("src {:?} and dst {:?} need a row dimension", src.shape(), dst.shape())
    })?;
    ensure(src.shape()[1..] == dst.shape()[1..], op, || format!("src {:?} and dst {:?} rows differ", src.shape(), dst.shape()))?;
    ensure(src.dtype() == dst.dtype(), op, || format!("src is {:?}, dst is {:?}", src.dtype(), dst.dtype()))?;
    ensure(indices.dtype() == DType::U32 && indices.shape().len() == 1, op, || {
        format!("indices must be a u32 vector, are {:?} {:?}", indices.dtype(), indices.shape())
    })?;
    let (n, b, total) = (src.shape()[0], dst.shape()[0], indices.len());
    let d: usize = src.shape()[1..].iter().product();
    ensure(d >= 1, op, || format!("src {:?} has empty rows", src.shape()))?;
    ensure(b <= total, op, || format!("a batch of {b} rows needs at least {b} indices, there are {total}"))?;
    ensure(!dst.same_buffer(src) && !dst.same_buffer(indices), op, || "dst must not share a buffer with src or indices".into())?;
    Ok((n, b, d))
}

/// Builds `dst[i, ..] = src[indices[offset + i], ..]` for the `b` rows of `dst`, starting at
/// offset 0. `src` is `[n, ...]` (f32 or u32; `[n]` for one label per row), `dst` is `[b, ...]`
/// with the same trailing dimensions and dtype, `indices` is u32 `[total]` with `b ≤ total`.
/// Elements are copied as bits. An index ≥ n is not read: its row is filled with `0xFFFFFFFF`
/// (NaN as f32, `u32::MAX` as a label) so it shows.
pub fn gather_rows(gpu: &Gpu, src: &Tensor, indices: &Tensor, dst: &Tensor) -> Result<GatherRows> {
    gather_rows_chunk(gpu, src, 0, true, indices, dst)
}

/// The gather for one chunk of a data set split over several buffers: `src` holds global rows
/// `base .. base + n`; only batch rows whose index falls there are written. The `last` chunk also
/// marks indices past the end with `0xFFFFFFFF`. Launch one per chunk, in any order.
pub fn gather_rows_chunk(gpu: &Gpu, src: &Tensor, base: usize, last: bool, indices: &Tensor, dst: &Tensor) -> Result<GatherRows> {
    let op = "gather_rows";
    let (n, b, d) = check_rows(op, src, dst, indices)?;
    let total = indices.len();
    let fits = |v: usize| u32::try_from(v).map_err(|_| Error::invalid(format!("{op}: {v} exceeds u32")));
    fits(src.len())?; // row · d stays below src.len() in the kernel's u32 arithmetic
    // whole vec4s per row, 16-byte aligned: copy four elements per invocation
    let vec4 = d.is_multiple_of(4) && src.offset().is_multiple_of(16) && dst.offset().is_multiple_of(16);
    let (kernel, units) = if vec4 { (GATHER_ROWS4, d / 4) } else { (GATHER_ROWS, d) };
    let params = GatherParams {
        n: fits(n)?,
        d: fits(units)?,
        b: fits(b)?,
        offset: 0,
        total: fits(total)?,
        base: fits(base)?,
        last: last as u32,
        width: 0,
    };
    let dispatch = Dispatch::new(gpu, kernel, &[], bytemuck::bytes_of(&params), &[src, indices, dst], groups_2d(units, b))?;
    Ok(IndexedDispatch::new(dispatch, bytemuck::cast(params), 3, total, b))
}

/// Builds one launch that gathers the same batch rows of two sources: inputs `src_x` `[n, dx]`
/// into `dst_x` and targets `src_y` `[n, dy]` into `dst_y` (`dst_*[i] = src_*[indices[offset + i]]`),
/// which saves a launch per training step. It needs inputs whose rows are whole vec4s (`dx` a
/// multiple of 4, 16-byte aligned views) and sources in one buffer each; returns `None` otherwise
/// (use two [`gather_rows`] then). Elements are copied as bits; an index ≥ n fills both rows with
/// `0xFFFFFFFF`.
pub fn gather_rows_pair(
    gpu: &Gpu,
    src_x: &Tensor,
    dst_x: &Tensor,
    src_y: &Tensor,
    dst_y: &Tensor,
    indices: &Tensor,
) -> Result<Option<GatherRows>> {
    let op = "gather_rows_pair";
    let (n, b, dx) = check_rows(op, src_x, dst_x, indices)?;
    let (ny, by, dy) = check_rows(op, src_y, dst_y, indices)?;
    ensure(ny == n && by == b, op, || {
        format!("inputs {:?} → {:?} and targets {:?} → {:?} differ in rows", src_x.shape(), dst_x.shape(), src_y.shape(), dst_y.shape())
    })?;
    let total = indices.len();
    let aligned = [src_x, dst_x].iter().all(|t| t.offset().is_multiple_of(16));
    if !dx.is_multiple_of(4) || !aligned || dst_y.same_buffer(dst_x) {
        return Ok(None);
    }
    let fits = |v: usize| u32::try_from(v).map_err(|_| Error::invalid(format!("{op}: {v} exceeds u32")));
    fits(src_x.len())?;
    fits(src_y.len())?;
    let gx = (dx / 4).div_ceil(64);
    let params =
        PairParams { n: fits(n)?, dx: fits(dx / 4)?, b: fits(b)?, offset: 0, total: fits(total)?, dy: fits(dy)?, gx: fits(gx)?, _pad: 0 };
    let [_, y, z] = groups_2d(1, b);
    let groups = [fits(gx + dy.div_ceil(64))?, y, z];
    let dispatch = Dispatch::new(gpu, GATHER_ROWS_PAIR4, &[], bytemuck::bytes_of(&params), &[src_x, indices, dst_x, src_y, dst_y], groups)?;
    Ok(Some(IndexedDispatch::new(dispatch, bytemuck::cast(params), 3, total, b)))
}

/// Words of a row of `d` values stored as f16, two per u32 ([`pack_rows_f16`]).
pub fn f16_words(d: usize) -> usize {
    d.div_ceil(2)
}

/// Like [`gather_rows`] from rows stored in f16: `src` is u32 `[n, ⌈d/2⌉]`, two halves per word
/// (the first in the low 16 bits, as [`pack_rows_f16`] writes them), and `dst` f32 `[b, d]`
/// receives them widened to f32 (exactly). An index ≥ n fills its row with `0xFFFFFFFF` (NaN).
///
/// ```no_run
/// use headswap::{Gpu, Tensor, kernels::gather};
/// let gpu = Gpu::new()?;
/// let rows = Tensor::from_slice(&gpu, &[2, 3], &[0.5, 1.0, -2.0, 3.0, 0.1, 7.0])?;
/// let packed = Tensor::alloc(&gpu, &[2, gather::f16_words(3)], headswap::gpu::tensor::DType::U32, "packed")?;
/// gather::pack_rows_f16(&gpu, &rows, &packed, 0)?.run(&gpu)?;
/// let order = Tensor::from_u32(&gpu, &[2], &[1, 0])?;
/// let batch = Tensor::zeros(&gpu, &[2, 3])?;
/// gather::gather_rows_f16(&gpu, &packed, &order, &batch)?.run(&gpu)?;
/// let b = batch.download(&gpu)?;
/// assert_eq!(b[0], 3.0); // 0.1 and the others come back as their nearest f16
/// # Ok::<(), headswap::Error>(())
/// ```
pub fn gather_rows_f16(gpu: &Gpu, src: &Tensor, indices: &Tensor, dst: &Tensor) -> Result<GatherRows> {
    gather_rows_f16_chunk(gpu, src, 0, true, indices, dst)
}

/// [`gather_rows_f16`] for one chunk of f16 rows split over several buffers (see
/// [`gather_rows_chunk`]).
pub fn gather_rows_f16_chunk(gpu: &Gpu, src: &Tensor, base: usize, last: bool, indices: &Tensor, dst: &Tensor) -> Result<GatherRows> {
    let op = "gather_rows_f16";
    ensure(src.dtype() == DType::U32 && src.shape().len() == 2, op, || {
        format!("src must be u32 [n, words] (f16 pairs), is {:?} {:?}", src.dtype(), src.shape())
    })?;
    ensure(dst.dtype() == DType::F32 && dst.shape().len() == 2, op, || {
        format!("dst must be f32 [b, d], is {:?} {:?}", dst.dtype(), dst.shape())
    })?;
    ensure(indices.dtype() == DType::U32 && indices.shape().len() == 1, op, || {
        format!("indices must be a u32 vector, are {:?} {:?}", indices.dtype(), indices.shape())
    })?;
    let (n, words) = (src.shape()[0], src.shape()[1]);
    let (b, d) = (dst.shape()[0], dst.shape()[1]);
    ensure(d >= 1 && words == f16_words(d), op, || format!("dst rows of {d} values need {} words, src has {words}", f16_words(d)))?;
    let total = indices.len();
    ensure(b <= total, op, || format!("a batch of {b} rows needs at least {b} indices, there are {total}"))?;
    ensure(!dst.same_buffer(src) && !dst.same_buffer(indices), op, || "dst must not share a buffer with src or indices".into())?;
    let fits = |v: usize| u32::try_from(v).map_err(|_| Error::invalid(format!("{op}: {v} exceeds u32")));
    fits(src.len())?;
    fits(dst.len())?;
    let params = GatherParams {
        n: fits(n)?,
        d: fits(words)?,
        b: fits(b)?,
        offset: 0,
        total: fits(total)?,
        base: fits(base)?,
        last: last as u32,
        width: fits(d)?,
    };
    let dispatch = Dispatch::new(gpu, GATHER_ROWS_F16, &[], bytemuck::bytes_of(&params), &[src, indices, dst], groups_2d(words, b))?;
    Ok(IndexedDispatch::new(dispatch, bytemuck::cast(params), 3, total, b))
}

/// Uniform block of `pack_rows_f16` (`PackParams` in gather.wgsl).
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct PackParams {
    pub rows: u32,
    pub width: u32,
    pub words: u32,
    pub start: u32,
    pub base: u32,
    pub n: u32,
    pub _pad: [u32; 2],
}

/// Stores f32 rows in f16, two per u32 word ([`pack_rows_f16`]); built once, pointed at another
/// global row with [`PackRows::set_start`].
#[derive(Debug)]
pub struct PackRows {
    dispatch: Dispatch,
    params: PackParams,
}

impl PackRows {
    /// The global row of `src`'s first row (0 when built); takes effect at the next submission.
    pub fn set_start(&self, gpu: &Gpu, start: usize) -> Result<()> {
        let start = u32::try_from(start).map_err(|_| Error::invalid(format!("pack_rows_f16: row {start} exceeds u32")))?;
        self.dispatch.write_params(gpu, bytemuck::bytes_of(&PackParams { start, ..self.params }));
        Ok(())
    }

    /// The launch, to record.
    pub fn dispatch(&self) -> &Dispatch {
        &self.dispatch
    }

    /// Runs the launch at once, in its own submission.
    pub fn run(&self, gpu: &Gpu) -> Result<()> {
        gpu.run(self.dispatch.name(), &[&self.dispatch])
    }
}

/// Builds the launch that rounds the f32 rows of `src` `[rows, d]` to f16 (to nearest, ties to
/// even: the `half` crate's `f16::from_f32`, on every adapter) and stores them two per word into
/// `dst`, u32 `[n, ⌈d/2⌉]`, which holds global rows `base .. base + n`: `src`'s row `i` is global
/// row `start + i` ([`PackRows::set_start`], 0 at first); rows outside `dst` are skipped, so a
/// data set split over several buffers takes one launch per buffer. An odd `d` leaves the high
/// half of each row's last word 0. Values beyond ±65504 become ±inf, as in any f16 conversion.
pub fn pack_rows_f16(gpu: &Gpu, src: &Tensor, dst: &Tensor, base: usize) -> Result<PackRows> {
    let op = "pack_rows_f16";
    ensure(src.dtype() == DType::F32 && src.shape().len() == 2, op, || {
        format!("src must be f32 [rows, d], is {:?} {:?}", src.dtype(), src.shape())
    })?;
    ensure(dst.dtype() == DType::U32 && dst.shape().len() == 2, op, || {
        format!("dst must be u32 [n, words] (f16 pairs), is {:?} {:?}", dst.dtype(), dst.shape())
    })?;
    let (rows, d) = (src.shape()[0], src.shape()[1]);
    let (n, words) = (dst.shape()[0], dst.shape()[1]);
    ensure(d >= 1 && words == f16_words(d), op, || format!("rows of {d} values need {} words, dst has {words}", f16_words(d)))?;
    ensure(!dst.same_buffer(src), op, || "dst must not share a buffer with src".into())?;
    let fits = |v: usize| u32::try_from(v).map_err(|_| Error::invalid(format!("{op}: {v} exceeds u32")));
    fits(src.len())?;
    fits(dst.len())?;
    fits(base + n)?;
    let params =
        PackParams { rows: fits(rows)?, width: fits(d)?, words: fits(words)?, start: 0, base: fits(base)?, n: fits(n)?, _pad: [0; 2] };
    let dispatch = Dispatch::new(gpu, PACK_ROWS_F16, &[], bytemuck::bytes_of(&params), &[src, dst], groups_2d(words, rows))?;
    Ok(PackRows { dispatch, params })
}

/// Uniform block of `pack_f16` and `widen_f16` (`FlatParams` in gather.wgsl).
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct FlatParams {
    pub words: u32,
    pub n: u32,
    pub start: u32,
    pub row: u32,
}

/// Workgroups of 64 invocations covering `words`, folded into y past 65,535; and the
/// invocations per y step.
fn groups_flat(words: usize) -> Result<([u32; 3], u32)> {
    let groups = words.div_ceil(64).max(1);
    let (x, y) = if groups <= 65535 { (groups, 1) } else { (65535, groups.div_ceil(65535)) };
    let y = u32::try_from(y).map_err(|_| Error::invalid(format!("f16: {words} words exceed the launch grid")))?;
    Ok(([x as u32, y, 1], 64 * x as u32))
}

/// Builds the launch that rounds the f32 values of `src` (any shape, `n` elements) to f16, to
/// nearest, ties to even (the `half` crate's `f16::from_f32`, on every adapter), and stores
/// them two per word into `dst`, u32 with `⌈n / 2⌉` elements: element `2k` in the low half of
/// word `k`, `2k + 1` in its high half (0 past an odd `n`). Values beyond ±65504 become ±inf.
///
/// ```no_run
/// use headswap::{Gpu, Tensor, kernels::gather};
/// let gpu = Gpu::new()?;
/// let w = Tensor::from_slice(&gpu, &[3], &[1.0, -2.0, 0.1])?;
/// let packed = Tensor::alloc(&gpu, &[2], headswap::gpu::tensor::DType::U32, "packed")?;
/// gpu.run("pack", &[&gather::pack_f16(&gpu, &w, &packed)?])?;
/// let wide = Tensor::zeros(&gpu, &[4])?;
/// gpu.run("widen", &[&gather::widen_f16(&gpu, &packed, 0, &wide)?])?;
/// assert_eq!(wide.download(&gpu)?[..2], [1.0, -2.0]); // 0.1 comes back as its nearest f16
/// # Ok::<(), headswap::Error>(())
/// ```
pub fn pack_f16(gpu: &Gpu, src: &Tensor, dst: &Tensor) -> Result<Dispatch> {
    let op = "pack_f16";
    ensure(src.dtype() == DType::F32, op, || format!("src must be f32, is {:?}", src.dtype()))?;
    ensure(dst.dtype() == DType::U32, op, || format!("dst must be u32 (f16 pairs), is {:?}", dst.dtype()))?;
    let (n, words) = (src.len(), f16_words(src.len()));
    ensure(n >= 1 && dst.len() == words, op, || format!("{n} values need {words} words, dst has {}", dst.len()))?;
    ensure(!dst.same_buffer(src), op, || "dst must not share a buffer with src".into())?;
    let fits = |v: usize| u32::try_from(v).map_err(|_| Error::invalid(format!("{op}: {v} exceeds u32")));
    let (groups, row) = groups_flat(words)?;
    let params = FlatParams { words: fits(words)?, n: fits(n)?, start: 0, row };
    Dispatch::new(gpu, PACK_F16, &[], bytemuck::bytes_of(&params), &[src, dst], groups)
}

/// Builds the launch that widens words `start .. start + dst.len() / 2` of `src` (u32, two f16
/// per word as [`pack_f16`] stores them) to f32, exactly, into `dst` (f32 of an even length):
/// `dst[2k]` from the low half of word `start + k`, `dst[2k + 1]` from its high half. `start`
/// is a word index, so a packed arena is read at any layer without an aligned view.
pub fn widen_f16(gpu: &Gpu, src: &Tensor, start: usize, dst: &Tensor) -> Result<Dispatch> {
    let op = "widen_f16";
    ensure(src.dtype() == DType::U32, op, || format!("src must be u32 (f16 pairs), is {:?}", src.dtype()))?;
    ensure(dst.dtype() == DType::F32, op, || format!("dst must be f32, is {:?}", dst.dtype()))?;
    let words = dst.len() / 2;
    ensure(words >= 1 && dst.len().is_multiple_of(2), op, || format!("dst must hold an even number (≥ 2) of values, holds {}", dst.len()))?;
    ensure(start.checked_add(words).is_some_and(|e| e <= src.len()), op, || {
        format!("words {start}..{} are past src's {}", start.saturating_add(words), src.len())
    })?;
    ensure(!dst.same_buffer(src), op, || "dst must not share a buffer with src".into())?;
    let fits = |v: usize| u32::try_from(v).map_err(|_| Error::invalid(format!("{op}: {v} exceeds u32")));
    fits(src.len())?;
    let (groups, row) = groups_flat(words)?;
    let params = FlatParams { words: fits(words)?, n: 0, start: fits(start)?, row };
    Dispatch::new(gpu, WIDEN_F16, &[], bytemuck::bytes_of(&params), &[src, dst], groups)
}

/// Batch rows one workgroup copies (`GATHER_ROWS_PER_GROUP` in gather.wgsl).
const ROWS_PER_GROUP: usize = 16;

/// Workgroups of 64 elements × 16 rows covering `cols` × `rows`, folded into z past 65,535.
fn groups_2d(cols: usize, rows: usize) -> [u32; 3] {
    let x = cols.div_ceil(64) as u32;
    let y = rows.div_ceil(ROWS_PER_GROUP);
    if y <= 65535 { [x, y as u32, 1] } else { [x, 65535, y.div_ceil(65535) as u32] }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::wgsl_struct_bytes;
    #[test]
    fn params_match_wgsl_size() {
        assert_eq!(std::mem::size_of::<GatherParams>(), 32);
        assert_eq!(wgsl_struct_bytes(crate::kernels::source::GATHER_WGSL, "GatherParams"), std::mem::size_of::<GatherParams>());
        assert_eq!(wgsl_struct_bytes(crate::kernels::source::GATHER_WGSL, "PairParams"), std::mem::size_of::<PairParams>());
        assert_eq!(wgsl_struct_bytes(crate::kernels::source::GATHER_WGSL, "PackParams"), std::mem::size_of::<PackParams>());
        assert_eq!(wgsl_struct_bytes(crate::kernels::source::GATHER_WGSL, "FlatParams"), std::mem::size_of::<FlatParams>());
    }
}
