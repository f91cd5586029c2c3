"""torchvision's state_dict keys and shapes for the built-in architectures (tests/models.rs).

Writes tests/fixtures/torchvision/<arch>.keys: one line per tensor, `<key> <d0>x<d1>...` (`-` for
a scalar), in state_dict order. Run: python3 scripts/torchvision_keys.py (torch, torchvision; no
weights are downloaded: the models are built with random weights).
"""
import os
import torchvision

out = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "torchvision")
os.makedirs(out, exist_ok=True)
for name in ["resnet18", "resnet34", "resnet50", "mobilenet_v2"]:
    model = getattr(torchvision.models, name)(weights=None)
    with open(os.path.join(out, name + ".keys"), "w") as f:
        for k, v in model.state_dict().items():
            f.write(f"{k} {'x'.join(map(str, v.shape)) or '-'}\n")
    print(name, len(model.state_dict()))
