//! Checkpoint interop with Python's `safetensors` (the format PyTorch state_dicts are shared in):
//! a headswap checkpoint reads in Python with the right names, shapes, bits and metadata, and a
//! state_dict written by Python loads in headswap.
//!
//! The Python tests need `python3` with `safetensors` and `numpy`
//! (`python3 -m pip install safetensors numpy`). Where python3 or a package is missing they are
//! skipped, each printing a `skipped: ...` line on stderr (past the test harness's capture, so
//! `cargo test` shows it), so that the suite passes on a machine with nothing beyond Rust;
//! `HEADSWAP_REQUIRE_PYTHON=1` (set by `.ci/run`) turns a missing package into a failure. A
//! Python that is present but broken (a package whose import fails for another reason, a script
//! that errors) is always a failure, never a skip. The committed fixture
//! `tests/fixtures/torch_state_dict.safetensors` (written by
//! `python3 scripts/checkpoint_interop.py write tests/fixtures/torch_state_dict.safetensors`) is
//! loaded without Python, so the interop is exercised everywhere.

use headswap::checkpoint::{self, Checkpoint, Expect, NamedTensor, StorageDtype};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const INSTALL: &str = "python3 -m pip install safetensors numpy";

/// Set to `1` to make a missing python3 or package fail the Python tests instead of skipping them.
const REQUIRE_VAR: &str = "HEADSWAP_REQUIRE_PYTHON";

/// Run by `python3 -c`: exits with [`MISSING_EXIT`] after printing the missing packages
/// (`safetensors/numpy`) when they are not installed, 0 when both import, and with Python's own
/// error (exit 1) when one is installed but fails to import.
const PROBE: &str = "import importlib.util, sys
missing = [m for m in ('safetensors', 'numpy') if importlib.util.find_spec(m) is None]
if missing:
    print('/'.join(missing))
    sys.exit(3)
import numpy, safetensors.numpy
";
const MISSING_EXIT: i32 = 3;

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("checkpoint_python");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// What a Python interpreter offers the interop tests.
#[derive(Debug, Clone, PartialEq)]
enum Probe {
    /// It runs and imports safetensors and numpy.
    Ready,
    /// It is not installed, or lacks a package: the tests are skipped (why).
    Absent(String),
    /// It is there but broken: it could not be run, or a package is installed and fails to
    /// import. The tests fail (why).
    Broken(String),
}

/// Runs [`PROBE`] with `python` (a `python3` command, possibly with its environment set).
fn probe(mut python: Command) -> Probe {
    match python.args(["-c", PROBE]).output() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Probe::Absent("python3 is not installed".into()),
        Err(e) => Probe::Broken(format!("python3 could not be run: {e}")),
        Ok(o) if o.status.success() => Probe::Ready,
        Ok(o) if o.status.code() == Some(MISSING_EXIT) => {
            Probe::Absent(format!("python3 lacks {}", String::from_utf8_lossy(&o.stdout).trim()))
        }
        Ok(o) => Probe::Broken(format!(
            "python3 has the packages but importing them failed ({}):\n{}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        )),
    }
}

/// Whether a Python test runs (`Ok(true)`), is skipped (`Ok(false)`) or fails (`Err`, why).
fn decide(probe: &Probe, required: bool) -> Result<bool, String> {
    match probe {
        Probe::Ready => Ok(true),
        Probe::Absent(why) if required => Err(format!("{why}, and {REQUIRE_VAR}=1 requires the Python interop tests; install: {INSTALL}")),
        Probe::Absent(_) => Ok(false),
        Probe::Broken(why) => Err(format!("{why}\n(a broken Python fails this test rather than skipping it)")),
    }
}

/// True when the test named `test` should run; prints its `skipped:` line when it is skipped,
/// and panics when Python is broken, or missing under `HEADSWAP_REQUIRE_PYTHON=1`.
fn python_ready(test: &str) -> bool {
    static PYTHON: OnceLock<Probe> = OnceLock::new();
    let p = PYTHON.get_or_init(|| probe(Command::new("python3")));
    let required = std::env::var(REQUIRE_VAR).is_ok_and(|v| !v.is_empty() && v != "0");
    match decide(p, required) {
        Ok(run) => {
            if let (false, Probe::Absent(why)) = (run, p) {
                // Straight to stderr: the harness captures eprintln! output of passing tests.
                let _ = writeln!(std::io::stderr(), "skipped: {test}: {why} (to run it: {INSTALL})");
            }
            run
        }
        Err(why) => panic!("{test}: {why}"),
    }
}

/// Runs `scripts/checkpoint_interop.py` with `args` (after [`python_ready`]); stdout on success.
/// A script that fails fails the test.
fn python(args: &[&str]) -> String {
    let script = manifest_dir().join("scripts/checkpoint_interop.py");
    let out = Command::new("python3").arg(&script).args(args).output().expect("python3 ran a moment ago");
    assert!(out.status.success(), "python3 {} {args:?} failed:\n{}", script.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("the script prints JSON")
}

/// What `reference_state_dict()` in the script holds, computed the same way in f32/f16/f64.
fn reference_state_dict() -> Checkpoint {
    let w0: Vec<f32> = (0..12).map(|i| i as f32 / 3.0 - 2.0).collect();
    let b0 = vec![0.5f32, -1.25, 1.0 / 1000.0];
    let w2: Vec<f32> = [0.1f64, -0.5, 2.0, 1000.0, -0.0, 65504.0].iter().map(|&x| half::f16::from_f64(x).to_f32()).collect();
    let b2 = vec![0.1f64 as f32, -3.5];
    let mut c = Checkpoint::new();
    // safetensors' Python writer orders the data by dtype alignment, then name.
    c.push(NamedTensor::new("2.bias", vec![2], b2).unwrap()).unwrap();
    c.push(NamedTensor::new("0.bias", vec![3], b0).unwrap()).unwrap();
    c.push(NamedTensor::new("0.weight", vec![3, 4], w0).unwrap()).unwrap();
    c.push(NamedTensor::new("2.weight", vec![2, 3], w2).unwrap()).unwrap();
    c.metadata.insert("format".into(), "pt".into());
    c.metadata.insert("headswap.source".into(), "safetensors.numpy".into());
    c
}

fn assert_reference(loaded: &Checkpoint, what: &str) {
    let want = reference_state_dict();
    assert_eq!(loaded.metadata, want.metadata, "{what}: metadata");
    assert_eq!(loaded.names().collect::<Vec<_>>(), want.names().collect::<Vec<_>>(), "{what}: names/order");
    for w in &want.tensors {
        let got = loaded.get(&w.name).unwrap();
        assert_eq!(got.shape, w.shape, "{what}: {}", w.name);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got.data), bits(&w.data), "{what}: {} values {:?}", w.name, got.data);
    }
    // What a headswap network of Linear(4,3) -> ReLU -> Linear(3,2) would ask for.
    loaded
        .check(&[
            Expect::new("0.weight", vec![3, 4]),
            Expect::new("0.bias", vec![3]),
            Expect::new("2.weight", vec![2, 3]),
            Expect::new("2.bias", vec![2]),
        ])
        .unwrap();
}

/// Runs without Python: the committed file that Python's safetensors wrote.
#[test]
fn committed_python_state_dict_fixture_loads() {
    let path = manifest_dir().join("tests/fixtures/torch_state_dict.safetensors");
    let loaded = checkpoint::load(&path).unwrap();
    assert_reference(&loaded, "fixture");
    assert!(loaded.check(&[Expect::new("0.weight", vec![4, 3])]).is_err());
}

#[test]
fn python_written_state_dict_loads_in_headswap() {
    if !python_ready("python_written_state_dict_loads_in_headswap") {
        return;
    }
    let path = scratch("from_python.safetensors");
    let _ = std::fs::remove_file(&path);
    python(&["write", path.to_str().unwrap()]);
    assert_reference(&checkpoint::load(&path).unwrap(), "written by python now");
}

fn sample_checkpoint() -> Checkpoint {
    let mut c = Checkpoint::new();
    let mut seed = 0x2545_F491u32;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        (seed as f32 / u32::MAX as f32) * 4.0 - 2.0
    };
    for (name, shape) in [("0.weight", vec![8, 6]), ("0.bias", vec![8]), ("2.weight", vec![3, 8]), ("2.bias", vec![3])] {
        let n = shape.iter().product();
        c.push(NamedTensor::new(name, shape, (0..n).map(|_| next()).collect()).unwrap()).unwrap();
    }
    let n = 48;
    c.push(NamedTensor::new("optim.0.weight.exp_avg", vec![8, 6], (0..n).map(|_| next() * 1e-3).collect()).unwrap()).unwrap();
    c.tensors[1].data[0] = -0.0;
    c.tensors[1].data[1] = 1e-40; // subnormal
    c.metadata.insert(checkpoint::FORMAT_KEY.into(), checkpoint::FORMAT_VERSION.into());
    c.metadata.insert(checkpoint::LAYERS_KEY.into(), r#"[{"linear":[6,8]},"relu",{"linear":[8,3]}]"#.into());
    c.metadata.insert(checkpoint::OPTIM_STEP_KEY.into(), "17".into());
    c.metadata.insert("note".into(), "ünïcode, \"quotes\"\nand a newline".into());
    c
}

/// Python's view of a file: the JSON printed by `checkpoint_interop.py read`.
fn python_read(path: &Path) -> serde_json::Value {
    serde_json::from_str(&python(&["read", path.to_str().unwrap()])).unwrap()
}

#[test]
fn headswap_checkpoint_reads_in_python() {
    if !python_ready("headswap_checkpoint_reads_in_python") {
        return;
    }
    let ckpt = sample_checkpoint();
    for (dtype, np_dtype) in [(StorageDtype::F32, "float32"), (StorageDtype::F16, "float16")] {
        let path = scratch(&format!("from_headswap_{np_dtype}.safetensors"));
        checkpoint::save(&path, &ckpt, dtype).unwrap();
        let py = python_read(&path);

        let meta: std::collections::BTreeMap<String, String> = serde_json::from_value(py["metadata"].clone()).unwrap();
        assert_eq!(meta, ckpt.metadata, "{np_dtype}: metadata as Python sees it");
        let order: Vec<String> = serde_json::from_value(py["order"].clone()).unwrap();
        assert_eq!(order, ckpt.names().collect::<Vec<_>>(), "{np_dtype}: data order");
        let tensors = py["tensors"].as_object().unwrap();
        assert_eq!(tensors.len(), ckpt.tensors.len());
        for t in &ckpt.tensors {
            let p = &tensors[&t.name];
            assert_eq!(p["dtype"], np_dtype, "{}", t.name);
            assert_eq!(p["shape"], serde_json::json!(t.shape), "{}", t.name);
            let want: Vec<u64> = match dtype {
                StorageDtype::F32 => t.data.iter().map(|x| x.to_bits() as u64).collect(),
                StorageDtype::F16 => t.data.iter().map(|&x| half::f16::from_f32(x).to_bits() as u64).collect(),
            };
            let got: Vec<u64> = serde_json::from_value(p["bits"].clone()).unwrap();
            assert_eq!(got, want, "{np_dtype}: {} values as Python sees them", t.name);
        }
    }

    // No metadata at all: Python sees None, as for a file its own writer made without any.
    let mut bare = ckpt.state_dict_only();
    bare.metadata.clear();
    let path = scratch("from_headswap_bare.safetensors");
    checkpoint::save(&path, &bare, StorageDtype::F32).unwrap();
    let py = python_read(&path);
    assert!(py["metadata"].is_null(), "{}", py["metadata"]);
    assert_eq!(py["order"], serde_json::json!(["0.weight", "0.bias", "2.weight", "2.bias"]));
}

// ---------------------------------------------------------------- when the Python tests run

/// A missing interpreter or package skips; anything else that goes wrong fails.
#[test]
fn python_probe_skips_only_what_is_missing() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("checkpoint_python_probe");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    let none = probe(Command::new(dir.join("no-such-python3")));
    assert_eq!(none, Probe::Absent("python3 is not installed".into()));
    assert_eq!(decide(&none, false), Ok(false));
    let e = decide(&none, true).unwrap_err();
    assert!(e.contains(REQUIRE_VAR) && e.contains(INSTALL), "{e}");
    assert_eq!(decide(&Probe::Ready, false), Ok(true));
    assert_eq!(decide(&Probe::Ready, true), Ok(true));
    assert!(decide(&Probe::Broken("x".into()), false).is_err());

    // The real python3, with packages of those names that are installed but fail to import
    // (first on the path): a failure, not a skip.
    for pkg in ["safetensors", "numpy"] {
        std::fs::create_dir_all(dir.join(pkg)).unwrap();
        std::fs::write(dir.join(pkg).join("__init__.py"), format!("raise ImportError('{pkg} is broken here')\n")).unwrap();
    }
    let mut python = Command::new("python3");
    python.env("PYTHONPATH", &dir);
    match probe(python) {
        Probe::Broken(why) => {
            assert!(why.contains("is broken here"), "{why}");
            assert!(decide(&Probe::Broken(why), false).is_err());
        }
        Probe::Absent(why) if why == "python3 is not installed" => {
            let _ = writeln!(std::io::stderr(), "skipped: python_probe_skips_only_what_is_missing (real python3 part): {why}");
        }
        other => panic!("a package that fails to import must be Broken, got {other:?}"),
    }
}

/// The probe's verdicts for each exit of an interpreter, with stand-in interpreters.
#[cfg(unix)]
#[test]
fn python_probe_reads_the_interpreters_exit() {
    use std::os::unix::fs::PermissionsExt;
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("checkpoint_python_fake");
    std::fs::create_dir_all(&dir).unwrap();
    let fake = |name: &str, body: &str| {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        Command::new(p)
    };
    assert_eq!(probe(fake("ok", "exit 0")), Probe::Ready);
    assert_eq!(probe(fake("lacks", "echo safetensors/numpy; exit 3")), Probe::Absent("python3 lacks safetensors/numpy".into()));
    match probe(fake("broken", "echo 'SyntaxError: bad' >&2; exit 1")) {
        Probe::Broken(why) => assert!(why.contains("SyntaxError: bad"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(probe(fake("killed", "kill -9 $$")), Probe::Broken(_)));
}
