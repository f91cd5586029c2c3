//! DP (issue 15): data-parallel training over MPI, measured by running this binary under
//! `mpirun -np N` for N = 1, 2 and 4: the step time and the bytes each rank sends per step, for
//! T1's shape (784→512→256→8, SGD, batch 64, every layer trains) and T2's (a 256→4 label head
//! fine-tuned on the frozen trunk's cached features), and the exchange overlapped with the
//! backward (`--overlap-exchange`) against the plain exchange, in alternating runs at N = 2.
//! Gradient accumulation (`--accumulate K`) against the plain step at the same micro-batch per
//! pass (the memory bound: [`MICRO`] rows per rank), in alternating runs at N ≥ 2: plain steps of
//! `MICRO·N` examples (one exchange each) against steps of `K·MICRO·N` in K passes (one exchange
//! per K passes), compared per example.
//!
//! Each run is `mpirun --oversubscribe --bind-to none -np N headswap pretrain|finetune … --json`;
//! the step time is the median epoch time after the first over the steps per epoch. More ranks
//! than cores run oversubscribed: on a 2-core host with lavapipe, whose own threads use every
//! core, N = 2 and 4 measure what the exchange costs, not a speed-up.

use super::table::DpResult;
use super::{Scale, median};
use crate::{CliResult, failed};
use std::path::Path;
use std::process::{Command, Stdio};

/// Why DP cannot run here, if it cannot: this binary lacks the feature, or no `mpirun` starts.
pub fn unavailable() -> Option<String> {
    if !cfg!(feature = "distributed") {
        return Some("this headswap was built without data-parallel training (cargo build --release --features distributed)".into());
    }
    match Command::new("mpirun").arg("--version").stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status() {
        Ok(s) if s.success() => None,
        Ok(s) => Some(format!("`mpirun --version` failed ({s})")),
        Err(e) => Some(format!("no mpirun on PATH ({e}; Debian: apt-get install openmpi-bin)")),
    }
}

/// Examples, epochs, timed rounds of the alternating overlap comparison, rank counts.
fn sizes(scale: Scale) -> (usize, usize, usize, &'static [usize]) {
    match scale {
        Scale::Full => (6000, 4, 3, &[1, 2, 4]),
        Scale::Quick => (1500, 3, 2, &[1, 2, 4]),
        Scale::Smoke => (192, 2, 1, &[1, 2]),
    }
}

const BATCH: usize = 64;
/// The accumulation rows: rows per rank per pass, and micro-batches per step.
const MICRO: usize = 32;
const ACCUMULATE: usize = 4;

/// Runs DP's workloads (see the module docs).
pub fn bench_dp(scale: Scale, seed: u64) -> CliResult<Vec<DpResult>> {
    if let Some(why) = unavailable() {
        return Err(failed(format!("the dp workload cannot run: {why}")));
    }
    let exe = std::env::current_exe().map_err(|e| failed(format!("cannot find the headswap binary to run under mpirun: {e}")))?;
    let dir = std::env::temp_dir().join(format!("headswap-bench-dp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| failed(format!("cannot create {}: {e}", dir.display())))?;
    let result = run_all(&exe, &dir, scale, seed);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run_all(exe: &Path, dir: &Path, scale: Scale, seed: u64) -> CliResult<Vec<DpResult>> {
    let (n, epochs, rounds, ranks) = sizes(scale);
    let p = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let (data_a, data_b, seed) = (format!("synthetic-a:{n}"), format!("synthetic-b:{n}"), seed.to_string());
    let epochs_s = epochs.to_string();
    let common = ["--size", "28x28", "--seed", &seed, "--epochs", &epochs_s];
    let t1: Vec<&str> = [&["pretrain", "--data", &data_a, "--layers", "512,256"][..], &common].concat();
    let (t1_out, t2_out, trunk) = (p("t1.safetensors"), p("t2.safetensors"), p("trunk.safetensors"));
    let t2: Vec<&str> = [&["finetune", "--from", &trunk, "--data", &data_b, "--freeze", "trunk"][..], &common].concat();
    // T2's trunk: T1's network after one epoch alone
    let mut pre = Command::new(exe);
    pre.args(["pretrain", "--data", &data_a, "--size", "28x28", "--layers", "512,256", "--epochs", "1", "--seed", &seed, "--out", &trunk]);
    run(pre)?;

    let mut rows = Vec::new();
    let t1_name = "T1 shape: 784→512→256→8, SGD, every layer trains";
    let t2_name = "T2 shape: 256→4 label head on the frozen trunk's cached features";
    let plain = Step { batch: BATCH, overlap: false, accumulate: 1 };
    for &np in ranks {
        if np == 2 {
            // the plain and the overlapped exchange in alternating runs
            let overlap = Step { overlap: true, ..plain };
            let (mut plain_runs, mut overlapped) = (Vec::new(), Vec::new());
            for _ in 0..rounds {
                plain_runs.push(mpirun(exe, np, &t1, &t1_out, plain, n, epochs)?);
                overlapped.push(mpirun(exe, np, &t1, &t1_out, overlap, n, epochs)?);
            }
            rows.push(DpResult::of("T1-dp", t1_name, np, plain, n, epochs, &plain_runs));
            rows.push(DpResult::of("T1-dp", t1_name, np, overlap, n, epochs, &overlapped));
        } else {
            let run = mpirun(exe, np, &t1, &t1_out, plain, n, epochs)?;
            rows.push(DpResult::of("T1-dp", t1_name, np, plain, n, epochs, &[run]));
        }
    }
    for &np in ranks {
        // one trainable layer: nothing to overlap the exchange with
        let run = mpirun(exe, np, &t2, &t2_out, plain, n, epochs)?;
        rows.push(DpResult::of("T2-dp", t2_name, np, plain, n, epochs, &[run]));
    }
    // gradient accumulation against plain steps at the same micro-batch per pass, alternating
    for (id, name, args, out) in [("T1-dp", t1_name, &t1, &t1_out), ("T2-dp", t2_name, &t2, &t2_out)] {
        for &np in ranks.iter().filter(|&&np| np >= 2) {
            let plain = Step { batch: MICRO * np, overlap: false, accumulate: 1 };
            let acc = Step { batch: ACCUMULATE * MICRO * np, overlap: false, accumulate: ACCUMULATE };
            let (mut plain_runs, mut acc_runs) = (Vec::new(), Vec::new());
            for _ in 0..rounds {
                plain_runs.push(mpirun(exe, np, args, out, plain, n, epochs)?);
                acc_runs.push(mpirun(exe, np, args, out, acc, n, epochs)?);
            }
            rows.push(DpResult::of(id, name, np, plain, n, epochs, &plain_runs));
            rows.push(DpResult::of(id, name, np, acc, n, epochs, &acc_runs));
        }
    }
    Ok(rows)
}

/// How a run steps: its global batch, the exchange overlapped or not, micro-batches per step.
#[derive(Clone, Copy)]
struct Step {
    batch: usize,
    overlap: bool,
    accumulate: usize,
}

/// What one `mpirun` run measured.
pub struct DpRun {
    pub ms_per_step: f64,
    pub bytes_per_step: u64,
    pub submissions_per_step: f64,
}

/// Runs `args` under `mpirun -np np` with `--json` and reads rank 0's report.
fn mpirun(exe: &Path, np: usize, args: &[&str], out: &str, step: Step, n: usize, epochs: usize) -> CliResult<DpRun> {
    let mut c = Command::new("mpirun");
    c.args(["--oversubscribe", "--bind-to", "none", "-np", &np.to_string()])
        .arg(exe)
        .args(args)
        .args(["--out", out, "--json"])
        // Open MPI refuses to start as root without these (containers, CI)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
    c.args(["--batch", &step.batch.to_string(), "--accumulate", &step.accumulate.to_string()]);
    if step.overlap {
        c.arg("--overlap-exchange");
    }
    let text = run(c)?;
    let doc: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| failed(format!("mpirun -np {np}: its JSON report does not read: {e}")))?;
    let secs: Vec<f64> = doc["epochs"].as_array().map(|es| es.iter().filter_map(|e| e["seconds"].as_f64()).collect()).unwrap_or_default();
    if secs.len() != epochs {
        return Err(failed(format!("mpirun -np {np}: the report has {} epoch times, not {epochs}", secs.len())));
    }
    let timed = if secs.len() > 1 { &secs[1..] } else { &secs[..] };
    let steps = n.div_ceil(step.batch) as f64;
    Ok(DpRun {
        ms_per_step: 1000.0 * median(timed) / steps,
        bytes_per_step: doc["bytes_exchanged_per_step"].as_u64().unwrap_or(0),
        submissions_per_step: doc["submissions_per_step"].as_f64().unwrap_or(f64::NAN),
    })
}

/// Runs `c`, returning its standard output; its error output goes to this process's.
fn run(mut c: Command) -> CliResult<String> {
    let shown = format!("{c:?}");
    let out = c.stdin(Stdio::null()).stderr(Stdio::inherit()).output().map_err(|e| failed(format!("cannot start {shown}: {e}")))?;
    if !out.status.success() {
        return Err(failed(format!("{shown} failed ({})", out.status)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl DpResult {
    fn of(id: &str, name: &str, ranks: usize, step: Step, n: usize, epochs: usize, runs: &[DpRun]) -> DpResult {
        let ms: Vec<f64> = runs.iter().map(|r| r.ms_per_step).collect();
        let ms_per_step = median(&ms);
        DpResult {
            id: id.into(),
            name: name.into(),
            ranks,
            overlap: step.overlap,
            accumulate: step.accumulate,
            n,
            batch: step.batch,
            epochs,
            ms_per_step,
            run_ms_per_step: ms,
            samples_per_sec: 1000.0 * step.batch as f64 / ms_per_step,
            bytes_per_step: runs.first().map_or(0, |r| r.bytes_per_step),
            submissions_per_step: runs.first().map_or(f64::NAN, |r| r.submissions_per_step),
        }
    }
}
