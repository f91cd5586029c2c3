//! `headswap eval`: a model scored on `--data` (built-in sets on their held-out part).

use crate::args::EvalArgs;
use crate::data::DataKind;
use crate::data::{
    Split, align_to_model, check_head_kind, check_input_width, data_kind, describe_loaded, describe_split, head_kind_of, load_data_for,
};
use crate::model::{
    ModelSource, check_arch_given, check_builtin_input, check_recorded_width, image_options_for_model, load_model, model_names, read_model,
};
use crate::{CliResult, gpu, heads};
use headswap::data::manifest::ManifestHead;
use headswap::kernels::metrics::OrNa;
use headswap::train::{TrainConfig, Trainer};

pub fn run(a: EvalArgs) -> CliResult<()> {
    let src = ModelSource { path: a.model.clone(), arch: a.arch, act: a.activation };
    let kind = data_kind(&a.data)?;
    let ckpt = read_model(&src)?;
    check_arch_given(&src, &ckpt)?;
    let opts = image_options_for_model(&a.image, &ckpt, &a.data, kind)?;
    if let (Some(arch), DataKind::Images | DataKind::Synthetic) = (src.builtin(), kind) {
        check_builtin_input(arch, &opts.input_shape(), &format!("--data {}", a.data))?;
    }
    let known = ManifestHead::of(&headswap::nn::Network::checkpoint_heads(&ckpt, &a.model)?);
    let loaded = load_data_for(&a.data, &opts, Split::HeldOut, a.seed, &known)?;
    if let Some(arch) = src.builtin() {
        check_builtin_input(arch, &loaded.data.input_shape, &format!("--data {}", a.data))?;
    }
    check_recorded_width(&ckpt, &a.data, &loaded.data)?;
    let gpu = gpu()?;
    let net = load_model(&gpu, &src, &ckpt, head_kind_of(&loaded.data), &loaded.data.input_shape)?;
    check_input_width(&net, &a.data, &loaded.data)?;
    heads::check_heads(&net, &a.model, &a.data, &loaded.data)?;
    if net.is_multi_head() {
        eprintln!("{}", heads::describe(&a.data, &loaded.data));
        let trainer = Trainer::new(&gpu, TrainConfig { threshold: a.threshold, ..TrainConfig::default() });
        let m = trainer.evaluate(&net, &loaded.data)?;
        return heads::print_eval(&net, &loaded.data, &m, a.json);
    }
    check_head_kind(&net, &loaded.data)?;
    eprintln!("{}", describe_split(&a.data, loaded.kind, &loaded.data));
    eprintln!("{}", describe_loaded(&a.data, &loaded.data, &loaded.skipped));
    let data = align_to_model(loaded.data, &model_names(&ckpt), net.output_dim())?;
    let trainer = Trainer::new(&gpu, TrainConfig { threshold: a.threshold, ..TrainConfig::default() });
    let m = trainer.evaluate(&net, &data)?;
    if a.json {
        let labels = m.labels.as_ref().map(|l| {
            serde_json::json!({"names": data.label_names, "f1": l.f1, "precision": l.precision, "recall": l.recall, "mean_f1": l.mean_f1})
        });
        let classes = if data.targets.is_multi_label() { serde_json::Value::Null } else { serde_json::json!(data.label_names) };
        return outln!(
            "{}",
            serde_json::json!({"examples": data.n, "loss": m.loss, "accuracy": m.accuracy, "classes": classes, "labels": labels})
        );
    }
    outln!("{} examples, loss {:.4}", data.n, m.loss)?;
    if let Some(acc) = m.accuracy {
        outln!("accuracy {:.2}%", 100.0 * acc)?;
    }
    if let Some(l) = &m.labels {
        for (j, f1) in l.f1.iter().enumerate() {
            let name = data.label_names.get(j).cloned().unwrap_or_else(|| j.to_string());
            outln!("{name:>12}  F1 {:.3}  precision {:.3}  recall {:.3}", OrNa(*f1), OrNa(l.precision[j]), OrNa(l.recall[j]))?;
        }
        outln!("{:>12}  F1 {:.3}", "mean", OrNa(l.mean_f1))?;
    }
    Ok(())
}
