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
//! resized with a triangle filter to the fixed size (stretched, or torchvision's evaluation
//! resize and centre crop: [`Resize`]), laid out CHW with values in `[0, 1]`, and then
//! optionally normalised per channel.

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

/// How an image is brought to the output size `W × H`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Resize {
    /// Resized to exactly `W × H` (the aspect ratio is not kept).
    #[default]
    Stretch,
    /// torchvision's evaluation transform, `Resize(256)` + `CenterCrop(224)`, scaled to the
    /// output size: the shorter side is resized to `S = round(max(W, H) · 256 / 224)` and the
    /// longer side to `int(S · long / short)` (torchvision truncates), keeping the aspect ratio;
    /// then the centre `W × H` is cropped, its top-left corner at `round((h − H) / 2)`,
    /// `round((w − W) / 2)` with Python's round-half-to-even, as `CenterCrop` places it. For a
    /// square size `S × S` this is exactly `Resize(round(S · 256 / 224))` + `CenterCrop(S)`
    /// (224 → 256, 32 → 37); since `S ≥ max(W, H)` the crop always fits.
    ShorterSideCenterCrop,
}

/// How images are turned into feature vectors.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageOptions {
    /// Output `(width, height)` in pixels; every image is brought to it as `resize` says.
    pub size: (u32, u32),
    /// Stretched to `size` or resized and centre-cropped.
    pub resize: Resize,
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
        ImageOptions { size: (width, height), resize: Resize::Stretch, channels: Channels::Gray, normalize: None }
    }

    /// RGB at `width × height`, no normalisation.
    pub fn rgb(width: u32, height: u32) -> ImageOptions {
        ImageOptions { size: (width, height), resize: Resize::Stretch, channels: Channels::Rgb, normalize: None }
    }

    /// ImageNet's per-channel mean of RGB values in `[0, 1]` (torchvision's `Normalize`).
    pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
    /// ImageNet's per-channel standard deviation.
    pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

    /// torchvision's evaluation preprocessing for ImageNet models at `width × height` RGB:
    /// [`Resize::ShorterSideCenterCrop`], then ImageNet's mean and std.
    pub fn imagenet(width: u32, height: u32) -> ImageOptions {
        ImageOptions {
            size: (width, height),
            resize: Resize::ShorterSideCenterCrop,
            channels: Channels::Rgb,
            normalize: Some((Self::IMAGENET_MEAN.to_vec(), Self::IMAGENET_STD.to_vec())),
        }
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
            let g = resized(img.to_luma32f(), opts);
            out.extend(g.pixels().map(|p| p.0[0]));
        }
        Channels::Rgb => {
            let rgb = resized(img.to_rgb32f(), opts);
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

/// Python's `round` of `x / 2` for an integer `x`: halves go to the even neighbour.
fn half_round_even(x: u32) -> u32 {
    let half = x / 2;
    if x % 2 == 1 && half % 2 == 1 { half + 1 } else { half }
}

/// `img` brought to `opts.size` as `opts.resize` says.
fn resized<P: image::Pixel + 'static>(
    img: image::ImageBuffer<P, Vec<P::Subpixel>>,
    opts: &ImageOptions,
) -> image::ImageBuffer<P, Vec<P::Subpixel>> {
    let (w, h) = opts.size;
    let (iw, ih) = img.dimensions();
    match opts.resize {
        Resize::Stretch if (iw, ih) == (w, h) => img,
        Resize::Stretch => imageops::resize(&img, w, h, FilterType::Triangle),
        Resize::ShorterSideCenterCrop => {
            let short_side = (w.max(h) as f64 * 256.0 / 224.0).round() as u32;
            // torchvision: new_long = int(new_short * long / short), in floating point
            let long_side = |long: u32, short: u32| (short_side as f64 * long as f64 / short as f64) as u32;
            let (rw, rh) = if iw <= ih { (short_side, long_side(ih, iw)) } else { (long_side(iw, ih), short_side) };
            let scaled = if (rw, rh) == (iw, ih) { img } else { imageops::resize(&img, rw, rh, FilterType::Triangle) };
            let (left, top) = (half_round_even(rw - w), half_round_even(rh - h));
            imageops::crop_imm(&scaled, left, top, w, h).to_image()
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// torchvision's `Resize(round(S·256/224))` + `CenterCrop` + `ToTensor` + `Normalize` on three
    /// small photographs of odd sizes and both orientations, at a square and a non-square size,
    /// as `scripts/imagenet_preprocess_fixture.py` recorded them. Both sides resample with a
    /// triangle (bilinear, antialiased) filter; PIL rounds to 8 bits between its two passes and
    /// the `image` crate does not, so values agree to about one grey level (1/255 before the
    /// division by std ≈ 0.225).
    #[test]
    fn imagenet_preprocessing_is_torchvisions() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/imagenet_preprocess");
        let bytes = std::fs::read(dir.join("expected.safetensors")).unwrap();
        let expected = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut checked = 0;
        for name in ["landscape", "portrait", "square"] {
            for (w, h) in [(32u32, 32u32), (40, 24)] {
                let t = expected.tensor(&format!("{name}_{w}x{h}")).unwrap();
                assert_eq!(t.shape(), [3, h as usize, w as usize]);
                let want: Vec<f32> = t.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
                let mut got = vec![f32::NAN; want.len()];
                got.copy_from_slice(&load_image(&dir.join(format!("{name}.png")), &ImageOptions::imagenet(w, h)).unwrap());
                let worst = got.iter().zip(&want).map(|(g, e)| (g - e).abs()).fold(0.0f32, f32::max);
                let mean = got.iter().zip(&want).map(|(g, e)| (g - e).abs() as f64).sum::<f64>() / want.len() as f64;
                eprintln!("{name} {w}x{h}: max |diff| {worst}, mean {mean}");
                // a misplaced crop or a wrong resize size would move whole edges (diffs ~1)
                assert!(worst < 2.5 / 255.0 / 0.224, "{name} at {w}x{h}: max |diff| {worst}");
                assert!(mean < 0.5 / 255.0 / 0.224, "{name} at {w}x{h}: mean |diff| {mean}");
                checked += 1;
            }
        }
        assert_eq!(checked, 6);
    }

    #[test]
    fn centre_crop_rounds_half_to_even_as_python_does() {
        // Python: round(0.5) = 0, round(1.5) = 2, round(2.5) = 2, round(3.5) = 4
        let got: Vec<u32> = (0..8).map(half_round_even).collect();
        assert_eq!(got, [0, 0, 1, 2, 2, 2, 3, 4]);
    }
}
