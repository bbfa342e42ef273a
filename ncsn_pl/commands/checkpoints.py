"""Lightning checkpoints of trained models: read one with errors that say what is wrong, load its weights."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from ncsn_pl.commands.official import load_official_model
from ncsn_pl.networks.base import check_trained_shape
from ncsn_pl.system.files import load_torch_file, read_torch_file

__all__ = [
    "check_training_checkpoint",
    "check_weights_fit",
    "load_checkpoint",
    "load_model_weights",
    "load_sampling_model",
    "newest_last_checkpoint",
]


def newest_last_checkpoint(root: str | os.PathLike[str]) -> Path | None:
    """The ``last.ckpt`` under a run root written most recently, or None: what ``--ckpt_path last`` continues.

    It is looked for in each run folder, ``root/version_N/checkpoints/last.ckpt``, and in ``root/checkpoints/`` (a
    run without a logger). The newest by modification time is the one a preempted job wrote last, so a requeued job
    that repeats its command continues its own run, also when the root holds older runs with more steps; ties go to
    the highest version. (Give each job of an array a root of its own: two live runs in one root would both find
    the newest; the second is refused, as its folder is held.)
    """
    root = Path(root)
    found = [*root.glob("version_*/checkpoints/last.ckpt"), *root.glob("checkpoints/last.ckpt")]

    def age(path: Path) -> tuple[int, int]:
        run = path.parents[1].name
        version = int(run[8:]) if run.startswith("version_") and run[8:].isdigit() else -1
        return path.stat().st_mtime_ns, version

    return max(found, key=age, default=None)


def load_checkpoint(ckpt_path: str | os.PathLike[str], weights_only: bool | None = None) -> dict[str, Any]:
    """Load a Lightning checkpoint on the CPU.

    Args:
        ckpt_path: a ``.ckpt`` file written by training.
        weights_only: ``torch.load``'s safe mode (default True); False only for files you trust.

    Raises:
        FileNotFoundError: nothing at ``ckpt_path``.
        ValueError: the file is not a PyTorch file, or not a Lightning checkpoint (no ``state_dict``).
    """
    checkpoint = load_torch_file(ckpt_path, weights_only=True if weights_only is None else weights_only)
    return _check_lightning_checkpoint(checkpoint, ckpt_path)


def _check_lightning_checkpoint(checkpoint: Any, ckpt_path: str | os.PathLike[str]) -> dict[str, Any]:
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise ValueError(
            f"--ckpt_path {str(ckpt_path)!r} is not a Lightning checkpoint (it has no 'state_dict'); give a .ckpt "
            "file written by training (e.g. <run dir>/checkpoints/last.ckpt)."
        )
    return checkpoint


def check_training_checkpoint(checkpoint: Any, ckpt_path: str, sampling: bool) -> None:
    """Refuse a file that is not a Lightning checkpoint (a bare state dict, another program's file) before any run
    starts: Lightning would stop on it with a ``KeyError`` after the run folder is made. ``sampling``: for ``sample``
    / ``fid`` / ``fid_nfe``, which need the weights only."""
    needed = ("state_dict",) if sampling else ("state_dict", "pytorch-lightning_version")
    lacks = [key for key in needed if not isinstance(checkpoint, dict) or key not in checkpoint]
    if lacks or not isinstance(checkpoint["state_dict"], dict):
        what = f"a {type(checkpoint).__name__}" if not isinstance(checkpoint, dict) else f"no {lacks[0]!r}"
        raise ValueError(
            f"--ckpt_path {ckpt_path!r} is not a Lightning checkpoint (it holds {what}); give a .ckpt file written by "
            "`python -m ncsn_pl fit` (e.g. <run dir>/checkpoints/last.ckpt)."
        )


def check_weights_fit(model: pl.LightningModule, shapes: Mapping[str, tuple[int, ...]] | None, ckpt_path: Any) -> None:
    """Refuse a checkpoint whose network weights (``score_net.*``) do not fit the model built (another network), before
    any run folder is made: Lightning would find out when it loads them, after."""
    if shapes is None:
        return
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items() if k.startswith("score_net.")}
    missing = sorted(expected.keys() - shapes.keys())
    unexpected = sorted(k for k in shapes.keys() - expected.keys() if k.startswith("score_net."))
    differ = sorted(k for k in expected.keys() & shapes.keys() if expected[k] != shapes[k])
    if not (missing or unexpected or differ):
        return
    problems = [f"{what} {', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''}"
                for what, keys in (("lacks", missing), ("has unknown", unexpected), ("has other shapes for", differ))
                if keys]  # fmt: skip
    raise ValueError(
        f"The weights in --ckpt_path {ckpt_path} do not fit the model built ({'; '.join(problems)}): it is another "
        "network's. Leave out the settings that change the network, or give a checkpoint of this model."
    )


def load_model_weights(model: pl.LightningModule, ckpt_path: str, weights_only: bool | None = None) -> dict[str, Any]:
    """Load the checkpoint's ``state_dict`` into ``model`` and describe what was loaded.

    With ``EMAWeightAveraging`` Lightning writes the *averaged* weights to ``state_dict`` (the raw ones go to
    ``current_model_state``), so this loads the EMA weights.

    Returns:
        ``{"checkpoint": path, "checkpoint_sha256": ..., "epoch": ..., "global_step": ..., "ema": bool}``, the sha256
        of the bytes the weights were loaded from (the file is read once), with ``wandb_run`` (``id``, ``project``,
        ``save_dir``) when the checkpoint names its run's W&B run.
    """
    checkpoint, sha256 = read_torch_file(ckpt_path, weights_only=True if weights_only is None else weights_only)
    checkpoint = _check_lightning_checkpoint(checkpoint, ckpt_path)
    trained_shape = checkpoint.get("hyper_parameters", {}).get("data_shape")
    check_trained_shape(trained_shape, getattr(model, "data_shape", None), f"--ckpt_path {ckpt_path}")
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as err:
        raise ValueError(
            f"The weights in {ckpt_path} do not fit the model built from the config: {str(err).splitlines()[0]} "
            "Leave out --config (the checkpoint's own settings are used) or give the run's config.yaml."
        ) from err
    if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
        raise ValueError(
            f"The weights in {ckpt_path} are not finite: the run diverged by step {checkpoint.get('global_step')}. "
            "Use an earlier checkpoint of the run (its checkpoints/ folder)."
        )
    loaded = {
        "checkpoint": str(Path(ckpt_path).resolve()),
        "checkpoint_sha256": sha256,
        "epoch": checkpoint.get("epoch"),
        "global_step": checkpoint.get("global_step"),
        "ema": "current_model_state" in checkpoint,
    }
    if isinstance(checkpoint.get("wandb_run"), dict):  # the training run's W&B run (ResumableCheckpoint)
        loaded["wandb_run"] = checkpoint["wandb_run"]
    return loaded


def load_sampling_model(
    model: pl.LightningModule,
    command: str,
    ckpt_path: str | None,
    weights_only: bool | None = None,
    official_ckpt: str | None = None,
    official_config: str | None = None,
) -> dict[str, Any]:
    """Load the weights a ``sample`` / ``fid`` run draws with: a Lightning checkpoint (``--ckpt_path``) or an
    official NCSN / NCSNv2 one (``--official_ckpt``, whose config built ``model``).

    Returns:
        What was loaded (:func:`load_model_weights`'s description, or the official checkpoint's), with
        ``checkpoint_sha256``, the sha256 of the bytes the weights came from (it names the checkpoint in sample sets).
    """
    if bool(ckpt_path) == bool(official_ckpt):
        raise ValueError(
            f"{command} needs --ckpt_path CKPT (a checkpoint written by training) or --official_ckpt FILE.pth (an "
            "official NCSN / NCSNv2 checkpoint), one of them."
        )
    if official_ckpt:
        loaded = load_official_model(model, official_ckpt, official_config)
    else:
        loaded = load_model_weights(model, ckpt_path, weights_only)
    return loaded
