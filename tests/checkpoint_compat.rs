//! Checkpoints written by an earlier release keep loading, bit for bit.
//!
//! `tests/fixtures/legacy-dd0f82e/` holds files the `headswap` CLI wrote at commit dd0f82e (an
//! MLP, a CNN, an MLP on feature vectors and its `--save-state` resume file; `make.sh` there made
//! them) and `values.json`, which a standard-library Python script (`record.py`) wrote from the
//! raw bytes: each file's metadata, and each tensor's dtype, shape and FNV-1a 64 hash of its
//! little-endian bytes. The tests read the files with today's code and compare everything: the
//! checkpoint's tensors and metadata, the architecture of the network built from it, and the
//! values that network holds on the GPU — and the label names and input layout the CLI recorded
//! in the metadata, which the library now reads and writes itself.
//!
//! Also here: PyTorch state_dicts with integer tensors (BatchNorm's `num_batches_tracked`) load
//! into networks that have no use for them, and the model metadata round-trips through the
//! library.
mod common;
use common::*;
use headswap::Error;
use headswap::checkpoint::{self, Checkpoint, IntDtype, IntTensor, NamedTensor, StorageDtype};
use headswap::nn::{
    Activation, CnnBuilder, Conv2dSpec, DenseSpec, Head, HeadKind, ImageChannels, InputLayout, LayerSpec, Network, Pool2dSpec,
};
use headswap::train::{Optimizer, Schedule, TrainingState};
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/legacy-dd0f82e").join(name)
}

/// FNV-1a 64 of the f32 values' little-endian bytes, as `record.py` hashes the raw file bytes.
fn fnv1a64(values: &[f32]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in values.iter().flat_map(|v| v.to_le_bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// What `values.json` recorded for `file`.
fn recorded(file: &str) -> serde_json::Value {
    let all: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture("values.json")).unwrap()).unwrap();
    all[file].clone()
}

/// Loads `file` and checks its tensors (order, names, shapes, bits) and metadata against
/// `values.json`; returns the checkpoint and the recorded hash of each tensor by name.
fn load_exactly(file: &str) -> (checkpoint::Checkpoint, Vec<(String, String)>) {
    let rec = recorded(file);
    let ckpt = checkpoint::load(&fixture(file)).unwrap();
    let tensors = rec["tensors"].as_array().unwrap();
    assert_eq!(ckpt.tensors.len(), tensors.len(), "{file}: tensor count");
    let mut hashes = Vec::new();
    for (t, r) in ckpt.tensors.iter().zip(tensors) {
        let name = r["name"].as_str().unwrap();
        assert_eq!(t.name, name, "{file}: tensor order");
        assert_eq!(r["dtype"], "F32", "{file}: {name}");
        assert_eq!(serde_json::json!(t.shape), r["shape"], "{file}: {name} shape");
        assert_eq!(fnv1a64(&t.data), r["fnv1a64"].as_str().unwrap(), "{file}: {name} values differ from the file's bits");
        hashes.push((name.to_string(), r["fnv1a64"].as_str().unwrap().to_string()));
    }
    let meta: std::collections::BTreeMap<String, String> = serde_json::from_value(rec["metadata"].clone()).unwrap();
    assert_eq!(ckpt.metadata, meta, "{file}: metadata");
    (ckpt, hashes)
}

/// The network's values, read back from the GPU, are the recorded bits of `<i>.weight` and
/// `<i>.bias` for each layer with parameters (`seq` = its nn.Sequential index).
fn assert_values(file: &str, net: &Network, seq: &[Option<usize>], hashes: &[(String, String)]) {
    let hash = |n: String| hashes.iter().find(|(m, _)| *m == n).unwrap_or_else(|| panic!("{file}: no {n}")).1.clone();
    let values = net.values().unwrap();
    assert_eq!(values.len(), seq.len());
    for (i, ((w, b), s)) in values.iter().zip(seq).enumerate() {
        match s {
            Some(s) => {
                assert_eq!(fnv1a64(w), hash(format!("{s}.weight")), "{file}: layer {i} weight on the GPU");
                assert_eq!(fnv1a64(b), hash(format!("{s}.bias")), "{file}: layer {i} bias on the GPU");
            }
            None => assert!(w.is_empty() && b.is_empty(), "{file}: layer {i} has no parameters"),
        }
    }
}

fn dense(inputs: usize, outputs: usize, activation: Activation) -> LayerSpec {
    LayerSpec::Dense(DenseSpec { inputs, outputs, activation })
}

#[test]
fn legacy_mlp_loads_bit_exactly() {
    let gpu = gpu();
    let (ckpt, hashes) = load_exactly("mlp.safetensors");
    let net = Network::from_checkpoint(&gpu, &ckpt, "mlp.safetensors").unwrap();
    assert_eq!(net.trunk_layers(), &[dense(256, 12, Activation::Relu)]);
    assert_eq!(net.head_layers(), &[dense(12, 4, Activation::Identity)]);
    assert_eq!(net.head_kind(), HeadKind::Labels);
    assert_values("mlp.safetensors", &net, &[Some(0), Some(2)], &hashes);
    // Network::load reads the same file the same way.
    let again = Network::load(&gpu, &fixture("mlp.safetensors")).unwrap();
    assert_values("mlp.safetensors", &again, &[Some(0), Some(2)], &hashes);
}

#[test]
fn legacy_cnn_loads_bit_exactly() {
    let gpu = gpu();
    let (ckpt, hashes) = load_exactly("cnn.safetensors");
    let net = Network::from_checkpoint(&gpu, &ckpt, "cnn.safetensors").unwrap();
    let conv = Conv2dSpec {
        in_channels: 1,
        height: 16,
        width: 16,
        out_channels: 4,
        kernel: [3; 2],
        stride: [1; 2],
        padding: [1; 4],
        groups: 1,
        activation: Activation::Relu,
        bias: true,
    };
    let pool = Pool2dSpec { channels: 4, height: 16, width: 16, kernel: [2; 2], stride: [2; 2], padding: [0; 2], ceil_mode: false };
    assert_eq!(net.trunk_layers(), &[LayerSpec::Conv2d(conv), LayerSpec::MaxPool2d(pool), dense(256, 10, Activation::Relu)]);
    assert_eq!(net.head_layers(), &[dense(10, 8, Activation::Identity)]);
    assert_eq!(net.head_kind(), HeadKind::Classes);
    // Conv2d(0), ReLU, MaxPool2d(2), Flatten, Linear(4), ReLU, Linear(6)
    assert_values("cnn.safetensors", &net, &[Some(0), None, Some(4), Some(6)], &hashes);
}

#[test]
fn legacy_features_mlp_loads_bit_exactly() {
    let gpu = gpu();
    let (ckpt, hashes) = load_exactly("features.safetensors");
    let net = Network::from_checkpoint(&gpu, &ckpt, "features.safetensors").unwrap();
    assert_eq!(net.layers(), vec![dense(6, 5, Activation::Relu), dense(5, 3, Activation::Identity)]);
    assert_eq!(net.trunk_layers().len(), 1);
    assert_eq!(net.head_kind(), HeadKind::Classes);
    assert_values("features.safetensors", &net, &[Some(0), Some(2)], &hashes);
}

/// The resume file `--save-state` wrote: [`TrainingState::load`] gives back the network and where
/// the run stopped. (The lead keeps this green while optimizer state is renamed.)
#[test]
fn legacy_resume_state_loads() {
    let gpu = gpu();
    let (_, hashes) = load_exactly("state.safetensors");
    let (net, state) = TrainingState::load(&gpu, &fixture("state.safetensors")).unwrap();
    assert_eq!(net.layers(), vec![dense(6, 5, Activation::Relu), dense(5, 3, Activation::Identity)]);
    assert_values("state.safetensors", &net, &[Some(0), Some(2)], &hashes);
    assert_eq!((state.epoch, state.step, state.lowest_trainable), (2, 6, 0));
    // the saved trunk multiplier (1) and lowest layer (0): every layer trained at the base rate
    assert_eq!(state.lr_mults, vec![Some(1.0), Some(1.0)]);
    assert_eq!(state.rng, [2131546585298227457, 4296770163424488629, 15490703347411734485, 15770478926525103140]);
    // Adam's m and v for the head range, then the trunk range, in the engine's arena layout,
    // kept as they were read (`state.<i>`) and cut per parameter when the run resumes.
    assert_eq!(state.optimizer_state.len(), 4);
    for (i, (saved, buf)) in state.optimizer_state.iter().enumerate() {
        let name = format!("optim.state.{i}");
        assert_eq!(format!("optim.{saved}"), name);
        let h = &hashes.iter().find(|(n, _)| *n == name).unwrap().1;
        assert_eq!(buf.len(), 128, "{name}");
        assert_eq!(&fnv1a64(buf), h, "{name}");
    }
    let run = state.run.expect("the run's settings were saved");
    assert_eq!((run.batch_size, run.seed, run.n), (4, 7, 12));
    assert_eq!(run.schedule, Schedule::Constant);
    assert_eq!(run.optimizer, Optimizer::adam(0.01));
}

/// The legacy resume file continues its run: resumed to a third epoch on the same data with the
/// saved settings, it gives the weights the dd0f82e CLI wrote for the same run of three epochs
/// straight (`features-3-epochs.safetensors`, made with that binary and `HEADSWAP_AUTOTUNE=0`:
/// `pretrain --data colors.safetensors --arch mlp --layers 5 --optimizer adam --lr 0.01
/// --epochs 3 --batch 4 --seed 7`). Within f32 rounding rather than bit for bit, because this
/// machine's measured kernel choices may differ from the pinned ones; moments lost or misplaced
/// in the per-parameter cut would be off by the learning rate's order.
#[test]
fn legacy_resume_state_continues_its_run() {
    let gpu = gpu();
    let (mut net, state) = TrainingState::load(&gpu, &fixture("state.safetensors")).unwrap();
    let data = headswap::data::tensor_file::load(&fixture("colors.safetensors")).unwrap();
    let cfg = state.run.as_ref().unwrap().apply(&headswap::train::TrainConfig::default());
    headswap::train::Trainer::new(&gpu, cfg).resume(&mut net, &data, &state, 3).unwrap();
    let straight = Network::load(&gpu, &fixture("features-3-epochs.safetensors")).unwrap();
    for (i, ((w, b), (sw, sb))) in net.values().unwrap().iter().zip(straight.values().unwrap()).enumerate() {
        assert_close(&format!("layer {i} weight"), w, &sw.iter().map(|&v| v as f64).collect::<Vec<_>>(), Tolerance::STRICT);
        assert_close(&format!("layer {i} bias"), b, &sb.iter().map(|&v| v as f64).collect::<Vec<_>>(), Tolerance::STRICT);
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// The CLI wrote label names and the input layout into these files; the library reads them with
/// the same meaning, and writes them back in the same formats.
#[test]
fn legacy_metadata_reads_and_writes_through_the_library() {
    let gpu = gpu();
    let gray16 = InputLayout::Image { channels: ImageChannels::Gray, height: 16, width: 16 };
    let cases = [
        ("mlp.safetensors", Some(strings(&["circle", "square", "triangle", "cross"])), Some(gray16.clone())),
        (
            "cnn.safetensors",
            Some(strings(&["circle", "square", "triangle", "cross", "hbar", "vbar", "ring", "diamond"])),
            Some(gray16.clone()),
        ),
        ("features.safetensors", Some(strings(&["red", "green", "blue"])), Some(InputLayout::features(6))),
    ];
    for (file, names, layout) in cases {
        let net = Network::load(&gpu, &fixture(file)).unwrap();
        assert_eq!(net.label_names(), names.as_deref(), "{file}");
        assert_eq!(net.input_layout(), layout.as_ref(), "{file}");
        // written back: the same keys with the same values as the CLI wrote
        let again = net.to_checkpoint().unwrap();
        let rec = recorded(file);
        for key in [checkpoint::LABEL_NAMES_KEY, checkpoint::INPUT_SHAPE_KEY, checkpoint::IMAGE_SIZE_KEY, checkpoint::CHANNELS_KEY] {
            assert_eq!(again.metadata.get(key).map(String::as_str), rec["metadata"][key].as_str(), "{file}: {key}");
        }
    }
    // the resume file had neither
    let (net, _) = TrainingState::load(&gpu, &fixture("state.safetensors")).unwrap();
    assert_eq!((net.label_names(), net.input_layout()), (None, None));
}

#[test]
fn metadata_round_trips_through_save_and_load_clone_and_head_swap() {
    let gpu = gpu();
    let dir = TempDir::new("ckpt-meta");
    let path = dir.path().join("m.safetensors");
    // 3 × 2 × 4 RGB images: 24 inputs
    let mut net = Network::new(&gpu, &[24, 5], Head::labels(3).names(["cat", "dog", "bird"]), 1).unwrap();
    assert_eq!(net.label_names(), Some(&strings(&["cat", "dog", "bird"])[..]));
    assert_eq!(net.input_layout(), None);
    let rgb = InputLayout::Image { channels: ImageChannels::Rgb, height: 2, width: 4 };
    net.set_input_layout(Some(rgb.clone())).unwrap();
    assert_eq!(rgb.shape(), vec![3, 2, 4]);
    net.save(&path, StorageDtype::F32).unwrap();
    let meta = checkpoint::load(&path).unwrap().metadata;
    assert_eq!(meta[checkpoint::LABEL_NAMES_KEY], r#"["cat","dog","bird"]"#);
    assert_eq!(meta[checkpoint::INPUT_SHAPE_KEY], "3,2,4");
    assert_eq!(meta[checkpoint::IMAGE_SIZE_KEY], "4x2");
    assert_eq!(meta[checkpoint::CHANNELS_KEY], "rgb");
    let back = Network::load(&gpu, &path).unwrap();
    assert_eq!(back.label_names(), net.label_names());
    assert_eq!(back.input_layout(), Some(&rgb));

    // a plain shape writes input_shape alone; forgetting the names writes no names key
    net.set_input_layout(Some(InputLayout::Shape(vec![2, 12]))).unwrap();
    net.set_label_names(None).unwrap();
    let meta = net.to_checkpoint().unwrap().metadata;
    assert_eq!(meta[checkpoint::INPUT_SHAPE_KEY], "2,12");
    for key in [checkpoint::LABEL_NAMES_KEY, checkpoint::IMAGE_SIZE_KEY, checkpoint::CHANNELS_KEY] {
        assert!(!meta.contains_key(key), "{key}");
    }
    let back = Network::from_checkpoint(&gpu, &net.to_checkpoint().unwrap(), "memory").unwrap();
    assert_eq!((back.label_names(), back.input_layout()), (None, Some(&InputLayout::Shape(vec![2, 12]))));

    // names and layout must fit the network; a refused value changes nothing
    net.set_label_names(Some(strings(&["a", "b", "c"]))).unwrap();
    assert!(
        matches!(net.set_label_names(Some(strings(&["a", "b"]))), Err(Error::InvalidInput(m)) if m.contains("2 label names for 3 outputs"))
    );
    let e = net.set_input_layout(Some(InputLayout::features(23))).unwrap_err();
    assert!(matches!(&e, Error::Shape { what } if what.contains("[23]") && what.contains("24 inputs")), "{e}");
    assert!(net.set_input_layout(Some(InputLayout::Shape(vec![24, 0]))).is_err());
    assert_eq!(net.label_names(), Some(&strings(&["a", "b", "c"])[..]));
    assert_eq!(net.input_layout(), Some(&InputLayout::Shape(vec![2, 12])));

    // try_clone keeps both
    let copy = net.try_clone().unwrap();
    assert_eq!((copy.label_names(), copy.input_layout()), (net.label_names(), net.input_layout()));

    // a head-swap keeps the layout (same inputs) and drops the names (new outputs) unless given
    let e = net.swap_head(Head::classes(2).names(["x"]), 3).unwrap_err();
    assert!(e.to_string().contains("1 label names for 2 outputs"), "{e}");
    assert_eq!((net.output_dim(), net.label_names().map(<[String]>::len)), (3, Some(3)), "a refused swap changes nothing");
    net.swap_head(Head::classes(2), 3).unwrap();
    assert_eq!((net.label_names(), net.input_layout()), (None, Some(&InputLayout::Shape(vec![2, 12]))));
    net.swap_head(Head::labels(2).hidden(4, Activation::Relu).names(["x", "y"]), 4).unwrap();
    assert_eq!(net.label_names(), Some(&strings(&["x", "y"])[..]));
    // a network built without a Head has no metadata until it is given some
    assert!(Network::new(&gpu, &[4, 2], Head::classes(3).names(["a", "b"]), 1).is_err());

    // a training checkpoint carries them too
    let mut state_meta = net.to_checkpoint().unwrap();
    state_meta.metadata.insert("optim.step".into(), "1".into());
    let back = Network::from_checkpoint(&gpu, &state_meta, "state").unwrap();
    assert_eq!(back.label_names(), Some(&strings(&["x", "y"])[..]));
}

#[test]
fn malformed_metadata_is_a_format_error_naming_the_key() {
    let gpu = gpu();
    let net = Network::new(&gpu, &[24, 5], Head::classes(3), 1).unwrap();
    let good = net.to_checkpoint().unwrap();
    let with = |pairs: &[(&str, &str)]| {
        let mut c = good.clone();
        for (k, v) in pairs {
            c.metadata.insert(k.to_string(), v.to_string());
        }
        Network::from_checkpoint(&gpu, &c, "m.safetensors")
    };
    let (names, shape, size, channels) =
        (checkpoint::LABEL_NAMES_KEY, checkpoint::INPUT_SHAPE_KEY, checkpoint::IMAGE_SIZE_KEY, checkpoint::CHANNELS_KEY);
    let bad: &[(&[(&str, &str)], &str)] = &[
        (&[(names, "cat,dog,bird")], names),
        (&[(names, "[1,2,3]")], names),
        (&[(names, r#"["a","b"]"#)], "2 label names for 3 outputs"),
        (&[(shape, "1,x,3")], shape),
        (&[(shape, "")], shape),
        (&[(shape, "2,0,12")], shape),
        (&[(shape, "23")], "does not multiply to the network's 24 inputs"),
        (&[(size, "16")], size),
        (&[(size, "0x4")], size),
        (&[(size, "4x2"), (channels, "cmyk")], channels),
        (&[(channels, "rgb")], "headswap.channels: given without headswap.image_size"),
        (&[(size, "4x2"), (channels, "rgb"), (shape, "3,4,2")], shape),
        (&[(size, "4x2"), (channels, "gray"), (shape, "24")], shape),
        (
            &[(size, "4x4"), (channels, "rgb"), (shape, "3,4,4")],
            "headswap.image_size: input shape [3, 4, 4] does not multiply to the network's 24 inputs",
        ),
        (&[(size, "4x4"), (channels, "rgb")], "headswap.image_size: input shape [3, 4, 4] does not multiply"),
    ];
    for (pairs, needle) in bad {
        match with(pairs) {
            Err(Error::Format { path, message }) => {
                assert_eq!(path, "m.safetensors");
                assert!(message.contains(needle), "{pairs:?}: {message:?} does not mention {needle:?}");
            }
            other => panic!("{pairs:?}: expected a format error, got {:?}", other.map(|n| n.input_layout().cloned())),
        }
    }
    // `[]` (the CLI's value for data without names) is no names; image keys without
    // input_shape, and a missing channels key (the CLI's reader took it as gray), still read
    let net = with(&[(names, "[]"), (size, "8x3")]).unwrap();
    assert_eq!(net.label_names(), None);
    assert_eq!(net.input_layout(), Some(&InputLayout::Image { channels: ImageChannels::Gray, height: 3, width: 8 }));
    let net = with(&[(size, "4x2"), (channels, "rgb"), (shape, " 3, 2,4")]).unwrap();
    assert_eq!(net.input_layout().map(InputLayout::shape), Some(vec![3, 2, 4]));
}

/// A state_dict as torchvision writes it for a model whose BatchNorm layers headswap does not
/// have (yet): `num_batches_tracked` I64 scalars beside the parameters. The float parameters
/// that match the network load, the integer tensors are ignored and reported by
/// `unused_tensors`; a float extra is still refused, and an integer under a parameter's name too.
#[test]
fn state_dicts_with_num_batches_tracked_load_into_mlp_and_cnn() {
    let gpu = gpu();
    let dir = TempDir::new("ckpt-ints");
    let nbt = |name: &str, v: i64| IntTensor::new(name, vec![], IntDtype::I64, vec![v]).unwrap();
    let big = (1i64 << 40) + 3;

    // MLP: Sequential(Linear(4,5), ReLU, Linear(5,3)), plus counters
    let mut sd = Checkpoint::new();
    for (i, (name, shape)) in
        [("0.weight", vec![5, 4]), ("0.bias", vec![5]), ("2.weight", vec![3, 5]), ("2.bias", vec![3])].into_iter().enumerate()
    {
        let n = shape.iter().product();
        sd.push(NamedTensor::new(name, shape, rand_vec(10 + i as u64, n)).unwrap()).unwrap();
        if i == 1 {
            sd.push_int(nbt("1.num_batches_tracked", big)).unwrap();
        }
    }
    sd.push_int(nbt("bn.num_batches_tracked", 0)).unwrap();
    sd.metadata.insert("format".into(), "pt".into());
    let path = dir.path().join("mlp.safetensors");
    checkpoint::save(&path, &sd, StorageDtype::F32).unwrap();
    let loaded = checkpoint::load(&path).unwrap();
    assert_eq!(loaded.get_int("1.num_batches_tracked").unwrap().data, vec![big]);
    let net = Network::from_state_dict(&gpu, &loaded, Activation::Relu, HeadKind::Labels, 1, "mlp.safetensors").unwrap();
    assert_eq!(net.layers(), vec![dense(4, 5, Activation::Relu), dense(5, 3, Activation::Identity)]);
    assert_eq!(net.layer_values(0).unwrap().0, sd.get("0.weight").unwrap().data);
    assert_eq!(net.layer_values(1).unwrap().1, sd.get("2.bias").unwrap().data);
    assert_eq!(net.unused_tensors(&loaded), strings(&["1.num_batches_tracked", "bn.num_batches_tracked"]));
    // the same through the architecture-given loader
    let net = Network::from_state_dict_layers(
        &gpu,
        &loaded,
        vec![dense(4, 5, Activation::Relu)],
        vec![dense(5, 3, Activation::Identity)],
        HeadKind::Labels,
        "mlp.safetensors",
    )
    .unwrap();
    assert_eq!(net.layer_values(1).unwrap().0, sd.get("2.weight").unwrap().data);

    // a float extra is an unexpected key, as it always was (the ignored integers are not listed)
    let mut extra = loaded.clone();
    extra.push(NamedTensor::new("1.running_mean", vec![5], vec![0.0; 5]).unwrap()).unwrap();
    let e = Network::from_state_dict(&gpu, &extra, Activation::Relu, HeadKind::Labels, 1, "x").unwrap_err();
    assert!(matches!(&e, Error::Format { message, .. } if message.ends_with("unexpected 1 tensor (1.running_mean)")), "{e}");
    // an integer tensor where a parameter belongs is refused, naming it and its dtype
    let mut int_param = loaded.clone();
    int_param.take("2.bias");
    int_param.push_int(IntTensor::new("2.bias", vec![3], IntDtype::I32, vec![1, 2, 3]).unwrap()).unwrap();
    let e = Network::from_state_dict(&gpu, &int_param, Activation::Relu, HeadKind::Labels, 1, "x").unwrap_err();
    assert!(e.to_string().contains("2.bias: expected floats, found I32"), "{e}");
    let mut int_weight = loaded.clone();
    int_weight.take("2.weight");
    int_weight.push_int(IntTensor::new("2.weight", vec![3, 5], IntDtype::I64, vec![1; 15]).unwrap()).unwrap();
    let e = Network::from_state_dict(&gpu, &int_weight, Activation::Relu, HeadKind::Labels, 1, "x").unwrap_err();
    assert!(e.to_string().contains("2.weight holds I64 integers"), "{e}");

    // CNN: Sequential(Conv2d(1,4,3,padding=1), BatchNorm-less ReLU, MaxPool2d(2), Flatten,
    // Linear(256,10), ReLU, Linear(10,2)), plus counters
    let trunk = CnnBuilder::new(1, 16, 16).conv(4, 3, 1, 1, Activation::Relu).max_pool(2, 2).dense(10, Activation::Relu).build().unwrap();
    let head = vec![dense(10, 2, Activation::Identity)];
    let mut sd = Checkpoint::new();
    let params = [
        ("0.weight", vec![4, 1, 3, 3]),
        ("0.bias", vec![4]),
        ("4.weight", vec![10, 256]),
        ("4.bias", vec![10]),
        ("6.weight", vec![2, 10]),
        ("6.bias", vec![2]),
    ];
    for (i, (name, shape)) in params.into_iter().enumerate() {
        let n = shape.iter().product();
        sd.push(NamedTensor::new(name, shape, rand_vec(20 + i as u64, n)).unwrap()).unwrap();
    }
    sd.push_int(nbt("1.num_batches_tracked", 12)).unwrap();
    sd.push_int(nbt("5.num_batches_tracked", big)).unwrap();
    let path = dir.path().join("cnn.safetensors");
    checkpoint::save(&path, &sd, StorageDtype::F16).unwrap();
    let loaded = checkpoint::load(&path).unwrap();
    let net = Network::from_state_dict_layers(&gpu, &loaded, trunk, head, HeadKind::Classes, "cnn.safetensors").unwrap();
    assert_eq!(net.layer_values(0).unwrap().0, loaded.get("0.weight").unwrap().data);
    assert_eq!(net.layer_values(3).unwrap().0, loaded.get("6.weight").unwrap().data);
    assert_eq!(net.unused_tensors(&loaded), strings(&["1.num_batches_tracked", "5.num_batches_tracked"]));

    // a headswap checkpoint with an integer tensor added loads too
    let mut ckpt = net.to_checkpoint().unwrap();
    ckpt.push_int(nbt("counter", 5)).unwrap();
    let back = Network::from_checkpoint(&gpu, &ckpt, "memory").unwrap();
    assert_eq!(back.values().unwrap(), net.values().unwrap());
    assert_eq!(back.unused_tensors(&ckpt), strings(&["counter"]));
}

/// A model trained and saved through the library alone keeps what its data said about it: the
/// label names and the shape of one example (the CLI used to be the only writer of these).
#[test]
fn library_training_records_label_names_and_input_shape() {
    let gpu = gpu();
    let data = headswap::data::synthetic::scenes_task_b(40, 16, 3);
    let mut net = Network::new(&gpu, &[256, 16], Head::labels(4), 1).unwrap();
    assert_eq!(net.label_names(), None);
    headswap::train::Trainer::new(&gpu, headswap::train::TrainConfig::default()).fit(&mut net, &data, 1).unwrap();
    assert_eq!(net.label_names(), Some(&data.label_names[..]));
    assert_eq!(net.input_layout(), Some(&InputLayout::Shape(data.input_shape.clone())));
    let dir = TempDir::new("library-metadata");
    let path = dir.path().join("m.safetensors");
    net.save(&path, StorageDtype::F32).unwrap();
    let back = Network::load(&gpu, &path).unwrap();
    assert_eq!(back.label_names(), Some(&data.label_names[..]));
    assert_eq!(back.input_layout().map(|l| l.shape()), Some(data.input_shape.clone()));
}
