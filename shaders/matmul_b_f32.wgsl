// matmul_b_f32.wgsl — operand B of matmul.wgsl stored as f32 (see the header there).
@group(0) @binding(2) var<storage, read> b: array<f32>;
// The same buffer as b, read 16 bytes at a time (block variants with VEC_B).
@group(0) @binding(6) var<storage, read> b4: array<vec4<f32>>;

fn load_b(kk: u32, col: u32) -> f32 {
    if TRANS_B { return b[col * p.k + kk]; }
    return b[b_src(kk) * p.n + col];
}

// op(B)[kk, col], col clamped into range, 0 for kk ≥ K.
fn b_at(kk: u32, col: u32) -> f32 {
    let cl = min(col, p.n - 1u);
    let k = min(kk, p.k - 1u);
    var i = b_src(k) * p.n + cl;
    if TRANS_B { i = cl * p.k + k; }
    return select(0.0, b[i], kk < p.k);
}

fn b_vec(q: u32) -> vec4<f32> {
    return b4[q];
}
