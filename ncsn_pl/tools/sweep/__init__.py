"""Noise-schedule sweeps: the sweep file (:mod:`.spec`), the offline runner (:mod:`.runner`) and its command."""

from ncsn_pl.tools.sweep.command import DESCRIPTION, main

__all__ = ["DESCRIPTION", "main"]
