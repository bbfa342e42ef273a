"""``python -m ncsn_pl <command> ...``: Lightning's commands and ours (fit, validate, test, sample, fid) through
LightningCLI, and the tools (sweep, compare, convert), which are not Trainer runs and start without importing
Lightning (convert builds a model with it once started).

A mistake in the input (a bad value, a missing or corrupt file, a failed download, a full disk, a diverged run) ends
the process with one line that says what to fix and exit status 2, as argparse's errors do; any other failure shows
its traceback and exits with 1, a preempted run (SIGTERM) with 143. ``NCSN_DEBUG=1`` shows the traceback of a mistake
too. When every process of a multi-process run stops on the same error, only global rank 0 prints it.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any

from ncsn_pl.system.errors import USER_ERROR_EXIT_CODE, UserInputError, reported_by_another_rank

# commands that are not Trainer runs: ``python -m ncsn_pl <name> ...`` calls ``<module>.main(argv)``
TOOLS = {"sweep": "ncsn_pl.tools.sweep", "compare": "ncsn_pl.tools.compare", "convert": "ncsn_pl.commands.convert"}
# what the project raises for input it cannot use (RunFolderInUseError is a RuntimeError of its own)
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, FloatingPointError, UserInputError)


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
    from ncsn_pl.runs.logger import RunFolderInUseError

    return (*USER_ERRORS, RunFolderInUseError)


def command_line(args: Sequence[str] | None = None) -> int:
    """Run :func:`main` as ``python -m ncsn_pl`` does; the exit status: 0 when done, 2 after printing a mistake in the
    input in one line (a traceback with ``NCSN_DEBUG=1``). Any other error is raised (its traceback, status 1)."""
    try:
        main(args)
    except Exception as error:
        if os.environ.get("NCSN_DEBUG") or not isinstance(error, _user_errors()):
            raise
        if not reported_by_another_rank(error):  # every process stopped on it; global rank 0 says why
            print(f"error: {error}\n(NCSN_DEBUG=1 shows the traceback)", file=sys.stderr)
        return USER_ERROR_EXIT_CODE
    return 0


if __name__ == "__main__":
    sys.exit(command_line())
