// augment.wgsl — data augmentation on the GPU for training steps whose trunk runs every step:
// torchvision's RandomResizedCrop (to the image's own size, bilinear) and RandomHorizontalFlip,
// f32, NCHW rows of one image each.
//
// Entry point (bindings after the params uniform at 0):
//   random_resized_crop_flip   1 x (r) [rows, C, H, W], 2 y (rw) [rows, C, H, W]
//
// Each image's choices come from a counter-based hash of (seed, step, q, k), q = offset + r the
// image's position in the epoch's shuffled order (offset: the batch's start), k the draw's index:
// nothing is uploaded per step but the step and the offset, reruns give the same bits, and
// data-parallel replicas (each reading its share at its own offset) draw what one process draws.
// A draw u = (hash >> 8)·2⁻²⁴ is uniform on [0, 1) in 24 bits.
//
// The crop is torchvision's `RandomResizedCrop.get_params`: up to 10 tries of an area fraction
// uniform in [scale_min, scale_max] and an aspect ratio log-uniform in [ratio_min, ratio_max],
// w = round(√(area·ratio)), h = round(√(area/ratio)) (round half to even, Python's), accepted when
// 0 < w ≤ W and 0 < h ≤ H, its corner uniform (⌊u·(H − h + 1)⌋, ⌊u·(W − w + 1)⌋); else the
// central crop of the ratio clamped to the range. The crop is resized back to H×W bilinearly,
// `align_corners=False` (PyTorch's `interpolate`: source = (dst + ½)·crop/out − ½, clamped at 0),
// never shrinking, so antialiasing does not apply. The flip mirrors the output's columns with
// probability p (draw k = 40 < round(p·2²⁴)·2⁻²⁴).
// Reference: src/reference/augment.rs.

struct Params {
    rows: u32,
    c: u32,
    h: u32,
    w: u32,
    seed_lo: u32,
    seed_hi: u32,
    step: u32,
    offset: u32,
    scale_min: f32,
    scale_max: f32,
    log_ratio_min: f32,
    log_ratio_max: f32,
    flip_threshold: u32,   // round(p · 2^24)
    crop: u32,             // 0: no crop (flip only)
    total: u32,            // rows · C · H · W
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

// draw k of image q: seeded_hash (common.wgsl, dropout's too) in 24 bits, uniform on [0, 1)
fn draw(q: u32, k: u32) -> f32 {
    return f32(seeded_hash(p.seed_lo, p.seed_hi, p.step, q, k) >> 8u) * (1.0 / 16777216.0);
}

// (top, left, height, width) of image q's crop.
fn crop_of(q: u32) -> vec4<u32> {
    let hf = f32(p.h);
    let wf = f32(p.w);
    if p.crop == 0u { return vec4<u32>(0u, 0u, p.h, p.w); }
    let area = hf * wf;
    for (var t = 0u; t < 10u; t++) {
        let target_area = area * (p.scale_min + draw(q, 4u * t) * (p.scale_max - p.scale_min));
        let ratio = exp(p.log_ratio_min + draw(q, 4u * t + 1u) * (p.log_ratio_max - p.log_ratio_min));
        let cw = round(sqrt(target_area * ratio));
        let ch = round(sqrt(target_area / ratio));
        if cw > 0.0 && cw <= wf && ch > 0.0 && ch <= hf {
            let top = u32(floor(draw(q, 4u * t + 2u) * (hf - ch + 1.0)));
            let left = u32(floor(draw(q, 4u * t + 3u) * (wf - cw + 1.0)));
            return vec4<u32>(min(top, p.h - u32(ch)), min(left, p.w - u32(cw)), u32(ch), u32(cw));
        }
    }
    // central crop, the aspect ratio clamped to the range
    let in_ratio = wf / hf;
    var cw = wf;
    var ch = hf;
    let rmin = exp(p.log_ratio_min);
    let rmax = exp(p.log_ratio_max);
    if in_ratio < rmin {
        ch = round(wf / rmin);
    } else if in_ratio > rmax {
        cw = round(hf * rmax);
    }
    let hi = u32(ch);
    let wi = u32(cw);
    return vec4<u32>((p.h - hi) / 2u, (p.w - wi) / 2u, hi, wi);
}

// Linear interpolation's two source indices and the weight of the second, PyTorch's
// align_corners=False rule: src = (dst + ½)·(in/out) − ½, clamped at 0.
fn taps(dst: u32, len_in: u32, len_out: u32) -> vec3<f32> {
    let real = max((f32(dst) + 0.5) * (f32(len_in) / f32(len_out)) - 0.5, 0.0);
    let i0 = min(u32(floor(real)), len_in - 1u);
    let i1 = min(i0 + 1u, len_in - 1u);
    return vec3<f32>(f32(i0), f32(i1), real - f32(i0));
}

@compute @workgroup_size(256)
fn random_resized_crop_flip(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg, 256u);
    if i >= p.total { return; }
    let hw = p.h * p.w;
    let plane = i / hw;                 // image r, channel
    let r = plane / p.c;
    let yx = i - plane * hw;
    let oy = yx / p.w;
    var ox = yx - oy * p.w;
    let q = p.offset + r;
    if (seeded_hash(p.seed_lo, p.seed_hi, p.step, q, 40u) >> 8u) < p.flip_threshold {
        ox = p.w - 1u - ox;
    }
    let box = crop_of(q);
    let ty = taps(oy, box.z, p.h);
    let tx = taps(ox, box.w, p.w);
    let base = plane * hw;
    let y0 = box.x + u32(ty.x);
    let y1 = box.x + u32(ty.y);
    let x0 = box.y + u32(tx.x);
    let x1 = box.y + u32(tx.y);
    let top = x[base + y0 * p.w + x0] * (1.0 - tx.z) + x[base + y0 * p.w + x1] * tx.z;
    let bottom = x[base + y1 * p.w + x0] * (1.0 - tx.z) + x[base + y1 * p.w + x1] * tx.z;
    y[i] = top * (1.0 - ty.z) + bottom * ty.z;
}
