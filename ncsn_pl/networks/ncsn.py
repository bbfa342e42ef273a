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
from torch import Tensor, nn

from ncsn_pl.networks.base import ScoreNetwork, check_int, check_score_inputs, sizes_near
from ncsn_pl.networks.layers import (
    ConditionalInstanceNorm2dPlus,
    NormFactory,
    RefineBlock,
    ResidualBlock,
    elu,
    upcast,
)

__all__ = ["NCSN", "NCSN_REFINES", "NCSN_STAGES", "Refine", "RefineNetDilated", "Stage"]


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


class RefineNetDilated(ScoreNetwork):
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
            norm: builds the normalisation layers of the residual blocks and the final one
                (``norm(num_features)``).
            refine_norm: builds those of the refine blocks (v1: CIN++), or ``None`` for none (v2).
            pool: pooling of the chained residual pooling blocks (v1 ``"avg"``, v2 ``"max"``).
            stages: the encoder stages, top (full resolution) to bottom.
            refines: the refine blocks in registration order; each names its encoder ``source``.
        """
        super().__init__()
        check_int("channels", channels, 1)
        check_int("ngf", ngf, 2)
        self.channels, self.ngf = channels, ngf
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

    @property
    def num_scales(self) -> int:
        """The number of noise levels L the network takes."""
        raise NotImplementedError

    def check_data_shape(self, shape: Sequence[int]) -> None:
        """Images ``(channels, H, W)`` with H and W multiples of :attr:`size_multiple`; else a ``ValueError`` that
        says what to set."""
        name, shape = type(self).__name__, tuple(shape)
        if len(shape) != 3:
            raise ValueError(f"{name} takes images (C, H, W), but one data item has shape {shape}.")
        if shape[0] != self.channels:
            raise ValueError(
                f"The data have {shape[0]} channel(s) but {name} was built for {self.channels}: set "
                f"model.score_net.init_args.channels to {shape[0]} (or use ${{data.channels}})."
            )
        h, w = shape[1:]
        if h % self.size_multiple or w % self.size_multiple:
            raise ValueError(
                f"{name} halves the image size {self.size_multiple.bit_length() - 1} time(s), so height and width "
                f"must be multiples of {self.size_multiple}, but the data are {h}x{w}: set "
                f"data.init_args.image_size to {sizes_near(min(h, w), self.size_multiple)}."
            )

    def check_inputs(self, x: Tensor, levels: Tensor, check_range: bool | None = None) -> None:
        """Raise a ``ValueError`` unless ``x`` is ``(B, channels, H, W)`` with H, W multiples of
        :attr:`size_multiple` and ``levels`` holds ``B`` indices in ``[0, num_scales)``."""
        check_score_inputs(
            type(self).__name__,
            x,
            levels,
            self.num_scales,
            channels=self.channels,
            check_range=check_range,
        )
        h, w = x.shape[-2:]
        if h % self.size_multiple or w % self.size_multiple:
            raise ValueError(
                f"{type(self).__name__} halves the image size {self.size_multiple.bit_length() - 1} time(s): "
                f"height and width must be multiples of {self.size_multiple}, got {h}x{w}."
            )

    def features(self, x: Tensor, levels: Tensor) -> Tensor:
        """The network output without input checks (v1: the score; v2: sigma times the score).

        Under autocast (``bf16-mixed``) the first convolution and the output block (last normalisation and
        convolution) run in float32 and the output is float32; only the body runs in low precision. In bf16 the
        input's spacing near 1 (2^-8) is about the noise of the smallest sigma (0.01), which the network must see.
        """
        with _full_precision(x):
            h = self.begin_conv(2 * upcast(x) - 1.0)
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
        with _full_precision(x):
            return self.end_conv(elu(self.normalizer(upcast(ref), levels)))


def _full_precision(x: Tensor) -> torch.autocast:
    """A context without autocast on ``x``'s device: the ops inside run in their inputs' dtype."""
    return torch.autocast(x.device.type, enabled=False)


NCSN_STAGES = (
    Stage("res1", 1, 1, None, None),
    Stage("res2", 1, 2, "down", None),
    Stage("res3", 2, 2, "down", 2),
    Stage("res4", 2, 2, "down", 4),
)
NCSN_REFINES = (
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

    def __init__(self, channels: int = 3, ngf: int = 128, num_scales: int | Literal["auto"] = 10) -> None:
        """Build the network.

        Args:
            channels: image channels (3 for CIFAR-10 and CelebA, 1 for MNIST).
            ngf: base width (128 for CIFAR-10 and CelebA, 64 for MNIST).
            num_scales: the number of noise levels L (10 in the paper); ``"auto"`` is refused with advice (the
                network has parameters per level, so L must be known before the data are read).
        """
        if num_scales == "auto":
            raise ValueError(
                "NCSN has one row of normalisation parameters per noise level, so it needs num_scales before the data "
                "are read: give model.num_scales a number, or use ncsn_pl.networks.NCSNv2 (any schedule, so "
                "num_scales: auto works)."
            )
        check_int("num_scales", num_scales, 1)
        norm = partial(ConditionalInstanceNorm2dPlus, num_scales=num_scales)
        super().__init__(channels, ngf, norm, norm, "avg", NCSN_STAGES, NCSN_REFINES)
        self._num_scales = num_scales

    @property
    def num_scales(self) -> int:
        """L: the network has one row of normalisation parameters per noise level."""
        return self._num_scales

    def set_sigmas(self, sigmas: Tensor) -> None:
        """The schedule must have one sigma per level the network was built for (it conditions on indices)."""
        if sigmas.numel() != self.num_scales:
            raise ValueError(
                f"The score network has {self.num_scales} noise levels but the schedule has {sigmas.numel()}: "
                f"set model.score_net.init_args.num_scales to {sigmas.numel()} (or to ${{model.num_scales}})."
            )

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
