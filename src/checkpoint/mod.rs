//! Checkpoint files: named f32 tensors plus string metadata, stored as
//! [safetensors](https://github.com/huggingface/safetensors), independent of the network types.
//!
//! A [`Checkpoint`] is an ordered list of [`NamedTensor`]s (name, shape, row-major f32 data), an
//! ordered list of [`IntTensor`]s (integer tensors, kept exactly) and a string→string metadata
//! map. [`save`] writes it as a safetensors file (floats as F32, or F16 to halve the size; integer
//! tensors in their own dtype), atomically: the bytes go to a temporary file in the same
//! directory, which is fsynced and then renamed over the target, so a crash leaves either the old
//! file or the new one, never half of one. [`load`] reads F32, F16, BF16 and F64 tensors (all
//! converted to f32) and the integer dtypes (see below); any file that is not a well-formed
//! safetensors file (empty, truncated, corrupt, a header claiming more bytes than the file has,
//! ...) or that holds another dtype (FP8, FP4, complex) is an [`Error::Format`] naming the path,
//! never a panic.
//!
//! [`load`] also reads PyTorch's own `.pth`/`.pt` files (`torch.save(model.state_dict(), path)`),
//! recognised by their first bytes (a zip header) whatever their name, without executing the
//! pickle inside: see [`pth`]. [`save`] always writes safetensors.
//!
//! The files are plain safetensors, so they interoperate with Python:
//!
//! ```python
//! # a headswap checkpoint in PyTorch
//! from safetensors.torch import load_file
//! model.load_state_dict(load_file("model.safetensors"))   # names follow nn.Sequential
//! # a PyTorch state_dict for headswap
//! from safetensors.torch import save_file
//! save_file(model.state_dict(), "model.safetensors", metadata={"format": "pt"})
//! ```
//!
//! # Conventions
//!
//! **Tensor names** follow a PyTorch state_dict: a layer's parameters are `<module path>.weight`
//! with shape `[out, in]` (PyTorch's `nn.Linear` layout, *not* `[in, out]`) or `[out, in, kh, kw]`
//! and `<module path>.bias` with shape `[out]` (`layer1.0.conv1.weight`; see
//! [`Network::module_names`](crate::nn::Network::module_names)). A layer built without a name has
//! its index in a `torch.nn.Sequential` (activations count as layers, so a Linear–ReLU–Linear MLP
//! has parameters at `0` and `2`). Tensors are written in the order given, which is the order
//! [`load`] returns them in (files written by other tools come back in their data-offset order).
//!
//! **Architecture** lives in the metadata: [`FORMAT_KEY`] (`headswap.format`) = [`FORMAT_VERSION`]
//! (`"1"`), and [`LAYERS_KEY`] (`headswap.layers`) = a JSON string describing the layers. Other
//! tools ignore metadata they do not know; a file from PyTorch has no `headswap.*` keys (often just
//! `format` = `pt`), so a loader must not require them when the caller supplies the architecture.
//!
//! **Training state for resume** is stored in the same file, beside the parameters:
//! - optimizer moments as extra tensors named `optim.<param name>.<slot>`, with the parameter's
//!   shape, e.g. `optim.0.weight.exp_avg`, `optim.0.weight.exp_avg_sq` (PyTorch Adam's slot names;
//!   see [`optim_tensor_name`]);
//! - metadata [`OPTIM_STEP_KEY`] (`optim.step`, the optimizer step count, decimal),
//!   [`TRAIN_EPOCH_KEY`] (`train.epoch`, decimal) and [`TRAIN_RNG_KEY`] (`train.rng`, the
//!   [`Rng`](crate::Rng) state as a JSON array of four u64, see [`rng_state_to_string`]).
//!
//! Every tensor name starting with [`OPTIM_PREFIX`] (`optim.`) is training state, not a model
//! parameter: a plain state_dict load ignores them. [`Checkpoint::state_dict_only`] drops them
//! (and the `optim.*` / `train.*` metadata); [`Checkpoint::check`] does *not* ignore them, so check
//! a resume checkpoint's parameters with `ckpt.state_dict_only().check(&expected)`.
//!
//! **Storage type.** [`StorageDtype::F16`] is for shipping weights; it refuses values beyond f16's
//! range (±65504) instead of silently writing infinities. Save resume checkpoints as
//! [`StorageDtype::F32`]: Adam's second moments underflow in f16.
//!
//! **Integer tensors** (BOOL, U8, I8, U16, I16, U32, I32, I64, and U64 up to 2^63 − 1) load into
//! [`Checkpoint::int_tensors`] as exact `i64` values with their [`IntDtype`], and [`save`] writes
//! them back in that dtype, after the float tensors. PyTorch's BatchNorm stores
//! `num_batches_tracked` as an I64 scalar (shape `[]`), so every torchvision state_dict has some.
//! No headswap parameter is an integer: the network loaders ignore integer tensors that no
//! parameter asks for, and refuse one stored under a parameter's name. [`Checkpoint::check`]
//! counts them like any other tensor.
//!
//! **Model metadata** (written by [`Network::to_checkpoint`](crate::nn::Network::to_checkpoint)
//! when the network has it, read by `Network::from_checkpoint`; absent means unknown):
//! - [`LABEL_NAMES_KEY`] (`headswap.label_names`): the class or label names, one per output, as a
//!   JSON array of strings, e.g. `["cat","dog"]`. `[]` (what the CLI wrote for data without
//!   names) reads as no names.
//! - [`INPUT_SHAPE_KEY`] (`headswap.input_shape`): the shape of one example, decimal dimensions
//!   joined by commas: `"784"` for feature vectors, `"1,16,16"` for C,H,W images. Its product is
//!   the network's input width.
//! - [`IMAGE_SIZE_KEY`] (`headswap.image_size`, `"<width>x<height>"`, e.g. `"16x16"`) and
//!   [`CHANNELS_KEY`] (`headswap.channels`, `"gray"` or `"rgb"`): only for a model trained on
//!   images read from files, the size and colour to read new images at (`headswap predict`).
//!
//! The CLI wrote these keys before the library did, with the same formats, so older files keep
//! their meaning.

mod file;
pub mod pth;
#[cfg(test)]
mod tests;

pub use file::{load, save};

use crate::{Error, Result};
use std::collections::{BTreeMap, BTreeSet};

/// Metadata key holding the headswap checkpoint format version ([`FORMAT_VERSION`]).
pub const FORMAT_KEY: &str = "headswap.format";
/// The value of [`FORMAT_KEY`] this version writes.
pub const FORMAT_VERSION: &str = "1";
/// Metadata key holding the architecture, a JSON string.
pub const LAYERS_KEY: &str = "headswap.layers";
/// Prefix of the tensor names (and metadata keys) that hold optimizer state.
pub const OPTIM_PREFIX: &str = "optim.";
/// Prefix of the metadata keys that hold training-loop state.
pub const TRAIN_PREFIX: &str = "train.";
/// Metadata key: the optimizer's step count, decimal.
pub const OPTIM_STEP_KEY: &str = "optim.step";
/// Metadata key: the number of completed epochs, decimal.
pub const TRAIN_EPOCH_KEY: &str = "train.epoch";
/// Metadata key: the training RNG's state ([`rng_state_to_string`]).
pub const TRAIN_RNG_KEY: &str = "train.rng";
/// Metadata key: the class or label names, a JSON array of strings (see the [module docs](self)).
pub const LABEL_NAMES_KEY: &str = "headswap.label_names";
/// Metadata key: the shape of one example, e.g. `784` or `1,16,16`.
pub const INPUT_SHAPE_KEY: &str = "headswap.input_shape";
/// Metadata key: the size images are read at, `<width>x<height>`, e.g. `16x16`.
pub const IMAGE_SIZE_KEY: &str = "headswap.image_size";
/// Metadata key: the colour images are read in, `gray` or `rgb`.
pub const CHANNELS_KEY: &str = "headswap.channels";

/// One tensor of a checkpoint: a name, a shape and its elements in row-major order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NamedTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl NamedTensor {
    /// A tensor, checking that `data` has as many elements as `shape` says.
    pub fn new(name: impl Into<String>, shape: Vec<usize>, data: Vec<f32>) -> Result<NamedTensor> {
        let name = name.into();
        match numel(&shape) {
            Some(n) if n == data.len() => Ok(NamedTensor { name, shape, data }),
            _ => Err(Error::shape(format!("tensor {name}: shape {shape:?} does not hold {} elements", data.len()))),
        }
    }

    /// The number of elements `shape` describes (1 for a scalar's empty shape).
    pub fn numel(&self) -> usize {
        numel(&self.shape).unwrap_or(usize::MAX)
    }
}

/// The product of `shape`, `None` on overflow.
pub(crate) fn numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
}

/// The integer dtypes a checkpoint keeps exactly, by their safetensors names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum IntDtype {
    /// One byte, 0 or 1.
    Bool,
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    #[default]
    I64,
    /// Held as `i64`, so only values up to 2^63 − 1 load (beyond is a format error).
    U64,
}

impl IntDtype {
    /// Every integer dtype.
    pub const ALL: [IntDtype; 9] = [
        IntDtype::Bool,
        IntDtype::U8,
        IntDtype::I8,
        IntDtype::U16,
        IntDtype::I16,
        IntDtype::U32,
        IntDtype::I32,
        IntDtype::I64,
        IntDtype::U64,
    ];

    /// The safetensors name: `BOOL`, `U8`, ..., `I64`.
    pub fn name(self) -> &'static str {
        match self {
            IntDtype::Bool => "BOOL",
            IntDtype::U8 => "U8",
            IntDtype::I8 => "I8",
            IntDtype::U16 => "U16",
            IntDtype::I16 => "I16",
            IntDtype::U32 => "U32",
            IntDtype::I32 => "I32",
            IntDtype::I64 => "I64",
            IntDtype::U64 => "U64",
        }
    }

    /// Bytes per element in a file.
    pub fn width(self) -> usize {
        match self {
            IntDtype::Bool | IntDtype::U8 | IntDtype::I8 => 1,
            IntDtype::U16 | IntDtype::I16 => 2,
            IntDtype::U32 | IntDtype::I32 => 4,
            IntDtype::I64 | IntDtype::U64 => 8,
        }
    }

    /// The values this dtype can hold that an `i64` can too, inclusive.
    pub fn range(self) -> (i64, i64) {
        match self {
            IntDtype::Bool => (0, 1),
            IntDtype::U8 => (0, u8::MAX.into()),
            IntDtype::I8 => (i8::MIN.into(), i8::MAX.into()),
            IntDtype::U16 => (0, u16::MAX.into()),
            IntDtype::I16 => (i16::MIN.into(), i16::MAX.into()),
            IntDtype::U32 => (0, u32::MAX.into()),
            IntDtype::I32 => (i32::MIN.into(), i32::MAX.into()),
            IntDtype::I64 => (i64::MIN, i64::MAX),
            IntDtype::U64 => (0, i64::MAX),
        }
    }
}

impl std::fmt::Display for IntDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An integer tensor, e.g. BatchNorm's `num_batches_tracked` (I64, shape `[]`): a name, a shape,
/// the dtype it is stored as and its elements, row-major, as exact `i64`s.
///
/// Integer tensors sit beside the float ones ([`Checkpoint::int_tensors`]) rather than in a dtype
/// enum inside [`NamedTensor`]: every parameter, optimizer moment and caller of this module deals
/// in f32, and keeps reading `tensor.data` as a `Vec<f32>` with no match on a dtype, while the
/// rare integer tensors (bookkeeping, never a headswap parameter) cannot be mistaken for floats —
/// a loader looking a parameter up by name does not find an integer tensor by accident. `i64`
/// holds every value of every integer dtype loaded (U64 only up to 2^63 − 1), so nothing is
/// rounded, unlike a conversion through f32 (exact only below 2^24).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IntTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: IntDtype,
    pub data: Vec<i64>,
}

impl IntTensor {
    /// An integer tensor, checking that `data` has as many elements as `shape` says and that
    /// every element fits `dtype`.
    pub fn new(name: impl Into<String>, shape: Vec<usize>, dtype: IntDtype, data: Vec<i64>) -> Result<IntTensor> {
        let t = IntTensor { name: name.into(), shape, dtype, data };
        t.validate()?;
        Ok(t)
    }

    /// The number of elements `shape` describes (1 for a scalar's empty shape).
    pub fn numel(&self) -> usize {
        numel(&self.shape).unwrap_or(usize::MAX)
    }

    /// The shape holds the data, and every element fits the dtype.
    pub(crate) fn validate(&self) -> Result<()> {
        if numel(&self.shape) != Some(self.data.len()) {
            return Err(Error::shape(format!("tensor {}: shape {:?} does not hold {} elements", self.name, self.shape, self.data.len())));
        }
        let (lo, hi) = self.dtype.range();
        if let Some(i) = self.data.iter().position(|v| !(lo..=hi).contains(v)) {
            return Err(Error::invalid(format!(
                "tensor {}: element {i} = {} does not fit {} ({lo}..={hi})",
                self.name, self.data[i], self.dtype
            )));
        }
        Ok(())
    }
}

/// How [`save`] stores the float elements (integer tensors keep their own dtype). [`load`]
/// converts whatever float dtype it finds back to f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageDtype {
    /// IEEE binary32, exact.
    F32,
    /// IEEE binary16 (round to nearest even); values beyond ±65504 are refused.
    F16,
}

/// A tensor the caller expects in a checkpoint, for [`Checkpoint::check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expect {
    pub name: String,
    pub shape: Vec<usize>,
}

impl Expect {
    pub fn new(name: impl Into<String>, shape: Vec<usize>) -> Expect {
        Expect { name: name.into(), shape }
    }
}

/// Named tensors (in order), integer tensors (in order) and string metadata; see the
/// [module docs](self) for the conventions. A name is used once across both lists.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Checkpoint {
    /// The float tensors: parameters, optimizer state, anything stored as F32/F16/BF16/F64.
    pub tensors: Vec<NamedTensor>,
    /// The integer tensors (see [`IntTensor`] for why they are apart).
    pub int_tensors: Vec<IntTensor>,
    pub metadata: BTreeMap<String, String>,
}

impl Checkpoint {
    /// An empty checkpoint.
    pub fn new() -> Checkpoint {
        Checkpoint::default()
    }

    /// The tensor called `name`.
    pub fn get(&self, name: &str) -> Option<&NamedTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Removes the tensor called `name` and returns it (the others keep their order).
    pub fn take(&mut self, name: &str) -> Option<NamedTensor> {
        let i = self.tensors.iter().position(|t| t.name == name)?;
        Some(self.tensors.remove(i))
    }

    /// Appends a tensor, checking its shape against its data and that the name is new.
    pub fn push(&mut self, tensor: NamedTensor) -> Result<()> {
        if numel(&tensor.shape) != Some(tensor.data.len()) {
            return Err(Error::shape(format!(
                "tensor {}: shape {:?} does not hold {} elements",
                tensor.name,
                tensor.shape,
                tensor.data.len()
            )));
        }
        self.check_new_name(&tensor.name)?;
        self.tensors.push(tensor);
        Ok(())
    }

    /// The integer tensor called `name`.
    pub fn get_int(&self, name: &str) -> Option<&IntTensor> {
        self.int_tensors.iter().find(|t| t.name == name)
    }

    /// Removes the integer tensor called `name` and returns it (the others keep their order).
    pub fn take_int(&mut self, name: &str) -> Option<IntTensor> {
        let i = self.int_tensors.iter().position(|t| t.name == name)?;
        Some(self.int_tensors.remove(i))
    }

    /// Appends an integer tensor, checking its shape and values ([`IntTensor::new`]) and that the
    /// name is new (among the float tensors too).
    pub fn push_int(&mut self, tensor: IntTensor) -> Result<()> {
        tensor.validate()?;
        self.check_new_name(&tensor.name)?;
        self.int_tensors.push(tensor);
        Ok(())
    }

    fn check_new_name(&self, name: &str) -> Result<()> {
        if self.get(name).is_some() || self.get_int(name).is_some() {
            return Err(Error::invalid(format!("checkpoint already has a tensor named {name}")));
        }
        Ok(())
    }

    /// The float tensors' names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.iter().map(|t| t.name.as_str())
    }

    /// The integer tensors' names, in order.
    pub fn int_names(&self) -> impl Iterator<Item = &str> {
        self.int_tensors.iter().map(|t| t.name.as_str())
    }

    /// The model parameters only: a copy without the tensors named `optim.*` and without the
    /// `optim.*` and `train.*` metadata (what a plain state_dict load sees).
    pub fn state_dict_only(&self) -> Checkpoint {
        Checkpoint {
            tensors: self.tensors.iter().filter(|t| !t.name.starts_with(OPTIM_PREFIX)).cloned().collect(),
            int_tensors: self.int_tensors.iter().filter(|t| !t.name.starts_with(OPTIM_PREFIX)).cloned().collect(),
            metadata: self
                .metadata
                .iter()
                .filter(|(k, _)| !k.starts_with(OPTIM_PREFIX) && !k.starts_with(TRAIN_PREFIX))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }

    /// Checks that the checkpoint holds exactly the `expected` tensors with their shapes, as
    /// float tensors. On a mismatch the one [`Error::Format`] lists everything that differs: the
    /// missing names, the unexpected extra names (integer tensors included), every shape
    /// mismatch (`0.weight: expected [512, 784], found [512, 780]`), every expected tensor stored
    /// as integers (`0.weight: expected floats, found I64`) and any duplicated name. Order does
    /// not matter. `optim.*` tensors count like any other: check
    /// [`state_dict_only`](Self::state_dict_only) for a resume checkpoint.
    pub fn check(&self, expected: &[Expect]) -> Result<()> {
        match self.mismatches(expected) {
            None => Ok(()),
            Some(m) => Err(Error::format("checkpoint", m)),
        }
    }

    /// [`check`](Self::check)'s message, `None` when everything matches.
    pub(crate) fn mismatches(&self, expected: &[Expect]) -> Option<String> {
        let mut found: BTreeMap<&str, &[usize]> = BTreeMap::new();
        let mut duplicated: Vec<&str> = Vec::new();
        let all = self.tensors.iter().map(|t| (&t.name, &t.shape)).chain(self.int_tensors.iter().map(|t| (&t.name, &t.shape)));
        for (name, shape) in all.clone() {
            if found.insert(name, shape).is_some() && !duplicated.contains(&name.as_str()) {
                duplicated.push(name);
            }
        }
        let wanted: BTreeSet<&str> = expected.iter().map(|e| e.name.as_str()).collect();

        let mut missing = Vec::new();
        let mut shapes = Vec::new();
        let mut ints = Vec::new();
        let mut seen = BTreeSet::new();
        for e in expected {
            if !seen.insert(e.name.as_str()) {
                continue;
            }
            match found.get(e.name.as_str()) {
                None => missing.push(e.name.as_str()),
                Some(&s) if s != e.shape.as_slice() => shapes.push(format!("{}: expected {:?}, found {:?}", e.name, e.shape, s)),
                Some(_) => {}
            }
            if self.get(&e.name).is_none()
                && let Some(t) = self.get_int(&e.name)
            {
                ints.push(format!("{}: expected floats, found {}", e.name, t.dtype));
            }
        }
        let mut unexpected = Vec::new();
        for (name, _) in all {
            if !wanted.contains(name.as_str()) && !unexpected.contains(&name.as_str()) {
                unexpected.push(name.as_str());
            }
        }

        let mut parts = Vec::new();
        if !missing.is_empty() {
            parts.push(format!("missing {} ({})", count(missing.len()), missing.join(", ")));
        }
        if !unexpected.is_empty() {
            parts.push(format!("unexpected {} ({})", count(unexpected.len()), unexpected.join(", ")));
        }
        if !shapes.is_empty() {
            parts.push(format!("{} shape mismatch{} ({})", shapes.len(), if shapes.len() == 1 { "" } else { "es" }, shapes.join("; ")));
        }
        if !ints.is_empty() {
            parts.push(format!(
                "{} integer tensor{} where floats are expected ({})",
                ints.len(),
                if ints.len() == 1 { "" } else { "s" },
                ints.join("; ")
            ));
        }
        if !duplicated.is_empty() {
            parts.push(format!("duplicated {} ({})", count(duplicated.len()), duplicated.join(", ")));
        }
        if parts.is_empty() { None } else { Some(format!("tensors do not match the expected ones: {}", parts.join("; "))) }
    }
}

fn count(n: usize) -> String {
    format!("{n} tensor{}", if n == 1 { "" } else { "s" })
}

/// The name of optimizer slot `slot` (e.g. `exp_avg`) of parameter `param` (e.g. `0.weight`):
/// `optim.0.weight.exp_avg`.
pub fn optim_tensor_name(param: &str, slot: &str) -> String {
    format!("{OPTIM_PREFIX}{param}.{slot}")
}

/// The [`Rng`](crate::Rng) state as the [`TRAIN_RNG_KEY`] metadata value: a JSON array of the
/// four u64 state words, e.g. `[1,2,3,4]` (Python's `json.loads` reads them exactly).
pub fn rng_state_to_string(rng: &crate::Rng) -> String {
    let s = rng.state();
    format!("[{},{},{},{}]", s[0], s[1], s[2], s[3])
}

/// The [`Rng`](crate::Rng) saved by [`rng_state_to_string`]; anything else is
/// [`Error::InvalidInput`].
pub fn rng_state_from_str(s: &str) -> Result<crate::Rng> {
    let words: Vec<u64> =
        serde_json::from_str(s).map_err(|e| Error::invalid(format!("{TRAIN_RNG_KEY} is not a JSON array of u64: {e}")))?;
    let state: [u64; 4] =
        words.try_into().map_err(|w: Vec<u64>| Error::invalid(format!("{TRAIN_RNG_KEY} must hold 4 state words, found {}", w.len())))?;
    if state == [0; 4] {
        return Err(Error::invalid(format!("{TRAIN_RNG_KEY} is all zeros, not a generator state")));
    }
    Ok(crate::Rng::from_state(state))
}
