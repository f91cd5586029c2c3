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
/// `[out_channels, in_channels, kernel, kernel]` (PyTorch's `nn.Conv2d`), zero padding.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Conv2dSpec {
    pub in_channels: usize,
    pub height: usize,
    pub width: usize,
    pub out_channels: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub activation: Activation,
}

/// A 2-D pooling window over `[channels, height, width]` inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool2dSpec {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
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
}

impl From<DenseSpec> for LayerSpec {
    fn from(d: DenseSpec) -> Self {
        LayerSpec::Dense(d)
    }
}

impl Conv2dSpec {
    /// The kernel library's shape for a batch of `n`.
    pub fn shape(&self, n: usize) -> Conv2dShape {
        Conv2dShape::new(n, self.in_channels, self.height, self.width, self.out_channels, self.kernel, self.stride, self.padding)
    }
    pub fn out_hw(&self) -> (usize, usize) {
        self.shape(1).out_hw()
    }
}

impl Pool2dSpec {
    pub fn shape(&self, n: usize) -> Pool2dShape {
        Pool2dShape::new(n, self.channels, self.height, self.width, self.kernel, self.stride, self.padding)
    }
    pub fn out_hw(&self) -> (usize, usize) {
        self.shape(1).out_hw()
    }
}

impl LayerSpec {
    /// Input features per example (flattened).
    pub fn inputs(&self) -> usize {
        match *self {
            LayerSpec::Dense(d) => d.inputs,
            LayerSpec::Conv2d(c) => c.in_channels * c.height * c.width,
            LayerSpec::MaxPool2d(p) | LayerSpec::AvgPool2d(p) => p.channels * p.height * p.width,
            LayerSpec::GlobalAvgPool { channels, height, width } => channels * height * width,
        }
    }

    /// Output features per example (flattened).
    pub fn outputs(&self) -> usize {
        match self.out_chw() {
            Some([c, h, w]) => c * h * w,
            None => match *self {
                LayerSpec::Dense(d) => d.outputs,
                LayerSpec::GlobalAvgPool { channels, .. } => channels,
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
            _ => None,
        }
    }

    /// The activation applied to the output (identity for pooling).
    pub fn activation(&self) -> Activation {
        match *self {
            LayerSpec::Dense(d) => d.activation,
            LayerSpec::Conv2d(c) => c.activation,
            _ => Activation::Identity,
        }
    }

    /// The weight's shape (`None` for layers without parameters).
    pub fn weight_shape(&self) -> Option<Vec<usize>> {
        match *self {
            LayerSpec::Dense(d) => Some(vec![d.outputs, d.inputs]),
            LayerSpec::Conv2d(c) => Some(vec![c.out_channels, c.in_channels, c.kernel, c.kernel]),
            _ => None,
        }
    }

    /// Bias length (0 without parameters).
    pub fn bias_len(&self) -> usize {
        match *self {
            LayerSpec::Dense(d) => d.outputs,
            LayerSpec::Conv2d(c) => c.out_channels,
            _ => 0,
        }
    }

    pub fn has_params(&self) -> bool {
        self.weight_shape().is_some()
    }

    /// Whether the layer keeps a spatial `[C, H, W]` output (a dense layer after it flattens).
    pub fn is_spatial(&self) -> bool {
        self.out_chw().is_some()
    }

    /// (fan_in, fan_out) as PyTorch computes them for initialisation.
    pub fn fans(&self) -> (usize, usize) {
        match *self {
            LayerSpec::Dense(d) => (d.inputs, d.outputs),
            LayerSpec::Conv2d(c) => (c.in_channels * c.kernel * c.kernel, c.out_channels * c.kernel * c.kernel),
            _ => (0, 0),
        }
    }

    /// A short description for reports.
    pub fn describe(&self) -> String {
        match *self {
            LayerSpec::Dense(d) => format!("dense {}→{} {}", d.inputs, d.outputs, d.activation.name()),
            LayerSpec::Conv2d(c) => {
                let [o, h, w] = self.out_chw().unwrap_or([0; 3]);
                format!(
                    "conv2d {}×{}×{} → {o}×{h}×{w} (kernel {}, stride {}, padding {}) {}",
                    c.in_channels,
                    c.height,
                    c.width,
                    c.kernel,
                    c.stride,
                    c.padding,
                    c.activation.name()
                )
            }
            LayerSpec::MaxPool2d(p) | LayerSpec::AvgPool2d(p) => {
                let kind = if matches!(self, LayerSpec::MaxPool2d(_)) { "max_pool2d" } else { "avg_pool2d" };
                let (h, w) = p.out_hw();
                format!(
                    "{kind} {}×{}×{} → {}×{h}×{w} (kernel {}, stride {})",
                    p.channels, p.height, p.width, p.channels, p.kernel, p.stride
                )
            }
            LayerSpec::GlobalAvgPool { channels, height, width } => format!("global_avg_pool {channels}×{height}×{width} → {channels}"),
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
            _ => Ok(()),
        }
    }
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
}

impl CnnBuilder {
    pub fn new(channels: usize, height: usize, width: usize) -> CnnBuilder {
        CnnBuilder { shape: [channels, height, width], flat: None, layers: Vec::new() }
    }

    fn push(mut self, l: LayerSpec) -> CnnBuilder {
        if let Some([c, h, w]) = l.out_chw() {
            self.shape = [c, h, w];
        } else {
            self.flat = Some(l.outputs());
        }
        self.layers.push(l);
        self
    }

    /// A convolution with `out_channels` filters of `kernel`×`kernel`.
    pub fn conv(self, out_channels: usize, kernel: usize, stride: usize, padding: usize, activation: Activation) -> CnnBuilder {
        let [c, h, w] = self.shape;
        self.push(LayerSpec::Conv2d(Conv2dSpec { in_channels: c, height: h, width: w, out_channels, kernel, stride, padding, activation }))
    }

    pub fn max_pool(self, kernel: usize, stride: usize) -> CnnBuilder {
        let [c, h, w] = self.shape;
        self.push(LayerSpec::MaxPool2d(Pool2dSpec { channels: c, height: h, width: w, kernel, stride, padding: 0 }))
    }

    pub fn avg_pool(self, kernel: usize, stride: usize) -> CnnBuilder {
        let [c, h, w] = self.shape;
        self.push(LayerSpec::AvgPool2d(Pool2dSpec { channels: c, height: h, width: w, kernel, stride, padding: 0 }))
    }

    pub fn global_avg_pool(self) -> CnnBuilder {
        let [c, h, w] = self.shape;
        self.push(LayerSpec::GlobalAvgPool { channels: c, height: h, width: w })
    }

    /// A dense layer over the flattened output so far.
    pub fn dense(self, outputs: usize, activation: Activation) -> CnnBuilder {
        let inputs = self.flat.unwrap_or(self.shape.iter().product());
        self.push(LayerSpec::Dense(DenseSpec { inputs, outputs, activation }))
    }

    /// The layers, each validated.
    pub fn build(self) -> Result<Vec<LayerSpec>> {
        for l in &self.layers {
            l.validate()?;
        }
        if self
            .layers
            .iter()
            .skip_while(|l| l.is_spatial() || matches!(l, LayerSpec::GlobalAvgPool { .. }))
            .any(|l| !matches!(l, LayerSpec::Dense(_)))
        {
            return Err(Error::invalid("convolution and pooling layers must come before the dense layers"));
        }
        Ok(self.layers)
    }
}
