"""Folders of one's own images: every bit depth and mode read to the right values (16-bit microscopy PNGs and TIFFs,
palette, RGBA, 1-bit), the channels taken from the files, and files that cannot be used named before training."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ncsn_pl.data import ImageDataModule
from ncsn_pl.data.image_decoding import image_tensor
from ncsn_pl.data.image_files import read_image
from ncsn_pl.sample_sets.scoring import read_images

# 64 levels spread over the whole 16-bit range, dark to bright: 0, 1040, ..., 65535
LEVELS16 = np.linspace(0, 65535, 64).round().astype(np.uint16).reshape(8, 8)


def write16(path: Path, pixels: np.ndarray, mode: str = "I;16") -> Path:
    """A 16-bit grey image file (PNG or TIFF, by the suffix), little- or big-endian in memory by ``mode``."""
    dtype = ">u2" if mode == "I;16B" else "<u2"
    Image.frombytes(mode, pixels.shape[::-1], pixels.astype(dtype).tobytes()).save(path)
    return path


def write_png_rgb16(path: Path, pixels: np.ndarray) -> Path:
    """A 16-bit RGB PNG ``(H, W, 3)`` uint16, written by hand (PIL writes no 16-bit colour): IHDR bit depth 16,
    colour type 2, filter 0 per row, big-endian samples."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    height, width, _ = pixels.shape
    rows = b"".join(b"\0" + pixels[y].astype(">u2").tobytes() for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
                     + chunk(b"IEND", b""))  # fmt: skip
    return path


def all_images(dm: ImageDataModule) -> torch.Tensor:
    """Every image of a folder DataModule, in file order (train and val merged back)."""
    dm.setup()
    files = dm.train_set.base.files + dm.val_set.base.files
    images = torch.cat([dm.train_data(), dm.val_data()])
    return images[sorted(range(len(files)), key=lambda i: files[i])]


# ---------------------------------------------------------------- 16-bit grey
@pytest.mark.parametrize(("suffix", "mode"), [(".png", "I;16"), (".tif", "I;16"), (".tif", "I;16B")])
def test_16bit_grey_images_are_scaled_by_their_bit_depth(tmp_path, suffix, mode):
    write16(tmp_path / f"a{suffix}", LEVELS16, mode)
    write16(tmp_path / f"b{suffix}", LEVELS16.T[::-1] // 16, mode)  # a 12-bit camera in a 16-bit file: dark
    dm = ImageDataModule("folder", root=str(tmp_path), val_fraction=0.5)
    assert dm.data_shape == (1, 8, 8)  # grey files: one channel
    x = all_images(dm)
    expected = torch.tensor(np.stack([LEVELS16, LEVELS16.T[::-1] // 16]) / 65535.0, dtype=torch.float32)
    torch.testing.assert_close(x[:, 0], expected, rtol=0, atol=1e-7)  # not all white: every level kept
    assert x[0].max() == 1.0 and x[0].min() == 0.0 and len(x[0].unique()) == 64
    assert x[1].max() == pytest.approx(4095 / 65535)

    rgb = all_images(ImageDataModule("folder", root=str(tmp_path), val_fraction=0.5, channels=3))
    assert rgb.shape == (2, 3, 8, 8)
    torch.testing.assert_close(rgb, expected[:, None].expand(-1, 3, -1, -1), rtol=0, atol=1e-7)


def test_16bit_grey_keeps_its_precision_through_resizing(tmp_path):
    ramp = np.tile(np.arange(16, dtype=np.uint16) * 3, (16, 1))  # 16 levels within a single 8-bit step (257)
    write16(tmp_path / "a.png", ramp)
    write16(tmp_path / "b.png", ramp[::-1])
    x = ImageDataModule("folder", root=str(tmp_path), image_size=8, val_fraction=0.5).train_data()
    assert x.shape[1:] == (1, 8, 8)
    assert len(x.unique()) == 8 and x.max() < 1 / 255  # 8 distinct levels, all below the first 8-bit level


def test_16bit_rgb_png_is_scaled_by_its_bit_depth(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 65536, (8, 8, 3)).astype(np.uint16)
    image = image_tensor(read_image(write_png_rgb16(tmp_path / "rgb16.png", pixels)), 3)
    expected = torch.tensor(pixels / 65535.0, dtype=torch.float32).permute(2, 0, 1)
    assert (image - expected).abs().max() < 1 / 255  # PIL keeps the high byte of each sample


# ---------------------------------------------------------------- 8-bit modes
def _rgb(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (8, 8, 3)).astype(np.uint8)


def _as_tensor(pixels: np.ndarray) -> torch.Tensor:
    return torch.tensor(pixels / 255.0, dtype=torch.float32).permute(2, 0, 1)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_8bit_modes_read_to_their_values(tmp_path, suffix):
    rgb = _rgb()
    grey = rgb[..., 0]
    alpha = np.random.default_rng(1).integers(0, 256, (8, 8, 1)).astype(np.uint8)
    palette = np.array([[255, 0, 0], [0, 128, 255], [10, 20, 30], [255, 255, 255]], dtype=np.uint8)
    indices = np.random.default_rng(2).integers(0, 4, (8, 8)).astype(np.uint8)
    p_image = Image.fromarray(indices, mode="L").convert("P")  # an identity palette, replaced below
    p_image.putpalette(palette.flatten().tolist())
    bits = np.random.default_rng(3).random((8, 8)) > 0.5
    files = {
        "L": (Image.fromarray(grey, mode="L"), np.repeat(grey[..., None], 3, -1)),
        "RGB": (Image.fromarray(rgb), rgb),
        "RGBA": (Image.fromarray(np.concatenate([rgb, alpha], -1), mode="RGBA"), rgb),  # alpha dropped
        "LA": (Image.fromarray(np.stack([grey, alpha[..., 0]], -1), mode="LA"), np.repeat(grey[..., None], 3, -1)),
        "P": (p_image, palette[indices]),  # the palette looked up
        "1": (Image.fromarray(bits), np.repeat((bits * 255).astype(np.uint8)[..., None], 3, -1)),
    }
    for mode, (image, expected) in files.items():
        if suffix == ".tif" and mode in ("P", "LA"):
            continue  # not written as TIFF by PIL in these modes
        path = tmp_path / f"{mode}{suffix}"
        image.save(path)
        with Image.open(path) as reread:
            assert reread.mode == mode
        torch.testing.assert_close(image_tensor(read_image(path), 3), _as_tensor(expected), rtol=0, atol=1e-7)
        luma = np.asarray(Image.fromarray(expected).convert("L"))[None] / 255.0
        torch.testing.assert_close(image_tensor(read_image(path), 1), torch.tensor(luma, dtype=torch.float32),
                                   rtol=0, atol=1e-7)  # fmt: skip


def test_channels_come_from_the_files(tmp_path):
    grey, rgb = tmp_path / "grey", tmp_path / "mixed"
    grey.mkdir()
    for i in range(3):
        Image.fromarray(_rgb(i)[..., 0], mode="L").save(grey / f"{i}.png")
    write16(grey / "deep.tif", LEVELS16)
    assert ImageDataModule("folder", root=str(grey)).data_shape == (1, 8, 8)
    rgb.mkdir()
    Image.fromarray(_rgb(0)[..., 0], mode="L").save(rgb / "0.png")
    Image.fromarray(_rgb(1)).save(rgb / "1.png")
    dm = ImageDataModule("folder", root=str(rgb), val_fraction=0.5)
    assert dm.data_shape == (3, 8, 8)  # one colour file: colour
    torch.testing.assert_close(all_images(dm)[0], _as_tensor(np.repeat(_rgb(0)[..., :1], 3, -1)))  # grey repeated


def test_the_shape_the_files_gave_is_recorded_so_a_checkpoint_needs_no_files(tmp_path):
    write16(tmp_path / "a.png", LEVELS16)
    write16(tmp_path / "b.png", LEVELS16)
    dm = ImageDataModule("folder", root=str(tmp_path))
    assert dm.data_shape == (1, 8, 8)
    assert (dm.hparams["channels"], dm.hparams["image_size"]) == (1, 8)  # what a checkpoint stores of the DataModule
    again = ImageDataModule(**{**dm.hparams, "root": str(tmp_path / "moved away")})
    assert again.data_shape == (1, 8, 8)  # sample / fid --ckpt_path on a machine without the images


# ---------------------------------------------------------------- files that cannot be used
@pytest.mark.parametrize(
    ("pixels", "reason"),
    [
        (np.full((8, 8), 0.5, dtype=np.float32), "floating-point"),
        (np.full((8, 8), -3, dtype=np.int32), "signed 32-bit integers"),
    ],
)
def test_pixels_without_a_range_are_refused_before_training_with_the_file_named(tmp_path, pixels, reason):
    write16(tmp_path / "ok.png", LEVELS16)
    write16(tmp_path / "ok2.png", LEVELS16)
    Image.fromarray(pixels).save(tmp_path / "odd.tif")
    dm = ImageDataModule("folder", root=str(tmp_path))
    with pytest.raises(ValueError, match=rf"^Cannot use image '[^']*odd\.tif': its pixels are {reason}") as error:
        dm.data_shape  # noqa: B018
    assert "\n" not in str(error.value)


# ---------------------------------------------------------------- fid --images reads the same way
def test_fid_reads_image_files_by_their_bit_depth(tmp_path):
    files = [write16(tmp_path / "a.png", LEVELS16), write16(tmp_path / "b.tif", LEVELS16.T)]
    images = read_images(files, channels=1)
    assert images.dtype == torch.uint8 and images.shape == (2, 1, 8, 8)
    expected = torch.tensor((np.stack([LEVELS16, LEVELS16.T]) / 65535 * 255 + 0.5).astype(np.uint8))
    torch.testing.assert_close(images[:, 0], expected, rtol=0, atol=0)  # save_image's rounding, not 255 everywhere
    assert read_images(files, channels=3).shape == (2, 3, 8, 8)
