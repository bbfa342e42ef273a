"""``python -m ncsn_pl <command> ...``: Lightning's commands and ours (fit, validate, test, sample, fid) through
LightningCLI, and the tools (sweep, compare, convert), which are not Trainer runs and start without importing
Lightning (convert builds a model with it once started).

A mistake in the input (a bad value, a missing file, a full disk, a diverged run) ends the process with one line
that says what to fix and exit status 1; ``NCSN_DEBUG=1`` shows the whole traceback instead. When every process
of a multi-process run stops on the same error, only global rank 0 prints it.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any

# commands that are not Trainer runs: ``python -m ncsn_pl <name> ...`` calls ``<module>.main(argv)``
TOOLS = {"sweep": "ncsn_pl.tools.sweep", "compare": "ncsn_pl.tools.compare", "convert": "ncsn_pl.commands.convert"}
# what the project raises for input it cannot use (RunFolderInUseError is a RuntimeError of its own)
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, FloatingPointError)


def main(args: Sequence[str] | None = None) -> Any:
    """Run one command; ``args`` replaces ``sys.argv[1:]`` (then the command line's arguments are used as given)."""
    if args is not None:
        args = list(args)
    elif sys.argv[1:2] and sys.argv[1] in TOOLS:
        args = sys.argv[1:]
    if args and args[0] in TOOLS:
        return importlib.import_module(TOOLS[args[0]]).main(args[1:])
    from ncsn_pl.commands.cli import main as cli_main

    return cli_main(args, tools=tool_descriptions())


def tool_descriptions() -> dict[str, str]:
    """Each tool's description (its ``--help`` text), for the top-level help."""
    return {name: importlib.import_module(module).DESCRIPTION for name, module in TOOLS.items()}


def _user_errors() -> tuple[type[BaseException], ...]:
    from ncsn_pl.training.run_logger import RunFolderInUseError

    return (*USER_ERRORS, RunFolderInUseError)


if __name__ == "__main__":
    try:
        main()
    except Exception as error:
        if os.environ.get("NCSN_DEBUG") or not isinstance(error, _user_errors()):
            raise
        from ncsn_pl.core.errors import reported_by_another_rank

        if reported_by_another_rank(error):  # every process stopped on it; global rank 0 says why
            sys.exit(1)
        print(f"error: {error}\n(NCSN_DEBUG=1 shows the traceback)", file=sys.stderr)
        sys.exit(1)
    sys.exit(0)
