//! `headswap train`: a fully specified deterministic run from given weights and a tensor file,
//! so that a result can be checked against another framework.

use crate::args::{Given, ImageArgs, Loss, TrainArgs};
use crate::data::{DataKind, Loaded, Split, align_to_model, check_input_width, describe_loaded, head_kind_of, image_options, load_data};
use crate::model::{ModelSource, check_recorded_width, load_model, model_names, read_model, save, save_state, storage};
use crate::options::{check_outputs, check_pos_weight, train_config};
use crate::output::{Training, check_converged, print_summary};
use crate::{CliResult, gpu, usage};
use headswap::nn::HeadKind;

pub fn run(a: TrainArgs, given: &Given) -> CliResult<()> {
    let cfg = train_config(&a.train, given)?;
    if !a.data.ends_with(".safetensors") {
        return Err(usage("train --data takes a .safetensors file with x and y"));
    }
    let kind = match a.loss {
        Loss::Softmax => HeadKind::Classes,
        Loss::Bce => HeadKind::Labels,
    };
    check_outputs(&a.out, a.save_state.as_deref())?;
    let opts = image_options(&ImageArgs { size: None, rgb: false, normalize: None }, DataKind::Tensor)?;
    let loaded = load_data(&a.data, &opts, Split::Train, cfg.seed)?;
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
    save(&mut net, &a.out, &loaded, storage(a.f16))
}
