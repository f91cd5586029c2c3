"""Fixtures for tests/batchnorm_layer.rs: a torchvision-style BasicBlock ResNet with BatchNorm.

Writes tests/fixtures/batchnorm/:
  tiny_resnet_bn.safetensors / .pth   its state_dict, torchvision's key layout (conv1, bn1,
                                      layer1.0.conv1, layer2.0.downsample.0/.1, fc), with γ, β and
                                      running statistics that are not the defaults, and
                                      num_batches_tracked = 7 (int64 scalars)
  tiny_resnet_bn_io.safetensors       x [6, 3, 13, 13], y (class indices, as f32), the evaluation-
                                      mode logits, and after ONE training-mode SGD step (lr 0.1, no
                                      momentum, mean cross-entropy over the batch): every
                                      parameter (`after.<key>`) and running statistic
                                      (`after.<bn>.running_mean/var`), num_batches_tracked 8.
Run: python3 scripts/batchnorm_fixture.py   (torch 2.x, safetensors)
"""
import os
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

torch.manual_seed(20261206)
torch.set_default_dtype(torch.float64)


class BasicBlock(nn.Module):
    # torchvision.models.resnet.BasicBlock
    def __init__(self, inp, out, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(inp, out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out, out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out)
        self.downsample = None
        if stride != 1 or inp != out:
            self.downsample = nn.Sequential(nn.Conv2d(inp, out, 1, stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)


class TinyResNet(nn.Module):
    def __init__(self, classes=5):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = nn.Sequential(BasicBlock(8, 8, 1))
        self.layer2 = nn.Sequential(BasicBlock(8, 16, 2))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


model = TinyResNet()
with torch.no_grad():
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.weight.copy_(torch.rand(c) * 1.5 + 0.25)
            m.bias.copy_(torch.randn(c) * 0.3)
            m.running_mean.copy_(torch.randn(c) * 0.4)
            m.running_var.copy_(torch.rand(c) * 2.0 + 0.3)
            m.num_batches_tracked.fill_(7)
model = model.float()

out = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "batchnorm")
os.makedirs(out, exist_ok=True)
sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
save_file(sd, os.path.join(out, "tiny_resnet_bn.safetensors"))
torch.save(sd, os.path.join(out, "tiny_resnet_bn.pth"))

x = torch.randn(6, 3, 13, 13, dtype=torch.float32)
y = torch.tensor([0, 3, 1, 4, 2, 3])
model.eval()
with torch.no_grad():
    logits = model(x)
io = {"x": x, "y": y.float(), "logits": logits}

model.train()
opt = torch.optim.SGD(model.parameters(), lr=0.1)
opt.zero_grad()
loss = F.cross_entropy(model(x), y)
loss.backward()
opt.step()
for k, v in model.state_dict().items():
    if k.endswith("num_batches_tracked"):
        assert int(v) == 8
        continue
    io["after." + k] = v.detach().clone().contiguous()
io["loss"] = loss.detach().reshape(1)
save_file(io, os.path.join(out, "tiny_resnet_bn_io.safetensors"))
print("wrote", out, "loss", float(loss))
