// matmul_a_f32.wgsl — operand A of matmul.wgsl stored as f32 (see the header there).
@group(0) @binding(1) var<storage, read> a: array<f32>;
// The same buffer as a, read 16 bytes at a time (block variants with VEC_A).
@group(0) @binding(5) var<storage, read> a4: array<vec4<f32>>;

fn load_a(row: u32, kk: u32) -> f32 {
    if TRANS_A { return a[kk * p.m + row]; }
    return a[a_src(row) * p.k + kk];
}

// op(A)[row, kk], row clamped into range, 0 for kk ≥ K (so K needs no tail loop).
fn a_at(row: u32, kk: u32) -> f32 {
    let r = min(row, p.m - 1u);
    let k = min(kk, p.k - 1u);
    var i = a_src(r) * p.k + k;
    if TRANS_A { i = k * p.m + r; }
    return select(0.0, a[i], kk < p.k);
}

fn a_vec(q: u32) -> vec4<f32> {
    return a4[q];
}
