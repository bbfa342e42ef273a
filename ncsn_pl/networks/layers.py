"""Building blocks of the NCSN score networks: RefineNet blocks, dilated residual blocks and InstanceNorm++.

Sources: ermongroup/ncsn ``models/cond_refinenet_dilated.py`` (v1, noise-conditional blocks) and
ermongroup/ncsnv2 ``models/layers.py`` and ``models/normalization.py`` (v2, unconditional blocks). Attribute
names follow the official code so that state dicts load one to one.

Every block here has the signature ``forward(x, levels)``. Conditional normalisation layers use ``levels`` to
pick their parameters; the unconditional ones ignore it, so one residual or refine block serves both network
families.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

__all__ = [
    "NormFactory",
    "elu",
    "upcast",
    "instance_norm_plus",
    "ConditionalInstanceNorm2dPlus",
    "InstanceNorm2dPlus",
    "ConvMeanPool",
    "ResidualBlock",
    "RCUBlock",
    "CRPBlock",
    "MSFBlock",
    "RefineBlock",
]

NormFactory = Callable[[int], nn.Module]
"""Builds a normalisation layer for a number of channels; the layer is called as ``norm(x, levels)``."""

_EPS = 1e-5


class _ExpELU(torch.autograd.Function):
    """ELU from ``exp``: ``elu(x) = max(x, exp(min(x, 0)) - 1)`` (``exp(x) - 1 >= x`` for every x), within 6e-8 of
    ``F.elu``; backward from the output: ``elu'(x) = 1`` where ``y > 0``, else ``y + 1``."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        y = torch.maximum(x, x.clamp(max=0).exp_().sub_(1))
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (y,) = ctx.saved_tensors
        return y.clamp(max=0).add_(1).mul_(grad)


def elu(x: Tensor) -> Tensor:
    """ELU (alpha 1), the official networks' nonlinearity. On the CPU it is computed from ``exp``: torch's
    vectorised ``expm1``, behind ``F.elu``, runs over 10x slower than ``exp`` on AVX-512 CPUs (torch 2.14), which
    made ELU half of an NCSN sampling step there (``benchmarks/elu_speed.py``); elsewhere ``F.elu``, one fused
    kernel."""
    return _ExpELU.apply(x) if x.device.type == "cpu" else F.elu(x)


class _InstanceAffine(torch.autograd.Function):
    """``(x - mu) / sqrt(var + eps) * weight + bias`` per (sample, channel), with a hand-written backward.

    Used for channels_last input, where the native kernels need layout copies: the forward takes two passes for
    the statistics and one for the output, the backward two reductions and one fused ``a*g + b*x + c`` pass.
    Low-precision input (bf16 or fp16 under autocast) is computed in float32, as ``F.instance_norm`` under
    autocast, and returned (with its gradient) in the input's dtype.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
        dtype, xf = x.dtype, upcast(x)
        mu = xf.mean(dim=(2, 3), keepdim=True)
        centred = xf - mu
        rstd = torch.rsqrt(centred.square().mean(dim=(2, 3), keepdim=True) + eps)
        ctx.save_for_backward(x, mu, rstd, weight)
        ctx.dtypes = (weight.dtype, bias.dtype)
        out = centred.mul_(rstd * upcast(weight)[..., None, None]).add_(upcast(bias)[..., None, None])
        return out.to(dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor, Tensor, None]:
        x, mu, rstd, weight = ctx.saved_tensors
        dtype, x, grad = x.dtype, upcast(x), upcast(grad)
        n = x.shape[2] * x.shape[3]
        grad_sum = grad.sum(dim=(2, 3), keepdim=True)
        grad_h = rstd * ((grad * x).sum(dim=(2, 3), keepdim=True) - mu * grad_sum)  # sum of grad * h
        # grad_x = a * grad + b * x + c, the instance-norm backward
        a = upcast(weight)[..., None, None] * rstd
        b = -a * rstd * grad_h / n
        c = -a * grad_sum / n - b * mu
        grad_x = torch.addcmul(c, x, b).addcmul_(grad, a).to(dtype)
        weight_dtype, bias_dtype = ctx.dtypes
        return grad_x, grad_h[..., 0, 0].to(weight_dtype), grad_sum[..., 0, 0].to(bias_dtype), None


def upcast(x: Tensor) -> Tensor:
    """``x`` in float32 if it is in a 16-bit float type, else unchanged."""
    return x.float() if x.dtype in (torch.bfloat16, torch.float16) else x


def instance_norm_plus(
    x: Tensor, gamma: Tensor, alpha: Tensor, beta: Tensor | None = None, eps: float = _EPS
) -> Tensor:
    """InstanceNorm++ in the parametrisation of the official code, folded into one scale and shift.

    With mu_c and s_c^2 the spatial mean and (biased) variance of channel c, m and v the mean and **unbiased**
    variance of the mu_c over the channels, the official layer computes (NCSN, Song & Ermon 2019, App. A.1)::

        h_c   = (x_c - mu_c) / sqrt(s_c^2 + eps)              # InstanceNorm2d, affine=False
        out_c = gamma_c * (h_c + alpha_c * (mu_c - m) / sqrt(v + eps)) + beta_c

    i.e. ``gamma_c * h_c + shift_c`` with ``shift_c = gamma_c * alpha_c * (mu_c - m) / sqrt(v + eps) + beta_c``,
    one scale and one shift per (sample, channel). For contiguous (NCHW) input that is a single native
    ``batch_norm`` over the ``(1, B*C, H, W)`` view with weight ``gamma`` and bias ``shift`` (fused statistics,
    normalisation and affine, and a fused backward); channels_last input goes through :class:`_InstanceAffine`,
    which has no double backward.

    Args:
        x: input, shape ``(B, C, H, W)``.
        gamma: scale, shape ``(B, C)`` (one row per sample, conditional) or ``(C,)``.
        alpha: weight of the normalised channel means, same shape as ``gamma``.
        beta: shift, same shape as ``gamma``, or ``None`` for no shift.
        eps: added to both variances (1e-5 in the official code).

    Returns:
        A tensor shaped like ``x``.
    """
    b, c, h, w = x.shape
    gamma, alpha = gamma.expand(b, c), alpha.expand(b, c)
    mu = x.mean(dim=(2, 3))
    v, m = torch.var_mean(mu, dim=1, keepdim=True, correction=1)
    shift = gamma * alpha * ((mu - m) * torch.rsqrt(v + eps))
    if beta is not None:
        shift = shift + beta
    if x.is_contiguous():
        out = F.batch_norm(
            x.view(1, b * c, h, w), None, None, gamma.reshape(b * c), shift.reshape(b * c), True, 0.0, eps
        )
        return out.view(b, c, h, w)
    return _InstanceAffine.apply(x, gamma, shift, eps)


class ConditionalInstanceNorm2dPlus(nn.Module):
    """Conditional InstanceNorm++ (CIN++), NCSN v1's normalisation: one (gamma, alpha, beta) row per noise
    level.

    ``embed.weight`` has shape ``(num_scales, 3C)`` split as ``[gamma | alpha | beta]``; gamma and alpha start
    at N(1, 0.02) and beta at 0, as in ermongroup/ncsn ``ConditionalInstanceNorm2dPlus``.
    """

    def __init__(self, num_features: int, num_scales: int, bias: bool = True) -> None:
        """Create the layer.

        Args:
            num_features: the number of channels C.
            num_scales: the number of noise levels L (rows of the embedding).
            bias: whether there is a shift beta (always true in the NCSN networks).
        """
        super().__init__()
        self.num_features = num_features
        self.bias = bias
        self.embed = nn.Embedding(num_scales, (3 if bias else 2) * num_features)
        with torch.no_grad():
            self.embed.weight[:, : 2 * num_features].normal_(1.0, 0.02)
            self.embed.weight[:, 2 * num_features :].zero_()

    def forward(self, x: Tensor, levels: Tensor) -> Tensor:
        params = self.embed(levels)
        if self.bias:
            gamma, alpha, beta = params.chunk(3, dim=1)
        else:
            (gamma, alpha), beta = params.chunk(2, dim=1), None
        return instance_norm_plus(x, gamma, alpha, beta)


class InstanceNorm2dPlus(nn.Module):
    """Unconditional InstanceNorm++, NCSNv2's normalisation (ermongroup/ncsnv2 ``InstanceNorm2dPlus``).

    Parameters ``alpha``, ``gamma`` (N(1, 0.02)) and ``beta`` (0), each of shape ``(C,)``.
    """

    def __init__(self, num_features: int, bias: bool = True) -> None:
        """Create the layer.

        Args:
            num_features: the number of channels C.
            bias: whether there is a shift beta (true everywhere in NCSNv2).
        """
        super().__init__()
        self.num_features = num_features
        self.bias = bias
        self.alpha = nn.Parameter(torch.empty(num_features).normal_(1.0, 0.02))
        self.gamma = nn.Parameter(torch.empty(num_features).normal_(1.0, 0.02))
        self.beta = nn.Parameter(torch.zeros(num_features)) if bias else None

    def forward(self, x: Tensor, levels: Tensor | None = None) -> Tensor:
        return instance_norm_plus(x, self.gamma, self.alpha, self.beta)


def _conv3x3(in_ch: int, out_ch: int, *, bias: bool, dilation: int = 1) -> nn.Conv2d:
    """A 3x3 convolution that keeps the spatial size (padding = dilation)."""
    return nn.Conv2d(in_ch, out_ch, 3, padding=dilation, dilation=dilation, bias=bias)


class ConvMeanPool(nn.Module):
    """A convolution followed by the mean of each 2x2 block: the only real downsampling in the networks."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(self.conv(x), 2)


class ResidualBlock(nn.Module):
    """Pre-activation residual block: ``conv2(elu(norm2(conv1(elu(norm1(x)))))) + shortcut(x)``.

    * ``resample=None``: both convs keep the size; identity shortcut when ``in_ch == out_ch``.
    * ``resample="down"`` without dilation: conv2 and the shortcut are :class:`ConvMeanPool` (3x3 and 1x1),
      halving the size.
    * ``resample="down"`` with a dilation: both convs and the shortcut are dilated 3x3 convs and the size is
      **kept** (the official code's behaviour); the shortcut always exists.

    Every conv has a bias. Registration order matches the official state dicts.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        norm: NormFactory,
        *,
        resample: Literal["down"] | None = None,
        dilation: int | None = None,
    ) -> None:
        """Create the block.

        Args:
            in_ch: input channels.
            out_ch: output channels.
            norm: builds the normalisation layers (conditional or not).
            resample: ``"down"`` for the first block of a stage, else ``None``.
            dilation: dilation of the 3x3 convs, ``None`` for ordinary convs.
        """
        super().__init__()
        if resample not in (None, "down"):
            raise ValueError(f"resample must be None or 'down', got {resample!r}.")
        self.in_ch, self.out_ch, self.resample = in_ch, out_ch, resample
        d = dilation or 1
        mid = in_ch if resample == "down" else out_ch
        self.conv1 = _conv3x3(in_ch, mid, bias=True, dilation=d)
        self.normalize2 = norm(mid)
        shortcut: nn.Module | None = None
        if resample == "down" and dilation is None:
            self.conv2: nn.Module = ConvMeanPool(in_ch, out_ch, 3)
            shortcut = ConvMeanPool(in_ch, out_ch, 1)
        else:
            self.conv2 = _conv3x3(mid, out_ch, bias=True, dilation=d)
            if dilation is not None and (resample == "down" or in_ch != out_ch):
                shortcut = _conv3x3(in_ch, out_ch, bias=True, dilation=d)
            elif in_ch != out_ch:
                # NCSNv2's 1x1 shortcut; none of the NCSN networks has this case.
                shortcut = nn.Conv2d(in_ch, out_ch, 1)
        self.shortcut = shortcut
        self.normalize1 = norm(in_ch)

    def forward(self, x: Tensor, levels: Tensor) -> Tensor:
        h = self.conv1(elu(self.normalize1(x, levels)))
        h = self.conv2(elu(self.normalize2(h, levels)))
        skip = x if self.shortcut is None else self.shortcut(x)
        return skip + h


class RCUBlock(nn.Module):
    """Residual conv unit: ``n_blocks`` times ``x <- x + (norm -> elu -> conv3x3)^n_stages (x)``; convs
    without bias.

    Submodules are named ``{block}_{stage}_norm`` / ``{block}_{stage}_conv`` (1-based) as in the official
    code. Without ``norm`` (NCSNv2) the stages are elu -> conv.
    """

    def __init__(self, features: int, n_blocks: int, n_stages: int, norm: NormFactory | None) -> None:
        super().__init__()
        self.n_blocks, self.n_stages = n_blocks, n_stages
        self.has_norm = norm is not None
        for i in range(1, n_blocks + 1):
            for j in range(1, n_stages + 1):
                if norm is not None:
                    self.add_module(f"{i}_{j}_norm", norm(features))
                self.add_module(f"{i}_{j}_conv", _conv3x3(features, features, bias=False))

    def forward(self, x: Tensor, levels: Tensor) -> Tensor:
        for i in range(1, self.n_blocks + 1):
            h = x
            for j in range(1, self.n_stages + 1):
                if self.has_norm:
                    h = getattr(self, f"{i}_{j}_norm")(h, levels)
                h = getattr(self, f"{i}_{j}_conv")(elu(h))
            x = h + x
        return x


class CRPBlock(nn.Module):
    """Chained residual pooling: ``x <- elu(x)``, then per stage ``path <- conv(pool(norm(path)))``, ``x <- x
    + path``.

    v1 pools with AvgPool2d(5, 1, 2) (``count_include_pad=True``) after a CIN++; v2 with MaxPool2d(5, 1, 2)
    and no normalisation. Convs have no bias.
    """

    def __init__(self, features: int, n_stages: int, norm: NormFactory | None, pool: Literal["avg", "max"]) -> None:
        super().__init__()
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}.")
        self.pool = pool
        self.convs = nn.ModuleList(_conv3x3(features, features, bias=False) for _ in range(n_stages))
        self.norms = nn.ModuleList(norm(features) for _ in range(n_stages)) if norm is not None else None

    def forward(self, x: Tensor, levels: Tensor) -> Tensor:
        x = elu(x)
        path = x
        for i, conv in enumerate(self.convs):
            if self.norms is not None:
                path = self.norms[i](path, levels)
            if self.pool == "avg":
                path = F.avg_pool2d(path, 5, stride=1, padding=2, count_include_pad=True)
            else:
                path = F.max_pool2d(path, 5, stride=1, padding=2)
            path = conv(path)
            x = path + x
        return x


class MSFBlock(nn.Module):
    """Multi-resolution fusion: ``sum_i upsample(conv3x3_i(norm_i(x_i)))`` (bilinear, ``align_corners=True``).

    Convs have a bias. An input already at the output size is not resampled (the official resize to the same
    size with ``align_corners=True`` is the identity).
    """

    def __init__(self, in_planes: Sequence[int], features: int, norm: NormFactory | None) -> None:
        super().__init__()
        self.convs = nn.ModuleList(_conv3x3(c, features, bias=True) for c in in_planes)
        self.norms = nn.ModuleList(norm(c) for c in in_planes) if norm is not None else None

    def forward(self, xs: Sequence[Tensor], levels: Tensor, size: Sequence[int]) -> Tensor:
        out: Tensor | None = None
        for i, conv in enumerate(self.convs):
            h = xs[i] if self.norms is None else self.norms[i](xs[i], levels)
            h = conv(h)
            if tuple(h.shape[-2:]) != tuple(size):
                h = F.interpolate(h, size=tuple(size), mode="bilinear", align_corners=True)
            out = h if out is None else out + h
        assert out is not None
        return out


class RefineBlock(nn.Module):
    """RefineNet block: RCU on each input, multi-resolution fusion, chained residual pooling, output RCU.

    ``adapt_convs[i]`` = RCU(in_planes[i], 2 blocks, 2 stages); ``msf`` only when not ``start``;
    ``crp`` = CRP(features, 2 stages); ``output_convs`` = RCU(features, 3 blocks if ``end`` else 1, 2 stages).
    """

    def __init__(
        self,
        in_planes: Sequence[int],
        features: int,
        norm: NormFactory | None,
        pool: Literal["avg", "max"],
        *,
        start: bool = False,
        end: bool = False,
    ) -> None:
        super().__init__()
        self.n_inputs = len(in_planes)
        self.adapt_convs = nn.ModuleList(RCUBlock(c, 2, 2, norm) for c in in_planes)
        self.output_convs = RCUBlock(features, 3 if end else 1, 2, norm)
        if not start:
            self.msf = MSFBlock(in_planes, features, norm)
        self.crp = CRPBlock(features, 2, norm, pool)

    def forward(self, xs: Sequence[Tensor], levels: Tensor, size: Sequence[int]) -> Tensor:
        hs = [adapt(x, levels) for adapt, x in zip(self.adapt_convs, xs, strict=True)]
        h = self.msf(hs, levels, size) if self.n_inputs > 1 else hs[0]
        h = self.crp(h, levels)
        return self.output_convs(h, levels)
