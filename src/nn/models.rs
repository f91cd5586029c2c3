//! Built-in architectures, exactly torchvision's definitions and module paths, so their
//! pretrained state_dicts load under their own names (`conv1.weight`, `bn1.running_mean`,
//! `layer2.0.downsample.0.weight`, `fc.weight`, `features.3.conv.1.0.weight`,
//! `classifier.1.weight`): `resnet18`, `resnet34`, `resnet50` (torchvision's `models/resnet.py`,
//! the v1.5 bottleneck with its stride on the 3×3) and `mobilenet_v2` (`models/mobilenetv2.py`:
//! inverted residuals with depthwise 3×3 convolutions and ReLU6, the classifier
//! `Sequential(Dropout(0.2), Linear)`).
//!
//! A model is a trunk ([`Arch::trunk`]) and a head at the model's head module
//! ([`Arch::head`]): fine-tuning swaps that head for one of the task's size.
//!
//! ```
//! use headswap::nn::models::Arch;
//! let trunk = Arch::ResNet18.trunk(3, 64, 64)?;
//! let names = &trunk.names;
//! assert_eq!(names[0].as_deref(), Some("conv1"));
//! assert!(names.iter().flatten().any(|n| n == "layer2.0.downsample.1"));
//! assert_eq!(Arch::ResNet18.features(), 512);
//! # Ok::<(), headswap::Error>(())
//! ```

use super::{CnnBuilder, Head, Trunk};
use crate::error::{Error, Result};
use crate::kernels::Activation::{Identity, Relu, Relu6};

/// A built-in architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    ResNet18,
    ResNet34,
    ResNet50,
    MobileNetV2,
}

/// torchvision's ResNet block kinds.
#[derive(Clone, Copy)]
enum Block {
    /// Two 3×3 convolutions (ResNet-18/34), expansion 1.
    Basic,
    /// 1×1, 3×3 (with the stride), 1×1 ×4 (ResNet-50), expansion 4.
    Bottleneck,
}

impl Arch {
    /// Every built-in architecture.
    pub const ALL: [Arch; 4] = [Arch::ResNet18, Arch::ResNet34, Arch::ResNet50, Arch::MobileNetV2];

    /// torchvision's name: `resnet18`, `resnet34`, `resnet50`.
    pub fn name(self) -> &'static str {
        match self {
            Arch::ResNet18 => "resnet18",
            Arch::ResNet34 => "resnet34",
            Arch::ResNet50 => "resnet50",
            Arch::MobileNetV2 => "mobilenet_v2",
        }
    }

    /// The architecture of a torchvision name.
    pub fn parse(name: &str) -> Option<Arch> {
        Arch::ALL.into_iter().find(|a| a.name() == name)
    }

    /// Features the trunk gives the head (torchvision's `fc.in_features`).
    pub fn features(self) -> usize {
        match self {
            Arch::ResNet18 | Arch::ResNet34 => 512,
            Arch::ResNet50 => 2048,
            Arch::MobileNetV2 => 1280,
        }
    }

    /// The module path of the model's classifier: `fc`, or MobileNetV2's `classifier`
    /// (`Sequential(Dropout(0.2), Linear)`, the Linear at `classifier.1`).
    pub fn head_module(self) -> &'static str {
        match self {
            Arch::MobileNetV2 => "classifier",
            _ => "fc",
        }
    }

    /// A head of `head`'s kind and size at the model's head module, what torchvision's
    /// pretrained classifier is replaced with (MobileNetV2's with its dropout of 0.2 in front).
    pub fn head(self, head: Head) -> Head {
        match self {
            Arch::MobileNetV2 => head.dropout(0.2).module(self.head_module()),
            _ => head.module(self.head_module()),
        }
    }

    /// The trunk for `[channels, height, width]` inputs (ImageNet's is 3×224×224; anything from
    /// 32×32 up goes through every stride), every layer under its torchvision module path.
    pub fn trunk(self, channels: usize, height: usize, width: usize) -> Result<Trunk> {
        if channels == 0 || height < 32 || width < 32 {
            return Err(Error::invalid(format!(
                "{} takes images of at least 32×32 (its five stride-2 stages leave 1×1), got {channels}×{height}×{width}",
                self.name()
            )));
        }
        let (block, counts) = match self {
            Arch::ResNet18 => (Block::Basic, [2, 2, 2, 2]),
            Arch::ResNet34 => (Block::Basic, [3, 4, 6, 3]),
            Arch::ResNet50 => (Block::Bottleneck, [3, 4, 6, 3]),
            Arch::MobileNetV2 => return mobilenet_v2(channels, height, width),
        };
        let mut b = CnnBuilder::new(channels, height, width)
            .conv_bias(false)
            .conv(64, 7, 2, 3, Identity)
            .name("conv1")
            .batch_norm(Relu)
            .name("bn1")
            .max_pool_padded(3, 2, 1)
            .name("maxpool");
        let mut inplanes = 64;
        for (stage, (&count, planes)) in counts.iter().zip([64, 128, 256, 512]).enumerate() {
            let stride = if stage == 0 { 1 } else { 2 };
            b = b.scope(&format!("layer{}", stage + 1), |mut b| {
                for i in 0..count {
                    let s = if i == 0 { stride } else { 1 };
                    b = b.scope(&i.to_string(), |b| resnet_block(b, block, inplanes, planes, s));
                    inplanes = planes * block.expansion();
                }
                b
            });
        }
        b.global_avg_pool().name("avgpool").build_graph()
    }
}

impl Block {
    fn expansion(self) -> usize {
        match self {
            Block::Basic => 1,
            Block::Bottleneck => 4,
        }
    }
}

/// One torchvision block: `relu(bn(conv(…)) + identity)`, the identity a projection
/// (`downsample = Sequential(conv1x1(stride), BatchNorm2d)`) where the shape changes.
fn resnet_block(b: CnnBuilder, block: Block, inplanes: usize, planes: usize, stride: usize) -> CnnBuilder {
    let out = planes * block.expansion();
    let body = move |b: CnnBuilder| match block {
        Block::Basic => b
            .conv(planes, 3, stride, 1, Identity)
            .name("conv1")
            .batch_norm(Relu)
            .name("bn1")
            .conv(planes, 3, 1, 1, Identity)
            .name("conv2")
            .batch_norm(Identity)
            .name("bn2"),
        Block::Bottleneck => b
            .conv(planes, 1, 1, 0, Identity)
            .name("conv1")
            .batch_norm(Relu)
            .name("bn1")
            .conv(planes, 3, stride, 1, Identity)
            .name("conv2")
            .batch_norm(Relu)
            .name("bn2")
            .conv(out, 1, 1, 0, Identity)
            .name("conv3")
            .batch_norm(Identity)
            .name("bn3"),
    };
    if stride != 1 || inplanes != out {
        b.residual_with(body, move |s| s.conv(out, 1, stride, 0, Identity).name("0").batch_norm(Identity).name("1"), Relu)
    } else {
        b.residual(body, Relu)
    }
}

/// torchvision's `mobilenet_v2` (width 1.0): `features.0` a 3×3/2 convolution to 32 channels,
/// BatchNorm, ReLU6; 17 inverted residuals `features.1`–`features.17` (expansion `t`, out
/// channels `c`, repeats `n`, first stride `s`); `features.18` a 1×1 convolution to 1280, BN,
/// ReLU6; then global average pooling (its `adaptive_avg_pool2d`, no module).
fn mobilenet_v2(channels: usize, height: usize, width: usize) -> Result<Trunk> {
    const SETTING: [(usize, usize, usize, usize); 7] =
        [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)];
    let mut b = CnnBuilder::new(channels, height, width)
        .conv_bias(false)
        .scope("features", |b| b.scope("0", |b| b.conv(32, 3, 2, 1, Identity).name("0").batch_norm(Relu6).name("1")));
    let mut inp = 32;
    let mut index = 1;
    for (t, c, n, s) in SETTING {
        for i in 0..n {
            let stride = if i == 0 { s } else { 1 };
            b = b.scope("features", |b| b.scope(&index.to_string(), |b| inverted_residual(b, inp, c, stride, t)));
            inp = c;
            index += 1;
        }
    }
    b.scope("features", |b| b.scope(&index.to_string(), |b| b.conv(1280, 1, 1, 0, Identity).name("0").batch_norm(Relu6).name("1")))
        .global_avg_pool()
        .build_graph()
}

/// torchvision's `InvertedResidual`: `conv = Sequential(1×1 expansion (Conv2dNormActivation,
/// when t ≠ 1), depthwise 3×3 (Conv2dNormActivation), 1×1 projection, BatchNorm)`, added to the
/// input (no activation after) where the stride is 1 and the channels stay.
fn inverted_residual(b: CnnBuilder, inp: usize, oup: usize, stride: usize, t: usize) -> CnnBuilder {
    let hidden = inp * t;
    let body = move |b: CnnBuilder| {
        b.scope("conv", |b| {
            let (b, next) = if t != 1 {
                (b.scope("0", |b| b.conv(hidden, 1, 1, 0, Identity).name("0").batch_norm(Relu6).name("1")), 1)
            } else {
                (b, 0)
            };
            b.scope(&next.to_string(), |b| b.depthwise(3, stride, 1, Identity).name("0").batch_norm(Relu6).name("1"))
                .conv(oup, 1, 1, 0, Identity)
                .name(&(next + 1).to_string())
                .batch_norm(Identity)
                .name(&(next + 2).to_string())
        })
    };
    if stride == 1 && inp == oup { b.residual(body, Identity) } else { body(b) }
}
