//! Networks: a trunk of shared dense layers and a head of task-specific ones, with parameters
//! resident on the GPU.
//!
//! Parameters live in two flat arenas, one for the trunk and one for the head, each layer's
//! weight `[out, in]` (as PyTorch's `nn.Linear`) and bias `[out]` at 256-byte aligned offsets so
//! they can be bound directly. A head-swap drops the head arena and creates a new one; the trunk
//! arena is not touched (no copy, no upload, no readback). Which layers train is chosen per run
//! ([`crate::train::ParamGroups`]); the trainer gives each run of adjacent trainable layers of an
//! arena its own gradient and optimizer buffers, and frozen layers none.

pub mod batchnorm;
use batchnorm::RunningStats;
pub mod init;
pub mod layer;
pub mod models;
pub mod state;

use crate::error::{Error, Result};
use crate::gpu::{Gpu, Tensor};
/// Re-exported so that building layers (`Head::hidden`, [`CnnBuilder`]) needs only `nn`; the
/// kernels that apply it live in [`crate::kernels`].
pub use crate::kernels::Activation;
pub use crate::kernels::loss::{BceReduction, RegressionLoss};
use crate::rng::Rng;
use crate::train::Precision;
pub use init::Init;
pub use layer::{AdaptivePoolSpec, ChannelMulSpec, ConcatSpec, DropoutSpec, MAX_CONCAT};
pub use layer::{AddSpec, BatchNormSpec, CnnBuilder, Conv2dSpec, DenseSpec, LayerSpec, Pool2dSpec, Trunk, check_module_path, check_wiring};
pub use state::{ImageChannels, InputLayout, LoadOptions, LoadReport};

/// What the network's outputs mean, which decides the loss and the metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HeadKind {
    /// One label per example out of `outputs` classes: softmax cross-entropy, accuracy.
    Classes,
    /// `outputs` independent binary labels: per-label sigmoid BCE, per-label F1.
    Labels,
    /// `outputs` real-valued targets: MSE, L1 or Huber, masked where the target is NaN; MAE and
    /// RMSE. Only in a network of named heads ([`Network::from_trunk_heads`]).
    Regression(RegressionLoss),
}

impl HeadKind {
    /// `classes`, `labels` or `regression`: the kind's name in data files and messages.
    pub fn name(self) -> &'static str {
        match self {
            HeadKind::Classes => "classes",
            HeadKind::Labels => "labels",
            HeadKind::Regression(_) => "regression",
        }
    }
}

/// One head of a network of named heads ([`Network::from_trunk_heads`]): its name, what it
/// predicts, its weight in the network's loss `Σ_t w_t·L_t`, and where its layers are.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadInfo {
    pub name: String,
    pub kind: HeadKind,
    pub weight: f32,
    /// Its layers' indices in the network (trunk then heads): `layers.end − 1` is its output layer.
    pub layers: std::ops::Range<usize>,
    pub outputs: usize,
    /// The class or label names, one per output, or `None`.
    pub label_names: Option<Vec<String>>,
    /// Labels heads: [`Head::pos_weight`](Head#structfield.pos_weight) and
    /// [`Head::bce_reduction`](Head#structfield.bce_reduction).
    pub pos_weight: Option<Vec<f32>>,
    pub bce_reduction: Option<BceReduction>,
    /// The head's learned log-variance `s` under uncertainty weighting
    /// ([`crate::train::HeadWeighting::Uncertainty`]): `None` until a run so weighted trains it
    /// (it then starts at 0, weight `exp(−s)` = 1). Saved as `"log_var"` in the head's entry of
    /// the `headswap.heads` metadata.
    pub log_var: Option<f32>,
}

/// A head to attach: optional hidden layers, then the output layer (no activation: the loss
/// applies softmax or sigmoid to the logits).
#[derive(Debug, Clone, PartialEq)]
pub struct Head {
    pub hidden: Vec<(usize, Activation)>,
    pub outputs: usize,
    pub kind: HeadKind,
    pub init: Init,
    /// The class or label names, one per output; `None` when unknown. The network takes them as
    /// its [`label_names`](Network::label_names).
    pub names: Option<Vec<String>>,
    /// The head's module path (`"fc"`, `"classifier"`): a one-layer head's parameters are saved
    /// as `fc.weight`/`fc.bias`, a head with hidden layers is an `nn.Sequential` at that path
    /// (`classifier.0.weight`, `classifier.2.weight`, ...). `None`: the layers continue the
    /// trunk's `nn.Sequential` indices, or, on a head-swap, the old head's path is kept.
    pub module: Option<String>,
    /// Dropout with this probability in front of the output layer (torchvision's classifiers:
    /// mobilenet_v2's `Sequential(Dropout(0.2), Linear)`, MobileNetV3's `Linear, Hardswish,
    /// Dropout, Linear`); `None`: none.
    pub dropout: Option<f32>,
    /// The head's name in a network of several heads (its parameters are saved under
    /// `heads.<name>.…`, its targets are `y.<name>`); `None` for a network's only head.
    pub name: Option<String>,
    /// The head's weight `w` in the network's loss `Σ_t w_t·L_t` (1 by default; 0 trains it
    /// not at all: it gets no gradient and passes none to the trunk).
    pub weight: f32,
    /// A labels head of a network of named heads: each label's positive weight (PyTorch's
    /// `pos_weight`), one per output; `None`: 1.
    pub pos_weight: Option<Vec<f32>>,
    /// A labels head of a network of named heads: how its BCE is normalised; `None`: the run's
    /// ([`crate::train::BceSettings::reduction`]).
    pub bce_reduction: Option<BceReduction>,
}

impl Head {
    /// A softmax classifier over `n` classes.
    pub fn classes(n: usize) -> Head {
        Head {
            hidden: Vec::new(),
            outputs: n,
            kind: HeadKind::Classes,
            init: Init::KaimingUniform,
            names: None,
            module: None,
            dropout: None,
            name: None,
            weight: 1.0,
            pos_weight: None,
            bce_reduction: None,
        }
    }
    /// `k` independent sigmoid labels (multi-task).
    pub fn labels(k: usize) -> Head {
        Head {
            hidden: Vec::new(),
            outputs: k,
            kind: HeadKind::Labels,
            init: Init::KaimingUniform,
            names: None,
            module: None,
            dropout: None,
            name: None,
            weight: 1.0,
            pos_weight: None,
            bce_reduction: None,
        }
    }
    /// `k` real-valued outputs trained with `loss` (MSE, L1 or Huber), a NaN target masked.
    pub fn regression(k: usize, loss: RegressionLoss) -> Head {
        Head { kind: HeadKind::Regression(loss), ..Head::labels(k) }
    }
    /// Names the head (see [`Head::name`](Head#structfield.name)).
    pub fn named(mut self, name: &str) -> Head {
        self.name = Some(name.to_string());
        self
    }
    /// Sets the head's loss weight (see [`Head::weight`](Head#structfield.weight)).
    pub fn weight(mut self, w: f32) -> Head {
        self.weight = w;
        self
    }
    /// Sets a labels head's per-label positive weights (see
    /// [`Head::pos_weight`](Head#structfield.pos_weight)).
    pub fn pos_weight(mut self, w: Vec<f32>) -> Head {
        self.pos_weight = Some(w);
        self
    }
    /// Sets a labels head's BCE reduction (see
    /// [`Head::bce_reduction`](Head#structfield.bce_reduction)).
    pub fn bce_reduction(mut self, r: BceReduction) -> Head {
        self.bce_reduction = Some(r);
        self
    }
    /// Adds a hidden layer of `units` before the output layer.
    pub fn hidden(mut self, units: usize, activation: Activation) -> Head {
        self.hidden.push((units, activation));
        self
    }
    /// Puts dropout with probability `p` in front of the output layer (see
    /// [`Head::dropout`](Head#structfield.dropout)). It draws its masks in training, also when
    /// only the head trains on cached trunk features; evaluation and prediction skip it.
    pub fn dropout(mut self, p: f32) -> Head {
        self.dropout = Some(p);
        self
    }
    /// Chooses the initialisation of the head's fresh layers.
    pub fn init(mut self, init: Init) -> Head {
        self.init = init;
        self
    }
    /// Names the classes or labels, one per output (checked by [`validate`](Self::validate)).
    pub fn names<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Head {
        self.names = Some(names.into_iter().map(Into::into).collect());
        self
    }
    /// Puts the head at the module path `path` (PyTorch's attribute name for it, `"fc"` in a
    /// ResNet), see [`Head::module`](Head#structfield.module).
    pub fn module(mut self, path: &str) -> Head {
        self.module = Some(path.to_string());
        self
    }
    /// Checks that every layer of the head has at least one unit: a zero-width layer would build
    /// (wgpu pads empty buffers) but make a network no checkpoint can describe or load.
    pub fn validate(&self) -> Result<()> {
        if self.outputs == 0 {
            return Err(Error::invalid("a head needs at least one output (class or label), got 0"));
        }
        // a softmax over one output is 1 whatever the input: its loss is 0 and nothing is learned
        if self.kind == HeadKind::Classes && self.outputs < 2 {
            return Err(Error::invalid("a classifier head needs at least two classes, got 1 (one yes/no label is Head::labels(1))"));
        }
        if let Some(p) = self.dropout.filter(|p| !(0.0..=1.0).contains(p)) {
            return Err(Error::invalid(format!("the head's dropout probability must be in [0, 1], got {p}")));
        }
        if let Some(i) = self.hidden.iter().position(|&(units, _)| units == 0) {
            return Err(Error::invalid(format!("hidden layer {} of the head has 0 units; every layer needs at least one", i + 1)));
        }
        if let Some(names) = &self.names {
            state::check_label_names(names, self.outputs)?;
        }
        if let Some(path) = &self.module {
            check_module_path(path)?;
        }
        if !self.weight.is_finite() || self.weight < 0.0 {
            return Err(Error::invalid(format!("a head's loss weight must be finite and ≥ 0, got {}", self.weight)));
        }
        if let HeadKind::Regression(RegressionLoss::Huber(d)) = self.kind
            && !(d.is_finite() && d > 0.0)
        {
            return Err(Error::invalid(format!("a Huber loss needs δ > 0, got {d}")));
        }
        if (self.pos_weight.is_some() || self.bce_reduction.is_some()) && self.kind != HeadKind::Labels {
            return Err(Error::invalid(format!("pos_weight and a BCE reduction are for labels heads, not a {} head", self.kind.name())));
        }
        if let Some(p) = &self.pos_weight {
            if p.len() != self.outputs {
                return Err(Error::shape(format!("pos_weight has {} values for {} labels", p.len(), self.outputs)));
            }
            if let Some(v) = p.iter().find(|v| !(v.is_finite() && **v >= 0.0)) {
                return Err(Error::invalid(format!("pos_weight values must be finite and ≥ 0, got {v}")));
            }
        }
        Ok(())
    }

    /// The module path of each of the head's layers at `module` (see [`Head::module`]), `None`
    /// each without one.
    pub(crate) fn layer_names(specs: &[LayerSpec], module: Option<&str>) -> Vec<Option<String>> {
        match module {
            None => vec![None; specs.len()],
            Some(m) if specs.len() == 1 => vec![Some(m.to_string())],
            Some(m) => state::sequential_indices(specs).into_iter().map(|i| Some(format!("{m}.{i}"))).collect(),
        }
    }

    fn specs(&self, inputs: usize) -> Vec<LayerSpec> {
        let mut specs = Vec::new();
        let mut i = inputs;
        for &(units, activation) in &self.hidden {
            specs.push(LayerSpec::Dense(DenseSpec { inputs: i, outputs: units, activation }));
            i = units;
        }
        if let Some(p) = self.dropout {
            specs.push(LayerSpec::Dropout(layer::DropoutSpec { features: i, chw: None, p }));
        }
        specs.push(LayerSpec::Dense(DenseSpec { inputs: i, outputs: self.outputs, activation: Activation::Identity }));
        specs
    }
}

/// Where one layer's weight and bias sit in its arena (element offsets).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Slot {
    pub w: usize,
    pub b: usize,
    pub end: usize,
}

/// Parameters of consecutive layers in one buffer: f32 `[len]`, or, stored in f16
/// ([`Network::set_trunk_storage`]), u32 `[len / 2]` with two halves a word (the element at
/// `2k` in the low half of word `k`). Slots are element offsets either way; every one is even.
#[derive(Clone)]
pub(crate) struct Arena {
    pub buf: Tensor,
    pub slots: Vec<Slot>,
    pub len: usize,
}

impl Arena {
    /// How the values are stored.
    pub fn storage(&self) -> Precision {
        if self.buf.dtype() == crate::gpu::tensor::DType::U32 { Precision::F16 } else { Precision::F32 }
    }
}

/// Element alignment of every parameter view: 64 f32 = 256 bytes, wgpu's largest
/// `min_storage_buffer_offset_alignment`.
pub(crate) const ALIGN: usize = 64;

/// Element alignment of every view of an arena stored in f16: 128 halves = 256 bytes, so a
/// layer's packed weight can be bound as a matmul operand directly.
pub(crate) const ALIGN_F16: usize = 2 * ALIGN;

pub(crate) fn layout(specs: &[LayerSpec]) -> (Vec<Slot>, usize) {
    layout_aligned(specs, ALIGN)
}

pub(crate) fn layout_aligned(specs: &[LayerSpec], align: usize) -> (Vec<Slot>, usize) {
    let mut off = 0;
    let mut slots = Vec::new();
    for s in specs {
        let w = off;
        let w_len: usize = s.weight_shape().map_or(0, |sh| sh.iter().product());
        let b = (w + w_len).next_multiple_of(align);
        let end = (b + s.bias_len()).next_multiple_of(align);
        slots.push(Slot { w, b, end });
        off = end;
    }
    (slots, off)
}

/// Checks, before any host memory is spent on initial values, that each layer's weight and the
/// whole arena for `specs` fit this adapter's buffer and binding limits. Initialising a layer
/// too large for the GPU would otherwise first allocate its values on the host, and a request of
/// terabytes aborts the process instead of returning an error.
fn check_arena_fits(gpu: &Gpu, specs: &[LayerSpec], label: &str) -> Result<()> {
    let overflow = || Error::invalid(format!("{label}: the parameter count overflows"));
    let mut elems: u64 = 0;
    for (i, s) in specs.iter().enumerate() {
        let w_len = s.weight_shape().unwrap_or_default().iter().try_fold(1u64, |acc, &d| acc.checked_mul(d as u64)).ok_or_else(overflow)?;
        let w_bytes = w_len.checked_mul(4).ok_or_else(overflow)?;
        gpu.check_binding_size(&format!("{label}: layer {i} ({})", s.describe()), w_bytes)?;
        // the same padding as `layout`: weight and bias each start on an ALIGN boundary
        let align = |v: u64| v.checked_next_multiple_of(ALIGN as u64).ok_or_else(overflow);
        elems = align(elems.checked_add(w_len).ok_or_else(overflow)?)?;
        elems = align(elems.checked_add(s.bias_len() as u64).ok_or_else(overflow)?)?;
    }
    gpu.check_binding_size(label, elems.checked_mul(4).ok_or_else(overflow)?)
}

impl Arena {
    fn new(gpu: &Gpu, specs: &[LayerSpec], values: &[(Vec<f32>, Vec<f32>)], label: &str) -> Result<Arena> {
        let (slots, len) = layout(specs);
        let mut host = vec![0f32; len];
        for (slot, (w, b)) in slots.iter().zip(values) {
            host[slot.w..slot.w + w.len()].copy_from_slice(w);
            host[slot.b..slot.b + b.len()].copy_from_slice(b);
        }
        let buf = Tensor::alloc(gpu, &[len], crate::gpu::tensor::DType::F32, label)?;
        buf.write(gpu, &host)?;
        Ok(Arena { buf, slots, len })
    }
}

/// Which layers were kept and which were created by a head-swap, and how.
#[derive(Debug, Clone)]
pub struct HeadSwapReport {
    /// Trunk layers kept untouched: (index, inputs, outputs, activation).
    pub kept: Vec<String>,
    /// Head layers dropped.
    pub dropped: Vec<String>,
    /// Head layers created, with their initialisation.
    pub created: Vec<String>,
    /// The module paths of the layers created (named-head operations; empty for
    /// [`Network::swap_head`]): a resumed run gives them fresh optimizer state
    /// ([`crate::train::TrainingState::after_head_edit`]).
    pub created_modules: Vec<String>,
}

impl std::fmt::Display for HeadSwapReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "head-swap:")?;
        for k in &self.kept {
            writeln!(f, "  kept     {k}")?;
        }
        for d in &self.dropped {
            writeln!(f, "  dropped  {d}")?;
        }
        for c in &self.created {
            writeln!(f, "  created  {c}")?;
        }
        Ok(())
    }
}

/// A trunk and a head of dense layers whose parameters live on the GPU.
///
/// ```no_run
/// use headswap::{Gpu, nn::{Head, Network}};
/// let gpu = Gpu::new()?;
/// let mut net = Network::new(&gpu, &[784, 512, 256], Head::classes(10), 42)?;
/// let report = net.swap_head(Head::labels(4), 7)?;   // trunk untouched, fresh 256→4 head
/// println!("{report}");
/// # Ok::<(), headswap::Error>(())
/// ```
pub struct Network {
    pub(crate) gpu: Gpu,
    pub(crate) trunk: Vec<LayerSpec>,
    pub(crate) head: Vec<LayerSpec>,
    pub(crate) head_kind: HeadKind,
    pub(crate) trunk_params: Arena,
    pub(crate) head_params: Arena,
    /// The trunk's BatchNorm running statistics (the head has none).
    pub(crate) running: RunningStats,
    /// Per layer (trunk then head), the values it reads: `0` the input, `j + 1` layer `j`'s
    /// output. A chain reads `[i]` at layer `i`; the head always continues the chain from the
    /// trunk's last layer.
    pub(crate) sources: Vec<Vec<usize>>,
    /// Per layer (trunk then head), its module path, unique: the given one, or its
    /// `nn.Sequential` index (see [`resolve_names`]).
    pub(crate) names: Vec<String>,
    /// The head's module path when it was given one ([`Head::module`]); a head-swap keeps it.
    pub(crate) head_module: Option<String>,
    /// One name per output, or `None` (see `state.rs`, which reads and writes them).
    pub(crate) label_names: Option<Vec<String>>,
    /// How one example is laid out, or `None`.
    pub(crate) input_layout: Option<InputLayout>,
    /// A network of named heads ([`Network::from_trunk_heads`]): each head's kind, weight and
    /// layers (the head layers are the heads' layers one after the other, each head's first
    /// layer reading the trunk's last output). Empty for a network of one head, which keeps
    /// `head_kind` and today's loss path, names and bits.
    pub(crate) heads: Vec<HeadInfo>,
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network").field("trunk", &self.trunk).field("head", &self.head).field("head_kind", &self.head_kind).finish()
    }
}

fn describe(i: usize, name: &str, s: &LayerSpec) -> String {
    if name == i.to_string() { format!("layer {i}: {}", s.describe()) } else { format!("layer {i} ({name}): {}", s.describe()) }
}

/// Each layer's module path: the given one, or else its `nn.Sequential` index among `layers`
/// (headswap's names before module paths, so a network without given names saves under the
/// names it always had). Every name must be unique, since it keys the layer's parameters.
pub(crate) fn resolve_names(layers: &[LayerSpec], given: &[Option<String>]) -> Result<Vec<String>> {
    if given.len() != layers.len() {
        return Err(Error::shape(format!("{} layers but {} names", layers.len(), given.len())));
    }
    let names: Vec<String> =
        given.iter().zip(state::sequential_indices(layers)).map(|(g, seq)| g.clone().unwrap_or_else(|| seq.to_string())).collect();
    let mut seen = std::collections::HashSet::new();
    for (i, n) in names.iter().enumerate() {
        check_module_path(n)?;
        if !seen.insert(n.as_str()) {
            return Err(Error::invalid(format!(
                "two layers are named {n:?} (the second is layer {i}, {}): module paths must be unique",
                layers[i].describe()
            )));
        }
    }
    Ok(names)
}

impl Network {
    /// An MLP trunk with ReLU between the given sizes (`sizes[0]` is the input width) and `head`
    /// on top, initialised like `nn.Linear` from `seed`.
    pub fn new(gpu: &Gpu, sizes: &[usize], head: Head, seed: u64) -> Result<Network> {
        Self::mlp(gpu, sizes, Activation::Relu, Init::KaimingUniform, head, seed)
    }

    /// An MLP trunk with the given activation and initialisation.
    pub fn mlp(gpu: &Gpu, sizes: &[usize], activation: Activation, init: Init, head: Head, seed: u64) -> Result<Network> {
        if sizes.is_empty() || sizes.contains(&0) {
            return Err(Error::invalid(format!("layer sizes must be non-empty and positive, got {sizes:?}")));
        }
        let trunk: Vec<LayerSpec> =
            sizes.windows(2).map(|w| LayerSpec::Dense(DenseSpec { inputs: w[0], outputs: w[1], activation })).collect();
        Self::from_specs(gpu, sizes[0], trunk, init, head, seed)
    }

    /// A network from explicit trunk layers (which must chain) and a head.
    pub fn from_specs(gpu: &Gpu, inputs: usize, trunk: Vec<LayerSpec>, init: Init, head: Head, seed: u64) -> Result<Network> {
        let mut width = inputs;
        for (i, s) in trunk.iter().enumerate() {
            s.validate()?;
            if s.inputs() != width || s.outputs() == 0 {
                return Err(Error::shape(format!(
                    "trunk layer {i} ({}) takes {} inputs, the layer below gives {width}",
                    s.describe(),
                    s.inputs()
                )));
            }
            width = s.outputs();
        }
        Self::from_trunk(gpu, inputs, Trunk::chain(trunk), init, head, seed)
    }

    /// A network from a trunk whose layers may read any earlier output (residual blocks, built
    /// with [`CnnBuilder::residual`] and [`CnnBuilder::build_graph`]) and a head on its last layer.
    pub fn from_trunk(gpu: &Gpu, inputs: usize, trunk: Trunk, init: Init, head: Head, seed: u64) -> Result<Network> {
        let mut rng = Rng::new(seed);
        let Trunk { layers: trunk, sources, names: trunk_names } = trunk;
        for s in &trunk {
            s.validate()?;
        }
        check_wiring(&trunk, &sources, inputs)?;
        let width = trunk.last().map_or(inputs, |s| s.outputs());
        if width == 0 {
            return Err(Error::invalid("a network needs at least one input and one output"));
        }
        head.validate()?;
        let head_specs = head.specs(width);
        let all: Vec<LayerSpec> = trunk.iter().chain(&head_specs).copied().collect();
        let given: Vec<Option<String>> = trunk_names.into_iter().chain(Head::layer_names(&head_specs, head.module.as_deref())).collect();
        let names = resolve_names(&all, &given)?;
        check_arena_fits(gpu, &trunk, "trunk_params")?;
        check_arena_fits(gpu, &head_specs, "head_params")?;
        let values: Vec<_> = trunk.iter().map(|s| init.layer(s, &mut rng)).collect();
        let trunk_params = Arena::new(gpu, &trunk, &values, "trunk_params")?;
        let head_values: Vec<_> = head_specs.iter().map(|s| head.init.layer(s, &mut rng)).collect();
        let head_params = Arena::new(gpu, &head_specs, &head_values, "head_params")?;
        let sources = chain_head(sources, head_specs.len());
        let running = RunningStats::new(gpu, &trunk)?;
        Ok(Network {
            gpu: gpu.clone(),
            trunk,
            head: head_specs,
            head_kind: head.kind,
            trunk_params,
            head_params,
            running,
            sources,
            names,
            head_module: head.module,
            label_names: head.names,
            input_layout: None,
            heads: Vec::new(),
        })
    }

    /// A network of several named heads on one trunk (multi-task learning): each head's first
    /// layer reads the trunk's last output, each ends in its own outputs, and training minimises
    /// `Σ_t w_t·L_t` ([`Head::weight`]), each head's loss masked where its target is unknown (a
    /// NaN row for labels and regression, class −1 for classes). Every head needs a distinct
    /// name ([`Head::named`]); a head's layers are saved under `heads.<name>` (one layer) or
    /// `heads.<name>.<i>` (with hidden layers), unless it has a [`Head::module`].
    pub fn from_trunk_heads(gpu: &Gpu, inputs: usize, trunk: Trunk, init: Init, heads: &[Head], seed: u64) -> Result<Network> {
        if heads.is_empty() {
            return Err(Error::invalid("a network needs at least one head"));
        }
        let mut seen = std::collections::HashSet::new();
        for (k, h) in heads.iter().enumerate() {
            let name = h.name.as_deref().ok_or_else(|| {
                Error::invalid(format!("head {k} has no name: every head of a network of several heads needs one (Head::named)"))
            })?;
            check_head_name(name)?;
            if !seen.insert(name) {
                return Err(Error::invalid(format!("two heads are named {name:?}: head names must be unique")));
            }
            h.validate().map_err(|e| for_head(name, e))?;
        }
        let mut rng = Rng::new(seed);
        let Trunk { layers: trunk, sources, names: trunk_names } = trunk;
        for s in &trunk {
            s.validate()?;
        }
        check_wiring(&trunk, &sources, inputs)?;
        let width = trunk.last().map_or(inputs, |s| s.outputs());
        if width == 0 {
            return Err(Error::invalid("a network needs at least one input and one output"));
        }
        let t = trunk.len();
        let (mut head_specs, mut head_names, mut infos) = (Vec::new(), Vec::new(), Vec::new());
        for h in heads {
            let specs = h.specs(width);
            // `None`: under heads.<name>
            head_names.extend(Head::layer_names(&specs, h.module.as_deref()));
            let start = t + head_specs.len();
            infos.push(HeadInfo {
                name: h.name.clone().unwrap_or_default(),
                kind: h.kind,
                weight: h.weight,
                layers: start..start + specs.len(),
                outputs: h.outputs,
                label_names: h.names.clone(),
                pos_weight: h.pos_weight.clone(),
                bce_reduction: h.bce_reduction,
                log_var: None,
            });
            head_specs.extend(specs);
        }
        // before any initial value is drawn on the host (see check_arena_fits)
        check_arena_fits(gpu, &trunk, "trunk_params")?;
        check_arena_fits(gpu, &head_specs, "head_params")?;
        let mut values: Vec<_> = trunk.iter().map(|s| init.layer(s, &mut rng)).collect();
        for (h, info) in heads.iter().zip(&infos) {
            values.extend(head_specs[info.layers.start - t..info.layers.end - t].iter().map(|s| h.init.layer(s, &mut rng)));
        }
        let trunk = Trunk { layers: trunk, sources, names: trunk_names };
        Self::from_head_layers(gpu, trunk, head_specs, head_names, infos, &values)
    }

    /// A network of dense layers whose every layer's values are given (tests, interop).
    pub fn from_values(
        gpu: &Gpu,
        trunk: Vec<DenseSpec>,
        head: Vec<DenseSpec>,
        head_kind: HeadKind,
        values: &[(Vec<f32>, Vec<f32>)],
    ) -> Result<Network> {
        let wrap = |v: Vec<DenseSpec>| v.into_iter().map(LayerSpec::Dense).collect();
        Self::from_layers(gpu, wrap(trunk), wrap(head), head_kind, values)
    }

    /// A network whose every layer's values are given: `(weight, bias)` per layer, empty for
    /// layers without parameters (checkpoints, tests).
    pub fn from_layers(
        gpu: &Gpu,
        trunk: Vec<LayerSpec>,
        head: Vec<LayerSpec>,
        head_kind: HeadKind,
        values: &[(Vec<f32>, Vec<f32>)],
    ) -> Result<Network> {
        Self::from_graph_layers(gpu, Trunk::chain(trunk), head, head_kind, values)
    }

    /// [`Network::from_layers`] for a trunk with its wiring (residual blocks); the head chains
    /// from the trunk's last layer.
    pub fn from_graph_layers(
        gpu: &Gpu,
        trunk: Trunk,
        head: Vec<LayerSpec>,
        head_kind: HeadKind,
        values: &[(Vec<f32>, Vec<f32>)],
    ) -> Result<Network> {
        Self::from_named_layers(gpu, trunk, head, None, head_kind, values)
    }

    /// [`Network::from_graph_layers`] with the head at the module path `head_module` (see
    /// [`Head::module`]): the loaders' constructor.
    pub(crate) fn from_named_layers(
        gpu: &Gpu,
        trunk: Trunk,
        head: Vec<LayerSpec>,
        head_module: Option<String>,
        head_kind: HeadKind,
        values: &[(Vec<f32>, Vec<f32>)],
    ) -> Result<Network> {
        let Trunk { layers: trunk, sources, names: trunk_names } = trunk;
        let all: Vec<LayerSpec> = trunk.iter().chain(&head).copied().collect();
        if head.is_empty() {
            return Err(Error::invalid("a network needs at least one head layer"));
        }
        if let Some(m) = &head_module {
            check_module_path(m)?;
        }
        let given: Vec<Option<String>> = trunk_names.into_iter().chain(Head::layer_names(&head, head_module.as_deref())).collect();
        let names = resolve_names(&all, &given)?;
        if values.len() != all.len() {
            return Err(Error::shape(format!("{} layers but {} value pairs", all.len(), values.len())));
        }
        let sources = chain_head(sources, head.len());
        for (i, s) in all.iter().enumerate() {
            s.validate()?;
            if i > 0 && sources[i] == [i] && all[i - 1].outputs() != s.inputs() {
                return Err(Error::shape(format!("layer {i} takes {} inputs, layer {} gives {}", s.inputs(), i - 1, all[i - 1].outputs())));
            }
        }
        check_wiring(&all, &sources, all[0].inputs())?;
        for (i, (s, (w, b))) in all.iter().zip(values).enumerate() {
            let w_len: usize = s.weight_shape().map_or(0, |sh| sh.iter().product());
            if w.len() != w_len || b.len() != s.bias_len() {
                return Err(Error::shape(format!(
                    "layer {i} ({}): weight has {} values and bias {}, expected {:?} and [{}]",
                    s.describe(),
                    w.len(),
                    b.len(),
                    s.weight_shape().unwrap_or_default(),
                    s.bias_len()
                )));
            }
        }
        let t = trunk.len();
        let trunk_params = Arena::new(gpu, &trunk, &values[..t], "trunk_params")?;
        let head_params = Arena::new(gpu, &head, &values[t..], "head_params")?;
        if head.iter().any(|l| matches!(l, LayerSpec::BatchNorm(_))) {
            return Err(Error::invalid("a head holds dense layers only: put BatchNorm layers in the trunk"));
        }
        let running = RunningStats::new(gpu, &trunk)?;
        Ok(Network {
            gpu: gpu.clone(),
            trunk,
            head,
            head_kind,
            trunk_params,
            head_params,
            running,
            sources,
            names,
            head_module,
            label_names: None,
            input_layout: None,
            heads: Vec::new(),
        })
    }

    /// A network of named heads whose every layer's values are given (checkpoints, head
    /// operations): the trunk with its wiring, then each head's layers in `heads`' order (each
    /// `HeadInfo::layers` is where its layers sit, one head after the other), their module paths
    /// (`None`: `heads.<name>`), and `(weight, bias)` per layer.
    pub(crate) fn from_head_layers(
        gpu: &Gpu,
        trunk: Trunk,
        head: Vec<LayerSpec>,
        head_names: Vec<Option<String>>,
        heads: Vec<HeadInfo>,
        values: &[(Vec<f32>, Vec<f32>)],
    ) -> Result<Network> {
        let (sources, names) = multi_head_wiring(&trunk, &head, &head_names, &heads)?;
        let trunk = trunk.layers;
        let t = trunk.len();
        let all: Vec<LayerSpec> = trunk.iter().chain(&head).copied().collect();
        if values.len() != all.len() {
            return Err(Error::shape(format!("{} layers but {} value pairs", all.len(), values.len())));
        }
        for (i, (s, (w, b))) in all.iter().zip(values).enumerate() {
            let w_len: usize = s.weight_shape().map_or(0, |sh| sh.iter().product());
            if w.len() != w_len || b.len() != s.bias_len() {
                return Err(Error::shape(format!("layer {i} ({}): weight has {} values and bias {}", s.describe(), w.len(), b.len())));
            }
        }
        check_arena_fits(gpu, &trunk, "trunk_params")?;
        check_arena_fits(gpu, &head, "head_params")?;
        let trunk_params = Arena::new(gpu, &trunk, &values[..t], "trunk_params")?;
        let head_params = Arena::new(gpu, &head, &values[t..], "head_params")?;
        let running = RunningStats::new(gpu, &trunk)?;
        Ok(Network {
            gpu: gpu.clone(),
            head_kind: heads[0].kind,
            trunk,
            head,
            trunk_params,
            head_params,
            running,
            sources,
            names,
            head_module: None,
            label_names: None,
            input_layout: None,
            heads,
        })
    }

    /// Makes a network's only head a named head `name` (weight 1), so that heads can be added
    /// beside it ([`Network::add_head`]); its layers are then saved under `heads.<name>`. The
    /// weights stay where they are; nothing is copied.
    pub fn name_head(&mut self, name: &str) -> Result<()> {
        if self.is_multi_head() {
            return Err(Error::invalid("the network's heads are named already"));
        }
        let t = self.trunk.len();
        let info = HeadInfo {
            name: name.to_string(),
            kind: self.head_kind,
            weight: 1.0,
            layers: t..t + self.head.len(),
            outputs: self.output_dim(),
            label_names: self.label_names.clone(),
            pos_weight: None,
            bce_reduction: None,
            log_var: None,
        };
        let (sources, names) =
            multi_head_wiring(&self.trunk_graph(), &self.head, &vec![None; self.head.len()], std::slice::from_ref(&info))?;
        self.sources = sources;
        self.names = names;
        self.heads = vec![info];
        self.head_module = None;
        self.label_names = None;
        Ok(())
    }

    /// Adds the freshly initialised named head `head` after the others, reading the trunk's
    /// output; the trunk and the other heads keep their weights. On an error the network is
    /// unchanged.
    pub fn add_head(&mut self, head: Head, seed: u64) -> Result<HeadSwapReport> {
        self.edit_heads(None, Some(head), seed)
    }

    /// Removes the head named `name`; the trunk and the other heads keep their weights.
    pub fn remove_head(&mut self, name: &str) -> Result<HeadSwapReport> {
        self.edit_heads(Some(name), None, 0)
    }

    /// Replaces the head named `name` with the freshly initialised `head` (named `name` too
    /// unless it has a name of its own), in its place; the trunk and the other heads keep their
    /// weights.
    pub fn swap_named_head(&mut self, name: &str, head: Head, seed: u64) -> Result<HeadSwapReport> {
        let head = if head.name.is_none() { head.named(name) } else { head };
        self.edit_heads(Some(name), Some(head), seed)
    }

    /// The trunk as built: its layers, wiring and module paths.
    fn trunk_graph(&self) -> Trunk {
        let t = self.trunk.len();
        Trunk {
            layers: self.trunk.clone(),
            sources: self.sources[..t].to_vec(),
            names: self.names[..t].iter().cloned().map(Some).collect(),
        }
    }

    /// Drops the head named `remove` (if any) and puts `add` (if any) in its place, or last: a new
    /// head arena holding the other heads' values read back and the new head's initial ones.
    fn edit_heads(&mut self, remove: Option<&str>, add: Option<Head>, seed: u64) -> Result<HeadSwapReport> {
        if !self.is_multi_head() {
            return Err(Error::invalid("this network has one unnamed head: name it first (Network::name_head), or use swap_head"));
        }
        let t = self.trunk.len();
        let at = match remove {
            Some(name) => Some(self.heads.iter().position(|h| h.name == name).ok_or_else(|| {
                let known: Vec<&str> = self.heads.iter().map(|h| h.name.as_str()).collect();
                Error::invalid(format!("the network has no head named {name:?} (its heads: {})", known.join(", ")))
            })?),
            None => None,
        };
        if let Some(h) = &add {
            h.validate()?;
            let name = h.name.as_deref().ok_or_else(|| Error::invalid("a head added beside others needs a name (Head::named)"))?;
            check_head_name(name)?;
            if self.heads.iter().enumerate().any(|(k, o)| o.name == name && Some(k) != at) {
                return Err(Error::invalid(format!("the network has a head named {name:?} already")));
            }
        }
        if at.is_some() && add.is_none() && self.heads.len() == 1 {
            return Err(Error::invalid("a network needs at least one head: this is its last"));
        }
        // each head of the result: (info with its layers counted from 0, specs, names, values)
        type Part = (HeadInfo, Vec<LayerSpec>, Vec<Option<String>>, Vec<(Vec<f32>, Vec<f32>)>);
        let mut parts: Vec<Part> = Vec::new();
        let mut report = HeadSwapReport {
            kept: self.trunk.iter().enumerate().map(|(i, s)| describe(i, &self.names[i], s)).collect(),
            dropped: Vec::new(),
            created: Vec::new(),
            created_modules: Vec::new(),
        };
        let width = self.trunk_output_dim();
        let fresh = |h: &Head| -> Result<Part> {
            let specs = h.specs(width);
            check_arena_fits(&self.gpu, &specs, "head_params")?;
            let mut rng = Rng::new(seed);
            let values = specs.iter().map(|s| h.init.layer(s, &mut rng)).collect();
            let info = HeadInfo {
                name: h.name.clone().unwrap_or_default(),
                kind: h.kind,
                weight: h.weight,
                layers: 0..specs.len(),
                outputs: h.outputs,
                label_names: h.names.clone(),
                pos_weight: h.pos_weight.clone(),
                bce_reduction: h.bce_reduction,
                log_var: None,
            };
            let names = match &h.module {
                Some(m) => Head::layer_names(&specs, Some(m)),
                None => vec![None; specs.len()],
            };
            Ok((info, specs, names, values))
        };
        for (k, h) in self.heads.iter().enumerate() {
            if Some(k) == at {
                report.dropped.extend(h.layers.clone().map(|i| describe(i, &self.names[i], &self.head[i - t])));
                if let Some(new) = &add {
                    parts.push(fresh(new)?);
                }
                continue;
            }
            let specs = self.head[h.layers.start - t..h.layers.end - t].to_vec();
            let values = h.layers.clone().map(|i| self.layer_values(i)).collect::<Result<Vec<_>>>()?;
            let names = h.layers.clone().map(|i| Some(self.names[i].clone())).collect();
            report.kept.extend(h.layers.clone().map(|i| describe(i, &self.names[i], &self.head[i - t])));
            parts.push((HeadInfo { layers: 0..specs.len(), ..h.clone() }, specs, names, values));
        }
        if let (None, Some(new)) = (at, &add) {
            parts.push(fresh(new)?);
        }
        let (mut head, mut head_names, mut heads, mut values) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (info, specs, names, v) in parts {
            let start = t + head.len();
            heads.push(HeadInfo { layers: start..start + specs.len(), ..info });
            head.extend(specs);
            head_names.extend(names);
            values.extend(v);
        }
        let (sources, names) = multi_head_wiring(&self.trunk_graph(), &head, &head_names, &heads)?;
        check_arena_fits(&self.gpu, &head, "head_params")?;
        let arena = Arena::new(&self.gpu, &head, &values, "head_params")?;
        if let Some(new) = add.as_ref().and_then(|h| heads.iter().find(|i| Some(&i.name) == h.name.as_ref())) {
            report.created.extend(new.layers.clone().map(|i| format!("{} (seed {seed})", describe(i, &names[i], &head[i - t]))));
            report.created_modules.extend(new.layers.clone().map(|i| names[i].clone()));
        }
        tracing::info!(%report, "head edit");
        self.head_kind = heads[0].kind;
        self.head = head;
        self.head_params = arena;
        self.sources = sources;
        self.names = names;
        self.heads = heads;
        Ok(report)
    }

    /// Sets the loss weight of the head named `name` (0: it trains not at all).
    pub fn set_head_weight(&mut self, name: &str, weight: f32) -> Result<()> {
        if !weight.is_finite() || weight < 0.0 {
            return Err(Error::invalid(format!("a head's loss weight must be finite and ≥ 0, got {weight}")));
        }
        let h = self
            .heads
            .iter_mut()
            .find(|h| h.name == name)
            .ok_or_else(|| Error::invalid(format!("the network has no head named {name:?}")))?;
        h.weight = weight;
        Ok(())
    }

    /// Replaces the head with a freshly initialised `head` (any number of outputs, optionally
    /// hidden layers). The trunk's parameters stay where they are on the GPU, untouched. The
    /// label names become `head.names` (`None` unless given: the old ones named the old head's
    /// outputs); the input layout stays. On an error (a zero-width layer, a head too large for
    /// the adapter, names that do not match the outputs) the network is unchanged.
    pub fn swap_head(&mut self, head: Head, seed: u64) -> Result<HeadSwapReport> {
        if !self.heads.is_empty() {
            return Err(Error::invalid("swap_head replaces a network's only head; this network has named heads"));
        }
        head.validate()?;
        let width = self.trunk_output_dim();
        let specs = head.specs(width);
        let t = self.trunk.len();
        let module = head.module.clone().or_else(|| self.head_module.clone());
        let all: Vec<LayerSpec> = self.trunk.iter().chain(&specs).copied().collect();
        let given: Vec<Option<String>> =
            self.names[..t].iter().cloned().map(Some).chain(Head::layer_names(&specs, module.as_deref())).collect();
        let names = resolve_names(&all, &given)?;
        check_arena_fits(&self.gpu, &specs, "head_params")?;
        let mut rng = Rng::new(seed);
        let values: Vec<_> = specs.iter().map(|s| head.init.layer(s, &mut rng)).collect();
        let arena = Arena::new(&self.gpu, &specs, &values, "head_params")?;
        let report = HeadSwapReport {
            kept: self.trunk.iter().enumerate().map(|(i, s)| describe(i, &self.names[i], s)).collect(),
            dropped: self.head.iter().enumerate().map(|(i, s)| describe(t + i, &self.names[t + i], s)).collect(),
            created: specs
                .iter()
                .enumerate()
                .map(|(i, s)| format!("{} (init {}, seed {seed})", describe(t + i, &names[t + i], s), head.init.name()))
                .collect(),
            created_modules: Vec::new(),
        };
        tracing::info!(%report, "head-swap");
        self.sources = chain_head(self.sources[..t].to_vec(), specs.len());
        self.head = specs;
        self.head_kind = head.kind;
        self.head_params = arena;
        self.names = names;
        self.head_module = module;
        self.label_names = head.names;
        Ok(report)
    }

    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }
    pub fn input_dim(&self) -> usize {
        self.trunk.first().or(self.head.first()).map_or(0, |s| s.inputs())
    }
    pub fn output_dim(&self) -> usize {
        self.head.last().map_or(0, |s| s.outputs())
    }
    pub fn trunk_output_dim(&self) -> usize {
        self.trunk.last().map_or(self.input_dim(), |s| s.outputs())
    }
    pub fn head_kind(&self) -> HeadKind {
        self.head_kind
    }
    /// The named heads of a network built with [`Network::from_trunk_heads`], in order; empty
    /// for a network of one head.
    pub fn heads(&self) -> &[HeadInfo] {
        &self.heads
    }
    /// Whether the network has named heads (see [`Network::heads`]).
    pub fn is_multi_head(&self) -> bool {
        !self.heads.is_empty()
    }
    /// The head named `name`.
    pub fn head(&self, name: &str) -> Option<&HeadInfo> {
        self.heads.iter().find(|h| h.name == name)
    }
    /// Sets (or with `None` forgets) the learned log-variance of the head named `name`, the
    /// `s_t` uncertainty weighting starts from ([`HeadInfo::log_var`]); `s` must be finite.
    pub fn set_head_log_var(&mut self, name: &str, s: Option<f32>) -> Result<()> {
        if s.is_some_and(|s| !s.is_finite()) {
            return Err(Error::invalid(format!("head {name:?}: a log-variance must be finite, got {s:?}")));
        }
        let h =
            self.heads.iter_mut().find(|h| h.name == name).ok_or_else(|| Error::invalid(format!("the network has no head {name:?}")))?;
        h.log_var = s;
        Ok(())
    }
    pub fn trunk_layers(&self) -> &[LayerSpec] {
        &self.trunk
    }
    pub fn head_layers(&self) -> &[LayerSpec] {
        &self.head
    }
    /// Per layer (trunk then head), the values it reads: `0` the network's input, `j + 1` the
    /// output of layer `j`. `[i]` at layer `i` in a chain; an add reads two.
    pub fn sources(&self) -> &[Vec<usize>] {
        &self.sources
    }
    /// Whether every layer from `first` on reads only values from `first` on (the output of
    /// layer `first − 1`, or later ones): the layers below `first` can then be computed once and
    /// their last output stand for them.
    pub(crate) fn is_cut(&self, first: usize) -> bool {
        self.sources[first..].iter().flatten().all(|&v| v >= first)
    }
    /// Every layer, trunk then head.
    pub fn layers(&self) -> Vec<LayerSpec> {
        self.trunk.iter().chain(&self.head).copied().collect()
    }
    /// Each layer's module path, trunk then head: the name its parameters carry in checkpoints
    /// without the parameter (`"2"` for `2.weight`, `"layer1.0.conv1"` for
    /// `layer1.0.conv1.weight`), and what [`crate::train::ParamGroups`] patterns match. Layers
    /// built without a name have their `nn.Sequential` index.
    pub fn module_names(&self) -> Vec<String> {
        self.names.clone()
    }
    /// The module path of the head ([`Head::module`]), when it has one.
    pub fn head_module(&self) -> Option<&str> {
        self.head_module.as_deref()
    }
    /// Number of parameters (weights and biases).
    pub fn num_params(&self) -> usize {
        self.layers().iter().map(|s| s.weight_shape().map_or(0, |sh| sh.iter().product::<usize>()) + s.bias_len()).sum()
    }
    /// Multiply-adds of one example's forward pass, summed over the layers
    /// ([`LayerSpec::multiply_adds`]): a measure of the compute an example costs, independent of
    /// the GPU (a training step costs about three times as much: forward, and two products back).
    pub fn multiply_adds(&self) -> usize {
        self.layers().iter().map(LayerSpec::multiply_adds).sum()
    }

    /// (arena, slot) of layer `i` (trunk first, then head).
    pub(crate) fn slot(&self, i: usize) -> (&Arena, Slot) {
        let t = self.trunk.len();
        if i < t { (&self.trunk_params, self.trunk_params.slots[i]) } else { (&self.head_params, self.head_params.slots[i - t]) }
    }

    /// The weight (`[out, in]` or `[out, in, kh, kw]`) and bias `[out]` views of layer `i`;
    /// one-element placeholders for layers without parameters.
    /// An f16 layer's parameters are packed and have no f32 view: that is an error here (the
    /// forward pass widens them first, see [`Network::layer_storage`]).
    pub(crate) fn param_views(&self, i: usize) -> Result<(Tensor, Tensor)> {
        let s = self.layers()[i];
        let (arena, slot) = self.slot(i);
        if arena.storage() == Precision::F16 && s.has_params() {
            return Err(Error::invalid(format!(
                "layer {i} ({}) keeps its parameters in f16: they have no f32 view (widen the trunk with Network::set_trunk_storage(Precision::F32))",
                s.describe()
            )));
        }
        match s.weight_shape() {
            Some(shape) => Ok((arena.buf.view(slot.w, &shape)?, arena.buf.view(slot.b, &[s.bias_len()])?)),
            None => Ok((arena.buf.view(0, &[0])?, arena.buf.view(0, &[0])?)),
        }
    }

    /// Reads layer `i`'s weight and bias back (for checkpoints and inspection; never used while
    /// training).
    pub fn layer_values(&self, i: usize) -> Result<(Vec<f32>, Vec<f32>)> {
        if i >= self.trunk.len() + self.head.len() {
            return Err(Error::invalid(format!("layer {i} does not exist")));
        }
        if !self.layers()[i].has_params() {
            return Ok((Vec::new(), Vec::new()));
        }
        let (arena, slot) = self.slot(i);
        if arena.storage() == Precision::F16 {
            // the layer's words, widened on the host (exact, as on the GPU)
            let words = arena.buf.view(slot.w / 2, &[(slot.end - slot.w) / 2])?.download_u32(&self.gpu)?;
            let wide: Vec<f32> =
                words.iter().flat_map(|&w| [w as u16, (w >> 16) as u16]).map(|h| half::f16::from_bits(h).to_f32()).collect();
            let w_len = self.layers()[i].weight_shape().map_or(0, |sh| sh.iter().product());
            let b = slot.b - slot.w;
            return Ok((wide[..w_len].to_vec(), wide[b..b + self.layers()[i].bias_len()].to_vec()));
        }
        let (w, b) = self.param_views(i)?;
        Ok((w.download(&self.gpu)?, b.download(&self.gpu)?))
    }

    /// How layer `i`'s parameters are stored: f16 where it is a trunk layer of a trunk stored
    /// in f16 ([`Network::set_trunk_storage`]), else f32.
    pub fn layer_storage(&self, i: usize) -> Precision {
        if i < self.trunk.len() { self.trunk_params.storage() } else { Precision::F32 }
    }

    /// How the trunk's parameters are stored on the device.
    pub fn trunk_storage(&self) -> Precision {
        self.trunk_params.storage()
    }

    /// Bytes the trunk's parameters take on the device (f32: 4 a value, f16: 2; with the
    /// 256-byte alignment of every weight and bias).
    pub fn trunk_param_bytes(&self) -> u64 {
        self.trunk_params.buf.bytes()
    }

    /// Stores the trunk's parameters in `storage`, converting them on the GPU, like PyTorch's
    /// `model.trunk.half()` / `.float()`: f16 keeps them two per u32 word (IEEE binary16,
    /// rounded to nearest, ties to even: `half::f16::from_f32`, on every adapter), half the
    /// bytes, and releases the f32 buffer; f32 widens them back exactly (the rounding is not
    /// undone). The forward pass reads an f16 trunk with f32 arithmetic, widening each layer's
    /// parameters as it runs; [`Network::values`] and checkpoints read them widened; a trunk
    /// stored in f16 cannot train (a run that would train one of its layers is refused).
    /// BatchNorm running statistics and the head stay f32. A value beyond f16's range (±65504
    /// after rounding) is refused, naming its layer, rather than made infinite.
    ///
    /// ```no_run
    /// use headswap::{Gpu, nn::{Head, Network}, train::Precision};
    /// let gpu = Gpu::new()?;
    /// let mut net = Network::new(&gpu, &[784, 512, 256], Head::classes(10), 42)?;
    /// net.set_trunk_storage(Precision::F16)?;
    /// assert_eq!(net.trunk_storage(), Precision::F16);
    /// # Ok::<(), headswap::Error>(())
    /// ```
    pub fn set_trunk_storage(&mut self, storage: Precision) -> Result<()> {
        use crate::gpu::tensor::DType;
        use crate::kernels::gather::{pack_f16, widen_f16};
        let arena = &self.trunk_params;
        if arena.storage() == storage || arena.len == 0 {
            // an empty trunk has nothing to store either way: it stays as it is
            return Ok(());
        }
        let gpu = &self.gpu;
        // the other storage's layout: weights and biases aligned to 256 bytes either way
        let (slots, len) = layout_aligned(&self.trunk, if storage == Precision::F16 { ALIGN_F16 } else { ALIGN });
        // per layer with parameters, its weight and its bias: (f32 view, first word, words)
        let (f32_slots, f16_slots) = match storage {
            Precision::F16 => (&arena.slots, &slots),
            Precision::F32 => (&slots, &arena.slots),
        };
        let parts = |f32_buf: &Tensor, f16_buf: &Tensor, pack: bool| -> Result<Vec<crate::gpu::Dispatch>> {
            let mut launches = Vec::new();
            for ((spec, s32), s16) in self.trunk.iter().zip(f32_slots).zip(f16_slots) {
                let w_len: usize = spec.weight_shape().map_or(0, |sh| sh.iter().product());
                for (at32, at16, n) in [(s32.w, s16.w, w_len), (s32.b, s16.b, spec.bias_len())] {
                    if n == 0 {
                        continue;
                    }
                    let words = n.div_ceil(2);
                    if pack {
                        let words_view = f16_buf.view(at16 / 2, &[words])?;
                        launches.push(pack_f16(gpu, &f32_buf.view(at32, &[n])?, &words_view)?);
                    } else {
                        // an odd count also widens the pad half after it (0), inside the padding
                        launches.push(widen_f16(gpu, f16_buf, at16 / 2, &f32_buf.view(at32, &[2 * words])?)?);
                    }
                }
            }
            Ok(launches)
        };
        let buf = match storage {
            Precision::F16 => {
                // f16's largest finite value is 65504; from 65520 on, a value rounds to infinity
                let host = arena.buf.download(gpu)?;
                if let Some(k) = host.iter().position(|v| v.is_finite() && v.abs() >= 65520.0) {
                    let layer = arena.slots.iter().position(|s| k < s.end).unwrap_or(0);
                    return Err(Error::invalid(format!(
                        "trunk layer {layer} ({}) holds {}, beyond f16's range (±65504): its parameters cannot be stored in f16",
                        self.trunk[layer].describe(),
                        host[k]
                    )));
                }
                drop(host);
                // (wgpu zero-initialises buffers: the padding stays 0)
                let packed = Tensor::alloc(gpu, &[len / 2], DType::U32, "trunk_params_f16")?;
                let launches = parts(&arena.buf, &packed, true)?;
                gpu.run("trunk_to_f16", &launches.iter().collect::<Vec<_>>())?;
                packed
            }
            Precision::F32 => {
                let wide = Tensor::alloc(gpu, &[len], DType::F32, "trunk_params")?;
                let launches = parts(&wide, &arena.buf, false)?;
                gpu.run("trunk_to_f32", &launches.iter().collect::<Vec<_>>())?;
                wide
            }
        };
        // the old buffer goes when the last plan holding it does
        self.trunk_params = Arena { buf, slots, len };
        Ok(())
    }

    /// Every layer's values, trunk then head.
    pub fn values(&self) -> Result<Vec<(Vec<f32>, Vec<f32>)>> {
        (0..self.trunk.len() + self.head.len()).map(|i| self.layer_values(i)).collect()
    }
}

impl Network {
    /// An independent copy made on the GPU (buffer-to-buffer copies; nothing is read back or
    /// uploaded): the demo fine-tunes several copies of one pretrained network.
    pub fn try_clone(&self) -> Result<Network> {
        let gpu = &self.gpu;
        let copy = |a: &Arena, label: &str| -> Result<Arena> {
            let buf = Tensor::alloc(gpu, a.buf.shape(), a.buf.dtype(), label)?;
            let mut enc = gpu.device().create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("clone_network") });
            if a.len > 0 {
                enc.copy_buffer_to_buffer(a.buf.buffer(), a.buf.offset(), buf.buffer(), buf.offset(), a.buf.bytes());
            }
            gpu.submit(enc);
            Ok(Arena { buf, slots: a.slots.clone(), len: a.len })
        };
        Ok(Network {
            gpu: gpu.clone(),
            trunk: self.trunk.clone(),
            head: self.head.clone(),
            head_kind: self.head_kind,
            trunk_params: copy(&self.trunk_params, "trunk_params")?,
            head_params: copy(&self.head_params, "head_params")?,
            running: self.running.try_clone(gpu)?,
            sources: self.sources.clone(),
            names: self.names.clone(),
            head_module: self.head_module.clone(),
            label_names: self.label_names.clone(),
            input_layout: self.input_layout.clone(),
            heads: self.heads.clone(),
        })
    }
}

impl Network {
    /// Declares what the outputs mean without touching any weight: `Classes` trains with softmax
    /// cross-entropy, `Labels` with per-label BCE (used by `headswap train --loss`).
    pub fn set_head_kind(&mut self, kind: HeadKind) {
        self.head_kind = kind;
    }
}

/// The wiring and module paths of a network of named heads (see
/// [`Network::from_head_layers`]), after checking that the heads cover the head layers one
/// after the other, each head's kind and weight, and every layer's shapes.
pub(crate) fn multi_head_wiring(
    trunk: &Trunk,
    head: &[LayerSpec],
    head_names: &[Option<String>],
    heads: &[HeadInfo],
) -> Result<(Vec<Vec<usize>>, Vec<String>)> {
    let t = trunk.layers.len();
    let mut all_sources = trunk.sources.clone();
    if heads.is_empty() {
        return Err(Error::invalid("a network needs at least one head"));
    }
    let mut next = t;
    for (k, h) in heads.iter().enumerate() {
        check_head_name(&h.name)?;
        if heads[..k].iter().any(|o| o.name == h.name) {
            return Err(Error::invalid(format!("two heads are named {:?}: head names must be unique", h.name)));
        }
        if h.layers.start != next || h.layers.is_empty() || h.layers.end > t + head.len() {
            return Err(Error::invalid(format!("head {:?}: its layers must follow the previous head's", h.name)));
        }
        next = h.layers.end;
        let out = head[h.layers.end - 1 - t].outputs();
        if out != h.outputs {
            return Err(Error::shape(format!("head {:?} has {} outputs, its last layer gives {out}", h.name, h.outputs)));
        }
        all_sources.extend(h.layers.clone().map(|i| vec![if i == h.layers.start { t } else { i }]));
        let probe = Head {
            outputs: h.outputs,
            kind: h.kind,
            weight: h.weight,
            names: h.label_names.clone(),
            pos_weight: h.pos_weight.clone(),
            bce_reduction: h.bce_reduction,
            ..Head::labels(1)
        };
        probe.validate().map_err(|e| for_head(&h.name, e))?;
    }
    if next != t + head.len() || head_names.len() != head.len() {
        return Err(Error::shape(format!("{} head layers and {} names, the heads cover {}", head.len(), head_names.len(), next - t)));
    }
    if head.iter().any(|l| matches!(l, LayerSpec::BatchNorm(_))) {
        return Err(Error::invalid("a head holds dense layers only: put BatchNorm layers in the trunk"));
    }
    let all: Vec<LayerSpec> = trunk.layers.iter().chain(head).copied().collect();
    for s in &all {
        s.validate()?;
    }
    check_wiring(&all, &all_sources, all[0].inputs())?;
    let mut given: Vec<Option<String>> = trunk.names.clone();
    for h in heads {
        let (names, specs) = (&head_names[h.layers.start - t..h.layers.end - t], &head[h.layers.start - t..h.layers.end - t]);
        let module = format!("heads.{}", h.name);
        given.extend(if names.iter().all(Option::is_none) { Head::layer_names(specs, Some(&module)) } else { names.to_vec() });
    }
    Ok((all_sources, resolve_names(&all, &given)?))
}

/// `e` about the head named `name`: its message prefixed with the head's name, its kind kept.
fn for_head(name: &str, e: Error) -> Error {
    match e {
        Error::InvalidInput(m) => Error::InvalidInput(format!("head {name:?}: {m}")),
        Error::Shape { what } => Error::Shape { what: format!("head {name:?}: {what}") },
        other => other,
    }
}

/// A head's name: it becomes part of module paths (`heads.<name>`) and tensor names (`y.<name>`).
pub(crate) fn check_head_name(name: &str) -> Result<()> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(Error::invalid(format!("a head's name must be letters, digits and '_', got {name:?}")));
    }
    Ok(())
}

/// `trunk` sources followed by `head_layers` layers that chain from the trunk's last layer.
fn chain_head(mut sources: Vec<Vec<usize>>, head_layers: usize) -> Vec<Vec<usize>> {
    let t = sources.len();
    sources.extend((t..t + head_layers).map(|i| vec![i]));
    sources
}
