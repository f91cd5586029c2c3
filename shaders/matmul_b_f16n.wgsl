// matmul_b_f16n.wgsl — operand B of matmul.wgsl stored as f16, read natively (the device has
// shader-f16; the module starts with `enable f16;`): the same bytes and layout as
// matmul_b_f16.wgsl, the same f32 values (widening an f16 is exact).
@group(0) @binding(2) var<storage, read> b: array<f16>;
@group(0) @binding(6) var<storage, read> b4: array<vec4<f16>>;

fn load_b(kk: u32, col: u32) -> f32 {
    if TRANS_B { return f32(b[col * p.ldb + kk]); }
    return f32(b[b_src(kk) * p.ldb + col]);
}

fn b_at(kk: u32, col: u32) -> f32 {
    let cl = min(col, p.n - 1u);
    let k = min(kk, p.k - 1u);
    var i = b_src(k) * p.ldb + cl;
    if TRANS_B { i = cl * p.ldb + k; }
    return select(0.0, f32(b[i]), kk < p.k);
}

fn b_vec(q: u32) -> vec4<f32> {
    return vec4<f32>(b4[q]);
}
