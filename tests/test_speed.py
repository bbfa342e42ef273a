"""The GPU speed rules, checked on the CPU: no device reads in the hot loops, bf16 that keeps the sampler's state
and the network's ends in float32, loaders and process splits."""

from __future__ import annotations

import types
import warnings

import pytest
import torch
import torch.nn.functional as F

from ncsn_pl.core.samplers import AnnealedLangevin, LangevinStep, PredictorCorrector, seeded_sample
from ncsn_pl.core.scores import sigma_scaled_score
from ncsn_pl.data import ImageDataModule
from ncsn_pl.networks import NCSN, NCSNv2
from ncsn_pl.networks.base import check_score_inputs
from ncsn_pl.networks.layers import _InstanceAffine, elu
from ncsn_pl.sample_sets.drawing import uneven_split
from ncsn_pl.training.progress import sampling_progress

SIGMAS = torch.tensor([1.0, 0.3, 0.1, 0.03])


def test_levels_are_read_only_where_that_is_free():
    x = torch.zeros(2, 1, 4, 4)
    with pytest.raises(ValueError, match=r"levels must lie in \[0, 3\)"):
        check_score_inputs("N", x, torch.tensor([0, 3]), 3)  # on the CPU: checked
    # on an accelerator (the meta device stands in: its values cannot be read) nothing is read back
    check_score_inputs("N", x.to("meta"), torch.tensor([0, 3], device="meta"), 3)


def test_the_step_report_reads_the_device_only_when_asked(monkeypatch):
    reads = []
    original = torch.Tensor.item
    monkeypatch.setattr(torch.Tensor, "item", lambda self: reads.append(1) or original(self))
    sampler = PredictorCorrector(n_steps_each=2)
    steps: list[LangevinStep] = []
    torch.manual_seed(0)
    AnnealedLangevin(3, 0.01).sample(lambda x, levels: -x, torch.rand(4, 2), SIGMAS, callback=steps.append)
    sampler.sample(lambda x, levels: -x, torch.randn(4, 2), SIGMAS, callback=steps.append)
    assert len(steps) == 12 + 12 and reads == []  # levels, sigmas and x are there, nothing was read
    assert steps[-1].snr != steps[-1].snr and steps[-2].snr > 0  # NaN without noise; read on demand
    assert len(reads) > 0


def test_the_progress_bar_reads_the_snr_only_when_it_shows_it(monkeypatch):
    reads = []
    monkeypatch.setattr(LangevinStep, "snr", property(lambda self: reads.append(self.level) or 1.0))
    sampler = AnnealedLangevin(n_steps_each=10, step_lr=0.01)
    with sampling_progress(4, sampler, 3, None, enable=True, postfix_every=25) as bar:
        sampler.sample(lambda x, levels: -x, torch.rand(3, 2), SIGMAS, callback=bar)
    assert reads == [0, 2]  # updates 0 and 25 of 40
    with sampling_progress(4, sampler, 3, None, enable=False) as bar:
        assert bar is None  # a hidden bar: the sampler reports nothing


def tiny(net: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if net == "ncsn":
        return NCSN(channels=1, ngf=4, num_scales=4).to(memory_format=torch.channels_last).eval()
    model = NCSNv2(channels=1, ngf=4).eval()
    model.set_sigmas(SIGMAS)
    return model


@pytest.mark.parametrize("net", ["ncsn", "ncsnv2"])
def test_under_bf16_autocast_the_sampler_state_and_the_network_ends_stay_float32(net):
    model = tiny(net)
    dtypes = {}

    def record(name):
        def hook(module, args, out):
            dtypes.setdefault(name, (args[0].dtype, out.dtype))

        return hook

    for name, module in [("begin", model.begin_conv), ("body", model.res2[0].conv1), ("end", model.end_conv)]:
        module.register_forward_hook(record(name))
    score_fn = sigma_scaled_score(model.unscaled) if net == "ncsnv2" else model
    states = []
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x = seeded_sample(AnnealedLangevin(2, 1e-4), score_fn, SIGMAS, (1, 8, 8), [1, 2], init_range=(-1.0, 4.0),
                          callback=lambda step: states.append(step.x.dtype))  # fmt: skip
    assert x.dtype == torch.float32 and set(states) == {torch.float32}
    assert dtypes["begin"] == (torch.float32, torch.float32)  # the input keeps the smallest sigma's noise
    assert dtypes["body"][1] == torch.bfloat16  # the body runs in low precision
    assert dtypes["end"] == (torch.float32, torch.float32)
    reference = seeded_sample(AnnealedLangevin(2, 1e-4), score_fn, SIGMAS, (1, 8, 8), [1, 2], init_range=(-1.0, 4.0))
    torch.testing.assert_close(x, reference, rtol=0, atol=0.02)


def test_channels_last_instance_norm_matches_f_instance_norm_under_bf16_autocast():
    torch.manual_seed(0)
    x = (3 * torch.randn(4, 16, 8, 8) + 5).bfloat16()
    weight, bias = 1 + 0.1 * torch.randn(4, 16), 0.1 * torch.randn(4, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = _InstanceAffine.apply(x.contiguous(memory_format=torch.channels_last), weight, bias, 1e-5)
        native = F.instance_norm(x, eps=1e-5) * weight[..., None, None] + bias[..., None, None]
    exact = F.instance_norm(x.float(), eps=1e-5) * weight[..., None, None] + bias[..., None, None]
    assert ours.dtype == torch.bfloat16
    # statistics in float32: only the output's rounding to bf16 remains, no more than the native layer's error
    torch.testing.assert_close(ours.float(), exact, rtol=2**-8, atol=1e-3)
    assert (ours.float() - exact).abs().max() <= (native.float() - exact).abs().max()


def test_an_uneven_split_over_processes_is_named_with_the_even_alternative():
    assert uneven_split(10, 500, 2) is None and uneven_split(3, 500, 1) is None
    message = uneven_split(10, 500, 8)
    assert message.startswith("10 batches of up to 500 samples over 8 processes: 2 process(es) draw one batch more")
    assert "multiple of --batch_size x processes (4000)" in message


def test_loaders_pin_memory_by_default_only_for_cuda():
    data = ImageDataModule(dataset="digits", batch_size=4)
    data.trainer = types.SimpleNamespace(strategy=types.SimpleNamespace(root_device=torch.device("cpu")),
                                         fast_dev_run=False)  # fmt: skip
    data.setup("fit")
    assert data.train_dataloader().pin_memory is False
    data.trainer.strategy.root_device = torch.device("cuda", 0)
    assert data._pin_memory() is True
    assert ImageDataModule(dataset="digits", pin_memory=False)._pin_memory() is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert uneven_split(16, 4, 4) is None


def test_the_cpu_elu_is_f_elu_in_value_gradient_layout_and_under_compile():
    torch.manual_seed(0)
    edges = torch.tensor([-1e-9, 0.0, 1e-9, -80.0, 80.0, -1e-3]).view(1, 1, 1, 6).expand(1, 8, 6, 6)
    x = torch.cat([torch.randn(4, 8, 6, 6) * 4, edges]).to(memory_format=torch.channels_last)
    ours, theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    y = elu(ours)
    torch.testing.assert_close(y, F.elu(theirs), rtol=0, atol=6e-8)
    assert y.is_contiguous(memory_format=torch.channels_last)
    grad = torch.randn_like(x)
    y.backward(grad)
    F.elu(theirs).backward(grad)
    torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-6, atol=1e-6)
    compiled = torch.compile(elu, fullgraph=True, backend="aot_eager")  # traced whole, with its backward
    torch.testing.assert_close(compiled(x), y.detach(), rtol=0, atol=6e-8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = elu(x.bfloat16())
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), F.elu(x), rtol=1e-2, atol=1e-2)
