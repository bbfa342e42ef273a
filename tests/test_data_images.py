"""ImageDataModule on fake MNIST/CIFAR-10/CelebA copies, scikit-learn's digits and folders of images."""

from __future__ import annotations

import pickle

import fake_datasets
import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from fake_datasets import write_images
from PIL import Image
from sklearn.datasets import load_digits

from ncsn_pl.data import ImageDataModule, dequantize

fake_data_root = fake_datasets.fake_data_root  # fixtures
no_md5_check = fake_datasets.no_md5_check


def _module(dataset: str, root, **kwargs) -> ImageDataModule:
    dm = ImageDataModule(dataset, root=str(root), **{"batch_size": 4, **kwargs})
    dm.setup("fit")
    return dm


# ---------------------------------------------------------------- shapes, ranges, splits
@pytest.mark.parametrize(
    ("dataset", "kwargs", "shape", "sizes"),
    [
        ("mnist", {}, (1, 28, 28), (20, 10)),
        ("cifar10", {}, (3, 32, 32), (20, 6)),
        ("celeba", {}, (3, 32, 32), (4, 3)),
        ("celeba", {"image_size": 64}, (3, 64, 64), (4, 3)),
        ("mnist", {"image_size": 32}, (1, 32, 32), (20, 10)),
    ],
)
def test_builtin_sets_load_with_shapes_ranges_and_splits(
    fake_data_root,
    no_md5_check,
    dataset,
    kwargs,
    shape,
    sizes,
):
    dm = ImageDataModule(dataset, root=str(fake_data_root), batch_size=4, **kwargs)
    assert dm.data_shape == shape  # known before any data is read
    assert (dm.channels, dm.image_size) == (shape[0], shape[1])
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set)) == sizes
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        batch = next(iter(loader))
        assert isinstance(batch, torch.Tensor)  # labels dropped
        assert batch.dtype == torch.float32 and batch.shape == (min(4, len(loader.dataset)), *shape)
        assert 0.0 <= batch.min() and batch.max() <= 1.0
        assert batch.std() > 0.05  # real image content, not a constant


def test_mnist_and_cifar_val_split_is_the_official_test_file(fake_data_root, no_md5_check):
    raw = fake_data_root / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    test_pixels = np.frombuffer(raw.read_bytes()[16:], dtype=np.uint8).reshape(-1, 1, 28, 28)
    torch.testing.assert_close(
        _module("mnist", fake_data_root).val_data(), torch.tensor(test_pixels) / 255.0
    )

    with open(fake_data_root / "cifar-10-batches-py" / "test_batch", "rb") as f:
        cifar_test = pickle.load(f)["data"].reshape(-1, 3, 32, 32)
    val = _module("cifar10", fake_data_root).val_data()
    torch.testing.assert_close(val, torch.tensor(cifar_test) / 255.0)


@pytest.mark.parametrize("size", [32, 64])
def test_celeba_is_center_crop_140_then_resize(fake_data_root, no_md5_check, size):
    dm = _module("celeba", fake_data_root, image_size=size)
    val = dm.val_data()  # CelebA "test" split: the last 3 files written
    assert val.shape == (3, 3, size, size)
    image = Image.open(fake_data_root / "celeba" / "img_align_celeba" / "000007.jpg").convert("RGB")
    assert image.size == (178, 218)
    left, top = (178 - 140) // 2, (218 - 140) // 2
    cropped = image.crop((left, top, left + 140, top + 140)).resize((size, size), Image.BILINEAR)
    expected = torch.tensor(np.asarray(cropped), dtype=torch.float32).permute(2, 0, 1) / 255.0
    assert (val[0] - expected).abs().max() <= 2.0 / 255.0  # PIL resampling vs torchvision's Resize
    # the crop matters: resizing the whole 178x218 image gives a different picture
    whole = image.resize((size, size), Image.BILINEAR)
    assert (val[0] - torch.tensor(np.asarray(whole)).permute(2, 0, 1) / 255.0).abs().max() > 0.05


# ---------------------------------------------------------------- augmentation
@pytest.mark.parametrize(("dataset", "flips"), [("cifar10", True), ("celeba", True), ("mnist", False)])
def test_flips_only_on_training_images(fake_data_root, no_md5_check, dataset, flips):
    generator = torch.Generator().manual_seed(0)
    dm = _module(dataset, fake_data_root)
    reference = dm.train_data(2)
    assert torch.equal(dm.train_set[1], reference[1])  # the items are clean: training batches are augmented
    seen_flipped = seen_plain = 0
    for _ in range(24):
        x = dm.augment(reference, generator)[1]
        plain, flipped = torch.equal(x, reference[1]), torch.equal(x, reference[1].flip(-1))
        assert plain or flipped
        seen_plain += plain
        seen_flipped += flipped and not plain
    assert seen_plain > 0 and (seen_flipped > 0) == flips
    val_reference = dm.val_data(1)[0]
    assert all(torch.equal(dm.val_set[0], val_reference) for _ in range(10))  # val: never flipped


def test_random_flip_can_be_turned_off(fake_data_root, no_md5_check):
    dm = _module("cifar10", fake_data_root, random_flip=False)
    reference = dm.train_data(4)
    generator = torch.Generator().manual_seed(0)
    assert all(torch.equal(dm.augment(reference, generator), reference) for _ in range(16))


def test_dequantization_is_uniform_within_each_8bit_bin(fake_data_root, no_md5_check):
    dm = _module("cifar10", fake_data_root, dequantize=True, random_flip=False)
    clean = dm.train_data()  # train_data never dequantizes
    assert torch.equal(clean * 255, (clean * 255).round())  # on the 1/255 grid
    x = dm.augment(clean, torch.Generator().manual_seed(0))
    assert 0.0 <= x.min() and x.max() < 1.0
    levels = (clean * 255).round()
    u = x * 256 - levels  # x = (k + u) / 256
    assert (u >= -1e-4).all() and (u < 1 + 1e-4).all()
    assert (u.frac() != 0).float().mean() > 0.99  # off the 1/256 grid
    assert abs(u.mean().item() - 0.5) < 0.01 and abs(u.var().item() - 1 / 12) < 0.005
    # validation stays clean unless asked for
    assert torch.equal(dm.val_set[0], dm.val_data(1)[0])
    dm_val = _module("cifar10", fake_data_root, dequantize_val=True)
    assert not torch.equal(dm_val.val_set[0], dm_val.val_data(1)[0])
    assert torch.equal(dm_val.val_set[0], dm_val.val_set[0])  # fixed noise per validation image
    assert not torch.equal(dm_val.val_set[0] - dm_val.val_data(2)[0], dm_val.val_set[1] - dm_val.val_data(2)[1])


def test_dequantize_function_maps_level_k_into_its_bin():
    k = torch.arange(256, dtype=torch.float32).repeat(50)
    out = dequantize(k / 255, generator=torch.Generator().manual_seed(0))
    assert (out >= k / 256).all() and (out < (k + 1) / 256).all() and out.max() < 1.0


# ---------------------------------------------------------------- digits
def test_digits_shapes_values_and_split():
    dm = _module("digits", "unused", batch_size=32)
    assert dm.data_shape == (1, 8, 8)
    assert (len(dm.train_set), len(dm.val_set)) == (1617, 180)
    all_digits = torch.tensor(load_digits().images, dtype=torch.float32).unsqueeze(1) / 16
    train, val = dm.train_data(), dm.val_data()
    assert train.shape == (1617, 1, 8, 8) and val.shape == (180, 1, 8, 8)
    # together the two splits are exactly the 1797 digits, with no overlap
    merged = torch.cat([train, val]).flatten(1).tolist()
    assert sorted(map(tuple, merged)) == sorted(map(tuple, all_digits.flatten(1).tolist()))
    assert torch.equal(dm.train_data(), _module("digits", "unused").train_data())  # deterministic
    other = _module("digits", "unused", seed=1).val_data()
    assert not torch.equal(other, val)
    batch = next(iter(dm.train_dataloader()))
    assert batch.shape == (32, 1, 8, 8) and batch.min() >= 0 and batch.max() <= 1


def test_digits_resize_and_val_fraction():
    dm = _module("digits", "unused", image_size=16, val_fraction=0.25)
    assert dm.data_shape == (1, 16, 16)
    assert (len(dm.train_set), len(dm.val_set)) == (1348, 449)
    x = dm.train_data(10)
    assert x.shape == (10, 1, 16, 16) and 0 <= x.min() and x.max() <= 1
    small = _module("digits", "unused", val_fraction=0.25).train_data(10)
    # a 2x bilinear upsampling keeps each image's mean intensity and, block-averaged, its picture
    torch.testing.assert_close(x.mean((1, 2, 3)), small.mean((1, 2, 3)), atol=0.01, rtol=0)
    pooled = torch.nn.functional.avg_pool2d(x, 2).flatten(1)
    correlation = torch.corrcoef(torch.cat([pooled, small.flatten(1)]))[:10, 10:].diagonal()
    assert (correlation > 0.95).all()


# ---------------------------------------------------------------- folders
def test_folder_of_images_recursive_rgb_and_grayscale(tmp_path):
    written = write_images(tmp_path / "a", n=5, size=(40, 30))
    written += write_images(tmp_path / "b" / "deeper", n=3, size=(40, 30), suffix=".jpg", seed=1)
    (tmp_path / "notes.txt").write_text("not an image")
    dm = ImageDataModule("folder", root=str(tmp_path), batch_size=4, val_fraction=0.25)
    assert dm.data_shape == (3, 30, 30)  # the first image's shorter side
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set)) == (6, 2)
    batch = next(iter(dm.train_dataloader()))
    assert batch.shape == (4, 3, 30, 30) and 0 <= batch.min() and batch.max() <= 1
    assert sorted(dm.train_set.base.files + dm.val_set.base.files) == sorted(written)  # each image once

    gray = ImageDataModule("folder", root=str(tmp_path), channels=1, image_size=16, val_fraction=0.25)
    assert gray.data_shape == (1, 16, 16)
    x = gray.train_data()
    assert x.shape == (6, 1, 16, 16)
    # the same images, converted to L: ITU-R 601 luma of the RGB version
    rgb = ImageDataModule("folder", root=str(tmp_path), image_size=16, val_fraction=0.25).train_data()
    luma = (rgb * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    assert (x - luma).abs().max() < 0.03


def test_folder_center_crop_of_a_wide_image(tmp_path):
    write_images(tmp_path, n=2, size=(60, 20))
    dm = ImageDataModule("folder", root=str(tmp_path), image_size=20)
    x = dm.train_data()[0]
    source = torch.tensor(
        np.asarray(Image.open(dm.train_set.base.files[0]).convert("RGB")), dtype=torch.float32
    )
    torch.testing.assert_close(x, source[:, 20:40].permute(2, 0, 1) / 255)  # the central 20x20 square


# ---------------------------------------------------------------- Lightning and the CLI
class _ShapeProbe(pl.LightningModule):
    def __init__(self, shape):
        super().__init__()
        self.shape = shape
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.seen: list[tuple[str, tuple]] = []

    def training_step(self, batch, batch_idx):
        assert isinstance(batch, torch.Tensor)
        self.seen.append(("train", tuple(batch.shape[1:])))
        return (self.weight - batch.mean()) ** 2

    def validation_step(self, batch, batch_idx):
        self.seen.append(("val", tuple(batch.shape[1:])))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_trainer_fit_gets_tensor_batches_of_data_shape():
    dm = ImageDataModule("digits", batch_size=64, image_size=12)
    model = _ShapeProbe(dm.data_shape)
    trainer = pl.Trainer(
        max_steps=3,
        limit_val_batches=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(model, datamodule=dm)
    assert ("train", (1, 12, 12)) in model.seen and ("val", (1, 12, 12)) in model.seen


def test_init_parameters_are_typed_and_documented_for_lightning_cli():
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_class_arguments(ImageDataModule, "data")
    help_text = parser.format_help()
    for name in ("--data.dataset", "--data.dequantize", "--data.val_fraction", "--data.random_flip"):
        assert name in help_text
    assert "uniform dequantization" in help_text.lower()
    cfg = parser.parse_args(["--data.dataset=mnist", "--data.image_size=32", "--data.dequantize=true"])
    assert cfg.data.image_size == 32 and cfg.data.dequantize is True
