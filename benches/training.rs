//! T1–T3 and C1: training samples/s (pretrain; head-only fine-tune with and without cached trunk
//! features; full fine-tune; the demo's CNN), dispatches and submissions per step, and each step's
//! time next to the sum of its kernels' times, beside a CPU baseline of the same training:
//! `headswap bench --only t1,t2,t3,c1` (each workload in a process of its own).
//!
//! `cargo bench --bench training [-- --quick] [-- --json]`; `HEADSWAP_BENCH_SMOKE=1` runs a tiny
//! size once (CI: proves the code runs). See `src/bin/headswap/bench/`.

mod common;

fn main() -> std::process::ExitCode {
    common::run_bench("t1,t2,t3,c1")
}
