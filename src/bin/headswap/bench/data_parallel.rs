//! DP (issue 15): data-parallel training over MPI, measured by running this binary under
//! `mpirun -np N` for N = 1, 2 and 4: the step time and the bytes each rank sends per step, for
//! T1's shape (784→512→256→8, SGD, batch 64, every layer trains) and T2's (a 256→4 label head
//! fine-tuned on the frozen trunk's cached features), and the exchange overlapped with the
//! backward (`--overlap-exchange`) against the plain exchange, in alternating runs at N = 2.
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
    let (epochs_s, batch_s) = (epochs.to_string(), BATCH.to_string());
    let common = ["--size", "28x28", "--batch", &batch_s, "--seed", &seed, "--epochs", &epochs_s];
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
    for &np in ranks {
        if np == 2 {
            // the plain and the overlapped exchange in alternating runs
            let (mut plain, mut overlapped) = (Vec::new(), Vec::new());
            for _ in 0..rounds {
                plain.push(mpirun(exe, np, &t1, &t1_out, false, n, epochs)?);
                overlapped.push(mpirun(exe, np, &t1, &t1_out, true, n, epochs)?);
            }
            rows.push(DpResult::of("T1-dp", t1_name, np, false, n, epochs, &plain));
            rows.push(DpResult::of("T1-dp", t1_name, np, true, n, epochs, &overlapped));
        } else {
            let run = mpirun(exe, np, &t1, &t1_out, false, n, epochs)?;
            rows.push(DpResult::of("T1-dp", t1_name, np, false, n, epochs, &[run]));
        }
    }
    for &np in ranks {
        // one trainable layer: nothing to overlap the exchange with
        let run = mpirun(exe, np, &t2, &t2_out, false, n, epochs)?;
        rows.push(DpResult::of("T2-dp", t2_name, np, false, n, epochs, &[run]));
    }
    Ok(rows)
}

/// What one `mpirun` run measured.
pub struct DpRun {
    pub ms_per_step: f64,
    pub bytes_per_step: u64,
    pub submissions_per_step: f64,
}

/// Runs `args` under `mpirun -np np` with `--json` and reads rank 0's report.
fn mpirun(exe: &Path, np: usize, args: &[&str], out: &str, overlap: bool, n: usize, epochs: usize) -> CliResult<DpRun> {
    let mut c = Command::new("mpirun");
    c.args(["--oversubscribe", "--bind-to", "none", "-np", &np.to_string()])
        .arg(exe)
        .args(args)
        .args(["--out", out, "--json"])
        // Open MPI refuses to start as root without these (containers, CI)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
    if overlap {
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
    let steps = n.div_ceil(BATCH) as f64;
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
    fn of(id: &str, name: &str, ranks: usize, overlap: bool, n: usize, epochs: usize, runs: &[DpRun]) -> DpResult {
        let ms: Vec<f64> = runs.iter().map(|r| r.ms_per_step).collect();
        let ms_per_step = median(&ms);
        DpResult {
            id: id.into(),
            name: name.into(),
            ranks,
            overlap,
            n,
            batch: BATCH,
            epochs,
            ms_per_step,
            run_ms_per_step: ms,
            samples_per_sec: 1000.0 * BATCH as f64 / ms_per_step,
            bytes_per_step: runs.first().map_or(0, |r| r.bytes_per_step),
            submissions_per_step: runs.first().map_or(f64::NAN, |r| r.submissions_per_step),
        }
    }
}
