//! Reductions: column sums (bias gradients), row sums and maxima, and the total of a tensor.
//!
//! Every reduction adds in a fixed order without atomics, so the same input gives bit-identical
//! output on the same adapter (see `shaders/reduce.wgsl`).

use super::{Kernel, R, RW, ensure, source};
use crate::error::Result;
use crate::gpu::pipelines::groups_1d;
use crate::gpu::tensor::DType;
use crate::gpu::{Dispatch, Gpu, Tensor};

pub(crate) const COL_SUM: Kernel = Kernel { source: &source::REDUCE, entry: "col_sum", bindings: &[R, RW] };
pub(crate) const ROW_SUM: Kernel = Kernel { source: &source::REDUCE, entry: "row_sum", bindings: &[R, RW] };
pub(crate) const ROW_MAX: Kernel = Kernel { source: &source::REDUCE, entry: "row_max", bindings: &[R, RW] };
pub(crate) const SUM: Kernel = Kernel { source: &source::REDUCE, entry: "sum", bindings: &[R, RW] };

/// Invocations per workgroup of the per-output kernels (`@workgroup_size(64)`).
const PER_OUTPUT_WG: usize = 64;

/// The most loop iterations one invocation may run, all its loops together. llvmpipe and lavapipe
/// (Mesa's gallivm) end every loop of an invocation once it has run 65,535 iterations in total
/// (`LP_MAX_TGSI_LOOP_ITERATIONS`), silently, so a longer reduction would return a wrong number
/// rather than fail. Launchers whose loop length depends on the data shape check their count
/// against this (with some slack) and return an error past it; the kernels unroll their long
/// loops to stay far from it.
pub(crate) const LOOP_BUDGET: usize = 65_000;

/// `Err` naming `op` unless `iterations` (per invocation, all loops) fit [`LOOP_BUDGET`].
pub(crate) fn ensure_loop_budget(op: &str, iterations: usize, what: impl FnOnce() -> String) -> Result<()> {
    if iterations <= LOOP_BUDGET {
        return Ok(());
    }
    Err(crate::Error::invalid(format!(
        "{op}: {} needs {iterations} loop iterations in one GPU invocation; the limit is {LOOP_BUDGET} \
         (llvmpipe/lavapipe silently stop longer loops)",
        what()
    )))
}

/// Elements one slice of a per-output reduction walks before the launcher splits the output
/// over more invocations (long loops on one invocation leave the rest of the SIMD unit idle).
pub(crate) const SLICE_LEN: usize = 4096;

/// The `SLICES` override for reductions of `len` elements per output: the smallest power of two
/// (≤ 64) that keeps each slice at most [`SLICE_LEN`] long, checked against the loop budget.
fn slices_for(op: &str, len: usize) -> Result<usize> {
    let mut s = 1;
    while s < PER_OUTPUT_WG && len.div_ceil(s) > SLICE_LEN {
        s *= 2;
    }
    // unrolled by 8, a tail of < 8, and slice 0 adding the other slices' partials
    let iterations = len.div_ceil(s).div_ceil(8) + 8 + s;
    ensure_loop_budget(op, iterations, || format!("reducing {len} elements per output"))?;
    Ok(s)
}

/// Builds a per-output reduction of `x` `[rows, cols]`: one output per column for `col_sum`,
/// per row for the others.
fn per_output(gpu: &Gpu, kernel: Kernel, x: &Tensor, out: &Tensor) -> Result<Dispatch> {
    let (rows, cols) = (x.shape()[0], x.shape()[1]);
    let (outputs, len) = if kernel == COL_SUM { (cols, rows) } else { (rows, cols) };
    let slices = slices_for(kernel.entry, len)?;
    let p = params(rows, cols, x.len(), false);
    let groups = groups_1d(outputs, (PER_OUTPUT_WG / slices) as u32);
    Dispatch::new(gpu, kernel, &[("SLICES", slices as f64)], bytemuck::bytes_of(&p), &[x, out], groups)
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct ReduceParams {
    pub rows: u32,
    pub cols: u32,
    pub n: u32,
    pub accumulate: u32,
}

/// Checks that `t` is f32 (the reductions read and write f32 only).
fn ensure_f32(t: &Tensor, op: &str, name: &str) -> Result<()> {
    ensure(t.dtype() == DType::F32, op, || format!("{name} must be f32, it is {:?}", t.dtype()))
}

/// (rows, cols) of a 2-D `x`, checked to be f32 and to fit the kernels' u32 indices.
fn matrix(x: &Tensor, op: &str) -> Result<(usize, usize)> {
    ensure(x.shape().len() == 2, op, || format!("x must be 2-D [rows, cols], it is {:?}", x.shape()))?;
    ensure_f32(x, op, "x")?;
    ensure(x.len() <= u32::MAX as usize, op, || format!("x {:?} has more than 2^32 elements", x.shape()))?;
    Ok((x.shape()[0], x.shape()[1]))
}

fn params(rows: usize, cols: usize, n: usize, accumulate: bool) -> ReduceParams {
    ReduceParams { rows: rows as u32, cols: cols as u32, n: n as u32, accumulate: accumulate as u32 }
}

/// Builds `out[c] = Σ_r x[r, c]`; x is `[rows, cols]`, out has `cols` elements (bias
/// gradients). Rows are added in order, one invocation per column (split into up to 64 slices
/// combined in order when the columns are long).
pub fn col_sum_dispatch(gpu: &Gpu, x: &Tensor, out: &Tensor) -> Result<Dispatch> {
    let op = "col_sum";
    let (_, cols) = matrix(x, op)?;
    ensure_f32(out, op, "out")?;
    ensure(out.len() == cols, op, || format!("out has {} elements, x {:?} has {cols} columns", out.len(), x.shape()))?;
    per_output(gpu, COL_SUM, x, out)
}

/// `out[c] = Σ_r x[r, c]`, run at once.
pub fn col_sum(gpu: &Gpu, x: &Tensor, out: &mut Tensor) -> Result<()> {
    gpu.run("col_sum", &[&col_sum_dispatch(gpu, x, out)?])
}

/// Builds `out[r] = Σ_c x[r, c]`; x is `[rows, cols]`, out has `rows` elements.
pub fn row_sum_dispatch(gpu: &Gpu, x: &Tensor, out: &Tensor) -> Result<Dispatch> {
    let op = "row_sum";
    let (rows, _) = matrix(x, op)?;
    ensure_f32(out, op, "out")?;
    ensure(out.len() == rows, op, || format!("out has {} elements, x {:?} has {rows} rows", out.len(), x.shape()))?;
    per_output(gpu, ROW_SUM, x, out)
}

/// `out[r] = Σ_c x[r, c]`, run at once.
pub fn row_sum(gpu: &Gpu, x: &Tensor, out: &mut Tensor) -> Result<()> {
    gpu.run("row_sum", &[&row_sum_dispatch(gpu, x, out)?])
}

/// Builds `out[r] = max_c x[r, c]` (NaN when the row holds a NaN); x is `[rows, cols]` with
/// `cols ≥ 1`, out has `rows` elements.
pub fn row_max_dispatch(gpu: &Gpu, x: &Tensor, out: &Tensor) -> Result<Dispatch> {
    let op = "row_max";
    let (rows, cols) = matrix(x, op)?;
    ensure(cols >= 1 || rows == 0, op, || format!("x {:?} has no columns: the maximum of nothing is undefined", x.shape()))?;
    ensure_f32(out, op, "out")?;
    ensure(out.len() == rows, op, || format!("out has {} elements, x {:?} has {rows} rows", out.len(), x.shape()))?;
    per_output(gpu, ROW_MAX, x, out)
}

/// `out[r] = max_c x[r, c]`, run at once.
pub fn row_max(gpu: &Gpu, x: &Tensor, out: &mut Tensor) -> Result<()> {
    gpu.run("row_max", &[&row_max_dispatch(gpu, x, out)?])
}

/// Builds the total of every element of `x` (any shape) into `out[0]`; `out` has one element.
/// With `accumulate` the total is added to `out[0]` instead of overwriting it (the trainer sums
/// an epoch's loss on the GPU and reads it once). One workgroup of 256, fixed order.
pub fn sum_dispatch(gpu: &Gpu, x: &Tensor, out: &Tensor, accumulate: bool) -> Result<Dispatch> {
    let op = "sum";
    ensure_f32(x, op, "x")?;
    ensure_f32(out, op, "out")?;
    ensure(out.len() == 1, op, || format!("out must have one element, it is {:?}", out.shape()))?;
    ensure(x.len() <= u32::MAX as usize, op, || format!("x {:?} has more than 2^32 elements", x.shape()))?;
    // 256 invocations, each unrolled by 8 plus a tail of < 8, then the 8-level tree
    ensure_loop_budget(op, x.len().div_ceil(256).div_ceil(8) + 8 + 9, || format!("x {:?}", x.shape()))?;
    let p = params(0, 0, x.len(), accumulate);
    // always one workgroup, even for an empty x: out[0] still gets written (0, or left as is)
    Dispatch::new(gpu, SUM, &[], bytemuck::bytes_of(&p), &[x, out], [1, 1, 1])
}

/// `out[0] = Σ x` (or `out[0] += Σ x` with `accumulate`), run at once.
pub fn sum(gpu: &Gpu, x: &Tensor, out: &mut Tensor, accumulate: bool) -> Result<()> {
    gpu.run("sum", &[&sum_dispatch(gpu, x, out, accumulate)?])
}

#[cfg(test)]
mod tests {
    #[test]
    fn params_match_wgsl_size() {
        // struct Params { rows, cols, n, accumulate: u32 } = 16 bytes in WGSL
        assert_eq!(std::mem::size_of::<super::ReduceParams>(), 16);
    }
}
