// loss.wgsl — softmax cross-entropy (integer classes) and per-label sigmoid BCE with logits
// (multi-task, NaN = unknown label): each writes per-row losses and the gradient w.r.t. the logits.
//
// Entry points (one invocation per row, workgroup 64, rows folded into x/y; rows are the many
// outputs, so no workgroup barriers are needed):
//   softmax_xent   bindings: 1 logits [m, c] (r), 2 class_targets u32 [m] (r),
//                            3 loss_rows [m] (rw), 4 dlogits [m, c] (rw)
//   bce_logits     bindings: 1 logits [m, k] (r), 2 label_targets [m, k] (r),
//                            3 pos_weight [k] (r), 4 label_weight [k] (r), 5 labelled u32 [1] (r),
//                            6 bce_loss_rows [m] (rw), 7 bce_dlogits [m, k] (rw)
//                  (unused optional inputs are bound to any buffer and never read)
//   count_labelled ONE workgroup of 256: labelled_out[0] = #{ targets that are not NaN }
//                  bindings: 1 count_targets [n] (r), 2 labelled_out u32 [1] (rw)
// Overrides (bce_logits): HAS_POS_WEIGHT, HAS_LABEL_WEIGHT, MEAN_LABELLED.
// Loop lengths: llvmpipe/lavapipe silently stop every loop of an invocation after 65,535
// iterations in all (see reduce.wgsl); the softmax passes are unrolled by 4 and the launchers
// reject shapes past the budget (src/kernels/reduce.rs, LOOP_BUDGET): c ≲ 86,000 classes,
// k ≲ 65,000 labels.
// Entry points share binding numbers with different variables (unique per entry point only).
//
// Softmax cross-entropy, row i with target t, M = max_j x_j, e_j = exp(x_j − M):
//   loss_i = (logsumexp(x) − x_t) · scale = ((M − x_t) + log1p(Σ_{j≠a} e_j)) · scale
//            where a = t if x_t = M else the first argmax (so the log1p argument excludes the
//            e_a = 1 term exactly: no rounding of 1 + tiny, tiny losses keep their digits)
//   dlogits_ij = (softmax_j − [j = t]) · scale, with the target entry as −(Σ_{j≠t} e_j)/Σ e_j
//            (no cancellation of softmax_t − 1 when the prediction is confident)
//   scale = 1/m. A target ≥ c is never used as an index: that row gets a NaN loss (visible in
//   the summed loss) and a zero gradient (the parameters stay finite).
//
// BCE with logits, entry (i, j), x logit, y ∈ [0, 1] target, p = pos_weight_j, w = label_weight_j,
// sp(z) = softplus(z) = max(z, 0) + log1p(exp(−|z|)):
//   l  = w · [p·y·sp(−x) + (1 − y)·sp(x)]                 (both terms ≥ 0: no cancellation)
//      = w · [(1 − y)·x + (1 + (p − 1)·y)·(log1p(exp(−|x|)) + max(−x, 0))]   (PyTorch's form)
//   dl/dx = w · [(1 − y)·σ(x) − p·y·σ(−x)]  = w · [σ(x)·(1 + (p − 1)·y) − p·y]
//   An unknown target (NaN) contributes exactly 0 to the loss and gradient: its terms are
//   discarded by `select`, never multiplied by a mask, so a NaN cannot leak.
//   loss_rows_i = Σ_j l_ij · scale, dlogits_ij = dl/dx_ij · scale, where scale is p.scale
//   (1/m or 1/(m·k)), or with MEAN_LABELLED 1/max(labelled[0], 1) (no known label: 0, not NaN).
// Reference: src/reference/loss.rs.

struct Params {
    rows: u32,   // m
    cols: u32,   // c classes (softmax) or k labels (BCE)
    scale: f32,  // the normaliser's reciprocal, unless MEAN_LABELLED
    _pad: u32,
}

override HAS_POS_WEIGHT: bool = false;
override HAS_LABEL_WEIGHT: bool = false;
override MEAN_LABELLED: bool = false;

@group(0) @binding(0) var<uniform> p: Params;

// NaN test on the bits: a compiler may fold `y != y` to false under fast-math assumptions.
fn loss_is_nan(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u;
}

// A quiet NaN built at run time (a NaN constant expression is a WGSL error).
fn loss_nan(seed: u32) -> f32 {
    return bitcast<f32>(0x7fc00000u | (seed & 0x003fffffu));
}

// log(1 + v) for v ≥ 0, accurate to a few ulp relative for tiny v. For v ≤ 1 it avoids the
// built-in log (whose Vulkan precision near 1 is only 2⁻²¹ absolute) with the series
// log1p(v) = 2·atanh(z) = 2·(z + z³/3 + z⁵/5 + …), z = v/(2 + v) ≤ 1/3; nine terms leave a
// truncation error below 2⁻³² relative.
fn log1p_pos(v: f32) -> f32 {
    if v > 1.0 {
        return log(1.0 + v);
    }
    let z = v / (2.0 + v);
    let z2 = z * z;
    var s = 1.0 / 17.0;
    s = s * z2 + 1.0 / 15.0;
    s = s * z2 + 1.0 / 13.0;
    s = s * z2 + 1.0 / 11.0;
    s = s * z2 + 1.0 / 9.0;
    s = s * z2 + 1.0 / 7.0;
    s = s * z2 + 1.0 / 5.0;
    s = s * z2 + 1.0 / 3.0;
    s = s * z2 + 1.0;
    return 2.0 * z * s;
}

// σ(x) with full relative precision on both sides (σ(−x) computed as e/(1 + e), not 1 − σ(x)).
fn sigmoid_rel(x: f32) -> f32 {
    let e = exp(-abs(x));
    let r = 1.0 / (1.0 + e);
    return select(e * r, r, x >= 0.0);
}

// ---------------------------------------------------------------- softmax cross-entropy

@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> class_targets: array<u32>;
@group(0) @binding(3) var<storage, read_write> loss_rows: array<f32>;
@group(0) @binding(4) var<storage, read_write> dlogits: array<f32>;

// One step of each softmax pass (the passes are unrolled by 4 to stay within llvmpipe's loop
// budget for wide rows; the order of operations is the plain loop's).
fn xent_max_step(base: u32, j: u32, mx: ptr<function, f32>, am: ptr<function, u32>) {
    let v = logits[base + j];
    if v > *mx {
        *mx = v;
        *am = j;
    }
}

fn xent_exp_step(base: u32, j: u32, mx: f32, a: u32, t: u32, s_rest: ptr<function, f32>, s_other: ptr<function, f32>) {
    let e = exp(logits[base + j] - mx);
    dlogits[base + j] = e;
    *s_rest += select(e, 0.0, j == a);
    *s_other += select(e, 0.0, j == t);
}

fn xent_grad_step(base: u32, j: u32, t: u32, s_other: f32, f: f32) {
    dlogits[base + j] = select(dlogits[base + j], -s_other, j == t) * f;
}

@compute @workgroup_size(64)
fn softmax_xent(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg, 64u);
    if i >= p.rows { return; }
    let c = p.cols;
    let base = i * c;
    let t = class_targets[i];
    if t >= c {
        loss_rows[i] = loss_nan(t);
        var z = 0u;
        for (; z + 4u <= c; z += 4u) {
            dlogits[base + z] = 0.0;
            dlogits[base + z + 1u] = 0.0;
            dlogits[base + z + 2u] = 0.0;
            dlogits[base + z + 3u] = 0.0;
        }
        for (; z < c; z++) {
            dlogits[base + z] = 0.0;
        }
        return;
    }
    // pass 1: the maximum and its first position
    var mx = logits[base];
    var am = 0u;
    var j = 1u;
    for (; j + 4u <= c; j += 4u) {
        xent_max_step(base, j, &mx, &am);
        xent_max_step(base, j + 1u, &mx, &am);
        xent_max_step(base, j + 2u, &mx, &am);
        xent_max_step(base, j + 3u, &mx, &am);
    }
    for (; j < c; j++) {
        xent_max_step(base, j, &mx, &am);
    }
    let xt = logits[base + t];
    let a = select(am, t, xt == mx);
    // pass 2: e_j = exp(x_j − M), kept in dlogits until pass 3 scales it
    var s_rest = 0.0;   // Σ_{j≠a} e_j
    var s_other = 0.0;  // Σ_{j≠t} e_j
    j = 0u;
    for (; j + 4u <= c; j += 4u) {
        xent_exp_step(base, j, mx, a, t, &s_rest, &s_other);
        xent_exp_step(base, j + 1u, mx, a, t, &s_rest, &s_other);
        xent_exp_step(base, j + 2u, mx, a, t, &s_rest, &s_other);
        xent_exp_step(base, j + 3u, mx, a, t, &s_rest, &s_other);
    }
    for (; j < c; j++) {
        xent_exp_step(base, j, mx, a, t, &s_rest, &s_other);
    }
    let s = 1.0 + s_rest;
    loss_rows[i] = ((mx - xt) + log1p_pos(s_rest)) * p.scale;
    // pass 3: softmax − onehot, scaled
    let f = p.scale / s;
    j = 0u;
    for (; j + 4u <= c; j += 4u) {
        xent_grad_step(base, j, t, s_other, f);
        xent_grad_step(base, j + 1u, t, s_other, f);
        xent_grad_step(base, j + 2u, t, s_other, f);
        xent_grad_step(base, j + 3u, t, s_other, f);
    }
    for (; j < c; j++) {
        xent_grad_step(base, j, t, s_other, f);
    }
}

// ---------------------------------------------------------------- sigmoid BCE with logits

@group(0) @binding(2) var<storage, read> label_targets: array<f32>;
@group(0) @binding(3) var<storage, read> pos_weight: array<f32>;
@group(0) @binding(4) var<storage, read> label_weight: array<f32>;
@group(0) @binding(5) var<storage, read> labelled: array<u32>;
@group(0) @binding(6) var<storage, read_write> bce_loss_rows: array<f32>;
@group(0) @binding(7) var<storage, read_write> bce_dlogits: array<f32>;

@compute @workgroup_size(64)
fn bce_logits(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg, 64u);
    if i >= p.rows { return; }
    var scale = p.scale;
    if MEAN_LABELLED {
        scale = 1.0 / f32(max(labelled[0], 1u));
    }
    let k = p.cols;
    let base = i * k;
    var row = 0.0;
    for (var j = 0u; j < k; j++) {
        let x = logits[base + j];
        let y = label_targets[base + j];
        var pw = 1.0;
        if HAS_POS_WEIGHT { pw = pos_weight[j]; }
        var w = 1.0;
        if HAS_LABEL_WEIGHT { w = label_weight[j]; }
        let l1 = log1p_pos(exp(-abs(x)));
        let sp_x = max(x, 0.0) + l1;      // −log(1 − σ(x))
        let sp_negx = max(-x, 0.0) + l1;  // −log σ(x)
        let l = w * (pw * y * sp_negx + (1.0 - y) * sp_x);
        let g = w * ((1.0 - y) * sigmoid_rel(x) - pw * y * sigmoid_rel(-x));
        let known = !loss_is_nan(y);
        row += select(0.0, l, known);
        bce_dlogits[base + j] = select(0.0, g * scale, known);
    }
    bce_loss_rows[i] = row * scale;
}

// ---------------------------------------------------------------- labelled count (MeanLabelled)

@group(0) @binding(1) var<storage, read> count_targets: array<f32>;
@group(0) @binding(2) var<storage, read_write> labelled_out: array<u32>;

const COUNT_WG: u32 = 256u;
var<workgroup> counts: array<u32, 256>;

@compute @workgroup_size(256)
fn count_labelled(@builtin(local_invocation_index) t: u32) {
    let n = p.rows * p.cols;
    var c = 0u;
    var i = t;
    for (; i + 3u * COUNT_WG < n; i += 4u * COUNT_WG) {
        c += select(1u, 0u, loss_is_nan(count_targets[i]));
        c += select(1u, 0u, loss_is_nan(count_targets[i + COUNT_WG]));
        c += select(1u, 0u, loss_is_nan(count_targets[i + 2u * COUNT_WG]));
        c += select(1u, 0u, loss_is_nan(count_targets[i + 3u * COUNT_WG]));
    }
    for (; i < n; i += COUNT_WG) {
        c += select(1u, 0u, loss_is_nan(count_targets[i]));
    }
    counts[t] = c;
    workgroupBarrier();
    for (var stride = COUNT_WG / 2u; stride > 0u; stride = stride / 2u) {
        if t < stride {
            counts[t] = counts[t] + counts[t + stride];
        }
        workgroupBarrier();
    }
    if t == 0u {
        labelled_out[0] = counts[0];
    }
}
