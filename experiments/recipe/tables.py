"""The recipe study's tables (experiments/recipe/README.md) from the records of `study.sh score` and `fid_nfe`.

    python experiments/recipe/tables.py [--scores runs/recipe/scores] [--samplers runs/recipe/samplers] \
        [--copy experiments/recipe/records]

Prints markdown: (1) FID of each data set, rule and training seed at equal wall-clock points, with the noisy share;
(2) the order of the two rules at each point; (3) the EMA warm-up's before and after; (4) the samplers on one
checkpoint. ``--copy`` keeps the JSON records beside the README.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
from pathlib import Path

# equal wall-clock points (minutes of training on 2 cores) -> each rule's step (study.sh)
POINTS = {5: {"v1": 1500, "v2": 2000}, 10: {"v1": 3000, "v2": 4000}}
RECORD = re.compile(r"(?P<data>fashion|digits)-(?P<rule>v1|v2|v2nowarmup)-s(?P<train>\d)_step(?P<step>\d+)_seed(?P<seed>\d)")


def read_scores(folder: Path) -> dict[tuple, dict]:
    """Every record as (data, rule, training seed, step, sampling seed) -> its JSON."""
    scores = {}
    for path in sorted(folder.glob("*.json")):
        match = RECORD.fullmatch(path.stem)
        if match:
            key = (match["data"], match["rule"], int(match["train"]), int(match["step"]), int(match["seed"]))
            scores[key] = json.loads(path.read_text())
    return scores


def cell(record: dict | None) -> str:
    """FID with the noisy share in brackets, or a dash."""
    if not record:
        return "–"
    share = record.get("noisy_share")
    return f"{record['fid']:.1f}" + (f" ({100 * share:.0f} %)" if share is not None else "")


def curve_table(scores: dict[tuple, dict]) -> list[str]:
    lines = ["| data | minutes | v1 step | v2 step | v1 seed 0 | v1 seed 1 | v2 seed 0 | v2 seed 1 | v2 better on |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for data in ("fashion", "digits"):
        for minutes, steps in POINTS.items():
            row = [data, str(minutes), str(steps["v1"]), str(steps["v2"])]
            fids = {}
            for rule in ("v1", "v2"):
                for train in (0, 1):
                    record = scores.get((data, rule, train, steps[rule], 0))
                    row.append(cell(record))
                    if record:
                        fids[rule, train] = record["fid"]
            wins = [t for t in (0, 1) if ("v1", t) in fids and ("v2", t) in fids and fids["v2", t] < fids["v1", t]]
            both = [t for t in (0, 1) if ("v1", t) in fids and ("v2", t) in fids]
            row.append(f"{len(wins)} of {len(both)} training seeds")
            lines.append("| " + " | ".join(row) + " |")
    return lines


def seed_table(scores: dict[tuple, dict]) -> list[str]:
    """The second sampling seed at 10 minutes, training seed 0: how far a sampling seed moves FID."""
    lines = ["| data | rule | step | FID seed 0 | FID seed 1 | difference |", "|---|---|---|---|---|---|"]
    for data in ("fashion", "digits"):
        for rule in ("v1", "v2"):
            step = POINTS[10][rule]
            a, b = scores.get((data, rule, 0, step, 0)), scores.get((data, rule, 0, step, 1))
            diff = f"{abs(a['fid'] - b['fid']):.1f}" if a and b else "–"
            lines.append(f"| {data} | {rule} | {step} | {cell(a)} | {cell(b)} | {diff} |")
    return lines


def ema_table(scores: dict[tuple, dict]) -> list[str]:
    lines = ["| step | sampling seed | EMA 0.999, no warm-up | EMA with warm-up |", "|---|---|---|---|"]
    for step, seed in ((1500, 0), (3000, 0), (3000, 1)):
        before = scores.get(("fashion", "v2nowarmup", 0, step, seed))
        after = scores.get(("fashion", "v2", 0, step, seed))
        lines.append(f"| {step} | {seed} | {cell(before)} | {cell(after)} |")
    return lines


def sampler_table(folder: Path) -> list[str]:
    """The fid_nfe points of each sampling seed, side by side."""
    runs = {int(p.parent.name.removeprefix("seed")): json.loads(p.read_text()) for p in folder.glob("seed*/fid_nfe.json")}
    labels: list[str] = []
    for seed in sorted(runs):
        labels += [p["label"] for p in runs[seed]["points"] if p["label"] not in labels]
    seeds = sorted(runs)
    lines = ["| sampler | NFE (mean / max) | " + " | ".join(f"FID seed {s}" for s in seeds) + " | mean |",
             "|---|---|" + "---|" * (len(seeds) + 1)]  # fmt: skip
    for label in labels:
        fids, nfe = [], ""
        for seed in seeds:
            point = next((p for p in runs[seed]["points"] if p["label"] == label), None)
            if point and "fid" in point:
                record = json.loads(Path(point["record"]).read_text())
                sampler = record["sampler"]
                nfe = f"{sampler['nfe']:.0f}" + (f" / {sampler['nfe_max']}" if sampler.get("nfe_max") else "")
                fids.append(f"{point['fid']:.1f} ({100 * record['noisy_share']:.0f} %)")
            else:
                fids.append("–")
        values = [float(f.split()[0]) for f in fids if f != "–"]
        mean = f"{statistics.mean(values):.1f}" if values else "–"
        lines.append(f"| {label} | {nfe} | " + " | ".join(fids) + f" | {mean} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scores", default="runs/recipe/scores")
    parser.add_argument("--samplers", default="runs/recipe/samplers")
    parser.add_argument("--copy", default=None, help="copy the JSON records into this folder")
    args = parser.parse_args()
    scores = read_scores(Path(args.scores))
    for title, lines in (("FID at equal wall-clock time (noisy share)", curve_table(scores)),
                         ("Sampling seeds", seed_table(scores)), ("EMA warm-up, Fashion v2", ema_table(scores)),
                         ("Samplers, Fashion v2 seed 0, 4,000 steps", sampler_table(Path(args.samplers)))):  # fmt: skip
        print(f"### {title}\n\n" + "\n".join(lines) + "\n")
    if args.copy:
        out = Path(args.copy)
        out.mkdir(parents=True, exist_ok=True)
        for path in Path(args.scores).glob("*.json"):
            shutil.copy(path, out / path.name)
        for path in Path(args.samplers).glob("seed*/fid_nfe.json"):
            shutil.copy(path, out / f"samplers_{path.parent.name}.json")
        for path in Path(args.samplers).glob("seed*/points/*.json"):
            shutil.copy(path, out / f"samplers_{path.parent.parent.name}_{path.name}")


if __name__ == "__main__":
    main()
