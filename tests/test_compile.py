"""model.compile: the score network compiled with fullgraph=True (no graph break, so no hidden device read) gives
the eager network's samples and gradients, and keeps the eager state-dict keys."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from ncsn_pl.core.losses import dsm_loss
from ncsn_pl.core.samplers import AnnealedLangevin
from ncsn_pl.networks import NCSN, NCSNv2, ScoreNetwork
from ncsn_pl.networks.base import check_score_inputs
from ncsn_pl.networks.layers import ConditionalInstanceNorm2dPlus, elu
from ncsn_pl.training import ScoreModel


class TinyConditional(ScoreNetwork):
    """NCSN's parts at their smallest: a conv, a conditional InstanceNorm++ (channels_last: the hand-written
    autograd function), the networks' ELU (on the CPU the one from exp), a conv, and the input checks."""

    def __init__(self, num_scales: int = 3) -> None:
        super().__init__()
        self.num_scales = num_scales
        self.begin = nn.Conv2d(1, 4, 3, padding=1)
        self.norm = ConditionalInstanceNorm2dPlus(4, num_scales)
        self.end = nn.Conv2d(4, 1, 3, padding=1)

    def forward(self, x: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        check_score_inputs("TinyConditional", x, levels, self.num_scales, channels=1)
        return self.end(elu(self.norm(self.begin(2 * x - 1), levels)))


def pair(net: nn.Module, **kwargs) -> tuple[ScoreModel, ScoreModel]:
    torch.manual_seed(0)
    eager = ScoreModel(net, num_scales=3, sigma_max=1.0, sigma_min=0.1, data_shape=(1, 8, 8), **kwargs)
    compiled = ScoreModel(copy.deepcopy(net), num_scales=3, sigma_max=1.0, sigma_min=0.1, data_shape=(1, 8, 8),
                          compile=True, **kwargs)  # fmt: skip
    compiled.load_state_dict(eager.state_dict())
    return eager, compiled


def check_steps(eager: ScoreModel, compiled: ScoreModel) -> None:
    assert list(compiled.state_dict()) == list(eager.state_dict())  # checkpoints load either way
    # sampler steps (one per level)
    sampler = AnnealedLangevin(n_steps_each=1, step_lr=1e-3)
    torch.testing.assert_close(compiled.sample(3, sampler=sampler), eager.sample(3, sampler=sampler),
                               rtol=1e-4, atol=1e-5)  # fmt: skip
    # a training step: the loss and every gradient
    x = torch.rand(4, 1, 8, 8)
    losses = []
    for model in (eager, compiled):
        generator = torch.Generator().manual_seed(1)
        loss = dsm_loss(model.score_net, x, model.sigmas, generator=generator).mean()
        loss.backward()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-6)
    for (name, p), q in zip(eager.named_parameters(), compiled.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-5, msg=name)


def test_a_compiled_sampler_step_and_training_step_equal_eager_ones(monkeypatch):
    # dynamo's whole graph (fullgraph) and AOTAutograd's backward, without inductor's code generation (slow here)
    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda *args, **kwargs: compile_(*args, **kwargs, backend="aot_eager"))
    torch._dynamo.reset()
    check_steps(*pair(TinyConditional()))


@pytest.mark.slow
@pytest.mark.parametrize("net", ["tiny", "ncsn", "ncsnv2"])
def test_the_networks_compile_whole_with_inductor_and_equal_eager(net):
    torch._dynamo.reset()  # NCSN at ngf 4: about 10 minutes on 2 busy cores
    nets = {"tiny": TinyConditional, "ncsn": lambda: NCSN(channels=1, ngf=4, num_scales=3),
            "ncsnv2": lambda: NCSNv2(channels=1, ngf=4)}  # fmt: skip
    check_steps(*pair(nets[net]()))
