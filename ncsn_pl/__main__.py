"""``python -m ncsn_pl <command> ...``: Lightning's commands and ours (fit, validate, test, sample, fid) through
LightningCLI, and the tools (sweep, compare), which need no Lightning and start without importing it."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import Any

# commands that are not Trainer runs: ``python -m ncsn_pl <name> ...`` calls ``<module>.main(argv)``
TOOLS = {"sweep": "ncsn_pl.tools.sweep", "compare": "ncsn_pl.tools.compare"}


def main(args: Sequence[str] | None = None) -> Any:
    """Run one command; ``args`` replaces ``sys.argv[1:]``."""
    args = list(sys.argv[1:] if args is None else args)
    if args and args[0] in TOOLS:
        return importlib.import_module(TOOLS[args[0]]).main(args[1:])
    from ncsn_pl.commands.cli import main as cli_main

    return cli_main(args)


if __name__ == "__main__":
    main()
    sys.exit(0)
