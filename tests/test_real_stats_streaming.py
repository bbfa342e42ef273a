"""Real-data statistics streamed through the feature extractor: a batch at a time, each process its own share.

The split is never stacked (``train_data`` is not called), the statistics equal those of the stacked images, and
a FID is the same bit for bit whether its real statistics were computed or read from the cache.
"""

import pytest
import torch
from fake_datasets import skip_md5_checks, write_fake_celeba, write_images
from tiny_models import TinyFeatures

from ncsn_pl.data import ImageDataModule
from ncsn_pl.metrics import QualityOptions, SampleQuality, real_images


class CountingFeatures(TinyFeatures):
    """TinyFeatures that records the size of every batch it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(int(x.shape[0]))
        return super().forward(x)


@pytest.fixture
def celeba(tmp_path):
    """A fake CelebA (real layout, 178x218 JPEGs) read at 16 px; stacking the split is refused."""
    root = write_fake_celeba(tmp_path, n_train=11, n_valid=2, n_test=2)
    with skip_md5_checks():
        dm = ImageDataModule("celeba", root=str(root), image_size=16)
        dm.setup()

        def no_stacking(*args, **kwargs):
            raise AssertionError("the real statistics stacked the split")

        stacked = dm.train_data()
        dm.train_data = no_stacking
        yield dm, stacked


def test_streamed_statistics_equal_those_of_the_stacked_split_a_batch_at_a_time(celeba, tmp_path):
    dm, stacked = celeba
    real = real_images(dm, "train")
    assert real.num_images == 11 and real.image_dataset() is not None
    extractor = CountingFeatures()
    streamed = SampleQuality(QualityOptions(feature_extractor=extractor, cache_dir=str(tmp_path / "cache")))
    with skip_md5_checks():
        assert streamed.load_or_compute_real(lambda: real.shard(0, 1, batch_size=4), **real.cache_key()) is False
    assert extractor.batches == [4, 4, 3]  # memory bounded by the batch, not by the split
    assert streamed.real_source == {**real.cache_key(), "from_cache": False}

    direct = SampleQuality(QualityOptions(feature_extractor=TinyFeatures()))
    direct.update_real(stacked)
    for name in ("real_features_sum", "real_features_cov_sum"):
        torch.testing.assert_close(getattr(streamed.fid, name), getattr(direct.fid, name), rtol=1e-12, atol=1e-12)
    assert int(streamed.fid.real_features_num_samples) == 11


def test_each_process_streams_its_own_share(celeba):
    dm, stacked = celeba
    real = real_images(dm, "train", max_images=9)
    shards = [torch.cat(list(real.shard(rank, 3, batch_size=2))) for rank in range(3)]
    assert [len(s) for s in shards] == [3, 3, 3]
    for rank, shard in enumerate(shards):
        torch.testing.assert_close(shard, stacked[rank:9:3], rtol=0, atol=0)


def test_a_fid_is_the_same_bit_for_bit_from_fresh_or_cached_real_statistics(celeba, tmp_path):
    dm, _ = celeba
    real = real_images(dm, "train")
    fake = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    values = []
    for expect_cached in (False, True):
        quality = SampleQuality(
            QualityOptions(feature_extractor=TinyFeatures(), kid=True, kid_subset_size=5, kid_subsets=3,
                           precision_recall=True, cache_dir=str(tmp_path))  # fmt: skip
        )
        with skip_md5_checks():
            cached = quality.load_or_compute_real(lambda: real.shard(0, 1, batch_size=3), **real.cache_key())
        assert cached is expect_cached
        quality.update_fake(fake)
        values.append(quality.compute())
    assert values[0] == values[1]  # exact, every metric


# ------------------------------------------------------------------ the cache key covers every image setting
# a changed value for every ImageDataModule setting that selects or transforms the real images (the split's seed and
# share, the size, the folder's channels)
CHANGED = {"seed": 1, "val_fraction": 0.2, "image_size": 16, "channels": 1, "image_column": "other"}
# and for the settings that never change them (NOT_IN_REAL_IMAGES): loading, and the augmentation of training batches
SAME = {"batch_size": 16, "val_batch_size": 4, "num_workers": 1, "pin_memory": True, "download": True,
        "random_flip": True, "dequantize": True, "dequantize_val": True}


def _cached(tmp_path, dm) -> bool:
    quality = SampleQuality(QualityOptions(feature_extractor=TinyFeatures(), cache_dir=str(tmp_path / "cache")))
    real = real_images(dm, "train", max_images=40)
    return quality.load_or_compute_real(lambda: real.shard(0, 1, batch_size=20), **real.cache_key())


def test_the_real_statistics_cache_misses_when_any_image_setting_changes(tmp_path):
    import inspect

    from ncsn_pl.metrics.real_images import NOT_IN_REAL_IMAGES

    params = set(inspect.signature(ImageDataModule).parameters) - {"dataset"}
    # every setting is classified: a new DataModule setting must be added to one of the two lists
    assert params == set(CHANGED) | set(SAME) | {"root"} and set(SAME) | {"root"} == set(NOT_IN_REAL_IMAGES)
    write_images(tmp_path / "folder", n=8, size=(12, 10))
    base = {"digits": dict(batch_size=8), "folder": dict(root=str(tmp_path / "folder"), batch_size=8)}
    for dataset, settings in base.items():
        images = real_images(ImageDataModule(dataset, **settings), "train", 40).load()
        assert _cached(tmp_path, ImageDataModule(dataset, **settings)) is False
        assert _cached(tmp_path, ImageDataModule(dataset, **settings)) is True
        for name, value in SAME.items():
            same = ImageDataModule(dataset, **{**settings, name: value})
            assert torch.equal(real_images(same, "train", 40).load(), images), name  # truly the same images
            assert _cached(tmp_path, same) is True, name
        for name, value in CHANGED.items():
            if (name == "channels" and dataset == "digits") or name == "image_column":
                continue  # the built-in sets have a fixed channel count; image columns are hf:'s (test_data_hf.py)
            changed = ImageDataModule(dataset, **{**settings, name: value})
            other = real_images(changed, "train", 40).load()
            assert other.shape != images.shape or not torch.equal(other, images), name  # truly other images
            assert _cached(tmp_path, changed) is False, f"{dataset}: {name}={value} hit the cache"
            assert _cached(tmp_path, changed) is True, name
    # a setting left at its default or given as the value it resolves to: the same entry
    assert _cached(tmp_path, ImageDataModule("digits", batch_size=8, image_size=8)) is True


def test_the_real_statistics_cache_misses_when_a_folder_image_is_replaced(tmp_path):
    folder = tmp_path / "folder"
    paths = write_images(folder, n=8, size=(12, 10))
    assert _cached(tmp_path, ImageDataModule("folder", root=str(folder))) is False
    assert _cached(tmp_path, ImageDataModule("folder", root=str(folder))) is True
    write_images(tmp_path / "other", n=8, size=(12, 10), seed=1)[0].replace(paths[0])  # other pixels, same name
    assert _cached(tmp_path, ImageDataModule("folder", root=str(folder))) is False
