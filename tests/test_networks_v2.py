"""NCSNv2, NCSNv2Deeper and NCSNv2Deepest: keys, parameter counts, sigma scaling, v2 blocks, validation."""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F
from networks_reference import reference_keys, with_sigmas

from ncsn_pl.core.sigmas import geometric_sigmas
from ncsn_pl.networks import NCSNv2, NCSNv2Deeper, NCSNv2Deepest, SigmaScaledRefineNet
from ncsn_pl.networks.layers import CRPBlock, InstanceNorm2dPlus, RCUBlock


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def v2_keys_from_v1(v1_keys: list[tuple[str, tuple[int, ...]]]) -> dict[str, tuple[int, ...]]:
    """The NCSNv2 keys derived from v1's: the same skeleton with unconditional norms and none in the refine
    blocks (ncsnv2 models/ncsnv2.py). Drop the refine blocks' CIN++ embeddings and turn every other
    ``X.embed.weight`` (L, 3C) into ``X.alpha``, ``X.gamma`` and ``X.beta`` of shape (C,)."""
    keys: dict[str, tuple[int, ...]] = {}
    for key, shape in v1_keys:
        if not key.endswith(".embed.weight"):
            keys[key] = shape
        elif not key.startswith("refine"):
            stem = key[: -len(".embed.weight")]
            for name in ("alpha", "gamma", "beta"):
                keys[f"{stem}.{name}"] = (shape[1] // 3,)
    return keys


def test_ncsnv2_keys_are_v1_keys_with_unconditional_norms():
    net = with_sigmas(NCSNv2(channels=3, ngf=128), 50.0, 0.01, 232)
    expected = v2_keys_from_v1(reference_keys()["cifar10"])
    expected["sigmas"] = (232,)
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == expected
    assert not any("norm" in k for k in expected if k.startswith("refine"))


def test_parameter_counts_match_the_reference():
    assert count(NCSNv2()) == 29_694_083
    assert count(with_sigmas(NCSNv2(), 90.0, 0.01, 500)) == 29_694_083  # CelebA-64: sigmas is a buffer
    assert count(NCSNv2Deeper()) == 83_445_379
    assert count(NCSNv2Deepest()) == 94_132_611


def test_deeper_and_deepest_have_the_official_extra_modules_and_shapes():
    deeper = {k: tuple(v.shape) for k, v in with_sigmas(NCSNv2Deeper(ngf=8), 50.0, 0.01, 7).state_dict().items()}
    deepest = {k: tuple(v.shape) for k, v in with_sigmas(NCSNv2Deepest(ngf=8), 50.0, 0.01, 7).state_dict().items()}
    expected_both = {
        "res3.0.conv2.conv.weight": (16, 16, 3, 3),  # res3 downsamples (ConvMeanPool), no dilation
        "res3.0.shortcut.conv.weight": (16, 16, 1, 1),
        "res4.0.conv1.weight": (16, 16, 3, 3),
        "res4.0.conv2.weight": (32, 16, 3, 3),  # 2ngf -> 4ngf, dilated
        "res4.0.shortcut.weight": (32, 16, 3, 3),
        "res5.1.normalize2.alpha": (32,),
        "refine1.adapt_convs.0.1_1_conv.weight": (32, 32, 3, 3),
        "refine2.msf.convs.0.weight": (16, 32, 3, 3),
        "refine2.msf.convs.1.bias": (16,),
        "refine5.output_convs.3_2_conv.weight": (8, 8, 3, 3),
        "normalizer.beta": (8,),
        "sigmas": (7,),
    }
    for keys in (deeper, deepest):
        assert expected_both.items() <= keys.items()
        assert not any("norm" in k or k.endswith(("alpha", "gamma", "beta")) for k in keys if "refine" in k)
    assert not any(k.startswith(("res31", "refine31")) for k in deeper)
    assert {
        "res31.0.conv2.conv.weight": (16, 16, 3, 3),
        "res31.1.conv1.weight": (16, 16, 3, 3),
        "refine31.msf.convs.1.weight": (16, 16, 3, 3),
    }.items() <= deepest.items()
    assert len(deepest) - len(deeper) == sum(1 for k in deepest if k.startswith(("res31.", "refine31.")))


@pytest.mark.parametrize(
    ("cls", "size", "bottom"),
    [(NCSNv2, 32, 16), (NCSNv2Deeper, 64, 16), (NCSNv2Deeper, 32, 8), (NCSNv2Deepest, 64, 8)],
)
def test_forward_at_small_width_and_bottom_resolution(cls, size, bottom):
    torch.manual_seed(0)
    net = with_sigmas(cls(channels=3, ngf=4), 10.0, 0.1, 5)
    widths = []
    last_stage = "res5" if cls is not NCSNv2 else "res4"
    getattr(net, last_stage)[-1].register_forward_hook(lambda m, i, out: widths.append(tuple(out.shape[1:])))
    x = torch.rand(2, 3, size, size)
    with torch.no_grad():
        out = net(x, torch.tensor([0, 4]))
    assert out.shape == x.shape and torch.isfinite(out).all()
    mult = 2 if cls is NCSNv2 else 4
    assert widths == [(mult * 4, bottom, bottom)]


@pytest.mark.parametrize("cls", [NCSNv2, NCSNv2Deeper, NCSNv2Deepest])
def test_output_is_the_unconditional_network_divided_by_sigma(cls):
    torch.manual_seed(0)
    net = with_sigmas(cls(channels=1, ngf=4), 5.0, 0.05, 6)
    x = torch.rand(3, 1, 16, 16).repeat(2, 1, 1, 1)
    levels = torch.tensor([0, 1, 2, 3, 4, 5])
    with torch.no_grad():
        out = net(x, levels)
        unscaled = net.unscaled(x)
    sigmas = geometric_sigmas(5.0, 0.05, 6)
    torch.testing.assert_close(net.sigmas, sigmas, rtol=0, atol=0)
    torch.testing.assert_close(out, unscaled / sigmas[levels].view(-1, 1, 1, 1))
    # the same image at two levels: the scores differ exactly by the ratio of the sigmas
    torch.testing.assert_close(out[:3] * sigmas[:3].view(-1, 1, 1, 1), out[3:] * sigmas[3:].view(-1, 1, 1, 1))


def test_overwriting_the_sigmas_buffer_rescales_the_output():
    torch.manual_seed(0)
    net = with_sigmas(NCSNv2(channels=1, ngf=4), 1.0, 0.1, 4)
    x, levels = torch.rand(2, 1, 8, 8), torch.tensor([1, 3])
    assert net.sigmas.dtype == torch.float32 and "sigmas" in net.state_dict()
    with torch.no_grad():
        before = net(x, levels)
        net.set_sigmas(2 * net.sigmas)
        torch.testing.assert_close(net(x, levels), before / 2)
        net.set_sigmas(geometric_sigmas(2.0, 0.2, 7))  # any length: no parameters per level
        assert net.num_scales == 7 and net.sigmas.dtype == torch.float32
        torch.testing.assert_close(net(x, levels), net.unscaled(x) / net.sigmas[levels].view(-1, 1, 1, 1))


def test_v2_normalisation_is_instance_norm_plus_with_parameters_per_channel():
    torch.manual_seed(0)
    norm = InstanceNorm2dPlus(6)
    assert [n for n, _ in norm.named_parameters()] == ["alpha", "gamma", "beta"]
    with torch.no_grad():
        norm.beta.normal_()
    x = torch.randn(3, 6, 5, 5) * 2 + torch.randn(3, 6, 1, 1)
    means = x.mean(dim=(2, 3))
    mt = (means - means.mean(1, keepdim=True)) / torch.sqrt(means.var(1, keepdim=True) + 1e-5)
    h = F.instance_norm(x) + mt[..., None, None] * norm.alpha[:, None, None]
    expected = norm.gamma[:, None, None] * h + norm.beta[:, None, None]
    torch.testing.assert_close(norm(x), expected, rtol=1e-5, atol=1e-5)


def test_v2_refine_blocks_use_max_pooling_and_no_normalisation():
    torch.manual_seed(0)
    crp = CRPBlock(3, 2, None, "max")
    rcu = RCUBlock(3, 1, 2, None)
    assert not any(isinstance(m, InstanceNorm2dPlus) for m in (*crp.modules(), *rcu.modules()))
    x, levels = torch.randn(2, 3, 6, 6), torch.zeros(2, dtype=torch.long)
    path = F.elu(x)
    expected = path
    for conv in crp.convs:
        path = conv(F.max_pool2d(path, 5, stride=1, padding=2))
        expected = expected + path
    torch.testing.assert_close(crp(x, levels), expected)
    conv1, conv2 = getattr(rcu, "1_1_conv"), getattr(rcu, "1_2_conv")
    assert conv1.bias is None and conv2.bias is None
    torch.testing.assert_close(rcu(x, levels), x + conv2(F.elu(conv1(F.elu(x)))))


@pytest.mark.parametrize(
    ("cls", "bad_size", "multiple"), [(NCSNv2, 9, 2), (NCSNv2Deeper, 18, 4), (NCSNv2Deepest, 20, 8)]
)
def test_input_validation(cls, bad_size, multiple):
    net = with_sigmas(cls(channels=3, ngf=2), 10.0, 0.1, 5)
    good = torch.rand(2, 3, 2 * multiple, 2 * multiple)
    with pytest.raises(ValueError, match=r"built for 3 channel\(s\) but x has 1"):
        net(torch.rand(2, 1, 16, 16), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"levels must lie in \[0, 5\)"):
        net(good, torch.tensor([0, 5]))
    with pytest.raises(ValueError, match=rf"multiples of {multiple}, got {bad_size}x"):
        net(torch.rand(2, 3, bad_size, bad_size), torch.tensor([0, 1]))


@pytest.mark.parametrize("cls", [NCSNv2, NCSNv2Deeper, NCSNv2Deepest])
def test_the_networks_hold_no_schedule_of_their_own(cls):
    # the papers' architecture by default; the schedule is given (ScoreModel owns it), never a default
    assert list(inspect.signature(cls).parameters) == ["channels", "ngf"]
    net = cls(ngf=2)
    assert isinstance(net, SigmaScaledRefineNet) and (net.channels, net.ngf, net.num_scales) == (3, 2, 0)
    assert net.state_dict()["sigmas"].shape == (0,)
    with pytest.raises(ValueError, match=f"{cls.__name__} has no noise schedule yet"):
        net(torch.rand(1, 3, 32, 32), torch.tensor([0]))
