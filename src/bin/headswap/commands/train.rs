//! `headswap train`: a fully specified deterministic run from given weights and a tensor file,
//! so that a result can be checked against another framework. A file of `y.<head>` targets
//! trains the named heads of `--init` (their kinds and widths checked against the file's).

use crate::args::{Given, ImageArgs, Loss, TrainArgs};
use crate::data::{DataKind, Loaded, Split, align_to_model, check_input_width, describe_loaded, head_kind_of, image_options, load_data};
use crate::model::{ModelSource, check_recorded_width, load_model, model_names, read_model, save, save_state, storage};
use crate::options::{check_outputs, check_pos_weight, train_config};
use crate::output::{Training, check_converged, print_summary};
use crate::{CliResult, gpu, heads, usage};
use headswap::nn::HeadKind;
use headswap::train::TrainConfig;

pub fn run(a: TrainArgs, given: &Given) -> CliResult<()> {
    let cfg = train_config(&a.train, given)?;
    if !a.data.ends_with(".safetensors") {
        return Err(usage("train --data takes a .safetensors file with x and y"));
    }
    check_outputs(&a.out, a.save_state.as_deref())?;
    let opts = image_options(&ImageArgs { size: None, rgb: false, normalize: None }, DataKind::Tensor)?;
    let loaded = load_data(&a.data, &opts, Split::Train, cfg.seed)?;
    if heads::file_heads(&loaded.data).is_some() {
        return run_heads(a, given, cfg, loaded);
    }
    if let Some((name, w)) = a.head_weight.first() {
        return Err(usage(format!(
            "--head-weight {name}={w} weighs a named head's loss; --data {} has one target y (a file of several heads has y.<head> tensors)",
            a.data
        )));
    }
    let kind = match a.loss {
        Some(Loss::Softmax) => HeadKind::Classes,
        Some(Loss::Bce) => HeadKind::Labels,
        None => return Err(usage(format!("train needs --loss softmax|bce: --data {} has one target y", a.data))),
    };
    check_pos_weight(&cfg, &loaded.data)?;
    if kind != head_kind_of(&loaded.data) {
        let (loss, other, has) = if kind == HeadKind::Classes { ("softmax", "bce", "labels") } else { ("bce", "softmax", "classes") };
        return Err(usage(format!("--loss {loss} does not fit --data, which has {has}: use --loss {other}")));
    }
    let init = ModelSource { path: a.init.clone(), arch: a.arch.map(Into::into), act: a.activation };
    let ckpt = read_model(&init)?;
    check_recorded_width(&ckpt, &a.data, &loaded.data)?;
    let gpu = gpu()?;
    let mut net = load_model(&gpu, &init, &ckpt, kind, &loaded.data.input_shape)?;
    if net.is_multi_head() {
        return Err(usage(format!(
            "{} has {} named heads; --data {} has one target y: give a file with a y.<head> tensor per head",
            a.init,
            net.heads().len(),
            a.data
        )));
    }
    net.set_head_kind(kind);
    check_input_width(&net, &a.data, &loaded.data)?;
    eprintln!("{}", describe_loaded(&a.data, &loaded.data, &loaded.skipped));
    let data = align_to_model(loaded.data, &model_names(&ckpt), net.output_dim())?;
    let loaded = Loaded { data, ..loaded };
    let mut training = Training::new(&gpu, cfg, a.json);
    let report = training.trainer.fit(&mut net, &loaded.data, a.epochs)?;
    training.finish()?;
    print_summary(&report, a.json)?;
    check_converged(&report)?;
    save_state(&training.trainer, &mut net, a.save_state.as_deref(), given, &loaded)?;
    save(&mut net, &a.out, &loaded, storage(a.f16), training.trainer.config.frozen_storage)
}

/// A file of `y.<head>` targets: `--init` is a headswap checkpoint of named heads, the same heads
/// as the file's; each head's loss is its kind's (recorded in the checkpoint), weighted by its
/// recorded weight or `--head-weight`.
fn run_heads(a: TrainArgs, given: &Given, cfg: TrainConfig, loaded: Loaded) -> CliResult<()> {
    if let Some(loss) = a.loss {
        let name = if loss == Loss::Softmax { "softmax" } else { "bce" };
        return Err(usage(format!(
            "--loss {name} is for a file with one target y; --data {} has y.<head> targets, whose losses come from the heads of --init",
            a.data
        )));
    }
    if a.arch.is_some() {
        return Err(usage(
            "--arch reads a plain state_dict of one head; with y.<head> targets --init must be a headswap checkpoint of named heads",
        ));
    }
    if cfg.bce.pos_weight.is_some() {
        return Err(usage("--pos-weight is for one labels head; each named labels head keeps its own pos_weight in --init"));
    }
    let init = ModelSource { path: a.init.clone(), arch: None, act: a.activation };
    let ckpt = read_model(&init)?;
    check_recorded_width(&ckpt, &a.data, &loaded.data)?;
    let gpu = gpu()?;
    let mut net = load_model(&gpu, &init, &ckpt, HeadKind::Classes, &loaded.data.input_shape)?;
    check_input_width(&net, &a.data, &loaded.data)?;
    heads::check_heads(&net, &a.init, &a.data, &loaded.data)?;
    heads::apply_weights(&mut net, &a.init, &a.head_weight)?;
    eprintln!("{}", heads::describe(&a.data, &loaded.data));
    let mut training = Training::new(&gpu, cfg, a.json);
    let report = training.trainer.fit(&mut net, &loaded.data, a.epochs)?;
    training.finish()?;
    print_summary(&report, a.json)?;
    check_converged(&report)?;
    save_state(&training.trainer, &mut net, a.save_state.as_deref(), given, &loaded)?;
    save(&mut net, &a.out, &loaded, storage(a.f16), training.trainer.config.frozen_storage)
}
