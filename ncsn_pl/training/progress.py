"""A progress bar over the ``levels x steps`` updates of annealed Langevin dynamics."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

from tqdm.auto import tqdm

from ncsn_pl.core.samplers import LangevinCallback, LangevinSettings, LangevinStep

__all__ = ["sampling_progress"]


@contextmanager
def sampling_progress(
    num_scales: int,
    settings: LangevinSettings,
    num_samples: int,
    batch_size: int | None,
    desc: str = "Langevin",
    enable: bool = True,
) -> Iterator[LangevinCallback]:
    """A tqdm bar over the updates of drawing ``num_samples`` samples in batches of ``batch_size`` (all at once
    when None); yields the sampler callback that advances it and shows the level, sigma and the SNR."""
    calls = math.ceil(num_samples / batch_size) if batch_size else min(num_samples, 1)
    bar = tqdm(
        total=num_scales * settings.n_steps_each * calls, desc=desc, disable=not enable, leave=False, dynamic_ncols=True
    )

    def update(step: LangevinStep) -> None:
        bar.update(1)
        if step.step == 0:
            bar.set_postfix(level=step.level, sigma=f"{step.sigma:.3g}", snr=f"{step.snr:.3f}")

    try:
        yield update
    finally:
        bar.close()
