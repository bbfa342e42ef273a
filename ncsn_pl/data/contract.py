"""What the model and the callbacks read of a DataModule besides Lightning's loaders, declared as Protocols.

Lightning asks a DataModule for its loaders only. The CLI asks for ``data_shape`` too (:class:`ShapedData`: the model
builds its network for it and draws samples of that shape). Everything else is a capability that a feature uses when
the DataModule has it, and skips or names when it does not:

- ``train_data(max_items)`` (:class:`TrainData`): NCSNv2's ``"auto"`` noise schedule, FID against the training set;
- ``val_data(max_items)`` (:class:`ValData`): FID against the held-out set, the noisy share of ``sample`` / ``fid``;
- ``train_set`` / ``val_set`` (:class:`TrainSet`, :class:`ValSet`): a split's size without stacking it;
- ``image_dataset(split)`` (:class:`ItemImages`), with ``num_workers`` (:class:`LoaderWorkers`): FID's real
  statistics read a batch at a time instead of the whole split at once;
- ``check_files()`` (:class:`CheckedFiles`): the data checked before a fit makes its run folder;
- ``dataset`` (:class:`NamedDataset`): the data set's name in FID's statistics cache (``"folder"`` with a ``root``);
- ``distribution`` (:class:`KnownDensity`): the data's known density, for ``ToySampleQuality`` (a
  :class:`~ncsn_pl.core.distributions.GaussianMixture`) and the contours behind ``SampleGrid``'s 2-D plots.

:class:`ScoreDataModule` is the three that :class:`~ncsn_pl.data.ImageDataModule` and
:class:`~ncsn_pl.data.ToyDataModule` both give. ``isinstance`` against these Protocols checks that the names exist,
not their signatures; :func:`split_reader` also checks that the method is one.
"""

from __future__ import annotations

from collections.abc import Callable, Sized
from typing import Protocol, runtime_checkable

from torch import Tensor
from torch.utils.data import Dataset

__all__ = [
    "CheckedFiles",
    "ItemImages",
    "KnownDensity",
    "LoaderWorkers",
    "LogDensity",
    "NamedDataset",
    "ScoreDataModule",
    "ShapedData",
    "TrainData",
    "TrainSet",
    "ValData",
    "ValSet",
    "split_reader",
    "split_set",
]


@runtime_checkable
class ShapedData(Protocol):
    """Gives the shape of one data point, known right after ``__init__`` (the CLI builds the model with it)."""

    @property
    def data_shape(self) -> tuple[int, ...]:
        """``(C, H, W)`` for images, ``(D,)`` for points."""
        ...


@runtime_checkable
class TrainData(Protocol):
    """Gives the training set as one tensor, without augmentation."""

    def train_data(self, max_items: int | None = None) -> Tensor:
        """The first ``max_items`` training items (all when None), ``(N, *data_shape)``; images in [0, 1]."""
        ...


@runtime_checkable
class ValData(Protocol):
    """Gives the held-out set as one tensor, without augmentation."""

    def val_data(self, max_items: int | None = None) -> Tensor:
        """The first ``max_items`` held-out items (all when None), ``(N, *data_shape)``; images in [0, 1]."""
        ...


@runtime_checkable
class ScoreDataModule(ShapedData, TrainData, ValData, Protocol):
    """``data_shape``, ``train_data`` and ``val_data``: all that the model and the callbacks read of the built-in
    DataModules beyond their loaders."""


@runtime_checkable
class TrainSet(Protocol):
    """Holds the training items as a sized data set once ``setup`` ran (None before)."""

    train_set: Sized | None


@runtime_checkable
class ValSet(Protocol):
    """Holds the held-out items as a sized data set once ``setup`` ran (None before)."""

    val_set: Sized | None


@runtime_checkable
class ItemImages(Protocol):
    """Gives a split's images item by item, read from disk when asked for."""

    def image_dataset(self, split: str = "train") -> Dataset:
        """Item ``i`` of ``split`` (``"train"`` or ``"val"``): a float tensor ``(C, H, W)`` in [0, 1]."""
        ...


@runtime_checkable
class LoaderWorkers(Protocol):
    """The DataLoader worker processes of the DataModule (0: read in the main process)."""

    num_workers: int


@runtime_checkable
class NamedDataset(Protocol):
    """Names its data set (``digits``, ``cifar10``, ``hf:...``; ``folder`` when the images are the files under
    ``root``)."""

    dataset: str


@runtime_checkable
class LogDensity(Protocol):
    """A density with an exact log probability."""

    def log_prob(self, x: Tensor) -> Tensor:
        """``log p(x)`` of points ``(N, D)``, ``(N,)``."""
        ...


@runtime_checkable
class CheckedFiles(Protocol):
    """Checks its files before a fit makes its run folder (a failed download, missing or corrupt files stop it)."""

    def check_files(self) -> None:
        """Raise an error that says what to fix when the data cannot be read."""
        ...


@runtime_checkable
class KnownDensity(Protocol):
    """Knows the distribution its data are drawn from (a :class:`LogDensity`; a
    :class:`~ncsn_pl.core.distributions.GaussianMixture` for ``ToySampleQuality``)."""

    distribution: LogDensity


def split_reader(datamodule: object, split: str) -> Callable[[int | None], Tensor] | None:
    """``datamodule.train_data`` or ``datamodule.val_data`` for ``split`` (``"train"`` or ``"val"``), or None when
    the DataModule does not give that split (:class:`TrainData`, :class:`ValData`) or it is not a method."""
    if split == "train" and isinstance(datamodule, TrainData) and callable(datamodule.train_data):
        return datamodule.train_data
    if split == "val" and isinstance(datamodule, ValData) and callable(datamodule.val_data):
        return datamodule.val_data
    return None


def split_set(datamodule: object, split: str) -> Sized | None:
    """``datamodule.train_set`` or ``datamodule.val_set`` for ``split``, or None when it has none
    (:class:`TrainSet`, :class:`ValSet`)."""
    if split == "train" and isinstance(datamodule, TrainSet):
        return datamodule.train_set
    if split == "val" and isinstance(datamodule, ValSet):
        return datamodule.val_set
    return None
