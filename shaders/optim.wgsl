// optim.wgsl — optimizer steps over flat parameter ranges (the trainer's arenas): one invocation
// per parameter, every element independent, so one dispatch updates any number of layers. The
// `_2` forms update two ranges in different buffers (a network's head arena and its trainable
// trunk suffix) in the same dispatch, each at its own learning rate (PyTorch's param groups):
// invocations [0, n) take range a, [n, n + n_b) range b.
//
// Entry points (workgroup 256, 1-D over n (+ n_b) elements folded into x/y); binding 0 is the
// uniform (sp / ap), then:
//   sgd             SGD without momentum          1 grad (r), 2 param (rw)
//   sgd_momentum    SGD with a momentum buffer    1 grad (r), 2 param (rw), 3 buf (rw)
//   adam            Adam / AdamW                  1 grad (r), 2 param (rw), 3 m (rw), 4 v (rw)
//   sgd_2           two ranges                    1 grad, 2 param, 3 grad_b, 4 param_b
//   sgd_momentum_2  two ranges                    1 grad, 2 param, 3 buf, 4 grad_b, 5 param_b, 6 buf_b
//   adam_2          two ranges                    1 grad, 2 param, 3 m, 4 v, 5 grad_b, 6 param_b, 7 m_b, 8 v_b
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
    n: u32,                    // elements of range a
    step: u32,                 // t ≥ 1; t == 1 initialises the momentum buffer with g
    neg_lr: f32,               // −lr of range a
    weight_decay: f32,         // wd (L2, added to the gradient)
    momentum: f32,
    one_minus_dampening: f32,  // 1 − dampening
    nesterov: u32,             // 0 or 1
    n_b: u32,                  // elements of range b (the _2 forms)
    neg_lr_b: f32,             // −lr of range b
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

struct AdamParams {
    n: u32,                    // elements of range a
    step: u32,                 // t ≥ 1 (bias correction is folded into the step sizes)
    neg_step_size: f32,        // −lr / (1 − β1^t), range a
    bc2_sqrt: f32,             // √(1 − β2^t)
    beta2: f32,
    one_minus_beta1: f32,      // the lerp weight
    one_minus_beta2: f32,
    eps: f32,
    weight_decay: f32,         // Adam: L2 added to the gradient; 0 disables weight decay
    decay_factor: f32,         // AdamW: 1 − lr·wd, range a
    decoupled: u32,            // 1 = AdamW
    n_b: u32,                  // elements of range b (the _2 form)
    neg_step_size_b: f32,      // −lr_b / (1 − β1^t)
    decay_factor_b: f32,       // 1 − lr_b·wd
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> sp: SgdParams;
@group(0) @binding(1) var<storage, read> sgd_grad: array<f32>;
@group(0) @binding(2) var<storage, read_write> sgd_param: array<f32>;
@group(0) @binding(3) var<storage, read_write> sgd_buf: array<f32>;
// sgd_2's range b
@group(0) @binding(3) var<storage, read> sgd_grad_b: array<f32>;
@group(0) @binding(4) var<storage, read_write> sgd_param_b: array<f32>;
// sgd_momentum_2's range b
@group(0) @binding(4) var<storage, read> sgdm_grad_b: array<f32>;
@group(0) @binding(5) var<storage, read_write> sgdm_param_b: array<f32>;
@group(0) @binding(6) var<storage, read_write> sgdm_buf_b: array<f32>;

// One parameter's SGD step: returns (new param, new momentum buffer; `buf` itself without
// momentum).
fn sgd_update(grad: f32, param: f32, buf: f32, neg_lr: f32, with_momentum: bool) -> vec2<f32> {
    // g = grad (+ wd·p), PyTorch's grad.add(param, alpha=weight_decay)
    var g = grad;
    if sp.weight_decay != 0.0 {
        g = g + sp.weight_decay * param;
    }
    var b = buf;
    if with_momentum {
        if sp.step <= 1u {
            b = g; // torch.clone(grad) on the first step
        } else {
            b = buf * sp.momentum;
            b = b + sp.one_minus_dampening * g;
        }
        if sp.nesterov != 0u {
            g = g + sp.momentum * b;
        } else {
            g = b;
        }
    }
    return vec2<f32>(param + neg_lr * g, b);
}

@compute @workgroup_size(256)
fn sgd(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg, 256u);
    if i >= sp.n { return; }
    sgd_param[i] = sgd_update(sgd_grad[i], sgd_param[i], 0.0, sp.neg_lr, false).x;
}

@compute @workgroup_size(256)
fn sgd_momentum(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg, 256u);
    if i >= sp.n { return; }
    let u = sgd_update(sgd_grad[i], sgd_param[i], sgd_buf[i], sp.neg_lr, true);
    sgd_buf[i] = u.y;
    sgd_param[i] = u.x;
}

@compute @workgroup_size(256)
fn sgd_2(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg, 256u);
    if i < sp.n {
        sgd_param[i] = sgd_update(sgd_grad[i], sgd_param[i], 0.0, sp.neg_lr, false).x;
    } else if i - sp.n < sp.n_b {
        let j = i - sp.n;
        sgd_param_b[j] = sgd_update(sgd_grad_b[j], sgd_param_b[j], 0.0, sp.neg_lr_b, false).x;
    }
}

@compute @workgroup_size(256)
fn sgd_momentum_2(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg, 256u);
    if i < sp.n {
        let u = sgd_update(sgd_grad[i], sgd_param[i], sgd_buf[i], sp.neg_lr, true);
        sgd_buf[i] = u.y;
        sgd_param[i] = u.x;
    } else if i - sp.n < sp.n_b {
        let j = i - sp.n;
        let u = sgd_update(sgdm_grad_b[j], sgdm_param_b[j], sgdm_buf_b[j], sp.neg_lr_b, true);
        sgdm_buf_b[j] = u.y;
        sgdm_param_b[j] = u.x;
    }
}

@group(0) @binding(0) var<uniform> ap: AdamParams;
@group(0) @binding(1) var<storage, read> adam_grad: array<f32>;
@group(0) @binding(2) var<storage, read_write> adam_param: array<f32>;
@group(0) @binding(3) var<storage, read_write> adam_m: array<f32>;
@group(0) @binding(4) var<storage, read_write> adam_v: array<f32>;
// adam_2's range b
@group(0) @binding(5) var<storage, read> adam_grad_b: array<f32>;
@group(0) @binding(6) var<storage, read_write> adam_param_b: array<f32>;
@group(0) @binding(7) var<storage, read_write> adam_m_b: array<f32>;
@group(0) @binding(8) var<storage, read_write> adam_v_b: array<f32>;

// One parameter's Adam / AdamW step: returns (new param, new m, new v).
fn adam_update(grad: f32, param: f32, m: f32, v: f32, neg_step_size: f32, decay_factor: f32) -> vec3<f32> {
    var g = grad;
    var w = param;
    if ap.weight_decay != 0.0 {
        if ap.decoupled != 0u {
            w = w * decay_factor;
        } else {
            g = g + ap.weight_decay * w;
        }
    }
    // exp_avg.lerp_(grad, 1 − β1), ATen's lerp with its two branches
    let lw = ap.one_minus_beta1;
    var m1: f32;
    if abs(lw) < 0.5 {
        m1 = m + lw * (g - m);
    } else {
        m1 = g - (g - m) * (1.0 - lw);
    }
    // exp_avg_sq.mul_(β2).addcmul_(grad, grad, value=1 − β2)
    var v1 = v * ap.beta2;
    v1 = v1 + ap.one_minus_beta2 * g * g;
    // denom = (exp_avg_sq.sqrt() / √bc2).add_(eps); param.addcdiv_(exp_avg, denom, value=−step_size)
    let denom = sqrt(v1) / ap.bc2_sqrt + ap.eps;
    w = w + neg_step_size * m1 / denom;
    return vec3<f32>(w, m1, v1);
}

@compute @workgroup_size(256)
fn adam(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg, 256u);
    if i >= ap.n { return; }
    let u = adam_update(adam_grad[i], adam_param[i], adam_m[i], adam_v[i], ap.neg_step_size, ap.decay_factor);
    adam_m[i] = u.y;
    adam_v[i] = u.z;
    adam_param[i] = u.x;
}

@compute @workgroup_size(256)
fn adam_2(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg, 256u);
    if i < ap.n {
        let u = adam_update(adam_grad[i], adam_param[i], adam_m[i], adam_v[i], ap.neg_step_size, ap.decay_factor);
        adam_m[i] = u.y;
        adam_v[i] = u.z;
        adam_param[i] = u.x;
    } else if i - ap.n < ap.n_b {
        let j = i - ap.n;
        let u = adam_update(adam_grad_b[j], adam_param_b[j], adam_m_b[j], adam_v_b[j], ap.neg_step_size_b, ap.decay_factor_b);
        adam_m_b[j] = u.y;
        adam_v_b[j] = u.z;
        adam_param_b[j] = u.x;
    }
}
