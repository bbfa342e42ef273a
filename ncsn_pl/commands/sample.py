"""The ``sample`` command: samples of a checkpoint as PNG files, a grid and an ``.npz``, on any number of devices.

Sample ``k`` is seeded with ``step_seed(seed, k)``, so the output does not depend on the batch size or the number
of processes. ``--trainer.precision bf16-mixed`` samples under bf16 autocast; the loop runs in inference mode.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from ncsn_pl.commands.checkpoints import load_model_weights
from ncsn_pl.commands.predict import run_predict, shard_loader, show_progress
from ncsn_pl.core.files import atomic_torch_save, atomic_write, atomic_write_json
from ncsn_pl.core.samplers import Sampler, describe_sampler
from ncsn_pl.data.image_files import save_grid, write_png
from ncsn_pl.training import ScoreModel
from ncsn_pl.training.progress import sampling_progress

__all__ = ["sample", "sample_set_files"]


RECORD = "sample.json"


def _check_out_dir(out: Path, sample_set: dict[str, Any]) -> None:
    """Refuse a non-empty ``out`` unless it holds this sample set (checkpoint, seed, sampler): its files are then
    the same samples, redrawn; anything else would mix two sample sets in one folder."""
    if not out.exists() or not any(out.iterdir()):
        return
    if not (out / RECORD).is_file():
        raise ValueError(f"--out_dir {out} is not empty and is not a sample folder (no {RECORD}): give a new folder.")
    previous = json.loads((out / RECORD).read_text())
    differ = {k: (previous.get(k), v) for k, v in sample_set.items() if previous.get(k) != v}
    if differ:
        listed = ", ".join(f"{k} {old!r} there, {new!r} here" for k, (old, new) in differ.items())
        raise ValueError(
            f"--out_dir {out} holds another sample set ({listed}); give a new folder, or delete it to replace them."
        )


def sample_set_files(folder: str | Path) -> list[Path] | None:
    """The PNG files of the one sample set in ``folder`` (a ``sample`` output folder or its ``images/``): the
    indices its ``sample.json`` lists, so that files of another, larger set never join it; ``None`` when ``folder``
    is not a sample folder.

    Raises:
        FileNotFoundError: a listed file is missing.
    """
    folder = Path(folder)
    root = folder if (folder / RECORD).is_file() else folder.parent
    if not (root / RECORD).is_file() or not (root / "images").is_dir():
        return None
    num_samples = int(json.loads((root / RECORD).read_text())["num_samples"])
    width = max(6, len(str(num_samples - 1)))
    files = [root / "images" / f"{k:0{width}d}.png" for k in range(num_samples)]
    missing = [p for p in files if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} of the {num_samples} samples {root / RECORD} lists are missing, e.g. "
                                f"{missing[0]}: draw them again with the same sample command.")
    return files


def _is_image_batch(x: Tensor) -> bool:
    return x.ndim == 4 and x.shape[1] in (1, 3)


class _SampleRun(pl.LightningModule):
    """Predict-loop job: draw this rank's samples, write PNGs; rank 0 merges the ranks into an .npz and a grid."""

    def __init__(
        self,
        model: ScoreModel,
        *,
        num_samples: int,
        batch_size: int,
        seed: int,
        sampler: Sampler,
        out_dir: Path,
        save_png: bool,
        grid_size: int,
        record: dict[str, Any],
    ) -> None:
        super().__init__()
        self.model = model
        self.num_samples, self.batch_size, self.seed = num_samples, batch_size, seed
        self.sampler, self.out_dir, self.save_png, self.grid_size = sampler, out_dir, save_png, grid_size
        self.record = record
        self._chunks: list[tuple[Tensor, Tensor]] = []
        self._start = 0.0

    def predict_dataloader(self) -> DataLoader:
        return shard_loader(self.num_samples, self.batch_size, self.trainer)

    def on_predict_start(self) -> None:
        self._chunks, self._start = [], time.perf_counter()

    def predict_step(self, batch: Tensor, batch_idx: int) -> None:
        indices = batch.tolist()
        num_scales, show = self.model.num_scales, show_progress(self.trainer)
        with sampling_progress(num_scales, self.sampler, 1, None, f"Sampling (batch {batch_idx})", show) as bar:
            samples = self.model.sample(indices, seed=self.seed, sampler=self.sampler, callback=bar)
        samples = samples.float().cpu()
        if self.save_png and _is_image_batch(samples):
            width = max(6, len(str(self.num_samples - 1)))
            for k, image in zip(indices, samples, strict=True):
                write_png(image, self.out_dir / "images" / f"{k:0{width}d}.png")
        self._chunks.append((batch.cpu(), samples))

    def on_predict_epoch_end(self) -> None:
        seconds = time.perf_counter() - self._start
        indices = torch.cat([c[0] for c in self._chunks]) if self._chunks else torch.empty(0, dtype=torch.long)
        samples = torch.cat([c[1] for c in self._chunks]) if self._chunks else torch.empty(0)
        rank, world = self.trainer.global_rank, self.trainer.world_size
        if world > 1:
            atomic_torch_save({"indices": indices, "samples": samples}, self.out_dir / f".shard-{rank}.pt")
            self.trainer.strategy.barrier()
        if rank == 0:
            if world > 1:
                shards = [torch.load(self.out_dir / f".shard-{r}.pt", weights_only=True) for r in range(world)]
                indices = torch.cat([s["indices"] for s in shards])
                samples = torch.cat([s["samples"] for s in shards if s["samples"].numel()])
                for r in range(world):
                    (self.out_dir / f".shard-{r}.pt").unlink()
            order = indices.argsort()
            indices, samples = indices[order], samples[order]
            with atomic_write(self.out_dir / "samples.npz") as file:
                np.savez(file, samples=samples.numpy(), indices=indices.numpy())
            files = {"npz": "samples.npz"}
            if _is_image_batch(samples):
                save_grid(samples[: self.grid_size], self.out_dir / "grid.png")
                files.update({"grid": "grid.png", **({"images": "images/"} if self.save_png else {})})
            finite = bool(torch.isfinite(samples).all())
            self.record.update(
                {
                    "seconds": round(seconds, 3),
                    "samples_per_second": round(self.num_samples / seconds, 3) if seconds > 0 else None,
                    "world_size": world,
                    "finite": finite,
                    "min": float(samples.min()) if finite else None,
                    "max": float(samples.max()) if finite else None,
                    "files": files,
                }
            )
            atomic_write_json(self.record, self.out_dir / RECORD)
        if world > 1:
            self.trainer.strategy.barrier()


def sample(
    trainer: pl.Trainer,
    model: ScoreModel,
    datamodule: pl.LightningDataModule | None = None,
    ckpt_path: str | None = None,
    weights_only: bool | None = None,
    num_samples: int = 64,
    out_dir: str = "samples",
    batch_size: int = 64,
    seed: int = 0,
    sampler: Sampler | None = None,
    save_png: bool = True,
    grid_size: int = 64,
) -> dict[str, Any]:
    """Draw samples of a checkpoint with annealed Langevin dynamics: PNG files, a grid and an .npz.

    Writes ``<out_dir>/images/<k>.png``, ``<out_dir>/grid.png`` (the first ``grid_size`` samples),
    ``<out_dir>/samples.npz`` (``samples``: float32 ``(N, C, H, W)``, unclamped; ``indices``) and
    ``<out_dir>/sample.json``. Without ``--config`` the model is rebuilt from the checkpoint; its
    ``state_dict`` holds the EMA weights when the run used ``EMAWeightAveraging``. Sample ``k`` is seeded
    with ``step_seed(seed, k)``, so the samples do not depend on ``batch_size`` or the number of devices.

    Args:
        trainer: the Trainer the CLI built (accelerator, devices, strategy, precision).
        model: the model (built from the checkpoint's hyperparameters or the config).
        datamodule: unused (the CLI passes it).
        ckpt_path: the checkpoint to sample.
        weights_only: load the checkpoint with ``torch.load(weights_only=...)`` (default True).
        num_samples: number of samples, over all devices.
        out_dir: output folder (created).
        batch_size: samples per sampler call on each device.
        seed: seed of the sample set.
        sampler: the sampler, by class and settings (``--sampler AnnealedLangevin --sampler.n_steps_each 5``,
            ``--sampler ProbabilityFlowODE --sampler.solver heun``); ``None``: the checkpoint's.
        save_png: write one PNG per sample (image data only).
        grid_size: samples in ``grid.png``.
    """
    if not ckpt_path:
        raise ValueError("sample needs --ckpt_path CKPT (a checkpoint written by training).")
    for name, value in (("num_samples", num_samples), ("batch_size", batch_size), ("grid_size", grid_size)):
        if value < 1:
            raise ValueError(f"--{name} must be >= 1, got {value}.")
    loaded = load_model_weights(model, ckpt_path, weights_only)
    sampler = model.resolve_sampler(sampler)
    out = Path(out_dir)
    _check_out_dir(out, {"checkpoint": loaded["checkpoint"], "seed": seed, "sampler": describe_sampler(sampler)})
    out.mkdir(parents=True, exist_ok=True)
    record = {
        **loaded,
        "num_samples": num_samples,
        "seed": seed,
        "sampler": describe_sampler(sampler),
        "nfe": sampler.nfe(model.num_scales),
        "sigma_max": model.sigmas[0].item(),
        "sigma_min": model.sigmas[-1].item(),
        "num_scales": model.num_scales,
    }
    job = _SampleRun(
        model,
        num_samples=num_samples,
        batch_size=batch_size,
        seed=seed,
        sampler=sampler,
        out_dir=out,
        save_png=save_png,
        grid_size=grid_size,
        record=record,
    )
    run_predict(trainer, job)
    result = json.loads((out / RECORD).read_text())
    if trainer.is_global_zero:
        print(
            f"Wrote {num_samples} samples to {out} ({result['samples_per_second']} samples/s on "
            f"{result['world_size']} process(es))."
        )
    return result
