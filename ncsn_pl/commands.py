"""The ``sample`` and ``fid`` commands (``python -m ncsn_pl sample|fid ...``), behind ``NCSNTrainer``'s methods.

Both run as a Lightning *predict* loop over sample indices (or image files), so they work on every accelerator
and strategy the Trainer supports, DDP included: rank ``r`` of ``W`` handles ``k = r, r + W, ...`` and sample
``k`` is seeded with ``step_seed(seed, k)`` (:mod:`ncsn_pl.sampling`), so the output does not depend on the
number of processes. ``--trainer.precision bf16-mixed`` samples under bf16 autocast; the loop runs in
inference mode. Loggers and the run-config saver are switched off for these runs: they write only what they
are asked to (``--out_dir``, ``--out``).

Without ``--config`` the model and the data are rebuilt from the checkpoint (:func:`complete_command_args`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.cli import SaveConfigCallback
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader, DistributedSampler

from ncsn_pl.callbacks import RealImages, check_sample_counts, langevin_progress, real_images, save_grid
from ncsn_pl.data.folder import find_images
from ncsn_pl.metrics import quantize_images
from ncsn_pl.module import ScoreModel
from ncsn_pl.sampling import seeded_model_samples, shard_indices

__all__ = ["complete_command_args", "load_checkpoint", "load_model_weights", "run_fid", "run_sample"]

COMMANDS = ("sample", "fid")
PLACEHOLDER_NET = {"class_path": "torch.nn.Identity"}


# ---------------------------------------------------------------------------------------------- checkpoints
def load_checkpoint(ckpt_path: str | os.PathLike[str], weights_only: bool | None = None) -> dict[str, Any]:
    """Load a Lightning checkpoint on the CPU, with errors that say what is wrong.

    Args:
        ckpt_path: a ``.ckpt`` file written by training.
        weights_only: ``torch.load``'s safe mode (default True); False only for files you trust.

    Raises:
        FileNotFoundError: nothing at ``ckpt_path``.
        ValueError: the file is not a PyTorch file, or not a Lightning checkpoint (no ``state_dict``).
    """
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(
            f"--ckpt_path {str(ckpt_path)!r} does not exist; give the path of a .ckpt file written by training "
            "(e.g. <run dir>/checkpoints/last.ckpt)."
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True if weights_only is None else weights_only)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, EOFError, ... for foreign files
        raise ValueError(
            f"--ckpt_path {str(path)!r} is not a readable PyTorch checkpoint ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}). Give a .ckpt file written by training."
        ) from err
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise ValueError(
            f"--ckpt_path {str(path)!r} is not a Lightning checkpoint (it has no 'state_dict'); give a .ckpt file "
            "written by training."
        )
    return checkpoint


def load_model_weights(model: ScoreModel, ckpt_path: str, weights_only: bool | None = None) -> dict[str, Any]:
    """Load the checkpoint's ``state_dict`` into ``model`` and describe what was loaded.

    With ``EMAWeightAveraging`` Lightning writes the *averaged* weights to ``state_dict`` (the raw ones go to
    ``current_model_state``), so this loads the EMA weights.

    Returns:
        ``{"checkpoint": path, "epoch": ..., "global_step": ..., "ema": bool}``.
    """
    checkpoint = load_checkpoint(ckpt_path, weights_only)
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as err:
        raise ValueError(
            f"The weights in {ckpt_path} do not fit the model built from the config: {str(err).splitlines()[0]} "
            "Leave out --config (the checkpoint's own settings are used) or give the run's config.yaml."
        ) from err
    return {
        "checkpoint": str(Path(ckpt_path).resolve()),
        "epoch": checkpoint.get("epoch"),
        "global_step": checkpoint.get("global_step"),
        "ema": "current_model_state" in checkpoint,
    }


# ---------------------------------------------------------------------------------------------- arguments
def _option(args: Sequence[str], name: str) -> str | None:
    """The value of ``--name X`` or ``--name=X`` in ``args`` (the last one wins), else None."""
    value = None
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(name + "="):
            value = arg[len(name) + 1 :]
    return value


def _has_group(args: Sequence[str], group: str) -> bool:
    return any(a == group or a.startswith((group + "=", group + ".")) for a in args)


def complete_command_args(args: Sequence[str]) -> list[str]:
    """Fill in the model and the data of ``sample`` / ``fid`` when no ``--config`` gives them.

    LightningCLI needs ``model.score_net`` and ``data`` before it reads the checkpoint, so for these two
    commands:

    * ``--ckpt_path CKPT`` without ``--config``/``--model``: the network from the checkpoint's hyperparameters
      (LightningCLI then reads the rest of them); without ``--data``: the checkpoint's DataModule;
    * ``fid --dataset NAME [--data_root DIR]``: ``ImageDataModule(dataset=NAME, root=DIR)`` as the real data;
    * ``fid --images DIR`` without a checkpoint: a placeholder network (no model is used).

    Other commands and full configs pass through unchanged. The checkpoint is checked here, so a wrong path
    fails with a clear message before anything is built.

    Raises:
        FileNotFoundError, ValueError: a missing or foreign checkpoint, or nothing to take the model/data from.
    """
    args = list(args)
    if not args or args[0] not in COMMANDS:
        return args
    command, options = args[0], args[1:]
    if "-h" in options or "--help" in options:
        return args
    ckpt_path = _option(options, "--ckpt_path")
    checkpoint = load_checkpoint(ckpt_path) if ckpt_path else None
    if _has_group(options, "--config") or _has_group(options, "-c"):
        return args
    extra: list[str] = []
    images = _option(options, "--images") if command == "fid" else None
    if not _has_group(options, "--model"):
        if checkpoint is not None:
            net = checkpoint.get("hyper_parameters", {}).get("score_net")
            if not isinstance(net, dict) or "class_path" not in net:
                raise ValueError(
                    f"{ckpt_path} does not record its network (it was not trained with the ncsn_pl CLI); add "
                    "--config with the model's settings."
                )
            extra.append("--model.score_net=" + json.dumps(net))
        elif images:
            extra.append("--model.score_net=" + json.dumps(PLACEHOLDER_NET))
        elif command == "sample":
            raise ValueError("sample needs --ckpt_path CKPT (a checkpoint written by training).")
        else:
            raise ValueError("fid needs --ckpt_path CKPT (to draw samples of a model) or --images DIR (a folder).")
    if not _has_group(options, "--data"):
        dataset = _option(options, "--dataset") if command == "fid" else None
        stored = (checkpoint or {}).get("datamodule_hyper_parameters") or {}
        if dataset:
            root = _option(options, "--data_root") or "data"
            data = {"class_path": "ncsn_pl.data.ImageDataModule", "init_args": {"dataset": dataset, "root": root}}
        elif "_class_path" in stored:
            init = {k: v for k, v in stored.items() if not k.startswith("_")}
            data = {"class_path": stored["_class_path"], "init_args": init}
        elif command == "fid":
            raise ValueError(
                "fid needs real images to compare with: --dataset NAME (digits, mnist, cifar10, celeba, folder) "
                "with --data_root DIR, a --data config, or a checkpoint that records its DataModule."
            )
        else:
            raise ValueError(
                f"{ckpt_path} does not record its DataModule (the model's data shape comes from it); add --config "
                "with the run's config.yaml or a --data option."
            )
        extra.append("--data=" + json.dumps(data))
    return [command, *extra, *options]


# ---------------------------------------------------------------------------------------------- predict plumbing
class _RankShard(DistributedSampler):
    """Items ``rank, rank + world, ...`` of ``range(num_items)``, without padding.

    A ``DistributedSampler`` so that Lightning keeps it instead of sharding the loader a second time.
    """

    def __init__(self, num_items: int, rank: int, world_size: int) -> None:
        super().__init__(range(num_items), num_replicas=world_size, rank=rank, shuffle=False)
        self.items = list(shard_indices(num_items, rank, world_size))

    def __iter__(self):  # noqa: ANN204
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


def _shard_loader(num_items: int, batch_size: int, trainer: pl.Trainer, collate_fn: Any = None) -> DataLoader:
    sampler = _RankShard(num_items, trainer.global_rank, trainer.world_size)
    return DataLoader(range(num_items), batch_size=batch_size, sampler=sampler, collate_fn=collate_fn)


def _predict(trainer: pl.Trainer, job: pl.LightningModule) -> None:
    """Run ``job`` through ``trainer.predict`` with no loggers and no config saver (nothing written elsewhere)."""
    saved_callbacks, saved_loggers = trainer.callbacks, trainer.loggers
    trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, SaveConfigCallback)]
    trainer.loggers = []
    try:
        trainer.predict(job, return_predictions=False)
    finally:
        trainer.callbacks, trainer.loggers = saved_callbacks, saved_loggers


def _show_progress(trainer: pl.Trainer) -> bool:
    return trainer.is_global_zero and trainer.progress_bar_callback is not None


def _sampler_settings(
    model: ScoreModel, n_steps_each: int | None, step_lr: float | None, denoise: bool | None
) -> dict[str, Any]:
    hp = model.hparams
    return {
        "n_steps_each": int(n_steps_each or hp.n_steps_each),
        "step_lr": float(step_lr or hp.step_lr),
        "denoise": bool(hp.denoise if denoise is None else denoise),
    }


def _is_image_batch(x: Tensor) -> bool:
    return x.ndim == 4 and x.shape[1] in (1, 3)


def _write_png(image: Tensor, path: Path) -> None:
    """One image (C, H, W) in [0, 1] as an 8-bit PNG, quantised exactly like ``save_image`` (and SampleQuality)."""
    array = quantize_images(image).permute(1, 2, 0).cpu().numpy()
    Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(path)


def _write_json(data: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


# ---------------------------------------------------------------------------------------------- sample
class _SampleRun(pl.LightningModule):
    """Predict-loop job: draw this rank's samples, write PNGs; rank 0 merges the ranks into an .npz and a grid."""

    def __init__(
        self,
        model: ScoreModel,
        *,
        num_samples: int,
        batch_size: int,
        seed: int,
        settings: dict[str, Any],
        out_dir: Path,
        save_png: bool,
        grid_size: int,
        record: dict[str, Any],
    ) -> None:
        super().__init__()
        self.model = model
        self.num_samples, self.batch_size, self.seed = num_samples, batch_size, seed
        self.settings, self.out_dir, self.save_png, self.grid_size = settings, out_dir, save_png, grid_size
        self.record = record
        self._chunks: list[tuple[Tensor, Tensor]] = []
        self._start = 0.0

    def predict_dataloader(self) -> DataLoader:
        return _shard_loader(self.num_samples, self.batch_size, self.trainer)

    def on_predict_start(self) -> None:
        self._chunks, self._start = [], time.perf_counter()

    def predict_step(self, batch: Tensor, batch_idx: int) -> None:
        indices = batch.tolist()
        total = self.model.num_scales * self.settings["n_steps_each"]
        with langevin_progress(total, f"Langevin (batch {batch_idx})", _show_progress(self.trainer)) as progress:
            samples = seeded_model_samples(self.model, indices, seed=self.seed, callback=progress, **self.settings)
        samples = samples.float().cpu()
        if self.save_png and _is_image_batch(samples):
            (self.out_dir / "images").mkdir(parents=True, exist_ok=True)
            width = max(6, len(str(self.num_samples - 1)))
            for k, image in zip(indices, samples, strict=True):
                _write_png(image, self.out_dir / "images" / f"{k:0{width}d}.png")
        self._chunks.append((batch.cpu(), samples))

    def on_predict_epoch_end(self) -> None:
        seconds = time.perf_counter() - self._start
        indices = torch.cat([c[0] for c in self._chunks]) if self._chunks else torch.empty(0, dtype=torch.long)
        samples = torch.cat([c[1] for c in self._chunks]) if self._chunks else torch.empty(0)
        rank, world = self.trainer.global_rank, self.trainer.world_size
        if world > 1:
            torch.save({"indices": indices, "samples": samples}, self.out_dir / f".shard-{rank}.pt")
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
            np.savez(self.out_dir / "samples.npz", samples=samples.numpy(), indices=indices.numpy())
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
            _write_json(self.record, self.out_dir / "sample.json")
        if world > 1:
            self.trainer.strategy.barrier()


def run_sample(
    trainer: pl.Trainer,
    model: ScoreModel,
    *,
    ckpt_path: str | None,
    weights_only: bool | None = None,
    num_samples: int = 64,
    out_dir: str = "samples",
    batch_size: int = 64,
    n_steps_each: int | None = None,
    step_lr: float | None = None,
    denoise: bool | None = None,
    seed: int = 0,
    save_png: bool = True,
    grid_size: int = 64,
) -> dict[str, Any]:
    """Draw ``num_samples`` samples of the checkpoint's model into ``out_dir`` (see ``NCSNTrainer.sample``).

    Returns:
        The record also written to ``<out_dir>/sample.json``.
    """
    if not ckpt_path:
        raise ValueError("sample needs --ckpt_path CKPT (a checkpoint written by training).")
    for name, value in (("num_samples", num_samples), ("batch_size", batch_size), ("grid_size", grid_size)):
        if value < 1:
            raise ValueError(f"--{name} must be >= 1, got {value}.")
    loaded = load_model_weights(model, ckpt_path, weights_only)
    settings = _sampler_settings(model, n_steps_each, step_lr, denoise)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    record = {
        **loaded,
        "num_samples": num_samples,
        "seed": seed,
        **settings,
        "sigma_max": model.sigmas[0].item(),
        "sigma_min": model.sigmas[-1].item(),
        "num_scales": model.num_scales,
    }
    job = _SampleRun(
        model,
        num_samples=num_samples,
        batch_size=batch_size,
        seed=seed,
        settings=settings,
        out_dir=out,
        save_png=save_png,
        grid_size=grid_size,
        record=record,
    )
    _predict(trainer, job)
    result = json.loads((out / "sample.json").read_text())
    if trainer.is_global_zero:
        print(
            f"Wrote {num_samples} samples to {out} ({result['samples_per_second']} samples/s on "
            f"{result['world_size']} process(es))."
        )
    return result


# ---------------------------------------------------------------------------------------------- fid
def _check_folder(files: list[Path], real: RealImages, channels: int) -> None:
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
        settings: dict[str, Any],
        quality_options: dict[str, Any],
        cache_dir: str | None,
        out: Path,
        record: dict[str, Any],
    ) -> None:
        super().__init__()
        self.model = model
        self.files, self.real, self.channels = files, real, channels
        self.num_items, self.batch_size, self.seed, self.settings = num_items, batch_size, seed, settings
        self.quality_options, self.cache_dir, self.out, self.record = quality_options, cache_dir, out, record
        self.quality: Any = None

    def setup(self, stage: str) -> None:
        from ncsn_pl.metrics import SampleQuality

        # built in each process (after any spawn), so no metric state is shared between processes
        self.quality = SampleQuality(**self.quality_options)

    def predict_dataloader(self) -> DataLoader:
        return _shard_loader(self.num_items, self.batch_size, self.trainer, collate_fn=self._collate)

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
        cached = self.quality.load_or_compute_real(
            lambda: real.shard(rank, world, self.batch_size),
            dataset=real.dataset,
            split=real.split,
            image_size=real.image_size,
            num_images=real.num_images,
            cache_dir=self.cache_dir,
        )
        self.record["real"]["from_cache"] = cached

    def predict_step(self, batch: Tensor, batch_idx: int) -> None:
        if self.files is not None:
            self.quality.update_fake(batch)  # uint8, taken as already quantised
            return
        total = self.model.num_scales * self.settings["n_steps_each"]
        with langevin_progress(total, f"Langevin (batch {batch_idx})", _show_progress(self.trainer)) as progress:
            samples = seeded_model_samples(
                self.model, batch.tolist(), seed=self.seed, callback=progress, **self.settings
            )
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
            _write_json(self.record, self.out)


def run_fid(
    trainer: pl.Trainer,
    model: ScoreModel,
    datamodule: pl.LightningDataModule | None,
    *,
    ckpt_path: str | None = None,
    weights_only: bool | None = None,
    images: str | None = None,
    split: str = "train",
    num_real: int | None = None,
    num_samples: int = 1000,
    batch_size: int = 100,
    n_steps_each: int | None = None,
    step_lr: float | None = None,
    denoise: bool | None = None,
    seed: int = 0,
    fid: bool = True,
    kid: bool = False,
    inception_score: bool = False,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    is_splits: int = 10,
    weights_path: str | None = None,
    feature_extractor: nn.Module | None = None,
    num_features: int | None = None,
    cache_dir: str | None = None,
    out: str = "fid.json",
) -> dict[str, Any]:
    """FID / KID / IS of a checkpoint's samples or of a folder of images (see ``NCSNTrainer.fid``).

    Returns:
        The record also written to ``out`` and printed: the metrics, the counts, the sources and the settings.
    """
    from ncsn_pl.metrics import resolve_inception_weights

    if bool(ckpt_path) == bool(images):
        raise ValueError("fid scores either --ckpt_path CKPT (samples of a model) or --images DIR, not both/neither.")
    if not (fid or kid or inception_score):
        raise ValueError("Nothing to compute: set at least one of --fid, --kid, --inception_score to true.")
    if batch_size < 1:
        raise ValueError(f"--batch_size must be >= 1, got {batch_size}.")
    if datamodule is None:
        raise ValueError("fid needs real images: --dataset NAME, a --data config, or a checkpoint's DataModule.")
    real = real_images(datamodule, split, num_real)
    channels = int(datamodule.data_shape[0])
    record: dict[str, Any] = {
        "real": {"dataset": real.dataset, "split": split, "image_size": real.image_size, "num_images": real.num_images}
    }
    files = None
    if images:
        files = find_images(images)
        _check_folder(files, real, channels)
        num_items = len(files)
        record["source"] = {"images": str(Path(images).resolve())}
        settings: dict[str, Any] = {}
    else:
        record["source"] = load_model_weights(model, ckpt_path, weights_only)
        settings = _sampler_settings(model, n_steps_each, step_lr, denoise)
        num_items = num_samples
        record["sampler"] = {"seed": seed, **settings}
    record["num_fake"] = num_items
    check_sample_counts(
        num_items,
        fid=fid,
        kid=kid,
        inception_score=inception_score,
        kid_subset_size=kid_subset_size,
        is_splits=is_splits,
        owner="fid" + (f" ({len(files)} images in {images})" if files is not None else ""),
    )
    if feature_extractor is None:
        # resolved once here: a clear error (listing the options) before any work, one conversion for all ranks
        weights_path = str(resolve_inception_weights(weights_path, require_classifier=inception_score))
    quality_options = {
        "fid": fid,
        "kid": kid,
        "inception_score": inception_score,
        "weights_path": weights_path,
        "feature_extractor": feature_extractor,
        "num_features": num_features,
        "kid_subsets": kid_subsets,
        "kid_subset_size": kid_subset_size,
        "is_splits": is_splits,
    }
    job = _QualityRun(
        model if files is None else None,
        files,
        real,
        channels=channels,
        num_items=num_items,
        batch_size=batch_size,
        seed=seed,
        settings=settings,
        quality_options=quality_options,
        cache_dir=cache_dir,
        out=Path(out),
        record=record,
    )
    _predict(trainer, job)
    result = json.loads(Path(out).read_text())
    if trainer.is_global_zero:
        print(json.dumps(result, indent=2))
    return result
