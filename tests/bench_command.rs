//! `headswap bench` as the command line runs it, at the smoke size (`HEADSWAP_BENCH_SMOKE=1`:
//! tiny shapes, one repetition; the numbers mean nothing, the plumbing is what is tested).
use std::process::{Command, Output};

fn bench(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_headswap"));
    cmd.arg("bench").args(args).env("HEADSWAP_BENCH_SMOKE", "1").env("RUST_LOG", "headswap=info");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run headswap")
}

fn report(out: &Output) -> serde_json::Value {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stderr: {err}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// How many devices the run opened: the library logs one line per `Gpu`.
fn devices_opened(out: &Output) -> usize {
    String::from_utf8_lossy(&out.stderr).matches("headswap device ready").count()
}

fn ids(v: &serde_json::Value) -> Vec<String> {
    v["training"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap().to_string()).collect()
}

#[test]
fn several_workloads_run_one_process_each_and_merge_into_one_report() {
    let path = std::env::temp_dir().join(format!("headswap-bench-{}.json", std::process::id()));
    let out = bench(&["--only", "t2,k1", "--json", "--json-out", path.to_str().unwrap()], &[]);
    let v = report(&out);
    // one device per workload process, none in the parent
    assert_eq!(devices_opened(&out), 2, "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(v["k1"].as_array().unwrap().len(), 4);
    assert!(v["k1"].as_array().unwrap().iter().all(|k| k["check"]["passed"] == true && k["gpu"]["gflops"].as_f64().unwrap() > 0.0));
    assert_eq!(ids(&v), ["T2-cached", "T2-uncached", "T2-cached-f16"]);
    // the f16 cache holds fewer bytes than the f32 one, measured in the same run
    let bytes = |id: &str| v["training"].as_array().unwrap().iter().find(|t| t["id"] == id).unwrap()["bytes_allocated"].as_u64().unwrap();
    assert!(bytes("T2-cached-f16") < bytes("T2-cached"), "{v}");
    assert_eq!(v["scale"], "smoke");
    assert!(v["notes"][0].as_str().unwrap().contains("fresh process"), "{}", v["notes"][0]);
    let written: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(written, v);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn one_process_for_all_when_isolation_is_off() {
    let out = bench(&["--only", "t3,k1", "--json"], &[("HEADSWAP_BENCH_ISOLATE", "0")]);
    let v = report(&out);
    assert_eq!(devices_opened(&out), 1);
    assert_eq!(v["k1"].as_array().unwrap().len(), 4);
    assert_eq!(ids(&v), ["T3"]);
    assert!(v["notes"][0].as_str().unwrap().contains("this one process"), "{}", v["notes"][0]);
}

#[test]
fn the_table_has_every_workload_asked_for() {
    let out = bench(&["--only", "c1,t1"], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stderr: {err}");
    let table = String::from_utf8_lossy(&out.stdout);
    for id in ["T1-sgd", "T1-adam", "C1-pretrain", "C1-head", "C1-all"] {
        assert!(table.lines().any(|l| l.starts_with(id)), "no {id} row in:\n{table}");
    }
    assert!(!table.contains("K1  f32 matmul"), "K1 was not asked for:\n{table}");
}

/// `--only c2-64`: C2's small rows alone (the f32 features and the fine-tune step, with its
/// profile), at the smoke size.
#[test]
fn c2_64_runs_only_the_small_rows() {
    let v = report(&bench(&["--only", "c2-64", "--json"], &[]));
    let models = v["models"].as_array().unwrap();
    let ids: Vec<&str> = models.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["C2-features-32", "C2-finetune-32"], "{v}");
    for m in models {
        assert!(m["images_per_sec"].as_f64().unwrap() > 0.0, "{m}");
    }
    assert!(models[1]["profile"]["kernels"].as_array().is_some_and(|k| !k.is_empty()), "{v}");
}

/// C2 (ResNet-18) at the smoke size: its three rows, each with a positive rate, the bytes of the
/// network (its parameters and running statistics: ResNet-18's 11.2 M parameters at any image
/// size) and of the run, a fine-tune profile, in the JSON and the table; and not run by default.
#[test]
fn c2_runs_resnet18_features_and_a_finetune_step() {
    let v = report(&bench(&["--only", "c2", "--json"], &[]));
    let models = v["models"].as_array().unwrap();
    let ids: Vec<&str> = models.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["C2-features-40", "C2-features-32", "C2-features-32-f16", "C2-finetune-32"], "{v}");
    assert!(v["training"].as_array().unwrap().is_empty());
    // torchvision's resnet18 with a 10-class fc: 11,181,642 parameters; 9,600 BN channels ×2
    let resnet18_bytes = 4 * (11_181_642 + 2 * 4_800);
    // the f16 row stores the frozen trunk (all but the fc's 5,130 values) at 2 bytes a value
    let f16_trunk_bytes = 2 * (11_181_642 - 5_130) + 4 * (5_130 + 2 * 4_800);
    for m in models {
        assert_eq!(m["batch"], 2, "{m}");
        assert!(m["images_per_sec"].as_f64().unwrap() > 0.0, "{m}");
        let net = if m["id"] == "C2-features-32-f16" { f16_trunk_bytes } else { resnet18_bytes };
        assert_eq!(m["network_bytes"], net, "{m}");
        let run = m["run_bytes"].as_u64().unwrap();
        // the fine-tune holds at least its images; the feature runs let them go once cached
        let least = if m["id"] == "C2-finetune-32" { 4 * 4 * 3 * 32 * 32 } else { 1 };
        assert!(run >= least, "{m}");
        assert_eq!(m["device_bytes"].as_u64().unwrap(), net + run);
    }
    // the same features cached in f16 hold fewer bytes
    assert!(models[2]["run_bytes"].as_u64() < models[1]["run_bytes"].as_u64(), "{v}");
    let ft = &models[3];
    assert!(ft["final_loss"].as_f64().unwrap().is_finite(), "{ft}");
    let p = &ft["profile"];
    let kernels: Vec<&str> = p["kernels"].as_array().unwrap().iter().map(|k| k["kernel"].as_str().unwrap()).collect();
    // a training step: the convolutions' products, BatchNorm in training mode, the SGD update
    for k in ["bn_train_stats", "bn_param_grads_train", "sgd_momentum"] {
        assert!(kernels.contains(&k), "no {k} in {kernels:?}");
    }
    assert!(kernels.iter().any(|k| k.starts_with("matmul_")), "{kernels:?}");
    assert!(models[0]["profile"].is_null());

    let out = bench(&["--only", "c2"], &[]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for id in ["C2-features-40", "C2-features-32", "C2-features-32-f16", "C2-finetune-32"] {
        assert!(table.lines().any(|l| l.starts_with(id)), "no {id} row in:\n{table}");
    }
}

#[test]
fn an_unknown_workload_is_a_usage_error() {
    let out = bench(&["--only", "t1,t4"], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let last = err.lines().last().unwrap_or("");
    assert!(last.starts_with("error: unknown benchmark \"t4\""), "{err}");
    assert_eq!(devices_opened(&out), 0);
}

/// `headswap bench kernel matmul`: the user's shape and form, every variant that can launch here
/// checked against the float64 reference and timed, the autotuner's pick among them.
#[test]
fn one_kernel_at_the_users_shape_checks_and_times_every_variant() {
    for form in ["nn", "nt", "tn"] {
        let v = report(&bench(&["kernel", "matmul", "--shape", "33x7x127", "--form", form, "--json"], &[]));
        assert_eq!((v["m"].as_u64(), v["n"].as_u64(), v["k"].as_u64()), (Some(33), Some(7), Some(127)));
        assert_eq!(v["form"].as_str().unwrap().to_lowercase(), form);
        let variants = v["variants"].as_array().unwrap();
        assert_eq!(variants.len(), 9);
        let ran: Vec<_> = variants.iter().filter(|r| r["skipped"].is_null()).collect();
        assert!(!ran.is_empty());
        for r in &ran {
            assert_eq!(r["check"]["passed"], true, "{r}");
            assert_eq!(r["check"]["checked"], 33 * 7);
            assert!(r["gflops"].as_f64().unwrap() > 0.0, "{r}");
        }
        let pick = v["autotuner_pick"].as_str().expect("the autotuner's pick is one of the variants");
        assert!(ran.iter().any(|r| r["variant"] == pick && r["picked_by_autotuner"] == true), "{v}");
    }
    // one variant by name
    let v = report(&bench(&["kernel", "matmul", "--shape", "1x1x1", "--variant", "reg4x4", "--json"], &[]));
    assert_eq!(v["variants"].as_array().unwrap().len(), 1);
    assert_eq!(v["variants"][0]["check"]["passed"], true);
    // a table without --json
    let out = bench(&["kernel", "matmul", "--shape", "8x8x8"], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("the autotuner's pick") && text.contains("passed"), "{text}");
}

/// `--storage f16a|f16b|f16ab`: each variant also runs with those operands stored in f16, checked
/// against the float64 reference on the f16 values, and timed beside f32.
#[test]
fn one_kernel_with_f16_operands_checks_and_times_them_beside_f32() {
    for (storage, form) in [("f16a", "nn"), ("f16b", "nt"), ("f16ab", "tn")] {
        let v = report(&bench(&["kernel", "matmul", "--shape", "7x33x127", "--form", form, "--storage", storage, "--json"], &[]));
        let ran: Vec<_> = v["variants"].as_array().unwrap().iter().filter(|r| r["skipped"].is_null()).collect();
        assert!(!ran.is_empty());
        for r in &ran {
            assert_eq!(r["f16"]["storage"], storage, "{r}");
            assert_eq!(r["f16"]["check"]["passed"], true, "{r}");
            assert_eq!(r["f16"]["check"]["checked"], 7 * 33);
            assert!(r["f16"]["gflops"].as_f64().unwrap() > 0.0 && r["gflops"].as_f64().unwrap() > 0.0, "{r}");
        }
    }
    let v = report(&bench(&["kernel", "matmul", "--shape", "8x8x8", "--json"], &[]));
    assert!(v["variants"][0]["f16"].is_null(), "f32 only by default");
}

#[test]
fn a_bad_kernel_request_is_a_usage_error() {
    for (args, needle) in [
        (&["kernel", "matmul", "--shape", "3x0x2"][..], "MxNxK"),
        (&["kernel", "matmul", "--shape", "64x64"][..], "MxNxK"),
        (&["kernel", "matmul", "--shape", "8x8x8", "--form", "tt"][..], "nn, nt or tn"),
        (&["kernel", "matmul", "--shape", "8x8x8", "--variant", "fastest"][..], "one of sg32x8"),
        (&["kernel", "conv2d", "--shape", "8x8x8", "--filters", "4", "--kernel", "3"][..], "NxCxHxW"),
        (&["kernel", "conv2d", "--shape", "1x2x8x8", "--kernel", "3"][..], "--filters O and --kernel K"),
        (&["kernel", "conv2d", "--shape", "1x2x8x8", "--filters", "4", "--kernel", "3", "--variant", "winograd"][..], "direct or im2col"),
        (&["kernel", "matmul", "--shape", "8x8x8", "--filters", "4"][..], "conv2d's"),
        (&["kernel", "matmul", "--shape", "8x8x8", "--groups", "2"][..], "conv2d's"),
        (&["kernel", "conv2d", "--shape", "1x6x8x8", "--filters", "4", "--kernel", "3", "--groups", "4"][..], "divide the 6 input"),
        (&["kernel", "fft", "--shape", "8x8x8"][..], "fft"),
        (&["kernel", "matmul", "--shape", "8x8x8", "--storage", "bf16"][..], "f16a, f16b or f16ab"),
        (&["kernel", "conv2d", "--shape", "1x2x8x8", "--filters", "4", "--kernel", "3", "--storage", "f16a"][..], "matmul's"),
    ] {
        let out = bench(args, &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.lines().last().unwrap_or("").starts_with("error: ") && err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn one_convolution_at_the_users_shape_checks_and_times_both_algorithms() {
    let v = report(&bench(
        &["kernel", "conv2d", "--shape", "3x5x13x11", "--filters", "7", "--kernel", "3", "--stride", "2", "--padding", "1", "--json"],
        &[],
    ));
    assert_eq!(v["y"], serde_json::json!([3, 7, 7, 6]));
    let algos = v["variants"].as_array().unwrap();
    assert_eq!(algos.len(), 2);
    for a in algos {
        assert_eq!(a["check"]["passed"], true, "{a}");
        assert_eq!(a["check"]["checked"], 3 * 7 * 7 * 6);
        assert!(a["gflops"].as_f64().unwrap() > 0.0);
    }
    let pick = v["autotuner_pick"].as_str().unwrap();
    assert!(algos.iter().any(|a| a["variant"] == pick && a["picked_by_autotuner"] == true), "{v}");
}

#[test]
fn a_depthwise_convolution_checks_and_times_the_direct_form() {
    let v = report(&bench(
        &["kernel", "conv2d", "--shape", "2x6x13x11", "--filters", "6", "--kernel", "3", "--padding", "1", "--groups", "6", "--json"],
        &[],
    ));
    assert_eq!((v["w"].clone(), v["groups"].clone()), (serde_json::json!([6, 1, 3, 3]), serde_json::json!(6)));
    // im2col has no groups: the direct form alone, checked at every output
    let algos = v["variants"].as_array().unwrap();
    assert_eq!(algos.len(), 1, "{v}");
    assert_eq!((algos[0]["variant"].as_str(), algos[0]["check"]["passed"].as_bool()), (Some("direct"), Some(true)), "{v}");
    assert_eq!(algos[0]["check"]["checked"], 2 * 6 * 13 * 11);
    assert_eq!(v["autotuner_pick"], "direct");
}

/// DP runs this binary under `mpirun -np N`: built with `distributed`, its rows (T1 plain and
/// overlapped at N = 2, T2, and both plain and accumulating 4 micro-batches at N = 2) with the
/// bytes each rank sends (per step: the same with accumulation); without the feature, `--only dp` is
/// one line saying why it cannot run, and a non-zero exit.
#[test]
fn the_data_parallel_workload_runs_under_mpirun_or_says_why_not() {
    if !cfg!(feature = "distributed") {
        let out = bench(&["--only", "dp"], &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        let last = err.lines().last().unwrap_or("");
        assert!(last.starts_with("error: the dp workload cannot run: this headswap was built without data-parallel training"), "{err}");
        return;
    }
    let v = report(&bench(&["--only", "dp", "--json"], &[]));
    let rows = v["data_parallel"].as_array().unwrap();
    let key = |r: &serde_json::Value| {
        let id = r["id"].as_str().unwrap().to_string();
        (id, r["ranks"].as_u64().unwrap(), r["overlap"].as_bool().unwrap(), r["accumulate"].as_u64().unwrap(), r["batch"].as_u64().unwrap())
    };
    let keys: Vec<_> = rows.iter().map(key).collect();
    let want = [
        ("T1-dp", 1, false, 1, 64),
        ("T1-dp", 2, false, 1, 64),
        ("T1-dp", 2, true, 1, 64),
        ("T2-dp", 1, false, 1, 64),
        ("T2-dp", 2, false, 1, 64),
        // accumulation at 32 rows per rank per pass: plain steps of 64, then 4 passes per step
        ("T1-dp", 2, false, 1, 64),
        ("T1-dp", 2, false, 4, 256),
        ("T2-dp", 2, false, 1, 64),
        ("T2-dp", 2, false, 4, 256),
    ];
    assert_eq!(keys, want.map(|(i, n, o, k, b)| (i.to_string(), n, o, k, b)).to_vec());
    for r in rows {
        assert!(r["ms_per_step"].as_f64().unwrap() > 0.0, "{r}");
        let bytes = r["bytes_per_step"].as_u64().unwrap();
        // alone nothing is sent; T1 sends every layer's gradients, T2 its head's alone
        match (r["id"].as_str().unwrap(), r["ranks"].as_u64().unwrap()) {
            (_, 1) => assert_eq!(bytes, 0, "{r}"),
            ("T1-dp", _) => assert!(bytes > 2_000_000, "{r}"),
            _ => assert!(bytes > 0 && bytes < 10_000, "{r}"),
        }
    }
}
