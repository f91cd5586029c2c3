// matmul_b_f16.wgsl — operand B of matmul.wgsl stored as f16, two halves per u32 word (the
// first in the low 16 bits), rows of p.ldb halves; widened to f32 by unpack2x16float (core
// WGSL: every adapter). A vec4 (VEC_B: the row width is a multiple of 4, so p.ldb is the width
// and the f32 layout's vec4 index q is the same) is two words.
@group(0) @binding(2) var<storage, read> b: array<u32>;
@group(0) @binding(6) var<storage, read> b4: array<vec2<u32>>;

// The half at index i of the stored B.
fn b_half(i: u32) -> f32 {
    return unpack2x16float(b[i >> 1u])[i & 1u];
}

fn load_b(kk: u32, col: u32) -> f32 {
    if TRANS_B { return b_half(col * p.ldb + kk); }
    return b_half(b_src(kk) * p.ldb + col);
}

fn b_at(kk: u32, col: u32) -> f32 {
    let cl = min(col, p.n - 1u);
    let k = min(kk, p.k - 1u);
    var i = b_src(k) * p.ldb + cl;
    if TRANS_B { i = cl * p.ldb + k; }
    return select(0.0, b_half(i), kk < p.k);
}

fn b_vec(q: u32) -> vec4<f32> {
    let w = b4[q];
    return vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y));
}
