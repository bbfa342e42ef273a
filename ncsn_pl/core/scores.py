"""The two calling conventions of score functions that the samplers accept.

* Level-indexed, :data:`~ncsn_pl.core.losses.ScoreFn`: ``score_fn(x, levels)`` with ``levels`` a LongTensor of
  shape ``(B,)`` indexing the trained schedule (NCSN's conditional networks, score_sde's discrete models).
* Sigma-conditioned, :class:`SigmaScore`: ``fn(x, sigma)`` with ``sigma`` a float tensor of shape ``(B,)``; it can
  be evaluated at any sigma, so the samplers may use grids other than the trained one (score_sde's continuous
  models, ``models/utils.py`` ``get_score_fn``; EDM's denoisers, ``generate.py``).

A plain callable is taken as level-indexed; wrapping it in :class:`SigmaScore` says that it takes sigma.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ncsn_pl.core.losses import ScoreFn

__all__ = ["AnyScoreFn", "SigmaScore", "SigmaScoreFn", "level_score", "score_at", "sigma_scaled_score"]

SigmaScoreFn = Callable[[Tensor, Tensor], Tensor]
"""``sigma_score_fn(x, sigma) -> score`` with ``sigma`` a float tensor of shape ``(B,)``."""


@dataclass(frozen=True)
class SigmaScore:
    """A score function conditioned on sigma itself: ``SigmaScore(fn)(x, sigma) = fn(x, sigma)``.

    NCSNv2 is one (Song & Ermon 2020, Technique 3: ``s(x, sigma) = f(x) / sigma``): its network output before the
    division, ``net.unscaled(x)``, divided by any sigma, is :func:`sigma_scaled_score` ``(net.unscaled)``.

    Attributes:
        fn: ``fn(x, sigma) -> score`` with ``x`` of shape ``(B, ...)`` and ``sigma`` of shape ``(B,)``, on
            ``x``'s device and dtype.
    """

    fn: SigmaScoreFn

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        return self.fn(x, sigma)


AnyScoreFn = ScoreFn | SigmaScore
"""What the samplers accept: a level-indexed ``score_fn(x, levels)`` or a :class:`SigmaScore`."""


def sigma_scaled_score(unscaled: Callable[[Tensor], Tensor]) -> SigmaScore:
    """The sigma-conditioned score ``s(x, sigma) = f(x) / sigma`` of a network that estimates ``sigma * score``.

    NCSNv2 (Song & Ermon 2020, Technique 3; ermongroup/ncsnv2 ``models/ncsnv2.py``, the division by
    ``used_sigmas``): pass ``net.unscaled``, the output before the division. The result fits every sampler,
    including the grids a level-indexed network cannot evaluate (CAS with ``n_steps_each > 1``, the ODE with
    ``num_steps``).
    """

    def fn(x: Tensor, sigma: Tensor) -> Tensor:
        return unscaled(x) / sigma.view(-1, *(1,) * (x.ndim - 1))

    return SigmaScore(fn)


def level_score(score_fn: AnyScoreFn, sigmas: Tensor) -> ScoreFn:
    """A level-indexed view of ``score_fn`` on the schedule ``sigmas``: a :class:`SigmaScore` is evaluated at
    ``sigmas[levels]``; a level-indexed function is returned as it is."""
    if not isinstance(score_fn, SigmaScore):
        return score_fn

    def by_level(x: Tensor, levels: Tensor) -> Tensor:
        return score_fn(x, sigmas.to(device=x.device, dtype=x.dtype)[levels])

    return by_level


def score_at(score_fn: AnyScoreFn, x: Tensor, level: int | None, sigma: float) -> Tensor:
    """``score_fn`` at one noise level for the whole batch: by ``level`` if it is level-indexed, by ``sigma`` if it
    is a :class:`SigmaScore`. ``level`` is None on grids that only a :class:`SigmaScore` can evaluate."""
    if isinstance(score_fn, SigmaScore):
        return score_fn(x, torch.full((x.shape[0],), sigma, dtype=x.dtype, device=x.device))
    if level is None:
        raise ValueError("A level-indexed score function was asked for a sigma off its schedule.")
    return score_fn(x, torch.full((x.shape[0],), level, dtype=torch.long, device=x.device))
