//! Seeded synthetic images of simple shapes, generated in memory (nothing to download).
//!
//! Every image is grayscale, `size × size` (default [`DEFAULT_SIZE`] = 16), values in `[0, 1]`:
//! a dark background (level drawn from `[0, 0.15)`), objects of intensity `[0.6, 1.0)` drawn with
//! anti-aliased edges, and independent pixel noise (triangular, amplitude 0.06), clipped to
//! `[0, 1]`. The same `(n, size, seed)` always gives bit-identical data on every platform.
//!
//! * **Task A** ([`shapes_task_a`]): one object per image, drawn as one object of a task-B scene
//!   is (radius 17–22 % of the side, in a random quadrant, jittered inside it), so the features
//!   a trunk learns on A are the ones B needs; the class is which of the 8 [`Shape`]s it is.
//!   Classes are balanced (`i % 8` before a seeded shuffle).
//! * **Task B** ([`scenes_task_b`]): scenes with 1–3 smaller objects (radius 17–22 % of the side),
//!   one per quadrant of a 2×2 layout (random quadrants, jittered inside them, so they never
//!   overlap). The 4 labels say which of [`TASK_B_LABELS`] (circle, square, triangle, cross) are
//!   present — like "pedestrian / car / stop sign / traffic light" in one street photo. Each
//!   target is present with probability about 0.4, independently (draws with all four are
//!   redrawn); the other shapes (bars, ring, diamond) appear as distractors, so that a scene
//!   has 1–3 objects in all and about 13 % of scenes have no target at all.
//!
//! Generation is cheap: tens of thousands of 16×16 images take a few tens of milliseconds in a
//! release build.

use super::{Dataset, Targets};
use crate::{Result, Rng};

/// The default image side, in pixels.
pub const DEFAULT_SIZE: usize = 16;
/// The smallest image side the generators draw at; smaller requests are raised to it.
pub const MIN_SIZE: usize = 8;
/// The largest image side the generators draw at; larger requests are lowered to it.
pub const MAX_SIZE: usize = 256;

/// The objects the generators draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Shape {
    /// A filled disc.
    Circle,
    /// A filled axis-aligned square.
    Square,
    /// A filled triangle pointing up.
    Triangle,
    /// A diagonal cross (×).
    Cross,
    /// A horizontal bar.
    HBar,
    /// A vertical bar.
    VBar,
    /// An unfilled circle.
    Ring,
    /// A filled square standing on a corner.
    Diamond,
}

impl Shape {
    /// All shapes, in class order for [`shapes_task_a`].
    pub const ALL: [Shape; 8] =
        [Shape::Circle, Shape::Square, Shape::Triangle, Shape::Cross, Shape::HBar, Shape::VBar, Shape::Ring, Shape::Diamond];

    /// A lower-case name: "circle", "square", "triangle", "cross", "hbar", "vbar", "ring",
    /// "diamond".
    pub fn name(self) -> &'static str {
        match self {
            Shape::Circle => "circle",
            Shape::Square => "square",
            Shape::Triangle => "triangle",
            Shape::Cross => "cross",
            Shape::HBar => "hbar",
            Shape::VBar => "vbar",
            Shape::Ring => "ring",
            Shape::Diamond => "diamond",
        }
    }

    /// Approximate signed distance (pixels; negative inside) of the offset `(dx, dy)` from the
    /// centre of this shape with half-extent `r`.
    fn sdf(self, dx: f32, dy: f32, r: f32) -> f32 {
        const S2: f32 = std::f32::consts::FRAC_1_SQRT_2;
        let (ax, ay) = (dx.abs(), dy.abs());
        let stroke = (0.2 * r).max(0.55);
        match self {
            Shape::Circle => (dx * dx + dy * dy).sqrt() - r,
            Shape::Square => ax.max(ay) - 0.82 * r,
            Shape::Diamond => (ax + ay - r) * S2,
            Shape::Ring => ((dx * dx + dy * dy).sqrt() - 0.72 * r).abs() - (0.22 * r).max(0.55),
            Shape::Triangle => {
                // Apex (0, -r), base at y = 0.75 r with half-width 0.95 r.
                let base = dy - 0.75 * r;
                let side = (1.75 * ax - 0.95 * (dy + r)) / 1.991;
                base.max(side)
            }
            Shape::Cross => {
                let (u, v) = (((dx + dy) * S2).abs(), ((dx - dy) * S2).abs());
                (u - stroke).max(v - r).min((v - stroke).max(u - r))
            }
            Shape::HBar => (ax - r).max(ay - (0.25 * r).max(0.6)),
            Shape::VBar => (ax - (0.25 * r).max(0.6)).max(ay - r),
        }
    }
}

/// The 4 shapes whose presence task B labels, in label order.
pub const TASK_B_LABELS: [Shape; 4] = [Shape::Circle, Shape::Square, Shape::Triangle, Shape::Cross];
/// The shapes that appear in task B scenes only as distractors.
pub const TASK_B_DISTRACTORS: [Shape; 4] = [Shape::HBar, Shape::VBar, Shape::Ring, Shape::Diamond];

/// One object to draw: shape, centre (pixels), half-extent (pixels).
pub(super) struct Object {
    pub(super) shape: Shape,
    pub(super) cx: f32,
    pub(super) cy: f32,
    pub(super) r: f32,
}

/// Draws `objects` on a fresh `size × size` canvas with background, intensity and noise drawn
/// from `rng`, writing into `out` (length `size * size`).
fn render(out: &mut [f32], size: usize, objects: &[Object], rng: &mut Rng) {
    let bg = rng.uniform(0.0, 0.15) as f32;
    let fg = rng.uniform(0.6, 1.0) as f32;
    render_on(out, size, objects, bg, fg, rng);
}

/// [`render`] on a background of level `bg` with objects of intensity `fg`, the noise drawn from
/// `rng`.
pub(super) fn render_on(out: &mut [f32], size: usize, objects: &[Object], bg: f32, fg: f32, rng: &mut Rng) {
    let mut cover = vec![0f32; size * size];
    for o in objects {
        let reach = o.r + 1.5;
        let y0 = (o.cy - reach).floor().max(0.0) as usize;
        let y1 = ((o.cy + reach).ceil().max(0.0) as usize).min(size);
        let x0 = (o.cx - reach).floor().max(0.0) as usize;
        let x1 = ((o.cx + reach).ceil().max(0.0) as usize).min(size);
        for y in y0..y1 {
            let dy = y as f32 + 0.5 - o.cy;
            for x in x0..x1 {
                let dx = x as f32 + 0.5 - o.cx;
                let c = (0.5 - o.shape.sdf(dx, dy, o.r)).clamp(0.0, 1.0);
                let p = &mut cover[y * size + x];
                *p = p.max(c);
            }
        }
    }
    const NOISE: f32 = 0.06;
    const INV32: f32 = 1.0 / 4_294_967_296.0;
    for (o, &c) in out.iter_mut().zip(&cover) {
        let bits = rng.next_u64();
        // Sum of two uniforms in [0, 1): triangular on [0, 2), centred to [-1, 1).
        let tri = ((bits >> 32) as f32 + (bits & 0xFFFF_FFFF) as f32) * INV32 - 1.0;
        *o = (bg + (fg - bg) * c + NOISE * tri).clamp(0.0, 1.0);
    }
}

pub(super) fn clamp_size(size: usize) -> usize {
    size.clamp(MIN_SIZE, MAX_SIZE)
}

/// The generators' byte limit, also at [`super::MAX_BYTES`] (kept here as public API).
pub use super::MAX_BYTES;
use super::check_n;

/// [`shapes_task_a`], refusing an `n` whose images would exceed [`MAX_BYTES`] with an error
/// instead of attempting the allocation: the one to call with a user-given `n`.
pub fn try_shapes_task_a(n: usize, size: usize, seed: u64) -> Result<Dataset> {
    check_n("synthetic task A", n, clamp_size(size))?;
    Ok(generate_task_a(n, size, seed))
}

/// [`scenes_task_b`], refusing an `n` whose images would exceed [`MAX_BYTES`] with an error
/// instead of attempting the allocation: the one to call with a user-given `n`.
pub fn try_scenes_task_b(n: usize, size: usize, seed: u64) -> Result<Dataset> {
    check_n("synthetic task B", n, clamp_size(size))?;
    Ok(generate_task_b(n, size, seed))
}

/// Task A: `n` images of one shape each; class `c` is `Shape::ALL[c]` (8 balanced classes,
/// label names = [`Shape::name`]). `size` is clamped to `MIN_SIZE..=MAX_SIZE`; the input shape
/// is `[1, size, size]`. `n = 0` gives an empty data set (which `validate` rejects).
///
/// # Panics
/// When the images would exceed [`MAX_BYTES`]; [`try_shapes_task_a`] returns an error instead.
pub fn shapes_task_a(n: usize, size: usize, seed: u64) -> Dataset {
    try_shapes_task_a(n, size, seed).unwrap_or_else(|e| panic!("{e}"))
}

fn generate_task_a(n: usize, size: usize, seed: u64) -> Dataset {
    let size = clamp_size(size);
    let d = size * size;
    let s = size as f32;
    let mut rng = Rng::new(seed ^ 0x5EED_A000_0000_0001);
    let mut classes: Vec<u32> = (0..n).map(|i| (i % Shape::ALL.len()) as u32).collect();
    rng.shuffle(&mut classes);
    let mut x = vec![0f32; n * d];
    for (img, &c) in x.chunks_exact_mut(d).zip(&classes) {
        // The same object scale and placement as one object of a task-B scene (a random quadrant,
        // jittered inside it): what the trunk learns to see here is what task B shows it.
        let cell = s / 2.0;
        let q = rng.below(4) as usize;
        let r = rng.uniform(0.17, 0.22) as f32 * s;
        let (ox, oy) = ((q % 2) as f32 * cell, (q / 2) as f32 * cell);
        let lo = r + 0.3;
        let hi = (cell - r - 0.3).max(lo);
        let cx = ox + lo + (hi - lo) * rng.next_f64() as f32;
        let cy = oy + lo + (hi - lo) * rng.next_f64() as f32;
        let obj = Object { shape: Shape::ALL[c as usize], cx, cy, r };
        render(img, size, std::slice::from_ref(&obj), &mut rng);
    }
    Dataset {
        x,
        n,
        d,
        input_shape: vec![1, size, size],
        targets: Targets::Classes { y: classes, num_classes: Shape::ALL.len() },
        label_names: Shape::ALL.iter().map(|s| s.name().to_string()).collect(),
    }
}

/// Task B: `n` multi-label scenes of 1–3 objects; label `j` (k = 4) is 1 when
/// `TASK_B_LABELS[j]` is in the scene, else 0 (never unknown). See the module docs for the
/// distribution. `size` is clamped to `MIN_SIZE..=MAX_SIZE`; the input shape is
/// `[1, size, size]`, the same as task A's, so a trunk trained on A reads B unchanged.
///
/// # Panics
/// When the images would exceed [`MAX_BYTES`]; [`try_scenes_task_b`] returns an error instead.
pub fn scenes_task_b(n: usize, size: usize, seed: u64) -> Dataset {
    try_scenes_task_b(n, size, seed).unwrap_or_else(|e| panic!("{e}"))
}

fn generate_task_b(n: usize, size: usize, seed: u64) -> Dataset {
    let size = clamp_size(size);
    let d = size * size;
    let s = size as f32;
    let cell = s / 2.0;
    let k = TASK_B_LABELS.len();
    let mut rng = Rng::new(seed ^ 0x5EED_B000_0000_0002);
    let mut x = vec![0f32; n * d];
    let mut y = vec![0f32; n * k];
    let mut objects: Vec<Object> = Vec::with_capacity(3);
    for (img, labels) in x.chunks_exact_mut(d).zip(y.chunks_exact_mut(k)) {
        // Which targets are present: independent Bernoulli(0.4), at most 3.
        let present = loop {
            let p: Vec<bool> = (0..k).map(|_| rng.next_f64() < 0.4).collect();
            if p.iter().filter(|&&b| b).count() <= 3 {
                break p;
            }
        };
        let t = present.iter().filter(|&&b| b).count();
        let n_distract = if t == 0 { 1 + rng.below(3) as usize } else { rng.below(4 - t as u64) as usize };
        let mut shapes: Vec<Shape> = Vec::with_capacity(3);
        for (j, &p) in present.iter().enumerate() {
            labels[j] = if p { 1.0 } else { 0.0 };
            if p {
                shapes.push(TASK_B_LABELS[j]);
            }
        }
        let mut distractors = TASK_B_DISTRACTORS;
        rng.shuffle(&mut distractors);
        shapes.extend_from_slice(&distractors[..n_distract]);
        let mut quadrants = [0usize, 1, 2, 3];
        rng.shuffle(&mut quadrants);
        objects.clear();
        for (&shape, &q) in shapes.iter().zip(&quadrants) {
            let r = rng.uniform(0.17, 0.22) as f32 * s;
            let (ox, oy) = ((q % 2) as f32 * cell, (q / 2) as f32 * cell);
            let lo = r + 0.3;
            let hi = (cell - r - 0.3).max(lo);
            let cx = ox + lo + (hi - lo) * rng.next_f64() as f32;
            let cy = oy + lo + (hi - lo) * rng.next_f64() as f32;
            objects.push(Object { shape, cx, cy, r });
        }
        render(img, size, &objects, &mut rng);
    }
    Dataset {
        x,
        n,
        d,
        input_shape: vec![1, size, size],
        targets: Targets::Labels { y, k },
        label_names: TASK_B_LABELS.iter().map(|s| s.name().to_string()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_a_is_valid_balanced_and_deterministic() {
        let a = shapes_task_a(800, 16, 3);
        a.validate().unwrap();
        assert_eq!(a.input_shape, vec![1, 16, 16]);
        assert_eq!(a.positives_per_output(), vec![100; 8]);
        assert_eq!(a, shapes_task_a(800, 16, 3));
        assert_ne!(a.x, shapes_task_a(800, 16, 4).x);
        assert!(a.x.iter().all(|v| (0.0..=1.0).contains(v)));
    }

    #[test]
    fn shapes_differ_from_each_other() {
        // Noise-free masks of each shape at a fixed place must be pairwise distinct.
        let masks: Vec<Vec<bool>> = Shape::ALL
            .iter()
            .map(|s| (0..256).map(|i| s.sdf((i % 16) as f32 + 0.5 - 8.0, (i / 16) as f32 + 0.5 - 8.0, 5.0) < 0.0).collect())
            .collect();
        for i in 0..8 {
            assert!(masks[i].iter().filter(|&&b| b).count() >= 10, "{:?} too small", Shape::ALL[i]);
            for j in 0..i {
                let diff = masks[i].iter().zip(&masks[j]).filter(|(a, b)| a != b).count();
                assert!(diff >= 8, "{:?} vs {:?} differ in {diff} pixels", Shape::ALL[i], Shape::ALL[j]);
            }
        }
    }

    #[test]
    fn task_b_labels_are_balanced_enough() {
        let b = scenes_task_b(4000, 16, 9);
        b.validate().unwrap();
        for (j, &p) in b.positives_per_output().iter().enumerate() {
            let rate = p as f64 / 4000.0;
            assert!((0.3..0.5).contains(&rate), "label {j} positive rate {rate}");
        }
        assert_eq!(b, scenes_task_b(4000, 16, 9));
    }
}
