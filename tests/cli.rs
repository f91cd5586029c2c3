//! The command line as a user meets it: the whole pretrain → finetune → eval → predict flow, a
//! deterministic `train` run, and bad input that must end in one readable line and a non-zero
//! exit, never a panic.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn headswap(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_headswap")).args(args).output().expect("run headswap")
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("headswap-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Asserts a clean failure: the exit code, an `error:` line naming `needle`, and no panic.
fn fails(out: &Output, code: i32, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    assert!(!err.contains("panicked") && !err.contains("RUST_BACKTRACE"), "a panic: {err}");
    let last = err.lines().last().unwrap_or("");
    assert!(last.starts_with("error: ") && last.contains(needle), "expected one error line containing {needle:?}, got: {err}");
}

/// The CLI's values against the library's run of the same job in this process: equal to f32
/// rounding. Bit equality is not asked across processes, since each measures its own kernel
/// choices (the autotuner; on GL timings are noisy) and another matmul variant sums in another
/// order; reruns of one binary, which share the autotune cache, are compared bit for bit.
fn same_run(name: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{name}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= 1e-5 * w.abs().max(1e-2), "{name}[{i}]: the CLI's {g} against the library's {w}");
    }
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn pretrain_finetune_eval_predict() {
    let a = tmp("a.safetensors");
    let b = tmp("b.safetensors");
    let (a_s, b_s) = (a.to_str().unwrap(), b.to_str().unwrap());
    ok(&headswap(&["pretrain", "--data", "synthetic-a:400", "--epochs", "2", "--out", a_s]));
    let out = ok(&headswap(&[
        "finetune",
        "--from",
        a_s,
        "--data",
        "synthetic-b:120",
        "--freeze",
        "trunk",
        "--epochs",
        "3",
        "--out",
        b_s,
        "--json",
    ]));
    assert!(out.contains("\"cached_features\":true"), "{out}");
    let out = ok(&headswap(&["eval", "--model", b_s, "--data", "synthetic-b:50"]));
    assert!(out.contains("mean"), "{out}");
    // an image to predict: a bright square on a dark background
    let img_path = tmp("square.png");
    let img = image::GrayImage::from_fn(16, 16, |x, y| image::Luma([if (3..9).contains(&x) && (3..9).contains(&y) { 230 } else { 10 }]));
    img.save(&img_path).unwrap();
    let out = ok(&headswap(&["predict", "--model", b_s, img_path.to_str().unwrap(), "--json"]));
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let probs = v[0]["probabilities"].as_object().unwrap();
    assert_eq!(probs.len(), 4);
    assert!(probs.values().all(|p| (0.0..=1.0).contains(&p.as_f64().unwrap())));
    // a label head: the labels predicted present, by name
    let present: Vec<&str> = v[0]["labels"].as_array().expect("a list of labels").iter().map(|l| l.as_str().unwrap()).collect();
    let expected: Vec<&str> = probs.iter().filter(|(_, p)| p.as_f64().unwrap() >= 0.5).map(|(n, _)| n.as_str()).collect();
    assert_eq!(present.iter().copied().collect::<std::collections::BTreeSet<_>>(), expected.into_iter().collect(), "{v}");
    // a class head: the class by name and index, and its probability
    let out = ok(&headswap(&["predict", "--model", a_s, img_path.to_str().unwrap(), "--json"]));
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let probs = v[0]["probabilities"].as_object().unwrap();
    let class = v[0]["class"].as_str().expect("a class name");
    let best = probs.values().map(|p| p.as_f64().unwrap()).fold(f64::MIN, f64::max);
    assert_eq!(probs[class].as_f64().unwrap(), best, "{v}");
    assert_eq!(v[0]["probability"].as_f64().unwrap(), best, "{v}");
    let names = headswap::data::synthetic::shapes_task_a(8, 16, 0).label_names;
    assert_eq!(names[v[0]["class_index"].as_u64().unwrap() as usize], class, "{v}");
}

#[test]
fn train_is_a_deterministic_fully_specified_run() {
    let init = tmp("init.safetensors");
    ok(&headswap(&["pretrain", "--data", "synthetic-a:200", "--epochs", "1", "--out", init.to_str().unwrap()]));
    // data as a safetensors file, as a NumPy or PyTorch user would hand it over
    let data = headswap::data::synthetic::shapes_task_a(300, 16, 5);
    let data_path = tmp("data.safetensors");
    headswap::data::tensor_file::save(&data_path, &data).unwrap();
    let mut outputs = Vec::new();
    for i in 0..2 {
        let out = tmp(&format!("trained{i}.safetensors"));
        ok(&headswap(&[
            "train",
            "--init",
            init.to_str().unwrap(),
            "--data",
            data_path.to_str().unwrap(),
            "--loss",
            "softmax",
            "--optimizer",
            "adamw",
            "--lr",
            "0.001",
            "--weight-decay",
            "0.01",
            "--batch",
            "32",
            "--epochs",
            "2",
            "--no-shuffle",
            "--out",
            out.to_str().unwrap(),
        ]));
        outputs.push(std::fs::read(out).unwrap());
    }
    assert_eq!(outputs[0], outputs[1], "the same fully specified run gave different weights");
}

#[test]
fn bad_input_is_one_line_and_a_nonzero_exit() {
    fails(&headswap(&["frobnicate"]), 2, "unknown command");
    fails(&headswap(&["pretrain", "--data", "synthetic-a:10"]), 2, "--out");
    fails(&headswap(&["pretrain", "--data", "synthetic-a:10", "--out", "/tmp/x", "--epochz", "3"]), 2, "--epochz");
    fails(&headswap(&["pretrain", "--data", "/no/such/file.safetensors", "--out", "/tmp/x"]), 1, "/no/such/file");
    fails(&headswap(&["pretrain", "--data", "synthetic-a:10", "--out", "/tmp/x", "--batch", "lots"]), 2, "--batch");

    // checkpoints: missing, empty, random bytes, truncated
    let missing = tmp("missing.safetensors");
    fails(&headswap(&["eval", "--model", missing.to_str().unwrap(), "--data", "synthetic-b:10"]), 1, "missing.safetensors");
    let empty = tmp("empty.safetensors");
    std::fs::write(&empty, b"").unwrap();
    fails(&headswap(&["eval", "--model", empty.to_str().unwrap(), "--data", "synthetic-b:10"]), 1, "empty.safetensors");
    let random = tmp("random.safetensors");
    std::fs::write(&random, (0..4000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect::<Vec<_>>()).unwrap();
    fails(&headswap(&["eval", "--model", random.to_str().unwrap(), "--data", "synthetic-b:10"]), 1, "random.safetensors");
    let good = tmp("good.safetensors");
    ok(&headswap(&["pretrain", "--data", "synthetic-a:100", "--epochs", "1", "--out", good.to_str().unwrap()]));
    let bytes = std::fs::read(&good).unwrap();
    let truncated = tmp("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    fails(&headswap(&["eval", "--model", truncated.to_str().unwrap(), "--data", "synthetic-a:10"]), 1, "truncated.safetensors");

    // a head that does not fit the data
    fails(&headswap(&["eval", "--model", good.to_str().unwrap(), "--data", "synthetic-b:10"]), 1, "several labels per example");
    // an input width that does not fit the network
    fails(&headswap(&["eval", "--model", good.to_str().unwrap(), "--data", "synthetic-a:10", "--size", "8x8"]), 1, "input features");

    // labels out of range in a tensor file
    let mut bad = headswap::data::synthetic::shapes_task_a(20, 16, 1);
    if let headswap::data::Targets::Classes { y, .. } = &mut bad.targets {
        y[3] = 9;
    }
    let bad_path = tmp("bad_labels.safetensors");
    let _ = headswap::data::tensor_file::save(&bad_path, &bad);
    if Path::new(&bad_path).exists() {
        let out = headswap(&["pretrain", "--data", bad_path.to_str().unwrap(), "--out", "/tmp/x"]);
        assert!(!out.status.success());
        fails(&out, 1, "");
    }

    // an image that does not decode
    let not_png = tmp("not_an_image.png");
    std::fs::write(&not_png, b"this is not a PNG").unwrap();
    fails(&headswap(&["predict", "--model", good.to_str().unwrap(), not_png.to_str().unwrap()]), 1, "not_an_image.png");
}

// ---- what new users ran into ----

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json(out: &Output) -> serde_json::Value {
    let text = ok(out);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not one JSON document ({e}): {text}"))
}

/// A small tensor-file model of synthetic task A (8 named classes), trained well enough that its
/// accuracy on its own training examples is far above chance.
fn named_class_model(name: &str) -> (PathBuf, headswap::data::Dataset) {
    let data = headswap::data::synthetic::shapes_task_a(400, 8, 3);
    let data_path = tmp(&format!("{name}_data.safetensors"));
    headswap::data::tensor_file::save(&data_path, &data).unwrap();
    let model = tmp(&format!("{name}.safetensors"));
    ok(&headswap(&["pretrain", "--data", s(&data_path), "--epochs", "8", "--batch", "16", "--out", s(&model)]));
    (model, data)
}

/// The examples of `data` (class targets) whose class is in `keep`, renumbered 0.. in `keep`'s
/// order and named accordingly.
fn class_subset(data: &headswap::data::Dataset, keep: &[u32]) -> headswap::data::Dataset {
    let headswap::data::Targets::Classes { y, .. } = &data.targets else { panic!("class data") };
    let rows: Vec<usize> = (0..data.n).filter(|&i| keep.contains(&y[i])).collect();
    let x = rows.iter().flat_map(|&i| data.row(i).unwrap().to_vec()).collect();
    let y = rows.iter().map(|&i| keep.iter().position(|&c| c == y[i]).unwrap() as u32).collect();
    headswap::data::Dataset {
        x,
        n: rows.len(),
        d: data.d,
        input_shape: data.input_shape.clone(),
        targets: headswap::data::Targets::Classes { y, num_classes: keep.len() },
        label_names: keep.iter().map(|&c| data.label_names[c as usize].clone()).collect(),
    }
}

#[test]
fn eval_matches_classes_and_labels_by_name() {
    let (model, data) = named_class_model("by_name");
    // three of the eight classes, numbered 0..3: by position they would all be scored wrong
    let subset = class_subset(&data, &[5, 3, 4]);
    let subset_path = tmp("by_name_subset.safetensors");
    headswap::data::tensor_file::save(&subset_path, &subset).unwrap();
    let v = json(&headswap(&["eval", "--model", s(&model), "--data", s(&subset_path), "--json"]));
    assert!(v["accuracy"].as_f64().unwrap() > 0.5, "classes not matched by name: {v}");

    // a class name the model does not know
    let mut renamed = subset.clone();
    renamed.label_names[0] = "nine".into();
    let renamed_path = tmp("by_name_renamed.safetensors");
    headswap::data::tensor_file::save(&renamed_path, &renamed).unwrap();
    fails(&headswap(&["eval", "--model", s(&model), "--data", s(&renamed_path)]), 1, "nine");

    // labels in another column order score exactly as in the model's order
    let b = headswap::data::synthetic::scenes_task_b(60, 16, 4);
    let b_path = tmp("by_name_b.safetensors");
    headswap::data::tensor_file::save(&b_path, &b).unwrap();
    let b_model = tmp("by_name_b_model.safetensors");
    ok(&headswap(&["pretrain", "--data", s(&b_path), "--epochs", "1", "--out", s(&b_model)]));
    let mut swapped = b.clone();
    let headswap::data::Targets::Labels { y, k } = &mut swapped.targets else { panic!() };
    for row in y.chunks_exact_mut(*k) {
        row.swap(0, 3);
    }
    swapped.label_names.swap(0, 3);
    let swapped_path = tmp("by_name_b_swapped.safetensors");
    headswap::data::tensor_file::save(&swapped_path, &swapped).unwrap();
    let a = json(&headswap(&["eval", "--model", s(&b_model), "--data", s(&b_path), "--json"]));
    let c = json(&headswap(&["eval", "--model", s(&b_model), "--data", s(&swapped_path), "--json"]));
    assert_eq!(a, c, "label columns were not matched by name");
}

#[test]
fn eval_scores_held_out_built_in_data() {
    let model = tmp("held_out.safetensors");
    ok(&headswap(&["pretrain", "--data", "synthetic-a:64", "--epochs", "1", "--out", s(&model)]));
    // the examples pretrain drew (seed 0), as a file: eval --data synthetic-a:64 must not be them
    let train_path = tmp("held_out_train.safetensors");
    headswap::data::tensor_file::save(&train_path, &headswap::data::synthetic::shapes_task_a(64, 16, 0)).unwrap();
    let on_train = json(&headswap(&["eval", "--model", s(&model), "--data", s(&train_path), "--json"]));
    let out = headswap(&["eval", "--model", s(&model), "--data", "synthetic-a:64", "--json"]);
    assert!(stderr(&out).contains("held-out"), "no line saying what is scored: {}", stderr(&out));
    assert_ne!(on_train["loss"], json(&out)["loss"], "eval scored the training examples");
    if headswap::data::digits::default_dir().is_some() {
        let d = tmp("held_out_digits.safetensors");
        ok(&headswap(&["pretrain", "--data", "digits", "--epochs", "1", "--out", s(&d)]));
        let v = json(&headswap(&["eval", "--model", s(&d), "--data", "digits", "--json"]));
        assert_eq!(v["examples"], 449, "eval --data digits must score the 449 test digits: {v}");
    }
}

#[test]
fn a_closed_stdout_is_not_a_panic() {
    use std::process::Stdio;
    for args in [&["info"][..], &["info", "--json"][..]] {
        let mut child =
            Command::new(env!("CARGO_BIN_EXE_headswap")).args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        drop(child.stdout.take()); // the reader goes away before anything is written
        let out = child.wait_with_output().unwrap();
        let err = stderr(&out);
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(out.status.code(), Some(0), "{err}");
    }
}

#[test]
fn a_diverged_run_saves_nothing() {
    let out = tmp("diverged.safetensors");
    std::fs::write(&out, b"an earlier model").unwrap();
    let state = tmp("diverged.state");
    let run = headswap(&[
        "pretrain",
        "--data",
        "synthetic-a:64",
        "--epochs",
        "2",
        "--batch",
        "8",
        "--lr",
        "1e30",
        "--out",
        s(&out),
        "--save-state",
        s(&state),
    ]);
    fails(&run, 1, "diverged");
    assert!(stderr(&run).contains("nothing saved"), "{}", stderr(&run));
    assert_eq!(std::fs::read(&out).unwrap(), b"an earlier model", "the file at --out was replaced");
    assert!(!state.exists(), "a state file was written for a diverged run");
}

#[test]
fn image_options_only_where_images_are_read() {
    let data = headswap::data::synthetic::shapes_task_a(64, 8, 1);
    let data_path = tmp("image_opts_data.safetensors");
    headswap::data::tensor_file::save(&data_path, &data).unwrap();
    let model = tmp("image_opts.safetensors");
    ok(&headswap(&["pretrain", "--data", s(&data_path), "--epochs", "1", "--out", s(&model)]));
    let img = tmp("image_opts.png");
    image::GrayImage::from_pixel(8, 8, image::Luma([128])).save(&img).unwrap();
    fails(&headswap(&["predict", "--model", s(&model), s(&img)]), 1, "not trained on images");

    let o = tmp("image_opts_never.safetensors");
    fails(&headswap(&["pretrain", "--data", s(&data_path), "--size", "8x8", "--out", s(&o)]), 2, "apply only to image folders");
    fails(&headswap(&["pretrain", "--data", "synthetic-a:64", "--rgb", "--out", s(&o)]), 2, "--rgb");
    fails(&headswap(&["pretrain", "--data", "synthetic-a:64", "--size", "16x8", "--out", s(&o)]), 2, "square");
    fails(&headswap(&["pretrain", "--data", "synthetic-a:64", "--size", "2x2", "--out", s(&o)]), 2, "square");
    fails(&headswap(&["pretrain", "--data", "digits", "--size", "8x8", "--out", s(&o)]), 2, "digits");
    assert!(!o.exists());
}

#[test]
fn meaningless_options_are_refused_before_training() {
    let o = tmp("meaningless_never.safetensors");
    let o = s(&o);
    let pre = |extra: &[&str]| {
        let mut a = vec!["pretrain", "--data", "synthetic-a:64", "--out", o];
        a.extend_from_slice(extra);
        headswap(&a)
    };
    fails(&pre(&["--epochs", "0"]), 2, "--epochs");
    fails(&pre(&["--threshold", "7"]), 2, "--threshold");
    fails(&pre(&["--threshold", "0"]), 2, "--threshold");
    fails(&pre(&["--schedule", "cosinefoo"]), 2, "cosinefoo");
    fails(&pre(&["--schedule", "step:0:0.5"]), 2, "step:EVERY:GAMMA");
    fails(&pre(&["--early-stop", "3"]), 2, "--val");
    fails(&pre(&["--pos-weight", "1,2,3"]), 2, "--pos-weight");
    fails(&pre(&["--channels", "0", "--arch", "cnn"]), 2, "--channels");
    fails(&pre(&["--layers", "64,0"]), 2, "--layers");
    fails(&pre(&["--optimizer", "adam", "--momentum", "0.5"]), 2, "--momentum");
    fails(&headswap(&["pretrain", "--data", "synthetic-b:64", "--out", o, "--pos-weight", "1,2,3,-4"]), 2, "--pos-weight");
    fails(&headswap(&["pretrain", "--data", "synthetic-b:64", "--out", o, "--pos-weight", "1,2,3,NaN"]), 2, "--pos-weight");
    fails(&headswap(&["pretrain", "--data", "synthetic-abc", "--out", o]), 2, "synthetic-abc");
    fails(&headswap(&["eval", "--model", o, "--data", "synthetic-a:10", "--threshold", "2"]), 2, "--threshold");
    let fine = |extra: &[&str]| {
        let mut a = vec!["finetune", "--from", "/no/such/model.safetensors", "--data", "synthetic-b:32", "--out", o];
        a.extend_from_slice(extra);
        headswap(&a)
    };
    fails(&fine(&["--recipe", "2", "--freeze", "trunk"]), 2, "--freeze");
    fails(&fine(&["--head-hidden", "0"]), 2, "--head-hidden");
    fails(&fine(&["--epochs", "0"]), 2, "--epochs");
    // outputs are checked before any training
    let run = pre(&["--out", "/no/such/dir/x.safetensors"]);
    fails(&run, 1, "does not exist");
    assert!(!String::from_utf8_lossy(&run.stdout).contains("epoch"), "trained before checking --out");
    let same = tmp("meaningless_same");
    fails(&pre(&["--out", s(&same), "--save-state", s(&same)]), 2, "different files");
    assert!(!Path::new(o).exists());
}

#[test]
fn resume_continues_the_saved_run() {
    let state = tmp("resume.state");
    let half = tmp("resume_half.safetensors");
    let flags = ["--data", "synthetic-a:64", "--lr", "0.01", "--momentum", "0.5", "--batch", "16"];
    let mut a = vec!["pretrain", "--epochs", "1", "--save-state", s(&state), "--out", s(&half)];
    a.extend_from_slice(&flags);
    ok(&headswap(&a));
    // the saved options apply without repeating them, and give the same bits as one 2-epoch run
    let resumed = tmp("resume_resumed.safetensors");
    let out = ok(&headswap(&["resume", "--state", s(&state), "--data", "synthetic-a:64", "--epochs", "2", "--out", s(&resumed)]));
    assert!(out.contains("lr 0.01000"), "resume did not restore --lr: {out}");
    let whole = tmp("resume_whole.safetensors");
    let mut a = vec!["pretrain", "--epochs", "2", "--out", s(&whole)];
    a.extend_from_slice(&flags);
    ok(&headswap(&a));
    assert_eq!(std::fs::read(&resumed).unwrap(), std::fs::read(&whole).unwrap(), "resume is not the same run");
    let never = tmp("resume_never.safetensors");
    fails(&headswap(&["resume", "--state", s(&state), "--data", "synthetic-a:64", "--epochs", "1", "--out", s(&never)]), 2, "--epochs");
    fails(&headswap(&["resume", "--state", s(&state), "--data", "synthetic-a:80", "--epochs", "2", "--out", s(&never)]), 1, "same data");
    assert!(!never.exists());
}

#[test]
fn messages_speak_the_command_line() {
    fails(&headswap(&["info", "--foo"]), 2, "info does not take --foo");
    fails(&headswap(&["pretrain", "--data", "synthetic-a:64", "--out"]), 2, "--out needs a value");
    let err = stderr(&headswap(&["pretrain", "--data", "synthetic-a:64", "--arch", "cnn", "--channels", "0", "--out", "/tmp/x"]));
    assert!(!err.contains('{'), "Rust debug output in an error: {err}");

    let model = tmp("messages.safetensors");
    ok(&headswap(&["pretrain", "--data", "synthetic-a:64", "--epochs", "1", "--out", s(&model)]));
    let out = headswap(&["eval", "--model", s(&model), "--data", "synthetic-b:10"]);
    fails(&out, 1, "finetune");
    assert!(!stderr(&out).contains("Head::"), "{}", stderr(&out));

    // a plain state_dict: the advice names a flag that eval takes, and following it works
    let mut plain = headswap::checkpoint::load(&model).unwrap().state_dict_only();
    plain.metadata.clear();
    let plain_path = tmp("messages_plain.safetensors");
    headswap::checkpoint::save(&plain_path, &plain, headswap::checkpoint::StorageDtype::F32).unwrap();
    fails(&headswap(&["eval", "--model", s(&plain_path), "--data", "synthetic-a:10"]), 1, "--arch mlp");
    ok(&headswap(&["eval", "--model", s(&plain_path), "--data", "synthetic-a:10", "--arch", "mlp"]));

    // finetune --recipe --json: one JSON document
    let tuned = tmp("messages_tuned.safetensors");
    let v = json(&headswap(&[
        "finetune",
        "--from",
        s(&model),
        "--data",
        "synthetic-b:32",
        "--recipe",
        "1",
        "--epochs",
        "1",
        "--json",
        "--out",
        s(&tuned),
    ]));
    assert!(v["head_only"].is_object() && v["all"].is_object(), "{v}");
}

#[test]
fn tables_and_ratios_read_cleanly() {
    let out =
        ok(&headswap(&["pretrain", "--data", "synthetic-a:100", "--epochs", "1", "--batch", "16", "--out", s(&tmp("tables.safetensors"))]));
    let line = out.lines().find(|l| l.contains("submission per step")).unwrap();
    let ratio = line.split(" and ").nth(1).unwrap().split(' ').next().unwrap();
    assert!(ratio.len() <= 6, "unrounded ratio {ratio:?} in {line:?}");

    let row = |method: &'static str| headswap::demo::DemoRow {
        size: 40,
        method,
        mean_f1: Some(0.5),
        per_label_f1: vec![Some(0.5); 4],
        seconds: 1.0,
        samples_per_sec: 100.0,
        train_loss: vec![],
    };
    let report = |trunk: &str, trunk_kind| headswap::demo::DemoReport {
        adapter: "test".into(),
        trunk: trunk.into(),
        trunk_kind,
        data: "synthetic".into(),
        task_a_examples: 1,
        task_a_test_accuracy: 1.0,
        task_a_seconds: 1.0,
        task_a_samples_per_sec: 1.0,
        task_a_loss: vec![],
        label_names: ["circle", "square", "triangle", "cross"].map(String::from).to_vec(),
        test_examples: 1,
        rows: vec![row(headswap::demo::HEAD_ONLY), row(headswap::demo::FINE_TUNE_ALL), row(headswap::demo::SCRATCH)],
    };
    let mlp = report("dense 256→128 relu", headswap::demo::Trunk::Mlp);
    let cnn = report("conv2d 1×16×16 → 8×16×16 (kernel 3, stride 1, padding 1) relu", headswap::demo::Trunk::Cnn);
    let table = mlp.to_string();
    assert!(table.contains(" square triangle"), "{table}");
    let sbs = headswap::demo::side_by_side(&[mlp, cnn]);
    assert!(sbs.contains("mlp") && sbs.contains("cnn") && !sbs.contains("trunk 1"), "{sbs}");
}

#[test]
fn data_without_names_is_matched_by_position_and_duplicate_names_are_refused() {
    // data without names (a plain tensor file: default names) is scored by position against a
    // model with names, and a model without names against named data
    let (model, data) = named_class_model("unnamed");
    let mut unnamed = data.clone();
    unnamed.label_names.clear();
    let unnamed_path = tmp("unnamed_unnamed.safetensors");
    headswap::data::tensor_file::save(&unnamed_path, &unnamed).unwrap();
    let v = json(&headswap(&["eval", "--model", s(&model), "--data", s(&unnamed_path), "--json"]));
    assert!(v["accuracy"].as_f64().unwrap() > 0.5, "unnamed data not scored by position: {v}");
    let plain_model = tmp("unnamed_plain_model.safetensors");
    ok(&headswap(&["pretrain", "--data", s(&unnamed_path), "--epochs", "1", "--out", s(&plain_model)]));
    let named_path = tmp("unnamed_named.safetensors");
    headswap::data::tensor_file::save(&named_path, &data).unwrap();
    ok(&headswap(&["eval", "--model", s(&plain_model), "--data", s(&named_path)]));

    // two outputs with one name cannot be matched to anything: refused when read
    // (the library refuses to write such a file, so this one is written around it)
    let bytes = std::fs::read(&named_path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let mut meta = header.metadata().clone().unwrap();
    let mut names = data.label_names.clone();
    names[7] = names[6].clone();
    meta.insert("label_names".into(), names.join(","));
    let dup_path = tmp("unnamed_dup.safetensors");
    safetensors::serialize_to_file(file.tensors(), Some(meta), &dup_path).unwrap();
    fails(&headswap(&["eval", "--model", s(&model), "--data", s(&dup_path)]), 1, "given twice");
}

#[test]
fn resume_never_writes_over_its_state_file() {
    // resume must not write its model over the state it resumes
    let state = tmp("own_state.state");
    let first = tmp("own_state_first.safetensors");
    ok(&headswap(&["pretrain", "--data", "synthetic-a:64", "--epochs", "1", "--save-state", s(&state), "--out", s(&first)]));
    let before = std::fs::read(&state).unwrap();
    fails(&headswap(&["resume", "--state", s(&state), "--data", "synthetic-a:64", "--epochs", "2", "--out", s(&state)]), 2, "--state");
    assert_eq!(std::fs::read(&state).unwrap(), before, "the state file changed");
}

#[test]
fn report_and_early_stop_mistakes_are_refused_before_training() {
    // --report naming a file is refused before training, and nothing is written
    let report_file = tmp("report_is_a_file");
    std::fs::write(&report_file, b"keep").unwrap();
    let never = tmp("report_never.safetensors");
    fails(
        &headswap(&["pretrain", "--data", "synthetic-a:64", "--epochs", "1", "--out", s(&never), "--report", s(&report_file)]),
        2,
        "--report",
    );
    assert!(!never.exists());
    assert_eq!(std::fs::read(&report_file).unwrap(), b"keep");

    // --early-stop 0 would stop after the first epoch whatever happens
    fails(&headswap(&["pretrain", "--data", "synthetic-a:64", "--val", "0.2", "--early-stop", "0", "--out", s(&never)]), 2, "--early-stop");
}

/// Six 12x12 gray images of one class in `folder/name`, all dark or all light.
fn write_class(folder: &Path, name: &str, dark: bool) {
    write_class_of(folder, name, dark, 6);
}

fn write_class_of(folder: &Path, name: &str, dark: bool, images: usize) {
    let dir = folder.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..images {
        let v = if dark { 20 + i as u8 } else { 220 - i as u8 };
        image::GrayImage::from_pixel(12, 12, image::Luma([v])).save(dir.join(format!("{i}.png"))).unwrap();
    }
}

#[test]
fn eval_and_finetune_read_images_at_the_models_size() {
    // (classes named with digits, as a folder of digit classes is: real names, matched by name)
    let folder = tmp("model_size_folder");
    write_class(&folder, "0", true);
    write_class(&folder, "1", false);
    let small = tmp("model_size_small.safetensors");
    ok(&headswap(&[
        "pretrain",
        "--data",
        s(&folder),
        "--size",
        "8x8",
        "--layers",
        "8",
        "--epochs",
        "30",
        "--batch",
        "4",
        "--out",
        s(&small),
    ]));
    ok(&headswap(&["eval", "--model", s(&small), "--data", s(&folder)]));
    let tuned = tmp("model_size_tuned.safetensors");
    ok(&headswap(&["finetune", "--from", s(&small), "--data", s(&folder), "--epochs", "1", "--out", s(&tuned)]));
    fails(&headswap(&["eval", "--model", s(&small), "--data", s(&folder), "--size", "16x16"]), 1, "input features");
    // a folder holding only class "1": by position it would be class 0, by name it is class 1
    let only_light = tmp("model_size_only_light");
    write_class(&only_light, "1", false);
    let v = json(&headswap(&["eval", "--model", s(&small), "--data", s(&only_light), "--json"]));
    assert!(v["accuracy"].as_f64().unwrap() > 0.9, "digit-named classes not matched by name: {v}");
    write_class(&only_light, "five", true);
    fails(&headswap(&["eval", "--model", s(&small), "--data", s(&only_light)]), 1, "five");
}

// ---- a new user's first hour: help, progress, resume, JSON, early errors ----

#[test]
fn every_command_has_its_own_help_listing_defaults() {
    for cmd in ["demo", "info", "pretrain", "finetune", "train", "resume", "eval", "predict", "bench"] {
        for flag in ["--help", "-h"] {
            let out = ok(&headswap(&[cmd, flag]));
            assert!(out.contains(&format!("Usage: headswap {cmd}")), "`{cmd} {flag}` is not {cmd}'s help: {out}");
        }
    }
    let help = ok(&headswap(&["pretrain", "--help"]));
    let line = |help: &str, flag: &str| {
        help.lines().find(|l| l.trim_start().starts_with(&format!("{flag} "))).unwrap_or_else(|| panic!("no {flag} in {help}")).to_string()
    };
    assert!(line(&help, "--epochs").contains("[default: 10]"), "{help}");
    assert!(line(&help, "--batch").contains("[default: 64]"), "{help}");
    let lr = line(&help, "--lr");
    assert!(lr.contains("0.05") && lr.contains("0.001"), "{lr}");
    assert!(!help.contains("headswap demo"), "pretrain --help printed the global usage: {help}");
    assert!(line(&ok(&headswap(&["train", "--help"])), "--epochs").contains("[default: 1]"));
    assert!(ok(&headswap(&["help", "eval"])).contains("Usage: headswap eval"));

    let version = ok(&headswap(&["--version"]));
    assert_eq!(version.trim(), format!("headswap {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn the_readme_shows_the_help() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = readme.split("\n## The command line\n").nth(1).expect("README has a command-line section");
    let block = section.split("```text\n").nth(1).and_then(|b| b.split("```").next()).expect("a text block in it");
    assert_eq!(block.trim_end(), ok(&headswap(&["--help"])).trim_end(), "README's block is not `headswap --help`");
}

#[test]
fn a_piped_run_prints_each_epoch_as_it_ends_without_colour_codes() {
    use std::io::BufRead;
    use std::process::Stdio;
    // the whole run: one line per epoch, counted from 1, and no terminal escapes anywhere, not
    // even in log lines
    let model = tmp("piped.safetensors");
    let run = Command::new(env!("CARGO_BIN_EXE_headswap"))
        .args(["pretrain", "--data", "synthetic-a:64", "--epochs", "3", "--batch", "16", "--out", s(&model)])
        .env("RUST_LOG", "headswap=info")
        .output()
        .unwrap();
    let out = ok(&run);
    let epochs: Vec<&str> = out.lines().filter(|l| l.starts_with("epoch")).collect();
    assert_eq!(epochs.len(), 3, "{out}");
    for (i, l) in epochs.iter().enumerate() {
        assert!(l.starts_with(&format!("epoch {:>3} ", i + 1)), "{out}");
    }
    let err = stderr(&run);
    assert!(err.contains("epoch done"), "no log lines to check: {err}");
    assert!(!out.contains('\x1b') && !err.contains('\x1b'), "terminal escapes in piped output: {out:?} {err:?}");

    // a long run: its first epochs' lines arrive while it is still training
    let long = tmp("piped_long.safetensors");
    let mut child = Command::new(env!("CARGO_BIN_EXE_headswap"))
        .args(["pretrain", "--data", "synthetic-a:16", "--batch", "16", "--epochs", "1000000", "--out", s(&long)])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    while lines.len() < 3 {
        match rx.recv_timeout(std::time::Duration::from_secs(120)) {
            Ok(l) if l.starts_with("epoch") => lines.push(l),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let still_training = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(lines.len(), 3, "no epoch lines while training: {lines:?}");
    assert!(lines[0].starts_with("epoch   1 ") && lines[2].starts_with("epoch   3 "), "{lines:?}");
    assert!(still_training && !long.exists(), "the lines came only when the run was over");
}

#[test]
fn resume_refuses_data_whose_classes_were_renamed() {
    let folder = tmp("renamed_folder");
    write_class(&folder, "dark", true);
    write_class(&folder, "light", false);
    let (state, first) = (tmp("renamed.state"), tmp("renamed_first.safetensors"));
    let common = ["--data", s(&folder), "--size", "8x8", "--batch", "4"];
    let mut a = vec!["pretrain", "--epochs", "1", "--save-state", s(&state), "--out", s(&first)];
    a.extend_from_slice(&common);
    ok(&headswap(&a));
    // the same images, their folders renamed (in the same sorted order, so positions agree)
    std::fs::rename(folder.join("dark"), folder.join("black")).unwrap();
    std::fs::rename(folder.join("light"), folder.join("white")).unwrap();
    let never = tmp("renamed_never.safetensors");
    let out = headswap(&["resume", "--state", s(&state), "--data", s(&folder), "--epochs", "2", "--out", s(&never)]);
    fails(&out, 1, "dark, light");
    assert!(stderr(&out).contains("black, white"), "{}", stderr(&out));
    assert!(!never.exists());
    // with the names it was trained on, it resumes
    std::fs::rename(folder.join("black"), folder.join("dark")).unwrap();
    std::fs::rename(folder.join("white"), folder.join("light")).unwrap();
    ok(&headswap(&["resume", "--state", s(&state), "--data", s(&folder), "--epochs", "2", "--out", s(&never)]));
}

#[test]
fn json_counts_epochs_from_one_as_the_text_does() {
    let model = tmp("json_epochs.safetensors");
    let args = ["pretrain", "--data", "synthetic-a:64", "--epochs", "3", "--batch", "16", "--val", "0.25", "--early-stop", "5"];
    let v = json(&headswap(&[&args[..], &["--json", "--out", s(&model)]].concat()));
    let epochs: Vec<u64> = v["epochs"].as_array().unwrap().iter().map(|e| e["epoch"].as_u64().unwrap()).collect();
    assert_eq!(epochs, [1, 2, 3], "{v}");
    // best_epoch names the epoch of the lowest validation loss, in the same numbering
    let lowest = v["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .min_by(|a, b| a["val_loss"].as_f64().unwrap().total_cmp(&b["val_loss"].as_f64().unwrap()))
        .unwrap();
    assert_eq!(v["best_epoch"], lowest["epoch"], "{v}");
    // the text output of the same run counts the same epochs
    let text = ok(&headswap(&[&args[..], &["--out", s(&model)]].concat()));
    let numbers: Vec<u64> =
        text.lines().filter_map(|l| l.strip_prefix("epoch")).map(|l| l.split_whitespace().next().unwrap().parse().unwrap()).collect();
    assert_eq!(numbers, epochs, "{text}");
}

#[test]
fn a_size_or_colour_the_model_cannot_take_is_refused_before_any_work() {
    let model = tmp("layout.safetensors");
    ok(&headswap(&["pretrain", "--data", "synthetic-a:64", "--epochs", "1", "--out", s(&model)]));
    let out = headswap(&["eval", "--model", s(&model), "--data", "synthetic-a:10", "--size", "8x8"]);
    fails(&out, 1, "the model was trained on 16x16 gray images (256 input features); --size 8x8 gives 8x8 gray images (64 input features)");
    assert!(out.stdout.is_empty() && stderr(&out).lines().count() == 1, "output before the error: {}", stderr(&out));

    let folder = tmp("layout_folder");
    write_class(&folder, "dark", true);
    write_class(&folder, "light", false);
    let small = tmp("layout_small.safetensors");
    ok(&headswap(&["pretrain", "--data", s(&folder), "--size", "8x8", "--epochs", "1", "--batch", "4", "--out", s(&small)]));
    let tuned = tmp("layout_tuned.safetensors");
    let out = headswap(&["finetune", "--from", s(&small), "--data", s(&folder), "--rgb", "--epochs", "1", "--out", s(&tuned)]);
    fails(&out, 1, "the model was trained on 8x8 gray images (64 input features); --rgb gives 8x8 RGB images (192 input features)");
    assert!(out.stdout.is_empty() && stderr(&out).lines().count() == 1, "output before the error: {}", stderr(&out));
    assert!(!tuned.exists());

    // a model with no image layout (trained on a tensor file): the two widths, before any output
    let data_path = tmp("layout_tensor.safetensors");
    headswap::data::tensor_file::save(&data_path, &headswap::data::synthetic::shapes_task_a(64, 8, 1)).unwrap();
    let tensor_model = tmp("layout_tensor_model.safetensors");
    ok(&headswap(&["pretrain", "--data", s(&data_path), "--epochs", "1", "--out", s(&tensor_model)]));
    let out = headswap(&["eval", "--model", s(&tensor_model), "--data", "synthetic-a:10"]);
    fails(&out, 1, "the model takes 64 input features; --data synthetic-a:10 has 256 per example");
    assert!(out.stdout.is_empty() && stderr(&out).lines().count() == 1, "output before the error: {}", stderr(&out));
}

#[test]
fn loading_data_says_what_was_loaded() {
    let folder = tmp("loaded_folder");
    write_class_of(&folder, "dark", true, 6);
    write_class_of(&folder, "light", false, 4);
    // files the walk passes over are named, with why
    std::fs::write(folder.join("README.txt"), "not an image").unwrap();
    std::fs::write(folder.join("dark").join("notes.txt"), "not an image").unwrap();
    let run = headswap(&[
        "pretrain",
        "--data",
        s(&folder),
        "--size",
        "8x8",
        "--epochs",
        "1",
        "--batch",
        "4",
        "--out",
        s(&tmp("loaded.safetensors")),
    ]);
    ok(&run);
    let err = stderr(&run);
    assert!(err.lines().any(|l| l.contains("10 examples") && l.contains("dark 6") && l.contains("light 4")), "{err}");
    let line = err.lines().find(|l| l.contains("10 examples")).unwrap();
    assert!(
        line.contains("skipped 2: ") && line.contains("README.txt (not in a class folder)") && line.contains("notes.txt (not an image)"),
        "{line}"
    );
}

#[test]
fn the_per_label_f1_chart_says_which_data_it_measured() {
    let chart_line = |extra: &[&str], name: &str| {
        let dir = tmp(name);
        let mut a = vec!["pretrain", "--data", "synthetic-b:64", "--epochs", "1", "--batch", "16", "--report", s(&dir)];
        a.extend_from_slice(extra);
        let model = tmp(&format!("{name}.safetensors"));
        a.extend_from_slice(&["--out", s(&model)]);
        let run = headswap(&a);
        ok(&run);
        assert!(dir.join("pretrain_label_f1.png").exists());
        stderr(&run).lines().find(|l| l.contains("pretrain_label_f1.png")).map(str::to_string).unwrap()
    };
    let train_only = chart_line(&[], "chart_train");
    assert!(train_only.contains("training data") && !train_only.contains("held-out"), "{train_only}");
    let with_val = chart_line(&["--val", "0.25"], "chart_val");
    assert!(with_val.contains("validation split"), "{with_val}");
}

/// Started by `mpirun -np 2` but built without the `distributed` feature, each process would
/// train alone on all the data and write the same file: refused up front, before any work.
#[cfg(not(feature = "distributed"))]
#[test]
fn several_mpi_processes_without_the_distributed_feature_are_refused() {
    let out = tmp("mpi-never.safetensors");
    let run = Command::new(env!("CARGO_BIN_EXE_headswap"))
        .args(["pretrain", "--data", "synthetic-a:100", "--epochs", "1", "--out", out.to_str().unwrap()])
        .env("OMPI_COMM_WORLD_SIZE", "2")
        .env("OMPI_COMM_WORLD_RANK", "1")
        .output()
        .unwrap();
    fails(&run, 1, "built without data-parallel training");
    assert!(!out.exists());
}

// ---- torchvision models: --arch resnet18, --normalize imagenet, predict --data --out ----

/// A torchvision-keyed resnet18 state_dict with a `classes`-way `fc`, as `torchvision.models.resnet18(num_classes=classes)
/// .state_dict()` would hold it (no headswap metadata), built by the library from `seed` for 32×32 RGB images; and that
/// network, for reference outputs.
fn resnet18_state_dict(path: &Path, classes: usize, seed: u64) -> headswap::nn::Network {
    use headswap::nn::models::Arch;
    use headswap::nn::{Head, Init, Network};
    let gpu = headswap::Gpu::new().expect("an adapter");
    let trunk = Arch::ResNet18.trunk(3, 32, 32).unwrap();
    let net =
        Network::from_trunk(&gpu, 3 * 32 * 32, trunk, Init::KaimingUniform, Arch::ResNet18.head(Head::classes(classes)), seed).unwrap();
    let mut ckpt = net.to_checkpoint().unwrap();
    ckpt.metadata.clear();
    assert!(ckpt.get("layer4.1.bn2.running_var").is_some() && ckpt.get_int("bn1.num_batches_tracked").is_some());
    headswap::checkpoint::save(path, &ckpt, headswap::checkpoint::StorageDtype::F32).unwrap();
    net
}

/// `n` RGB images of `w`×`h` in `folder/name/`, reddish or bluish with a bright square somewhere.
fn write_rgb_class(folder: &Path, name: &str, red: bool, n: u32, (w, h): (u32, u32)) {
    std::fs::create_dir_all(folder.join(name)).unwrap();
    for i in 0..n {
        let img = image::RgbImage::from_fn(w, h, |x, y| {
            let bright = (x + 3 * i) % w < w / 3 && (y + 5 * i) % h < h / 2;
            let base = if bright { 220u8 } else { 40 + (x * 3 + y * 2) as u8 % 50 };
            if red { image::Rgb([base, 30, 60]) } else { image::Rgb([20, 70, base]) }
        });
        img.save(folder.join(name).join(format!("{i}.png"))).unwrap();
    }
}

/// Removes the files on drop, pass or fail: a resnet18 file is 45 MB, and the suite runs often.
struct RemoveOnDrop(Vec<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        self.0.iter().for_each(|p| drop(std::fs::remove_file(p)));
    }
}

fn read_safetensors(path: &Path) -> std::collections::HashMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, t)| {
            let v = t.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            (name, (t.shape().to_vec(), v))
        })
        .collect()
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= 1e-4 * (1.0 + w.abs()), "{what}[{i}]: {g} vs {w}");
    }
}

#[test]
fn finetune_a_torchvision_resnet_then_eval_and_predict_without_arch() {
    let sd = tmp("r18-ft.safetensors");
    let ft = tmp("r18-finetuned.safetensors");
    let _big = RemoveOnDrop(vec![sd.clone(), ft.clone()]);
    resnet18_state_dict(&sd, 10, 3);
    let dir = tmp("rgb-classes");
    // odd sizes and both orientations: the centre crop has work to do
    write_rgb_class(&dir, "red", true, 4, (45, 37));
    write_rgb_class(&dir, "blue", false, 4, (37, 52));
    #[rustfmt::skip]
    let out = headswap(&["finetune", "--from", s(&sd), "--arch", "resnet18", "--data", s(&dir), "--size", "32x32",
        "--normalize", "imagenet", "--epochs", "3", "--batch", "4", "--out", s(&ft)]);
    ok(&out);
    let err = stderr(&out);
    // the report in one line: the trunk loaded, torchvision's 10-way fc not (another shape)
    let report = err.lines().find(|l| l.contains("loaded ")).unwrap_or_else(|| panic!("no load report in {err}"));
    assert!(report.contains("fc.weight [10, 512] in the file, [2, 512] here") && report.contains("fc.bias [10]"), "{report}");
    assert!(report.contains("loaded 120 parameter tensors"), "{report}");
    // a normal headswap checkpoint: its architecture, layout and preprocessing recorded
    let saved = headswap::checkpoint::load(&ft).unwrap();
    assert_eq!(saved.metadata.get("headswap.normalize").map(String::as_str), Some("imagenet"), "{:?}", saved.metadata);
    let out = ok(&headswap(&["eval", "--model", s(&ft), "--data", s(&dir)]));
    assert!(out.contains("8 examples"), "{out}");

    // predict --data --out --features: logits = features · fcᵀ + b, row by row in the folder's order
    let pred = tmp("r18-pred.safetensors");
    ok(&headswap(&["predict", "--model", s(&ft), "--data", s(&dir), "--out", s(&pred), "--features"]));
    let t = read_safetensors(&pred);
    let (ls, logits) = &t["logits"];
    let (fs, features) = &t["features"];
    assert_eq!((ls.as_slice(), fs.as_slice()), ([8, 2].as_slice(), [8, 512].as_slice()));
    let (w, b) = (&saved.get("fc.weight").unwrap().data, &saved.get("fc.bias").unwrap().data);
    let expected: Vec<f32> = (0..8)
        .flat_map(|i| {
            (0..2).map(move |j| (0..512).map(|f| features[i * 512 + f] as f64 * w[j * 512 + f] as f64).sum::<f64>() as f32 + b[j])
        })
        .collect();
    assert_close(logits, &expected, "logits from features");
    assert!(features.iter().all(|v| v.is_finite() && *v >= 0.0), "features after ReLU and the average pool are ≥ 0");

    // predict IMAGE reads the file with the recorded size, colour and ImageNet preprocessing: the
    // folder's first example (blue/0.png) gives the same probabilities as its logits row
    let first = dir.join("blue").join("0.png");
    let v = json(&headswap(&["predict", "--model", s(&ft), s(&first), "--json"]));
    let probs = &v[0]["probabilities"];
    let z = &logits[0..2];
    let m = z[0].max(z[1]);
    let sum = (z[0] - m).exp() + (z[1] - m).exp();
    for (j, name) in ["blue", "red"].iter().enumerate() {
        let p = probs[name].as_f64().unwrap() as f32;
        assert!((p - (z[j] - m).exp() / sum).abs() < 1e-4, "{name}: {p} vs logits {z:?}");
    }
    // the preprocessing matters: without it the same file reads differently
    let plain = json(&headswap(&["predict", "--model", s(&ft), s(&first), "--json", "--normalize", "none"]));
    assert_ne!(plain[0]["probabilities"], v[0]["probabilities"]);
}

#[test]
fn predict_writes_logits_and_features_of_a_tensor_file_with_only_x() {
    let sd = tmp("r18-pretrained.safetensors");
    let _big = RemoveOnDrop(vec![sd.clone()]);
    let net = resnet18_state_dict(&sd, 10, 5);
    // x [3, 3, 32, 32] and nothing else, as `safetensors.torch.save_file({"x": batch}, path)` writes it
    let n = 3;
    let x: Vec<f32> = (0..n * 3 * 32 * 32).map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0).collect();
    let bytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![n, 3, 32, 32], &bytes).unwrap();
    let xonly = tmp("x-only.safetensors");
    std::fs::write(&xonly, safetensors::serialize([("x", view)], None).unwrap()).unwrap();

    let out = tmp("x-only-logits.safetensors");
    let run = headswap(&["predict", "--arch", "resnet18", "--model", s(&sd), "--data", s(&xonly), "--out", s(&out), "--features"]);
    ok(&run);
    // the pretrained classifier as it is: every tensor used
    assert!(stderr(&run).contains("loaded 122 parameter tensors") && !stderr(&run).contains("other shape"), "{}", stderr(&run));
    let t = read_safetensors(&out);
    assert_eq!(t["logits"].0, [n, 10]);
    assert_eq!(t["features"].0, [n, 512]);
    assert_close(&t["logits"].1, &headswap::train::predict_logits(&net, &x, n, 64).unwrap(), "logits");
    assert_close(&t["features"].1, &headswap::train::predict_features(&net, &x, n, 64).unwrap(), "features");
    assert!(!tmp("x-only-logits.safetensors.tmp").exists());

    // eval of the pretrained file reads its 10-way fc too; an x-only file has nothing to score
    let e = headswap(&["eval", "--arch", "resnet18", "--model", s(&sd), "--data", s(&xonly)]);
    fails(&e, 1, "only prediction reads x alone");
    // predict needs --out with --data, and --size means nothing for a tensor file
    fails(&headswap(&["predict", "--model", s(&sd), "--arch", "resnet18", "--data", s(&xonly)]), 2, "--out");
    let sized = headswap(&["predict", "--model", s(&sd), "--arch", "resnet18", "--data", s(&xonly), "--out", s(&out), "--size", "32x32"]);
    fails(&sized, 2, "--size and --rgb apply only to image folders");
    let norm =
        headswap(&["predict", "--model", s(&sd), "--arch", "resnet18", "--data", s(&xonly), "--out", s(&out), "--normalize", "imagenet"]);
    fails(&norm, 2, "--normalize imagenet applies only to images");
}

#[test]
fn arch_with_the_wrong_file_or_too_small_images_is_one_readable_error() {
    let sd = tmp("r18-bad.safetensors");
    let _big = RemoveOnDrop(vec![sd.clone()]);
    resnet18_state_dict(&sd, 10, 7);
    let dir = tmp("rgb-bad");
    write_rgb_class(&dir, "red", true, 2, (40, 40));
    write_rgb_class(&dir, "blue", false, 2, (40, 40));
    let out = tmp("never-written.safetensors");
    let finetune = |from: &Path, arch: &str, size: &str| {
        headswap(&[
            "finetune",
            "--from",
            s(from),
            "--arch",
            arch,
            "--data",
            s(&dir),
            "--size",
            size,
            "--rgb",
            "--epochs",
            "1",
            "--out",
            s(&out),
        ])
    };
    // a resnet18 file read as resnet34: the blocks resnet18 lacks, named
    let e = finetune(&sd, "resnet34", "32x32");
    fails(&e, 1, "is not a torchvision resnet34 state_dict");
    let last = stderr(&e).lines().last().unwrap().to_string();
    assert!(last.contains("missing: layer1.2.conv1.weight"), "{last}");
    // a Linear state_dict (.pth and .safetensors alike) read as resnet18
    for file in ["cli_mlp.pth", "cli_mlp.safetensors"] {
        let mlp = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pth").join(file);
        let e = finetune(&mlp, "resnet18", "32x32");
        fails(&e, 1, "is not a torchvision resnet18 state_dict");
        let last = stderr(&e).lines().last().unwrap().to_string();
        assert!(last.contains("conv1.weight") && last.contains("and ") && last.contains("more"), "{last}");
        assert!(
            last.contains("tensors a resnet18 has are missing")
                && last.contains("the file has 4 others: 0.bias, 0.weight, 2.bias, 2.weight"),
            "{last}"
        );
    }
    // 16x16 images: refused before any work, even before the images are read (one is not an image)
    std::fs::write(dir.join("red").join("broken.png"), b"not a png").unwrap();
    let e = finetune(&sd, "resnet18", "16x16");
    fails(&e, 1, "--arch resnet18 takes images of at least 32x32");
    assert!(stderr(&e).contains("16x16") && !stderr(&e).contains("broken.png"), "{}", stderr(&e));
    assert!(!out.exists());
    let e = headswap(&["predict", "--model", s(&sd), "--arch", "resnet18", s(&dir.join("blue").join("0.png"))]);
    fails(&e, 1, "got 16x16 from the images (images from files are read at --size");
    // a headswap checkpoint records its own architecture
    let own = tmp("own-arch.safetensors");
    ok(&headswap(&["pretrain", "--data", "synthetic-a:64", "--epochs", "1", "--out", s(&own)]));
    fails(
        &headswap(&["predict", "--model", s(&own), "--arch", "resnet18", "--data", "synthetic-a:8", "--out", s(&out)]),
        2,
        "records its own architecture",
    );
    fails(
        &headswap(&["finetune", "--from", s(&own), "--data", "synthetic-a:64", "--out", s(&out), "--batch-norm", "sometimes"]),
        2,
        "auto, train or frozen",
    );
}

#[test]
fn batch_norm_option_decides_whether_running_statistics_move() {
    let sd = tmp("r18-bn.safetensors");
    let outs: Vec<PathBuf> = ["frozen", "train"].iter().map(|m| tmp(&format!("r18-bn-{m}.safetensors"))).collect();
    let _big = RemoveOnDrop([vec![sd.clone()], outs.clone()].concat());
    resnet18_state_dict(&sd, 10, 9);
    let dir = tmp("rgb-bn");
    write_rgb_class(&dir, "red", true, 3, (32, 32));
    write_rgb_class(&dir, "blue", false, 3, (32, 32));
    let before = headswap::checkpoint::load(&sd).unwrap();
    let stat = |c: &headswap::checkpoint::Checkpoint| c.get("layer1.0.bn1.running_mean").unwrap().data.clone();
    let mut after = Vec::new();
    for (mode, out) in ["frozen", "train"].into_iter().zip(&outs) {
        #[rustfmt::skip]
        ok(&headswap(&["finetune", "--from", s(&sd), "--arch", "resnet18", "--data", s(&dir), "--size", "32x32", "--rgb",
            "--freeze", "all", "--batch-norm", mode, "--epochs", "1", "--batch", "6", "--out", s(out)]));
        after.push(headswap::checkpoint::load(out).unwrap());
    }
    assert_eq!(stat(&after[0]), stat(&before), "--batch-norm frozen keeps the running statistics");
    assert_ne!(stat(&after[1]), stat(&before), "--batch-norm train updates them");
    assert_eq!(after[1].get_int("bn1.num_batches_tracked").unwrap().data, [before.get_int("bn1.num_batches_tracked").unwrap().data[0] + 1]);
}

/// `--augment` crops and flips every batch on the GPU: with a frozen trunk whose features would
/// be cached it is refused with the reason and the flag that lifts it, with `--no-cache` the
/// trunk runs every step and the fine-tune completes.
#[test]
fn augment_needs_the_trunk_run_every_step() {
    let model = tmp("augment-cnn.safetensors");
    let tuned = tmp("augment-tuned.safetensors");
    ok(&headswap(&["pretrain", "--data", "synthetic-a:64", "--arch", "cnn", "--epochs", "1", "--out", s(&model)]));
    let base = [
        "finetune",
        "--from",
        s(&model),
        "--data",
        "synthetic-b:48",
        "--freeze",
        "trunk",
        "--epochs",
        "1",
        "--augment",
        "--out",
        s(&tuned),
    ];
    fails(&headswap(&base), 1, "--no-cache");
    let mut args = base.to_vec();
    args.push("--no-cache");
    ok(&headswap(&args));
    assert!(tuned.exists());
}

/// `--save-state` records `--augment` (and `--no-cache`), so `resume` crops and flips the rest of
/// the run as the saved one did: the resumed run is the straight run, byte for byte.
#[test]
fn resume_keeps_augmenting() {
    let state = tmp("resume-augment.state");
    let half = tmp("resume-augment-half.safetensors");
    let flags = ["--data", "synthetic-a:48", "--arch", "cnn", "--batch", "16", "--augment", "--seed", "5"];
    let mut a = vec!["pretrain", "--epochs", "1", "--save-state", s(&state), "--out", s(&half)];
    a.extend_from_slice(&flags);
    ok(&headswap(&a));
    let resumed = tmp("resume-augment-resumed.safetensors");
    let out = headswap(&["resume", "--state", s(&state), "--data", "synthetic-a:48", "--epochs", "2", "--out", s(&resumed)]);
    ok(&out);
    assert!(stderr(&out).contains("--augment"), "resume did not restore --augment: {}", stderr(&out));
    let whole = tmp("resume-augment-whole.safetensors");
    let mut a = vec!["pretrain", "--epochs", "2", "--out", s(&whole)];
    a.extend_from_slice(&flags);
    ok(&headswap(&a));
    assert_eq!(std::fs::read(&resumed).unwrap(), std::fs::read(&whole).unwrap(), "the resumed run did not augment as the saved one");
}

/// `--accumulate K` runs each `--batch` step as K micro-batches; `--save-state` records it, so
/// the resumed run is the straight one, byte for byte. K = 0 is refused.
#[test]
fn resume_keeps_accumulating() {
    let state = tmp("resume-accumulate.state");
    let half = tmp("resume-accumulate-half.safetensors");
    let flags = ["--data", "synthetic-a:40", "--batch", "16", "--accumulate", "3", "--seed", "2"];
    let mut a = vec!["pretrain", "--epochs", "1", "--save-state", s(&state), "--out", s(&half)];
    a.extend_from_slice(&flags);
    ok(&headswap(&a));
    let resumed = tmp("resume-accumulate-resumed.safetensors");
    let out = headswap(&["resume", "--state", s(&state), "--data", "synthetic-a:40", "--epochs", "2", "--out", s(&resumed)]);
    ok(&out);
    assert!(stderr(&out).contains("--accumulate 3"), "resume did not restore --accumulate: {}", stderr(&out));
    let whole = tmp("resume-accumulate-whole.safetensors");
    let mut a = vec!["pretrain", "--epochs", "2", "--out", s(&whole)];
    a.extend_from_slice(&flags);
    ok(&headswap(&a));
    assert_eq!(std::fs::read(&resumed).unwrap(), std::fs::read(&whole).unwrap(), "the resumed run did not accumulate as the saved one");
    let never = tmp("resume-accumulate-never.safetensors");
    fails(&headswap(&["pretrain", "--data", "synthetic-a:40", "--accumulate", "0", "--out", s(&never)]), 2, "--accumulate");
    fails(&headswap(&["pretrain", "--data", "synthetic-a:40", "--batch", "2", "--accumulate", "4", "--out", s(&never)]), 1, "micro-batch");
    assert!(!never.exists());
}

// ---- several named heads ----

const HEADS_D: usize = 5;

/// A network of three named heads as a user builds it with the library: objects (3 labels behind
/// a hidden layer, with positive weights), scene (4 classes, weight 0.5), distance (2 values,
/// Huber), on a two-layer trunk.
fn heads_network(gpu: &headswap::Gpu, seed: u64) -> headswap::nn::Network {
    use headswap::kernels::Activation;
    use headswap::kernels::loss::RegressionLoss;
    use headswap::nn::{DenseSpec, Head, Init, LayerSpec, Network, Trunk};
    let trunk = Trunk::chain(vec![
        LayerSpec::Dense(DenseSpec { inputs: HEADS_D, outputs: 8, activation: Activation::Tanh }),
        LayerSpec::Dense(DenseSpec { inputs: 8, outputs: 6, activation: Activation::Relu }),
    ]);
    let heads = [
        Head::labels(3).hidden(4, Activation::Tanh).named("objects").pos_weight(vec![2.0, 0.5, 1.5]),
        Head::classes(4).named("scene").weight(0.5),
        Head::regression(2, RegressionLoss::Huber(0.5)).named("distance").weight(2.0),
    ];
    Network::from_trunk_heads(gpu, HEADS_D, trunk, Init::KaimingUniform, &heads, seed).unwrap()
}

/// `n` examples with targets for each head of [`heads_network`], about one in five unknown:
/// class −1, a NaN label, a NaN distance.
fn heads_data(n: usize, seed: u64) -> headswap::data::Dataset {
    use headswap::data::{Dataset, HeadTargets, Targets};
    let mut r = headswap::Rng::new(seed);
    let x: Vec<f32> = (0..n * HEADS_D).map(|_| r.uniform(-1.5, 1.5) as f32).collect();
    let objects: Vec<f32> = (0..n * 3)
        .map(|_| {
            if r.next_f64() < 0.2 {
                f32::NAN
            } else if r.next_f64() < 0.5 {
                1.0
            } else {
                0.0
            }
        })
        .collect();
    let scene: Vec<u32> = (0..n)
        .map(|i| {
            if i == 3 {
                3
            } else if r.next_f64() < 0.2 {
                headswap::kernels::loss::IGNORE_CLASS
            } else {
                r.below(4) as u32
            }
        })
        .collect();
    let distance: Vec<f32> = (0..n * 2).map(|_| if r.next_f64() < 0.2 { f32::NAN } else { r.uniform(-2.0, 2.0) as f32 }).collect();
    Dataset {
        x,
        n,
        d: HEADS_D,
        input_shape: vec![HEADS_D],
        targets: Targets::Heads(vec![
            HeadTargets::new("objects", Targets::Labels { y: objects, k: 3 }),
            HeadTargets::new("scene", Targets::Classes { y: scene, num_classes: 4 }),
            HeadTargets::new("distance", Targets::Regression { y: distance, k: 2 }),
        ]),
        label_names: Vec::new(),
    }
}

/// The held-out check's shape: a network of named heads saved by the library as `--init`, a
/// tensor file of `y.<head>` targets with unknowns, and `headswap train` with a per-head weight
/// give the same bits as the library's `Trainer::fit` on the same network and data; the JSON
/// and the text report each head's loss and metrics per epoch, the JSON's losses exactly the
/// library's.
#[test]
fn train_with_y_dot_head_targets_equals_the_librarys_fit() {
    use headswap::train::{Optimizer, TrainConfig, Trainer};
    let gpu = headswap::Gpu::new().expect("an adapter");
    let init = tmp("heads-init.safetensors");
    heads_network(&gpu, 4).save(&init, headswap::checkpoint::StorageDtype::F32).unwrap();
    let data_path = tmp("heads-data.safetensors");
    headswap::data::tensor_file::save(&data_path, &heads_data(37, 9)).unwrap();
    let out = tmp("heads-trained.safetensors");
    let run = |json: bool| {
        let mut args = vec![
            "train",
            "--init",
            s(&init),
            "--data",
            s(&data_path),
            "--head-weight",
            "scene=0.25",
            "--head-weight",
            "objects=1.5",
            "--optimizer",
            "adam",
            "--lr",
            "0.01",
            "--batch",
            "8",
            "--epochs",
            "3",
            "--seed",
            "3",
            "--out",
            s(&out),
        ];
        if json {
            args.push("--json");
        }
        headswap(&args)
    };
    let doc = json(&run(true));

    // the library's run: the same file, the same network, the same options
    let data = headswap::data::tensor_file::load(&data_path).unwrap();
    let mut net = headswap::nn::Network::from_checkpoint(&gpu, &headswap::checkpoint::load(&init).unwrap(), "init").unwrap();
    net.set_head_weight("scene", 0.25).unwrap();
    net.set_head_weight("objects", 1.5).unwrap();
    let cfg = TrainConfig { optimizer: Optimizer::adam(0.01), batch_size: 8, seed: 3, ..TrainConfig::default() };
    let report = Trainer::new(&gpu, cfg).fit(&mut net, &data, 3).unwrap();
    let want = net.to_checkpoint().unwrap();
    let got = read_safetensors(&out);
    let mut compared = 0;
    for name in want.names() {
        let w = &want.get(name).unwrap().data;
        let (_, g) = got.get(name).unwrap_or_else(|| panic!("{name} missing from the CLI's model"));
        same_run(name, g, w);
        compared += 1;
    }
    assert!(compared >= 12 && got.keys().any(|k| k.starts_with("heads.distance.")), "compared {compared}: {:?}", got.keys());

    // each epoch's JSON: each head's weighted loss (the library's, exactly) and metrics
    let epochs = doc["epochs"].as_array().unwrap();
    assert_eq!(epochs.len(), 3);
    for (e, lib) in epochs.iter().zip(&report.epochs) {
        let heads = e["heads"].as_array().unwrap();
        let names: Vec<&str> = heads.iter().map(|h| h["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["objects", "scene", "distance"]);
        // serde_json writes an f64's shortest round-trip digits but reads them back to within an ulp
        let same = |j: &serde_json::Value, v: f64| (j.as_f64().unwrap() - v).abs() <= 1e-14 * v.abs();
        for (h, l) in heads.iter().zip(&lib.train.heads) {
            assert!(same(&h["loss"], l.weighted_loss), "{}: {} vs {}", l.name, h["loss"], l.weighted_loss);
            assert_eq!(h["weight"].as_f64(), Some(l.weight as f64));
        }
        assert_eq!(heads[1]["weight"].as_f64(), Some(0.25));
        assert_eq!(heads[1]["kind"], "classes");
        assert!(same(&heads[1]["accuracy"], lib.train.heads[1].accuracy.unwrap()));
        assert_eq!(heads[0]["labels"]["f1"].as_array().unwrap().len(), 3);
        assert_eq!(heads[2]["kind"], "regression");
        assert_eq!(heads[2]["regression"]["rmse"].as_array().unwrap().len(), 2);
        assert!(heads[2]["regression"]["mean_mae"].as_f64().unwrap() > 0.0);
        assert!(same(&e["loss"], lib.train.loss), "{} vs {}", e["loss"], lib.train.loss);
    }

    // the text: one line per epoch with each head's loss and quality; the same weights again
    let text = ok(&run(false));
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("epoch")).collect();
    assert_eq!(lines.len(), 3, "{text}");
    for l in lines {
        assert!(l.contains("objects loss ") && l.contains(" f1 ") && l.contains("scene loss ") && l.contains(" acc "), "{l}");
        assert!(l.contains("distance loss ") && l.contains(" mae ") && l.contains(" rmse "), "{l}");
    }
    let again = read_safetensors(&out);
    assert!(got.iter().all(|(k, (_, v))| again[k].1.iter().zip(v).all(|(a, b)| a.to_bits() == b.to_bits())), "a rerun differs");
}

/// A file whose heads are not the model's, a weight for a head it lacks, and one-head options
/// on a file of several heads: one line naming the head or the option, before any training.
#[test]
fn train_refuses_heads_that_do_not_match_the_file() {
    use headswap::data::{HeadTargets, Targets};
    let gpu = headswap::Gpu::new().expect("an adapter");
    let init = tmp("heads-init-bad.safetensors");
    heads_network(&gpu, 1).save(&init, headswap::checkpoint::StorageDtype::F32).unwrap();
    let out = tmp("heads-bad-out.safetensors");
    let with_heads = |file: &str, edit: &dyn Fn(&mut Vec<HeadTargets>)| {
        let mut data = heads_data(9, 2);
        let Targets::Heads(h) = &mut data.targets else { unreachable!() };
        edit(h);
        let path = tmp(file);
        headswap::data::tensor_file::save(&path, &data).unwrap();
        path
    };
    let train = |data: &Path, extra: &[&str]| {
        let mut args = vec!["train", "--init", s(&init), "--data", s(data), "--out", s(&out)];
        args.extend_from_slice(extra);
        headswap(&args)
    };
    let no_distance = with_heads("heads-no-distance.safetensors", &|h| h.retain(|t| t.name != "distance"));
    fails(&train(&no_distance, &[]), 1, "has head \"distance\" (regression outputs) but --data");
    let extra = with_heads("heads-extra.safetensors", &|h| h[1].name = "weather".into());
    fails(&train(&extra, &[]), 1, "targets for head \"weather\", which");
    let wider = with_heads("heads-wider.safetensors", &|h| {
        h[0].targets = Targets::Labels { y: vec![0.0; 9 * 5], k: 5 };
    });
    fails(&train(&wider, &[]), 1, "head \"objects\" has 3 outputs");
    let kind = with_heads("heads-kind.safetensors", &|h| {
        h[2].targets = Targets::Labels { y: vec![1.0; 9 * 2], k: 2 };
    });
    fails(&train(&kind, &[]), 1, "head \"distance\" is a regression head");
    let good = with_heads("heads-good.safetensors", &|_| {});
    fails(&train(&good, &["--head-weight", "weather=1"]), 2, "has no head \"weather\"");
    fails(&train(&good, &["--head-weight", "scene"]), 2, "NAME=W");
    fails(&train(&good, &["--loss", "softmax"]), 2, "--loss softmax is for a file with one target y");
    assert!(!out.exists(), "nothing is saved");
}

/// `eval` of a network of named heads: each head's loss and metrics as the library's
/// `Trainer::evaluate` measures them, with null (JSON) or n/a (table) for a label without known
/// values; and a file of one target is refused for such a model.
#[test]
fn eval_reports_each_heads_metrics() {
    use headswap::data::Targets;
    use headswap::train::{TrainConfig, Trainer};
    let gpu = headswap::Gpu::new().expect("an adapter");
    let model = tmp("heads-eval-model.safetensors");
    let net = heads_network(&gpu, 6);
    net.save(&model, headswap::checkpoint::StorageDtype::F32).unwrap();
    let mut data = heads_data(23, 5);
    // the third label is never known: its precision, recall and F1 are n/a
    let Targets::Heads(h) = &mut data.targets else { unreachable!() };
    let Targets::Labels { y, .. } = &mut h[0].targets else { unreachable!() };
    y.iter_mut().skip(2).step_by(3).for_each(|v| *v = f32::NAN);
    let path = tmp("heads-eval.safetensors");
    headswap::data::tensor_file::save(&path, &data).unwrap();
    let want = Trainer::new(&gpu, TrainConfig::default()).evaluate(&net, &headswap::data::tensor_file::load(&path).unwrap()).unwrap();

    let doc = json(&headswap(&["eval", "--model", s(&model), "--data", s(&path), "--json"]));
    assert_eq!(doc["examples"], 23);
    let heads = doc["heads"].as_array().unwrap();
    assert_eq!(heads.len(), 3);
    let num = |v: &serde_json::Value| v.as_f64();
    let close = |j: Option<f64>, w: Option<f64>| match (j, w) {
        (Some(a), Some(b)) => (a - b).abs() <= 1e-14 * b.abs(),
        (a, b) => a == b,
    };
    assert!(close(num(&doc["loss"]), Some(want.loss)));
    let (objects, scene, distance) = (&heads[0], &heads[1], &heads[2]);
    let lib = |name: &str| want.head(name).unwrap();
    assert_eq!(objects["kind"], "labels");
    let f1: Vec<Option<f64>> = objects["labels"]["f1"].as_array().unwrap().iter().map(num).collect();
    assert_eq!(f1.len(), 3);
    assert!(f1.iter().zip(&lib("objects").labels.as_ref().unwrap().f1).all(|(a, b)| close(*a, *b)), "{f1:?}");
    assert!(
        objects["labels"]["f1"][2].is_null() && objects["labels"]["precision"][2].is_null() && objects["labels"]["recall"][2].is_null()
    );
    assert_eq!(objects["labels"]["support"][2], 0);
    assert_eq!(objects["names"], serde_json::json!(["0", "1", "2"]));
    assert_eq!(scene["kind"], "classes");
    assert!(close(num(&scene["accuracy"]), lib("scene").accuracy));
    assert!(close(num(&scene["loss"]), Some(lib("scene").weighted_loss)));
    assert_eq!(distance["kind"], "regression");
    let r = lib("distance").regression.as_ref().unwrap();
    for j in 0..2 {
        assert!(close(num(&distance["regression"]["mae"][j]), r.mae[j]) && close(num(&distance["regression"]["rmse"][j]), r.rmse[j]));
    }

    let text = ok(&headswap(&["eval", "--model", s(&model), "--data", s(&path)]));
    assert!(text.starts_with("23 examples, loss "), "{text}");
    assert!(text.lines().any(|l| l.starts_with("scene ") && l.contains("classes") && l.contains("acc ")), "{text}");
    assert!(text.lines().any(|l| l.trim_start().starts_with("2  F1 n/a  precision n/a  recall n/a")), "{text}");
    assert!(text.lines().any(|l| l.trim_start().starts_with("1  MAE ") && l.contains("RMSE")), "{text}");

    let one = tmp("heads-eval-one.safetensors");
    let classes = Targets::Classes { y: (0..10).map(|i| i % 2).collect(), num_classes: 2 };
    let one_target = headswap::data::Dataset { targets: classes, ..heads_data(10, 1) };
    headswap::data::tensor_file::save(&one, &one_target).unwrap();
    fails(&headswap(&["eval", "--model", s(&model), "--data", s(&one)]), 1, "has 3 named heads (objects, scene, distance)");
}

/// `predict --data FILE --out OUT` of a network of named heads writes `logits.<head>` per head,
/// the library's logits bit for bit (before softmax or sigmoid: `predict_heads` is their
/// activation), with the heads in the metadata.
#[test]
fn predict_writes_each_heads_logits() {
    let gpu = headswap::Gpu::new().expect("an adapter");
    let model = tmp("heads-predict-model.safetensors");
    let net = heads_network(&gpu, 8);
    net.save(&model, headswap::checkpoint::StorageDtype::F32).unwrap();
    let data = heads_data(13, 4);
    let path = tmp("heads-predict.safetensors");
    headswap::data::tensor_file::save(&path, &data).unwrap();
    let out = tmp("heads-predict-out.safetensors");
    ok(&headswap(&["predict", "--model", s(&model), "--data", s(&path), "--out", s(&out), "--batch", "4", "--features"]));
    let got = read_safetensors(&out);
    let want = headswap::train::predict_heads_logits(&net, &data.x, 13, 4).unwrap();
    let probs = headswap::train::predict_heads(&net, &data.x, 13, 4).unwrap();
    for ((name, logits), (_, p)) in want.iter().zip(&probs) {
        let (shape, values) = &got[&format!("logits.{name}")];
        let k = net.head(name).unwrap().outputs;
        assert_eq!(shape, &vec![13, k], "{name}");
        same_run(name, values, logits);
        let activated: Vec<f32> = match name.as_str() {
            "objects" => values.iter().map(|v| 1.0 / (1.0 + (-v).exp())).collect(),
            "scene" => values
                .chunks(k)
                .flat_map(|row| {
                    let sum: f32 = row.iter().map(|v| v.exp()).sum();
                    row.iter().map(move |v| v.exp() / sum).collect::<Vec<_>>()
                })
                .collect(),
            _ => values.clone(),
        };
        assert_close(&activated, p, name);
    }
    assert_eq!(got["features"].0, vec![13, 6]);
    assert!(!got.contains_key("logits"));
    let bytes = std::fs::read(&out).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    assert_eq!(
        meta.metadata().as_ref().and_then(|m| m.get("heads")).map(String::as_str),
        Some("objects:labels,scene:classes,distance:regression")
    );
}

/// `finetune --swap-head NAME=KIND:N` on a model of named heads replaces that head with a fresh
/// one and keeps the others: the same bits as the library's `swap_named_head` then `fine_tune`;
/// the trunk stays frozen; a head the model lacks or a kind that does not exist is refused.
#[test]
fn finetune_swap_head_replaces_one_named_head() {
    use headswap::data::Targets;
    use headswap::nn::Head;
    use headswap::train::{Freeze, Optimizer, TrainConfig, Trainer};
    let gpu = headswap::Gpu::new().expect("an adapter");
    let from = tmp("heads-ft-from.safetensors");
    heads_network(&gpu, 2).save(&from, headswap::checkpoint::StorageDtype::F32).unwrap();
    // scene now has 6 classes
    let mut data = heads_data(29, 7);
    let Targets::Heads(h) = &mut data.targets else { unreachable!() };
    h[1].targets = Targets::Classes { y: (0..29).map(|i| (i % 7) as u32 % 6).collect(), num_classes: 6 };
    let path = tmp("heads-ft.safetensors");
    headswap::data::tensor_file::save(&path, &data).unwrap();
    let out = tmp("heads-ft-out.safetensors");
    let finetune = |extra: &[&str]| {
        let mut args = vec!["finetune", "--from", s(&from), "--data", s(&path), "--out", s(&out)];
        args.extend_from_slice(extra);
        headswap(&args)
    };
    let opts = ["--freeze", "trunk", "--optimizer", "adam", "--lr", "0.01", "--batch", "8", "--epochs", "2", "--seed", "5"];
    let mut args = opts.to_vec();
    args.extend(["--swap-head", "scene=classes:6"]);
    ok(&finetune(&args));

    let ckpt = headswap::checkpoint::load(&from).unwrap();
    let mut net = headswap::nn::Network::from_checkpoint(&gpu, &ckpt, "from").unwrap();
    net.swap_named_head("scene", Head::classes(6).named("scene").weight(0.5), 5).unwrap();
    let cfg = TrainConfig { optimizer: Optimizer::adam(0.01), batch_size: 8, seed: 5, ..TrainConfig::default() };
    Trainer::new(&gpu, cfg).fine_tune(&mut net, &headswap::data::tensor_file::load(&path).unwrap(), Freeze::Trunk, 2).unwrap();
    let want = net.to_checkpoint().unwrap();
    let got = read_safetensors(&out);
    for name in want.names() {
        let w = &want.get(name).unwrap().data;
        same_run(name, &got[name].1, w);
    }
    assert_eq!(got["heads.scene.weight"].0, vec![6, 6]);
    assert_eq!(got["heads.distance.weight"].0, vec![2, 6]);
    // the frozen trunk is the --from model's
    assert_eq!(got["0.weight"].1, ckpt.get("0.weight").unwrap().data);

    // a regression head with another loss, on the 6-class model just written: the checkpoint records it
    let out2 = tmp("heads-ft-out2.safetensors");
    let swap = ["finetune", "--from", s(&out), "--data", s(&path), "--out", s(&out2), "--epochs", "1"];
    ok(&headswap(&[&swap[..], &["--swap-head", "distance=regression:huber:0.25:2"]].concat()));
    let swapped = headswap::nn::Network::from_checkpoint(&gpu, &headswap::checkpoint::load(&out2).unwrap(), "out").unwrap();
    let kind = headswap::nn::HeadKind::Regression(headswap::kernels::loss::RegressionLoss::Huber(0.25));
    assert_eq!(swapped.head("distance").map(|h| (h.kind, h.weight)), Some((kind, 2.0)));

    fails(&finetune(&["--swap-head", "weather=classes:3"]), 2, "has no head \"weather\" (its heads: objects, scene, distance)");
    fails(&finetune(&["--swap-head", "scene=cats:3"]), 2, "unknown head kind \"cats\"");
    fails(&finetune(&["--swap-head", "scene=classes:0"]), 2, "at least 1");
    // without the swap the 4-class scene head cannot take 6 classes: said naming the head
    fails(&finetune(&opts), 1, "head \"scene\" has 4 outputs");
}

/// `pretrain` on a file of `y.<head>` targets needs no head options: the file's heads metadata
/// defines them (regression with MSE, weight 1) on the chosen trunk. The MLP run equals the
/// library's `from_trunk_heads` + `fit` bit for bit; a CNN trunk takes them too.
#[test]
fn pretrain_takes_its_heads_from_the_file() {
    use headswap::kernels::Activation;
    use headswap::kernels::loss::RegressionLoss;
    use headswap::nn::{DenseSpec, Head, LayerSpec, Network, Trunk};
    use headswap::train::{Optimizer, TrainConfig, Trainer};
    let gpu = headswap::Gpu::new().expect("an adapter");
    let path = tmp("heads-pretrain.safetensors");
    headswap::data::tensor_file::save(&path, &heads_data(31, 3)).unwrap();
    let out = tmp("heads-pretrain-out.safetensors");
    let opts = ["--optimizer", "adam", "--lr", "0.01", "--batch", "8", "--epochs", "2", "--seed", "2", "--json"];
    let doc = json(&headswap(&[&["pretrain", "--data", s(&path), "--out", s(&out), "--layers", "8"][..], &opts[..]].concat()));
    assert_eq!(doc["epochs"][1]["heads"].as_array().map(Vec::len), Some(3));

    let trunk = Trunk::chain(vec![LayerSpec::Dense(DenseSpec { inputs: HEADS_D, outputs: 8, activation: Activation::Relu })]);
    let heads =
        [Head::labels(3).named("objects"), Head::classes(4).named("scene"), Head::regression(2, RegressionLoss::Mse).named("distance")];
    let mut net = Network::from_trunk_heads(&gpu, HEADS_D, trunk, Default::default(), &heads, 2).unwrap();
    let cfg = TrainConfig { optimizer: Optimizer::adam(0.01), batch_size: 8, seed: 2, ..TrainConfig::default() };
    Trainer::new(&gpu, cfg).fit(&mut net, &headswap::data::tensor_file::load(&path).unwrap(), 2).unwrap();
    let want = net.to_checkpoint().unwrap();
    let got = read_safetensors(&out);
    for name in want.names() {
        let w = &want.get(name).unwrap().data;
        same_run(name, &got[name].1, w);
    }
    assert_eq!(got["heads.scene.weight"].0, vec![4, 8]);

    // 4x4 gray images with the same targets
    let base = heads_data(31, 3);
    let x = (0..31 * 16).map(|i| ((i * 7) % 11) as f32 / 11.0).collect();
    let images = headswap::data::Dataset { x, d: 16, input_shape: vec![1, 4, 4], ..base };
    let image_path = tmp("heads-pretrain-images.safetensors");
    headswap::data::tensor_file::save(&image_path, &images).unwrap();
    let cnn = tmp("heads-pretrain-cnn.safetensors");
    ok(&headswap(&[
        "pretrain",
        "--data",
        s(&image_path),
        "--out",
        s(&cnn),
        "--arch",
        "cnn",
        "--channels",
        "2",
        "--layers",
        "6",
        "--epochs",
        "1",
    ]));
    let saved = Network::from_checkpoint(&gpu, &headswap::checkpoint::load(&cnn).unwrap(), "cnn").unwrap();
    let names: Vec<(&str, usize)> = saved.heads().iter().map(|h| (h.name.as_str(), h.outputs)).collect();
    assert_eq!(names, [("objects", 3), ("scene", 4), ("distance", 2)]);
}

/// `--head-weighting uncertainty` (train and finetune): the library's `HeadWeighting::Uncertainty`
/// run, each head's learned weight in the text and the JSON per epoch, the learned
/// log-variances saved in the model's heads metadata; `finetune --head-weight NAME=W` sets a
/// head's weight as `train`'s does; on one target y both are refused in one line.
#[test]
fn head_weighting_uncertainty_and_finetune_head_weight() {
    use headswap::train::{Freeze, HeadWeighting, Optimizer, TrainConfig, Trainer};
    let gpu = headswap::Gpu::new().expect("an adapter");
    let init = tmp("heads-unc-init.safetensors");
    heads_network(&gpu, 6).save(&init, headswap::checkpoint::StorageDtype::F32).unwrap();
    let data_path = tmp("heads-unc-data.safetensors");
    headswap::data::tensor_file::save(&data_path, &heads_data(31, 4)).unwrap();
    let out = tmp("heads-unc-out.safetensors");
    let opts = ["--optimizer", "adam", "--lr", "0.02", "--batch", "8", "--epochs", "2", "--seed", "3", "--head-weighting", "uncertainty"];
    let train = |extra: &[&str]| {
        let mut args = vec!["train", "--init", s(&init), "--data", s(&data_path), "--out", s(&out)];
        args.extend_from_slice(&opts);
        args.extend_from_slice(extra);
        headswap(&args)
    };
    let doc = json(&train(&["--json"]));
    let data = headswap::data::tensor_file::load(&data_path).unwrap();
    let mut net = headswap::nn::Network::from_checkpoint(&gpu, &headswap::checkpoint::load(&init).unwrap(), "init").unwrap();
    let cfg = TrainConfig {
        optimizer: Optimizer::adam(0.02),
        batch_size: 8,
        seed: 3,
        head_weighting: HeadWeighting::Uncertainty,
        ..TrainConfig::default()
    };
    Trainer::new(&gpu, cfg.clone()).fit(&mut net, &data, 2).unwrap();
    let saved = headswap::nn::Network::from_checkpoint(&gpu, &headswap::checkpoint::load(&out).unwrap(), "out").unwrap();
    let last = doc["epochs"].as_array().unwrap().last().unwrap()["heads"].as_array().unwrap().clone();
    for ((lib, cli), j) in net.heads().iter().zip(saved.heads()).zip(&last) {
        let (want, got) = (lib.log_var.unwrap(), cli.log_var.unwrap());
        assert!(want != 0.0 && (got - want).abs() <= 1e-5 * want.abs().max(1e-2), "{}: {got} vs {want}", lib.name);
        assert_eq!(j["log_var"].as_f64(), Some(got as f64), "{}: the JSON's last epoch is what was saved", lib.name);
        let w = j["learned_weight"].as_f64().unwrap();
        assert!((w - (-(got as f64)).exp()).abs() <= 1e-12, "{}: {w}", lib.name);
    }
    for (name, w) in net.values().unwrap().iter().zip(saved.values().unwrap()) {
        same_run("a layer", &w.0, &name.0);
    }
    let text = ok(&train(&[]));
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("epoch")).collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines.iter().all(|l| l.matches("(learned weight ").count() == 3), "{text}");

    // --save-state records --head-weighting: resume continues the learned weights, as one run of 3 epochs
    let state = tmp("heads-unc-state.safetensors");
    ok(&train(&["--save-state", s(&state)]));
    let resumed = tmp("heads-unc-resumed.safetensors");
    ok(&headswap(&["resume", "--state", s(&state), "--data", s(&data_path), "--epochs", "3", "--out", s(&resumed)]));
    let three = tmp("heads-unc-three.safetensors");
    let mut args = vec!["train", "--init", s(&init), "--data", s(&data_path), "--out", s(&three)];
    args.extend_from_slice(&opts);
    args.extend(["--epochs", "3"]);
    ok(&headswap(&args));
    let load = |p: &Path| headswap::nn::Network::from_checkpoint(&gpu, &headswap::checkpoint::load(p).unwrap(), "x").unwrap();
    let (r, t) = (load(&resumed), load(&three));
    let s_of = |n: &headswap::nn::Network| n.heads().iter().map(|h| h.log_var.unwrap()).collect::<Vec<f32>>();
    same_run("resumed log-variances", &s_of(&r), &s_of(&t));
    assert_ne!(s_of(&r), s_of(&saved), "the third epoch moved them");

    // finetune: --head-weight, and uncertainty weighting on top of the saved log-variances
    let ft_out = tmp("heads-unc-ft.safetensors");
    let ft = ["finetune", "--from", s(&out), "--data", s(&data_path), "--out", s(&ft_out), "--freeze", "trunk"];
    ok(&headswap(&[&ft[..], &opts, &["--head-weight", "scene=0.75"]].concat()));
    let mut want = saved.try_clone().unwrap();
    want.set_head_weight("scene", 0.75).unwrap();
    Trainer::new(&gpu, cfg).fine_tune(&mut want, &data, Freeze::Trunk, 2).unwrap();
    let got = headswap::nn::Network::from_checkpoint(&gpu, &headswap::checkpoint::load(&ft_out).unwrap(), "ft").unwrap();
    assert_eq!(got.head("scene").map(|h| h.weight), Some(0.75));
    for (g, w) in got.heads().iter().zip(want.heads()) {
        let (g, w) = (g.log_var.unwrap(), w.log_var.unwrap());
        assert!((g - w).abs() <= 1e-5 * w.abs().max(1e-2), "{g} vs {w}");
    }
    fails(&headswap(&[&ft[..], &["--head-weight", "weather=2"]].concat()), 2, "has no head \"weather\"");

    // one target y: both refused in one line
    let one = tmp("heads-unc-one.safetensors");
    ok(&headswap(&["pretrain", "--data", "synthetic-a:40", "--arch", "mlp", "--layers", "8", "--epochs", "1", "--out", s(&one)]));
    let ft1 = ["finetune", "--from", s(&one), "--data", "synthetic-b:20", "--out", s(&ft_out), "--epochs", "1"];
    fails(&headswap(&[&ft1[..], &["--head-weight", "scene=2"]].concat()), 2, "weighs a named head's loss");
    fails(&headswap(&[&ft1[..], &["--head-weighting", "uncertainty"]].concat()), 1, "named heads");
    fails(&headswap(&[&ft1[..], &["--head-weighting", "equal"]].concat()), 2, "fixed or uncertainty");
}

/// A CSV manifest grouped by head (`path,objects:pedestrian,objects:car,scene,distance`): pretrain
/// puts one head per group on the trunk (labels; classes by name for the bare column of names;
/// regression for the bare column of numbers), eval and finetune read it against the model's
/// heads, and a class the model does not have or a value that does not fit a head is refused in
/// one line naming the head and the line.
#[test]
fn a_manifest_grouped_by_head_trains_named_heads() {
    use headswap::nn::HeadKind;
    let dir = tmp("grouped-manifest");
    std::fs::create_dir_all(dir.join("img")).unwrap();
    let mut csv = String::from("path,objects:pedestrian,objects:car,scene,distance\n");
    for i in 0..20u32 {
        let v = (i * 37 % 256) as u8;
        image::GrayImage::from_pixel(8, 8, image::Luma([v])).save(dir.join(format!("img/{i}.png"))).unwrap();
        let car = if i % 5 == 0 { String::new() } else { (i % 2).to_string() };
        let scene = if i % 7 == 0 {
            ""
        } else if v > 100 {
            "urban"
        } else {
            "rural"
        };
        let distance = if i % 6 == 0 { String::new() } else { format!("{:.2}", v as f32 / 50.0) };
        csv += &format!("img/{i}.png,{},{car},{scene},{distance}\n", u8::from(v > 128));
    }
    let manifest = dir.join("m.csv");
    std::fs::write(&manifest, &csv).unwrap();
    let model = dir.join("pre.safetensors");
    let pre = ["pretrain", "--data", s(&manifest), "--size", "8x8", "--arch", "mlp", "--layers", "8", "--epochs", "2", "--seed", "1"];
    let text = ok(&headswap(&[&pre[..], &["--out", s(&model)]].concat()));
    assert!(text.contains("objects loss ") && text.contains("scene loss ") && text.contains("distance loss "), "{text}");
    let gpu = headswap::Gpu::new().expect("an adapter");
    let net = headswap::nn::Network::from_checkpoint(&gpu, &headswap::checkpoint::load(&model).unwrap(), "pre").unwrap();
    let heads: Vec<(&str, &'static str, usize)> = net.heads().iter().map(|h| (h.name.as_str(), h.kind.name(), h.outputs)).collect();
    assert_eq!(heads, [("objects", "labels", 2), ("scene", "classes", 2), ("distance", "regression", 1)]);
    assert_eq!(net.head("scene").unwrap().label_names.as_deref(), Some(&["rural".to_string(), "urban".to_string()][..]));
    assert_eq!(net.head("objects").unwrap().label_names.as_deref(), Some(&["pedestrian".to_string(), "car".to_string()][..]));
    assert!(matches!(net.head("distance").unwrap().kind, HeadKind::Regression(_)));

    // eval reads the same file against the model's heads
    let doc = json(&headswap(&["eval", "--model", s(&model), "--data", s(&manifest), "--size", "8x8", "--json"]));
    assert_eq!(doc["examples"], 20);
    let names: Vec<&str> = doc["heads"].as_array().unwrap().iter().map(|h| h["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["objects", "scene", "distance"]);

    // finetune on a manifest whose columns come in another order, with a head weight
    let reordered: String = csv
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            format!("{},{},{},{},{}\n", f[0], f[4], f[3], f[2], f[1])
        })
        .collect();
    let manifest2 = dir.join("m2.csv");
    std::fs::write(&manifest2, reordered).unwrap();
    let out = dir.join("ft.safetensors");
    let ft = |data: &Path, extra: &[&str]| {
        let mut args = vec!["finetune", "--from", s(&model), "--data", s(data), "--size", "8x8", "--epochs", "1", "--out", s(&out)];
        args.extend_from_slice(extra);
        headswap(&args)
    };
    ok(&ft(&manifest2, &["--head-weight", "distance=0.5"]));
    let tuned = headswap::nn::Network::from_checkpoint(&gpu, &headswap::checkpoint::load(&out).unwrap(), "ft").unwrap();
    assert_eq!(tuned.head("distance").map(|h| h.weight), Some(0.5));

    // a class the model's scene head does not have; a distance that is not a number
    let bad = |name: &str, row: &str| {
        let p = dir.join(name);
        std::fs::write(&p, format!("{}{row}\n", csv)).unwrap();
        p
    };
    let forest = bad("forest.csv", "img/1.png,1,0,forest,0.5");
    fails(&ft(&forest, &[]), 1, "line 22, column 4 (\"scene\"), head \"scene\": unknown class \"forest\"");
    let far = bad("far.csv", "img/1.png,1,0,urban,far");
    fails(&ft(&far, &[]), 1, "line 22, column 5 (\"distance\"), head \"distance\": \"far\" is not a finite number");
    let yes = bad("yes.csv", "img/1.png,yes,0,urban,1");
    fails(&ft(&yes, &[]), 1, "head \"objects\": \"yes\" is not 0, 1 or empty");

    // predict IMAGE on the model of named heads: each head's prediction, the library's
    let img = dir.join("img/3.png");
    let doc = json(&headswap(&["predict", "--model", s(&model), s(&img), "--json"]));
    let x = headswap::data::image_folder::load_image(&img, &headswap::data::ImageOptions::gray(8, 8)).unwrap();
    let want = headswap::train::predict_heads(&net, &x, 1, 1).unwrap();
    let heads = doc[0]["heads"].as_array().unwrap();
    assert_eq!(doc[0]["image"], s(&img));
    let got_names: Vec<&str> = heads.iter().map(|h| h["name"].as_str().unwrap()).collect();
    assert_eq!(got_names, ["objects", "scene", "distance"]);
    let num = |v: &serde_json::Value| v.as_f64().unwrap() as f32;
    same_run("objects", &[num(&heads[0]["probabilities"]["pedestrian"]), num(&heads[0]["probabilities"]["car"])], &want[0].1);
    same_run("scene", &[num(&heads[1]["probabilities"]["rural"]), num(&heads[1]["probabilities"]["urban"])], &want[1].1);
    same_run("distance", &[num(&heads[2]["values"]["distance"])], &want[2].1);
    let best = if want[1].1[1] > want[1].1[0] { "urban" } else { "rural" };
    assert_eq!(heads[1]["class"], best);
    assert_eq!(heads[0]["labels"].as_array().unwrap().len(), want[0].1.iter().filter(|&&p| p >= 0.5).count());
    let text = ok(&headswap(&["predict", "--model", s(&model), s(&img)]));
    let line = text.lines().next().unwrap();
    assert!(
        line.contains("objects: pedestrian") && line.contains(&format!("scene: {best} (")) && line.contains("distance: distance "),
        "{line}"
    );
}

#[test]
fn frozen_f16_is_reported_recorded_and_refused_where_nothing_is_cached() {
    let (a, b) = (tmp("f16-a.safetensors"), tmp("f16-b.safetensors"));
    ok(&headswap(&["pretrain", "--data", "synthetic-a:200", "--epochs", "1", "--out", s(&a)]));
    let args = ["finetune", "--from", s(&a), "--data", "synthetic-b:120", "--freeze", "trunk", "--epochs", "2", "--out", s(&b)];
    let v = json(&headswap(&[&args[..], &["--frozen-f16", "--json"]].concat()));
    assert_eq!((v["frozen_storage"].as_str(), v["cached_features"].as_bool()), (Some("f16"), Some(true)), "{v}");
    // the whole trunk frozen: its weights in f16 too, saved so, and loaded back so
    assert_eq!(v["frozen_weights"].as_str(), Some("f16"), "{v}");
    assert!(v["frozen_weights_bytes"].as_u64().is_some_and(|b| b > 0), "{v}");
    let ckpt = headswap::checkpoint::load(&b).unwrap();
    assert_eq!(ckpt.metadata.get("headswap.frozen_storage").map(String::as_str), Some("f16"));
    assert_eq!(ckpt.metadata.get("headswap.trunk_storage").map(String::as_str), Some("f16"));
    let net = headswap::nn::Network::load(&headswap::Gpu::new().unwrap(), &b).unwrap();
    assert_eq!(net.trunk_storage(), headswap::train::Precision::F16);
    ok(&headswap(&["eval", "--model", s(&b), "--data", "synthetic-b:40"]));
    // the text summary says so too; an f32 run records nothing
    let text = ok(&headswap(&[&args[..], &["--frozen-f16"]].concat()));
    assert!(text.contains("cached trunk features stored in f16"), "{text}");
    assert!(text.contains("the frozen trunk's weights are stored in f16"), "{text}");
    ok(&headswap(&args));
    assert!(!headswap::checkpoint::load(&b).unwrap().metadata.contains_key("headswap.frozen_storage"));
    assert!(!headswap::checkpoint::load(&b).unwrap().metadata.contains_key("headswap.trunk_storage"));
    // every layer trains: nothing is cached, so nothing can be stored in f16
    let out = headswap(&["pretrain", "--data", "synthetic-a:64", "--epochs", "1", "--frozen-f16", "--out", s(&tmp("f16-c.safetensors"))]);
    fails(&out, 1, "f16 storage");
}
