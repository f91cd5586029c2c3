//! Networks to and from checkpoints, with PyTorch's names and layouts: a layer's parameters are
//! `<module path>.weight` and `.bias` ([`Network::module_names`]; a layer built without a name is
//! module `<i>` of a `torch.nn.Sequential` in which every non-identity activation is a module of
//! its own: Linear, ReLU, Linear → `0.*`, `2.*`), weights `[out, in]`, biases `[out]`. Any
//! state_dict under those names loads into a built network with [`Network::load_state_dict`],
//! which reports what it applied, missed, did not use and found in another shape. The architecture
//! (sizes, activations, which layers are the head) is in the metadata under
//! [`LAYERS_KEY`](crate::checkpoint::LAYERS_KEY) as JSON, so a headswap file needs nothing else to
//! load; a state_dict from PyTorch loads with [`Network::from_state_dict`], given the activation
//! between layers and how many of the top layers form the head.
//!
//! A network's label names and input layout travel in the metadata too, under the keys the CLI
//! has always used (documented in [`crate::checkpoint`]). Integer tensors (BatchNorm's
//! `num_batches_tracked`) are never parameters here: the loaders ignore those no parameter names,
//! and refuse one stored under a parameter's name.

use super::{AdaptivePoolSpec, ChannelMulSpec, ConcatSpec, DropoutSpec};
use super::{AddSpec, BatchNormSpec, BceReduction, Conv2dSpec, DenseSpec, HeadKind, LayerSpec, Network, Pool2dSpec, RegressionLoss, Trunk};
use crate::checkpoint::{
    self, CHANNELS_KEY, Checkpoint, Expect, IMAGE_SIZE_KEY, INPUT_SHAPE_KEY, LABEL_NAMES_KEY, NamedTensor, StorageDtype,
};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::gpu::Tensor;
use crate::kernels::Activation;
use std::path::Path;

/// Metadata key naming the head kind (`classes` or `labels`).
pub const HEAD_KIND_KEY: &str = "headswap.head_kind";
/// Metadata key of a network of named heads: a JSON array, per head in order, of its `name`,
/// `kind` (`classes`, `labels`, `regression`), `loss` and `delta` (regression: `mse`, `l1`,
/// `huber` with its δ), `weight`, number of `layers`, `outputs` and optional `label_names`,
/// and for a labels head optional `pos_weight` and `reduction` (`sum_labels_mean_examples`,
/// `mean_labelled`, `mean_all`).
pub const HEADS_KEY: &str = "headswap.heads";
/// Metadata key of a network whose trunk parameters are stored in f16
/// ([`Network::set_trunk_storage`]): `f16`; absent for f32. The tensors hold the f16 values
/// (exactly, as F32 or F16), and loading the file stores the trunk in f16 again.
pub const TRUNK_STORAGE_KEY: &str = "headswap.trunk_storage";

fn heads_json(heads: &[super::HeadInfo]) -> String {
    let items: Vec<serde_json::Value> = heads
        .iter()
        .map(|h| {
            let mut v = serde_json::json!({
                "name": h.name,
                "kind": h.kind.name(),
                "weight": h.weight,
                "layers": h.layers.len(),
                "outputs": h.outputs,
            });
            if let HeadKind::Regression(loss) = h.kind {
                let (name, delta) = match loss {
                    RegressionLoss::Mse => ("mse", None),
                    RegressionLoss::L1 => ("l1", None),
                    RegressionLoss::Huber(d) => ("huber", Some(d)),
                };
                v["loss"] = name.into();
                if let Some(d) = delta {
                    v["delta"] = d.into();
                }
            }
            if let Some(n) = &h.label_names {
                v["label_names"] = n.clone().into();
            }
            if let Some(p) = &h.pos_weight {
                v["pos_weight"] = p.clone().into();
            }
            if let Some(r) = h.bce_reduction {
                v["reduction"] = reduction_name(r).into();
            }
            if let Some(s) = h.log_var {
                v["log_var"] = s.into();
            }
            v
        })
        .collect();
    serde_json::Value::Array(items).to_string()
}

fn reduction_name(r: BceReduction) -> &'static str {
    match r {
        BceReduction::SumLabelsMeanExamples => "sum_labels_mean_examples",
        BceReduction::MeanLabelled => "mean_labelled",
        BceReduction::MeanAll => "mean_all",
    }
}

/// The heads [`HEADS_KEY`] describes, their layers numbered from `t` (the trunk's depth) on.
fn heads_from_json(origin: &str, json: &str, t: usize) -> Result<Vec<super::HeadInfo>> {
    let bad = |m: String| Error::format(origin, format!("{HEADS_KEY}: {m}"));
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let items = v.as_array().ok_or_else(|| bad("must be a JSON array".into()))?;
    let mut heads = Vec::new();
    let mut next = t;
    for (k, item) in items.iter().enumerate() {
        let field = |f: &str| item.get(f).ok_or_else(|| bad(format!("head {k} has no \"{f}\"")));
        let count = |f: &str| -> Result<usize> {
            field(f)?
                .as_u64()
                .filter(|&n| n < (1 << 31))
                .map(|n| n as usize)
                .ok_or_else(|| bad(format!("head {k}: \"{f}\" must be a count")))
        };
        let name = field("name")?.as_str().ok_or_else(|| bad(format!("head {k}: \"name\" must be a string")))?.to_string();
        let kind = match (field("kind")?.as_str(), item.get("loss").and_then(|l| l.as_str())) {
            (Some("classes"), _) => HeadKind::Classes,
            (Some("labels"), _) => HeadKind::Labels,
            (Some("regression"), Some("mse")) => HeadKind::Regression(RegressionLoss::Mse),
            (Some("regression"), Some("l1")) => HeadKind::Regression(RegressionLoss::L1),
            (Some("regression"), Some("huber")) => {
                let d = field("delta")?.as_f64().ok_or_else(|| bad(format!("head {name:?}: \"delta\" must be a number")))?;
                HeadKind::Regression(RegressionLoss::Huber(d as f32))
            }
            (kind, loss) => return Err(bad(format!("head {name:?}: unknown kind {kind:?} (loss {loss:?})"))),
        };
        let weight = field("weight")?.as_f64().ok_or_else(|| bad(format!("head {name:?}: \"weight\" must be a number")))? as f32;
        let layers = count("layers")?;
        let label_names = match item.get("label_names") {
            None => None,
            Some(n) => Some(serde_json::from_value::<Vec<String>>(n.clone()).map_err(|e| bad(format!("head {name:?}: label_names: {e}")))?),
        };
        let pos_weight = match item.get("pos_weight") {
            None => None,
            Some(p) => Some(serde_json::from_value::<Vec<f32>>(p.clone()).map_err(|e| bad(format!("head {name:?}: pos_weight: {e}")))?),
        };
        let bce_reduction = match item.get("reduction").map(|r| r.as_str()) {
            None => None,
            Some(Some("sum_labels_mean_examples")) => Some(BceReduction::SumLabelsMeanExamples),
            Some(Some("mean_labelled")) => Some(BceReduction::MeanLabelled),
            Some(Some("mean_all")) => Some(BceReduction::MeanAll),
            Some(other) => return Err(bad(format!("head {name:?}: unknown reduction {other:?}"))),
        };
        let log_var = match item.get("log_var") {
            None => None,
            Some(s) => Some(
                s.as_f64().filter(|s| s.is_finite()).ok_or_else(|| bad(format!("head {name:?}: \"log_var\" must be a finite number")))?
                    as f32,
            ),
        };
        heads.push(super::HeadInfo {
            name,
            kind,
            weight,
            layers: next..next + layers,
            outputs: count("outputs")?,
            label_names,
            pos_weight,
            bce_reduction,
            log_var,
        });
        next += layers;
    }
    Ok(heads)
}

/// The colour images are read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageChannels {
    /// One channel (`headswap.channels` = `gray`).
    Gray,
    /// Three channels, R, G, B (`rgb`).
    Rgb,
}

impl ImageChannels {
    /// 1 or 3.
    pub fn count(self) -> usize {
        match self {
            ImageChannels::Gray => 1,
            ImageChannels::Rgb => 3,
        }
    }
    /// `gray` or `rgb`, as in the metadata.
    pub fn name(self) -> &'static str {
        match self {
            ImageChannels::Gray => "gray",
            ImageChannels::Rgb => "rgb",
        }
    }
}

/// How one example of a network's input is laid out, as recorded in its checkpoint.
///
/// Two cases, because the metadata has always told them apart: `headswap.input_shape` alone for
/// data that are not image files (a tensor file's rows may be `[784]` or `[1, 28, 28]`), and with
/// `headswap.image_size` and `headswap.channels` beside it for a model trained on image files,
/// which says how to read new images for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputLayout {
    /// The shape of one example (its product is the input width), e.g. `[784]` or `[1, 28, 28]`.
    Shape(Vec<usize>),
    /// Images read from files at `width` × `height` pixels: shape `[channels, height, width]`.
    Image { channels: ImageChannels, height: usize, width: usize },
}

impl InputLayout {
    /// Feature vectors of `d` values.
    pub fn features(d: usize) -> InputLayout {
        InputLayout::Shape(vec![d])
    }

    /// The shape of one example: the given one, or `[channels, height, width]`.
    pub fn shape(&self) -> Vec<usize> {
        match self {
            InputLayout::Shape(s) => s.clone(),
            InputLayout::Image { channels, height, width } => vec![channels.count(), *height, *width],
        }
    }

    /// Every dimension positive and the product `inputs`; the message says what is wrong.
    fn check(&self, inputs: usize) -> std::result::Result<(), String> {
        let shape = self.shape();
        if shape.is_empty() || shape.contains(&0) {
            return Err(format!("input shape {shape:?} needs at least one dimension, each positive"));
        }
        match checkpoint::numel(&shape) {
            Some(n) if n == inputs => Ok(()),
            _ => Err(format!("input shape {shape:?} does not multiply to the network's {inputs} inputs")),
        }
    }

    /// Writes the `headswap.input_shape` key, and for images `headswap.image_size` and
    /// `headswap.channels`, in the CLI's formats.
    pub fn write_metadata(&self, metadata: &mut std::collections::BTreeMap<String, String>) {
        let dims: Vec<String> = self.shape().iter().map(usize::to_string).collect();
        metadata.insert(INPUT_SHAPE_KEY.into(), dims.join(","));
        if let InputLayout::Image { channels, height, width } = self {
            metadata.insert(IMAGE_SIZE_KEY.into(), format!("{width}x{height}"));
            metadata.insert(CHANNELS_KEY.into(), channels.name().into());
        }
    }

    /// The layout the metadata records, `None` without any of its keys; a malformed or
    /// inconsistent value is an [`Error::Format`] naming `origin` and the key. (Whether it fits a
    /// network's input width is [`Network::from_checkpoint`]'s check.)
    pub fn from_metadata(metadata: &std::collections::BTreeMap<String, String>, origin: &str) -> Result<Option<InputLayout>> {
        let bad = |key: &str, what: String| Error::format(origin, format!("{key}: {what}"));
        let positive = |key: &str, s: &str| -> Result<usize> {
            s.trim().parse::<usize>().ok().filter(|&n| n > 0).ok_or_else(|| bad(key, format!("{s:?} is not a positive integer")))
        };
        let shape = match metadata.get(INPUT_SHAPE_KEY) {
            Some(s) => Some(s.split(',').map(|d| positive(INPUT_SHAPE_KEY, d)).collect::<Result<Vec<_>>>()?),
            None => None,
        };
        let channels = match metadata.get(CHANNELS_KEY).map(String::as_str) {
            None => None,
            Some("gray") => Some(ImageChannels::Gray),
            Some("rgb") => Some(ImageChannels::Rgb),
            Some(other) => return Err(bad(CHANNELS_KEY, format!("{other:?} is neither \"gray\" nor \"rgb\""))),
        };
        let Some(size) = metadata.get(IMAGE_SIZE_KEY) else {
            if channels.is_some() {
                return Err(bad(CHANNELS_KEY, format!("given without {IMAGE_SIZE_KEY}")));
            }
            return Ok(shape.map(InputLayout::Shape));
        };
        let (w, h) = size.split_once('x').ok_or_else(|| bad(IMAGE_SIZE_KEY, format!("{size:?} is not <width>x<height>")))?;
        // the CLI's reader took a missing channels key as gray
        let channels = channels.unwrap_or(ImageChannels::Gray);
        let image = InputLayout::Image { channels, height: positive(IMAGE_SIZE_KEY, h)?, width: positive(IMAGE_SIZE_KEY, w)? };
        if let Some(shape) = shape
            && shape != image.shape()
        {
            return Err(bad(
                INPUT_SHAPE_KEY,
                format!("{shape:?} is not the [channels, height, width] of {} images of {size}", channels.name()),
            ));
        }
        Ok(Some(image))
    }
}

/// One name per output; the message names both counts.
pub(crate) fn check_label_names(names: &[String], outputs: usize) -> Result<()> {
    if names.len() != outputs {
        return Err(Error::invalid(format!("{} label names for {outputs} outputs; give one name per class or label", names.len())));
    }
    Ok(())
}

/// The label names the metadata records under `headswap.label_names`: `None` without the key or
/// for `[]` (what the CLI wrote for data without names); anything but a JSON array of strings is
/// an [`Error::Format`] naming `origin` and the key. (That there is one per output is
/// [`Network::from_checkpoint`]'s check.)
pub fn label_names_from_metadata(metadata: &std::collections::BTreeMap<String, String>, origin: &str) -> Result<Option<Vec<String>>> {
    let Some(json) = metadata.get(LABEL_NAMES_KEY) else { return Ok(None) };
    let names: Vec<String> =
        serde_json::from_str(json).map_err(|e| Error::format(origin, format!("{LABEL_NAMES_KEY} is not a JSON array of strings: {e}")))?;
    Ok(if names.is_empty() { None } else { Some(names) })
}

/// An error's message without its kind.
fn message(e: Error) -> String {
    match e {
        Error::Format { message, .. } | Error::Shape { what: message } | Error::InvalidInput(message) => message,
        other => other.to_string(),
    }
}

/// `ckpt` without the integer tensors no parameter asks for (logged as ignored); an integer
/// tensor under a parameter's name stays, so that [`Checkpoint::check`] reports it.
fn without_unwanted_ints(ckpt: &Checkpoint, wanted: impl Fn(&str) -> bool) -> Checkpoint {
    let mut c = ckpt.clone();
    let ignored: Vec<String> = c.int_tensors.iter().filter(|t| !wanted(&t.name)).map(|t| format!("{} ({})", t.name, t.dtype)).collect();
    if !ignored.is_empty() {
        tracing::info!(tensors = %ignored.join(", "), "ignoring integer tensors no parameter uses");
    }
    c.int_tensors.retain(|t| wanted(&t.name));
    c
}

/// The `torch.nn.Sequential` module index of each layer: every layer is a module, a
/// non-identity activation after it is one more, and so is the `nn.Flatten` between the last
/// spatial layer (convolution, pooling) and the first dense one — the layout of
/// `Sequential(Conv2d, ReLU, MaxPool2d, Flatten, Linear, ReLU, Linear)`.
pub fn sequential_indices(layers: &[LayerSpec]) -> Vec<usize> {
    let mut idx = 0;
    let mut spatial = false;
    layers
        .iter()
        .map(|l| {
            // (a channel-last flatten is the flatten itself)
            if spatial && !l.is_spatial() && !matches!(l, LayerSpec::GlobalAvgPool { .. } | LayerSpec::ChannelLast { .. }) {
                idx += 1; // nn.Flatten
            }
            spatial = l.is_spatial();
            let here = idx;
            idx += if l.activation() == Activation::Identity { 1 } else { 2 };
            if matches!(l, LayerSpec::GlobalAvgPool { .. }) {
                idx += 1; // AdaptiveAvgPool2d(1) then Flatten
            }
            here
        })
        .collect()
}

fn layer_json(l: &LayerSpec, part: &str) -> serde_json::Value {
    let mut v = layer_json_fields(l, part);
    // written only where it is not the default, so files of convolutions with a bias are unchanged
    if let LayerSpec::Conv2d(c) = l
        && !c.bias
    {
        v["bias"] = serde_json::json!(false);
    }
    v
}

fn layer_json_fields(l: &LayerSpec, part: &str) -> serde_json::Value {
    match *l {
        LayerSpec::Dense(d) => serde_json::json!({
            "type": "dense", "inputs": d.inputs, "outputs": d.outputs, "activation": d.activation.name(), "part": part,
        }),
        LayerSpec::Conv2d(c) => {
            let mut v = serde_json::json!({
                "type": "conv2d", "in_channels": c.in_channels, "height": c.height, "width": c.width,
                "out_channels": c.out_channels, "kernel": per_axis_json(&c.kernel), "stride": per_axis_json(&c.stride),
                "padding": per_axis_json(&c.padding), "activation": c.activation.name(), "part": part,
            });
            if c.groups != 1 {
                v["groups"] = serde_json::json!(c.groups);
            }
            v
        }
        LayerSpec::MaxPool2d(p) | LayerSpec::AvgPool2d(p) => {
            let mut v = serde_json::json!({
                "type": if matches!(l, LayerSpec::MaxPool2d(_)) { "max_pool2d" } else { "avg_pool2d" },
                "channels": p.channels, "height": p.height, "width": p.width, "kernel": per_axis_json(&p.kernel),
                "stride": per_axis_json(&p.stride), "padding": per_axis_json(&p.padding), "part": part,
            });
            if p.ceil_mode {
                v["ceil_mode"] = serde_json::json!(true);
            }
            v
        }
        LayerSpec::GlobalAvgPool { channels, height, width } => serde_json::json!({
            "type": "global_avg_pool", "channels": channels, "height": height, "width": width, "part": part,
        }),
        LayerSpec::Add(a) => serde_json::json!({
            "type": "add", "features": a.features, "chw": a.chw, "activation": a.activation.name(), "part": part,
        }),
        LayerSpec::BatchNorm(b) => serde_json::json!({
            "type": if b.spatial { "batch_norm2d" } else { "batch_norm1d" },
            "channels": b.channels, "height": b.height, "width": b.width, "eps": b.eps, "momentum": b.momentum,
            "activation": b.activation.name(), "part": part,
        }),
        LayerSpec::Dropout(d) => serde_json::json!({
            "type": "dropout", "features": d.features, "chw": d.chw, "p": d.p, "part": part,
        }),
        LayerSpec::AdaptiveAvgPool2d(a) => serde_json::json!({
            "type": "adaptive_avg_pool2d", "channels": a.channels, "height": a.height, "width": a.width,
            "out_height": a.out_height, "out_width": a.out_width, "part": part,
        }),
        LayerSpec::ChannelLast { channels, height, width } => serde_json::json!({
            "type": "channel_last", "channels": channels, "height": height, "width": width, "part": part,
        }),
        LayerSpec::ChannelMul(m) => serde_json::json!({
            "type": "channel_mul", "channels": m.channels, "height": m.height, "width": m.width, "part": part,
        }),
        LayerSpec::Concat(c) => serde_json::json!({
            "type": "concat", "channels": c.part_channels(), "height": c.height, "width": c.width, "part": part,
        }),
    }
}

/// A size per axis (or per side) as the layer JSON writes it: one number where all are equal
/// (every file before rectangular kernels and asymmetric padding, unchanged), else the list
/// (`[KH, KW]`, `[SH, SW]`, a convolution's `[top, bottom, left, right]`, a pool's `[PH, PW]`).
fn per_axis_json(v: &[usize]) -> serde_json::Value {
    if v.iter().all(|&x| x == v[0]) { serde_json::json!(v[0]) } else { serde_json::json!(v) }
}

/// Reads what [`per_axis_json`] writes: a number (the same on every axis or side) or a list of
/// exactly `N`.
fn per_axis_from_json<const N: usize>(v: &serde_json::Value) -> Option<[usize; N]> {
    let one = |x: &serde_json::Value| x.as_u64().filter(|&n| n < (1 << 31)).map(|n| n as usize);
    match v {
        serde_json::Value::Array(a) => a.iter().map(one).collect::<Option<Vec<_>>>()?.try_into().ok(),
        x => one(x).map(|n| [n; N]),
    }
}

fn layers_json(net: &Network) -> String {
    let t = net.trunk.len();
    let layers = net.layers();
    let items: Vec<serde_json::Value> = layers
        .iter()
        .zip(sequential_indices(&layers))
        .enumerate()
        .map(|(i, (l, seq))| {
            let mut item = layer_json(l, if i < t { "trunk" } else { "head" });
            // a chain's layer reads the one before it; only other wiring is written, and only a
            // name other than the Sequential index, so a chain's metadata is what it always was
            if net.sources[i] != [i] {
                item["sources"] = serde_json::json!(net.sources[i]);
            }
            if net.names[i] != seq.to_string() {
                item["name"] = serde_json::json!(net.names[i]);
            }
            item
        })
        .collect();
    serde_json::Value::Array(items).to_string()
}

/// The architecture a checkpoint's [`LAYERS_KEY`](checkpoint::LAYERS_KEY) describes.
struct Layers {
    trunk: Trunk,
    head: Vec<LayerSpec>,
    /// The head's module path, when its layers carry given names.
    head_module: Option<String>,
    /// A network of named heads: every head layer's given name and sources (checked against the
    /// heads by [`Network::from_head_layers`]); empty otherwise.
    head_names: Vec<Option<String>>,
    head_sources: Vec<Vec<usize>>,
}

/// The head's module path from its layers' given names: a one-layer head's name, or the path
/// of the `nn.Sequential` whose indices the layers carry (`classifier` for `classifier.1`);
/// `None` where the names are not of that form (they are then kept per layer in the file only).
fn head_module_of(names: &[Option<String>]) -> Option<String> {
    match names {
        [Some(one)] => Some(one.clone()),
        [Some(first), ..] => {
            let (module, _) = first.rsplit_once('.')?;
            names
                .iter()
                .all(|n| n.as_deref().is_some_and(|n| n.rsplit_once('.').is_some_and(|(m, _)| m == module)))
                .then(|| module.to_string())
        }
        _ => None,
    }
}

fn parse_layers(path: &str, json: &str, named_heads: bool) -> Result<Layers> {
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| Error::format(path, format!("{} is not valid JSON: {e}", checkpoint::LAYERS_KEY)))?;
    let items = v.as_array().ok_or_else(|| Error::format(path, format!("{} must be a JSON array", checkpoint::LAYERS_KEY)))?;
    let (mut trunk, mut head, mut sources, mut names) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (i, item) in items.iter().enumerate() {
        let field = |k: &str| item.get(k).ok_or_else(|| Error::format(path, format!("layer {i} has no \"{k}\"")));
        let num = |k: &str| -> Result<usize> {
            field(k)?
                .as_u64()
                .filter(|&n| n < (1 << 31))
                .map(|n| n as usize)
                .ok_or_else(|| Error::format(path, format!("layer {i}: \"{k}\" must be a non-negative integer")))
        };
        let activation = || -> Result<Activation> {
            let name = field("activation")?.as_str().unwrap_or("");
            Activation::parse(name).ok_or_else(|| Error::format(path, format!("layer {i}: unknown activation {name:?}")))
        };
        // kernel, stride, padding: a number, or one per axis (side); see per_axis_json
        fn axes<const N: usize>(item: &serde_json::Value, path: &str, i: usize, k: &str) -> Result<[usize; N]> {
            let v = item.get(k).ok_or_else(|| Error::format(path, format!("layer {i} has no \"{k}\"")))?;
            per_axis_from_json(v)
                .ok_or_else(|| Error::format(path, format!("layer {i}: \"{k}\" must be a non-negative integer or a list of {N}")))
        }
        let flag = |k: &str, default: bool| -> Result<bool> {
            match item.get(k) {
                None => Ok(default),
                Some(v) => v.as_bool().ok_or_else(|| Error::format(path, format!("layer {i}: \"{k}\" must be true or false"))),
            }
        };
        let pool = || -> Result<Pool2dSpec> {
            Ok(Pool2dSpec {
                channels: num("channels")?,
                height: num("height")?,
                width: num("width")?,
                kernel: axes(item, path, i, "kernel")?,
                stride: axes(item, path, i, "stride")?,
                padding: axes(item, path, i, "padding")?,
                ceil_mode: flag("ceil_mode", false)?,
            })
        };
        let chw = || -> Result<Option<[usize; 3]>> {
            match field("chw")? {
                serde_json::Value::Null => Ok(None),
                v => {
                    let dims: Option<Vec<usize>> = v.as_array().map(|a| a.iter().filter_map(|d| d.as_u64().map(|d| d as usize)).collect());
                    match dims.as_deref() {
                        Some(&[c, h, w]) => Ok(Some([c, h, w])),
                        _ => Err(Error::format(path, format!("layer {i}: \"chw\" must be null or [C, H, W]"))),
                    }
                }
            }
        };
        let spec = match item.get("type").and_then(|t| t.as_str()).unwrap_or("dense") {
            "dense" => LayerSpec::Dense(DenseSpec { inputs: num("inputs")?, outputs: num("outputs")?, activation: activation()? }),
            "conv2d" => LayerSpec::Conv2d(Conv2dSpec {
                in_channels: num("in_channels")?,
                height: num("height")?,
                width: num("width")?,
                out_channels: num("out_channels")?,
                kernel: axes(item, path, i, "kernel")?,
                stride: axes(item, path, i, "stride")?,
                padding: axes(item, path, i, "padding")?,
                groups: match item.get("groups") {
                    None => 1,
                    Some(_) => num("groups")?,
                },
                activation: activation()?,
                bias: flag("bias", true)?,
            }),
            "max_pool2d" => LayerSpec::MaxPool2d(pool()?),
            "avg_pool2d" => LayerSpec::AvgPool2d(pool()?),
            "global_avg_pool" => LayerSpec::GlobalAvgPool { channels: num("channels")?, height: num("height")?, width: num("width")? },
            "add" => {
                let chw = match field("chw")? {
                    serde_json::Value::Null => None,
                    v => {
                        let dims: Option<Vec<usize>> =
                            v.as_array().map(|a| a.iter().filter_map(|d| d.as_u64().map(|d| d as usize)).collect());
                        match dims.as_deref() {
                            Some(&[c, h, w]) => Some([c, h, w]),
                            _ => return Err(Error::format(path, format!("layer {i}: \"chw\" must be null or [C, H, W]"))),
                        }
                    }
                };
                LayerSpec::Add(AddSpec { features: num("features")?, chw, activation: activation()? })
            }
            kind @ ("batch_norm2d" | "batch_norm1d") => {
                let real = |k: &str| -> Result<f32> {
                    field(k)?.as_f64().map(|v| v as f32).ok_or_else(|| Error::format(path, format!("layer {i}: \"{k}\" must be a number")))
                };
                LayerSpec::BatchNorm(BatchNormSpec {
                    channels: num("channels")?,
                    height: num("height")?,
                    width: num("width")?,
                    eps: real("eps")?,
                    momentum: real("momentum")?,
                    activation: activation()?,
                    spatial: kind == "batch_norm2d",
                })
            }
            "dropout" => {
                let p = field("p")?
                    .as_f64()
                    .filter(|p| (0.0..=1.0).contains(p))
                    .ok_or_else(|| Error::format(path, format!("layer {i}: \"p\" must be a number in [0, 1]")))?;
                LayerSpec::Dropout(DropoutSpec { features: num("features")?, chw: chw()?, p: p as f32 })
            }
            "adaptive_avg_pool2d" => LayerSpec::AdaptiveAvgPool2d(AdaptivePoolSpec {
                channels: num("channels")?,
                height: num("height")?,
                width: num("width")?,
                out_height: num("out_height")?,
                out_width: num("out_width")?,
            }),
            "channel_last" => LayerSpec::ChannelLast { channels: num("channels")?, height: num("height")?, width: num("width")? },
            "channel_mul" => {
                LayerSpec::ChannelMul(ChannelMulSpec { channels: num("channels")?, height: num("height")?, width: num("width")? })
            }
            "concat" => {
                let parts: Option<Vec<usize>> = field("channels")?
                    .as_array()
                    .and_then(|a| a.iter().map(|c| c.as_u64().filter(|&c| c < (1 << 31)).map(|c| c as usize)).collect());
                let parts = parts.ok_or_else(|| Error::format(path, format!("layer {i}: \"channels\" must list channel counts")))?;
                let spec = ConcatSpec::new(&parts, num("height")?, num("width")?)
                    .map_err(|e| Error::format(path, format!("layer {i}: {}", message(e))))?;
                LayerSpec::Concat(spec)
            }
            other => return Err(Error::format(path, format!("layer {i}: unknown layer type {other:?}"))),
        };
        sources.push(match item.get("sources") {
            None => vec![i],
            Some(v) => v
                .as_array()
                .and_then(|a| a.iter().map(|x| x.as_u64().filter(|&x| x <= i as u64).map(|x| x as usize)).collect::<Option<Vec<_>>>())
                .ok_or_else(|| Error::format(path, format!("layer {i}: \"sources\" must list earlier values (0..={i})")))?,
        });
        names.push(match item.get("name") {
            None => None,
            Some(v) => {
                let name = v.as_str().ok_or_else(|| Error::format(path, format!("layer {i}: \"name\" must be a string")))?;
                super::check_module_path(name).map_err(|e| Error::format(path, format!("layer {i}: {}", message(e))))?;
                Some(name.to_string())
            }
        });
        spec.validate().map_err(|e| Error::format(path, format!("layer {i}: {e}")))?;
        match field("part")?.as_str() {
            Some("trunk") => trunk.push(spec),
            Some("head") => head.push(spec),
            other => return Err(Error::format(path, format!("layer {i}: part must be \"trunk\" or \"head\", found {other:?}"))),
        }
    }
    if head.is_empty() {
        return Err(Error::format(path, "the checkpoint describes no head layer"));
    }
    let t = trunk.len();
    if named_heads {
        let head_sources = sources.split_off(t);
        let head_names = names.split_off(t);
        return Ok(Layers { trunk: Trunk { layers: trunk, sources, names }, head, head_module: None, head_names, head_sources });
    }
    if sources[t..].iter().enumerate().any(|(j, s)| *s != [t + j]) {
        return Err(Error::format(path, "head layers must each read the layer before them"));
    }
    sources.truncate(t);
    let head_names = names.split_off(t);
    let head_module = head_module_of(&head_names);
    // head layers named otherwise than a module path (not written by headswap) would lose their
    // names on the way to a Head: refuse them rather than rename parameters silently
    if head_names.iter().any(Option::is_some) && head_names_differ(&head, &head_names, head_module.as_deref()) {
        return Err(Error::format(
            path,
            "the head's layer names are not one module path (\"fc\") or one nn.Sequential's indices (\"classifier.0\", ...)",
        ));
    }
    Ok(Layers { trunk: Trunk { layers: trunk, sources, names }, head, head_module, head_names: Vec::new(), head_sources: Vec::new() })
}

/// Whether `names` are not what a head at `module` would name `head`'s layers.
fn head_names_differ(head: &[LayerSpec], names: &[Option<String>], module: Option<&str>) -> bool {
    super::Head::layer_names(head, module) != names
}

/// Zeroed `(weight, bias)` of every layer of `all`.
fn zero_values(all: &[LayerSpec]) -> Vec<(Vec<f32>, Vec<f32>)> {
    all.iter().map(|s| (vec![0.0; s.weight_shape().map_or(0, |sh| sh.iter().product())], vec![0.0; s.bias_len()])).collect()
}

/// One parameter tensor of a network: layer `layer`'s weight or bias, its checkpoint key and
/// shape.
struct ParamKey {
    layer: usize,
    weight: bool,
    name: String,
    shape: Vec<usize>,
}

/// Every parameter tensor of `layers` named by `names`, in order: `<path>.weight`, then
/// `<path>.bias` where the layer has one (not a convolution without bias). The one list the
/// checkpoint writer, both loaders and [`Network::param_names`] read.
fn param_keys(layers: &[LayerSpec], names: &[String]) -> Vec<ParamKey> {
    let mut keys = Vec::new();
    for (layer, (spec, path)) in layers.iter().zip(names).enumerate() {
        let Some(shape) = spec.weight_shape() else { continue };
        keys.push(ParamKey { layer, weight: true, name: format!("{path}.weight"), shape });
        if spec.bias_len() > 0 {
            keys.push(ParamKey { layer, weight: false, name: format!("{path}.bias"), shape: vec![spec.bias_len()] });
        }
    }
    keys
}

/// One BatchNorm's running statistics in a state_dict: `<path>.running_mean`,
/// `<path>.running_var` (f32 `[C]`) and `<path>.num_batches_tracked` (an integer scalar).
struct BufferKeys {
    layer: usize,
    channels: usize,
    mean: String,
    var: String,
    batches: String,
}

/// Every BatchNorm's buffer keys, in layer order (PyTorch's buffers: state, not parameters).
fn buffer_keys(layers: &[LayerSpec], names: &[String]) -> Vec<BufferKeys> {
    layers
        .iter()
        .zip(names)
        .enumerate()
        .filter_map(|(layer, (spec, path))| match spec {
            LayerSpec::BatchNorm(b) => Some(BufferKeys {
                layer,
                channels: b.channels,
                mean: format!("{path}.running_mean"),
                var: format!("{path}.running_var"),
                batches: format!("{path}.num_batches_tracked"),
            }),
            _ => None,
        })
        .collect()
}

/// A `num_batches_tracked` value: one non-negative integer (PyTorch writes an int64 scalar).
fn batches_tracked(t: &crate::checkpoint::IntTensor, origin: &str) -> Result<u64> {
    match t.data[..] {
        [v] if v >= 0 => Ok(v as u64),
        _ => Err(Error::format(origin, format!("{} must hold one non-negative integer, it holds {:?}", t.name, t.data))),
    }
}

impl Network {
    /// Every state_dict key of the network's BatchNorm buffers: `running_mean`, `running_var`,
    /// `num_batches_tracked` per BatchNorm layer.
    pub fn buffer_names(&self) -> Vec<String> {
        buffer_keys(&self.layers(), &self.names).into_iter().flat_map(|k| [k.mean, k.var, k.batches]).collect()
    }

    /// A BatchNorm layer's running mean and variance, read back, and its `num_batches_tracked`;
    /// `None` for another layer.
    pub fn running_stats(&self, i: usize) -> Result<Option<super::batchnorm::BatchNormStats>> {
        let Some(LayerSpec::BatchNorm(b)) = self.layers().get(i).copied() else { return Ok(None) };
        let (m, v) = self.running.views(i, b.channels)?.ok_or_else(|| Error::invalid(format!("layer {i} has no running statistics")))?;
        Ok(Some(super::batchnorm::BatchNormStats {
            running_mean: m.download(&self.gpu)?,
            running_var: v.download(&self.gpu)?,
            num_batches_tracked: self.running.batches[i],
        }))
    }

    /// Sets a BatchNorm layer's running statistics (uploads them).
    pub fn set_running_stats(&mut self, i: usize, mean: &[f32], var: &[f32], batches: u64) -> Result<()> {
        let Some(LayerSpec::BatchNorm(b)) = self.layers().get(i).copied() else {
            return Err(Error::invalid(format!("layer {i} is no BatchNorm: it has no running statistics")));
        };
        if mean.len() != b.channels || var.len() != b.channels {
            return Err(Error::shape(format!(
                "layer {i} has {} channels: running mean and variance of {} and {} values do not fit",
                b.channels,
                mean.len(),
                var.len()
            )));
        }
        let (m, v) = self.running.views(i, b.channels)?.ok_or_else(|| Error::invalid(format!("layer {i} has no running statistics")))?;
        m.write(&self.gpu, mean)?;
        v.write(&self.gpu, var)?;
        self.running.batches[i] = batches;
        Ok(())
    }

    /// The parameters as a checkpoint (PyTorch names and layouts) with the architecture in the
    /// metadata. Reads the weights back from the GPU.
    pub fn to_checkpoint(&self) -> Result<Checkpoint> {
        let mut ckpt = Checkpoint::new();
        let mut values = None;
        for key in param_keys(&self.layers(), &self.names) {
            // a layer's weight comes first: read the layer back then, and its bias from that
            if key.weight {
                values = Some(self.layer_values(key.layer)?);
            }
            let (w, b) = values.as_mut().ok_or_else(|| Error::invalid("a bias listed before its weight"))?;
            let data = std::mem::take(if key.weight { w } else { b });
            ckpt.push(NamedTensor::new(key.name, key.shape, data)?)?;
        }
        for key in buffer_keys(&self.layers(), &self.names) {
            let stats = self.running_stats(key.layer)?.ok_or_else(|| Error::invalid("a BatchNorm without statistics"))?;
            ckpt.push(NamedTensor::new(key.mean, vec![key.channels], stats.running_mean)?)?;
            ckpt.push(NamedTensor::new(key.var, vec![key.channels], stats.running_var)?)?;
            let batches = i64::try_from(stats.num_batches_tracked).map_err(|_| Error::invalid("num_batches_tracked beyond i64"))?;
            ckpt.push_int(crate::checkpoint::IntTensor::new(key.batches, vec![], crate::checkpoint::IntDtype::I64, vec![batches])?)?;
        }
        ckpt.metadata.insert(checkpoint::FORMAT_KEY.into(), checkpoint::FORMAT_VERSION.into());
        ckpt.metadata.insert(checkpoint::LAYERS_KEY.into(), layers_json(self));
        ckpt.metadata.insert(
            HEAD_KIND_KEY.into(),
            match self.head_kind {
                HeadKind::Classes => "classes",
                HeadKind::Labels => "labels",
                HeadKind::Regression(_) => "regression",
            }
            .into(),
        );
        if self.is_multi_head() {
            ckpt.metadata.insert(HEADS_KEY.into(), heads_json(&self.heads));
        }
        ckpt.metadata.insert("format".into(), "pt".into());
        if let Some(names) = &self.label_names {
            ckpt.metadata.insert(LABEL_NAMES_KEY.into(), serde_json::Value::from(names.clone()).to_string());
        }
        if let Some(layout) = &self.input_layout {
            layout.write_metadata(&mut ckpt.metadata);
        }
        if self.trunk_storage() == crate::train::Precision::F16 {
            ckpt.metadata.insert(TRUNK_STORAGE_KEY.into(), "f16".into());
        }
        Ok(ckpt)
    }

    /// Writes the network to `path` (safetensors, temporary file + rename).
    pub fn save(&self, path: &Path, dtype: StorageDtype) -> Result<()> {
        checkpoint::save(path, &self.to_checkpoint()?, dtype)
    }

    /// Reads a network written by [`Network::save`].
    pub fn load(gpu: &Gpu, path: &Path) -> Result<Network> {
        let ckpt = checkpoint::load(path)?;
        Self::from_checkpoint(gpu, &ckpt, &path.display().to_string())
    }

    /// Builds a network from a checkpoint that carries headswap's architecture metadata, with the
    /// label names and input layout it records (absent: `None`; malformed or not matching the
    /// network: a format error naming the key); `origin` names the source in error messages.
    /// A checkpoint of a trunk stored in f16 ([`TRUNK_STORAGE_KEY`]) gives one stored in f16 again,
    /// with the same values (they are f16 values: packing them again is exact).
    pub fn from_checkpoint(gpu: &Gpu, ckpt: &Checkpoint, origin: &str) -> Result<Network> {
        let storage = match ckpt.metadata.get(TRUNK_STORAGE_KEY).map(String::as_str) {
            None => crate::train::Precision::F32,
            Some(s) => crate::train::Precision::parse(s)
                .ok_or_else(|| Error::format(origin, format!("{TRUNK_STORAGE_KEY}: {s:?} is neither f32 nor f16")))?,
        };
        let mut net = Self::from_checkpoint_values(gpu, ckpt, origin)?;
        net.set_trunk_storage(storage)?;
        Ok(net)
    }

    fn from_checkpoint_values(gpu: &Gpu, ckpt: &Checkpoint, origin: &str) -> Result<Network> {
        let json = ckpt.metadata.get(checkpoint::LAYERS_KEY).ok_or_else(|| {
            Error::format(
                origin,
                "no headswap architecture in the metadata (a plain PyTorch state_dict? load it with Network::from_state_dict / --arch)",
            )
        })?;
        if let Some(heads) = ckpt.metadata.get(HEADS_KEY) {
            let layers = parse_layers(origin, json, true)?;
            let heads = heads_from_json(origin, heads, layers.trunk.layers.len())?;
            return Self::named_heads_from(gpu, ckpt, layers, heads, origin);
        }
        let Layers { trunk, head, head_module, .. } = parse_layers(origin, json, false)?;
        let kind = match ckpt.metadata.get(HEAD_KIND_KEY).map(String::as_str) {
            Some("labels") => HeadKind::Labels,
            Some("classes") | None => HeadKind::Classes,
            Some(other) => return Err(Error::format(origin, format!("unknown head kind {other:?}"))),
        };
        let mut net = Self::with_values_from(gpu, ckpt, trunk, head, head_module, kind, origin)?;
        net.label_names = label_names_from_metadata(&ckpt.metadata, origin)?;
        if let Some(names) = &net.label_names {
            check_label_names(names, net.output_dim()).map_err(|e| Error::format(origin, format!("{LABEL_NAMES_KEY}: {}", message(e))))?;
        }
        net.input_layout = InputLayout::from_metadata(&ckpt.metadata, origin)?;
        if let Some(layout) = &net.input_layout {
            // name the key the layout came from: image_size when there is one
            let key = if matches!(layout, InputLayout::Image { .. }) { IMAGE_SIZE_KEY } else { INPUT_SHAPE_KEY };
            layout.check(net.input_dim()).map_err(|m| Error::format(origin, format!("{key}: {m}")))?;
        }
        Ok(net)
    }

    /// Builds a network from a PyTorch `nn.Sequential` state_dict of Linear layers (no headswap
    /// metadata): the layers are the `<i>.weight`/`<i>.bias` pairs in index order, `activation`
    /// sits between them, and the top `head_layers` layers are the head.
    pub fn from_state_dict(
        gpu: &Gpu,
        ckpt: &Checkpoint,
        activation: Activation,
        kind: HeadKind,
        head_layers: usize,
        origin: &str,
    ) -> Result<Network> {
        let sd = ckpt.state_dict_only();
        let mut idx: Vec<usize> = sd
            .names()
            .chain(sd.int_names())
            .filter_map(|n| n.strip_suffix(".weight"))
            .map(|i| {
                i.parse::<usize>()
                    .map_err(|_| Error::format(origin, format!("tensor {i}.weight is not named like an nn.Sequential parameter")))
            })
            .collect::<Result<_>>()?;
        idx.sort_unstable();
        if idx.is_empty() {
            return Err(Error::format(origin, "no <i>.weight tensors found"));
        }
        let mut specs = Vec::new();
        for (j, &i) in idx.iter().enumerate() {
            let name = format!("{i}.weight");
            if let Some(t) = sd.get_int(&name) {
                return Err(Error::format(origin, format!("{name} holds {} integers; a Linear weight is floating point", t.dtype)));
            }
            let w = sd.get(&name).ok_or_else(|| Error::format(origin, format!("{name} missing")))?;
            if w.shape.len() != 2 {
                return Err(Error::format(origin, format!("{i}.weight has shape {:?}; a Linear weight is [out, in]", w.shape)));
            }
            let last = j + 1 == idx.len();
            specs.push(LayerSpec::Dense(DenseSpec {
                inputs: w.shape[1],
                outputs: w.shape[0],
                activation: if last { Activation::Identity } else { activation },
            }));
        }
        if head_layers == 0 || head_layers > specs.len() {
            return Err(Error::invalid(format!("head_layers must be between 1 and {}", specs.len())));
        }
        let head = specs.split_off(specs.len() - head_layers);
        Self::with_values_from(gpu, &sd, Trunk::chain(specs), head, None, kind, origin)
    }

    /// Builds a network of any layers from a PyTorch `nn.Sequential` state_dict without headswap
    /// metadata, given the architecture (`CnnBuilder` for the trunk, dense head layers): the
    /// tensors are looked up under the Sequential indices [`sequential_indices`] assigns, and
    /// every name and shape is checked.
    pub fn from_state_dict_layers(
        gpu: &Gpu,
        ckpt: &Checkpoint,
        trunk: Vec<LayerSpec>,
        head: Vec<LayerSpec>,
        kind: HeadKind,
        origin: &str,
    ) -> Result<Network> {
        Self::with_values_from(gpu, &ckpt.state_dict_only(), Trunk::chain(trunk), head, None, kind, origin)
    }

    /// [`Network::from_checkpoint`] for a network of named heads.
    fn named_heads_from(gpu: &Gpu, ckpt: &Checkpoint, layers: Layers, heads: Vec<super::HeadInfo>, origin: &str) -> Result<Network> {
        let (values, buffers) = Self::named_heads_values(ckpt, &layers, &heads, origin)?;
        let Layers { trunk, head, head_names, .. } = layers;
        let mut net = Network::from_head_layers(gpu, trunk, head, head_names, heads, &values)?;
        for b in &buffers {
            let data = |name: &str| ckpt.get(name).map(|t| t.data.clone()).unwrap_or_default();
            let batches = ckpt.get_int(&b.batches).map(|t| batches_tracked(t, origin)).transpose()?.unwrap_or(0);
            net.set_running_stats(b.layer, &data(&b.mean), &data(&b.var), batches)?;
        }
        net.input_layout = InputLayout::from_metadata(&ckpt.metadata, origin)?;
        if let Some(layout) = &net.input_layout {
            let key = if matches!(layout, InputLayout::Image { .. }) { IMAGE_SIZE_KEY } else { INPUT_SHAPE_KEY };
            layout.check(net.input_dim()).map_err(|m| Error::format(origin, format!("{key}: {m}")))?;
        }
        Ok(net)
    }

    /// The parameter values `ckpt` holds for a network of named heads, after checking (on the
    /// host) the heads' wiring and that it holds exactly the tensors they need; and the BatchNorm
    /// statistics' keys.
    #[allow(clippy::type_complexity)]
    fn named_heads_values(
        ckpt: &Checkpoint,
        layers: &Layers,
        heads: &[super::HeadInfo],
        origin: &str,
    ) -> Result<(Vec<(Vec<f32>, Vec<f32>)>, Vec<BufferKeys>)> {
        let Layers { trunk, head, head_names, head_sources, .. } = layers;
        let t = trunk.layers.len();
        let all: Vec<LayerSpec> = trunk.layers.iter().chain(head).copied().collect();
        let (sources, names) = super::multi_head_wiring(trunk, head, head_names, heads).map_err(|e| Error::format(origin, message(e)))?;
        if sources[t..] != head_sources[..] {
            return Err(Error::format(origin, "each head's first layer must read the trunk's output and the rest the layer before"));
        }
        let keys = param_keys(&all, &names);
        let buffers = buffer_keys(&all, &names);
        let mut expected: Vec<Expect> = keys.iter().map(|k| Expect::new(k.name.clone(), k.shape.clone())).collect();
        for b in &buffers {
            expected.push(Expect::new(b.mean.clone(), vec![b.channels]));
            expected.push(Expect::new(b.var.clone(), vec![b.channels]));
        }
        let sd = without_unwanted_ints(&ckpt.state_dict_only(), |n| expected.iter().any(|e| e.name == n));
        sd.check(&expected).map_err(|e| match e {
            Error::Format { message, .. } | Error::Shape { what: message } | Error::InvalidInput(message) => Error::format(origin, message),
            other => other,
        })?;
        for b in &buffers {
            if let Some(t) = ckpt.get_int(&b.batches) {
                batches_tracked(t, origin)?;
            }
        }
        let mut values = zero_values(&all);
        for k in &keys {
            let data = ckpt.get(&k.name).map(|t| t.data.clone()).unwrap_or_default();
            if k.weight { values[k.layer].0 = data } else { values[k.layer].1 = data }
        }
        Ok((values, buffers))
    }

    /// The named heads a headswap checkpoint records (its `headswap.heads` metadata), without
    /// building the network: names, kinds, weights, class or label names (their `layers` counted
    /// from 0); empty for a checkpoint of one head. What a grouped CSV manifest's loader needs
    /// ([`crate::data::manifest::ManifestHead::of`]).
    pub fn checkpoint_heads(ckpt: &Checkpoint, origin: &str) -> Result<Vec<super::HeadInfo>> {
        match ckpt.metadata.get(HEADS_KEY) {
            Some(json) => heads_from_json(origin, json, 0),
            None => Ok(Vec::new()),
        }
    }

    /// Checks, without a GPU, everything [`Network::from_checkpoint`] reads from `ckpt` before it
    /// allocates anything: the recorded architecture (every layer, its wiring, the module names),
    /// and that the tensors are exactly the parameters and BatchNorm statistics it needs, of
    /// their shapes. Returns the number of layers. (What the fuzzer drives; a loader that passes
    /// this check only fails later on the GPU's own limits.)
    pub fn check_architecture(ckpt: &Checkpoint, origin: &str) -> Result<usize> {
        let json =
            ckpt.metadata.get(checkpoint::LAYERS_KEY).ok_or_else(|| Error::format(origin, "no headswap architecture in the metadata"))?;
        if let Some(heads) = ckpt.metadata.get(HEADS_KEY) {
            let layers = parse_layers(origin, json, true)?;
            let heads = heads_from_json(origin, heads, layers.trunk.layers.len())?;
            Self::named_heads_values(ckpt, &layers, &heads, origin)?;
            return Ok(layers.trunk.layers.len() + layers.head.len());
        }
        let Layers { trunk, head, head_module, .. } = parse_layers(origin, json, false)?;
        let all: Vec<LayerSpec> = trunk.layers.iter().chain(&head).copied().collect();
        let mut sources = trunk.sources.clone();
        sources.extend((trunk.layers.len()..all.len()).map(|i| vec![i]));
        super::check_wiring(&all, &sources, all[0].inputs()).map_err(|e| Error::format(origin, message(e)))?;
        if head.iter().any(|l| !matches!(l, LayerSpec::Dense(_) | LayerSpec::Dropout(_))) {
            return Err(Error::format(origin, "a head holds dense layers (and dropout) only"));
        }
        Self::checked_values(ckpt, &trunk, &head, head_module.as_deref(), origin)?;
        Ok(all.len())
    }

    /// The parameter values `ckpt` holds for these layers, after checking it holds exactly the
    /// parameters and BatchNorm statistics they need; and the BatchNorm statistics' keys.
    #[allow(clippy::type_complexity)]
    fn checked_values(
        ckpt: &Checkpoint,
        trunk: &Trunk,
        head: &[LayerSpec],
        head_module: Option<&str>,
        origin: &str,
    ) -> Result<(Vec<(Vec<f32>, Vec<f32>)>, Vec<BufferKeys>)> {
        let all: Vec<LayerSpec> = trunk.layers.iter().chain(head).copied().collect();
        let given: Vec<Option<String>> = trunk.names.iter().cloned().chain(super::Head::layer_names(head, head_module)).collect();
        let names = super::resolve_names(&all, &given).map_err(|e| Error::format(origin, message(e)))?;
        let keys = param_keys(&all, &names);
        let buffers = buffer_keys(&all, &names);
        let mut expected: Vec<Expect> = keys.iter().map(|k| Expect::new(k.name.clone(), k.shape.clone())).collect();
        for b in &buffers {
            expected.push(Expect::new(b.mean.clone(), vec![b.channels]));
            expected.push(Expect::new(b.var.clone(), vec![b.channels]));
        }
        // num_batches_tracked is read where present (files from before PyTorch 0.4.1 lack it)
        let sd = without_unwanted_ints(&ckpt.state_dict_only(), |n| expected.iter().any(|e| e.name == n));
        sd.check(&expected).map_err(|e| match e {
            Error::Format { message, .. } | Error::Shape { what: message } | Error::InvalidInput(message) => Error::format(origin, message),
            other => other,
        })?;
        for b in &buffers {
            if let Some(t) = ckpt.get_int(&b.batches) {
                batches_tracked(t, origin)?;
            }
        }
        // checked above: every key is present with its shape
        let mut values: Vec<(Vec<f32>, Vec<f32>)> = vec![(Vec::new(), Vec::new()); all.len()];
        for k in &keys {
            let data = ckpt.get(&k.name).map(|t| t.data.clone()).unwrap_or_default();
            if k.weight { values[k.layer].0 = data } else { values[k.layer].1 = data }
        }
        Ok((values, buffers))
    }

    fn with_values_from(
        gpu: &Gpu,
        ckpt: &Checkpoint,
        trunk: Trunk,
        head: Vec<LayerSpec>,
        head_module: Option<String>,
        kind: HeadKind,
        origin: &str,
    ) -> Result<Network> {
        let (values, buffers) = Self::checked_values(ckpt, &trunk, &head, head_module.as_deref(), origin)?;
        let mut net = Network::from_named_layers(gpu, trunk, head, head_module, kind, &values)?;
        for b in &buffers {
            let data = |name: &str| ckpt.get(name).map(|t| t.data.clone()).unwrap_or_default();
            let batches = ckpt.get_int(&b.batches).map(|t| batches_tracked(t, origin)).transpose()?.unwrap_or(0);
            net.set_running_stats(b.layer, &data(&b.mean), &data(&b.var), batches)?;
        }
        Ok(net)
    }
}

impl Network {
    /// The class or label names, one per output, when known.
    pub fn label_names(&self) -> Option<&[String]> {
        self.label_names.as_deref()
    }

    /// Names the outputs (one name per class or label), or forgets the names with `None`. Saved
    /// with the network under `headswap.label_names`.
    pub fn set_label_names(&mut self, names: Option<Vec<String>>) -> Result<()> {
        if self.is_multi_head() && names.is_some() {
            return Err(Error::invalid("this network has named heads: name each head's outputs (Network::set_head_label_names)"));
        }
        if let Some(n) = &names {
            check_label_names(n, self.output_dim())?;
        }
        self.label_names = names;
        Ok(())
    }

    /// Names the outputs of the head named `name` (a network of named heads), or forgets them.
    pub fn set_head_label_names(&mut self, name: &str, names: Option<Vec<String>>) -> Result<()> {
        let h = self
            .heads
            .iter_mut()
            .find(|h| h.name == name)
            .ok_or_else(|| Error::invalid(format!("the network has no head named {name:?}")))?;
        if let Some(n) = &names {
            check_label_names(n, h.outputs)?;
        }
        h.label_names = names;
        Ok(())
    }

    /// How one example is laid out, when known.
    pub fn input_layout(&self) -> Option<&InputLayout> {
        self.input_layout.as_ref()
    }

    /// Records how one example is laid out (its shape must multiply to the input width), or
    /// forgets it with `None`. Saved with the network under `headswap.input_shape` (and for
    /// images `headswap.image_size` and `headswap.channels`).
    pub fn set_input_layout(&mut self, layout: Option<InputLayout>) -> Result<()> {
        if let Some(l) = &layout {
            l.check(self.input_dim()).map_err(Error::shape)?;
        }
        self.input_layout = layout;
        Ok(())
    }

    /// The names of the tensors in `ckpt` (float and integer, without `optim.*` training state)
    /// that are none of this network's parameters: what a loader ignored (integer tensors such
    /// as `num_batches_tracked`) or would refuse, so that a caller can report them.
    pub fn unused_tensors(&self, ckpt: &Checkpoint) -> Vec<String> {
        let mut params = self.param_names();
        params.extend(self.buffer_names());
        let sd = ckpt.state_dict_only();
        sd.names().chain(sd.int_names()).filter(|n| !params.iter().any(|p| p == n)).map(str::to_string).collect()
    }
}

/// What [`Network::load_state_dict`] did with a state_dict, like the result of PyTorch's
/// `model.load_state_dict(sd, strict=False)`, with the shape mismatches PyTorch would raise on
/// listed instead.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadReport {
    /// Parameters whose values were loaded.
    pub applied: Vec<String>,
    /// Parameters the state_dict lacks: they keep the values they had.
    pub missing: Vec<String>,
    /// Tensors of the state_dict that are no parameter of the network (training state `optim.*`
    /// aside), e.g. the old head's after a head-swap, or BatchNorm's `num_batches_tracked`.
    pub unexpected: Vec<String>,
    /// Parameters the state_dict holds with another shape: `(name, the file's shape, the
    /// network's)`. They keep the values they had: the normal case for a swapped head.
    pub mismatched: Vec<(String, Vec<usize>, Vec<usize>)>,
}

impl LoadReport {
    /// Whether every parameter was loaded and every tensor used (PyTorch's `strict=True`).
    pub fn is_exact(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.mismatched.is_empty()
    }
}

impl std::fmt::Display for LoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "loaded {} parameter tensors", self.applied.len())?;
        if !self.missing.is_empty() {
            write!(f, "; missing (kept as initialised): {}", self.missing.join(", "))?;
        }
        if !self.mismatched.is_empty() {
            let m: Vec<String> = self.mismatched.iter().map(|(n, file, net)| format!("{n} {file:?} in the file, {net:?} here")).collect();
            write!(f, "; other shape (kept as initialised): {}", m.join(", "))?;
        }
        if !self.unexpected.is_empty() {
            write!(f, "; unused: {}", self.unexpected.join(", "))?;
        }
        Ok(())
    }
}

/// How [`Network::load_state_dict`] treats parameters it cannot load.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Keep the initial values of trunk parameters that the state_dict lacks or holds with
    /// another shape, instead of refusing the file. Head parameters are always allowed to be
    /// missing or of another shape: a swapped head is the normal case.
    pub init_missing_trunk: bool,
    /// Refuse the file unless every parameter is loaded and every tensor used (PyTorch's
    /// `strict=True`).
    pub strict: bool,
}

impl Network {
    /// Every parameter's checkpoint key, in order: `<module path>.weight`, `<module path>.bias`.
    pub fn param_names(&self) -> Vec<String> {
        param_keys(&self.layers(), &self.names).into_iter().map(|k| k.name).collect()
    }

    /// Loads the parameters a PyTorch-style state_dict holds under this network's names into it
    /// (uploads only; nothing is read back), like `model.load_state_dict(sd, strict=False)`: the
    /// way to start from a pretrained model with a new head. Build the network with the
    /// pretrained model's module paths ([`crate::nn::CnnBuilder::name`], `scope`,
    /// [`crate::nn::Head::module`]) and its new head, then load: the old head's tensors come back
    /// as `mismatched` (another number of outputs) or `unexpected` (another name), the new head
    /// keeps its initialisation.
    ///
    /// A trunk parameter that is missing or of another shape is an error unless
    /// `options.init_missing_trunk`; with `options.strict` anything short of an exact match is.
    /// An integer tensor under a parameter's name is always an error. On an error the network
    /// is unchanged; `origin` names the source in messages.
    ///
    /// ```no_run
    /// use headswap::nn::{Activation, CnnBuilder, Head, Init, LoadOptions, Network};
    /// # let gpu = headswap::Gpu::new()?;
    /// let trunk = CnnBuilder::new(3, 32, 32).conv(16, 3, 1, 1, Activation::Relu).name("conv1").global_avg_pool().build_graph()?;
    /// let mut net = Network::from_trunk(&gpu, 3 * 32 * 32, trunk, Init::KaimingUniform, Head::labels(5).module("fc"), 7)?;
    /// let pretrained = headswap::checkpoint::load("pretrained.safetensors".as_ref())?;
    /// let report = net.load_state_dict(&pretrained, LoadOptions::default(), "pretrained.safetensors")?;
    /// println!("{report}");   // loaded 2 parameter tensors; other shape (kept as initialised): fc.weight [10, 16] ...
    /// # Ok::<(), headswap::Error>(())
    /// ```
    pub fn load_state_dict(&mut self, ckpt: &Checkpoint, options: LoadOptions, origin: &str) -> Result<LoadReport> {
        let sd = ckpt.state_dict_only();
        let t = self.trunk.len();
        let mut report = LoadReport::default();
        let mut uploads: Vec<(usize, bool, &[f32])> = Vec::new();
        let mut refused: Vec<String> = Vec::new();
        for ParamKey { layer, weight, name, shape } in param_keys(&self.layers(), &self.names) {
            if let Some(int) = sd.get_int(&name) {
                return Err(Error::format(origin, format!("{name} holds {} integers; a parameter is floating point", int.dtype)));
            }
            match sd.get(&name) {
                Some(found) if found.shape == shape => {
                    uploads.push((layer, weight, &found.data));
                    report.applied.push(name);
                }
                other => {
                    if layer < t && !options.init_missing_trunk {
                        refused.push(match other {
                            Some(found) => format!("{name} has shape {:?}, the network's is {shape:?}", found.shape),
                            None => format!("{name} is missing"),
                        });
                    }
                    match other {
                        Some(found) => report.mismatched.push((name, found.shape.clone(), shape)),
                        None => report.missing.push(name),
                    }
                }
            }
        }
        // BatchNorm buffers load like parameters (a trunk's missing one is refused the same way);
        // num_batches_tracked is optional, as in PyTorch, which fills it in for older files
        let mut stats: Vec<(usize, &[f32], &[f32], u64)> = Vec::new();
        for b in buffer_keys(&self.layers(), &self.names) {
            let mut found: Vec<&[f32]> = Vec::new();
            for name in [&b.mean, &b.var] {
                match sd.get(name) {
                    Some(t) if t.shape == [b.channels] => {
                        found.push(&t.data);
                        report.applied.push(name.clone());
                    }
                    other => {
                        if !options.init_missing_trunk {
                            refused.push(match other {
                                Some(t) => format!("{name} has shape {:?}, the network's is {:?}", t.shape, [b.channels]),
                                None => format!("{name} is missing"),
                            });
                        }
                        match other {
                            Some(t) => report.mismatched.push((name.clone(), t.shape.clone(), vec![b.channels])),
                            None => report.missing.push(name.clone()),
                        }
                    }
                }
            }
            let batches = match sd.get_int(&b.batches) {
                Some(t) => {
                    report.applied.push(b.batches.clone());
                    batches_tracked(t, origin)?
                }
                None => self.running.batches[b.layer],
            };
            if let [mean, var] = found[..] {
                stats.push((b.layer, mean, var, batches));
            }
        }
        let mut known = self.param_names();
        known.extend(self.buffer_names());
        report.unexpected = sd.names().chain(sd.int_names()).filter(|n| !known.iter().any(|p| p == n)).map(str::to_string).collect();
        if !refused.is_empty() {
            return Err(Error::format(
                origin,
                format!(
                    "{} of the trunk's parameter tensors cannot be loaded ({}); to keep their initial values instead, set LoadOptions::init_missing_trunk",
                    refused.len(),
                    refused.join("; ")
                ),
            ));
        }
        if options.strict && !report.is_exact() {
            return Err(Error::format(origin, format!("not an exact match (strict): {report}")));
        }
        for (i, is_weight, data) in uploads {
            let (w, b) = self.param_views(i)?;
            let view: Tensor = if is_weight { w } else { b };
            view.write(&self.gpu, data)?;
        }
        for (i, mean, var, batches) in stats {
            self.set_running_stats(i, mean, var, batches)?;
        }
        tracing::info!(%report, origin, "state_dict loaded");
        Ok(report)
    }
}

#[cfg(test)]
mod layer_json_tests {
    use super::*;

    fn one_layer(item: &str) -> String {
        format!(r#"[{item}, {{"type": "dense", "inputs": 4, "outputs": 2, "activation": "identity", "part": "head"}}]"#)
    }

    #[test]
    fn the_parameter_free_layers_refuse_bad_sizes_without_panicking() {
        let big = (1u64 << 31) - 1;
        let bad = [
            format!(r#"{{"type": "dropout", "features": {big}, "chw": [{big}, {big}, {big}], "p": 0.5, "part": "trunk"}}"#),
            r#"{"type": "dropout", "features": 4, "chw": null, "p": 1.5, "part": "trunk"}"#.to_string(),
            r#"{"type": "dropout", "features": 4, "chw": null, "part": "trunk"}"#.to_string(),
            format!(r#"{{"type": "channel_last", "channels": {big}, "height": {big}, "width": {big}, "part": "trunk"}}"#),
            format!(r#"{{"type": "channel_mul", "channels": {big}, "height": {big}, "width": 0, "part": "trunk"}}"#),
            format!(
                r#"{{"type": "adaptive_avg_pool2d", "channels": {big}, "height": {big}, "width": {big}, "out_height": 1, "out_width": 1, "part": "trunk"}}"#
            ),
            r#"{"type": "adaptive_avg_pool2d", "channels": 1, "height": 2, "width": 2, "out_height": 0, "out_width": 1, "part": "trunk"}"#
                .to_string(),
            format!(r#"{{"type": "concat", "channels": [{big}, {big}], "height": {big}, "width": {big}, "part": "trunk"}}"#),
            r#"{"type": "concat", "channels": [1, 1, 1, 1, 1], "height": 1, "width": 1, "part": "trunk"}"#.to_string(),
            r#"{"type": "concat", "channels": [4], "height": 1, "width": 1, "part": "trunk"}"#.to_string(),
            r#"{"type": "concat", "channels": "4", "height": 1, "width": 1, "part": "trunk"}"#.to_string(),
        ];
        for item in bad {
            assert!(parse_layers("f", &one_layer(&item), false).is_err(), "{item} was accepted");
        }
        let good = r#"{"type": "dropout", "features": 4, "chw": [1, 2, 2], "p": 0.25, "part": "trunk"}"#;
        let layers = parse_layers("f", &one_layer(good), false).unwrap();
        assert_eq!(layers.trunk.layers[0], LayerSpec::Dropout(DropoutSpec { features: 4, chw: Some([1, 2, 2]), p: 0.25 }));
    }
}
