// layers.wgsl — the kernels of the parameter-free layers that move or scale activation rows:
// dropout, the channel-last permute, channel concatenation and the channel-wise
// (squeeze-excite) multiply, forward and backward, f32. Activations are rows of one example each,
// `[rows, features]`, a spatial row in NCHW order ([C, H, W] flattened).
//
// Entry points (bindings after the params uniform at 0):
//   dropout            y = x · keep(seed, step, offset + r, j) / (1 − p)  1 x (r), 2 y (rw)
//                      (the backward is the same launch on dy → dx: the mask is regenerated)
//   transpose_rows     y[r, j, i] = x[r, i, j], x row [a, b]             1 x (r), 2 y (rw)
//                      channel-last: forward a = C, b = H·W; backward a = H·W, b = C
//   copy_block         dst[r, dst_offset + j] = src[r, src_offset + j], j < len
//                                                                        1 src (r), 2 dst (rw)
//                      concat: forward part k → y at its channel offset; backward y's slice → dx_k
//   channel_mul        y[r, c, s] = x[r, c, s] · scale[r, c]            1 x (r), 2 scale (r), 3 y (rw)
//                      (backward dx = dy · scale: the same launch)
//   channel_mul_grad   dscale[r, c] = Σ_s dy[r, c, s] · x[r, c, s]       1 dy (r), 2 x (r), 3 dscale (rw)
//
// Dropout's mask is a counter-based hash, no state and no upload: element j of the row at
// position q = offset + r of the epoch's shuffled order (offset: the batch's start) at optimizer
// step `step` is kept iff hash(seed, step, q, j) >> 8 ≥ threshold, threshold = round(p · 2²⁴), so
// P(keep) = 1 − p to 2⁻²⁴. The hash chains Chris Wellons' lowbias32 integer mix (a bijection on
// u32) over the words seed_lo, seed_hi, step, q, j. A rerun gives the same bits; data-parallel
// replicas, which read their share at its own offset, draw the masks of the one-process run.
//
// Every output is written by one invocation, sums in a fixed order, no atomics: bit-identical
// reruns. Reference: src/reference/layers.rs.

struct DropoutParams {
    n: u32,          // elements (rows · features)
    features: u32,
    seed_lo: u32,
    seed_hi: u32,
    step: u32,
    offset: u32,     // the batch's first position in the epoch's order
    threshold: u32,  // round(p · 2^24)
    scale: f32,      // 1 / (1 − p), 0 for p = 1
}

struct LayoutParams {
    n: u32,          // output elements
    a: u32,          // transpose_rows: x row [a, b]; copy_block: src row stride
    b: u32,          // transpose_rows; copy_block: dst row stride
    src_offset: u32,
    dst_offset: u32,
    len: u32,        // copy_block: elements per row copied; channel_mul: H·W
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> dp: DropoutParams;
@group(0) @binding(0) var<uniform> lp: LayoutParams;
@group(0) @binding(1) var<storage, read> x_in: array<f32>;
@group(0) @binding(2) var<storage, read_write> y_out: array<f32>;
@group(0) @binding(2) var<storage, read> scale_in: array<f32>;
@group(0) @binding(3) var<storage, read_write> y3_out: array<f32>;

fn dropout_keep(q: u32, j: u32) -> bool {
    return (seeded_hash(dp.seed_lo, dp.seed_hi, dp.step, q, j) >> 8u) >= dp.threshold;
}

@compute @workgroup_size(256)
fn dropout(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg, 256u);
    if i >= dp.n { return; }
    let r = i / dp.features;
    let j = i - r * dp.features;
    y_out[i] = select(0.0, x_in[i] * dp.scale, dropout_keep(dp.offset + r, j));
}

@compute @workgroup_size(256)
fn transpose_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let o = flat_index(gid, nwg, 256u);
    if o >= lp.n { return; }
    let row = lp.a * lp.b;
    let r = o / row;
    let k = o - r * row;   // = j·a + i in y's [b, a] row
    let j = k / lp.a;
    let i = k - j * lp.a;
    y_out[o] = x_in[r * row + i * lp.b + j];
}

@compute @workgroup_size(256)
fn copy_block(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let o = flat_index(gid, nwg, 256u);
    if o >= lp.n { return; }
    let r = o / lp.len;
    let j = o - r * lp.len;
    y_out[r * lp.b + lp.dst_offset + j] = x_in[r * lp.a + lp.src_offset + j];
}

@compute @workgroup_size(256)
fn channel_mul(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg, 256u);
    if i >= lp.n { return; }
    // element i of [rows, C, H·W] is in plane i / (H·W) = r·C + c, scale's index for (r, c)
    y3_out[i] = x_in[i] * scale_in[i / lp.len];
}

@group(0) @binding(1) var<storage, read> mul_dy: array<f32>;
@group(0) @binding(2) var<storage, read> mul_x: array<f32>;

// One invocation per (r, c), summing its H·W products in order (the launcher checks the loop
// against lavapipe's 65,535-iteration budget).
@compute @workgroup_size(64)
fn channel_mul_grad(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let plane = flat_index(gid, nwg, 64u);
    if plane >= lp.n { return; }
    let base = plane * lp.len;
    // + 0 from the invocation index: a run-time bound lavapipe does not specialise and
    // recompile per command buffer (see head_bound in loss.wgsl)
    let len = lp.len + (gid.x >> 31u);
    var s = 0.0;
    for (var k = 0u; k < len; k++) {
        s += mul_dy[base + k] * mul_x[base + k];
    }
    y3_out[plane] = s;
}
