//! matmul against the float64 reference: every kernel variant, every transpose form, odd,
//! vec4-aligned and non-square shapes, with and without the fused bias + activation epilogue,
//! output poisoned with NaN first. Then the autotuner: its choice is a variant, is remembered in
//! memory and in the cache file, a corrupt cache file is ignored, and the environment overrides
//! work (those run in child processes, which have their own environment and autotune state).
mod common;
use common::*;
use headswap::Gpu;
use headswap::kernels::autotune::{self, Source};
use headswap::kernels::matmul::{Problem, Variant, matmul_dispatch, matmul_dispatch_variant};
use headswap::kernels::{self, Activation, Epilogue, Transpose};
use headswap::reference;
use std::path::{Path, PathBuf};

const FORMS: [Transpose; 4] = [Transpose::NN, Transpose::NT, Transpose::TN, Transpose::TT];
const ACTS: [Activation; 6] =
    [Activation::LeakyRelu(0.1), Activation::Gelu, Activation::Identity, Activation::Sigmoid, Activation::Relu, Activation::Tanh];

/// Inputs of one product and its float64 result (bias and activation applied if given).
struct Case {
    m: usize,
    n: usize,
    k: usize,
    t: Transpose,
    act: Activation,
    a: Vec<f32>,
    b: Vec<f32>,
    bias: Option<Vec<f32>>,
    expected: Vec<f64>,
}

impl Case {
    fn new(m: usize, n: usize, k: usize, t: Transpose, act: Activation, with_bias: bool, seed: u64) -> Case {
        let a = rand_vec(seed, m * k);
        let b = rand_vec(seed + 1, k * n);
        let bias = with_bias.then(|| rand_vec(seed + 2, n));
        let mut z = reference::matmul(&to_f64(&a), &to_f64(&b), m, n, k, t);
        if let Some(bias) = &bias {
            reference::bias_add(&mut z, &to_f64(bias));
        }
        let expected = z.iter().map(|&v| reference::activate(act, v)).collect();
        Case { m, n, k, t, act, a, b, bias, expected }
    }

    fn shapes(&self) -> ([usize; 2], [usize; 2]) {
        let (m, n, k) = (self.m, self.n, self.k);
        match self.t {
            Transpose::NN => ([m, k], [k, n]),
            Transpose::NT => ([m, k], [n, k]),
            Transpose::TN => ([k, m], [k, n]),
            Transpose::TT => ([k, m], [n, k]),
        }
    }

    /// Runs the product with `variant` (or the autotuned choice), checks it against the
    /// reference, and returns the entry point that ran.
    fn check(&self, gpu: &Gpu, variant: Option<Variant>) -> &'static str {
        let (ashape, bshape) = self.shapes();
        let ga = upload(gpu, &ashape, &self.a);
        let gb = upload(gpu, &bshape, &self.b);
        let gbias = self.bias.as_ref().map(|v| upload(gpu, &[self.n], v));
        let gc = poisoned(gpu, &[self.m, self.n]);
        let epi = Epilogue { bias: gbias.as_ref(), activation: self.act };
        let d = match variant {
            Some(v) => matmul_dispatch_variant(gpu, &ga, &gb, &gc, self.t, epi, v).unwrap(),
            None => matmul_dispatch(gpu, &ga, &gb, &gc, self.t, epi).unwrap(),
        };
        gpu.run("matmul test", &[&d]).unwrap();
        let tol = Tolerance { rel: 1e-4, abs: 1e-5 * (self.k.max(1) as f64).sqrt() };
        let what = format!("{} {:?} m={} n={} k={} {:?} bias={}", d.name(), self.t, self.m, self.n, self.k, self.act, self.bias.is_some());
        assert_close(&what, &gc.download(gpu).unwrap(), &self.expected, tol);
        d.name()
    }
}

/// Every variant on `shapes` in every transpose form; the reference is computed once per case.
fn every_variant(shapes: &[(usize, usize, usize)], seed: u64) {
    let gpu = gpu();
    let mut i = 0;
    for &(m, n, k) in shapes {
        for t in FORMS {
            let case = Case::new(m, n, k, t, ACTS[i % ACTS.len()], i % 3 != 2, seed + 10 * i as u64);
            i += 1;
            for v in Variant::ALL.into_iter().filter(|v| v.fits(&gpu, m, n)) {
                assert_eq!(case.check(&gpu, Some(v)), v.entry(), "ran another kernel than the one asked for");
            }
        }
    }
}

#[test]
fn every_variant_odd_square_sizes_every_form() {
    let shapes: Vec<_> = ODD_SIZES.iter().map(|&s| (s, s, s)).collect();
    every_variant(&shapes, 10);
}

/// Shapes whose rows are 16-byte aligned (the block variants' vec4 paths), with tiles cut at the
/// edges, and non-square ones mixing aligned and odd dimensions.
#[test]
fn every_variant_aligned_and_non_square_shapes() {
    let shapes = [
        (4, 4, 4),
        (8, 12, 16),
        (36, 260, 8),
        (64, 4, 128),
        (260, 36, 132),
        (128, 10, 256),
        (1, 7, 33),
        (33, 1, 7),
        (7, 33, 1),
        (127, 5, 64),
        (3, 257, 19),
        (65, 130, 3),
        (12, 100, 10),
    ];
    every_variant(&shapes, 1000);
}

/// The shapes of a dense layer 784 → 512 at batch 64: forward NT, dW = dYᵀ·X (TN), dX = dY·W (NN).
#[test]
fn every_variant_mlp_layer() {
    let gpu = gpu();
    let cases = [
        Case::new(64, 512, 784, Transpose::NT, Activation::Relu, true, 7),
        Case::new(512, 784, 64, Transpose::TN, Activation::Identity, false, 8),
        Case::new(64, 784, 512, Transpose::NN, Activation::Identity, false, 9),
    ];
    for case in &cases {
        for v in Variant::ALL.into_iter().filter(|v| v.fits(&gpu, case.m, case.n)) {
            case.check(&gpu, Some(v));
        }
    }
}

#[test]
fn autotuned_choice_is_correct() {
    let gpu = gpu();
    for (i, &(m, n, k)) in
        [(1, 7, 33), (33, 1, 7), (127, 5, 64), (3, 257, 19), (65, 130, 3), (256, 10, 784), (40, 72, 36)].iter().enumerate()
    {
        for t in [Transpose::NN, Transpose::NT, Transpose::TN] {
            let entry = Case::new(m, n, k, t, Activation::Identity, false, 100 + i as u64).check(&gpu, None);
            assert!(Variant::ALL.iter().any(|v| v.entry() == entry), "{entry} is not a matmul variant");
        }
    }
}

#[test]
fn seeded_random_shapes() {
    let gpu = gpu();
    let mut r = headswap::Rng::new(2024);
    for i in 0..8 {
        let (m, n, k) = (1 + r.below(150) as usize, 1 + r.below(150) as usize, 1 + r.below(150) as usize);
        let t = [Transpose::NN, Transpose::NT, Transpose::TN][i % 3];
        Case::new(m, n, k, t, ACTS[i % ACTS.len()], i % 2 == 0, 500 + i as u64).check(&gpu, None);
    }
}

#[test]
fn fused_bias_and_activation_epilogue() {
    let gpu = gpu();
    let (m, n, k) = (33, 19, 7);
    let x = rand_vec(1, m * k);
    let w = rand_vec(2, n * k);
    let bias = rand_vec(3, n);
    let gx = upload(&gpu, &[m, k], &x);
    let gw = upload(&gpu, &[n, k], &w);
    let gbias = upload(&gpu, &[n], &bias);
    for act in Activation::ALL {
        let mut gy = poisoned(&gpu, &[m, n]);
        kernels::matmul_ex(&gpu, &gx, &gw, &mut gy, Transpose::NT, Epilogue { bias: Some(&gbias), activation: act }).unwrap();
        let mut z = reference::matmul(&to_f64(&x), &to_f64(&w), m, n, k, Transpose::NT);
        reference::bias_add(&mut z, &to_f64(&bias));
        let expected: Vec<f64> = z.iter().map(|&v| reference::activate(act, v)).collect();
        assert_close(&format!("dense forward {act:?}"), &gy.download(&gpu).unwrap(), &expected, Tolerance::F32);
    }
}

#[test]
fn shape_mismatch_is_an_error_not_a_panic() {
    let gpu = gpu();
    let a = upload(&gpu, &[2, 3], &[0.0; 6]);
    let b = upload(&gpu, &[4, 2], &[0.0; 8]);
    let mut c = poisoned(&gpu, &[2, 2]);
    let err = kernels::matmul(&gpu, &a, &b, &mut c, Transpose::NN).unwrap_err();
    assert!(err.to_string().contains("inner dimensions"), "{err}");
    let mut c_wrong = poisoned(&gpu, &[3, 3]);
    let b_ok = upload(&gpu, &[3, 2], &[0.0; 6]);
    assert!(kernels::matmul(&gpu, &a, &b_ok, &mut c_wrong, Transpose::NN).is_err());
    let bias = upload(&gpu, &[3], &[0.0; 3]);
    let epi = Epilogue { bias: Some(&bias), activation: Activation::Identity };
    let c_ok = poisoned(&gpu, &[2, 2]);
    let err = matmul_dispatch_variant(&gpu, &a, &b_ok, &c_ok, Transpose::NN, epi, Variant::Tile64).unwrap_err();
    assert!(err.to_string().contains("bias"), "{err}");
}

#[test]
fn pipelines_are_compiled_once() {
    let gpu = private_gpu();
    let a = upload(&gpu, &[4, 4], &rand_vec(1, 16));
    let mut c = poisoned(&gpu, &[4, 4]);
    kernels::matmul(&gpu, &a, &a, &mut c, Transpose::NT).unwrap();
    let before = gpu.pipeline_cache().len();
    for _ in 0..3 {
        kernels::matmul(&gpu, &a, &a, &mut c, Transpose::NT).unwrap();
    }
    assert_eq!(gpu.pipeline_cache().len(), before, "a repeated launch compiled a new pipeline");
}

// ---- the autotuner, in child processes -------------------------------------------------------

/// A fresh directory for one test's cache file.
fn cache_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("headswap_matmul_{name}_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `autotune_child` in a new process of this test binary with scenario `scenario`, the cache
/// directory `dir`, and `env` on top of a clean autotune environment.
fn child(scenario: &str, dir: &Path, env: &[(&str, &str)]) {
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args(["autotune_child", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env("HEADSWAP_TEST_CHILD", scenario)
        .env("HEADSWAP_CACHE_DIR", dir)
        .env_remove("HEADSWAP_MATMUL")
        .env_remove("HEADSWAP_AUTOTUNE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let text = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("1 passed"), "child scenario {scenario} {env:?} failed:\n{text}");
}

/// The product every scenario runs: NT with bias and ReLU, a class no other scenario shares.
fn child_case() -> Case {
    Case::new(40, 72, 36, Transpose::NT, Activation::Relu, true, 77)
}

fn problem(c: &Case) -> Problem {
    Problem { m: c.m, n: c.n, k: c.k, t: c.t }
}

fn cache_file(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("matmul_autotune.json")).expect("cache file written");
    serde_json::from_str(&text).expect("cache file is JSON")
}

#[test]
#[ignore = "a child process of the autotune tests (does nothing without HEADSWAP_TEST_CHILD)"]
fn autotune_child() {
    let Ok(scenario) = std::env::var("HEADSWAP_TEST_CHILD") else { return };
    let gpu = gpu();
    let case = child_case();
    let dir = PathBuf::from(std::env::var("HEADSWAP_CACHE_DIR").unwrap());
    match scenario.as_str() {
        // First use measures once; the choice is a variant, remembered in memory (same class,
        // another shape: no new measurement) and written to the cache file under the adapter key.
        "measure" | "corrupt" => {
            assert_eq!(autotune::measurements(), 0);
            let entry = case.check(&gpu, None);
            assert_eq!(autotune::measurements(), 1, "first use of a class measures it once");
            let v = Variant::ALL.into_iter().find(|v| v.entry() == entry).expect("the choice is a variant");
            assert_eq!(case.check(&gpu, None), entry);
            let same_class = Case::new(48, 100, 60, Transpose::NT, Activation::Relu, true, 78);
            assert_eq!(autotune::class_key(&problem(&same_class)), autotune::class_key(&problem(&case)));
            assert_eq!(same_class.check(&gpu, None), entry);
            assert_eq!(autotune::measurements(), 1, "a remembered class was measured again");
            let c = autotune::choose(&gpu, problem(&case), Epilogue::default()).unwrap();
            assert_eq!((c.variant, c.source), (v, Source::Memory));
            let file = cache_file(&dir);
            let saved = &file["adapters"][autotune::device_key(&gpu)][autotune::class_key(&problem(&case))];
            assert_eq!(saved.as_str(), Some(v.name()), "{file}");
        }
        // A new process finds the choice in the cache file and measures nothing.
        "reuse" => {
            let c = autotune::choose(&gpu, problem(&case), Epilogue::default()).unwrap();
            assert_eq!(c.source, Source::CacheFile);
            assert_eq!(case.check(&gpu, None), c.variant.entry());
            assert_eq!(autotune::measurements(), 0);
        }
        // HEADSWAP_MATMUL forces the variant; nothing is measured.
        "forced" => {
            let v = Variant::from_name(&std::env::var("HEADSWAP_MATMUL").unwrap()).unwrap();
            let v = if v.fits(&gpu, case.m, case.n) { v } else { Variant::Reg4x4 }; // what this adapter cannot run
            assert_eq!(case.check(&gpu, None), v.entry());
            assert_eq!(autotune::choose(&gpu, problem(&case), Epilogue::default()).unwrap().source, Source::Forced);
            assert_eq!(autotune::measurements(), 0);
        }
        // HEADSWAP_AUTOTUNE=0: the static default, nothing measured or written.
        "static" => {
            let expected = autotune::static_default(&gpu, &problem(&case));
            assert_eq!(case.check(&gpu, None), expected.entry());
            assert_eq!(autotune::measurements(), 0);
            assert!(!dir.join("matmul_autotune.json").exists());
        }
        other => panic!("unknown scenario {other}"),
    }
}

#[test]
fn autotune_remembers_its_choice_in_memory_and_in_the_cache_file() {
    let dir = cache_dir("remember");
    child("measure", &dir, &[]);
    child("reuse", &dir, &[]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_corrupt_cache_file_is_ignored() {
    for junk in ["{ not json", "[1, 2, 3]", "{\"version\": 99, \"adapters\": {}}", "{\"version\": 1, \"adapters\": {\"x\": 5}}"] {
        let dir = cache_dir("corrupt");
        std::fs::write(dir.join("matmul_autotune.json"), junk).unwrap();
        child("corrupt", &dir, &[]); // measures, then rewrites the file as valid JSON
        child("reuse", &dir, &[]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn environment_forces_a_variant_or_the_static_default() {
    let dir = cache_dir("env");
    for v in Variant::ALL {
        child("forced", &dir, &[("HEADSWAP_MATMUL", v.name())]);
    }
    child("static", &dir, &[("HEADSWAP_AUTOTUNE", "0")]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A gathered product on every variant: op(A)'s rows (or op(B)'s) are rows of a larger stored
/// operand picked through an index buffer at an offset; the reference multiplies the rows copied
/// out on the CPU.
#[test]
fn every_variant_reads_a_gathered_operand() {
    use headswap::kernels::matmul::{Gathered, matmul_dispatch_gathered, matmul_dispatch_gathered_variant};
    use headswap::{Rng, Tensor};
    let gpu = gpu();
    let shapes = [(1, 1, 1), (7, 5, 3), (33, 17, 8), (127, 4, 256), (128, 4, 256), (4, 64, 33), (64, 36, 12)];
    let mut seed = 9000;
    for &(m, n, k) in &shapes {
        for (side, t) in
            [(Gathered::A, Transpose::NN), (Gathered::A, Transpose::NT), (Gathered::B, Transpose::NN), (Gathered::B, Transpose::TN)]
        {
            seed += 10;
            let batch = if side == Gathered::A { m } else { k };
            let src_rows = batch + 9;
            let offset = 3;
            let mut r = Rng::new(seed);
            let indices: Vec<u32> = (0..offset + batch + 2).map(|_| r.below(src_rows as u64) as u32).collect();
            let picked = |src: &[f32], width: usize| -> Vec<f32> {
                indices[offset..offset + batch].iter().flat_map(|&i| src[i as usize * width..(i as usize + 1) * width].to_vec()).collect()
            };
            let (ta, tb) = (matches!(t, Transpose::TN | Transpose::TT), matches!(t, Transpose::NT | Transpose::TT));
            let (ashape, bshape) = match side {
                Gathered::A => ([src_rows, k], if tb { [n, k] } else { [k, n] }),
                Gathered::B => (if ta { [k, m] } else { [m, k] }, [src_rows, n]),
            };
            let a = rand_vec(seed + 1, ashape[0] * ashape[1]);
            let b = rand_vec(seed + 2, bshape[0] * bshape[1]);
            let bias = rand_vec(seed + 3, n);
            let (la, lb) = match side {
                Gathered::A => (picked(&a, k), b.clone()),
                Gathered::B => (a.clone(), picked(&b, n)),
            };
            let mut expected = reference::matmul(&to_f64(&la), &to_f64(&lb), m, n, k, t);
            reference::bias_add(&mut expected, &to_f64(&bias));
            let (ga, gb, gbias) = (upload(&gpu, &ashape, &a), upload(&gpu, &bshape, &b), upload(&gpu, &[n], &bias));
            let gi = Tensor::from_u32(&gpu, &[indices.len()], &indices).unwrap();
            let epi = Epilogue { bias: Some(&gbias), activation: Activation::Identity };
            let tol = Tolerance { rel: 1e-4, abs: 1e-5 * (k as f64).sqrt() };
            for v in Variant::ALL.into_iter().filter(|v| v.fits(&gpu, m, n)).map(Some).chain([None]) {
                let gc = poisoned(&gpu, &[m, n]);
                let d = match v {
                    Some(v) => matmul_dispatch_gathered_variant(&gpu, &ga, &gb, &gc, t, epi, side, &gi, v).unwrap(),
                    None => matmul_dispatch_gathered(&gpu, &ga, &gb, &gc, t, epi, side, &gi).unwrap(),
                };
                d.set_offset(&gpu, offset as u32).unwrap();
                d.run(&gpu).unwrap();
                let what = format!("{} gathered {side:?} {t:?} m={m} n={n} k={k}", d.dispatch().name());
                assert_close(&what, &gc.download(&gpu).unwrap(), &expected, tol);
            }
        }
    }
    // what cannot be gathered is an error
    let (a, b, c) = (upload(&gpu, &[10, 4], &[0.0; 40]), upload(&gpu, &[4, 3], &[0.0; 12]), poisoned(&gpu, &[5, 3]));
    let few = Tensor::from_u32(&gpu, &[4], &[0; 4]).unwrap();
    let epi = Epilogue::default();
    assert!(matmul_dispatch_gathered(&gpu, &a, &b, &c, Transpose::NN, epi, Gathered::A, &few).is_err(), "5 rows from 4 indices");
    let ta = upload(&gpu, &[4, 10], &[0.0; 40]);
    let enough = Tensor::from_u32(&gpu, &[5], &[0; 5]).unwrap();
    assert!(matmul_dispatch_gathered(&gpu, &ta, &b, &c, Transpose::TN, epi, Gathered::A, &enough).is_err(), "a transposed A");
}
