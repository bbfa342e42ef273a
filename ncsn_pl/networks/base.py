"""What every score network of ncsn-pl is: ``s(x, levels)`` with the data shapes it accepts and the noise
schedule it is given.

:class:`~ncsn_pl.training.ScoreModel` owns the schedule (``sigma_max``, ``sigma_min``, ``num_scales``) and hands
it to its network with :meth:`ScoreNetwork.set_sigmas`; a network holds no schedule defaults of its own. Before
anything is built around it, the model asks :meth:`ScoreNetwork.check_data_shape` whether the data fit.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ncsn_pl.core.samplers.base import check_int  # the samplers' settings are checked the same way

__all__ = [
    "NoScoreNetwork",
    "ScoreNetwork",
    "check_int",
    "check_score_inputs",
    "check_trained_shape",
    "upgrade_network_config",
]


class ScoreNetwork(nn.Module):
    """A noise conditional score network ``forward(x, levels) -> score`` (``levels``: LongTensor ``(B,)``).

    Subclass it for a network of your own (``model.score_net.class_path``). The defaults accept any data shape
    and ignore the schedule; override them when the network has constraints or divides by sigma.
    """

    def check_data_shape(self, shape: Sequence[int]) -> None:
        """Raise a ``ValueError`` that names the shapes that would work unless one item of shape ``shape`` fits."""

    def set_sigmas(self, sigmas: Tensor) -> None:
        """Receive the noise schedule, descending, shape ``(L,)`` (networks that divide by sigma keep it)."""


class NoScoreNetwork(ScoreNetwork):
    """Stands in for a network where a command needs none (``fid --images`` scores image files only)."""

    def forward(self, x: Tensor, levels: Tensor) -> Tensor:
        raise RuntimeError("NoScoreNetwork has no score: give the model's real network (model.score_net).")


def check_score_inputs(
    net: str,
    x: Tensor,
    levels: Tensor,
    num_scales: int,
    *,
    channels: int | None = None,
    check_range: bool | None = None,
) -> None:
    """Raise a ``ValueError`` that says what to fix unless ``x`` and ``levels`` fit a score network.

    Args:
        net: the network's name, for the message.
        x: the batch; image networks need ``(B, channels, H, W)``.
        levels: integer noise-level indices, shape ``(B,)``.
        num_scales: the number of levels L; levels must lie in ``[0, L)``.
        channels: the expected number of image channels, or ``None`` to skip the image checks.
        check_range: whether to check the values of ``levels``; by default only where that is free: for levels on
            the CPU, outside ``torch.compile``. On an accelerator reading them would stall the device at every
            forward, so the levels are checked where they are made (the samplers index the model's schedule,
            whose length the network checks in ``set_sigmas``; ``dsm_loss`` checks levels it is given).
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
    if check_range is None:
        check_range = levels.device.type == "cpu" and not torch.compiler.is_compiling()
    if check_range and levels.numel():
        lo, hi = int(levels.min()), int(levels.max())
        if lo < 0 or hi >= num_scales:
            raise ValueError(
                f"{net} has num_scales={num_scales}: levels must lie in [0, {num_scales}), "
                f"got values from {lo} to {hi}."
            )


def check_trained_shape(trained: Sequence[int] | None, given: Sequence[int] | None, what: str) -> None:
    """Refuse to draw a trained network at another data shape than the one it was trained for (a convolutional
    network runs at any size, and would give samples of a size it never learned).

    Args:
        trained: the checkpoint's data shape (``None``: not recorded, nothing to check).
        given: the data shape of the model built for the command (from its DataModule; ``None``: unknown).
        what: names the checkpoint in the message.

    Raises:
        ValueError: the shapes differ (the message names both).
    """
    if trained is None or given is None or tuple(trained) == tuple(given):
        return
    trained_size, given_size = ("x".join(str(n) for n in shape) for shape in (trained, given))
    resize = f" (--data.init_args.image_size {trained[-1]} resizes images to it)" if len(trained) == 3 else ""
    raise ValueError(
        f"{what} is a network for {trained_size} data, but the data given are {given_size}; it draws at the size it "
        f"was trained for only. Give data of its size{resize}, or leave out --data / --config and the size options "
        f"(the checkpoint's size is then used), or use a checkpoint trained at {given_size}."
    )


def sizes_near(size: int, multiple: int) -> str:
    """The multiples of ``multiple`` nearest to ``size``, for messages (``"6 or 8"``)."""
    below = size // multiple * multiple
    return f"{below} or {below + multiple}" if below >= multiple else str(multiple)


# what networks took before ScoreModel owned the schedule (NCSNv2, NCSNv2Deeper, NCSNv2Deepest: all three; ToyScoreMLP:
# sigma_max, sigma_min); the model's own settings replaced them then, so they can be dropped
SCHEDULE_ARGS = ("num_scales", "sigma_max", "sigma_min")


def upgrade_network_config(config: Any) -> Any:
    """A network's ``{"class_path", "init_args"}`` from a checkpoint, without the schedule arguments its class no
    longer takes (checkpoints written before the model owned the schedule); anything else is returned unchanged."""
    if not isinstance(config, Mapping) or not isinstance(config.get("init_args"), Mapping):
        return config
    init_args, class_path = dict(config["init_args"]), str(config.get("class_path", ""))
    if not any(key in init_args for key in SCHEDULE_ARGS):
        return config
    module, _, name = class_path.rpartition(".")
    try:
        parameters = inspect.signature(getattr(importlib.import_module(module or "ncsn_pl.networks"), name)).parameters
    except (ImportError, AttributeError, ValueError, TypeError):
        return config  # the parser names what is wrong with it
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return config
    kept = {key: value for key, value in init_args.items() if key not in SCHEDULE_ARGS or key in parameters}
    return {**config, "init_args": kept}
