"""The mode-coverage numbers of experiments/fashion/: the class histogram, its entropy, the mean confidence."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from fake_datasets import write_fake_fashion_mnist
from scripts import load_script

FOLDER = Path(__file__).parents[1] / "experiments" / "fashion"


@pytest.fixture(scope="module")
def coverage():
    load_script(FOLDER / "classifier.py", "classifier")
    return load_script(FOLDER / "coverage.py", "fashion_coverage")


def test_uniform_classes_have_entropy_ln10_and_one_class_has_zero(coverage):
    uniform = coverage.class_statistics(torch.eye(10).repeat(3, 1))
    assert uniform["entropy"] == pytest.approx(math.log(10)) == pytest.approx(2.302585)
    assert uniform["histogram"] == [0.1] * 10 and uniform["min_class_share"] == pytest.approx(0.1)
    assert uniform["mean_confidence"] == 1.0 and uniform["num_samples"] == 30
    single = coverage.class_statistics(torch.eye(10)[[3] * 7])
    assert single["entropy"] == 0.0 and single["histogram"][3] == 1.0 and single["min_class_share"] == 0.0


def test_two_equal_classes_give_ln2_and_confidence_is_the_mean_top_probability(coverage):
    p = torch.tensor([[0.6, 0.4] + [0.0] * 8, [0.3, 0.7] + [0.0] * 8])
    stats = coverage.class_statistics(p)
    assert stats["entropy"] == pytest.approx(math.log(2))
    assert stats["mean_confidence"] == pytest.approx(0.65)


def test_samples_are_read_from_shards_in_order_and_scored(coverage, tmp_path):
    shards = tmp_path / "samples" / "shards"
    shards.mkdir(parents=True)
    images = torch.rand(6, 1, 16, 16)
    for first, last in ((0, 3), (4, 5)):
        np.savez(shards / f"{first:08d}-{last:08d}-n{last - first + 1}.npz", samples=images[first : last + 1].numpy())
    torch.testing.assert_close(coverage.load_samples(str(tmp_path / "samples")), images)
    stats = coverage.coverage(_cnn(), images)
    assert sum(stats["histogram"]) == pytest.approx(1.0, abs=1e-3) and 0.1 <= stats["mean_confidence"] <= 1.0


def _cnn():
    return load_script(FOLDER / "classifier.py", "classifier").SmallCNN().eval()


def test_noisy_share_script_counts_samples_noisier_than_every_test_image(tmp_path):
    # the measure itself is ncsn_pl.metrics.noisy_share's (tests/test_metrics_noisy_share.py)
    noisy_share = load_script(FOLDER / "noisy_share.py", "fashion_noisy_share")
    write_fake_fashion_mnist(tmp_path / "FashionMNIST" / "raw")  # smooth images
    rows, cols = torch.meshgrid(torch.arange(16), torch.arange(16), indexing="ij")
    checkerboard = ((rows + cols) % 2).float().view(1, 1, 16, 16)
    samples = torch.cat([checkerboard, torch.full((3, 1, 16, 16), 0.3)])
    np.savez(tmp_path / "samples.npz", samples=samples.numpy())
    shares = noisy_share.main([str(tmp_path / "samples.npz"), "--root", str(tmp_path), "--num-real", "10"])
    assert shares == {str(tmp_path / "samples.npz"): 0.25}
