"""Randomness keyed by position: per-step seeds, per-sample noise and the share of each process.

Training noise is seeded by (step, rank, micro-batch), so a resumed run draws what an uninterrupted one would.
Sampling noise is counter-based: element ``j`` of draw ``t`` of sample ``k`` is a pure function of
``(step_seed(seed, k), t, j)`` (:class:`PerSampleNoise`), so sample ``k`` is the same in a batch of 1 or 1000, on
rank 0 of 1 or rank 3 of 8, after a resume, and on the CPU and a GPU; a draw is a fixed number of vectorised tensor
operations, whatever the batch. The bits come from Philox4x32-10 (Salmon et al. 2011, "Parallel random numbers: as
easy as 1, 2, 3"; the generator behind cuRAND and PyTorch's CUDA generator), the normals from the Box-Muller
transform computed with IEEE-exact arithmetic only (+, -, *, /, sqrt), so the values are bit for bit those of any
other device.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

__all__ = ["NOISE", "PerSampleNoise", "noise_from", "philox4x32", "sample_seeds", "shard_indices", "step_seed"]

NOISE = "philox4x32-10/box-muller-exact"
"""The name of :class:`PerSampleNoise`'s stream, recorded with sample sets (another stream draws other samples)."""

_MASK32 = 0xFFFFFFFF
_PHILOX_M = (0xD2511F53, 0xCD9E8D57)  # the round multipliers
_PHILOX_W = (0x9E3779B9, 0xBB67AE85)  # the key increments (golden ratio, sqrt(3) - 1)


def step_seed(seed: int, *counters: int) -> int:
    """A 63-bit seed derived from ``seed`` and counters (step, rank, sample index, ...).

    Randomness keyed by position rather than by a running generator makes training resumable bit for bit
    and makes sample ``k`` the same whatever the number of processes.
    """
    value = seed & 0xFFFFFFFFFFFFFFFF
    for counter in counters:
        value = (value * 6364136223846793005 + 1442695040888963407 + counter) & 0xFFFFFFFFFFFFFFFF
        value ^= value >> 29
    return value & 0x7FFFFFFFFFFFFFFF


def sample_seeds(seed: int, indices: Sequence[int]) -> list[int]:
    """The per-sample seeds ``step_seed(seed, k)`` of the samples ``k`` in ``indices``."""
    return [step_seed(seed, int(k)) for k in indices]


def shard_indices(num_samples: int, rank: int, world_size: int) -> range:
    """The sample indices process ``rank`` of ``world_size`` draws: ``rank, rank + world_size, ...``.

    Every index in ``[0, num_samples)`` belongs to exactly one rank; the shares differ by at most one.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank must lie in [0, world_size), got rank={rank}, world_size={world_size}.")
    if num_samples < 0:
        raise ValueError(f"num_samples must be >= 0, got {num_samples}.")
    return range(rank, num_samples, world_size)


def noise_from(generator: torch.Generator | None) -> Callable[[Tensor], Tensor]:
    """A ``noise_fn`` for the samplers that draws ``N(0, I)`` shaped like ``x`` from ``generator``."""

    def noise_fn(x: Tensor) -> Tensor:
        return torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)

    return noise_fn


def _mulhilo(a: Tensor, m: int) -> tuple[Tensor, Tensor]:
    """The high and low 32-bit words of ``a * m`` for 32-bit ``a`` (int64 tensor) and a 32-bit constant ``m``,
    in 16-bit halves of ``m`` so that no int64 product overflows."""
    p = a * (m >> 16)  # < 2^48
    q = a * (m & 0xFFFF)  # < 2^48
    hi = q >> 16
    hi += p
    hi >>= 16
    p &= 0xFFFF
    p <<= 16
    p += q
    p &= _MASK32
    return hi, p


def philox4x32(counter: Sequence[Tensor], key: Sequence[Tensor], rounds: int = 10) -> list[Tensor]:
    """Philox4x32 (Salmon et al. 2011) on 32-bit words held in int64 tensors (broadcast together).

    Args:
        counter: four 32-bit counter words ``c0..c3``.
        key: two 32-bit key words ``k0, k1``.
        rounds: 10, Random123's and cuRAND's default.

    Returns:
        The four 32-bit output words, as int64 tensors in ``[0, 2^32)``.
    """
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for r in range(rounds):
        if r:
            k0, k1 = (k0 + _PHILOX_W[0]) & _MASK32, (k1 + _PHILOX_W[1]) & _MASK32
        hi0, lo0 = _mulhilo(c0, _PHILOX_M[0])
        hi1, lo1 = _mulhilo(c2, _PHILOX_M[1])
        # in place from the second round on, once the words have the broadcast shape
        hi1, hi0 = (hi1 ^ k0, hi0 ^ k1) if r == 0 else (hi1.bitwise_xor_(k0), hi0.bitwise_xor_(k1))
        c0, c1, c2, c3 = hi1.bitwise_xor_(c1), lo1, hi0.bitwise_xor_(c3), lo0
    return [c0, c1, c2, c3]


def _horner(t: Tensor, coefficients: Sequence[float]) -> Tensor:
    """``sum_i coefficients[i] t^i``, by Horner's rule (one IEEE operation at a time)."""
    out = torch.full_like(t, coefficients[-1])
    for c in reversed(coefficients[:-1]):
        out = out * t + c
    return out


_LOG_SERIES = [2.0 / (2 * i + 1) for i in range(13)]  # log m = 2 atanh s = sum 2 s^(2i+1) / (2i+1)
_SIN_SERIES = [(-1.0) ** i / math.factorial(2 * i + 1) for i in range(12)]
_COS_SERIES = [(-1.0) ** i / math.factorial(2 * i) for i in range(12)]


def _log_exact(v: Tensor) -> Tensor:
    """``log v`` of positive float64 ``v`` to ~1e-16 from ``frexp`` and the series of atanh: only IEEE-exact
    operations, so the same bits on every device (library ``log`` kernels differ in their last bits)."""
    mantissa, exponent = torch.frexp(v)  # v = m 2^e, m in [0.5, 1)
    low = mantissa < math.sqrt(0.5)
    mantissa = torch.where(low, mantissa * 2, mantissa)  # m in [sqrt(1/2), sqrt(2))
    exponent = exponent.to(v.dtype) - low.to(v.dtype)
    s = (mantissa - 1) / (mantissa + 1)  # |s| < 0.172
    return s * _horner(s * s, _LOG_SERIES) + exponent * math.log(2)


def _box_muller(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Two independent N(0, 1) float64 tensors from two tensors of 32-bit words: ``r cos(2 pi u)`` and
    ``r sin(2 pi u)`` with ``r = sqrt(-2 log((a + 1/2) / 2^32))``, ``u = b / 2^32``; the quadrant of the angle is
    read from the top two bits of ``b``, the rest by Taylor series on ``[0, pi/2)``."""
    radius = torch.sqrt(-2 * (_log_exact(a.double() + 0.5) - 32 * math.log(2)))
    quadrant = b >> 30
    phi = (b & 0x3FFFFFFF).double() * (math.pi / 2 / 2**30)
    phi2 = phi * phi
    sin, cos = phi * _horner(phi2, _SIN_SERIES), _horner(phi2, _COS_SERIES)
    # rotate by quadrant * pi/2: (cos, sin) -> (-sin, cos)
    swap = (quadrant & 1).bool()
    cos, sin = torch.where(swap, -sin, cos), torch.where(swap, cos, sin)
    flip = quadrant >= 2
    return radius * torch.where(flip, -cos, cos), radius * torch.where(flip, -sin, sin)


class PerSampleNoise:
    """Counter-based random draws for a batch whose row ``i`` depends only on ``seeds[i]``.

    Element ``j`` of row ``i`` of the ``t``-th draw (counting :meth:`rand` and :meth:`randn` calls of this object)
    is a pure function of ``(seeds[i], t, j)``: Philox4x32-10 keyed by the seed, with counter ``(j // 4, t, 0,
    kind)``, one 32-bit word per uniform (24 bits kept) and Box-Muller on two words per pair of normals. It
    guarantees:

    * the same rows for any batch, order or split of the seeds over processes (as EDM's
      ``StackedRandomGenerator``), and after a resume, which redraws from the same seeds;
    * the same bits on the CPU and on a GPU, for float32 and float64 draws: integer operations and IEEE-exact
      float64 arithmetic only, rounded once to the draw's dtype (eager mode; a compiled graph that fuses the
      arithmetic may round differently);
    * a fixed number of tensor operations per draw whatever the batch size (no per-row generator).

    Args:
        seeds: one seed per row of the batch (non-negative, below 2^64).
        device: device of the draws.
    """

    def __init__(self, seeds: Sequence[int], device: torch.device | str | None = None) -> None:
        if len(seeds) == 0:
            raise ValueError("PerSampleNoise needs at least one seed.")
        if any(not 0 <= int(s) < 2**64 for s in seeds):
            raise ValueError(f"PerSampleNoise takes seeds in [0, 2^64), got {list(seeds)}.")
        self.device = torch.device(device if device is not None else "cpu")
        words = [(int(s) & _MASK32, int(s) >> 32) for s in seeds]
        self.key = torch.tensor(words, dtype=torch.long, device=self.device).T.unsqueeze(-1)  # (2, B, 1)
        self.draws = 0
        """The draws made so far: the counter ``t`` of the next one."""

    def __len__(self) -> int:
        return self.key.shape[1]

    def _words(self, shape: Sequence[int], kind: int) -> tuple[list[Tensor], int]:
        """The four Philox output words for a draw of ``shape`` (each ``(B, ceil(n / 4))``) and ``n``."""
        shape = tuple(shape)
        if not shape or shape[0] != len(self):
            raise ValueError(f"A per-sample draw needs a leading batch dimension of {len(self)}, got shape {shape}.")
        n = math.prod(shape[1:])
        blocks = torch.arange((n + 3) // 4, dtype=torch.long, device=self.device)
        zero = torch.zeros_like(blocks)
        counter = [blocks, zero + (self.draws & _MASK32), zero, zero + kind]
        self.draws += 1
        return philox4x32(counter, [self.key[0], self.key[1]]), n

    def rand(self, shape: Sequence[int], dtype: torch.dtype | None = None) -> Tensor:
        """``U[0, 1)`` draws of ``shape`` on a grid of 2^-24; row ``i`` keyed by ``seeds[i]``."""
        words, n = self._words(shape, kind=1)
        uniform = torch.stack(words, dim=-1).flatten(1)[:, :n] >> 8
        return (uniform.double() * 2.0**-24).to(dtype or torch.get_default_dtype()).view(tuple(shape))

    def randn(self, shape: Sequence[int], dtype: torch.dtype | None = None) -> Tensor:
        """``N(0, 1)`` draws of ``shape``; row ``i`` keyed by ``seeds[i]``."""
        w0, w1, w2, w3 = self._words(shape, kind=0)[0]
        n = math.prod(tuple(shape)[1:])
        z0, z1 = _box_muller(w0, w1)
        z2, z3 = _box_muller(w2, w3)
        normal = torch.stack([z0, z1, z2, z3], dim=-1).flatten(1)[:, :n]
        return normal.to(dtype or torch.get_default_dtype()).view(tuple(shape))

    def randn_like(self, x: Tensor) -> Tensor:
        """``N(0, 1)`` draws shaped like ``x``: the ``noise_fn`` of the samplers."""
        if x.device != self.device:
            raise ValueError(
                f"The samples are on {x.device} but the per-sample noise on {self.device}; create PerSampleNoise on "
                "the samples' device."
            )
        return self.randn(x.shape, dtype=x.dtype)
