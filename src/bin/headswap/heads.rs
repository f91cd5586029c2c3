//! Networks of several named heads on the command line: a tensor file's `y.<head>` targets
//! checked against a model's heads, `--head-weight NAME=W`, and each head's metrics as text and
//! JSON (train, eval).

use crate::{CliResult, failed, usage};
use headswap::data::{Dataset, Targets};
use headswap::kernels::metrics::OrNa;
use headswap::nn::{HeadKind, Network};
use headswap::train::{HeadMetrics, Metrics};

/// The targets of several heads, when `data` has them.
pub fn file_heads(data: &Dataset) -> Option<&[headswap::data::HeadTargets]> {
    match &data.targets {
        Targets::Heads(h) => Some(h),
        _ => None,
    }
}

/// "3 labels", "4 classes", "2 regression columns": a head's targets in a few words.
fn describe_targets(t: &Targets) -> String {
    match t {
        Targets::Classes { num_classes, .. } => format!("{num_classes} classes"),
        Targets::Labels { k, .. } => format!("{k} labels"),
        Targets::Regression { k, .. } => format!("{k} regression column{}", if *k == 1 { "" } else { "s" }),
        t => t.kind_name().to_string(),
    }
}

/// What was loaded from a file of several heads, as one line for stderr.
pub fn describe(spec: &str, data: &Dataset) -> String {
    let heads = file_heads(data).unwrap_or_default();
    let parts: Vec<String> = heads.iter().map(|h| format!("{} ({})", h.name, describe_targets(&h.targets))).collect();
    format!("data {spec}: {} examples, {} heads: {}", data.n, heads.len(), parts.join(", "))
}

/// The model's named heads and the file's heads are the same: the same names, each of the same
/// kind and width (a classes head at least as many outputs as the file has classes). One line
/// naming the first head that differs, in the command line's terms, before any training.
pub fn check_heads(net: &Network, model: &str, spec: &str, data: &Dataset) -> CliResult<()> {
    let Some(file) = file_heads(data) else {
        if net.is_multi_head() {
            let names: Vec<&str> = net.heads().iter().map(|h| h.name.as_str()).collect();
            return Err(failed(format!(
                "{model} has {} named heads ({}) but --data {spec} has one target per example: give a .safetensors file with a \
                 y.<head> tensor per head and the heads metadata",
                names.len(),
                names.join(", ")
            )));
        }
        return Ok(());
    };
    if !net.is_multi_head() {
        return Err(failed(format!(
            "--data {spec} has targets of {} named heads (y.<head>) but {model} has one unnamed head; build a network of named heads \
             (Network::from_trunk_heads) or give a file with one target y",
            file.len()
        )));
    }
    let model_names: Vec<&str> = net.heads().iter().map(|h| h.name.as_str()).collect();
    for t in file {
        let Some(h) = net.head(&t.name) else {
            return Err(failed(format!(
                "--data {spec} has targets for head {:?}, which {model} does not have (its heads: {})",
                t.name,
                model_names.join(", ")
            )));
        };
        let (kind, width) = match &t.targets {
            Targets::Classes { num_classes, .. } => (HeadKind::Classes, *num_classes),
            Targets::Labels { k, .. } => (HeadKind::Labels, *k),
            Targets::Regression { k, .. } => (h.kind, *k),
            other => return Err(failed(format!("head {:?}: --data {spec} has {} targets", t.name, other.kind_name()))),
        };
        if kind.name() != h.kind.name() {
            return Err(failed(format!(
                "head {:?} is a {} head in {model} but --data {spec} has {} targets for it",
                t.name,
                h.kind.name(),
                kind.name()
            )));
        }
        let fits = if kind == HeadKind::Classes { width <= h.outputs } else { width == h.outputs };
        if !fits {
            return Err(failed(format!(
                "head {:?} has {} outputs in {model} but --data {spec} has {} for it",
                t.name,
                h.outputs,
                describe_targets(&t.targets)
            )));
        }
    }
    if let Some(h) = net.heads().iter().find(|h| !file.iter().any(|t| t.name == h.name)) {
        return Err(failed(format!(
            "{model} has head {:?} ({} outputs) but --data {spec} has no y.{} targets",
            h.name,
            h.kind.name(),
            h.name
        )));
    }
    Ok(())
}

/// `--head-weight NAME=W`, as parsed.
pub fn parse_head_weight(s: &str) -> Result<(String, f32), String> {
    let (name, w) = s.split_once('=').ok_or("must look like NAME=W, e.g. scene=0.5")?;
    let w: f32 = w.trim().parse().map_err(|_| format!("{w:?} is not a number (NAME=W, e.g. scene=0.5)"))?;
    if name.trim().is_empty() {
        return Err("names no head (NAME=W, e.g. scene=0.5)".into());
    }
    if !(w.is_finite() && w >= 0.0) {
        return Err("a head's weight must be a finite number ≥ 0".into());
    }
    Ok((name.trim().to_string(), w))
}

/// Sets each `--head-weight` on `net`; a name the model has no head of is a usage error that
/// lists its heads.
pub fn apply_weights(net: &mut Network, model: &str, weights: &[(String, f32)]) -> CliResult<()> {
    for (name, w) in weights {
        if net.head(name).is_none() {
            let names: Vec<&str> = net.heads().iter().map(|h| h.name.as_str()).collect();
            return Err(usage(format!("--head-weight {name}={w}: {model} has no head {name:?} (its heads: {})", names.join(", "))));
        }
        net.set_head_weight(name, *w)?;
    }
    Ok(())
}

/// A head's quality in a few words: "acc 0.9000", "f1 0.5000", "mae 0.1200 rmse 0.2000".
pub fn score_text(h: &HeadMetrics) -> String {
    match (&h.labels, &h.regression) {
        (Some(l), _) => format!("f1 {:.4}", OrNa(l.mean_f1)),
        (_, Some(r)) => format!("mae {:.4} rmse {:.4}", OrNa(r.mean_mae), OrNa(r.mean_rmse)),
        _ => format!("acc {:.4}", OrNa(h.accuracy)),
    }
}

/// A head's learned uncertainty weight, where it has one: " (learned weight 1.2345, s -0.2107)".
pub fn learned_text(h: &HeadMetrics) -> String {
    match (h.log_var, h.learned_weight()) {
        (Some(s), Some(w)) => format!(" (learned weight {w:.4}, s {s:.4})"),
        _ => String::new(),
    }
}

/// Each head's weighted loss and quality on one line: "objects loss 0.6931 f1 0.5000; scene …",
/// with its learned weight under uncertainty weighting.
pub fn line(m: &Metrics) -> String {
    m.heads
        .iter()
        .map(|h| format!("{} loss {:.4} {}{}", h.name, h.weighted_loss, score_text(h), learned_text(h)))
        .collect::<Vec<_>>()
        .join("; ")
}

/// One head's metrics as JSON; an undefined score is null.
pub fn head_json(h: &HeadMetrics) -> serde_json::Value {
    let mut v = serde_json::json!({
        "name": h.name, "kind": h.kind.name(), "weight": h.weight, "loss": h.weighted_loss, "score": h.score(),
    });
    let o = v.as_object_mut().expect("an object");
    if let (Some(s), Some(w)) = (h.log_var, h.learned_weight()) {
        o.insert("log_var".into(), serde_json::json!(s));
        o.insert("learned_weight".into(), serde_json::json!(w));
    }
    if h.kind == HeadKind::Classes {
        o.insert("accuracy".into(), serde_json::json!(h.accuracy));
    }
    if let Some(l) = &h.labels {
        o.insert(
            "labels".into(),
            serde_json::json!({
                "precision": l.precision, "recall": l.recall, "f1": l.f1, "support": l.support,
                "mean_precision": l.mean_precision, "mean_recall": l.mean_recall, "mean_f1": l.mean_f1,
            }),
        );
    }
    if let Some(r) = &h.regression {
        o.insert(
            "regression".into(),
            serde_json::json!({
                "mae": r.mae, "rmse": r.rmse, "support": r.support, "mean_mae": r.mean_mae, "mean_rmse": r.mean_rmse,
            }),
        );
    }
    v
}

/// Every head's metrics as a JSON array.
pub fn json(m: &Metrics) -> serde_json::Value {
    serde_json::Value::Array(m.heads.iter().map(head_json).collect())
}

/// The names of a head's outputs: the model's, else the file's, else their indices.
fn output_names(net: &Network, data: &Dataset, name: &str, outputs: usize) -> Vec<String> {
    let from_model = net.head(name).and_then(|h| h.label_names.clone());
    let from_file = file_heads(data).and_then(|f| f.iter().find(|t| t.name == name)).map(|t| t.label_names.clone());
    match (from_model, from_file) {
        (Some(n), _) if n.len() == outputs => n,
        (_, Some(n)) if n.len() == outputs => n,
        _ => (0..outputs).map(|j| j.to_string()).collect(),
    }
}

/// `eval` of a network of named heads: the total and each head's metrics, as one JSON document
/// (`heads`: name, kind, weight, loss, and accuracy, per-label precision/recall/F1 with null for
/// n/a, or per-column MAE/RMSE, with the outputs' `names`) or as a readable table.
pub fn print_eval(net: &Network, data: &Dataset, m: &Metrics, json: bool) -> CliResult<()> {
    if json {
        let heads: Vec<serde_json::Value> = m
            .heads
            .iter()
            .map(|h| {
                let mut v = head_json(h);
                let outputs = net.head(&h.name).map_or(0, |i| i.outputs);
                if let Some(o) = v.as_object_mut() {
                    o.insert("names".into(), serde_json::json!(output_names(net, data, &h.name, outputs)));
                }
                v
            })
            .collect();
        return outln!("{}", serde_json::json!({"examples": data.n, "loss": m.loss, "heads": heads}));
    }
    outln!("{} examples, loss {:.4} (the heads' weighted losses summed)", data.n, m.loss)?;
    for h in &m.heads {
        outln!(
            "{:<12} {:<10}  weight {:<6}  loss {:.4}  {}{}",
            h.name,
            h.kind.name(),
            h.weight,
            h.weighted_loss,
            score_text(h),
            learned_text(h)
        )?;
        let outputs = net.head(&h.name).map_or(0, |i| i.outputs);
        let names = output_names(net, data, &h.name, outputs);
        if let Some(l) = &h.labels {
            for (j, f1) in l.f1.iter().enumerate() {
                outln!("  {:>12}  F1 {:.3}  precision {:.3}  recall {:.3}", names[j], OrNa(*f1), OrNa(l.precision[j]), OrNa(l.recall[j]))?;
            }
        }
        if let Some(r) = &h.regression {
            for (j, mae) in r.mae.iter().enumerate() {
                outln!("  {:>12}  MAE {:.4}  RMSE {:.4}", names[j], OrNa(*mae), OrNa(r.rmse[j]))?;
            }
        }
    }
    Ok(())
}

/// `--swap-head NAME=KIND:N`: the head to put in place of the named one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SwapHead {
    pub kind: HeadKind,
    pub outputs: usize,
}

/// Parses `NAME=KIND:N`, KIND `classes`, `labels` or `regression[:mse|l1|huber[:DELTA]]`
/// (`regression:huber:0.5:3`; a bare `regression` is MSE, a bare `huber` δ = 1 as PyTorch's).
pub fn parse_swap_head(s: &str) -> Result<(String, SwapHead), String> {
    use headswap::kernels::loss::RegressionLoss;
    const FORM: &str = "NAME=KIND:N, KIND classes, labels or regression[:mse|l1|huber[:DELTA]] (e.g. scene=classes:5)";
    let (name, spec) = s.split_once('=').ok_or_else(|| format!("must look like {FORM}"))?;
    let name = name.trim();
    if name.is_empty() {
        return Err(format!("names no head ({FORM})"));
    }
    let parts: Vec<&str> = spec.split(':').collect();
    let (kind_parts, n) = parts.split_at(parts.len().saturating_sub(1));
    let outputs: usize = match n.first().map(|n| n.trim().parse::<usize>()) {
        Some(Ok(n)) if n > 0 => n,
        _ => return Err(format!("the number of outputs must be at least 1 ({FORM})")),
    };
    let kind = match kind_parts {
        ["classes"] => HeadKind::Classes,
        ["labels"] => HeadKind::Labels,
        ["regression"] | ["regression", "mse"] => HeadKind::Regression(RegressionLoss::Mse),
        ["regression", "l1"] => HeadKind::Regression(RegressionLoss::L1),
        ["regression", "huber"] => HeadKind::Regression(RegressionLoss::Huber(1.0)),
        ["regression", "huber", delta] => match delta.trim().parse::<f32>() {
            Ok(d) if d.is_finite() && d > 0.0 => HeadKind::Regression(RegressionLoss::Huber(d)),
            _ => return Err(format!("huber's DELTA must be a positive number ({FORM})")),
        },
        _ => return Err(format!("unknown head kind {:?} ({FORM})", kind_parts.join(":"))),
    };
    Ok((name.to_string(), SwapHead { kind, outputs }))
}

impl SwapHead {
    /// A fresh head of this kind named `name`, of `weight` in the loss, behind an optional hidden layer.
    pub fn head(&self, name: &str, weight: f32, hidden: Option<(usize, headswap::kernels::Activation)>) -> headswap::nn::Head {
        use headswap::nn::Head;
        let head = match self.kind {
            HeadKind::Classes => Head::classes(self.outputs),
            HeadKind::Labels => Head::labels(self.outputs),
            HeadKind::Regression(loss) => Head::regression(self.outputs, loss),
        };
        let head = head.named(name).weight(weight);
        match hidden {
            Some((h, act)) => head.hidden(h, act),
            None => head,
        }
    }
}

/// A fresh head for one head's targets in a file: as many classes, labels or regression
/// columns (MSE) as the file has, named as the file names it.
pub fn head_for_targets(t: &headswap::data::HeadTargets) -> CliResult<headswap::nn::Head> {
    use headswap::kernels::loss::RegressionLoss;
    use headswap::nn::Head;
    let head = match &t.targets {
        Targets::Classes { num_classes, .. } => Head::classes(*num_classes),
        Targets::Labels { k, .. } => Head::labels(*k),
        Targets::Regression { k, .. } => Head::regression(*k, RegressionLoss::Mse),
        other => return Err(failed(format!("head {:?}: {} targets cannot define a head", t.name, other.kind_name()))),
    };
    Ok(head.named(&t.name))
}
