#!/usr/bin/env python3
"""Writes tests/fixtures/module-paths/: a small residual network written the way torchvision writes
ResNet (module paths conv1, layer1.0.conv1, layer1.1.downsample.0, fc), its state_dict, an input
batch and PyTorch's logits for it. tests/module_paths.rs builds the same network with
CnnBuilder::name/scope and Head::module, loads the state_dict under PyTorch's own keys and
compares the logits. No BatchNorm (headswap's BatchNorm is issue 13); the convolutions once with
and once without bias (torchvision's).

    python3 scripts/module_paths_fixture.py      # needs torch and safetensors
"""
import os
import torch
from torch import nn
from safetensors.torch import save_file


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride=1, bias=True):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=bias)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=bias)
        self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=bias)) if stride != 1 or cin != cout else None

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.conv2(self.relu(self.conv1(x)))
        return self.relu(out + identity)


class TinyResNet(nn.Module):
    def __init__(self, classes=10, bias=True):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, 1, 1, bias=bias)
        self.relu = nn.ReLU()
        self.layer1 = nn.Sequential(BasicBlock(8, 8, bias=bias), BasicBlock(8, 16, stride=2, bias=bias))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, classes)

    def forward(self, x):
        x = self.layer1(self.relu(self.conv1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class Stem(nn.Module):
    """ResNet's stem (7×7/2 convolution without bias, ReLU, MaxPool2d(3, 2, 1)) and one block."""

    def __init__(self, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 7, 2, 3, bias=False)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = nn.Sequential(BasicBlock(8, 8, bias=False))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, classes)

    def forward(self, x):
        x = self.layer1(self.maxpool(self.relu(self.conv1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def main():
    torch.manual_seed(12)
    out = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "module-paths")
    os.makedirs(out, exist_ok=True)
    model = TinyResNet().eval()
    x = torch.randn(5, 3, 9, 9)
    with torch.no_grad():
        logits = model(x)
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(sd, os.path.join(out, "tiny_resnet.safetensors"), metadata={"format": "pt"})
    save_file({"input": x, "logits": logits}, os.path.join(out, "tiny_resnet_io.safetensors"))
    print("\n".join(sd))
    # torchvision's convolutions have no bias (a BatchNorm follows each): the same network so
    torch.manual_seed(13)
    model = TinyResNet(bias=False).eval()
    with torch.no_grad():
        logits = model(x)
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(sd, os.path.join(out, "tiny_resnet_nobias.safetensors"), metadata={"format": "pt"})
    save_file({"input": x, "logits": logits}, os.path.join(out, "tiny_resnet_nobias_io.safetensors"))
    # the stem: odd sizes, so the padded pooling windows reach past both edges
    torch.manual_seed(14)
    model = Stem().eval()
    x = torch.randn(4, 3, 19, 17)
    with torch.no_grad():
        logits = model(x)
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(sd, os.path.join(out, "stem.safetensors"), metadata={"format": "pt"})
    save_file({"input": x, "logits": logits}, os.path.join(out, "stem_io.safetensors"))


if __name__ == "__main__":
    main()
