"""load_official_checkpoint: the v1 and v2 runner formats, plain state dicts, and clear errors."""

from __future__ import annotations

import pytest
import torch
from networks_reference import with_sigmas

from ncsn_pl.networks import NCSN, NCSNv2, extract_state_dict, load_official_checkpoint


def _optimizer_state(net: torch.nn.Module) -> dict:
    """An Adam state after one step, as the runners save it."""
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = torch.rand(2, net.channels, 8, 8)
    net(x, torch.tensor([0, 1])).sum().backward()
    opt.step()
    return opt.state_dict()


def _prefixed(state: dict) -> dict:
    return {f"module.{k}": v.clone() for k, v in state.items()}


def _same_state(a: torch.nn.Module, b: dict) -> bool:
    return all(torch.equal(v, b[k]) for k, v in a.state_dict().items()) and a.state_dict().keys() == b.keys()


def test_v1_runner_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    source = NCSN(channels=1, ngf=4, num_scales=10)
    path = tmp_path / "checkpoint.pth"
    optimizer_state = _optimizer_state(source)  # steps the weights: take it before the state dict
    torch.save([_prefixed(source.state_dict()), optimizer_state], path)
    target = NCSN(channels=1, ngf=4, num_scales=10)
    assert load_official_checkpoint(target, path) is target
    assert _same_state(target, source.state_dict())
    x, levels = torch.rand(2, 1, 8, 8), torch.tensor([3, 7])
    with torch.no_grad():
        torch.testing.assert_close(target(x, levels), source(x, levels), rtol=0, atol=0)


def _v2_checkpoint(ema: bool) -> tuple[NCSNv2, dict, list]:
    torch.manual_seed(0)
    net = with_sigmas(NCSNv2(channels=1, ngf=4), 3.0, 0.1, 6)
    optimizer_state = _optimizer_state(net)
    state = net.state_dict()
    shadow = {n: p.detach() + 0.5 for n, p in net.named_parameters()}  # EMA: parameters only, no prefix
    ckpt = [_prefixed(state), optimizer_state, 3, 5000]
    if ema:
        ckpt.append(shadow)
    return net, {k: v.clone() for k, v in state.items()}, ckpt


def test_v2_runner_checkpoint_loads_the_ema_shadow_and_the_sigmas_buffer(tmp_path):
    _, state, ckpt = _v2_checkpoint(ema=True)
    path = tmp_path / "checkpoint_5000.pth"
    torch.save(ckpt, path)
    target = with_sigmas(NCSNv2(channels=1, ngf=4), 7.0, 0.2, 6)  # other sigmas
    load_official_checkpoint(target, str(path))
    loaded = target.state_dict()
    assert "sigmas" not in ckpt[4]
    torch.testing.assert_close(loaded["sigmas"], state["sigmas"], rtol=0, atol=0)
    for name, value in ckpt[4].items():
        torch.testing.assert_close(loaded[name], value, rtol=0, atol=0)
    # without EMA the raw weights come back
    load_official_checkpoint(target, path, use_ema=False)
    assert _same_state(target, state)


def test_v2_checkpoint_without_ema_gives_the_raw_weights_even_with_use_ema():
    _, state, ckpt = _v2_checkpoint(ema=False)
    target = with_sigmas(NCSNv2(channels=1, ngf=4), 3.0, 0.1, 6)
    load_official_checkpoint(target, ckpt, use_ema=True)
    assert _same_state(target, state)


@pytest.mark.parametrize("prefix", ["", "module."])
def test_plain_state_dicts_load_from_objects_and_files(tmp_path, prefix):
    torch.manual_seed(0)
    source = NCSN(channels=3, ngf=4, num_scales=5)
    state = {prefix + k: v for k, v in source.state_dict().items()}
    target = NCSN(channels=3, ngf=4, num_scales=5)
    load_official_checkpoint(target, state)
    assert _same_state(target, source.state_dict())
    torch.save(state, tmp_path / "plain.pt")
    target = NCSN(channels=3, ngf=4, num_scales=5)
    load_official_checkpoint(target, tmp_path / "plain.pt")
    assert _same_state(target, source.state_dict())


def test_a_v1_checkpoint_does_not_fit_a_v2_network():
    source = NCSN(channels=1, ngf=4, num_scales=6)
    ckpt = [_prefixed(source.state_dict()), {}]
    target = with_sigmas(NCSNv2(channels=1, ngf=4), 3.0, 0.1, 6)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(ValueError, match=r"does not fit NCSNv2: \d+ missing: .*normalizer\.alpha") as err:
        load_official_checkpoint(target, ckpt)
    assert "unexpected: " in str(err.value) and "normalizer.embed.weight" in str(err.value)
    assert "(+" in str(err.value)  # the lists are cut after a few names
    assert _same_state(target, before)  # nothing was loaded


def test_wrong_shapes_are_named():
    source = NCSN(channels=1, ngf=4, num_scales=10)
    with pytest.raises(ValueError, match=r"wrong shape: .*embed\.weight: checkpoint \(10, 12\) vs network \(5, 12\)"):
        load_official_checkpoint(NCSN(channels=1, ngf=4, num_scales=5), source.state_dict())
    with pytest.raises(ValueError, match=r"begin_conv\.weight: checkpoint \(4, 1, 3, 3\) vs network \(8, 1, 3, 3\)"):
        load_official_checkpoint(NCSN(channels=1, ngf=8, num_scales=10), source.state_dict())


def test_missing_and_unreadable_files_give_clear_errors(tmp_path):
    net = NCSN(channels=1, ngf=4)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_official_checkpoint(net, tmp_path / "nope.pth")
    with pytest.raises(IsADirectoryError, match="is a directory"):
        load_official_checkpoint(net, tmp_path)
    junk = tmp_path / "junk.pth"
    junk.write_text("this is not a checkpoint")
    with pytest.raises(ValueError, match="junk.pth' is not a PyTorch checkpoint"):
        load_official_checkpoint(net, junk)
    torch.save({"epoch": 3}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match=r"Not a checkpoint this loader knows.*keys \['epoch'\]"):
        load_official_checkpoint(net, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="first element is the model state dict"):
        load_official_checkpoint(net, [{"epoch": 3}, {}])


def test_extract_state_dict_strips_the_dataparallel_prefix_only_at_the_start():
    t = torch.zeros(1)
    out = extract_state_dict([{"module.a.module.b": t, "c": t}, {}])
    assert list(out) == ["a.module.b", "c"]
