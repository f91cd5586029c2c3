//! Built-in architectures, exactly torchvision's definitions and module paths, so their
//! pretrained state_dicts load under their own names (`conv1.weight`, `bn1.running_mean`,
//! `layer2.0.downsample.0.weight`, `fc.weight`): `resnet18`, `resnet34`, `resnet50`
//! (torchvision's `models/resnet.py`, the v1.5 bottleneck with its stride on the 3×3).
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
use crate::kernels::Activation::{Identity, Relu};

/// A built-in architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    ResNet18,
    ResNet34,
    ResNet50,
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
    pub const ALL: [Arch; 3] = [Arch::ResNet18, Arch::ResNet34, Arch::ResNet50];

    /// torchvision's name: `resnet18`, `resnet34`, `resnet50`.
    pub fn name(self) -> &'static str {
        match self {
            Arch::ResNet18 => "resnet18",
            Arch::ResNet34 => "resnet34",
            Arch::ResNet50 => "resnet50",
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
        }
    }

    /// The module path of the model's classifier (`fc`).
    pub fn head_module(self) -> &'static str {
        "fc"
    }

    /// A head of `head`'s kind and size at the model's head module, what torchvision's
    /// pretrained classifier is replaced with.
    pub fn head(self, head: Head) -> Head {
        head.module(self.head_module())
    }

    /// The trunk for `[channels, height, width]` inputs (ImageNet's is 3×224×224; anything from
    /// 32×32 up goes through every stride), every layer under its torchvision module path.
    pub fn trunk(self, channels: usize, height: usize, width: usize) -> Result<Trunk> {
        let (block, counts) = match self {
            Arch::ResNet18 => (Block::Basic, [2, 2, 2, 2]),
            Arch::ResNet34 => (Block::Basic, [3, 4, 6, 3]),
            Arch::ResNet50 => (Block::Bottleneck, [3, 4, 6, 3]),
        };
        if channels == 0 || height < 32 || width < 32 {
            return Err(Error::invalid(format!(
                "{} takes images of at least 32×32 (its five stride-2 stages leave 1×1), got {channels}×{height}×{width}",
                self.name()
            )));
        }
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
