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
    assert_eq!(ids(&v), ["T2-cached", "T2-uncached"]);
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

#[test]
fn an_unknown_workload_is_a_usage_error() {
    let out = bench(&["--only", "t1,t4"], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let last = err.lines().last().unwrap_or("");
    assert!(last.starts_with("error: unknown benchmark \"t4\""), "{err}");
    assert_eq!(devices_opened(&out), 0);
}
