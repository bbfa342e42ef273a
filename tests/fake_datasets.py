"""Tiny synthetic copies of MNIST, Fashion-MNIST, CIFAR-10 and CelebA in the exact on-disk layouts torchvision reads.

No network access: the files are written from a seeded generator. Use them in any test::

    from fake_datasets import write_fake_cifar10, skip_md5_checks

    root = write_fake_cifar10(tmp_path)
    with skip_md5_checks():          # CIFAR-10 and CelebA verify md5 sums of the real files
        dm = ImageDataModule("cifar10", root=str(root)); dm.setup()

or the pytest fixtures ``fake_data_root`` (all three sets in one session-wide directory; do not modify it)
and ``no_md5_check`` (patches the checks for the test), imported into a test module or conftest.

The images are random but smooth (a colour gradient plus noise), so they are asymmetric (a flip changes
them) and small as JPEG. The patch of the md5 checks lives in this process only; DataLoader workers forked
from it inherit it, spawned processes (``ddp_spawn``, ``num_workers`` with spawn) do not.
"""

from __future__ import annotations

import contextlib
import gzip
import pickle
import struct
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from PIL import Image

__all__ = [
    "fake_data_root",
    "no_md5_check",
    "skip_md5_checks",
    "write_fake_celeba",
    "write_fake_cifar10",
    "write_fake_fashion_mnist",
    "write_fake_mnist",
    "write_images",
]

CELEBA_ATTRIBUTES = ["5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive"]  # the real file has 40


def _smooth_images(rng: np.random.Generator, n: int, height: int, width: int, channels: int) -> np.ndarray:
    """uint8 images ``(n, height, width, channels)``: a random linear gradient per channel plus noise."""
    yy, xx = np.meshgrid(np.linspace(0, 1, height), np.linspace(0, 1, width), indexing="ij")
    slopes = rng.uniform(-1, 1, size=(n, 1, 1, channels, 2))
    base = rng.uniform(0.3, 0.7, size=(n, 1, 1, channels))
    images = base + 0.3 * (slopes[..., 0] * xx[None, :, :, None] + slopes[..., 1] * yy[None, :, :, None])
    images = images + rng.normal(0, 0.05, size=images.shape)
    return (np.clip(images, 0, 1) * 255).round().astype(np.uint8)


def write_fake_mnist(root: str | Path, n_train: int = 20, n_test: int = 10, seed: int = 0) -> Path:
    """Write ``<root>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`` (uncompressed IDX).

    Images: header ``>IIII`` = (2051, n, 28, 28) then uint8 pixels; labels: ``>II`` = (2049, n) then uint8.
    torchvision's MNIST checks no md5, so these load as they are.

    Returns:
        ``root``, the directory to pass as ``ImageDataModule(root=...)``.
    """
    root = Path(root)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = _smooth_images(rng, n, 28, 28, 1)[..., 0]
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(
            struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes()
        )
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) + labels.tobytes())
    return root


def write_fake_fashion_mnist(
    folder: str | Path, n_train: int = 20, n_test: int = 10, seed: int = 0, gz: bool = False
) -> dict[str, np.ndarray]:
    """Write Fashion-MNIST's four IDX files into ``folder`` itself (``<root>/FashionMNIST/raw`` as torchvision
    lays it out, or a stand-in for the system package's folder), gzipped with ``gz`` as Debian ships them.

    Returns:
        The arrays written: ``train_images``, ``train_labels``, ``t10k_images``, ``t10k_labels`` (uint8).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = _smooth_images(rng, n, 28, 28, 1)[..., 0]
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        arrays[f"{prefix}_images"], arrays[f"{prefix}_labels"] = images, labels
        files = {
            f"{prefix}-images-idx3-ubyte": struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes(),
            f"{prefix}-labels-idx1-ubyte": struct.pack(">II", 2049, n) + labels.tobytes(),
        }
        for name, data in files.items():
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (folder / name).write_bytes(data)
    return arrays


def write_fake_cifar10(root: str | Path, n_train: int = 20, n_test: int = 6, seed: int = 0) -> Path:
    """Write ``<root>/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}`` as CIFAR's pickles.

    Each batch is ``{"data": uint8 (n, 3072) as R, G, B planes of 32x32, "labels": [...], ...}``; the
    ``n_train`` training images are spread over the five batches (each gets at least one, so
    ``n_train >= 5``). The md5 sums differ from the real files: load them inside :func:`skip_md5_checks`.

    Returns:
        ``root``.
    """
    if n_train < 5:
        raise ValueError("write_fake_cifar10 needs n_train >= 5 (one image per training batch file).")
    root = Path(root)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    counts = [len(part) for part in np.array_split(np.arange(n_train), 5)] + [n_test]
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name, n in zip(names, counts, strict=True):
        planes = _smooth_images(rng, n, 32, 32, 3).transpose(0, 3, 1, 2).reshape(n, 3072)
        entry = {
            "batch_label": name,
            "labels": rng.integers(0, 10, size=n).tolist(),
            "data": planes,
            "filenames": [f"{name}_{i}.png" for i in range(n)],
        }
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f)
    meta = {"num_cases_per_batch": 10000, "label_names": [f"class{i}" for i in range(10)], "num_vis": 3072}
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump(meta, f)
    return root


def write_fake_celeba(
    root: str | Path, n_train: int = 4, n_valid: int = 2, n_test: int = 3, seed: int = 0
) -> Path:
    """Write ``<root>/celeba/`` with aligned 178x218 JPEGs and the five annotation text files.

    ``list_eval_partition.txt`` assigns the first ``n_train`` images to split 0 (train), the next ``n_valid``
    to 1 (valid) and the last ``n_test`` to 2 (test). Each split needs at least 2 images (torchvision fails on
    a split of exactly one). The md5 sums differ from the real files: load them inside
    :func:`skip_md5_checks`.

    Returns:
        ``root``.
    """
    if min(n_train, n_valid, n_test) < 2:
        raise ValueError("write_fake_celeba needs at least 2 images per split (torchvision fails on one).")
    root = Path(root)
    folder = root / "celeba"
    (folder / "img_align_celeba").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n = n_train + n_valid + n_test
    names = [f"{i:06d}.jpg" for i in range(1, n + 1)]
    for name, pixels in zip(names, _smooth_images(rng, n, 218, 178, 3), strict=True):
        Image.fromarray(pixels).save(folder / "img_align_celeba" / name, quality=95)
    splits = [0] * n_train + [1] * n_valid + [2] * n_test
    (folder / "list_eval_partition.txt").write_text(
        "".join(f"{a} {s}\n" for a, s in zip(names, splits, strict=True))
    )
    (folder / "identity_CelebA.txt").write_text("".join(f"{a} {i + 1}\n" for i, a in enumerate(names)))
    attr_rows = "".join(
        f"{a} " + " ".join(str(v) for v in rng.choice([-1, 1], size=len(CELEBA_ATTRIBUTES))) + "\n"
        for a in names
    )
    (folder / "list_attr_celeba.txt").write_text(f"{n}\n{' '.join(CELEBA_ATTRIBUTES)}\n{attr_rows}")
    (folder / "list_bbox_celeba.txt").write_text(
        f"{n}\nimage_id x_1 y_1 width height\n" + "".join(f"{a} 95 71 226 313\n" for a in names)
    )
    landmark_header = " ".join(
        f"{part}_{axis}"
        for part in ("lefteye", "righteye", "nose", "leftmouth", "rightmouth")
        for axis in "xy"
    )
    (folder / "list_landmarks_align_celeba.txt").write_text(
        f"{n}\n{landmark_header}\n" + "".join(f"{a} 69 109 106 113 77 142 73 152 108 154\n" for a in names)
    )
    return root


def write_images(
    folder: str | Path,
    n: int = 6,
    size: tuple[int, int] = (40, 30),
    suffix: str = ".png",
    seed: int = 0,
    mode: str = "RGB",
) -> list[Path]:
    """Write ``n`` smooth random images of ``size`` = (width, height) into ``folder`` (created if needed).

    Returns:
        The written paths, sorted.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    width, height = size
    paths = []
    for i, pixels in enumerate(_smooth_images(rng, n, height, width, 3)):
        image = Image.fromarray(pixels).convert(mode)
        path = folder / f"img_{i:04d}{suffix}"
        image.save(path)
        paths.append(path)
    return sorted(paths)


@contextlib.contextmanager
def skip_md5_checks() -> Iterator[None]:
    """Make torchvision's CIFAR-10 and CelebA accept files whose md5 differs from the official ones.

    Patches ``CIFAR10._check_integrity`` and ``torchvision.datasets.cifar.check_integrity`` (used for
    ``batches.meta``), and ``CelebA._check_integrity``, to return True. File existence is not checked by
    the patches; ncsn-pl's DataModule checks the layout itself before it calls torchvision.
    """
    from torchvision.datasets import CIFAR10, CelebA

    with (
        mock.patch.object(CIFAR10, "_check_integrity", return_value=True),
        mock.patch("torchvision.datasets.cifar.check_integrity", return_value=True),
        mock.patch.object(CelebA, "_check_integrity", return_value=True),
    ):
        yield


@pytest.fixture(scope="session")
def fake_data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One read-only directory with the default fake MNIST, CIFAR-10 and CelebA (written once per session)."""
    root = tmp_path_factory.mktemp("fake_data")
    write_fake_mnist(root)
    write_fake_cifar10(root)
    write_fake_celeba(root)
    return root


@pytest.fixture
def no_md5_check() -> Iterator[None]:
    """:func:`skip_md5_checks` for the duration of one test."""
    with skip_md5_checks():
        yield
