"""Load the official NCSN (ermongroup/ncsn) and NCSNv2 (ermongroup/ncsnv2) checkpoints into these networks."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from ncsn_pl.networks.base import ScoreNetwork
from ncsn_pl.system.files import load_torch_file

__all__ = ["extract_state_dict", "load_official_checkpoint"]

_PREFIX = "module."
_MAX_LISTED = 5


def _strip_prefix(state: Mapping[str, Any]) -> dict[str, Any]:
    """Drop the ``module.`` prefix that ``nn.DataParallel`` adds to every key."""
    return {(k[len(_PREFIX) :] if k.startswith(_PREFIX) else k): v for k, v in state.items()}


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())
    )


def extract_state_dict(obj: Any, *, use_ema: bool = True) -> dict[str, Tensor]:
    """The model weights of an official checkpoint object or a plain state dict, without ``module.`` prefixes.

    Formats:
        * v1 runner: ``[state_dict, optimizer_state]`` (keys prefixed ``module.``).
        * v2 runner: ``[state_dict, optimizer_state, epoch, step(, ema_shadow)]``; the EMA shadow (5th
          element, keys without prefix) holds the parameters only, so buffers such as ``sigmas`` come from the
          state dict.
        * a plain state dict (``{name: tensor}``), with or without prefixes.

    Args:
        obj: the loaded checkpoint.
        use_ema: take the EMA parameters when the checkpoint has them (v2 with ``model.ema: true``);
            checkpoints without EMA (v1, v2 ``ncsn_original``) give their raw weights either way.

    Returns:
        A state dict.
    """
    if isinstance(obj, (list, tuple)):
        if not obj or not _is_state_dict(obj[0]):
            raise ValueError(
                "Not an official NCSN checkpoint: expected a list whose first element is the model state "
                f"dict ({{name: tensor}}), got a {type(obj).__name__} starting with "
                f"{type(obj[0]).__name__ if obj else 'nothing'}."
            )
        state = _strip_prefix(obj[0])
        if use_ema and len(obj) >= 5 and _is_state_dict(obj[4]):
            state.update(_strip_prefix(obj[4]))
        return state
    if _is_state_dict(obj):
        return _strip_prefix(obj)
    raise ValueError(
        "Not a checkpoint this loader knows: expected an official runner checkpoint (a list "
        "[state_dict, optimizer, ...]) or a plain state dict {name: tensor}, "
        f"got {type(obj).__name__}"
        + (f" with keys {list(obj)[:_MAX_LISTED]}" if isinstance(obj, Mapping) else "")
        + "."
    )


def load_official_checkpoint(
    net: nn.Module, path_or_obj: str | os.PathLike[str] | Any, *, use_ema: bool = True
) -> nn.Module:
    """Load an official v1/v2 checkpoint, or a plain state dict, into ``net`` (in place).

    Every key must match: missing, unexpected and wrongly shaped entries raise a ``ValueError`` that lists the
    first few of each. Values are copied into the network's tensors (and cast to their dtype).

    Args:
        net: the network, e.g. :class:`~ncsn_pl.networks.NCSN` for a v1 checkpoint or
            :class:`~ncsn_pl.networks.NCSNv2` for a v2 one, built with the checkpoint's configuration.
        path_or_obj: a path to a ``.pth`` file (read with ``torch.load(..., weights_only=True)``) or an
            already loaded checkpoint object (the runner's list, or a state dict).
        use_ema: load the EMA weights of a v2 checkpoint when present (the weights the NCSNv2 paper samples
            with).

    Returns:
        ``net``.
    """
    obj = path_or_obj
    if isinstance(path_or_obj, (str, os.PathLike)):
        obj = load_torch_file(path_or_obj, what="checkpoint", expected="an official NCSN or NCSNv2 checkpoint (.pth)")
    state = extract_state_dict(obj, use_ema=use_ema)
    if "sigmas" in state and isinstance(net, ScoreNetwork):
        net.set_sigmas(state["sigmas"])  # an NCSNv2 checkpoint carries its schedule
    expected = net.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs network {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or wrong_shape:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)):
            if items:
                more = f" (+{len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else ""
                parts.append(f"{len(items)} {label}: {', '.join(items[:_MAX_LISTED])}{more}")
        raise ValueError(
            f"The checkpoint does not fit {type(net).__name__}: " + "; ".join(parts) + ". Build the network with "
            "the checkpoint's configuration (channels, ngf, num_scales, and v1 NCSN vs "
            "NCSNv2/Deeper/Deepest)."
        )
    net.load_state_dict(state, strict=True)
    return net
