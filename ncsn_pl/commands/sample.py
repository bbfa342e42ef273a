"""The ``sample`` command: samples of a checkpoint as PNG files, a grid and an ``.npz``, on any number of devices,
written in shards as they are drawn so that rerunning the command after a preemption draws only what is missing.

Sample ``k`` is seeded with ``step_seed(seed, k)``, so the output does not depend on the number of processes
(see :mod:`ncsn_pl.sample_sets.store` for the folder layout and what a rerun guarantees).
``--trainer.precision bf16-mixed`` samples under bf16 autocast; the loop runs in inference mode.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from ncsn_pl.commands.checkpoints import load_sampling_model
from ncsn_pl.core.samplers import Sampler
from ncsn_pl.sample_sets.drawing import SampleRun, prepare_sample_set, run_predict, sampling_settings
from ncsn_pl.sample_sets.store import RECORD, describe_nfe, describe_noisy_share, noise_reference_for
from ncsn_pl.training import ScoreModel

__all__ = ["sample"]


def sample(
    trainer: pl.Trainer,
    model: ScoreModel,
    datamodule: pl.LightningDataModule | None = None,
    ckpt_path: str | None = None,
    weights_only: bool | None = None,
    official_ckpt: str | None = None,
    official_config: str | None = None,
    num_samples: int = 64,
    out_dir: str = "samples",
    batch_size: int = 64,
    seed: int = 0,
    sampler: Sampler | None = None,
    save_png: bool = True,
    grid_size: int = 64,
) -> dict[str, Any]:
    """Draw samples of a checkpoint with annealed Langevin dynamics: PNG files, a grid and an .npz; resumable.

    Writes ``<out_dir>/shards/*.npz`` as batches are drawn, ``<out_dir>/images/<k>.png``, then
    ``<out_dir>/grid.png`` (the first ``grid_size`` samples), ``<out_dir>/samples.npz`` (``samples``: float32
    ``(N, C, H, W)``, unclamped; ``indices``) and ``<out_dir>/sample.json``. Rerunning the same command after a
    preemption (SIGTERM: exit status 143, or a killed job) draws only the missing samples, with any number of
    processes, and ends with the same samples; a larger ``--num_samples`` adds to the set. A folder of another
    sample set (checkpoint bytes, seed, sampler, schedule, ``model.init_range``, data shape, ``trainer.precision``,
    memory format, device type) or with more samples than ``--num_samples`` is refused. Without
    ``--config`` the model is rebuilt from the checkpoint; its ``state_dict`` holds the EMA weights when the run
    used ``EMAWeightAveraging``. Sample ``k`` is seeded with ``step_seed(seed, k)``.

    Args:
        trainer: the Trainer the CLI built (accelerator, devices, strategy, precision).
        model: the model (built from the checkpoint's hyperparameters or the config).
        datamodule: the data: the first 1,000 of its held-out images are what the noisy share compares with.
        ckpt_path: the checkpoint to sample.
        weights_only: load the checkpoint with ``torch.load(weights_only=...)`` (default True).
        official_ckpt: an official NCSN / NCSNv2 checkpoint (``.pth`` of ermongroup/ncsn or ermongroup/ncsnv2)
            instead of ``--ckpt_path``; its EMA weights when it has them.
        official_config: that checkpoint's config (``config.yml``; default: the one beside the checkpoint).
        num_samples: number of samples, over all devices.
        out_dir: output folder (created).
        batch_size: samples per sampler call on each device (keep it when rerunning, for the same samples bit for
            bit; another one gives them up to float rounding).
        seed: seed of the sample set.
        sampler: the sampler, by class and settings (``--sampler AnnealedLangevin --sampler.n_steps_each 5``,
            ``--sampler ProbabilityFlowODE --sampler.solver heun``); ``None``: the checkpoint's.
        save_png: write one PNG per sample (image data only).
        grid_size: samples in ``grid.png``.
    """
    for name, value in (("num_samples", num_samples), ("batch_size", batch_size), ("grid_size", grid_size)):
        if value < 1:
            raise ValueError(f"--{name} must be >= 1, got {value}.")
    loaded = load_sampling_model(model, "sample", ckpt_path, weights_only, official_ckpt, official_config)
    sampler = model.resolve_sampler(sampler)
    out = Path(out_dir)
    store = prepare_sample_set(
        out, loaded, model, sampler, num_samples=num_samples, seed=seed, settings=sampling_settings(trainer, model)
    )
    job = SampleRun(
        model, store, [], num_samples=num_samples, seed=seed, sampler=sampler, save_png=save_png,
        grid_size=grid_size, batch_size=batch_size, claim="--out_dir",
        noise=noise_reference_for(datamodule, model.data_shape),
    )  # fmt: skip
    run_predict(trainer, job, interrupted=job.interrupted_hint())
    result = json.loads((out / RECORD).read_text())
    if trainer.is_global_zero and job.complete_before:
        print(f"{num_samples} samples in {out}, all there already: nothing drawn or written.")
    elif trainer.is_global_zero:
        print(
            f"{num_samples} samples in {out}; {result['drawn_by_this_run']} drawn now "
            f"({result['samples_per_second']} samples/s on {result['world_size']} process(es)); "
            f"NFE {describe_nfe(result)}; {describe_noisy_share(result)}."
        )
    return result
