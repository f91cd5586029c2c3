//! `headswap finetune`: a model's head swapped for one that fits `--data`, then fine-tuned.

use crate::args::{FinetuneArgs, Given};
use crate::data::{DataKind, Split, check_input_width, check_trainable, data_kind, describe_loaded, head_kind_of, load_data_for};
use crate::model::{
    BuiltinHead, ModelSource, check_arch_given, check_builtin_input, check_recorded_width, head_for, image_options_for_model, load_builtin,
    load_model, read_model, save, storage,
};
use crate::options::{check_outputs, check_pos_weight, report_dir, train_config};
use crate::output::{Training, check_converged, fit_json, print_summary, write_report};
use crate::{CliResult, gpu, heads, usage};
use headswap::data::manifest::ManifestHead;
use headswap::train::Freeze;

fn freeze_name(f: Freeze) -> String {
    match f {
        Freeze::Trunk => "trunk".into(),
        Freeze::All => "all".into(),
        Freeze::LastK(k) => format!("last:{k}"),
        Freeze::Auto => "auto".into(),
    }
}

pub fn run(a: FinetuneArgs, given: &Given) -> CliResult<()> {
    if a.recipe.is_some() && given.has("freeze") {
        return Err(usage("--recipe sets its own freezing (head only, then everything); leave out --freeze"));
    }
    let mut cfg = train_config(&a.train, given)?;
    if let Some(mult) = a.trunk_lr_mult {
        cfg.trunk_lr_mult = mult;
    }
    let from = ModelSource { path: a.from.clone(), arch: a.arch, act: a.activation };
    let ckpt = read_model(&from)?;
    check_arch_given(&from, &ckpt)?;
    let kind = data_kind(&a.data)?;
    let opts = image_options_for_model(&a.image, &ckpt, &a.data, kind)?;
    let builtin = from.builtin();
    if let (Some(arch), DataKind::Images | DataKind::Synthetic) = (builtin, kind) {
        check_builtin_input(arch, &opts.input_shape(), &format!("--data {}", a.data))?;
    }
    check_outputs(&a.out, None)?;
    let known = ManifestHead::of(&headswap::nn::Network::checkpoint_heads(&ckpt, &a.from)?);
    let loaded = load_data_for(&a.data, &opts, Split::Train, cfg.seed, &known)?;
    if let Some(arch) = builtin {
        check_builtin_input(arch, &loaded.data.input_shape, &format!("--data {}", a.data))?;
    }
    check_trainable(&loaded.data)?;
    check_pos_weight(&cfg, &loaded.data)?;
    check_recorded_width(&ckpt, &a.data, &loaded.data)?;
    let report_dir = report_dir(a.report.as_deref())?;
    if let (Some((name, w)), None) = (a.head_weight.first(), heads::file_heads(&loaded.data)) {
        return Err(usage(format!(
            "--head-weight {name}={w} weighs a named head's loss; --data {} has one target y (a file of several heads has y.<head> tensors)",
            a.data
        )));
    }
    if a.swap_head.is_some() && heads::file_heads(&loaded.data).is_none() {
        return Err(usage(format!(
            "--swap-head replaces one of several named heads; --data {} has one target y (without --swap-head finetune swaps the head for one that fits it)",
            a.data
        )));
    }
    let gpu = gpu()?;
    let data = &loaded.data;
    if heads::file_heads(data).is_some() {
        eprintln!("{}", heads::describe(&a.data, data));
    } else {
        eprintln!("{}", describe_loaded(&a.data, data, &loaded.skipped));
    }
    let head = head_for(data, a.head_hidden, from.act);
    let multi = heads::file_heads(data).is_some() || ckpt.metadata.contains_key("headswap.heads");
    let mut net = match builtin {
        Some(_) if multi => {
            return Err(usage(
                "--arch reads a model of one head; a file of y.<head> targets needs --from a headswap checkpoint of named heads",
            ));
        }
        // a model of named heads keeps them; --swap-head replaces one
        None if multi => {
            let mut net = load_model(&gpu, &from, &ckpt, head_kind_of(data), &data.input_shape)?;
            check_input_width(&net, &a.data, data)?;
            if let Some((name, swap)) = &a.swap_head {
                let Some(old) = net.head(name) else {
                    let names: Vec<&str> = net.heads().iter().map(|h| h.name.as_str()).collect();
                    return Err(usage(format!(
                        "--swap-head {name}=...: {} has no head {name:?} (its heads: {})",
                        a.from,
                        names.join(", ")
                    )));
                };
                let new = swap.head(name, old.weight, a.head_hidden.map(|h| (h, from.act)));
                let report = net.swap_named_head(name, new, cfg.seed)?;
                eprint!("{report}");
            }
            heads::check_heads(&net, &a.from, &a.data, data)?;
            heads::apply_weights(&mut net, &a.from, &a.head_weight)?;
            net
        }
        // torchvision's model with the data's head at `fc`: the pretrained `fc` is not loaded
        Some(arch) => {
            let (net, report) = load_builtin(&gpu, arch, &ckpt, &from.path, &data.input_shape, BuiltinHead::New(head), cfg.seed)?;
            eprintln!("{}: {report}", from.path);
            net
        }
        None => {
            let mut net = load_model(&gpu, &from, &ckpt, head_kind_of(data), &data.input_shape)?;
            check_input_width(&net, &a.data, data)?;
            let swap = net.swap_head(head, cfg.seed)?;
            eprint!("{swap}");
            net
        }
    };
    let mut training = Training::new(&gpu, cfg, a.json);
    match a.recipe {
        Some(head_epochs) => {
            let (head, all) = training.trainer.fine_tune_recipe(&mut net, data, head_epochs, a.epochs)?;
            training.finish()?;
            if a.json {
                // one JSON document for the run: the head-only pass, then the full one
                outln!("{}", serde_json::json!({"head_only": fit_json(&head), "all": fit_json(&all)}))?;
            } else {
                print_summary(&head, false)?;
                print_summary(&all, false)?;
            }
            check_converged(&head)?;
            check_converged(&all)?;
            write_report(report_dir.as_deref(), "finetune_head", &head, &data.label_names)?;
            write_report(report_dir.as_deref(), "finetune_all", &all, &data.label_names)?;
        }
        None => {
            let lowest = training.trainer.lowest_trainable(&net, data, a.freeze)?;
            eprintln!("training layers {lowest}.. of {} (freeze {})", net.layers().len(), freeze_name(a.freeze));
            let report = training.trainer.fine_tune(&mut net, data, a.freeze, a.epochs)?;
            training.finish()?;
            print_summary(&report, a.json)?;
            check_converged(&report)?;
            write_report(report_dir.as_deref(), "finetune", &report, &data.label_names)?;
        }
    }
    save(&mut net, &a.out, &loaded, storage(a.f16), training.trainer.config.frozen_storage)
}
