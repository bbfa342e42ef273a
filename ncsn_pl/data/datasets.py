"""The data sets on disk: where MNIST, Fashion-MNIST, CIFAR-10 and CelebA live, how to check, read and download
them, and the bundled scikit-learn digits.

Layout checks name every missing or corrupt file and say how to get it; a download goes into a temporary folder
inside the root and is moved into place only when it has succeeded.
"""

from __future__ import annotations

import gzip
import os
import shutil
import struct
import tempfile
import zlib
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
    "DataFileError",
    "DownloadError",
    "IdxImages",
    "check_files",
    "SYSTEM_FASHION_MNIST",
    "download",
    "fashion_mnist_dir",
    "load_builtin",
    "load_digits_images",
    "missing_files",
    "missing_message",
]

DATASETS: tuple[str, ...] = ("mnist", "fashion_mnist", "cifar10", "celeba", "digits", "folder")
BUILTIN_DOWNLOADS = ("mnist", "fashion_mnist", "cifar10", "celeba")
# where Debian's package puts Fashion-MNIST (`apt-get install -y dataset-fashion-mnist`; gzipped IDX files)
SYSTEM_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
_FASHION_HINT = (
    "`apt-get install -y dataset-fashion-mnist` (Debian's package, read from /usr/share/datasets/fashion-mnist), "
    "or --data.init_args.download=true (needs network access)"
)



class DataFileError(ValueError):
    """A data file on disk is damaged or not what the data set expects (named, with what to do)."""


class DownloadError(OSError):
    """A data set could not be downloaded (no network, a moved source, a failed checksum)."""


@dataclass(frozen=True)
class DatasetInfo:
    """What the DataModule needs to know of a data set before reading it."""

    channels: int | None  # None: 1 when every image is grey, else 3
    size: int | None  # native (or default) square size; None: read from the first image
    flip: bool  # the papers' default for random_flip


DATASET_INFO: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(channels=1, size=28, flip=False),  # NCSN v1 anneal.yml
    "fashion_mnist": DatasetInfo(channels=1, size=28, flip=False),  # as MNIST; its shoes all point one way
    "cifar10": DatasetInfo(channels=3, size=32, flip=True),  # NCSN v1 and v2 cifar10.yml
    "celeba": DatasetInfo(channels=3, size=32, flip=True),  # v1: 32 (crop 140); v2 celeba.yml: 64
    "digits": DatasetInfo(channels=1, size=8, flip=False),  # digits are not mirror-symmetric
    "folder": DatasetInfo(channels=None, size=None, flip=True),  # as NCSNv2's LSUN/FFHQ pipelines
    "hf": DatasetInfo(channels=None, size=None, flip=True),  # hf:NAME, a Hugging Face data set: as a folder
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
    "fashion_mnist": _FASHION_HINT,
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
    if dataset in ("mnist", "fashion_mnist"):
        return [root / ("MNIST" if dataset == "mnist" else "FashionMNIST") / "raw" / name for name in _MNIST_FILES]
    if dataset == "cifar10":
        return [root / "cifar-10-batches-py" / name for name in (*_CIFAR_FILES, "batches.meta")]
    return [root / "celeba" / name for name in _CELEBA_FILES] + [root / "celeba" / "img_align_celeba"]


def _has_idx(folder: Path, name: str) -> bool:
    return (folder / name).is_file() or (folder / f"{name}.gz").is_file()


def _mnist_dir(root: str | Path) -> Path | None:
    """``<root>/MNIST/raw`` when it holds the four IDX files (plain or ``.gz``, as torchvision downloads them)."""
    folder = Path(root) / "MNIST" / "raw"
    return folder if all(_has_idx(folder, name) for name in _MNIST_FILES) else None


def fashion_mnist_dir(root: str | Path) -> Path | None:
    """The folder Fashion-MNIST is read from: ``<root>/FashionMNIST/raw`` when it holds the four IDX files (plain or
    ``.gz``), else the system package's :data:`SYSTEM_FASHION_MNIST` when it does, else None."""
    for folder in (Path(root) / "FashionMNIST" / "raw", SYSTEM_FASHION_MNIST):
        if all(_has_idx(folder, name) for name in _MNIST_FILES):
            return folder
    return None


def missing_files(dataset: str, root: str | Path) -> list[Path]:
    """The expected files (or, for CelebA's images, the directory) that are not on disk.

    Fashion-MNIST counts as present when the system package has it (:func:`fashion_mnist_dir`).
    """
    if dataset == "fashion_mnist":
        if fashion_mnist_dir(root) is not None:
            return []
        return [p for p in _expected_files(dataset, root) if not _has_idx(p.parent, p.name)]
    if dataset == "mnist":
        processed = Path(root) / "MNIST" / "processed"
        if (processed / "training.pt").is_file() and (processed / "test.pt").is_file():
            return []  # torchvision's legacy layout
        return [p for p in _expected_files(dataset, root) if not _has_idx(p.parent, p.name)]
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
    if dataset == "fashion_mnist":
        return (
            f"Fashion-MNIST not found: neither under data.root={str(root)!r} "
            f"({Path(root) / 'FashionMNIST' / 'raw'}/{{train,t10k}}-{{images-idx3,labels-idx1}}-ubyte[.gz]; missing: "
            f"{', '.join(p.name for p in missing)}) nor in {SYSTEM_FASHION_MNIST}. Get it with {_FASHION_HINT}."
        )
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
        if dataset == "mnist" and (folder := _mnist_dir(root)) is not None:
            return IdxImages(folder, "train" if split == "train" else "t10k")
        if dataset == "mnist":  # torchvision's legacy layout, MNIST/processed/{training,test}.pt
            return datasets.MNIST(root, train=split == "train", download=False)
        if dataset == "fashion_mnist":
            folder = fashion_mnist_dir(root)
            if folder is None:
                raise FileNotFoundError(missing_message(dataset, root, missing_files(dataset, root)))
            return IdxImages(folder, "train" if split == "train" else "t10k")
        if dataset == "cifar10":  # it checks every file's md5 before it unpickles any
            return datasets.CIFAR10(root, train=split == "train", download=False)
        celeba = datasets.CelebA(
            root, split="train" if split == "train" else "test", target_type=[], download=False
        )
    except FileNotFoundError:
        raise
    except Exception as err:  # noqa: BLE001 - re-raised with the file that caused it
        raise DataFileError(_corrupt_message(dataset, root, err)) from err
    if len(celeba) == 0:
        raise RuntimeError(
            f"CelebA split {split!r} under {root!r} is empty: list_eval_partition.txt lists no image for it."
        )
    return celeba


def _corrupt_message(dataset: str, root: str, err: Exception | None, bad: list[str] | None = None) -> str:
    """One message: the damaged files (or the loader's error ``err`` when none is found) and how to replace them."""
    bad = _find_corrupt_files(dataset, root) if bad is None else bad
    why = f" ({type(err).__name__}: {err})" if err is not None and not bad else ""
    where = (
        f"Corrupt or unexpected file(s): {', '.join(bad)}"
        if bad
        else f"Could not read the files of {dataset!r} under {root!r}"
    )
    if dataset == "fashion_mnist":
        if bad:
            return (
                f"{where}. Replace them: `apt-get install --reinstall -y dataset-fashion-mnist` (the system "
                "package's), or delete them and set --data.init_args.download=true (a copy under data.root)."
            )
        return f"{where}{why}."
    return (
        f"{where}{why}. Delete the file(s) and set data.download=true to fetch them "
        f"again, or replace them by hand (source: {_SOURCES[dataset]})."
    )


def check_files(dataset: str, root: str | Path) -> None:
    """Refuse damaged files of a built-in data set before anything runs (:class:`DataFileError`, one message naming
    each file); files that are missing are left to the loader (which downloads them or says where they go)."""
    if dataset in _SOURCES and not missing_files(dataset, root):
        bad = _find_corrupt_files(dataset, str(root))
        if bad:
            raise DataFileError(_corrupt_message(dataset, str(root), None, bad))


def _find_corrupt_files(dataset: str, root: str) -> list[str]:
    """Which files are damaged, read without running any of them: IDX headers and sizes (MNIST, Fashion-MNIST), md5
    sums (CIFAR-10's batches, which are pickles: never unpickled here; CelebA's lists)."""
    from torchvision.datasets import CIFAR10, CelebA, cifar
    from torchvision.datasets.utils import check_integrity

    if dataset in ("mnist", "fashion_mnist"):
        folder = fashion_mnist_dir(root) if dataset == "fashion_mnist" else _mnist_dir(root)
        paths = [_idx_path(folder, name) for name in _MNIST_FILES] if folder else _expected_files(dataset, root)
        return [f"{p} ({problem})" for p in paths if (problem := _idx_problem(p))]
    bad: list[str] = []
    if dataset == "cifar10":  # md5 and size only: a batch file that fails its checksum is never unpickled
        md5s = dict(CIFAR10.train_list + CIFAR10.test_list)
        md5s[CIFAR10.meta["filename"]] = CIFAR10.meta["md5"]
        for path in _expected_files(dataset, root):
            if path.is_file() and not cifar.check_integrity(str(path), md5s[path.name]):
                bad.append(f"{path} (md5 differs from the official file; {path.stat().st_size} bytes)")
        return bad
    for _, md5, name in CelebA.file_list:
        path = Path(root) / "celeba" / name
        if path.suffix == ".txt" and not check_integrity(str(path), md5):
            bad.append(f"{path} (md5 differs from the official file)")
    return bad


def _idx_path(folder: Path, name: str) -> Path:
    """``folder/name``, or ``folder/name.gz`` when only the gzipped file is there."""
    plain = folder / name
    return plain if plain.is_file() else folder / f"{name}.gz"


def _read_idx_bytes(path: Path) -> bytes:
    """The bytes of an IDX file, gunzipped when its name ends in ``.gz``."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        return f.read()


def _idx_problem(path: Path) -> str | None:
    """Why an IDX file (MNIST, Fashion-MNIST; plain or ``.gz``) is malformed, or None if its header and size
    agree."""
    try:
        data = _read_idx_bytes(path)
    except (OSError, EOFError, zlib.error) as err:  # a truncated or damaged .gz: EOFError, BadGzipFile, zlib.error
        return f"cannot be read: {type(err).__name__}: {err}"
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


def _read_idx(path: Path) -> torch.Tensor:
    """An unsigned-byte IDX file (LeCun et al.'s MNIST format) as a uint8 tensor of its header's shape."""
    problem = _idx_problem(path)
    if problem is not None:
        raise ValueError(f"{path}: {problem}")
    data = _read_idx_bytes(path)
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    return torch.frombuffer(bytearray(data[4 + 4 * ndim :]), dtype=torch.uint8).view(*dims)


class IdxImages(Dataset):
    """Images and labels of a pair of IDX files in MNIST's format, plain or gzipped (Fashion-MNIST, Xiao et al.
    2017): item ``i`` is ``(PIL image "L", label)``, as torchvision's ``MNIST`` gives it.

    Args:
        folder: the folder of ``{prefix}-images-idx3-ubyte[.gz]`` and ``{prefix}-labels-idx1-ubyte[.gz]``.
        prefix: ``train`` or ``t10k``.
    """

    def __init__(self, folder: str | Path, prefix: str) -> None:
        folder = Path(folder)
        self.files = (
            _idx_path(folder, f"{prefix}-images-idx3-ubyte"),
            _idx_path(folder, f"{prefix}-labels-idx1-ubyte"),
        )
        self.data = _read_idx(self.files[0])
        self.targets = _read_idx(self.files[1]).long()
        if self.data.ndim != 3 or self.targets.shape != self.data.shape[:1]:
            raise ValueError(
                f"{self.files[0]} and {self.files[1]} do not match: images {tuple(self.data.shape)}, labels "
                f"{tuple(self.targets.shape)}."
            )

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple:
        from PIL import Image

        return Image.fromarray(self.data[index].numpy(), mode="L"), int(self.targets[index])


def download(dataset: str, root: str) -> None:
    """Download with torchvision into a temporary folder in ``root``; move the files into place on success."""
    from torchvision import datasets

    root_path = Path(root)
    root_path.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=root_path))
    folder = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "cifar10": "cifar-10-batches-py", "celeba": "celeba"}[
        dataset
    ]
    try:
        try:
            if dataset == "mnist":
                datasets.MNIST(tmp, train=True, download=True)
            elif dataset == "fashion_mnist":
                datasets.FashionMNIST(tmp, train=True, download=True)
            elif dataset == "cifar10":
                datasets.CIFAR10(tmp, train=True, download=True)
            else:
                datasets.CelebA(tmp, split="all", target_type=[], download=True)
        except Exception as err:  # noqa: BLE001 - any failure (network, gdown missing, checksum) is reported
            reason = " ".join(f"{type(err).__name__}: {err}".split())
            raise DownloadError(
                f"Downloading {dataset!r} into {str(root_path)!r} failed ({reason}); the partial download was "
                f"deleted. Check the network connection to the source ({_SOURCES[dataset]}), or place the files "
                f"by hand ({', '.join(map(str, _expected_files(dataset, root)))}) and keep data.download=false."
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
