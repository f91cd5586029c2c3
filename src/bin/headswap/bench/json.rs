//! The report as JSON (`headswap bench --json`), and read back: a run of several workloads runs
//! each in its own process (see the module docs of `bench`) and merges their JSON reports.

use super::Scale;
use super::table::{
    BenchReport, Check, CpuTrainResult, DispatchTime, DpResult, KernelTime, MatmulResult, ModelResult, Profile, Timed, TrainResult,
};
use serde_json::{Value, json};

fn timed_json(t: &Option<Timed>) -> Value {
    match t {
        Some(t) => json!({ "runs": t.runs, "median_ms": t.median_ms, "min_ms": t.min_ms, "gflops": t.gflops }),
        None => Value::Null,
    }
}

fn check_json(c: &Check) -> Value {
    let finite = |v: f64| if v.is_finite() { json!(v) } else { Value::Null };
    json!({ "checked": c.checked, "total": c.total, "max_abs_err": finite(c.max_abs_err), "worst_over_tolerance": finite(c.worst), "passed": c.passed })
}

fn profile_json(p: &Profile) -> Value {
    json!({
        "timing": p.timing,
        "timing_note": p.timing_note,
        "reps": p.reps,
        "batch": p.batch,
        "dispatches": p.dispatches,
        "step_ms": p.step_ms,
        "pipelined_step_ms": p.pipelined_step_ms,
        "kernel_sum_ms": p.kernel_sum_ms,
        "step_over_kernel_sum": p.overhead_ratio,
        "kernels": p.kernels.iter().map(|k| json!({ "kernel": k.kernel, "calls": k.calls, "total_ms": k.total_ms })).collect::<Vec<_>>(),
        "dispatches_timed": p.per_dispatch.iter().map(|d| json!({ "index": d.index, "kernel": d.kernel, "detail": d.detail, "ms": d.ms })).collect::<Vec<_>>(),
    })
}

impl BenchReport {
    /// Everything, as one JSON object.
    pub fn to_json(&self) -> String {
        let matmul: Vec<Value> = self
            .matmul
            .iter()
            .map(|r| {
                json!({
                    "name": r.name, "form": r.form, "m": r.m, "n": r.n, "k": r.k,
                    "check": check_json(&r.check), "batch": r.batch, "gpu": timed_json(&r.gpu),
                    "cpu_check": check_json(&r.cpu_check), "cpu_gemm": timed_json(&r.cpu), "gpu_over_cpu": r.ratio(),
                })
            })
            .collect();
        let training: Vec<Value> = self
            .training
            .iter()
            .map(|t| {
                json!({
                    "id": t.id, "name": t.name, "n": t.n, "batch": t.batch, "epochs": t.epochs,
                    "samples_per_sec": t.samples_per_sec, "epoch_samples_per_sec": t.epoch_samples_per_sec,
                    "end_to_end_samples_per_sec": t.end_to_end_samples_per_sec, "final_loss": t.final_loss,
                    "dispatches_per_step": t.dispatches_per_step, "submissions_per_step": t.submissions_per_step,
                    "bytes_allocated": t.bytes_allocated, "cached_features": t.cached_features,
                    "cpu_baseline": t.cpu.as_ref().map(|c| json!({
                        "samples_per_sec": c.samples_per_sec, "epoch_samples_per_sec": c.epoch_samples_per_sec,
                        "end_to_end_samples_per_sec": c.end_to_end_samples_per_sec, "final_loss": c.final_loss,
                    })),
                    "gpu_over_cpu": t.ratio(),
                    "profile": t.profile.as_ref().map(profile_json),
                })
            })
            .collect();
        let models: Vec<Value> = self
            .models
            .iter()
            .map(|m| {
                json!({
                    "id": m.id, "name": m.name, "image": m.image, "batch": m.batch, "n": m.n, "runs": m.runs,
                    "images_per_sec": m.images_per_sec, "run_images_per_sec": m.run_images_per_sec,
                    "network_bytes": m.network_bytes, "run_bytes": m.run_bytes, "device_bytes": m.device_bytes(),
                    "dispatches_per_step": m.dispatches_per_step, "final_loss": m.final_loss,
                    "profile": m.profile.as_ref().map(profile_json),
                })
            })
            .collect();
        let data_parallel: Vec<Value> = self
            .data_parallel
            .iter()
            .map(|d| {
                json!({
                    "id": d.id, "name": d.name, "ranks": d.ranks, "overlap": d.overlap, "accumulate": d.accumulate, "n": d.n, "batch": d.batch,
                    "epochs": d.epochs, "ms_per_step": d.ms_per_step, "run_ms_per_step": d.run_ms_per_step,
                    "samples_per_sec": d.samples_per_sec, "bytes_per_step": d.bytes_per_step,
                    "submissions_per_step": d.submissions_per_step,
                })
            })
            .collect();
        let v = json!({
            "date": self.date,
            "adapter": { "name": self.adapter, "backend": self.backend, "device_type": self.device_type, "driver": self.driver, "driver_info": self.driver_info, "timestamp_queries": self.timestamp_queries },
            "scale": self.scale.name(),
            "seed": self.seed,
            "cpu_threads": self.cpu_threads,
            "notes": self.notes,
            "k1": matmul,
            "training": training,
            "models": models,
            "data_parallel": data_parallel,
            "t2_cached_over_uncached": self.t2_cache_speedup().map(|(a, b)| json!({ "median_epochs": a, "end_to_end": b })),
            "seconds": self.seconds,
        });
        serde_json::to_string_pretty(&v).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// Reads back what [`BenchReport::to_json`] wrote. Numbers JSON cannot hold come back as
    /// NaN (a failed check's error as infinity, as it was).
    pub fn from_json(text: &str) -> Result<BenchReport, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let r = Reader(&v);
        let adapter = r.get("adapter")?;
        let scale = match r.str("scale")?.as_str() {
            "full" => Scale::Full,
            "quick" => Scale::Quick,
            "smoke" => Scale::Smoke,
            other => return Err(format!("unknown scale {other:?}")),
        };
        Ok(BenchReport {
            date: r.str("date")?,
            adapter: adapter.str("name")?,
            backend: adapter.str("backend")?,
            device_type: adapter.str("device_type")?,
            driver: adapter.str("driver")?,
            driver_info: adapter.str("driver_info")?,
            timestamp_queries: adapter.bool("timestamp_queries")?,
            scale,
            seed: r.u64("seed")?,
            cpu_threads: r.usize("cpu_threads")?,
            notes: r
                .list("notes")?
                .iter()
                .map(|n| n.0.as_str().map(str::to_string).ok_or("a note is not text"))
                .collect::<Result<_, _>>()?,
            matmul: r.list("k1")?.iter().map(matmul_from).collect::<Result<_, _>>()?,
            training: r.list("training")?.iter().map(training_from).collect::<Result<_, _>>()?,
            // reports written before C2 have no "models"
            models: match r.opt("models") {
                Some(_) => r.list("models")?.iter().map(model_from).collect::<Result<_, _>>()?,
                None => Vec::new(),
            },
            // nor before DP "data_parallel"
            data_parallel: match r.opt("data_parallel") {
                Some(_) => r.list("data_parallel")?.iter().map(dp_from).collect::<Result<_, _>>()?,
                None => Vec::new(),
            },
            seconds: r.f64("seconds")?,
        })
    }
}

/// A JSON object's fields, each missing or mistyped one an error that names it.
#[derive(Clone, Copy)]
struct Reader<'a>(&'a Value);

impl<'a> Reader<'a> {
    fn get(self, key: &str) -> Result<Reader<'a>, String> {
        self.0.get(key).map(Reader).ok_or_else(|| format!("no {key:?}"))
    }
    fn opt(self, key: &str) -> Option<Reader<'a>> {
        self.0.get(key).filter(|v| !v.is_null()).map(Reader)
    }
    fn str(self, key: &str) -> Result<String, String> {
        self.get(key)?.0.as_str().map(str::to_string).ok_or_else(|| format!("{key:?} is not text"))
    }
    fn bool(self, key: &str) -> Result<bool, String> {
        self.get(key)?.0.as_bool().ok_or_else(|| format!("{key:?} is not true or false"))
    }
    fn u64(self, key: &str) -> Result<u64, String> {
        self.get(key)?.0.as_u64().ok_or_else(|| format!("{key:?} is not a count"))
    }
    fn usize(self, key: &str) -> Result<usize, String> {
        Ok(self.u64(key)? as usize)
    }
    /// null (what serde_json writes for NaN and infinities) reads as `null_as`.
    fn f64_or(self, key: &str, null_as: f64) -> Result<f64, String> {
        let v = self.get(key)?.0;
        if v.is_null() { Ok(null_as) } else { v.as_f64().ok_or_else(|| format!("{key:?} is not a number")) }
    }
    fn f64(self, key: &str) -> Result<f64, String> {
        self.f64_or(key, f64::NAN)
    }
    fn list(self, key: &str) -> Result<Vec<Reader<'a>>, String> {
        Ok(self.get(key)?.0.as_array().ok_or_else(|| format!("{key:?} is not a list"))?.iter().map(Reader).collect())
    }
    fn f64s(self, key: &str) -> Result<Vec<f64>, String> {
        self.list(key)?
            .iter()
            .map(|v| if v.0.is_null() { Ok(f64::NAN) } else { v.0.as_f64().ok_or_else(|| format!("{key:?} holds a non-number")) })
            .collect()
    }
}

fn check_from(r: Reader) -> Result<Check, String> {
    Ok(Check {
        checked: r.usize("checked")?,
        total: r.usize("total")?,
        max_abs_err: r.f64_or("max_abs_err", f64::INFINITY)?,
        worst: r.f64_or("worst_over_tolerance", f64::INFINITY)?,
        passed: r.bool("passed")?,
    })
}

fn timed_from(r: Option<Reader>) -> Result<Option<Timed>, String> {
    let Some(r) = r else { return Ok(None) };
    Ok(Some(Timed { runs: r.usize("runs")?, median_ms: r.f64("median_ms")?, min_ms: r.f64("min_ms")?, gflops: r.f64("gflops")? }))
}

fn matmul_from(r: &Reader) -> Result<MatmulResult, String> {
    let r = *r;
    Ok(MatmulResult {
        name: r.str("name")?,
        form: r.str("form")?,
        m: r.usize("m")?,
        n: r.usize("n")?,
        k: r.usize("k")?,
        check: check_from(r.get("check")?)?,
        batch: r.usize("batch")?,
        gpu: timed_from(r.opt("gpu"))?,
        cpu_check: check_from(r.get("cpu_check")?)?,
        cpu: timed_from(r.opt("cpu_gemm"))?,
    })
}

fn profile_from(r: Reader) -> Result<Profile, String> {
    Ok(Profile {
        timing: r.str("timing")?,
        timing_note: r.str("timing_note")?,
        reps: r.usize("reps")?,
        batch: r.usize("batch")?,
        dispatches: r.usize("dispatches")?,
        step_ms: r.f64("step_ms")?,
        pipelined_step_ms: r.f64("pipelined_step_ms")?,
        kernel_sum_ms: r.f64("kernel_sum_ms")?,
        overhead_ratio: r.f64("step_over_kernel_sum")?,
        kernels: r
            .list("kernels")?
            .into_iter()
            .map(|k| Ok(KernelTime { kernel: k.str("kernel")?, calls: k.usize("calls")?, total_ms: k.f64("total_ms")? }))
            .collect::<Result<_, String>>()?,
        per_dispatch: r
            .list("dispatches_timed")?
            .into_iter()
            .map(|d| Ok(DispatchTime { index: d.usize("index")?, kernel: d.str("kernel")?, detail: d.str("detail")?, ms: d.f64("ms")? }))
            .collect::<Result<_, String>>()?,
    })
}

fn training_from(r: &Reader) -> Result<TrainResult, String> {
    let r = *r;
    let cpu = match r.opt("cpu_baseline") {
        None => None,
        Some(c) => Some(CpuTrainResult {
            samples_per_sec: c.f64("samples_per_sec")?,
            epoch_samples_per_sec: c.f64s("epoch_samples_per_sec")?,
            end_to_end_samples_per_sec: c.f64("end_to_end_samples_per_sec")?,
            final_loss: c.f64("final_loss")?,
        }),
    };
    Ok(TrainResult {
        id: r.str("id")?,
        name: r.str("name")?,
        n: r.usize("n")?,
        batch: r.usize("batch")?,
        epochs: r.usize("epochs")?,
        samples_per_sec: r.f64("samples_per_sec")?,
        epoch_samples_per_sec: r.f64s("epoch_samples_per_sec")?,
        end_to_end_samples_per_sec: r.f64("end_to_end_samples_per_sec")?,
        final_loss: r.f64("final_loss")?,
        dispatches_per_step: r.f64("dispatches_per_step")?,
        submissions_per_step: r.f64("submissions_per_step")?,
        bytes_allocated: r.u64("bytes_allocated")?,
        cached_features: r.bool("cached_features")?,
        cpu,
        profile: r.opt("profile").map(profile_from).transpose()?,
    })
}

fn dp_from(r: &Reader) -> Result<DpResult, String> {
    let r = *r;
    Ok(DpResult {
        id: r.str("id")?,
        name: r.str("name")?,
        ranks: r.usize("ranks")?,
        overlap: r.bool("overlap")?,
        // reports from before gradient accumulation ran every pass as a step
        accumulate: r.opt("accumulate").map_or(Ok(1), |a| a.0.as_u64().map(|k| k as usize).ok_or("\"accumulate\" is not a count"))?,
        n: r.usize("n")?,
        batch: r.usize("batch")?,
        epochs: r.usize("epochs")?,
        ms_per_step: r.f64("ms_per_step")?,
        run_ms_per_step: r.f64s("run_ms_per_step")?,
        samples_per_sec: r.f64("samples_per_sec")?,
        bytes_per_step: r.u64("bytes_per_step")?,
        submissions_per_step: r.f64_or("submissions_per_step", f64::NAN)?,
    })
}

fn model_from(r: &Reader) -> Result<ModelResult, String> {
    let r = *r;
    let opt_f64 = |key: &str| r.opt(key).map(|v| v.0.as_f64().ok_or_else(|| format!("{key:?} is not a number"))).transpose();
    Ok(ModelResult {
        id: r.str("id")?,
        name: r.str("name")?,
        image: r.usize("image")?,
        batch: r.usize("batch")?,
        n: r.usize("n")?,
        runs: r.usize("runs")?,
        images_per_sec: r.f64("images_per_sec")?,
        run_images_per_sec: r.f64s("run_images_per_sec")?,
        network_bytes: r.u64("network_bytes")?,
        run_bytes: r.u64("run_bytes")?,
        dispatches_per_step: opt_f64("dispatches_per_step")?,
        final_loss: opt_f64("final_loss")?,
        profile: r.opt("profile").map(profile_from).transpose()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> BenchReport {
        let check = |passed: bool| Check {
            checked: 7,
            total: 33,
            max_abs_err: if passed { 0.25 } else { f64::INFINITY },
            worst: if passed { 0.5 } else { f64::INFINITY },
            passed,
        };
        let timed = Timed { runs: 3, median_ms: 1.5, min_ms: 1.25, gflops: 40.5 };
        let profile = Profile {
            timing: "cpu-wall".into(),
            timing_note: "timed alone".into(),
            reps: 5,
            batch: 128,
            dispatches: 2,
            step_ms: 3.0,
            pipelined_step_ms: 2.5,
            kernel_sum_ms: 2.0,
            overhead_ratio: 1.5,
            kernels: vec![KernelTime { kernel: "matmul".into(), calls: 2, total_ms: 2.0 }],
            per_dispatch: vec![DispatchTime { index: 1, kernel: "matmul".into(), detail: "NT 128×10".into(), ms: 1.0 }],
        };
        let train = |id: &str, cpu: bool| TrainResult {
            id: id.into(),
            name: format!("{id} run"),
            n: 127,
            batch: 128,
            epochs: 2,
            samples_per_sec: 1024.5,
            epoch_samples_per_sec: vec![512.0, 1024.5],
            end_to_end_samples_per_sec: 256.75,
            final_loss: if cpu { 0.125 } else { f64::NAN },
            dispatches_per_step: 12.5,
            submissions_per_step: 1.0,
            bytes_allocated: 1 << 40,
            cached_features: !cpu,
            cpu: cpu.then(|| CpuTrainResult {
                samples_per_sec: 64.0,
                epoch_samples_per_sec: vec![32.0, 64.0],
                end_to_end_samples_per_sec: 48.0,
                final_loss: 0.375,
            }),
            profile: cpu.then(|| profile.clone()),
        };
        BenchReport {
            date: "2026-12-05".into(),
            adapter: "llvmpipe".into(),
            backend: "Vulkan".into(),
            device_type: "Cpu".into(),
            driver: "llvmpipe".into(),
            driver_info: "Mesa".into(),
            timestamp_queries: true,
            scale: Scale::Quick,
            seed: u64::MAX,
            cpu_threads: 2,
            notes: vec!["a note".into()],
            matmul: vec![
                MatmulResult {
                    name: "square 64".into(),
                    form: "NN".into(),
                    m: 1,
                    n: 7,
                    k: 33,
                    check: check(true),
                    batch: 4,
                    gpu: Some(timed),
                    cpu_check: check(true),
                    cpu: Some(timed),
                },
                MatmulResult {
                    name: "dW".into(),
                    form: "TN".into(),
                    m: 127,
                    n: 7,
                    k: 1,
                    check: check(false),
                    batch: 0,
                    gpu: None,
                    cpu_check: check(true),
                    cpu: None,
                },
            ],
            training: vec![train("T1-sgd", true), train("C1-head", false)],
            models: vec![
                ModelResult {
                    id: "C2-features-224".into(),
                    name: "features".into(),
                    image: 224,
                    batch: 32,
                    n: 64,
                    runs: 2,
                    images_per_sec: 3.5,
                    run_images_per_sec: vec![3.25, 3.75],
                    network_bytes: 46_787_584,
                    run_bytes: 1 << 33,
                    dispatches_per_step: None,
                    final_loss: None,
                    profile: None,
                },
                ModelResult {
                    id: "C2-finetune-64".into(),
                    name: "fine-tune".into(),
                    image: 64,
                    batch: 32,
                    n: 96,
                    runs: 4,
                    images_per_sec: 20.5,
                    run_images_per_sec: vec![10.0, 20.5, 21.0, 19.75],
                    network_bytes: 7,
                    run_bytes: 9,
                    dispatches_per_step: Some(321.0),
                    final_loss: Some(2.25),
                    profile: Some(profile.clone()),
                },
            ],
            data_parallel: vec![DpResult {
                id: "T1-dp".into(),
                name: "T1 shape".into(),
                ranks: 2,
                overlap: true,
                accumulate: 1,
                n: 6000,
                batch: 64,
                epochs: 4,
                ms_per_step: 19.5,
                run_ms_per_step: vec![19.25, 19.5, 20.0],
                samples_per_sec: 3282.0,
                bytes_per_step: 2_141_440,
                submissions_per_step: 3.0,
            }],
            seconds: 12.25,
        }
    }

    #[test]
    fn a_report_reads_back_as_it_was_written() {
        let r = report();
        let back = BenchReport::from_json(&r.to_json()).unwrap();
        // NaN is not equal to itself: compare the parts that hold one separately
        assert!(back.training[1].final_loss.is_nan());
        let (mut a, mut b) = (r.clone(), back.clone());
        a.training[1].final_loss = 0.0;
        b.training[1].final_loss = 0.0;
        assert_eq!(a, b);
        assert!(back.matmul[1].check.worst.is_infinite() && !back.matmul[1].check.passed);
        assert!(back.any_check_failed());
        assert_eq!(back.to_json(), r.to_json());
    }

    #[test]
    fn a_report_from_before_c2_reads_with_no_model_rows() {
        let mut v: Value = serde_json::from_str(&report().to_json()).unwrap();
        v.as_object_mut().unwrap().remove("models");
        let back = BenchReport::from_json(&v.to_string()).unwrap();
        assert!(back.models.is_empty());
        assert_eq!(back.training.len(), 2);
        // and one from before DP with no data-parallel rows
        let mut v: Value = serde_json::from_str(&report().to_json()).unwrap();
        v.as_object_mut().unwrap().remove("data_parallel");
        assert!(BenchReport::from_json(&v.to_string()).unwrap().data_parallel.is_empty());
        // but a damaged model row is an error that names the field
        let text = report().to_json().replace("\"images_per_sec\"", "\"images\"");
        assert!(BenchReport::from_json(&text).unwrap_err().contains("images_per_sec"));
    }

    #[test]
    fn a_damaged_report_is_an_error_that_names_the_field() {
        let text = report().to_json().replace("\"samples_per_sec\"", "\"samples\"");
        let e = BenchReport::from_json(&text).unwrap_err();
        assert!(e.contains("samples_per_sec"), "{e}");
        assert!(BenchReport::from_json("{").is_err());
        assert!(BenchReport::from_json(&report().to_json().replace("\"quick\"", "\"huge\"")).unwrap_err().contains("huge"));
    }
}
