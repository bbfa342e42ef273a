"""Real-data Inception statistics (what FID/KID keep for the real images): their on-disk cache, and moving them
into and out of the torchmetrics states.

FID needs only the feature sum, the sum of outer products and the count (torchmetrics' ``real_features_sum``,
``real_features_cov_sum``, ``real_features_num_samples``); KID and precision/recall need the feature matrix
itself. A cache entry is keyed by (dataset, split, image size, number of images, feature extractor id, and every other
setting that selects or transforms the images) and written atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

from ncsn_pl.metrics.distributed import compact, global_count, list_count, world
from ncsn_pl.metrics.inception_weights import default_cache_dir
from ncsn_pl.system.files import atomic_torch_save

__all__ = [
    "RealStats",
    "RealStatsKey",
    "add_real_features",
    "clear_real_states",
    "gather_real_states",
    "install_real_states",
    "load_cached_real_stats",
    "load_or_compute_real_stats",
    "load_real_stats",
    "real_count",
    "save_real_stats",
]

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
        settings: the other settings that select or transform the images (the data split's seed, the channels,
            ...; :func:`~ncsn_pl.metrics.real_images.image_settings`), as canonical JSON (:meth:`settings_json`).
    """

    dataset: str
    split: str
    image_size: int
    num_images: int
    feature_extractor: str
    settings: str = "{}"

    @staticmethod
    def settings_json(settings: Mapping[str, Any] | None) -> str:
        """``settings`` as the key holds them: JSON with sorted keys (``{}`` for None)."""
        return json.dumps(dict(settings or {}), sort_keys=True, default=repr)

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
        features: (num_samples, d) feature matrix (needed by KID and precision/recall), or None.
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

    @classmethod
    def from_mean_and_covariance(cls, mu: Tensor, sigma: Tensor, num_samples: int = 2) -> RealStats:
        """Sums that give back ``mu`` and ``sigma`` in torchmetrics' ``FrechetInceptionDistance.compute``.

        That computes mean = sum / n and cov = (cov_sum - n mean mean^T) / (n - 1), so sum = n mu and
        cov_sum = (n - 1) sigma + n mu mu^T reproduce them for any n >= 2. The default n = 2 (a nominal count: a
        mean and covariance do not say how many images they came from) keeps the float64 round trip exact for mu
        (a multiplication and division by 2) and within half an ulp of ``sigma + 2 mu mu^T`` for sigma.

        Args:
            mu: (d,) mean of the real features.
            sigma: (d, d) unbiased covariance of the real features.
            num_samples: the count n stored with the sums.
        """
        if num_samples < 2:
            raise ValueError(f"num_samples must be at least 2 (a covariance divides by n - 1), got {num_samples}.")
        mu, sigma = mu.detach().double().cpu(), sigma.detach().double().cpu()
        outer = mu[:, None].mm(mu[None, :])  # as torchmetrics forms mean^T mean
        return cls(num_samples * mu, (num_samples - 1) * sigma + num_samples * outer, num_samples, None)

    def mean_and_covariance(self) -> tuple[Tensor, Tensor]:
        """(mu, sigma): the mean (d,) and unbiased covariance (d, d) in float64, as FID uses them
        (torchmetrics ``FrechetInceptionDistance.compute``; pytorch-fid ``calculate_activation_statistics``)."""
        n = self.num_samples
        mu = self.features_sum.double() / n
        sigma = (self.features_cov_sum.double() - n * mu[:, None].mm(mu[None, :])) / (n - 1)
        return mu, sigma


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


def load_cached_real_stats(
    path: Path, key: RealStatsKey, num_features: int, need_features: bool
) -> RealStats | None:
    """A usable cache entry, or None: missing, unusable (warned about: it will be recomputed), of another feature
    size, or without the feature matrix when ``need_features`` (KID, precision/recall)."""
    try:
        stats = load_real_stats(path, key)
    except FileNotFoundError:
        return None
    except ValueError as err:
        warnings.warn(f"Recomputing the real statistics: the cache file {path} is unusable ({err}).", stacklevel=3)
        return None
    if stats.features_sum.shape[0] != num_features:
        warnings.warn(f"Recomputing the real statistics: {path} has another feature size.", stacklevel=3)
        return None
    if need_features and stats.features is None:
        return None  # cached for FID only
    return stats


def clear_real_states(fid: Metric | None, feature_metrics: Sequence[Metric] = ()) -> None:
    """Drop the real statistics of FID and of the metrics that keep real features (KID, precision/recall) only
    (fresh tensors: never write into possibly shared memory)."""
    if fid is not None:
        for name in ("real_features_sum", "real_features_cov_sum", "real_features_num_samples"):
            setattr(fid, name, torch.zeros_like(getattr(fid, name)))
    for metric in feature_metrics:
        metric.real_features = []


def install_real_states(
    fid: Metric | None, feature_metrics: Sequence[Metric], stats: RealStats, device: torch.device
) -> None:
    """Set the real statistics from ``stats`` so that the all-reduce of ``compute()`` counts each real image once:
    rank 0 holds FID's sums (the other ranks zeros), the features of KID and precision/recall are split over the
    ranks (``stats.features`` must be set when ``feature_metrics`` is not empty)."""
    rank, size = world()
    clear_real_states(fid, feature_metrics)
    if fid is not None and rank == 0:
        fid.real_features_sum = stats.features_sum.to(device, torch.float64)
        fid.real_features_cov_sum = stats.features_cov_sum.to(device, torch.float64)
        fid.real_features_num_samples = torch.tensor(stats.num_samples, dtype=torch.long, device=device)
    for metric in feature_metrics:
        metric.real_features = [stats.features[rank::size].to(device)]


def gather_real_states(fid: Metric | None, feature_metrics: Sequence[Metric], num_features: int) -> RealStats:
    """The real statistics FID and the feature-keeping metrics accumulated, over all ranks (collective under DDP).

    The feature matrix comes from the first of ``feature_metrics`` (they all saw the same real images)."""
    features = None
    if feature_metrics:
        keeper = feature_metrics[0]
        compact(keeper, ("real_features",), num_features)
        with keeper.sync_context():
            features = dim_zero_cat(keeper.real_features).detach().cpu()
    if fid is not None:
        with fid.sync_context():
            return RealStats(
                fid.real_features_sum.detach().cpu().clone(),
                fid.real_features_cov_sum.detach().cpu().clone(),
                int(fid.real_features_num_samples),
                features,
            )
    return RealStats.from_features(features)


def add_real_features(fid: Metric | None, feature_metrics: Sequence[Metric], features: Tensor) -> None:
    """Add the features (N, d) of real images to FID and to the metrics that keep real features."""
    for metric in (fid, *feature_metrics):
        if metric is not None:
            metric.update(features, real=True)


def real_count(fid: Metric | None, feature_metrics: Sequence[Metric]) -> int:
    """Real images FID (else the first feature-keeping metric) holds on this process."""
    if fid is not None:
        return int(fid.real_features_num_samples)
    return list_count(feature_metrics[0].real_features) if feature_metrics else 0


def load_or_compute_real_stats(
    fid: Metric | None,
    feature_metrics: Sequence[Metric],
    extract: Callable[[Tensor], Tensor],
    num_features: int,
    images: Iterable[Tensor | tuple | list] | Callable[[], Iterable[Tensor | tuple | list]],
    key: RealStatsKey,
    cache_dir: str | os.PathLike[str] | None = None,
) -> bool:
    """The real statistics of FID and the feature-keeping metrics (KID, precision/recall) from the cache entry
    ``key``, or computed from ``images`` through ``extract`` (images to (N, ``num_features``) features) and cached (see
    :meth:`SampleQuality.load_or_compute_real`; collective under DDP). Returns whether they came from the cache."""
    if fid is None and not feature_metrics:
        return False
    device = (fid if fid is not None else feature_metrics[0]).device
    path = key.path(cache_dir if cache_dir is not None else default_cache_dir() / "real_stats")
    stats = load_cached_real_stats(path, key, num_features, bool(feature_metrics))
    # all ranks take the same branch (the miss path has collectives), e.g. if only some can read the file
    if global_count(int(stats is not None), device) == world()[1]:
        install_real_states(fid, feature_metrics, stats, device)
        return True

    clear_real_states(fid, feature_metrics)
    # a batch at a time: only the metric states (FID's sums; KID's and precision/recall's features) grow
    for batch in images() if callable(images) else images:
        add_real_features(fid, feature_metrics, extract(batch[0] if isinstance(batch, (tuple, list)) else batch))
    if global_count(real_count(fid, feature_metrics), device) == 0:
        raise ValueError("load_or_compute_real() got no real images: the images iterable was empty.")
    stats = gather_real_states(fid, feature_metrics, num_features)
    if stats.num_samples != key.num_images:
        warnings.warn(
            f"Computed real statistics over {stats.num_samples} images but the cache key says num_images="
            f"{key.num_images}; pass the true count.",
            stacklevel=3,
        )
    if world()[0] == 0:
        save_real_stats(path, key, stats)
    # held exactly as a cache hit holds them, so a FID does not depend on where its statistics came from
    install_real_states(fid, feature_metrics, stats, device)
    return False
