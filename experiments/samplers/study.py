"""FID against network evaluations (NFE) for every sampler of ncsn_pl on one checkpoint: the `fid_nfe` command, then
this study's table and plot (the best annealed-Langevin point and a quarter of its NFE marked).

Each point is one `fid` run of the checkpoint (the `fid_nfe` command runs them; its points and settings are
`ncsn_pl.commands.fid_nfe.default_points`): the same checkpoint, seed and real images, only the sampler and its step
count change. Writes the command's files into ``--out`` (``fid_nfe.csv``, ``fid_nfe.json``, ``points/``), then
``results.json`` (every point with its record), ``results.md`` (a table) and ``fid_vs_nfe.png``.

    python experiments/samplers/study.py --ckpt runs/samplers/version_0/checkpoints/last.ckpt \
        --out experiments/samplers/digits [--num-samples 360] [--split val] [--num-real 1000]

An official checkpoint (``.pth``, its ``config.yml`` beside it) goes as ``--ckpt`` too.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any


def fid_nfe_command(args: argparse.Namespace) -> list[str]:
    """The `fid_nfe` command of this study."""
    checkpoint = "--official_ckpt" if args.ckpt.endswith(".pth") else "--ckpt_path"
    return [
        sys.executable, "-m", "ncsn_pl", "fid_nfe", checkpoint, args.ckpt, f"--out_dir={args.out}",
        f"--split={args.split}", f"--num_samples={args.num_samples}", f"--batch_size={args.batch_size}",
        f"--seed={args.seed}", f"--pc_snr={json.dumps(args.pc_snr)}", "--trainer.enable_progress_bar=false",
        *([f"--num_real={args.num_real}"] if args.num_real else []),
        *([f"--points={json.dumps(args.only)}"] if args.only else []), *args.fid_args,
    ]  # fmt: skip


def write_table(results: list[dict[str, Any]], path: Path) -> None:
    lines = ["| sampler | NFE | FID | KID |", "|---|---|---|---|"]
    for r in results:
        if "fid" in r:
            kid = f"{r['kid']:.4f}" if "kid" in r else ""
            lines.append(f"| {r['label']} | {r['nfe']} | {r['fid']:.2f} | {kid} |")
        else:
            lines.append(f"| {r['label']} | | skipped: {r['skipped'].split(':')[0]} | |")
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
    parser.add_argument("--ckpt", required=True, help="the trained checkpoint, or an official .pth")
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
    subprocess.run(fid_nfe_command(args), check=True)
    study = json.loads((out / "fid_nfe.json").read_text())
    results = [{**r, **(json.loads(Path(r["record"]).read_text()) if "record" in r else {})} for r in study["points"]]
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    write_table(results, out / "results.md")
    if any("fid" in r for r in results):
        plot(results, out / "fid_vs_nfe.png", f"{args.title} ({args.num_samples} samples, L={study['num_scales']})")
    print((out / "results.md").read_text())
    return results


if __name__ == "__main__":
    main()
