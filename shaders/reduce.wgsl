// reduce.wgsl — sums and maxima over rows, columns or a whole tensor, f32, row-major.
//
// Entry points (workgroup 64 for the per-output ones):
//   col_sum  out[c] = Σ_r x[r, c]      x [rows, cols], out [cols]
//   row_sum  out[r] = Σ_c x[r, c]      x [rows, cols], out [rows]
//   row_max  out[r] = max_c x[r, c]    NaN if the row holds a NaN (like torch.max); cols ≥ 1
//   sum      out[0] = Σ_i x[i]  (+ out[0] when p.accumulate != 0)   ONE workgroup of 256
// Bindings (all entry points): 1 x (r), 2 out (rw).
// Override (col_sum, row_sum, row_max): SLICES, a power of two ≤ 64: the invocations that share
// one output, each reducing one contiguous slice of it. The launcher picks it from the shape:
// 1 (no barrier at all) while the loop per output is short, more when it is long.
//
// Determinism: no atomics, and every output is a fixed sequence of f32 operations that depends
// only on the shape (SLICES included), so the same input gives bit-identical output on the same
// adapter.
// * per-output kernels: each slice walks its range in index order; slice partials are then added
//   (or max-ed) in slice order by slice 0. With SLICES = 1 (many outputs, short loops) there is
//   one invocation per output and no workgroup barrier (barriers are expensive on lavapipe).
// * sum: invocation t adds x[t], x[t + 256], x[t + 512], ... in order, then a fixed binary tree
//   over the 256 partial sums in workgroup memory (8 barriers, once per dispatch).
//
// Loop lengths: llvmpipe/lavapipe (gallivm) stop EVERY loop of an invocation silently once the
// invocation has run 65,535 loop iterations in total (LP_MAX_TGSI_LOOP_ITERATIONS), giving wrong
// results, not an error. So the long loops here are unrolled by 8 (the additions stay in index
// order) and the launchers keep every invocation under a budget (src/kernels/reduce.rs,
// LOOP_BUDGET), choosing SLICES so that it holds.
// Reference: src/reference/reduce.rs.

struct Params {
    rows: u32,        // rows of x (col_sum, row_sum, row_max)
    cols: u32,        // columns of x
    n: u32,           // elements of x (sum)
    accumulate: u32,  // sum: 1 adds the total to out[0], 0 overwrites it
}

override SLICES: u32 = 1u;
const WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

var<workgroup> slice_part: array<f32, 64>;
var<workgroup> slice_flags: array<u32, 64>;

// NaN test on the bits, immune to compilers that assume `v != v` is false.
fn reduce_is_nan(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u;
}

// The output this invocation works on, its slice, and the slice's range [lo, hi) of `len`.
struct Work {
    o: u32,
    slice: u32,
    lo: u32,
    hi: u32,
}

fn work(wid: vec3<u32>, nwg: vec3<u32>, l: u32, len: u32) -> Work {
    let per_wg = WG / SLICES;
    let group = wid.x + wid.y * nwg.x;
    let slice = l / per_wg;
    let chunk = len / SLICES + select(0u, 1u, len % SLICES != 0u);
    let lo = min(slice * chunk, len);
    return Work(group * per_wg + l % per_wg, slice, lo, min(lo + chunk, len));
}

// Σ_{r in [lo, hi)} x[r, c], in order.
fn col_partial(c: u32, lo: u32, hi: u32) -> f32 {
    let cols = p.cols;
    var s = 0.0;
    var r = lo;
    for (; r + 8u <= hi; r += 8u) {
        var i = r * cols + c;
        s += x[i]; i += cols;
        s += x[i]; i += cols;
        s += x[i]; i += cols;
        s += x[i]; i += cols;
        s += x[i]; i += cols;
        s += x[i]; i += cols;
        s += x[i]; i += cols;
        s += x[i];
    }
    for (; r < hi; r++) {
        s += x[r * cols + c];
    }
    return s;
}

// Σ x[i] for i in [lo, hi), in order.
fn range_sum(lo: u32, hi: u32) -> f32 {
    var s = 0.0;
    var i = lo;
    for (; i + 8u <= hi; i += 8u) {
        s += x[i];
        s += x[i + 1u];
        s += x[i + 2u];
        s += x[i + 3u];
        s += x[i + 4u];
        s += x[i + 5u];
        s += x[i + 6u];
        s += x[i + 7u];
    }
    for (; i < hi; i++) {
        s += x[i];
    }
    return s;
}

// Adds the slice partials of output `o` in slice order (slice 0 only) and stores the sum.
// Called in uniform control flow: every invocation reaches the barrier.
fn finish_sum(w: Work, l: u32, s: f32, valid: bool) {
    if SLICES == 1u {
        if valid { out[w.o] = s; }
        return;
    }
    slice_part[l] = s;
    workgroupBarrier();
    if valid && w.slice == 0u {
        let per_wg = WG / SLICES;
        var t = s;
        for (var k = 1u; k < SLICES; k++) {
            t += slice_part[l + k * per_wg];
        }
        out[w.o] = t;
    }
}

@compute @workgroup_size(64)
fn col_sum(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) l: u32) {
    let w = work(wid, nwg, l, p.rows);
    let valid = w.o < p.cols;
    var s = 0.0;
    if valid { s = col_partial(w.o, w.lo, w.hi); }
    finish_sum(w, l, s, valid);
}

@compute @workgroup_size(64)
fn row_sum(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) l: u32) {
    let w = work(wid, nwg, l, p.cols);
    let valid = w.o < p.rows;
    var s = 0.0;
    if valid {
        let base = w.o * p.cols;
        s = range_sum(base + w.lo, base + w.hi);
    }
    finish_sum(w, l, s, valid);
}

// Flags of a partial maximum.
const HAS_VALUE: u32 = 1u;
const HAS_NAN: u32 = 2u;

// A NaN built at run time (a NaN constant expression is a WGSL error): setting the exponent and
// quiet bits of any value gives a quiet NaN.
fn reduce_nan(v: f32) -> f32 {
    return bitcast<f32>(bitcast<u32>(v) | 0x7fc00000u);
}

// One step of a running maximum that remembers whether a NaN went by (`v > m` is false for a
// NaN v, so m itself stays a number).
fn max_step(v: f32, m: ptr<function, f32>, nan: ptr<function, bool>) {
    *nan = *nan || reduce_is_nan(v);
    *m = select(*m, v, v > *m);
}

@compute @workgroup_size(64)
fn row_max(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) l: u32) {
    let w = work(wid, nwg, l, p.cols);
    let valid = w.o < p.rows;
    var m = 0.0;
    var flags = 0u;
    if valid && w.lo < w.hi {
        let base = w.o * p.cols;
        var i = base + w.lo;
        let end = base + w.hi;
        m = x[i];
        var nan = reduce_is_nan(m);
        i++;
        for (; i + 8u <= end; i += 8u) {
            max_step(x[i], &m, &nan);
            max_step(x[i + 1u], &m, &nan);
            max_step(x[i + 2u], &m, &nan);
            max_step(x[i + 3u], &m, &nan);
            max_step(x[i + 4u], &m, &nan);
            max_step(x[i + 5u], &m, &nan);
            max_step(x[i + 6u], &m, &nan);
            max_step(x[i + 7u], &m, &nan);
        }
        for (; i < end; i++) {
            max_step(x[i], &m, &nan);
        }
        flags = HAS_VALUE | select(0u, HAS_NAN, nan);
    }
    if SLICES == 1u {
        if valid { out[w.o] = select(m, reduce_nan(m), (flags & HAS_NAN) != 0u); }
        return;
    }
    slice_part[l] = m;
    slice_flags[l] = flags;
    workgroupBarrier();
    if valid && w.slice == 0u {
        let per_wg = WG / SLICES;
        for (var k = 1u; k < SLICES; k++) {
            let f = slice_flags[l + k * per_wg];
            let v = slice_part[l + k * per_wg];
            if (f & HAS_VALUE) != 0u {
                m = select(v, select(m, v, v > m), (flags & HAS_VALUE) != 0u);
                flags = flags | f;
            }
        }
        out[w.o] = select(m, reduce_nan(m), (flags & HAS_NAN) != 0u);
    }
}

const SUM_WG: u32 = 256u;
var<workgroup> partial: array<f32, 256>;

@compute @workgroup_size(256)
fn sum(@builtin(local_invocation_index) t: u32) {
    let n = p.n;
    var s = 0.0;
    var i = t;
    for (; i + 7u * SUM_WG < n; i += 8u * SUM_WG) {
        s += x[i];
        s += x[i + SUM_WG];
        s += x[i + 2u * SUM_WG];
        s += x[i + 3u * SUM_WG];
        s += x[i + 4u * SUM_WG];
        s += x[i + 5u * SUM_WG];
        s += x[i + 6u * SUM_WG];
        s += x[i + 7u * SUM_WG];
    }
    for (; i < n; i += SUM_WG) {
        s += x[i];
    }
    partial[t] = s;
    workgroupBarrier();
    for (var stride = SUM_WG / 2u; stride > 0u; stride = stride / 2u) {
        if t < stride {
            partial[t] = partial[t] + partial[t + stride];
        }
        workgroupBarrier();
    }
    if t == 0u {
        let total = partial[0];
        out[0] = select(total, out[0] + total, p.accumulate != 0u);
    }
}
