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
    fails(&headswap(&["eval", "--model", good.to_str().unwrap(), "--data", "synthetic-b:10"]), 1, "Head::labels");
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
