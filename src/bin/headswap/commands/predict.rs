//! `headswap predict`: image files read the way the model's training data was, and what the
//! model says about each.

use crate::args::PredictArgs;
use crate::model::{model_names, recorded_layout};
use crate::{CliResult, gpu};
use headswap::Error;
use headswap::checkpoint;
use headswap::data::{self, ImageOptions};
use headswap::nn::{HeadKind, Network};
use std::collections::BTreeMap;
use std::path::Path;

pub fn run(a: PredictArgs) -> CliResult<()> {
    let ckpt = checkpoint::load(Path::new(&a.model))?;
    let (w, h, rgb) = recorded_layout(&ckpt).ok_or_else(|| Error::Format {
        path: a.model.clone(),
        message: "no image size in the metadata: this model was not trained on images".into(),
    })?;
    let opts = if rgb { ImageOptions::rgb(w, h) } else { ImageOptions::gray(w, h) };
    let names = model_names(&ckpt);
    let gpu = gpu()?;
    let net = Network::from_checkpoint(&gpu, &ckpt, &a.model)?;
    let mut x = Vec::new();
    for p in &a.images {
        x.extend(data::image_folder::load_image(Path::new(p), &opts)?);
    }
    let probs = headswap::train::predict(&net, &x, a.images.len(), 64)?;
    let k = net.output_dim();
    let name = |j: usize| names.get(j).cloned().unwrap_or_else(|| j.to_string());
    let mut out = Vec::new();
    for (i, p) in a.images.iter().enumerate() {
        let row = &probs[i * k..(i + 1) * k];
        // the most probable class (the first of equals)
        let best = (0..k).fold(0, |b, j| if row[j] > row[b] { j } else { b });
        let present: Vec<String> = (0..k).filter(|&j| row[j] >= a.threshold).map(name).collect();
        if a.json {
            let probabilities: BTreeMap<String, f32> = (0..k).map(|j| (name(j), row[j])).collect();
            let mut v = serde_json::json!({"image": p, "probabilities": probabilities});
            match net.head_kind() {
                HeadKind::Classes => {
                    v["class"] = name(best).into();
                    v["class_index"] = best.into();
                    v["probability"] = row[best].into();
                }
                HeadKind::Labels => v["labels"] = present.into(),
                HeadKind::Regression(_) => {}
            }
            out.push(v);
        } else {
            let shown: Vec<String> = match net.head_kind() {
                HeadKind::Regression(_) => (0..k).map(|j| format!("{} {:.3}", name(j), row[j])).collect(),
                HeadKind::Classes => vec![format!("{} ({:.3})", name(best), row[best])],
                HeadKind::Labels => {
                    (0..k).map(|j| format!("{}{} {:.3}", name(j), if row[j] >= a.threshold { "✓" } else { "" }, row[j])).collect()
                }
            };
            outln!("{p}: {}", shown.join("  "))?;
        }
    }
    if a.json {
        outln!("{}", serde_json::Value::Array(out))?;
    }
    Ok(())
}
