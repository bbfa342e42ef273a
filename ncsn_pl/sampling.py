"""Sample sets that do not depend on batching or on the number of processes.

Sample ``k`` of a run is drawn entirely from its own ``torch.Generator``, seeded with ``step_seed(seed, k)``:
its starting point ``x_0 ~ U[init_range]`` and every Langevin noise ``z`` of Algorithm 1 (NCSN, Song & Ermon
2019). So sample ``k`` is the same whether it is drawn in a batch of 1 or 1000, on rank 0 of 1 or rank 3 of 8;
with rank ``r`` of ``W`` drawing ``k = r, r + W, ...`` (:func:`shard_indices`), one and many processes draw
the same set and get the same FID (up to the floating-point effect of batch size on the network's kernels).

The batched sampler is the core's :func:`~ncsn_pl.samplers.annealed_langevin_dynamics`, unchanged: it draws its
noise as ``torch.randn(x.shape, ..., generator=generator)``. :class:`PerSampleGenerators` hands it a stand-in
generator and, for the duration of the call, serves exactly those ``torch.randn`` calls row by row from the
per-sample generators (a ``TorchFunctionMode`` that is switched off inside the score function, so the network
runs at full speed). It fails loudly if the sampler ever draws from the stand-in in another way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

from ncsn_pl.losses import ScoreFn
from ncsn_pl.samplers import LangevinCallback, annealed_langevin_dynamics

if TYPE_CHECKING:  # the module imports Lightning; the sampling itself does not need it
    from ncsn_pl.module import ScoreModel

__all__ = [
    "PerSampleGenerators",
    "sample_seeds",
    "seeded_annealed_langevin",
    "seeded_model_samples",
    "shard_indices",
]


def shard_indices(num_samples: int, rank: int, world_size: int) -> range:
    """The sample indices process ``rank`` of ``world_size`` draws: ``rank, rank + world_size, ...``.

    Every index in ``[0, num_samples)`` belongs to exactly one rank; the shares differ by at most one.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank must lie in [0, world_size), got rank={rank}, world_size={world_size}.")
    if num_samples < 0:
        raise ValueError(f"num_samples must be >= 0, got {num_samples}.")
    return range(rank, num_samples, world_size)


def sample_seeds(seed: int, indices: Sequence[int]) -> list[int]:
    """The per-sample seeds ``step_seed(seed, k)`` of the samples ``k`` in ``indices``."""
    from ncsn_pl.module import step_seed

    return [step_seed(seed, int(k)) for k in indices]


def _shape_of(args: tuple[Any, ...]) -> tuple[int, ...]:
    """The size passed to a factory function as ``f(shape)`` or ``f(*shape)``."""
    if len(args) == 1 and isinstance(args[0], (tuple, list, torch.Size)):
        return tuple(int(n) for n in args[0])
    return tuple(int(n) for n in args)


class PerSampleGenerators:
    """Random draws for a batch whose row ``i`` comes from its own generator, seeded with ``seeds[i]``.

    Row ``i`` of every draw depends only on ``seeds[i]`` and on the sequence of draws so far, never on the other
    rows, so the batch can be split or regrouped freely.

    Args:
        seeds: one seed per row of the batch.
        device: device of the generators and of the draws.
    """

    def __init__(self, seeds: Sequence[int], device: torch.device | str | None = None) -> None:
        if len(seeds) == 0:
            raise ValueError("PerSampleGenerators needs at least one seed.")
        self.device = torch.device(device if device is not None else "cpu")
        self.generators = [torch.Generator(device=self.device).manual_seed(int(s)) for s in seeds]

    def __len__(self) -> int:
        return len(self.generators)

    def _draw(self, kind: str, shape: Sequence[int], dtype: torch.dtype | None) -> Tensor:
        shape = tuple(shape)
        if not shape or shape[0] != len(self.generators):
            raise ValueError(
                f"A per-sample draw needs a leading batch dimension of {len(self.generators)}, got shape {shape}."
            )
        out = torch.empty(shape, dtype=dtype, device=self.device)
        for row, generator in zip(out, self.generators, strict=True):
            if kind == "normal":
                row.normal_(generator=generator)
            else:
                row.uniform_(generator=generator)
        return out

    def rand(self, shape: Sequence[int], dtype: torch.dtype | None = None) -> Tensor:
        """``U[0, 1)`` draws of ``shape``; row ``i`` from generator ``i``."""
        return self._draw("uniform", shape, dtype)

    def randn(self, shape: Sequence[int], dtype: torch.dtype | None = None) -> Tensor:
        """``N(0, 1)`` draws of ``shape``; row ``i`` from generator ``i``."""
        return self._draw("normal", shape, dtype)

    @contextmanager
    def serve(self, score_fn: ScoreFn) -> Iterator[tuple[torch.Generator, ScoreFn]]:
        """Let a sampler that takes one ``generator`` draw its noise per sample.

        Yields ``(generator, score_fn)`` to pass to the sampler. While the block runs, ``torch.randn`` and
        ``torch.rand`` called with that generator return :meth:`randn` / :meth:`rand` draws; the returned score
        function runs ``score_fn`` with the interception switched off (no per-op overhead in the network).

        Raises:
            RuntimeError: the sampler drew from the stand-in generator some other way (its state changed).
        """
        stand_in = torch.Generator()  # never draws: its state is checked afterwards
        state = stand_in.get_state()
        mode = _ServeDraws(stand_in, self)

        def score_outside(x: Tensor, levels: Tensor) -> Tensor:
            mode.__exit__(None, None, None)
            try:
                return score_fn(x, levels)
            finally:
                mode.__enter__()

        with mode:
            yield stand_in, score_outside
        if not torch.equal(stand_in.get_state(), state):
            raise RuntimeError(
                "The sampler drew random numbers from the per-sample stand-in generator without torch.randn or "
                "torch.rand (e.g. Tensor.normal_), so the samples are not seeded per sample. Extend "
                "ncsn_pl.sampling.PerSampleGenerators to serve that call."
            )


class _ServeDraws(TorchFunctionMode):
    """Serve ``torch.randn`` / ``torch.rand`` calls made with ``stand_in`` from per-sample generators."""

    def __init__(self, stand_in: torch.Generator, draws: PerSampleGenerators) -> None:
        super().__init__()
        self.stand_in = stand_in
        self.draws = draws
        self.served = 0

    def __torch_function__(self, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if kwargs.get("generator") is self.stand_in and func in (torch.randn, torch.rand):
            if kwargs.get("device") is not None and torch.device(kwargs["device"]) != self.draws.device:
                raise RuntimeError(
                    f"The sampler asked for noise on {kwargs['device']} but the per-sample generators are on "
                    f"{self.draws.device}; create PerSampleGenerators on the samples' device."
                )
            self.served += 1
            draw = self.draws.randn if func is torch.randn else self.draws.rand
            return draw(_shape_of(args), kwargs.get("dtype"))
        return func(*args, **kwargs)


@torch.no_grad()
def seeded_annealed_langevin(
    score_fn: ScoreFn,
    sigmas: Tensor,
    data_shape: Sequence[int],
    seeds: Sequence[int],
    *,
    init_range: tuple[float, float] = (0.0, 1.0),
    n_steps_each: int = 100,
    step_lr: float = 2e-5,
    denoise: bool = False,
    batch_size: int | None = None,
    callback: LangevinCallback | None = None,
) -> Tensor:
    """Annealed Langevin dynamics (NCSN Algorithm 1) for ``len(seeds)`` samples, sample ``i`` seeded by ``seeds[i]``.

    Sample ``i`` starts at ``x_0 ~ U[init_range]`` drawn from its generator, then every noise ``z`` of
    ``x <- x + a_i s(x, i) + sqrt(2 a_i) z`` comes from the same generator. The result does not depend on
    ``batch_size`` or on which other seeds share the batch.

    Args:
        score_fn: ``score_fn(x, levels)``; it runs on ``sigmas.device``.
        sigmas: the descending schedule, shape ``(L,)``.
        data_shape: the shape of one sample, e.g. ``(3, 32, 32)``.
        seeds: one seed per sample (:func:`sample_seeds`).
        init_range: ``(low, high)`` of the uniform start (U[0, 1] in the papers).
        n_steps_each: T, the steps per level.
        step_lr: epsilon in the official code's convention.
        denoise: apply NCSNv2's final denoising step.
        batch_size: samples per sampler call (all at once if None).
        callback: passed to the sampler (called after every update of every batch).

    Returns:
        The samples, shape ``(len(seeds), *data_shape)``, on ``sigmas.device``.

    Raises:
        FloatingPointError: a batch diverged; the message names the level and step (from the core sampler).
    """
    device = sigmas.device
    if len(seeds) == 0:
        return torch.empty((0, *data_shape), device=device, dtype=sigmas.dtype)
    batch_size = batch_size or len(seeds)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    low, high = init_range
    batches = []
    for start in range(0, len(seeds), batch_size):
        draws = PerSampleGenerators(seeds[start : start + batch_size], device)
        # x_0 ~ U[low, high], the first draw of each sample's generator
        x = low + (high - low) * draws.rand((len(draws), *data_shape), dtype=sigmas.dtype)
        with draws.serve(score_fn) as (generator, score_outside):
            x = annealed_langevin_dynamics(
                score_outside,
                x,
                sigmas,
                n_steps_each=n_steps_each,
                step_lr=step_lr,
                denoise=denoise,
                generator=generator,
                callback=callback,
            )
        batches.append(x)
    return torch.cat(batches)


def seeded_model_samples(
    model: ScoreModel,
    indices: Sequence[int],
    *,
    seed: int = 0,
    batch_size: int | None = None,
    n_steps_each: int | None = None,
    step_lr: float | None = None,
    denoise: bool | None = None,
    callback: LangevinCallback | None = None,
) -> Tensor:
    """Samples ``k in indices`` of a :class:`~ncsn_pl.module.ScoreModel`, sample ``k`` seeded by ``step_seed(seed, k)``.

    The settings default to the model's ``n_steps_each``, ``step_lr``, ``denoise`` and ``init_range``, as in
    :meth:`ScoreModel.sample`; the network runs in eval mode. Samples are not clamped.

    Raises:
        ValueError: the model has no data shape or its schedule is still ``"auto"``.
        FloatingPointError: sampling diverged; the message names the samples, the level and the step.
    """
    hp = model.hparams
    if model.data_shape is None:
        raise ValueError("The model does not know its data shape: set model.data_shape or train it first.")
    if model.schedule_is_auto and (step_lr is None or model.sigmas.numel() == 0):
        raise ValueError("The schedule is still 'auto': fit the model (or give numbers) before sampling.")
    indices = [int(k) for k in indices]
    settings = {
        "init_range": tuple(hp.init_range),
        "n_steps_each": n_steps_each or hp.n_steps_each,
        "step_lr": step_lr or hp.step_lr,
        "denoise": hp.denoise if denoise is None else denoise,
    }
    batch_size = batch_size or max(1, len(indices))
    was_training = model.score_net.training
    model.score_net.eval()
    batches = []
    try:
        for start in range(0, len(indices), batch_size):
            batch = indices[start : start + batch_size]
            try:
                batches.append(
                    seeded_annealed_langevin(
                        model.score_net,
                        model.sigmas,
                        model.data_shape,
                        sample_seeds(seed, batch),
                        callback=callback,
                        **settings,
                    )
                )
            except FloatingPointError as err:
                raise FloatingPointError(
                    f"{err} Samples {batch[0]}..{batch[-1]} (seed {seed}) were being drawn with step_lr="
                    f"{settings['step_lr']:g}, n_steps_each={settings['n_steps_each']}."
                ) from err
    finally:
        model.score_net.train(was_training)
    if not batches:
        return torch.empty((0, *model.data_shape), device=model.sigmas.device)
    return torch.cat(batches)
