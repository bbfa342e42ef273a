"""A progress bar over the network evaluations of a sampler."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

from torch import Tensor
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
    postfix_every: int = 25,
) -> Iterator[LangevinCallback | None]:
    """A tqdm bar over the network evaluations of drawing ``num_samples`` samples in batches of ``batch_size`` (all
    at once when None); yields the sampler callback that advances it and shows the level, sigma and the SNR. A
    sampler whose NFE differs per sample (``nfe`` None) gets a bar without a total, advanced by the most
    evaluations any sample of the batch made.

    The SNR is read from the device (a sync) only when it is shown, every ``postfix_every`` updates; a disabled
    bar yields ``None``, so the sampler reports nothing at all.
    """
    if not enable:
        yield None
        return
    calls = math.ceil(num_samples / batch_size) if batch_size else min(num_samples, 1)
    nfe = sampler.nfe(num_scales)
    total = nfe * calls if nfe is not None else None
    bar = tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)
    updates = 0

    def update(step: LangevinStep) -> None:
        nonlocal updates
        bar.update(int(step.nfe.max()) if isinstance(step.nfe, Tensor) else step.nfe)  # Heun: 2
        if updates % postfix_every == 0:
            bar.set_postfix(level=step.level, sigma=f"{step.sigma:.3g}", snr=f"{step.snr:.3f}")
        updates += 1

    try:
        yield update
    finally:
        bar.close()
