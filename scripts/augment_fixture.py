"""torchvision's resized crop and flip for tests/kernel_augment.rs.

Writes tests/fixtures/augment.safetensors: `image` [3, 13, 11], and for each case k `box.k`
(top, left, height, width, flip) and `out.k` = F.hflip?(F.resized_crop(image, top, left, height,
width, [13, 11], interpolation=BILINEAR, antialias=False)): what RandomResizedCrop +
RandomHorizontalFlip produce once they have drawn those parameters (the crop never shrinks, so
antialias changes nothing). Run: python3 scripts/augment_fixture.py
"""
import os
import torch
import torchvision.transforms.functional as F
from torchvision.transforms import InterpolationMode
from safetensors.torch import save_file

torch.manual_seed(3)
img = torch.rand(3, 13, 11)
cases = [(0, 0, 13, 11, 0), (2, 3, 7, 5, 0), (5, 1, 8, 10, 1), (0, 4, 13, 3, 1), (6, 6, 1, 1, 0), (1, 2, 12, 9, 0)]
out = {"image": img}
for k, (t, l, h, w, flip) in enumerate(cases):
    y = F.resized_crop(img, t, l, h, w, [13, 11], interpolation=InterpolationMode.BILINEAR, antialias=False)
    if flip:
        y = F.hflip(y)
    out[f"box.{k}"] = torch.tensor([t, l, h, w, flip], dtype=torch.float32)
    out[f"out.{k}"] = y.clone().contiguous()
save_file(out, os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "augment.safetensors"))
print(len(cases), "cases")
