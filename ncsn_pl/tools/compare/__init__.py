"""Comparing runs by a metric: reading them (:mod:`.runs`) and the table and plots (:mod:`.report`)."""

from ncsn_pl.tools.compare.report import DESCRIPTION, compare, format_table, main, plot_runs, write_tables
from ncsn_pl.tools.compare.runs import Comparison, RunRow, collect_runs, sort_rows

__all__ = [
    "DESCRIPTION",
    "Comparison",
    "RunRow",
    "collect_runs",
    "compare",
    "format_table",
    "main",
    "plot_runs",
    "sort_rows",
    "write_tables",
]
