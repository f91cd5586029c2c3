#!/usr/bin/env python3
"""Writes tests/fixtures/torch_multitask_loss.safetensors: what PyTorch itself computes for the
losses of a multi-task network's heads (issue 14), for tests/kernel_loss.rs to compare the
float64 reference and the GPU kernels against without Python:

    python3 scripts/multitask_loss_fixture.py tests/fixtures/torch_multitask_loss.safetensors

* reg.pred, reg.target [7, 3]: predictions in [-3, 3) and targets in [-2, 2), about a third of
  the targets NaN (unknown), column 2 of row 0 included; big.pred, big.target [5, 3]: predictions
  of ±1e4 (and ±9999.5), targets in [-2, 2), some NaN.
* <case>.<loss>.<reduction>.loss [1] and .grad [m, k] for loss in mse, l1, huber (delta 1),
  huber075 (delta 0.75), huber2 (delta 2) and reduction in mean, sum: torch.nn.functional's
  mse_loss / l1_loss / huber_loss over the KNOWN entries only (pred[mask], target[mask]),
  gradients w.r.t. the whole prediction by autograd (0 where the target is unknown).
* xent.logits [9, 5], xent.target [9] (classes as float64, -1 = no target, 3 of them):
  xent.<reduction>.loss and .grad, F.cross_entropy(ignore_index=-1).

Everything in float64 from inputs that are exact in f32. Needs torch, numpy and safetensors.
"""
import sys

import torch
import torch.nn.functional as F
from safetensors.numpy import save_file


def f32(t):
    return t.to(torch.float32).to(torch.float64)


LOSSES = {
    "mse": lambda p, y, r: F.mse_loss(p, y, reduction=r),
    "l1": lambda p, y, r: F.l1_loss(p, y, reduction=r),
    "huber": lambda p, y, r: F.huber_loss(p, y, reduction=r, delta=1.0),
    "huber075": lambda p, y, r: F.huber_loss(p, y, reduction=r, delta=0.75),
    "huber2": lambda p, y, r: F.huber_loss(p, y, reduction=r, delta=2.0),
}


def regression(out, case, pred, target):
    out[f"{case}.pred"] = pred.numpy()
    out[f"{case}.target"] = target.numpy()
    mask = ~torch.isnan(target)
    for name, f in LOSSES.items():
        for reduction in ("mean", "sum"):
            p = pred.clone().requires_grad_(True)
            loss = f(p[mask], target[mask], reduction)
            (g,) = torch.autograd.grad(loss, p)
            out[f"{case}.{name}.{reduction}.loss"] = loss.detach().reshape(1).numpy()
            out[f"{case}.{name}.{reduction}.grad"] = g.numpy()


def main(path):
    gen = torch.Generator().manual_seed(14)
    out = {}
    pred = f32(torch.rand(7, 3, generator=gen, dtype=torch.float64) * 6 - 3)
    target = f32(torch.rand(7, 3, generator=gen, dtype=torch.float64) * 4 - 2)
    target[torch.rand(7, 3, generator=gen) < 0.33] = float("nan")
    target[0, 2] = float("nan")
    regression(out, "reg", pred, target)

    signs = torch.where(torch.rand(5, 3, generator=gen) < 0.5, -1.0, 1.0).to(torch.float64)
    big = signs * torch.tensor([1e4, 9999.5, 1e4], dtype=torch.float64)
    big_target = f32(torch.rand(5, 3, generator=gen, dtype=torch.float64) * 4 - 2)
    big_target[1, 0] = float("nan")
    big_target[3, 2] = float("nan")
    regression(out, "big", big, big_target)

    logits = f32(torch.rand(9, 5, generator=gen, dtype=torch.float64) * 8 - 4)
    classes = torch.randint(0, 5, (9,), generator=gen)
    classes[1] = -1
    classes[4] = -1
    classes[8] = -1
    out["xent.logits"] = logits.numpy()
    out["xent.target"] = classes.to(torch.float64).numpy()
    for reduction in ("mean", "sum"):
        x = logits.clone().requires_grad_(True)
        loss = F.cross_entropy(x, classes, ignore_index=-1, reduction=reduction)
        (g,) = torch.autograd.grad(loss, x)
        out[f"xent.{reduction}.loss"] = loss.detach().reshape(1).numpy()
        out[f"xent.{reduction}.grad"] = g.numpy()
    save_file(out, path)


if __name__ == "__main__":
    main(sys.argv[1])
