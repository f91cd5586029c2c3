//! `headswap bench`: every matrix product checked against the float64 reference, then timed;
//! the training workloads, each beside its baseline (see `crate::bench`).

use crate::args::{BenchArgs, BenchKernel, BenchKernelArgs, KernelOp};
use crate::bench::{self, BenchOptions, kernel_cmd};
use crate::{CliResult, failed, usage};

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
    let scale = bench::Scale::of(&BenchOptions { quick: k.quick, only: None, seed: k.seed });
    let (text, passed) = match k.op {
        KernelOp::Matmul => {
            if k.filters.is_some() || k.kernel.is_some() || k.groups != 1 {
                return Err(usage("--filters, --kernel and --groups are conv2d's; matmul takes --shape MxNxK"));
            }
            let (m, n, kk) = kernel_cmd::parse_shape(&k.shape)?;
            let request = kernel_cmd::KernelRequest {
                m,
                n,
                k: kk,
                t: kernel_cmd::parse_form(&k.form)?,
                variant: kernel_cmd::parse_variant(&k.variant)?,
                f16: kernel_cmd::parse_storage(&k.storage)?,
                seed: k.seed,
                scale,
            };
            kernel_cmd::run(&crate::gpu()?, &request, k.json)?
        }
        KernelOp::Conv2d => {
            if k.storage != "f32" {
                return Err(usage("--storage is matmul's"));
            }
            let [n, c, h, w] = kernel_cmd::parse_nchw(&k.shape)?;
            let (Some(o), Some(ks)) = (k.filters.filter(|&o| o > 0), k.kernel.filter(|&v| v > 0)) else {
                return Err(usage("conv2d needs --filters O and --kernel K (positive)"));
            };
            if k.groups == 0 || c % k.groups != 0 || o % k.groups != 0 {
                return Err(usage(format!("--groups {} must be positive and divide the {c} input and {o} output channels", k.groups)));
            }
            let shape = headswap::kernels::conv::Conv2dShape::new(n, c, h, w, o, ks, k.stride, k.padding).with_groups(k.groups);
            let request = kernel_cmd::ConvRequest { shape, algo: kernel_cmd::parse_algo(&k.variant)?, seed: k.seed, scale };
            kernel_cmd::run_conv(&crate::gpu()?, &request, k.json)?
        }
    };
    outln!("{text}")?;
    if !passed {
        return Err(failed("a variant failed its check against the float64 reference (no number printed for it)"));
    }
    Ok(())
}
