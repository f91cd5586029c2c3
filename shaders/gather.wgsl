// gather.wgsl — batch assembly on the GPU: rows of a resident data set picked through a
// (shuffled) index buffer.
//
// Entry point:
//   gather_rows  workgroup 256, one invocation per output element (1-D over b·d, folded into x/y)
//                bindings: 0 p (uniform), 1 src [n, d] (r), 2 indices [total] u32 (r), 3 dst [b, d] (rw)
//                dst[i, j] = src[indices[offset + i], j]  for i < b, j < d
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
    d: u32,        // elements per row (≥ 1)
    len: u32,      // b · d, elements of dst
    offset: u32,   // first position in indices
    total: u32,    // elements of indices
    base: u32,     // global row index of src's first row
    last: u32,     // 1 for the last (or only) chunk
    _pad1: u32,
}

const GATHER_MISSING: u32 = 0xffffffffu;

@group(0) @binding(0) var<uniform> p: GatherParams;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read> indices: array<u32>;
@group(0) @binding(3) var<storage, read_write> dst: array<u32>;

@compute @workgroup_size(256)
fn gather_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = flat_index(gid, nwg, 256u);
    if e >= p.len { return; }
    let i = e / p.d;
    let j = e - i * p.d;
    var out = GATHER_MISSING;
    if p.offset <= p.total && i < p.total - p.offset {
        let row = indices[p.offset + i];
        if row < p.base { return; }             // an earlier chunk's row
        let local = row - p.base;
        if local < p.n {
            out = src[local * p.d + j];
        } else if p.last == 0u {
            return;                              // a later chunk's row
        }
    } else if p.last == 0u {
        return;
    }
    dst[e] = out;
}
