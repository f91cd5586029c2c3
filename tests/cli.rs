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

// ---- fixes from the new-user review (numbers as in the review's findings) ----

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
fn a1_eval_matches_classes_and_labels_by_name() {
    let (model, data) = named_class_model("a1");
    // three of the eight classes, numbered 0..3: by position they would all be scored wrong
    let subset = class_subset(&data, &[5, 3, 4]);
    let subset_path = tmp("a1_subset.safetensors");
    headswap::data::tensor_file::save(&subset_path, &subset).unwrap();
    let v = json(&headswap(&["eval", "--model", s(&model), "--data", s(&subset_path), "--json"]));
    assert!(v["accuracy"].as_f64().unwrap() > 0.5, "classes not matched by name: {v}");

    // a class name the model does not know
    let mut renamed = subset.clone();
    renamed.label_names[0] = "nine".into();
    let renamed_path = tmp("a1_renamed.safetensors");
    headswap::data::tensor_file::save(&renamed_path, &renamed).unwrap();
    fails(&headswap(&["eval", "--model", s(&model), "--data", s(&renamed_path)]), 1, "nine");

    // labels in another column order score exactly as in the model's order
    let b = headswap::data::synthetic::scenes_task_b(60, 16, 4);
    let b_path = tmp("a1_b.safetensors");
    headswap::data::tensor_file::save(&b_path, &b).unwrap();
    let b_model = tmp("a1_b_model.safetensors");
    ok(&headswap(&["pretrain", "--data", s(&b_path), "--epochs", "1", "--out", s(&b_model)]));
    let mut swapped = b.clone();
    let headswap::data::Targets::Labels { y, k } = &mut swapped.targets else { panic!() };
    for row in y.chunks_exact_mut(*k) {
        row.swap(0, 3);
    }
    swapped.label_names.swap(0, 3);
    let swapped_path = tmp("a1_b_swapped.safetensors");
    headswap::data::tensor_file::save(&swapped_path, &swapped).unwrap();
    let a = json(&headswap(&["eval", "--model", s(&b_model), "--data", s(&b_path), "--json"]));
    let c = json(&headswap(&["eval", "--model", s(&b_model), "--data", s(&swapped_path), "--json"]));
    assert_eq!(a, c, "label columns were not matched by name");
}

#[test]
fn a2_eval_scores_held_out_built_in_data() {
    let model = tmp("a2.safetensors");
    ok(&headswap(&["pretrain", "--data", "synthetic-a:64", "--epochs", "1", "--out", s(&model)]));
    // the examples pretrain drew (seed 0), as a file: eval --data synthetic-a:64 must not be them
    let train_path = tmp("a2_train.safetensors");
    headswap::data::tensor_file::save(&train_path, &headswap::data::synthetic::shapes_task_a(64, 16, 0)).unwrap();
    let on_train = json(&headswap(&["eval", "--model", s(&model), "--data", s(&train_path), "--json"]));
    let out = headswap(&["eval", "--model", s(&model), "--data", "synthetic-a:64", "--json"]);
    assert!(stderr(&out).contains("held-out"), "no line saying what is scored: {}", stderr(&out));
    assert_ne!(on_train["loss"], json(&out)["loss"], "eval scored the training examples");
    if headswap::data::digits::default_dir().is_some() {
        let d = tmp("a2_digits.safetensors");
        ok(&headswap(&["pretrain", "--data", "digits", "--epochs", "1", "--out", s(&d)]));
        let v = json(&headswap(&["eval", "--model", s(&d), "--data", "digits", "--json"]));
        assert_eq!(v["examples"], 449, "eval --data digits must score the 449 test digits: {v}");
    }
}

#[test]
fn a4_a_closed_stdout_is_not_a_panic() {
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
fn a6_a_diverged_run_saves_nothing() {
    let out = tmp("a6.safetensors");
    std::fs::write(&out, b"an earlier model").unwrap();
    let state = tmp("a6.state");
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
fn a9_image_options_only_where_images_are_read() {
    let data = headswap::data::synthetic::shapes_task_a(64, 8, 1);
    let data_path = tmp("a9_data.safetensors");
    headswap::data::tensor_file::save(&data_path, &data).unwrap();
    let model = tmp("a9.safetensors");
    ok(&headswap(&["pretrain", "--data", s(&data_path), "--epochs", "1", "--out", s(&model)]));
    let img = tmp("a9.png");
    image::GrayImage::from_pixel(8, 8, image::Luma([128])).save(&img).unwrap();
    fails(&headswap(&["predict", "--model", s(&model), s(&img)]), 1, "not trained on images");

    let o = tmp("a9_never.safetensors");
    fails(&headswap(&["pretrain", "--data", s(&data_path), "--size", "8x8", "--out", s(&o)]), 2, "apply only to image folders");
    fails(&headswap(&["pretrain", "--data", "synthetic-a:64", "--rgb", "--out", s(&o)]), 2, "--rgb");
    fails(&headswap(&["pretrain", "--data", "synthetic-a:64", "--size", "16x8", "--out", s(&o)]), 2, "square");
    fails(&headswap(&["pretrain", "--data", "synthetic-a:64", "--size", "2x2", "--out", s(&o)]), 2, "square");
    fails(&headswap(&["pretrain", "--data", "digits", "--size", "8x8", "--out", s(&o)]), 2, "digits");
    assert!(!o.exists());
}

#[test]
fn b_meaningless_options_are_refused_before_training() {
    let o = tmp("b_never.safetensors");
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
    let same = tmp("b_same");
    fails(&pre(&["--out", s(&same), "--save-state", s(&same)]), 2, "different files");
    assert!(!Path::new(o).exists());
}

#[test]
fn a8_resume_continues_the_saved_run() {
    let state = tmp("a8.state");
    let half = tmp("a8_half.safetensors");
    let flags = ["--data", "synthetic-a:64", "--lr", "0.01", "--momentum", "0.5", "--batch", "16"];
    let mut a = vec!["pretrain", "--epochs", "1", "--save-state", s(&state), "--out", s(&half)];
    a.extend_from_slice(&flags);
    ok(&headswap(&a));
    // the saved options apply without repeating them, and give the same bits as one 2-epoch run
    let resumed = tmp("a8_resumed.safetensors");
    let out = ok(&headswap(&["resume", "--state", s(&state), "--data", "synthetic-a:64", "--epochs", "2", "--out", s(&resumed)]));
    assert!(out.contains("lr 0.01000"), "resume did not restore --lr: {out}");
    let whole = tmp("a8_whole.safetensors");
    let mut a = vec!["pretrain", "--epochs", "2", "--out", s(&whole)];
    a.extend_from_slice(&flags);
    ok(&headswap(&a));
    assert_eq!(std::fs::read(&resumed).unwrap(), std::fs::read(&whole).unwrap(), "resume is not the same run");
    let never = tmp("a8_never.safetensors");
    fails(&headswap(&["resume", "--state", s(&state), "--data", "synthetic-a:64", "--epochs", "1", "--out", s(&never)]), 2, "--epochs");
    fails(&headswap(&["resume", "--state", s(&state), "--data", "synthetic-a:80", "--epochs", "2", "--out", s(&never)]), 1, "same data");
    assert!(!never.exists());
}

#[test]
fn c_messages_speak_the_command_line() {
    fails(&headswap(&["info", "--foo"]), 2, "info does not take --foo");
    fails(&headswap(&["pretrain", "--data", "synthetic-a:64", "--out"]), 2, "--out needs a value");
    let err = stderr(&headswap(&["pretrain", "--data", "synthetic-a:64", "--arch", "cnn", "--channels", "0", "--out", "/tmp/x"]));
    assert!(!err.contains('{'), "Rust debug output in an error: {err}");

    let model = tmp("c.safetensors");
    ok(&headswap(&["pretrain", "--data", "synthetic-a:64", "--epochs", "1", "--out", s(&model)]));
    let out = headswap(&["eval", "--model", s(&model), "--data", "synthetic-b:10"]);
    fails(&out, 1, "finetune");
    assert!(!stderr(&out).contains("Head::"), "{}", stderr(&out));

    // a plain state_dict: the advice names a flag that eval takes, and following it works
    let mut plain = headswap::checkpoint::load(&model).unwrap().state_dict_only();
    plain.metadata.clear();
    let plain_path = tmp("c_plain.safetensors");
    headswap::checkpoint::save(&plain_path, &plain, headswap::checkpoint::StorageDtype::F32).unwrap();
    fails(&headswap(&["eval", "--model", s(&plain_path), "--data", "synthetic-a:10"]), 1, "--arch mlp");
    ok(&headswap(&["eval", "--model", s(&plain_path), "--data", "synthetic-a:10", "--arch", "mlp"]));

    // finetune --recipe --json: one JSON document
    let tuned = tmp("c_tuned.safetensors");
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
fn d_tables_and_ratios_read_cleanly() {
    let out =
        ok(&headswap(&["pretrain", "--data", "synthetic-a:100", "--epochs", "1", "--batch", "16", "--out", s(&tmp("d.safetensors"))]));
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
    let report = |trunk: &str| headswap::demo::DemoReport {
        adapter: "test".into(),
        trunk: trunk.into(),
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
    let mlp = report("dense 256→128 relu");
    let cnn = report("conv2d 1×16×16 → 8×16×16 (kernel 3, stride 1, padding 1) relu");
    let table = mlp.to_string();
    assert!(table.contains(" square triangle"), "{table}");
    let sbs = headswap::demo::side_by_side(&[mlp, cnn]);
    assert!(sbs.contains("mlp") && sbs.contains("cnn") && !sbs.contains("trunk 1"), "{sbs}");
}

#[test]
fn second_review_unnamed_data_duplicates_resume_report_and_image_size() {
    // data without names (a plain tensor file: default names) is scored by position against a
    // model with names, and a model without names against named data
    let (model, data) = named_class_model("r2");
    let mut unnamed = data.clone();
    unnamed.label_names.clear();
    let unnamed_path = tmp("r2_unnamed.safetensors");
    headswap::data::tensor_file::save(&unnamed_path, &unnamed).unwrap();
    let v = json(&headswap(&["eval", "--model", s(&model), "--data", s(&unnamed_path), "--json"]));
    assert!(v["accuracy"].as_f64().unwrap() > 0.5, "unnamed data not scored by position: {v}");
    let plain_model = tmp("r2_plain_model.safetensors");
    ok(&headswap(&["pretrain", "--data", s(&unnamed_path), "--epochs", "1", "--out", s(&plain_model)]));
    let named_path = tmp("r2_named.safetensors");
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
    let dup_path = tmp("r2_dup.safetensors");
    safetensors::serialize_to_file(file.tensors(), Some(meta), &dup_path).unwrap();
    fails(&headswap(&["eval", "--model", s(&model), "--data", s(&dup_path)]), 1, "given twice");

    // resume must not write its model over the state it resumes
    let state = tmp("r2.state");
    let first = tmp("r2_first.safetensors");
    ok(&headswap(&["pretrain", "--data", "synthetic-a:64", "--epochs", "1", "--save-state", s(&state), "--out", s(&first)]));
    let before = std::fs::read(&state).unwrap();
    fails(&headswap(&["resume", "--state", s(&state), "--data", "synthetic-a:64", "--epochs", "2", "--out", s(&state)]), 2, "--state");
    assert_eq!(std::fs::read(&state).unwrap(), before, "the state file changed");

    // --report naming a file is refused before training, and nothing is written
    let report_file = tmp("r2_report_is_a_file");
    std::fs::write(&report_file, b"keep").unwrap();
    let never = tmp("r2_never.safetensors");
    fails(
        &headswap(&["pretrain", "--data", "synthetic-a:64", "--epochs", "1", "--out", s(&never), "--report", s(&report_file)]),
        2,
        "--report",
    );
    assert!(!never.exists());
    assert_eq!(std::fs::read(&report_file).unwrap(), b"keep");

    // --early-stop 0 would stop after the first epoch whatever happens
    fails(&headswap(&["pretrain", "--data", "synthetic-a:64", "--val", "0.2", "--early-stop", "0", "--out", s(&never)]), 2, "--early-stop");

    // eval and finetune read images at the size the model was trained at unless told otherwise
    // (classes named with digits, as a folder of digit classes is: real names, matched by name)
    let write_class = |folder: &Path, name: &str, dark: bool| {
        let dir = folder.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..6 {
            let v = if dark { 20 + i as u8 } else { 220 - i as u8 };
            image::GrayImage::from_pixel(12, 12, image::Luma([v])).save(dir.join(format!("{i}.png"))).unwrap();
        }
    };
    let folder = tmp("r2_folder");
    write_class(&folder, "0", true);
    write_class(&folder, "1", false);
    let small = tmp("r2_small.safetensors");
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
    let tuned = tmp("r2_tuned.safetensors");
    ok(&headswap(&["finetune", "--from", s(&small), "--data", s(&folder), "--epochs", "1", "--out", s(&tuned)]));
    fails(&headswap(&["eval", "--model", s(&small), "--data", s(&folder), "--size", "16x16"]), 1, "input features");
    // a folder holding only class "1": by position it would be class 0, by name it is class 1
    let only_light = tmp("r2_only_light");
    write_class(&only_light, "1", false);
    let v = json(&headswap(&["eval", "--model", s(&small), "--data", s(&only_light), "--json"]));
    assert!(v["accuracy"].as_f64().unwrap() > 0.9, "digit-named classes not matched by name: {v}");
    write_class(&only_light, "five", true);
    fails(&headswap(&["eval", "--model", s(&small), "--data", s(&only_light)]), 1, "five");
}
