"""Real-data statistics streamed through the feature extractor: a batch at a time, each process its own share.

The split is never stacked (``train_data`` is not called), the statistics equal those of the stacked images, and
a FID is the same bit for bit whether its real statistics were computed or read from the cache.
"""

import pytest
import torch
from fake_datasets import skip_md5_checks, write_fake_celeba
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
        torch.manual_seed(0)  # KID draws its subsets from the global generator
        values.append(quality.compute())
    assert values[0] == values[1]  # exact, every metric
