"""A progress bar over the network evaluations of a sampler."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

from tqdm.auto import tqdm

from ncsn_pl.core.samplers import LangevinCallback, LangevinStep, Sampler

__all__ = ["sampling_progress"]


@contextmanager
def sampling_progress(
    num_scales: int,
    sampler: Sampler,
    num_samples: int,
    batch_size: int | None,
    desc: str = "Langevin",
    enable: bool = True,
) -> Iterator[LangevinCallback]:
    """A tqdm bar over the network evaluations of drawing ``num_samples`` samples in batches of ``batch_size`` (all
    at once when None); yields the sampler callback that advances it and shows the level, sigma and the SNR."""
    calls = math.ceil(num_samples / batch_size) if batch_size else min(num_samples, 1)
    total = sampler.nfe(num_scales) * calls
    bar = tqdm(total=total, desc=desc, disable=not enable, leave=False, dynamic_ncols=True)

    def update(step: LangevinStep) -> None:
        bar.update(2 if step.kind == "heun" else 1)  # a Heun step evaluates the network twice
        if step.step == 0:
            bar.set_postfix(level=step.level, sigma=f"{step.sigma:.3g}", snr=f"{step.snr:.3f}")

    try:
        yield update
    finally:
        bar.close()
