//! Checkpoint interop with Python's `safetensors` (the format PyTorch state_dicts are shared in):
//! a headswap checkpoint reads in Python with the right names, shapes, bits and metadata, and a
//! state_dict written by Python loads in headswap.
//!
//! The Python tests need `python3` with `safetensors` and `numpy`
//! (`python3 -m pip install safetensors numpy`) and FAIL, saying so, when they are missing. The
//! committed fixture `tests/fixtures/torch_state_dict.safetensors` (written by
//! `python3 scripts/checkpoint_interop.py write tests/fixtures/torch_state_dict.safetensors`) is
//! loaded without Python, so the interop is exercised everywhere.

use headswap::checkpoint::{self, Checkpoint, Expect, NamedTensor, StorageDtype};
use std::path::{Path, PathBuf};
use std::process::Command;

const INSTALL: &str = "python3 -m pip install safetensors numpy";

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("checkpoint_python");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Runs `scripts/checkpoint_interop.py` with `args`; stdout on success. Missing Python or
/// packages fail the test with the install line.
fn python(args: &[&str]) -> String {
    let probe = Command::new("python3").args(["-c", "import safetensors.numpy, numpy"]).output();
    match probe {
        Err(e) => panic!(
            "this test needs python3 with the safetensors and numpy packages, and python3 could not \
             be run ({e}). Install Python 3, then: {INSTALL}"
        ),
        Ok(o) if !o.status.success() => panic!(
            "this test needs the Python packages safetensors and numpy: {}\nInstall them with: {INSTALL}",
            String::from_utf8_lossy(&o.stderr).trim().lines().last().unwrap_or("import failed")
        ),
        Ok(_) => {}
    }
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
