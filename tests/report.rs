//! `headswap::report`: charts and the demo's HTML page, from reports built by hand (no GPU).

use headswap::Error;
use headswap::demo::{DemoReport, DemoRow, FINE_TUNE_ALL, HEAD_ONLY, SCRATCH};
use headswap::kernels::metrics::LabelMetrics;
use headswap::report;
use headswap::train::{EpochReport, FitReport, Metrics};
use std::path::{Path, PathBuf};

/// A fresh, empty folder for one test under Cargo's scratch space for integration tests.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn labels(f1: Vec<f64>) -> LabelMetrics {
    let mean = f1.iter().sum::<f64>() / f1.len() as f64;
    LabelMetrics { mean_f1: Some(mean), f1: f1.into_iter().map(Some).collect(), ..Default::default() }
}

fn fit_report(epochs: usize, label_head: bool, validation: bool) -> FitReport {
    let metrics = |e: usize, shift: f64| {
        let p = (e as f64 + 1.0) / epochs as f64;
        let loss = 0.7 * (-2.5 * p).exp() + 0.05 + shift;
        if label_head {
            Metrics {
                loss,
                accuracy: None,
                labels: Some(labels(vec![0.4 + 0.5 * p - shift, 0.3 + 0.6 * p - shift, 0.5 + 0.3 * p])),
                heads: Vec::new(),
            }
        } else {
            Metrics { loss, accuracy: Some(0.5 + 0.45 * p - shift), labels: None, heads: Vec::new() }
        }
    };
    FitReport {
        epochs: (0..epochs)
            .map(|e| EpochReport {
                epoch: e,
                lr: 0.01,
                train: metrics(e, 0.0),
                validation: validation.then(|| metrics(e, 0.08)),
                seconds: 0.1,
                samples_per_sec: 1000.0,
            })
            .collect(),
        best_epoch: None,
        lowest_trainable: 0,
        cached_features: false,
        dispatches_per_step: 0.0,
        submissions_per_step: 0.0,
        bytes_allocated: 0,
        frozen_storage: headswap::train::Precision::F32,
        frozen_weights: headswap::train::Precision::F32,
        frozen_weights_bytes: 0,
        bytes_exchanged_per_step: 0,
        seconds: 0.1 * epochs as f64,
    }
}

fn demo_report() -> DemoReport {
    let label_names: Vec<String> = ["circle", "square", "triangle", "cross"].iter().map(|s| s.to_string()).collect();
    let mut rows = Vec::new();
    for (s, &size) in [40usize, 150, 600].iter().enumerate() {
        for (m, method) in [HEAD_ONLY, FINE_TUNE_ALL, SCRATCH].into_iter().enumerate() {
            let base = 0.45 + 0.15 * s as f64 - if m == 2 { 0.25 - 0.08 * s as f64 } else { 0.03 * m as f64 };
            let per_label_f1: Vec<f64> = (0..4).map(|l| (base + 0.05 * l as f64).min(1.0)).collect();
            let mean_f1 = Some(per_label_f1.iter().sum::<f64>() / 4.0);
            let epochs = 40 - 10 * s;
            rows.push(DemoRow {
                size,
                method,
                mean_f1,
                per_label_f1: per_label_f1.into_iter().map(Some).collect(),
                seconds: 1.0 + s as f64,
                samples_per_sec: 5000.0,
                train_loss: (0..epochs).map(|e| 0.69 * (-(e as f64) / (8.0 + 4.0 * m as f64)).exp() + 0.1).collect(),
            });
        }
    }
    DemoReport {
        adapter: "test adapter <none> & \"no GPU\"".into(),
        trunk: "dense 256→64 relu".into(),
        trunk_kind: headswap::demo::Trunk::Mlp,
        data: "hand-made".into(),
        task_a_examples: 3000,
        task_a_test_accuracy: 0.93,
        task_a_seconds: 2.0,
        task_a_samples_per_sec: 12000.0,
        task_a_loss: (0..8).map(|e| 2.0 * (-(e as f64) / 3.0).exp() + 0.2).collect(),
        label_names,
        test_examples: 500,
        rows,
    }
}

/// Decodes the PNG at `path` and checks that it has pixels and is not one flat colour.
fn check_png(path: &Path) -> (u32, u32) {
    let img = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).to_rgb8();
    let (w, h) = img.dimensions();
    assert!(w > 0 && h > 0, "{}: empty image", path.display());
    let first = *img.get_pixel(0, 0);
    let differing = img.pixels().filter(|p| **p != first).count();
    assert!(differing > 1000, "{}: only {differing} pixels differ from the background", path.display());
    // Something other than black and white: the data are drawn in colour.
    assert!(img.pixels().any(|p| p[0].abs_diff(p[1]) > 60 || p[1].abs_diff(p[2]) > 60), "{}: no colour", path.display());
    (w, h)
}

/// No temporary file is left behind in `dir`.
fn no_leftovers(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.ends_with(".tmp"), "temporary file left behind: {name}");
    }
}

#[test]
fn training_curves_with_validation_and_f1() {
    let dir = scratch("curves_f1");
    let path = dir.join("curves.png");
    report::training_curves(&path, "fine-tuning on task B", &fit_report(25, true, true)).unwrap();
    let (w, h) = check_png(&path);
    assert!(w >= 600 && h >= 400);
    no_leftovers(&dir);
}

#[test]
fn training_curves_accuracy_without_validation_and_one_epoch() {
    let dir = scratch("curves_acc");
    for (name, report) in [("acc.png", fit_report(12, false, false)), ("one.png", fit_report(1, false, true))] {
        let path = dir.join(name);
        report::training_curves(&path, "pretraining on task A", &report).unwrap();
        check_png(&path);
    }
    // A run with no score at all (and a diverged epoch) still draws its loss.
    let mut bare = fit_report(5, false, false);
    for e in &mut bare.epochs {
        e.train.accuracy = None;
    }
    bare.epochs[3].train.loss = f64::NAN;
    let path = dir.join("bare.png");
    report::training_curves(&path, "", &bare).unwrap();
    check_png(&path);
    no_leftovers(&dir);
}

#[test]
fn label_bars() {
    let dir = scratch("bars");
    let names: Vec<String> = ["digit 2", "digit 3", "digit 5", "digit 7"].iter().map(|s| s.to_string()).collect();
    let path = dir.join("f1.png");
    report::label_f1_bars(&path, "per-label F1", &names, &[Some(0.91), Some(0.5), Some(0.0), None]).unwrap();
    check_png(&path);
    no_leftovers(&dir);
}

#[test]
fn demo_report_writes_charts_and_index() {
    let dir = scratch("demo").join("nested"); // demo_report creates the folder
    let demo = demo_report();
    let paths = report::demo_report(&dir, &demo).unwrap();
    assert_eq!(paths.last().map(|p| p.file_name().unwrap().to_str().unwrap()), Some("index.html"));
    let pngs: Vec<&PathBuf> = paths.iter().filter(|p| p.extension().is_some_and(|e| e == "png")).collect();
    // mean F1 vs size, per-label bars at the smallest and the largest size, loss curves
    assert_eq!(pngs.len(), 4, "{paths:?}");
    for p in &paths {
        assert!(p.is_file(), "{} missing", p.display());
        assert_eq!(p.parent(), Some(dir.as_path()));
    }
    for p in &pngs {
        check_png(p);
    }
    let html = std::fs::read_to_string(dir.join("index.html")).unwrap();
    for p in &pngs {
        let name = p.file_name().unwrap().to_str().unwrap();
        assert!(html.contains(&format!("src=\"{name}\"")), "index.html does not show {name}");
    }
    assert!(html.contains("label_f1_b40.png") && html.contains("label_f1_b600.png"));
    // The table of numbers, with text escaped.
    assert!(html.contains("<table>") && html.contains("0.450") && html.contains("circle"));
    assert!(html.contains("&lt;none&gt; &amp; &quot;no GPU&quot;") && !html.contains("<none>"));
    no_leftovers(&dir);

    // Writing again over the same folder replaces the files.
    assert_eq!(report::demo_report(&dir, &demo).unwrap(), paths);
}

#[test]
fn demo_report_with_one_size() {
    let dir = scratch("demo_one");
    let mut demo = demo_report();
    demo.rows.retain(|r| r.size == 150);
    demo.task_a_loss.clear();
    let paths = report::demo_report(&dir, &demo).unwrap();
    assert_eq!(paths.len(), 4, "{paths:?}"); // one bar chart
    for p in paths.iter().filter(|p| p.extension().is_some_and(|e| e == "png")) {
        check_png(p);
    }
}

#[test]
fn empty_or_mismatched_input_is_an_error() {
    let dir = scratch("errors");
    let empty_fit = FitReport { epochs: Vec::new(), ..fit_report(1, false, false) };
    let r = report::training_curves(&dir.join("x.png"), "t", &empty_fit);
    assert!(matches!(r, Err(Error::InvalidInput(_))), "{r:?}");

    let names = vec!["a".to_string(), "b".to_string()];
    assert!(matches!(report::label_f1_bars(&dir.join("x.png"), "t", &names, &[Some(0.5)]), Err(Error::InvalidInput(_))));
    assert!(matches!(report::label_f1_bars(&dir.join("x.png"), "t", &[], &[]), Err(Error::InvalidInput(_))));

    let mut demo = demo_report();
    demo.rows.clear();
    assert!(matches!(report::demo_report(&dir.join("demo"), &demo), Err(Error::InvalidInput(_))));
    let mut demo = demo_report();
    demo.rows[4].per_label_f1.pop();
    assert!(matches!(report::demo_report(&dir.join("demo"), &demo), Err(Error::InvalidInput(_))));
    let mut demo = demo_report();
    demo.label_names.clear();
    assert!(matches!(report::demo_report(&dir.join("demo"), &demo), Err(Error::InvalidInput(_))));
    assert!(std::fs::read_dir(&dir).unwrap().next().is_none(), "nothing is written for bad input");
}

#[test]
fn unwritable_path_is_an_io_error_naming_it() {
    let dir = scratch("io");
    let missing = dir.join("no such folder").join("curves.png");
    match report::training_curves(&missing, "t", &fit_report(3, true, false)) {
        Err(Error::Io { path, .. }) => assert!(path.contains("no such folder"), "{path}"),
        other => panic!("expected an Io error, got {other:?}"),
    }
    // A file where the report folder should be.
    let file = dir.join("file");
    std::fs::write(&file, b"x").unwrap();
    match report::demo_report(&file, &demo_report()) {
        Err(Error::Io { path, .. }) => assert!(path.contains("file"), "{path}"),
        other => panic!("expected an Io error, got {other:?}"),
    }
}
