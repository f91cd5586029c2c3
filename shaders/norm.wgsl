// norm.wgsl — BatchNorm (PyTorch's nn.BatchNorm2d / BatchNorm1d), forward and backward, f32.
//
// Layout: x is NCHW, one example per row of C·H·W values (BatchNorm1d: H = W = 1); channel of
// flat element i is (i / HW) % C. M = N·H·W values per channel. Per-channel tensors have C
// elements; `saved` is [2, C]: the batch mean (row 0) and inverse std (row 1) of a training step.
//
// Math (PyTorch's, aten/src/ATen/native/Normalization.cpp):
//   inference  s = γ / √(σ²_run + ε), t = β − μ_run·s, y = act(x·s + t)
//   training   μ = Σx / M, σ² = Σ(x − μ)² / M (biased), invstd = 1/√(σ² + ε),
//              s = γ·invstd, t = β − μ·s, y = act(x·s + t)
//              running ← (1 − momentum)·running + momentum·batch, with σ²·M/(M − 1) (unbiased)
//              for the running variance
//   backward   (dy: the gradient of the pre-activation output; run act_backward first)
//              dβ = Σ dy, dγ = invstd·Σ dy·(x − μ)
//              inference: dx = dy·s
//              training:  dx = γ·invstd·(dy − dβ/M − x̂·dγ/M), x̂ = (x − μ)·invstd
//
// Entry points. The reductions (workgroup 256) run one workgroup per channel; the element-wise
// ones (workgroup 64) one invocation per element.
//   bn_eval_forward          1 x, 2 γ, 3 β, 4 run_mean, 5 run_var, 6 y (rw)       override ACT
//   bn_train_stats           1 x, 2 saved (rw), 3 run_mean (rw), 4 run_var (rw)   override UPDATE_RUNNING
//   bn_train_forward         1 x, 2 γ, 3 β, 4 saved, 5 y (rw)                      override ACT
//   bn_param_grads_train     1 dy, 2 x, 3 saved, 4 dγ (rw), 5 dβ (rw)
//   bn_param_grads_eval      1 dy, 2 x, 3 run_mean, 4 run_var, 5 dγ (rw), 6 dβ (rw)
//   bn_eval_backward_input   1 dy, 2 γ, 3 run_var, 4 dx (rw)
//   bn_train_backward_input  1 dy, 2 x, 3 saved, 4 γ, 5 dγ, 6 dβ, 7 dx (rw)   (dγ, dβ: this batch's
//                            sums from bn_param_grads_train)
// Entry points declare different bindings under the same numbers; WGSL only requires the numbers
// to be unique among the variables one entry point uses.
//
// Overrides: PLANES (element-wise kernels) and NESTED (reductions), chosen by the launcher from
// the shape. Integer division has no SIMD form on lavapipe's CPUs, so the kernels avoid a
// division per element where a plane is long enough:
// * PLANES: the grid is (⌈HW/64⌉, planes folded into y/z): a workgroup covers 64 values of one
//   (example, channel) plane, and the channel is one `plane % C` per invocation. Otherwise (short
//   planes, BatchNorm1d) a flat 1-D grid, channel = (i / HW) % C.
// * NESTED: a reduction walks example by example, values s = t, t + 256, … of each plane. Otherwise
//   (planes shorter than 256) it walks the channel's values j = t, t + 256, … over N·H·W with a
//   division to find each one's example.
// Determinism: either way each channel's sums are a fixed sequence of f32 operations (invocation t
// adds its values in order, then a fixed binary tree over the 256 partials; no atomics). The mean
// is computed first, then Σ(x − μ)² in a second pass (no cancellation of E[x²] − μ²). The
// launcher checks the loop lengths (⌈M/256⌉, or N·(⌈HW/256⌉ + 1), per pass) against the
// llvmpipe/lavapipe loop budget (src/kernels/reduce.rs).
// Reference: src/reference/norm.rs.

struct Params {
    n: u32,          // examples
    c: u32,          // channels
    hw: u32,         // H·W
    total: u32,      // N·C·H·W
    eps: f32,
    momentum: f32,   // running-stat update factor
    alpha: f32,      // LeakyReLU slope of the fused activation
    _pad: u32,
}

override ACT: u32 = 0u;
override UPDATE_RUNNING: bool = true;
override PLANES: bool = false;
override NESTED: bool = false;

const WG: u32 = 256u;   // reductions
const EWG: u32 = 64u;   // element-wise

@group(0) @binding(0) var<uniform> p: Params;

var<workgroup> part_a: array<f32, 256>;
var<workgroup> part_b: array<f32, 256>;

// The element an element-wise invocation works on, its channel, and whether it is in range.
struct Elem {
    i: u32,
    ch: u32,
    valid: bool,
}

fn element(gid: vec3<u32>, wid: vec3<u32>, lid: u32, nwg: vec3<u32>) -> Elem {
    if PLANES {
        let plane = wid.y + wid.z * nwg.y;
        let k = wid.x * EWG + lid;
        return Elem(plane * p.hw + k, plane % p.c, plane < p.n * p.c && k < p.hw);
    }
    let i = flat_index(gid, nwg, EWG);
    return Elem(i, (i / p.hw) % p.c, i < p.total);
}

// The flat index of the channel's j-th value (j over N·H·W, example-major).
fn channel_elem(ch: u32, j: u32) -> u32 {
    let n = j / p.hw;
    return (n * p.c + ch) * p.hw + (j - n * p.hw);
}

// The channel a reduction workgroup works on (workgroups folded into x/y past 65,535).
fn reduce_channel(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

// Fixed-order tree over part_a (and part_b with `both`); the totals end in part_a[0], part_b[0].
// Called in uniform control flow.
fn tree(t: u32, both: bool) {
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride = stride / 2u) {
        if t < stride {
            part_a[t] = part_a[t] + part_a[t + stride];
            if both { part_b[t] = part_b[t] + part_b[t + stride]; }
        }
        workgroupBarrier();
    }
}

// ---------------------------------------------------------------------------------------------
// Element-wise: y = act(x·s + t)

@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
@group(0) @binding(4) var<storage, read> run_mean: array<f32>;
@group(0) @binding(5) var<storage, read> run_var: array<f32>;
@group(0) @binding(6) var<storage, read_write> y6: array<f32>;

@compute @workgroup_size(64)
fn bn_eval_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32, @builtin(num_workgroups) nwg: vec3<u32>) {
    let el = element(gid, wid, lid, nwg);
    if !el.valid { return; }
    let i = el.i;
    let ch = el.ch;
    let s = gamma[ch] / sqrt(run_var[ch] + p.eps);
    let t = beta[ch] - run_mean[ch] * s;
    y6[i] = activate(ACT, x[i] * s + t, p.alpha);
}

@group(0) @binding(4) var<storage, read> saved: array<f32>;
@group(0) @binding(5) var<storage, read_write> y5: array<f32>;

@compute @workgroup_size(64)
fn bn_train_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32, @builtin(num_workgroups) nwg: vec3<u32>) {
    let el = element(gid, wid, lid, nwg);
    if !el.valid { return; }
    let i = el.i;
    let ch = el.ch;
    let s = gamma[ch] * saved[p.c + ch];
    let t = beta[ch] - saved[ch] * s;
    y5[i] = activate(ACT, x[i] * s + t, p.alpha);
}

// ---------------------------------------------------------------------------------------------
// Batch statistics and the running-stat update: one workgroup per channel.

@group(0) @binding(2) var<storage, read_write> saved_out: array<f32>;
@group(0) @binding(3) var<storage, read_write> run_mean_rw: array<f32>;
@group(0) @binding(4) var<storage, read_write> run_var_rw: array<f32>;

@compute @workgroup_size(256)
fn bn_train_stats(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let ch = reduce_channel(wid, nwg);
    if ch >= p.c { return; }  // uniform across the workgroup
    let m = p.n * p.hw;
    var s = 0.0;
    if NESTED {
        for (var n = 0u; n < p.n; n++) {
            let base = (n * p.c + ch) * p.hw;
            for (var k = t; k < p.hw; k += WG) {
                s += x[base + k];
            }
        }
    } else {
        for (var j = t; j < m; j += WG) {
            s += x[channel_elem(ch, j)];
        }
    }
    part_a[t] = s;
    tree(t, false);
    let mean = part_a[0] / f32(m);
    workgroupBarrier();  // everyone has read part_a[0] before it is overwritten
    var q = 0.0;
    if NESTED {
        for (var n = 0u; n < p.n; n++) {
            let base = (n * p.c + ch) * p.hw;
            for (var k = t; k < p.hw; k += WG) {
                let d = x[base + k] - mean;
                q += d * d;
            }
        }
    } else {
        for (var j = t; j < m; j += WG) {
            let d = x[channel_elem(ch, j)] - mean;
            q += d * d;
        }
    }
    part_a[t] = q;
    tree(t, false);
    if t == 0u {
        let var_biased = part_a[0] / f32(m);
        saved_out[ch] = mean;
        saved_out[p.c + ch] = 1.0 / sqrt(var_biased + p.eps);
        if UPDATE_RUNNING {
            // the launcher refuses M < 2 in training (PyTorch: "Expected more than 1 value per channel")
            let var_unbiased = part_a[0] / f32(m - 1u);
            run_mean_rw[ch] = (1.0 - p.momentum) * run_mean_rw[ch] + p.momentum * mean;
            run_var_rw[ch] = (1.0 - p.momentum) * run_var_rw[ch] + p.momentum * var_unbiased;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// dβ = Σ dy, dγ = invstd·Σ dy·(x − μ): one workgroup per channel.

@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> gx: array<f32>;
@group(0) @binding(3) var<storage, read> g_saved: array<f32>;
@group(0) @binding(4) var<storage, read_write> dgamma4: array<f32>;
@group(0) @binding(5) var<storage, read_write> dbeta5: array<f32>;

// Σ dy and Σ dy·(x − mean) of channel `ch` into part_b[0] and part_a[0]. Uniform control flow.
fn grad_sums(ch: u32, mean: f32, t: u32) {
    let m = p.n * p.hw;
    var sd = 0.0;
    var sdx = 0.0;
    if NESTED {
        for (var n = 0u; n < p.n; n++) {
            let base = (n * p.c + ch) * p.hw;
            for (var k = t; k < p.hw; k += WG) {
                let g = dy[base + k];
                sd += g;
                sdx += g * (gx[base + k] - mean);
            }
        }
    } else {
        for (var j = t; j < m; j += WG) {
            let e = channel_elem(ch, j);
            let g = dy[e];
            sd += g;
            sdx += g * (gx[e] - mean);
        }
    }
    part_a[t] = sdx;
    part_b[t] = sd;
    tree(t, true);
}

@compute @workgroup_size(256)
fn bn_param_grads_train(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let ch = reduce_channel(wid, nwg);
    if ch >= p.c { return; }
    grad_sums(ch, g_saved[ch], t);
    if t == 0u {
        dgamma4[ch] = part_a[0] * g_saved[p.c + ch];
        dbeta5[ch] = part_b[0];
    }
}

@group(0) @binding(3) var<storage, read> g_run_mean: array<f32>;
@group(0) @binding(4) var<storage, read> g_run_var: array<f32>;
@group(0) @binding(5) var<storage, read_write> dgamma5: array<f32>;
@group(0) @binding(6) var<storage, read_write> dbeta6: array<f32>;

@compute @workgroup_size(256)
fn bn_param_grads_eval(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let ch = reduce_channel(wid, nwg);
    if ch >= p.c { return; }
    grad_sums(ch, g_run_mean[ch], t);
    if t == 0u {
        dgamma5[ch] = part_a[0] / sqrt(g_run_var[ch] + p.eps);
        dbeta6[ch] = part_b[0];
    }
}

// ---------------------------------------------------------------------------------------------
// dx

@group(0) @binding(2) var<storage, read> e_gamma: array<f32>;
@group(0) @binding(3) var<storage, read> e_run_var: array<f32>;
@group(0) @binding(4) var<storage, read_write> dx4: array<f32>;

@compute @workgroup_size(64)
fn bn_eval_backward_input(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32, @builtin(num_workgroups) nwg: vec3<u32>) {
    let el = element(gid, wid, lid, nwg);
    if !el.valid { return; }
    let i = el.i;
    let ch = el.ch;
    dx4[i] = dy[i] * (e_gamma[ch] / sqrt(e_run_var[ch] + p.eps));
}

@group(0) @binding(4) var<storage, read> t_gamma: array<f32>;
@group(0) @binding(5) var<storage, read> t_dgamma: array<f32>;
@group(0) @binding(6) var<storage, read> t_dbeta: array<f32>;
@group(0) @binding(7) var<storage, read_write> dx7: array<f32>;

@compute @workgroup_size(64)
fn bn_train_backward_input(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32, @builtin(num_workgroups) nwg: vec3<u32>) {
    let el = element(gid, wid, lid, nwg);
    if !el.valid { return; }
    let i = el.i;
    let ch = el.ch;
    let inv_m = 1.0 / f32(p.n * p.hw);
    let invstd = g_saved[p.c + ch];
    let xhat = (gx[i] - g_saved[ch]) * invstd;
    dx7[i] = t_gamma[ch] * invstd * (dy[i] - t_dbeta[ch] * inv_m - xhat * t_dgamma[ch] * inv_m);
}

// ---------------------------------------------------------------------------------------------
// An inference-mode BN folded into the convolution before it (torchvision's FrozenBatchNorm2d
// after a conv, torch.nn.utils.fusion.fuse_conv_bn_eval): W' = W·s, b' = β + (b − μ_run)·s,
// s = γ/√(σ²_run + ε). Two launches, so that neither binds more than the 8 storage buffers every
// device has:
//   bn_fold_weight  1 W (as x), 2 γ, 3 run_var, 4 W' (rw): laid out as the element-wise kernels
//                   with N = 1, C = out channels, HW = weights per out channel
//   bn_fold_bias    1 γ, 2 β, 3 run_mean, 4 run_var, 5 the conv's bias (any buffer without
//                   HAS_BIAS), 6 b' (rw): one invocation per channel (flat, HW = 1)

@group(0) @binding(3) var<storage, read> fold_var: array<f32>;
@group(0) @binding(4) var<storage, read_write> folded_weight: array<f32>;

@group(0) @binding(1) var<storage, read> fb_gamma: array<f32>;
@group(0) @binding(2) var<storage, read> fb_beta: array<f32>;
@group(0) @binding(3) var<storage, read> fb_mean: array<f32>;
@group(0) @binding(4) var<storage, read> fb_var: array<f32>;
@group(0) @binding(5) var<storage, read> fb_conv_bias: array<f32>;
@group(0) @binding(6) var<storage, read_write> fb_out: array<f32>;

override HAS_BIAS: bool = true;

@compute @workgroup_size(64)
fn bn_fold_weight(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32, @builtin(num_workgroups) nwg: vec3<u32>) {
    let el = element(gid, wid, lid, nwg);
    if !el.valid { return; }
    folded_weight[el.i] = x[el.i] * (gamma[el.ch] / sqrt(fold_var[el.ch] + p.eps));
}

@compute @workgroup_size(64)
fn bn_fold_bias(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32, @builtin(num_workgroups) nwg: vec3<u32>) {
    let el = element(gid, wid, lid, nwg);
    if !el.valid { return; }
    let ch = el.ch;
    let s = fb_gamma[ch] / sqrt(fb_var[ch] + p.eps);
    var b = 0.0;
    if HAS_BIAS { b = fb_conv_bias[ch]; }
    fb_out[ch] = fb_beta[ch] + (b - fb_mean[ch]) * s;
}
