"""A compact ``--help``: one sentence per option with its type and default, and a one-line usage.

Lightning's Trainer alone has about 50 options with paragraphs of help; the full text stays one command away
(``--trainer.help``, ``--model.help CLASS``, Lightning's documentation).
"""

from __future__ import annotations

import re
from argparse import SUPPRESS, Action, _SubParsersAction

from jsonargparse import DefaultHelpFormatter

__all__ = ["CompactHelpFormatter"]

_SENTENCE_END = re.compile(r"(?<=[.:;])\s|\n\s*\n")


class CompactHelpFormatter(DefaultHelpFormatter):
    """jsonargparse's formatter with the first sentence of each description; subclass lists only for the model."""

    def _format_usage(self, usage, actions, groups, prefix) -> str:  # noqa: ANN001 - argparse's signature
        if prefix == "" or any(isinstance(a, _SubParsersAction) for a in actions):
            # the top level (its commands), or argparse building a subcommand's name ("python -m ncsn_pl fit")
            return super()._format_usage(usage, actions, groups, prefix).replace("__main__.py", "python -m ncsn_pl")
        prog = self._prog.replace("__main__.py", "python -m ncsn_pl")
        return f"usage: {prog} [-h] [-c CONFIG] [--print_config] [OPTION VALUE ...]\n\n"

    def _get_help_string(self, action: Action) -> str:
        full = action.help
        if full and full != SUPPRESS and not getattr(action, "_jsonargparse_preexpanded_help", False):
            action.help = _SENTENCE_END.split(full.strip(), maxsplit=1)[0].rstrip(".:;") + "."
        try:
            text = super()._get_help_string(action)
        finally:
            action.help = full
        if not action.dest.startswith("model."):  # Lightning's long lists of accelerators, loggers, ...
            text = re.sub(r", known subclasses: [^)]*", "", text)
        return text
