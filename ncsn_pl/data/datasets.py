"""The data sets on disk: where MNIST, CIFAR-10 and CelebA live, how to check, read and download them, and the
bundled scikit-learn digits.

Layout checks name every missing or corrupt file and say how to get it; a download goes into a temporary folder
inside the root and is moved into place only when it has succeeded.
"""

from __future__ import annotations

import os
import pickle
import shutil
import struct
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

__all__ = [
    "BUILTIN_DOWNLOADS",
    "DATASETS",
    "DATASET_INFO",
    "DatasetInfo",
    "download",
    "load_builtin",
    "load_digits_images",
    "missing_files",
    "missing_message",
]

DATASETS: tuple[str, ...] = ("mnist", "cifar10", "celeba", "digits", "folder")
BUILTIN_DOWNLOADS = ("mnist", "cifar10", "celeba")


@dataclass(frozen=True)
class DatasetInfo:
    """What the DataModule needs to know of a data set before reading it."""

    channels: int
    size: int | None  # native (or default) square size; None: read from the first image
    flip: bool  # the papers' default for random_flip


DATASET_INFO: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(channels=1, size=28, flip=False),  # NCSN v1 anneal.yml
    "cifar10": DatasetInfo(channels=3, size=32, flip=True),  # NCSN v1 and v2 cifar10.yml
    "celeba": DatasetInfo(channels=3, size=32, flip=True),  # v1: 32 (crop 140); v2 celeba.yml: 64
    "digits": DatasetInfo(channels=1, size=8, flip=False),  # digits are not mirror-symmetric
    "folder": DatasetInfo(channels=3, size=None, flip=True),  # as NCSNv2's LSUN/FFHQ pipelines
}

_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_CIFAR_FILES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch")
_CELEBA_FILES = (
    "list_attr_celeba.txt",
    "identity_CelebA.txt",
    "list_bbox_celeba.txt",
    "list_landmarks_align_celeba.txt",
    "list_eval_partition.txt",
)
_SOURCES = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/ (mirror: http://yann.lecun.com/exdb/mnist/); "
        "unpack the four .gz files"
    ),
    "cifar10": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz; unpack it into the root",
    "celeba": (
        "Google Drive (torchvision.datasets.CelebA.file_list; downloading needs `pip install gdown`), see "
        "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html; unpack img_align_celeba.zip"
    ),
}


def load_digits_images(image_size: int) -> torch.Tensor:
    """scikit-learn's 1797 8x8 digits (levels 0..16) as ``(1797, 1, s, s)`` floats in [0, 1]."""
    from sklearn.datasets import load_digits

    images = torch.as_tensor(load_digits().images, dtype=torch.float32).div(16.0).unsqueeze(1)
    if image_size != images.shape[-1]:
        images = torch.nn.functional.interpolate(
            images, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True
        ).clamp(0.0, 1.0)
    return images


# ---------------------------------------------------------------------- torchvision sets on disk
def _expected_files(dataset: str, root: str | Path) -> list[Path]:
    root = Path(root)
    if dataset == "mnist":
        return [root / "MNIST" / "raw" / name for name in _MNIST_FILES]
    if dataset == "cifar10":
        return [root / "cifar-10-batches-py" / name for name in (*_CIFAR_FILES, "batches.meta")]
    return [root / "celeba" / name for name in _CELEBA_FILES] + [root / "celeba" / "img_align_celeba"]


def missing_files(dataset: str, root: str | Path) -> list[Path]:
    """The expected files (or, for CelebA's images, the directory) that are not on disk."""
    if dataset == "mnist":
        processed = Path(root) / "MNIST" / "processed"
        if (processed / "training.pt").is_file() and (processed / "test.pt").is_file():
            return []  # torchvision's legacy layout
    return [
        p
        for p in _expected_files(dataset, root)
        if not (p.is_dir() if p.name == "img_align_celeba" else p.is_file())
    ]


def _layout(dataset: str, root: str | Path) -> str:
    """The expected files, one indented line each."""
    return "\n".join(
        f"  {p}" + ("/*.jpg" if p.name == "img_align_celeba" else "") for p in _expected_files(dataset, root)
    )


def missing_message(dataset: str, root: str | Path, missing: Sequence[Path]) -> str:
    all_missing = len(missing) == len(_expected_files(dataset, root))
    return (
        f"Data set {dataset!r} not found under data.root={str(root)!r}. Expected this layout:\n"
        f"{_layout(dataset, root)}\n"
        f"Missing: {'all of it' if all_missing else ', '.join(str(p) for p in missing)}.\n"
        f"Set data.download=true to fetch it (needs network access), point data.root at the directory that "
        f"holds it, or place the files there by hand (source: {_SOURCES[dataset]})."
    )


def load_builtin(dataset: str, root: str, split: str) -> Dataset:
    """The torchvision data set of ``split`` ("train" or "val"), untransformed; clear errors when corrupt."""
    from torchvision import datasets

    try:
        if dataset == "mnist":
            return datasets.MNIST(root, train=split == "train", download=False)
        if dataset == "cifar10":
            return datasets.CIFAR10(root, train=split == "train", download=False)
        celeba = datasets.CelebA(
            root, split="train" if split == "train" else "test", target_type=[], download=False
        )
    except Exception as err:  # noqa: BLE001 - re-raised with the file that caused it
        raise RuntimeError(_corrupt_message(dataset, root, err)) from err
    if len(celeba) == 0:
        raise RuntimeError(
            f"CelebA split {split!r} under {root!r} is empty: list_eval_partition.txt lists no image for it."
        )
    return celeba


def _corrupt_message(dataset: str, root: str, err: Exception) -> str:
    bad = _find_corrupt_files(dataset, root)
    where = (
        f"Corrupt or unexpected file(s): {', '.join(bad)}"
        if bad
        else (f"Could not read the files of {dataset!r} under {root!r}")
    )
    return (
        f"{where} ({type(err).__name__}: {err}). Delete the file(s) and set data.download=true to fetch them "
        f"again, or replace them by hand (source: {_SOURCES[dataset]})."
    )


def _find_corrupt_files(dataset: str, root: str) -> list[str]:
    """Best-effort diagnosis of which file failed: bad IDX sizes, unreadable pickles, or md5 mismatches."""
    from torchvision.datasets import CIFAR10, CelebA
    from torchvision.datasets.utils import check_integrity

    if dataset == "mnist":
        return [f"{p} ({problem})" for p in _expected_files(dataset, root) if (problem := _idx_problem(p))]
    bad: list[str] = []
    if dataset == "cifar10":
        md5s = dict(CIFAR10.train_list + CIFAR10.test_list)
        md5s[CIFAR10.meta["filename"]] = CIFAR10.meta["md5"]
        for path in _expected_files(dataset, root):
            try:
                with open(path, "rb") as f:
                    pickle.load(f, encoding="latin1")
            except Exception as err:  # noqa: BLE001 - any unpickling failure means a bad file
                bad.append(f"{path} (not a readable pickle: {type(err).__name__})")
                continue
            if not check_integrity(str(path), md5s[path.name]):
                bad.append(f"{path} (md5 differs from the official file)")
        return bad
    for _, md5, name in CelebA.file_list:
        path = Path(root) / "celeba" / name
        if path.suffix == ".txt" and not check_integrity(str(path), md5):
            bad.append(f"{path} (md5 differs from the official file)")
    return bad


def _idx_problem(path: Path) -> str | None:
    """Why an uncompressed IDX file (MNIST) is malformed, or None if its header and size agree."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 4:
        return f"{len(data)} bytes, shorter than an IDX header"
    (magic,) = struct.unpack(">I", data[:4])
    ndim, dtype = magic % 256, magic // 256
    if dtype != 8 or ndim not in (1, 3):
        return f"magic number {magic}, expected 2049 (labels) or 2051 (images)"
    if len(data) < 4 + 4 * ndim:
        return "truncated header"
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    expected = 4 + 4 * ndim + int(torch.tensor(dims).prod())
    if len(data) != expected:
        return f"{len(data)} bytes, the header {dims} needs {expected}"
    return None


def download(dataset: str, root: str) -> None:
    """Download with torchvision into a temporary folder in ``root``; move the files into place on success."""
    from torchvision import datasets

    root_path = Path(root)
    root_path.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=root_path))
    folder = {"mnist": "MNIST", "cifar10": "cifar-10-batches-py", "celeba": "celeba"}[dataset]
    try:
        try:
            if dataset == "mnist":
                datasets.MNIST(tmp, train=True, download=True)
            elif dataset == "cifar10":
                datasets.CIFAR10(tmp, train=True, download=True)
            else:
                datasets.CelebA(tmp, split="all", target_type=[], download=True)
        except Exception as err:  # noqa: BLE001 - any failure (network, gdown missing, checksum) is reported
            raise RuntimeError(
                f"Downloading {dataset!r} into {str(root_path)!r} failed: {type(err).__name__}: {err}\n"
                f"Check the network connection to the source ({_SOURCES[dataset]}), "
                f"or place the files by hand in this layout:\n{_layout(dataset, root)}\n"
                "and keep data.download=false. The partial download was deleted; no files were left in "
                "data.root."
            ) from err
        _move_tree(tmp / folder, root_path / folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _move_tree(src: Path, dst: Path) -> None:
    """Move every file of ``src`` into ``dst`` (same file system), dropping downloaded archives."""
    for path in sorted(src.rglob("*")):
        if path.is_dir() or path.name.endswith((".gz", ".zip", ".tar", ".tgz")):
            continue
        target = dst / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
