#!/usr/bin/env python3
"""Writes tests/fixtures/torch_ops.safetensors: what PyTorch itself computes for the ops of
issue 13 that headswap implements at the kernel level, for tests/kernel_norm.rs and
tests/kernel_elementwise.rs to compare against without Python:

    python3 scripts/torch_ops_fixture.py tests/fixtures/torch_ops.safetensors

* act.x: inputs (the kinks −3, 0, 3, 6 and their neighbours, and random values); for each of
  relu6, silu, hardswish, hardsigmoid: act.<name>.y = f(x) and act.<name>.grad = f'(x) from
  torch.autograd (float64), i.e. PyTorch's own derivatives at the kinks.
* bn2d.* and bn1d.*: one BatchNorm step. Inputs x, gamma, beta, running_mean, running_var, dy
  (f32 values). torch.native_batch_norm in float64, training mode with momentum 0.1 and in
  inference mode, eps 1e-5: train.y, train.save_mean, train.save_invstd, train.running_mean,
  train.running_var (after the update), train.dx, train.dgamma, train.dbeta, and eval.y,
  eval.dx, eval.dgamma, eval.dbeta (gradients of sum(y·dy) by autograd);
  train.num_batches_tracked: nn.BatchNorm2d's counter after that one training step (int64).

Needs torch, numpy and safetensors. Outputs are stored as F64 (headswap reads them as f32).
"""
import sys

import numpy as np
import torch
from safetensors.numpy import save_file

EPS = 1e-5
MOMENTUM = 0.1


def f32(t):
    """Values exactly representable in f32, held as float64."""
    return t.to(torch.float32).to(torch.float64)


def activations(out, gen):
    kinks = torch.tensor([-6.5, -6.0, -3.5, -3.0, -2.5, -0.5, 0.0, 0.5, 2.5, 3.0, 3.5, 5.5, 6.0, 6.5], dtype=torch.float64)
    x = torch.cat([kinks, f32(torch.rand(50, generator=gen, dtype=torch.float64) * 16 - 8)])
    out["act.x"] = x.numpy()
    fns = {
        "relu6": torch.nn.functional.relu6,
        "silu": torch.nn.functional.silu,
        "hardswish": torch.nn.functional.hardswish,
        "hardsigmoid": torch.nn.functional.hardsigmoid,
    }
    for name, f in fns.items():
        xr = x.clone().requires_grad_(True)
        y = f(xr)
        (g,) = torch.autograd.grad(y.sum(), xr)
        out[f"act.{name}.y"] = y.detach().numpy()
        out[f"act.{name}.grad"] = g.numpy()


def batch_norm(out, prefix, shape, gen):
    c = shape[1]
    x = f32(torch.rand(shape, generator=gen, dtype=torch.float64) * 4 - 1)
    gamma = f32(torch.rand(c, generator=gen, dtype=torch.float64) + 0.5)
    beta = f32(torch.rand(c, generator=gen, dtype=torch.float64) * 2 - 1)
    running_mean = f32(torch.rand(c, generator=gen, dtype=torch.float64) * 2 - 1)
    running_var = f32(torch.rand(c, generator=gen, dtype=torch.float64) * 1.8 + 0.2)
    dy = f32(torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1)
    for name, v in [("x", x), ("gamma", gamma), ("beta", beta), ("running_mean", running_mean), ("running_var", running_var), ("dy", dy)]:
        out[f"{prefix}.{name}"] = v.to(torch.float32).numpy()
    for training in (True, False):
        mode = "train" if training else "eval"
        xr, gr, br = (t.clone().requires_grad_(True) for t in (x, gamma, beta))
        rm, rv = running_mean.clone(), running_var.clone()
        y, save_mean, save_invstd = torch.native_batch_norm(xr, gr, br, rm, rv, training, MOMENTUM, EPS)
        dx, dgamma, dbeta = torch.autograd.grad((y * dy).sum(), (xr, gr, br))
        out[f"{prefix}.{mode}.y"] = y.detach().numpy()
        out[f"{prefix}.{mode}.dx"] = dx.numpy()
        out[f"{prefix}.{mode}.dgamma"] = dgamma.numpy()
        out[f"{prefix}.{mode}.dbeta"] = dbeta.numpy()
        if training:
            out[f"{prefix}.train.save_mean"] = save_mean.numpy()
            out[f"{prefix}.train.save_invstd"] = save_invstd.numpy()
            out[f"{prefix}.train.running_mean"] = rm.numpy()
            out[f"{prefix}.train.running_var"] = rv.numpy()
    # the module's counter: one training-mode forward adds one
    module = torch.nn.BatchNorm2d(c) if len(shape) == 4 else torch.nn.BatchNorm1d(c)
    module.train()
    module(x.to(torch.float32))
    out[f"{prefix}.train.num_batches_tracked"] = module.num_batches_tracked.numpy().reshape(1)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    gen = torch.Generator().manual_seed(13)
    out = {}
    activations(out, gen)
    batch_norm(out, "bn2d", (4, 3, 3, 2), gen)
    batch_norm(out, "bn1d", (5, 4), gen)
    save_file({k: np.ascontiguousarray(v) for k, v in out.items()}, sys.argv[1], metadata={"torch": torch.__version__})


if __name__ == "__main__":
    main()
