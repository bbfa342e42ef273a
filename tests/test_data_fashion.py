"""Fashion-MNIST: torchvision's layout under data.root, the system package's files when the root has none, one
error naming both ways to get it; FID against its test split; and one run on the real files."""

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from fake_datasets import write_fake_fashion_mnist
from lightning.pytorch import Trainer
from PIL import Image
from tiny_models import TinyFeatures, TinyScore
from torchvision.transforms import functional as TF

import ncsn_pl.data.datasets as datasets
from ncsn_pl.data import ImageDataModule
from ncsn_pl.data.datasets import DataFileError
from ncsn_pl.metrics import QualityOptions
from ncsn_pl.training import SampleQualityMonitor, ScoreModel

REAL = Path("/usr/share/datasets/fashion-mnist")  # `apt-get install -y dataset-fashion-mnist` (CI installs it)


@pytest.fixture
def system_dir(tmp_path, monkeypatch):
    """An empty stand-in for the system package's folder (a test may fill it)."""
    folder = tmp_path / "system"
    monkeypatch.setattr(datasets, "SYSTEM_FASHION_MNIST", folder)
    return folder


def _pixels(images: np.ndarray, size: int = 28) -> torch.Tensor:
    """uint8 ``(N, 28, 28)`` as the DataModule gives them: PIL, resized to ``size`` when it differs, in [0, 1]."""
    pictures = [Image.fromarray(a, mode="L") for a in images]
    if size != 28:
        pictures = [TF.resize(p, size) for p in pictures]
    return torch.stack([TF.to_tensor(p) for p in pictures])


@pytest.mark.parametrize("gz", [False, True])
def test_root_layout_gives_the_written_pixels_and_labels(tmp_path, system_dir, gz):
    arrays = write_fake_fashion_mnist(tmp_path / "FashionMNIST" / "raw", gz=gz)
    dm = ImageDataModule("fashion_mnist", root=str(tmp_path))
    assert dm.data_shape == (1, 28, 28) and not dm.random_flip
    torch.testing.assert_close(dm.train_data(), _pixels(arrays["train_images"]), rtol=0, atol=0)
    torch.testing.assert_close(dm.val_data(), _pixels(arrays["t10k_images"]), rtol=0, atol=0)  # the test split
    labels = datasets.load_builtin("fashion_mnist", str(tmp_path), "val").targets
    assert labels.tolist() == arrays["t10k_labels"].tolist()


def test_system_package_is_read_when_the_root_has_none(tmp_path, system_dir):
    arrays = write_fake_fashion_mnist(system_dir, n_train=12, gz=True)
    root = tmp_path / "empty"
    dm = ImageDataModule("fashion_mnist", root=str(root), image_size=14)
    dm.prepare_data()  # nothing to do: no download, nothing written
    assert len(dm.train_data()) == 12 and dm.data_shape == (1, 14, 14)
    torch.testing.assert_close(dm.val_data(), _pixels(arrays["t10k_images"], 14), rtol=0, atol=0)
    assert not root.exists()


def test_a_copy_under_the_root_wins_over_the_system_package(tmp_path, system_dir):
    write_fake_fashion_mnist(system_dir, seed=1, gz=True)
    arrays = write_fake_fashion_mnist(tmp_path / "FashionMNIST" / "raw", n_test=7, seed=2)
    torch.testing.assert_close(
        ImageDataModule("fashion_mnist", root=str(tmp_path)).val_data(), _pixels(arrays["t10k_images"])
    )


def test_missing_everywhere_is_one_line_naming_both_ways(tmp_path, system_dir):
    (tmp_path / "FashionMNIST" / "raw").mkdir(parents=True)
    with pytest.raises(FileNotFoundError) as info:
        ImageDataModule("fashion_mnist", root=str(tmp_path)).setup()
    message = str(info.value)
    assert "\n" not in message
    assert "apt-get install -y dataset-fashion-mnist" in message and "--data.init_args.download=true" in message
    assert str(tmp_path / "FashionMNIST" / "raw") in message and str(system_dir) in message
    assert "train-images-idx3-ubyte" in message


def test_truncated_gzipped_file_is_named(tmp_path, system_dir):
    write_fake_fashion_mnist(system_dir, gz=True)
    path = system_dir / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-100]))
    with pytest.raises(DataFileError, match=r"idx3-ubyte.gz \(7756 bytes, the header \(10, 28, 28\) needs 7856\)"):
        ImageDataModule("fashion_mnist", root=str(tmp_path)).setup()
    with pytest.raises(DataFileError, match="apt-get install --reinstall -y dataset-fashion-mnist"):
        ImageDataModule("fashion_mnist", root=str(tmp_path)).setup()


def test_download_puts_torchvisions_files_under_the_root(tmp_path, system_dir, monkeypatch):
    source = tmp_path / "source"
    write_fake_fashion_mnist(source)

    def fake_download(url, download_root, filename=None, md5=None, **kwargs):
        name = filename.removesuffix(".gz")
        Path(download_root, filename).write_bytes(b"archive")  # the archive, then its unpacked file
        Path(download_root, name).write_bytes((source / name).read_bytes())

    monkeypatch.setattr("torchvision.datasets.mnist.download_and_extract_archive", fake_download)
    root = tmp_path / "data"
    dm = ImageDataModule("fashion_mnist", root=str(root), download=True)
    dm.prepare_data()
    assert sorted(p.name for p in (root / "FashionMNIST" / "raw").iterdir()) == sorted(datasets._MNIST_FILES)
    assert len(dm.train_data()) == 20


def test_monitor_split_must_be_train_or_val():
    with pytest.raises(ValueError, match="split must be 'train' or 'val'"):
        SampleQualityMonitor(split="test", quality=QualityOptions(feature_extractor=TinyFeatures()))


def _fit_with_fid_on_the_test_split(tmp_path: Path, root: Path, num_real: int) -> SampleQualityMonitor:
    """Three steps of a tiny network on Fashion-MNIST at 14x14, then FID against the first test images."""
    monitor = SampleQualityMonitor(
        num_samples=4,
        every_n_epochs=0,
        on_train_end=True,
        num_real=num_real,
        split="val",
        quality=QualityOptions(feature_extractor=TinyFeatures(), cache_dir=str(tmp_path / "cache")),
        progress_bar=False,
    )
    torch.manual_seed(0)
    model = ScoreModel(
        TinyScore(num_scales=2), sigma_max=1.0, sigma_min=0.5, num_scales=2, n_steps_each=1, step_lr=0.05,
        data_shape=(1, 14, 14),
    )  # fmt: skip
    data = ImageDataModule("fashion_mnist", root=str(root), image_size=14, batch_size=4, dequantize=True)
    trainer = Trainer(
        accelerator="cpu", devices=1, max_steps=3, limit_val_batches=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path, callbacks=[monitor],
    )  # fmt: skip
    trainer.fit(model, data)
    assert trainer.global_step == 3 and np.isfinite(monitor.last_results["fid"])
    return monitor


def _expected_stats(images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of TinyFeatures of images in [0, 1], rounded to 8 bits as the metric does."""
    features = TinyFeatures()((images * 255).round() / 255).double().numpy()
    return features.mean(0), np.cov(features, rowvar=False)


@pytest.mark.parametrize("where", ["fake", "real"])
def test_fid_during_training_uses_the_test_split(tmp_path, monkeypatch, where):
    if where == "fake":
        monkeypatch.setattr(datasets, "SYSTEM_FASHION_MNIST", tmp_path / "system")
        arrays = write_fake_fashion_mnist(tmp_path / "system", gz=True)
        test_images = arrays["t10k_images"]
    elif not (REAL / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("the real files need `apt-get install -y dataset-fashion-mnist` (CI installs them)")
    else:  # read here independently of the package: 16-byte header, then pixels
        raw = gzip.decompress((REAL / "t10k-images-idx3-ubyte.gz").read_bytes())
        test_images = np.frombuffer(raw[16:], dtype=np.uint8).reshape(10000, 28, 28)
    monitor = _fit_with_fid_on_the_test_split(tmp_path, tmp_path / "no_copy_here", num_real=8)
    assert monitor.quality.real_source["split"] == "val" and monitor.quality.real_source["num_images"] == 8
    stats = np.load(monitor.quality.export_real_stats(tmp_path / "stats.npz"))
    mu, sigma = _expected_stats(_pixels(test_images[:8], 14))
    np.testing.assert_allclose(stats["mu"], mu, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["sigma"], sigma, rtol=1e-4, atol=1e-6)
