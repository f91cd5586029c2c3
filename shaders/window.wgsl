// window.wgsl — what conv.wgsl and pool.wgsl share: the params block of a 2-D window over NCHW
// planes, the first input binding, and the window arithmetic. Prepended (after common.wgsl) to
// each of the two modules (src/kernels/source.rs); it has no entry points of its own.
//
//   a window of KH × KW taps, stride (SH, SW), zero padding PH above, PB below, PW left, PR right,
//   over H × W input planes: OH = (H + PH + PB − KH) / SH + 1 (rounded up with pooling's
//   ceil_mode), OW likewise (src/kernels/window.rs: Window2d, which computes OH and OW).
//   Output (oy, ox) reads input rows oy·SH − PH + ky and columns ox·SW − PW + kx.
//
// * window(s): the input rectangle of output pixel s of a plane, clipped to the input (pooling);
// * taps(t, ...): for an input coordinate, the window taps that reach it (the gathers: a
//   convolution's or a pool's input gradient, col2im);
// * sliced reductions (conv_backward_bias, global_avg_pool_forward): SLICES invocations share
//   one output, each summing one contiguous range in order; slice 0 then adds the partials in
//   slice order (one workgroup barrier). The launcher picks SLICES from the shape (1 = no
//   barrier) so that no invocation runs more than a few thousand loop iterations:
//   llvmpipe/lavapipe silently stop every loop of an invocation after 65,535 iterations in total
//   (the launchers check every launch against that budget, kernels::reduce::ensure_loop_budget).

struct Params {
    n: u32,      // batch (im2col path: images in the chunk)
    c: u32,      // input channels
    h: u32,
    w: u32,
    o: u32,      // output channels (conv only)
    kh: u32,
    kw: u32,
    sh: u32,
    sw: u32,
    ph: u32,
    pw: u32,
    oh: u32,
    ow: u32,
    total: u32,  // invocations / outputs of the launch (im2col path: first image n0)
    alpha: f32,  // LeakyReLU slope of the fused activation (conv)
    scale: f32,  // 1/(KH·KW) for avg pool (0: per-window divisors, ceil_mode), 1/(H·W) for global avg pool
    pb: u32,     // padding below (PH is above) and right (PW is left): asymmetric padding
    pr: u32,
    groups: u32, // convolution groups (conv only)
    pad_: u32,
}

override SLICES: u32 = 1u;

const WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;

// The entry points declare different bindings under the same numbers; WGSL only requires the
// numbers to be unique among the variables one entry point uses. Binding 1 is every kernel's
// first input; the family files declare the rest.
@group(0) @binding(1) var<storage, read> in1: array<f32>;

var<workgroup> slice_part: array<f32, 64>;

// ---------------------------------------------------------------------------------------------
// The input rectangle [y0, y1) × [x0, x1) of output pixel s (= oy·OW + ox) of a plane, clipped
// to the input (the padding is left out).
struct Window {
    y0: u32,
    y1: u32,
    x0: u32,
    x1: u32,
}

fn window(s: u32) -> Window {
    let iy0 = i32((s / p.ow) * p.sh) - i32(p.ph);
    let ix0 = i32((s % p.ow) * p.sw) - i32(p.pw);
    return Window(u32(max(iy0, 0)), u32(clamp(iy0 + i32(p.kh), 0, i32(p.h))), u32(max(ix0, 0)), u32(clamp(ix0 + i32(p.kw), 0, i32(p.w))));
}

// Taps of a gather: for an input coordinate i (+ padding: t = i + pad) the kernel offsets k with
// t − k = stride·o, 0 ≤ o < out, 0 ≤ k < ks, in increasing k.
struct Taps {
    k0: u32,   // first tap
    k1: u32,   // end (exclusive)
    o0: u32,   // output coordinate of the first tap (decreases by 1 per tap)
}

fn taps(t: u32, stride: u32, ks: u32, out: u32) -> Taps {
    let lo = max(i32(t) - i32(stride * (out - 1u)), 0);
    let k0 = u32(lo) + (t - u32(lo)) % stride;
    let k1 = min(ks, t + 1u);
    return Taps(k0, k1, (t - k0) / stride);
}

// ---------------------------------------------------------------------------------------------
// Sliced reductions: SLICES invocations per output. Adjacent invocations of a workgroup work on
// adjacent outputs of the same slice.

struct Work {
    o: u32,      // the output
    slice: u32,  // which slice of its range
}

fn sliced_work(wid: vec3<u32>, nwg: vec3<u32>, l: u32) -> Work {
    let per_wg = WG / SLICES;
    let group = wid.x + wid.y * nwg.x;
    return Work(group * per_wg + l % per_wg, l / per_wg);
}

// [lo, hi) of slice `slice` of a range of `len`.
fn slice_range(slice: u32, len: u32) -> vec2<u32> {
    let chunk = len / SLICES + select(0u, 1u, len % SLICES != 0u);
    let lo = min(slice * chunk, len);
    return vec2<u32>(lo, min(lo + chunk, len));
}

// Adds the slice partials of output w.o in slice order and returns the total (valid for slice 0).
// Called in uniform control flow: every invocation reaches the barrier.
fn combine_slices(l: u32, s: f32) -> f32 {
    if SLICES == 1u { return s; }
    slice_part[l] = s;
    workgroupBarrier();
    let per_wg = WG / SLICES;
    var t = s;
    for (var k = 1u; k < SLICES; k++) {
        t += slice_part[l + k * per_wg];
    }
    return t;
}

// Σ_{j in [lo, hi)} of in1 over a list of `segs` segments of `seg_len` contiguous elements,
// segment q at base + q·stride, in order (the flat range covers the segments one after another).
fn segment_sum(base: u32, stride: u32, seg_len: u32, lo: u32, hi: u32) -> f32 {
    var s = 0.0;
    if lo >= hi { return s; }
    let q0 = lo / seg_len;
    let q1 = (hi - 1u) / seg_len;
    for (var q = q0; q <= q1; q++) {
        let a = select(0u, lo - q * seg_len, q == q0);
        let e = select(seg_len, hi - q * seg_len, q == q1);
        let off = base + q * stride;
        var i = off + a;
        let end = off + e;
        for (; i + 4u <= end; i += 4u) {
            s += in1[i];
            s += in1[i + 1u];
            s += in1[i + 2u];
            s += in1[i + 3u];
        }
        for (; i < end; i++) {
            s += in1[i];
        }
    }
    return s;
}
