//! Layer descriptions. Activations between layers are laid out per example as one flat row in
//! NCHW order (`[C, H, W]` flattened), so a dense layer after a convolutional one simply reads the
//! row: flattening is free.

use crate::error::{Error, Result};
use crate::kernels::Activation;
use crate::kernels::conv::{Conv2dShape, Pool2dShape};

/// One dense layer: `y = act(x·Wᵀ + b)`, W `[outputs, inputs]` (PyTorch's `nn.Linear`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DenseSpec {
    pub inputs: usize,
    pub outputs: usize,
    pub activation: Activation,
}

/// A 2-D convolution over `[in_channels, height, width]` inputs, weight
/// `[out_channels, in_channels / groups, kernel[0], kernel[1]]` (PyTorch's
/// `nn.Conv2d(in, out, (kh, kw), (sh, sw), groups=groups)`), zero padding `[top, bottom, left,
/// right]` (PyTorch's symmetric `padding`, or an `F.pad` in front folded in), and a bias
/// `[out_channels]` unless `bias` is false (PyTorch's `bias=False`, as every convolution
/// followed by a BatchNorm in torchvision). `groups = in_channels = out_channels` is a
/// depthwise convolution (MobileNet's).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Conv2dSpec {
    pub in_channels: usize,
    pub height: usize,
    pub width: usize,
    pub out_channels: usize,
    /// `[KH, KW]`
    pub kernel: [usize; 2],
    /// `[SH, SW]`
    pub stride: [usize; 2],
    /// `[top, bottom, left, right]`
    pub padding: [usize; 4],
    /// Channel groups (1: an ordinary convolution).
    pub groups: usize,
    pub activation: Activation,
    pub bias: bool,
}

/// A 2-D pooling window over `[channels, height, width]` inputs: PyTorch's
/// `MaxPool2d((kh, kw), (sh, sw), (ph, pw), ceil_mode=ceil_mode)` / `AvgPool2d(...)` (the
/// padding counted by the average, `count_include_pad=True`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool2dSpec {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    /// `[KH, KW]`
    pub kernel: [usize; 2],
    /// `[SH, SW]`
    pub stride: [usize; 2],
    /// `[PH, PW]`, on both sides
    pub padding: [usize; 2],
    /// PyTorch's `ceil_mode`: the output size rounds up.
    pub ceil_mode: bool,
}

/// The element-wise sum of two outputs of the same size, then an activation: a residual
/// connection (`y = act(f(x) + shortcut)`, ResNet's `out += identity; out = relu(out)`). Which two
/// outputs it adds is the network's wiring ([`crate::nn::Network::sources`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AddSpec {
    /// Features per example of each input and of the output (flattened `[C, H, W]`).
    pub features: usize,
    /// The output's `[C, H, W]` where the inputs are spatial (a convolution can read it), else
    /// `None`.
    pub chw: Option<[usize; 3]>,
    pub activation: Activation,
}

/// A BatchNorm (PyTorch's `nn.BatchNorm2d`; `BatchNorm1d` over features is `height = width = 1`)
/// over `[channels, height, width]` inputs, then an activation (torchvision's `bn1` then `relu`
/// is one layer here). γ is the layer's weight `[C]` and β its bias `[C]` (PyTorch's
/// `bn.weight`, `bn.bias`); the running statistics live beside the parameters
/// ([`crate::nn::Network`] keeps them, checkpoints write them as `running_mean`, `running_var` and
/// `num_batches_tracked`). Which statistics a step uses — the running ones (inference mode, the
/// default for a frozen layer) or the batch's — is the training run's choice
/// ([`crate::train::BatchNormMode`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchNormSpec {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    /// Added to the variance (PyTorch's `eps`, 1e-5 by default).
    pub eps: f32,
    /// The running statistics' update factor in training mode (PyTorch's `momentum`, 0.1).
    pub momentum: f32,
    pub activation: Activation,
    /// `BatchNorm2d`, whose output stays `[C, H, W]` for convolutions and pooling to read, or
    /// `BatchNorm1d` (`false`, `H = W = 1`) over the features of a flat row, after dense layers.
    pub spatial: bool,
}

impl BatchNormSpec {
    /// The kernels' view of the layer for a batch of `n`.
    pub fn shape(&self, n: usize) -> crate::kernels::norm::BatchNormShape {
        crate::kernels::norm::BatchNormShape { n, c: self.channels, h: self.height, w: self.width }
    }
}

/// Dropout (PyTorch's `nn.Dropout(p)`): in training each element is kept with probability
/// `1 − p` and scaled by `1/(1 − p)`, the mask a hash on the GPU of the run's seed
/// ([`TrainConfig::seed`](crate::train::TrainConfig)), the step number and the element's
/// position ([`crate::kernels::layers`]); the identity in evaluation, prediction and cached
/// features.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DropoutSpec {
    /// Features per example of the input and the output.
    pub features: usize,
    /// The `[C, H, W]` where the input is spatial, else `None`.
    pub chw: Option<[usize; 3]>,
    /// The probability of dropping an element, in [0, 1].
    pub p: f32,
}

/// PyTorch's `AdaptiveAvgPool2d((out_height, out_width))` over `[channels, height, width]`
/// inputs: output row `i` averages input rows `[⌊i·H/oh⌋, ⌈(i+1)·H/oh⌉)`, columns likewise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdaptivePoolSpec {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub out_height: usize,
    pub out_width: usize,
}

/// The channel-wise multiply of squeeze-excite: `y[c, h, w] = x[c, h, w] · s[c]`, `x` the
/// layer's first value (`[channels, height, width]`) and `s` its second (`channels` features,
/// or `[channels, 1, 1]`), each example its own scales. Which values it reads is the network's
/// wiring, as for [`AddSpec`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelMulSpec {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

/// The most values one [`ConcatSpec`] joins.
pub const MAX_CONCAT: usize = 4;

/// The concatenation along channels (`torch.cat(dim=1)`) of 2 to [`MAX_CONCAT`] values of the same
/// `height × width`, value `k` of `channels[k]` channels, in the order the wiring lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConcatSpec {
    /// The channels of each part; only the first `parts` count.
    pub channels: [usize; MAX_CONCAT],
    pub parts: usize,
    pub height: usize,
    pub width: usize,
}

impl ConcatSpec {
    /// A concatenation of parts of `channels` channels each (2 to [`MAX_CONCAT`] of them).
    pub fn new(channels: &[usize], height: usize, width: usize) -> Result<ConcatSpec> {
        if !(2..=MAX_CONCAT).contains(&channels.len()) {
            return Err(Error::invalid(format!("concat joins 2 to {MAX_CONCAT} values, not {}", channels.len())));
        }
        let mut c = [0; MAX_CONCAT];
        c[..channels.len()].copy_from_slice(channels);
        Ok(ConcatSpec { channels: c, parts: channels.len(), height, width })
    }
    /// The channels of each part.
    pub fn part_channels(&self) -> &[usize] {
        &self.channels[..self.parts.min(MAX_CONCAT)]
    }
    /// The output's channels.
    pub fn out_channels(&self) -> usize {
        self.part_channels().iter().sum()
    }
}

/// Any layer a network can hold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LayerSpec {
    Dense(DenseSpec),
    Conv2d(Conv2dSpec),
    MaxPool2d(Pool2dSpec),
    AvgPool2d(Pool2dSpec),
    /// `[C, H, W]` → `[C]`, the mean of each channel (PyTorch `AdaptiveAvgPool2d(1)` + flatten).
    GlobalAvgPool {
        channels: usize,
        height: usize,
        width: usize,
    },
    /// The sum of two earlier outputs (a residual connection).
    Add(AddSpec),
    BatchNorm(BatchNormSpec),
    /// Dropout: random zeros in training, the identity otherwise.
    Dropout(DropoutSpec),
    /// Adaptive average pooling to `out_height × out_width`.
    AdaptiveAvgPool2d(AdaptivePoolSpec),
    /// `[C, H, W]` → the flat row in `[H, W, C]` order (`x.permute(0, 2, 3, 1)` then a flatten,
    /// the channel-last flatten some models do before a Linear); no parameters.
    ChannelLast {
        channels: usize,
        height: usize,
        width: usize,
    },
    /// Squeeze-excite's channel-wise multiply of two earlier outputs.
    ChannelMul(ChannelMulSpec),
    /// The concatenation along channels of several earlier outputs.
    Concat(ConcatSpec),
}

impl From<DenseSpec> for LayerSpec {
    fn from(d: DenseSpec) -> Self {
        LayerSpec::Dense(d)
    }
}

impl Conv2dSpec {
    /// A `kernel × kernel` convolution with the same stride and padding on every side, one group
    /// (what [`CnnBuilder::conv`] adds).
    #[allow(clippy::too_many_arguments)]
    pub fn square(
        [in_channels, height, width]: [usize; 3],
        out_channels: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        activation: Activation,
        bias: bool,
    ) -> Conv2dSpec {
        Conv2dSpec {
            in_channels,
            height,
            width,
            out_channels,
            kernel: [kernel; 2],
            stride: [stride; 2],
            padding: [padding; 4],
            groups: 1,
            activation,
            bias,
        }
    }

    /// The kernel library's shape for a batch of `n`.
    pub fn shape(&self, n: usize) -> Conv2dShape {
        let [kh, kw] = self.kernel;
        let [sh, sw] = self.stride;
        Conv2dShape::new(n, self.in_channels, self.height, self.width, self.out_channels, 1, 1, 0)
            .with_kernel_hw(kh, kw)
            .with_stride_hw(sh, sw)
            .with_padding(self.padding)
            .with_groups(self.groups)
    }
    pub fn out_hw(&self) -> (usize, usize) {
        self.shape(1).out_hw()
    }
}

impl Pool2dSpec {
    /// A `kernel × kernel` window with the same stride and padding along both axes, floor mode.
    pub fn square([channels, height, width]: [usize; 3], kernel: usize, stride: usize, padding: usize) -> Pool2dSpec {
        Pool2dSpec { channels, height, width, kernel: [kernel; 2], stride: [stride; 2], padding: [padding; 2], ceil_mode: false }
    }

    pub fn shape(&self, n: usize) -> Pool2dShape {
        let [ph, pw] = self.padding;
        Pool2dShape::new(n, self.channels, self.height, self.width, 1, 1, 0)
            .with_kernel_hw(self.kernel[0], self.kernel[1])
            .with_stride_hw(self.stride[0], self.stride[1])
            .with_padding([ph, ph, pw, pw])
            .with_ceil_mode(self.ceil_mode)
    }
    pub fn out_hw(&self) -> (usize, usize) {
        self.shape(1).out_hw()
    }
}

/// `3` for `[3, 3]`, else `3×1`: how a report writes a size per axis.
fn per_axis(v: &[usize]) -> String {
    if v.iter().all(|&x| x == v[0]) { v[0].to_string() } else { v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join("×") }
}

impl LayerSpec {
    /// Input features per example (flattened).
    pub fn inputs(&self) -> usize {
        match *self {
            LayerSpec::Dense(d) => d.inputs,
            LayerSpec::Conv2d(c) => c.in_channels * c.height * c.width,
            LayerSpec::MaxPool2d(p) | LayerSpec::AvgPool2d(p) => p.channels * p.height * p.width,
            LayerSpec::GlobalAvgPool { channels, height, width } => channels * height * width,
            LayerSpec::Add(a) => a.features,
            LayerSpec::BatchNorm(b) => b.channels * b.height * b.width,
            LayerSpec::Dropout(d) => d.features,
            LayerSpec::AdaptiveAvgPool2d(a) => a.channels * a.height * a.width,
            LayerSpec::ChannelLast { channels, height, width } => channels * height * width,
            LayerSpec::ChannelMul(m) => m.channels * m.height * m.width,
            LayerSpec::Concat(c) => c.channels[0] * c.height * c.width,
        }
    }

    /// The features per example of each value the layer reads, in the wiring's order: one value
    /// for most layers, two for [`Add`](LayerSpec::Add) and [`ChannelMul`](LayerSpec::ChannelMul)
    /// (the input, then the per-channel scales), one per part for [`Concat`](LayerSpec::Concat).
    pub fn input_widths(&self) -> Vec<usize> {
        match *self {
            LayerSpec::Add(a) => vec![a.features; 2],
            LayerSpec::ChannelMul(m) => vec![m.channels * m.height * m.width, m.channels],
            LayerSpec::Concat(c) => c.part_channels().iter().map(|&k| k * c.height * c.width).collect(),
            _ => vec![self.inputs()],
        }
    }

    /// Output features per example (flattened).
    pub fn outputs(&self) -> usize {
        match self.out_chw() {
            Some([c, h, w]) => c * h * w,
            None => match *self {
                LayerSpec::Dense(d) => d.outputs,
                LayerSpec::GlobalAvgPool { channels, .. } => channels,
                LayerSpec::Add(a) => a.features,
                LayerSpec::BatchNorm(b) => b.channels,
                LayerSpec::Dropout(d) => d.features,
                LayerSpec::ChannelLast { channels, height, width } => channels * height * width,
                _ => 0,
            },
        }
    }

    /// The output as `[C, H, W]` for spatial layers.
    pub fn out_chw(&self) -> Option<[usize; 3]> {
        match *self {
            LayerSpec::Conv2d(c) => {
                let (h, w) = c.out_hw();
                Some([c.out_channels, h, w])
            }
            LayerSpec::MaxPool2d(p) | LayerSpec::AvgPool2d(p) => {
                let (h, w) = p.out_hw();
                Some([p.channels, h, w])
            }
            LayerSpec::Add(a) => a.chw,
            LayerSpec::BatchNorm(b) if b.spatial => Some([b.channels, b.height, b.width]),
            LayerSpec::Dropout(d) => d.chw,
            LayerSpec::AdaptiveAvgPool2d(a) => Some([a.channels, a.out_height, a.out_width]),
            LayerSpec::ChannelMul(m) => Some([m.channels, m.height, m.width]),
            LayerSpec::Concat(c) => Some([c.out_channels(), c.height, c.width]),
            _ => None,
        }
    }

    /// The activation applied to the output (identity for pooling).
    pub fn activation(&self) -> Activation {
        match *self {
            LayerSpec::Dense(d) => d.activation,
            LayerSpec::Conv2d(c) => c.activation,
            LayerSpec::Add(a) => a.activation,
            LayerSpec::BatchNorm(b) => b.activation,
            _ => Activation::Identity,
        }
    }

    /// The weight's shape (`None` for layers without parameters).
    pub fn weight_shape(&self) -> Option<Vec<usize>> {
        match *self {
            LayerSpec::Dense(d) => Some(vec![d.outputs, d.inputs]),
            LayerSpec::Conv2d(c) => Some(c.shape(1).w_shape().to_vec()),
            LayerSpec::BatchNorm(b) => Some(vec![b.channels]),
            _ => None,
        }
    }

    /// Bias length (0 without parameters).
    pub fn bias_len(&self) -> usize {
        match *self {
            LayerSpec::Dense(d) => d.outputs,
            LayerSpec::Conv2d(c) if c.bias => c.out_channels,
            LayerSpec::BatchNorm(b) => b.channels,
            _ => 0,
        }
    }

    pub fn has_params(&self) -> bool {
        self.weight_shape().is_some()
    }

    /// Multiply-adds of one example's forward pass through the layer: `inputs·outputs` for a
    /// dense layer, `out_h·out_w·out_channels·(in_channels / groups)·kh·kw` for a convolution, 0
    /// for every other kind (pooling, BatchNorm, sums and the like do no products).
    pub fn multiply_adds(&self) -> usize {
        match *self {
            LayerSpec::Dense(d) => d.inputs * d.outputs,
            LayerSpec::Conv2d(c) => {
                let (h, w) = c.out_hw();
                h * w * c.out_channels * (c.in_channels / c.groups.max(1)) * c.kernel[0] * c.kernel[1]
            }
            _ => 0,
        }
    }

    /// Whether the layer keeps a spatial `[C, H, W]` output (a dense layer after it flattens).
    pub fn is_spatial(&self) -> bool {
        self.out_chw().is_some()
    }

    /// (fan_in, fan_out) as PyTorch computes them for initialisation.
    pub fn fans(&self) -> (usize, usize) {
        match *self {
            LayerSpec::Dense(d) => (d.inputs, d.outputs),
            // PyTorch's _calculate_fan_in_and_fan_out: weight.size(1)·receptive field, and
            // weight.size(0)·receptive field (out_channels, not out_channels / groups)
            LayerSpec::Conv2d(c) => {
                let taps = c.kernel[0] * c.kernel[1];
                (c.in_channels / c.groups.max(1) * taps, c.out_channels * taps)
            }
            _ => (0, 0),
        }
    }

    /// A short description for reports.
    pub fn describe(&self) -> String {
        match *self {
            LayerSpec::Dense(d) => format!("dense {}→{} {}", d.inputs, d.outputs, d.activation.name()),
            LayerSpec::Conv2d(c) => {
                let [o, h, w] = self.out_chw().unwrap_or([0; 3]);
                let groups = if c.groups == 1 { String::new() } else { format!(", groups {}", c.groups) };
                format!(
                    "conv2d {}×{}×{} → {o}×{h}×{w} (kernel {}, stride {}, padding {}{groups}{}) {}",
                    c.in_channels,
                    c.height,
                    c.width,
                    per_axis(&c.kernel),
                    per_axis(&c.stride),
                    per_axis(&c.padding),
                    if c.bias { "" } else { ", no bias" },
                    c.activation.name()
                )
            }
            LayerSpec::MaxPool2d(p) | LayerSpec::AvgPool2d(p) => {
                let kind = if matches!(self, LayerSpec::MaxPool2d(_)) { "max_pool2d" } else { "avg_pool2d" };
                let (h, w) = p.out_hw();
                format!(
                    "{kind} {}×{}×{} → {}×{h}×{w} (kernel {}, stride {}{})",
                    p.channels,
                    p.height,
                    p.width,
                    p.channels,
                    per_axis(&p.kernel),
                    per_axis(&p.stride),
                    if p.ceil_mode { ", ceil_mode" } else { "" }
                )
            }
            LayerSpec::GlobalAvgPool { channels, height, width } => format!("global_avg_pool {channels}×{height}×{width} → {channels}"),
            LayerSpec::Add(a) => match a.chw {
                Some([c, h, w]) => format!("add {c}×{h}×{w} {}", a.activation.name()),
                None => format!("add {} {}", a.features, a.activation.name()),
            },
            LayerSpec::BatchNorm(b) => {
                format!(
                    "batch_norm {}×{}×{} (eps {}, momentum {}) {}",
                    b.channels,
                    b.height,
                    b.width,
                    b.eps,
                    b.momentum,
                    b.activation.name()
                )
            }
            LayerSpec::Dropout(d) => match d.chw {
                Some([c, h, w]) => format!("dropout {c}×{h}×{w} (p = {})", d.p),
                None => format!("dropout {} (p = {})", d.features, d.p),
            },
            LayerSpec::AdaptiveAvgPool2d(a) => {
                format!("adaptive_avg_pool2d {}×{}×{} → {}×{}×{}", a.channels, a.height, a.width, a.channels, a.out_height, a.out_width)
            }
            LayerSpec::ChannelLast { channels, height, width } => format!("channel_last {channels}×{height}×{width} → [H, W, C] row"),
            LayerSpec::ChannelMul(m) => format!("channel_mul {}×{}×{} by {}", m.channels, m.height, m.width, m.channels),
            LayerSpec::Concat(c) => {
                let parts: Vec<String> = c.part_channels().iter().map(usize::to_string).collect();
                format!("concat {} → {}×{}×{}", parts.join(" + "), c.out_channels(), c.height, c.width)
            }
        }
    }

    /// Checks the layer is well formed (a non-empty output, valid pooling padding).
    pub fn validate(&self) -> Result<()> {
        match *self {
            LayerSpec::Dense(d) if d.inputs == 0 || d.outputs == 0 => {
                Err(Error::invalid(format!("{}: sizes must be positive", self.describe())))
            }
            LayerSpec::Conv2d(c) => c.shape(1).validate(),
            LayerSpec::MaxPool2d(p) | LayerSpec::AvgPool2d(p) => p.shape(1).validate(),
            LayerSpec::GlobalAvgPool { channels, height, width } if channels * height * width == 0 => {
                Err(Error::invalid("global_avg_pool over an empty input"))
            }
            LayerSpec::Add(a) if a.features == 0 || a.chw.is_some_and(|[c, h, w]| c * h * w != a.features) => {
                Err(Error::invalid(format!("{}: the shape must be non-empty and hold {} features", self.describe(), a.features)))
            }
            LayerSpec::BatchNorm(b) => {
                if b.channels * b.height * b.width == 0 || (!b.spatial && b.height * b.width != 1) {
                    Err(Error::invalid(format!("{}: the shape must be non-empty", self.describe())))
                } else if !(b.eps.is_finite() && b.eps >= 0.0 && b.momentum.is_finite() && (0.0..=1.0).contains(&b.momentum)) {
                    Err(Error::invalid(format!("{}: eps must be finite and ≥ 0, momentum in [0, 1]", self.describe())))
                } else {
                    Ok(())
                }
            }
            LayerSpec::Dropout(d) if !indexable(&[d.features]) || d.chw.is_some_and(|chw| volume(&chw) != Some(d.features)) => {
                Err(Error::invalid(format!("{}: the shape must be non-empty and hold {} features", self.describe(), d.features)))
            }
            LayerSpec::Dropout(d) if !(0.0..=1.0).contains(&d.p) => {
                Err(Error::invalid(format!("dropout probability must be in [0, 1], got {}", d.p)))
            }
            LayerSpec::AdaptiveAvgPool2d(a) => crate::kernels::pool::AdaptivePool2dShape {
                n: 1,
                c: a.channels,
                h: a.height,
                w: a.width,
                oh: a.out_height,
                ow: a.out_width,
            }
            .validate(),
            LayerSpec::ChannelLast { channels, height, width } if !indexable(&[channels, height, width]) => {
                Err(Error::invalid(format!("{}: an empty input, or one beyond 32-bit indices", self.describe())))
            }
            LayerSpec::ChannelMul(m) if !indexable(&[m.channels, m.height, m.width]) => {
                Err(Error::invalid(format!("{}: an empty input, or one beyond 32-bit indices", self.describe())))
            }
            LayerSpec::Concat(c)
                if !(2..=MAX_CONCAT).contains(&c.parts)
                    || c.part_channels().contains(&0)
                    || !indexable(&[
                        c.part_channels().iter().try_fold(0usize, |a, &b| a.checked_add(b)).unwrap_or(0),
                        c.height,
                        c.width,
                    ]) =>
            {
                Err(Error::invalid(format!("concat of {} parts: 2 to {MAX_CONCAT} non-empty parts of the same non-empty plane", c.parts)))
            }
            _ => Ok(()),
        }
    }
}

/// The product of `dims`, `None` where it overflows.
fn volume(dims: &[usize]) -> Option<usize> {
    dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
}

/// Whether the product of `dims` is positive and fits the kernels' 32-bit indices (checked
/// before any other arithmetic on them: a checkpoint's layer sizes are untrusted).
fn indexable(dims: &[usize]) -> bool {
    volume(dims).is_some_and(|v| v > 0 && v <= u32::MAX as usize)
}

/// Builds a convolutional trunk over `[channels, height, width]` images, layer by layer, each
/// layer reading the previous one's output shape.
///
/// ```
/// use headswap::nn::{Activation, CnnBuilder, Head, Network};
/// let trunk = CnnBuilder::new(1, 16, 16)
///     .conv(16, 3, 1, 1, Activation::Relu)   // 16×16×16
///     .max_pool(2, 2)                         // 16×8×8
///     .conv(32, 3, 1, 1, Activation::Relu)   // 32×8×8
///     .max_pool(2, 2)                         // 32×4×4
///     .dense(64, Activation::Relu)            // flatten 512 → 64
///     .build()?;
/// assert_eq!(trunk.last().map(|l| l.outputs()), Some(64));
/// # Ok::<(), headswap::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct CnnBuilder {
    shape: [usize; 3],
    flat: Option<usize>,
    layers: Vec<LayerSpec>,
    /// Per layer, the values it reads (see [`Trunk::sources`]).
    sources: Vec<Vec<usize>>,
    /// Per layer, its module path if one was given (see [`Trunk::names`]).
    names: Vec<Option<String>>,
    /// The module path the layers being added belong to (`"layer1.0"` inside
    /// `.scope("layer1", |b| b.scope("0", ..))`), empty at the top.
    scope: String,
    /// The value the next layer reads: 0 for the input, `i + 1` for layer `i`'s output.
    current: usize,
    /// Whether the convolutions added from now on (projection shortcuts too) have a bias.
    conv_bias: bool,
}

/// A trunk whose layers may read any earlier output: the layers in evaluation order and, per
/// layer, the values it reads — `0` is the network's input, `i + 1` the output of layer `i`. A
/// plain chain reads `[i]` at layer `i`; an [`LayerSpec::Add`] reads two values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Trunk {
    pub layers: Vec<LayerSpec>,
    pub sources: Vec<Vec<usize>>,
    /// Per layer, its module path (`"layer1.0.conv1"`): its parameters are saved as
    /// `<path>.weight` and `<path>.bias`, so a trunk built the way a PyTorch class is written
    /// has that class's state_dict keys. `None`: the layer's `nn.Sequential` index
    /// ([`sequential_indices`](crate::nn::state::sequential_indices)), headswap's names before
    /// module paths.
    pub names: Vec<Option<String>>,
}

impl Trunk {
    /// A chain: each layer reads the one before it; the layers are named by their
    /// `nn.Sequential` index.
    pub fn chain(layers: Vec<LayerSpec>) -> Trunk {
        let sources = (0..layers.len()).map(|i| vec![i]).collect();
        let names = vec![None; layers.len()];
        Trunk { layers, sources, names }
    }
}

impl CnnBuilder {
    pub fn new(channels: usize, height: usize, width: usize) -> CnnBuilder {
        CnnBuilder {
            shape: [channels, height, width],
            flat: None,
            layers: Vec::new(),
            sources: Vec::new(),
            names: Vec::new(),
            scope: String::new(),
            current: 0,
            conv_bias: true,
        }
    }

    /// Whether the convolutions added from here on, projection shortcuts included, have a bias
    /// (the default) or not (`false`: PyTorch's `bias=False`, torchvision's convolutions before a
    /// BatchNorm, whose state_dicts then hold no `.bias` for them).
    pub fn conv_bias(mut self, bias: bool) -> CnnBuilder {
        self.conv_bias = bias;
        self
    }

    /// Gives the layer added last the module path `name` inside the current
    /// [`scope`](Self::scope): its parameters are saved as `<scope>.<name>.weight` and `.bias`.
    /// Unnamed layers keep their `nn.Sequential` index. A call before any layer is an error at
    /// [`build_graph`](Self::build_graph).
    ///
    /// ```
    /// use headswap::nn::{Activation, CnnBuilder};
    /// let trunk = CnnBuilder::new(3, 8, 8)
    ///     .conv(8, 3, 1, 1, Activation::Relu).name("conv1")
    ///     .scope("layer1", |b| {
    ///         b.scope("0", |b| {
    ///             b.residual(|b| b.conv(8, 3, 1, 1, Activation::Relu).name("conv1").conv(8, 3, 1, 1, Activation::Identity).name("conv2"), Activation::Relu)
    ///         })
    ///     })
    ///     .build_graph()?;
    /// let names: Vec<_> = trunk.names.iter().map(|n| n.as_deref().unwrap_or("-")).collect();
    /// assert_eq!(names, ["conv1", "layer1.0.conv1", "layer1.0.conv2", "layer1.0"]);
    /// # Ok::<(), headswap::Error>(())
    /// ```
    pub fn name(mut self, name: &str) -> CnnBuilder {
        let path = self.path(name);
        match self.names.last_mut() {
            Some(slot) => *slot = Some(path),
            // reported by build_graph: no layer to name
            None => self.names.push(Some(path)),
        }
        self
    }

    /// Adds the layers `body` adds under the module path `scope` (nested inside the current
    /// one): `.scope("layer1", |b| b.scope("0", |b| b.conv(..).name("conv1")))` names the
    /// convolution `layer1.0.conv1`. A residual block in a scope is named by the scope (its add
    /// has no parameters) and its projection shortcut `<scope>.downsample.0`, torchvision's name.
    pub fn scope(mut self, scope: &str, body: impl FnOnce(CnnBuilder) -> CnnBuilder) -> CnnBuilder {
        let outer = std::mem::take(&mut self.scope);
        self.scope = if outer.is_empty() { scope.to_string() } else { format!("{outer}.{scope}") };
        let mut b = body(self);
        b.scope = outer;
        b
    }

    /// `name` inside the current scope.
    fn path(&self, name: &str) -> String {
        if self.scope.is_empty() { name.to_string() } else { format!("{}.{name}", self.scope) }
    }

    fn push(self, l: LayerSpec) -> CnnBuilder {
        let from = self.current;
        self.push_from(l, vec![from])
    }

    fn push_from(mut self, l: LayerSpec, sources: Vec<usize>) -> CnnBuilder {
        if let Some([c, h, w]) = l.out_chw() {
            self.shape = [c, h, w];
            // a spatial output again (after a squeeze-excite's dense layers): a dense layer
            // after it flattens this shape
            self.flat = None;
        } else {
            self.flat = Some(l.outputs());
        }
        self.layers.push(l);
        self.sources.push(sources);
        self.names.push(None);
        self.current = self.layers.len();
        self
    }

    /// A residual block: `body` adds layers to the running output `x`, then the block's output is
    /// `activation(body(x) + shortcut(x))`. The shortcut is `x` itself where `body` keeps its
    /// shape (ResNet's identity shortcut), else a 1×1 convolution with the stride that maps `x`
    /// to `body`'s output shape (the projection shortcut, torchvision's `downsample`).
    ///
    /// ```
    /// use headswap::nn::{Activation, CnnBuilder};
    /// let trunk = CnnBuilder::new(3, 8, 8)
    ///     .conv(8, 3, 1, 1, Activation::Relu)
    ///     .residual(|b| b.conv(8, 3, 1, 1, Activation::Relu).conv(8, 3, 1, 1, Activation::Identity), Activation::Relu)
    ///     .residual(|b| b.conv(16, 3, 2, 1, Activation::Relu).conv(16, 3, 1, 1, Activation::Identity), Activation::Relu)
    ///     .global_avg_pool()
    ///     .build_graph()?;
    /// // conv, [conv, conv, add], [conv, conv, 1×1 projection, add], pool
    /// assert_eq!(trunk.layers.len(), 9);
    /// assert_eq!(trunk.sources[3], vec![3, 1]);  // the first add: body output + block input
    /// # Ok::<(), headswap::Error>(())
    /// ```
    pub fn residual(self, body: impl FnOnce(CnnBuilder) -> CnnBuilder, activation: Activation) -> CnnBuilder {
        let (input, in_shape) = (self.current, self.shape);
        let mut b = body(self);
        let out = b.current;
        let shortcut = if b.shape == in_shape || out == input {
            input
        } else {
            // the stride that takes the input's height to the body's
            let [c, h, w] = in_shape;
            let stride = if b.shape[1] > 0 { h.div_ceil(b.shape[1]).max(1) } else { 1 };
            let proj = Conv2dSpec::square([c, h, w], b.shape[0], 1, stride, 0, Activation::Identity, b.conv_bias);
            let body_shape = b.shape;
            b = b.push_from(LayerSpec::Conv2d(proj), vec![input]);
            if !b.scope.is_empty() {
                b = b.name("downsample.0");
            }
            // keep the running output the body's, for the add below
            b.shape = body_shape;
            b.layers.len()
        };
        let [c, h, w] = b.shape;
        let add = LayerSpec::Add(AddSpec { features: c * h * w, chw: Some([c, h, w]), activation });
        let b = b.push_from(add, vec![out, shortcut]);
        // the block's output is the block module's: name the add after the scope it is built in
        if b.scope.is_empty() {
            b
        } else {
            let scope = b.scope.clone();
            let mut b = b;
            *b.names.last_mut().expect("the add was just pushed") = Some(scope);
            b
        }
    }

    /// A residual block whose shortcut is the layers `shortcut` adds to the block's input, under
    /// the module path `downsample` in a scope (torchvision's `downsample =
    /// Sequential(conv1x1, BatchNorm2d)`: `|s| s.conv(..).name("0").batch_norm(..).name("1")`
    /// names them `<scope>.downsample.0` and `.1`): `activation(body(x) + shortcut(x))`.
    ///
    /// ```
    /// use headswap::nn::{Activation, CnnBuilder};
    /// use Activation::{Identity, Relu};
    /// let trunk = CnnBuilder::new(8, 8, 8)
    ///     .conv_bias(false)
    ///     .scope("layer2", |b| {
    ///         b.scope("0", |b| {
    ///             b.residual_with(
    ///                 |b| b.conv(16, 3, 2, 1, Identity).name("conv1").batch_norm(Relu).name("bn1")
    ///                     .conv(16, 3, 1, 1, Identity).name("conv2").batch_norm(Identity).name("bn2"),
    ///                 |s| s.conv(16, 1, 2, 0, Identity).name("0").batch_norm(Identity).name("1"),
    ///                 Relu,
    ///             )
    ///         })
    ///     })
    ///     .build_graph()?;
    /// let names: Vec<_> = trunk.names.iter().map(|n| n.clone().unwrap()).collect();
    /// assert_eq!(names[4..], ["layer2.0.downsample.0", "layer2.0.downsample.1", "layer2.0"]);
    /// # Ok::<(), headswap::Error>(())
    /// ```
    pub fn residual_with(
        self,
        body: impl FnOnce(CnnBuilder) -> CnnBuilder,
        shortcut: impl FnOnce(CnnBuilder) -> CnnBuilder,
        activation: Activation,
    ) -> CnnBuilder {
        let (input, in_shape, in_flat) = (self.current, self.shape, self.flat);
        let b = body(self);
        let (out, out_shape) = (b.current, b.shape);
        // the shortcut reads the block's input
        let mut b = CnnBuilder { current: input, shape: in_shape, flat: in_flat, ..b };
        b = if b.scope.is_empty() { shortcut(b) } else { b.scope("downsample", shortcut) };
        let short = b.current;
        let [c, h, w] = out_shape;
        b.shape = out_shape;
        let add = LayerSpec::Add(AddSpec { features: c * h * w, chw: Some([c, h, w]), activation });
        let b = b.push_from(add, vec![out, short]);
        if b.scope.is_empty() {
            b
        } else {
            let scope = b.scope.clone();
            let mut b = b;
            *b.names.last_mut().expect("the add was just pushed") = Some(scope);
            b
        }
    }

    /// A convolution with `out_channels` filters of `kernel`×`kernel`.
    pub fn conv(self, out_channels: usize, kernel: usize, stride: usize, padding: usize, activation: Activation) -> CnnBuilder {
        let bias = self.conv_bias;
        let spec = Conv2dSpec::square(self.shape, out_channels, kernel, stride, padding, activation, bias);
        self.push(LayerSpec::Conv2d(spec))
    }

    /// A grouped convolution: `groups` groups of `C/groups` input channels each feeding
    /// `out_channels/groups` filters of `kernel`×`kernel` (PyTorch's `groups=`; both channel
    /// counts must be multiples of `groups`, checked at build).
    pub fn conv_grouped(
        self,
        out_channels: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        groups: usize,
        activation: Activation,
    ) -> CnnBuilder {
        let bias = self.conv_bias;
        let spec = Conv2dSpec { groups, ..Conv2dSpec::square(self.shape, out_channels, kernel, stride, padding, activation, bias) };
        self.push(LayerSpec::Conv2d(spec))
    }

    /// A depthwise convolution: one `kernel`×`kernel` filter per input channel (`groups =
    /// in = out channels`, MobileNetV2's 3×3 stride 1 or 2, padding 1).
    ///
    /// ```
    /// use headswap::nn::{Activation, CnnBuilder, LayerSpec};
    /// let trunk = CnnBuilder::new(3, 16, 16)
    ///     .conv_bias(false)
    ///     .conv(32, 3, 2, 1, Activation::Relu6)        // 32×8×8
    ///     .depthwise(3, 1, 1, Activation::Relu6)      // 32×8×8, weight [32, 1, 3, 3]
    ///     .conv(16, 1, 1, 0, Activation::Identity)    // pointwise
    ///     .build()?;
    /// assert_eq!(trunk[1].weight_shape(), Some(vec![32, 1, 3, 3]));
    /// # Ok::<(), headswap::Error>(())
    /// ```
    pub fn depthwise(self, kernel: usize, stride: usize, padding: usize, activation: Activation) -> CnnBuilder {
        let c = self.shape[0];
        self.conv_grouped(c, kernel, stride, padding, c, activation)
    }

    /// Adds any convolution over the current output: `spec`'s input fields (`in_channels`,
    /// `height`, `width`) are replaced by the running shape, and its `bias` kept as given. For
    /// rectangular kernels, strides and asymmetric padding (CREPE's `F.pad(x, (0, 0, 254, 254))`
    /// then `Conv2d(1, 1024, (512, 1), stride=(4, 1))`).
    pub fn conv_spec(self, spec: Conv2dSpec) -> CnnBuilder {
        let [in_channels, height, width] = self.shape;
        self.push(LayerSpec::Conv2d(Conv2dSpec { in_channels, height, width, ..spec }))
    }

    /// A BatchNorm over the output so far (`BatchNorm2d` after spatial layers, `BatchNorm1d`
    /// after dense ones) with PyTorch's defaults, eps 1e-5 and momentum 0.1, then `activation`:
    /// torchvision's `conv1 → bn1 → relu` is `.conv(.., Activation::Identity).name("conv1")
    /// .batch_norm(Activation::Relu).name("bn1")`.
    pub fn batch_norm(self, activation: Activation) -> CnnBuilder {
        self.batch_norm_with(crate::kernels::norm::DEFAULT_EPS, crate::kernels::norm::DEFAULT_MOMENTUM, activation)
    }

    /// [`batch_norm`](Self::batch_norm) with another `eps` (CREPE's 1e-3) and `momentum`.
    pub fn batch_norm_with(self, eps: f32, momentum: f32, activation: Activation) -> CnnBuilder {
        // after a dense layer (or a global pooling) the output is a flat row: BatchNorm1d
        let spatial = self.layers.last().is_none_or(|l| l.is_spatial());
        let [channels, height, width] = if spatial { self.shape } else { [self.flat.unwrap_or(0), 1, 1] };
        self.push(LayerSpec::BatchNorm(BatchNormSpec { channels, height, width, eps, momentum, activation, spatial }))
    }

    pub fn max_pool(self, kernel: usize, stride: usize) -> CnnBuilder {
        self.max_pool_padded(kernel, stride, 0)
    }

    /// Max pooling over windows that may reach `padding` pixels beyond every edge (the padding
    /// never wins: PyTorch's `MaxPool2d(kernel, stride, padding)`, e.g. ResNet's stem
    /// `MaxPool2d(3, 2, 1)`). The padding is at most half the window.
    pub fn max_pool_padded(self, kernel: usize, stride: usize, padding: usize) -> CnnBuilder {
        let spec = Pool2dSpec::square(self.shape, kernel, stride, padding);
        self.push(LayerSpec::MaxPool2d(spec))
    }

    /// Max pooling with `ceil_mode=True` (GoogLeNet's `MaxPool2d(3, 2, ceil_mode=True)`): the
    /// output size rounds up, the last window may be partial.
    pub fn max_pool_ceil(self, kernel: usize, stride: usize, padding: usize) -> CnnBuilder {
        let spec = Pool2dSpec { ceil_mode: true, ..Pool2dSpec::square(self.shape, kernel, stride, padding) };
        self.push(LayerSpec::MaxPool2d(spec))
    }

    pub fn avg_pool(self, kernel: usize, stride: usize) -> CnnBuilder {
        let spec = Pool2dSpec::square(self.shape, kernel, stride, 0);
        self.push(LayerSpec::AvgPool2d(spec))
    }

    /// Any max (`max = true`) or average pooling over the current output: `spec`'s input fields
    /// are replaced by the running shape. For rectangular windows and strides (CREPE's
    /// `MaxPool2d((2, 1), (2, 1))`) and `ceil_mode`.
    pub fn pool_spec(self, spec: Pool2dSpec, max: bool) -> CnnBuilder {
        let [channels, height, width] = self.shape;
        let spec = Pool2dSpec { channels, height, width, ..spec };
        self.push(if max { LayerSpec::MaxPool2d(spec) } else { LayerSpec::AvgPool2d(spec) })
    }

    pub fn global_avg_pool(self) -> CnnBuilder {
        let [c, h, w] = self.shape;
        self.push(LayerSpec::GlobalAvgPool { channels: c, height: h, width: w })
    }

    /// Dropout with probability `p` (PyTorch's `nn.Dropout(p)`): in training each element is
    /// zeroed with probability `p` and the rest scaled by `1/(1 − p)`, the identity otherwise
    /// (see [`DropoutSpec`]). Spatial outputs stay spatial.
    pub fn dropout(self, p: f32) -> CnnBuilder {
        let (features, chw) = match self.flat {
            Some(f) => (f, None),
            None => (self.shape.iter().product(), Some(self.shape)),
        };
        self.push(LayerSpec::Dropout(DropoutSpec { features, chw, p }))
    }

    /// Adaptive average pooling to `out_height × out_width` (PyTorch's
    /// `AdaptiveAvgPool2d((out_height, out_width))`; to 1×1 and flattened it is
    /// [`global_avg_pool`](Self::global_avg_pool)).
    pub fn adaptive_avg_pool(self, out_height: usize, out_width: usize) -> CnnBuilder {
        let [c, h, w] = self.shape;
        self.push(LayerSpec::AdaptiveAvgPool2d(AdaptivePoolSpec { channels: c, height: h, width: w, out_height, out_width }))
    }

    /// Flattens `[C, H, W]` in `[H, W, C]` order (`x.permute(0, 2, 3, 1).reshape(n, -1)`), where
    /// a model flattens channel-last before its Linear; [`dense`](Self::dense) alone flattens in
    /// NCHW order.
    pub fn channel_last(self) -> CnnBuilder {
        let [c, h, w] = self.shape;
        self.push(LayerSpec::ChannelLast { channels: c, height: h, width: w })
    }

    /// A squeeze-excite block: `scales` adds layers to the running output `x` that end in one
    /// value per channel (`channels` features, e.g. global pool → dense → dense with a
    /// Hardsigmoid, or `[C, 1, 1]` from 1×1 convolutions as torchvision writes them); the block's
    /// output is `x · scales(x)` channel by channel.
    ///
    /// ```
    /// use headswap::nn::{Activation, CnnBuilder};
    /// let trunk = CnnBuilder::new(3, 8, 8)
    ///     .conv(16, 3, 1, 1, Activation::Relu)
    ///     .squeeze_excite(|b| b.global_avg_pool().dense(4, Activation::Relu).dense(16, Activation::Hardsigmoid))
    ///     .build_graph()?;
    /// assert_eq!(trunk.sources[4], vec![1, 4]); // the multiply: the conv's output and the scales
    /// # Ok::<(), headswap::Error>(())
    /// ```
    pub fn squeeze_excite(self, scales: impl FnOnce(CnnBuilder) -> CnnBuilder) -> CnnBuilder {
        let (input, shape) = (self.current, self.shape);
        let mut b = scales(self);
        let s = b.current;
        b.shape = shape;
        let [c, h, w] = shape;
        b.push_from(LayerSpec::ChannelMul(ChannelMulSpec { channels: c, height: h, width: w }), vec![input, s])
    }

    /// The concatenation along channels of two branches that both start at the running output:
    /// `cat(first(x), second(x))` (a branch that adds nothing is `x` itself, DenseNet's
    /// `cat(x, f(x))`). Both must keep the height and width; see
    /// [`concat_branches`](Self::concat_branches) for more.
    pub fn concat(self, first: impl FnOnce(CnnBuilder) -> CnnBuilder, second: impl FnOnce(CnnBuilder) -> CnnBuilder) -> CnnBuilder {
        self.concat_branches(vec![Box::new(first), Box::new(second)])
    }

    /// The concatenation along channels of 2 to [`MAX_CONCAT`] branches that all start at the
    /// running output, in order (an Inception block's `torch.cat([b1(x), b2(x), b3(x), b4(x)], 1)`).
    /// Every branch must keep the height and width (checked by
    /// [`build_graph`](Self::build_graph), as is the number of branches).
    #[allow(clippy::type_complexity)]
    pub fn concat_branches<'a>(self, branches: Vec<Box<dyn FnOnce(CnnBuilder) -> CnnBuilder + 'a>>) -> CnnBuilder {
        let (input, shape) = (self.current, self.shape);
        let mut b = self;
        let mut parts = Vec::new();
        for branch in branches {
            b.current = input;
            b.shape = shape;
            b.flat = None;
            b = branch(b);
            parts.push((b.current, b.shape));
        }
        let mut channels = [0; MAX_CONCAT];
        for (c, (_, s)) in channels.iter_mut().zip(&parts) {
            *c = s[0];
        }
        let [_, h, w] = parts.first().map_or(shape, |p| p.1);
        // more than MAX_CONCAT parts, or none, is reported by build_graph (the layer's validate)
        let spec = ConcatSpec { channels, parts: parts.len(), height: h, width: w };
        b.push_from(LayerSpec::Concat(spec), parts.iter().map(|p| p.0).collect())
    }

    /// A dense layer over the flattened output so far.
    pub fn dense(self, outputs: usize, activation: Activation) -> CnnBuilder {
        let inputs = self.flat.unwrap_or(self.shape.iter().product());
        self.push(LayerSpec::Dense(DenseSpec { inputs, outputs, activation }))
    }

    /// The layers, each validated; for a trunk without residual blocks (a chain).
    pub fn build(self) -> Result<Vec<LayerSpec>> {
        if self.layers.iter().any(|l| l.input_widths().len() > 1) {
            return Err(Error::invalid(
                "this trunk has residual blocks, squeeze-excite or concatenations: build it with build_graph(), which keeps its wiring",
            ));
        }
        if self.names.iter().any(Option::is_some) {
            return Err(Error::invalid("this trunk has named layers: build it with build_graph(), which keeps their names"));
        }
        self.build_layers()
    }

    /// The layers, their wiring and their names, each layer validated, every read of the wiring
    /// checked to come from an earlier layer with the size it takes, and the names checked to be
    /// module paths (see [`check_module_path`]).
    pub fn build_graph(self) -> Result<Trunk> {
        if self.names.len() != self.layers.len() {
            return Err(Error::invalid("name() was called before any layer was added: it names the layer added last"));
        }
        for name in self.names.iter().flatten() {
            check_module_path(name)?;
        }
        let (sources, names) = (self.sources.clone(), self.names.clone());
        let layers = self.build_layers()?;
        let trunk = Trunk { layers, sources, names };
        let input = trunk.layers.first().map_or(0, |l| l.inputs());
        check_wiring(&trunk.layers, &trunk.sources, input)?;
        Ok(trunk)
    }

    fn build_layers(self) -> Result<Vec<LayerSpec>> {
        for l in &self.layers {
            l.validate()?;
        }
        // every value a layer reads as `[C, H, W]` must be spatial: the input (value 0) or a
        // spatial layer's output (the dense layers of a squeeze-excite block sit between
        // convolutions, but what they give is read as per-channel scales)
        let spatial = |v: usize| v == 0 || self.layers[v - 1].is_spatial();
        for (l, src) in self.layers.iter().zip(&self.sources) {
            let reads_spatial: &[usize] = match l {
                LayerSpec::Dense(_) | LayerSpec::Dropout(_) | LayerSpec::Add(_) => &[],
                LayerSpec::BatchNorm(b) if !b.spatial => &[],
                LayerSpec::ChannelMul(_) => &src[..1.min(src.len())],
                _ => src,
            };
            if !reads_spatial.iter().all(|&v| spatial(v)) {
                return Err(Error::invalid(format!(
                    "{} reads a flat value: convolution and pooling layers must come before the dense layers",
                    l.describe()
                )));
            }
        }
        Ok(self.layers)
    }
}

/// Checks a network's wiring: layer `i` reads values before its own output (`0` the input, `j + 1`
/// layer `j`'s output), one value per layer, two for an add, each of the width the layer takes.
pub fn check_wiring(layers: &[LayerSpec], sources: &[Vec<usize>], input: usize) -> Result<()> {
    if sources.len() != layers.len() {
        return Err(Error::shape(format!("{} layers but {} source lists", layers.len(), sources.len())));
    }
    let width = |v: usize| if v == 0 { input } else { layers[v - 1].outputs() };
    for (i, (l, src)) in layers.iter().zip(sources).enumerate() {
        let widths = l.input_widths();
        let want = widths.len();
        if src.len() != want {
            return Err(Error::shape(format!("layer {i} ({}) reads {} values, it takes {want}", l.describe(), src.len())));
        }
        for (&v, &takes) in src.iter().zip(&widths) {
            if v > i {
                return Err(Error::shape(format!("layer {i} ({}) reads value {v}, which is not computed before it", l.describe())));
            }
            if width(v) != takes {
                let what = if v == 0 { "the input".to_string() } else { format!("layer {}", v - 1) };
                return Err(Error::shape(format!("layer {i} ({}) takes {takes} inputs, {what} gives {}", l.describe(), width(v))));
            }
        }
        // the parts of a concat and the input of a channel multiply have the layer's planes
        // (equal widths alone would let a 2×3 plane pass for a 3×2 one)
        let planes: Vec<[usize; 3]> = match *l {
            LayerSpec::Concat(c) => c.part_channels().iter().map(|&k| [k, c.height, c.width]).collect(),
            LayerSpec::ChannelMul(m) => vec![[m.channels, m.height, m.width]],
            _ => Vec::new(),
        };
        for (&v, want) in src.iter().zip(&planes) {
            if let Some(got) = v.checked_sub(1).and_then(|j| layers[j].out_chw())
                && got != *want
            {
                return Err(Error::shape(format!("layer {i} ({}) takes {want:?} planes, layer {} gives {got:?}", l.describe(), v - 1)));
            }
        }
    }
    Ok(())
}

/// A module path is dot-separated parts, each non-empty and made of ASCII letters, digits and
/// `_` (`layer1.0.conv1`, `features.3.conv.1`): what PyTorch's attribute names and Sequential
/// indices give, and what a checkpoint key `<path>.weight` can carry unambiguously.
pub fn check_module_path(path: &str) -> Result<()> {
    let ok = !path.is_empty() && path.split('.').all(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "{path:?} is not a module path: dot-separated parts of letters, digits and _ (like \"layer1.0.conv1\")"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiply_adds_count_the_products_of_one_example() {
        let dense = LayerSpec::Dense(DenseSpec { inputs: 5, outputs: 3, activation: Activation::Relu });
        assert_eq!(dense.multiply_adds(), 15);
        // 4 filters of 1×3×3 at each of 16×16 places
        let conv = LayerSpec::Conv2d(Conv2dSpec::square([1, 16, 16], 4, 3, 1, 1, Activation::Relu, true));
        assert_eq!(conv.multiply_adds(), 16 * 16 * 4 * 9);
        // stride 2, no padding: 7×7 places; 2 groups of 3 input channels each
        let grouped = LayerSpec::Conv2d(Conv2dSpec { groups: 2, ..Conv2dSpec::square([6, 15, 15], 4, 3, 2, 0, Activation::Relu, false) });
        assert_eq!(grouped.multiply_adds(), 7 * 7 * 4 * 3 * 9);
        let pool = LayerSpec::MaxPool2d(Pool2dSpec::square([4, 16, 16], 2, 2, 0));
        assert_eq!(pool.multiply_adds(), 0);
    }
}
