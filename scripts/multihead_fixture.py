#!/usr/bin/env python3
"""Writes tests/fixtures/torch_multihead_train.safetensors: a short training run of a network of
three named heads on one trunk in PyTorch (float64), for tests/multihead.rs to compare headswap's
trainer against without Python (issue 14):

    python3 scripts/multihead_fixture.py tests/fixtures/torch_multihead_train.safetensors

The network: trunk Linear(5, 8), Tanh, Linear(8, 6), Tanh (state_dict keys 0.*, 2.*); heads
objects = Sequential(Linear(6, 4), Tanh, Linear(4, 3)) (labels: BCE with logits, pos_weight
[2, 0.5, 1.5], the mean over the known labels), scene = Linear(6, 4) (classes:
cross_entropy(ignore_index=-1), the mean over the rows with a class), distance = Linear(6, 2)
(regression: huber_loss(delta=0.5) over the known values, their mean), under heads.<name>.
The loss is 1.0·L_objects + 0.5·L_scene + 2.0·L_distance.

* x [10, 5]; y.objects [10, 3] (0/1, NaN unknown); y.scene [10] (classes as float64, -1 none);
  y.distance [10, 2] (NaN unknown): every batch has a known target for every head.
* init.<param>: the initial parameters (exact in f32); final.<param>: after 2 epochs of
  torch.optim.Adam(lr=0.01) over batches of 4 in order (4, 4, 2 rows; no shuffling);
  epoch_loss [2]: each epoch's mean batch loss.

With --uncertainty it writes tests/fixtures/torch_multihead_uncertainty.safetensors instead:
the same data and initial parameters, the loss Σ_t exp(−s_t)·w_t·L_t + s_t (uncertainty weighting,
Kendall et al. 2018) with learned log-variances s = nn.Parameter([0.2, −0.3, 0.1]) in their own
Adam param group (weight_decay 0); init.log_var and final.log_var [3] as well:

    python3 scripts/multihead_fixture.py --uncertainty tests/fixtures/torch_multihead_uncertainty.safetensors

Needs torch, numpy and safetensors.
"""
import sys

import torch
import torch.nn.functional as F
from safetensors.numpy import save_file

torch.manual_seed(14)
DT = torch.float64


def f32(t):
    return t.to(torch.float32).to(DT)


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.add_module("0", torch.nn.Linear(5, 8))
        self.add_module("1", torch.nn.Tanh())
        self.add_module("2", torch.nn.Linear(8, 6))
        self.add_module("3", torch.nn.Tanh())
        self.heads = torch.nn.ModuleDict({
            "objects": torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3)),
            "scene": torch.nn.Linear(6, 4),
            "distance": torch.nn.Linear(6, 2),
        })

    def forward(self, x):
        h = x
        for i in range(4):
            h = getattr(self, str(i))(h)
        return {name: head(h) for name, head in self.heads.items()}


POS_WEIGHT = torch.tensor([2.0, 0.5, 1.5], dtype=DT)
WEIGHTS = {"objects": 1.0, "scene": 0.5, "distance": 2.0}


HEADS = ["objects", "scene", "distance"]
LOG_VAR_INIT = [0.2, -0.3, 0.1]


def head_losses(out, y):
    obj, known = y["objects"], ~torch.isnan(y["objects"])
    l_obj = F.binary_cross_entropy_with_logits(out["objects"], torch.where(known, obj, 0.0), pos_weight=POS_WEIGHT,
                                               reduction="none")
    l_obj = (l_obj * known).sum() / known.sum().clamp(min=1)
    l_scene = F.cross_entropy(out["scene"], y["scene"], ignore_index=-1)
    dist, dk = y["distance"], ~torch.isnan(y["distance"])
    l_dist = F.huber_loss(out["distance"][dk], dist[dk], delta=0.5)
    return {"objects": l_obj, "scene": l_scene, "distance": l_dist}


def loss(out, y, log_var=None):
    ls = head_losses(out, y)
    if log_var is None:
        return WEIGHTS["objects"] * ls["objects"] + WEIGHTS["scene"] * ls["scene"] + WEIGHTS["distance"] * ls["distance"]
    return sum(torch.exp(-log_var[t]) * WEIGHTS[h] * ls[h] + log_var[t] for t, h in enumerate(HEADS))


def main(path, uncertainty=False):
    n = 10
    net = Net().to(DT)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(f32(p))
    x = f32(torch.rand(n, 5, dtype=DT) * 3 - 1.5)
    objects = (torch.rand(n, 3, dtype=DT) < 0.5).to(DT)
    objects[torch.rand(n, 3) < 0.2] = float("nan")
    scene = torch.randint(0, 4, (n,))
    scene[torch.tensor([1, 5])] = -1
    distance = f32(torch.rand(n, 2, dtype=DT) * 4 - 2)
    distance[torch.rand(n, 2) < 0.2] = float("nan")
    # every batch (rows 0-3, 4-7, 8-9) knows something of every head
    objects[0, 0], objects[4, 1], objects[8, 2] = 1.0, 0.0, 1.0
    scene[8] = 2
    distance[0, 0], distance[4, 1], distance[9, 0] = 0.25, -1.5, 1.0
    y = {"objects": objects, "scene": scene, "distance": distance}
    out = {"x": x}
    out.update({f"y.{k}": v.to(DT) for k, v in y.items()})
    out.update({f"init.{k}": v.detach().clone() for k, v in net.state_dict().items()})
    log_var = None
    if uncertainty:
        log_var = torch.nn.Parameter(torch.tensor(LOG_VAR_INIT, dtype=DT))
        out["init.log_var"] = log_var.detach().clone()
        opt = torch.optim.Adam([{"params": net.parameters()}, {"params": [log_var], "weight_decay": 0.0}], lr=0.01)
    else:
        opt = torch.optim.Adam(net.parameters(), lr=0.01)
    epoch_loss = []
    for _ in range(2):
        total, steps = 0.0, 0
        for s in range(0, n, 4):
            batch = {k: v[s:s + 4] for k, v in y.items()}
            opt.zero_grad()
            l = loss(net(x[s:s + 4]), batch, log_var)
            l.backward()
            opt.step()
            total, steps = total + l.item(), steps + 1
        epoch_loss.append(total / steps)
    out.update({f"final.{k}": v.detach().clone() for k, v in net.state_dict().items()})
    out["epoch_loss"] = torch.tensor(epoch_loss, dtype=DT)
    if uncertainty:
        out["final.log_var"] = log_var.detach().clone()
    save_file({k: v.contiguous().numpy() for k, v in out.items()}, path)


if __name__ == "__main__":
    if sys.argv[1] == "--uncertainty":
        main(sys.argv[2], uncertainty=True)
    else:
        main(sys.argv[1])
