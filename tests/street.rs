//! The multi-task street demo end to end (`headswap demo --street --quick`'s library run): every
//! setup of every trunk reported, each learning its tasks past what the training set's priors
//! score, the costs consistent with one shared trunk against three, and the charts written.
mod common;
use common::gpu;
use headswap::demo::street::{self, COUNT_ONLY, MULTI_TASK, OBJECTS_ONLY, SCENE_ONLY, SEPARATE, SETUPS, StreetConfig};
use headswap::nn::LayerSpec;
use std::process::Command;

#[test]
fn quick_street_demo_compares_one_multi_task_network_with_one_per_task() {
    let gpu = gpu();
    let cfg = StreetConfig::quick(7);
    let report = street::run(&gpu, &cfg, &mut |l| eprintln!("{l}")).unwrap();
    eprintln!("{report}");
    assert_eq!(report.rows.len(), cfg.trunks.len() * SETUPS.len());
    let b = &report.baseline;
    // the priors: "present" everywhere scores F1 2p/(1+p) > 0; a third of the scenes per type
    assert!(b.objects_f1.is_some_and(|f| f > 0.3) && b.scene_accuracy.is_some_and(|a| (0.25..0.45).contains(&a)), "{b:?}");

    let steps = cfg.epochs * cfg.train.div_ceil(cfg.batch_size);
    for spec in &cfg.trunks {
        let row = |setup| report.row(&spec.name, setup).unwrap_or_else(|| panic!("no {setup:?} row for the {} trunk", spec.name));
        let (mtl, objects, scene, count, separate) = (row(MULTI_TASK), row(OBJECTS_ONLY), row(SCENE_ONLY), row(COUNT_ONLY), row(SEPARATE));

        // Costs: the three single-task networks hold the trunk three times, the multi-task one once.
        let layers =
            headswap::demo::cnn_trunk(&[1, cfg.size, cfg.size], &spec.channels, &spec.dense, headswap::kernels::Activation::Relu).unwrap();
        let trunk_params: usize = layers.iter().map(|l| l.weight_shape().map_or(0, |s| s.iter().product::<usize>()) + l.bias_len()).sum();
        let trunk_macs: usize = layers.iter().map(LayerSpec::multiply_adds).sum();
        assert!(trunk_params > 0 && trunk_macs > 0);
        assert_eq!((mtl.networks, separate.networks), (1, 3));
        assert_eq!(separate.params, objects.params + scene.params + count.params);
        assert_eq!(separate.params, mtl.params + 2 * trunk_params, "{} trunk", spec.name);
        assert_eq!(separate.multiply_adds, mtl.multiply_adds + 2 * trunk_macs, "{} trunk", spec.name);
        // the heads, each dense on the trunk's last layer: 4 + 3 + 1 outputs
        let last = *spec.dense.last().unwrap();
        assert_eq!(mtl.params, trunk_params + (last + 1) * 8);
        assert_eq!(mtl.multiply_adds, trunk_macs + last * 8);
        assert_eq!((mtl.steps, separate.steps), (steps, 3 * steps));
        assert_eq!(separate.examples_trained, 3 * cfg.epochs * cfg.train);
        assert!(mtl.seconds > 0.0 && (separate.seconds - objects.seconds - scene.seconds - count.seconds).abs() < 1e-9);
        // every network trained each of its heads for every epoch, and the loss fell
        for r in [mtl, objects, scene, count] {
            assert_eq!(r.head_loss.len(), if r.setup == MULTI_TASK { 3 } else { 1 });
            for (name, loss) in &r.head_loss {
                assert_eq!(loss.len(), cfg.epochs);
                assert!(loss.iter().all(|l| l.is_finite()) && loss[cfg.epochs - 1] < loss[0], "{} {} {name}: {loss:?}", spec.name, r.setup);
            }
        }

        // Quality: the separate row reads each task off its own network; single-task rows score
        // their task only.
        assert_eq!(separate.quality.objects_f1, objects.quality.objects_f1);
        assert_eq!(separate.quality.scene_accuracy, scene.quality.scene_accuracy);
        assert_eq!(separate.quality.count_mae, count.quality.count_mae);
        assert!(objects.quality.scene_accuracy.is_none() && scene.quality.count_mae.is_none() && count.quality.objects_f1.is_none());
        assert_eq!(mtl.quality.label_f1.len(), 4);
        // Every network learns from the image: better than the priors at what it was trained for.
        for (setup, q) in [(MULTI_TASK, &mtl.quality), (SEPARATE, &separate.quality)] {
            let what = format!("{} trunk, {setup}: {q:?} vs the priors' {b:?}", spec.name);
            assert!(q.scene_accuracy.unwrap() > b.scene_accuracy.unwrap() + 0.1, "{what}");
            assert!(q.count_mae.unwrap() < b.count_mae.unwrap() * 0.9, "{what}");
            assert!(q.count_rmse.unwrap() < b.count_rmse.unwrap() * 0.9, "{what}");
            if spec.name == "large" {
                assert!(q.objects_f1.unwrap() > b.objects_f1.unwrap() + 0.2, "{what}");
            }
        }
    }

    // The table has every row; the JSON every number; the report every chart.
    let text = report.to_string();
    for r in &report.rows {
        assert!(text.lines().any(|l| l.starts_with(&r.trunk) && l.contains(r.setup)), "no line for {} {}:\n{text}", r.trunk, r.setup);
    }
    assert!(text.contains("no image: training-set priors") && text.contains(&report.adapter));
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(json["results"].as_array().unwrap().len(), report.rows.len());
    assert_eq!(json["results"][0]["params"], serde_json::json!(report.rows[0].params));
    let dir = std::env::temp_dir().join(format!("headswap-street-{}", std::process::id()));
    let files = headswap::report::street_report(&dir, &report).unwrap();
    assert_eq!(files.len(), 7);
    for f in &files {
        assert!(std::fs::metadata(f).unwrap().len() > 500, "{}", f.display());
    }
    let html = std::fs::read_to_string(files.last().unwrap()).unwrap();
    for setup in SETUPS {
        assert!(html.contains(setup), "index.html lacks {setup}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_street_demo_refuses_the_transfer_demos_options() {
    for extra in [&["--data", "digits"][..], &["--trunk", "cnn"], &["--sizes", "40"]] {
        let out = Command::new(env!("CARGO_BIN_EXE_headswap")).args(["demo", "--street"]).args(extra).output().unwrap();
        assert!(!out.status.success(), "{extra:?} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--street") && !err.contains("panicked"), "{err}");
    }
}

/// The same seed gives the same networks: every quality figure and loss curve is bit-identical
/// on a rerun (a small run: one trunk, a few batches). Bad settings are typed errors.
#[test]
fn a_rerun_with_the_same_seed_gives_the_same_numbers() {
    let gpu = gpu();
    let mut cfg = StreetConfig { train: 96, test: 64, epochs: 2, ..StreetConfig::quick(3) };
    cfg.trunks.truncate(1);
    let run = |cfg: &StreetConfig| street::run(&gpu, cfg, &mut |_| {}).unwrap();
    let (a, b) = (run(&cfg), run(&cfg));
    let numbers = |r: &street::StreetReport| -> Vec<String> {
        r.rows.iter().map(|row| format!("{} {:?} {:?} {} {}", row.setup, row.quality, row.head_loss, row.params, row.steps)).collect()
    };
    assert_eq!(numbers(&a), numbers(&b));
    assert_eq!(a.baseline, b.baseline);
    let other = run(&StreetConfig { seed: 4, ..cfg.clone() });
    assert_ne!(numbers(&a), numbers(&other), "another seed, other data and weights");

    for bad in [
        StreetConfig { count_weight: 0.0, ..cfg.clone() },
        StreetConfig { count_weight: f32::NAN, ..cfg.clone() },
        StreetConfig { trunks: vec![], ..cfg.clone() },
        StreetConfig { epochs: 0, ..cfg.clone() },
        StreetConfig { unknown: 2.0, ..cfg.clone() },
    ] {
        let err = street::run(&gpu, &bad, &mut |_| {}).unwrap_err();
        assert!(matches!(err, headswap::Error::InvalidInput(_)), "{err:?}");
    }
}
