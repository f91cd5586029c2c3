//! Model files: reading a checkpoint (or a plain PyTorch state_dict), the image layout a model
//! was trained at, new networks, and writing models and training states with the metadata that
//! `eval`, `predict` and `resume` read back.

use crate::args::{Arch, Given, ImageArgs, ModelArch, ModelImageArgs, Normalize};
use crate::data::{DataKind, Loaded, image_options};
use crate::{CliResult, failed, usage};
use headswap::checkpoint::{self, Checkpoint, StorageDtype};
use headswap::data::{Channels, Dataset, ImageOptions};
use headswap::demo;
use headswap::kernels::Activation;
use headswap::nn::models;
use headswap::nn::{Head, HeadKind, ImageChannels, Init, InputLayout, LoadOptions, Network};
use headswap::train::{Precision, Trainer};
use std::collections::BTreeMap;
use std::path::Path;

/// A model file to read, and how to read it when it is a plain PyTorch state_dict.
pub struct ModelSource {
    pub path: String,
    /// `--arch mlp`: read a plain state_dict as nn.Linear layers with `act` between them;
    /// `--arch resnet18` etc.: as torchvision's model of that name.
    pub arch: Option<ModelArch>,
    pub act: Activation,
}

impl ModelSource {
    /// The built-in architecture `--arch` names, if it names one.
    pub fn builtin(&self) -> Option<models::Arch> {
        match self.arch? {
            ModelArch::Mlp => None,
            ModelArch::Resnet18 => Some(models::Arch::ResNet18),
            ModelArch::Resnet34 => Some(models::Arch::ResNet34),
            ModelArch::Resnet50 => Some(models::Arch::ResNet50),
        }
    }
}

/// The metadata key that records `--normalize` with a model trained on images.
const NORMALIZE_KEY: &str = "headswap.normalize";

/// The `--normalize` a checkpoint was trained with (`none` when it records none).
pub fn recorded_normalize(ckpt: &Checkpoint) -> Normalize {
    match ckpt.metadata.get(NORMALIZE_KEY).map(String::as_str) {
        Some("imagenet") => Normalize::Imagenet,
        _ => Normalize::None,
    }
}

/// `--arch resnet18` etc. takes images `[C, H, W]` of at least 32×32: checked on the data's
/// example shape before any work (before the images are read, for a folder), said in the
/// command line's terms; `what` names the examples (`--data DIR`, `the images`).
pub fn check_builtin_input(arch: models::Arch, shape: &[usize], what: &str) -> CliResult<()> {
    let &[c, h, w] = shape else {
        return Err(failed(format!(
            "--arch {} reads images [C, H, W]; the examples of {what} have shape {shape:?} (a .safetensors x of shape [n, C, H, W] \
             or input_shape metadata gives images)",
            arch.name()
        )));
    };
    if h < 32 || w < 32 {
        return Err(failed(format!(
            "--arch {} takes images of at least 32x32 (its five stride-2 stages), got {w}x{h} from {what} (images from files are \
             read at --size, e.g. --size 224x224)",
            arch.name()
        )));
    }
    models::Arch::trunk(arch, c, h, w)?;
    Ok(())
}

/// Trunk tensors a built-in architecture's load left out, as one line: the first few names of
/// each kind and how many more.
fn summarise(names: &[String]) -> String {
    const SHOWN: usize = 6;
    let mut s = names.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ");
    if names.len() > SHOWN {
        s += &format!(" and {} more", names.len() - SHOWN);
    }
    s
}

/// The head of a built-in model read from a plain state_dict.
pub enum BuiltinHead {
    /// The file's own classifier, loaded as it is (`eval`, `predict`).
    Pretrained,
    /// A new head for the task, initialised from the seed (`finetune`): the file's is not used.
    New(Head),
}

/// The torchvision model `arch` for images of `shape` with `head` at its head module (`fc`),
/// its parameters and BatchNorm statistics loaded from the plain state_dict `ckpt` (PyTorch's
/// `strict=False`): the report says what was loaded and what of the file was not used (the old
/// head's tensors, for a new head). A trunk tensor the file lacks or holds with another shape
/// means the file is not that model: refused, naming them; so is a pretrained head that does
/// not load.
pub fn load_builtin(
    gpu: &headswap::Gpu,
    arch: models::Arch,
    ckpt: &Checkpoint,
    origin: &str,
    shape: &[usize],
    head: BuiltinHead,
    seed: u64,
) -> CliResult<(Network, headswap::nn::LoadReport)> {
    check_builtin_input(arch, shape, "the data")?;
    let (head, exact) = match head {
        BuiltinHead::Pretrained => (pretrained_head(arch, ckpt, origin)?, true),
        BuiltinHead::New(head) => (head, false),
    };
    let trunk = arch.trunk(shape[0], shape[1], shape[2])?;
    let d = shape.iter().product();
    let mut net = Network::from_trunk(gpu, d, trunk, Init::KaimingUniform, arch.head(head), seed)?;
    let options = LoadOptions { init_missing_trunk: true, strict: false };
    let report = net.load_state_dict(ckpt, options, origin)?;
    let head_prefix = format!("{}.", arch.head_module());
    let counts = |name: &String| exact || !name.starts_with(&head_prefix);
    let missing: Vec<String> = report.missing.iter().filter(|n| counts(n)).cloned().collect();
    let other_shape: Vec<String> = report
        .mismatched
        .iter()
        .filter(|(n, _, _)| counts(n))
        .map(|(n, file, net)| format!("{n} {file:?} (a {} has {net:?})", arch.name()))
        .collect();
    if !missing.is_empty() || !other_shape.is_empty() {
        let total = report.applied.len() + report.missing.len() + report.mismatched.len();
        let mut why = Vec::new();
        if !missing.is_empty() {
            why.push(format!("{} of the {total} tensors a {} has are missing: {}", missing.len(), arch.name(), summarise(&missing)));
        }
        if !other_shape.is_empty() {
            why.push(format!("{} have another shape: {}", other_shape.len(), summarise(&other_shape)));
        }
        if !report.unexpected.is_empty() {
            // sorted: a .pth and a .safetensors of the same tensors list them in other orders
            let mut others = report.unexpected.clone();
            others.sort();
            why.push(format!("the file has {} others: {}", others.len(), summarise(&others)));
        }
        return Err(failed(format!("{origin} is not a torchvision {} state_dict: {}", arch.name(), why.join("; "))));
    }
    Ok((net, report))
}

/// The classifier a torchvision state_dict holds at `arch`'s head module: `fc.weight`
/// `[classes, features]`.
fn pretrained_head(arch: models::Arch, ckpt: &Checkpoint, origin: &str) -> CliResult<Head> {
    let name = format!("{}.weight", arch.head_module());
    match ckpt.get(&name).map(|t| t.shape.as_slice()) {
        Some(&[k, f]) if f == arch.features() && k > 0 => Ok(Head::classes(k)),
        Some(shape) => Err(failed(format!(
            "{origin} is not a torchvision {} state_dict: {name} has shape {shape:?}, a {} classifier's is [classes, {}]",
            arch.name(),
            arch.name(),
            arch.features()
        ))),
        None => Err(failed(format!(
            "{origin} has no {name}: not a torchvision {} classifier's state_dict (with a new head, use finetune --arch {})",
            arch.name(),
            arch.name()
        ))),
    }
}

/// Reads the model file (without building the network, which needs the GPU).
pub fn read_model(src: &ModelSource) -> CliResult<Checkpoint> {
    Ok(checkpoint::load(Path::new(&src.path))?)
}

/// `--arch` on a file that records its own architecture is a mistake, found before any work.
pub fn check_arch_given(src: &ModelSource, ckpt: &Checkpoint) -> CliResult<()> {
    if src.arch.is_some() && ckpt.metadata.contains_key(checkpoint::LAYERS_KEY) {
        return Err(usage(format!("--arch is for plain state_dicts; {} records its own architecture", src.path)));
    }
    Ok(())
}

/// The network in `ckpt` (read from `src`): a headswap checkpoint, with `--arch mlp` a plain
/// PyTorch state_dict of Linear layers whose last layer is the head (of `kind`), or with
/// `--arch resnet18` etc. a torchvision model with its own classifier, for examples of `shape`.
pub fn load_model(gpu: &headswap::Gpu, src: &ModelSource, ckpt: &Checkpoint, kind: HeadKind, shape: &[usize]) -> CliResult<Network> {
    let has_arch = ckpt.metadata.contains_key(checkpoint::LAYERS_KEY);
    let net = match (&src.arch, has_arch) {
        (None, true) => Network::from_checkpoint(gpu, ckpt, &src.path)?,
        (Some(_), false) => match src.builtin() {
            Some(arch) => {
                let (net, report) = load_builtin(gpu, arch, ckpt, &src.path, shape, BuiltinHead::Pretrained, 0)?;
                eprintln!("{}: {report}", src.path);
                net
            }
            None => Network::from_state_dict(gpu, ckpt, src.act, kind, 1, &src.path)?,
        },
        (Some(_), true) => return Err(usage(format!("--arch is for plain state_dicts; {} records its own architecture", src.path))),
        (None, false) => {
            return Err(failed(format!(
                "{}: no headswap architecture in the metadata (a plain PyTorch state_dict?); add --arch mlp to read it as \
                 nn.Linear layers with --activation (relu by default) between them, or --arch resnet18 (resnet34, resnet50) \
                 for torchvision's",
                src.path
            )));
        }
    };
    Ok(net)
}

/// The number of input features the first layer of a headswap checkpoint takes, from its
/// recorded architecture (the library's `headswap.layers` record: a dense layer's `inputs`, or a
/// spatial layer's channels × height × width), so that it is known before the GPU is; `None` for
/// a plain state_dict.
fn recorded_input_width(ckpt: &Checkpoint) -> Option<usize> {
    let layers: serde_json::Value = serde_json::from_str(ckpt.metadata.get(checkpoint::LAYERS_KEY)?).ok()?;
    let first = layers.as_array()?.first()?;
    let n = |k: &str| first.get(k).and_then(|v| v.as_u64()).map(|v| v as usize);
    n("inputs").or_else(|| Some(n("in_channels").or(n("channels"))? * n("height")? * n("width")?))
}

/// The model reads as many input features as the data has, checked before any work and said
/// with both numbers (the library would say it mid-run). A plain state_dict is checked once its
/// network is built ([`crate::data::check_input_width`]).
pub fn check_recorded_width(ckpt: &Checkpoint, spec: &str, data: &Dataset) -> CliResult<()> {
    match recorded_input_width(ckpt) {
        Some(width) if width != data.d => Err(crate::data::width_mismatch(width, spec, data)),
        _ => Ok(()),
    }
}

/// The class or label names a checkpoint was trained with (empty when it has none).
pub fn model_names(ckpt: &Checkpoint) -> Vec<String> {
    headswap::nn::state::label_names_from_metadata(&ckpt.metadata, "").ok().flatten().unwrap_or_default()
}

/// The image layout a checkpoint records: `(width, height, rgb)`.
pub fn recorded_layout(ckpt: &Checkpoint) -> Option<(u32, u32, bool)> {
    match InputLayout::from_metadata(&ckpt.metadata, "").ok()?? {
        InputLayout::Image { channels, height, width } => Some((width as u32, height as u32, channels == ImageChannels::Rgb)),
        InputLayout::Shape(_) => None,
    }
}

fn describe_layout(w: u32, h: u32, rgb: bool) -> String {
    let c = if rgb { 3 } else { 1 };
    format!("{w}x{h} {} images ({} input features)", if rgb { "RGB" } else { "gray" }, w as u64 * h as u64 * c)
}

/// How `eval` and `finetune` read `--data` (`spec`, of `kind`) for the model file read as `ckpt`:
/// images at the size and channels the model was trained at, each overridden only by the option
/// given. A layout the model cannot take is refused here, before any work, naming the model's
/// layout and the options that conflict with it.
pub fn image_options_for_model(args: &ModelImageArgs, ckpt: &Checkpoint, spec: &str, kind: DataKind) -> CliResult<ImageOptions> {
    let mut chosen = ImageArgs::from(args);
    let recorded = recorded_layout(ckpt);
    let reads_images = matches!(kind, DataKind::Images | DataKind::Synthetic);
    if kind == DataKind::Images && chosen.normalize.is_none() {
        chosen.normalize = Some(recorded_normalize(ckpt));
    }
    if let (Some((w, h, rgb)), true) = (recorded, reads_images) {
        // synthetic data is drawn square or not at all
        if chosen.size.is_none() && (kind == DataKind::Images || w == h) {
            chosen.size = Some((w, h));
        }
        if rgb && kind == DataKind::Images {
            chosen.rgb = true;
        }
    }
    let opts = image_options(&chosen, kind)?;
    if let (Some((w, h, rgb)), true) = (recorded, reads_images) {
        let (dw, dh) = opts.size;
        let drgb = opts.channels == Channels::Rgb;
        if (dw, dh, drgb) != (w, h, rgb) {
            let mut given: Vec<String> = args.size.map(|(w, h)| format!("--size {w}x{h}")).into_iter().collect();
            if args.rgb {
                given.push("--rgb".into());
            }
            let what = if given.is_empty() { format!("--data {spec}") } else { given.join(" ") };
            return Err(failed(format!(
                "the model was trained on {}; {what} gives {}",
                describe_layout(w, h, rgb),
                describe_layout(dw, dh, drgb)
            )));
        }
    }
    Ok(opts)
}

/// The head a data set needs: one output per class (softmax) or per label (sigmoid).
pub fn head_for(data: &Dataset, hidden: Option<usize>, act: Activation) -> Head {
    let k = data.num_outputs();
    let head = if data.targets.is_multi_label() { Head::labels(k) } else { Head::classes(k) };
    match hidden {
        Some(h) => head.hidden(h, act),
        None => head,
    }
}

/// The network `--arch`/`--layers`/`--channels` describe, for `data`.
pub fn new_network(
    gpu: &headswap::Gpu,
    data: &Dataset,
    arch: Arch,
    layers: Vec<usize>,
    channels: &[usize],
    act: Activation,
    seed: u64,
) -> CliResult<Network> {
    if let Some(file) = crate::heads::file_heads(data) {
        // the file's heads metadata defines the heads: regression with MSE, every weight 1
        let heads: Vec<Head> = file.iter().map(crate::heads::head_for_targets).collect::<CliResult<_>>()?;
        let trunk = match arch {
            Arch::Mlp => {
                let mut sizes = vec![data.d];
                sizes.extend(layers);
                sizes
                    .windows(2)
                    .map(|w| headswap::nn::LayerSpec::Dense(headswap::nn::DenseSpec { inputs: w[0], outputs: w[1], activation: act }))
                    .collect()
            }
            Arch::Cnn => demo::cnn_trunk(&data.input_shape, channels, &layers, act)?,
        };
        let trunk = headswap::nn::Trunk::chain(trunk);
        return Ok(Network::from_trunk_heads(gpu, data.d, trunk, Default::default(), &heads, seed)?);
    }
    let head = head_for(data, None, act);
    match arch {
        Arch::Mlp => {
            let mut sizes = vec![data.d];
            sizes.extend(layers);
            Ok(Network::mlp(gpu, &sizes, act, Default::default(), head, seed)?)
        }
        Arch::Cnn => {
            let trunk = demo::cnn_trunk(&data.input_shape, channels, &layers, act)?;
            Ok(Network::from_specs(gpu, data.d, trunk, Default::default(), head, seed)?)
        }
    }
}

/// Every parameter finite: the last guard before a checkpoint is written.
fn check_finite_weights(ckpt: &Checkpoint) -> CliResult<()> {
    let bad = ckpt.names().find(|n| ckpt.get(n).is_some_and(|t| t.data.iter().any(|v| !v.is_finite())));
    match bad {
        Some(name) => Err(failed(format!("training diverged (non-finite weights in {name}); nothing saved — try a lower --lr"))),
        None => Ok(()),
    }
}

/// The image layout `predict` must read files in, for a model trained on `loaded`: the data's
/// own `[C, H, W]`, and none for feature vectors from a tensor file.
fn image_layout(loaded: &Loaded) -> Option<InputLayout> {
    match (loaded.kind, loaded.data.input_shape.as_slice()) {
        (DataKind::Tensor, _) => None,
        (_, &[c, h, w]) if c == 1 || c == 3 => {
            Some(InputLayout::Image { channels: if c == 3 { ImageChannels::Rgb } else { ImageChannels::Gray }, height: h, width: w })
        }
        _ => None,
    }
}

/// Records on `net` what `predict`, `eval` and `resume` read back: the class or label names and
/// the input layout (for image data the size and channels to read images at), through the
/// library, which saves them with the network.
pub fn record_layout(net: &mut Network, loaded: &Loaded) -> CliResult<()> {
    let data = &loaded.data;
    if !data.label_names.is_empty() && data.label_names.len() == net.output_dim() {
        net.set_label_names(Some(data.label_names.clone()))?;
    }
    net.set_input_layout(Some(image_layout(loaded).unwrap_or_else(|| InputLayout::Shape(data.input_shape.clone()))))?;
    Ok(())
}

pub fn storage(f16: bool) -> StorageDtype {
    if f16 { StorageDtype::F16 } else { StorageDtype::F32 }
}

/// The metadata key that records `--frozen-f16`: the precision the run that wrote the model stored
/// its frozen trunk's cached features in on the device (absent: f32). The weights themselves are
/// saved as `--f16` says, whatever the run computed on.
pub const FROZEN_STORAGE_KEY: &str = "headswap.frozen_storage";

/// Saves `net` with what `predict` and `eval` need: the input shape, the class or label names,
/// and for image data the size and channels to read images at (recorded on the network by
/// [`record_layout`], written by the library), and [`FROZEN_STORAGE_KEY`] where the run stored
/// its frozen data in f16.
pub fn save(net: &mut Network, path: &Path, loaded: &Loaded, dtype: StorageDtype, frozen: Precision) -> CliResult<()> {
    // in an MPI job every rank holds the same weights; rank 0 writes them
    if !crate::replicas::is_primary() {
        return Ok(());
    }
    record_layout(net, loaded)?;
    let mut ckpt = net.to_checkpoint()?;
    if loaded.normalize != Normalize::None {
        ckpt.metadata.insert(NORMALIZE_KEY.into(), loaded.normalize.name().into());
    }
    if frozen != Precision::F32 {
        ckpt.metadata.insert(FROZEN_STORAGE_KEY.into(), frozen.name().into());
    }
    check_finite_weights(&ckpt)?;
    checkpoint::save(path, &ckpt, dtype)?;
    eprintln!("saved {}", path.display());
    Ok(())
}

/// The options `--save-state` records with a run, so that `resume` continues with the same
/// optimizer, schedule, batches and data unless an option given to `resume` overrides one.
const RUN_FLAGS: &[&str] = &[
    "optimizer",
    "lr",
    "momentum",
    "nesterov",
    "weight-decay",
    "batch",
    "seed",
    "no-shuffle",
    "val",
    "early-stop",
    "threshold",
    "pos-weight",
    "schedule",
    "size",
    "rgb",
    "normalize",
    "batch-norm",
    "augment",
    "no-cache",
    "head-weighting",
    "frozen-f16",
    "overlap-exchange",
    "accumulate",
];
const RUN_FLAGS_KEY: &str = "headswap.run_flags";
const RUN_EXAMPLES_KEY: &str = "headswap.run_examples";

/// `--save-state PATH`: a training checkpoint (weights + optimizer state, epoch, RNG position)
/// plus the run's options, data size and class or label names, which `headswap resume`
/// continues exactly.
pub fn save_state(trainer: &Trainer, net: &mut Network, path: Option<&Path>, given: &Given, loaded: &Loaded) -> CliResult<()> {
    let (Some(p), Some(state)) = (path, trainer.training_state()) else { return Ok(()) };
    if !crate::replicas::is_primary() {
        return Ok(());
    }
    let data = &loaded.data;
    record_layout(net, loaded)?;
    let mut c = state.to_checkpoint(net)?;
    let flags: BTreeMap<&String, &Option<String>> = given.0.iter().filter(|(k, _)| RUN_FLAGS.contains(&k.as_str())).collect();
    c.metadata.insert(RUN_FLAGS_KEY.into(), serde_json::to_string(&flags).unwrap_or_default());
    c.metadata.insert(RUN_EXAMPLES_KEY.into(), data.n.to_string());
    // always f32, as TrainingState::save: Adam's moments would underflow in f16
    checkpoint::save(p, &c, StorageDtype::F32)?;
    eprintln!("saved training state {}", p.display());
    Ok(())
}

/// The saved run's options from a state file's metadata (none for a state written before they
/// were recorded).
pub fn saved_run_flags(ckpt: &Checkpoint) -> Option<BTreeMap<String, Option<String>>> {
    ckpt.metadata.get(RUN_FLAGS_KEY).and_then(|s| serde_json::from_str(s).ok())
}

/// The number of examples the saved run trained on, when the state file records it.
pub fn saved_run_examples(ckpt: &Checkpoint) -> Option<usize> {
    ckpt.metadata.get(RUN_EXAMPLES_KEY).and_then(|n| n.parse().ok())
}
