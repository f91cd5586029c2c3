// gather.wgsl — batch assembly on the GPU: rows of a resident data set picked through a
// (shuffled) index buffer.
//
// Entry points (workgroup 64 over a row's elements; each workgroup copies GATHER_ROWS_PER_GROUP
// batch rows, y over groups of rows, folded into z past 65,535 workgroups). No integer division
// (slow where a CPU runs the shader), and few workgroups (each costs about a microsecond on
// lavapipe, more than copying a row).
//   gather_rows   one invocation per u32 element
//   gather_rows4  one invocation per vec4<u32> (rows of a multiple of 4 elements; p.d counts vec4s)
//                 bindings: 0 p (uniform), 1 src [n, d] (r), 2 indices [total] u32 (r), 3 dst [b, d] (rw)
//                 dst[i, j] = src[indices[offset + i], j]  for i < b, j < d
//   gather_rows_f16  one invocation per u32 word of a packed f16 row (p.d words, p.width f32s):
//                 src [n, d] u32, two halves per word (common.wgsl), dst [b, width] f32 (as bits):
//                 dst[i, 2j + h] = f32(half h of src[indices[offset + i], j])  for 2j + h < width
//   pack_rows_f16    the other way, for storing rows (e.g. cached features) in f16: one
//                 invocation per word; bindings 0 pk (PackParams), 1 src [rows, width] f32 (r),
//                 2 packed [n, ⌈width / 2⌉] u32 (rw): global row start + i goes to local row
//                 start + i − base of this chunk of n rows (other rows skipped); an odd width's
//                 last word has 0 in its high half
// Elements are copied as u32 bits, so f32 rows (NaN payloads included) and u32 labels both pass
// through unchanged. An index ≥ n, or a position offset + i ≥ total, reads nothing and writes
// 0xFFFFFFFF (a NaN as f32, u32::MAX as a label) so the mistake shows.
//
// Chunked sources: a data set larger than one storage binding (128 MiB on lavapipe) is split
// into chunks of whole rows; src then holds global rows base .. base + n, and one launch per
// chunk writes only the batch rows whose index falls in its chunk. Only the last chunk (LAST)
// writes the 0xFFFFFFFF marker for indices past the end. With base = 0 and LAST, this is the
// plain single-buffer gather.
// Reference: inline in tests/kernel_gather.rs.

struct GatherParams {
    n: u32,        // rows in src
    d: u32,        // elements (gather_rows) or vec4s (gather_rows4) per row, ≥ 1
    b: u32,        // rows of dst
    offset: u32,   // first position in indices
    total: u32,    // elements of indices
    base: u32,     // global row index of src's first row
    last: u32,     // 1 for the last (or only) chunk
    width: u32,    // gather_rows_f16: f32 elements per dst row (p.d = ⌈width / 2⌉ words); else 0
}

const GATHER_MISSING: u32 = 0xffffffffu;

@group(0) @binding(0) var<uniform> p: GatherParams;
@group(0) @binding(2) var<storage, read> indices: array<u32>;

// The source row of batch row i relative to this chunk: ≥ 0 to copy, GATHER_WRITE_MISSING to
// write the marker, GATHER_SKIP when another chunk owns the row.
const GATHER_SKIP: u32 = 0xffffffffu;
const GATHER_WRITE_MISSING: u32 = 0xfffffffeu;

fn gather_source_row(i: u32) -> u32 {
    if p.offset <= p.total && i < p.total - p.offset {
        let row = indices[p.offset + i];
        if row < p.base { return GATHER_SKIP; }   // an earlier chunk's row
        let local = row - p.base;
        if local < p.n { return local; }
        return select(GATHER_SKIP, GATHER_WRITE_MISSING, p.last != 0u);  // a later chunk's row, or past the end
    }
    return select(GATHER_SKIP, GATHER_WRITE_MISSING, p.last != 0u);
}

const GATHER_ROWS_PER_GROUP: u32 = 16u;

// The first batch row of an invocation's workgroup.
fn gather_first_row(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return (wid.y + wid.z * nwg.y) * GATHER_ROWS_PER_GROUP;
}

@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(3) var<storage, read_write> dst: array<u32>;

@compute @workgroup_size(64)
fn gather_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
               @builtin(num_workgroups) nwg: vec3<u32>) {
    let j = gid.x;
    if j >= p.d { return; }
    let first = gather_first_row(wid, nwg);
    for (var i = first; i < min(first + GATHER_ROWS_PER_GROUP, p.b); i++) {
        let r = gather_source_row(i);
        if r == GATHER_SKIP { continue; }
        var out = GATHER_MISSING;
        if r != GATHER_WRITE_MISSING { out = src[r * p.d + j]; }
        dst[i * p.d + j] = out;
    }
}

@group(0) @binding(1) var<storage, read> src4: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read_write> dst4: array<vec4<u32>>;

@compute @workgroup_size(64)
fn gather_rows4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>) {
    let j = gid.x;
    if j >= p.d { return; }
    let first = gather_first_row(wid, nwg);
    for (var i = first; i < min(first + GATHER_ROWS_PER_GROUP, p.b); i++) {
        let r = gather_source_row(i);
        if r == GATHER_SKIP { continue; }
        var out = vec4<u32>(GATHER_MISSING);
        if r != GATHER_WRITE_MISSING { out = src4[r * p.d + j]; }
        dst4[i * p.d + j] = out;
    }
}

// ---- gather_rows_pair4: a batch's inputs and targets in one launch ----------------------------
// Both read the same batch positions of the same index buffer, so one launch does both: the
// workgroups with x id < p.gx copy the input rows (vec4s), the others the target rows (u32).
// Single-buffer sources only (base 0, last chunk).
//   bindings: 0 pp (uniform), 1 src_x4 [n, dx] (r), 2 indices (r), 3 dst_x4 [b, dx] (rw),
//             4 src_y [n, dy] (r), 5 dst_y [b, dy] (rw)
struct PairParams {
    n: u32,        // rows in both sources
    dx: u32,       // vec4s per input row
    b: u32,        // batch rows
    offset: u32,   // first position in indices
    total: u32,    // elements of indices
    dy: u32,       // u32 per target row
    gx: u32,       // workgroups along x that copy inputs
    _pad: u32,
}

@group(0) @binding(0) var<uniform> pp: PairParams;
@group(0) @binding(4) var<storage, read> src_y: array<u32>;
@group(0) @binding(5) var<storage, read_write> dst_y: array<u32>;

// The source row of batch row i, GATHER_WRITE_MISSING for a bad index or position.
fn pair_source_row(i: u32) -> u32 {
    if pp.offset <= pp.total && i < pp.total - pp.offset {
        let row = indices[pp.offset + i];
        if row < pp.n { return row; }
    }
    return GATHER_WRITE_MISSING;
}

@compute @workgroup_size(64)
fn gather_rows_pair4(@builtin(local_invocation_index) l: u32, @builtin(workgroup_id) wid: vec3<u32>,
                     @builtin(num_workgroups) nwg: vec3<u32>) {
    let first = gather_first_row(wid, nwg);
    let last = min(first + GATHER_ROWS_PER_GROUP, pp.b);
    if wid.x < pp.gx {
        let j = wid.x * 64u + l;
        if j >= pp.dx { return; }
        for (var i = first; i < last; i++) {
            let r = pair_source_row(i);
            var out = vec4<u32>(GATHER_MISSING);
            if r != GATHER_WRITE_MISSING { out = src4[r * pp.dx + j]; }
            dst4[i * pp.dx + j] = out;
        }
    } else {
        let j = (wid.x - pp.gx) * 64u + l;
        if j >= pp.dy { return; }
        for (var i = first; i < last; i++) {
            let r = pair_source_row(i);
            var out = GATHER_MISSING;
            if r != GATHER_WRITE_MISSING { out = src_y[r * pp.dy + j]; }
            dst_y[i * pp.dy + j] = out;
        }
    }
}

// ---- f16 rows: unpack while gathering, pack when storing --------------------------------------

@compute @workgroup_size(64)
fn gather_rows_f16(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
                   @builtin(num_workgroups) nwg: vec3<u32>) {
    let j = gid.x;
    if j >= p.d { return; }
    let first = gather_first_row(wid, nwg);
    let two = 2u * j + 1u < p.width;
    for (var i = first; i < min(first + GATHER_ROWS_PER_GROUP, p.b); i++) {
        let r = gather_source_row(i);
        if r == GATHER_SKIP { continue; }
        var lo = GATHER_MISSING;
        var hi = GATHER_MISSING;
        if r != GATHER_WRITE_MISSING {
            let w = src[r * p.d + j];
            lo = f32_bits_of_f16(w & 0xffffu);
            hi = f32_bits_of_f16(w >> 16u);
        }
        dst[i * p.width + 2u * j] = lo;
        if two { dst[i * p.width + 2u * j + 1u] = hi; }
    }
}

struct PackParams {
    rows: u32,     // rows of src
    width: u32,    // f32 elements per src row
    words: u32,    // u32 words per packed row, ⌈width / 2⌉
    start: u32,    // global row of src's first row
    base: u32,     // global row of the packed chunk's first row
    n: u32,        // rows of the packed chunk
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> pk: PackParams;
@group(0) @binding(2) var<storage, read_write> packed: array<u32>;

@compute @workgroup_size(64)
fn pack_rows_f16(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>) {
    let j = gid.x;
    if j >= pk.words { return; }
    let first = gather_first_row(wid, nwg);
    let two = 2u * j + 1u < pk.width;
    for (var i = first; i < min(first + GATHER_ROWS_PER_GROUP, pk.rows); i++) {
        let g = pk.start + i;
        if g < pk.base || g - pk.base >= pk.n { continue; }
        let lo = f16_from_f32_bits(src[i * pk.width + 2u * j]);
        var hi = 0u;
        if two { hi = f16_from_f32_bits(src[i * pk.width + 2u * j + 1u]); }
        packed[(g - pk.base) * pk.words + j] = lo | (hi << 16u);
    }
}

// ---- flat f16 arrays: a parameter arena stored in f16 ------------------------------------------
//   pack_f16   one invocation per word: packed[k] = f16(src[2k]) | f16(src[2k + 1]) << 16 for
//              k < fp.words (src f32 [fp.n]; an odd n leaves the last word's high half 0)
//   widen_f16  one invocation per word: packed[2k], packed[2k + 1] = the halves of
//              src[fp.start + k] widened to f32 (exactly), k < fp.words
//              bindings of both: 0 fp (FlatParams), 1 src (r), 2 packed (rw)
// Invocations run over x (64 per workgroup), folded into y past 65,535 workgroups: k = x + y·row.

struct FlatParams {
    words: u32,    // u32 words to pack or widen
    n: u32,        // pack_f16: f32 elements of src
    start: u32,    // widen_f16: first word of src
    row: u32,      // invocations per y step: 64 × workgroups in x
}

@group(0) @binding(0) var<uniform> fp: FlatParams;

@compute @workgroup_size(64)
fn pack_f16(@builtin(global_invocation_id) gid: vec3<u32>) {
    let k = gid.x + gid.y * fp.row;
    if k >= fp.words { return; }
    let lo = f16_from_f32_bits(src[2u * k]);
    var hi = 0u;
    if 2u * k + 1u < fp.n { hi = f16_from_f32_bits(src[2u * k + 1u]); }
    packed[k] = lo | (hi << 16u);
}

@compute @workgroup_size(64)
fn widen_f16(@builtin(global_invocation_id) gid: vec3<u32>) {
    let k = gid.x + gid.y * fp.row;
    if k >= fp.words { return; }
    let w = src[fp.start + k];
    packed[2u * k] = f32_bits_of_f16(w & 0xffffu);
    packed[2u * k + 1u] = f32_bits_of_f16(w >> 16u);
}
