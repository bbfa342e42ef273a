"""The real images FID compares with: which ones (the cache key of their statistics) and how to read them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

__all__ = ["RealImages", "real_images"]


@dataclass(frozen=True)
class RealImages:
    """The real images of a metric: the fields of the statistics' cache key and where to read them.

    Attributes:
        dataset: names the data set in the cache key (``digits``, ``cifar10``, ``folder:/abs/path``, ...).
        split: ``train`` or ``val``.
        image_size: side length of the images.
        num_images: how many images the statistics cover (the first ones of the split).
        datamodule: the DataModule they come from (read only on a cache miss).
    """

    dataset: str
    split: str
    image_size: int
    num_images: int
    datamodule: Any

    def load(self) -> Tensor:
        """The images, a float tensor ``(num_images, C, H, W)`` in [0, 1], without augmentation (all in memory:
        for small sets; the statistics stream :meth:`shard` instead)."""
        return getattr(self.datamodule, f"{self.split}_data")(self.num_images)

    def image_dataset(self) -> Dataset | None:
        """The split as a data set read item by item (``datamodule.image_dataset(split)``), or None when the
        DataModule only gives whole tensors."""
        image_dataset = getattr(self.datamodule, "image_dataset", None)
        return image_dataset(self.split) if callable(image_dataset) else None

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
        num_workers = int(getattr(self.datamodule, "num_workers", 0) or 0)
        yield from DataLoader(shard, batch_size=batch_size, num_workers=num_workers)

    def cache_key(self) -> dict[str, Any]:
        """The keyword arguments of :meth:`SampleQuality.load_or_compute_real` that name these images."""
        return {
            "dataset": self.dataset,
            "split": self.split,
            "image_size": self.image_size,
            "num_images": self.num_images,
        }


def real_images(datamodule: Any, split: str = "train", max_images: int | None = None) -> RealImages:
    """The first ``max_images`` un-augmented images of a split of ``datamodule`` (all when None).

    Works with any DataModule that has ``train_data(max_items)`` / ``val_data(max_items)``, ``train_set`` /
    ``val_set`` and ``data_shape`` (:class:`~ncsn_pl.data.ImageDataModule`); with ``image_dataset(split)`` too,
    the images are streamed instead of stacked (:meth:`RealImages.shard`). A folder data set is named by its
    absolute path in the cache key.

    Raises:
        ValueError: unknown split, a DataModule without those methods, or data that are not images.
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}.")
    if max_images is not None and max_images < 2:
        raise ValueError(f"The real statistics need at least 2 images, got max_images={max_images}.")
    shape = tuple(getattr(datamodule, "data_shape", ()) or ())
    if not callable(getattr(datamodule, f"{split}_data", None)) or len(shape) != 3:
        raise ValueError(
            f"{type(datamodule).__name__} does not provide images (data_shape {shape or None}): FID needs an image "
            f"DataModule with {split}_data() and data_shape (C, H, W), e.g. ncsn_pl.data.ImageDataModule."
        )
    datamodule.setup("fit")
    subset = getattr(datamodule, f"{split}_set", None)
    read = getattr(datamodule, f"{split}_data")
    total = len(subset) if subset is not None else int(read(None).shape[0])
    count = total if max_images is None else min(max_images, total)
    name = str(getattr(datamodule, "dataset", None) or type(datamodule).__name__)
    if name == "folder":
        name = f"folder:{Path(getattr(datamodule, 'root', '.')).resolve()}"
    return RealImages(name, split, int(shape[-1]), count, datamodule)
