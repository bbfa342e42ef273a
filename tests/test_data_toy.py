"""ToyDataModule: fixed samples of the paper's 0.8/0.2 Gaussian mixture."""

from __future__ import annotations

import torch

from ncsn_pl.data import ToyDataModule


def test_default_mixture_statistics():
    dm = ToyDataModule()
    assert dm.data_shape == (2,)
    assert dm.train_set.shape == (10000, 2) and dm.val_set.shape == (2000, 2)
    x = dm.train_set
    upper = x.sum(1) > 0  # the (+5, +5) side of the line x1 + x2 = 0
    # 10000 Bernoulli(0.8) draws: standard error 0.004
    assert abs(upper.float().mean().item() - 0.8) < 0.02
    torch.testing.assert_close(x[upper].mean(0), torch.tensor([5.0, 5.0]), atol=0.06, rtol=0)
    torch.testing.assert_close(x[~upper].mean(0), torch.tensor([-5.0, -5.0]), atol=0.1, rtol=0)
    torch.testing.assert_close(x[upper].std(0), torch.ones(2), atol=0.05, rtol=0)


def test_batches_are_plain_tensors_and_cover_the_training_set():
    dm = ToyDataModule(num_train=300, num_val=50, batch_size=128)
    batches = list(dm.train_dataloader())
    assert all(isinstance(b, torch.Tensor) and b.dtype == torch.float32 for b in batches)
    assert [len(b) for b in batches] == [128, 128, 44]
    seen = torch.cat(batches)
    assert torch.equal(seen[seen[:, 0].argsort()], dm.train_set[dm.train_set[:, 0].argsort()])
    val = torch.cat(list(dm.val_dataloader()))
    assert torch.equal(val, dm.val_set) and torch.equal(torch.cat(list(dm.test_dataloader())), dm.val_set)
    assert torch.equal(dm.train_data(10), dm.train_set[:10]) and dm.val_data().shape == (50, 2)


def test_seeded_and_configurable():
    a, b, c = (
        ToyDataModule(num_train=500, seed=3),
        ToyDataModule(num_train=500, seed=3),
        ToyDataModule(num_train=500),
    )
    assert torch.equal(a.train_set, b.train_set) and torch.equal(a.val_set, b.val_set)
    assert not torch.equal(a.train_set, c.train_set)
    assert not torch.equal(a.train_set[:100], a.val_set[:100])  # val is a separate draw
    dm = ToyDataModule(weights=(1.0,), means=((1.0, 2.0, 3.0),), stds=(0.5,), num_train=4000)
    assert dm.data_shape == (3,)
    torch.testing.assert_close(dm.train_set.mean(0), torch.tensor([1.0, 2.0, 3.0]), atol=0.05, rtol=0)
    torch.testing.assert_close(dm.train_set.std(0), torch.full((3,), 0.5), atol=0.03, rtol=0)
