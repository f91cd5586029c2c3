//! `headswap bench`: every matrix product checked against the float64 reference, then timed;
//! the training workloads, each beside its baseline (see `crate::bench`).

use crate::args::BenchArgs;
use crate::bench::{self, BenchOptions};
use crate::{CliResult, failed};

pub fn run(a: BenchArgs) -> CliResult<()> {
    let opts = BenchOptions { quick: a.quick, only: a.only, seed: a.seed };
    let report = bench::run(&opts)?;
    if a.json {
        outln!("{}", report.to_json())?;
    } else {
        outln!("{report}")?;
    }
    if let Some(path) = &a.json_out {
        std::fs::write(path, report.to_json()).map_err(|e| failed(format!("cannot write {path}: {e}")))?;
    }
    if report.any_check_failed() {
        return Err(failed("a matrix product failed its check against the float64 reference (no number printed for it)"));
    }
    Ok(())
}
