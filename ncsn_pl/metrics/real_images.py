"""The real images FID compares with: which ones (the cache key of their statistics) and how to read them."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from ncsn_pl.data.contract import ItemImages, LoaderWorkers, NamedDataset, ShapedData, split_reader, split_set
from ncsn_pl.data.image_files import find_images

__all__ = ["NOT_IN_REAL_IMAGES", "RealImages", "image_settings", "real_images"]

# DataModule settings that change how images are loaded or how training batches are augmented, never the real images
# (read without flips or dequantization; a folder is named by its path); every other setting (seed, val_fraction,
# channels, image_size, ...) is part of the real statistics' cache key
NOT_IN_REAL_IMAGES = frozenset({"batch_size", "val_batch_size", "num_workers", "pin_memory", "download", "root",
                                "random_flip", "dequantize", "dequantize_val"})  # fmt: skip


@dataclass(frozen=True)
class RealImages:
    """The real images of a metric: the fields of the statistics' cache key and where to read them.

    Attributes:
        dataset: names the data set in the cache key (``digits``, ``cifar10``, ``folder:/abs/path``, ...).
        split: ``train`` or ``val``.
        image_size: side length of the images.
        num_images: how many images the statistics cover (the first ones of the split).
        datamodule: the DataModule they come from (read only on a cache miss).
        settings: everything else that selects or transforms the images (:func:`image_settings`).
    """

    dataset: str
    split: str
    image_size: int
    num_images: int
    datamodule: Any
    settings: Mapping[str, Any] = field(default_factory=dict)

    def load(self) -> Tensor:
        """The images, a float tensor ``(num_images, C, H, W)`` in [0, 1], without augmentation (all in memory:
        for small sets; the statistics stream :meth:`shard` instead)."""
        return split_reader(self.datamodule, self.split)(self.num_images)  # real_images checked that it has one

    def image_dataset(self) -> Dataset | None:
        """The split as a data set read item by item (``datamodule.image_dataset(split)``), or None when the
        DataModule only gives whole tensors."""
        if isinstance(self.datamodule, ItemImages) and callable(self.datamodule.image_dataset):
            return self.datamodule.image_dataset(self.split)
        return None

    def shard(self, rank: int, world_size: int, batch_size: int = 256) -> Iterator[Tensor]:
        """Batches of the images ``rank, rank + world_size, ...`` (each process adds its own share), read from disk
        a batch at a time: memory is bounded by ``batch_size``, not by the size of the data set.

        The DataModule's ``num_workers`` decode the images in parallel. A DataModule without ``image_dataset``
        falls back to :meth:`load` (the whole split in memory).
        """
        dataset = self.image_dataset()
        if dataset is None:
            yield from self.load()[rank::world_size].split(batch_size)
            return
        shard = Subset(dataset, range(rank, self.num_images, world_size))
        num_workers = int((self.datamodule.num_workers if isinstance(self.datamodule, LoaderWorkers) else 0) or 0)
        yield from DataLoader(shard, batch_size=batch_size, num_workers=num_workers)

    def cache_key(self) -> dict[str, Any]:
        """The keyword arguments of :meth:`SampleQuality.load_or_compute_real` that name these images."""
        return {
            "dataset": self.dataset,
            "split": self.split,
            "image_size": self.image_size,
            "num_images": self.num_images,
            "settings": dict(self.settings),
        }


def image_settings(datamodule: Any) -> dict[str, Any]:
    """The settings of ``datamodule`` that select or transform its images, for the real statistics' cache key.

    Derived from the DataModule's own settings (its ``hparams``: every ``__init__`` argument, as LightningCLI and
    ``save_hyperparameters`` record them) less :data:`NOT_IN_REAL_IMAGES`, so a new setting is in the key unless
    declared harmless. Each takes the value the DataModule resolved (its attribute of that name: ``image_size`` 8
    for the digits' ``None``), so equal images under other spellings share an entry. Plus the ``data_shape`` and, for
    an image folder or a Hugging Face ``save_to_disk`` folder (``hf:DIR``), a digest of its files (relative paths,
    sizes, modification times): added, removed or replaced images miss too.
    """
    # Lightning's public ``hparams`` (every LightningDataModule has it; a plain object may not) names the settings, so
    # which attributes are read is known only at run time: no Protocol can declare them
    hparams = dict(getattr(datamodule, "hparams", None) or {})
    settings = {k: getattr(datamodule, k, v) for k, v in sorted(hparams.items()) if k not in NOT_IN_REAL_IMAGES}
    settings = json.loads(json.dumps(settings, default=repr))  # plain JSON values, as the cache file keeps them
    settings["data_shape"] = [int(n) for n in datamodule.data_shape]
    dataset = _dataset_name(datamodule)
    if dataset == "folder":
        settings["files"] = _files_digest(Path(datamodule.root), find_images(datamodule.root))
    elif dataset.startswith("hf:") and Path(dataset[3:]).is_dir():  # a save_to_disk folder: its Arrow and JSON files
        root = Path(dataset[3:])
        settings["files"] = _files_digest(root, sorted(p for p in root.rglob("*") if p.is_file()))
    return settings


def _files_digest(root: Path, files: list[Path]) -> str:
    """A digest of ``files`` (relative paths, sizes, modification times): any file added, removed or replaced
    changes it."""
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()
        digest.update(f"{path.relative_to(root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def real_images(datamodule: Any, split: str = "train", max_images: int | None = None) -> RealImages:
    """The first ``max_images`` un-augmented images of a split of ``datamodule`` (all when None).

    Works with any DataModule that has ``train_data(max_items)`` / ``val_data(max_items)``, ``train_set`` /
    ``val_set`` and ``data_shape`` (:class:`~ncsn_pl.data.ImageDataModule`); with ``image_dataset(split)`` too,
    the images are streamed instead of stacked (:meth:`RealImages.shard`). A folder data set is named by its
    absolute path in the cache key, and so is an ``hf:DIR`` folder.

    Raises:
        ValueError: unknown split, a DataModule without those methods, or data that are not images.
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}.")
    if max_images is not None and max_images < 2:
        raise ValueError(f"The real statistics need at least 2 images, got max_images={max_images}.")
    shape = tuple((datamodule.data_shape if isinstance(datamodule, ShapedData) else None) or ())
    read = split_reader(datamodule, split)
    if read is None or len(shape) != 3:
        raise ValueError(
            f"{type(datamodule).__name__} does not provide images (data_shape {shape or None}): FID needs an image "
            f"DataModule with {split}_data() and data_shape (C, H, W), e.g. ncsn_pl.data.ImageDataModule."
        )
    datamodule.setup("fit")
    subset = split_set(datamodule, split)
    total = len(subset) if subset is not None else int(read(None).shape[0])
    count = total if max_images is None else min(max_images, total)
    name = _dataset_name(datamodule) or type(datamodule).__name__
    if name == "folder":  # a folder DataModule has a root (image_settings reads it too)
        name = f"folder:{Path(datamodule.root).resolve()}"
    elif name.startswith("hf:") and Path(name[3:]).is_dir():
        name = f"hf:{Path(name[3:]).resolve()}"
    return RealImages(name, split, int(shape[-1]), count, datamodule, image_settings(datamodule))


def _dataset_name(datamodule: Any) -> str:
    """The DataModule's ``dataset`` (:class:`~ncsn_pl.data.contract.NamedDataset`), or "" when it names none."""
    return str((datamodule.dataset if isinstance(datamodule, NamedDataset) else None) or "")
