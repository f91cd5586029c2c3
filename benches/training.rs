//! T1–T3 and C1: training samples/s (pretrain; head-only fine-tune with and without cached trunk
//! features; full fine-tune), dispatches and submissions per step, and each step's time next to
//! the sum of its kernels' times, beside a CPU baseline of the same training in the same run.
//!
//! `cargo bench --bench training [-- --quick] [-- --json]`; `HEADSWAP_BENCH_SMOKE=1` runs a tiny
//! size once (CI: proves the code runs). See `headswap::bench`.

fn main() -> std::process::ExitCode {
    headswap::bench::bench_main("t1,t2,t3,c1")
}
