use super::*;
use crate::{Error, Rng};
use std::path::{Path, PathBuf};

/// A fresh, empty scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!("headswap-ckpt-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Scratch(d)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
    fn entries(&self) -> Vec<String> {
        let mut v: Vec<String> =
            std::fs::read_dir(&self.0).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn t(name: &str, shape: &[usize], data: Vec<f32>) -> NamedTensor {
    NamedTensor::new(name, shape.to_vec(), data).unwrap()
}

fn sample() -> Checkpoint {
    let mut r = Rng::new(7);
    let mut rand = |n: usize| (0..n).map(|_| r.uniform(-2.0, 2.0) as f32).collect::<Vec<_>>();
    let mut ckpt = Checkpoint::new();
    // Deliberately not in sorted order: the file must keep the order given.
    ckpt.push(t("2.weight", &[3, 5], rand(15))).unwrap();
    ckpt.push(t("0.weight", &[5, 4], rand(20))).unwrap();
    ckpt.push(t("0.bias", &[5], rand(5))).unwrap();
    ckpt.push(t("2.bias", &[3], rand(3))).unwrap();
    ckpt.push(t("scalar", &[], vec![0.25])).unwrap();
    ckpt.push(t("empty", &[0, 3], vec![])).unwrap();
    ckpt.push(t("optim.0.weight.exp_avg", &[5, 4], rand(20))).unwrap();
    ckpt.metadata.insert(FORMAT_KEY.into(), FORMAT_VERSION.into());
    ckpt.metadata.insert(LAYERS_KEY.into(), r#"[{"linear":[4,5]},"relu",{"linear":[5,3]}]"#.into());
    ckpt.metadata.insert("note".into(), "ünïcode \"quoted\"\nnew line\t\\".into());
    ckpt.metadata.insert(OPTIM_STEP_KEY.into(), "120".into());
    ckpt.metadata.insert(TRAIN_EPOCH_KEY.into(), "3".into());
    ckpt
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// A safetensors file from a literal header and data bytes.
fn raw_file(header: &str, data: &[u8]) -> Vec<u8> {
    let mut v = (header.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(header.as_bytes());
    v.extend_from_slice(data);
    v
}

fn assert_format_err(r: Result<Checkpoint>, path: &Path, needle: &str) {
    match r {
        Err(Error::Format { path: p, message }) => {
            assert_eq!(p, path.display().to_string());
            assert!(message.contains(needle), "message {message:?} does not mention {needle:?}");
        }
        other => panic!("expected a Format error mentioning {needle:?}, got {other:?}"),
    }
}

#[test]
fn f32_round_trip_is_exact_and_keeps_order_and_metadata() {
    let dir = Scratch::new("rt32");
    let p = dir.path("model.safetensors");
    let mut ckpt = sample();
    ckpt.push(t("special", &[7], vec![f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0, f32::MIN_POSITIVE / 8.0, f32::MAX, -1e-30]))
        .unwrap();
    save(&p, &ckpt, StorageDtype::F32).unwrap();
    let back = load(&p).unwrap();
    assert_eq!(back.metadata, ckpt.metadata);
    assert_eq!(back.names().collect::<Vec<_>>(), ckpt.names().collect::<Vec<_>>());
    for (a, b) in ckpt.tensors.iter().zip(&back.tensors) {
        assert_eq!(a.shape, b.shape, "{}", a.name);
        assert_eq!(bits(&a.data), bits(&b.data), "{}", a.name);
    }
    assert_eq!(dir.entries(), vec!["model.safetensors"]);
}

#[test]
fn f16_round_trip_is_within_f16_rounding() {
    let dir = Scratch::new("rt16");
    let p = dir.path("model.safetensors");
    let mut ckpt = sample();
    ckpt.push(t("edges", &[5], vec![65504.0, -65504.0, 6.0e-8, 1.0e-9, f32::INFINITY])).unwrap();
    save(&p, &ckpt, StorageDtype::F16).unwrap();
    let f32_len = {
        let q = dir.path("f32.safetensors");
        save(&q, &ckpt, StorageDtype::F32).unwrap();
        std::fs::metadata(q).unwrap().len()
    };
    assert!(std::fs::metadata(&p).unwrap().len() < f32_len);
    let back = load(&p).unwrap();
    assert_eq!(back.metadata, ckpt.metadata);
    for (a, b) in ckpt.tensors.iter().zip(&back.tensors) {
        assert_eq!((&a.name, &a.shape), (&b.name, &b.shape));
        for (x, y) in a.data.iter().zip(&b.data) {
            assert_eq!(half::f16::from_f32(*x).to_f32().to_bits(), y.to_bits(), "{}: {x}", a.name);
            if x.is_finite() {
                // Round to nearest: half an ulp (2^-11 relative) for normals, 2^-25 absolute below.
                assert!((x - y).abs() <= x.abs() * 2f32.powi(-11) + 2f32.powi(-25), "{}: {x} -> {y}", a.name);
            }
        }
    }
}

#[test]
fn f16_refuses_values_beyond_its_range_and_writes_nothing() {
    let dir = Scratch::new("f16range");
    let p = dir.path("model.safetensors");
    let mut ckpt = Checkpoint::new();
    ckpt.push(t("0.weight", &[3], vec![1.0, 70000.0, 2.0])).unwrap();
    let e = save(&p, &ckpt, StorageDtype::F16).unwrap_err();
    assert!(matches!(&e, Error::InvalidInput(m) if m.contains("0.weight") && m.contains("element 1")), "{e}");
    assert!(dir.entries().is_empty());
    save(&p, &ckpt, StorageDtype::F32).unwrap();
}

#[test]
fn header_is_standard_safetensors_in_the_given_order_and_deterministic() {
    let dir = Scratch::new("header");
    let (p, q) = (dir.path("a.safetensors"), dir.path("b.safetensors"));
    let ckpt = sample();
    save(&p, &ckpt, StorageDtype::F32).unwrap();
    save(&q, &ckpt, StorageDtype::F32).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    assert_eq!(bytes, std::fs::read(&q).unwrap(), "the same checkpoint must give the same bytes");
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    assert_eq!(n % 8, 0);
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    assert_eq!(header["__metadata__"][FORMAT_KEY], FORMAT_VERSION);
    let mut offset = 0u64;
    for tensor in &ckpt.tensors {
        let info = &header[tensor.name.as_str()];
        assert_eq!(info["dtype"], "F32");
        assert_eq!(info["shape"], serde_json::json!(tensor.shape));
        assert_eq!(info["data_offsets"], serde_json::json!([offset, offset + 4 * tensor.data.len() as u64]));
        offset += 4 * tensor.data.len() as u64;
    }
    assert_eq!(bytes.len() as u64, 8 + n as u64 + offset);
    // The reference parser agrees.
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.len(), ckpt.tensors.len());
    // No metadata: no `__metadata__` key at all (as the reference writer does).
    let mut bare = ckpt.clone();
    bare.metadata.clear();
    save(&p, &bare, StorageDtype::F16).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    assert!(header.get("__metadata__").is_none());
    assert_eq!(header["0.bias"]["dtype"], "F16");
    assert!(load(&p).unwrap().metadata.is_empty());
}

#[test]
fn save_is_atomic_and_leaves_no_temporary_file() {
    let dir = Scratch::new("atomic");
    let p = dir.path("model.safetensors");
    let ckpt = sample();
    save(&p, &ckpt, StorageDtype::F32).unwrap();
    assert_eq!(dir.entries(), vec!["model.safetensors"]);

    // Overwriting replaces the file whole.
    let mut second = ckpt.clone();
    second.take("optim.0.weight.exp_avg").unwrap();
    save(&p, &second, StorageDtype::F32).unwrap();
    assert_eq!(load(&p).unwrap(), second);
    assert_eq!(dir.entries(), vec!["model.safetensors"]);

    // An invalid checkpoint is refused before anything is written; the old file survives.
    let mut dup = ckpt.clone();
    dup.tensors.push(dup.tensors[0].clone());
    let e = save(&p, &dup, StorageDtype::F32).unwrap_err();
    assert!(matches!(&e, Error::InvalidInput(m) if m.contains("two tensors named 2.weight")), "{e}");
    let mut bad_shape = ckpt.clone();
    bad_shape.tensors[1].shape = vec![5, 5];
    let e = save(&p, &bad_shape, StorageDtype::F32).unwrap_err();
    assert!(matches!(&e, Error::Shape { what } if what.contains("0.weight")), "{e}");
    for name in ["", "__metadata__"] {
        let mut c = Checkpoint::new();
        c.tensors.push(NamedTensor { name: name.into(), shape: vec![1], data: vec![1.0] });
        assert!(matches!(save(&p, &c, StorageDtype::F32), Err(Error::InvalidInput(_))));
    }
    assert_eq!(load(&p).unwrap(), second);
    assert_eq!(dir.entries(), vec!["model.safetensors"]);

    // A directory that does not exist is an I/O error naming the target, and creates nothing.
    let missing = dir.path("no/such/dir/model.safetensors");
    let e = save(&missing, &ckpt, StorageDtype::F32).unwrap_err();
    assert!(matches!(&e, Error::Io { path, .. } if *path == missing.display().to_string()), "{e}");
    assert_eq!(dir.entries(), vec!["model.safetensors"]);
    // So is a target that is a directory (the rename fails): the temporary file is removed.
    std::fs::create_dir(dir.path("adir")).unwrap();
    assert!(matches!(save(&dir.path("adir"), &ckpt, StorageDtype::F32), Err(Error::Io { .. })));
    assert_eq!(dir.entries(), vec!["adir", "model.safetensors"]);
}

#[test]
fn load_reads_bf16_f16_and_f64_and_refuses_other_dtypes() {
    let dir = Scratch::new("dtypes");
    let p = dir.path("x.safetensors");
    let mut data = Vec::new();
    for v in [1.5f64, -0.1] {
        data.extend_from_slice(&v.to_le_bytes());
    }
    for v in [2.0f32, -3.25] {
        data.extend_from_slice(&half::bf16::from_f32(v).to_le_bytes());
    }
    data.extend_from_slice(&half::f16::from_f32(0.5).to_le_bytes());
    let header = r#"{"__metadata__":{"format":"pt"},"c":{"dtype":"F16","shape":[1],"data_offsets":[20,22]},"a":{"dtype":"F64","shape":[2],"data_offsets":[0,16]},"b":{"dtype":"BF16","shape":[1,2],"data_offsets":[16,20]}}"#;
    std::fs::write(&p, raw_file(header, &data)).unwrap();
    let c = load(&p).unwrap();
    assert_eq!(c.names().collect::<Vec<_>>(), vec!["a", "b", "c"], "data-offset order");
    assert_eq!(c.get("a").unwrap().data, vec![1.5, -0.1f64 as f32]);
    assert_eq!(c.get("b").unwrap().shape, vec![1, 2]);
    assert_eq!(c.get("b").unwrap().data, vec![2.0, -3.25]);
    assert_eq!(c.get("c").unwrap().data, vec![0.5]);
    assert_eq!(c.metadata.get("format").map(String::as_str), Some("pt"));

    // FP8, FP4 and complex are refused, naming the tensor and the dtype.
    for (dtype, bytes) in [("F8_E4M3", 2), ("F8_E5M2", 2), ("C64", 16), ("F4", 1)] {
        let header = format!(
            r#"{{"0.weight":{{"dtype":"F32","shape":[1],"data_offsets":[0,4]}},"odd":{{"dtype":"{dtype}","shape":[2],"data_offsets":[4,{}]}}}}"#,
            4 + bytes
        );
        std::fs::write(&p, raw_file(&header, &vec![0u8; 4 + bytes])).unwrap();
        assert_format_err(load(&p), &p, &format!("tensor odd has dtype {dtype}"));
    }
}

/// One tensor of every integer dtype with its extreme values, interleaved with float tensors the
/// way a PyTorch BatchNorm state_dict is, as raw safetensors bytes.
fn int_file() -> (Vec<u8>, Vec<IntTensor>) {
    let it = |name: &str, shape: &[usize], dtype: IntDtype, data: Vec<i64>| IntTensor::new(name, shape.to_vec(), dtype, data).unwrap();
    let ints = vec![
        // 2^53 + 1 and 2^24 + 1 are not f32 (nor f64) values: they must not pass through floats
        it("1.num_batches_tracked", &[], IntDtype::I64, vec![(1 << 53) + 1]),
        it("i64", &[5], IntDtype::I64, vec![i64::MIN, -1, 0, (1 << 24) + 1, i64::MAX]),
        it("i32", &[2, 2], IntDtype::I32, vec![i32::MIN.into(), -7, 0, i32::MAX.into()]),
        it("i16", &[3], IntDtype::I16, vec![i16::MIN.into(), 5, i16::MAX.into()]),
        it("i8", &[3], IntDtype::I8, vec![-128, 0, 127]),
        it("u8", &[3], IntDtype::U8, vec![0, 1, 255]),
        it("bool", &[2, 1, 2], IntDtype::Bool, vec![1, 0, 0, 1]),
        it("u16", &[2], IntDtype::U16, vec![0, 65535]),
        it("u32", &[2], IntDtype::U32, vec![0, u32::MAX.into()]),
        it("u64", &[2], IntDtype::U64, vec![0, i64::MAX]),
        it("empty", &[0, 4], IntDtype::I32, vec![]),
    ];
    let mut header = String::from("{");
    let mut data = Vec::new();
    let mut entry = |name: &str, dtype: &str, shape: &[usize], bytes: Vec<u8>| {
        if header.len() > 1 {
            header.push(',');
        }
        header.push_str(&format!(
            r#""{name}":{{"dtype":"{dtype}","shape":{shape:?},"data_offsets":[{},{}]}}"#,
            data.len(),
            data.len() + bytes.len()
        ));
        data.extend(bytes);
    };
    entry("1.weight", "F32", &[2], [0.5f32, -1.0].iter().flat_map(|v| v.to_le_bytes()).collect());
    for t in &ints {
        let bytes: Vec<u8> = t
            .data
            .iter()
            .flat_map(|&v| match t.dtype {
                IntDtype::Bool | IntDtype::U8 => vec![v as u8],
                IntDtype::I8 => (v as i8).to_le_bytes().to_vec(),
                IntDtype::U16 => (v as u16).to_le_bytes().to_vec(),
                IntDtype::I16 => (v as i16).to_le_bytes().to_vec(),
                IntDtype::U32 => (v as u32).to_le_bytes().to_vec(),
                IntDtype::I32 => (v as i32).to_le_bytes().to_vec(),
                IntDtype::I64 | IntDtype::U64 => v.to_le_bytes().to_vec(),
            })
            .collect();
        entry(&t.name, t.dtype.name(), &t.shape, bytes);
        if t.name == "1.num_batches_tracked" {
            entry("1.bias", "F32", &[2], [0.25f32, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect());
        }
    }
    header.push('}');
    (raw_file(&header, &data), ints)
}

#[test]
fn integer_tensors_load_exactly_and_keep_their_dtype() {
    let dir = Scratch::new("ints");
    let p = dir.path("ints.safetensors");
    let (bytes, ints) = int_file();
    std::fs::write(&p, &bytes).unwrap();
    let c = load(&p).unwrap();
    assert_eq!(c.names().collect::<Vec<_>>(), vec!["1.weight", "1.bias"]);
    assert_eq!(c.get("1.bias").unwrap().data, vec![0.25, 2.0]);
    // in the file's data order (the empty tensor sits at the end, like the others of length 0)
    assert_eq!(c.int_tensors, ints);
    let nbt = c.get_int("1.num_batches_tracked").unwrap();
    assert_eq!((nbt.shape.as_slice(), nbt.dtype, nbt.data.as_slice()), (&[][..], IntDtype::I64, &[(1i64 << 53) + 1][..]));
    assert_eq!(nbt.numel(), 1);
    assert!(c.get("1.num_batches_tracked").is_none(), "an integer tensor is not a float tensor");
    assert_eq!(c.int_names().count(), ints.len());
    // the reference parser agrees on every dtype and shape
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    for t in &ints {
        let v = st.tensor(&t.name).unwrap();
        assert_eq!((v.dtype().to_string(), v.shape()), (t.dtype.name().to_string(), t.shape.as_slice()), "{}", t.name);
    }
}

#[test]
fn integer_tensors_round_trip_with_their_dtype_in_f32_and_f16_files() {
    let dir = Scratch::new("ints-rt");
    let p = dir.path("ints.safetensors");
    let (bytes, ints) = int_file();
    std::fs::write(&p, &bytes).unwrap();
    let c = load(&p).unwrap();
    for dtype in [StorageDtype::F32, StorageDtype::F16] {
        let q = dir.path("back.safetensors");
        save(&q, &c, dtype).unwrap();
        let back = load(&q).unwrap();
        assert_eq!(back.int_tensors, ints, "{dtype:?}");
        assert_eq!(back.names().collect::<Vec<_>>(), vec!["1.weight", "1.bias"]);
        // each integer tensor's bytes are the original file's, in its own dtype
        let (a, b) = (safetensors::SafeTensors::deserialize(&bytes).unwrap(), std::fs::read(&q).unwrap());
        let b = safetensors::SafeTensors::deserialize(&b).unwrap();
        for t in &ints {
            let (x, y) = (a.tensor(&t.name).unwrap(), b.tensor(&t.name).unwrap());
            assert_eq!((x.dtype(), x.shape(), x.data()), (y.dtype(), y.shape(), y.data()), "{}", t.name);
        }
    }
}

#[test]
fn out_of_range_integers_are_refused_on_load_and_save() {
    let dir = Scratch::new("ints-range");
    let p = dir.path("x.safetensors");
    let header = r#"{"steps":{"dtype":"U64","shape":[2],"data_offsets":[0,16]}}"#;
    let data: Vec<u8> = [5u64, 1 << 63].iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(&p, raw_file(header, &data)).unwrap();
    assert_format_err(load(&p), &p, "tensor steps: U64 element 1 = 9223372036854775808 is beyond 2^63 - 1");
    let header = r#"{"mask":{"dtype":"BOOL","shape":[3],"data_offsets":[0,3]}}"#;
    std::fs::write(&p, raw_file(header, &[1, 0, 2])).unwrap();
    assert_format_err(load(&p), &p, "tensor mask: BOOL element 2 is the byte 2");

    // IntTensor::new and push_int check the range and the shape; save checks tensors put in
    // the list directly, and writes nothing.
    assert!(
        matches!(IntTensor::new("b", vec![1], IntDtype::U8, vec![256]), Err(Error::InvalidInput(m)) if m.contains("element 0 = 256 does not fit U8"))
    );
    assert!(matches!(IntTensor::new("b", vec![2], IntDtype::I8, vec![1]), Err(Error::Shape { .. })));
    let mut c = Checkpoint::new();
    assert!(c.push_int(IntTensor { name: "b".into(), shape: vec![1], dtype: IntDtype::Bool, data: vec![2] }).is_err());
    c.int_tensors.push(IntTensor { name: "b".into(), shape: vec![1], dtype: IntDtype::I16, data: vec![40000] });
    let e = save(&p, &c, StorageDtype::F32).unwrap_err();
    assert!(matches!(&e, Error::InvalidInput(m) if m.contains("tensor b: element 0 = 40000 does not fit I16")), "{e}");
    c.int_tensors[0].data = vec![1, 2];
    assert!(matches!(save(&p, &c, StorageDtype::F32), Err(Error::Shape { .. })));
    assert_format_err(load(&p), &p, "BOOL element 2");
}

#[test]
fn names_are_unique_across_float_and_integer_tensors() {
    let dir = Scratch::new("ints-names");
    let p = dir.path("x.safetensors");
    let mut c = Checkpoint::new();
    c.push(t("a", &[1], vec![1.0])).unwrap();
    assert!(matches!(c.push_int(IntTensor::new("a", vec![], IntDtype::I64, vec![3]).unwrap()), Err(Error::InvalidInput(_))));
    c.push_int(IntTensor::new("n", vec![], IntDtype::I64, vec![3]).unwrap()).unwrap();
    assert!(matches!(c.push(t("n", &[1], vec![1.0])), Err(Error::InvalidInput(_))));
    // two lists filled by hand with one name: refused by save
    c.int_tensors.push(IntTensor::new("a", vec![], IntDtype::I32, vec![1]).unwrap());
    let e = save(&p, &c, StorageDtype::F32).unwrap_err();
    assert!(matches!(&e, Error::InvalidInput(m) if m.contains("two tensors named a")), "{e}");
    assert!(c.take_int("a").is_some() && c.take_int("a").is_none());
    for name in ["", "__metadata__"] {
        let mut c = Checkpoint::new();
        c.int_tensors.push(IntTensor { name: name.into(), shape: vec![], dtype: IntDtype::I64, data: vec![0] });
        assert!(matches!(save(&p, &c, StorageDtype::F32), Err(Error::InvalidInput(_))));
    }
    assert!(dir.entries().is_empty());
}

#[test]
fn check_and_state_dict_only_see_integer_tensors() {
    let mut c = Checkpoint::new();
    c.push(t("0.weight", &[2, 3], vec![0.0; 6])).unwrap();
    c.push_int(IntTensor::new("0.bias", vec![2], IntDtype::I64, vec![1, 2]).unwrap()).unwrap();
    c.push_int(IntTensor::new("1.num_batches_tracked", vec![], IntDtype::I64, vec![7]).unwrap()).unwrap();
    c.push_int(IntTensor::new("optim.count", vec![], IntDtype::I64, vec![7]).unwrap()).unwrap();
    let expected = [Expect::new("0.weight", vec![2, 3]), Expect::new("0.bias", vec![2])];
    let e = c.state_dict_only().check(&expected).unwrap_err();
    assert_eq!(
        e.to_string(),
        "checkpoint: tensors do not match the expected ones: unexpected 1 tensor (1.num_batches_tracked); 1 integer \
         tensor where floats are expected (0.bias: expected floats, found I64)"
    );
    assert_eq!(c.state_dict_only().int_names().collect::<Vec<_>>(), vec!["0.bias", "1.num_batches_tracked"]);
}

#[test]
fn malformed_files_are_format_errors_naming_the_path() {
    let dir = Scratch::new("malformed");
    let p = dir.path("bad.safetensors");
    let write = |bytes: &[u8]| std::fs::write(&p, bytes).unwrap();

    assert!(matches!(load(&dir.path("absent.safetensors")), Err(Error::Io { .. })));
    write(b"");
    assert_format_err(load(&p), &p, "0 bytes");
    write(b"\x10\0\0\0\0\0\0");
    assert_format_err(load(&p), &p, "7 bytes");
    // Header lengths beyond the file: just past it, huge, and u64::MAX.
    for n in [9u64, 1 << 40, u64::MAX] {
        let mut v = n.to_le_bytes().to_vec();
        v.extend_from_slice(b"{}      ");
        write(&v);
        assert_format_err(load(&p), &p, &format!("header claims {n} bytes"));
    }
    // Not UTF-8, not JSON, not an object of tensors.
    let mut v = 8u64.to_le_bytes().to_vec();
    v.extend_from_slice(&[b'{', 0xff, 0xfe, b'}', b' ', b' ', b' ', b' ']);
    write(&v);
    assert_format_err(load(&p), &p, "UTF-8");
    write(&raw_file("not json", b""));
    assert_format_err(load(&p), &p, "JSON");
    write(&raw_file(r#"{"a":{"dtype":"F32","shape":[2]}}"#, b""));
    assert_format_err(load(&p), &p, "not a valid safetensors file");
    write(&raw_file(r#"{"a":{"dtype":"F99","shape":[1],"data_offsets":[0,4]}}"#, &[0; 4]));
    assert_format_err(load(&p), &p, "not a valid safetensors file");
    // Offsets beyond the data, sizes that disagree with the shape, overflowing shapes.
    write(&raw_file(r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#, &[0; 8]));
    assert_format_err(load(&p), &p, "not a valid safetensors file");
    write(&raw_file(r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, &[0; 8]));
    assert_format_err(load(&p), &p, "not a valid safetensors file");
    let huge = format!(r#"{{"a":{{"dtype":"F32","shape":[{0},{0}],"data_offsets":[0,4]}}}}"#, usize::MAX / 2);
    write(&raw_file(&huge, &[0; 4]));
    assert_format_err(load(&p), &p, "overflow");
    // Trailing garbage after the last tensor.
    write(&raw_file(r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, &[0; 9]));
    assert_format_err(load(&p), &p, "not a valid safetensors file");
    // An empty checkpoint is fine.
    write(&raw_file("{}", b""));
    assert_eq!(load(&p).unwrap(), Checkpoint::new());
}

/// Truncations, byte flips and random bytes: every one returns, none panics.
#[test]
fn fuzzed_files_never_panic() {
    let dir = Scratch::new("fuzz");
    let good = dir.path("good.safetensors");
    let p = dir.path("fuzz.safetensors");
    let mut ckpt = sample();
    ckpt.tensors.truncate(3);
    save(&good, &ckpt, StorageDtype::F16).unwrap();
    let bytes = std::fs::read(&good).unwrap();

    for cut in (0..bytes.len()).step_by(7) {
        std::fs::write(&p, &bytes[..cut]).unwrap();
        assert!(matches!(load(&p), Err(Error::Format { .. })), "truncated at {cut} of {}", bytes.len());
    }
    let mut rng = Rng::new(99);
    let (mut ok, mut err) = (0, 0);
    for i in 0..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= [0xff, 0x01, 0x80][i % 3];
        if i % 5 == 0 {
            let j = rng.below(b.len() as u64) as usize;
            b[j] = rng.next_u64() as u8;
        }
        std::fs::write(&p, &b).unwrap();
        match load(&p) {
            Ok(_) => ok += 1,
            Err(Error::Format { .. }) => err += 1,
            Err(e) => panic!("flip at {i}: unexpected error kind {e}"),
        }
    }
    assert!(ok > 0 && err > 0, "flips in the data load, flips in the header do not ({ok} ok, {err} errors)");
    for len in [1usize, 7, 8, 9, 15, 16, 64, 200, 1000, 4096] {
        for k in 0..4 {
            let mut b: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            if k >= 2 && len >= 8 {
                // A plausible header length so the parser gets past the first check.
                let n = rng.below((len - 7) as u64);
                b[..8].copy_from_slice(&n.to_le_bytes());
                if k == 3 && n > 0 {
                    b[8] = b'{';
                }
            }
            std::fs::write(&p, &b).unwrap();
            assert!(matches!(load(&p), Err(Error::Format { .. })), "random bytes, length {len}");
        }
    }
}

#[test]
fn check_lists_every_mismatch_in_one_message() {
    let mut c = Checkpoint::new();
    c.push(t("0.weight", &[4, 3], vec![0.0; 12])).unwrap();
    c.push(t("0.bias", &[4], vec![0.0; 4])).unwrap();
    c.push(t("2.weight", &[2, 5], vec![0.0; 10])).unwrap();
    c.push(t("3.weight", &[1], vec![0.0])).unwrap();
    c.push(t("4.bias", &[1], vec![0.0])).unwrap();
    let expected = vec![
        Expect::new("0.weight", vec![4, 3]),
        Expect::new("0.bias", vec![4]),
        Expect::new("2.weight", vec![2, 4]),
        Expect::new("2.bias", vec![2]),
        Expect::new("5.weight", vec![1, 1]),
    ];
    let e = c.check(&expected).unwrap_err();
    assert_eq!(
        e.to_string(),
        "checkpoint: tensors do not match the expected ones: missing 2 tensors (2.bias, 5.weight); \
         unexpected 2 tensors (3.weight, 4.bias); 1 shape mismatch (2.weight: expected [2, 4], found [2, 5])"
    );
    assert!(matches!(e, Error::Format { .. }));

    let mut c = Checkpoint::new();
    c.push(t("0.weight", &[512, 780], vec![0.0; 512 * 780])).unwrap();
    c.push(t("0.bias", &[511], vec![0.0; 511])).unwrap();
    let e = c.check(&[Expect::new("0.weight", vec![512, 784]), Expect::new("0.bias", vec![512])]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "checkpoint: tensors do not match the expected ones: 2 shape mismatches (0.weight: expected \
         [512, 784], found [512, 780]; 0.bias: expected [512], found [511])"
    );
    c.tensors.push(c.tensors[1].clone());
    let e = c.check(&[Expect::new("0.weight", vec![512, 780])]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "checkpoint: tensors do not match the expected ones: unexpected 1 tensor (0.bias); duplicated 1 \
         tensor (0.bias)"
    );

    // Order does not matter; an exact match is Ok.
    let c = sample().state_dict_only();
    let mut expected: Vec<Expect> = c.tensors.iter().map(|t| Expect::new(&t.name, t.shape.clone())).collect();
    expected.reverse();
    c.check(&expected).unwrap();
    // check() does not ignore optimizer state.
    let e = sample().check(&expected).unwrap_err().to_string();
    assert!(e.ends_with("unexpected 1 tensor (optim.0.weight.exp_avg)"), "{e}");
}

#[test]
fn state_dict_only_drops_training_state() {
    let mut c = sample();
    c.metadata.insert(TRAIN_RNG_KEY.into(), rng_state_to_string(&Rng::new(5)));
    let s = c.state_dict_only();
    assert!(s.get("optim.0.weight.exp_avg").is_none());
    assert_eq!(s.tensors.len(), c.tensors.len() - 1);
    assert_eq!(s.names().collect::<Vec<_>>(), c.names().filter(|n| !n.starts_with("optim.")).collect::<Vec<_>>());
    assert_eq!(s.metadata.keys().collect::<Vec<_>>(), vec![FORMAT_KEY, LAYERS_KEY, "note"]);
    assert_eq!(optim_tensor_name("0.weight", "exp_avg"), "optim.0.weight.exp_avg");
}

#[test]
fn get_take_push_and_rng_state() {
    let mut c = sample();
    assert_eq!(c.get("0.bias").unwrap().shape, vec![5]);
    let taken = c.take("0.weight").unwrap();
    assert_eq!(taken.shape, vec![5, 4]);
    assert!(c.get("0.weight").is_none() && c.take("0.weight").is_none());
    assert_eq!(c.names().take(2).collect::<Vec<_>>(), vec!["2.weight", "0.bias"]);
    assert!(matches!(c.push(t("0.bias", &[1], vec![1.0])), Err(Error::InvalidInput(_))));
    assert!(matches!(c.push(NamedTensor { name: "x".into(), shape: vec![2, 2], data: vec![1.0; 3] }), Err(Error::Shape { .. })));
    assert!(NamedTensor::new("x", vec![2, 3], vec![0.0; 5]).is_err());
    assert_eq!(t("s", &[], vec![1.0]).numel(), 1);

    let mut rng = Rng::new(42);
    rng.next_u64();
    let s = rng_state_to_string(&rng);
    let mut back = rng_state_from_str(&s).unwrap();
    assert_eq!(back.next_u64(), rng.next_u64());
    for bad in ["", "[1,2,3]", "[0,0,0,0]", "[1,2,3,-4]", "{\"a\":1}"] {
        assert!(matches!(rng_state_from_str(bad), Err(Error::InvalidInput(_))), "{bad:?}");
    }
}

#[test]
fn temporary_file_goes_beside_the_target() {
    use super::file::parent_dir;
    assert_eq!(parent_dir(Path::new("m.safetensors")), Path::new("."));
    assert_eq!(parent_dir(Path::new("runs/m.safetensors")), Path::new("runs"));
    assert_eq!(parent_dir(Path::new("/m.safetensors")), Path::new("/"));
}
