//! `headswap bench`: every matrix product checked against the float64 reference, then timed;
//! the training workloads, each beside its baseline (see `crate::bench`).

use crate::args::{BenchArgs, BenchKernel, BenchKernelArgs, KernelOp};
use crate::bench::{self, BenchOptions, kernel_cmd};
use crate::{CliResult, failed};

pub fn run(a: BenchArgs) -> CliResult<()> {
    if let Some(BenchKernel::Kernel(k)) = a.kernel {
        return kernel(k);
    }
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

/// `headswap bench kernel matmul --shape MxNxK`: one kernel family at the user's shape.
fn kernel(k: BenchKernelArgs) -> CliResult<()> {
    let KernelOp::Matmul = k.op;
    let (m, n, kk) = kernel_cmd::parse_shape(&k.shape)?;
    let request = kernel_cmd::KernelRequest {
        m,
        n,
        k: kk,
        t: kernel_cmd::parse_form(&k.form)?,
        variant: kernel_cmd::parse_variant(&k.variant)?,
        seed: k.seed,
        scale: bench::Scale::of(&BenchOptions { quick: k.quick, only: None, seed: k.seed }),
    };
    let gpu = crate::gpu()?;
    let (text, passed) = kernel_cmd::run(&gpu, &request, k.json)?;
    outln!("{text}")?;
    if !passed {
        return Err(failed("a variant failed its check against the float64 reference (no number printed for it)"));
    }
    Ok(())
}
