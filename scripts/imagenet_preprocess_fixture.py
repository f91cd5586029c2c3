#!/usr/bin/env python3
"""Writes tests/fixtures/imagenet_preprocess/: a few small real photographs and what torchvision's
ImageNet evaluation transform makes of them, for the unit test `imagenet_preprocessing_is_torchvisions` in src/data/image_folder.rs
(which needs no Python).

    python3 scripts/imagenet_preprocess_fixture.py SOURCE.jpg [OUT_DIR]

SOURCE.jpg is any photograph; the committed images come from the Rust documentation's
embedded-book/assets/f3.jpg (the STM32F3DISCOVERY board, 720×477; MIT/Apache-2.0, like the Rust
docs), shipped with every rustup toolchain under share/doc/rust/html/. The script saves three PNG
crops of it at odd sizes and aspect ratios (landscape.png 97×61, portrait.png 45×83 and
square.png 50×50, each downscaled from a different region with PIL's LANCZOS), so that the
pictures are real but the files small; PNG so that no two JPEG decoders can disagree.

For each image and each output size W×H in (32×32, 40×24) it stores under "<image>_<W>x<H>" the
[3, H, W] float32 tensor of

    transforms.Compose([
        transforms.Resize(round(max(W, H) * 256 / 224)),
        transforms.CenterCrop((H, W)),
        transforms.ToTensor(),
        transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ])(Image.open(path).convert("RGB"))

which for W = H = 224 is torchvision's own Resize(256) + CenterCrop(224). Needs torchvision,
Pillow, numpy and safetensors.
"""
import os
import sys

import numpy as np
from PIL import Image
from safetensors.numpy import save_file
from torchvision import transforms

SIZES = [(32, 32), (40, 24)]
# (name, crop box in the source (left, top, right, bottom), saved size (w, h))
CROPS = [
    ("landscape", (0, 0, 720, 453), (97, 61)),
    ("portrait", (300, 40, 520, 446), (45, 83)),
    ("square", (150, 100, 450, 400), (50, 50)),
]


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    source = Image.open(sys.argv[1]).convert("RGB")
    out = sys.argv[2] if len(sys.argv) > 2 else "tests/fixtures/imagenet_preprocess"
    os.makedirs(out, exist_ok=True)
    tensors = {}
    for name, box, size in CROPS:
        path = os.path.join(out, f"{name}.png")
        source.crop(box).resize(size, Image.LANCZOS).save(path)
        img = Image.open(path).convert("RGB")
        for w, h in SIZES:
            t = transforms.Compose(
                [
                    transforms.Resize(round(max(w, h) * 256 / 224)),
                    transforms.CenterCrop((h, w)),
                    transforms.ToTensor(),
                    transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
                ]
            )(img)
            tensors[f"{name}_{w}x{h}"] = np.ascontiguousarray(t.numpy().astype(np.float32))
    save_file(tensors, os.path.join(out, "expected.safetensors"), metadata={"source": "scripts/imagenet_preprocess_fixture.py"})


if __name__ == "__main__":
    main()
