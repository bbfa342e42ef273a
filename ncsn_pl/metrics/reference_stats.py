"""The papers' reference statistics files: read as the real statistics of the metrics, and ours written in the
pytorch-fid layout.

Published FIDs were computed against statistics files of the real data, in one of two layouts (``.npz``):

- **pytorch-fid / TTUR**: ``mu`` (d,) and ``sigma`` (d, d), the mean and unbiased covariance of the pool3 features
  (bioinf-jku/TTUR ``precalc_stats_example.py`` and ``fid.py`` ``_handle_path``; mseitzer/pytorch-fid
  ``fid_score.py`` ``save_fid_stats`` and ``compute_statistics_of_path``). NCSNv2 scores CIFAR-10 against TTUR's
  ``fid_stats_cifar10_train.npz`` (ermongroup/ncsnv2 ``evaluation/fid_score.py``). FID only: KID and
  precision/recall need the feature vectors themselves, so with such a file they are refused (compare with real
  images, or a file with the features, for them).
- **score_sde**: ``pool_3`` (N, d), the pool-3 features of all N real images (optionally ``logits`` too, ignored
  here), e.g. ``assets/stats/cifar10_stats.npz`` (yang-song/score_sde_pytorch ``evaluation.py``
  ``load_dataset_stats``; ``run_lib.py`` ``evaluate`` scores against ``data_stats["pool_3"]``). FID, KID and
  precision/recall.

A file holding ``pool_3`` is read in the score_sde layout even if it also holds ``mu`` and ``sigma``. d must match
the feature extractor in use (2048 for Inception pool3). Our exported files also hold ``resize`` (the Inception input
resize they were computed with, see :class:`~ncsn_pl.metrics.QualityOptions`); a file, or a published file by name
(:mod:`~ncsn_pl.metrics.published_stats`), that records another resize than the one in use is refused. A file
cannot tell which network made it: TTUR's and pytorch-fid's files come from the same TF Inception graph as our
extractor; score_sde's from TF-Hub's ``tfgan/eval/inception/1`` with inputs scaled by 127.5 instead of 128, close to
but not exactly our features.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric

from ncsn_pl.metrics.distributed import global_count, world
from ncsn_pl.metrics.features import InceptionFeatureExtractor
from ncsn_pl.metrics.options import QualityOptions
from ncsn_pl.metrics.published_stats import PUBLISHED_STATS, resolve_reference_stats
from ncsn_pl.metrics.real_stats import RealStats, gather_real_states, real_count
from ncsn_pl.system.files import atomic_write

__all__ = [
    "ReferenceStats",
    "ReferenceStatsError",
    "export_fid_stats",
    "export_real_states",
    "load_reference_stats",
    "read_reference_stats",
    "require_features",
]

PYTORCH_FID = "pytorch-fid"
SCORE_SDE = "score_sde"
_LAYOUTS = "mu (d,) and sigma (d, d) (pytorch-fid / TTUR layout) or pool_3 (N, d) features (score_sde layout)"
_SYMMETRY_RTOL = 1e-5


class ReferenceStatsError(ValueError):
    """A reference statistics file that cannot serve as real statistics; the message says why and what to do."""


@dataclass(frozen=True, eq=False)
class ReferenceStats:
    """The real statistics read from a reference file.

    Attributes:
        path: the file.
        layout: ``"pytorch-fid"`` (``mu``, ``sigma``) or ``"score_sde"`` (``pool_3``).
        mu: (d,) float64 mean of the features.
        sigma: (d, d) float64 unbiased covariance of the features.
        features: (N, d) float32 features (score_sde layout), or None.
        resize: the Inception input resize the file records (``"tf1"``, ``"pytorch-fid"``), or None.
        name: the published name it was given by (``"cifar10-train"``), or None for a path.
    """

    path: Path
    layout: str
    mu: Tensor
    sigma: Tensor
    features: Tensor | None = None
    _sums: RealStats | None = field(default=None, repr=False, compare=False)
    resize: str | None = None
    name: str | None = None

    @property
    def num_features(self) -> int:
        return int(self.mu.shape[0])

    @property
    def num_samples(self) -> int | None:
        """N of the features, None for a mean and covariance only."""
        return None if self.features is None else int(self.features.shape[0])

    def real_stats(self) -> RealStats:
        """The torchmetrics sums: of the features when present, else ones that give back ``mu`` and ``sigma``
        exactly (:meth:`RealStats.from_mean_and_covariance`, nominal count 2)."""
        if self._sums is not None:
            return self._sums
        return RealStats.from_mean_and_covariance(self.mu, self.sigma)


def _fail(path: Path, found: str, todo: str) -> ReferenceStatsError:
    return ReferenceStatsError(f"Reference statistics {str(path)!r}: {found}; {todo}.")


def _check_dimension(path: Path, what: str, d: int, num_features: int | None) -> None:
    if num_features is not None and d != num_features:
        raise _fail(
            path,
            f"{what} {d}-dimensional features, but the feature extractor in use gives {num_features} "
            + ("(Inception's pool3)" if num_features == 2048 else "(Inception's pool3 gives 2048)"),
            f"use statistics of the same {num_features}-d features (a file made with another layer or network, e.g. "
            "torchmetrics' FID(feature=64), cannot be compared), or recompute them with export_real_stats()",
        )


def _finite(path: Path, name: str, array: np.ndarray) -> None:
    bad = int((~np.isfinite(array)).sum())
    if bad:
        raise _fail(path, f"{name} has {bad} NaN/inf value(s) of {array.size}", "recompute or re-download the file")


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    expected = f"give an .npz file with {_LAYOUTS}"
    if not path.exists():
        raise FileNotFoundError(
            f"Reference statistics {str(path)!r} do not exist; {expected}, or a published file by name "
            f"({', '.join(PUBLISHED_STATS)})."
        )
    if path.is_dir():
        raise IsADirectoryError(f"Reference statistics {str(path)!r} is a directory; {expected}.")
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            raise _fail(path, f"a single array of shape {loaded.shape} (.npy), not named arrays", expected)
        with loaded as data:
            names = list(data.files)
            if "pool_3" in names:
                names = ["pool_3"]
            elif "mu" in names and "sigma" in names:
                names = ["mu", "sigma"]
            elif "mu" in names or "sigma" in names:
                have, missing = ("mu", "sigma") if "mu" in names else ("sigma", "mu")
                raise _fail(
                    path,
                    f"it holds {have} but no {missing} (keys: {sorted(data.files)})",
                    "the pytorch-fid / TTUR layout needs both mu (d,) and sigma (d, d); recompute or re-download it",
                )
            elif any(k.endswith("data.pkl") for k in data.files):
                raise _fail(
                    path,
                    "it looks like a torch.save file (e.g. our real-statistics cache), not NumPy arrays",
                    "write the statistics in the pytorch-fid layout with export_fid_stats() or "
                    f"SampleQuality.export_real_stats(), or {expected}",
                )
            else:
                keys = sorted(data.files)
                shown = keys[:8] + (["..."] if len(keys) > 8 else [])
                raise _fail(path, f"unknown layout, keys {shown}", expected)
            if "resize" in data.files:
                names.append("resize")
            return {name: np.asarray(data[name]) for name in names}
    except ReferenceStatsError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        with path.open("rb") as file:
            head = file.read(8)
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise _fail(path, f"not a readable NumPy .npz archive (it starts with {head!r}; {first})", expected) from err


def load_reference_stats(path: str | os.PathLike[str], num_features: int | None = 2048) -> ReferenceStats:
    """Read a reference statistics file of either layout (see the module docstring), detecting which.

    Args:
        path: the ``.npz`` file; it is only read.
        num_features: the feature dimension d the file must have (that of the feature extractor in use; None
            accepts any).

    Returns:
        The statistics; ``mu`` and ``sigma`` are computed from ``pool_3`` (in float64, covariance over N - 1) when
        only features are given.

    Raises:
        FileNotFoundError, IsADirectoryError: no file at ``path``.
        ReferenceStatsError: another layout, a missing key, the wrong feature dimension, non-finite values, a
            non-symmetric ``sigma`` or negative variances; the message names what was found and what to do.
    """
    path = Path(path)
    arrays = _read_arrays(path)
    if "pool_3" in arrays:
        pool = arrays["pool_3"]
        if pool.ndim != 2 or not np.issubdtype(pool.dtype, np.number):
            raise _fail(
                path,
                f"pool_3 has shape {pool.shape} and dtype {pool.dtype}",
                "the score_sde layout holds the features of N images as a float array of shape (N, d)",
            )
        _check_dimension(path, "pool_3 holds", pool.shape[1], num_features)
        if pool.shape[0] < 2:
            raise _fail(path, f"pool_3 holds {pool.shape[0]} feature vector(s)", "a covariance needs at least 2")
        _finite(path, "pool_3", pool)
        features = torch.from_numpy(np.ascontiguousarray(pool, dtype=np.float32))
        sums = RealStats.from_features(features)
        mu, sigma = sums.mean_and_covariance()
        return ReferenceStats(path, SCORE_SDE, mu, sigma, features, sums, resize=_recorded_resize(arrays))

    mu, sigma = arrays["mu"], arrays["sigma"]
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise _fail(
            path,
            f"mu has shape {mu.shape} and sigma {sigma.shape}",
            "the pytorch-fid / TTUR layout needs mu of shape (d,) and sigma of shape (d, d)",
        )
    _check_dimension(path, "mu and sigma describe", mu.shape[0], num_features)
    _finite(path, "mu", mu)
    _finite(path, "sigma", sigma)
    mu64, sigma64 = torch.from_numpy(mu.astype(np.float64)), torch.from_numpy(sigma.astype(np.float64))
    asymmetry = float((sigma64 - sigma64.T).abs().max())
    scale = float(sigma64.abs().max())
    if asymmetry > _SYMMETRY_RTOL * scale:
        raise _fail(
            path,
            f"sigma is not symmetric (max |sigma - sigma^T| = {asymmetry:.3g}, max |sigma| = {scale:.3g})",
            "sigma must be a covariance matrix; the file is damaged or sigma is something else: recompute it",
        )
    negative = int((sigma64.diagonal() < 0).sum())
    if negative:
        raise _fail(path, f"sigma has {negative} negative variance(s) on its diagonal", "recompute the file")
    return ReferenceStats(path, PYTORCH_FID, mu64, sigma64, resize=_recorded_resize(arrays))


def _recorded_resize(arrays: dict[str, np.ndarray]) -> str | None:
    resize = arrays.get("resize")
    return str(resize) if resize is not None and resize.ndim == 0 and resize.dtype.kind == "U" else None


def export_fid_stats(path: str | os.PathLike[str], stats: RealStats, resize: str | None = None) -> Path:
    """Write ``stats`` in the pytorch-fid / TTUR layout, atomically (temp file + ``os.replace``).

    The ``.npz`` holds ``mu`` (d,) and ``sigma`` (d, d), float64: the mean and the unbiased covariance
    (:meth:`RealStats.mean_and_covariance`), what pytorch-fid's ``save_fid_stats`` writes; pytorch-fid, TTUR and
    :func:`load_reference_stats` read it (the first two read ``mu`` and ``sigma`` by name and ignore the rest).

    Args:
        path: the file (``.npz`` by convention; the name is used as given).
        stats: e.g. a cache entry from :func:`~ncsn_pl.metrics.load_real_stats`.
        resize: the Inception input resize the statistics were computed with, written as ``resize``.
    """
    if stats.num_samples < 2:
        raise ValueError(f"FID statistics need at least 2 images (a covariance), got {stats.num_samples}.")
    mu, sigma = stats.mean_and_covariance()
    if not (bool(torch.isfinite(mu).all()) and bool(torch.isfinite(sigma).all())):
        raise ValueError("The real statistics contain NaN/inf; nothing was written.")
    with atomic_write(path) as file:
        recorded = {"resize": np.array(resize)} if resize else {}
        np.savez_compressed(file, mu=mu.numpy(), sigma=sigma.numpy(), **recorded)
    return Path(path)


def require_features(ref: ReferenceStats, feature_metrics: Sequence[tuple[str, str]]) -> None:
    """Fail when metrics that need the real feature vectors are on and ``ref`` holds only ``mu`` and ``sigma``.

    Args:
        ref: the statistics read from a reference file.
        feature_metrics: ``(name, option)`` of each enabled metric that keeps real features, e.g.
            ``("KID", "kid")``.
    """
    if feature_metrics and ref.features is None:
        names = " and ".join(name for name, _ in feature_metrics)
        flags = " and ".join(flag for _, flag in feature_metrics)
        raise _fail(
            ref.path,
            f"it holds only mu and sigma (pytorch-fid / TTUR layout), and {names} "
            f"{'need' if len(feature_metrics) > 1 else 'needs'} the real images' feature vectors",
            "compare with real images instead (--dataset NAME or the run's data, without ref_stats), or with a file of "
            f"the features (score_sde layout: pool_3 of shape (N, d)), or turn {flags} off to score FID against "
            "this file",
        )


def read_reference_stats(
    ref: str | os.PathLike[str], options: QualityOptions, num_features: int | None = None
) -> ReferenceStats:
    """``ref_stats`` (a file, or a published name: :func:`~ncsn_pl.metrics.published_stats.resolve_reference_stats`)
    read and checked against the metrics of ``options``: the feature dimension, KID and precision/recall need
    features, and the file's recorded resize must be the one in use.

    Call it when a run is configured, so a file that cannot serve fails before any sampling.

    Args:
        ref: the file or name.
        options: the metrics that will use it.
        num_features: the feature dimension of the extractor in use (default: Inception's 2048, or a custom
            extractor's ``num_features``).
    """
    if num_features is None:
        extractor = options.feature_extractor
        num_features = InceptionFeatureExtractor.num_features if extractor is None else (
            options.num_features or getattr(extractor, "num_features", None))  # fmt: skip
    name = str(ref) if str(ref) in PUBLISHED_STATS else None
    stats = load_reference_stats(resolve_reference_stats(str(ref)), num_features)
    recorded = stats.resize or (PUBLISHED_STATS[name].resize if name else None)
    in_use = options.resize if options.feature_extractor is None else None
    if recorded and in_use and recorded != in_use:
        raise _fail(
            stats.path,
            f"it was computed with the {recorded!r} resize to Inception's input, but this FID uses {in_use!r}",
            f"set quality.resize to {recorded!r} (--quality.resize {recorded}) to compare with it, or use statistics "
            f"computed with the {in_use!r} resize",
        )
    named = (("KID", "kid", options.kid), ("precision/recall", "precision_recall", options.precision_recall))
    require_features(stats, [(label, flag) for label, flag, on in named if on])
    return replace(stats, resize=recorded, name=name)


def export_real_states(
    fid: Metric | None,
    feature_metrics: Sequence[Metric],
    num_features: int,
    path: str | os.PathLike[str],
    resize: str | None = None,
) -> Path:
    """Write the real statistics FID and the feature-keeping metrics hold (all ranks) in the pytorch-fid layout
    (see :meth:`SampleQuality.export_real_stats`; collective under DDP, rank 0 writes)."""
    if fid is None and not feature_metrics:
        raise ValueError("Only the Inception Score is on: there are no real statistics to export.")
    n = global_count(real_count(fid, feature_metrics), (fid if fid is not None else feature_metrics[0]).device)
    if n < 2:
        raise ValueError(
            f"export_real_stats() needs the real statistics of at least 2 images, got {n}; call "
            "load_or_compute_real(), use_reference_stats() or update_real() first."
        )
    stats = gather_real_states(fid, feature_metrics, num_features)
    if world()[0] == 0:
        export_fid_stats(path, stats, resize)
    return Path(path)
