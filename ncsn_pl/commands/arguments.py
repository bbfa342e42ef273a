"""The command line before LightningCLI parses it: the ``--config`` files checked, and ``sample``, ``fid`` and
``fid_nfe`` completed from the checkpoint when no ``--config`` gives their model and data (complete_command_args).

Each config file is read once (:func:`read_config_files`), which refuses one that is not a YAML mapping (a syntax
error, an empty file) and names it: jsonargparse reports a YAML error in ``"<unicode string>"`` (which of several files
is not said) after its usage text, and an empty file as ``Unexpected config:``.

When two config files give the same list (``trainer.callbacks``, ``trainer.logger``) with the same number of items,
jsonargparse merges them item by item, keeping the earlier file's ``init_args`` that the later item does not set
(lists of another length replace the earlier one). An overlay that lists ``SampleGrid`` where the base config lists
``SampleQualityMonitor`` so gets a SampleGrid with the monitor's schedule and sampler, silently;
:func:`check_config_lists` names the item and what to do instead.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from ncsn_pl.commands.checkpoints import load_checkpoint
from ncsn_pl.commands.official import official_command_args
from ncsn_pl.networks import upgrade_network_config

__all__ = ["check_config_lists", "complete_command_args", "option_values", "read_config_files"]

COMMANDS = ("sample", "fid", "fid_nfe")
SCORING = ("fid", "fid_nfe")  # the commands that compare with real images
PLACEHOLDER_NET = {"class_path": "ncsn_pl.networks.NoScoreNetwork"}


def option_values(args: Sequence[str], *names: str) -> list[str]:
    """The values of ``--name X`` or ``--name=X`` in ``args`` for any of ``names``, in order."""
    values = []
    for i, arg in enumerate(args):
        for name in names:
            if arg == name and i + 1 < len(args):
                values.append(args[i + 1])
            elif arg.startswith(name + "="):
                values.append(arg[len(name) + 1 :])
    return values


def _option(args: Sequence[str], name: str) -> str | None:
    """The value of ``--name X`` or ``--name=X`` in ``args`` (the last one wins), else None."""
    values = option_values(args, name)
    return values[-1] if values else None


def _load(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None  # the parser reports unreadable files itself


def _class_of(item: Any, folder: Path) -> str | None:
    """The ``class_path`` of a list item: written in place, or in the YAML file the item names (a shared block)."""
    if isinstance(item, str) and item.endswith((".yaml", ".yml")):
        item = _load(folder / item)
    return item.get("class_path") if isinstance(item, dict) else None


def _class_lists(tree: Any, folder: Path, key: str = "") -> Iterator[tuple[str, list[str | None]]]:
    """``(dotted key, classes)`` of every list of class items in a config tree."""
    if isinstance(tree, dict):
        for name, value in tree.items():
            yield from _class_lists(value, folder, f"{key}.{name}" if key else str(name))
    elif isinstance(tree, list):
        classes = [_class_of(item, folder) for item in tree]
        if any(classes):
            yield key, classes


def read_config_files(args: Sequence[str]) -> list[tuple[Path, dict[str, Any] | None]]:
    """Each ``--config`` / ``-c`` file of ``args``, read once, with its settings (``None`` for a path that cannot be
    read: the parser says which is missing).

    Raises:
        ValueError: naming the first file that is not a YAML mapping of settings: a syntax error (with its line and
            column), an empty file, or a single value or list.
    """
    configs: list[tuple[Path, dict[str, Any] | None]] = []
    for path in map(Path, option_values(args, "--config", "-c")):
        try:
            text = path.read_text()
        except (OSError, ValueError):
            configs.append((path, None))
            continue
        try:
            tree = yaml.safe_load(text)
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            context = getattr(error, "context", None)
            problem = getattr(error, "problem", None) or str(error).splitlines()[0]
            raise ValueError(
                f"--config {path} is not valid YAML: {f'{context}, ' if context else ''}{problem}{where}; fix the file."
            ) from error
        if tree is None:
            raise ValueError(
                f"--config {path} is empty (no settings); write settings in it (e.g. `trainer:` then "
                "`  max_steps: 10`) or leave it out."
            )
        if not isinstance(tree, dict):
            raise ValueError(
                f"--config {path} holds a {type(tree).__name__}, not settings; write `key: value` lines in it (e.g. "
                "`trainer:` then `  max_steps: 10`)."
            )
        configs.append((path, tree))
    return configs


def check_config_lists(configs: Sequence[tuple[Path, Any]]) -> None:
    """Raise ``ValueError`` when a later config file of ``configs`` (:func:`read_config_files`) gives a list of as
    many class items as an earlier one with another class at some position (see the module's docstring)."""
    seen: dict[str, tuple[Path, list[str | None]]] = {}
    for path, tree in configs:
        for key, classes in _class_lists(tree, path.parent):
            earlier = seen.get(key)
            if earlier and len(earlier[1]) == len(classes):
                for i, (before, after) in enumerate(zip(earlier[1], classes, strict=True)):
                    if before and after and before != after:
                        raise ValueError(
                            f"{path} lists {after.rsplit('.', 1)[-1]} as item {i} of {key}, where {earlier[0]} lists "
                            f"{before.rsplit('.', 1)[-1]}; lists of the same length merge item by item, so it would "
                            f"keep {before.rsplit('.', 1)[-1]}'s settings. List the items in {earlier[0]}'s order "
                            f"({', '.join(c.rsplit('.', 1)[-1] if c else '?' for c in earlier[1])}), or give a list of "
                            "another length, which replaces the earlier one."
                        )
            seen[key] = (path, classes)


def _config_sections(configs: Sequence[tuple[Path, Any]]) -> set[str]:
    """Which of ``model`` (its network) and ``data`` the config files give: a config of a command's own options (say
    a list of ``samplers``) leaves both to the checkpoint."""
    sections: set[str] = set()
    for _, content in configs:
        if content is None:
            return {"model", "data"}  # LightningCLI reads it and says what is wrong
        if isinstance(content, dict):
            model = content.get("model")
            if isinstance(model, str) or (isinstance(model, dict) and ({"score_net", "class_path"} & model.keys())):
                sections.add("model")
            if content.get("data") is not None:
                sections.add("data")
    return sections


def _gives_model(args: Sequence[str]) -> bool:
    """Whether ``args`` give the model's network (``--model X``, ``--model=...``, ``--model.score_net...``), not only
    settings of it such as ``--model.n_steps_each``, which apply to the checkpoint's model."""
    return any(a in ("--model", "--model.score_net") or a.startswith(("--model=", "--model.score_net")) for a in args)


def _gives_data(args: Sequence[str]) -> bool:
    """Whether ``args`` give a whole DataModule (``--data X``, ``--data=...``, ``--data.class_path``), not only
    options of one."""
    return any(a == "--data" or a.startswith(("--data=", "--data.class_path")) for a in args)


# options that are switches: given alone they mean true (jsonargparse's booleans otherwise take a value)
SWITCHES = ("--wandb",)


def _switches_on(options: Sequence[str]) -> list[str]:
    """``--wandb`` alone (the last option, or followed by another option) as ``--wandb=true``."""
    given = list(options)
    for i, option in enumerate(given):
        if option in SWITCHES and (i + 1 == len(given) or given[i + 1].startswith("-")):
            given[i] = f"{option}=true"
    return given


def _sized_like(shape: Sequence[int] | None, dataset: str) -> dict[str, int]:
    """The ``ImageDataModule`` settings that give a data set the images a checkpoint was trained on (its size, and a
    folder's channels), so that the network draws at its own size and the real images are resized to it."""
    if shape is None or len(shape) != 3:
        return {}
    return {"image_size": int(shape[-1])} | ({"channels": int(shape[0])} if dataset == "folder" else {})


def complete_command_args(
    args: Sequence[str], configs: Sequence[tuple[Path, Any]] | None = None
) -> list[str]:
    """Fill in the model and the data of ``sample`` / ``fid`` / ``fid_nfe`` when no option or ``--config`` gives them.

    LightningCLI needs ``model.score_net`` and ``data`` before it reads the checkpoint, so for these two
    commands:

    * ``--ckpt_path CKPT`` without ``--config``/``--model``: the network from the checkpoint's hyperparameters
      (LightningCLI then reads the rest of them, and ``--model.*`` settings a checkpoint's model can change, such as
      ``--model.n_steps_each``, apply to it); without ``--data``: the checkpoint's DataModule;
    * ``fid --dataset NAME [--data_root DIR]``: ``ImageDataModule(dataset=NAME, root=DIR)`` as the real data, with a
      checkpoint's image size (and a folder's channels) so that its network draws at the size it was trained for;
    * ``fid --images DIR`` without a checkpoint: a placeholder network (no model is used);
    * ``--official_ckpt FILE.pth [--official_config config.yml]``: the network, schedule and sampler of the official
      config (:mod:`ncsn_pl.commands.official`) and, without ``--data``/``--dataset``, its data set;
    * ``fid --ref_stats FILE.npz`` with no real data: a placeholder DataModule (the file holds the statistics);
    * a switch (``--wandb``) given alone: ``--wandb=true``.

    Other commands and full configs pass through unchanged. The checkpoint is checked here, so a wrong path
    fails with a clear message before anything is built. ``configs``: the ``--config`` files as
    :func:`read_config_files` gave them (read here when not given).

    Raises:
        FileNotFoundError, ValueError: a missing or foreign checkpoint, or nothing to take the model/data from.
    """
    args = list(args)
    if not args or args[0] not in COMMANDS:
        return args
    command, options = args[0], _switches_on(args[1:])
    args = [command, *options]
    if "-h" in options or "--help" in options:
        return args
    ckpt_path = _option(options, "--ckpt_path")
    checkpoint = load_checkpoint(ckpt_path) if ckpt_path else None
    sections = _config_sections(read_config_files(options) if configs is None else configs)
    if "model" in sections and "data" in sections:  # a full config, e.g. the run's config.yaml
        return args
    extra: list[str] = []
    images = _option(options, "--images") if command == "fid" else None
    official_ckpt = _option(options, "--official_ckpt")
    official_data = None
    trained_shape = (checkpoint or {}).get("hyper_parameters", {}).get("data_shape")
    if official_ckpt:
        if ckpt_path:
            raise ValueError(f"{command} takes --ckpt_path or --official_ckpt, not both.")
        official_args, official_data, trained_shape = official_command_args(
            official_ckpt, _option(options, "--official_config"), _option(options, "--data_root")
        )
        if not _gives_model(options) and "model" not in sections:
            extra += official_args
    if not _gives_model(options) and "model" not in sections and not official_ckpt:
        if checkpoint is not None:
            net = checkpoint.get("hyper_parameters", {}).get("score_net")
            if not isinstance(net, dict) or "class_path" not in net:
                raise ValueError(
                    f"{ckpt_path} does not record its network (it was not trained with the ncsn_pl CLI); add "
                    "--config with the model's settings."
                )
            extra.append("--model.score_net=" + json.dumps(upgrade_network_config(net)))
        elif images or (command == "fid" and _option(options, "--export_stats")):
            extra.append("--model.score_net=" + json.dumps(PLACEHOLDER_NET))
        elif command == "sample":
            raise ValueError("sample needs --ckpt_path CKPT (a checkpoint written by training).")
        elif command == "fid_nfe":
            raise ValueError("fid_nfe needs --ckpt_path CKPT or --official_ckpt FILE.pth (a model to draw samples of).")
        else:
            raise ValueError(
                "fid needs --ckpt_path CKPT or --official_ckpt FILE.pth (to draw samples of a model) or --images DIR "
                "(a folder)."
            )
    # dotted --data.init_args.* options refine the DataModule built here
    if not _gives_data(options) and "data" not in sections:
        dataset = _option(options, "--dataset") if command in SCORING else None
        stored = (checkpoint or {}).get("datamodule_hyper_parameters") or {}
        if dataset:
            root = _option(options, "--data_root") or "data"
            init = {"dataset": dataset, "root": root, **_sized_like(trained_shape, dataset)}
            data = {"class_path": "ncsn_pl.data.ImageDataModule", "init_args": init}
        elif official_data is not None:
            data = official_data
        elif "_class_path" in stored:
            init = {k: v for k, v in stored.items() if not k.startswith("_")}
            data = {"class_path": stored["_class_path"], "init_args": init}
        elif command in SCORING and _option(options, "--ref_stats"):
            data = {"class_path": "ncsn_pl.data.ImageDataModule", "init_args": {"dataset": "digits"}}  # unused
        elif command in SCORING:
            raise ValueError(
                f"{command} needs real images to compare with: --dataset NAME (digits, mnist, fashion_mnist, cifar10, "
                "celeba, folder, hf:NAME) with --data_root DIR, a --data config, a checkpoint that records its "
                "DataModule, or --ref_stats FILE.npz (a paper's statistics)."
            )
        else:
            raise ValueError(
                f"{ckpt_path} does not record its DataModule (the model's data shape comes from it); add --config "
                "with the run's config.yaml or a --data option."
            )
        extra.append("--data=" + json.dumps(data))
    return [command, *extra, *options]
