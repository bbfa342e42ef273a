"""Reference data of the network tests: the v1 state-dict keys measured on the official code (tests/data/), and
the deterministic weights the golden values were measured with."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import torch

KEYS_FILE = Path(__file__).parent / "data" / "ncsn_v1_state_dict_keys.txt"


def reference_keys() -> dict[str, list[tuple[str, tuple[int, ...]]]]:
    """The (key, shape) lists of the MNIST and CIFAR-10 sections of the measured reference key file."""
    sections: dict[str, list[tuple[str, tuple[int, ...]]]] = {}
    current = None
    for line in KEYS_FILE.read_text().splitlines():
        if line.startswith("## "):
            current = "mnist" if "MNIST" in line else "cifar10"
            sections[current] = []
        elif line.strip() and not line.startswith("#"):
            key, shape = line.split("\t")
            sections[current].append((key, tuple(int(n) for n in re.findall(r"\d+", shape))))
    return sections


def v1_sigmas() -> torch.Tensor:
    """The v1 schedule as the reference builds it: float64 geometric, then float32."""
    return torch.tensor(np.exp(np.linspace(np.log(1.0), np.log(0.01), 10))).float()


def deterministic_weights_(net: torch.nn.Module) -> None:
    """Deterministic weights: key ``j`` in sorted order is filled from ``manual_seed(j)`` (CIN++ embeddings near
    (1, 1, 0), convolutions uniform in +-1/sqrt(fan_in), biases 0.01 N(0, 1))."""
    state = net.state_dict()
    with torch.no_grad():
        for j, key in enumerate(sorted(state)):
            gen = torch.Generator().manual_seed(j)
            t = state[key]
            if key.endswith("embed.weight"):
                r = torch.randn(t.shape, generator=gen)
                c = t.shape[1] // 3
                t[:, : 2 * c] = 1 + 0.02 * r[:, : 2 * c]
                t[:, 2 * c :] = 0.02 * r[:, 2 * c :]
            elif t.ndim == 4:
                bound = 1 / math.sqrt(t[0].numel())
                t.copy_(torch.rand(t.shape, generator=gen) * 2 * bound - bound)
            else:
                assert t.ndim == 1 and key.endswith("bias"), key
                t.copy_(0.01 * torch.randn(t.shape, generator=gen))


def with_sigmas(net: torch.nn.Module, sigma_max: float, sigma_min: float, num_scales: int) -> torch.nn.Module:
    """``net`` given the geometric schedule ``sigma_max -> sigma_min`` over ``num_scales`` levels (as ScoreModel
    gives it); returns ``net``."""
    from ncsn_pl.core.sigmas import geometric_sigmas

    net.set_sigmas(geometric_sigmas(sigma_max, sigma_min, num_scales))
    return net
