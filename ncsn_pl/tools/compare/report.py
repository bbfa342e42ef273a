"""``python -m ncsn_pl compare PATH... [--metric M] [--out DIR]``: the table (``runs.csv``, ``runs.md``) and the PNG
plots of the metric against each swept setting and over training steps."""

from __future__ import annotations

import argparse
import csv
import math
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ncsn_pl.tools.compare.quality import quality_cells, quality_columns
from ncsn_pl.tools.compare.runs import Comparison, RunRow, collect_runs

__all__ = ["DESCRIPTION", "compare", "format_table", "main", "plot_runs", "write_tables"]


DESCRIPTION = "Compare runs by a metric: a table (also runs.csv, runs.md) and PNG plots."


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


def _setting(row: RunRow, key: str) -> Any:
    """A setting as configured, with the number an ``auto`` resolved to: ``auto (4.74)``."""
    if key in row.resolved:
        return f"{_fmt(row.config.get(key))} ({_fmt(row.resolved[key])})"
    return row.config.get(key)


def _table(comparison: Comparison) -> tuple[list[str], list[list[Any]]]:
    m = comparison.metric
    quality = quality_columns([row.quality for row in comparison.rows])
    header = ["rank", "run", "status", *comparison.settings, f"best {m}", "best step", *quality, f"last {m}", "IS",
              "loss", "steps", "time (s)"]
    body = []
    for row in comparison.rows:
        best = row.metric.best if row.metric else None
        body.append([row.rank, row.run, row.status,
                     *[_setting(row, k) for k in comparison.settings], best,
                     row.metric.best_step if row.metric else None, *quality_cells(row.quality, quality),
                     row.metric.last if row.metric else None,
                     row.inception_score, row.loss, row.steps, row.runtime_s])
    return header, body


def format_table(comparison: Comparison) -> str:
    """The comparison as an aligned text table (notes of runs without the metric below it)."""
    header, body = _table(comparison)
    cells = [header] + [[_fmt(v) for v in line] for line in body]
    widths = [max(len(line[i]) for line in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = [f"  {row.run}: {row.note}" for row in comparison.rows if row.note]
    title = f"{len(comparison.rows)} run(s) by {comparison.metric} ({comparison.goal})"
    return "\n".join([title, *lines, *(["notes:", *notes] if notes else [])])


def write_tables(comparison: Comparison, out: Path) -> list[Path]:
    """Write ``runs.csv`` (full precision, with paths and notes) and ``runs.md``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    header, body = _table(comparison)
    csv_path, md_path = out / "runs.csv", out / "runs.md"
    with open(csv_path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow([*header, "path", "note"])
        for line, row in zip(body, comparison.rows, strict=True):
            writer.writerow(["" if v is None else v for v in line] + [row.path, row.note])
    md = [f"Runs by `{comparison.metric}` ({comparison.goal}).", "",
          "| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    md += ["| " + " | ".join(_fmt(v).replace("|", "\\|") for v in line) + " |" for line in body]
    notes = [f"- `{row.run}`: {row.note}" for row in comparison.rows if row.note]
    md_path.write_text("\n".join(md + ([""] + notes if notes else [])) + "\n")
    return [csv_path, md_path]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")


def _numbers(values: Sequence[Any]) -> list[float] | None:
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return [float(v) for v in values]
    return None


def plot_runs(comparison: Comparison, out: Path) -> list[Path]:
    """PNG plots: the best metric against each setting, and the metric over training steps per run; a plot with
    nothing to show is skipped (a setting with one value among the scored runs; steps when no run logged the metric
    twice, as in a sweep of ``fid`` trials)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    out.mkdir(parents=True, exist_ok=True)
    metric, files = comparison.metric, []
    scored = [r for r in comparison.rows if r.metric is not None and math.isfinite(r.metric.best)]
    for key in comparison.settings:
        points = [(r.setting(key), r.metric.best, r.run) for r in scored if key in r.config]
        if len({_fmt(p[0]) for p in points}) < 2:
            continue
        fig, ax = plt.subplots(figsize=(5, 3.6))
        xs = _numbers([p[0] for p in points])
        if xs is None:  # categorical setting: one slot per value
            labels = sorted({_fmt(p[0]) for p in points})
            xs = [float(labels.index(_fmt(p[0]))) for p in points]
            ax.set_xticks(range(len(labels)), labels)
        elif min(xs) > 0 and max(xs) / min(xs) >= 10:
            ax.set_xscale("log")
        ax.scatter(xs, [p[1] for p in points], color="tab:blue")
        ax.set_xlabel(key)
        ax.set_ylabel(f"best {metric}")
        ax.set_title(f"best {metric} against {key}", fontsize=10)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        files.append(out / f"{_slug(metric)}_vs_{_slug(key)}.png")
        fig.savefig(files[-1], dpi=100)
        plt.close(fig)
    curves = [r for r in comparison.rows if r.history]
    if any(len(r.history) > 1 for r in curves):
        fig, ax = plt.subplots(figsize=(6, 4))
        shown = comparison.settings[:3]
        for row in curves:
            label = ", ".join([row.run] + [f"{k.rsplit('.', 1)[-1]}={_fmt(_setting(row, k))}" for k in shown])
            ax.plot([s for s, _ in row.history], [v for _, v in row.history], marker="." if len(row.history) < 30
                    else None, label=label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("step")
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} over training", fontsize=10)
        ax.grid(alpha=0.3)
        if len(curves) <= 20:
            ax.legend(fontsize=7)
        fig.tight_layout()
        files.append(out / f"{_slug(metric)}_over_steps.png")
        fig.savefig(files[-1], dpi=100)
        plt.close(fig)
    return files


def compare(paths: Sequence[str], metric: str | None = None, out: str | Path | None = None,
            goal: str | None = None, plots: bool = True) -> Comparison:
    """Collect, sort, write ``runs.csv``/``runs.md`` and the plots into ``out``; returns the comparison.

    ``metric`` defaults to the sweep's own metric when ``paths`` hold a sweep, else ``val/fid``."""
    comparison = collect_runs(paths, metric, goal)
    if out is not None and comparison.rows:
        comparison.files = write_tables(comparison, Path(out))
        if plots:
            comparison.files += plot_runs(comparison, Path(out))
    return comparison


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ncsn_pl compare", description=DESCRIPTION)
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="run folders, sweep folders, offline W&B runs, or entity/project (W&B API, online)")
    parser.add_argument("--metric", default=None,
                        help="the metric to compare (default: the sweep's own metric for a sweep folder or a project "
                             "of sweep runs, else val/fid)")
    parser.add_argument("--goal", choices=("minimize", "maximize"), default=None,
                        help="default: the sweep's goal, else maximize for IS-like metrics, minimize otherwise")
    parser.add_argument("--out", default=None,
                        help="where the tables and plots go (default: PATH/compare for one local PATH, else ./compare)")
    parser.add_argument("--no-plots", action="store_true", help="write the tables only")
    return parser


def main(argv: Sequence[str] | None = None) -> Comparison:
    """``python -m ncsn_pl compare ...``; returns the comparison. Exits with status 1 when no run is found."""
    options = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    out = options.out
    if out is None:
        local = len(options.paths) == 1 and Path(options.paths[0]).is_dir()
        out = Path(options.paths[0]) / "compare" if local else Path("compare")
    try:
        comparison = compare(options.paths, options.metric, out, options.goal, plots=not options.no_plots)
    except (FileNotFoundError, LookupError) as error:
        print(f"compare: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    if not comparison.rows:
        print(f"compare: no runs found in {', '.join(options.paths)} (no metrics.csv, config.yaml, sweep.json or "
              "offline W&B run).", file=sys.stderr)
        raise SystemExit(2)
    print(format_table(comparison))
    if comparison.files:
        print(f"wrote {', '.join(str(p) for p in comparison.files)}")
    return comparison
