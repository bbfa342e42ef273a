"""Errors the user can fix, and errors that every process of a multi-process run raises together (rank 0 reports
them, the others end quietly)."""

from __future__ import annotations

__all__ = ["USER_ERROR_EXIT_CODE", "UserInputError", "raised_on_every_rank", "reported_by_another_rank"]

USER_ERROR_EXIT_CODE = 2  # argparse's status for a command line it cannot use


class UserInputError(Exception):
    """Input the user can fix (absent weights, ...): the command line prints the message alone, in one line, and exits
    with :data:`USER_ERROR_EXIT_CODE`. Subclasses that were ``RuntimeError`` before also derive from it, so code
    catching those still catches them."""


def raised_on_every_rank(error: BaseException, rank: int) -> BaseException:
    """Mark ``error`` as raised by every process at once (after a broadcast or a reduction of the cause), so that
    the command line prints it once, on global rank 0; returns it."""
    error.ncsn_every_rank = True  # type: ignore[attr-defined]
    error.ncsn_rank = int(rank)  # type: ignore[attr-defined]
    return error


def reported_by_another_rank(error: BaseException) -> bool:
    """Whether global rank 0 prints ``error`` (every rank raised it and this is not rank 0)."""
    return bool(getattr(error, "ncsn_every_rank", False)) and getattr(error, "ncsn_rank", 0) != 0
