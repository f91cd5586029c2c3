// elementwise.wgsl — bias add and activations, forward and backward.
//
// Entry points (workgroup 256, 1-D over n elements folded into x/y):
//   bias_add      x[r, c] += bias[c]                          bindings: 1 bias (r), 2 x (rw)
//   act_forward   y = f(x)                                    bindings: 1 x (r),    2 y (rw)
//   act_backward  dx = dy · f'(in)                            bindings: 1 dy (r), 2 in (r), 3 dx (rw)
//                 `in` is the pre-activation z, or the output a when FROM_OUTPUT (not for GELU)
//   add_act       y = f(a + b)  (a residual connection)       bindings: 1 a (r), 2 b (r), 3 y (rw)
//   add_assign    y += x  (a second gradient into a value)    bindings: 1 x (r),    2 y (rw)
//   copy          y = x   (a first gradient into a value)     bindings: 1 x (r),    2 y (rw)
// Overrides: ACT (activation code, see common.wgsl), FROM_OUTPUT.
// The entry points declare different bindings under the same numbers; WGSL only requires the
// numbers to be unique among the variables one entry point uses.
// Reference: src/reference/mod.rs (bias_add, activate, activate_grad).

struct Params {
    n: u32,       // elements
    cols: u32,    // row length for bias_add
    alpha: f32,   // LeakyReLU slope
    _pad: u32,
}

override ACT: u32 = 0u;
override FROM_OUTPUT: bool = false;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> in0: array<f32>;
@group(0) @binding(2) var<storage, read_write> io1: array<f32>;

@compute @workgroup_size(256)
fn bias_add(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg, 256u);
    if i >= p.n { return; }
    io1[i] = io1[i] + in0[i % p.cols];
}

@compute @workgroup_size(256)
fn act_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg, 256u);
    if i >= p.n { return; }
    io1[i] = activate(ACT, in0[i], p.alpha);
}

// dx = dy · f'(in)
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> act_in: array<f32>;
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;

@compute @workgroup_size(256)
fn act_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg, 256u);
    if i >= p.n { return; }
    let v = act_in[i];
    var g: f32;
    if FROM_OUTPUT {
        g = activate_grad_from_output(ACT, v, p.alpha);
    } else {
        g = activate_grad_from_input(ACT, v, p.alpha);
    }
    dx[i] = dy[i] * g;
}

@compute @workgroup_size(256)
fn add_assign(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg, 256u);
    if i >= p.n { return; }
    io1[i] = io1[i] + in0[i];
}

@compute @workgroup_size(256)
fn copy(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg, 256u);
    if i >= p.n { return; }
    io1[i] = in0[i];
}

// y = f(a + b)
@group(0) @binding(1) var<storage, read> sum_a: array<f32>;
@group(0) @binding(2) var<storage, read> sum_b: array<f32>;
@group(0) @binding(3) var<storage, read_write> sum_y: array<f32>;

@compute @workgroup_size(256)
fn add_act(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg, 256u);
    if i >= p.n { return; }
    sum_y[i] = activate(ACT, sum_a[i] + sum_b[i], p.alpha);
}
