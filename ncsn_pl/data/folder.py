"""A data set of the images found anywhere under a directory, without labels."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

__all__ = ["IMAGE_EXTENSIONS", "ImageFiles", "find_images", "read_image"]

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def find_images(root: str | Path) -> list[Path]:
    """All image files under ``root`` (recursively), sorted by path so the order is the same on every machine.

    Args:
        root: a directory.

    Returns:
        The paths whose suffix (any case) is one of :data:`IMAGE_EXTENSIONS`.

    Raises:
        FileNotFoundError: ``root`` is not a directory.
        ValueError: no image file was found under ``root``.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"Image folder {str(root)!r} does not exist or is not a directory. Set data.root to a directory "
            f"that holds images ({', '.join(IMAGE_EXTENSIONS)}), in any sub-folders."
        )
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        raise ValueError(
            f"No images found under {str(root)!r} (looked recursively for {', '.join(IMAGE_EXTENSIONS)}). "
            "Set data.root to a directory of images, or choose a built-in data.dataset."
        )
    return files


def read_image(path: str | Path, mode: str | None = None) -> Image.Image:
    """Open and fully decode one image, optionally converted to ``mode`` ("RGB" or "L").

    Raises:
        RuntimeError: the file cannot be decoded; the message names the file.
    """
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert(mode) if mode is not None else image.copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise RuntimeError(
            f"Cannot read image file {str(path)!r} ({type(err).__name__}: {err}). "
            "The file is corrupt or not an image; delete or replace it."
        ) from err


class ImageFiles(Dataset):
    """Images from a list of files, each read with :func:`read_image` (and passed through ``transform``).

    Args:
        files: image paths.
        mode: PIL mode every image is converted to ("RGB" or "L"), or None to keep each file's own.
        transform: optional map from a PIL image to a tensor; without it items are PIL images.
    """

    def __init__(
        self, files: Sequence[str | Path], mode: str | None = "RGB", transform: Callable | None = None
    ) -> None:
        self.files = [Path(f) for f in files]
        self.mode = mode
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Image.Image | torch.Tensor:
        image = read_image(self.files[index], self.mode)
        return self.transform(image) if self.transform is not None else image
