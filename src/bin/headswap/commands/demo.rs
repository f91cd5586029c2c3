//! `headswap demo`: pretrain → head-swap → fine-tune against training from scratch.

use crate::args::{DemoArgs, DemoData, DemoTrunk};
use crate::options::report_dir;
use crate::{CliResult, gpu, usage};
use headswap::demo::{self, DemoConfig, Trunk};

pub fn run(a: DemoArgs) -> CliResult<()> {
    if a.street {
        return street(a);
    }
    let data = match a.data {
        DemoData::Synthetic if a.digits_dir.is_some() => return Err(usage("--digits-dir is for --data digits")),
        DemoData::Synthetic => demo::DemoData::Synthetic,
        DemoData::Digits => demo::DemoData::Digits(a.digits_dir.clone()),
    };
    let cfg = DemoConfig { data, sizes: a.sizes.clone(), seed: a.seed, quick: a.quick, ..DemoConfig::default() };
    let trunks = match a.trunk {
        DemoTrunk::Mlp => vec![Trunk::Mlp],
        DemoTrunk::Cnn => vec![Trunk::Cnn],
        DemoTrunk::Resnet => vec![Trunk::ResNet],
        DemoTrunk::Both => vec![Trunk::Mlp, Trunk::Cnn],
        DemoTrunk::All => vec![Trunk::Mlp, Trunk::Cnn, Trunk::ResNet],
    };
    let report_dir = report_dir(a.report.as_deref())?;
    let gpu = gpu()?;
    let mut reports = Vec::new();
    for trunk in trunks {
        let cfg = DemoConfig { trunk, ..cfg.clone() };
        let report = demo::run(&gpu, &cfg, &mut |line| eprintln!("{line}"))?;
        if let Some(dir) = &report_dir {
            let sub = dir.join(report.trunk_name());
            let files = headswap::report::demo_report(&sub, &report)?;
            eprintln!("report: {}", files.last().map_or(sub.clone(), |p| p.clone()).display());
        }
        if !a.json {
            outln!("\n{report}")?;
        }
        reports.push(report);
    }
    if a.json {
        outln!("[{}]", reports.iter().map(|r| r.to_json()).collect::<Vec<_>>().join(","))
    } else {
        outln!("\n{}", demo::side_by_side(&reports))
    }
}

/// `headswap demo --street`: the multi-task demo.
fn street(a: DemoArgs) -> CliResult<()> {
    use headswap::demo::street::{self, StreetConfig};
    let cfg = if a.quick { StreetConfig::quick(a.seed) } else { StreetConfig::full(a.seed) };
    let report_dir = report_dir(a.report.as_deref())?;
    let gpu = gpu()?;
    let report = street::run(&gpu, &cfg, &mut |line| eprintln!("{line}"))?;
    if let Some(dir) = &report_dir {
        let files = headswap::report::street_report(dir, &report)?;
        eprintln!("report: {}", files.last().map_or(dir.clone(), |p| p.clone()).display());
    }
    if a.json { outln!("{}", report.to_json()) } else { outln!("\n{report}") }
}
