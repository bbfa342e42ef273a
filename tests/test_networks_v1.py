"""NCSN v1 (CondRefineNetDilated) against the reference: keys, parameter counts, golden outputs, CIN++."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from networks_reference import deterministic_weights_, reference_keys, v1_sigmas

from ncsn_pl.networks import NCSN, ConditionalInstanceNorm2dPlus
from ncsn_pl.networks.layers import CRPBlock

CONFIGS = {"mnist": dict(channels=1, ngf=64, size=28), "cifar10": dict(channels=3, ngf=128, size=32)}


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def golden_net(request):
    cfg = CONFIGS[request.param]
    net = NCSN(channels=cfg["channels"], ngf=cfg["ngf"], num_scales=10).eval()
    deterministic_weights_(net)
    return request.param, cfg, net


# measured with the official code (ermongroup/ncsn) on the deterministic weights of networks_reference.py
GOLDEN = {
    "mnist": dict(
        sum=-1001.85195,
        abs_sum=1239.59525,
        first5=[0.308043, 0.084211, -0.293753, 0.252370, 0.224937],
        means=[-0.307370, -0.434307, -0.307606, -0.228589],
        loss=424.42657,
        x1_sum=1466.21270,
    ),
    "cifar10": dict(
        sum=896.52508,
        abs_sum=4753.73308,
        first5=[0.029447, -0.164428, 0.025780, -0.005650, 0.131436],
        means=[0.048693, 0.123253, 0.025489, 0.094402],
        loss=1656.52771,
        x1_sum=6115.72021,
    ),
}


def test_golden_forward_loss_and_langevin_step(golden_net):
    name, cfg, net = golden_net
    c, size = cfg["channels"], cfg["size"]
    x = torch.rand(4, c, size, size, generator=torch.Generator().manual_seed(12345))
    z = torch.randn(4, c, size, size, generator=torch.Generator().manual_seed(999))
    y = torch.tensor([0, 1, 2, 3])
    sigma = v1_sigmas()[y].view(-1, 1, 1, 1)
    with torch.no_grad():
        s = net(x, y)
        # reference DSM loss (§1.4) with its noise fixed to z: 1/2 sum (s - target)^2 sigma^2, batch mean
        s_noisy = net(x + sigma * z, y)
        loss = (0.5 * ((s_noisy + z / sigma) ** 2).sum(dim=(1, 2, 3)) * sigma.flatten() ** 2).mean()
        # one Langevin step with the code's step size 2e-5 (sigma / 0.01)^2
        step = 2e-5 * (sigma / 0.01) ** 2
        x1 = x + step * s + torch.sqrt(2 * step) * z
    g = GOLDEN[name]
    assert s.shape == x.shape
    assert s.sum().item() == pytest.approx(g["sum"], rel=1e-4)
    assert s.abs().sum().item() == pytest.approx(g["abs_sum"], rel=1e-4)
    # printed to 6 decimals: allow the rounding on top of 1e-4 relative
    torch.testing.assert_close(s.flatten()[:5], torch.tensor(g["first5"]), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(s.mean(dim=(1, 2, 3)), torch.tensor(g["means"]), rtol=1e-4, atol=1e-6)
    assert loss.item() == pytest.approx(g["loss"], rel=1e-4)
    assert x1.sum().item() == pytest.approx(g["x1_sum"], rel=1e-4)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_state_dict_keys_shapes_and_order_match_the_reference(name):
    cfg = CONFIGS[name]
    net = NCSN(channels=cfg["channels"], ngf=cfg["ngf"], num_scales=10)
    expected = reference_keys()[name]
    assert len(expected) == 173
    assert [(k, tuple(v.shape)) for k, v in net.state_dict().items()] == expected


def test_parameter_counts_match_the_reference():
    def count(module: torch.nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    mnist, cifar = NCSN(channels=1, ngf=64), NCSN(channels=3, ngf=128)
    assert count(mnist) == 7_638_657
    assert count(cifar) == 30_117_635
    assert {n: count(m) for n, m in mnist.named_children()} == {
        "begin_conv": 640,
        "normalizer": 1_920,
        "end_conv": 577,
        "res1": 155_392,
        "res2": 425_792,
        "res3": 753_280,
        "res4": 753_280,
        "refine1": 1_210_368,
        "refine2": 2_118_400,
        "refine3": 1_520_768,
        "refine4": 698_240,
    }
    assert {n: count(m) for n, m in cifar.named_children()} == {
        "begin_conv": 3_584,
        "normalizer": 3_840,
        "end_conv": 3_459,
        "res1": 605_696,
        "res2": 1_678_976,
        "res3": 2_981_120,
        "res4": 2_981_120,
        "refine1": 4_780_032,
        "refine2": 8_365_568,
        "refine3": 5_990_656,
        "refine4": 2_723_584,
    }
    for net, embeddings in ((mnist, 216_960), (cifar, 433_920)):
        cins = [m for m in net.modules() if isinstance(m, ConditionalInstanceNorm2dPlus)]
        assert len(cins) == 71
        assert sum(count(m) for m in cins) == embeddings
    assert count(NCSN(channels=1, ngf=128)) == 30_113_025
    assert count(NCSN(channels=3, ngf=64)) == 7_640_963


def test_defaults_are_the_cifar10_configuration():
    net = NCSN()
    assert (net.channels, net.ngf, net.num_scales) == (3, 128, 10)


@pytest.mark.parametrize("size", [28, 32])
def test_activation_shapes_follow_the_reference(size):
    """Only res2 downsamples; the dilated "down" blocks of res3/res4 keep the size (ermongroup/ncsn
    ``models/cond_refinenet_dilated.py``)."""
    ngf = 4
    net = NCSN(channels=1, ngf=ngf)
    shapes = {}
    for name, module in net.named_children():
        module.register_forward_hook(lambda m, i, out, name=name: shapes.__setitem__(name, tuple(out.shape[1:])))
    for name in ("res1", "res2", "res3", "res4"):
        getattr(net, name)[-1].register_forward_hook(
            lambda m, i, out, name=name: shapes.__setitem__(name, tuple(out.shape[1:]))
        )
    with torch.no_grad():
        out = net(torch.rand(2, 1, size, size), torch.tensor([0, 9]))
    h = size // 2
    assert shapes == {
        "begin_conv": (ngf, size, size),
        "res1": (ngf, size, size),
        "res2": (2 * ngf, h, h),
        "res3": (2 * ngf, h, h),
        "res4": (2 * ngf, h, h),
        "refine1": (2 * ngf, h, h),
        "refine2": (2 * ngf, h, h),
        "refine3": (ngf, h, h),
        "refine4": (ngf, size, size),
        "normalizer": (ngf, size, size),
        "end_conv": (1, size, size),
    }
    assert out.shape == (2, 1, size, size)


def reference_cin_plus(x, gamma, alpha, beta, eps=1e-5, correction=1):
    """CIN++ exactly as written in the official code (InstanceNorm2d, torch.var with its unbiased default)."""
    means = x.mean(dim=(2, 3))
    m, v = means.mean(dim=-1, keepdim=True), torch.var(means, dim=-1, keepdim=True, correction=correction)
    mu_tilde = (means - m) / torch.sqrt(v + eps)
    h = F.instance_norm(x, eps=eps) + mu_tilde[..., None, None] * alpha[..., None, None]
    return gamma[..., None, None] * h + beta[..., None, None]


def test_cin_plus_matches_the_reference_formula_and_uses_unbiased_channel_variance():
    torch.manual_seed(0)
    norm = ConditionalInstanceNorm2dPlus(5, num_scales=3)
    with torch.no_grad():
        norm.embed.weight.normal_(1.0, 0.5)
    x = 3 * torch.randn(4, 5, 6, 7) + torch.randn(4, 5, 1, 1) * 2
    levels = torch.tensor([0, 2, 1, 2])
    gamma, alpha, beta = norm.embed(levels).chunk(3, dim=1)
    out = norm(x, levels)
    torch.testing.assert_close(out, reference_cin_plus(x, gamma, alpha, beta), rtol=1e-5, atol=1e-5)
    # with 5 channels the biased variance across channel means would change the output visibly
    biased = reference_cin_plus(x, gamma, alpha, beta, correction=0)
    assert (biased - out).abs().max() > 1e-2


def test_cin_plus_initialisation():
    norm = ConditionalInstanceNorm2dPlus(64, num_scales=10)
    w = norm.embed.weight
    assert w.shape == (10, 192)
    assert w[:, :128].mean().item() == pytest.approx(1.0, abs=0.01)
    assert w[:, :128].std().item() == pytest.approx(0.02, rel=0.2)
    assert torch.all(w[:, 128:] == 0)


def test_v1_crp_block_pools_with_a_5x5_average_counting_the_padding():
    torch.manual_seed(0)
    crp = CRPBlock(3, 2, None, "avg")
    x = torch.randn(2, 3, 6, 6)
    path = F.elu(x)
    expected = path
    for conv in crp.convs:
        # count_include_pad=True: border windows divide by 25 although they hold fewer pixels
        path = conv(F.conv2d(path, torch.ones(3, 1, 5, 5) / 25, padding=2, groups=3))
        expected = expected + path
    torch.testing.assert_close(crp(x, torch.zeros(2, dtype=torch.long)), expected, rtol=1e-5, atol=1e-6)


def test_every_parameter_gets_a_gradient_and_levels_select_embedding_rows():
    net = NCSN(channels=1, ngf=4, num_scales=10)
    x = torch.rand(3, 1, 8, 8)
    levels = torch.tensor([0, 4, 4])
    net(x, levels).pow(2).sum().backward()
    grads = {n: p.grad for n, p in net.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    embed_grad = grads["normalizer.embed.weight"]
    used = embed_grad.abs().sum(dim=1) > 0
    assert used.tolist() == [i in (0, 4) for i in range(10)]


def test_the_output_depends_on_the_level_only_through_the_norms():
    torch.manual_seed(0)
    net = NCSN(channels=1, ngf=4, num_scales=3)
    x = torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        a, b = net(x, torch.tensor([0, 0])), net(x, torch.tensor([1, 1]))
        assert not torch.allclose(a, b)
        for m in net.modules():
            if isinstance(m, ConditionalInstanceNorm2dPlus):
                m.embed.weight[1] = m.embed.weight[0]
        torch.testing.assert_close(net(x, torch.tensor([1, 1])), a, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("x_shape", "levels", "match"),
    [
        ((2, 3, 8, 8), [0, 1], r"built for 1 channel\(s\) but x has 3"),
        ((2, 8, 8), [0, 1], r"shape \(B, 1, H, W\)"),
        ((2, 1, 8, 8), [0, 10], r"levels must lie in \[0, 10\).*from 0 to 10"),
        ((2, 1, 8, 8), [-1, 3], r"levels must lie in \[0, 10\)"),
        ((2, 1, 8, 8), [0, 1, 2], r"levels of shape \(B,\) = \(2,\)"),
        ((2, 1, 9, 8), [0, 1], r"multiples of 2, got 9x8"),
    ],
)
def test_input_validation(x_shape, levels, match):
    net = NCSN(channels=1, ngf=4)
    with pytest.raises(ValueError, match=match):
        net(torch.rand(x_shape), torch.tensor(levels))


def test_float_levels_and_integer_images_are_rejected():
    net = NCSN(channels=1, ngf=4)
    with pytest.raises(ValueError, match="integer"):
        net(torch.rand(2, 1, 8, 8), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="floating-point"):
        net(torch.ones(2, 1, 8, 8, dtype=torch.uint8), torch.tensor([0, 1]))


@pytest.mark.parametrize("kwargs", [dict(channels=0), dict(ngf=1), dict(num_scales=0), dict(ngf=8.0)])
def test_constructor_validation(kwargs):
    with pytest.raises(ValueError, match="must be an integer"):
        NCSN(**kwargs)


def test_channels_last_gives_the_same_scores_and_gradients():
    torch.manual_seed(0)
    net = NCSN(channels=3, ngf=4, num_scales=10).double()
    net_cl = NCSN(channels=3, ngf=4, num_scales=10).double().to(memory_format=torch.channels_last)
    net_cl.load_state_dict(net.state_dict())
    x, levels = torch.rand(3, 3, 8, 8, dtype=torch.float64), torch.tensor([0, 5, 9])
    out, out_cl = net(x, levels), net_cl(x.contiguous(memory_format=torch.channels_last), levels)
    assert out_cl.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out_cl, out)
    out.pow(2).sum().backward()
    out_cl.pow(2).sum().backward()
    grads_cl = dict(net_cl.named_parameters())
    for name, p in net.named_parameters():
        torch.testing.assert_close(grads_cl[name].grad, p.grad, msg=name)
