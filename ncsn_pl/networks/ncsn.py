"""NCSN v1: the noise-conditional RefineNet with dilations (``CondRefineNetDilated``, Song & Ermon 2019, App.
B.1).

Reference: ermongroup/ncsn ``models/cond_refinenet_dilated.py`` (``CondRefineNetDilated``). The same skeleton,
:class:`RefineNetDilated`, also carries the NCSNv2 networks (:mod:`ncsn_pl.networks.ncsnv2`).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ncsn_pl.networks.layers import ConditionalInstanceNorm2dPlus, NormFactory, RefineBlock, ResidualBlock

__all__ = ["Stage", "Refine", "check_score_inputs", "RefineNetDilated", "NCSN"]


class Stage(NamedTuple):
    """One encoder stage: two residual blocks ``name.0`` (``in_mult*ngf -> out_mult*ngf``) and ``name.1``."""

    name: str
    in_mult: int
    out_mult: int
    resample: Literal["down"] | None
    dilation: int | None


class Refine(NamedTuple):
    """One RefineNet block ``name`` fed by the encoder stage ``source`` (and the refine block below it)."""

    name: str
    source: str
    in_mults: tuple[int, ...]
    out_mult: int


def check_score_inputs(
    net: str,
    x: Tensor,
    levels: Tensor,
    num_scales: int,
    *,
    channels: int | None = None,
    check_range: bool = True,
) -> None:
    """Raise a ``ValueError`` that says what to fix unless ``x`` and ``levels`` fit a score network.

    Args:
        net: the network's name, for the message.
        x: the batch; image networks need ``(B, channels, H, W)``.
        levels: integer noise-level indices, shape ``(B,)``.
        num_scales: the number of levels L; levels must lie in ``[0, L)``.
        channels: the expected number of image channels, or ``None`` to skip the image checks.
        check_range: whether to check the values of ``levels`` (a device sync on GPU).
    """
    if channels is not None:
        if x.ndim != 4:
            raise ValueError(
                f"{net} expects an image batch of shape (B, {channels}, H, W), got shape {tuple(x.shape)}."
            )
        if x.shape[1] != channels:
            raise ValueError(
                f"{net} was built for {channels} channel(s) but x has {x.shape[1]} (shape {tuple(x.shape)}): "
                f"expected (B, {channels}, H, W); build the network with channels={x.shape[1]} or fix the "
                "data."
            )
    if not x.is_floating_point():
        raise ValueError(f"{net} expects floating-point x in [0, 1], got dtype {x.dtype}.")
    if not isinstance(levels, Tensor) or levels.dtype.is_floating_point or levels.dtype in (torch.bool,):
        raise ValueError(
            f"{net} expects levels as an integer (long) tensor of noise-level indices, "
            f"got {levels.dtype if isinstance(levels, Tensor) else type(levels).__name__}."
        )
    if levels.shape != (x.shape[0],):
        raise ValueError(
            f"{net} expects levels of shape (B,) = ({x.shape[0]},), one index per sample, "
            f"got shape {tuple(levels.shape)}."
        )
    if check_range and levels.numel():
        lo, hi = int(levels.min()), int(levels.max())
        if lo < 0 or hi >= num_scales:
            raise ValueError(
                f"{net} has num_scales={num_scales}: levels must lie in [0, {num_scales}), "
                f"got values from {lo} to {hi}."
            )


def _check_int(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")


class RefineNetDilated(nn.Module):
    """The RefineNet skeleton shared by NCSN v1 and NCSNv2: encoder stages of residual blocks, refine blocks
    back up.

    ``x -> 2x-1 -> begin_conv -> stages -> refine blocks (bottom to top) -> normalizer -> ELU -> end_conv``.
    Module names and registration order follow the official code, so the state dict keys are the official
    ones.
    """

    def __init__(
        self,
        channels: int,
        ngf: int,
        num_scales: int,
        norm: NormFactory,
        refine_norm: NormFactory | None,
        pool: Literal["avg", "max"],
        stages: Sequence[Stage],
        refines: Sequence[Refine],
    ) -> None:
        """Build the skeleton.

        Args:
            channels: image channels C.
            ngf: base width; stage widths are multiples of it.
            num_scales: the number of noise levels L.
            norm: builds the normalisation layers of the residual blocks and the final one
                (``norm(num_features)``).
            refine_norm: builds those of the refine blocks (v1: CIN++), or ``None`` for none (v2).
            pool: pooling of the chained residual pooling blocks (v1 ``"avg"``, v2 ``"max"``).
            stages: the encoder stages, top (full resolution) to bottom.
            refines: the refine blocks in registration order; each names its encoder ``source``.
        """
        super().__init__()
        _check_int("channels", channels, 1)
        _check_int("ngf", ngf, 2)
        _check_int("num_scales", num_scales, 1)
        self.channels, self.ngf, self.num_scales = channels, ngf, num_scales
        self.begin_conv = nn.Conv2d(channels, ngf, 3, padding=1)
        self.normalizer = norm(ngf)
        self.end_conv = nn.Conv2d(ngf, channels, 3, padding=1)
        for s in stages:
            blocks = [
                ResidualBlock(s.in_mult * ngf, s.out_mult * ngf, norm, resample=s.resample, dilation=s.dilation),
                ResidualBlock(s.out_mult * ngf, s.out_mult * ngf, norm, dilation=s.dilation),
            ]
            self.add_module(s.name, nn.ModuleList(blocks))
        by_source = {r.source: r for r in refines}
        # forward order: bottom stage first; the first block starts, the last one ends
        self._stage_names = [s.name for s in stages]
        self._refine_order = [(by_source[s.name].name, s.name) for s in reversed(stages)]
        for r in refines:
            start = r.name == self._refine_order[0][0]
            end = r.name == self._refine_order[-1][0]
            in_planes = [m * ngf for m in r.in_mults]
            block = RefineBlock(in_planes, r.out_mult * ngf, refine_norm, pool, start=start, end=end)
            self.add_module(r.name, block)
        self.size_multiple = 2 ** sum(s.resample == "down" and s.dilation is None for s in stages)

    def check_inputs(self, x: Tensor, levels: Tensor) -> None:
        """Raise a ``ValueError`` unless ``x`` is ``(B, channels, H, W)`` with H, W multiples of
        :attr:`size_multiple` and ``levels`` holds ``B`` indices in ``[0, num_scales)``."""
        check_score_inputs(
            type(self).__name__,
            x,
            levels,
            self.num_scales,
            channels=self.channels,
            check_range=not torch.compiler.is_compiling(),
        )
        h, w = x.shape[-2:]
        if h % self.size_multiple or w % self.size_multiple:
            raise ValueError(
                f"{type(self).__name__} halves the image size {self.size_multiple.bit_length() - 1} time(s): "
                f"height and width must be multiples of {self.size_multiple}, got {h}x{w}."
            )

    def features(self, x: Tensor, levels: Tensor) -> Tensor:
        """The network output without input checks (v1: the score; v2: sigma times the score)."""
        h = self.begin_conv(2 * x - 1.0)
        layers = {}
        for name in self._stage_names:
            for block in getattr(self, name):
                h = block(h, levels)
            layers[name] = h
        ref: Tensor | None = None
        for refine_name, source in self._refine_order:
            skip = layers[source]
            ref = getattr(self, refine_name)([skip] if ref is None else [skip, ref], levels, skip.shape[-2:])
        assert ref is not None
        return self.end_conv(F.elu(self.normalizer(ref, levels)))


_V1_STAGES = (
    Stage("res1", 1, 1, None, None),
    Stage("res2", 1, 2, "down", None),
    Stage("res3", 2, 2, "down", 2),
    Stage("res4", 2, 2, "down", 4),
)
_V1_REFINES = (
    Refine("refine1", "res4", (2,), 2),
    Refine("refine2", "res3", (2, 2), 2),
    Refine("refine3", "res2", (2, 2), 1),
    Refine("refine4", "res1", (1, 1), 1),
)


class NCSN(RefineNetDilated):
    """NCSN v1 score network s(x, i) (``CondRefineNetDilated``, Song & Ermon 2019).

    A RefineNet with dilated convolutions in which every normalisation is a conditional InstanceNorm++ whose
    (gamma, alpha, beta) row is chosen by the noise level i: 71 such layers, and no other conditioning. The
    output is the score itself (no division by sigma). Input images are in [0, 1] and centred with ``2x - 1``
    inside.
    Resolution: ``H x W`` -> ``H/2 x W/2`` after ``res2`` (the dilated "down" blocks of ``res3``/``res4`` keep
    the size) -> back to ``H x W`` in ``refine4``.

    Paper settings: CIFAR-10 / CelebA-32 use ``channels=3, ngf=128`` (30,117,635 parameters), MNIST
    ``channels=1, ngf=64`` (7,638,657 parameters), all with ``num_scales=10``.
    """

    def __init__(self, channels: int = 3, ngf: int = 128, num_scales: int = 10) -> None:
        """Build the network.

        Args:
            channels: image channels (3 for CIFAR-10 and CelebA, 1 for MNIST).
            ngf: base width (128 for CIFAR-10 and CelebA, 64 for MNIST).
            num_scales: the number of noise levels L (10 in the paper).
        """
        _check_int("num_scales", num_scales, 1)
        norm = partial(ConditionalInstanceNorm2dPlus, num_scales=num_scales)
        super().__init__(channels, ngf, num_scales, norm, norm, "avg", _V1_STAGES, _V1_REFINES)

    def forward(self, x: Tensor, levels: Tensor) -> Tensor:
        """The score s(x, i) at noise level ``levels``.

        Args:
            x: images in [0, 1] (plus noise), shape ``(B, channels, H, W)``, H and W even.
            levels: noise-level indices, LongTensor of shape ``(B,)`` in ``[0, num_scales)``.

        Returns:
            The score, shaped like ``x``.
        """
        self.check_inputs(x, levels)
        return self.features(x, levels)
