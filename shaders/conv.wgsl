// conv.wgsl — 2-D convolution, forward and backward, f32, NCHW (PyTorch layouts), in two forms:
// direct kernels, and im2col + the matmul kernel (src/kernels/conv/). Prepended: common.wgsl,
// window.wgsl (Params, binding 1 `in1`, taps(), the sliced reductions).
//
//   x  [N, C, H, W]       input              w  [O, C/G, KH, KW] weight (nn.Conv2d, G groups)
//   y  [N, O, OH, OW]     output             b  [O]              bias
//   OH = (H + PH + PB − KH) / SH + 1, OW likewise; zero padding (PH above, PB below: the
//   kernels only need PH and PW, the host computes OH and OW).
//   y[n, o, oy, ox] = act(b[o] + Σ_{c, ky, kx} w[o, c, ky, kx] · x[n, g·C/G + c, oy·SH + ky − PH, ox·SW + kx − PW])
//   where g = o / (O/G) is the group of output channel o and c runs over C/G.
//
// Entry points (bindings after the params uniform at 0):
//   conv_forward          1 x (r), 2 w (r), 3 b (r), 4 y (rw)   overrides ACT, HAS_BIAS, OB, KH, KW
//   conv_backward_input   1 dy (r), 2 w (r), 3 dx (rw)          overrides KH, KW
//   conv_backward_weight  1 x (r), 2 dy (r), 3 dw or parts (rw)
//   conv_backward_bias    1 dy (r), 2 db (rw)                   override SLICES
//   dw_forward            1 x (r), 2 w (r), 3 b (r), 4 y (rw)   overrides ACT, HAS_BIAS, KH, KW (depthwise)
//   dw_backward_input     1 dy (r), 2 w (r), 3 dx (rw)          overrides KH, KW (depthwise)
//   dw_backward_weight    1 x (r), 2 dy (r), 3 dw or parts (rw) (depthwise)
//   im2col                1 x (r), 2 cols (rw)                  (the im2col + matmul path)
//   im2col_rows           1 x (r), 2 cols (rw)                  overrides IC, KH, KW, ROW_PAD
//   im2col_rows4          1 x (r), 2 cols (rw, as vec4s)        the same, rows of a multiple of 4
//   pad_cols              1 src (r), 2 dst (rw)                 (rows of p.c values → rows of p.w, cut or zero-filled)
//   col2im                1 dcols (r), 2 dx (rw)
//   col2im_rows           1 dcols (r), 2 dx (rw)                override IC
//   nchw_transpose        1 src (r), 2 dst (rw)
//   sum_parts             1 parts (r), 2 out (rw)
//
// Every output is computed by one invocation (or one fixed set of slices), summing in a fixed
// order; no atomics anywhere, so the same input gives bit-identical output on the same adapter.
// Gradients are gathers: each input element (dx) or weight (dw) sums its own contributions.
// * conv_forward, conv_backward_input, conv_backward_weight: the grid is (pixels or weight taps,
//   channel block, image or slice), so on lavapipe (8 invocations per SIMD register) the
//   channel block comes from workgroup_id and the weight (or dy) loads are uniform: a scalar load
//   and a broadcast, one gathered load feeding 4–8 FMAs. See each kernel's comment. With groups,
//   a channel block never straddles two groups (the grid's y counts blocks per group times G),
//   so the group, too, comes from workgroup_id.
// * dw_*: depthwise (G = C = O), where blocks of channels would share no input: one channel per
//   invocation, scalar accumulators.
// * conv_backward_bias: a long reduction over N·OH·OW, sliced (window.wgsl).
// * the im2col path (src/kernels/conv/im2col.rs): im2col writes
//   cols[n·OH·OW + oy·OW + ox, (c·KH + ky)·KW + kx] for the images n0 .. n0 + p.n of a chunk
//   (p.total = first image n0); the matmul kernel multiplies; nchw_transpose moves
//   [B, R, C] ↔ [B, C, R] between the matmul's row-per-pixel layout and NCHW; col2im gathers
//   dx from dcols; sum_parts adds the per-chunk weight gradients in chunk order.
// Reference: src/reference/conv.rs.

override ACT: u32 = 0u;
override HAS_BIAS: bool = false;

@group(0) @binding(2) var<storage, read> in2: array<f32>;
@group(0) @binding(3) var<storage, read> in3: array<f32>;
@group(0) @binding(2) var<storage, read_write> out2: array<f32>;
@group(0) @binding(3) var<storage, read_write> out3: array<f32>;
@group(0) @binding(4) var<storage, read_write> out4: array<f32>;

// ---------------------------------------------------------------------------------------------
// conv_forward: y = act(conv(x, w) + b). Grid: x = output pixels (64 per workgroup), y = block of
// OB output channels, z = image; so the channel block and the image come from workgroup_id and
// every weight load is uniform (a scalar load and a broadcast on lavapipe). The taps loop over
// the whole kernel with the padding masked (select), not over per-pixel bounds, so the loop
// trip counts and weight addresses stay uniform too; one (gathered) x load feeds OB FMAs.

override OB: u32 = 4u;   // 4 or 8 output channels per invocation
// The kernel size as pipeline constants (conv_forward, conv_backward_input): the tap loops then
// have constant trip counts and the shader compiler unrolls them (no per-tap loop overhead, which
// dominates on lavapipe with 3-wide loops). One pipeline per kernel size.
override KH: u32 = 3u;
override KW: u32 = 3u;

@compute @workgroup_size(64)
fn conv_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let plane = p.oh * p.ow;
    let s = gid.x;
    if s >= plane { return; }
    let og = p.o / p.groups;
    let cg = p.c / p.groups;
    let blocks = (og + OB - 1u) / OB;
    let g = wid.y / blocks;
    let o0 = g * og + (wid.y % blocks) * OB;
    let n = wid.z;
    let iy0 = i32((s / p.ow) * p.sh) - i32(p.ph);
    let ix0 = i32((s % p.ow) * p.sw) - i32(p.pw);
    let hmax = i32(p.h) - 1;
    let wmax = i32(p.w) - 1;
    let ckk = cg * KH * KW;
    // weight rows of the block, clamped to the group (always valid memory; masked at the store)
    let last = g * og + og - 1u;
    let w0 = min(o0, last) * ckk;
    let w1 = min(o0 + 1u, last) * ckk;
    let w2 = min(o0 + 2u, last) * ckk;
    let w3 = min(o0 + 3u, last) * ckk;
    let w4 = min(o0 + 4u, last) * ckk;
    let w5 = min(o0 + 5u, last) * ckk;
    let w6 = min(o0 + 6u, last) * ckk;
    let w7 = min(o0 + 7u, last) * ckk;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    for (var c = 0u; c < cg; c++) {
        let xc = (n * p.c + g * cg + c) * p.h * p.w;
        for (var ky = 0u; ky < KH; ky++) {
            let iy = iy0 + i32(ky);
            let row_ok = iy >= 0 && iy <= hmax;
            let xr = xc + u32(clamp(iy, 0, hmax)) * p.w;
            let kb = (c * KH + ky) * KW;
            for (var kx = 0u; kx < KW; kx++) {
                let ix = ix0 + i32(kx);
                let xv = vec4<f32>(select(0.0, in1[xr + u32(clamp(ix, 0, wmax))], row_ok && ix >= 0 && ix <= wmax));
                let k = kb + kx;
                acc0 = fma(xv, vec4<f32>(in2[w0 + k], in2[w1 + k], in2[w2 + k], in2[w3 + k]), acc0);
                if OB == 8u {
                    acc1 = fma(xv, vec4<f32>(in2[w4 + k], in2[w5 + k], in2[w6 + k], in2[w7 + k]), acc1);
                }
            }
        }
    }
    for (var j = 0u; j < OB; j++) {
        let o = o0 + j;
        if o > last { break; }
        var v = select(acc1[j & 3u], acc0[j & 3u], j < 4u);
        if HAS_BIAS { v += in3[o]; }
        out4[(n * p.o + o) * plane + s] = activate(ACT, v, p.alpha);
    }
}

// ---------------------------------------------------------------------------------------------
// conv_backward_input: dx[n, c, iy, ix] = Σ_{o, ky, kx} dy[n, o, oy, ox] · w[o, c, ky, kx] over
// the taps with iy + PH = oy·SH + ky (and the same in x), o over the group of c (w's second index
// is c's place in its group). Grid: x = input pixels, y = block of 4 input channels, z = image. With stride 1 the taps loop over the whole kernel, masked, so the
// weight loads are uniform; with a larger stride only the taps of the pixel's residue class are
// visited (SH·SW times fewer iterations, the weights gathered).

const CB: u32 = 4u;

@compute @workgroup_size(64)
fn conv_backward_input(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let hw = p.h * p.w;
    let j = gid.x;
    if j >= hw { return; }
    let og = p.o / p.groups;
    let cg = p.c / p.groups;
    let blocks = (cg + CB - 1u) / CB;
    let g = wid.y / blocks;
    let first = g * cg;
    let c0 = first + (wid.y % blocks) * CB;
    let n = wid.z;
    let iy = j / p.w;
    let ix = j % p.w;
    let plane = p.oh * p.ow;
    let kk = p.kh * p.kw;
    let ckk = cg * kk;
    let last = first + cg - 1u;
    let c0k = (min(c0, last) - first) * kk;
    let c1k = (min(c0 + 1u, last) - first) * kk;
    let c2k = (min(c0 + 2u, last) - first) * kk;
    let c3k = (min(c0 + 3u, last) - first) * kk;
    let o_end = g * og + og;
    var acc = vec4<f32>(0.0);
    if p.sh == 1u && p.sw == 1u {
        let ty = i32(iy + p.ph);
        let tx = i32(ix + p.pw);
        let ohmax = i32(p.oh) - 1;
        let owmax = i32(p.ow) - 1;
        for (var o = g * og; o < o_end; o++) {
            let dyo = (n * p.o + o) * plane;
            for (var ky = 0u; ky < KH; ky++) {
                let oy = ty - i32(ky);
                let row_ok = oy >= 0 && oy <= ohmax;
                let dyr = dyo + u32(clamp(oy, 0, ohmax)) * p.ow;
                let kb = o * ckk + ky * KW;
                for (var kx = 0u; kx < KW; kx++) {
                    let ox = tx - i32(kx);
                    let g = vec4<f32>(select(0.0, in1[dyr + u32(clamp(ox, 0, owmax))], row_ok && ox >= 0 && ox <= owmax));
                    let k = kb + kx;
                    acc = fma(g, vec4<f32>(in2[c0k + k], in2[c1k + k], in2[c2k + k], in2[c3k + k]), acc);
                }
            }
        }
    } else {
        let ty = taps(iy + p.ph, p.sh, p.kh, p.oh);
        let tx = taps(ix + p.pw, p.sw, p.kw, p.ow);
        for (var o = g * og; o < o_end; o++) {
            let dyo = (n * p.o + o) * plane;
            let wo = o * ckk;
            var oy = ty.o0;
            for (var ky = ty.k0; ky < ty.k1; ky += p.sh) {
                let dyr = dyo + oy * p.ow;
                let wr = wo + ky * p.kw;
                var ox = tx.o0;
                for (var kx = tx.k0; kx < tx.k1; kx += p.sw) {
                    let g = in1[dyr + ox];
                    let k = wr + kx;
                    acc = fma(vec4<f32>(g), vec4<f32>(in2[c0k + k], in2[c1k + k], in2[c2k + k], in2[c3k + k]), acc);
                    ox -= 1u;
                }
                oy -= 1u;
            }
        }
    }
    for (var q = 0u; q < CB; q++) {
        let c = c0 + q;
        if c > last { break; }
        out3[(n * p.c + c) * hw + j] = acc[q];
    }
}

// ---------------------------------------------------------------------------------------------
// conv_backward_weight: dw[o, c, ky, kx] = Σ_{n, oy, ox} dy[n, o, oy, ox] · x[n, c, oy·SH + ky − PH,
// ox·SW + kx − PW] (the input channel offset by o's group). Grid: x = weight taps k = (c, ky, kx)
// of one group's row, y = block of 4 output channels, z = slice of the N·OH rows (n, oy). Everything but k comes from workgroup_id, so the row loop,
// its trip counts and the dy loads are uniform; one (gathered, masked) x load feeds 4 FMAs.
// With one slice the result goes straight to dw; with several, slice z writes its partial sums
// to parts[z·O·C·KH·KW + ...] and sum_parts adds them in slice order (p.total = rows per slice).

@compute @workgroup_size(64)
fn conv_backward_weight(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let og = p.o / p.groups;
    let cg = p.c / p.groups;
    let kk = p.kh * p.kw;
    let ckk = cg * kk;
    let k = gid.x;
    if k >= ckk { return; }
    let blocks = (og + 3u) / 4u;
    let g = wid.y / blocks;
    let o0 = g * og + (wid.y % blocks) * 4u;
    let c = g * cg + k / kk;
    let ky = (k / p.kw) % p.kh;
    let kx = k % p.kw;
    let plane = p.oh * p.ow;
    let last = g * og + og - 1u;
    let d1 = (min(o0 + 1u, last) - o0) * plane;
    let d2 = (min(o0 + 2u, last) - o0) * plane;
    let d3 = (min(o0 + 3u, last) - o0) * plane;
    let hmax = i32(p.h) - 1;
    let wmax = i32(p.w) - 1;
    let rows = p.n * p.oh;
    let r0 = min(wid.z * p.total, rows);
    let r1 = min(r0 + p.total, rows);
    var acc = vec4<f32>(0.0);
    var n = r0 / p.oh;
    var oy = r0 % p.oh;
    for (var r = r0; r < r1; r++) {
        let iy = i32(oy * p.sh + ky) - i32(p.ph);
        let row_ok = iy >= 0 && iy <= hmax;
        let xr = ((n * p.c + c) * p.h + u32(clamp(iy, 0, hmax))) * p.w;
        let dyr = ((n * p.o + o0) * p.oh + oy) * p.ow;
        for (var ox = 0u; ox < p.ow; ox++) {
            let ix = i32(ox * p.sw + kx) - i32(p.pw);
            let xv = vec4<f32>(select(0.0, in1[xr + u32(clamp(ix, 0, wmax))], row_ok && ix >= 0 && ix <= wmax));
            let d = dyr + ox;
            acc = fma(xv, vec4<f32>(in2[d], in2[d + d1], in2[d + d2], in2[d + d3]), acc);
        }
        oy += 1u;
        if oy == p.oh {
            oy = 0u;
            n += 1u;
        }
    }
    let base = wid.z * p.o * ckk;
    for (var q = 0u; q < 4u; q++) {
        let o = o0 + q;
        if o > last { break; }
        out3[base + o * ckk + k] = acc[q];
    }
}

// ---------------------------------------------------------------------------------------------
// Depthwise (G = C = O, weight [C, 1, KH, KW]): channel c of the output reads channel c of the
// input only. The blocked kernels above would compute one useful channel in 4 or 8 (the others
// clamped and dropped), so these keep one channel per invocation, with scalar sums in the same
// tap order as the blocked ones.

// dw_forward: y[n, c, oy, ox] = act(b[c] + Σ_{ky, kx} w[c, ky, kx] · x[n, c, ...]). Grid: x = output
// pixels, y = channel, z = image: the weight loads are uniform, the taps unrolled (KH, KW).
@compute @workgroup_size(64)
fn dw_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let plane = p.oh * p.ow;
    let s = gid.x;
    if s >= plane { return; }
    let c = wid.y;
    let n = wid.z;
    let iy0 = i32((s / p.ow) * p.sh) - i32(p.ph);
    let ix0 = i32((s % p.ow) * p.sw) - i32(p.pw);
    let hmax = i32(p.h) - 1;
    let wmax = i32(p.w) - 1;
    let xc = (n * p.c + c) * p.h * p.w;
    let wc = c * KH * KW;
    var acc = 0.0;
    for (var ky = 0u; ky < KH; ky++) {
        let iy = iy0 + i32(ky);
        let row_ok = iy >= 0 && iy <= hmax;
        let xr = xc + u32(clamp(iy, 0, hmax)) * p.w;
        for (var kx = 0u; kx < KW; kx++) {
            let ix = ix0 + i32(kx);
            let xv = select(0.0, in1[xr + u32(clamp(ix, 0, wmax))], row_ok && ix >= 0 && ix <= wmax);
            acc = fma(xv, in2[wc + ky * KW + kx], acc);
        }
    }
    if HAS_BIAS { acc += in3[c]; }
    out4[(n * p.c + c) * plane + s] = activate(ACT, acc, p.alpha);
}

// dw_backward_input: dx[n, c, iy, ix] = Σ over the taps reaching (iy, ix) of dy[n, c, oy, ox] ·
// w[c, ky, kx]. Grid: x = input pixels, y = channel, z = image. Stride 1: the whole kernel,
// masked (uniform weight loads, unrolled); larger strides: the pixel's taps only (taps()).
@compute @workgroup_size(64)
fn dw_backward_input(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let hw = p.h * p.w;
    let j = gid.x;
    if j >= hw { return; }
    let c = wid.y;
    let n = wid.z;
    let iy = j / p.w;
    let ix = j % p.w;
    let dyc = (n * p.c + c) * p.oh * p.ow;
    let wc = c * p.kh * p.kw;
    var acc = 0.0;
    if p.sh == 1u && p.sw == 1u {
        let ty = i32(iy + p.ph);
        let tx = i32(ix + p.pw);
        let ohmax = i32(p.oh) - 1;
        let owmax = i32(p.ow) - 1;
        for (var ky = 0u; ky < KH; ky++) {
            let oy = ty - i32(ky);
            let row_ok = oy >= 0 && oy <= ohmax;
            let dyr = dyc + u32(clamp(oy, 0, ohmax)) * p.ow;
            for (var kx = 0u; kx < KW; kx++) {
                let ox = tx - i32(kx);
                let d = select(0.0, in1[dyr + u32(clamp(ox, 0, owmax))], row_ok && ox >= 0 && ox <= owmax);
                acc = fma(d, in2[wc + ky * KW + kx], acc);
            }
        }
    } else {
        let ty = taps(iy + p.ph, p.sh, p.kh, p.oh);
        let tx = taps(ix + p.pw, p.sw, p.kw, p.ow);
        var oy = ty.o0;
        for (var ky = ty.k0; ky < ty.k1; ky += p.sh) {
            let dyr = dyc + oy * p.ow;
            let wr = wc + ky * p.kw;
            var ox = tx.o0;
            for (var kx = tx.k0; kx < tx.k1; kx += p.sw) {
                acc = fma(in1[dyr + ox], in2[wr + kx], acc);
                ox -= 1u;
            }
            oy -= 1u;
        }
    }
    out3[(n * p.c + c) * hw + j] = acc;
}

// dw_backward_weight: dw[c, ky, kx] = Σ_{n, oy, ox} dy[n, c, oy, ox] · x[n, c, oy·SH + ky − PH,
// ox·SW + kx − PW]. Grid: x = (channel, tap) pairs, flat, z = slice of the N·OH rows (n, oy), as
// conv_backward_weight (p.total = rows per slice; several slices write partials for sum_parts).
@compute @workgroup_size(64)
fn dw_backward_weight(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let kk = p.kh * p.kw;
    let i = gid.x;
    if i >= p.c * kk { return; }
    let c = i / kk;
    let k = i % kk;
    let ky = k / p.kw;
    let kx = k % p.kw;
    let hmax = i32(p.h) - 1;
    let wmax = i32(p.w) - 1;
    let rows = p.n * p.oh;
    let r0 = min(wid.z * p.total, rows);
    let r1 = min(r0 + p.total, rows);
    var acc = 0.0;
    var n = r0 / p.oh;
    var oy = r0 % p.oh;
    for (var r = r0; r < r1; r++) {
        let iy = i32(oy * p.sh + ky) - i32(p.ph);
        let row_ok = iy >= 0 && iy <= hmax;
        let xr = ((n * p.c + c) * p.h + u32(clamp(iy, 0, hmax))) * p.w;
        let dyr = ((n * p.c + c) * p.oh + oy) * p.ow;
        for (var ox = 0u; ox < p.ow; ox++) {
            let ix = i32(ox * p.sw + kx) - i32(p.pw);
            let xv = select(0.0, in1[xr + u32(clamp(ix, 0, wmax))], row_ok && ix >= 0 && ix <= wmax);
            acc = fma(xv, in2[dyr + ox], acc);
        }
        oy += 1u;
        if oy == p.oh {
            oy = 0u;
            n += 1u;
        }
    }
    out3[wid.z * p.c * kk + i] = acc;
}

// ---------------------------------------------------------------------------------------------
// conv_backward_bias: a sliced reduction (window.wgsl).

// db[o] = Σ_{n, oy, ox} dy[n, o, oy, ox]; slices split the N·OH·OW elements.
@compute @workgroup_size(64)
fn conv_backward_bias(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) l: u32) {
    let w = sliced_work(wid, nwg, l);
    let valid = w.o < p.total;
    var s = 0.0;
    if valid {
        let plane = p.oh * p.ow;
        let r = slice_range(w.slice, p.n * plane);
        s = segment_sum(w.o * plane, p.o * plane, plane, r.x, r.y);
    }
    let t = combine_slices(l, s);
    if valid && w.slice == 0u { out2[w.o] = t; }
}

// ---------------------------------------------------------------------------------------------
// The im2col + matmul path. p.n = images in the chunk, p.total = the chunk's first image n0.

// cols[b·OH·OW + oy·OW + ox, (c·KH + ky)·KW + kx] = x[n0 + b, c, oy·SH + ky − PH, ox·SW + kx − PW] (0 in the padding)
@compute @workgroup_size(64)
fn im2col(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg, WG);
    let plane = p.oh * p.ow;
    let ckk = p.c * p.kh * p.kw;
    if i >= p.n * plane * ckk { return; }
    let k = i % ckk;
    let row = i / ckk;
    let s = row % plane;
    let b = row / plane;
    let kx = k % p.kw;
    let ky = (k / p.kw) % p.kh;
    let c = k / (p.kw * p.kh);
    let iy = i32((s / p.ow) * p.sh + ky) - i32(p.ph);
    let ix = i32((s % p.ow) * p.sw + kx) - i32(p.pw);
    var v = 0.0;
    if iy >= 0 && iy < i32(p.h) && ix >= 0 && ix < i32(p.w) {
        v = in1[(((p.total + b) * p.c + c) * p.h + u32(iy)) * p.w + u32(ix)];
    }
    out2[i] = v;
}

// The same columns with one invocation per output pixel writing its whole row of C·KH·KW values:
// no per-element index arithmetic. The form above recovers six coordinates by division for
// every element, which on lavapipe (a CPU running 8 lanes, integer division one lane at a time)
// costs more than the copy. Grid: x = ox, y = oy (8 × 8 per workgroup), z = image of the chunk.
// IC, KH, KW are pipeline constants, so the loops have constant trip counts. Padding taps read
// element 0 and select 0, so the loads need no branch. ROW_PAD > 0 pads each row with that many
// zeros (rows of IC·KH·KW + ROW_PAD values): a row length that is a multiple of 4 lets the
// matmul read the columns as vec4s (the 3-channel 7×7 stem's 147 → 148).
override IC: u32 = 1u;
override ROW_PAD: u32 = 0u;
@compute @workgroup_size(8, 8)
fn im2col_rows(@builtin(global_invocation_id) gid: vec3<u32>) {
    let ox = gid.x;
    let oy = gid.y;
    let b = gid.z;
    if ox >= p.ow || oy >= p.oh || b >= p.n { return; }
    let iy0 = i32(oy * p.sh) - i32(p.ph);
    let ix0 = i32(ox * p.sw) - i32(p.pw);
    let img = (p.total + b) * IC;
    var k = ((b * p.oh + oy) * p.ow + ox) * (IC * KH * KW + ROW_PAD);
    for (var c = 0u; c < IC; c++) {
        let plane = (img + c) * p.h;
        for (var ky = 0u; ky < KH; ky++) {
            let iy = iy0 + i32(ky);
            let row_inside = iy >= 0 && iy < i32(p.h);
            for (var kx = 0u; kx < KW; kx++) {
                let ix = ix0 + i32(kx);
                let inside = row_inside && ix >= 0 && ix < i32(p.w);
                let v = in1[select(0u, (plane + u32(iy)) * p.w + u32(ix), inside)];
                out2[k] = select(0.0, v, inside);
                k++;
            }
        }
    }
    for (var q = 0u; q < ROW_PAD; q++) {
        out2[k + q] = 0.0;
    }
}

// As im2col_rows, for rows whose length IC·KH·KW + ROW_PAD is a multiple of 4: the row is
// written as vec4s, a quarter of the stores (on lavapipe each store, scalar or vec4, is a
// scatter costing about the same per lane). Element e of the row is tap (c, ky, kx) =
// (e / (KH·KW), e / KW % KH, e % KW): e is the same in every invocation, so those divisions (by
// pipeline constants) are scalar work; elements past IC·KH·KW are the zero padding.
@group(0) @binding(2) var<storage, read_write> out2v: array<vec4<f32>>;

fn im2col_tap(e: u32, img: u32, iy0: i32, ix0: i32) -> f32 {
    let c = e / (KH * KW);
    let iy = iy0 + i32((e / KW) % KH);
    let ix = ix0 + i32(e % KW);
    let inside = c < IC && iy >= 0 && iy < i32(p.h) && ix >= 0 && ix < i32(p.w);
    return select(0.0, in1[select(0u, ((img + c) * p.h + u32(iy)) * p.w + u32(ix), inside)], inside);
}

@compute @workgroup_size(8, 8)
fn im2col_rows4(@builtin(global_invocation_id) gid: vec3<u32>) {
    let ox = gid.x;
    let oy = gid.y;
    let b = gid.z;
    if ox >= p.ow || oy >= p.oh || b >= p.n { return; }
    let iy0 = i32(oy * p.sh) - i32(p.ph);
    let ix0 = i32(ox * p.sw) - i32(p.pw);
    let img = (p.total + b) * IC;
    let len4 = (IC * KH * KW + ROW_PAD) / 4u;
    let row = ((b * p.oh + oy) * p.ow + ox) * len4;
    for (var q = 0u; q < len4; q++) {
        let e = 4u * q;
        out2v[row + q] = vec4<f32>(im2col_tap(e, img, iy0, ix0), im2col_tap(e + 1u, img, iy0, ix0), im2col_tap(e + 2u, img, iy0, ix0),
                                   im2col_tap(e + 3u, img, iy0, ix0));
    }
}

// dst[r, j] = j < p.c ? src[r, j] : 0 for r < p.n, j < p.w (rows of p.c values in src, of p.w in
// dst): the weight [O, C·KH·KW] widened to the padded rows of im2col_rows (ROW_PAD), and the
// padded weight gradient cut back (p.c > p.w). Grid: x = j, y = r (8 × 8 per workgroup).
@compute @workgroup_size(8, 8)
fn pad_cols(@builtin(global_invocation_id) gid: vec3<u32>) {
    let j = gid.x;
    let r = gid.y;
    if j >= p.w || r >= p.n { return; }
    let inside = j < p.c;
    out2[r * p.w + j] = select(0.0, in1[select(0u, r * p.c + j, inside)], inside);
}

// dx[n0 + b, c, iy, ix] = Σ over the taps of dcols[b·OH·OW + oy·OW + ox, (c·KH + ky)·KW + kx]
@compute @workgroup_size(64)
fn col2im(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg, WG);
    let hw = p.h * p.w;
    if i >= p.n * p.c * hw { return; }
    let j = i % hw;
    let c = (i / hw) % p.c;
    let b = i / (hw * p.c);
    let ty = taps(j / p.w + p.ph, p.sh, p.kh, p.oh);
    let tx = taps(j % p.w + p.pw, p.sw, p.kw, p.ow);
    let ckk = p.c * p.kh * p.kw;
    let row0 = b * p.oh * p.ow;
    let colc = c * p.kh * p.kw;
    var g = 0.0;
    var oy = ty.o0;
    for (var ky = ty.k0; ky < ty.k1; ky += p.sh) {
        var ox = tx.o0;
        for (var kx = tx.k0; kx < tx.k1; kx += p.sw) {
            g += in1[(row0 + oy * p.ow + ox) * ckk + colc + ky * p.kw + kx];
            ox -= 1u;
        }
        oy -= 1u;
    }
    out2[(p.total * p.c) * hw + i] = g;
}

// The same gradient with one invocation per input pixel (ix, iy) of image b, for every channel:
// the taps are worked out once per pixel instead of once per element, and no per-element index
// division (see im2col_rows). Grid: x = ix, y = iy (8 × 8 per workgroup), z = image of the
// chunk. IC (channels) is a pipeline constant.
@compute @workgroup_size(8, 8)
fn col2im_rows(@builtin(global_invocation_id) gid: vec3<u32>) {
    let ix = gid.x;
    let iy = gid.y;
    let b = gid.z;
    if ix >= p.w || iy >= p.h || b >= p.n { return; }
    let ty = taps(iy + p.ph, p.sh, p.kh, p.oh);
    let tx = taps(ix + p.pw, p.sw, p.kw, p.ow);
    let khw = p.kh * p.kw;
    let ckk = IC * khw;
    let row0 = b * p.oh * p.ow;
    let hw = p.h * p.w;
    var out = (p.total + b) * IC * hw + iy * p.w + ix;
    for (var c = 0u; c < IC; c++) {
        var g = 0.0;
        var oy = ty.o0;
        for (var ky = ty.k0; ky < ty.k1; ky += p.sh) {
            var ox = tx.o0;
            for (var kx = tx.k0; kx < tx.k1; kx += p.sw) {
                g += in1[(row0 + oy * p.ow + ox) * ckk + c * khw + ky * p.kw + kx];
                ox -= 1u;
            }
            oy -= 1u;
        }
        out2[out] = g;
        out += hw;
    }
}

// dst = src transposed per batch item: src [B, R, K] (B = p.n, R = p.h, K = p.w) → dst [B, K, R];
// p.total (the chunk's first image) offsets the NCHW side: p.c = 1 when the source is NCHW
// (dst rows start at 0, src at n0), p.c = 0 when the destination is.
// Grid: x = r, y = k (8 × 8 per workgroup), z = b: no index division (see im2col_rows).
@compute @workgroup_size(8, 8)
fn nchw_transpose(@builtin(global_invocation_id) gid: vec3<u32>) {
    let r = gid.x;
    let k = gid.y;
    let b = gid.z;
    if r >= p.h || k >= p.w || b >= p.n { return; }
    let shift = p.total * p.h * p.w;
    let src_off = select(0u, shift, p.c == 1u);
    let dst_off = select(shift, 0u, p.c == 1u);
    out2[dst_off + (b * p.w + k) * p.h + r] = in1[src_off + (b * p.h + r) * p.w + k];
}

// out[i] = Σ_{q < p.n} parts[q·p.c + i] for i < p.total, in q order (the per-chunk weight gradients).
@compute @workgroup_size(64)
fn sum_parts(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg, WG);
    if i >= p.total { return; }
    var s = 0.0;
    for (var q = 0u; q < p.n; q++) {
        s += in1[q * p.c + i];
    }
    out2[i] = s;
}
