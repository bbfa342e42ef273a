"""Drawing a sample set: :class:`DrawSamples`, the predict job that draws the missing samples of a set into its
:class:`~ncsn_pl.sample_sets.store.SampleStore` (the ``fid`` command's job derives from it), :class:`SampleRun`, the
``sample`` command's job (PNG files, a grid and an ``.npz``), a set's identity (:func:`prepare_sample_set`,
:func:`sampling_settings`) and reading a finished set back (:func:`sample_set_files`, :func:`open_sample_set`).

Sample ``k`` is seeded with ``step_seed(seed, k)``, so the output does not depend on the number of processes
(see :mod:`ncsn_pl.sample_sets.store` for the folder layout and what a rerun guarantees).
``--trainer.precision bf16-mixed`` samples under bf16 autocast; the loop runs in inference mode.

Each job runs as a Lightning *predict* loop over item indices (:func:`run_predict`), so it works on every accelerator
and strategy the Trainer supports, DDP included. The CLI builds its Trainer with no logger and no run-config saver:
``sample`` and ``fid`` write only what they are asked to (``--out_dir``, ``--out``).
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch import Tensor
from torch.utils.data import DataLoader, DistributedSampler

from ncsn_pl.core.samplers import NFECount, Sampler, describe_sampler
from ncsn_pl.core.seeding import NOISE
from ncsn_pl.data.image_files import save_grid, write_png
from ncsn_pl.metrics.noisy_share import NoiseReference, NoisyShare
from ncsn_pl.sample_sets.store import (
    RECORD,
    SHARDS,
    SampleStore,
    missing_batches,
    nfe_record,
    noisy_share_record,
    write_npz,
)
from ncsn_pl.system.errors import raised_on_every_rank
from ncsn_pl.training import ScoreModel
from ncsn_pl.training.progress import sampling_progress

__all__ = [
    "DrawSamples",
    "SampleRun",
    "open_sample_set",
    "prepare_sample_set",
    "run_predict",
    "sample_set_files",
    "sampling_settings",
    "uneven_split",
]


def sample_set_files(folder: str | Path) -> list[Path] | None:
    """The PNG files of the one sample set in ``folder`` (a ``sample`` output folder or its ``images/``): the
    indices its ``sample.json`` lists, so that files of another, larger set never join it; ``None`` when ``folder``
    is not a sample folder.

    Raises:
        FileNotFoundError: a listed file is missing.
        ValueError: the set is not complete (a preempted run: rerun its command to finish it).
    """
    folder = Path(folder)
    root = folder if (folder / RECORD).is_file() else folder.parent
    if not (root / RECORD).is_file() or not (root / "images").is_dir():
        return None
    record = json.loads((root / RECORD).read_text())
    num_samples = int(record["num_samples"])
    if record.get("complete") is False:
        raise ValueError(
            f"The sample set in {root} is not complete ({record.get('num_drawn', '?')} of {num_samples} drawn): rerun "
            "the command that drew it to finish it."
        )
    width = max(6, len(str(num_samples - 1)))
    files = [root / "images" / f"{k:0{width}d}.png" for k in range(num_samples)]
    missing = [p for p in files if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} of the {num_samples} samples {root / RECORD} lists are missing, e.g. "
                                f"{missing[0]}: draw them again with the same sample command.")
    return files


def open_sample_set(folder: str | Path) -> tuple[SampleStore, int] | None:
    """The complete sample set in ``folder`` (or its parent, for ``images/``) read from its shards, and its size;
    ``None`` when the folder has no shards.

    Raises:
        ValueError: the set is not complete.
    """
    folder = Path(folder)
    root = folder if (folder / RECORD).is_file() else folder.parent
    if not (root / RECORD).is_file() or not (root / SHARDS).is_dir():
        return None
    record = json.loads((root / RECORD).read_text())
    sample_set = {k: record[k] for k in record.get("sample_set_keys", [])}
    store = SampleStore(root, sample_set, record)
    num_samples = int(record["num_samples"])
    done = store.scan()
    if not record.get("complete") or not set(range(num_samples)) <= done:
        raise ValueError(
            f"The sample set in {root} is not complete ({len(done)} of {num_samples} drawn): rerun the command that "
            "drew it to finish it."
        )
    return store, num_samples


def _is_image_batch(x: Tensor) -> bool:
    return x.ndim == 4 and x.shape[1] in (1, 3)


def png_name(k: int, num_samples: int) -> str:
    return f"{k:0{max(6, len(str(num_samples - 1)))}d}.png"


class DrawSamples(pl.LightningModule):
    """Predict-loop job: draw this rank's batches of the samples not yet on disk, writing each batch as a shard (and
    its PNGs) as soon as it is drawn; a SIGTERM stops it after the batch in hand (exit status 143).

    With ``claim`` (the option naming the folder, for messages) the folder is checked and its record written at
    set-up by global rank 0 alone, which then broadcasts the batches to draw, or the reason it refused the folder,
    to every rank: no other process reads the folder while rank 0 writes it, and all stop together on a refusal.
    Subclasses finish the work in :meth:`on_predict_epoch_end` (after :meth:`wait_for_all_shards`).
    """

    def __init__(
        self,
        model: ScoreModel,
        store: SampleStore,
        batches: list[list[int]],
        *,
        num_samples: int,
        seed: int,
        sampler: Sampler | None,
        save_png: bool,
        batch_size: int = 1,
        claim: str | None = None,
        noise: NoiseReference | str = "not measured",
    ) -> None:
        super().__init__()
        self.model, self.store, self.batches = model, store, batches
        self.num_samples, self.seed, self.sampler, self.save_png = num_samples, seed, sampler, save_png
        self.batch_size, self.claim, self.noise = batch_size, claim, noise
        self.drawn, self._start = 0, 0.0
        self.complete_before = False  # (global rank 0) the folder held the whole set already: nothing is written

    def setup(self, stage: str) -> None:
        outcome: tuple[str, Any] = ("batches", self.batches)
        if self.trainer.is_global_zero and self.claim is not None:
            try:
                done = self.store.check(self.num_samples, self.claim)
                self.complete_before = self.store.is_complete(self.num_samples, done)
                if not self.complete_before:
                    self.store.write_record(complete=False, num_drawn=len(done))
                batches = missing_batches(done, self.num_samples, self.batch_size)
                if message := uneven_split(len(batches), self.batch_size, self.trainer.world_size):
                    warnings.warn(message, UserWarning, stacklevel=2)
                outcome = ("batches", batches)
            except ValueError as err:
                outcome = ("refused", str(err))
        kind, value = self.trainer.strategy.broadcast(outcome, src=0)  # rank 0's view of the folder
        if kind == "refused":
            raise raised_on_every_rank(ValueError(value), self.trainer.global_rank)
        self.batches = value

    def predict_dataloader(self) -> DataLoader:
        return _batch_loader(self.batches[self.trainer.global_rank :: self.trainer.world_size])

    def on_predict_start(self) -> None:
        self.drawn, self._start = 0, time.perf_counter()

    def predict_step(self, batch: Tensor, batch_idx: int) -> None:
        indices = batch.tolist()
        if not indices:  # this rank has nothing to draw
            return
        num_scales = self.model.num_scales
        show = self.trainer.is_global_zero and self.trainer.progress_bar_callback is not None  # rank 0's bar
        with sampling_progress(num_scales, self.sampler, 1, None, f"Sampling {indices[0]}..{indices[-1]}", show) as bar:
            counted = NFECount()
            samples = self.model.sample(indices, seed=self.seed, sampler=self.sampler, callback=bar,
                                        nfe_count=counted).float().cpu()  # fmt: skip
        if self.save_png and _is_image_batch(samples):
            for k, image in zip(indices, samples, strict=True):
                write_png(image, self.store.folder / "images" / png_name(k, self.num_samples))
        self.store.write_shard(indices, samples, counted.per_sample)  # last: a shard means its PNGs are too
        self.drawn += len(indices)
        if self.trainer.received_sigterm:
            print(f"SIGTERM: stopped after writing samples {indices[0]}..{indices[-1]} to {self.store.folder}; rerun "
                  "the same command to draw the rest.", flush=True)  # fmt: skip
            raise SIGTERMException

    def interrupted_hint(self) -> str | None:
        """What to say when Ctrl-C stops the job: where the samples drawn so far are and how to go on (``None``
        when it draws nothing)."""
        if self.claim is None:
            return None
        return (f"Interrupted: the samples drawn so far are written to {self.store.folder}; rerun the same command "
                "to draw the rest.")  # fmt: skip

    def wait_for_all_shards(self) -> None:
        if self.trainer.world_size > 1:
            self.trainer.strategy.barrier()

    def total_drawn(self) -> int:
        """The samples drawn by all ranks in this run (collective; on the root device, as NCCL requires)."""
        count = torch.tensor(float(self.drawn), device=self.trainer.strategy.root_device)
        return int(self.trainer.strategy.reduce(count, reduce_op="sum"))

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self._start


class SampleRun(DrawSamples):
    """``sample``: draw the missing samples; rank 0 then writes the .npz, the grid and the record."""

    def __init__(self, *args: Any, grid_size: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.grid_size = grid_size

    def on_predict_epoch_end(self) -> None:
        self.wait_for_all_shards()
        drawn = self.total_drawn()
        if self.trainer.is_global_zero and not self.complete_before:
            self._finish(drawn)
        self.wait_for_all_shards()

    def _finish(self, drawn: int) -> None:
        store, n = self.store, self.num_samples
        if not set(range(n)) <= store.scan():
            raise RuntimeError(f"Samples are missing from {store.shard_dir} after drawing; rerun the command.")
        first = store.read(range(min(n, 1)))
        shape, images = tuple(first.shape[1:]), _is_image_batch(first)
        low, high, finite = float("inf"), float("-inf"), True
        noisy = NoisyShare(self.noise) if isinstance(self.noise, NoiseReference) and images else None

        def chunks():
            nonlocal low, high, finite
            for indices, samples in store.batches(n, 256):
                finite = finite and bool(torch.isfinite(samples).all())
                low, high = min(low, float(samples.min())), max(high, float(samples.max()))
                if noisy is not None:
                    noisy.update(samples)
                if self.save_png and images:  # PNGs a run killed between the PNGs and the shard did not write
                    for k, image in zip(indices, samples, strict=True):
                        path = store.folder / "images" / png_name(k, n)
                        if not path.is_file():
                            write_png(image, path)
                yield samples.numpy()

        write_npz(store.folder / "samples.npz", {"samples": ((n, *shape), np.float32, chunks()),
                                                  "indices": ((n,), np.int64, iter([np.arange(n)]))})  # fmt: skip
        files = {"npz": "samples.npz", "shards": f"{SHARDS}/"}
        if images:
            save_grid(store.read(range(min(n, self.grid_size))), store.folder / "grid.png")
            files.update({"grid": "grid.png", **({"images": "images/"} if self.save_png else {})})
        seconds = self.seconds
        store.write_record(
            complete=True,
            num_drawn=n,
            drawn_by_this_run=drawn,
            seconds=round(seconds, 3),
            samples_per_second=round(drawn / seconds, 3) if seconds > 0 and drawn else None,
            world_size=self.trainer.world_size,
            finite=finite,
            min=low if finite else None,
            max=high if finite else None,
            **nfe_record(self.sampler, self.model.num_scales, store, n),
            **noisy_share_record(self.noise, noisy.counts() if noisy is not None else None),
            files=files,
        )


def sampling_settings(trainer: pl.Trainer, model: ScoreModel) -> dict[str, Any]:
    """What changes the samples besides the checkpoint, the seed, the sampler and the schedule: where the samples start
    (``model.init_range``), their shape, the arithmetic (``trainer.precision``, the weights' memory format) and the
    kind of device."""
    return {
        "init_range": [float(v) for v in model.hparams.init_range],
        "data_shape": list(model.data_shape),
        "precision": str(trainer.precision),
        "channels_last": bool(model.hparams.channels_last),
        "device_type": trainer.strategy.root_device.type,
    }


def prepare_sample_set(
    folder: Path, loaded: dict[str, Any], model: ScoreModel, sampler: Sampler, *, num_samples: int, seed: int,
    settings: dict[str, Any],
) -> SampleStore:  # fmt: skip
    """The sample set of a command in ``folder``; nothing is read or written here (:class:`DrawSamples` checks the
    folder against it, on global rank 0, and writes its record, ``complete: false`` until the last sample).
    ``settings`` are :func:`sampling_settings`; they belong to the set's identity with the checkpoint's sha256, seed,
    sampler and schedule."""
    sample_set = {
        "checkpoint_sha256": loaded["checkpoint_sha256"],
        "seed": seed,
        "noise": NOISE,  # the stream of the per-sample noise: another draws other samples
        "sampler": describe_sampler(sampler),
        "schedule": {"sigma_max": model.sigmas[0].item(), "sigma_min": model.sigmas[-1].item(),
                     "num_scales": model.num_scales},  # fmt: skip
        **settings,
    }
    record = {
        **loaded,
        "num_samples": num_samples,
        "nfe": sampler.nfe(model.num_scales),
        "sample_set_keys": list(sample_set),
    }
    return SampleStore(folder, sample_set, record)


def uneven_split(num_batches: int, batch_size: int, world_size: int) -> str | None:
    """What to say when ``num_batches`` batches do not split evenly over ``world_size`` processes (some draw one
    batch more while the others wait), else None."""
    extra = num_batches % world_size
    if world_size < 2 or extra == 0:
        return None
    return (
        f"{num_batches} batches of up to {batch_size} samples over {world_size} processes: {extra} process(es) draw "
        f"one batch more while the others wait. A --num_samples that is a multiple of --batch_size x processes "
        f"({batch_size * world_size}) splits evenly."
    )


# ------------------------------------------------------------------ the predict loop


class _AllItems(DistributedSampler):
    """Every item of a data set that is already this rank's share (a ``DistributedSampler``, so that Lightning
    does not shard it again)."""

    def __init__(self, num_items: int) -> None:
        super().__init__(range(max(num_items, 1)), num_replicas=1, rank=0, shuffle=False)
        self.num_items = num_items

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.num_items))

    def __len__(self) -> int:
        return self.num_items


def _batch_loader(batches: list[list[int]]) -> DataLoader:
    """This rank's batches of item indices as ``LongTensor`` s, one per step; an empty rank gets one empty batch, so
    that every rank runs the loop's start and end hooks (Lightning skips a loop with no batches, and those hooks make
    collective calls)."""
    items = batches or [[]]
    return DataLoader(items, batch_size=None, sampler=_AllItems(len(items)), collate_fn=_as_long_tensor)


def _as_long_tensor(indices: list[int]) -> Tensor:
    return torch.tensor(indices, dtype=torch.long)


def run_predict(trainer: pl.Trainer, job: pl.LightningModule, interrupted: str | None = None) -> None:
    """Run ``job`` through ``trainer.predict``.

    The jobs write their results themselves and return None from ``predict_step`` on purpose, so Lightning's
    warning about that is not shown. ``interrupted`` is printed by global rank 0 when Ctrl-C (SIGINT) stops the
    job (how to continue it), after Lightning's own line."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="predict returned None")
            trainer.predict(job, return_predictions=False)
    except SystemExit:  # how Lightning ends a KeyboardInterrupt (exit status 1)
        if interrupted and trainer.interrupted and trainer.is_global_zero:
            print(interrupted, flush=True)
        raise
