//! Grids of examples rendered as images, to look at a data set.

use std::path::{Path, PathBuf};

use image::{Rgb, RgbImage};

use super::synthetic::{self, DEFAULT_SIZE, Shape};
use super::{Dataset, Targets, digits};
use crate::{Error, Result};

/// The `(channels, height, width)` of an image data set: `input_shape` `[C, H, W]` with C = 1
/// or 3, or `[H, W]` (one channel).
fn image_dims(ds: &Dataset) -> Result<(usize, usize, usize)> {
    let dims = match ds.input_shape.as_slice() {
        &[c, h, w] if c == 1 || c == 3 => (c, h, w),
        &[h, w] => (1, h, w),
        other => {
            return Err(Error::invalid(format!("preview needs an input_shape of [1 or 3, H, W] or [H, W], not {other:?}")));
        }
    };
    if dims.0 * dims.1 * dims.2 != ds.d || ds.d == 0 {
        return Err(Error::shape(format!("input_shape {:?} does not match d = {}", ds.input_shape, ds.d)));
    }
    Ok(dims)
}

/// Examples `idx` of `ds` laid out `cols` per row, each pixel drawn as a `scale × scale` block,
/// cells separated by `scale` pixels of mid-gray. Values are clipped to `[0, 1]` (so normalised
/// data shows saturated). Errors for a non-image `input_shape`, an index `>= n`, `cols` or
/// `scale` of 0, or an empty `idx`.
pub fn grid(ds: &Dataset, idx: &[usize], cols: usize, scale: u32) -> Result<RgbImage> {
    let (c, h, w) = image_dims(ds)?;
    if cols == 0 || scale == 0 || idx.is_empty() {
        return Err(Error::invalid("preview grid needs cols > 0, scale > 0 and at least one index"));
    }
    let rows = idx.len().div_ceil(cols);
    let cols = cols.min(idx.len());
    let s = scale as usize;
    let gw = cols * (w * s + s) + s;
    let gh = rows * (h * s + s) + s;
    if gw > 1 << 15 || gh > 1 << 15 {
        return Err(Error::invalid(format!("preview grid of {gw}×{gh} pixels is too large")));
    }
    let mut img = RgbImage::from_pixel(gw as u32, gh as u32, Rgb([128, 128, 128]));
    let hw = h * w;
    for (cell, &i) in idx.iter().enumerate() {
        let row = ds.row(i).ok_or_else(|| Error::invalid(format!("preview: index {i} is out of range for n = {}", ds.n)))?;
        let (ox, oy) = ((cell % cols) * (w * s + s) + s, (cell / cols) * (h * s + s) + s);
        for y in 0..h {
            for x in 0..w {
                let px = |ch: usize| (row[ch * hw + y * w + x].clamp(0.0, 1.0) * 255.0).round() as u8;
                let rgb = if c == 3 { [px(0), px(1), px(2)] } else { [px(0); 3] };
                for dy in 0..s {
                    for dx in 0..s {
                        img.put_pixel((ox + x * s + dx) as u32, (oy + y * s + dy) as u32, Rgb(rgb));
                    }
                }
            }
        }
    }
    Ok(img)
}

/// [`grid`], saved as a PNG file at `path`.
pub fn save_grid_png(path: &Path, ds: &Dataset, idx: &[usize], cols: usize, scale: u32) -> Result<()> {
    let img = grid(ds, idx, cols, scale)?;
    img.save_with_format(path, image::ImageFormat::Png).map_err(|e| match e {
        image::ImageError::IoError(io) => Error::io(path, io),
        other => Error::format(path, format!("could not write PNG: {other}")),
    })
}

/// Renders sample grids as PNG files into `dir` (created if missing), pixels scaled ×4:
///
/// * `shapes_task_a.png` — [`synthetic::shapes_task_a`] at 16×16 from `seed`: 8 columns (one per class, in
///   [`Shape::ALL`] order) × 4 rows of examples.
/// * `scenes_task_b.png` — the first 32 [`synthetic::scenes_task_b`] scenes at 16×16 from `seed`, 8 per row.
/// * `digits_scenes.png` — only when [`digits::default_dir`] finds the digits: the first
///   32 scenes of [`digits::scenes`] (from the fixed training split, chosen digits
///   [`digits::TASK_B_DIGITS`], `seed`), 8 per row.
///
/// Returns the paths written.
pub fn save_samples_png(dir: &Path, seed: u64) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut written = Vec::new();

    let a = synthetic::shapes_task_a(64, DEFAULT_SIZE, seed);
    let Targets::Classes { y, .. } = &a.targets else { unreachable!("task A has classes") };
    let mut idx = Vec::new();
    for row in 0..4 {
        for c in 0..Shape::ALL.len() as u32 {
            if let Some(i) = y.iter().enumerate().filter(|&(_, &v)| v == c).nth(row).map(|(i, _)| i) {
                idx.push(i);
            }
        }
    }
    let p = dir.join("shapes_task_a.png");
    save_grid_png(&p, &a, &idx, Shape::ALL.len(), 4)?;
    written.push(p);

    let b = synthetic::scenes_task_b(32, DEFAULT_SIZE, seed);
    let p = dir.join("scenes_task_b.png");
    save_grid_png(&p, &b, &(0..32).collect::<Vec<_>>(), 8, 4)?;
    written.push(p);

    if let Some(ddir) = digits::default_dir() {
        let all = digits::load(&ddir)?;
        let (train, _test) = digits::fixed_split(&all);
        let sc = digits::scenes(&train, 32, digits::TASK_B_DIGITS, seed)?;
        let p = dir.join("digits_scenes.png");
        save_grid_png(&p, &sc, &(0..32).collect::<Vec<_>>(), 8, 4)?;
        written.push(p);
    }
    Ok(written)
}
