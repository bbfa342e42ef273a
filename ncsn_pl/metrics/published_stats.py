"""The papers' reference statistics by name: ``--ref_stats cifar10-train`` is TTUR's ``fid_stats_cifar10_train.npz``,
kept in the project's cache folder (``~/.cache/ncsn_pl/reference_stats``) and downloaded there the first time.

=========================  =================================================================================
name                       file
=========================  =================================================================================
``cifar10-train``          TTUR's ``fid_stats_cifar10_train.npz`` (bioinf-jku/TTUR README): ``mu`` and ``sigma``
                           of the 50,000 CIFAR-10 training images; NCSNv2's CIFAR-10 FIDs (ermongroup/ncsnv2
                           ``evaluation/fid_score.py`` ``get_fid_stats_path``). FID only.
``lsun-bedroom-train``     TTUR's ``fid_stats_lsun_train.npz``: LSUN bedroom training images, the other file
                           NCSNv2's evaluation code links. FID only.
``cifar10-train-score_sde``  score_sde's ``assets/stats/cifar10_stats.npz``: ``pool_3`` features of the 50,000
                           CIFAR-10 training images (TF-Hub Inception; yang-song/score_sde#3). FID, KID and
                           precision/recall. Shared on Google Drive only: put it into the cache by hand.
=========================  =================================================================================

A name resolves to ``<cache>/reference_stats/<file>``; a missing file is downloaded from its URL (one process at a
time), and a file that is not there and cannot be downloaded (offline, or no direct URL) stops with one line that
says where to get it and where to put it. The publishers give no checksums for these files; where an entry has one
(``sha256``), a file that does not match is refused. The sha256 of the file used is recorded with every FID, so
numbers can be traced to the exact file.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
from dataclasses import dataclass
from pathlib import Path

import torch

from ncsn_pl.metrics.inception_weights import default_cache_dir
from ncsn_pl.system.locks import exclusive

__all__ = ["PUBLISHED_STATS", "PublishedStats", "file_sha256", "published_stats_dir", "resolve_reference_stats"]


@dataclass(frozen=True)
class PublishedStats:
    """A published reference statistics file.

    Attributes:
        filename: the file's name, as published.
        description: what it holds and who used it.
        url: a direct download URL, or None when it must be fetched by hand from ``where``.
        where: where a person gets it (the page that links it).
        sha256: the file's checksum, when known; a file that does not match is refused.
        resize: the Inception input resize it was computed with (``"tf1"``, see
            :class:`~ncsn_pl.metrics.QualityOptions`), or None when not known.
    """

    filename: str
    description: str
    url: str | None
    where: str
    sha256: str | None = None
    resize: str | None = None


_TTUR = "http://bioinf.jku.at/research/ttur/ttur_stats"
PUBLISHED_STATS = {
    "cifar10-train": PublishedStats(
        "fid_stats_cifar10_train.npz",
        "TTUR's mu and sigma of the CIFAR-10 training set (NCSNv2's CIFAR-10 FID)",
        f"{_TTUR}/fid_stats_cifar10_train.npz",
        "the 'Precalculated Statistics' of github.com/bioinf-jku/TTUR",
        resize="tf1",  # TTUR's TF graph resizes inside (ResizeBilinear, TF 1.x)
    ),
    "lsun-bedroom-train": PublishedStats(
        "fid_stats_lsun_train.npz",
        "TTUR's mu and sigma of the LSUN bedroom training set",
        f"{_TTUR}/fid_stats_lsun_train.npz",
        "the 'Precalculated Statistics' of github.com/bioinf-jku/TTUR",
        resize="tf1",
    ),
    "cifar10-train-score_sde": PublishedStats(
        "cifar10_stats.npz",
        "score_sde's pool_3 features of the CIFAR-10 training set (TF-Hub Inception)",
        None,
        "the score_sde checkpoints folder on Google Drive, linked from github.com/yang-song/score_sde (README and "
        "issue #3), as assets/stats/cifar10_stats.npz",
    ),
}


def published_stats_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where the named files are kept: ``<cache_dir>/reference_stats`` (default cache: ``~/.cache/ncsn_pl``)."""
    return Path(cache_dir if cache_dir is not None else default_cache_dir()) / "reference_stats"


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def resolve_reference_stats(ref: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The file of ``--ref_stats``: an existing path as given, else a name of :data:`PUBLISHED_STATS` (its file in
    the cache, downloaded when missing), else the path as given (which the reader then refuses, naming the names).

    Raises:
        FileNotFoundError: a named file that is not in the cache and cannot be downloaded; the message says where
            to get it and where to put it.
        ValueError: a named file whose sha256 is not the published one.
    """
    entry = PUBLISHED_STATS.get(ref)
    if entry is None or Path(ref).exists():
        return Path(ref)
    folder = published_stats_dir(cache_dir)
    path = folder / entry.filename
    folder.mkdir(parents=True, exist_ok=True)
    with exclusive(folder / f".{entry.filename}.lock"):  # one process downloads, the others wait and read it
        if not path.is_file():
            _download(ref, entry, path)
    if entry.sha256 is not None and (digest := file_sha256(path)) != entry.sha256:
        raise ValueError(
            f"--ref_stats {ref}: {path} has sha256 {digest}, not the published {entry.sha256}; delete it to download "
            f"it again, or put the file from {entry.url or entry.where} there."
        )
    return path


def _download(name: str, entry: PublishedStats, path: Path) -> None:
    where = f"download {entry.filename} from {entry.url or entry.where}"
    if entry.url is None:
        raise FileNotFoundError(f"--ref_stats {name}: {path} is not there; {where} and put it there.")
    try:
        torch.hub.download_url_to_file(entry.url, str(path), progress=False)
    except (OSError, urllib.error.URLError) as err:
        reason = str(getattr(err, "reason", None) or err).splitlines()[0]
        raise FileNotFoundError(
            f"--ref_stats {name}: {path} is not there and the download failed ({reason}); offline, {where} on a "
            "machine with internet and put it there."
        ) from None
