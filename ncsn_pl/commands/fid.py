"""The ``fid`` command: FID / KID / Inception Score / precision and recall of a checkpoint's samples or of a folder
of images, against a data set or a paper's reference statistics; resumable (the samples are kept in shards)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl

from ncsn_pl.commands.checkpoints import load_sampling_model
from ncsn_pl.core.samplers import Sampler, describe_sampler
from ncsn_pl.data.image_decoding import ImageHeader, is_grey
from ncsn_pl.data.image_files import find_images, read_headers, read_image
from ncsn_pl.metrics import QualityOptions, RealImages, read_reference_stats, real_images
from ncsn_pl.runs.wandb_glue import log_fid_result, log_to_sweep_run
from ncsn_pl.sample_sets.drawing import (
    open_sample_set,
    prepare_sample_set,
    run_predict,
    sample_set_files,
    sampling_settings,
)
from ncsn_pl.sample_sets.scoring import QualityRun, read_images
from ncsn_pl.sample_sets.store import noise_reference_for
from ncsn_pl.training import ScoreModel

__all__ = ["fid"]


def _check_folder(headers: list[ImageHeader], real: RealImages) -> None:
    """Every generated image must have the real images' size (read from the headers only)."""
    for header in headers:
        width, height = header.size
        if (height, width) != (real.image_size, real.image_size):
            raise ValueError(
                f"{header.source} is {width}x{height} but the real images ({real.dataset}) are {real.image_size}x"
                f"{real.image_size}: resize the generated images or compare with data of their size (e.g. "
                f"--data.init_args.image_size {height})."
            )


def _folder_channels(images: str, headers: list[ImageHeader], real_channels: int | None, real: str) -> int:
    """The channels the image files are scored in: their own (1 when every file is grey, else 3), which must be the
    real images' (``real_channels``; None with reference statistics, which do not say)."""
    channels = max(header.channels for header in headers)
    if real_channels is None or channels == real_channels:
        return channels
    if real_channels == 1:  # colour files may hold grey pixels: torchvision's save_image writes grey images as RGB
        for header in headers:
            if header.channels == 3 and not is_grey(read_image(header.source)):
                raise ValueError(
                    f"{header.source} is in colour but the real images ({real}) are greyscale: score colour images "
                    "against colour data (e.g. --data.init_args.channels 3 for a folder)."
                )
        return 1
    raise ValueError(
        f"The images in {images} are greyscale but the real images ({real}) have {real_channels} channels: score "
        "them against greyscale data (e.g. --data.init_args.channels 1 for a folder)."
    )


def default_sample_dir(out: str | Path) -> Path:
    """Where ``fid`` keeps the samples it draws when no ``--sample_dir`` is given: ``fid.json`` -> ``fid_samples/``."""
    out = Path(out)
    return out.with_name(f"{out.stem}_samples")


def fid(
    trainer: pl.Trainer,
    model: ScoreModel,
    datamodule: pl.LightningDataModule | None = None,
    ckpt_path: str | None = None,
    weights_only: bool | None = None,
    official_ckpt: str | None = None,
    official_config: str | None = None,
    images: str | None = None,
    dataset: str | None = None,
    data_root: str = "data",
    split: Literal["train", "val"] = "train",
    num_real: int | None = None,
    ref_stats: str | None = None,
    export_stats: str | None = None,
    num_samples: int = 1000,
    batch_size: int = 100,
    seed: int = 0,
    sampler: Sampler | None = None,
    sample_dir: str | None = None,
    quality: QualityOptions = QualityOptions(),
    out: str | None = None,
    wandb: bool = False,
    wandb_project: str | None = None,
    wandb_name: str | None = None,
    wandb_run_id: str | None = None,
) -> dict[str, Any]:
    """Compute FID / KID / IS / precision-recall of a checkpoint's samples or of a folder of images; resumable.

    Prints the result and writes it to ``out`` as JSON: the metrics, the noisy share (``noisy_share``: the share of
    samples noisier in total variation than every one of the first 1,000 held-out images of the data, so that a
    diverged sampler does not pass as a high FID), the number of samples and of real images, the sampler and its NFE
    (its mean and largest, ``nfe_max``, where it differs per sample), the feature extractor and where the real
    statistics came from. The real images are
    ``--data`` (a config), or ``--dataset NAME --data_root DIR``, or the checkpoint's own DataModule; their
    statistics are streamed through the feature extractor and cached on disk. ``--ref_stats FILE.npz`` uses a
    paper's statistics instead (pytorch-fid / TTUR ``mu``, ``sigma``, or score_sde ``pool_3``), and
    ``--export_stats FILE.npz`` writes the real statistics in use in the pytorch-fid layout (alone, without a
    checkpoint or images, it only exports). A checkpoint's samples are kept in ``--sample_dir`` in shards as they are
    drawn: rerunning the same command after a preemption draws only the missing ones and gives the same numbers.
    Images are scored as 8-bit PNGs with the TF-FID Inception network (offline weights, see ``ncsn_pl.metrics``).
    In a sweep trial (``wandb agent``, ``python -m ncsn_pl sweep``) the numbers are also logged to the trial's W&B run
    (``fid``, ``kid``, ``is``, ``precision``, ``recall`` as in the JSON, with ``nfe`` and ``num_samples``), so a sweep
    of sampler settings on one checkpoint samples only. ``--wandb`` logs them to W&B in any run: into the
    checkpoint's training run when the checkpoint names it (beside its curves, at its step), else a new run.

    Args:
        trainer: the Trainer the CLI built (accelerator, devices, strategy, precision).
        model: the model (built from the checkpoint's hyperparameters or the config).
        datamodule: the real data (the CLI passes it).
        ckpt_path: a checkpoint whose samples are scored.
        weights_only: load the checkpoint with ``torch.load(weights_only=...)`` (default True).
        official_ckpt: an official NCSN / NCSNv2 checkpoint (``.pth``) whose samples are scored instead.
        official_config: its config (default: the ``config.yml`` beside it).
        images: a folder of generated images (png/jpg/tif/...), or a sample folder, to score instead of a checkpoint.
            The files are read in their own channels (1 when every file is grey, else 3), scaled by their bit depth,
            and must match the real images in size and channels (colour files whose pixels are all grey count as
            grey); with ``ref_stats`` their own channels are used.
        dataset: the real data set (digits, mnist, fashion_mnist, cifar10, celeba, folder) when no ``--data`` is
            given (read before parsing, to build the DataModule).
        data_root: where that data set lives.
        split: the real split to compare with.
        num_real: real images in the statistics (default: the whole split).
        ref_stats: a reference statistics file (``.npz``) to compare with instead of real images, or a published one
            by name (``cifar10-train``, ``lsun-bedroom-train``, ``cifar10-train-score_sde``; fetched into the cache).
        export_stats: write the real statistics (``mu``, ``sigma``) to this ``.npz`` (pytorch-fid layout).
        num_samples: samples drawn from the checkpoint, over all devices.
        batch_size: samples (or images) per step on each device.
        seed: seed of the sample set (sample k is seeded with step_seed(seed, k)).
        sampler: the sampler, by class and settings (``--sampler AnnealedLangevin --sampler.step_lr 1e-5``);
            ``None``: the checkpoint's. Its network evaluations per sample are recorded (``nfe``).
        sample_dir: where the samples are kept (default ``out`` without its suffix, plus ``_samples``).
        quality: the metrics (``--quality.kid true``, ``--quality.precision_recall true``, ...), the feature extractor
            and the statistics cache.
        out: the JSON file to write (default ``fid.json`` in ``--trainer.default_root_dir``, which is the working
            folder unless set, and a sweep trial's own folder in a sweep).
        wandb: also log the numbers to W&B (offline, for ``wandb sync``, when W&B has no credentials).
        wandb_project: the W&B project (default: the checkpoint's run's, else ``ncsn-pl``).
        wandb_name: the name of a new W&B run (default: W&B's).
        wandb_run_id: the W&B run to add the numbers to (default: the checkpoint's training run when it names it,
            else a new run).
    """
    out = out or str(Path(trainer.default_root_dir) / "fid.json")
    draws = bool(ckpt_path or official_ckpt)
    if draws and images:
        raise ValueError("fid scores either --ckpt_path CKPT (samples of a model) or --images DIR, not both.")
    if not draws and not images and not export_stats:
        raise ValueError("fid scores either --ckpt_path CKPT (samples of a model) or --images DIR, not neither.")
    if batch_size < 1:
        raise ValueError(f"--batch_size must be >= 1, got {batch_size}.")
    if ref_stats:  # before any work: a published file is fetched, and one that cannot serve these metrics refused
        read_reference_stats(ref_stats, quality)
    real, record = None, {"real": {}}
    if not ref_stats:
        if datamodule is None:
            raise ValueError("fid needs real images: --dataset NAME, a --data config, or a checkpoint's DataModule.")
        real = real_images(datamodule, split, num_real)
        record["real"] = {**real.cache_key()}
    # without real images (--ref_stats) the DataModule is a placeholder: its channels are not the images'
    real_channels = int(datamodule.data_shape[0]) if real is not None else None
    channels = real_channels or 3
    files = store = resolved = None
    num_items, shape = 0, None
    if images:
        opened = open_sample_set(images)
        if opened is not None:
            store, num_items = opened
            shape = tuple(store.record.get("data_shape") or ()) or None
            size = shape[-1] if shape else None
            if real is not None and size not in (None, real.image_size):
                raise ValueError(
                    f"The samples in {store.folder} are {size}x{size} but the real images ({real.dataset}) are "
                    f"{real.image_size}x{real.image_size}: compare with data of their size (e.g. "
                    f"--data.init_args.image_size {size})."
                )
            if real is not None and shape and shape[0] not in (None, real_channels):
                raise ValueError(
                    f"The samples in {store.folder} have {shape[0]} channel(s) but the real images ({real.dataset}) "
                    f"have {real_channels}: compare with data of their channels (e.g. --data.init_args.channels "
                    f"{shape[0]} for a folder)."
                )
        else:
            files = sample_set_files(images) or find_images(images)
            headers = read_headers(files)
            if real is not None:
                _check_folder(headers, real)
            channels = _folder_channels(images, headers, real_channels, real.dataset if real else "")
            num_items = len(files)
            shape = tuple(read_images(files[:1], channels).shape[1:]) if files else None
        record["source"] = {"images": str(Path(images).resolve())}
    elif draws:
        loaded = load_sampling_model(model, "fid", ckpt_path, weights_only, official_ckpt, official_config)
        resolved = model.resolve_sampler(sampler)
        folder = Path(sample_dir) if sample_dir else default_sample_dir(out)
        store = prepare_sample_set(
            folder, loaded, model, resolved, num_samples=num_samples, seed=seed,
            settings=sampling_settings(trainer, model),
        )  # fmt: skip
        num_items = num_samples
        record["source"] = loaded
        record["sample_dir"] = str(folder.resolve())
        record["sampler"] = {"seed": seed, **describe_sampler(resolved), "nfe": resolved.nfe(model.num_scales)}
        shape = tuple(model.data_shape)
    record["num_samples"] = record["num_fake"] = num_items
    if num_items:
        quality.check_sample_count(num_items, owner="fid" + (f" ({num_items} images in {images})" if images else ""))
    job = QualityRun(
        model if draws else None,
        store,
        [],
        files=files,
        real=real,
        ref_stats=ref_stats,
        export_stats=export_stats,
        channels=channels,
        num_items=num_items,
        batch_size=batch_size,
        # resolved once here: a clear error (listing the options) before any work, one conversion for all ranks
        options=quality.with_resolved_weights(),
        out=Path(out),
        record=record,
        num_samples=num_items,
        seed=seed,
        sampler=resolved,
        save_png=False,
        claim="--sample_dir" if draws else None,
        noise=noise_reference_for(datamodule, shape) if num_items else "no samples",
    )
    run_predict(trainer, job, interrupted=job.interrupted_hint())
    result = json.loads(Path(out).read_text())
    if trainer.is_global_zero:
        print(json.dumps(result, indent=2))
        if wandb:
            _log_to_wandb(result, trainer.default_root_dir, wandb_project, wandb_name, wandb_run_id)
        else:
            log_to_sweep_run(result, trainer.default_root_dir)
    return result


def _log_to_wandb(result: dict[str, Any], root: str, project: str | None, name: str | None, run_id: str | None) -> None:
    """``--wandb``: the result into the given run, else the checkpoint's training run (under its save_dir when it is
    there), else a new run under ``root``."""
    source = result.get("source") or {}
    trained = source.get("wandb_run") or {}
    if run_id is None and trained.get("id"):
        run_id, project = trained["id"], project or trained.get("project")
        root = trained["save_dir"] if Path(trained.get("save_dir") or "").is_dir() else root
    run = log_fid_result(result, root, project=project or "ncsn-pl", name=name, run_id=run_id,
                         step=source.get("global_step"))  # fmt: skip
    print(f"Logged to W&B run {run} (project {project or 'ncsn-pl'}).")
