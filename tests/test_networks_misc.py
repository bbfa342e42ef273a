"""ToyScoreMLP, the fused InstanceNorm++ under autograd, and the import hygiene of ncsn_pl.networks."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from networks_reference import with_sigmas

from ncsn_pl.core.sigmas import geometric_sigmas
from ncsn_pl.networks import ToyScoreMLP, instance_norm_plus


def test_toy_mlp_shapes_defaults_and_sigma_scaling():
    torch.manual_seed(0)
    net = ToyScoreMLP()
    assert net.sigmas.shape == (0,)  # the schedule is given, not a default
    with pytest.raises(ValueError, match="no noise schedule yet"):
        net(torch.randn(1, 2), torch.tensor([0]))
    with pytest.raises(ValueError, match="has 10 noise levels but the schedule has 3: set .*num_scales to 3"):
        net.set_sigmas(geometric_sigmas(20.0, 1.0, 3))
    net = with_sigmas(net, 20.0, 1.0, 10)
    assert (net.dim, net.num_scales, net.sigmas.dtype) == (2, 10, torch.float32)
    torch.testing.assert_close(net.sigmas, geometric_sigmas(20.0, 1.0, 10), rtol=0, atol=0)
    x, levels = torch.randn(5, 2), torch.tensor([0, 3, 9, 9, 1])
    with torch.no_grad():
        out = net(x, levels)
        assert out.shape == (5, 2)
        net.sigmas.mul_(4)
        torch.testing.assert_close(net(x, levels), out / 4)


@pytest.mark.parametrize(
    ("x", "levels", "match"),
    [
        (torch.randn(3, 3), torch.tensor([0, 1, 2]), r"shape \(B, 2\)"),
        (torch.randn(3, 2), torch.tensor([0, 1, 10]), r"levels must lie in \[0, 10\)"),
        (torch.randn(3, 2), torch.tensor([0, 1]), r"levels of shape \(B,\)"),
    ],
)
def test_toy_mlp_input_validation(x, levels, match):
    with pytest.raises(ValueError, match=match):
        with_sigmas(ToyScoreMLP(), 20.0, 1.0, 10)(x, levels)


def test_toy_mlp_learns_the_score_of_a_gaussian():
    """DSM on N(0, I) data: the optimum is the noisy score -x / (1 + sigma^2) at every level."""
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    net = with_sigmas(ToyScoreMLP(hidden=64, num_scales=3), 2.0, 0.5, 3)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(400):
        x = torch.randn(256, 2, generator=gen)
        levels = torch.randint(0, 3, (256,), generator=gen)
        z = torch.randn(256, 2, generator=gen)
        sigma = net.sigmas[levels].unsqueeze(1)
        loss = (0.5 * (sigma * net(x + sigma * z, levels) + z).pow(2).sum(1)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    x = torch.randn(2000, 2, generator=gen) * 1.5
    with torch.no_grad():
        for level, sigma in enumerate(net.sigmas.tolist()):
            exact = -x / (1 + sigma**2)
            err = (net(x, torch.full((2000,), level)) - exact).pow(2).sum(1).mean()
            assert err / exact.pow(2).sum(1).mean() < 0.05


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_fused_instance_norm_plus_matches_the_unfused_formula_in_value_and_gradient(memory_format):
    torch.manual_seed(0)
    x = (torch.randn(3, 6, 5, 4, dtype=torch.float64) * 2 + 1).contiguous(memory_format=memory_format)
    x.requires_grad_()
    gamma, alpha, beta = (torch.randn(3, 6, dtype=torch.float64, requires_grad=True) for _ in range(3))

    def unfused(x, gamma, alpha, beta):
        means = x.mean(dim=(2, 3))
        mt = (means - means.mean(1, keepdim=True)) / torch.sqrt(means.var(1, keepdim=True) + 1e-5)
        h = F.instance_norm(x) + mt[..., None, None] * alpha[..., None, None]
        return gamma[..., None, None] * h + beta[..., None, None]

    torch.testing.assert_close(instance_norm_plus(x, gamma, alpha, beta), unfused(x, gamma, alpha, beta))
    w = torch.randn(3, 6, 5, 4, dtype=torch.float64)
    g1 = torch.autograd.grad((instance_norm_plus(x, gamma, alpha, beta) * w).sum(), (x, gamma, alpha, beta))
    g2 = torch.autograd.grad((unfused(x, gamma, alpha, beta) * w).sum(), (x, gamma, alpha, beta))
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b)
    # per-channel parameters (the unconditional v2 layer) broadcast over the batch
    out = instance_norm_plus(x, gamma[0], alpha[0], beta[0])
    torch.testing.assert_close(out, unfused(x, gamma[:1].expand(3, 6), alpha[:1].expand(3, 6), beta[:1].expand(3, 6)))


def test_importing_the_networks_loads_no_framework():
    code = (
        "import sys, ncsn_pl.networks\n"
        "bad = {'lightning', 'pytorch_lightning', 'wandb', 'omegaconf', 'jsonargparse', 'torchmetrics'}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
