//! `headswap pretrain`: a new network trained on `--data`.

use crate::args::{Arch, Given, PretrainArgs};
use crate::data::{Split, check_trainable, data_kind, describe_loaded, image_options, load_data};
use crate::model::{new_network, save, save_state, storage};
use crate::options::{check_outputs, check_pos_weight, report_dir, train_config};
use crate::output::{Training, check_converged, print_summary, write_report};
use crate::{CliResult, gpu, heads};

pub fn run(a: PretrainArgs, given: &Given) -> CliResult<()> {
    let cfg = train_config(&a.train, given)?;
    let opts = image_options(&a.image, data_kind(&a.data)?)?;
    let layers = a.layers.clone().unwrap_or_else(|| if a.arch == Arch::Cnn { vec![64] } else { vec![128, 64] });
    check_outputs(&a.out, a.save_state.as_deref())?;
    let loaded = load_data(&a.data, &opts, Split::Train, cfg.seed)?;
    if heads::file_heads(&loaded.data).is_some() {
        eprintln!("{}", heads::describe(&a.data, &loaded.data));
    } else {
        eprintln!("{}", describe_loaded(&a.data, &loaded.data, &loaded.skipped));
    }
    check_trainable(&loaded.data)?;
    check_pos_weight(&cfg, &loaded.data)?;
    let report_dir = report_dir(a.report.as_deref())?;
    let gpu = gpu()?;
    let mut net = new_network(&gpu, &loaded.data, a.arch, layers, &a.channels, a.activation, cfg.seed)?;
    eprintln!("network: {}", net.layers().iter().map(|l| l.describe()).collect::<Vec<_>>().join(" | "));
    let mut training = Training::new(&gpu, cfg, a.json);
    let report = training.trainer.fit(&mut net, &loaded.data, a.epochs)?;
    training.finish()?;
    print_summary(&report, a.json)?;
    check_converged(&report)?;
    write_report(report_dir.as_deref(), "pretrain", &report, &loaded.data.label_names)?;
    save_state(&training.trainer, &mut net, a.save_state.as_deref(), given, &loaded)?;
    save(&mut net, &a.out, &loaded, storage(a.f16), training.trainer.config.frozen_storage)
}
