"""A sweep command expanded the way ``wandb agent`` expands it."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["expand_command"]


def expand_command(
    command: Sequence[Any],
    params: Mapping[str, Any],
    extra_args: Sequence[str] = (),
    interpreter: str | None = None,
    program: str | None = None,
    args_json_file: str | None = None,
) -> list[str]:
    """Expand a sweep ``command`` the way ``wandb agent`` does.

    ``${env}`` -> ``/usr/bin/env``, ``${interpreter}`` -> this Python (the agent uses ``python`` from PATH),
    ``${program}``, ``${args}`` -> ``--key=value``, and the other ``${args_*}`` forms and ``${envvar:NAME}``
    through wandb's own ``create_sweep_command_args``/``create_sweep_command``. ``extra_args`` go just before
    the first ``${args...}`` (so the swept values win over an overlay ``--config``).
    """
    from wandb.sdk.launch.sweeps.utils import create_sweep_command, create_sweep_command_args

    sweep_vars: dict[str, Any] = create_sweep_command_args({"args": {k: {"value": v} for k, v in params.items()}})
    sweep_vars["interpreter"] = [interpreter or sys.executable]
    sweep_vars["env"] = ["/usr/bin/env"]
    sweep_vars["program"] = [program] if program else []
    sweep_vars["args_json_file"] = [args_json_file] if args_json_file else []
    expanded: list[str] = []
    extras_placed = False
    for token in create_sweep_command([str(c) for c in command]):
        token = str(token)
        if token.startswith("${") and token.endswith("}"):
            if token.startswith("${args") and not extras_placed:
                expanded += list(extra_args)
                extras_placed = True
            expanded += [str(v) for v in sweep_vars.get(token[2:-1]) or []]
        else:
            expanded.append(token)
    if not extras_placed:
        expanded += list(extra_args)
    return expanded
