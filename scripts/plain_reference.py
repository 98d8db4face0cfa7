"""The reference's recipe as a plain PyTorch script: the baseline letters' whole command is
measured against (scripts/benchmark.py runs it as a process beside `python -m letters.train`).

    python scripts/plain_reference.py --data DIR [--out DIR] [--device cpu|cuda]

What the reference's program does in its train mode, with nothing of letters: read the list
layout (images/ and train/validation/test.json), decode each image to 32x32 grey in [-1, 1],
train a 1024-32-26 relu MLP (N(0, 1) weights, zero biases) with SGD (lr 5e-4, momentum 0.9) on
the summed cross-entropy, batch 8, 50 epochs, print the validation accuracy every 10 epochs,
save a checkpoint, draw the training loss curve, and print the test accuracy.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

CLASSES = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def load_split(root: Path, split: str, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    listing = json.loads((root / f"{split}.json").read_text())
    images, labels = [], []
    for name, letter in listing.items():
        with Image.open(root / "images" / name) as image:
            image.draft("L", (2 * size, 2 * size))  # JPEGs decoded at a reduced scale
            grey = image.convert("L").resize((size, size), Image.Resampling.BILINEAR)
        images.append(np.asarray(grey, dtype=np.float32))
        labels.append(CLASSES.index(letter.upper()))
    inputs = (torch.from_numpy(np.stack(images)).flatten(1) / 255.0 - 0.5) * 2.0
    return inputs, torch.tensor(labels)


def accuracy(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(inputs).argmax(1) == labels).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("plain-reference"))
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    started = time.perf_counter()
    torch.manual_seed(0)
    device = torch.device(args.device)
    splits = {s: load_split(args.data, s) for s in ("train", "validation", "test")}
    splits = {s: (x.to(device), y.to(device)) for s, (x, y) in splits.items()}
    model = nn.Sequential(nn.Linear(1024, 32), nn.ReLU(), nn.Linear(32, 26)).to(device)
    with torch.no_grad():
        for layer in (model[0], model[2]):
            layer.weight.normal_()
            layer.bias.zero_()
    optimizer = torch.optim.SGD(model.parameters(), lr=5e-4, momentum=0.9)
    inputs, labels = splits["train"]
    losses = []
    print(f"training starts ({time.perf_counter() - started:.2f} s)", flush=True)
    for epoch in range(1, 51):
        order = torch.randperm(len(labels), device=device)
        total = torch.zeros((), device=device)
        for first in range(0, len(labels), 8):
            batch = order[first : first + 8]
            loss = F.cross_entropy(model(inputs[batch]), labels[batch], reduction="sum")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach()
        losses.append(float(total) / len(labels))
        if epoch % 10 == 0:
            validation = accuracy(model, *splits["validation"])
            print(f"epoch {epoch}: validation accuracy {validation:.4f}")
    args.out.mkdir(parents=True, exist_ok=True)
    config = {"norm_size": 32, "output_size": 26, "hidden_sizes": [32], "activation": "relu"}
    torch.save({"state_dict": model.state_dict(), "config": config}, args.out / "model.pth")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    axes.plot(range(1, 51), losses)
    axes.set_xlabel("epoch")
    axes.set_ylabel("training loss")
    figure.savefig(args.out / "loss.png", dpi=100)
    print(f"test accuracy {accuracy(model, *splits['test']):.4f}")


if __name__ == "__main__":
    main()
