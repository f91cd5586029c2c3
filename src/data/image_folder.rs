//! Image classification data from a folder of class folders (torchvision's `ImageFolder`
//! convention):
//!
//! ```text
//! root/cat/001.png
//! root/cat/002.jpg
//! root/cat/indoor/003.png
//! root/dog/x.jpeg
//! ```
//!
//! The sub-folders of `root`, sorted by name, are the classes (class `i` = the `i`-th name).
//! Each class folder is walked as torchvision walks it (`os.walk(..., followlinks=True)`):
//! with its sub-folders, at any depth, following links; the folders are read in the order of
//! their paths as text, and the files in each by name, so the order is deterministic and the
//! same as torchvision's. Files ending in `.png`, `.jpg` or `.jpeg` (any case) are the
//! examples. Everything else is passed over and listed in the [`LoadReport`] with the reason:
//! the image types torchvision also reads but this build does not decode (`.bmp`, `.ppm`,
//! `.pgm`, `.tif`, `.tiff`, `.webp`), other files, files directly in `root`, and hidden entries
//! (names starting with `.`, which torchvision would read; a hidden folder is not entered and
//! is no class). A link back to a folder that contains it is passed over rather than followed
//! forever. Images are decoded with the `image` crate (PNG and JPEG), converted to gray or RGB,
//! resized with a triangle filter to the fixed size, laid out CHW with values in `[0, 1]`, and
//! then optionally normalised per channel.

use std::path::{Path, PathBuf};

use image::imageops::{self, FilterType};

use super::{Dataset, LoadReport, SkipReason, Skipped, Targets};
use crate::{Error, Result};

/// The colour channels to decode images to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channels {
    /// One channel (luma).
    Gray,
    /// Three channels, red, green, blue (alpha dropped).
    Rgb,
}

impl Channels {
    /// 1 or 3.
    pub fn count(self) -> usize {
        match self {
            Channels::Gray => 1,
            Channels::Rgb => 3,
        }
    }
}

/// How images are turned into feature vectors.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageOptions {
    /// Output `(width, height)` in pixels; every image is resized to it.
    pub size: (u32, u32),
    /// Gray or RGB.
    pub channels: Channels,
    /// Optional `(mean, std)` per channel, applied after scaling to `[0, 1]`:
    /// `v = (v - mean[c]) / std[c]`. Each vector has one value per channel, or a single value
    /// used for every channel; every std must be finite and > 0.
    pub normalize: Option<(Vec<f32>, Vec<f32>)>,
}

impl ImageOptions {
    /// Grayscale at `width × height`, no normalisation.
    pub fn gray(width: u32, height: u32) -> ImageOptions {
        ImageOptions { size: (width, height), channels: Channels::Gray, normalize: None }
    }

    /// RGB at `width × height`, no normalisation.
    pub fn rgb(width: u32, height: u32) -> ImageOptions {
        ImageOptions { size: (width, height), channels: Channels::Rgb, normalize: None }
    }

    /// The input shape of one image: `[C, H, W]`.
    pub fn input_shape(&self) -> Vec<usize> {
        vec![self.channels.count(), self.size.1 as usize, self.size.0 as usize]
    }

    /// Checks the size and normalisation; returns per-channel `(mean, std)` (identity when
    /// `normalize` is `None`).
    pub(crate) fn check(&self) -> Result<(Vec<f32>, Vec<f32>)> {
        let (w, h) = self.size;
        if w == 0 || h == 0 || (w as u64) * (h as u64) > 1 << 24 {
            return Err(Error::invalid(format!("image size {w}×{h} must be non-zero and at most 2^24 pixels")));
        }
        let c = self.channels.count();
        let Some((mean, std)) = &self.normalize else {
            return Ok((vec![0.0; c], vec![1.0; c]));
        };
        let widen = |v: &[f32], what: &str| -> Result<Vec<f32>> {
            match v.len() {
                1 => Ok(vec![v[0]; c]),
                l if l == c => Ok(v.to_vec()),
                l => Err(Error::invalid(format!("normalize {what} has {l} values for {c} channel(s)"))),
            }
        };
        let (mean, std) = (widen(mean, "mean")?, widen(std, "std")?);
        if mean.iter().any(|m| !m.is_finite()) || std.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(Error::invalid(format!("normalize needs finite means and finite stds > 0, got mean {mean:?}, std {std:?}")));
        }
        Ok((mean, std))
    }
}

impl Default for ImageOptions {
    /// 16×16 grayscale, no normalisation (the size of the built-in synthetic data).
    fn default() -> Self {
        ImageOptions::gray(16, 16)
    }
}

/// The most pixels an input image may have (e.g. 8000 × 5000).
pub const MAX_PIXELS: u64 = 40_000_000;

/// Decodes, converts, resizes and normalises one image into `out` (CHW).
fn image_into(path: &Path, opts: &ImageOptions, mean: &[f32], std: &[f32], out: &mut Vec<f32>) -> Result<()> {
    let open = || -> Result<image::ImageReader<std::io::BufReader<std::fs::File>>> {
        let reader = image::ImageReader::open(path).map_err(|e| Error::io(path, e))?;
        reader.with_guessed_format().map_err(|e| Error::io(path, e))
    };
    // The header alone says how big the decoded image will be. A file of a few bytes can claim
    // 8200×16392 pixels, which then costs seconds and gigabytes to decode and convert: refuse
    // before decoding (found by fuzzing the manifest loader).
    let (iw, ih) = open()?.into_dimensions().map_err(|e| Error::format(path, format!("cannot read the image header: {e}")))?;
    if iw as u64 * ih as u64 > MAX_PIXELS {
        return Err(Error::format(path, format!("the image claims {iw}×{ih} pixels, more than the {MAX_PIXELS} this loader accepts")));
    }
    let img = open()?.decode().map_err(|e| match e {
        image::ImageError::IoError(io) => Error::io(path, io),
        other => Error::format(path, format!("cannot decode image: {other}")),
    })?;
    let (w, h) = opts.size;
    let start = out.len();
    match opts.channels {
        Channels::Gray => {
            let mut g = img.to_luma32f();
            if g.dimensions() != (w, h) {
                g = imageops::resize(&g, w, h, FilterType::Triangle);
            }
            out.extend(g.pixels().map(|p| p.0[0]));
        }
        Channels::Rgb => {
            let mut rgb = img.to_rgb32f();
            if rgb.dimensions() != (w, h) {
                rgb = imageops::resize(&rgb, w, h, FilterType::Triangle);
            }
            for c in 0..3 {
                out.extend(rgb.pixels().map(|p| p.0[c]));
            }
        }
    }
    let plane = (w * h) as usize;
    for (i, v) in out[start..].iter_mut().enumerate() {
        let c = i / plane;
        // Filters can overshoot slightly; keep [0, 1] before normalising.
        *v = (v.clamp(0.0, 1.0) - mean[c]) / std[c];
        if !v.is_finite() {
            return Err(Error::format(path, "decoded to a non-finite value"));
        }
    }
    Ok(())
}

/// One image as a feature vector (`C × H × W` values, CHW, as [`load`] makes them), e.g. for
/// prediction. Errors name the file when it cannot be read or decoded.
pub fn load_image(path: &Path, opts: &ImageOptions) -> Result<Vec<f32>> {
    let (mean, std) = opts.check()?;
    let mut out = Vec::with_capacity(opts.input_shape().iter().product());
    image_into(path, opts, &mean, &std, &mut out)?;
    Ok(out)
}

/// Whether a file name has an image extension we decode.
pub(crate) fn is_image_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    !name.starts_with('.') && (lower.ends_with(".png") || lower.ends_with(".jpg") || lower.ends_with(".jpeg"))
}

/// The extensions torchvision's `ImageFolder` counts as images (`IMG_EXTENSIONS`) that this
/// build does not decode.
const UNDECODED_IMAGE_EXTENSIONS: [&str; 6] = [".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp"];

/// What becomes of a (non-hidden) file met in a class folder: `None` when it is an example.
fn file_skip_reason(name: &str) -> Option<SkipReason> {
    let lower = name.to_ascii_lowercase();
    if is_image_name(name) {
        None
    } else if UNDECODED_IMAGE_EXTENSIONS.iter().any(|e| lower.ends_with(e)) {
        Some(SkipReason::UnsupportedImage)
    } else {
        Some(SkipReason::NotAnImage)
    }
}

/// One entry of a folder.
struct Entry {
    name: String,
    path: PathBuf,
    /// A folder, or a link to one (links are followed, as torchvision does).
    is_dir: bool,
}

/// The entries of `dir`, sorted by name. Errors: `dir` unreadable, a name that is not UTF-8.
fn sorted_entries(dir: &Path) -> Result<Vec<Entry>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            return Err(Error::format(&path, "file name is not valid UTF-8"));
        };
        let is_dir = path.is_dir();
        out.push(Entry { name, path, is_dir });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Every folder under `dir` (itself included) that a torchvision-style walk enters, in no
/// particular order; hidden folders and links back to a containing folder go to `skipped`.
/// `ancestors` holds the canonical paths of the folders above `dir`.
fn walk_folders(dir: &Path, ancestors: &mut Vec<PathBuf>, folders: &mut Vec<PathBuf>, skipped: &mut Vec<Skipped>) -> Result<()> {
    folders.push(dir.to_path_buf());
    let canonical = std::fs::canonicalize(dir).map_err(|e| Error::io(dir, e))?;
    ancestors.push(canonical);
    for e in sorted_entries(dir)?.into_iter().filter(|e| e.is_dir) {
        if e.name.starts_with('.') {
            skipped.push(Skipped { path: e.path, reason: SkipReason::Hidden });
            continue;
        }
        let target = std::fs::canonicalize(&e.path).map_err(|err| Error::io(&e.path, err))?;
        if ancestors.contains(&target) {
            skipped.push(Skipped { path: e.path, reason: SkipReason::LinkCycle });
            continue;
        }
        walk_folders(&e.path, ancestors, folders, skipped)?;
    }
    ancestors.pop();
    Ok(())
}

/// The image files of one class folder, in torchvision's order (folders by path text, files by
/// name), and what was passed over in it.
fn class_images(class_dir: &Path, skipped: &mut Vec<Skipped>) -> Result<Vec<PathBuf>> {
    let mut folders = Vec::new();
    walk_folders(class_dir, &mut Vec::new(), &mut folders, skipped)?;
    // torchvision sorts os.walk's (folder, sub-folders, files) by the folder's path string.
    let mut folders: Vec<(String, PathBuf)> = folders.into_iter().map(|p| (p.to_string_lossy().into_owned(), p)).collect();
    folders.sort();
    let mut images = Vec::new();
    for (_, folder) in folders {
        for e in sorted_entries(&folder)?.into_iter().filter(|e| !e.is_dir) {
            let reason = if e.name.starts_with('.') { Some(SkipReason::Hidden) } else { file_skip_reason(&e.name) };
            match reason {
                None => images.push(e.path),
                Some(reason) => skipped.push(Skipped { path: e.path, reason }),
            }
        }
    }
    Ok(images)
}

/// Loads a class-per-folder image tree (see the module docs) into a class data set with input
/// shape `[C, H, W]` and the folder names as class names; [`load_with_report`] without the
/// report.
pub fn load(dir: &Path, opts: &ImageOptions) -> Result<Dataset> {
    load_with_report(dir, opts).map(|(ds, _)| ds)
}

/// Loads a class-per-folder image tree (see the module docs) into a class data set with input
/// shape `[C, H, W]` and the folder names as class names, and says what it read: the images per
/// class and every file or folder passed over, with why. Errors: `dir` unreadable or without a
/// class folder, a class folder without images in it or its sub-folders (named, with what was
/// passed over in it), a file that cannot be read or decoded (named), bad options.
pub fn load_with_report(dir: &Path, opts: &ImageOptions) -> Result<(Dataset, LoadReport)> {
    let (mean, std) = opts.check()?;
    let mut skipped = Vec::new();
    let mut classes: Vec<(String, PathBuf)> = Vec::new();
    for e in sorted_entries(dir)? {
        match (e.name.starts_with('.'), e.is_dir) {
            (true, _) => skipped.push(Skipped { path: e.path, reason: SkipReason::Hidden }),
            (false, true) => classes.push((e.name, e.path)),
            (false, false) => skipped.push(Skipped { path: e.path, reason: SkipReason::NotInClassFolder }),
        }
    }
    if classes.is_empty() {
        return Err(Error::format(dir, "no class sub-folders (expected root/<class>/<image>.png)"));
    }
    // One class is a data set to evaluate on (a model's class, by name); training a classifier
    // needs two, which the trainer's head checks (a one-output softmax learns nothing).
    if classes.len() > u32::MAX as usize {
        return Err(Error::format(dir, "too many class folders"));
    }
    let mut x = Vec::new();
    let mut y = Vec::new();
    for (ci, (name, cdir)) in classes.iter().enumerate() {
        let before = skipped.len();
        let files = class_images(cdir, &mut skipped)?;
        if files.is_empty() {
            let passed: Vec<String> = skipped[before..].iter().take(3).map(|s| format!("{} ({})", s.path.display(), s.reason)).collect();
            let passed = match skipped.len() - before {
                0 => String::new(),
                n => format!("; passed over {n}: {}{}", passed.join(", "), if n > 3 { ", ..." } else { "" }),
            };
            return Err(Error::format(
                cdir,
                format!("class folder {name:?} has no .png/.jpg/.jpeg images, in it or its sub-folders{passed}"),
            ));
        }
        for f in files {
            image_into(&f, opts, &mean, &std, &mut x)?;
            y.push(ci as u32);
        }
    }
    let shape = opts.input_shape();
    let ds = Dataset {
        x,
        n: y.len(),
        d: shape.iter().product(),
        input_shape: shape,
        targets: Targets::Classes { y, num_classes: classes.len() },
        label_names: classes.into_iter().map(|c| c.0).collect(),
    };
    ds.validate().map_err(|e| Error::format(dir, e.to_string()))?;
    let report = LoadReport { skipped, ..LoadReport::of(&ds, dir) };
    Ok((ds, report))
}
