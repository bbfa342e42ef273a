"""Every private name of Lightning (its W&B logger included) and argparse that ncsn-pl relies on.

Each is here because no public API does the job; :data:`PRIVATE_NAMES` says where each lives and why it is used.
``tests/test_compat.py`` asserts that every one still exists in the installed versions (an upgrade that moves one
fails there, with its name), that no module outside this one uses a third-party private name not listed here,
and that the list stays at ten names or fewer.
Two kinds:

- ``hook``: a private method that a subclass elsewhere overrides or calls on itself (the checkpoint callback, the
  CLI); listed here, defined there.
- ``attribute``: read or written only through the functions below.

``setup.cfg`` bounds these libraries to the minor releases this list was checked with.
"""

from __future__ import annotations

from typing import Any, NamedTuple

__all__ = [
    "PRIVATE_NAMES",
    "PrivateName",
    "averaged_model",
    "given_hyperparameters",
    "move_option_group",
    "wandb_init_settings",
]


class PrivateName(NamedTuple):
    owner: str  # "module:Class" (a class's attribute or method) or "module" (a module's name)
    name: str
    kind: str  # "hook" or "attribute"
    why: str


_CHECKPOINT = "lightning.pytorch.callbacks.model_checkpoint:ModelCheckpoint"
_CLI = "lightning.pytorch.cli:LightningCLI"
_WANDB = "lightning.pytorch.loggers.wandb:WandbLogger"

PRIVATE_NAMES: tuple[PrivateName, ...] = (
    PrivateName(_CHECKPOINT, "_save_topk_checkpoint", "hook", "no save when the weights are not finite"),
    PrivateName(_CHECKPOINT, "_save_last_checkpoint", "hook", "last.ckpt mid-epoch and at the fit's end"),
    PrivateName(_CHECKPOINT, "_save_checkpoint", "hook", "remember the last checkpoint with finite weights"),
    PrivateName(_CHECKPOINT, "_should_skip_saving_checkpoint", "hook", "Lightning's own skip rules, kept"),
    PrivateName(_CHECKPOINT, "_monitor_candidates", "hook", "the values a checkpoint's name is formatted with"),
    PrivateName(_CLI, "_parse_ckpt_path", "hook", "refuse settings a resumed run cannot change"),
    PrivateName("argparse:ArgumentParser", "_action_groups", "attribute", "the order of the option groups"),
    PrivateName("lightning.pytorch.core.mixins.hparams_mixin", "_given_hyperparameters", "attribute",
                "whether LightningCLI builds the model (then the network's config is saved)"),
    PrivateName("lightning.pytorch.callbacks.weight_averaging:WeightAveraging", "_average_model", "attribute",
                "the EMA copy, to sample from during training"),
    PrivateName(_WANDB, "_wandb_init", "attribute", "drop the unset 'anonymous' that W&B warns about"),
)


def given_hyperparameters() -> dict[str, Any] | None:
    """The arguments LightningCLI is building the model from, ``None`` outside LightningCLI."""
    from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters

    return _given_hyperparameters.get()


def averaged_model(callback: Any) -> Any:
    """The ``AveragedModel`` a ``WeightAveraging`` callback keeps (``None`` before training starts)."""
    return callback._average_model


def wandb_init_settings(logger: Any) -> dict[str, Any]:
    """The keyword arguments a ``WandbLogger`` passes to ``wandb.init`` when its run starts (a live dict)."""
    return logger._wandb_init


def move_option_group(parser: Any, group: Any, position: int) -> None:
    """Show ``group`` of ``parser`` at ``position`` in its ``--help``."""
    parser._action_groups.remove(group)
    parser._action_groups.insert(position, group)
