"""On-disk cache of real-data Inception statistics (what FID/KID keep for the real images).

FID needs only the feature sum, the sum of outer products and the count (torchmetrics' ``real_features_sum``,
``real_features_cov_sum``, ``real_features_num_samples``); KID needs the feature matrix itself. A cache entry
is keyed by (dataset, split, image size, number of images, feature extractor id) and written atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

from ncsn_pl.core.files import atomic_torch_save

FORMAT_VERSION = 1


@dataclass(frozen=True)
class RealStatsKey:
    """Identifies one set of real statistics.

    Args:
        dataset: dataset name, e.g. ``"cifar10"``.
        split: ``"train"``, ``"test"``, ...
        image_size: side length of the images fed to the metric (before the Inception resize).
        num_images: number of real images the statistics cover.
        feature_extractor: id of the feature extractor, its weights and the preprocessing
            (:attr:`SampleQuality.feature_extractor_id`).
    """

    dataset: str
    split: str
    image_size: int
    num_images: int
    feature_extractor: str

    def filename(self) -> str:
        """A readable file name plus a hash of the whole key (so distinct keys never share a file)."""
        digest = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]
        slug = re.sub(
            r"[^A-Za-z0-9_.-]+", "_", f"{self.dataset}-{self.split}-{self.image_size}px-n{self.num_images}"
        )
        return f"{slug}-{digest}.pt"

    def path(self, cache_dir: str | os.PathLike[str]) -> Path:
        """Where this entry lives under ``cache_dir``."""
        return Path(cache_dir) / self.filename()


@dataclass
class RealStats:
    """Real-data feature statistics.

    Attributes:
        features_sum: (d,) float64, sum of the feature vectors.
        features_cov_sum: (d, d) float64, sum of their outer products f f^T.
        num_samples: number of images.
        features: (num_samples, d) feature matrix (needed by KID), or None.
    """

    features_sum: Tensor
    features_cov_sum: Tensor
    num_samples: int
    features: Tensor | None = None

    @classmethod
    def from_features(cls, features: Tensor) -> RealStats:
        """Statistics of a (n, d) feature matrix, keeping the matrix."""
        f = features.detach().double()
        return cls(f.sum(0).cpu(), (f.T @ f).cpu(), int(f.shape[0]), features.detach().cpu())


def save_real_stats(path: str | os.PathLike[str], key: RealStatsKey, stats: RealStats) -> Path:
    """Write ``stats`` under ``key`` to ``path`` atomically (temp file + ``os.replace``)."""
    payload = {
        "format": FORMAT_VERSION,
        "key": asdict(key),
        "features_sum": stats.features_sum.detach().double().cpu(),
        "features_cov_sum": stats.features_cov_sum.detach().double().cpu(),
        "num_samples": int(stats.num_samples),
    }
    if stats.features is not None:
        payload["features"] = stats.features.detach().cpu()
    return atomic_torch_save(payload, path)


def load_real_stats(path: str | os.PathLike[str], key: RealStatsKey) -> RealStats:
    """Read and check a cache entry.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is corrupt, of another format, stored under another key, or inconsistent.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"cannot be loaded ({type(err).__name__}: {err})") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_VERSION:
        raise ValueError(f"not a format-{FORMAT_VERSION} real-statistics file")
    if payload.get("key") != asdict(key):
        raise ValueError(f"it was stored for {payload.get('key')}, not {asdict(key)}")
    try:
        s, c, n = payload["features_sum"], payload["features_cov_sum"], int(payload["num_samples"])
        features = payload.get("features")
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"missing or malformed entry ({err})") from err
    d = s.shape[0] if isinstance(s, Tensor) and s.dim() == 1 else -1
    ok = d > 0 and isinstance(c, Tensor) and tuple(c.shape) == (d, d) and n >= 2
    ok = ok and bool(torch.isfinite(s).all()) and bool(torch.isfinite(c).all())
    if features is not None:
        ok = ok and isinstance(features, Tensor) and tuple(features.shape) == (n, d)
    if not ok:
        raise ValueError("inconsistent shapes, counts or non-finite values")
    return RealStats(s.double(), c.double(), n, features)
