"""The toy experiment of NCSN (Song & Ermon 2019, §3.2.2, Fig. 3): plain vs annealed Langevin on a 2-mode mixture.

Data: ``p = 0.8 N((5, 5), I) + 0.2 N((-5, -5), I)``. Samples start from ``U[-8, 8]^2`` and are drawn with

* plain Langevin dynamics: 1000 steps ``x <- x + a s(x) + sqrt(2a) z`` (the score of the data, or of the smallest
  noise level a network knows);
* annealed Langevin dynamics (NCSN Algorithm 1): sigmas geometric from 20 to 1, L = 10, T = 100 steps per level,
  ``a_i = step_lr sigma_i^2 / sigma_L^2``;

once with the exact scores of the (noisy) mixture and once with a ``ToyScoreMLP`` trained by
``python -m ncsn_pl fit --config configs/toy_mixture.yaml``. The paper's finding: plain Langevin keeps the 50/50
split of the initialisation, annealed Langevin recovers the 0.8 / 0.2 weights.

Step sizes come in two conventions. Ours (the project's samplers, the official NCSN code for images) is
``x + a s + sqrt(2a) z``; the official *toy* runner wrote ``x + lr/2 s + sqrt(lr) z`` with lr = 0.1, i.e. our
``a = 0.05``. Both are run: ``ours`` uses a = step_lr = 0.1, ``official`` uses a = step_lr = 0.05.

The results (``results.md``, ``results.json``, PNG scatter plots) go to ``--out-dir`` (this folder by default); the
script refuses to overwrite existing results unless ``--overwrite`` is given.

Examples::

    python experiments/toy_mixture/run.py --overwrite              # train the network, then sample (a few minutes)
    python experiments/toy_mixture/run.py --ckpt_path runs/toy_mixture/version_0/checkpoints/last.ckpt
    python experiments/toy_mixture/run.py --exact-only --out-dir /tmp/toy   # exact scores only (seconds)
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ncsn_pl.core.distributions import GaussianMixture
from ncsn_pl.core.losses import ScoreFn
from ncsn_pl.core.samplers import annealed_langevin_dynamics, langevin_dynamics
from ncsn_pl.core.seeding import noise_from
from ncsn_pl.core.sigmas import geometric_sigmas

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
CONFIG = "configs/toy_mixture.yaml"
RESULT_FILES = ("results.md", "results.json", "samples.png", "samples_official_step.png")

#: The paper's mixture and schedule.
WEIGHTS = (0.8, 0.2)
MEANS = ((5.0, 5.0), (-5.0, -5.0))
SIGMA_MAX, SIGMA_MIN, NUM_SCALES = 20.0, 1.0, 10
INIT_RANGE = (-8.0, 8.0)
#: A sample further than this from both means counts as off-mode (P = exp(-8) = 3e-4 for N(mu, I) in 2-D).
OFF_MODE_RADIUS = 4.0
SAMPLERS = ("plain", "annealed")
#: Step conventions: name -> the step a (plain) and step_lr (annealed) in our ``x + a s + sqrt(2a) z``.
CONVENTIONS = {"ours": 0.1, "official": 0.05}


@dataclass(frozen=True)
class Budget:
    """The sampling budget of the paper's toy runner."""

    plain_steps: int = 1000
    n_steps_each: int = 100


@dataclass(frozen=True)
class ScoreSource:
    """Score functions for both samplers.

    Attributes:
        name: ``exact`` or ``learned``.
        fn: ``fn(x, levels)`` over ``sigmas`` (annealed Langevin).
        plain_fn: ``plain_fn(x, levels)`` used by plain Langevin at level ``plain_level``.
        plain_level: the level index passed to ``plain_fn``.
        plain_sigma: the noise level plain Langevin samples (0 is the data itself).
        samplers: the samplers to run with this source.
    """

    name: str
    fn: ScoreFn
    plain_fn: ScoreFn
    plain_level: int
    plain_sigma: float
    samplers: tuple[str, ...] = SAMPLERS


def paper_mixture() -> GaussianMixture:
    """``0.8 N((5, 5), I) + 0.2 N((-5, -5), I)``."""
    return GaussianMixture(WEIGHTS, MEANS, (1.0, 1.0))


def paper_sigmas() -> torch.Tensor:
    """The toy schedule: geometric from 20 to 1, L = 10."""
    return geometric_sigmas(SIGMA_MAX, SIGMA_MIN, NUM_SCALES)


def exact_source(mixture: GaussianMixture, sigmas: torch.Tensor, plain_sigma: float = 0.0) -> ScoreSource:
    """Exact scores: the noisy mixture's at each sigma, and the score at ``plain_sigma`` for plain Langevin.

    With ``plain_sigma > 0`` only plain Langevin runs (its annealed run would repeat the ``exact`` one): it is
    the like-for-like comparison for a network, whose smallest level is sigma_L, not 0.
    """
    if plain_sigma == 0:
        name, samplers = "exact", SAMPLERS
    else:
        name, samplers = f"exact, sigma={plain_sigma:g}", ("plain",)
    return ScoreSource(name, _exact_score_fn(mixture, sigmas), _exact_score_fn(mixture, torch.tensor([plain_sigma])),
                       0, plain_sigma, samplers)


def _exact_score_fn(mixture: GaussianMixture, sigmas: torch.Tensor) -> ScoreFn:
    """``GaussianMixture.score_fn`` with a shortcut for batches at one level (every step of both samplers)."""
    general = mixture.score_fn(sigmas)
    sigma_values = sigmas.tolist()

    def score_fn(x: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        first = int(levels[0])
        if bool((levels == first).all()):
            return mixture.score(x, sigma_values[first])
        return general(x, levels)

    return score_fn


def learned_source(score_net: torch.nn.Module, sigmas: torch.Tensor) -> ScoreSource:
    """A trained network; plain Langevin uses its smallest noise level (the closest it knows to the data)."""
    score_net.eval()
    last = sigmas.numel() - 1
    return ScoreSource("learned", score_net, score_net, last, float(sigmas[last]))


def initial_points(num_samples: int, generator: torch.Generator) -> torch.Tensor:
    """``U[-8, 8]^2`` starting points, shape ``(N, 2)``."""
    low, high = INIT_RANGE
    return low + (high - low) * torch.rand(num_samples, 2, generator=generator)


def mode_fractions(x: torch.Tensor, means: Sequence[Sequence[float]] = MEANS) -> dict[str, float]:
    """Fraction of samples nearest to each mean, and the fraction further than ``OFF_MODE_RADIUS`` from all.

    Returns:
        ``{"(5,5)": f1, "(-5,-5)": f2, "off_mode": f_off}`` (the first two sum to 1); non-finite samples count
        as off-mode and are assigned to no mode.
    """
    means_t = torch.as_tensor(means, dtype=x.dtype)
    finite = torch.isfinite(x).all(dim=1)
    distances = torch.cdist(x[finite], means_t)
    nearest = distances.argmin(dim=1)
    n = x.shape[0]
    out = {_mode_name(m): float((nearest == k).sum()) / n for k, m in enumerate(means)}
    off = (~finite).sum() + (distances.min(dim=1).values > OFF_MODE_RADIUS).sum()
    out["off_mode"] = float(off) / n
    return out


def _mode_name(mean: Sequence[float]) -> str:
    return "(" + ",".join(f"{v:g}" for v in mean) + ")"


def sample_plain(source: ScoreSource, x0: torch.Tensor, step: float, budget: Budget,
                 generator: torch.Generator) -> torch.Tensor:
    """Plain Langevin: ``budget.plain_steps`` steps of size ``step`` at the source's plain level."""
    return langevin_dynamics(source.plain_fn, x0, level=source.plain_level, n_steps=budget.plain_steps,
                             step_size=step, noise_fn=noise_from(generator))


def sample_annealed(source: ScoreSource, x0: torch.Tensor, sigmas: torch.Tensor, step_lr: float, budget: Budget,
                    generator: torch.Generator) -> torch.Tensor:
    """Annealed Langevin over ``sigmas``, ``budget.n_steps_each`` steps per level."""
    return annealed_langevin_dynamics(source.fn, x0, sigmas, n_steps_each=budget.n_steps_each, step_lr=step_lr,
                                      noise_fn=noise_from(generator))


def run_trials(
    sources: Sequence[ScoreSource],
    *,
    seeds: Sequence[int],
    num_samples: int,
    conventions: Sequence[str] = tuple(CONVENTIONS),
    budget: Budget = Budget(),
    sigmas: torch.Tensor | None = None,
    keep_samples_of_seed: int | None = None,
    progress: bool = False,
) -> tuple[list[dict[str, Any]], dict[tuple[str, str, str], torch.Tensor]]:
    """Sample with every source, sampler and step convention for every seed; measure the mode fractions.

    All samplers of one seed start from the same ``U[-8, 8]^2`` points; their noise is seeded by the seed and
    the sampler, so every row is reproducible on its own.

    Returns:
        ``(rows, samples)``: one row per (source, sampler, convention) with per-seed fractions, their mean,
        standard deviation, minimum and maximum; and the samples of ``keep_samples_of_seed`` keyed by
        ``(source, sampler, convention)``. With ``progress`` a line is printed after each seed.
    """
    sigmas = paper_sigmas() if sigmas is None else sigmas
    per_seed: dict[tuple[str, str, str], list[dict[str, float]]] = {}
    kept: dict[tuple[str, str, str], torch.Tensor] = {}
    start = time.perf_counter()
    for seed in seeds:
        x0 = initial_points(num_samples, torch.Generator().manual_seed(seed))
        for source in sources:
            for convention in conventions:
                step = CONVENTIONS[convention]
                for index, sampler in enumerate(SAMPLERS):
                    if sampler not in source.samplers:
                        continue
                    # sampler noise: seeded by the seed and the sampler, shared across sources
                    generator = torch.Generator().manual_seed(1000 * seed + 1 + index)
                    if sampler == "plain":
                        x = sample_plain(source, x0, step, budget, generator)
                    else:
                        x = sample_annealed(source, x0, sigmas, step, budget, generator)
                    key = (source.name, sampler, convention)
                    per_seed.setdefault(key, []).append(mode_fractions(x))
                    if seed == keep_samples_of_seed:
                        kept[key] = x
        if progress:
            print(f"seed {seed} sampled ({time.perf_counter() - start:.0f} s so far)", flush=True)
    rows = []
    for (source_name, sampler, convention), fractions in per_seed.items():
        source = next(s for s in sources if s.name == source_name)
        step = CONVENTIONS[convention]
        rows.append({
            "score": source_name,
            "sampler": sampler,
            "convention": convention,
            "step": step,
            "sigma": source.plain_sigma if sampler == "plain" else None,
            "seeds": list(seeds),
            **_summarise(fractions),
        })
    return rows, kept


def data_row(mixture: GaussianMixture, seeds: Sequence[int], num_samples: int) -> dict[str, Any]:
    """The same statistics for i.i.d. samples of the mixture (what a perfect sampler gives)."""
    fractions = [mode_fractions(mixture.sample(num_samples, torch.Generator().manual_seed(s))) for s in seeds]
    return {"score": "-", "sampler": "iid", "convention": "-", "step": None, "sigma": 0.0, "seeds": list(seeds),
            **_summarise(fractions)}


def _summarise(fractions: list[dict[str, float]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in fractions[0]:
        values = [f[key] for f in fractions]
        out[key] = {
            "per_seed": values,
            "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values),
            "max": max(values),
        }
    return out


@torch.no_grad()
def score_errors(score_net: torch.nn.Module, mixture: GaussianMixture, sigmas: torch.Tensor, num_points: int = 4000,
                 seed: int = 0) -> list[dict[str, float]]:
    """How well the network learned: per level, ``E||s_theta - s*||^2 / E||s*||^2`` on noisy data points.

    Points are ``x + sigma_i z`` with ``x`` drawn from the mixture; ``s*`` is the exact noisy score.
    """
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for level, sigma in enumerate(sigmas.tolist()):
        x = mixture.sample(num_points, generator) + sigma * torch.randn(num_points, mixture.dim, generator=generator)
        levels = torch.full((num_points,), level, dtype=torch.long)
        exact = mixture.score(x, sigma)
        learned = score_net(x, levels)
        error = (learned - exact).pow(2).sum(1).mean().item()
        rows.append({"level": level, "sigma": sigma, "relative_error": error / exact.pow(2).sum(1).mean().item()})
    return rows


# ---------------------------------------------------------------------------------------------------------------
# training and loading


def fit_command(root_dir: Path, overrides: Sequence[str]) -> list[str]:
    """The ``python -m ncsn_pl fit`` command that trains the toy network into ``root_dir``."""
    return [sys.executable, "-m", "ncsn_pl", "fit", "--config", CONFIG, f"--trainer.default_root_dir={root_dir}",
            "--trainer.enable_progress_bar=false", *overrides]


def train(root_dir: Path, overrides: Sequence[str], threads: int | None = None) -> tuple[Path, float]:
    """Run the fit command in a subprocess; return the new run's ``last.ckpt`` and the wall time."""
    before = set(root_dir.glob("version_*"))
    command = fit_command(root_dir, overrides)
    print("training:", shlex.join(command[1:]), flush=True)
    start = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, env=_env(threads), capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"Training failed (exit code {result.returncode}):\n{result.stderr[-3000:]}")
    new = sorted(set(root_dir.glob("version_*")) - before, key=lambda p: p.stat().st_mtime)
    if not new or not (new[-1] / "checkpoints" / "last.ckpt").is_file():
        raise SystemExit(f"Training finished but wrote no checkpoints/last.ckpt under {root_dir}/version_*.")
    return new[-1] / "checkpoints" / "last.ckpt", elapsed


def _env(threads: int | None) -> dict[str, str]:
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    env.setdefault("WANDB_MODE", "offline")
    env.setdefault("WANDB_SILENT", "true")
    return env


def load_model(ckpt_path: Path):
    """``ScoreModel.load_from_checkpoint`` on the CPU (the network is rebuilt from the CLI's saved config)."""
    from ncsn_pl.training import ScoreModel

    model = ScoreModel.load_from_checkpoint(ckpt_path, map_location="cpu")
    sigmas = model.sigmas.cpu()
    if sigmas.numel() != NUM_SCALES or not torch.allclose(sigmas, paper_sigmas()):
        print(f"note: the checkpoint's schedule {sigmas.tolist()} is not the paper's 20 -> 1, L = 10; using it.")
    return model.eval()


def training_curve(ckpt_path: Path) -> list[dict[str, float]]:
    """``val/loss`` per epoch from the run's ``metrics.csv`` (empty if there is none)."""
    import csv

    path = ckpt_path.parent.parent / "metrics.csv"
    if not path.is_file():
        return []
    with path.open() as f:
        return [{"epoch": int(r["epoch"]), "step": int(r["step"]), "val/loss": float(r["val/loss"])}
                for r in csv.DictReader(f) if r.get("val/loss")]


# ---------------------------------------------------------------------------------------------------------------
# reporting


def plot_samples(samples: dict[tuple[str, str, str], torch.Tensor], data: torch.Tensor, rows: list[dict[str, Any]],
                 convention: str, path: Path, max_points: int = 1500) -> None:
    """Scatter plots: data, plain and annealed Langevin, one row per score source (``rows[0]`` is the data row)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sources = list(dict.fromkeys(k[0] for k in samples if k[2] == convention))
    fig, axes = plt.subplots(len(sources), 3, figsize=(10.5, 3.6 * len(sources)), squeeze=False)
    a = CONVENTIONS[convention]
    for r, source in enumerate(sources):
        panels = [("data (i.i.d.)", data, next(x for x in rows if x["sampler"] == "iid"))]
        for sampler in SAMPLERS:
            row = next(x for x in rows if (x["score"], x["sampler"], x["convention"]) == (source, sampler, convention))
            panels.append((f"{source} score, {sampler} Langevin", samples[(source, sampler, convention)], row))
        for c, (title, x, row) in enumerate(panels):
            ax = axes[r, c]
            x = x[:max_points]
            ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.4, color=f"C{c}")
            key = _mode_name(MEANS[0])
            ax.set_title(f"{title}\n{key}: {row[key]['mean']:.3f} ± {row[key]['std']:.3f}", fontsize=9)
            ax.set_xlim(-11, 11)
            ax.set_ylim(-11, 11)
            ax.set_aspect("equal")
            ax.plot([m[0] for m in MEANS], [m[1] for m in MEANS], "k+", markersize=10)
    seeds = rows[0]["seeds"]
    fig.suptitle(f"0.8 N((5,5), I) + 0.2 N((-5,-5), I); step a = {a:g} in x + a s + sqrt(2a) z ({convention}); "
                 f"points: seed {seeds[0]}, titles: mode (5,5) share, mean ± std over {len(seeds)} seeds",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt(stat: dict[str, float]) -> str:
    return f"{stat['mean']:.3f} ± {stat['std']:.3f} [{stat['min']:.3f}, {stat['max']:.3f}]"


def write_markdown(path: Path, results: dict[str, Any]) -> None:
    """``results.md``: the command, the settings, the table of mode fractions and the learning check."""
    s = results["settings"]
    lines = [
        "# NCSN toy experiment: plain vs annealed Langevin on 0.8 N((5,5), I) + 0.2 N((-5,-5), I)",
        "",
        "Made by (from the repository root):",
        "",
        "```bash",
        results["command"],
        "```",
        "",
        f"{s['num_samples']} samples per run from U[-8, 8]^2, seeds {s['seeds']}; table entries are the fraction of "
        "samples nearest to each mode, **mean ± std over seeds [min, max]**; *off-mode* counts samples further "
        f"than {OFF_MODE_RADIUS:g} from both means.",
        "",
        f"- plain Langevin: {s['plain_steps']} steps of `x + a s + sqrt(2a) z` with the score of the data "
        "(exact score, sigma = 0) or of the network's smallest level (learned, sigma = 1).",
        f"- annealed Langevin: sigmas geometric {SIGMA_MAX:g} -> {SIGMA_MIN:g}, L = {NUM_SCALES}, "
        f"T = {s['n_steps_each']}, a_i = step_lr sigma_i^2 / sigma_L^2.",
        "- step convention `ours` (the project's samplers): a = step_lr = 0.1. `official`: the official toy "
        "runner's `x + lr/2 s + sqrt(lr) z` with lr = 0.1, i.e. a = step_lr = 0.05 here.",
        "",
        "| score | sampler | convention | step | mode (5,5) | mode (-5,-5) | off-mode |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        step = "-" if row["step"] is None else f"{row['step']:g}"
        lines.append(
            f"| {row['score']} | {row['sampler']} | {row['convention']} | {step} | {_fmt(row['(5,5)'])} "
            f"| {_fmt(row['(-5,-5)'])} | {row['off_mode']['mean']:.4f} |"
        )
    lines += [
        "",
        "Reading: the true weight of mode (5,5) is 0.8 (the `iid` row: samples of the mixture itself). Annealed "
        "Langevin ends at sigma_L = 1, so it samples the *perturbed* mixture, whose components are N(mu, 2I): "
        "about exp(-4) = 0.018 of its samples lie beyond radius 4 (the off-mode column), against exp(-8) for the "
        "data. A network knows no level below sigma_L, so its plain Langevin runs at sigma = 1; the row "
        "`exact, sigma=1` is the same sampler with the exact score there.",
        "",
    ]
    lines += results.get("findings", [])
    learned = results.get("learned")
    if learned:
        lines += [
            "",
            "## The learned score",
            "",
            f"Checkpoint: `{learned['ckpt_path']}`"
            + (f" (trained in {learned['train_seconds']:.0f} s by the command below)." if learned.get(
                "train_command") else "."),
        ]
        if learned.get("train_command"):
            lines += ["", "```bash", learned["train_command"], "```"]
        curve = learned.get("val_loss")
        if curve:
            lines += ["", "Validation DSM loss by epoch: " + ", ".join(
                f"{c['epoch']}: {c['val/loss']:.3f}" for c in curve) + "."]
        lines += [
            "",
            "Relative error of the learned score against the exact noisy score, "
            "E‖s_θ − s*‖² / E‖s*‖² on x + σ_i z (x from the mixture):",
            "",
            "| level | sigma | relative error |",
            "|---|---|---|",
        ]
        lines += [f"| {e['level']} | {e['sigma']:.3f} | {e['relative_error']:.4f} |" for e in learned["score_errors"]]
    figures = results.get("figures", [])
    if figures:
        lines += ["", "## Figures", ""]
        lines += [f"![{name}]({name})" for name in figures]
    lines += ["", f"Sampling took {results['sampling_seconds']:.0f} s on {results['machine']}.", ""]
    path.write_text("\n".join(lines))


def findings(rows: list[dict[str, Any]]) -> list[str]:
    """One sentence per score source comparing plain and annealed Langevin (computed, not written by hand)."""
    out = []
    for source in dict.fromkeys(r["score"] for r in rows if r["sampler"] != "iid"):
        for convention in dict.fromkeys(r["convention"] for r in rows if r["score"] == source):
            pick = {r["sampler"]: r for r in rows if (r["score"], r["convention"]) == (source, convention)}
            if set(SAMPLERS) - set(pick):
                continue
            plain, annealed = pick["plain"]["(5,5)"]["mean"], pick["annealed"]["(5,5)"]["mean"]
            out.append(
                f"- {source} score, `{convention}` steps: annealed Langevin puts {annealed:.3f} of the samples on "
                f"(5,5) (|error| {abs(annealed - 0.8):.3f}), plain Langevin {plain:.3f} "
                f"(|error| {abs(plain - 0.8):.3f})."
            )
    return out


# ---------------------------------------------------------------------------------------------------------------
# command line


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="NCSN's toy experiment: plain vs annealed Langevin on 0.8 N((5,5), I) + 0.2 N((-5,-5), I), "
        "with exact and learned scores.",
        epilog="Without --ckpt_path or --exact-only the score network is trained first with "
        f"`python -m ncsn_pl fit --config {CONFIG}` (a few minutes on 2 CPU cores).",
    )
    parser.add_argument("--ckpt_path", "--ckpt-path", dest="ckpt_path", type=Path, default=None,
                        help="checkpoint of a trained toy run (skips training)")
    parser.add_argument("--exact-only", action="store_true", help="only the exact-score part (no network)")
    parser.add_argument("--root-dir", type=Path, default=REPO / "runs" / "toy_mixture",
                        help="trainer.default_root_dir of the training run (default: runs/toy_mixture)")
    parser.add_argument("--fit-arg", action="append", default=[], metavar="ARG",
                        help="extra argument for the fit command, e.g. --fit-arg=--trainer.max_epochs=40 (repeatable)")
    parser.add_argument("--out-dir", type=Path, default=HERE, help="where results.md/.json and PNGs go")
    parser.add_argument("--overwrite", action="store_true", help="replace existing results in --out-dir")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--num-samples", type=int, default=4000, help="samples per run (the paper's runner: 1280)")
    parser.add_argument("--conventions", nargs="+", choices=sorted(CONVENTIONS), default=list(CONVENTIONS))
    parser.add_argument("--plain-steps", type=int, default=Budget.plain_steps)
    parser.add_argument("--n-steps-each", type=int, default=Budget.n_steps_each)
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG scatter plots")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for sampling and training (default 1: the tensors are small, and more "
                        "threads than free cores stall OpenMP)")
    args = parser.parse_args(argv)
    if args.num_samples < 2:
        parser.error("--num-samples must be at least 2.")
    if args.ckpt_path is not None and args.exact_only:
        parser.error("--ckpt_path and --exact-only exclude each other.")
    return args


def check_inputs(args: argparse.Namespace) -> None:
    """Fail before any work, saying what is missing or what would be overwritten."""
    existing = [args.out_dir / name for name in RESULT_FILES if (args.out_dir / name).exists()]
    if existing and not args.overwrite:
        raise SystemExit(
            f"Refusing to overwrite existing results: {', '.join(str(p) for p in existing)}. Pass --overwrite "
            "to replace them, or --out-dir DIR to write somewhere else."
        )
    if args.ckpt_path is not None and not args.ckpt_path.is_file():
        raise SystemExit(
            f"--ckpt_path {args.ckpt_path} does not exist. Give the last.ckpt of a run of "
            f"`python -m ncsn_pl fit --config {CONFIG}`, or leave --ckpt_path out to train one now."
        )
    if args.ckpt_path is None and not args.exact_only and not (REPO / CONFIG).is_file():
        raise SystemExit(f"{REPO / CONFIG} is missing: it is needed to train the network (or pass --ckpt_path).")
    if not args.no_plots:
        try:
            import matplotlib  # noqa: F401
        except ImportError as error:
            message = "The scatter plots need matplotlib: `pip install matplotlib`, or pass --no-plots."
            raise SystemExit(message) from error


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the experiment; write results.md, results.json and the figures; return the results."""
    args = parse_args(argv)
    check_inputs(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    command = "python " + shlex.join([_relative(Path(__file__)), *(argv if argv is not None else sys.argv[1:])])
    mixture, sigmas = paper_mixture(), paper_sigmas()
    budget = Budget(args.plain_steps, args.n_steps_each)

    learned: dict[str, Any] | None = None
    sources = [exact_source(mixture, sigmas)]
    if not args.exact_only:
        ckpt_path, train_seconds, train_command = args.ckpt_path, None, None
        if ckpt_path is None:
            ckpt_path, train_seconds = train(args.root_dir.resolve(), args.fit_arg, args.threads)
            train_command = shlex.join(["python", *fit_command(_relative_dir(args.root_dir), args.fit_arg)[1:]])
        model = load_model(ckpt_path)
        sigmas = model.sigmas.cpu()
        sources = [exact_source(mixture, sigmas), exact_source(mixture, sigmas, float(sigmas[-1])),
                   learned_source(model.score_net, sigmas)]
        learned = {
            "ckpt_path": _relative(ckpt_path),
            "train_seconds": train_seconds,
            "train_command": train_command,
            "val_loss": training_curve(ckpt_path),
            "score_errors": score_errors(model.score_net, mixture, sigmas),
        }

    start = time.perf_counter()
    rows, samples = run_trials(sources, seeds=args.seeds, num_samples=args.num_samples, conventions=args.conventions,
                               budget=budget, sigmas=sigmas, keep_samples_of_seed=args.seeds[0], progress=True)
    sampling_seconds = time.perf_counter() - start
    rows.insert(0, data_row(mixture, args.seeds, args.num_samples))

    figures = []
    if not args.no_plots:
        data = mixture.sample(args.num_samples, torch.Generator().manual_seed(args.seeds[0]))
        for convention in args.conventions:
            name = "samples.png" if convention == "ours" else f"samples_{convention}_step.png"
            plotted = {k: v for k, v in samples.items() if k[0] in ("exact", "learned")}
            plot_samples(plotted, data, rows, convention, args.out_dir / name)
            figures.append(name)

    results = {
        "command": command,
        "settings": {"num_samples": args.num_samples, "seeds": args.seeds, "plain_steps": budget.plain_steps,
                     "n_steps_each": budget.n_steps_each, "sigmas": sigmas.tolist(),
                     "conventions": {c: CONVENTIONS[c] for c in args.conventions}, "init_range": INIT_RANGE,
                     "off_mode_radius": OFF_MODE_RADIUS},
        "rows": rows,
        "findings": findings(rows),
        "learned": learned,
        "figures": figures,
        "sampling_seconds": sampling_seconds,
        "machine": f"{torch.get_num_threads()} torch thread(s) on a {os.cpu_count()}-core CPU, "
        f"torch {torch.__version__}",
    }
    (args.out_dir / "results.json").write_text(json.dumps(results, indent=2))
    write_markdown(args.out_dir / "results.md", results)
    for line in results["findings"]:
        print(line)
    print(f"wrote {args.out_dir / 'results.md'}")
    return results


def _relative(path: Path) -> str:
    path = Path(path).resolve()
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return str(path)


def _relative_dir(path: Path) -> Path:
    return Path(_relative(path))


if __name__ == "__main__":
    main()
