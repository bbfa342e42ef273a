"""A compact ``--help``: one whole sentence per option with its type and default, the command's own options first.

Lightning's Trainer alone has about 50 options with paragraphs of help; the full text stays one command away
(``--trainer.help``, ``--model.help CLASS``, Lightning's documentation).
"""

from __future__ import annotations

import inspect
import re
from argparse import SUPPRESS, Action
from typing import Any

from jsonargparse import DefaultHelpFormatter
from lightning.pytorch.cli import LightningArgumentParser

from ncsn_pl.compat import help_is_preexpanded, move_option_group

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
    """Lightning's parser whose option groups are titled with the first whole sentence of the class's (or method's)
    docstring: jsonargparse takes the docstring's first line, which may end mid-sentence."""

    def _create_group_if_requested(self, obj: Any, nested_key: Any, as_group: bool, doc_group: Any, *args: Any,
                                   **kwargs: Any) -> Any:  # fmt: skip
        documented = obj[0] if isinstance(obj, tuple) and len(obj) == 1 else obj
        doc = inspect.getdoc(documented) if not isinstance(documented, tuple) else None
        if doc and doc_group is not None:
            doc_group = first_sentence(doc)
        return super()._create_group_if_requested(obj, nested_key, as_group, doc_group, *args, **kwargs)


class CompactHelpFormatter(DefaultHelpFormatter):
    """jsonargparse's formatter with the first whole sentence of each description; subclass lists only for the
    model. (A command's usage line is short: :data:`COMMAND_USAGE`.)"""

    def start_section(self, heading: str | None) -> None:
        # a group of a nested dataclass (fid's --quality) is titled with its parameter's whole description
        super().start_section(" ".join(heading.split()) if heading else heading)

    def _get_help_string(self, action: Action) -> str:
        full = action.help
        if full and full != SUPPRESS and not help_is_preexpanded(action):
            # Lightning's --seed_everything text lacks a space after a full stop ("instantiation.Set")
            action.help = first_sentence(full.replace("instantiation.Set", "instantiation. Set"))
        try:
            text = super()._get_help_string(action)
        finally:
            action.help = full
        if not action.dest.startswith("model."):  # Lightning's long lists of accelerators, loggers, ...
            text = re.sub(r", known subclasses: [^)]*", "", text)
        return text
