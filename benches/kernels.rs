//! K1: f32 matmul GFLOP/s on resident data, each product checked against the float64 reference
//! first, next to the `gemm` crate on every CPU core in the same run: `headswap bench --only k1`.
//!
//! `cargo bench --bench kernels [-- --quick] [-- --json]`; `HEADSWAP_BENCH_SMOKE=1` runs tiny
//! shapes once (CI: proves the code runs). See `src/bin/headswap/bench/`.

mod common;

fn main() -> std::process::ExitCode {
    common::run_bench("k1")
}
