"""The noisy share: total variation in closed form, the threshold of real images, the share of samples above it."""

import math

import pytest
import torch
from fake_datasets import write_fake_fashion_mnist

from ncsn_pl.data import ImageDataModule, ToyDataModule
from ncsn_pl.metrics.noisy_share import NoiseReference, NoisyShare, noise_reference, total_variation

ROWS, COLS = torch.meshgrid(torch.arange(16), torch.arange(16), indexing="ij")
CHECKERBOARD = ((ROWS + COLS) % 2).float().view(1, 1, 16, 16)
RAMP = (COLS / 15).float().view(1, 1, 16, 16)  # 0 to 1 left to right: every horizontal step 1/15
FLAT = torch.full((1, 1, 16, 16), 0.3)


def test_total_variation_is_zero_for_flat_images_two_for_a_checkerboard_and_the_step_of_a_ramp():
    values = total_variation(torch.cat([FLAT, CHECKERBOARD, 3 * CHECKERBOARD, RAMP, RAMP.transpose(2, 3)]))
    assert values.tolist() == pytest.approx([0.0, 2.0, 2.0, 1 / 15, 1 / 15])  # values are clamped to [0, 1] first
    # uint8 images are read as x / 255; channels are averaged
    assert total_variation((255 * CHECKERBOARD).to(torch.uint8)).item() == pytest.approx(2.0)
    assert total_variation(torch.cat([CHECKERBOARD, FLAT], 1)).item() == pytest.approx(1.0)


def test_the_share_counts_the_samples_noisier_than_every_real_image():
    reference = NoiseReference(float(total_variation(torch.cat([FLAT, RAMP])).max()), "val", 2, (1, 16, 16))
    assert reference.threshold == pytest.approx(1 / 15)
    counter = NoisyShare(reference)
    counter.update(torch.cat([CHECKERBOARD, FLAT, RAMP, 0.5 * CHECKERBOARD]))  # 2 noisy: the ramp is not above
    nan = FLAT.clone()
    nan[0, 0, 3, 3] = math.nan
    counter.update(nan)  # a sample with NaN counts as noisy
    assert counter.counts().tolist() == [3.0, 5.0]
    assert NoisyShare.share(counter.counts()) == pytest.approx(0.6)
    assert NoisyShare.share(NoisyShare(reference).counts()) is None
    with pytest.raises(ValueError, match="the samples are 1x8x8 but the real images 1x16x16"):
        counter.update(torch.zeros(2, 1, 8, 8))


def test_the_reference_is_the_first_held_out_images_of_an_image_datamodule(tmp_path):
    write_fake_fashion_mnist(tmp_path / "FashionMNIST" / "raw", n_test=12)
    data = ImageDataModule("fashion_mnist", root=str(tmp_path), image_size=16)
    reference = noise_reference(data, num_images=10)
    assert reference.num_images == 10 and reference.split == "val" and reference.image_shape == (1, 16, 16)
    assert reference.threshold == pytest.approx(total_variation(data.val_data(10)).max().item())
    assert 0 < reference.threshold < 0.5  # smooth images
    assert noise_reference(ToyDataModule()) is None  # 2-D points are not images
