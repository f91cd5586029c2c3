// optim.wgsl — optimizer steps over a flat parameter range (the trainer's arenas): one invocation
// per parameter, every element independent, so one dispatch updates any number of layers.
//
// Entry points (workgroup 256, 1-D over n elements folded into x/y):
//   sgd           SGD without momentum            bindings: 0 sp (uniform), 1 grad (r), 2 param (rw)
//   sgd_momentum  SGD with a momentum buffer      bindings: 0 sp (uniform), 1 grad (r), 2 param (rw), 3 buf (rw)
//   adam          Adam / AdamW                    bindings: 0 ap (uniform), 1 grad (r), 2 param (rw), 3 m (rw), 4 v (rw)
// The entry points declare different variables under the same numbers; WGSL only requires the
// numbers to be unique among the variables one entry point uses.
//
// Math: PyTorch's single-tensor (non-foreach) torch.optim.SGD / Adam / AdamW, operation by
// operation in the same order, in f32. Every scalar PyTorch computes in Python (f64) — 1−dampening,
// −lr, 1−lr·wd, 1−β1, 1−β2, lr/(1−β1^t), √(1−β2^t) — is computed on the host in f64 and arrives
// here rounded to f32, as PyTorch's kernels receive it.
//   SGD:  g = grad (+ wd·p if wd ≠ 0)
//         momentum: buf = g if t == 1, else buf·momentum + (1−dampening)·g
//                   g = nesterov ? g + momentum·buf : buf
//         p = p + (−lr)·g
//   Adam: wd ≠ 0: AdamW p = p·(1 − lr·wd), Adam g = g + wd·p
//         m = m.lerp(g, w), w = 1−β1: m + w·(g − m) if |w| < 0.5, else g − (g − m)·(1 − w)
//         v = v·β2 + ((1−β2)·g)·g                               (mul_ then addcmul_)
//         p = p + ((−step_size)·m) / (√v / √bc2 + eps)          (addcdiv_), step_size = lr/bc1
// Drivers may contract a multiply-add into an FMA (as PyTorch's vectorised CPU and CUDA kernels
// do), so results agree with PyTorch to an ulp or so per operation, not necessarily bit for bit.
// Reference: src/reference/optim.rs (sgd_step, adam_step).

struct SgdParams {
    n: u32,                    // elements
    step: u32,                 // t ≥ 1; t == 1 initialises the momentum buffer with g
    neg_lr: f32,               // −lr
    weight_decay: f32,         // wd (L2, added to the gradient)
    momentum: f32,
    one_minus_dampening: f32,  // 1 − dampening
    nesterov: u32,             // 0 or 1
    _pad: u32,
}

struct AdamParams {
    n: u32,                    // elements
    step: u32,                 // t ≥ 1 (bias correction is folded into the two fields below)
    neg_step_size: f32,        // −lr / (1 − β1^t)
    bc2_sqrt: f32,             // √(1 − β2^t)
    beta2: f32,
    one_minus_beta1: f32,      // the lerp weight
    one_minus_beta2: f32,
    eps: f32,
    weight_decay: f32,         // Adam: L2 added to the gradient; 0 disables weight decay
    decay_factor: f32,         // AdamW: 1 − lr·wd
    decoupled: u32,            // 1 = AdamW
    _pad: u32,
}

@group(0) @binding(0) var<uniform> sp: SgdParams;
@group(0) @binding(1) var<storage, read> sgd_grad: array<f32>;
@group(0) @binding(2) var<storage, read_write> sgd_param: array<f32>;
@group(0) @binding(3) var<storage, read_write> sgd_buf: array<f32>;

// g = grad (+ wd·p), PyTorch's grad.add(param, alpha=weight_decay).
fn sgd_grad_with_decay(i: u32) -> f32 {
    var g = sgd_grad[i];
    if sp.weight_decay != 0.0 {
        g = g + sp.weight_decay * sgd_param[i];
    }
    return g;
}

@compute @workgroup_size(256)
fn sgd(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg, 256u);
    if i >= sp.n { return; }
    let g = sgd_grad_with_decay(i);
    sgd_param[i] = sgd_param[i] + sp.neg_lr * g;
}

@compute @workgroup_size(256)
fn sgd_momentum(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg, 256u);
    if i >= sp.n { return; }
    var g = sgd_grad_with_decay(i);
    var b: f32;
    if sp.step <= 1u {
        b = g; // torch.clone(grad) on the first step
    } else {
        b = sgd_buf[i] * sp.momentum;
        b = b + sp.one_minus_dampening * g;
    }
    sgd_buf[i] = b;
    if sp.nesterov != 0u {
        g = g + sp.momentum * b;
    } else {
        g = b;
    }
    sgd_param[i] = sgd_param[i] + sp.neg_lr * g;
}

@group(0) @binding(0) var<uniform> ap: AdamParams;
@group(0) @binding(1) var<storage, read> adam_grad: array<f32>;
@group(0) @binding(2) var<storage, read_write> adam_param: array<f32>;
@group(0) @binding(3) var<storage, read_write> adam_m: array<f32>;
@group(0) @binding(4) var<storage, read_write> adam_v: array<f32>;

@compute @workgroup_size(256)
fn adam(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg, 256u);
    if i >= ap.n { return; }
    var g = adam_grad[i];
    var w = adam_param[i];
    if ap.weight_decay != 0.0 {
        if ap.decoupled != 0u {
            w = w * ap.decay_factor;
        } else {
            g = g + ap.weight_decay * w;
        }
    }
    // exp_avg.lerp_(grad, 1 − β1), ATen's lerp with its two branches
    let m0 = adam_m[i];
    let lw = ap.one_minus_beta1;
    var m1: f32;
    if abs(lw) < 0.5 {
        m1 = m0 + lw * (g - m0);
    } else {
        m1 = g - (g - m0) * (1.0 - lw);
    }
    // exp_avg_sq.mul_(β2).addcmul_(grad, grad, value=1 − β2)
    var v1 = adam_v[i] * ap.beta2;
    v1 = v1 + ap.one_minus_beta2 * g * g;
    // denom = (exp_avg_sq.sqrt() / √bc2).add_(eps); param.addcdiv_(exp_avg, denom, value=−step_size)
    let denom = sqrt(v1) / ap.bc2_sqrt + ap.eps;
    w = w + ap.neg_step_size * m1 / denom;
    adam_m[i] = m1;
    adam_v[i] = v1;
    adam_param[i] = w;
}
