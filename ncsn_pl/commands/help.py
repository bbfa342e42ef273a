"""A compact ``--help``: one whole sentence per option with its type and default, the command's own options first.

Lightning's Trainer alone has about 50 options with paragraphs of help; the full text stays one command away
(``--trainer.help``, ``--model.help CLASS``, Lightning's documentation).
"""

from __future__ import annotations

import copy
import inspect
import re
from argparse import SUPPRESS, Action
from typing import Any

from jsonargparse import DefaultHelpFormatter
from lightning.pytorch.cli import LightningArgumentParser

from ncsn_pl.compat import move_option_group

__all__ = ["COMMAND_USAGE", "CompactHelpFormatter", "HelpParser", "first_sentence", "put_groups_first"]

# a command's usage line: its options are too many to list (argparse's default lists every one)
COMMAND_USAGE = "%(prog)s [-h] [-c CONFIG] [--print_config] [OPTION VALUE ...]"

# a full stop (or ! ?) then white space or the end; the sentence ends there unless inside brackets or ``literals``
_STOP = re.compile(r"[.!?](?=\s|$)")
# words whose full stop does not end a sentence (``e.g. (1, 28, 28)``)
_ABBREVIATIONS = ("e.g", "i.e", "ie", "eg", "cf", "vs", "etc", "al", "approx", "resp", "incl", "no")


def _depth_changes(text: str) -> list[int]:
    """The bracket depth after each character, ``literals`` counted as one level."""
    depth, literal, depths = 0, False, []
    i = 0
    while i < len(text):
        if text.startswith("``", i):
            literal = not literal
            depth += 1 if literal else -1
            depths += [depth, depth]
            i += 2
            continue
        if not literal:
            if text[i] in "([{":
                depth += 1
            elif text[i] in ")]}":
                depth = max(depth - 1, 0)
        depths.append(depth)
        i += 1
    return depths


def first_sentence(text: str | None) -> str:
    """The first whole sentence of the first paragraph of ``text`` (white space joined, a full stop at the end).

    A full stop inside brackets or a ````literal````, or after an abbreviation (``e.g.``), does not end it; a
    paragraph with no full stop is taken whole.
    """
    if not text:
        return ""
    paragraph = " ".join(re.split(r"\n\s*\n", inspect.cleandoc(text).strip(), maxsplit=1)[0].split())
    depths = _depth_changes(paragraph)
    for stop in _STOP.finditer(paragraph):
        end = stop.start()
        words = paragraph[:end].rsplit(None, 1)
        word = words[-1].lstrip("([{\"'").lower() if words else ""
        if depths[end] == 0 and word not in _ABBREVIATIONS:
            return paragraph[: end + 1]
    return paragraph.rstrip(".:;,") + "."


def put_groups_first(parser: Any, names: list[str], title: str) -> None:
    """Show the option groups ``names`` of ``parser`` (those it has) right after the general options (``-h``,
    ``--config``), in that order; the first one titled ``title``."""
    groups = [parser.groups[name] for name in names if name in parser.groups]
    if groups and names[0] in parser.groups:
        groups[0].title = title
    for position, group in enumerate(groups, 2):  # after argparse's positionals and options
        move_option_group(parser, group, position)


class HelpParser(LightningArgumentParser):
    """Lightning's parser that keeps its subcommands (``commands``), so the CLI can list the tools among them and put
    each command's own options first."""

    commands: Any = None

    def add_subcommands(self, *args: Any, **kwargs: Any) -> Any:
        """jsonargparse's subcommands, each listed with the first whole sentence of its help (Lightning gives the
        first line of the method's docstring, which may end mid-sentence)."""
        commands = super().add_subcommands(*args, **kwargs)
        add_subcommand = commands.add_subcommand

        def add_with_sentence(name: str, parser: Any, **options: Any) -> Any:
            if options.get("help"):
                options["help"] = first_sentence(options["help"])
            return add_subcommand(name, parser, **options)

        commands.add_subcommand = add_with_sentence
        self.commands = commands
        return commands


class CompactHelpFormatter(DefaultHelpFormatter):
    """jsonargparse's formatter with the first whole sentence of each description; subclass lists only for the
    model. (A command's usage line is short: :data:`COMMAND_USAGE`.)"""

    def start_section(self, heading: str | None) -> None:
        # a group of a nested dataclass (fid's --quality) is titled with its parameter's whole description
        super().start_section(" ".join(heading.split()) if heading else heading)

    def add_argument(self, action: Action) -> None:
        """Format a copy of ``action`` whose help is its first whole sentence (a help jsonargparse writes itself, a
        subclass list, is left whole)."""
        shown = copy.copy(action)
        if isinstance(action.help, str) and action.help != SUPPRESS:
            # Lightning's --seed_everything text lacks a space after a full stop ("instantiation.Set")
            shown.help = first_sentence(action.help.replace("instantiation.Set", "instantiation. Set"))
        extra_help = getattr(action, "extra_help", None)
        if callable(extra_help) and not action.dest.startswith("model."):  # Lightning's long lists of loggers, ...
            shown.extra_help = lambda: re.sub(r", known subclasses: [^)]*", "", extra_help())
        super().add_argument(shown)
