#!/usr/bin/env python3
"""Writes tests/fixtures/torch_conv.safetensors: what PyTorch itself computes for the grouped,
depthwise, rectangular and asymmetrically padded convolutions and the ceil_mode / rectangular /
padded poolings of issue 13, for tests/kernel_conv.rs to compare against without Python:

    python3 scripts/torch_conv_fixture.py tests/fixtures/torch_conv.safetensors

Every case <name> stores its geometry as <name>.geom (float64 holding integers):
* conv.<name>.geom = [N, C, H, W, O, KH, KW, SH, SW, top, bottom, left, right, groups, has_bias]:
  F.conv2d(F.pad(x, (left, right, top, bottom)), w, b, stride=(SH, SW), groups=groups) in
  float64 on f32-representable inputs x, w, b and an upstream gradient dy; y, and dx, dw, db of
  sum(y·dy) by autograd.
* max.<name>.geom / avg.<name>.geom = [N, C, H, W, KH, KW, SH, SW, PH, PW, ceil_mode]:
  F.max_pool2d(x, (KH, KW), (SH, SW), (PH, PW), ceil_mode=..., return_indices=True) giving y,
  idx (the flat index in the input plane) and dx; F.avg_pool2d(..., count_include_pad=True)
  giving y and dx.

Needs torch, numpy and safetensors. Everything is stored as F64 (headswap reads f32).
"""
import sys

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import save_file


def f32(t):
    """Values exactly representable in f32, held as float64."""
    return t.to(torch.float32).to(torch.float64)


def rand(gen, *shape):
    return f32(torch.rand(*shape, generator=gen, dtype=torch.float64) * 2 - 1)


def conv(out, gen, name, n, c, h, w, o, k, stride, pad, groups, bias):
    kh, kw = k
    sh, sw = stride
    top, bottom, left, right = pad
    x = rand(gen, n, c, h, w).requires_grad_(True)
    wt = rand(gen, o, c // groups, kh, kw).requires_grad_(True)
    b = rand(gen, o).requires_grad_(True) if bias else None
    y = F.conv2d(F.pad(x, (left, right, top, bottom)), wt, b, stride=(sh, sw), groups=groups)
    dy = rand(gen, *y.shape)
    grads = torch.autograd.grad((y * dy).sum(), [x, wt] + ([b] if bias else []))
    p = f"conv.{name}."
    out[p + "geom"] = np.array([n, c, h, w, o, kh, kw, sh, sw, top, bottom, left, right, groups, int(bias)], dtype=np.float64)
    out[p + "x"] = x.detach().numpy()
    out[p + "w"] = wt.detach().numpy()
    if bias:
        out[p + "b"] = b.detach().numpy()
        out[p + "db"] = grads[2].numpy()
    out[p + "dy"] = dy.numpy()
    out[p + "y"] = y.detach().numpy()
    out[p + "dx"] = grads[0].numpy()
    out[p + "dw"] = grads[1].numpy()


def pool(out, gen, name, n, c, h, w, k, stride, pad, ceil):
    kh, kw = k
    sh, sw = stride
    ph, pw = pad
    geom = np.array([n, c, h, w, kh, kw, sh, sw, ph, pw, int(ceil)], dtype=np.float64)
    x = rand(gen, n, c, h, w).requires_grad_(True)
    y, idx = F.max_pool2d(x, (kh, kw), (sh, sw), (ph, pw), ceil_mode=ceil, return_indices=True)
    dy = rand(gen, *y.shape)
    (dx,) = torch.autograd.grad((y * dy).sum(), [x])
    p = f"max.{name}."
    out[p + "geom"] = geom
    out[p + "x"] = x.detach().numpy()
    out[p + "dy"] = dy.numpy()
    out[p + "y"] = y.detach().numpy()
    out[p + "idx"] = idx.numpy().astype(np.float64)
    out[p + "dx"] = dx.numpy()
    y = F.avg_pool2d(x, (kh, kw), (sh, sw), (ph, pw), ceil_mode=ceil, count_include_pad=True)
    assert list(y.shape) == list(dy.shape)
    (dx,) = torch.autograd.grad((y * dy).sum(), [x])
    p = f"avg.{name}."
    out[p + "geom"] = geom
    out[p + "y"] = y.detach().numpy()
    out[p + "dx"] = dx.numpy()


def main(path):
    gen = torch.Generator().manual_seed(13)
    out = {}
    # torchvision mobilenet_v2: depthwise 3×3, groups = channels, stride 2 and 1, padding 1, no bias
    conv(out, gen, "mobilenet_dw_s2", 2, 8, 9, 7, 8, (3, 3), (2, 2), (1, 1, 1, 1), 8, False)
    conv(out, gen, "mobilenet_dw_s1", 1, 5, 7, 7, 5, (3, 3), (1, 1), (1, 1, 1, 1), 5, True)
    # a channel multiplier (groups = C, O = 2C) and a plain grouped one with a rectangular kernel
    conv(out, gen, "multiplier", 1, 3, 7, 6, 6, (3, 3), (1, 1), (0, 0, 0, 0), 3, True)
    conv(out, gen, "grouped_rect", 2, 6, 7, 9, 9, (3, 1), (1, 2), (1, 1, 0, 0), 3, True)
    # CREPE: F.pad(x, (0, 0, 254, 254)) then Conv2d(1, 1024, (512, 1), stride (4, 1)), scaled down
    conv(out, gen, "crepe", 2, 1, 33, 1, 4, (16, 1), (4, 1), (7, 8, 0, 0), 1, True)
    # an asymmetric F.pad on both axes before a 1×3 kernel
    conv(out, gen, "lopsided", 1, 2, 5, 7, 3, (1, 3), (1, 1), (2, 0, 0, 1), 1, False)
    # ResNet/GoogLeNet MaxPool2d(3, 2, ceil_mode=True), odd sizes; with padding; 2×2 on odd sizes
    pool(out, gen, "k3s2_ceil", 2, 3, 13, 11, (3, 3), (2, 2), (0, 0), True)
    pool(out, gen, "k3s2p1_ceil", 1, 2, 8, 7, (3, 3), (2, 2), (1, 1), True)
    pool(out, gen, "k2s2_ceil", 1, 2, 7, 7, (2, 2), (2, 2), (0, 0), True)
    pool(out, gen, "k2s2p1_ceil", 1, 1, 7, 6, (2, 2), (2, 2), (1, 1), True)
    # CREPE's MaxPool2d((2, 1), (2, 1)) and a rectangular padded window
    pool(out, gen, "crepe", 2, 3, 33, 1, (2, 1), (2, 1), (0, 0), False)
    pool(out, gen, "rect", 1, 2, 9, 8, (3, 2), (2, 1), (1, 1), True)
    save_file(out, path)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/torch_conv.safetensors")
