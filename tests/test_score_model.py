"""ScoreModel keeps its network in channels_last memory format (the default) without changing the numbers."""

import copy

import torch
from lightning.pytorch import Trainer
from torch.utils.data import DataLoader

from ncsn_pl.core.losses import dsm_loss
from ncsn_pl.networks import NCSN
from ncsn_pl.training import ScoreModel


def _conv_weights(model: ScoreModel) -> list[torch.Tensor]:
    # 1x1 kernels and single-channel inputs have the same strides in both formats
    return [p for p in model.score_net.parameters() if p.ndim == 4 and p.shape[1] > 1 and p.shape[2] * p.shape[3] > 1]


def _pair() -> tuple[ScoreModel, ScoreModel]:
    torch.manual_seed(0)
    net = NCSN(channels=3, ngf=4, num_scales=10)
    fast = ScoreModel(copy.deepcopy(net), data_shape=(3, 8, 8), n_steps_each=2).double()
    plain = ScoreModel(net, data_shape=(3, 8, 8), n_steps_each=2, channels_last=False).double()
    return fast, plain


def test_default_network_weights_are_channels_last_and_opt_out_keeps_them_contiguous():
    fast, plain = _pair()
    assert fast.hparams.channels_last and not plain.hparams.channels_last
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in _conv_weights(fast))
    assert not any(w.is_contiguous(memory_format=torch.channels_last) for w in _conv_weights(plain))
    assert all(w.is_contiguous() for w in _conv_weights(plain))


def test_channels_last_gives_the_same_loss_gradients_and_samples():
    fast, plain = _pair()
    x = torch.rand(4, 3, 8, 8, dtype=torch.float64)
    losses = []
    for model in (fast, plain):
        loss = dsm_loss(model, x, model.sigmas, generator=torch.Generator().manual_seed(3)).mean()
        loss.backward()
        losses.append(loss)
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-10, atol=0)
    for p_fast, p_plain in zip(fast.parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(p_fast.grad, p_plain.grad, rtol=1e-8, atol=1e-12)

    samples = [m.sample(3, seed=5) for m in (fast, plain)]
    samples += [m.sample([0, 1], seed=7, batch_size=1) for m in (fast, plain)]
    assert all(x.dtype == torch.float64 for x in samples)  # the start is drawn in the model's dtype
    torch.testing.assert_close(samples[0], samples[1], rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(samples[2], samples[3], rtol=1e-8, atol=1e-10)


def test_weights_stay_channels_last_through_training_and_a_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = ScoreModel(NCSN(channels=3, ngf=4, num_scales=10), data_shape=(3, 8, 8))
    data = DataLoader(torch.rand(8, 3, 8, 8), batch_size=4)
    trainer = Trainer(
        max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path,
    )
    trainer.fit(model, data)
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in _conv_weights(model))
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)

    loaded = ScoreModel.load_from_checkpoint(path, score_net=NCSN(channels=3, ngf=4, num_scales=10))
    assert loaded.hparams.channels_last
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in _conv_weights(loaded))
    for name, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], value, rtol=0, atol=0, msg=name)
