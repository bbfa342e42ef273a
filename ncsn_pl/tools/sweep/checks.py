"""What a configured ``fit`` can log, read from its resolved config: a sweep's metric must be one of them.

A trial that can never report the sweep's metric fails only after it has trained; these checks name the fix
before any trial starts. They read the config ``--print_config`` resolves (nothing is built): the model logs
``train/loss``; a validation loop adds ``val/loss`` and its per-level parts; ``SampleQualityMonitor`` adds
``val/fid`` (and ``val/kid``, ``val/is``, ``val/precision``, ``val/recall`` when its ``quality`` enables them);
``ToySampleQuality`` adds ``val/sliced_wasserstein`` and ``val/mode_weight_error`` at each validation. A ``fid``
trial (a sweep of sampler settings on one checkpoint) reports the numbers of its JSON: ``fid`` and what its
``quality`` enables (``kid``, ``is``, ``precision``, ``recall``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ncsn_pl.tools.sweep.expand import expand_command

__all__ = [
    "check_command_starts",
    "check_fid_trial",
    "check_metric_logged",
    "check_not_forced_offline",
    "fid_metrics",
    "logged_metrics",
]

FID_MONITOR = "ncsn_pl.training.SampleQualityMonitor"
TOY_MONITOR = "ncsn_pl.training.ToySampleQuality"
# callbacks that log no metric of their own (any other outside ncsn_pl/lightning may log anything)
KNOWN_PREFIXES = ("ncsn_pl.", "lightning.", "pytorch_lightning.")
# QualityOptions switches and the keys they add (``val/<key>`` in a training run, ``<key>`` in fid's JSON)
QUALITY_KEYS = {"fid": ("fid",), "kid": ("kid",), "inception_score": ("is",), "precision_recall": ("precision",
                                                                                                   "recall")}


def _callbacks(config: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    callbacks = (config.get("trainer") or {}).get("callbacks") or []
    callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
    return [c for c in callbacks if isinstance(c, Mapping)]


def _class(callback: Mapping[str, Any]) -> str:
    return str(callback.get("class_path", ""))


def _validates(config: Mapping[str, Any]) -> bool:
    trainer = config.get("trainer") or {}
    limit = trainer.get("limit_val_batches", 1.0)
    return limit is None or float(limit) != 0.0


def logged_metrics(config: Mapping[str, Any]) -> tuple[dict[str, str], bool]:
    """The metrics a ``fit`` with this resolved config logs, ``{name: what logs it}``, and whether the list is
    complete (``False`` when a callback from outside ncsn_pl and Lightning may log more)."""
    metrics = {"train/loss": "the model (ScoreModel.training_step)"}
    validates = _validates(config)
    if validates:
        metrics["val/loss"] = "the validation loop (ScoreModel.validation_step)"
    complete = True
    for callback in _callbacks(config):
        kind, args = _class(callback), callback.get("init_args") or {}
        if kind.endswith("SampleQualityMonitor"):
            if not (args.get("every_n_epochs", 1) or args.get("every_n_steps") or args.get("on_train_end")):
                continue  # never evaluates
            metrics.update({f"val/{key}": kind for key in quality_metrics(args.get("quality") or {})})
        elif kind.endswith("ToySampleQuality") and validates:
            metrics.update({"val/sliced_wasserstein": kind, "val/mode_weight_error": kind})
        elif not kind.startswith(KNOWN_PREFIXES):
            complete = False
    return metrics, complete


def _fix(metric: str, config: Mapping[str, Any]) -> str:
    """How to make a run log ``metric``."""
    if metric in ("val/fid", "val/kid", "val/is", "val/precision", "val/recall"):
        return (f"add {FID_MONITOR} to trainer.callbacks (e.g. `- blocks/fid_every_5k.yaml`, or a config with one "
                "such as configs/digits_fid.yaml)" + ("" if metric == "val/fid" else
                                                      f" with the quality option that computes {metric}"))
    if metric in ("val/sliced_wasserstein", "val/mode_weight_error"):
        data = str((config.get("data") or {}).get("class_path", ""))
        if not data.endswith("ToyDataModule"):
            return "it needs data of known density (ncsn_pl.data.ToyDataModule); optimise val/fid for images"
        return f"add {TOY_MONITOR} to trainer.callbacks (configs/toy_mixture.yaml has one)"
    if metric.startswith("val/") and not _validates(config):
        return "trainer.limit_val_batches is 0: give the run a validation loop"
    return "optimise a metric the run logs"


def check_metric_logged(config: Mapping[str, Any], metric: str, command: str) -> list[str]:
    """Problems when a ``fit`` with this resolved config cannot log ``metric``; empty when it can (or may)."""
    metrics, complete = logged_metrics(config)
    # the per-level losses (val/loss_level_3) come with val/loss, the spread of KID and IS (val/kid_std) with them
    parent = "val/loss" if metric.startswith("val/loss_") else metric.removesuffix("_std")
    if metric in metrics or parent in metrics:
        return []
    if not complete:
        return []
    return [f"the metric {metric!r} is never logged by `{command}`: {_fix(metric, config)}. "
            f"It logs: {', '.join(sorted(metrics))}."]


def quality_metrics(quality: Mapping[str, Any]) -> list[str]:
    """The numbers a sample-quality ``quality`` block computes: ``fid`` unless off, and what it enables."""
    return [key for option, keys in QUALITY_KEYS.items() if quality.get(option, option == "fid") for key in keys]


def fid_metrics(config: Mapping[str, Any]) -> list[str]:
    """The numbers a ``fid`` command with this resolved config reports (the keys of its JSON)."""
    return quality_metrics(config.get("quality") or {})


def check_fid_trial(config: Mapping[str, Any], metric: str, command: str) -> list[str]:
    """Problems of a sweep trial that runs ``fid``: it must score a checkpoint, report the sweep's metric, and write
    its JSON where the runner reads it (``fid.json`` in the trial's ``trainer.default_root_dir``)."""
    problems = []
    if not (config.get("ckpt_path") or config.get("official_ckpt")):
        problems.append(f"`{command}` scores no checkpoint: give --ckpt_path (a sweep of sampler settings samples one "
                        "trained checkpoint).")
    reported = fid_metrics(config)
    if metric and metric not in reported:
        options = {k: o for o, keys in QUALITY_KEYS.items() for k in keys}
        fix = (f"enable it with --quality.{options[metric]}=true" if metric in options else
               f"optimise one of {', '.join(reported)} (the keys of fid's JSON; val/... are metrics of training runs)")
        problems.append(f"the metric {metric!r} is never reported by `{command}`: {fix}.")
    for option in ("out", "sample_dir"):
        if config.get(option):
            problems.append(f"`{command}` sets --{option}: leave it out, so that each trial writes fid.json and its "
                            "samples in its own folder (trainer.default_root_dir), where the sweep reads the metric.")
    return problems


def check_not_forced_offline(config: Mapping[str, Any]) -> list[str]:
    """Problems when a logger forces W&B offline: under ``wandb agent`` the trial must reach the sweep."""
    loggers = (config.get("trainer") or {}).get("logger")
    problems = []
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        if not isinstance(logger, Mapping) or not str(logger.get("class_path", "")).endswith("WandbLogger"):
            continue
        args = logger.get("init_args") or {}
        if args.get("offline") or str(args.get("mode", "")).lower() in ("offline", "disabled"):
            problems.append("its WandbLogger is forced offline (offline: true or mode), so under `wandb agent` no "
                            "trial would reach the sweep: remove that setting (W&B goes offline by itself without "
                            "credentials, and `python -m ncsn_pl sweep` sets WANDB_MODE=offline for its trials).")
    return problems


def check_command_starts(command: Sequence[Any], program: str | None) -> list[str]:
    """Problems that keep a command that is not ``-m ncsn_pl`` from starting: a missing executable, script or
    module (what can be checked without running it)."""
    import importlib.util

    tokens = expand_command(command, {}, program=program)
    if tokens[:1] == ["/usr/bin/env"]:
        tokens = tokens[1:]
    if not tokens:
        return ["`command` runs nothing."]
    executable = tokens[0]
    if shutil.which(executable) is None and not os.access(executable, os.X_OK):
        return [f"`command` cannot start: {executable!r} is not an executable file or on PATH."]
    if Path(executable).name.startswith("python") and len(tokens) > 1:
        if tokens[1] == "-m" and len(tokens) > 2 and importlib.util.find_spec(tokens[2].split(".")[0]) is None:
            return [f"`command` cannot start: no module {tokens[2]!r} in {executable}."]
        if tokens[1].endswith(".py") and not Path(tokens[1]).is_file():
            return [f"`command` cannot start: {tokens[1]!r} does not exist here (relative paths are taken from the "
                    "folder the sweep runs in, as `wandb agent` does)."]
    return []
