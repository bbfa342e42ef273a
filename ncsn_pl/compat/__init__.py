"""Every private name of Lightning, jsonargparse / argparse and W&B's Lightning logger that ncsn-pl relies on.

Each is here because no public API does the job; :data:`PRIVATE_NAMES` says where each lives and why it is used.
``tests/test_compat.py`` asserts that every one still exists in the installed versions (an upgrade that moves one
fails there, with its name) and that no module outside this one uses a third-party private name not listed here.
Two kinds:

- ``hook``: a private method that a subclass elsewhere overrides or calls on itself (a checkpoint callback, the
  CSV writer, the CLI, the help formatter); listed here, defined there.
- ``attribute``: read or written only through the functions below.

``setup.cfg`` bounds these libraries to the minor releases this list was checked with.
"""

from __future__ import annotations

from typing import Any, NamedTuple

__all__ = [
    "PRIVATE_NAMES",
    "PrivateName",
    "add_tool_subcommand",
    "averaged_model",
    "given_hyperparameters",
    "help_is_preexpanded",
    "move_option_group",
    "started_wandb_run",
    "wandb_init_settings",
]


class PrivateName(NamedTuple):
    owner: str  # "module:Class" (a class's attribute or method) or "module" (a module's name)
    name: str
    kind: str  # "hook" or "attribute"
    why: str


_CHECKPOINT = "lightning.pytorch.callbacks.model_checkpoint:ModelCheckpoint"
_WRITER = "lightning.fabric.loggers.csv_logs:_ExperimentWriter"
_CLI = "lightning.pytorch.cli:LightningCLI"
_WANDB = "lightning.pytorch.loggers.wandb:WandbLogger"

PRIVATE_NAMES: tuple[PrivateName, ...] = (
    PrivateName(_CHECKPOINT, "_save_topk_checkpoint", "hook", "no save when the weights are not finite"),
    PrivateName(_CHECKPOINT, "_save_last_checkpoint", "hook", "last.ckpt mid-epoch and at the fit's end"),
    PrivateName(_CHECKPOINT, "_save_checkpoint", "hook", "remember the last checkpoint with finite weights"),
    PrivateName(_CHECKPOINT, "_should_skip_saving_checkpoint", "hook", "Lightning's own skip rules, kept"),
    PrivateName(_CHECKPOINT, "_monitor_candidates", "hook", "the values a checkpoint's name is formatted with"),
    PrivateName(_WRITER, "_rewrite_with_new_header", "hook", "rewrite metrics.csv atomically, not in place"),
    PrivateName(_WRITER, "_check_log_dir_exists", "hook", "no warning for a resumed run's own folder"),
    PrivateName(_CLI, "_add_subcommands", "hook", "the tools (sweep, compare, convert) in the top-level help"),
    PrivateName(_CLI, "_prepare_subcommand_parser", "hook", "a command's own options first in its help"),
    PrivateName(_CLI, "_parse_ckpt_path", "hook", "refuse settings a resumed run cannot change"),
    PrivateName("jsonargparse._formatters:DefaultHelpFormatter", "_get_help_string", "hook",
                "one whole sentence per option in --help"),
    PrivateName("jsonargparse._signatures:SignatureArguments", "_create_group_if_requested", "hook",
                "option groups titled with a whole sentence of the docstring"),
    PrivateName("jsonargparse._core:ArgumentParser", "_subcommands_action", "attribute",
                "add the tools to the command list"),
    PrivateName("argparse:ArgumentParser", "_action_groups", "attribute", "the order of the option groups"),
    PrivateName("jsonargparse._formatters", "_jsonargparse_preexpanded_help", "attribute",
                "help text jsonargparse has already expanded is not cut again"),
    PrivateName("lightning.pytorch.core.mixins.hparams_mixin", "_given_hyperparameters", "attribute",
                "whether LightningCLI builds the model (then the network's config is saved)"),
    PrivateName("lightning.pytorch.callbacks.weight_averaging:WeightAveraging", "_average_model", "attribute",
                "the EMA copy, to sample from during training"),
    PrivateName(_WANDB, "_wandb_init", "attribute", "the run's project; drop the unset 'anonymous'"),
    PrivateName(_WANDB, "_experiment", "attribute", "whether the run started (without starting it)"),
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


def started_wandb_run(logger: Any) -> Any:
    """A ``WandbLogger``'s run if it has started, else ``None`` (``logger.experiment`` would start one)."""
    return logger._experiment


def add_tool_subcommand(parser: Any, name: str, tool: Any, help: str) -> None:  # noqa: A002 - argparse's name
    """List ``tool`` (a parser of its own) among ``parser``'s subcommands."""
    parser._subcommands_action.add_subcommand(name, tool, help=help)


def move_option_group(parser: Any, group: Any, position: int) -> None:
    """Show ``group`` of ``parser`` at ``position`` in its ``--help``."""
    parser._action_groups.remove(group)
    parser._action_groups.insert(position, group)


def help_is_preexpanded(action: Any) -> bool:
    """Whether jsonargparse already expanded ``action``'s help (a subclass list): not to be cut again."""
    return bool(getattr(action, "_jsonargparse_preexpanded_help", False))
