// pool.wgsl — max and average pooling and global average pooling, forward and backward, f32,
// NCHW (PyTorch's MaxPool2d(return_indices=True), AvgPool2d, AdaptiveAvgPool2d(1)). Prepended:
// common.wgsl, window.wgsl (Params, binding 1 `in1`, window(), taps(), the sliced reductions).
//
//   x  [N, C, H, W]       input              y, argmax  [N, C, OH, OW]
//   OH = (H + PH + PB − KH) / SH + 1, OW likewise, rounded up with ceil_mode (the host computes
//   OH and OW; a last window then may reach past the padded input).
//
// Entry points (bindings after the params uniform at 0; Params.o is unused, c is the channels):
//   max_pool_forward          1 x (r), 2 y (rw), 3 argmax (rw, u32)
//   max_pool_backward         1 dy (r), 2 argmax (r, u32), 3 dx (rw)
//   max_pool_backward_tiled   as max_pool_backward            overrides KH, KW (windows tiling x)
//   avg_pool_forward          1 x (r), 2 y (rw)
//   avg_pool_backward         1 dy (r), 2 dx (rw)
//   global_avg_pool_forward   1 x (r), 2 y (rw)               override SLICES
//   global_avg_pool_backward  1 dy (r), 2 dx (rw)
//   adaptive_avg_pool_forward  1 x (r), 2 y (rw)                PyTorch's AdaptiveAvgPool2d((OH, OW))
//   adaptive_avg_pool_backward 1 dy (r), 2 dx (rw)
//
// Every output is computed by one invocation (or one fixed set of slices), summing in a fixed
// order; no atomics, so the same input gives bit-identical output on the same adapter. The
// gradients are gathers: each input element sums its own contributions (max_pool_backward_tiled
// scatters, but its windows do not overlap: still one writer each).
//
// Max pool: padding is −∞ (never chosen; PyTorch requires PH ≤ KH/2 so every window holds a real
// element). The argmax is the index iy·W + ix inside the input plane (PyTorch's return_indices);
// ties keep the first in row-major window order, a NaN wins (the last NaN), like PyTorch's CPU
// kernel. Average pool counts the padding (count_include_pad = true): it divides by KH·KW
// (p.scale = 1/(KH·KW)) unless ceil_mode made a window reach past the padded input (p.scale = 0),
// where each window divides by its taps inside [−PH, H + PB) × [−PW, W + PR), as PyTorch does.
// Reference: src/reference/conv.rs.

@group(0) @binding(2) var<storage, read_write> out2: array<f32>;
@group(0) @binding(3) var<storage, read_write> out3: array<f32>;
@group(0) @binding(3) var<storage, read_write> argmax_out: array<u32>;
@group(0) @binding(2) var<storage, read> argmax_in: array<u32>;

// The window size of max_pool_backward_tiled as pipeline constants: its loops unroll.
override KH: u32 = 2u;
override KW: u32 = 2u;

// NaN test on the bits, immune to compilers that assume `v != v` is false.
fn pool_is_nan(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u;
}

// ---------------------------------------------------------------------------------------------
// Pooling windows: y[n, c, oy, ox] over x[n, c, oy·SH − PH + ky, ox·SW − PW + kx], the window
// clipped to the input (window() in window.wgsl).

@compute @workgroup_size(64)
fn max_pool_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg, WG);
    if i >= p.total { return; }
    let plane = p.oh * p.ow;
    let win = window(i % plane);
    let base = (i / plane) * p.h * p.w;
    var best = -3.40282347e38;
    var first = true;
    var arg = win.y0 * p.w + win.x0;
    for (var iy = win.y0; iy < win.y1; iy++) {
        for (var ix = win.x0; ix < win.x1; ix++) {
            let j = iy * p.w + ix;
            let v = in1[base + j];
            // `first` makes −∞ (below the initial value) selectable, as PyTorch's −inf start does
            if first || v > best || pool_is_nan(v) {
                best = v;
                arg = j;
            }
            first = false;
        }
    }
    out2[i] = best;
    argmax_out[i] = arg;
}

// dx[n, c, j] = Σ over the windows containing j whose argmax is j of dy (a gather). Grid: x, y =
// the input pixel (8 × 8 per workgroup), z = the (image, channel) plane, looping past 65,535
// planes: no per-element division to recover the coordinates (slow where a CPU runs the shader).
@compute @workgroup_size(8, 8)
fn max_pool_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let ix = gid.x;
    let iy = gid.y;
    if ix >= p.w || iy >= p.h { return; }
    let hw = p.h * p.w;
    let planes = p.total / hw;
    let j = iy * p.w + ix;
    let ty = taps(iy + p.ph, p.sh, p.kh, p.oh);
    let tx = taps(ix + p.pw, p.sw, p.kw, p.ow);
    for (var nc = gid.z; nc < planes; nc += nwg.z) {
        let base = nc * p.oh * p.ow;
        var g = 0.0;
        var oy = ty.o0;
        for (var ky = ty.k0; ky < ty.k1; ky += p.sh) {
            var ox = tx.o0;
            for (var kx = tx.k0; kx < tx.k1; kx += p.sw) {
                let k = base + oy * p.ow + ox;
                if argmax_in[k] == j { g += in1[k]; }
                ox -= 1u;
            }
            oy -= 1u;
        }
        out3[nc * hw + j] = g;
    }
}

// The same gradient when the windows tile the input exactly (stride = window, no padding,
// H = OH·KH, W = OW·KW: every input element lies in exactly one window): one invocation per
// window writes its KH·KW elements of dx, dy at the argmax and 0 elsewhere. For 2×2 windows a
// quarter of the gather's invocations and no tap arithmetic; on lavapipe these light kernels cost
// about the same per invocation whatever they do, so that is what counts. Grid: x = ox, y = oy
// (4 × 4 per workgroup), z = 4 planes per workgroup, looping past 65,535·4 planes. KH, KW are the
// window (pipeline constants: the loops unroll).
@compute @workgroup_size(4, 4, 4)
fn max_pool_backward_tiled(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let ox = gid.x;
    let oy = gid.y;
    if ox >= p.ow || oy >= p.oh { return; }
    let hw = p.h * p.w;
    // + 0 from the invocation index: a run-time bound, not one lavapipe specialises and
    // recompiles per command buffer (see head_bound in loss.wgsl)
    let planes = p.total / hw + (gid.x >> 31u);
    let o = oy * p.ow + ox;
    let j0 = oy * KH * p.w + ox * KW;
    for (var nc = gid.z; nc < planes; nc += 4u * nwg.z) {
        let k = nc * p.oh * p.ow + o;
        let g = in1[k];
        let arg = argmax_in[k];
        let base = nc * hw;
        for (var ky = 0u; ky < KH; ky++) {
            for (var kx = 0u; kx < KW; kx++) {
                let j = j0 + ky * p.w + kx;
                out3[base + j] = select(0.0, g, j == arg);
            }
        }
    }
}

// 1 / (taps of window (oy, ox) inside the padded input): the divisor of a ceil_mode window.
fn avg_inv_divisor(oy: u32, ox: u32) -> f32 {
    let y0 = i32(oy * p.sh) - i32(p.ph);
    let x0 = i32(ox * p.sw) - i32(p.pw);
    let y1 = min(y0 + i32(p.kh), i32(p.h + p.pb));
    let x1 = min(x0 + i32(p.kw), i32(p.w + p.pr));
    return 1.0 / f32((y1 - y0) * (x1 - x0));
}

@compute @workgroup_size(64)
fn avg_pool_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg, WG);
    if i >= p.total { return; }
    let plane = p.oh * p.ow;
    let win = window(i % plane);
    let base = (i / plane) * p.h * p.w;
    var sum = 0.0;
    for (var iy = win.y0; iy < win.y1; iy++) {
        for (var ix = win.x0; ix < win.x1; ix++) {
            sum += in1[base + iy * p.w + ix];
        }
    }
    let s = i % plane;
    out2[i] = sum * select(avg_inv_divisor(s / p.ow, s % p.ow), p.scale, p.scale != 0.0);
}

@compute @workgroup_size(64)
fn avg_pool_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg, WG);
    if i >= p.total { return; }
    let hw = p.h * p.w;
    let j = i % hw;
    let nc = i / hw;
    let ty = taps(j / p.w + p.ph, p.sh, p.kh, p.oh);
    let tx = taps(j % p.w + p.pw, p.sw, p.kw, p.ow);
    let base = nc * p.oh * p.ow;
    var g = 0.0;
    var oy = ty.o0;
    // whole windows: sum, then scale once (as before ceil_mode existed: the same bits); else
    // each window's share divided by its own size
    let whole = p.scale != 0.0;
    for (var ky = ty.k0; ky < ty.k1; ky += p.sh) {
        var ox = tx.o0;
        for (var kx = tx.k0; kx < tx.k1; kx += p.sw) {
            let d = in1[base + oy * p.ow + ox];
            g += select(d * avg_inv_divisor(oy, ox), d, whole);
            ox -= 1u;
        }
        oy -= 1u;
    }
    out2[i] = select(g, g * p.scale, whole);
}

// ---------------------------------------------------------------------------------------------
// Global average pooling (AdaptiveAvgPool2d(1)): a sliced reduction over each H·W plane.

// y[n, c] = mean over the H·W plane of x[n, c]; slices split the plane.
@compute @workgroup_size(64)
fn global_avg_pool_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) l: u32) {
    let w = sliced_work(wid, nwg, l);
    let valid = w.o < p.total;
    var s = 0.0;
    if valid {
        let hw = p.h * p.w;
        let r = slice_range(w.slice, hw);
        s = segment_sum(w.o * hw, hw, hw, r.x, r.y);
    }
    let t = combine_slices(l, s);
    if valid && w.slice == 0u { out2[w.o] = t * p.scale; }
}

// dx[n, c, iy, ix] = dy[n, c] / (H·W)
@compute @workgroup_size(64)
fn global_avg_pool_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg, WG);
    if i >= p.total { return; }
    out2[i] = in1[i / (p.h * p.w)] * p.scale;
}

// ---------------------------------------------------------------------------------------------
// Adaptive average pooling (PyTorch's AdaptiveAvgPool2d((OH, OW))): output row oy averages input
// rows [⌊oy·H/OH⌋, ⌈(oy+1)·H/OH⌉), columns likewise; windows may overlap and differ in size.
// Params: n, c, h, w, oh, ow, total (outputs for the forward, inputs for the backward).

fn adaptive_start(o: u32, size: u32, out: u32) -> u32 {
    return (o * size) / out;
}

fn adaptive_end(o: u32, size: u32, out: u32) -> u32 {
    return ((o + 1u) * size + out - 1u) / out;
}

@compute @workgroup_size(64)
fn adaptive_avg_pool_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg, WG);
    if i >= p.total { return; }
    let plane = p.oh * p.ow;
    let s = i % plane;
    let oy = s / p.ow;
    let ox = s - oy * p.ow;
    let base = (i / plane) * p.h * p.w;
    let y0 = adaptive_start(oy, p.h, p.oh);
    let y1 = adaptive_end(oy, p.h, p.oh);
    let x0 = adaptive_start(ox, p.w, p.ow);
    let x1 = adaptive_end(ox, p.w, p.ow);
    var sum = 0.0;
    for (var iy = y0; iy < y1; iy++) {
        for (var ix = x0; ix < x1; ix++) {
            sum += in1[base + iy * p.w + ix];
        }
    }
    out2[i] = sum / f32((y1 - y0) * (x1 - x0));
}

// dx[n, c, iy, ix] = Σ dy[n, c, oy, ox] / area(oy, ox) over the windows holding (iy, ix): rows
// oy from ⌊iy·OH/H⌋ to ⌊((iy+1)·OH − 1)/H⌋ (the windows are contiguous runs), columns likewise.
@compute @workgroup_size(64)
fn adaptive_avg_pool_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg, WG);
    if i >= p.total { return; }
    let hw = p.h * p.w;
    let j = i % hw;
    let iy = j / p.w;
    let ix = j - iy * p.w;
    let base = (i / hw) * p.oh * p.ow;
    let oy0 = (iy * p.oh) / p.h;
    let oy1 = min(p.oh, ((iy + 1u) * p.oh - 1u) / p.h + 1u);
    let ox0 = (ix * p.ow) / p.w;
    let ox1 = min(p.ow, ((ix + 1u) * p.ow - 1u) / p.w + 1u);
    var g = 0.0;
    for (var oy = oy0; oy < oy1; oy++) {
        let rows = adaptive_end(oy, p.h, p.oh) - adaptive_start(oy, p.h, p.oh);
        for (var ox = ox0; ox < ox1; ox++) {
            let cols = adaptive_end(ox, p.w, p.ow) - adaptive_start(ox, p.w, p.ow);
            g += in1[base + oy * p.ow + ox] / f32(rows * cols);
        }
    }
    out2[i] = g;
}
