"""A small Fashion-MNIST classifier for the mode-coverage numbers of experiments/fashion/README.md (not part of the
package): trained on the training split at the samples' size, its test accuracy stored with its weights.

    python experiments/fashion/classifier.py --image-size 16 --out experiments/fashion/classifier_16px.pt

The images go through ``ImageDataModule`` (the same resizing as the score models' data); the labels are the data
set's own (``IdxImages.targets``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch import nn

from ncsn_pl.data import ImageDataModule
from ncsn_pl.data.datasets import load_builtin

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


class SmallCNN(nn.Module):
    """Three 3x3 convolutions (two with stride 2), global average pooling, a linear layer: ``(B, 1, s, s)`` in
    [0, 1] to 10 logits."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(2 * width, len(CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(2 * x - 1).mean((2, 3)))


def split_data(root: str, image_size: int, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``(N, 1, s, s)`` in [0, 1] and labels ``(N,)`` of Fashion-MNIST's ``train`` or ``val`` (test) split."""
    data = ImageDataModule("fashion_mnist", root=root, image_size=image_size)
    images = data.train_data() if split == "train" else data.val_data()
    return images, load_builtin("fashion_mnist", root, split).targets


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    predicted = torch.cat([model(batch).argmax(1) for batch in images.split(1000)])
    return (predicted == labels).float().mean().item()


def load_classifier(path: str | Path) -> tuple[SmallCNN, dict]:
    """The classifier saved by :func:`main` and its record (image size, test accuracy, ...)."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    model = SmallCNN(saved["record"]["width"])
    model.load_state_dict(saved["state_dict"])
    return model.eval(), saved["record"]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--root", default="data", help="data.root (the system package's files when it has none)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    train_x, train_y = split_data(args.root, args.image_size, "train")
    test_x, test_y = split_data(args.root, args.image_size, "val")
    model = SmallCNN(args.width)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    start = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        for batch in torch.randperm(len(train_x)).split(128):
            loss = nn.functional.cross_entropy(model(train_x[batch]), train_y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        print(f"epoch {epoch + 1}: test accuracy {accuracy(model, test_x, test_y):.4f}", flush=True)
    record = {
        "image_size": args.image_size, "width": args.width, "epochs": args.epochs, "seed": args.seed,
        "test_accuracy": accuracy(model, test_x, test_y), "train_seconds": round(time.perf_counter() - start, 1),
    }  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict(), "record": record}, args.out)
    print(record)
    return record


if __name__ == "__main__":
    main()
