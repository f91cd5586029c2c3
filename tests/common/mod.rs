//! Shared test helpers: the GPU (failing loudly when there is none), seeded random inputs,
//! NaN-poisoned outputs, and a tolerance type whose failures explain themselves.
#![allow(dead_code)]

pub mod models;
pub mod trainer;

use headswap::{Gpu, Rng, Tensor};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A fresh, unique temporary folder, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let p = std::env::temp_dir().join(format!("headswap-test-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The adapter the suite runs on (`WGPU_BACKEND` picks it). No adapter is a test failure, never a
/// silent skip.
pub fn gpu() -> Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| match Gpu::new() {
        Ok(g) => {
            eprintln!("test adapter: {} ({:?})", g.adapter_info().name, g.adapter_info().backend);
            g
        }
        Err(e) => panic!("the test suite needs a GPU adapter and found none: {e}"),
    })
    .clone()
}

/// A device of the test's own, for tests that count what it compiles: the shared [`gpu`] is used
/// by the binary's other tests at the same time, so its pipeline cache grows under them.
pub fn private_gpu() -> Gpu {
    Gpu::new().unwrap_or_else(|e| panic!("the test suite needs a GPU adapter and found none: {e}"))
}

/// Uniform random values in [-1, 1) from `seed`.
pub fn rand_vec(seed: u64, n: usize) -> Vec<f32> {
    let mut r = Rng::new(seed);
    (0..n).map(|_| r.uniform(-1.0, 1.0) as f32).collect()
}

/// Uniform random values in [lo, hi).
pub fn rand_range(seed: u64, n: usize, lo: f64, hi: f64) -> Vec<f32> {
    let mut r = Rng::new(seed);
    (0..n).map(|_| r.uniform(lo, hi) as f32).collect()
}

pub fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// Uploads data as an f32 tensor.
pub fn upload(gpu: &Gpu, shape: &[usize], data: &[f32]) -> Tensor {
    Tensor::from_slice(gpu, shape, data).expect("upload")
}

/// A tensor filled with NaN, so any element a kernel fails to write shows up in the comparison.
pub fn poisoned(gpu: &Gpu, shape: &[usize]) -> Tensor {
    let t = Tensor::zeros(gpu, shape).expect("alloc");
    t.fill(gpu, f32::NAN).expect("poison");
    t
}

/// `|actual − expected| ≤ abs + rel·|expected|`, element by element. NaN never equals anything.
#[derive(Debug, Clone, Copy)]
pub struct Tolerance {
    pub rel: f64,
    pub abs: f64,
}

impl Tolerance {
    /// f32 arithmetic against an f64 reference on short reductions.
    pub const STRICT: Tolerance = Tolerance { rel: 1e-5, abs: 1e-6 };
    /// f32 results of long reductions (matmul with K in the hundreds).
    pub const F32: Tolerance = Tolerance { rel: 1e-4, abs: 1e-5 };
    /// Comparisons of whole training runs or finite differences.
    pub const LOOSE: Tolerance = Tolerance { rel: 1e-3, abs: 1e-4 };
}

/// Compares element by element; on failure lists the first mismatches with their indices,
/// values, differences and the tolerance, and how many more failed.
pub fn assert_close(what: &str, actual: &[f32], expected: &[f64], tol: Tolerance) {
    assert_eq!(actual.len(), expected.len(), "{what}: length {} but expected {}", actual.len(), expected.len());
    let mut bad = Vec::new();
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        let a = a as f64;
        let ok = a.is_finite() == e.is_finite() && (a == e || (a - e).abs() <= tol.abs + tol.rel * e.abs());
        if !ok {
            bad.push((i, a, e));
        }
    }
    if !bad.is_empty() {
        let mut msg =
            format!("{what}: {} of {} elements differ (tolerance rel {:e}, abs {:e})\n", bad.len(), actual.len(), tol.rel, tol.abs);
        for (i, a, e) in bad.iter().take(6) {
            msg += &format!(
                "  [{i}] actual {a:e}, expected {e:e}, abs diff {:e}, rel diff {:e}\n",
                (a - e).abs(),
                (a - e).abs() / e.abs().max(f64::MIN_POSITIVE)
            );
        }
        if bad.len() > 6 {
            msg += &format!("  ... and {} more\n", bad.len() - 6);
        }
        panic!("{msg}");
    }
}

/// The awkward sizes every kernel is swept over: 1, 7, 33, 127, 257 (none a tile multiple).
pub const ODD_SIZES: [usize; 5] = [1, 7, 33, 127, 257];
