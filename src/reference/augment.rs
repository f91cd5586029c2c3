//! The float reference of `kernels::augment`: torchvision's `RandomResizedCrop` (to the image's
//! size, bilinear, `align_corners=False`) and `RandomHorizontalFlip`, drawn from the same hash as
//! the GPU. The crop's parameters are computed in f32 exactly as the shader does (so both pick the
//! same pixels), the interpolation in f64.

use crate::kernels::augment::Augment;

use super::layers::seeded_hash as hash;

fn draw(seed: u64, step: u32, q: u32, k: u32) -> f32 {
    (hash(seed, step, q, k) >> 8) as f32 * (1.0 / 16_777_216.0)
}

/// Image `q`'s crop `(top, left, height, width)` at `step` (torchvision's `get_params`).
pub fn crop_box(a: &Augment, seed: u64, step: u32, q: u32, h: usize, w: usize) -> (usize, usize, usize, usize) {
    let Some(((s0, s1), (r0, r1))) = a.crop else { return (0, 0, h, w) };
    let (hf, wf) = (h as f32, w as f32);
    let (l0, l1) = (r0.ln(), r1.ln());
    let area = hf * wf;
    for t in 0..10u32 {
        let target = area * (s0 + draw(seed, step, q, 4 * t) * (s1 - s0));
        let ratio = (l0 + draw(seed, step, q, 4 * t + 1) * (l1 - l0)).exp();
        let cw = (target * ratio).sqrt().round_ties_even();
        let ch = (target / ratio).sqrt().round_ties_even();
        if cw > 0.0 && cw <= wf && ch > 0.0 && ch <= hf {
            let top = (draw(seed, step, q, 4 * t + 2) * (hf - ch + 1.0)).floor() as usize;
            let left = (draw(seed, step, q, 4 * t + 3) * (wf - cw + 1.0)).floor() as usize;
            let (ch, cw) = (ch as usize, cw as usize);
            return (top.min(h - ch), left.min(w - cw), ch, cw);
        }
    }
    let in_ratio = wf / hf;
    let (rmin, rmax) = (l0.exp(), l1.exp());
    let (mut cw, mut ch) = (wf, hf);
    if in_ratio < rmin {
        ch = (wf / rmin).round_ties_even();
    } else if in_ratio > rmax {
        cw = (hf * rmax).round_ties_even();
    }
    let (ch, cw) = (ch as usize, cw as usize);
    ((h - ch) / 2, (w - cw) / 2, ch, cw)
}

/// Whether image `q` is flipped at `step`.
pub fn flipped(a: &Augment, seed: u64, step: u32, q: u32) -> bool {
    (hash(seed, step, q, 40) >> 8) < crate::kernels::augment::flip_threshold(a.flip)
}

/// `(i0, i1, λ)` of linear interpolation from `len_in` to `len_out` samples (align_corners=False).
fn taps(dst: usize, len_in: usize, len_out: usize) -> (usize, usize, f64) {
    let real = ((dst as f64 + 0.5) * (len_in as f64 / len_out as f64) - 0.5).max(0.0);
    let i0 = (real.floor() as usize).min(len_in - 1);
    (i0, (i0 + 1).min(len_in - 1), real - i0 as f64)
}

/// One image `[c, h, w]` cropped to `bbox` = (top, left, height, width), resized back to `h × w`
/// bilinearly (`align_corners=False`) and mirrored when `flip`: torchvision's
/// `F.hflip(F.resized_crop(img, top, left, height, width, [h, w]))`.
pub fn resized_crop_flip(img: &[f64], c: usize, h: usize, w: usize, bbox: (usize, usize, usize, usize), flip: bool) -> Vec<f64> {
    let (top, left, ch, cw) = bbox;
    let mut y = vec![0.0; c * h * w];
    for k in 0..c {
        let plane = &img[k * h * w..][..h * w];
        for oy in 0..h {
            let (y0, y1, ly) = taps(oy, ch, h);
            for ox in 0..w {
                let sx = if flip { w - 1 - ox } else { ox };
                let (x0, x1, lx) = taps(sx, cw, w);
                let at = |yy: usize, xx: usize| plane[(top + yy) * w + left + xx];
                y[k * h * w + oy * w + ox] =
                    (at(y0, x0) * (1.0 - lx) + at(y0, x1) * lx) * (1.0 - ly) + (at(y1, x0) * (1.0 - lx) + at(y1, x1) * lx) * ly;
            }
        }
    }
    y
}

/// The augmented batch: `rows` images `[c, h, w]` at positions `offset..` of the epoch's order.
#[allow(clippy::too_many_arguments)]
pub fn augment(a: &Augment, seed: u64, step: u32, offset: u32, c: usize, h: usize, w: usize, x: &[f64]) -> Vec<f64> {
    let per = c * h * w;
    x.chunks(per)
        .enumerate()
        .flat_map(|(r, img)| {
            let q = offset + r as u32;
            resized_crop_flip(img, c, h, w, crop_box(a, seed, step, q, h, w), flipped(a, seed, step, q))
        })
        .collect()
}
