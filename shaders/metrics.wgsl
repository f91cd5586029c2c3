// metrics.wgsl — classification counts accumulated on the GPU across the batches of an epoch
// and read once per epoch. Both kernels ADD to their u32 counters (zero them at epoch start);
// integer counts, so the result does not depend on the order invocations run in.
//
// Entry points:
//   argmax_correct   workgroup 256, one invocation per row (1-D, folded into x/y)
//                    bindings: 0 ap (uniform), 1 logits [m, c] f32 (r), 2 targets [m] u32 (r),
//                              3 counts [2] u32 (rw, atomic): correct, total
//                    pred = argmax_j logits[r, j], first index on ties; a NaN counts as the
//                    largest value (first NaN wins), as torch.argmax. counts[0] += #(pred == target),
//                    counts[1] += m. A target ≥ c is never correct but is counted in the total.
//   label_confusion  workgroup 64, one invocation per label looping over the rows in order
//                    bindings: 0 cp (uniform), 1 logits [m, k] f32 (r), 2 targets [m, k] f32 (r),
//                              3 counts [k, 4] u32 (rw): TP, FP, TN, FN
//                    NaN target = unknown, skipped. Predicted positive when
//                    logit ≥ logit_threshold = ln(t / (1 − t)) (host, f64), i.e. σ(logit) ≥ t;
//                    a NaN logit is predicted negative. Actual positive when target ≥ 0.5.
// The entry points declare different variables under the same numbers; WGSL only requires the
// numbers to be unique among the variables one entry point uses.
// NaN is tested on the bits: WGSL lets a compiler assume that floats are never NaN.
// Reference: src/reference/metrics.rs (argmax_correct, label_confusion).

struct ArgmaxParams {
    m: u32,     // rows
    c: u32,     // classes (≥ 1)
    _pad0: u32,
    _pad1: u32,
}

struct ConfusionParams {
    m: u32,                 // rows
    k: u32,                 // labels
    logit_threshold: f32,   // ln(t / (1 − t))
    _pad: u32,
}

fn is_nan_bits(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u;
}

@group(0) @binding(0) var<uniform> ap: ArgmaxParams;
@group(0) @binding(1) var<storage, read> am_logits: array<f32>;
@group(0) @binding(2) var<storage, read> am_targets: array<u32>;
@group(0) @binding(3) var<storage, read_write> am_counts: array<atomic<u32>>;

var<workgroup> wg_correct: atomic<u32>;

@compute @workgroup_size(256)
fn argmax_correct(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    if lid == 0u {
        atomicStore(&wg_correct, 0u);
    }
    workgroupBarrier();
    let r = flat_index(gid, nwg, 256u);
    if r < ap.m {
        let base = r * ap.c;
        var best = 0u;
        var best_v = am_logits[base];
        for (var j = 1u; j < ap.c; j = j + 1u) {
            let x = am_logits[base + j];
            // strictly greater keeps the first of equal values; once best is NaN nothing beats it
            if !is_nan_bits(best_v) && (x > best_v || is_nan_bits(x)) {
                best = j;
                best_v = x;
            }
        }
        if best == am_targets[r] {
            atomicAdd(&wg_correct, 1u);
        }
    }
    workgroupBarrier();
    if lid == 0u {
        let k = atomicLoad(&wg_correct);
        if k > 0u {
            atomicAdd(&am_counts[0], k);
        }
    }
    if r == 0u {
        atomicAdd(&am_counts[1], ap.m);
    }
}

@group(0) @binding(0) var<uniform> cp: ConfusionParams;
@group(0) @binding(1) var<storage, read> lc_logits: array<f32>;
@group(0) @binding(2) var<storage, read> lc_targets: array<f32>;
@group(0) @binding(3) var<storage, read_write> lc_counts: array<u32>;

@compute @workgroup_size(64)
fn label_confusion(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let l = flat_index(gid, nwg, 64u);
    if l >= cp.k { return; }
    var tp = 0u;
    var fp = 0u;
    var tn = 0u;
    var fneg = 0u;
    for (var r = 0u; r < cp.m; r = r + 1u) {
        let i = r * cp.k + l;
        let y = lc_targets[i];
        if is_nan_bits(y) { continue; }
        let x = lc_logits[i];
        let predicted = !is_nan_bits(x) && x >= cp.logit_threshold;
        let actual = y >= 0.5;
        if predicted && actual {
            tp = tp + 1u;
        } else if predicted {
            fp = fp + 1u;
        } else if actual {
            fneg = fneg + 1u;
        } else {
            tn = tn + 1u;
        }
    }
    let o = 4u * l;
    lc_counts[o] = lc_counts[o] + tp;
    lc_counts[o + 1u] = lc_counts[o + 1u] + fp;
    lc_counts[o + 2u] = lc_counts[o + 2u] + tn;
    lc_counts[o + 3u] = lc_counts[o + 3u] + fneg;
}

// ---------------------------------------------------------------- heads of a multi-task network
//   argmax_known     as argmax_correct, for a head whose examples may have no class: a target
//                    IGNORE_CLASS (0xffffffff, −1 as i32) is left out of both counts.
//                    counts[0] += #(pred == target), counts[1] += #(target ≠ IGNORE_CLASS).
//                    bindings as argmax_correct.
//   regression_sums  workgroup 64, one invocation per output column looping over the rows in order
//                    bindings: 0 rsp (uniform), 1 rs_preds [m, k] f32 (r), 2 rs_targets [m, k] f32 (r),
//                              3 rs_sums [k, 2] f32 (rw): Σ|e|, Σe², 4 rs_counts [k] u32 (rw)
//                    over the known (non-NaN) targets, e = prediction − target; ADDS to both.
//                    MAE = Σ|e| / count, RMSE = √(Σe² / count), on the host at the epoch's end.
//                    The f32 sums run in a fixed order (rows in order, then added to the
//                    running value): bit-identical repeats.
// Reference: src/reference/metrics.rs (argmax_known, regression_sums).

const IGNORE_CLASS: u32 = 0xffffffffu;

var<workgroup> wg_known: atomic<u32>;

@compute @workgroup_size(256)
fn argmax_known(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    if lid == 0u {
        atomicStore(&wg_correct, 0u);
        atomicStore(&wg_known, 0u);
    }
    workgroupBarrier();
    let r = flat_index(gid, nwg, 256u);
    if r < ap.m && am_targets[r] != IGNORE_CLASS {
        let base = r * ap.c;
        var best = 0u;
        var best_v = am_logits[base];
        for (var j = 1u; j < ap.c; j = j + 1u) {
            let x = am_logits[base + j];
            if !is_nan_bits(best_v) && (x > best_v || is_nan_bits(x)) {
                best = j;
                best_v = x;
            }
        }
        atomicAdd(&wg_known, 1u);
        if best == am_targets[r] {
            atomicAdd(&wg_correct, 1u);
        }
    }
    workgroupBarrier();
    if lid == 0u {
        let k = atomicLoad(&wg_correct);
        if k > 0u {
            atomicAdd(&am_counts[0], k);
        }
        let n = atomicLoad(&wg_known);
        if n > 0u {
            atomicAdd(&am_counts[1], n);
        }
    }
}

struct RegressionSumsParams {
    m: u32,     // rows
    k: u32,     // output columns
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> rsp: RegressionSumsParams;
@group(0) @binding(1) var<storage, read> rs_preds: array<f32>;
@group(0) @binding(2) var<storage, read> rs_targets: array<f32>;
@group(0) @binding(3) var<storage, read_write> rs_sums: array<f32>;
@group(0) @binding(4) var<storage, read_write> rs_counts: array<u32>;

@compute @workgroup_size(64)
fn regression_sums(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let l = flat_index(gid, nwg, 64u);
    if l >= rsp.k { return; }
    var abs_sum = 0.0;
    var sq_sum = 0.0;
    var n = 0u;
    for (var r = 0u; r < rsp.m; r = r + 1u) {
        let i = r * rsp.k + l;
        let y = rs_targets[i];
        let e = rs_preds[i] - y;
        let known = !is_nan_bits(y);
        abs_sum += select(0.0, abs(e), known);
        sq_sum += select(0.0, e * e, known);
        n += select(0u, 1u, known);
    }
    rs_sums[2u * l] = rs_sums[2u * l] + abs_sum;
    rs_sums[2u * l + 1u] = rs_sums[2u * l + 1u] + sq_sum;
    rs_counts[l] = rs_counts[l] + n;
}
