"""FID against network evaluations (NFE) for every sampler of ncsn_pl on one trained checkpoint.

Each point is one `python -m ncsn_pl fid` run (its command is recorded): the same checkpoint, seed and real images,
only the sampler and its step count change. Writes ``results.json`` (every point, its command and its record),
``results.md`` (a table) and ``fid_vs_nfe.png`` into ``--out``.

    python experiments/samplers/study.py --ckpt runs/samplers/version_0/checkpoints/last.ckpt \
        --out experiments/samplers/digits [--num-samples 360] [--split val] [--num-real 1000]

The step sizes follow each sampler's paper on the checkpoint's schedule: annealed Langevin takes NCSNv2's
Technique 4 for each T (the step_lr whose variance ratio is closest to 1), consistent annealed sampling takes
eta = 1 - gamma^-2 on its refined grid (gamma its ratio: the largest step that keeps the noise consistent and
reduces to ancestral sampling), the predictor-corrector sampler takes score_sde's snr = 0.16.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from ncsn_pl.core.samplers import consistent_ancestral_step_lr
from ncsn_pl.core.sigmas import step_lr_from_variance_rule

SAMPLERS = "ncsn_pl.core.samplers"


def points(sigmas: list[float], pc_snrs: tuple[float, ...] = (0.16,)) -> list[tuple[str, str, dict[str, Any]]]:
    """``(label, class name, init_args)`` of every point of the study, on the schedule ``sigmas``; the
    predictor-corrector points for each snr of ``pc_snrs`` (labelled with it unless it is score_sde's 0.16)."""
    gamma, sigma_min = sigmas[0] / sigmas[1], sigmas[-1]
    grid: list[tuple[str, str, dict[str, Any]]] = []
    for steps in (1, 2, 5, 10, 20):
        step_lr = step_lr_from_variance_rule(gamma, sigma_min, steps)
        settings = {"n_steps_each": steps, "step_lr": step_lr, "denoise": True}
        grid.append((f"ALS T={steps}", "AnnealedLangevin", settings))
    for refine in (1, 2, 4, 8):
        step_lr = consistent_ancestral_step_lr(sigmas, refine)
        grid.append((f"CAS n={refine}", "ConsistentAnnealed", {"n_steps_each": refine, "step_lr": step_lr}))
    for snr in pc_snrs:
        for correct in (1, 2, 4):
            label = f"PC n={correct}" + ("" if snr == 0.16 else f" snr={snr}")
            grid.append((label, "PredictorCorrector", {"n_steps_each": correct, "snr": snr}))
    for steps in (5, 10, 20, 40):
        grid.append((f"ODE Heun N={steps}", "ProbabilityFlowODE", {"solver": "heun", "num_steps": steps}))
    for steps in (10, 20, 40, 80):
        grid.append((f"ODE Euler N={steps}", "ProbabilityFlowODE", {"solver": "euler", "num_steps": steps}))
    return grid


def run_point(args: argparse.Namespace, label: str, name: str, init_args: dict[str, Any], out: Path) -> dict[str, Any]:
    """One `fid` run of the checkpoint with this sampler; returns its JSON record with the command."""
    record_path = out / "points" / (label.replace(" ", "_").replace("=", "") + ".json")
    record_path.parent.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "ncsn_pl", "fid", f"--ckpt_path={args.ckpt}", f"--split={args.split}",
        f"--num_samples={args.num_samples}", f"--batch_size={args.batch_size}", f"--seed={args.seed}",
        f"--sampler={SAMPLERS}.{name}", *(f"--sampler.{k}={v}" for k, v in init_args.items()),
        f"--out={record_path}", "--trainer.enable_progress_bar=false",
        *([f"--num_real={args.num_real}"] if args.num_real else []), *args.fid_args,
    ]  # fmt: skip
    if not record_path.is_file():  # a rerun skips the points already scored
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            return {"label": label, "command": command, "error": done.stderr.strip().splitlines()[-1:]}
        print(f"{label}: {time.perf_counter() - start:.0f} s", flush=True)
    record = json.loads(record_path.read_text())
    return {"label": label, "command": " ".join(command[1:]), "nfe": record["sampler"]["nfe"], **record}


def write_table(results: list[dict[str, Any]], path: Path) -> None:
    lines = ["| sampler | NFE | FID | KID |", "|---|---|---|---|"]
    for r in results:
        if "fid" in r:
            kid = f"{r['kid']:.4f}" if "kid" in r else ""
            lines.append(f"| {r['label']} | {r['nfe']} | {r['fid']:.2f} | {kid} |")
        else:
            lines.append(f"| {r['label']} | | failed: {' '.join(r['error'])} | |")
    path.write_text("\n".join(lines) + "\n")


def plot(results: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.5, 4.2))
    families: dict[str, list[tuple[int, float]]] = {}
    for r in results:
        if "fid" in r:
            family = " ".join(t for t in r["label"].split() if not t.startswith(("T=", "n=", "N=")))
            families.setdefault(family, []).append((r["nfe"], r["fid"]))
    for family, values in families.items():
        values.sort()
        axes.plot([v[0] for v in values], [v[1] for v in values], marker="o", label=family)
    als = [r for r in results if r.get("label", "").startswith("ALS") and "fid" in r]
    best = min(als or [r for r in results if "fid" in r], key=lambda r: r["fid"])
    axes.axhline(best["fid"], color="grey", linestyle=":", linewidth=1, label=f"best ALS ({best['nfe']} NFE)")
    axes.axvline(best["nfe"] / 4, color="grey", linestyle="--", linewidth=1, label="1/4 of its NFE")
    axes.set(xscale="log", xlabel="network evaluations per sample (NFE)", ylabel="FID", title=title)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", required=True, help="the trained checkpoint")
    parser.add_argument("--out", required=True, help="where the points, the table and the plot go")
    parser.add_argument("--num-samples", type=int, default=360)
    parser.add_argument("--split", default="val", choices=("train", "val"))
    parser.add_argument("--batch-size", type=int, default=360)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-real", type=int, default=None, help="real images of --split (default: all)")
    parser.add_argument("--fid-args", action="append", default=[], metavar="ARG",
                        help="one more option of every `fid` run (repeat it), e.g. --fid-args=--quality.kid=true")
    parser.add_argument("--pc-snr", type=float, nargs="+", default=[0.16], help="the predictor-corrector's snr values")
    parser.add_argument("--title", default="FID against NFE")
    parser.add_argument("--only", nargs="+", default=None, metavar="LABEL",
                        help="score only these points (labels as in the table, e.g. 'ALS T=10' 'CAS n=1'), e.g. again "
                             "with another --seed into another --out, to see how much of a difference is noise")
    args = parser.parse_args(argv)
    out = Path(args.out)
    sigmas = torch.load(args.ckpt, map_location="cpu", weights_only=False)["state_dict"]["sigmas"].tolist()
    chosen = [p for p in points(sigmas, tuple(args.pc_snr)) if args.only is None or p[0] in args.only]
    if args.only and len(chosen) != len(args.only):
        parser.error(f"--only: no point named {sorted(set(args.only) - {p[0] for p in chosen})}")
    results = [run_point(args, *point, out) for point in chosen]
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    write_table(results, out / "results.md")
    if any("fid" in r for r in results):
        plot(results, out / "fid_vs_nfe.png", f"{args.title} ({args.num_samples} samples, L={len(sigmas)})")
    print((out / "results.md").read_text())
    return results


if __name__ == "__main__":
    main()
