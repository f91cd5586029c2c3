#!/usr/bin/env python3
"""C2's PyTorch side (issue 13): torchvision's ResNet-18 on the CPU with 2 threads, beside
`headswap bench --only c2` on the same machine.

  * features at 224×224 and 64×64: resnet18(weights=None) with fc = Identity, eval(), under
    no_grad, batch 32: images/s of the trunk's forward pass (BatchNorm with running statistics);
  * a fine-tune step at 64×64: train() (BatchNorm with the batch's statistics), every layer
    trainable, a 512→10 fc, softmax cross-entropy, SGD momentum 0.9 lr 0.01, batch 32:
    images/s of forward + backward + update.

BatchNorm gets random γ, β and running statistics (as the headswap side does; the work does not
depend on them). Each figure is the median over timed repetitions after warm-up ones; every
repetition's rate is printed too, so the spread shows. `--json` prints one JSON object.

    python3 scripts/c2_pytorch.py [--reps N] [--warmup N] [--threads 2] [--json]
"""

import argparse
import json
import statistics
import time

import torch
import torchvision


def model(classes=10, seed=0):
    torch.manual_seed(seed)
    m = torchvision.models.resnet18(weights=None, num_classes=classes)
    g = torch.Generator().manual_seed(seed + 1)
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            c = mod.num_features
            with torch.no_grad():
                mod.weight.copy_(torch.empty(c).uniform_(0.6, 1.2, generator=g))
                mod.bias.copy_(torch.empty(c).uniform_(-0.1, 0.1, generator=g))
                mod.running_mean.copy_(torch.empty(c).uniform_(-0.2, 0.2, generator=g))
                mod.running_var.copy_(torch.empty(c).uniform_(0.5, 1.5, generator=g))
    return m


def timed(step, batch, warmup, reps):
    for _ in range(warmup):
        step()
    rates = []
    for _ in range(reps):
        t0 = time.perf_counter()
        step()
        rates.append(batch / (time.perf_counter() - t0))
    return {"images_per_sec": statistics.median(rates), "rep_images_per_sec": rates}


def features(side, batch, warmup, reps):
    m = model()
    m.fc = torch.nn.Identity()
    m.eval()
    x = torch.empty(batch, 3, side, side).uniform_(-2.0, 2.0, generator=torch.Generator().manual_seed(side))

    def step():
        with torch.no_grad():
            f = m(x)
        assert f.shape == (batch, 512)

    return timed(step, batch, warmup, reps)


def finetune(side, batch, warmup, reps):
    m = model()
    m.train()
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
    g = torch.Generator().manual_seed(side + 1)
    x = torch.empty(batch, 3, side, side).uniform_(-2.0, 2.0, generator=g)
    y = torch.randint(0, 10, (batch,), generator=g)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(m(x), y)
        loss.backward()
        opt.step()

    return timed(step, batch, warmup, reps)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    rows = {
        "C2-features-224": features(224, a.batch, a.warmup, a.reps),
        "C2-features-64": features(64, a.batch, a.warmup, a.reps),
        "C2-finetune-64": finetune(64, a.batch, a.warmup, a.reps),
    }
    out = {
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "threads": torch.get_num_threads(),
        "batch": a.batch,
        "warmup": a.warmup,
        "reps": a.reps,
        "rows": rows,
    }
    if a.json:
        print(json.dumps(out, indent=2))
        return
    print(f"PyTorch {out['torch']}, torchvision {out['torchvision']}, CPU, {out['threads']} threads, batch {a.batch}, "
          f"median of {a.reps} reps after {a.warmup} warm-up")
    for k, r in rows.items():
        every = " ".join(f"{v:.1f}" for v in r["rep_images_per_sec"])
        print(f"{k:<16} {r['images_per_sec']:9.1f} img/s   (every rep: {every})")


if __name__ == "__main__":
    main()
