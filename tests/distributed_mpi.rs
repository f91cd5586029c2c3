//! Data-parallel training over MPI (feature `distributed`; `.ci/run` installs Open MPI and runs
//! this): `mpirun -np 2` of the CLI gives the weights one process gets with the same global batch
//! (MLP and CNN, to 1e-5 relative), a frozen trunk keeps its bits, the ranks stay bit-identical
//! after every step (`examples/data_parallel.rs`, a network of named heads included), a network of
//! named heads trained from a tensor file of `y.<head>` targets with unknowns gives the weights and
//! each head's loss of one process, `--accumulate 2` (micro-batches summed on each rank, one
//! exchange per step) gives one process's plain run, `--save-state`/`resume` continue exactly, and a rank given
//! unreadable data ends the whole job with one clear error, writing nothing.
mod common;
use common::TempDir;
use headswap::checkpoint;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_headswap");

fn mpirun() -> Command {
    let mut c = Command::new("mpirun");
    c.args(["--oversubscribe", "--bind-to", "none"])
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("NODEVICE_SELECT", "1");
    c
}

fn run(mut c: Command) -> Output {
    let out = c.output().unwrap_or_else(|e| panic!("cannot start {c:?}: {e} (install Open MPI: apt-get install openmpi-bin)"));
    assert!(out.status.success(), "{c:?} failed: {}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    out
}

fn headswap_np(np: usize, args: &[&str]) -> Output {
    let mut c = mpirun();
    c.arg("-np").arg(np.to_string()).arg(BIN).args(args);
    run(c)
}

fn headswap_alone(args: &[&str]) -> Output {
    let mut c = Command::new(BIN);
    c.args(args).env("NODEVICE_SELECT", "1");
    run(c)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Every tensor of `a` and `b` (same names) within `tol` of each other, relative to the tensor's
/// largest value.
fn assert_close_files(a: &Path, b: &Path, tol: f64) {
    let (a, b) = (checkpoint::load(a).unwrap(), checkpoint::load(b).unwrap());
    assert_eq!(a.names().collect::<Vec<_>>(), b.names().collect::<Vec<_>>());
    for t in &a.tensors {
        let u = b.get(&t.name).unwrap();
        let scale = t.data.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-3) as f64;
        let worst = t.data.iter().zip(&u.data).map(|(x, y)| (x - y).abs() as f64).fold(0.0, f64::max);
        assert!(worst <= tol * scale, "{}: 2 ranks and 1 differ by {worst:e} (scale {scale:e})", t.name);
    }
}

#[test]
fn two_ranks_train_an_mlp_and_a_cnn_like_one_process_with_the_same_global_batch() {
    let dir = TempDir::new("mpi-same");
    let p = |n: &str| dir.path().join(n);
    // 600 examples, batch 64: 9 full batches of 32 + 32 rows and a last one of 12 + 12
    let mlp = ["pretrain", "--data", "synthetic-a:600", "--arch", "mlp", "--layers", "64,32", "--epochs", "3", "--seed", "3"];
    headswap_np(2, &[&mlp[..], &["--out", s(&p("mlp2.safetensors"))]].concat());
    headswap_alone(&[&mlp[..], &["--out", s(&p("mlp1.safetensors"))]].concat());
    assert_close_files(&p("mlp1.safetensors"), &p("mlp2.safetensors"), 1e-5);

    let cnn =
        ["pretrain", "--data", "synthetic-a:200", "--arch", "cnn", "--channels", "4,8", "--epochs", "2", "--batch", "25", "--seed", "5"];
    headswap_np(2, &[&cnn[..], &["--out", s(&p("cnn2.safetensors"))]].concat());
    headswap_alone(&[&cnn[..], &["--out", s(&p("cnn1.safetensors"))]].concat());
    assert_close_files(&p("cnn1.safetensors"), &p("cnn2.safetensors"), 1e-5);
}

/// `--accumulate K` keeps `--batch` the global batch of one step: 2 ranks each running 2
/// micro-batches per step (one exchange per step) give the weights and the epoch losses of one
/// process running the whole batch in one pass; a head fine-tuned on cached features alike.
#[test]
fn two_ranks_accumulating_micro_batches_train_like_one_process_with_the_whole_batch() {
    let dir = TempDir::new("mpi-accumulate");
    let p = |n: &str| dir.path().join(n);
    // 600 examples, batch 64: micro-batches of 32 = 16 + 16 rows per rank, the last step's 24
    // rows as 12 + 12, i.e. 6 + 6 per rank
    let mlp = ["pretrain", "--data", "synthetic-a:600", "--arch", "mlp", "--layers", "64,32", "--epochs", "3", "--seed", "3", "--json"];
    let out2 = headswap_np(2, &[&mlp[..], &["--accumulate", "2", "--out", s(&p("mlp2.safetensors"))]].concat());
    let out1 = headswap_alone(&[&mlp[..], &["--out", s(&p("mlp1.safetensors"))]].concat());
    assert_close_files(&p("mlp1.safetensors"), &p("mlp2.safetensors"), 1e-5);
    let loss = |o: &Output| -> Vec<f64> {
        let doc: serde_json::Value = serde_json::from_slice(&o.stdout).expect("a JSON report");
        doc["epochs"].as_array().unwrap().iter().map(|e| e["loss"].as_f64().unwrap()).collect()
    };
    for (a, b) in loss(&out1).iter().zip(loss(&out2)) {
        assert!((a - b).abs() <= 1e-5 * a.abs().max(1e-3), "epoch loss {b} with 2 ranks accumulating, {a} alone");
    }
    // head only on the frozen trunk's cached features: 3 micro-batches per step
    let a = p("a.safetensors");
    headswap_alone(&["pretrain", "--data", "synthetic-a:200", "--layers", "32", "--epochs", "1", "--out", s(&a)]);
    let ft = ["finetune", "--from", s(&a), "--data", "synthetic-b:150", "--freeze", "trunk", "--epochs", "2"];
    headswap_np(2, &[&ft[..], &["--batch", "48", "--accumulate", "3", "--out", s(&p("b2.safetensors"))]].concat());
    headswap_alone(&[&ft[..], &["--batch", "48", "--out", s(&p("b1.safetensors"))]].concat());
    assert_close_files(&p("b1.safetensors"), &p("b2.safetensors"), 1e-5);
}

#[test]
fn a_frozen_trunk_keeps_its_bits_and_resume_continues_exactly_under_mpi() {
    let dir = TempDir::new("mpi-frozen");
    let p = |n: &str| dir.path().join(n);
    headswap_np(
        2,
        &["pretrain", "--data", "synthetic-a:300", "--layers", "32,16", "--epochs", "1", "--seed", "1", "--out", s(&p("a.safetensors"))],
    );
    headswap_np(
        2,
        &[
            "finetune",
            "--from",
            s(&p("a.safetensors")),
            "--data",
            "synthetic-b:120",
            "--freeze",
            "trunk",
            "--epochs",
            "2",
            "--seed",
            "2",
            "--out",
            s(&p("b.safetensors")),
        ],
    );
    let (a, b) = (checkpoint::load(&p("a.safetensors")).unwrap(), checkpoint::load(&p("b.safetensors")).unwrap());
    for name in ["0.weight", "0.bias", "2.weight", "2.bias"] {
        assert_eq!(a.get(name).unwrap().data, b.get(name).unwrap().data, "{name} is frozen");
    }
    assert_ne!(a.get("4.bias").unwrap().shape, b.get("4.bias").unwrap().shape, "the head was swapped");

    // 2 epochs + resume to 3 equals 3 epochs straight, under MPI as alone
    let common = ["--data", "synthetic-a:200", "--layers", "32", "--optimizer", "adam", "--seed", "4"];
    headswap_np(2, &[&["pretrain"][..], &common, &["--epochs", "3", "--out", s(&p("straight.safetensors"))]].concat());
    headswap_np(
        2,
        &[&["pretrain"][..], &common, &["--epochs", "2", "--out", s(&p("half.safetensors")), "--save-state", s(&p("half.state"))]].concat(),
    );
    headswap_np(
        2,
        &["resume", "--state", s(&p("half.state")), "--data", "synthetic-a:200", "--epochs", "3", "--out", s(&p("resumed.safetensors"))],
    );
    assert_eq!(std::fs::read(p("straight.safetensors")).unwrap(), std::fs::read(p("resumed.safetensors")).unwrap());
}

#[test]
fn the_ranks_are_bit_identical_after_every_step() {
    // built beside this test by `cargo test --features distributed`
    let example: PathBuf = std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().join("examples/data_parallel");
    assert!(example.exists(), "{} is missing: cargo test --features distributed builds it", example.display());
    let mut c = mpirun();
    c.args(["-np", "2"]).arg(&example);
    let out = run(c);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().filter(|l| l.contains("ranks identical: true")).count(), 9, "{text}");
    assert!(!text.contains("false"), "{text}");
}

#[test]
fn a_rank_given_unreadable_data_ends_the_job_with_one_clear_error_and_writes_nothing() {
    let dir = TempDir::new("mpi-fault");
    let out = dir.path().join("never.safetensors");
    let bad = dir.path().join("garbage.csv");
    std::fs::write(&bad, "this,is\nnot,numbers\n").unwrap();
    let args = |data: &str| -> Vec<String> {
        ["pretrain", "--data", data, "--epochs", "50", "--out", s(&out)].iter().map(|a| a.to_string()).collect()
    };
    // MPMD: rank 0 reads good data, rank 1 the bad file
    let mut c = mpirun();
    c.args(["-np", "1", BIN]).args(args("synthetic-a:2000")).args([":", "-np", "1", BIN]).args(args(s(&bad)));
    let started = Instant::now();
    let result = c.output().unwrap();
    let took = started.elapsed();
    let err = String::from_utf8_lossy(&result.stderr);
    assert!(!result.status.success(), "the job must fail: {err}");
    assert!(err.contains("error: rank 1 of 2") && err.contains("garbage.csv"), "{err}");
    assert!(!out.exists(), "nothing is written");
    assert!(took < Duration::from_secs(60), "the job ended after {took:?}");
}

/// A trunk under three named heads (labels behind a hidden layer, classes, Huber regression) and
/// `n` examples with about a quarter of each head's targets unknown (NaN labels, class −1, NaN
/// values), saved as an `--init` model and a tensor file of `y.<head>` targets.
fn heads_files(dir: &Path) -> (PathBuf, PathBuf) {
    use headswap::data::{Dataset, HeadTargets, Targets};
    use headswap::kernels::{Activation, loss::IGNORE_CLASS, loss::RegressionLoss};
    use headswap::nn::{DenseSpec, Head, Init, LayerSpec, Network, Trunk};
    let gpu = headswap::Gpu::new().expect("an adapter");
    let trunk = Trunk::chain(vec![
        LayerSpec::Dense(DenseSpec { inputs: 6, outputs: 8, activation: Activation::Tanh }),
        LayerSpec::Dense(DenseSpec { inputs: 8, outputs: 6, activation: Activation::Relu }),
    ]);
    let heads = [
        Head::labels(3).hidden(4, Activation::Tanh).named("objects").pos_weight(vec![2.0, 0.5, 1.5]),
        Head::classes(4).named("scene").weight(0.5),
        Head::regression(2, RegressionLoss::Huber(0.5)).named("distance").weight(2.0),
    ];
    let net = Network::from_trunk_heads(&gpu, 6, trunk, Init::KaimingUniform, &heads, 4).unwrap();
    let n = 37;
    let mut r = headswap::Rng::new(9);
    let x = (0..n * 6).map(|_| r.uniform(-1.5, 1.5) as f32).collect();
    let mut masked = |len: usize, f: &dyn Fn(&mut headswap::Rng) -> f32| -> Vec<f32> {
        (0..len).map(|_| if r.next_f64() < 0.25 { f32::NAN } else { f(&mut r) }).collect()
    };
    let objects = masked(n * 3, &|r| r.below(2) as f32);
    let distance = masked(n * 2, &|r| r.uniform(-2.0, 2.0) as f32);
    let scene = masked(n, &|r| r.below(4) as f32).iter().map(|&c| if c.is_nan() { IGNORE_CLASS } else { c as u32 }).collect();
    let data = Dataset {
        x,
        n,
        d: 6,
        input_shape: vec![6],
        targets: Targets::Heads(vec![
            HeadTargets::new("objects", Targets::Labels { y: objects, k: 3 }),
            HeadTargets::new("scene", Targets::Classes { y: scene, num_classes: 4 }),
            HeadTargets::new("distance", Targets::Regression { y: distance, k: 2 }),
        ]),
        label_names: Vec::new(),
    };
    let (init, file) = (dir.join("heads-init.safetensors"), dir.join("heads-data.safetensors"));
    net.save(&init, checkpoint::StorageDtype::F32).unwrap();
    headswap::data::tensor_file::save(&file, &data).unwrap();
    (init, file)
}

#[test]
fn two_ranks_train_named_heads_with_unknown_targets_like_one_process() {
    let dir = TempDir::new("mpi-heads");
    let (init, data) = heads_files(dir.path());
    // 37 examples, batch 10: shares of 5 + 5 and a last batch of 4 + 3, each head's known targets
    // spread unevenly over them
    let args = |out: &Path| -> Vec<String> {
        [
            "train",
            "--init",
            s(&init),
            "--data",
            s(&data),
            "--head-weight",
            "scene=0.25",
            "--optimizer",
            "adam",
            "--lr",
            "0.01",
            "--batch",
            "10",
            "--epochs",
            "3",
            "--seed",
            "3",
            "--json",
            "--out",
            s(out),
        ]
        .iter()
        .map(|a| a.to_string())
        .collect()
    };
    let (two, one) = (dir.path().join("two.safetensors"), dir.path().join("one.safetensors"));
    let a2 = args(&two);
    let a1 = args(&one);
    let out2 = headswap_np(2, &a2.iter().map(String::as_str).collect::<Vec<_>>());
    let out1 = headswap_alone(&a1.iter().map(String::as_str).collect::<Vec<_>>());
    assert_close_files(&one, &two, 1e-5);
    // every head's loss and metrics reduced over the ranks as one process reports them
    let doc = |o: &Output| -> serde_json::Value { serde_json::from_slice(&o.stdout).expect("a JSON report") };
    let (d1, d2) = (doc(&out1), doc(&out2));
    let (e1, e2) = (d1["epochs"].as_array().unwrap(), d2["epochs"].as_array().unwrap());
    assert_eq!(e1.len(), 3);
    for (a, b) in e1.iter().zip(e2) {
        let close = |x: &serde_json::Value, y: &serde_json::Value| {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            (x - y).abs() <= 1e-5 * x.abs().max(1e-3)
        };
        assert!(close(&a["loss"], &b["loss"]), "{} vs {}", a["loss"], b["loss"]);
        let (h1, h2) = (a["heads"].as_array().unwrap(), b["heads"].as_array().unwrap());
        assert_eq!(h1.len(), 3);
        for (x, y) in h1.iter().zip(h2) {
            assert_eq!(x["name"], y["name"]);
            assert!(close(&x["loss"], &y["loss"]), "{}: {} vs {}", x["name"], x["loss"], y["loss"]);
        }
        assert_eq!(h1[1]["accuracy"], h2[1]["accuracy"], "scene accuracy");
    }
}
