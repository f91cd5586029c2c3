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
// The fused head steps (head_softmax, head_bce, linear_head_bce) and the losses of a multi-task
// network's heads (regression_loss, softmax_xent_masked, count_known_classes) are described in
// their own sections below.
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
//   (1/m or 1/(m·k)), or with MEAN_LABELLED p.scale/max(labelled[0], 1) (no known label: 0, not
//   NaN; the launcher sets p.scale = 1, a data-parallel step its replica's share of the batch's
//   known labels).
// Reference: src/reference/loss.rs.

struct Params {
    rows: u32,   // m
    cols: u32,   // c classes (softmax) or k labels (BCE)
    scale: f32,  // the normaliser's reciprocal (MEAN_LABELLED: a factor of 1/labelled)
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

// Row i of softmax cross-entropy with target class t: writes dlogits[i, ..] and returns the
// row's scaled loss.
fn xent_row(i: u32, t: u32, c: u32, scale: f32) -> f32 {
    let base = i * c;
    if t >= c {
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
        return loss_nan(t);
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
    // pass 3: softmax − onehot, scaled
    let f = scale / s;
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
    return ((mx - xt) + log1p_pos(s_rest)) * scale;
}

@compute @workgroup_size(64)
fn softmax_xent(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg, 64u);
    if i >= p.rows { return; }
    loss_rows[i] = xent_row(i, class_targets[i], p.cols, p.scale);
}

// ---------------------------------------------------------------- sigmoid BCE with logits

@group(0) @binding(2) var<storage, read> label_targets: array<f32>;
@group(0) @binding(3) var<storage, read> pos_weight: array<f32>;
@group(0) @binding(4) var<storage, read> label_weight: array<f32>;
@group(0) @binding(5) var<storage, read> labelled: array<u32>;
@group(0) @binding(6) var<storage, read_write> bce_loss_rows: array<f32>;
@group(0) @binding(7) var<storage, read_write> bce_dlogits: array<f32>;

// (loss, dloss/dx) of logit x with target y in label j, unscaled; (0, 0) for an unknown (NaN)
// target. Takes values, not positions: the fused linear head computes its logits in registers.
fn bce_entry(x: f32, y: f32, j: u32) -> vec2<f32> {
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
    return vec2<f32>(select(0.0, l, known), select(0.0, g, known));
}

@compute @workgroup_size(64)
fn bce_logits(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg, 64u);
    if i >= p.rows { return; }
    var scale = p.scale;
    if MEAN_LABELLED {
        scale = p.scale / f32(max(labelled[0], 1u));
    }
    let k = p.cols;
    let base = i * k;
    var row = 0.0;
    for (var j = 0u; j < k; j++) {
        let lg = bce_entry(logits[base + j], label_targets[base + j], j);
        row += lg.x;
        bce_dlogits[base + j] = lg.y * scale;
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

// ---------------------------------------------------------------- fused head step (small batches)
// head_softmax / head_bce: ONE workgroup of 64 does for a small batch what four launches do
// otherwise: the loss gradient (as softmax_xent / bce_logits), the batch loss added to the
// epoch's accumulator (as `sum` with accumulate), the metric counts added to the epoch's counters
// (as argmax_correct / label_confusion, metrics.wgsl), and, with HAS_DB, the output layer's bias
// gradient db_j = Σ_i dlogits_ij (as col_sum). In a small head's training step these launches
// cost more than their arithmetic. One workgroup is a single core on a CPU adapter and a single
// SM on a GPU, so the launcher uses it only for m·k ≤ FUSED_HEAD_MAX_ENTRIES (src/kernels/loss.rs).
// Every sum runs in a fixed order (strided per-invocation partials, then a fixed tree or a
// sequential pass), so repeats are bit-identical; counts are integers.
//   head_softmax  bindings: 0 hp (uniform), 1 logits [m, c] (r), 2 class_targets u32 [m] (r),
//                           3 loss_rows [m] (rw), 4 dlogits [m, c] (rw), 5 hs_loss_acc [1] (rw),
//                           6 hs_counts u32 [2] (rw): correct, total, 7 hs_db [c] (rw)
//   head_bce      bindings: 0 hp (uniform), 1 logits [m, k] (r), 2 label_targets [m, k] (r),
//                           3 pos_weight [k] (r), 4 label_weight [k] (r), 5 hb_dlogits [m, k] (rw),
//                           6 hb_loss_acc [1] (rw), 7 hb_counts u32 [k, 4] (rw): TP FP TN FN,
//                           8 hb_db [k] (rw)
// With GATHER_TARGETS the targets are the data set's ([n, k] labels, [n] classes) and batch row i
// reads row rows[offset + i] of them (binding 8 hs_rows for head_softmax, 9 head_rows for
// head_bce): the batch's targets are read in place instead of copied out first. A row ≥ n reads
// nothing: its labels count as unknown, its class as out of range (NaN loss, no gradient).
// Otherwise any buffer is bound there and never read.
// Overrides: HAS_DB, GATHER_TARGETS; head_bce also HAS_POS_WEIGHT, HAS_LABEL_WEIGHT, MEAN_LABELLED.

struct HeadParams {
    rows: u32,             // m
    cols: u32,             // c classes or k labels
    scale: f32,            // the normaliser's reciprocal (MEAN_LABELLED: a factor of 1/known, 1 unless rescaled)
    offset: u32,           // GATHER_TARGETS, linear_head_bce: the batch's first index position (set per step)
    logit_threshold: f32,  // head_bce: predicted positive when logit ≥ ln(t / (1 − t))
    d: u32,                // linear_head_bce: features per row
    n: u32,                // GATHER_TARGETS, linear_head_bce: rows of the data set's targets
    _pad: u32,
}

override HAS_DB: bool = false;
override GATHER_TARGETS: bool = false;
// 64, not 256: each workgroup barrier is a coroutine switch per 8 invocations on lavapipe.
const HEAD_WG: u32 = 64u;

@group(0) @binding(0) var<uniform> hp: HeadParams;
@group(0) @binding(5) var<storage, read_write> hs_loss_acc: array<f32>;
@group(0) @binding(6) var<storage, read_write> hs_counts: array<u32>;
@group(0) @binding(7) var<storage, read_write> hs_db: array<f32>;
@group(0) @binding(5) var<storage, read_write> hb_dlogits: array<f32>;
@group(0) @binding(6) var<storage, read_write> hb_loss_acc: array<f32>;
@group(0) @binding(7) var<storage, read_write> hb_counts: array<u32>;
@group(0) @binding(8) var<storage, read_write> hb_db: array<f32>;
@group(0) @binding(8) var<storage, read> hs_rows: array<u32>;
@group(0) @binding(9) var<storage, read> head_rows: array<u32>;

var<workgroup> head_f: array<f32, HEAD_WG>;
var<workgroup> head_g: array<f32, HEAD_WG>;
var<workgroup> head_u: array<vec4<u32>, HEAD_WG>;

// `v`, a HeadParams field that bounds a loop, as a value lavapipe cannot specialise the shader
// on. Mesa 22.x lavapipe inlines up to four uniform values that bound loops and recompiles the
// shader for them on every command buffer that runs it (nir_inline_uniforms, no variant cache),
// which costs these one-workgroup kernels many times their work per submission (BENCHMARKS.md,
// "What we learned about lavapipe"). Mixing in the invocation index `t` (whose top bit is never
// set) keeps the bound a run-time value for one add; a storage buffer's arrayLength does not
// (lavapipe inlines it still).
fn head_bound(v: u32, t: u32) -> u32 {
    return v + (t >> 31u);
}

// head_f[0] = Σ head_f over the workgroup, in a fixed tree order.
fn head_reduce_f(t: u32) {
    for (var stride = HEAD_WG / 2u; stride > 0u; stride = stride / 2u) {
        workgroupBarrier();
        if t < stride {
            head_f[t] = head_f[t] + head_f[t + stride];
        }
    }
    workgroupBarrier();
}

// The target class of batch row i (c, out of range, for an index past the data set).
fn hs_target(i: u32) -> u32 {
    if GATHER_TARGETS {
        let r = hs_rows[hp.offset + i];
        if r >= hp.n { return hp.cols; }
        return class_targets[r];
    }
    return class_targets[i];
}

@compute @workgroup_size(HEAD_WG)
fn head_softmax(@builtin(local_invocation_index) t: u32) {
    let m = head_bound(hp.rows, t);
    let c = head_bound(hp.cols, t);
    var loss = 0.0;
    var correct = 0u;
    for (var i = t; i < m; i += HEAD_WG) {
        let truth = hs_target(i);
        let l = xent_row(i, truth, c, hp.scale);
        loss_rows[i] = l;
        loss += l;
        // argmax of the row, first index on ties, a NaN wins (as argmax_correct)
        let base = i * c;
        var best = 0u;
        var best_v = logits[base];
        for (var j = 1u; j < c; j++) {
            let x = logits[base + j];
            if !loss_is_nan(best_v) && (x > best_v || loss_is_nan(x)) {
                best = j;
                best_v = x;
            }
        }
        correct += select(0u, 1u, best == truth);
    }
    head_f[t] = loss;
    head_u[t] = vec4<u32>(correct, 0u, 0u, 0u);
    head_reduce_f(t);
    if t == 0u {
        hs_loss_acc[0] = hs_loss_acc[0] + head_f[0];
        var total = 0u;
        for (var q = 0u; q < HEAD_WG; q++) {
            total += head_u[q].x;
        }
        hs_counts[0] = hs_counts[0] + total;
        hs_counts[1] = hs_counts[1] + m;
    }
    if HAS_DB {
        storageBarrier();  // every row's dlogits written before the column sums read them
        for (var j = t; j < c; j += HEAD_WG) {
            var db = 0.0;
            for (var i = 0u; i < m; i++) {
                db += dlogits[i * c + j];
            }
            hs_db[j] = db;
        }
    }
}

// TP, FP, TN, FN of one known entry (as label_confusion).
fn head_confusion(x: f32, y: f32) -> vec4<u32> {
    let predicted = !loss_is_nan(x) && x >= hp.logit_threshold;
    let actual = y >= 0.5;
    return vec4<u32>(u32(predicted && actual), u32(predicted && !actual), u32(!predicted && !actual), u32(!predicted && actual));
}

// One invocation's running sums over entries of one label.
struct HeadSums {
    loss: f32,
    db: f32,
    counts: vec4<u32>,  // TP, FP, TN, FN
}

// Entry e = (i, j) with logit x and target y: writes its scaled gradient, adds it to the sums.
fn head_bce_add(e: u32, x: f32, y: f32, j: u32, scale: f32, sums: ptr<function, HeadSums>) {
    let lg = bce_entry(x, y, j);
    (*sums).loss += lg.x;
    (*sums).db += lg.y * scale;
    hb_dlogits[e] = lg.y * scale;
    if !loss_is_nan(y) {
        (*sums).counts += head_confusion(x, y);
    }
}

// Adds label j's counts to the epoch's counters.
fn head_add_counts(j: u32, c: vec4<u32>) {
    let o = 4u * j;
    hb_counts[o] = hb_counts[o] + c.x;
    hb_counts[o + 1u] = hb_counts[o + 1u] + c.y;
    hb_counts[o + 2u] = hb_counts[o + 2u] + c.z;
    hb_counts[o + 3u] = hb_counts[o + 3u] + c.w;
}

// MEAN_LABELLED: 1 / (the batch's known targets, at least 1), from each invocation's count.
fn head_labelled_scale(t: u32, known: u32) -> f32 {
    head_u[t] = vec4<u32>(known, 0u, 0u, 0u);
    workgroupBarrier();
    for (var stride = HEAD_WG / 2u; stride > 0u; stride = stride / 2u) {
        if t < stride {
            head_u[t].x = head_u[t].x + head_u[t + stride].x;
        }
        workgroupBarrier();
    }
    let scale = 1.0 / f32(max(head_u[0].x, 1u));
    workgroupBarrier();
    return scale;
}

// The end of head_bce / linear_head_bce: adds the batch loss (each invocation's `loss`, unscaled)
// to the accumulator and, for k ≤ 64, reduces the `per` partials of each label (left in head_g
// and head_u) into its bias gradient and counts.
fn head_bce_finish(t: u32, loss: f32, scale: f32) {
    let k = head_bound(hp.cols, t);
    head_f[t] = loss;
    head_reduce_f(t);
    if t == 0u {
        hb_loss_acc[0] = hb_loss_acc[0] + head_f[0] * scale;
    }
    if k <= HEAD_WG && t < k {
        let per = HEAD_WG / k;
        var db = 0.0;
        var counts = vec4<u32>();
        for (var q = t * per; q < (t + 1u) * per; q++) {
            db += head_g[q];
            counts += head_u[q];
        }
        if HAS_DB { hb_db[t] = db; }
        head_add_counts(t, counts);
    }
}

// The target of label j in batch row i (NaN, unknown, for an index past the data set).
fn hb_target(i: u32, j: u32) -> f32 {
    if GATHER_TARGETS {
        let r = head_rows[hp.offset + i];
        if r >= hp.n { return loss_nan(r); }
        return label_targets[r * hp.cols + j];
    }
    return label_targets[i * hp.cols + j];
}

// MEAN_LABELLED: the loss scale 1 / (the batch's known targets, at least 1).
fn head_bce_labelled_scale(t: u32, m: u32, k: u32) -> f32 {
    var known = 0u;
    for (var i = t; i < m; i += HEAD_WG) {
        for (var j = 0u; j < k; j++) {
            known += select(1u, 0u, loss_is_nan(hb_target(i, j)));
        }
    }
    return head_labelled_scale(t, known);
}

@compute @workgroup_size(HEAD_WG)
fn head_bce(@builtin(local_invocation_index) t: u32) {
    let m = head_bound(hp.rows, t);
    let k = head_bound(hp.cols, t);
    var scale = hp.scale;
    if MEAN_LABELLED {
        scale = hp.scale * head_bce_labelled_scale(t, m, k);
    }
    var loss = 0.0;
    if k <= HEAD_WG {
        // `per` invocations share label j, each taking every per-th row; partials reduced after
        let per = HEAD_WG / k;
        let j = t / per;
        var sums = HeadSums();
        if j < k {
            for (var i = t % per; i < m; i += per) {
                let e = i * k + j;
                head_bce_add(e, logits[e], hb_target(i, j), j, scale, &sums);
            }
        }
        loss = sums.loss;
        head_g[t] = sums.db;
        head_u[t] = sums.counts;
    } else {
        // more labels than invocations: each takes whole labels j = t, t + 64, ...
        for (var j = t; j < k; j += HEAD_WG) {
            var sums = HeadSums();
            for (var i = 0u; i < m; i++) {
                let e = i * k + j;
                head_bce_add(e, logits[e], hb_target(i, j), j, scale, &sums);
            }
            loss += sums.loss;
            if HAS_DB { hb_db[j] = sums.db; }
            head_add_counts(j, sums.counts);
        }
    }
    head_bce_finish(t, loss, scale);
}

// ---------------------------------------------------------------- fused linear head step
// linear_head_bce: ONE workgroup of 64 does a whole small-batch training step of a single dense
// output layer (identity activation, BCE) that reads cached trunk features, in place of five
// launches (gather the batch, logits matmul, head_bce, dW matmul): with r_i = head_rows[offset + i],
//   logit_ij = Σ_c feat[r_i, c]·W[j, c] + b_j        (in registers, where the entry is consumed)
//   the loss gradient into hb_dlogits, the loss, the metric counts and db, as head_bce does with
//   the targets read at row r_i (no batch copy)
//   dW[j, c] = Σ_i dlogits_ij · feat[r_i, c]          (after a storage barrier)
// On a CPU adapter those five launches cost more than their arithmetic (each wakes the driver's
// threads); the launcher (src/kernels/loss.rs) bounds m·k·d, and the trainer measures this kernel
// against the separate ones per device and shape before using it. An index ≥ n reads nothing: its
// row counts as unlabelled (zero loss, gradient and counts). Sums run in a fixed order.
//   bindings: 0 hp (uniform), 1 hl_features [n, d] (r), 2 label_targets [n, k] (r),
//             3 pos_weight [k] (r), 4 label_weight [k] (r), 5 hb_dlogits [m, k] (rw),
//             6 hb_loss_acc [1] (rw), 7 hb_counts u32 [k, 4] (rw), 8 hb_db [k] (rw),
//             9 head_rows u32 [total] (r), 10 hl_weight [k, d] (r), 11 hl_bias [k] (r),
//             12 hl_dweight [k, d] (rw)
// Overrides: HAS_POS_WEIGHT, HAS_LABEL_WEIGHT, MEAN_LABELLED (HAS_DB and GATHER_TARGETS are set:
// db is always written, targets are read as head_bce's are with GATHER_TARGETS).

@group(0) @binding(1) var<storage, read> hl_features: array<f32>;
@group(0) @binding(10) var<storage, read> hl_weight: array<f32>;
@group(0) @binding(11) var<storage, read> hl_bias: array<f32>;
@group(0) @binding(12) var<storage, read_write> hl_dweight: array<f32>;

// The data row of batch row i (≥ n: none).
fn hl_row(i: u32) -> u32 {
    return head_rows[hp.offset + i];
}

// The logit of label j at data row r; NaN when there is no such row (its target, hb_target,
// is NaN too: the entry counts as unknown).
fn hl_logit(r: u32, j: u32, n: u32, d: u32) -> f32 {
    if r >= n {
        return loss_nan(r);
    }
    let xb = r * d;
    let wb = j * d;
    // four partial sums: independent FMA chains
    var s = vec4<f32>();
    var c = 0u;
    for (; c + 4u <= d; c += 4u) {
        s += vec4<f32>(hl_features[xb + c], hl_features[xb + c + 1u], hl_features[xb + c + 2u], hl_features[xb + c + 3u])
            * vec4<f32>(hl_weight[wb + c], hl_weight[wb + c + 1u], hl_weight[wb + c + 2u], hl_weight[wb + c + 3u]);
    }
    for (; c < d; c++) {
        s.x += hl_features[xb + c] * hl_weight[wb + c];
    }
    return (s.x + s.y) + (s.z + s.w) + hl_bias[j];
}

@compute @workgroup_size(HEAD_WG)
fn linear_head_bce(@builtin(local_invocation_index) t: u32) {
    let m = head_bound(hp.rows, t);
    let k = head_bound(hp.cols, t);
    let n = head_bound(hp.n, t);
    let d = head_bound(hp.d, t);
    var scale = hp.scale;
    if MEAN_LABELLED {
        scale = hp.scale * head_bce_labelled_scale(t, m, k);
    }
    var loss = 0.0;
    if k <= HEAD_WG {
        let per = HEAD_WG / k;
        let j = t / per;
        var sums = HeadSums();
        if j < k {
            for (var i = t % per; i < m; i += per) {
                head_bce_add(i * k + j, hl_logit(hl_row(i), j, n, d), hb_target(i, j), j, scale, &sums);
            }
        }
        loss = sums.loss;
        head_g[t] = sums.db;
        head_u[t] = sums.counts;
    } else {
        for (var j = t; j < k; j += HEAD_WG) {
            var sums = HeadSums();
            for (var i = 0u; i < m; i++) {
                head_bce_add(i * k + j, hl_logit(hl_row(i), j, n, d), hb_target(i, j), j, scale, &sums);
            }
            loss += sums.loss;
            hb_db[j] = sums.db;
            head_add_counts(j, sums.counts);
        }
    }
    head_bce_finish(t, loss, scale);
    // dW: every entry's gradient is written before any is read
    storageBarrier();
    // four labels at a time: one feature load feeds four sums
    for (var j0 = 0u; j0 < k; j0 += 4u) {
        for (var c = t; c < d; c += HEAD_WG) {
            var s = vec4<f32>();
            for (var i = 0u; i < m; i++) {
                let r = hl_row(i);
                if r < n {
                    let e = i * k + j0;
                    let g = vec4<f32>(
                        hb_dlogits[e],
                        select(0.0, hb_dlogits[min(e + 1u, e + k - j0 - 1u)], j0 + 1u < k),
                        select(0.0, hb_dlogits[min(e + 2u, e + k - j0 - 1u)], j0 + 2u < k),
                        select(0.0, hb_dlogits[min(e + 3u, e + k - j0 - 1u)], j0 + 3u < k),
                    );
                    s += g * hl_features[r * d + c];
                }
            }
            hl_dweight[j0 * d + c] = s.x;
            if j0 + 1u < k { hl_dweight[(j0 + 1u) * d + c] = s.y; }
            if j0 + 2u < k { hl_dweight[(j0 + 2u) * d + c] = s.z; }
            if j0 + 3u < k { hl_dweight[(j0 + 3u) * d + c] = s.w; }
        }
    }
}

// ---------------------------------------------------------------- heads of a multi-task network
// Loss kernels for the heads of a network with several (issue 14). Each has a head weight w
// (the total loss is Σ_t w_t·L_t) and an unknown target that contributes exactly 0 to the loss
// and the gradient (discarded by `select`, never multiplied by a mask). The normaliser N is the
// number of known targets (counted on the GPU first, by count_labelled or count_known_classes),
// or 1 for a sum; the kernel's scale is w/N, so w = 0 gives exact zero gradients.
//   regression_loss      one invocation per row, workgroup 64
//                        bindings: 0 rp (uniform), 1 logits = predictions [m, k] (r),
//                                  2 label_targets [m, k] (r), NaN = unknown,
//                                  3 rg_known u32 [1] (r), 4 rg_loss_rows [m] (rw),
//                                  5 rg_dpred [m, k] (rw)
//   softmax_xent_masked  as softmax_xent, plus binding 5 labelled u32 [1] (r); class
//                        IGNORE_CLASS (0xffffffff, −1 as i32) is unknown: loss 0, gradient 0.
//                        Another class ≥ c is a bad target, as in softmax_xent (NaN loss).
//   count_known_classes  ONE workgroup of 256: labelled_out[0] = #{ classes ≠ IGNORE_CLASS }
//                        bindings: 1 count_classes u32 [n] (r), 2 labelled_out u32 [1] (rw)
// Overrides: REG_KIND (0 MSE, 1 L1, 2 Huber), MEAN_KNOWN (N = the count in binding 3 / 5;
// otherwise the scale is p.scale itself).
// Regression, entry (i, j), e = prediction − target, δ = rp.delta (PyTorch MSELoss, L1Loss,
// HuberLoss(delta)):
//   MSE    l = e²                                    dl/dpred = 2e
//   L1     l = |e|                                   dl/dpred = sign(e)  (0 at e = 0, as torch)
//   Huber  l = e²/2 for |e| < δ, δ·(|e| − δ/2) else  dl/dpred = e for |e| < δ, δ·sign(e) else
//   rg_loss_rows_i = Σ_j l_ij · s, rg_dpred_ij = dl/dpred_ij · s, s = rp.scale (MEAN_KNOWN:
//   rp.scale / max(known, 1)). Predictions of ±1e4 give e² ≈ 1e8: finite in f32.
// Softmax cross-entropy with ignore_index −1 (PyTorch cross_entropy(ignore_index=-1)): the rows
// whose class is not IGNORE_CLASS as in softmax_xent, with scale p.scale (MEAN_KNOWN: p.scale /
// max(known rows, 1)).

struct RegressionParams {
    rows: u32,   // m
    cols: u32,   // k outputs
    scale: f32,  // w, or w/N for a sum over all entries (MEAN_KNOWN divides by the count)
    delta: f32,  // Huber's δ > 0
}

override REG_KIND: u32 = 0u;
override MEAN_KNOWN: bool = false;
const IGNORE_CLASS: u32 = 0xffffffffu;

@group(0) @binding(0) var<uniform> rp: RegressionParams;
@group(0) @binding(3) var<storage, read> rg_known: array<u32>;
@group(0) @binding(4) var<storage, read_write> rg_loss_rows: array<f32>;
@group(0) @binding(5) var<storage, read_write> rg_dpred: array<f32>;

// (loss, dloss/dpred) of error e, unscaled.
fn regression_entry(e: f32) -> vec2<f32> {
    let a = abs(e);
    let s = sign(e);
    if REG_KIND == 1u {
        return vec2<f32>(a, s);
    }
    if REG_KIND == 2u {
        let d = rp.delta;
        if a < d {
            return vec2<f32>(0.5 * e * e, e);
        }
        return vec2<f32>(d * (a - 0.5 * d), d * s);
    }
    return vec2<f32>(e * e, 2.0 * e);
}

@compute @workgroup_size(64)
fn regression_loss(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg, 64u);
    if i >= rp.rows { return; }
    var scale = rp.scale;
    if MEAN_KNOWN {
        scale = rp.scale / f32(max(rg_known[0], 1u));
    }
    let k = rp.cols;
    let base = i * k;
    var row = 0.0;
    for (var j = 0u; j < k; j++) {
        let y = label_targets[base + j];
        let lg = regression_entry(logits[base + j] - y);
        let known = !loss_is_nan(y);
        row += select(0.0, lg.x, known);
        rg_dpred[base + j] = select(0.0, lg.y * scale, known);
    }
    rg_loss_rows[i] = row * scale;
}

@compute @workgroup_size(64)
fn softmax_xent_masked(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg, 64u);
    if i >= p.rows { return; }
    var scale = p.scale;
    if MEAN_KNOWN {
        scale = p.scale / f32(max(labelled[0], 1u));
    }
    let t = class_targets[i];
    // an ignored row is out of range for xent_row, which zeroes its gradient (its NaN loss is
    // replaced by 0 here)
    let l = xent_row(i, t, p.cols, scale);
    loss_rows[i] = select(l, 0.0, t == IGNORE_CLASS);
}

@group(0) @binding(1) var<storage, read> count_classes: array<u32>;

@compute @workgroup_size(256)
fn count_known_classes(@builtin(local_invocation_index) t: u32) {
    let n = p.rows;
    var c = 0u;
    var i = t;
    for (; i + 3u * COUNT_WG < n; i += 4u * COUNT_WG) {
        c += select(1u, 0u, count_classes[i] == IGNORE_CLASS);
        c += select(1u, 0u, count_classes[i + COUNT_WG] == IGNORE_CLASS);
        c += select(1u, 0u, count_classes[i + 2u * COUNT_WG] == IGNORE_CLASS);
        c += select(1u, 0u, count_classes[i + 3u * COUNT_WG] == IGNORE_CLASS);
    }
    for (; i < n; i += COUNT_WG) {
        c += select(1u, 0u, count_classes[i] == IGNORE_CLASS);
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

// ---- Uncertainty weighting of a multi-task network's heads (Kendall, Gal & Cipolla 2018) ----
// The network's loss is Σ_t exp(−s_t)·L_t + s_t, L_t a head's (fixed-weighted) batch loss, s_t
// its learned log-variance. After a head's loss kernel has written dL_t/doutputs and its rows'
// losses (summed into batch_loss[0] by reduce.wgsl's sum), this scales the head's gradient by
// exp(−s_t) and writes dL/ds_t = 1 − exp(−s_t)·L_t (0 for an inactive head: weight 0).
//   uncertainty_scale  workgroup 256, 1-D over the n gradient entries (folded into x/y)
//                      bindings: 1 uw_log_var [heads] (r), 2 uw_batch_loss [1] (r),
//                                3 uw_dlogits [n] (rw), 4 uw_dlog_var [heads] (rw)
// Reference: src/reference/network.rs (loss_and_grads_heads_uncertainty).

struct UncertaintyParams {
    n: u32,       // gradient entries of the head's outputs
    head: u32,    // the head's index t into log_var and dlog_var
    in_loss: u32, // 0: the head is left out of the loss (weight 0)
    _pad: u32,
}

@group(0) @binding(0) var<uniform> up: UncertaintyParams;
@group(0) @binding(1) var<storage, read> uw_log_var: array<f32>;
@group(0) @binding(2) var<storage, read> uw_batch_loss: array<f32>;
@group(0) @binding(3) var<storage, read_write> uw_dlogits: array<f32>;
@group(0) @binding(4) var<storage, read_write> uw_dlog_var: array<f32>;

@compute @workgroup_size(256)
fn uncertainty_scale(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg, 256u);
    let w = exp(-uw_log_var[up.head]);
    if i == 0u {
        uw_dlog_var[up.head] = select(0.0, 1.0 - w * uw_batch_loss[0], up.in_loss != 0u);
    }
    if i >= up.n { return; }
    uw_dlogits[i] = uw_dlogits[i] * w;
}
