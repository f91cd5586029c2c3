//! Real handwritten digits (8×8, 1,797 images, classes 0–9) and a transfer scenario on them.
//!
//! The data is the test part of the UCI "Optical Recognition of Handwritten Digits" set
//! (E. Alpaydin, C. Kaynak, 1998; CC BY 4.0; <https://doi.org/10.24432/C50P49>), as shipped in
//! scikit-learn: `digits.csv.gz`, a gzip CSV without header of 65 integer columns per row — 64
//! pixels 0–16 (row-major 8×8) and the label. [`load`] scales pixels by 1/16 into `[0, 1]`.
//! The file is not part of this crate: it lives in `../shared/data/digits/` next to the crate
//! (see [`default_dir`]); code and tests using it must cope with its absence.
//!
//! **Transfer scenario.** Both tasks see 16×16 inputs (`[1, 16, 16]`), a 2×2 layout of 8×8
//! tiles:
//! * task A ([`single_as_scene_input`]): one digit in a random tile, the other three empty;
//!   10 classes.
//! * task B ([`scenes`]): all four tiles hold random digit images; 4 binary labels say which of
//!   4 chosen digits (default [`TASK_B_DIGITS`]) appear anywhere in the scene.
//!
//! **Fixed split.** With so few images, use [`fixed_split`]: the 1,797 rows shuffled with
//! `Rng::new(SPLIT_SEED)` ([`SPLIT_SEED`] = 1797), the first 449 (25 %, [`TEST_FRACTION`]) are
//! the test part, the other 1,348 the training part (see [`Dataset::split`]). Build the task A
//! and task B training sets from the training part and both evaluation sets from the test part,
//! so no digit image is seen in training and in evaluation.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::{Dataset, Targets};
use crate::{Error, Result, Rng};

/// The file name [`load`] reads inside its folder.
pub const FILE_NAME: &str = "digits.csv.gz";
/// The environment variable that [`default_dir`] checks first.
pub const ENV_DIR: &str = "HEADSWAP_DIGITS_DIR";
/// The seed of [`fixed_split`].
pub const SPLIT_SEED: u64 = 1797;
/// The fraction of rows [`fixed_split`] holds out for testing.
pub const TEST_FRACTION: f32 = 0.25;
/// The 4 digits whose presence the default task B labels.
pub const TASK_B_DIGITS: [u32; 4] = [2, 3, 5, 7];

/// The folder holding `digits.csv.gz`: `$HEADSWAP_DIGITS_DIR` when it is set and holds the file,
/// else `<crate>/../shared/data/digits` when it holds the file, else `None`.
pub fn default_dir() -> Option<PathBuf> {
    let has_file = |d: &Path| d.join(FILE_NAME).is_file();
    if let Some(d) = std::env::var_os(ENV_DIR).map(PathBuf::from)
        && has_file(&d)
    {
        return Some(d);
    }
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("shared").join("data").join("digits");
    has_file(&d).then_some(d)
}

/// [`load`] from [`default_dir`]; `Ok(None)` when the data is not there.
pub fn load_default() -> Result<Option<Dataset>> {
    default_dir().map(|d| load(&d)).transpose()
}

/// Reads `dir/digits.csv.gz`: `n` rows (1,797 for the shipped file) of 64 pixels scaled by
/// 1/16 into `[0, 1]`, input shape `[1, 8, 8]`, 10 classes named "0".."9". Errors name the
/// file, and the line and column of a malformed value (columns and lines counted from 1).
pub fn load(dir: &Path) -> Result<Dataset> {
    let path = dir.join(FILE_NAME);
    let file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::io::BufReader::new(file))
        .read_to_string(&mut text)
        .map_err(|e| Error::format(&path, format!("not a readable gzip-compressed UTF-8 CSV: {e}")))?;
    let mut x = Vec::with_capacity(1797 * 64);
    let mut y = Vec::with_capacity(1797);
    for (li, line) in text.lines().enumerate() {
        let line_no = li + 1;
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() != 65 {
            return Err(Error::format(&path, format!("line {line_no}: {} columns, expected 65 (64 pixels and a label)", fields.len())));
        }
        for (ci, f) in fields.iter().enumerate() {
            let (max, what) = if ci < 64 { (16, "pixel") } else { (9, "label") };
            let v: u32 = f.trim().parse().ok().filter(|&v| v <= max).ok_or_else(|| {
                Error::format(&path, format!("line {line_no}, column {}: {what} {f:?} is not an integer 0..={max}", ci + 1))
            })?;
            if ci < 64 {
                x.push(v as f32 / 16.0);
            } else {
                y.push(v);
            }
        }
    }
    if y.is_empty() {
        return Err(Error::format(&path, "no rows"));
    }
    let ds = Dataset {
        x,
        n: y.len(),
        d: 64,
        input_shape: vec![1, 8, 8],
        targets: Targets::Classes { y, num_classes: 10 },
        label_names: (0..10).map(|i| i.to_string()).collect(),
    };
    ds.validate()?;
    Ok(ds)
}

/// The documented fixed split `(train, test)`: `digits.split(TEST_FRACTION, SPLIT_SEED)`;
/// for the 1,797 shipped rows, 1,348 training and 449 test rows.
pub fn fixed_split(digits: &Dataset) -> (Dataset, Dataset) {
    digits.split(TEST_FRACTION, SPLIT_SEED)
}

/// The class of each row of an 8×8 digit data set, after checking it is one.
fn digit_classes(digits: &Dataset) -> Result<&[u32]> {
    if digits.d != 64 {
        return Err(Error::shape(format!("digit images must have d = 64 (8×8), not {}", digits.d)));
    }
    let Targets::Classes { y, .. } = &digits.targets else {
        return Err(Error::invalid("digit data set must have class targets"));
    };
    if digits.n == 0 || y.len() != digits.n || digits.x.len() != digits.n * 64 {
        return Err(Error::invalid(format!(
            "digit data set is empty or inconsistent (n = {}, {} labels, {} values)",
            digits.n,
            y.len(),
            digits.x.len()
        )));
    }
    Ok(y)
}

/// Copies the 8×8 image `src` into tile `t` (0..4, row-major 2×2) of the 16×16 canvas `dst`.
fn put_tile(dst: &mut [f32], t: usize, src: &[f32]) {
    let (ox, oy) = ((t % 2) * 8, (t / 2) * 8);
    for (r, src_row) in src.chunks_exact(8).enumerate() {
        let start = (oy + r) * 16 + ox;
        dst[start..start + 8].copy_from_slice(src_row);
    }
}

/// Task A input for the transfer scenario: each digit of `digits` (8×8, e.g. from [`load`])
/// placed in a tile chosen by `Rng::new(seed)` of an otherwise empty 16×16 canvas; same rows,
/// classes and names, input shape `[1, 16, 16]`.
pub fn single_as_scene_input(digits: &Dataset, seed: u64) -> Result<Dataset> {
    let y = digit_classes(digits)?;
    let mut rng = Rng::new(seed ^ 0xD161_7500_0000_000A);
    let mut x = vec![0f32; digits.n * 256];
    for (canvas, src) in x.chunks_exact_mut(256).zip(digits.x.chunks_exact(64)) {
        put_tile(canvas, rng.below(4) as usize, src);
    }
    let ds = Dataset {
        x,
        n: digits.n,
        d: 256,
        input_shape: vec![1, 16, 16],
        targets: Targets::Classes { y: y.to_vec(), num_classes: digits.num_outputs() },
        label_names: digits.label_names.clone(),
    };
    ds.validate()?;
    Ok(ds)
}

/// Task B for the transfer scenario: `n` 16×16 scenes, each a 2×2 layout of 4 digit images
/// drawn uniformly (with replacement) from `digits` by `Rng::new(seed)`; label `j` (k = 4,
/// named after the digit) is 1 when `chosen[j]` appears in any tile, else 0. With 10 balanced
/// classes each label is positive in about 1 − 0.9⁴ ≈ 34 % of scenes. Errors when `digits` is not
/// an 8×8 class data set, `chosen` has repeats or a class the data set lacks, or `n` is 0.
pub fn scenes(digits: &Dataset, n: usize, chosen: [u32; 4], seed: u64) -> Result<Dataset> {
    let y = digit_classes(digits)?;
    if n == 0 {
        return Err(Error::invalid("digits::scenes: n must be > 0"));
    }
    super::check_n("digits::scenes", n, 16)?;
    for (j, &c) in chosen.iter().enumerate() {
        if c as usize >= digits.num_outputs() {
            return Err(Error::invalid(format!(
                "chosen digit {c} is not a class of the data set (num_classes = {})",
                digits.num_outputs()
            )));
        }
        if chosen[..j].contains(&c) {
            return Err(Error::invalid(format!("chosen digits {chosen:?} repeat {c}")));
        }
    }
    let mut rng = Rng::new(seed ^ 0xD161_7500_0000_000B);
    let mut x = vec![0f32; n * 256];
    let mut labels = vec![0f32; n * 4];
    for (canvas, lab) in x.chunks_exact_mut(256).zip(labels.chunks_exact_mut(4)) {
        for t in 0..4 {
            let i = rng.below(digits.n as u64) as usize;
            put_tile(canvas, t, &digits.x[i * 64..(i + 1) * 64]);
            if let Some(j) = chosen.iter().position(|&c| c == y[i]) {
                lab[j] = 1.0;
            }
        }
    }
    let names = chosen.iter().map(|&c| digits.label_names.get(c as usize).cloned().unwrap_or_else(|| c.to_string())).collect();
    let ds = Dataset { x, n, d: 256, input_shape: vec![1, 16, 16], targets: Targets::Labels { y: labels, k: 4 }, label_names: names };
    ds.validate()?;
    Ok(ds)
}
