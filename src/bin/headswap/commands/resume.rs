//! `headswap resume`: a run saved with `--save-state` continued exactly, with the saved run's
//! options unless given again, on the same data.

use crate::args::{self, Command, Given, ResumeArgs};
use crate::data::{Split, check_input_width, data_kind, describe_loaded, image_options, load_data};
use crate::model::{check_recorded_width, model_names, save, save_state, saved_run_examples, saved_run_flags, storage};
use crate::options::{check_outputs, check_pos_weight, same_path, train_config};
use crate::output::{Training, check_converged, print_summary};
use crate::{CliResult, clap_message, failed, gpu, usage};
use headswap::checkpoint;
use headswap::nn::Network;
use headswap::train::TrainingState;
use std::ffi::OsString;

pub fn run(a: ResumeArgs, given: &Given, argv: &[OsString]) -> CliResult<()> {
    let origin = a.state.display().to_string();
    let ckpt = checkpoint::load(&a.state)?;
    let saved = saved_run_flags(&ckpt);
    let restored: Vec<(String, Option<String>)> =
        saved.iter().flatten().filter(|(k, _)| !given.has(k)).map(|(k, v)| (k.clone(), v.clone())).collect();
    // the saved options, read as if typed after the ones given now
    let (a, given) = if restored.is_empty() {
        (a, given.clone())
    } else {
        let mut argv = argv.to_vec();
        argv.extend(restored.iter().map(|(k, v)| OsString::from(v.as_ref().map_or(format!("--{k}"), |v| format!("--{k}={v}")))));
        let (cli, given) =
            args::parse(&argv).map_err(|e| failed(format!("{origin}: its saved options: {}", clap_message(&e, Some("resume")))))?;
        let Command::Resume(a) = cli.command else { return Err(failed("resume's arguments parsed as another command")) };
        (a, given)
    };
    let cfg = train_config(&a.train, &given)?;
    let opts = image_options(&a.image, data_kind(&a.data)?)?;
    if same_path(&a.out, &a.state) {
        return Err(usage("--out would replace the state file given to --state; write the model to another file"));
    }
    let state = TrainingState::from_checkpoint(&ckpt, &origin)?;
    if a.epochs <= state.epoch {
        return Err(usage(format!("--epochs is the total: the saved run has done {} epochs, so give more than that", state.epoch)));
    }
    check_outputs(&a.out, a.save_state.as_deref())?;
    let loaded = load_data(&a.data, &opts, Split::Train, cfg.seed)?;
    check_pos_weight(&cfg, &loaded.data)?;
    if let Some(n) = saved_run_examples(&ckpt)
        && n != loaded.data.n
    {
        return Err(failed(format!("the saved run trained on {n} examples, --data has {}: resume needs the same data", loaded.data.n)));
    }
    // the same examples under other names (renamed class folders) would be silently relabelled
    let names = model_names(&ckpt);
    if !names.is_empty() && !loaded.data.label_names.is_empty() && names != loaded.data.label_names {
        let what = if loaded.data.targets.is_multi_label() { "labels" } else { "classes" };
        return Err(failed(format!(
            "the saved run trained on the {what} {}; --data has {}: resume needs the same data",
            names.join(", "),
            loaded.data.label_names.join(", ")
        )));
    }
    check_recorded_width(&ckpt, &a.data, &loaded.data)?;
    let gpu = gpu()?;
    let mut net = Network::from_checkpoint(&gpu, &ckpt, &origin)?;
    check_input_width(&net, &a.data, &loaded.data)?;
    eprintln!("{}", describe_loaded(&a.data, &loaded.data, &loaded.skipped));
    if !restored.is_empty() {
        let shown: Vec<String> = restored.iter().map(|(k, v)| v.as_ref().map_or(format!("--{k}"), |v| format!("--{k} {v}"))).collect();
        eprintln!("the saved run's options: {}", shown.join(" "));
    } else if saved.is_none() {
        // a state file from before the options were recorded: only the options given now apply
        eprintln!("{origin} records no training options; using the options given now");
    }
    eprintln!("resuming after epoch {} (step {}), to epoch {}", state.epoch, state.step, a.epochs);
    let mut training = Training::new(&gpu, cfg, a.json);
    let report = training.trainer.resume(&mut net, &loaded.data, &state, a.epochs)?;
    training.finish()?;
    print_summary(&report, a.json)?;
    check_converged(&report)?;
    save_state(&training.trainer, &mut net, a.save_state.as_deref(), &given, &loaded)?;
    save(&mut net, &a.out, &loaded, storage(a.f16), training.trainer.config.frozen_storage)
}
