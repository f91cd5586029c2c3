// matmul_a_f16n.wgsl — operand A of matmul.wgsl stored as f16, read natively (the device has
// shader-f16; the module starts with `enable f16;`): the same bytes and layout as
// matmul_a_f16.wgsl, the same f32 values (widening an f16 is exact).
@group(0) @binding(1) var<storage, read> a: array<f16>;
@group(0) @binding(5) var<storage, read> a4: array<vec4<f16>>;

fn load_a(row: u32, kk: u32) -> f32 {
    if TRANS_A { return f32(a[kk * p.lda + row]); }
    return f32(a[a_src(row) * p.lda + kk]);
}

fn a_at(row: u32, kk: u32) -> f32 {
    let r = min(row, p.m - 1u);
    let k = min(kk, p.k - 1u);
    var i = a_src(r) * p.lda + k;
    if TRANS_A { i = k * p.lda + r; }
    return select(0.0, f32(a[i]), kk < p.k);
}

fn a_vec(q: u32) -> vec4<f32> {
    return vec4<f32>(a4[q]);
}
