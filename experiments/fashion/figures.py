"""Figures of experiments/fashion/README.md: sample grids enlarged to be seen, and FID / class entropy against steps.

    python experiments/fashion/figures.py grid --samples DIR_OR_NPZ --out grid.png [--num 64] [--display-size 64]
    python experiments/fashion/figures.py curve [--runs RUN_DIR ... --labels LABEL ...] [--coverage A.json B.json ...] \
        --out curve.png

``samplers`` plots FID and class entropy against NFE from the sampler study's ``points/*_coverage.json`` files
(coverage.py run on each point's samples with ``--fid``), one line per sampler family.

``curve`` reads each run's ``sample_quality.jsonl`` (FID at each evaluation); ``--coverage`` adds the class entropy
of coverage.py's JSON files, and their FID where they hold one, placed at the ``step`` each one records.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ncsn_pl.data.image_files import save_grid

try:
    from coverage import load_samples
except ImportError:  # pragma: no cover - loaded through importlib from another folder
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from coverage import load_samples


def grid(samples: str, out: str, num: int, display_size: int) -> None:
    """The first ``num`` samples as a grid, each image enlarged (nearest neighbour) to about ``display_size``."""
    images = load_samples(samples)[:num].clamp(0, 1)
    save_grid(images, out, display_size=display_size)


def curve(runs: list[str], labels: list[str], coverage: list[str], out: str) -> None:
    """FID (left) and class entropy (right) against optimizer steps, one line per label: the FID of each run's
    ``sample_quality.jsonl`` (its own callback) and of coverage.py's records that hold one (from ``--fid``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for run, label in zip(runs, labels, strict=True):
        records = [json.loads(line) for line in (Path(run) / "sample_quality.jsonl").read_text().splitlines()]
        left.plot([r["step"] for r in records], [r["fid"] for r in records], marker="o", label=label)
    fids: dict[str, list[tuple[int, float]]] = {}
    entropies: dict[str, list[tuple[int, float]]] = {}
    for path in coverage:
        record = json.loads(Path(path).read_text())
        label = record.get("label") or Path(path).stem
        entropies.setdefault(label, []).append((record["step"], record["entropy"]))
        if "fid" in record:
            fids.setdefault(label, []).append((record["step"], record["fid"]))
    colors = {label: f"C{i + len(runs)}" for i, label in enumerate(sorted(set(fids) | set(entropies)))}
    for axis, points in ((left, fids), (right, entropies)):
        for label, values in points.items():
            values.sort()
            axis.plot([v[0] for v in values], [v[1] for v in values], marker="o", label=label, color=colors[label])
    right.axhline(2.302585, color="grey", linestyle=":", label="uniform (ln 10)")
    left.set(xlabel="optimizer steps", ylabel="FID (1,000 samples, 1,000 test images)")
    right.set(xlabel="optimizer steps", ylabel="class entropy of the samples (nats)", ylim=(0, 2.4))
    left.legend(fontsize=8)
    right.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(out, dpi=120)


def samplers(coverage: list[str], out: str) -> None:
    """FID (left, log scale) and class entropy (right) against NFE, one line per sampler family (the label without
    its step count: "ALS", "CAS", "PC snr=0.4", "ODE Heun")."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families: dict[str, list[tuple[int, float, float]]] = {}
    for path in coverage:
        record = json.loads(Path(path).read_text())
        family = " ".join(t for t in record["label"].split() if not t.startswith(("T=", "n=", "N=")))
        families.setdefault(family, []).append((record["nfe"], record["fid"], record["entropy"]))
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for family, values in sorted(families.items()):
        values.sort()
        left.plot([v[0] for v in values], [v[1] for v in values], marker="o", label=family)
        right.plot([v[0] for v in values], [v[2] for v in values], marker="o", label=family)
    right.axhline(2.302585, color="grey", linestyle=":", label="uniform (ln 10)")
    left.set(xscale="log", yscale="log", xlabel="network evaluations per sample (NFE)", ylabel="FID (1,000 samples)")
    right.set(xscale="log", xlabel="network evaluations per sample (NFE)", ylabel="class entropy (nats)", ylim=(0, 2.4))
    left.legend(fontsize=8)
    right.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(out, dpi=120)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    g = commands.add_parser("grid")
    g.add_argument("--samples", required=True)
    g.add_argument("--out", required=True)
    g.add_argument("--num", type=int, default=64)
    g.add_argument("--display-size", type=int, default=64)
    c = commands.add_parser("curve")
    c.add_argument("--runs", nargs="*", default=[])
    c.add_argument("--labels", nargs="*", default=[])
    c.add_argument("--coverage", nargs="*", default=[])
    c.add_argument("--out", required=True)
    p = commands.add_parser("samplers")
    p.add_argument("--coverage", nargs="+", required=True)
    p.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.command == "grid":
        grid(args.samples, args.out, args.num, args.display_size)
    elif args.command == "samplers":
        samplers(args.coverage, args.out)
    else:
        curve(args.runs, args.labels, args.coverage, args.out)


if __name__ == "__main__":
    main()
