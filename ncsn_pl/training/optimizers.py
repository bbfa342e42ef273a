"""The optimizer and its learning-rate schedule: Adam with the papers' settings, or the ones given on the command
line the LightningCLI way (``--optimizer``, ``--lr_scheduler``: a ``class_path`` and its ``init_args``).

Another optimizer than the model's Adam (any of torch's by name; model.lr, betas, eps and weight_decay are then not
used). A learning-rate schedule, stepped after every optimizer step (ReduceLROnPlateau: every epoch).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from lightning.pytorch.cli import instantiate_class

__all__ = [
    "DEFAULT_ADAM",
    "OPTIMIZER_TITLE",
    "SCHEDULE_TITLE",
    "adam_settings",
    "make_optimizers",
    "optimizer_settings",
]

# the --help titles of --optimizer and --lr_scheduler (sentences of this module's docstring)
OPTIMIZER_TITLE = (
    "Another optimizer than the model's Adam (any of torch's by name; model.lr, betas, eps and weight_decay are then "
    "not used)"
)
SCHEDULE_TITLE = "A learning-rate schedule, stepped after every optimizer step (ReduceLROnPlateau: every epoch)"

# NCSN (Song & Ermon 2019) and NCSNv2 (2020) train with Adam; only the learning rate differs (1e-3, 1e-4)
DEFAULT_ADAM = {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0}


def adam_settings(hparams: Mapping[str, Any]) -> dict[str, Any]:
    """The model's Adam settings (``model.lr``, ``betas``, ``eps``, ``weight_decay``)."""
    return {key: tuple(hparams[key]) if key == "betas" else hparams[key] for key in DEFAULT_ADAM}


def optimizer_settings(hparams: Mapping[str, Any]) -> dict[str, Any]:
    """The settings of this run's optimizer: ``--optimizer``'s ``init_args``, else the model's Adam settings."""
    given = hparams.get("optimizer")
    if not given:
        return adam_settings(hparams)
    settings = given.get("init_args", {})
    return {key: tuple(value) if isinstance(value, list) else value for key, value in settings.items()}


def make_optimizers(parameters: Iterable[torch.nn.Parameter], hparams: Mapping[str, Any]) -> Any:
    """What ``configure_optimizers`` returns: ``--optimizer`` (else Adam with the model's settings) and, with
    ``--lr_scheduler``, its schedule, stepped after every optimizer step (``ReduceLROnPlateau``: every epoch, on its
    ``monitor``)."""
    given = hparams.get("optimizer")
    if given:
        optimizer = instantiate_class(parameters, dict(given))
    else:
        optimizer = torch.optim.Adam(parameters, **adam_settings(hparams))
    schedule = hparams.get("lr_scheduler")
    if not schedule:
        return optimizer
    scheduler = instantiate_class(optimizer, dict(schedule))
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):  # Lightning's names the metric it watches
        plateau = {"scheduler": scheduler, "interval": "epoch", "monitor": getattr(scheduler, "monitor", None)}
        return {"optimizer": optimizer, "lr_scheduler": plateau}
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
