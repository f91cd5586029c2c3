"""Writes torchvision models with random weights and PyTorch's outputs for tests/torchvision_pytorch.rs.

For each of resnet18, resnet34, resnet50, mobilenet_v2: the model built by torchvision itself
(weights=None, nothing downloaded), BatchNorm γ, β, running statistics and num_batches_tracked set
to seeded values that are not the defaults, saved as DIR/<arch>.pth (torch.save of the state_dict)
and DIR/<arch>.safetensors, and DIR/<arch>_io.safetensors: an input x [2, 3, H, W] and the
evaluation-mode logits [2, 1000] (float32 model, float64 copy for the logits' reference). Too big to
commit (resnet50 is ~100 MB); the test runs when HEADSWAP_TORCHVISION_DIR names DIR.

Run: python3 scripts/torchvision_check.py DIR
"""
import os
import sys

import torch
import torchvision
from safetensors.torch import save_file

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
torch.manual_seed(7)
for name, (h, w) in [("resnet18", (64, 57)), ("resnet34", (48, 48)), ("resnet50", (64, 64)), ("mobilenet_v2", (64, 71))]:
    model = getattr(torchvision.models, name)(weights=None)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(torch.rand(c) * 0.6 + 0.6)
                m.bias.copy_(torch.randn(c) * 0.1)
                m.running_mean.copy_(torch.randn(c) * 0.2)
                m.running_var.copy_(torch.rand(c) + 0.5)
                m.num_batches_tracked.fill_(1234)
    model.eval()
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    torch.save(sd, os.path.join(out, name + ".pth"))
    save_file(sd, os.path.join(out, name + ".safetensors"))
    x = torch.randn(2, 3, h, w)
    with torch.no_grad():
        logits = model.double()(x.double()).float()
    save_file({"x": x, "logits": logits}, os.path.join(out, name + "_io.safetensors"))
    print(name, tuple(x.shape), float(logits.abs().max()))
