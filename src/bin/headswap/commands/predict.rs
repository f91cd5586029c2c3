//! `headswap predict`: image files read the way the model's training data was, and what the
//! model says about each; or with `--data DATA --out FILE` the logits (and trunk features) of
//! every example of DATA, written to a safetensors file to compare with another framework's.

use crate::args::{ImageArgs, PredictArgs};
use crate::data::{DataKind, Split, data_kind, image_options, load_data};
use crate::model::{
    ModelSource, check_arch_given, check_builtin_input, image_options_for_model, load_model, model_names, read_model, recorded_layout,
};
use crate::options::check_outputs;
use crate::{CliResult, failed, gpu};
use headswap::Error;
use headswap::checkpoint::{self, Checkpoint, NamedTensor, StorageDtype};
use headswap::data::{self, tensor_file};
use headswap::nn::{HeadKind, Network};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub fn run(a: PredictArgs) -> CliResult<()> {
    let src = ModelSource { path: a.model.clone(), arch: a.arch, act: a.activation };
    let ckpt = read_model(&src)?;
    check_arch_given(&src, &ckpt)?;
    match (&a.data, &a.out) {
        (Some(spec), Some(out)) => predict_data(&a, spec, out, &src, &ckpt),
        _ => predict_images(&a, &src, &ckpt),
    }
}

/// The network, checked to read `d` features per example (said with both numbers).
fn network(src: &ModelSource, ckpt: &Checkpoint, shape: &[usize], spec: &str) -> CliResult<Network> {
    let gpu = gpu()?;
    let net = load_model(&gpu, src, ckpt, HeadKind::Classes, shape)?;
    let d: usize = shape.iter().product();
    if net.input_dim() != d {
        return Err(failed(format!("the model reads {} input features; {spec} gives {d} per example (shape {shape:?})", net.input_dim())));
    }
    Ok(net)
}

/// `--data DATA --out FILE`: `logits [n, k]`, and with `--features` `features [n, d]`, for every
/// example of DATA in its order. A tensor file's `x` is read alone (a `y` is not needed).
fn predict_data(a: &PredictArgs, spec: &str, out: &Path, src: &ModelSource, ckpt: &Checkpoint) -> CliResult<()> {
    let kind = data_kind(spec)?;
    check_outputs(out, None)?;
    let (x, n, shape) = if kind == DataKind::Tensor {
        // --size, --rgb and --normalize mean nothing for a tensor file: refused as elsewhere
        image_options(&ImageArgs::from(&a.image), kind)?;
        let inputs = tensor_file::load_inputs(Path::new(spec))?;
        (inputs.x, inputs.n, inputs.input_shape)
    } else {
        let opts = image_options_for_model(&a.image, ckpt, spec, kind)?;
        if let (Some(arch), DataKind::Images | DataKind::Synthetic) = (src.builtin(), kind) {
            check_builtin_input(arch, &opts.input_shape(), &format!("--data {spec}"))?;
        }
        let loaded = load_data(spec, &opts, Split::HeldOut, 0)?;
        (loaded.data.x, loaded.data.n, loaded.data.input_shape)
    };
    if let Some(arch) = src.builtin() {
        check_builtin_input(arch, &shape, &format!("--data {spec}"))?;
    }
    let net = network(src, ckpt, &shape, &format!("--data {spec}"))?;
    let mut result = Checkpoint::new();
    let k = net.output_dim();
    let mut wrote = if net.is_multi_head() {
        // one logits.<head> [n, outputs] per named head, in the network's order
        let mut wrote = Vec::new();
        for ((name, logits), h) in headswap::train::predict_heads_logits(&net, &x, n, a.batch)?.into_iter().zip(net.heads()) {
            result.push(NamedTensor::new(format!("logits.{name}"), vec![n, h.outputs], logits)?)?;
            if let Some(names) = h.label_names.as_ref().filter(|l| l.len() == h.outputs) {
                result.metadata.insert(format!("label_names.{name}"), names.join(","));
            }
            wrote.push(format!("logits.{name} [{n}, {}]", h.outputs));
        }
        let heads: Vec<String> = net.heads().iter().map(|h| format!("{}:{}", h.name, h.kind.name())).collect();
        result.metadata.insert("heads".into(), heads.join(","));
        wrote.join(", ")
    } else {
        result.push(NamedTensor::new("logits", vec![n, k], headswap::train::predict_logits(&net, &x, n, a.batch)?)?)?;
        format!("logits [{n}, {k}]")
    };
    if a.features {
        let f = headswap::train::predict_features(&net, &x, n, a.batch)?;
        let d = net.trunk_output_dim();
        result.push(NamedTensor::new("features", vec![n, d], f)?)?;
        wrote += &format!(" and features [{n}, {d}]");
    }
    result.metadata.insert("format".into(), "headswap.predictions.v1".into());
    let names = model_names(ckpt);
    if !net.is_multi_head() && names.len() == k {
        result.metadata.insert("label_names".into(), names.join(","));
    }
    // checkpoint::save writes a temporary file and renames it: never a half-written result
    checkpoint::save(out, &result, StorageDtype::F32)?;
    eprintln!("wrote {wrote} for {n} examples of {spec} to {}", out.display());
    Ok(())
}

/// One head's predictions for the images: its name (`None` for a network's only head), kind,
/// output names and `[n, outputs]` probabilities or values.
type HeadValues = (Option<String>, HeadKind, Vec<String>, Vec<f32>);

/// `predict IMAGE...`: each image's class or labels, as text or JSON; for a network of named
/// heads, every head's (class, labels or regression values), in the network's order.
fn predict_images(a: &PredictArgs, src: &ModelSource, ckpt: &Checkpoint) -> CliResult<()> {
    if recorded_layout(ckpt).is_none() && src.arch.is_none() {
        return Err(Error::Format {
            path: a.model.clone(),
            message: "no image size in the metadata: this model was not trained on images".into(),
        }
        .into());
    }
    let opts = image_options_for_model(&a.image, ckpt, "IMAGE", DataKind::Images)?;
    if let Some(arch) = src.builtin() {
        check_builtin_input(arch, &opts.input_shape(), "the images")?;
    }
    let names = model_names(ckpt);
    let net = network(src, ckpt, &opts.input_shape(), "the images")?;
    let mut x = Vec::new();
    for p in &a.images {
        x.extend(data::image_folder::load_image(&PathBuf::from(p), &opts)?);
    }
    let n = a.images.len();
    // per head: (name, kind, output names, [n, outputs] probabilities or values); one unnamed
    // head for a network of one head
    let heads: Vec<HeadValues> = if net.is_multi_head() {
        headswap::train::predict_heads(&net, &x, n, a.batch)?
            .into_iter()
            .zip(net.heads())
            .map(|((name, values), h)| {
                let names = match &h.label_names {
                    Some(l) if l.len() == h.outputs => l.clone(),
                    // a one-column regression or labels head is named by its head
                    _ if h.outputs == 1 && h.kind != HeadKind::Classes => vec![name.clone()],
                    _ => (0..h.outputs).map(|j| j.to_string()).collect(),
                };
                (Some(name), h.kind, names, values)
            })
            .collect()
    } else {
        let k = net.output_dim();
        let names = (0..k).map(|j| names.get(j).cloned().unwrap_or_else(|| j.to_string())).collect();
        vec![(None, net.head_kind(), names, headswap::train::predict(&net, &x, n, a.batch)?)]
    };
    let mut out = Vec::new();
    for (i, p) in a.images.iter().enumerate() {
        let mut texts = Vec::new();
        let mut json = serde_json::json!({"image": p});
        let mut head_json = Vec::new();
        for (head, kind, names, values) in &heads {
            let k = names.len();
            let (text, v) = describe(*kind, &values[i * k..(i + 1) * k], names, a.threshold);
            match head {
                // one head: its fields at the top of the image's object, as before
                None => {
                    texts.push(text);
                    if let (Some(o), Some(f)) = (json.as_object_mut(), v.as_object()) {
                        o.extend(f.clone());
                    }
                }
                Some(name) => {
                    texts.push(format!("{name}: {text}"));
                    let mut v = v;
                    v["name"] = name.clone().into();
                    v["kind"] = kind.name().into();
                    head_json.push(v);
                }
            }
        }
        if a.json {
            if net.is_multi_head() {
                json["heads"] = head_json.into();
            }
            out.push(json);
        } else {
            outln!("{p}: {}", texts.join("; "))?;
        }
    }
    if a.json {
        outln!("{}", serde_json::Value::Array(out))?;
    }
    Ok(())
}

/// What one head says about one image, as text and as JSON: the most probable class, the labels
/// present (✓ at `threshold`) with their probabilities, or the regression values.
fn describe(kind: HeadKind, row: &[f32], names: &[String], threshold: f32) -> (String, serde_json::Value) {
    let k = row.len();
    match kind {
        HeadKind::Classes => {
            // the most probable class (the first of equals)
            let best = (0..k).fold(0, |b, j| if row[j] > row[b] { j } else { b });
            let probabilities: BTreeMap<&str, f32> = (0..k).map(|j| (names[j].as_str(), row[j])).collect();
            let v =
                serde_json::json!({"probabilities": probabilities, "class": names[best], "class_index": best, "probability": row[best]});
            (format!("{} ({:.3})", names[best], row[best]), v)
        }
        HeadKind::Labels => {
            let probabilities: BTreeMap<&str, f32> = (0..k).map(|j| (names[j].as_str(), row[j])).collect();
            let present: Vec<&str> = (0..k).filter(|&j| row[j] >= threshold).map(|j| names[j].as_str()).collect();
            let text =
                (0..k).map(|j| format!("{}{} {:.3}", names[j], if row[j] >= threshold { "✓" } else { "" }, row[j])).collect::<Vec<_>>();
            (text.join("  "), serde_json::json!({"probabilities": probabilities, "labels": present}))
        }
        HeadKind::Regression(_) => {
            let values: BTreeMap<&str, f32> = (0..k).map(|j| (names[j].as_str(), row[j])).collect();
            let text = (0..k).map(|j| format!("{} {:.3}", names[j], row[j])).collect::<Vec<_>>();
            (text.join("  "), serde_json::json!({"values": values}))
        }
    }
}
