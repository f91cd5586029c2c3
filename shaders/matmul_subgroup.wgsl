// matmul_subgroup.wgsl — matmul variants that need subgroup operations. Compiled only on devices
// with Features::SUBGROUP (family MatmulSubgroup), appended to matmul.wgsl, whose bindings,
// overrides and helpers it uses; see the header there.

// ---- matmul_sg32x8 (needs subgroups of ≥ 8 invocations holding the whole workgroup) --------------
// As the block variants, but each of the 8 invocations loads one row of A per 8 rows and the
// others get it by subgroupBroadcast (two instructions on lavapipe), so A costs an eighth of the
// loads and the block can grow to 32 rows × 8 columns for the same registers.
// op(A)[row, kk..kk+3]; `stored` = a_src(min(row, M − 1)), computed once before the K loop.
fn a_row4(row: u32, stored: u32, kk: u32) -> vec4<f32> {
    if VEC_A && !TRANS_A {
        return a_vec(stored * (p.k >> 2u) + (kk >> 2u));
    }
    return vec4<f32>(a_at(row, kk), a_at(row, kk + 1u), a_at(row, kk + 2u), a_at(row, kk + 3u));
}
fn rows_lo(v: vec4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(subgroupBroadcast(v, 0u), subgroupBroadcast(v, 1u), subgroupBroadcast(v, 2u), subgroupBroadcast(v, 3u));
}
fn rows_hi(v: vec4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(subgroupBroadcast(v, 4u), subgroupBroadcast(v, 5u), subgroupBroadcast(v, 6u), subgroupBroadcast(v, 7u));
}

@compute @workgroup_size(8, 1, 1)
fn matmul_sg32x8(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
                 @builtin(subgroup_invocation_id) sid: u32) {
    let r0 = wg.y * 32u;
    let c0 = wg.x * 64u + lid.x * 4u;
    let c1 = c0 + 32u;
    var acc00: mat4x4<f32>; var acc01: mat4x4<f32>; var acc10: mat4x4<f32>; var acc11: mat4x4<f32>;
    var acc20: mat4x4<f32>; var acc21: mat4x4<f32>; var acc30: mat4x4<f32>; var acc31: mat4x4<f32>;
    var acc40: mat4x4<f32>; var acc41: mat4x4<f32>; var acc50: mat4x4<f32>; var acc51: mat4x4<f32>;
    var acc60: mat4x4<f32>; var acc61: mat4x4<f32>; var acc70: mat4x4<f32>; var acc71: mat4x4<f32>;
    let last = p.m - 1u;
    let s0 = a_src(min(r0 + sid, last));
    let s1 = a_src(min(r0 + 8u + sid, last));
    let s2 = a_src(min(r0 + 16u + sid, last));
    let s3 = a_src(min(r0 + 24u + sid, last));
    for (var kk = 0u; kk < p.k; kk += 4u) {
        let b0 = b_blk(kk, c0);
        let b1 = b_blk(kk, c1);
        var av = a_row4(r0 + sid, s0, kk);
        var ab = rows_lo(av);
        acc00 += b0 * ab; acc01 += b1 * ab;
        ab = rows_hi(av);
        acc10 += b0 * ab; acc11 += b1 * ab;
        av = a_row4(r0 + 8u + sid, s1, kk);
        ab = rows_lo(av);
        acc20 += b0 * ab; acc21 += b1 * ab;
        ab = rows_hi(av);
        acc30 += b0 * ab; acc31 += b1 * ab;
        av = a_row4(r0 + 16u + sid, s2, kk);
        ab = rows_lo(av);
        acc40 += b0 * ab; acc41 += b1 * ab;
        ab = rows_hi(av);
        acc50 += b0 * ab; acc51 += b1 * ab;
        av = a_row4(r0 + 24u + sid, s3, kk);
        ab = rows_lo(av);
        acc60 += b0 * ab; acc61 += b1 * ab;
        ab = rows_hi(av);
        acc70 += b0 * ab; acc71 += b1 * ab;
    }
    for (var row = r0; row < min(r0 + 32u, p.m); row++) {
        store_row(acc00[0], row, c0);
        store_row(acc01[0], row, c1);
        acc00 = up(acc00, acc10[0]); acc01 = up(acc01, acc11[0]); acc10 = up(acc10, acc20[0]); acc11 = up(acc11, acc21[0]);
        acc20 = up(acc20, acc30[0]); acc21 = up(acc21, acc31[0]); acc30 = up(acc30, acc40[0]); acc31 = up(acc31, acc41[0]);
        acc40 = up(acc40, acc50[0]); acc41 = up(acc41, acc51[0]); acc50 = up(acc50, acc60[0]); acc51 = up(acc51, acc61[0]);
        acc60 = up(acc60, acc70[0]); acc61 = up(acc61, acc71[0]); acc70 = up(acc70, zero4); acc71 = up(acc71, zero4);
    }
}

// ---- matmul_sgtall32x4 / matmul_sgwide4x32 (need subgroups of ≥ 8 holding the whole workgroup) ----
// As matmul_tall32x4 / matmul_wide4x32, for a small head's narrow products, where all 8
// invocations of a workgroup need the same block of one operand: B in the tall NT form (the
// forward product, B = W [N, K]), A in the wide TN form (dW = dYᵀ·X, A = dY [K, M]). Lane l loads
// that operand's vec4 at k-step l — one load gives eight k-steps of the block — and the others get
// it by subgroupBroadcast, instead of every lane loading four vec4s per k-step. Other forms (or
// operands not read as vec4s) load per lane, as the plain variants do.
// The 4×4 block m[s][j] = lane j's v[s] (lanes_hi: lane 4 + j's).
fn lanes_lo(v: vec4<f32>) -> mat4x4<f32> {  // m[s][j] = lane j's v[s]
    return transpose(mat4x4<f32>(subgroupBroadcast(v, 0u), subgroupBroadcast(v, 1u), subgroupBroadcast(v, 2u), subgroupBroadcast(v, 3u)));
}
fn lanes_hi(v: vec4<f32>) -> mat4x4<f32> {  // m[s][j] = lane (4 + j)'s v[s]
    return transpose(mat4x4<f32>(subgroupBroadcast(v, 4u), subgroupBroadcast(v, 5u), subgroupBroadcast(v, 6u), subgroupBroadcast(v, 7u)));
}

@compute @workgroup_size(8, 1, 1)
fn matmul_sgtall32x4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
                     @builtin(subgroup_invocation_id) sid: u32) {
    let r0 = wg.y * 32u + lid.x * 4u;
    let c0 = wg.x * 4u;
    let ra = a_rows(r0);
    var acc: mat4x4<f32>;
    if VEC_B && TRANS_B {
        let s = p.k >> 2u;
        let col = min(c0 + (sid & 3u), p.n - 1u);
        for (var kk = 0u; kk < p.k; kk += 8u) {
            let v = b_vec(col * s + min((kk >> 2u) + (sid >> 2u), s - 1u));
            acc += lanes_lo(v) * a_blk(r0, ra, kk);
            if kk + 4u < p.k {
                acc += lanes_hi(v) * a_blk(r0, ra, kk + 4u);
            }
        }
    } else {
        for (var kk = 0u; kk < p.k; kk += 4u) {
            acc += b_blk(kk, c0) * a_blk(r0, ra, kk);
        }
    }
    store_blk(acc, r0, c0);
}

@compute @workgroup_size(8, 1, 1)
fn matmul_sgwide4x32(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
                     @builtin(subgroup_invocation_id) sid: u32) {
    let r0 = wg.y * 4u;
    let c0 = wg.x * 32u + lid.x * 4u;
    let ra = a_rows(r0);
    var acc: mat4x4<f32>;
    if VEC_A && TRANS_A {
        // Aᵀ [K, M], M % 4 == 0: op(A)'s rows r0..r0+3 at k-step kk are one vec4
        let sm = p.m >> 2u;
        let q = min(r0, p.m - 4u) >> 2u;
        for (var kk = 0u; kk < p.k; kk += 8u) {
            let v = a_vec(min(kk + sid, p.k - 1u) * sm + q);
            acc += b_blk(kk, c0) * lanes_lo(v);
            if kk + 4u < p.k {
                acc += b_blk(kk + 4u, c0) * lanes_hi(v);
            }
        }
    } else {
        for (var kk = 0u; kk < p.k; kk += 4u) {
            acc += b_blk(kk, c0) * a_blk(r0, ra, kk);
        }
    }
    store_blk(acc, r0, c0);
}
