"""Every user error of the data modules gives a message that says what to fix; nothing is downloaded."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path
from urllib.error import URLError

import fake_datasets
import pytest
from fake_datasets import (
    skip_md5_checks,
    write_fake_celeba,
    write_fake_cifar10,
    write_fake_mnist,
    write_images,
)

from ncsn_pl.data import ImageDataModule, ToyDataModule
from ncsn_pl.data.datasets import DataFileError, DownloadError, check_files

no_md5_check = fake_datasets.no_md5_check  # fixture


def _files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*"))


# ---------------------------------------------------------------- arguments
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dataset": "imagenet"}, "mnist, fashion_mnist, cifar10, celeba, digits, folder"),
        ({"dataset": "mnist", "channels": 3}, "mnist has 1 channel"),
        ({"dataset": "folder", "channels": 2}, "must be 1 .* or 3"),
        ({"dataset": "digits", "image_size": 0}, "image_size must be a positive"),
        ({"dataset": "digits", "val_fraction": 0.0}, "strictly between 0 and 1"),
        ({"dataset": "digits", "batch_size": 0}, "batch_size"),
    ],
)
def test_bad_arguments_raise_value_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ImageDataModule(**kwargs)


def test_toy_bad_arguments():
    with pytest.raises(ValueError, match="num_train"):
        ToyDataModule(num_train=0)
    with pytest.raises(ValueError, match="one entry per component"):
        ToyDataModule(weights=(1.0,))


# ---------------------------------------------------------------- missing data
@pytest.mark.parametrize(
    ("dataset", "layout"),
    [
        ("mnist", "MNIST/raw/train-images-idx3-ubyte"),
        ("cifar10", "cifar-10-batches-py/data_batch_1"),
        ("celeba", "celeba/list_eval_partition.txt"),
    ],
)
def test_missing_data_says_where_it_looked_and_how_to_fetch_it(tmp_path, dataset, layout):
    dm = ImageDataModule(dataset, root=str(tmp_path / "nowhere"))
    assert dm.data_shape[0] in (1, 3)  # shapes need no data
    dm.prepare_data()  # download=False: never touches the network
    with pytest.raises(FileNotFoundError) as info:
        dm.setup("fit")
    message = str(info.value)
    assert str(tmp_path / "nowhere") in message and layout in message
    assert "data.download=true" in message
    assert not (tmp_path / "nowhere").exists()


def test_partly_missing_mnist_names_the_missing_file(tmp_path):
    write_fake_mnist(tmp_path)
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match=r"Missing: .*t10k-labels-idx1-ubyte\."):
        ImageDataModule("mnist", root=str(tmp_path)).setup()


def test_celeba_without_image_folder_is_missing(tmp_path, no_md5_check):
    import shutil

    write_fake_celeba(tmp_path)
    shutil.rmtree(tmp_path / "celeba" / "img_align_celeba")
    with pytest.raises(FileNotFoundError, match=r"img_align_celeba/\*\.jpg"):
        ImageDataModule("celeba", root=str(tmp_path)).setup()


# ---------------------------------------------------------------- downloads (torchvision's download patched)
def _refuse(*args, **kwargs):
    raise URLError("[Errno -3] Temporary failure in name resolution")


def test_failed_mnist_download_explains_and_leaves_nothing_behind(tmp_path, monkeypatch):
    def half_written(url, download_root, filename=None, md5=None, **kwargs):
        Path(download_root, filename).write_bytes(b"\x1f\x8b partial")  # a partial archive, then the error
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr("torchvision.datasets.mnist.download_and_extract_archive", half_written)
    dm = ImageDataModule("mnist", root=str(tmp_path), download=True)
    with pytest.raises(DownloadError) as info:
        dm.prepare_data()
    message = str(info.value)
    assert "Downloading 'mnist'" in message and "failed" in message
    assert "name resolution" in message and "ossci-datasets.s3.amazonaws.com" in message
    assert "place the files by hand" in message and "MNIST/raw/train-images-idx3-ubyte" in message
    assert _files_under(tmp_path) == []  # the temporary download folder was removed


@pytest.mark.parametrize(
    ("dataset", "target", "source"),
    [
        ("cifar10", "torchvision.datasets.cifar.download_and_extract_archive", "cs.toronto.edu"),
        ("celeba", "torchvision.datasets.celeba.download_file_from_google_drive", "gdown"),
    ],
)
def test_failed_download_raises_download_error(tmp_path, monkeypatch, dataset, target, source):
    monkeypatch.setattr(target, _refuse)
    dm = ImageDataModule(dataset, root=str(tmp_path), download=True)
    with pytest.raises(DownloadError, match="failed") as info:
        dm.setup("fit")  # without a Trainer, setup runs prepare_data itself when download=True
    assert source in str(info.value) and "URLError" in str(info.value)
    assert _files_under(tmp_path) == []


def test_successful_download_moves_files_into_root(tmp_path, monkeypatch):
    fake_source = write_fake_mnist(tmp_path / "source")

    def fake_download(url, download_root, filename=None, md5=None, **kwargs):
        name = filename.removesuffix(".gz")
        Path(download_root, filename).write_bytes(b"archive")  # the archive, then its unpacked file
        Path(download_root, name).write_bytes((fake_source / "MNIST" / "raw" / name).read_bytes())

    monkeypatch.setattr("torchvision.datasets.mnist.download_and_extract_archive", fake_download)
    root = tmp_path / "data"
    dm = ImageDataModule("mnist", root=str(root), download=True)
    dm.prepare_data()
    raw = sorted(p.name for p in (root / "MNIST" / "raw").iterdir())
    assert raw == sorted(
        [
            "t10k-images-idx3-ubyte",
            "t10k-labels-idx1-ubyte",
            "train-images-idx3-ubyte",
            "train-labels-idx1-ubyte",
        ]
    )  # archives dropped
    assert [p.name for p in root.iterdir()] == ["MNIST"]  # no temporary folder left
    dm.setup()
    assert len(dm.train_set) == 20
    dm.prepare_data()  # present now: no second download
    monkeypatch.setattr("torchvision.datasets.mnist.download_and_extract_archive", _refuse)
    dm.prepare_data()


# ---------------------------------------------------------------- corrupt files
def test_truncated_mnist_file_is_named(tmp_path):
    write_fake_mnist(tmp_path)
    path = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(DataFileError, match=r"train-images-idx3-ubyte \(1000 bytes, the header") as info:
        ImageDataModule("mnist", root=str(tmp_path)).setup()
    assert "data.download=true" in str(info.value)


def test_mnist_file_with_wrong_magic_is_named(tmp_path):
    write_fake_mnist(tmp_path)
    path = tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    path.write_bytes(struct.pack(">II", 9999, 10) + bytes(10))
    with pytest.raises(DataFileError, match=r"t10k-labels-idx1-ubyte \(magic number 9999"):
        ImageDataModule("mnist", root=str(tmp_path)).setup()


def test_cifar_md5_mismatch_names_the_files(tmp_path):
    write_fake_cifar10(tmp_path)  # not the official bytes, and no md5 patch here
    with pytest.raises(DataFileError, match=r"data_batch_1 \(md5 differs from the official file; \d+ bytes\)"):
        ImageDataModule("cifar10", root=str(tmp_path)).setup()


class _Payload:
    """A pickle that runs code when unpickled: it creates the file named by ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_cifar_batch_that_fails_its_md5_is_never_unpickled(tmp_path):
    write_fake_cifar10(tmp_path)
    marker = tmp_path / "code_ran"
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_2", "wb") as f:
        pickle.dump(_Payload(marker), f)
    with pytest.raises(DataFileError, match=r"data_batch_2 \(md5 differs from the official file"):
        ImageDataModule("cifar10", root=str(tmp_path)).setup()
    with pytest.raises(DataFileError, match=r"data_batch_2 \(md5 differs"):
        check_files("cifar10", tmp_path)  # the check the CLI runs before a run folder exists
    assert not marker.exists()


def test_truncated_cifar_pickle_is_named(tmp_path, no_md5_check):
    write_fake_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataFileError, match=r"Could not read the files of 'cifar10' .*\(UnpicklingError"):
        ImageDataModule("cifar10", root=str(tmp_path)).setup()


def test_celeba_md5_mismatch_names_the_text_files(tmp_path):
    write_fake_celeba(tmp_path)
    with pytest.raises(DataFileError, match=r"list_eval_partition.txt \(md5 differs"):
        ImageDataModule("celeba", root=str(tmp_path)).setup()


def test_corrupt_celeba_jpeg_is_named_when_read(tmp_path):
    write_fake_celeba(tmp_path)
    (tmp_path / "celeba" / "img_align_celeba" / "000002.jpg").write_bytes(b"not a jpeg")
    with skip_md5_checks():
        dm = ImageDataModule("celeba", root=str(tmp_path))
        dm.setup()
        dm.train_set[0]  # a good file
        with pytest.raises(RuntimeError, match=r"img_align_celeba/000002\.jpg"):
            dm.train_set[1]


def test_truncated_celeba_jpeg_is_named_when_read(tmp_path):
    write_fake_celeba(tmp_path)
    path = tmp_path / "celeba" / "img_align_celeba" / "000001.jpg"
    path.write_bytes(path.read_bytes()[:600])
    with skip_md5_checks():
        dm = ImageDataModule("celeba", root=str(tmp_path))
        dm.setup()
        with pytest.raises(RuntimeError, match=r"000001\.jpg.*truncated"):
            dm.train_data()


# ---------------------------------------------------------------- folders
def test_empty_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "readme.txt").write_text("no images here")
    dm = ImageDataModule("folder", root=str(tmp_path), image_size=16)
    with pytest.raises(ValueError, match="No images found under .*png"):
        dm.setup()
    with pytest.raises(ValueError, match="No images found"):
        ImageDataModule("folder", root=str(tmp_path)).data_shape  # noqa: B018 - the size needs an image


def test_folder_that_does_not_exist(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageDataModule("folder", root=str(tmp_path / "missing"), image_size=8).setup()


def test_folder_with_a_single_image(tmp_path):
    write_images(tmp_path, n=1)
    with pytest.raises(ValueError, match="at least 2 images"):
        ImageDataModule("folder", root=str(tmp_path)).setup()


def test_unreadable_image_in_folder_is_named_before_training(tmp_path):
    write_images(tmp_path, n=4, size=(16, 16))
    (tmp_path / "img_0001.png").write_bytes(b"\x89PNG garbage")
    (tmp_path / "notes.png").write_text("a text file with an image's name")
    expected = (r"^Cannot use image '[^']*img_0001\.png': not an image PIL can read \(UnidentifiedImageError\) "
                r"\(1 more: [^ ]*notes\.png\)\. Delete")
    for image_size in (None, 16):  # the shape reads the headers; else setup, still before any batch
        dm = ImageDataModule("folder", root=str(tmp_path), val_fraction=0.25, image_size=image_size)
        with pytest.raises(ValueError, match=expected) as error:
            dm.setup() if image_size else dm.data_shape  # noqa: B018
        assert "\n" not in str(error.value)
