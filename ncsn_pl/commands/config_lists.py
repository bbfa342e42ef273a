"""Refuse ``--config`` files that are not YAML mappings (a syntax error, an empty file), naming the file, and those
whose lists of classes would merge item by item into other classes' settings.

jsonargparse reports a YAML error in ``"<unicode string>"`` (which of several files is not said) after its usage
text, and an empty file as ``Unexpected config:``; :func:`check_config_files` says which file and what is wrong.

When two config files give the same list (``trainer.callbacks``, ``trainer.logger``) with the same number of items,
jsonargparse merges them item by item, keeping the earlier file's ``init_args`` that the later item does not set
(lists of another length replace the earlier one). An overlay that lists ``SampleGrid`` where the base config lists
``SampleQualityMonitor`` so gets a SampleGrid with the monitor's schedule and sampler, silently. This check names the
item and what to do instead.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from ncsn_pl.commands.arguments import option_values

__all__ = ["check_config_files", "check_config_lists"]


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


def check_config_files(args: Sequence[str]) -> None:
    """Raise ``ValueError`` naming the first ``--config`` / ``-c`` file of ``args`` that is not a YAML mapping of
    settings: a syntax error (with its line and column), an empty file, or a single value or list. Paths that are not
    files are left to the parser (it says which is missing)."""
    for path in map(Path, option_values(args, "--config", "-c")):
        try:
            text = path.read_text()
        except (OSError, ValueError):
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


def check_config_lists(args: Sequence[str]) -> None:
    """Raise ``ValueError`` when a later ``--config`` / ``-c`` file of ``args`` gives a list of as many class items
    as an earlier one with another class at some position (see the module's docstring)."""
    seen: dict[str, tuple[Path, list[str | None]]] = {}
    for path in map(Path, option_values(args, "--config", "-c")):
        for key, classes in _class_lists(_load(path), path.parent):
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
