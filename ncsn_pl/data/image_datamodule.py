"""The image DataModule: MNIST, Fashion-MNIST, CIFAR-10, CelebA, scikit-learn's digits, any folder of images, or a
Hugging Face ``datasets`` data set.

Batches are plain float tensors ``(B, C, H, W)`` in [0, 1] (labels are dropped). The training split gets the
papers' augmentation (horizontal flips where the paper used them) and, optionally, NCSN v1's uniform
dequantization; the validation/test split gets the same resizing and cropping without either.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset

from ncsn_pl.core.seeding import step_seed
from ncsn_pl.data.datasets import (
    BUILTIN_DOWNLOADS,
    DATASET_INFO,
    DATASETS,
    DatasetInfo,
    download,
    load_builtin,
    load_digits_images,
    missing_files,
    missing_message,
)
from ncsn_pl.data.hf_images import HF_PREFIX, HFImages, hf_headers, hf_name, load_hf_splits
from ncsn_pl.data.image_decoding import ImageHeader
from ncsn_pl.data.image_files import ImageFiles, find_images, read_headers
from ncsn_pl.data.sampler import EpochShuffleSampler, ResumableLoader
from ncsn_pl.data.transforms import dequantize, image_transform

__all__ = ["FAST_DEV_RUN_BATCH", "ImageDataModule"]

# batch size of ``--trainer.fast_dev_run``: a smoke test of the full-size networks runs in seconds on a CPU
FAST_DEV_RUN_BATCH = 2

class ImageDataModule(pl.LightningDataModule):
    """Unlabelled image batches for score matching, with the NCSN papers' preprocessing.

    Data sets and splits (``train`` is used by ``fit``; ``val`` by validation and ``test``):

    =============  ========================  =====================================  ===========  ======
    dataset        train                     val / test                             image        flip
    =============  ========================  =====================================  ===========  ======
    mnist          official train (60k)      official test (10k)                    28, 1 ch.    no
    fashion_mnist  official train (60k)      official test (10k)                    28, 1 ch.    no
    cifar10        official train (50k)      official test (10k)                    32, 3 ch.    yes
    celeba         CelebA "train"            CelebA "test" (as NCSN v1)             32 (or 64)   yes
    digits         sklearn ``load_digits``   seeded ``val_fraction`` of the 1797    8, 1 ch.     no
    folder         images under ``root``     seeded ``val_fraction`` of the files   any          yes
    hf:NAME        split ``train``           ``validation`` / ``test``, or seeded   any          yes
                                             ``val_fraction`` of the one split
    =============  ========================  =====================================  ===========  ======

    Preprocessing (ermongroup/ncsn ``anneal_runner.py:44-93``; ncsnv2 ``datasets/__init__.py``):
    CelebA is ``CenterCrop(140) -> Resize(image_size)``; MNIST, Fashion-MNIST and CIFAR-10 are resized only when
    ``image_size`` differs from the native size; folder and ``hf:`` images are scaled by their own bit depth (8-bit,
    16-bit PNG and TIFF, palette, RGBA: :mod:`ncsn_pl.data.image_decoding`) into ``channels``, their shorter side
    resized to ``image_size`` and the centre square cropped; digits
    (8x8, levels 0..16) are scaled to [0, 1] and bilinearly resized when ``image_size`` is set; then ``ToTensor()``.

    Training batches are augmented by :meth:`augment` once they reach the device: a horizontal flip of each image
    with probability 0.5 (if ``random_flip``) and uniform dequantization ``x * 255/256 + U[0,1)/256`` (if
    ``dequantize``; NCSN v1 always, NCSNv2 not; the official v1 runner also dequantized whole batches). Their
    randomness is drawn from a generator seeded by (``seed``, step, rank), so a resumed run augments exactly as an
    uninterrupted one. ``dequantize_val`` dequantizes val/test images with noise fixed per image.

    Files on disk (``download=False``, the default, never touches the network):

    * mnist: ``<root>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`` (IDX, plain or ``.gz``);
    * fashion_mnist: ``<root>/FashionMNIST/raw/`` with the same four names (plain or ``.gz``); when the root
      has none, the system package's files in ``/usr/share/datasets/fashion-mnist/``
      (``apt-get install -y dataset-fashion-mnist``);
    * cifar10: ``<root>/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}``;
    * celeba: ``<root>/celeba/img_align_celeba/*.jpg`` plus ``list_eval_partition.txt``,
      ``list_attr_celeba.txt``, ``identity_CelebA.txt``, ``list_bbox_celeba.txt`` and
      ``list_landmarks_align_celeba.txt`` in ``<root>/celeba/``;
    * folder: ``root`` itself is the image directory, searched recursively;
    * ``hf:NAME``: a folder written by ``save_to_disk``, or a Hugging Face Hub data set (:mod:`ncsn_pl.data.hf_images`).

    The header of every folder or ``hf:`` image is read when the shape is first asked for (before training): a file
    that is not an image PIL can read, or whose pixels have no range (floating-point), stops with one line naming it.

    With ``download=True``, :meth:`prepare_data` (run once per node by the Trainer) fetches the missing set
    with torchvision into a temporary folder inside ``root`` and moves the unpacked files into place only
    after the download has succeeded (archives are deleted); if it fails the temporary folder is removed,
    nothing is left half-written and a RuntimeError says why.

    Args:
        dataset: one of ``mnist``, ``fashion_mnist`` (Xiao et al. 2017), ``cifar10``, ``celeba``, ``digits``
            (scikit-learn's 8x8 digits, no files needed), ``folder`` (any directory of png/jpg/jpeg/bmp/webp/tif
            images) or ``hf:NAME`` (a Hugging Face ``datasets`` folder or Hub name; needs ``pip install datasets``).
        root: directory that holds the data sets (``<root>/MNIST``, ``<root>/FashionMNIST``,
            ``<root>/cifar-10-batches-py``, ``<root>/celeba``); for ``folder`` the image directory itself. Unused by
            ``digits``.
        download: fetch a missing mnist/fashion_mnist/cifar10/celeba with torchvision (needs network access).
        image_size: output height and width. Default: the native size (mnist and fashion_mnist 28, cifar10 32,
            digits 8), 32 for celeba (NCSN v1; NCSNv2 uses 64), and for ``folder`` and ``hf:`` the shorter side of the
            first image.
        channels: 1 or 3. Only ``folder`` and ``hf:`` can choose (1 converts to grey by ITU-R 601-2 luma, 3 repeats
            grey images); default: 1 when every image is grey, else 3. The built-in sets have a fixed count, which
            this may only repeat.
        batch_size: training batch size (``--trainer.fast_dev_run`` uses at most 2, with no workers).
        val_batch_size: validation/test batch size; default ``batch_size``.
        num_workers: DataLoader worker processes.
        pin_memory: pin host memory of batches (faster copies to a GPU); default: on when training on CUDA.
        random_flip: horizontal flips with p=0.5 on training images; default per data set (see table).
        dequantize: uniform dequantization of training images (NCSN v1: true; NCSNv2: false).
        dequantize_val: also dequantize validation/test images (NCSN v1 did, for its test loss).
        val_fraction: share of ``digits``/``folder`` images (and of an ``hf:`` data set without a validation or
            test split) held out for validation, drawn with ``seed``.
        seed: seed of the validation split of ``digits``/``folder``/``hf:`` (the split is fixed by it).
        image_column: the column of images of an ``hf:`` data set; default: the first of ``datasets.Image`` feature.
    """

    def __init__(
        self,
        dataset: str = "digits",
        root: str = "data",
        download: bool = False,
        image_size: int | None = None,
        channels: int | None = None,
        batch_size: int = 128,
        val_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        random_flip: bool | None = None,
        dequantize: bool = False,
        dequantize_val: bool = False,
        val_fraction: float = 0.1,
        seed: int = 0,
        image_column: str | None = None,
    ) -> None:
        super().__init__()
        if dataset not in DATASETS and not (dataset.startswith(HF_PREFIX) and len(dataset) > len(HF_PREFIX)):
            raise ValueError(
                f"Unknown data.dataset {dataset!r}; choose one of {', '.join(DATASETS)} or {HF_PREFIX}NAME (a Hugging "
                "Face data set)."
            )
        if image_size is not None and image_size < 1:
            raise ValueError(f"data.image_size must be a positive integer or null, got {image_size}.")
        info = _info(dataset)
        if image_column is not None and hf_name(dataset) is None:
            raise ValueError(f"data.image_column is for {HF_PREFIX}NAME data sets; leave it unset for {dataset}.")
        if info.channels is None:
            if channels not in (None, 1, 3):
                raise ValueError(
                    f"data.channels must be 1 (grayscale) or 3 (RGB) for {dataset}, got {channels}."
                )
        elif channels not in (None, info.channels):
            raise ValueError(
                f"{dataset} has {info.channels} channel(s); leave data.channels unset (got {channels})."
            )
        if batch_size < 1 or (val_batch_size is not None and val_batch_size < 1):
            raise ValueError(
                f"data.batch_size and data.val_batch_size must be >= 1, got {batch_size}, {val_batch_size}."
            )
        if num_workers < 0:
            raise ValueError(f"data.num_workers must be >= 0, got {num_workers}.")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"data.val_fraction must lie strictly between 0 and 1, got {val_fraction}.")
        self.save_hyperparameters(logger=False)  # saved in checkpoints; the run config already holds them
        self.dataset = dataset
        self.root = root
        self.download = download
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.random_flip = info.flip if random_flip is None else random_flip
        self.dequantize = dequantize
        self.dequantize_val = dequantize_val
        self.val_fraction = val_fraction
        self.seed = seed
        self.image_column = image_column
        self._channels = channels or info.channels  # None only for a folder or hf: without channels
        self._image_size = image_size or info.size  # None only for a folder or hf: without image_size
        self._headers: list[ImageHeader] | None = None
        self._hf_splits: tuple[HFImages, HFImages] | None = None
        self._train_base: Dataset | None = None
        self._val_base: Dataset | None = None
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None

    # ------------------------------------------------------------------ shapes
    @property
    def channels(self) -> int:
        """Number of image channels C.

        For a folder or ``hf:`` data set without ``channels``: 1 when every image is grey, else 3 (from the headers;
        recorded in ``hparams``, so a checkpoint's DataModule has its shape without the files).
        """
        if self._channels is None:
            self._channels = self.hparams["channels"] = max(header.channels for header in self._image_headers())
        return self._channels

    @property
    def image_size(self) -> int:
        """Height and width of the images.

        For a folder or ``hf:`` data set without ``image_size`` this is the first image's shorter side (recorded in
        ``hparams``, as ``channels``).
        """
        if self._image_size is None:
            self._image_size = self.hparams["image_size"] = min(self._image_headers()[0].size)
        return self._image_size

    @property
    def data_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image, as the network expects it (known before any data is read)."""
        return (self.channels, self.image_size, self.image_size)

    # ------------------------------------------------------------------ Lightning hooks
    def prepare_data(self) -> None:
        """Download the data set if ``download`` is true and it is missing (once per node, before setup)."""
        if self.download and self.dataset in BUILTIN_DOWNLOADS and missing_files(self.dataset, self.root):
            download(self.dataset, self.root)

    def check_files(self) -> None:
        """:meth:`prepare_data` and :meth:`setup`: the CLI calls it before a fit makes its run folder (once per node),
        so that a failed download, or missing, corrupt or unusable files, stop the run before anything is made."""
        self.prepare_data()
        self.setup("fit")

    def setup(self, stage: str | None = None) -> None:
        """Build the train and val/test data sets (idempotent; both splits whatever the stage)."""
        if self._train_base is not None:
            return
        train_base, val_base = self._load_bases()
        transform = self._transform()
        self._train_base, self._val_base = train_base, val_base
        self.train_set = _ImagesOnly(train_base, transform)
        self.val_set = _ImagesOnly(val_base, transform, dequantize_seed=self.seed if self.dequantize_val else None)

    def augment(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Flip (``random_flip``) and dequantize (``dequantize``) a training batch ``(B, C, H, W)``, drawing from
        ``generator``."""
        if self.random_flip:
            flip = torch.rand(x.shape[0], device=x.device, generator=generator) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        return dequantize(x, generator=generator) if self.dequantize else x

    def on_after_batch_transfer(self, batch: torch.Tensor, dataloader_idx: int) -> torch.Tensor:
        trainer = self.trainer
        if trainer is None or not trainer.training or not (self.random_flip or self.dequantize):
            return batch
        seed = step_seed(self.seed, 2, trainer.global_step, trainer.global_rank)
        return self.augment(batch, torch.Generator(device=batch.device).manual_seed(seed))

    def train_dataloader(self) -> DataLoader:
        self.setup("fit")
        return self._loader(self.train_set, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        self.setup("validate")
        return self._loader(self.val_set, self.val_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        self.setup("test")
        return self._loader(self.val_set, self.val_batch_size, shuffle=False)

    # ------------------------------------------------------------------ whole splits
    def image_dataset(self, split: str = "train") -> Dataset:
        """The images of a split as a data set, without flips or dequantization: item ``i`` is a float tensor
        ``(C, H, W)`` in [0, 1], read from disk when it is asked for.

        What the real-image statistics of FID stream through the feature extractor (each process its own share,
        a batch at a time), so their memory does not grow with the data set. The order is the data set's own.

        Args:
            split: ``"train"`` or ``"val"`` (the test split for the built-in sets).
        """
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}.")
        self.setup()
        return _ImagesOnly(self._train_base if split == "train" else self._val_base, self._transform())

    def train_data(self, max_items: int | None = None) -> torch.Tensor:
        """The first ``max_items`` training images (all if None) without flips or dequantization, stacked.

        For statistics of the data that need them all at once: NCSNv2's ``sigma_max`` (the largest pairwise
        distance, Technique 1). The order is the data set's own, so the result is deterministic. (FID streams
        :meth:`image_dataset` instead.)

        Returns:
            A float tensor ``(N, C, H, W)`` with values in [0, 1].
        """
        return self._stack(self.image_dataset("train"), max_items)

    def val_data(self, max_items: int | None = None) -> torch.Tensor:
        """The first ``max_items`` validation/test images (all if None), without dequantization, stacked.

        Returns:
            A float tensor ``(N, C, H, W)`` with values in [0, 1].
        """
        return self._stack(self.image_dataset("val"), max_items)

    # ------------------------------------------------------------------ internals
    def _transform(self) -> Callable | None:
        """The deterministic part: decode, crop, resize, to a tensor in [0, 1] (the digits are tensors already)."""
        if self.dataset == "digits":
            return None
        info = _info(self.dataset)
        own_images = info.channels is None  # a folder or hf: data set, images of any mode and size
        return image_transform(
            self.image_size,
            native_size=info.size if self.dataset != "celeba" else None,
            center_crop=140 if self.dataset == "celeba" else None,
            square_crop=own_images,
            channels=self.channels if own_images else None,
        )

    def _loader(self, dataset: Dataset | None, batch_size: int, shuffle: bool) -> DataLoader:
        num_workers = self.num_workers
        if self.trainer is not None and self.trainer.fast_dev_run:  # a smoke run: smoke-size batches, no workers
            batch_size, num_workers = min(batch_size, FAST_DEV_RUN_BATCH), 0
        return (ResumableLoader if shuffle else DataLoader)(
            dataset,
            batch_size=batch_size,
            sampler=EpochShuffleSampler(dataset, self.seed) if shuffle else None,
            num_workers=num_workers,
            pin_memory=self._pin_memory(),
            persistent_workers=num_workers > 0,
        )

    def _pin_memory(self) -> bool:
        if self.pin_memory is not None:
            return self.pin_memory
        if self.trainer is not None:
            return self.trainer.strategy.root_device.type == "cuda"
        return torch.cuda.is_available()

    def _stack(self, dataset: Dataset, max_images: int | None) -> torch.Tensor:
        n = len(dataset) if max_images is None else min(max_images, len(dataset))
        if n <= 0:
            return torch.empty(0, *self.data_shape)
        subset = torch.utils.data.Subset(dataset, range(n))
        loader = DataLoader(subset, batch_size=max(self.val_batch_size, 256), num_workers=self.num_workers)
        return torch.cat(list(loader))

    def _load_bases(self) -> tuple[Dataset, Dataset]:
        """The raw train and val data sets (items: PIL images or tensors, possibly with labels)."""
        if self.dataset == "digits":
            images = load_digits_images(self.image_size)
            train_idx, val_idx = _split(len(images), self.val_fraction, self.seed)
            return images[train_idx], images[val_idx]
        if self.dataset == "folder":
            files = [header.source for header in self._image_headers()]  # every header checked: before training
            if len(files) < 2:
                raise ValueError(
                    f"Found only {len(files)} image under {self.root!r}; a folder needs at least 2 images "
                    "(one is held out for validation). Add images or choose another data.dataset."
                )
            train_idx, val_idx = _split(len(files), self.val_fraction, self.seed)
            # decoded as they are; the transform converts them by their bit depth
            return (
                ImageFiles([files[i] for i in train_idx], channels=None),
                ImageFiles([files[i] for i in val_idx], channels=None),
            )
        if hf_name(self.dataset) is not None:
            self._image_headers()
            return self._hf()
        missing = missing_files(self.dataset, self.root)
        if missing and self.download:
            self.prepare_data()  # used without a Trainer: prepare_data() was not called
            missing = missing_files(self.dataset, self.root)
        if missing:
            raise FileNotFoundError(missing_message(self.dataset, self.root, missing))
        return load_builtin(self.dataset, self.root, "train"), load_builtin(self.dataset, self.root, "val")

    def _hf(self) -> tuple[HFImages, HFImages]:
        """The train and val images of an ``hf:`` data set (loaded once)."""
        if self._hf_splits is None:
            name = hf_name(self.dataset)
            rows = partial(_split, val_fraction=self.val_fraction, seed=self.seed)
            self._hf_splits = load_hf_splits(name, self.image_column, rows)
        return self._hf_splits

    def _image_headers(self) -> list[ImageHeader]:
        """The header of every image of a folder or ``hf:`` data set, read once; one line names any that cannot be
        used (:func:`~ncsn_pl.data.image_decoding.check_headers`)."""
        if self._headers is None:
            if self.dataset == "folder":
                self._headers = read_headers(find_images(self.root))
            else:
                train, val = self._hf()
                self._headers = hf_headers(train) + hf_headers(val)
        return self._headers


class _ImagesOnly(Dataset):
    """Items of ``base`` without their labels, passed through ``transform``; read errors name the file. With
    ``dequantize_seed``, image ``i`` is dequantized with noise seeded by ``(dequantize_seed, i)``: fixed per image."""

    def __init__(self, base: Any, transform: Callable | None, dequantize_seed: int | None = None) -> None:
        self.base = base
        self.transform = transform
        self.dequantize_seed = dequantize_seed

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> torch.Tensor:
        try:
            item = self.base[index]
            item = item[0] if isinstance(item, tuple) else item
            # PIL decodes lazily: a truncated file fails inside the transform
            x = self.transform(item) if self.transform is not None else item
        except (OSError, SyntaxError) as err:
            raise RuntimeError(
                f"Cannot read image {index} ({_describe_item(self.base, index)}): "
                f"{type(err).__name__}: {err}. The file is missing, truncated or corrupt; "
                "replace it or re-download the data set."
            ) from err
        if self.dequantize_seed is not None:
            x = dequantize(x, generator=torch.Generator().manual_seed(step_seed(self.dequantize_seed, 3, index)))
        return x


def _describe_item(base: Any, index: int) -> str:
    if callable(getattr(base, "describe", None)):  # HFImages
        return base.describe(index)
    if hasattr(base, "filename") and hasattr(base, "base_folder"):  # torchvision CelebA
        return os.path.join(base.root, base.base_folder, "img_align_celeba", base.filename[index])
    if hasattr(base, "files"):
        return str(base.files[index])
    return type(base).__name__


def _info(dataset: str) -> DatasetInfo:
    return DATASET_INFO["hf" if hf_name(dataset) is not None else dataset]


def _split(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted train and val indices: a seeded random ``val_fraction`` (at least one, at most n-1) is val."""
    num_val = min(max(1, round(val_fraction * n)), n - 1)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[num_val:].sort().values, perm[:num_val].sort().values
