#!/usr/bin/env python3
"""Python side of headswap's checkpoint interop test (tests/checkpoint_python.rs).

    python3 scripts/checkpoint_interop.py read  FILE   # print FILE's contents as JSON
    python3 scripts/checkpoint_interop.py write FILE   # write the reference state_dict to FILE

`write` regenerates the committed fixture:
    python3 scripts/checkpoint_interop.py write tests/fixtures/torch_state_dict.safetensors

Needs `python3 -m pip install safetensors numpy` (no PyTorch: safetensors.numpy writes the same
format as safetensors.torch).
"""
import json
import struct
import sys

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

# Values that numpy and Rust compute identically (IEEE single/half arithmetic, direct rounding).
METADATA = {"format": "pt", "headswap.source": "safetensors.numpy"}


def reference_state_dict():
    return {
        "0.weight": np.arange(12, dtype=np.float32).reshape(3, 4) / np.float32(3) - np.float32(2),
        "0.bias": np.array([0.5, -1.25, 1.0], dtype=np.float32) / np.array([1, 1, 1000], dtype=np.float32),
        "2.weight": np.array([[0.1, -0.5, 2.0], [1000.0, -0.0, 65504.0]], dtype=np.float16),
        "2.bias": np.array([0.1, -3.5], dtype=np.float64),
    }


def bits(a):
    """The exact bit patterns, so NaN, -0.0 and rounding survive JSON."""
    width = {np.dtype(np.float32): np.uint32, np.dtype(np.float16): np.uint16, np.dtype(np.float64): np.uint64}
    return [int(b) for b in a.reshape(-1).view(width[a.dtype])]


def read(path):
    tensors = load_file(path)
    with safe_open(path, framework="np") as f:
        metadata = f.metadata()
        keys = list(f.keys())
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    order = sorted((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][0])
    assert sorted(keys) == sorted(tensors), (keys, list(tensors))
    out = {
        "metadata": metadata,
        "order": order,
        "tensors": {
            name: {"dtype": str(a.dtype), "shape": list(a.shape), "bits": bits(a)} for name, a in tensors.items()
        },
    }
    print(json.dumps(out))


def write(path):
    save_file(reference_state_dict(), path, metadata=METADATA)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("read", "write"):
        sys.exit(__doc__)
    {"read": read, "write": write}[sys.argv[1]](sys.argv[2])
