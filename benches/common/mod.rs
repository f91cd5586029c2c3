//! What `benches/kernels.rs` and `benches/training.rs` share: run the built `headswap bench`
//! binary on their workloads, so `cargo bench` measures exactly what the command line does.

use std::process::{Command, ExitCode};

/// Runs `headswap bench --only <only>` with the arguments given after `cargo bench --bench
/// NAME --` (`--quick`, `--json`, `--json-out PATH`, `--seed N`; anything else is passed on and
/// the binary reports it), with this process's environment (`HEADSWAP_BENCH_SMOKE=1` runs the
/// smoke size, `WGPU_BACKEND` picks the adapter). Exits as the binary did.
pub fn run_bench(only: &str) -> ExitCode {
    // cargo passes `--bench` to a harness-less bench target: not ours to forward
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let status = Command::new(env!("CARGO_BIN_EXE_headswap")).args(["bench", "--only", only]).args(&args).status();
    match status {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        Ok(s) => {
            eprintln!("headswap bench --only {only} failed ({s})");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("cannot run {}: {e}", env!("CARGO_BIN_EXE_headswap"));
            ExitCode::FAILURE
        }
    }
}
