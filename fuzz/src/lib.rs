//! The fuzzing harness shared by the fuzz targets (`fuzz/fuzz_targets/*.rs`, built by cargo fuzz)
//! and by the plain regression test `tests/fuzz_regressions.rs`, which includes this file with
//! `#[path]` so that CI replays the corpora and the saved crashes without a fuzzer.
//!
//! Every function takes the fuzz input as bytes, writes it to a file in a [`Scratch`] folder (the
//! loaders take paths) and runs one loader on it. A loader must return `Ok` or `Err`; a panic, an
//! abort, a hang or an out-of-memory is a bug. On success the harness also checks the round trip
//! through the matching saver (documented as exact for F32), so a file that loads but cannot be
//! written back and read identically is a bug too.
//!
//! Only `std` and `headswap` are used here, so this file compiles both as the fuzz crate's
//! library and as a module of the main crate's integration test.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use headswap::checkpoint::{self, Checkpoint, Expect, IntTensor, NamedTensor, StorageDtype};
use headswap::data::{Dataset, ImageOptions, Targets, manifest, tensor_file};

/// A valid 2×2 8-bit grayscale PNG, written as `a.png` into every scratch folder so that manifest
/// rows naming `a.png` can load.
pub const TINY_PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00,
    0x00, 0x02, 0x08, 0x00, 0x00, 0x00, 0x00, 0x57, 0xdd, 0x52, 0xf8, 0x00, 0x00, 0x00, 0x0e, 0x49, 0x44, 0x41, 0x54, 0x78, 0xda, 0x63,
    0x60, 0xf8, 0xcf, 0xd0, 0xe0, 0x00, 0x00, 0x05, 0x42, 0x01, 0xc0, 0x6d, 0x5e, 0x78, 0xa0, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e,
    0x44, 0xae, 0x42, 0x60, 0x82,
];

/// The environment variable naming the folder scratch folders are made in (`fuzz/run.sh` sets it
/// to a folder of its own in /dev/shm and removes it afterwards). Unset: /dev/shm where it
/// exists, else the system temporary folder.
pub const SCRATCH_ENV: &str = "HEADSWAP_FUZZ_SCRATCH";

/// A private folder for the files a harness writes, holding `a.png` ([`TINY_PNG`]); removed on
/// drop (a fuzzer that exits without dropping leaves it behind: `fuzz/run.sh` cleans up).
pub struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    /// A new, empty scratch folder (plus `a.png`) named after `tag` and the process.
    pub fn new(tag: &str) -> Scratch {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let root = match std::env::var_os(SCRATCH_ENV) {
            Some(d) => PathBuf::from(d),
            None if Path::new("/dev/shm").is_dir() => PathBuf::from("/dev/shm"),
            None => std::env::temp_dir(),
        };
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = root.join(format!("headswap-fuzz-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create scratch folder {}: {e}", dir.display()));
        let s = Scratch { dir };
        s.write("a.png", TINY_PNG);
        s
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of `name` inside the folder.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Writes `bytes` to `name` (replacing it) and returns its path. A write failure is a harness
    /// failure, not a finding.
    pub fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, bytes).unwrap_or_else(|e| panic!("harness: cannot write {}: {e}", p.display()));
        p
    }

    /// Removes `name` if it is there.
    pub fn remove(&self, name: &str) {
        let _ = std::fs::remove_file(self.path(name));
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `a` and `b` with identical bits (NaNs compare by payload, -0 differs from +0).
fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

/// Same metadata, float tensors and integer tensors (values, shapes and dtypes), the non-empty
/// tensors of each list in the same order. Zero-element tensors all sit at one data offset, and
/// safetensors orders tensors with equal offsets by HashMap order, so their order is not compared.
fn same_checkpoint(a: &Checkpoint, b: &Checkpoint) -> bool {
    let same = |s: &NamedTensor, t: &NamedTensor| s.name == t.name && s.shape == t.shape && same_bits(&s.data, &t.data);
    let nonempty = |c: &Checkpoint| c.tensors.iter().filter(|t| !t.data.is_empty()).cloned().collect::<Vec<_>>();
    let by_name = |c: &Checkpoint| {
        let mut v = c.tensors.clone();
        v.sort_by(|s, t| s.name.cmp(&t.name));
        v
    };
    let all = |x: Vec<NamedTensor>, y: Vec<NamedTensor>| x.len() == y.len() && x.iter().zip(&y).all(|(s, t)| same(s, t));
    // integers compare exactly with ==; the same two orders
    let ints_nonempty = |c: &Checkpoint| c.int_tensors.iter().filter(|t| !t.data.is_empty()).cloned().collect::<Vec<IntTensor>>();
    let ints_by_name = |c: &Checkpoint| {
        let mut v = c.int_tensors.clone();
        v.sort_by(|s, t| s.name.cmp(&t.name));
        v
    };
    a.metadata == b.metadata
        && all(nonempty(a), nonempty(b))
        && all(by_name(a), by_name(b))
        && ints_nonempty(a) == ints_nonempty(b)
        && ints_by_name(a) == ints_by_name(b)
}

fn same_dataset(a: &Dataset, b: &Dataset) -> bool {
    let targets = match (&a.targets, &b.targets) {
        (Targets::Classes { y: y1, num_classes: c1 }, Targets::Classes { y: y2, num_classes: c2 }) => y1 == y2 && c1 == c2,
        (Targets::Labels { y: y1, k: k1 }, Targets::Labels { y: y2, k: k2 }) => k1 == k2 && same_bits(y1, y2),
        _ => false,
    };
    targets && a.n == b.n && a.d == b.d && a.input_shape == b.input_shape && a.label_names == b.label_names && same_bits(&a.x, &b.x)
}

/// `headswap::checkpoint::load` on `data`; when it loads, the parts a caller touches next
/// (`check`, `state_dict_only`, the saved RNG state) and the round trip `load(save(ck, F32)) == ck`
/// (integer tensors included, in their own dtypes).
pub fn checkpoint_bytes(s: &Scratch, data: &[u8]) {
    let path = s.write("input.safetensors", data);
    if let Ok(ck) = checkpoint::load(&path) {
        check_loaded(s, &ck);
    }
}

/// What every loaded checkpoint must survive: the calls a caller makes next, and the round trip
/// through headswap's safetensors saver.
fn check_loaded(s: &Scratch, ck: &Checkpoint) {
    let _ = ck.check(&[Expect::new("0.weight", vec![2, 3]), Expect::new("0.bias", vec![2])]);
    let _ = ck.state_dict_only();
    let _ = ck.tensors.iter().map(|t| t.numel()).max();
    let _ = ck.int_tensors.iter().map(|t| t.numel()).max();
    if let Some(v) = ck.metadata.get(checkpoint::TRAIN_RNG_KEY) {
        let _ = checkpoint::rng_state_from_str(v);
    }
    // the model metadata a network loader reads next (the architecture and the tensors it needs,
    // label names, input layout), written back as it was read
    let _ = headswap::nn::Network::check_architecture(ck, "fuzz");
    let _ = headswap::nn::state::label_names_from_metadata(&ck.metadata, "fuzz");
    if let Ok(Some(layout)) = headswap::nn::InputLayout::from_metadata(&ck.metadata, "fuzz") {
        let mut meta = std::collections::BTreeMap::new();
        layout.write_metadata(&mut meta);
        let again = headswap::nn::InputLayout::from_metadata(&meta, "fuzz");
        assert!(matches!(&again, Ok(Some(l)) if *l == layout), "input layout {layout:?} reads back as {again:?}");
    }
    // `save` may refuse a checkpoint (e.g. a tensor named ""); what it writes must read back.
    let out = s.path("roundtrip.safetensors");
    if checkpoint::save(&out, ck, StorageDtype::F32).is_ok() {
        let back = checkpoint::load(&out).unwrap_or_else(|e| panic!("round trip: a checkpoint saved by headswap does not load: {e}"));
        assert!(same_checkpoint(ck, &back), "round trip: load(save(ck)) differs from ck");
    }
}

/// PyTorch's `.pth` reader on `data`, two ways: the bytes as a whole file (through
/// `checkpoint::load`, which must recognise a zip by its first bytes, and `pth::load` directly,
/// which must agree), and the bytes as the pickle `archive/data.pkl` of a well-formed torch zip
/// ([`torch_zip`]) whose storages `archive/data/0` to `archive/data/7` hold 64 bytes each, so
/// that mutations of the pickle are not lost to the zip's offsets. Loaded checkpoints go through
/// [`check_loaded`].
pub fn pth_bytes(s: &Scratch, data: &[u8]) {
    let path = s.write("input.pth", data);
    let direct = checkpoint::pth::load(&path);
    if data.starts_with(checkpoint::pth::ZIP_MAGIC) {
        let via_load = checkpoint::load(&path);
        assert_eq!(via_load.is_ok(), direct.is_ok(), "checkpoint::load and pth::load disagree on a zip");
    }
    if let Ok(ck) = direct {
        check_loaded(s, &ck);
    }
    let path = s.write("wrapped.pth", &torch_zip(data));
    if let Ok(ck) = checkpoint::load(&path) {
        check_loaded(s, &ck);
    }
}

/// A stored zip laid out as torch.save writes one: `archive/data.pkl` = `pickle`,
/// `archive/byteorder` = `little`, `archive/data/0`..`7` of 64 bytes each (a pattern that holds
/// finite floats, 0/1 bools and varied integers), `archive/version`.
pub fn torch_zip(pickle: &[u8]) -> Vec<u8> {
    let storage: Vec<u8> = (0..64u8).map(|i| if i % 4 == 3 { 0x3f } else { i & 1 }).collect();
    let mut entries: Vec<(String, &[u8])> = vec![("archive/data.pkl".into(), pickle), ("archive/byteorder".into(), b"little")];
    entries.extend((0..8).map(|k| (format!("archive/data/{k}"), &storage[..])));
    entries.push(("archive/version".into(), b"3\n"));
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in &entries {
        let offset = out.len() as u32;
        let size = (data.len() as u32).to_le_bytes();
        let name_len = (name.len() as u16).to_le_bytes();
        out.extend_from_slice(b"PK\x03\x04\x14\0\0\0\0\0\0\0\0\0\0\0\0\0"); // version 20, flags, stored, time, date, crc
        out.extend_from_slice(&size);
        out.extend_from_slice(&size);
        out.extend_from_slice(&name_len);
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(data);
        central.extend_from_slice(b"PK\x01\x02\x2d\0\x2d\0\0\0\0\0\0\0\0\0\0\0\0\0"); // versions 45, flags, stored, time, date, crc
        central.extend_from_slice(&size);
        central.extend_from_slice(&size);
        central.extend_from_slice(&name_len);
        central.extend_from_slice(&[0; 12]); // extra and comment lengths, disk, attributes
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let dir_offset = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(b"PK\x05\x06\0\0\0\0");
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&dir_offset.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out
}

/// `headswap::data::tensor_file::load` on `data`; when it loads, the round trip
/// `load(save(ds)) == ds` that the module documents.
pub fn tensor_file_bytes(s: &Scratch, data: &[u8]) {
    let path = s.write("input.safetensors", data);
    let Ok(ds) = tensor_file::load(&path) else { return };
    let _ = ds.positives_per_output();
    let _ = ds.labels_and_mask();
    let out = s.path("roundtrip.safetensors");
    tensor_file::save(&out, &ds).unwrap_or_else(|e| panic!("round trip: a data set that loaded does not save: {e}"));
    let back = tensor_file::load(&out).unwrap_or_else(|e| panic!("round trip: a data set saved by headswap does not load: {e}"));
    assert!(same_dataset(&ds, &back), "round trip: load(save(ds)) differs from ds");
}

/// The image options the manifest harness loads with: grayscale 4×4 without normalisation, and
/// RGB 3×2 normalised (both resize the 2×2 `a.png`).
pub fn manifest_options() -> [ImageOptions; 2] {
    let mut rgb = ImageOptions::rgb(3, 2);
    rgb.normalize = Some((vec![0.5], vec![0.25, 0.5, 2.0]));
    [ImageOptions::gray(4, 4), rgb]
}

/// `headswap::data::manifest::load` on a manifest made from `data`: the bytes up to the first NUL
/// are the CSV (`manifest.csv`, beside `a.png`, a valid 2×2 PNG); the bytes after it, if there
/// is a NUL, are written as `img.png` (any format: the decoder guesses from the content), so the
/// image decoding is fuzzed too. Without a NUL there is no `img.png`.
pub fn manifest_bytes(s: &Scratch, data: &[u8]) {
    let (csv, image) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    };
    match image {
        Some(img) => {
            s.write("img.png", img);
        }
        None => s.remove("img.png"),
    }
    let path = s.write("manifest.csv", csv);
    for opts in manifest_options() {
        if let Ok(ds) = manifest::load(&path, &opts) {
            assert!(ds.validate().is_ok(), "manifest::load returned a data set that does not validate");
        }
    }
    // a grouped manifest read against a model's heads (their kinds and class names known ahead)
    if let Ok(ds) = manifest::load_heads(&path, &ImageOptions::gray(4, 4), &known_heads()) {
        assert!(ds.validate().is_ok(), "manifest::load_heads returned a data set that does not validate");
    }
}

/// The heads a grouped manifest is read against in [`manifest_bytes`]: one of each kind, the
/// classes head with names, and a second classes head by index.
fn known_heads() -> Vec<manifest::ManifestHead> {
    use headswap::kernels::loss::RegressionLoss;
    use headswap::nn::HeadKind;
    let head = |name: &str, kind, names: Option<&[&str]>| manifest::ManifestHead {
        name: name.into(),
        kind,
        names: names.map(|n| n.iter().map(|s| s.to_string()).collect()),
    };
    vec![
        head("objects", HeadKind::Labels, Some(&["pedestrian", "car"])),
        head("scene", HeadKind::Classes, Some(&["rural", "urban"])),
        head("level", HeadKind::Classes, None),
        head("distance", HeadKind::Regression(RegressionLoss::Mse), None),
    ]
}

/// A harness: a scratch folder and the fuzz input.
pub type Harness = fn(&Scratch, &[u8]);

/// The harnesses by fuzz-target name, for replaying corpora.
pub const TARGETS: [(&str, Harness); 4] = [
    ("checkpoint_load", checkpoint_bytes),
    ("tensor_file_load", tensor_file_bytes),
    ("manifest_load", manifest_bytes),
    ("pth_load", pth_bytes),
];
