// matmul_a_f16.wgsl — operand A of matmul.wgsl stored as f16, two halves per u32 word (the
// first in the low 16 bits), rows of p.lda halves; widened to f32 by unpack2x16float (core
// WGSL: every adapter). A vec4 (VEC_A: the row width is a multiple of 4, so p.lda is the width
// and the f32 layout's vec4 index q is the same) is two words.
@group(0) @binding(1) var<storage, read> a: array<u32>;
@group(0) @binding(5) var<storage, read> a4: array<vec2<u32>>;

// The half at index i of the stored A.
fn a_half(i: u32) -> f32 {
    return unpack2x16float(a[i >> 1u])[i & 1u];
}

fn load_a(row: u32, kk: u32) -> f32 {
    if TRANS_A { return a_half(kk * p.lda + row); }
    return a_half(a_src(row) * p.lda + kk);
}

fn a_at(row: u32, kk: u32) -> f32 {
    let r = min(row, p.m - 1u);
    let k = min(kk, p.k - 1u);
    var i = a_src(r) * p.lda + k;
    if TRANS_A { i = k * p.lda + r; }
    return select(0.0, a_half(i), kk < p.k);
}

fn a_vec(q: u32) -> vec4<f32> {
    let w = a4[q];
    return vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y));
}
