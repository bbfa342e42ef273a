"""The ``fid_nfe`` command: FID against the number of network evaluations (NFE) per sample, one ``fid`` run per
sampler setting on one checkpoint (trained or official), with a table and a plot.

Every point is the ``fid`` command with the same checkpoint, seed and real images; only the sampler changes. Each
keeps its record (``points/<label>.json``) and its samples (``points/<label>_samples/``, resumable), so a rerun
after a preemption draws only the samples that are missing (and scores every point again, from its samples).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl

from ncsn_pl.commands.checkpoints import load_sampling_model
from ncsn_pl.commands.fid import fid
from ncsn_pl.core.samplers import (
    AnnealedLangevin,
    ConsistentAnnealed,
    PredictorCorrector,
    ProbabilityFlowODE,
    Sampler,
    check_sampler,
    consistent_ancestral_step_lr,
    describe_sampler,
)
from ncsn_pl.core.sigmas import step_lr_from_variance_rule
from ncsn_pl.metrics import QualityOptions
from ncsn_pl.system.files import atomic_write, atomic_write_json, atomic_write_text
from ncsn_pl.training import ScoreModel

__all__ = ["default_points", "fid_nfe", "sampler_label"]

METRICS = ("fid", "kid", "is", "precision", "recall")


def default_points(sigmas: Sequence[float], pc_snrs: Sequence[float] = (0.16,)) -> list[tuple[str, Sampler]]:
    """Every sampler of ncsn-pl at several step counts, each step size from its paper on the schedule ``sigmas``.

    * ``ALS T=1, 2, 5, 10, 20``: annealed Langevin (Song & Ermon 2019, Algorithm 1) with NCSNv2's Technique 4 step
      for each T, and the final denoising step;
    * ``CAS n=1, 2, 4, 8``: consistent annealed sampling (Jolicoeur-Martineau et al. 2021) on the schedule refined n
      times, eta = 1 - gamma^-2 for the refined ratio gamma (the largest step that keeps the noise consistent);
    * ``PC n=1, 2, 4``: reverse diffusion with n Langevin corrector steps (Song et al. 2021), for each snr of
      ``pc_snrs`` (score_sde's 0.16 unlabelled);
    * ``ODE Heun N=5, 10, 20, 40`` and ``ODE Euler N=10, 20, 40, 80``: the probability-flow ODE on EDM's grid of N
      sigmas (Karras et al. 2022).
    """
    sigmas = [float(s) for s in sigmas]
    gamma, sigma_min = sigmas[0] / sigmas[1], sigmas[-1]
    points: list[tuple[str, Sampler]] = []
    for steps in (1, 2, 5, 10, 20):
        points.append((f"ALS T={steps}", AnnealedLangevin(steps, step_lr_from_variance_rule(gamma, sigma_min, steps),
                                                          denoise=True)))  # fmt: skip
    for refine in (1, 2, 4, 8):
        points.append((f"CAS n={refine}", ConsistentAnnealed(refine, consistent_ancestral_step_lr(sigmas, refine))))
    for snr in pc_snrs:
        for correct in (1, 2, 4):
            label = f"PC n={correct}" + ("" if snr == 0.16 else f" snr={snr}")
            points.append((label, PredictorCorrector(snr=snr, n_steps_each=correct)))
    for solver, counts in (("heun", (5, 10, 20, 40)), ("euler", (10, 20, 40, 80))):
        for steps in counts:
            points.append((f"ODE {solver.capitalize()} N={steps}", ProbabilityFlowODE(solver, num_steps=steps)))
    return points


def sampler_label(sampler: Sampler) -> str:
    """A sampler as its class and the settings that differ from the class's defaults, e.g.
    ``AnnealedLangevin n_steps_each=5 step_lr=6.2e-06``."""
    defaults = type(sampler)()
    changed = [f"{f.name}={getattr(sampler, f.name)}" for f in dataclasses.fields(sampler)
               if getattr(sampler, f.name) != getattr(defaults, f.name)]  # fmt: skip
    return " ".join([type(sampler).__name__, *changed])


def _family(label: str) -> str:
    """The line of the plot a point belongs to: its label without the step count (``ALS T=5`` -> ``ALS``)."""
    return " ".join(t for t in label.split() if not re.fullmatch(r"(T|n|N)=\d+", t))


def _file_name(label: str) -> str:
    """A point's file name: ``ALS T=5`` -> ``ALS_T5``."""
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", label.replace("=", "")).strip("_")


def fid_nfe(
    trainer: pl.Trainer,
    model: ScoreModel,
    datamodule: pl.LightningDataModule | None = None,
    ckpt_path: str | None = None,
    weights_only: bool | None = None,
    official_ckpt: str | None = None,
    official_config: str | None = None,
    dataset: str | None = None,
    data_root: str = "data",
    split: Literal["train", "val"] = "train",
    num_real: int | None = None,
    ref_stats: str | None = None,
    num_samples: int = 1000,
    batch_size: int = 100,
    seed: int = 0,
    samplers: list[Sampler] | None = None,
    points: list[str] | None = None,
    pc_snr: tuple[float, ...] = (0.16,),
    quality: QualityOptions = QualityOptions(),
    out_dir: str | None = None,
) -> list[dict[str, Any]]:
    """Compute FID against the number of network evaluations per sample (NFE), one fid run per sampler setting.

    The points are ``--samplers`` (a list of samplers by class and settings), or by default every sampler of
    ncsn-pl at several step counts with the step sizes of their papers on the checkpoint's schedule (annealed
    Langevin T = 1-20, consistent annealed sampling, predictor-corrector, probability-flow ODE: ``ALS T=5``,
    ``CAS n=1``, ``PC n=2``, ``ODE Heun N=10``, ...; ``--points`` picks some by label). Each point is the ``fid``
    command with the same checkpoint, seed and real images (its options, e.g. ``--quality.kid true``, apply to all):
    ``<out_dir>/points/<label>.json`` and its samples, resumable (a rerun draws only the missing samples). A point
    the network cannot draw with (NCSN's level-indexed network on a grid of its own) is listed as skipped, with the
    reason. Writes
    ``<out_dir>/fid_nfe.csv`` (label, sampler, settings, NFE and the metrics), ``<out_dir>/fid_nfe.json`` (each point
    with its whole record) and ``<out_dir>/fid_nfe.png`` (FID against NFE, one line per sampler family).

    Args:
        trainer: the Trainer the CLI built (accelerator, devices, strategy, precision).
        model: the model (built from the checkpoint's hyperparameters or the config).
        datamodule: the real data (the CLI passes it).
        ckpt_path: a checkpoint whose samples are scored.
        weights_only: load the checkpoint with ``torch.load(weights_only=...)`` (default True).
        official_ckpt: an official NCSN / NCSNv2 checkpoint (``.pth``) whose samples are scored instead.
        official_config: its config (default: the ``config.yml`` beside it).
        dataset: the real data set (digits, mnist, fashion_mnist, cifar10, celeba, folder) when no ``--data`` is
            given.
        data_root: where that data set lives.
        split: the real split to compare with.
        num_real: real images in the statistics (default: the whole split).
        ref_stats: a reference statistics file (``.npz``) to compare with instead of real images.
        num_samples: samples drawn at each point, over all devices.
        batch_size: samples (or images) per step on each device.
        seed: seed of every point's sample set (sample k is seeded with step_seed(seed, k)).
        samplers: the points, by class and settings (``--samplers+=AnnealedLangevin --samplers.n_steps_each 5``, or
            a list in a config); default: every sampler at several step counts, step sizes from its paper.
        points: score only these points of the default grid, by label (e.g. ``["ALS T=10", "CAS n=1"]``).
        pc_snr: the predictor-corrector's snr values in the default grid.
        quality: the metrics, the feature extractor and the statistics cache (as in ``fid``).
        out_dir: where the points, the table and the plot go (default ``fid_nfe`` in
            ``--trainer.default_root_dir``).
    """
    out = Path(out_dir) if out_dir else Path(trainer.default_root_dir) / "fid_nfe"
    if samplers and points:
        raise ValueError("fid_nfe takes --samplers (points of your own) or --points (labels of the default grid), "
                         "not both.")  # fmt: skip
    loaded = load_sampling_model(model, "fid_nfe", ckpt_path, weights_only, official_ckpt, official_config)
    grid = [(sampler_label(s), s) for s in samplers] if samplers else default_points(model.sigmas.tolist(), pc_snr)
    if points:
        labels = [label for label, _ in grid]
        unknown = [p for p in points if p not in labels]
        if unknown:
            raise ValueError(f"--points: no point named {unknown}; the grid's are {labels}.")
        grid = [(label, s) for label, s in grid if label in points]
    rows = []
    for label, sampler in grid:
        try:
            check_sampler(sampler, model.score_fn, model.sigmas)
        except ValueError as err:  # e.g. NCSN's network on a grid of sigmas it was not trained at
            rows.append({"label": label, **describe_sampler(sampler), "skipped": str(err)})
            continue
        record = out / "points" / f"{_file_name(label)}.json"
        result = fid(trainer, model, datamodule, ckpt_path=ckpt_path, weights_only=weights_only,
                     official_ckpt=official_ckpt, official_config=official_config, dataset=dataset, data_root=data_root,
                     split=split, num_real=num_real, ref_stats=ref_stats, num_samples=num_samples,
                     batch_size=batch_size, seed=seed, sampler=sampler, quality=quality, out=str(record),
                     sample_dir=str(record.with_name(record.stem + "_samples")))  # fmt: skip
        rows.append({"label": label, **describe_sampler(sampler), "nfe": result["sampler"]["nfe"],
                     **{k: result[k] for k in METRICS if k in result}, "record": str(record)})  # fmt: skip
    if trainer.is_global_zero:
        _write_results(rows, out, {"checkpoint": loaded, "num_scales": model.num_scales, "num_samples": num_samples})
    return rows


def _write_results(rows: list[dict[str, Any]], out: Path, study: dict[str, Any]) -> None:
    """The table (CSV and markdown), every point (JSON, with ``study``: the checkpoint, L, the sample count) and the
    plot; the table also printed."""
    atomic_write_json({**study, "points": rows}, out / "fid_nfe.json")
    columns = ["label", "class_path", "init_args", "nfe", *METRICS, "skipped"]
    with atomic_write(out / "fid_nfe.csv", "w") as file:
        writer = csv.DictWriter(file, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({**r, "init_args": json.dumps(r["init_args"])} for r in rows)
    lines = ["| point | NFE | FID |", "|---|---|---|"]
    lines += [f"| {r['label']} | {r.get('nfe', '')} | " + (f"{r['fid']:.2f}" if "fid" in r else
              f"skipped: {r.get('skipped', '').split(':')[0]}") + " |" for r in rows]  # fmt: skip
    atomic_write_text("\n".join(lines) + "\n", out / "fid_nfe.md")
    print("\n".join(lines))
    written = [out / name for name in ("fid_nfe.csv", "fid_nfe.md", "fid_nfe.json")]
    if any("fid" in r for r in rows):
        written.append(out / "fid_nfe.png")
        name = Path(study["checkpoint"]["checkpoint"]).name
        _plot(rows, written[-1], f"FID against NFE ({study['num_samples']} samples, L={study['num_scales']}, {name})")
    print(f"wrote {', '.join(str(p) for p in written)}")


def _plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        if "fid" in r:
            families.setdefault(_family(r["label"]), []).append((r["nfe"], r["fid"]))
    figure, axes = plt.subplots(figsize=(6.5, 4.2))
    for family, values in families.items():
        values.sort()
        axes.plot([v[0] for v in values], [v[1] for v in values], marker="o", label=family)
    axes.set(xscale="log", xlabel="network evaluations per sample (NFE)", ylabel="FID", title=title)
    axes.legend(fontsize=8)
    figure.tight_layout()
    with atomic_write(path) as file:
        figure.savefig(file, format="png", dpi=120)
    plt.close(figure)
