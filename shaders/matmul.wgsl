// matmul.wgsl — C[M, N] = op(A) · op(B) (+ bias[N]) then an activation, f32, row-major.
//
//   op(A) = A [M, K]  or Aᵀ with A stored [K, M]   (TRANS_A)
//   op(B) = B [K, N]  or Bᵀ with B stored [N, K]   (TRANS_B)
// A dense layer needs three forms: forward y = x·Wᵀ (NT), dX = dY·W (NN), dW = dYᵀ·X (TN).
//
// Entry points (ranked variants; src/kernels/autotune.rs measures them per adapter and shape
// class, src/kernels/matmul.rs names and launches them). Every one is correct for any M, N, K
// and every transpose form:
//   matmul_block16x16 lavapipe: 8 invocations, each a 16×16 block of C; vec4 loads.
//   matmul_block8x8   lavapipe: the same with 8×8 blocks (smaller tiles, a fifth of the JIT time).
//   matmul_tall32x4   8 invocations of 4×4 blocks down M (32 × 4): outputs with few columns.
//   matmul_wide4x32   the same along N (4 × 32): outputs with few rows.
//   matmul_reg4x4     the simple baseline: 4×4 per invocation, scalar loads.
//   matmul_tile64     real GPUs: 64×64 tile per 256 invocations, K steps of 16 through
//                     workgroup memory, 4×4 per invocation.
// Bindings: 0 params, 1 a (r), 2 b (r), 3 bias (r), 4 c (rw); the block variants also bind the
// same A and B buffers again at 5 and 6 as vec4 arrays (a4, b4; naga rejects two variables on one
// binding in an entry point). The host binds a 16-byte stand-in there for an operand under 4 elements.
// Binding 7, rows u32 (r): with GATHER_A, op(A)'s row i is row rows[offset + i] of the stored A
// [n, K] (A not transposed); with GATHER_B, op(B)'s row kk is row rows[offset + kk] of the stored B
// [n, N] (B not transposed). A training step reads its batch of the data set (or of cached
// features) this way, in place, instead of copying it out first: the forward product of the
// first layer gathers A, its weight gradient dW = dYᵀ·X gathers B. The offset is set per step.
// Without either, any buffer is bound there and never read.
// Operand storage: this file reads the operands only through load_a / load_b (scalars), a_at /
// b_at (clamped scalars) and a_vec / b_vec (vec4 q of the operand taken as vec4s), which the
// operand parts declare with bindings 1, 5 (A) and 2, 6 (B); src/kernels/source.rs puts one A part
// and one B part before this file: matmul_a_f32.wgsl (f32, as above), matmul_a_f16.wgsl (f16
// stored two per u32, low half first, widened with unpack2x16float: every adapter) and
// matmul_a_f16n.wgsl (the same bytes as array<f16>, where the device has shader-f16); likewise
// for B. An f16 operand's stored rows hold p.lda / p.ldb halves (its width rounded up to even,
// each row starting on a word); the f32 parts use the widths themselves. Accumulation is f32.
// Overrides: TRANS_A, TRANS_B, HAS_BIAS, ACT (see common.wgsl); WG_X, WG_Y (reg4x4's workgroup);
// VEC_A, VEC_B (block variants: load that operand as vec4; the host sets it when the operand's
// contiguous dimension and K are multiples of 4, else 4×4 blocks are gathered element by element).
//
// Why these shapes (shared/PERFORMANCE.md §3.2, and the JIT code read with gdb): lavapipe runs 8
// invocations per SIMD register and turns every load inside a loop into a loop over the 8 lanes
// (≈ 40 instructions per lane for a vec4, uniform address or not), while an FMA is 2 instructions.
// So the kernel that wins holds the biggest block of C in registers per load: a 16×16 block costs
// 8 vec4 loads per 4 k-steps for 1024 FMAs, the 4×4 of reg4x4 8 scalar loads per k-step for 16.
// (Bigger blocks gain little and take seconds to JIT. Sharing A's rows across the 8 invocations
// with subgroupBroadcast is matmul_subgroup.wgsl: a module of its own, because a module using
// subgroups fails validation on devices without them (llvmpipe GL).)
// Register arrays must be indexed by constants (loops over them become scratch memory there),
// hence the written-out accumulators. Workgroup memory with barriers is slow on lavapipe (each
// barrier is a coroutine switch) and is what real GPUs need: that is matmul_tile64.
// Reference: src/reference/mod.rs `matmul`.

struct Params {
    m: u32,
    n: u32,
    k: u32,
    alpha: f32,   // LeakyReLU slope for the epilogue
    offset: u32,  // GATHER_A / GATHER_B: the batch's first position in `rows`
    lda: u32,     // f16 A: halves per stored row of A (K, or M with TRANS_A, rounded up to even)
    ldb: u32,     // f16 B: halves per stored row of B (N, or K with TRANS_B, rounded up to even)
    _pad2: u32,
}

override TRANS_A: bool = false;
override TRANS_B: bool = false;
override HAS_BIAS: bool = false;
override ACT: u32 = 0u;
override WG_X: u32 = 8u;
override WG_Y: u32 = 1u;
override VEC_A: bool = false;
override VEC_B: bool = false;
override GATHER_A: bool = false;
override GATHER_B: bool = false;

@group(0) @binding(0) var<uniform> p: Params;
// Bindings 1, 2, 5, 6 (the operands) and their loaders are declared by the operand parts.
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> c: array<f32>;
@group(0) @binding(7) var<storage, read> rows: array<u32>;

// The stored row of A holding op(A)'s row `row` (A not transposed).
fn a_src(row: u32) -> u32 {
    if GATHER_A { return rows[p.offset + row]; }
    return row;
}

// The stored row of B holding op(B)'s row `kk` (B not transposed).
fn b_src(kk: u32) -> u32 {
    if GATHER_B { return rows[p.offset + kk]; }
    return kk;
}


// ---- matmul_reg4x4 ------------------------------------------------------------------------
// Each invocation owns a 4×4 block of C held in 16 registers; no workgroup memory. K runs in
// steps of 4 so each B row segment is read once per step. Out-of-range rows and columns are
// clamped for the loads (always valid memory, no branch in the inner loop) and masked for the store.
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

// ---- helpers of the block and tile variants -------------------------------------------------

// The stored rows of op(A)'s rows r0..r0+3, clamped into range (A not transposed). Computed once,
// before the K loop: with GATHER_A each is a load from `rows`, which the loop would otherwise
// repeat every step (lavapipe does not hoist it).
fn a_rows(r0: u32) -> vec4<u32> {
    let last = p.m - 1u;
    return vec4<u32>(a_src(min(r0, last)), a_src(min(r0 + 1u, last)), a_src(min(r0 + 2u, last)), a_src(min(r0 + 3u, last)));
}

// A 4×4 block of op(A): m[i][s] = op(A)[r0 + i, kk + s]. r0 is a multiple of 4; ra = a_rows(r0).
fn a_blk(r0: u32, ra: vec4<u32>, kk: u32) -> mat4x4<f32> {
    if VEC_A {
        if TRANS_A {  // M % 4 == 0: rows are contiguous; a block past M is clamped (never stored)
            let s = p.m >> 2u;
            let q = kk * s + (min(r0, p.m - 4u) >> 2u);
            return transpose(mat4x4<f32>(a_vec(q), a_vec(q + s), a_vec(q + 2u * s), a_vec(q + 3u * s)));
        }
        let s = p.k >> 2u;  // K % 4 == 0: k is contiguous
        let q = kk >> 2u;
        return mat4x4<f32>(a_vec(ra.x * s + q), a_vec(ra.y * s + q), a_vec(ra.z * s + q), a_vec(ra.w * s + q));
    }
    var m: mat4x4<f32>;
    for (var i = 0u; i < 4u; i++) {
        m[i] = vec4<f32>(a_at(r0 + i, kk), a_at(r0 + i, kk + 1u), a_at(r0 + i, kk + 2u), a_at(r0 + i, kk + 3u));
    }
    return m;
}

// A 4×4 block of op(B): m[s][j] = op(B)[kk + s, c0 + j]. c0 is a multiple of 4.
fn b_blk(kk: u32, c0: u32) -> mat4x4<f32> {
    if VEC_B {
        if TRANS_B {  // K % 4 == 0: k is contiguous
            let s = p.k >> 2u;
            let q = kk >> 2u;
            let last = p.n - 1u;
            return transpose(mat4x4<f32>(b_vec(min(c0, last) * s + q), b_vec(min(c0 + 1u, last) * s + q), b_vec(min(c0 + 2u, last) * s + q),
                                         b_vec(min(c0 + 3u, last) * s + q)));
        }
        let s = p.n >> 2u;  // N % 4 == 0: columns are contiguous
        let q = min(c0, p.n - 4u) >> 2u;
        return mat4x4<f32>(b_vec(b_src(kk) * s + q), b_vec(b_src(kk + 1u) * s + q), b_vec(b_src(kk + 2u) * s + q), b_vec(b_src(kk + 3u) * s + q));
    }
    var m: mat4x4<f32>;
    for (var s = 0u; s < 4u; s++) {
        m[s] = vec4<f32>(b_at(kk + s, c0), b_at(kk + s, c0 + 1u), b_at(kk + s, c0 + 2u), b_at(kk + s, c0 + 3u));
    }
    return m;
}

// Stores v = C[row, c0..c0+3] through the epilogue, skipping columns outside C.
fn store_row(v: vec4<f32>, row: u32, c0: u32) {
    for (var j = 0u; j < 4u; j++) {
        let col = c0 + j;
        if col < p.n {
            var x = v[j];
            if HAS_BIAS { x += bias[col]; }
            c[row * p.n + col] = activate(ACT, x, p.alpha);
        }
    }
}

// Stores acc (acc[i][j] = C[r0 + i, c0 + j]) through the epilogue, skipping what lies outside C.
fn store_blk(acc: mat4x4<f32>, r0: u32, c0: u32) {
    for (var i = 0u; i < 4u; i++) {
        if r0 + i < p.m { store_row(acc[i], r0 + i, c0); }
    }
}

// The block's rows moved up by one, `next` entering at the bottom (the block variants' epilogue).
fn up(m: mat4x4<f32>, next: vec4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(m[1], m[2], m[3], next);
}
const zero4 = vec4<f32>();

// With the blocks above, C's 4×4 block gains Σ_s op(A)[i, s]·op(B)[s, j] as `acc += bb * ab`
// (WGSL matrices are column-major: column i of bb * ab is Σ_s ab[i][s] · bb[s]).

// ---- matmul_block8x8 / matmul_block16x16 ------------------------------------------------------
// A workgroup of 8 invocations (one lavapipe SIMD register) covers 8 rows × 64 columns of C
// (16 × 128); invocation x owns columns 4x..4x+3 of every 32-column slice of the tile, and every row.
@compute @workgroup_size(8, 1, 1)
fn matmul_block8x8(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let r0 = wg.y * 8u;
    let c0 = wg.x * 64u + lid.x * 4u;
    let c1 = c0 + 32u;
    let ra0 = a_rows(r0);
    let ra1 = a_rows(r0 + 4u);
    var acc00: mat4x4<f32>; var acc01: mat4x4<f32>;
    var acc10: mat4x4<f32>; var acc11: mat4x4<f32>;
    for (var kk = 0u; kk < p.k; kk += 4u) {
        let b0 = b_blk(kk, c0);
        let b1 = b_blk(kk, c1);
        var ab = a_blk(r0, ra0, kk);
        acc00 += b0 * ab; acc01 += b1 * ab;
        ab = a_blk(r0 + 4u, ra1, kk);
        acc10 += b0 * ab; acc11 += b1 * ab;
    }
    // One row of C per pass, then every row moves up one. The runtime bound keeps this a loop:
    // written out, the 64 stores were most of the JIT time on lavapipe.
    for (var row = r0; row < min(r0 + 8u, p.m); row++) {
        store_row(acc00[0], row, c0);
        store_row(acc01[0], row, c1);
        acc00 = up(acc00, acc10[0]); acc01 = up(acc01, acc11[0]);
        acc10 = up(acc10, zero4); acc11 = up(acc11, zero4);
    }
}

@compute @workgroup_size(8, 1, 1)
fn matmul_block16x16(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let r0 = wg.y * 16u;
    let c0 = wg.x * 128u + lid.x * 4u;
    let c1 = c0 + 32u;
    let c2 = c0 + 64u;
    let c3 = c0 + 96u;
    let ra0 = a_rows(r0);
    let ra1 = a_rows(r0 + 4u);
    let ra2 = a_rows(r0 + 8u);
    let ra3 = a_rows(r0 + 12u);
    var acc00: mat4x4<f32>; var acc01: mat4x4<f32>; var acc02: mat4x4<f32>; var acc03: mat4x4<f32>;
    var acc10: mat4x4<f32>; var acc11: mat4x4<f32>; var acc12: mat4x4<f32>; var acc13: mat4x4<f32>;
    var acc20: mat4x4<f32>; var acc21: mat4x4<f32>; var acc22: mat4x4<f32>; var acc23: mat4x4<f32>;
    var acc30: mat4x4<f32>; var acc31: mat4x4<f32>; var acc32: mat4x4<f32>; var acc33: mat4x4<f32>;
    for (var kk = 0u; kk < p.k; kk += 4u) {
        let b0 = b_blk(kk, c0);
        let b1 = b_blk(kk, c1);
        let b2 = b_blk(kk, c2);
        let b3 = b_blk(kk, c3);
        var ab = a_blk(r0, ra0, kk);
        acc00 += b0 * ab; acc01 += b1 * ab; acc02 += b2 * ab; acc03 += b3 * ab;
        ab = a_blk(r0 + 4u, ra1, kk);
        acc10 += b0 * ab; acc11 += b1 * ab; acc12 += b2 * ab; acc13 += b3 * ab;
        ab = a_blk(r0 + 8u, ra2, kk);
        acc20 += b0 * ab; acc21 += b1 * ab; acc22 += b2 * ab; acc23 += b3 * ab;
        ab = a_blk(r0 + 12u, ra3, kk);
        acc30 += b0 * ab; acc31 += b1 * ab; acc32 += b2 * ab; acc33 += b3 * ab;
    }
    for (var row = r0; row < min(r0 + 16u, p.m); row++) {  // as in matmul_block8x8
        store_row(acc00[0], row, c0);
        store_row(acc01[0], row, c1);
        store_row(acc02[0], row, c2);
        store_row(acc03[0], row, c3);
        acc00 = up(acc00, acc10[0]); acc01 = up(acc01, acc11[0]); acc02 = up(acc02, acc12[0]); acc03 = up(acc03, acc13[0]);
        acc10 = up(acc10, acc20[0]); acc11 = up(acc11, acc21[0]); acc12 = up(acc12, acc22[0]); acc13 = up(acc13, acc23[0]);
        acc20 = up(acc20, acc30[0]); acc21 = up(acc21, acc31[0]); acc22 = up(acc22, acc32[0]); acc23 = up(acc23, acc33[0]);
        acc30 = up(acc30, zero4); acc31 = up(acc31, zero4); acc32 = up(acc32, zero4); acc33 = up(acc33, zero4);
    }
}

// ---- matmul_tall32x4 / matmul_wide4x32 (narrow outputs) ---------------------------------------
// 8 invocations, each one 4×4 block of C, stacked along M (32 rows × 4 columns per workgroup) or
// along N (4 × 32). For products with a few columns (a small head's forward pass, N = outputs)
// or a few rows (its dW, M = outputs), where the wide tiles above compute mostly padding.
fn block4x4(r0: u32, c0: u32) {
    var acc: mat4x4<f32>;
    let ra = a_rows(r0);
    for (var kk = 0u; kk < p.k; kk += 4u) {
        acc += b_blk(kk, c0) * a_blk(r0, ra, kk);
    }
    store_blk(acc, r0, c0);
}

@compute @workgroup_size(8, 1, 1)
fn matmul_tall32x4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    block4x4(wg.y * 32u + lid.x * 4u, wg.x * 4u);
}

@compute @workgroup_size(8, 1, 1)
fn matmul_wide4x32(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    block4x4(wg.y * 4u, wg.x * 32u + lid.x * 4u);
}

// ---- matmul_tile64 --------------------------------------------------------------------------
// The classic GPU kernel: a 64×64 tile of C per workgroup of 16×16 invocations, each a 4×4
// block in registers; K advances 16 at a time through workgroup memory, which every invocation
// fills with 4 elements of each operand (consecutive invocations read consecutive addresses of
// whichever dimension is contiguous in memory) and then reads as vec4s.
var<workgroup> tile_a: array<vec4<f32>, 256>;  // [16 k][64 rows], 4 rows per vec4
var<workgroup> tile_b: array<vec4<f32>, 256>;  // [16 k][64 cols], 4 columns per vec4

@compute @workgroup_size(16, 16, 1)
fn matmul_tile64(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
                 @builtin(local_invocation_index) li: u32) {
    let row0 = wg.y * 64u;
    let col0 = wg.x * 64u;
    var acc0 = vec4<f32>();
    var acc1 = vec4<f32>();
    var acc2 = vec4<f32>();
    var acc3 = vec4<f32>();
    for (var k0 = 0u; k0 < p.k; k0 += 16u) {
        for (var e = 0u; e < 4u; e++) {
            let idx = e * 256u + li;  // 0..1023 over the 64×16 tile of each operand
            var i = idx / 16u;        // A [M, K]: 16 consecutive k per row
            var ka = idx % 16u;
            if TRANS_A { ka = idx / 64u; i = idx % 64u; }  // Aᵀ [K, M]: 64 consecutive rows per k
            tile_a[ka * 16u + i / 4u][i % 4u] = a_at(row0 + i, k0 + ka);
            var j = idx % 64u;        // B [K, N]: 64 consecutive columns per k
            var kb = idx / 64u;
            if TRANS_B { j = idx / 16u; kb = idx % 16u; }  // Bᵀ [N, K]: 16 consecutive k per column
            tile_b[kb * 16u + j / 4u][j % 4u] = b_at(k0 + kb, col0 + j);
        }
        workgroupBarrier();
        for (var kk = 0u; kk < 16u; kk++) {
            let av = tile_a[kk * 16u + lid.y];  // rows row0 + 4·lid.y + 0..3
            let bv = tile_b[kk * 16u + lid.x];  // columns col0 + 4·lid.x + 0..3
            acc0 = fma(vec4<f32>(av.x), bv, acc0);
            acc1 = fma(vec4<f32>(av.y), bv, acc1);
            acc2 = fma(vec4<f32>(av.z), bv, acc2);
            acc3 = fma(vec4<f32>(av.w), bv, acc3);
        }
        workgroupBarrier();
    }
    store_blk(mat4x4<f32>(acc0, acc1, acc2, acc3), row0 + 4u * lid.y, col0 + 4u * lid.x);
}
