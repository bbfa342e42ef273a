"""Noise-schedule sweeps: the sweep file (:mod:`.spec`), the offline runner (:mod:`.runner`) and its command."""

from ncsn_pl.tools.sweep.command import main

__all__ = ["main"]
