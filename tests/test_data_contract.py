"""The DataModule contract (ncsn_pl.data.contract): the built-in DataModules satisfy it, a user's own DataModule
trains and samples through every path that reads it, and one without an optional capability gets what it got
before the contract was declared (a skip or the same one-line error)."""

import math
import re
import sys
from types import SimpleNamespace

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch import Trainer
from test_own_images_readme import code_blocks, readme_section
from torch.utils.data import DataLoader

from ncsn_pl.commands.cli import _data_shape
from ncsn_pl.core.distributions import GaussianMixture
from ncsn_pl.core.sigmas import max_pairwise_distance
from ncsn_pl.data import ImageDataModule, ToyDataModule
from ncsn_pl.data.contract import (
    CheckedFiles,
    ItemImages,
    KnownDensity,
    LoaderWorkers,
    NamedDataset,
    ScoreDataModule,
    ShapedData,
    TrainData,
    TrainSet,
    ValData,
    ValSet,
    split_reader,
    split_set,
)
from ncsn_pl.metrics import real_images
from ncsn_pl.metrics.noisy_share import noise_reference
from ncsn_pl.networks import ToyScoreMLP
from ncsn_pl.training import SampleGrid, ScoreModel, ToySampleQuality
from ncsn_pl.training import sample_grid as sample_grid_module


class RingPoints(pl.LightningDataModule):
    """A user's own 2-D data: points on a circle of radius 4, with only what the contract asks."""

    def __init__(self, num_points: int = 48, batch_size: int = 16) -> None:
        super().__init__()
        angle = torch.rand(num_points, generator=torch.Generator().manual_seed(0)) * 2 * math.pi
        self.points = 4 * torch.stack([angle.cos(), angle.sin()], 1)
        self.batch_size = batch_size
        self.data_shape = (2,)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.points, batch_size=self.batch_size)

    def train_data(self, max_items: int | None = None) -> torch.Tensor:
        return self.points[:max_items]

    def val_data(self, max_items: int | None = None) -> torch.Tensor:
        return self.points[:max_items]


class RingWithDensity(RingPoints):
    """The same data with a known density (a mixture standing in for the ring)."""

    def __init__(self) -> None:
        super().__init__()
        self.distribution = GaussianMixture([0.5, 0.5], [[4.0, 0.0], [-4.0, 0.0]], [1.0, 1.0])


def test_the_built_in_datamodules_satisfy_the_contract():
    toy, digits = ToyDataModule(num_train=8, num_val=4), ImageDataModule(dataset="digits")
    for datamodule in (toy, digits):
        assert isinstance(datamodule, ScoreDataModule)
        assert all(isinstance(datamodule, p) for p in (ShapedData, TrainData, ValData, TrainSet, ValSet, LoaderWorkers))
    assert isinstance(toy, KnownDensity) and not isinstance(digits, KnownDensity)
    assert isinstance(digits, ItemImages) and isinstance(digits, NamedDataset)
    assert not isinstance(toy, ItemImages) and not isinstance(toy, NamedDataset)
    assert isinstance(digits, CheckedFiles) and not isinstance(toy, CheckedFiles)  # files to check before a fit
    assert split_reader(toy, "train")(3).equal(toy.train_set[:3]) and split_reader(toy, "val")(2).equal(toy.val_set[:2])
    assert split_set(toy, "val") is toy.val_set and split_reader(toy, "test") is None and split_set(toy, "x") is None


def test_a_user_datamodule_that_lacks_a_capability_does_not_satisfy_it():
    user = RingPoints()
    assert isinstance(user, ScoreDataModule) and not isinstance(user, KnownDensity)
    assert not isinstance(user, TrainSet) and split_set(user, "train") is None
    assert not isinstance(SimpleNamespace(), ShapedData) and not isinstance(None, TrainData)
    # a method set to None, or a tensor where the method should be, reads as no method
    user.train_data, user.val_data = None, torch.zeros(3, 2)
    assert split_reader(user, "train") is None and split_reader(user, "val") is None


def fit(tmp_path, datamodule, callbacks, **settings):
    torch.manual_seed(0)
    network = ToyScoreMLP(dim=2, hidden=8, num_scales=3)
    model = ScoreModel(network, sigma_min=0.5, num_scales=3, n_steps_each=2, step_lr=0.05, init_range=(-6.0, 6.0),
                       data_shape=_data_shape(datamodule), **settings)  # fmt: skip
    trainer = Trainer(accelerator="cpu", max_steps=2, limit_val_batches=0, callbacks=callbacks, logger=False,
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(model, datamodule)
    return model


def plotted(monkeypatch):
    """The density each 2-D plot of SampleGrid was drawn over (the plotting itself skipped)."""
    densities = []
    monkeypatch.setattr(sample_grid_module, "plot_samples_2d",
                        lambda samples, path, log_prob, centres, title: densities.append((log_prob, centres, title))
                        or torch.zeros(3, 2, 2))  # fmt: skip
    return densities


def test_a_user_datamodule_trains_with_auto_sigma_max_and_draws_over_its_density(tmp_path, monkeypatch):
    data = RingWithDensity()
    densities = plotted(monkeypatch)
    quality = ToySampleQuality(num_samples=8, num_projections=4)
    model = fit(tmp_path, data, [SampleGrid(num_samples=8, progress_bar=False), quality], sigma_max="auto")
    assert model.hparams.sigma_max == pytest.approx(max_pairwise_distance(data.points)[0])  # read from train_data
    ((log_prob, centres, title),) = densities
    assert log_prob == data.distribution.log_prob and centres.equal(data.distribution.means)
    assert title == "final: 8 samples over log p(x)"
    assert set(quality.last_results) == {"sliced_wasserstein", "mode_weight_error"}  # scored at the end


def test_a_user_datamodule_without_a_distribution_gets_todays_behaviour(tmp_path, monkeypatch):
    data = RingPoints()
    densities = plotted(monkeypatch)
    fit(tmp_path, data, [SampleGrid(num_samples=8, progress_bar=False)], sigma_max=8.0)
    assert densities == [(None, None, "final: 8 samples")]  # the scatter alone
    with pytest.raises(ValueError, match=r"needs a DataModule with a GaussianMixture `distribution` .*got RingPoints"):
        ToySampleQuality._distribution(SimpleNamespace(datamodule=data))
    assert noise_reference(data) is None  # not images: no noisy share
    with pytest.raises(ValueError, match=r"RingPoints does not provide images \(data_shape \(2,\)\)"):
        real_images(data, "val")


def test_a_datamodule_without_what_a_path_needs_gets_the_same_one_line_errors():
    class Bare(pl.LightningDataModule):
        pass

    no_shape = ("Bare has no data_shape; the model needs it for sampling. Give the DataModule a data_shape, (C, H, W) "
                "for images or (D,) for points (README, 'Your own DataModule: the contract').")
    with pytest.raises(ValueError, match=f"^{re.escape(no_shape)}$"):
        _data_shape(Bare())
    model = ScoreModel(ToyScoreMLP(dim=2, hidden=8, num_scales=3), sigma_max="auto", num_scales=3, data_shape=(2,))
    for datamodule in (Bare(), None):
        with pytest.raises(ValueError, match=r"^'auto' schedule settings need a DataModule with train_data\(\); give"):
            model.resolve_auto_schedule(datamodule)
    with pytest.raises(ValueError, match=r"Bare does not provide images \(data_shape None\): FID needs an image "
                                         r"DataModule with train_data\(\) and data_shape \(C, H, W\)"):  # fmt: skip
        real_images(Bare())


def test_the_readme_example_of_the_contract_runs_as_written(tmp_path, monkeypatch, capsys):
    section = readme_section("A DataModule of your own")
    (module,) = code_blocks(section, "python")
    (check,) = code_blocks(readme_section("Your own DataModule: the contract"), "python")
    assert len(check.strip().splitlines()) <= 10
    (tmp_path / "my_data.py").write_text(module)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        exec(compile(check, "README.md", "exec"), {})
    finally:
        sys.modules.pop("my_data", None)  # the next test that writes a my_data.py imports its own
    assert capsys.readouterr().out.split() == ["True", "True", "False"]
