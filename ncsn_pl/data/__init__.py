"""LightningDataModules and preprocessing for ncsn-pl.

Every DataModule yields plain float tensor batches (no labels) and exposes ``data_shape`` right after
``__init__``, plus ``train_data(max_items)`` / ``val_data(max_items)`` returning un-augmented tensors (for
NCSNv2's ``sigma_max`` and FID statistics): the contract :mod:`ncsn_pl.data.contract` declares for any DataModule.
"""

from ncsn_pl.data.datasets import DATASETS
from ncsn_pl.data.image_datamodule import ImageDataModule
from ncsn_pl.data.toy import ToyDataModule
from ncsn_pl.data.transforms import dequantize, image_transform

__all__ = [
    "DATASETS",
    "ImageDataModule",
    "ToyDataModule",
    "dequantize",
    "image_transform",
]
