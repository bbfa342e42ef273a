"""The ``fid`` command: FID / KID / Inception Score of a checkpoint's samples or of a folder of images."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader

from ncsn_pl.commands.checkpoints import load_model_weights
from ncsn_pl.commands.predict import run_predict, shard_loader, show_progress
from ncsn_pl.commands.sample import sample_set_files
from ncsn_pl.core.files import atomic_write_json
from ncsn_pl.core.samplers import Sampler, describe_sampler
from ncsn_pl.data.image_files import find_images
from ncsn_pl.metrics import QualityOptions, RealImages, SampleQuality, real_images
from ncsn_pl.training import ScoreModel
from ncsn_pl.training.progress import sampling_progress

__all__ = ["fid"]


def _check_folder(files: list[Path], real: RealImages) -> None:
    """Every generated image must have the real images' size (read from the headers only)."""
    for path in files:
        with Image.open(path) as image:
            width, height = image.size
        if (height, width) != (real.image_size, real.image_size):
            raise ValueError(
                f"{path} is {width}x{height} but the real images ({real.dataset}) are {real.image_size}x"
                f"{real.image_size}: resize the generated images or compare with data of their size (e.g. "
                f"--data.init_args.image_size {height})."
            )


class _QualityRun(pl.LightningModule):
    """Predict-loop job: real statistics (cached), this rank's generated images, metrics over all ranks."""

    def __init__(
        self,
        model: ScoreModel | None,
        files: list[Path] | None,
        real: RealImages,
        *,
        channels: int,
        num_items: int,
        batch_size: int,
        seed: int,
        sampler: Sampler | None,
        options: QualityOptions,
        out: Path,
        record: dict[str, Any],
    ) -> None:
        super().__init__()
        self.model = model
        self.files, self.real, self.channels = files, real, channels
        self.num_items, self.batch_size, self.seed, self.sampler = num_items, batch_size, seed, sampler
        self.options, self.out, self.record = options, out, record
        self.quality: SampleQuality | None = None

    def setup(self, stage: str) -> None:
        # built in each process (after any spawn), so no metric state is shared between processes
        self.quality = SampleQuality(self.options)

    def predict_dataloader(self) -> DataLoader:
        return shard_loader(self.num_items, self.batch_size, self.trainer, collate_fn=self._collate)

    def _collate(self, items: list[int]) -> Tensor:
        if self.files is None:
            return torch.tensor(items, dtype=torch.long)
        mode = "L" if self.channels == 1 else "RGB"
        arrays = []
        for i in items:
            with Image.open(self.files[i]) as image:
                arrays.append(np.asarray(image.convert(mode)))
        batch = torch.from_numpy(np.stack(arrays))
        return batch.unsqueeze(1) if batch.ndim == 3 else batch.permute(0, 3, 1, 2)

    def on_predict_start(self) -> None:
        self._start = time.perf_counter()
        self.quality.to(self.device)
        rank, world, real = self.trainer.global_rank, self.trainer.world_size, self.real
        cached = self.quality.load_or_compute_real(lambda: real.shard(rank, world, self.batch_size), **real.cache_key())
        self.record["real"]["from_cache"] = cached

    def predict_step(self, batch: Tensor, batch_idx: int) -> None:
        if self.files is not None:
            self.quality.update_fake(batch)  # uint8, taken as already quantised
            return
        num_scales, show = self.model.num_scales, show_progress(self.trainer)
        with sampling_progress(num_scales, self.sampler, 1, None, f"Sampling (batch {batch_idx})", show) as bar:
            samples = self.model.sample(batch.tolist(), seed=self.seed, sampler=self.sampler, callback=bar)
        self.quality.update_fake(samples.float())

    def on_predict_epoch_end(self) -> None:
        results = self.quality.compute()  # collective: every rank gets the value over all ranks
        if self.trainer.is_global_zero:
            seconds = time.perf_counter() - self._start
            self.record.update(results)
            self.record.update(
                {
                    "seconds": round(seconds, 3),
                    "world_size": self.trainer.world_size,
                    "feature_extractor": self.quality.feature_extractor_id,
                }
            )
            atomic_write_json(self.record, self.out)


def fid(
    trainer: pl.Trainer,
    model: ScoreModel,
    datamodule: pl.LightningDataModule | None = None,
    ckpt_path: str | None = None,
    weights_only: bool | None = None,
    images: str | None = None,
    dataset: str | None = None,
    data_root: str = "data",
    split: Literal["train", "val"] = "train",
    num_real: int | None = None,
    num_samples: int = 1000,
    batch_size: int = 100,
    seed: int = 0,
    sampler: Sampler | None = None,
    quality: QualityOptions = QualityOptions(),
    out: str = "fid.json",
) -> dict[str, Any]:
    """Compute FID / KID / Inception Score of a checkpoint's samples or of a folder of images against a data set.

    Prints the result and writes it to ``out`` as JSON. The real images are ``--data`` (a config), or
    ``--dataset NAME --data_root DIR``, or the checkpoint's own DataModule; their statistics are cached on
    disk. Images are scored as 8-bit PNGs with the TF-FID Inception network (offline weights, see
    ``ncsn_pl.metrics``).

    Args:
        trainer: the Trainer the CLI built (accelerator, devices, strategy, precision).
        model: the model (built from the checkpoint's hyperparameters or the config).
        datamodule: the real data (the CLI passes it).
        ckpt_path: a checkpoint whose samples are scored.
        weights_only: load the checkpoint with ``torch.load(weights_only=...)`` (default True).
        images: a folder of generated images (png/jpg/...) to score instead of a checkpoint.
        dataset: the real data set (digits, mnist, cifar10, celeba, folder) when no ``--data`` is given (read
            before parsing, to build the DataModule).
        data_root: where that data set lives.
        split: the real split to compare with.
        num_real: real images in the statistics (default: the whole split).
        num_samples: samples drawn from the checkpoint, over all devices.
        batch_size: samples (or images) per step on each device.
        seed: seed of the sample set (sample k is seeded with step_seed(seed, k)).
        sampler: the sampler, by class and settings (``--sampler AnnealedLangevin --sampler.step_lr 1e-5``);
            ``None``: the checkpoint's. Its network evaluations per sample are recorded (``nfe``).
        quality: the metrics (``--quality.kid true``, ...), the feature extractor and the statistics cache.
        out: the JSON file to write.
    """
    if bool(ckpt_path) == bool(images):
        raise ValueError("fid scores either --ckpt_path CKPT (samples of a model) or --images DIR, not both/neither.")
    if batch_size < 1:
        raise ValueError(f"--batch_size must be >= 1, got {batch_size}.")
    if datamodule is None:
        raise ValueError("fid needs real images: --dataset NAME, a --data config, or a checkpoint's DataModule.")
    real = real_images(datamodule, split, num_real)
    channels = int(datamodule.data_shape[0])
    record: dict[str, Any] = {"real": {**real.cache_key()}}
    files, resolved = None, None
    if images:
        files = sample_set_files(images) or find_images(images)
        _check_folder(files, real)
        num_items = len(files)
        record["source"] = {"images": str(Path(images).resolve())}
    else:
        record["source"] = load_model_weights(model, ckpt_path, weights_only)
        resolved = model.resolve_sampler(sampler)
        num_items = num_samples
        record["sampler"] = {"seed": seed, **describe_sampler(resolved), "nfe": resolved.nfe(model.num_scales)}
    record["num_fake"] = num_items
    quality.check_sample_count(num_items, owner="fid" + (f" ({num_items} images in {images})" if images else ""))
    job = _QualityRun(
        model if files is None else None,
        files,
        real,
        channels=channels,
        num_items=num_items,
        batch_size=batch_size,
        seed=seed,
        sampler=resolved,
        # resolved once here: a clear error (listing the options) before any work, one conversion for all ranks
        options=quality.with_resolved_weights(),
        out=Path(out),
        record=record,
    )
    run_predict(trainer, job)
    result = json.loads(Path(out).read_text())
    if trainer.is_global_zero:
        print(json.dumps(result, indent=2))
    return result
