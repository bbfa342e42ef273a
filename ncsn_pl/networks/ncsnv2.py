"""NCSNv2 score networks (Song & Ermon 2020, "Improved Techniques for Training Score-Based Generative
Models").

Reference: ermongroup/ncsnv2 ``models/ncsnv2.py`` (``NCSNv2``, ``NCSNv2Deeper``, ``NCSNv2Deepest``). The
networks are unconditional RefineNets (InstanceNorm++, no normalisation in the refine blocks, max pooling in
the chained residual pooling) whose output is divided by sigma_i (Technique 3: s(x, sigma) = s(x) / sigma).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ncsn_pl.core.sigmas import geometric_sigmas
from ncsn_pl.networks.layers import InstanceNorm2dPlus
from ncsn_pl.networks.ncsn import _V1_REFINES, _V1_STAGES, Refine, RefineNetDilated, Stage

__all__ = ["SigmaScaledRefineNet", "NCSNv2", "NCSNv2Deeper", "NCSNv2Deepest"]


class SigmaScaledRefineNet(RefineNetDilated):
    """An unconditional RefineNet whose output is divided by ``sigmas[levels]`` (NCSNv2, Technique 3).

    ``sigmas`` is a float32 buffer (part of the state dict, as in the official models) holding the geometric
    schedule from ``sigma_max`` to ``sigma_min``. A training module that uses another schedule overwrites it
    in place with ``net.sigmas.copy_(sigmas)``.
    """

    def __init__(
        self,
        channels: int,
        ngf: int,
        num_scales: int,
        sigma_max: float,
        sigma_min: float,
        stages: Sequence[Stage],
        refines: Sequence[Refine],
    ) -> None:
        sigmas = geometric_sigmas(sigma_max, sigma_min, num_scales)
        super().__init__(channels, ngf, num_scales, InstanceNorm2dPlus, None, "max", stages, refines)
        self.sigma_max, self.sigma_min = float(sigma_max), float(sigma_min)
        self.sigmas: Tensor
        self.register_buffer("sigmas", sigmas)

    def unscaled(self, x: Tensor) -> Tensor:
        """The network output before the division by sigma: an estimate of sigma * score, the same at every
        level.

        Args:
            x: images in [0, 1] (plus noise), shape ``(B, channels, H, W)``.
        """
        levels = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        self.check_inputs(x, levels)
        return self.features(x, levels)

    def forward(self, x: Tensor, levels: Tensor) -> Tensor:
        """The score s(x, sigma_i) = f(x) / sigma_i.

        Args:
            x: images in [0, 1] (plus noise), shape ``(B, channels, H, W)``; H and W multiples of
                :attr:`size_multiple` (2, 4 or 8).
            levels: noise-level indices, LongTensor of shape ``(B,)`` in ``[0, num_scales)``.

        Returns:
            The score, shaped like ``x``.
        """
        self.check_inputs(x, levels)
        out = self.features(x, levels)
        return out / self.sigmas[levels].view(-1, *(1,) * (out.ndim - 1))


class NCSNv2(SigmaScaledRefineNet):
    """NCSNv2 for CIFAR-10 and CelebA-64: v1's skeleton (bottom resolution H/2), unconditional, output /
    sigma.

    29,694,083 parameters at ``ngf=128`` for any ``channels=3`` config; the defaults are the CIFAR-10 ones.
    """

    def __init__(
        self,
        channels: int = 3,
        ngf: int = 128,
        num_scales: int = 232,
        sigma_max: float = 50.0,
        sigma_min: float = 0.01,
    ) -> None:
        """Build the network.

        Args:
            channels: image channels.
            ngf: base width (128 in all NCSNv2 configs).
            num_scales: the number of noise levels L (CIFAR-10 232, CelebA-64 500).
            sigma_max: the largest sigma (NCSN's ``sigma_begin``; CIFAR-10 50, CelebA-64 90).
            sigma_min: the smallest sigma (``sigma_end``, 0.01).
        """
        super().__init__(channels, ngf, num_scales, sigma_max, sigma_min, _V1_STAGES, _V1_REFINES)


_DEEPER_STAGES = (
    Stage("res1", 1, 1, None, None),
    Stage("res2", 1, 2, "down", None),
    Stage("res3", 2, 2, "down", None),
    Stage("res4", 2, 4, "down", 2),
    Stage("res5", 4, 4, "down", 4),
)
_DEEPER_REFINES = (
    Refine("refine1", "res5", (4,), 4),
    Refine("refine2", "res4", (4, 4), 2),
    Refine("refine3", "res3", (2, 2), 2),
    Refine("refine4", "res2", (2, 2), 1),
    Refine("refine5", "res1", (1, 1), 1),
)


class NCSNv2Deeper(SigmaScaledRefineNet):
    """NCSNv2Deeper for LSUN (church, bedroom, tower; 64-128 px): 5 stages, bottom resolution H/4, widths up
    to 4ngf.

    83,445,379 parameters at ``channels=3, ngf=128``; the defaults are the bedroom/tower-128 config.
    """

    def __init__(
        self,
        channels: int = 3,
        ngf: int = 128,
        num_scales: int = 1086,
        sigma_max: float = 190.0,
        sigma_min: float = 0.01,
    ) -> None:
        """Build the network.

        Args:
            channels: image channels.
            ngf: base width (128).
            num_scales: the number of noise levels L (church 788, bedroom/tower 1086).
            sigma_max: the largest sigma (NCSN's ``sigma_begin``; church 140, bedroom/tower 190).
            sigma_min: the smallest sigma (0.01).
        """
        super().__init__(channels, ngf, num_scales, sigma_max, sigma_min, _DEEPER_STAGES, _DEEPER_REFINES)


_DEEPEST_STAGES = (
    Stage("res1", 1, 1, None, None),
    Stage("res2", 1, 2, "down", None),
    Stage("res3", 2, 2, "down", None),
    Stage("res31", 2, 2, "down", None),
    Stage("res4", 2, 4, "down", 2),
    Stage("res5", 4, 4, "down", 4),
)
# registration order of the official model (refine3 before refine31); the forward order follows the stages
_DEEPEST_REFINES = (
    Refine("refine1", "res5", (4,), 4),
    Refine("refine2", "res4", (4, 4), 2),
    Refine("refine3", "res3", (2, 2), 2),
    Refine("refine31", "res31", (2, 2), 2),
    Refine("refine4", "res2", (2, 2), 1),
    Refine("refine5", "res1", (1, 1), 1),
)


class NCSNv2Deepest(SigmaScaledRefineNet):
    """NCSNv2Deepest for FFHQ-256: Deeper plus one more downsampling stage (``res31``/``refine31``), bottom
    H/8.

    94,132,611 parameters at ``channels=3, ngf=128``; the defaults are the FFHQ-256 config.
    """

    def __init__(
        self,
        channels: int = 3,
        ngf: int = 128,
        num_scales: int = 2311,
        sigma_max: float = 348.0,
        sigma_min: float = 0.01,
    ) -> None:
        """Build the network.

        Args:
            channels: image channels.
            ngf: base width (128).
            num_scales: the number of noise levels L (2311 for FFHQ-256).
            sigma_max: the largest sigma (NCSN's ``sigma_begin``; 348 for FFHQ-256).
            sigma_min: the smallest sigma (0.01).
        """
        super().__init__(channels, ngf, num_scales, sigma_max, sigma_min, _DEEPEST_STAGES, _DEEPEST_REFINES)
