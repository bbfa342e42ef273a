"""Mode coverage of a sample set beside its FID: the class histogram a Fashion-MNIST classifier gives the samples,
its entropy (ln 10 = 2.303 when every class has a tenth), the classifier's mean confidence, and FID, KID, precision
and recall read from the `fid` command's JSON record.

    python experiments/fashion/coverage.py --classifier experiments/fashion/classifier_16px.pt \
        --samples runs/x/fid_samples [--fid runs/x/fid.json] [--out coverage.json]

``--samples`` is a folder of the `fid` or `sample` command (``shards/*.npz`` with a ``samples`` array) or one
``.npz`` / ``.pt`` file of images ``(N, 1, s, s)`` in [0, 1]; ``--samples test`` scores the first
``--num-real`` test images (the reference row: what a perfect sampler would get).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

try:  # run as a script (experiments/fashion on sys.path) or loaded by a test
    from classifier import CLASSES, load_classifier, split_data
except ImportError:  # pragma: no cover - loaded through importlib from another folder
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from classifier import CLASSES, load_classifier, split_data

FID_KEYS = ("fid", "kid", "kid_std", "precision", "recall", "num_fake", "num_real")


def class_statistics(probabilities: torch.Tensor) -> dict[str, Any]:
    """Histogram of the predicted classes, its entropy in nats and the mean confidence (top probability).

    Args:
        probabilities: ``(N, K)`` class probabilities of N samples.
    """
    counts = torch.bincount(probabilities.argmax(1), minlength=probabilities.shape[1]).double()
    shares = counts / counts.sum()
    entropy = -(shares[shares > 0] * shares[shares > 0].log()).sum().item()
    return {
        "histogram": [round(s, 4) for s in shares.tolist()],
        "entropy": entropy,
        "max_entropy": math.log(probabilities.shape[1]),
        "mean_confidence": probabilities.max(1).values.mean().item(),
        "min_class_share": shares.min().item(),
        "num_samples": probabilities.shape[0],
    }


def load_samples(where: str) -> torch.Tensor:
    """Images ``(N, C, H, W)`` from a sample folder (shards in index order), an ``.npz`` or a ``.pt`` file."""
    path = Path(where)
    if path.is_dir():
        shards = sorted((path / "shards").glob("*.npz")) or sorted(path.glob("*.npz"))
        if not shards:
            raise FileNotFoundError(f"No .npz samples in {path} or {path / 'shards'}.")
        arrays = []
        for shard in shards:
            with np.load(shard, allow_pickle=False) as data:
                arrays.append(data["samples"])
        return torch.from_numpy(np.concatenate(arrays))
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            return torch.from_numpy(data["samples"])
    return torch.load(path, map_location="cpu", weights_only=True)


@torch.no_grad()
def coverage(classifier: torch.nn.Module, images: torch.Tensor) -> dict[str, Any]:
    """:func:`class_statistics` of the classifier's probabilities for images in [0, 1] (clamped first)."""
    probabilities = torch.cat([classifier(b.clamp(0, 1)).softmax(1) for b in images.float().split(500)])
    return class_statistics(probabilities)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--classifier", required=True)
    parser.add_argument("--samples", required=True, help="sample folder, .npz or .pt; 'test' for the test images")
    parser.add_argument("--fid", default=None, help="the fid command's JSON record of these samples")
    parser.add_argument("--num-real", type=int, default=1000, help="test images with --samples test")
    parser.add_argument("--root", default="data")
    parser.add_argument("--label", default=None, help="a name for the plots (e.g. the run's)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    classifier, record = load_classifier(args.classifier)
    if args.samples == "test":
        images = split_data(args.root, record["image_size"], "val")[0][: args.num_real]
    else:
        images = load_samples(args.samples)
    if images.shape[-1] != record["image_size"]:
        parser.error(f"the samples are {images.shape[-1]}px, the classifier {record['image_size']}px")
    result: dict[str, Any] = {"samples": args.samples, "label": args.label, **coverage(classifier, images)}
    result["classifier"] = {"path": args.classifier, "test_accuracy": record["test_accuracy"]}
    if args.fid:
        scored = json.loads(Path(args.fid).read_text())
        result.update({k: scored[k] for k in FID_KEYS if k in scored})
        result["nfe"] = scored.get("sampler", {}).get("nfe")
        result["step"] = scored.get("source", {}).get("global_step")
    text = json.dumps(result, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n")
    shares = ", ".join(f"{name} {s:.1%}" for name, s in zip(CLASSES, result["histogram"], strict=True))
    print(f"entropy {result['entropy']:.3f} (uniform {result['max_entropy']:.3f}), mean confidence "
          f"{result['mean_confidence']:.3f}, FID {result.get('fid', float('nan')):.2f}\n{shares}")  # fmt: skip
    return result


if __name__ == "__main__":
    main()
