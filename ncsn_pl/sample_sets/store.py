"""A sample set on disk, written in shards as it is drawn, so that a preempted ``sample`` or ``fid`` continues it;
what a set reports beside its samples (the network evaluations per sample, the noisy share: samples noisier than
every real image), as record entries and in words.

Layout of a sample folder (``sample --out_dir``, ``fid --sample_dir``)::

    sample.json                   the set (checkpoint and the sha256 of the bytes loaded, seed, sampler, schedule,
                                  init range, data shape, precision, memory format, device type; num_samples) and,
                                  once every sample is drawn, "complete": true and what the run wrote
    shards/<first>-<last>-n<count>.npz
                                  one per batch, written atomically when the batch is drawn: "indices" (n,) int64,
                                  "samples" (n, *data_shape) float32 (unclamped), "sample_set" (the set, JSON),
                                  "nfe" (n,) int64 (each sample's network evaluations)
    images/<k>.png                (sample, image data) sample k as an 8-bit PNG, written before its shard
    samples.npz, grid.png         (sample) all samples in index order and a grid, written at the end

The work is cut into batches the same way whatever the number of processes: the indices not yet on disk, in
order, ``batch_size`` at a time; process ``r`` of ``W`` draws batches ``r, r + W, ...``. Sample ``k`` is seeded
by ``step_seed(seed, k)`` and the batches of a rerun are those an uninterrupted run would have drawn (the shards
on disk are whole batches), so a rerun after a preemption ends with the same samples bit for bit, with any number of
processes (on the same kind of device with the same threads per process); with another ``batch_size`` (or a
``num_samples`` raised past a size that is not a multiple of it) they are the same up to float rounding.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ncsn_pl.core.samplers import Sampler
from ncsn_pl.metrics.noisy_share import NoiseReference, NoisyShare, noise_reference
from ncsn_pl.system.files import atomic_write

__all__ = [
    "RECORD",
    "SHARDS",
    "SampleStore",
    "describe_nfe",
    "describe_noisy_share",
    "file_sha256",
    "missing_batches",
    "nfe_record",
    "noise_reference_for",
    "noisy_share_record",
    "write_npz",
]

RECORD = "sample.json"
SHARDS = "shards"
_CACHED_SHARDS = 8


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file's bytes (names a checkpoint in a sample set: a ``last.ckpt`` overwritten by more training
    is another checkpoint)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def missing_batches(done: set[int] | Sequence[int], num_samples: int, batch_size: int) -> list[list[int]]:
    """The indices of ``range(num_samples)`` not in ``done``, in order, cut into batches of ``batch_size``."""
    done = set(done)
    missing = [k for k in range(num_samples) if k not in done]
    return [missing[i : i + batch_size] for i in range(0, len(missing), batch_size)]


def _describe(key: str, value: Any, record: Mapping[str, Any]) -> str:
    if key == "checkpoint_sha256":
        return f"{record.get('checkpoint')} (sha256 {str(value)[:12]})"
    return repr(value)


def _differences(found: Mapping[str, Any], wanted: Mapping[str, Any], found_record: Mapping[str, Any],
                 wanted_record: Mapping[str, Any]) -> str:  # fmt: skip
    return ", ".join(
        f"{key} {_describe(key, found.get(key), found_record)} there, {_describe(key, value, wanted_record)} here"
        for key, value in wanted.items()
        if found.get(key) != value
    )


class SampleStore:
    """One sample set in a folder (see the module docstring for the layout).

    Args:
        folder: the sample folder.
        sample_set: what makes two sample sets the same (checkpoint sha256, seed, sampler, schedule and the other
            settings that change the samples); the shards carry it, and a folder of another set is refused.
        record: the set's ``sample.json`` (``sample_set`` plus descriptions such as the checkpoint's path).
    """

    def __init__(
        self, folder: str | os.PathLike[str], sample_set: Mapping[str, Any], record: Mapping[str, Any]
    ) -> None:
        self.folder = Path(folder)
        self.sample_set = dict(sample_set)
        self.record = dict(record)
        self._index: dict[int, tuple[Path, int]] = {}
        self._cache: OrderedDict[Path, np.ndarray] = OrderedDict()

    @property
    def shard_dir(self) -> Path:
        return self.folder / SHARDS

    # ------------------------------------------------------------------ checks
    def check(self, num_samples: int, what: str) -> set[int]:
        """Check that the folder holds nothing but this sample set, with at most ``num_samples`` samples; returns
        the indices of its samples on disk. Reads only; deletes nothing.

        Args:
            num_samples: the samples asked for.
            what: the option naming the folder, for messages (``--out_dir``).

        Raises:
            ValueError: the folder holds other files, another sample set (its ``sample.json`` or a shard), or more
                samples of this set than ``num_samples``; the message says what was found and what to do.
        """
        folder = self.folder
        if not folder.exists() or not any(folder.iterdir()):
            return set()
        record_path = folder / RECORD
        if not record_path.is_file():
            raise ValueError(
                f"{what} {folder} is not empty and is not a sample folder (no {RECORD}): give a new folder."
            )
        previous = json.loads(record_path.read_text())
        differ = _differences(previous, self.sample_set, previous, self.record)
        if differ:
            raise ValueError(
                f"{what} {folder} holds another sample set ({differ}); give a new folder, or delete it to replace "
                "them. Nothing was changed."
            )
        done = self.scan()
        if done and max(done) >= num_samples:
            raise ValueError(
                f"{what} {folder} holds {len(done)} samples of this set with indices up to {max(done)}, more than "
                f"--num_samples {num_samples}: pass --num_samples {max(done) + 1} or more to use (and complete) "
                "them, or give a new folder. Nothing was deleted."
            )
        return done

    def is_complete(self, num_samples: int, done: set[int]) -> bool:
        """Whether the folder already holds this set whole: its ``sample.json`` says complete for ``num_samples``,
        every sample is on disk (``done``, from :meth:`check`) and the files the record lists exist."""
        try:
            record = json.loads((self.folder / RECORD).read_text())
        except (OSError, ValueError):
            return False
        listed = record.get("files") if isinstance(record.get("files"), dict) else {}
        return (
            record.get("complete") is True
            and record.get("num_samples") == num_samples
            and done == set(range(num_samples))
            and all((self.folder / name).exists() for name in listed.values())
        )

    def scan(self) -> set[int]:
        """The indices on disk (whole shards only); every shard must belong to this set.

        Raises:
            ValueError: a shard of another sample set or an unreadable shard (named, with what to do).
        """
        self._index = {}
        if not self.shard_dir.is_dir():
            return set()
        for path in sorted(self.shard_dir.glob("*.npz")):
            try:
                with np.load(path, allow_pickle=False) as shard:
                    indices = shard["indices"].tolist()
                    found = json.loads(str(shard["sample_set"]))
            except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
                raise ValueError(
                    f"Shard {path} cannot be read ({type(err).__name__}: {err}); move it out of {self.shard_dir} "
                    "(its samples are drawn again) and rerun."
                ) from err
            differ = _differences(found, self.sample_set, found, self.record)
            if differ:
                raise ValueError(
                    f"Shard {path} belongs to another sample set ({differ}); the folder mixes two sets: give a new "
                    "folder. Nothing was deleted."
                )
            for row, k in enumerate(indices):
                self._index.setdefault(int(k), (path, row))
        return set(self._index)

    # ------------------------------------------------------------------ writing
    def write_record(self, **extra: Any) -> Path:
        """Write ``sample.json``: the set, its description and ``extra``; a file that already says so is left as it
        is (a complete set on a read-only folder is read, never written)."""
        path = self.folder / RECORD
        text = json.dumps({**self.record, **self.sample_set, **extra}, indent=2) + "\n"
        if path.is_file() and path.read_text() == text:
            return path
        with atomic_write(path, "w") as file:
            file.write(text)
        return path

    def write_shard(self, indices: Sequence[int], samples: Tensor, nfe: Tensor | None = None) -> Path:
        """Write one drawn batch atomically (a killed process leaves no partial shard under a shard name), with each
        sample's network evaluations ``nfe`` when given."""
        indices = [int(k) for k in indices]
        path = self.shard_dir / f"{indices[0]:08d}-{indices[-1]:08d}-n{len(indices)}.npz"
        extra = {"nfe": nfe.detach().cpu().numpy().astype(np.int64)} if nfe is not None else {}
        with atomic_write(path) as file:
            np.savez(
                file,
                indices=np.asarray(indices, dtype=np.int64),
                samples=samples.detach().float().cpu().numpy(),
                sample_set=np.asarray(json.dumps(self.sample_set, sort_keys=True)),
                **extra,
            )
        return path

    # ------------------------------------------------------------------ reading
    def read(self, indices: Sequence[int]) -> Tensor:
        """Samples ``indices`` (float32, in the given order) from the shards; call :meth:`scan` first."""
        rows = []
        for k in indices:
            if k not in self._index:
                raise FileNotFoundError(f"Sample {k} is not in {self.shard_dir}: rerun the command to draw it.")
            path, row = self._index[k]
            rows.append(self._samples(path)[row])
        return torch.from_numpy(np.stack(rows))

    def read_nfe(self, indices: Sequence[int]) -> Tensor | None:
        """The network evaluations of samples ``indices`` (int64), or None when a shard does not record them (one
        written before they were); call :meth:`scan` first."""
        rows, shards = [], {}
        for k in indices:
            path, row = self._index[k]
            if path not in shards:
                with np.load(path, allow_pickle=False) as shard:
                    shards[path] = shard["nfe"] if "nfe" in shard.files else None
            if shards[path] is None:
                return None
            rows.append(int(shards[path][row]))
        return torch.tensor(rows, dtype=torch.long)

    def _samples(self, path: Path) -> np.ndarray:
        if path not in self._cache:
            with np.load(path, allow_pickle=False) as shard:
                self._cache[path] = shard["samples"]
            if len(self._cache) > _CACHED_SHARDS:
                self._cache.popitem(last=False)
        self._cache.move_to_end(path)
        return self._cache[path]

    def batches(self, num_samples: int, batch_size: int) -> Iterator[tuple[list[int], Tensor]]:
        """``(indices, samples)`` of ``range(num_samples)`` in order, ``batch_size`` at a time."""
        for first in range(0, num_samples, batch_size):
            indices = list(range(first, min(first + batch_size, num_samples)))
            yield indices, self.read(indices)


def write_npz(path: str | os.PathLike[str], arrays: Mapping[str, tuple[tuple[int, ...], np.dtype, Iterator[np.ndarray]]]
              ) -> Path:  # fmt: skip
    """Write an ``.npz`` that ``np.load`` reads, each array streamed from chunks (memory: one chunk).

    Args:
        path: the file (written atomically).
        arrays: name -> (shape, dtype, chunks): the C-ordered chunks of the array, concatenated along axis 0.
    """
    with atomic_write(path) as file, zipfile.ZipFile(file, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, (shape, dtype, chunks) in arrays.items():
            header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
                      "shape": tuple(shape)}  # fmt: skip
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array_header_2_0(member, header)
                for chunk in chunks:
                    member.write(np.ascontiguousarray(chunk, dtype=dtype).tobytes())
    return Path(path)


# ------------------------------------------------------------------ what a set reports beside its samples


def noise_reference_for(datamodule: Any, image_shape: tuple[int, ...] | None) -> NoiseReference | str:
    """The real images the noisy share compares samples of ``image_shape`` with (the first 1,000 held-out images
    of ``datamodule``: :func:`~ncsn_pl.metrics.noisy_share.noise_reference`), or why there are none."""
    if datamodule is None:
        return "no real images"
    try:
        reference = noise_reference(datamodule)
    except (OSError, RuntimeError, ValueError) as err:
        return f"the real images cannot be read ({err})"
    if reference is None:
        return "the data are not images"
    mismatch = reference.mismatch(image_shape) if image_shape is not None else None
    return reference if mismatch is None else mismatch


def noisy_share_record(reference: NoiseReference | str, counts: Tensor | None) -> dict[str, Any]:
    """``noisy_share`` (the share of samples noisier than every real image of ``reference``, from the counts
    ``[noisy, total]``) and what it compared with, for ``sample.json`` / ``fid.json``; None and the reason when
    there was nothing to compare with."""
    if isinstance(reference, str) or counts is None:
        return {"noisy_share": None, "noisy_share_real": {"unavailable": reference}}
    return {"noisy_share": NoisyShare.share(counts), "noisy_share_real": reference.describe()}


def nfe_record(sampler: Sampler, num_scales: int, store: SampleStore, num_samples: int) -> dict[str, Any]:
    """The network evaluations per sample of a finished sample set: ``nfe`` (and, where it differs per sample,
    the mean as ``nfe`` and the largest as ``nfe_max``, counted while drawing and kept in the shards)."""
    fixed = sampler.nfe(num_scales)
    if fixed is not None:
        return {"nfe": fixed}
    counts = store.read_nfe(range(num_samples))
    if counts is None or counts.numel() == 0:
        return {"nfe": None}
    return {"nfe": round(counts.double().mean().item(), 2), "nfe_max": int(counts.max())}


def describe_nfe(record: dict[str, Any]) -> str:
    """``nfe`` of a record in words: the number, or the mean and the largest where it differs per sample."""
    if record.get("nfe_max") is None:
        return str(record.get("nfe"))
    return f"{record['nfe']} per sample on average, at most {record['nfe_max']}"


def describe_noisy_share(record: dict[str, Any]) -> str:
    """``noisy_share`` of a record in words, with what it compared with."""
    real = record.get("noisy_share_real") or {}
    if record.get("noisy_share") is None:
        return f"noisy share not measured ({real.get('unavailable', 'no real images')})"
    return (
        f"{record['noisy_share']:.1%} of the samples noisier than every one of the first {real['num_images']} "
        f"{real['split']} images"
    )
