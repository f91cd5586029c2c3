//! `headswap bench`: every matrix product checked against the float64 reference, then timed.

use crate::args::BenchArgs;
use crate::{CliResult, gpu};

pub fn run(a: BenchArgs) -> CliResult<()> {
    let opts = headswap::bench::BenchOptions { quick: a.quick, json: a.json, only: a.only, seed: a.seed };
    let gpu = gpu()?;
    let report = headswap::bench::run(&gpu, &opts)?;
    if opts.json { outln!("{}", report.to_json()) } else { outln!("{report}") }
}
