// matmul.wgsl — C[M, N] = op(A) · op(B) (+ bias[N]) then an activation, f32, row-major.
//
//   op(A) = A [M, K]  or Aᵀ with A stored [K, M]   (TRANS_A)
//   op(B) = B [K, N]  or Bᵀ with B stored [N, K]   (TRANS_B)
// A dense layer needs three forms: forward y = x·Wᵀ (NT), dX = dY·W (NN), dW = dYᵀ·X (TN).
//
// Entry point: matmul_reg4x4. Bindings: 0 params, 1 a (r), 2 b (r), 3 bias (r), 4 c (rw).
// Overrides: TRANS_A, TRANS_B, HAS_BIAS, ACT (see common.wgsl), WG_X, WG_Y (workgroup shape).
//
// Each invocation owns a 4×4 block of C held in 16 registers; no workgroup memory. On lavapipe
// (a CPU, 8 invocations per SIMD register) this is what is fast: with WG_Y = 1 every invocation
// of a workgroup works on the same 4 rows, so the A loads are uniform (one scalar load and a
// broadcast) and only B is gathered; workgroup-memory tiles with barriers are slower there
// (shared/PERFORMANCE.md §3.2). K runs in steps of 4 so each B row segment is read once per step.
// Out-of-range rows and columns are clamped for the loads (always valid memory, no branch in the
// inner loop) and masked for the store.
// Reference: src/reference/mod.rs `matmul`.

struct Params {
    m: u32,
    n: u32,
    k: u32,
    alpha: f32,  // LeakyReLU slope for the epilogue
}

override TRANS_A: bool = false;
override TRANS_B: bool = false;
override HAS_BIAS: bool = false;
override ACT: u32 = 0u;
override WG_X: u32 = 8u;
override WG_Y: u32 = 1u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> c: array<f32>;

fn load_a(row: u32, kk: u32) -> f32 {
    if TRANS_A { return a[kk * p.m + row]; }
    return a[row * p.k + kk];
}

fn load_b(kk: u32, col: u32) -> f32 {
    if TRANS_B { return b[col * p.k + kk]; }
    return b[kk * p.n + col];
}

@compute @workgroup_size(WG_X, WG_Y, 1)
fn matmul_reg4x4(@builtin(global_invocation_id) gid: vec3<u32>) {
    let col0 = gid.x * 4u;
    let row0 = gid.y * 4u;
    if col0 >= p.n || row0 >= p.m { return; }
    // clamped indices for loads
    var r: array<u32, 4>;
    var cc: array<u32, 4>;
    for (var i = 0u; i < 4u; i++) {
        r[i] = min(row0 + i, p.m - 1u);
        cc[i] = min(col0 + i, p.n - 1u);
    }
    var acc: array<vec4<f32>, 4>;   // acc[i] = row row0+i, columns col0..col0+3
    let k4 = p.k & ~3u;
    var kk = 0u;
    for (; kk < k4; kk += 4u) {
        for (var s = 0u; s < 4u; s++) {
            let bv = vec4<f32>(load_b(kk + s, cc[0]), load_b(kk + s, cc[1]), load_b(kk + s, cc[2]), load_b(kk + s, cc[3]));
            acc[0] = fma(vec4<f32>(load_a(r[0], kk + s)), bv, acc[0]);
            acc[1] = fma(vec4<f32>(load_a(r[1], kk + s)), bv, acc[1]);
            acc[2] = fma(vec4<f32>(load_a(r[2], kk + s)), bv, acc[2]);
            acc[3] = fma(vec4<f32>(load_a(r[3], kk + s)), bv, acc[3]);
        }
    }
    for (; kk < p.k; kk++) {
        let bv = vec4<f32>(load_b(kk, cc[0]), load_b(kk, cc[1]), load_b(kk, cc[2]), load_b(kk, cc[3]));
        for (var i = 0u; i < 4u; i++) {
            acc[i] = fma(vec4<f32>(load_a(r[i], kk)), bv, acc[i]);
        }
    }
    var bv = vec4<f32>(0.0);
    if HAS_BIAS {
        bv = vec4<f32>(bias[cc[0]], bias[cc[1]], bias[cc[2]], bias[cc[3]]);
    }
    for (var i = 0u; i < 4u; i++) {
        let row = row0 + i;
        if row >= p.m { break; }
        let v = acc[i] + bv;
        for (var j = 0u; j < 4u; j++) {
            let col = col0 + j;
            if col < p.n {
                c[row * p.n + col] = activate(ACT, v[j], p.alpha);
            }
        }
    }
}
