//! Replays the fuzzing inputs kept in the repository through the four file loaders, without a
//! fuzzer. Every file in `fuzz/seeds/*/`, `fuzz/corpus/*/` and `fuzz/regressions/` goes through
//! each harness of `fuzz/src/lib.rs` (checkpoint, tensor file and CSV manifest loading, with their
//! round trips); none may panic or take more than [`SLOW`]. The regressions run one per child
//! process (this test binary again), so an input that aborts (a failed huge allocation) or
//! exhausts memory fails its own case instead of the whole run. Seeds named `valid-*` must load.
//!
//! `HEADSWAP_WRITE_SEEDS=1 cargo test --test fuzz_regressions -- --ignored write_seeds` rewrites
//! the seed files in `fuzz/seeds/` with headswap's own savers (and a few hand-built files).

#[path = "../fuzz/src/lib.rs"]
mod harness;

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use harness::{Scratch, TARGETS};
use headswap::checkpoint::{self, Checkpoint, IntDtype, IntTensor, NamedTensor, StorageDtype};
use headswap::data::{Dataset, ImageOptions, Targets, manifest, tensor_file};
use safetensors::Dtype;
use safetensors::tensor::TensorView;

/// The longest one harness may take on one input (every kept input takes milliseconds; the
/// fuzzer calls anything over 10 s a hang).
const SLOW: Duration = Duration::from_secs(5);

/// Set (to an input's path) in the child process that replays one regression.
const REPLAY_ENV: &str = "HEADSWAP_FUZZ_REPLAY";

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The plain files directly in `dir`, sorted (none when `dir` does not exist).
fn files_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut v: Vec<PathBuf> = rd.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_file()).collect();
    v.sort();
    v
}

/// Sub-folders of `dir`, sorted.
fn dirs_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut v: Vec<PathBuf> = rd.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_dir()).collect();
    v.sort();
    v
}

fn panic_message(e: &(dyn std::any::Any + Send)) -> String {
    e.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| e.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(non-string panic)".into())
}

/// Runs `inputs` through every harness; one line per panic or slow run.
fn replay(inputs: &[PathBuf]) -> Vec<String> {
    let scratch: Vec<Scratch> = TARGETS.iter().map(|(name, _)| Scratch::new(&format!("test-{name}"))).collect();
    let mut failures = Vec::new();
    for path in inputs {
        let bytes = std::fs::read(path).unwrap();
        for ((name, f), s) in TARGETS.iter().zip(&scratch) {
            let start = Instant::now();
            if let Err(e) = catch_unwind(AssertUnwindSafe(|| f(s, &bytes))) {
                failures.push(format!("{name} on {}: panicked: {}", path.display(), panic_message(&*e)));
            }
            let took = start.elapsed();
            if took > SLOW {
                failures.push(format!(
                    "{name} on {}: took {:.1} s (more than {} s: a hang or a runaway input)",
                    path.display(),
                    took.as_secs_f64(),
                    SLOW.as_secs()
                ));
            }
        }
    }
    failures
}

#[test]
fn seeds_and_corpora_do_not_panic_any_loader() {
    let root = fuzz_dir();
    let inputs: Vec<PathBuf> = ["seeds", "corpus"].iter().flat_map(|g| dirs_in(&root.join(g))).flat_map(|d| files_in(&d)).collect();
    assert!(inputs.len() >= 10, "expected the seed files in fuzz/seeds, found {} inputs in all", inputs.len());
    let failures = replay(&inputs);
    eprintln!("replayed {} inputs through {} harnesses", inputs.len(), TARGETS.len());
    assert!(failures.is_empty(), "{} failure(s):\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn regressions_do_not_crash_any_loader() {
    let inputs: Vec<PathBuf> =
        files_in(&fuzz_dir().join("regressions")).into_iter().filter(|p| p.extension().is_some_and(|e| e == "bin")).collect();
    let exe = std::env::current_exe().unwrap();
    // The children's scratch folders go in here, removed at the end even when a child aborts.
    let parent = Scratch::new("test-regressions");
    let mut failures = Vec::new();
    for path in &inputs {
        let out = Command::new(&exe)
            .args(["replay_one_input", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
            .env(REPLAY_ENV, path)
            .env("RUST_BACKTRACE", "0")
            .env(harness::SCRATCH_ENV, parent.dir())
            .output()
            .unwrap();
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("FAILED ")).collect();
            let why = if lines.is_empty() {
                // No report: the process died (abort, out of memory); its last words say why.
                let last = stderr.lines().rev().find(|l| !l.trim().is_empty() && !l.starts_with("note: ")).unwrap_or("");
                format!("{}: child process died ({}): {last}", path.display(), out.status)
            } else {
                lines.iter().map(|l| &l[7..]).collect::<Vec<_>>().join("\n")
            };
            failures.push(why);
        }
    }
    eprintln!("replayed {} regression inputs, one process each", inputs.len());
    assert!(failures.is_empty(), "{} regression failure(s):\n{}", failures.len(), failures.join("\n"));
}

/// The child process of `regressions_do_not_crash_any_loader`: replays the one input named by
/// `HEADSWAP_FUZZ_REPLAY` (does nothing without it).
#[test]
#[ignore = "run by regressions_do_not_crash_any_loader in a child process"]
fn replay_one_input() {
    let Some(path) = std::env::var_os(REPLAY_ENV) else { return };
    let failures = replay(&[PathBuf::from(path)]);
    for f in &failures {
        eprintln!("FAILED {f}");
    }
    assert!(failures.is_empty(), "{} failure(s)", failures.len());
}

#[test]
fn valid_seeds_load() {
    let root = fuzz_dir().join("seeds");
    let mut checked = 0;
    for (target, load) in [
        ("checkpoint_load", (|p: &Path| checkpoint::load(p).map(drop)) as fn(&Path) -> headswap::Result<()>),
        ("tensor_file_load", |p: &Path| tensor_file::load(p).map(drop)),
        ("pth_load", |p: &Path| checkpoint::load(p).map(drop)),
    ] {
        for p in files_in(&root.join(target)).iter().filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("valid-")) {
            load(p).unwrap_or_else(|e| panic!("{} does not load: {e}", p.display()));
            checked += 1;
        }
    }
    // and the `err-*` ones are refused, with an error, not a panic
    for (target, load) in [
        ("checkpoint_load", (|p: &Path| checkpoint::load(p).map(drop)) as fn(&Path) -> headswap::Result<()>),
        ("tensor_file_load", |p: &Path| tensor_file::load(p).map(drop)),
        ("pth_load", |p: &Path| checkpoint::load(p).map(drop)),
    ] {
        for p in files_in(&root.join(target)).iter().filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("err-")) {
            assert!(load(p).is_err(), "{} loads, but its name says it must be refused", p.display());
        }
    }
    // The bare pickles of `pth_load` load inside the harness's torch zip (so the wrapper is right).
    let s = Scratch::new("test-pth-pickles");
    let mut pickles = 0;
    for p in files_in(&root.join("pth_load")).iter().filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("pickle-")) {
        let path = s.write("wrapped.pth", &harness::torch_zip(&std::fs::read(p).unwrap()));
        let ck = checkpoint::load(&path).unwrap_or_else(|e| panic!("{} wrapped does not load: {e}", p.display()));
        assert!(!ck.tensors.is_empty(), "{}: no tensors", p.display());
        pickles += 1;
    }
    assert!(pickles >= 3, "only {pickles} pickle seeds");
    // A manifest seed names images beside it in the harness's scratch folder: rebuild that.
    let s = Scratch::new("test-valid-manifests");
    for p in files_in(&root.join("manifest_load")).iter().filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("valid-")) {
        let bytes = std::fs::read(p).unwrap();
        let (csv, img) = match bytes.iter().position(|&b| b == 0) {
            Some(i) => (&bytes[..i], Some(&bytes[i + 1..])),
            None => (&bytes[..], None),
        };
        if let Some(img) = img {
            s.write("img.png", img);
        }
        let csv_path = s.write("manifest.csv", csv);
        for opts in harness::manifest_options() {
            manifest::load(&csv_path, &opts).unwrap_or_else(|e| panic!("{} does not load: {e}", p.display()));
        }
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} valid seeds");
}

// ---- seed writer (run by hand: cargo test --test fuzz_regressions -- --ignored write_seeds) ----

fn tensor(name: &str, shape: Vec<usize>, seed: u32) -> NamedTensor {
    let n: usize = shape.iter().product();
    let data = (0..n).map(|i| ((i as u32 * 7 + seed) % 13) as f32 / 4.0 - 1.5).collect();
    NamedTensor::new(name, shape, data).unwrap()
}

fn mlp_checkpoint() -> Checkpoint {
    let mut c = Checkpoint::new();
    for t in
        [tensor("0.weight", vec![3, 4], 1), tensor("0.bias", vec![3], 2), tensor("2.weight", vec![2, 3], 3), tensor("2.bias", vec![2], 4)]
    {
        c.push(t).unwrap();
    }
    let layers = r#"[{"type":"dense","inputs":4,"outputs":3,"activation":"relu","part":"trunk"},{"type":"dense","inputs":3,"outputs":2,"activation":"identity","part":"head"}]"#;
    c.metadata.insert(checkpoint::FORMAT_KEY.into(), checkpoint::FORMAT_VERSION.into());
    c.metadata.insert(checkpoint::LAYERS_KEY.into(), layers.into());
    c.metadata.insert("headswap.head_kind".into(), "classes".into());
    c.metadata.insert("format".into(), "pt".into());
    c
}

/// A safetensors file of `(name, dtype, shape, bytes)` tensors built with the safetensors crate.
fn raw_safetensors(tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)], meta: &[(&str, &str)]) -> Vec<u8> {
    let views: Vec<(String, TensorView)> =
        tensors.iter().map(|(n, dt, shape, b)| (n.to_string(), TensorView::new(*dt, shape.clone(), b).unwrap())).collect();
    let meta: HashMap<String, String> = meta.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    safetensors::serialize(views, if meta.is_empty() { None } else { Some(meta) }).unwrap()
}

fn le<T: Copy, const N: usize>(v: &[T], f: fn(T) -> [u8; N]) -> Vec<u8> {
    v.iter().flat_map(|&x| f(x)).collect()
}

fn f32s(v: &[f32]) -> Vec<u8> {
    le(v, f32::to_le_bytes)
}

fn encode_png(w: u32, h: u32, color: image::ExtendedColorType, pixels: &[u8]) -> Vec<u8> {
    use image::ImageEncoder;
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out).write_image(pixels, w, h, color).unwrap();
    out
}

fn encode_jpeg(w: u32, h: u32, pixels: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80).encode(pixels, w, h, image::ExtendedColorType::Rgb8).unwrap();
    out
}

#[test]
#[ignore = "writes the seed files into fuzz/seeds; run by hand with HEADSWAP_WRITE_SEEDS=1"]
fn write_seeds() {
    if std::env::var_os("HEADSWAP_WRITE_SEEDS").is_none() {
        eprintln!("set HEADSWAP_WRITE_SEEDS=1 to rewrite fuzz/seeds");
        return;
    }
    let root = fuzz_dir().join("seeds");
    let tmp = Scratch::new("write-seeds");
    let put = |target: &str, name: &str, bytes: &[u8]| {
        let d = root.join(target);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(name), bytes).unwrap();
    };

    // checkpoint_load: headswap's saver (F32 and F16), PyTorch's fixture, other dtypes and edge cases.
    let ck = |name: &str, c: &Checkpoint, dt: StorageDtype| {
        let p = tmp.path("ck.safetensors");
        checkpoint::save(&p, c, dt).unwrap();
        put("checkpoint_load", name, &std::fs::read(&p).unwrap());
    };
    let mlp = mlp_checkpoint();
    ck("valid-mlp-f32.safetensors", &mlp, StorageDtype::F32);
    ck("valid-mlp-f16.safetensors", &mlp, StorageDtype::F16);
    let mut resume = mlp.clone();
    for p in ["0.weight", "0.bias"] {
        let shape = mlp.get(p).unwrap().shape.clone();
        resume.push(tensor(&checkpoint::optim_tensor_name(p, "exp_avg"), shape.clone(), 5)).unwrap();
        resume.push(tensor(&checkpoint::optim_tensor_name(p, "exp_avg_sq"), shape, 6)).unwrap();
    }
    resume.metadata.insert(checkpoint::OPTIM_STEP_KEY.into(), "12".into());
    resume.metadata.insert(checkpoint::TRAIN_EPOCH_KEY.into(), "3".into());
    resume.metadata.insert(checkpoint::TRAIN_RNG_KEY.into(), "[1,2,3,4]".into());
    ck("valid-resume.safetensors", &resume, StorageDtype::F32);
    ck("valid-empty.safetensors", &Checkpoint::new(), StorageDtype::F32);
    let mut odd = Checkpoint::new();
    odd.push(NamedTensor::new("scalar", vec![], vec![f32::NAN]).unwrap()).unwrap();
    odd.push(NamedTensor::new("empty", vec![0, 3], vec![]).unwrap()).unwrap();
    odd.push(NamedTensor::new("odd \"name\" \u{e9}", vec![1, 1, 2], vec![f32::INFINITY, -0.0]).unwrap()).unwrap();
    odd.metadata.insert("note".into(), "quotes \" and \\ and \n".into());
    ck("valid-odd-names.safetensors", &odd, StorageDtype::F32);
    put(
        "checkpoint_load",
        "valid-torch-state-dict.safetensors",
        &std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torch_state_dict.safetensors")).unwrap(),
    );
    let bf16: Vec<u8> = [1.0f32, -2.5, 0.125, 3.0].iter().flat_map(|v| ((v.to_bits() >> 16) as u16).to_le_bytes()).collect();
    put(
        "checkpoint_load",
        "valid-bf16-f64.safetensors",
        &raw_safetensors(
            &[("0.weight", Dtype::BF16, vec![2, 2], bf16), ("0.bias", Dtype::F64, vec![2], le(&[0.5f64, -1.0], f64::to_le_bytes))],
            &[("format", "pt")],
        ),
    );
    // Integer tensors load (exactly, as i64) since issue 12: a lone one, and a torchvision-like
    // BatchNorm block with its I64 scalar `num_batches_tracked` among every integer dtype.
    put(
        "checkpoint_load",
        "valid-int-tensor.safetensors",
        &raw_safetensors(&[("0.weight", Dtype::I32, vec![2], le(&[1i32, 2], i32::to_le_bytes))], &[]),
    );
    put(
        "checkpoint_load",
        "valid-int-dtypes.safetensors",
        &raw_safetensors(
            &[
                ("1.weight", Dtype::F32, vec![2], f32s(&[1.0, 0.5])),
                ("1.bias", Dtype::F32, vec![2], f32s(&[0.0, -0.5])),
                ("1.running_mean", Dtype::F32, vec![2], f32s(&[0.1, 0.2])),
                ("1.num_batches_tracked", Dtype::I64, vec![], le(&[(1i64 << 53) + 1], i64::to_le_bytes)),
                ("i32", Dtype::I32, vec![2, 1], le(&[i32::MIN, 7], i32::to_le_bytes)),
                ("i16", Dtype::I16, vec![2], le(&[i16::MIN, i16::MAX], i16::to_le_bytes)),
                ("i8", Dtype::I8, vec![2], vec![0x80, 0x7f]),
                ("u8", Dtype::U8, vec![3], vec![0, 1, 255]),
                ("bool", Dtype::BOOL, vec![1, 2], vec![1, 0]),
                ("u16", Dtype::U16, vec![1], le(&[65535u16], u16::to_le_bytes)),
                ("u32", Dtype::U32, vec![], le(&[u32::MAX], u32::to_le_bytes)),
                ("u64", Dtype::U64, vec![1], le(&[i64::MAX as u64], u64::to_le_bytes)),
                ("optim.count", Dtype::I64, vec![], le(&[-3i64], i64::to_le_bytes)),
                ("empty", Dtype::I64, vec![0, 2], vec![]),
            ],
            &[("format", "pt")],
        ),
    );
    // The model metadata a network loader reads (label names, input layout), well-formed.
    let mut named = mlp.clone();
    named.metadata.insert(checkpoint::LABEL_NAMES_KEY.into(), r#"["cat","dog"]"#.into());
    named.metadata.insert(checkpoint::INPUT_SHAPE_KEY.into(), "1,2,2".into());
    named.metadata.insert(checkpoint::IMAGE_SIZE_KEY.into(), "2x2".into());
    named.metadata.insert(checkpoint::CHANNELS_KEY.into(), "gray".into());
    named.push_int(IntTensor::new("1.num_batches_tracked", vec![], IntDtype::I64, vec![17]).unwrap()).unwrap();
    ck("valid-model-metadata.safetensors", &named, StorageDtype::F32);
    put(
        "checkpoint_load",
        "err-u64-beyond-i64.safetensors",
        &raw_safetensors(&[("steps", Dtype::U64, vec![], le(&[1u64 << 63], u64::to_le_bytes))], &[]),
    );
    put("checkpoint_load", "err-bool-byte-2.safetensors", &raw_safetensors(&[("mask", Dtype::BOOL, vec![2], vec![1, 2])], &[]));
    put("checkpoint_load", "err-fp8.safetensors", &raw_safetensors(&[("0.weight", Dtype::F8_E4M3, vec![2], vec![0x38, 0x40])], &[]));
    let full = std::fs::read(root.join("checkpoint_load/valid-mlp-f32.safetensors")).unwrap();
    put("checkpoint_load", "err-truncated.safetensors", &full[..full.len() - 5]);
    put("checkpoint_load", "err-header-too-long.bin", &[0xff, 0xff, 0, 0, 0, 0, 0, 0, b'{', b'}']);
    put("checkpoint_load", "err-short.bin", b"{}");

    // tensor_file_load: headswap's saver (classes, labels with unknowns, image-shaped rows) and
    // the other dtypes the loader accepts.
    let ds = |name: &str, d: &Dataset| {
        let p = tmp.path("ds.safetensors");
        tensor_file::save(&p, d).unwrap();
        put("tensor_file_load", name, &std::fs::read(&p).unwrap());
    };
    let x: Vec<f32> = (0..12).map(|i| i as f32 / 12.0).collect();
    ds(
        "valid-classes.safetensors",
        &Dataset {
            x: x.clone(),
            n: 3,
            d: 4,
            input_shape: vec![4],
            targets: Targets::Classes { y: vec![0, 2, 1], num_classes: 4 },
            label_names: vec!["cat".into(), "dog".into(), "bird".into(), "fish".into()],
        },
    );
    ds(
        "valid-labels.safetensors",
        &Dataset {
            x: x.clone(),
            n: 3,
            d: 4,
            input_shape: vec![1, 2, 2],
            targets: Targets::Labels { y: vec![1.0, 0.0, f32::NAN, 0.0, f32::NAN, 1.0], k: 2 },
            label_names: vec!["car".into(), "stop sign".into()],
        },
    );
    let u8x: Vec<u8> = (0..12).map(|i| (i * 20) as u8).collect();
    put(
        "tensor_file_load",
        "valid-u8-x-u8-y.safetensors",
        &raw_safetensors(&[("x", Dtype::U8, vec![3, 4], u8x.clone()), ("y", Dtype::U8, vec![3], vec![0, 1, 1])], &[]),
    );
    put(
        "tensor_file_load",
        "valid-3d-x-i32-y.safetensors",
        &raw_safetensors(
            &[("x", Dtype::F32, vec![2, 1, 2, 3], f32s(&x)), ("y", Dtype::I32, vec![2], le(&[3i32, 0], i32::to_le_bytes))],
            &[("num_classes", "5"), ("label_names", "a,b,c,d,e")],
        ),
    );
    let f16x: Vec<u8> = [0x3c00u16, 0x3800, 0, 0x3400].iter().flat_map(|v| v.to_le_bytes()).collect();
    put(
        "tensor_file_load",
        "valid-f16-x-f64-labels.safetensors",
        &raw_safetensors(
            &[("x", Dtype::F16, vec![2, 2], f16x), ("y", Dtype::F64, vec![2, 1], le(&[1.0f64, f64::NAN], f64::to_le_bytes))],
            &[("input_shape", "2")],
        ),
    );
    put(
        "tensor_file_load",
        "valid-i64-y.safetensors",
        &raw_safetensors(
            &[
                ("x", Dtype::F64, vec![2, 1], le(&[0.25f64, 0.75], f64::to_le_bytes)),
                ("y", Dtype::I64, vec![2], le(&[1i64, 0], i64::to_le_bytes)),
            ],
            &[],
        ),
    );
    put(
        "tensor_file_load",
        "err-no-rows-labels.safetensors",
        &raw_safetensors(&[("x", Dtype::F32, vec![0, 4], vec![]), ("y", Dtype::F32, vec![0, 2], vec![])], &[]),
    );
    put(
        "tensor_file_load",
        "err-negative-class.safetensors",
        &raw_safetensors(&[("x", Dtype::U8, vec![2, 2], vec![1, 2, 3, 4]), ("y", Dtype::I8, vec![2], vec![0, 0xff])], &[]),
    );
    put("tensor_file_load", "err-no-y.safetensors", &raw_safetensors(&[("x", Dtype::U8, vec![3, 4], u8x)], &[]));

    // manifest_load: CSV text, then optionally a NUL and the bytes of `img.png` (see the harness).
    let with_image = |csv: &str, img: &[u8]| [csv.as_bytes(), &[0], img].concat();
    let m = |name: &str, bytes: &[u8]| put("manifest_load", name, bytes);
    m("valid-plain.csv", b"path,pedestrian,car,stop_sign\na.png,1,0,\na.png,0,,1\n");
    m("valid-quoted-bom-crlf.csv", "\u{feff}path,\"a, b\",\"c\"\"d\"\r\n\r\n \"a.png\" , 1 ,0\r\n".as_bytes());
    m("valid-gray-png.bin", &with_image("path,x\nimg.png,1\na.png,0\n", harness::TINY_PNG));
    let rgba: Vec<u8> = (0..3 * 2 * 4).map(|i| (i * 11) as u8).collect();
    m("valid-rgba-png.bin", &with_image("file,l1,l2\nimg.png,1,1\n", &encode_png(3, 2, image::ExtendedColorType::Rgba8, &rgba)));
    let l16: Vec<u8> = (0..5 * 4 * 2).map(|i| (i * 37) as u8).collect();
    m("valid-gray16-png.bin", &with_image("p,l\nimg.png,\n", &encode_png(5, 4, image::ExtendedColorType::L16, &l16)));
    let rgb: Vec<u8> = (0..8 * 8 * 3).map(|i| (i * 5) as u8).collect();
    m("valid-jpeg.bin", &with_image("path,a,b\nimg.png,0,1\n", &encode_jpeg(8, 8, &rgb)));
    m("err-missing-image.csv", b"path,a\nmissing.png,1\n");
    m("err-bad-label.csv", b"path,a,b\na.png,1,2\n");
    m("err-columns.csv", b"path,a,b\na.png,1\n");
    m("err-quote.csv", b"path,a\n\"a.png,1\n");
    m("err-header-only.csv", b"path,a\n");
    m("err-not-utf8.csv", b"path,a\n\xff.png,1\n");
    m("err-truncated-png.bin", &with_image("path,a\nimg.png,1\n", &harness::TINY_PNG[..40]));
}

#[test]
fn seed_helpers_are_consistent() {
    // The manifest options the harness uses must be valid, or every manifest input is a no-op.
    for opts in harness::manifest_options() {
        let _: &ImageOptions = &opts;
        let s = Scratch::new("test-options");
        let csv = s.write("m.csv", b"path,a\na.png,1\n");
        manifest::load(&csv, &opts).unwrap();
    }
}
