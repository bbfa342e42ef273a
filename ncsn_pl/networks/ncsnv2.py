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

from ncsn_pl.networks.layers import InstanceNorm2dPlus
from ncsn_pl.networks.ncsn import NCSN_REFINES, NCSN_STAGES, Refine, RefineNetDilated, Stage

__all__ = ["SigmaScaledRefineNet", "NCSNv2", "NCSNv2Deeper", "NCSNv2Deepest"]


class SigmaScaledRefineNet(RefineNetDilated):
    """An unconditional RefineNet whose output is divided by ``sigmas[levels]`` (NCSNv2, Technique 3).

    ``sigmas`` is a float32 buffer (part of the state dict, as in the official models) holding the schedule the
    network is given with :meth:`set_sigmas`; it has no parameters per level, so any schedule fits. Until it is
    given one (``ScoreModel`` does), the network has no noise levels and refuses to run.
    """

    def __init__(self, channels: int, ngf: int, stages: Sequence[Stage], refines: Sequence[Refine]) -> None:
        super().__init__(channels, ngf, InstanceNorm2dPlus, None, "max", stages, refines)
        self.sigmas: Tensor
        self.register_buffer("sigmas", torch.empty(0))

    @property
    def num_scales(self) -> int:
        """L: the length of the schedule the network was given (0 before :meth:`set_sigmas`)."""
        return int(self.sigmas.numel())

    def set_sigmas(self, sigmas: Tensor) -> None:
        """Keep ``sigmas`` (descending, shape ``(L,)``) as the float32 buffer the output is divided by."""
        self.register_buffer("sigmas", sigmas.detach().to(device=self.sigmas.device, dtype=torch.float32).clone())

    def check_inputs(self, x: Tensor, levels: Tensor, check_range: bool | None = None) -> None:
        if self.num_scales == 0:
            raise ValueError(
                f"{type(self).__name__} has no noise schedule yet: ScoreModel gives it one, or call "
                "net.set_sigmas(sigmas) first."
            )
        super().check_inputs(x, levels, check_range)

    def unscaled(self, x: Tensor) -> Tensor:
        """The network output before the division by sigma: an estimate of sigma * score, the same at every
        level.

        Args:
            x: images in [0, 1] (plus noise), shape ``(B, channels, H, W)``.
        """
        levels = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        self.check_inputs(x, levels, check_range=False)  # levels made here: nothing to read back
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

    29,694,083 parameters at ``channels=3, ngf=128``, the papers' setting for both data sets.
    """

    def __init__(self, channels: int = 3, ngf: int = 128) -> None:
        """Build the network.

        Args:
            channels: image channels.
            ngf: base width (128 in all NCSNv2 configs).
        """
        super().__init__(channels, ngf, NCSN_STAGES, NCSN_REFINES)


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

    83,445,379 parameters at ``channels=3, ngf=128``, the papers' setting.
    """

    def __init__(self, channels: int = 3, ngf: int = 128) -> None:
        """Build the network.

        Args:
            channels: image channels.
            ngf: base width (128).
        """
        super().__init__(channels, ngf, _DEEPER_STAGES, _DEEPER_REFINES)


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

    94,132,611 parameters at ``channels=3, ngf=128``, the paper's setting.
    """

    def __init__(self, channels: int = 3, ngf: int = 128) -> None:
        """Build the network.

        Args:
            channels: image channels.
            ngf: base width (128).
        """
        super().__init__(channels, ngf, _DEEPEST_STAGES, _DEEPEST_REFINES)
