"""``fid --images``: the files are scored in their own channels, with reference statistics too, and a folder whose
channels are not the real images' is refused in one line."""

import json
from pathlib import Path

import numpy as np
import pytest
from fake_datasets import write_images
from PIL import Image

from ncsn_pl.commands.cli import main

CPU = ["--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.enable_progress_bar=false"]
TINY = ["--quality.feature_extractor=tiny_models.TinyFeatures"]  # weighs the channels equally; luma does not


def score(tmp_path: Path, *args: str) -> dict:
    main(["fid", *TINY, f"--quality.cache_dir={tmp_path / 'cache'}", f"--out={tmp_path / 'fid.json'}", *CPU, *args])
    return json.loads((tmp_path / "fid.json").read_text())


def test_rgb_images_against_reference_statistics_are_scored_in_colour(tmp_path):
    real = tmp_path / "real"
    write_images(real, n=12, size=(16, 16), seed=1)
    fake = tmp_path / "fake"
    write_images(fake, n=9, size=(16, 16), seed=2)
    stats = tmp_path / "real.npz"
    score(tmp_path, "--dataset=folder", f"--data_root={real}", "--export_stats", str(stats))
    against_data = score(tmp_path, "--images", str(fake), "--dataset=folder", f"--data_root={real}")
    against_file = score(tmp_path, "--images", str(fake), "--ref_stats", str(stats))  # no data set: the files say
    assert against_file["fid"] == pytest.approx(against_data["fid"], rel=1e-9)


def _digits_like(folder: Path, mode: str, colour: bool = False) -> Path:
    """Nine 8x8 images in ``mode``: grey pixels, or colour ones."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(9):
        grey = rng.integers(0, 256, (8, 8), dtype=np.uint8)
        pixels = np.stack([grey, grey[::-1], grey.T], -1) if colour else grey
        Image.fromarray(pixels).convert(mode).save(folder / f"{i}.png")
    return folder


def test_grey_pixels_in_rgb_files_score_as_the_grey_files(tmp_path):
    grey = score(tmp_path, "--images", str(_digits_like(tmp_path / "L", "L")), "--dataset=digits", "--num_real=30")
    as_rgb = _digits_like(tmp_path / "RGB", "RGB")  # as torchvision's save_image writes one-channel images
    assert score(tmp_path, "--images", str(as_rgb), "--dataset=digits", "--num_real=30")["fid"] == grey["fid"]


def test_channels_other_than_the_real_images_are_refused_in_one_line(tmp_path):
    colour = _digits_like(tmp_path / "colour", "RGB", colour=True)
    with pytest.raises(ValueError, match=r"^\S*0\.png is in colour but the real images \(digits\) are greyscale") as e:
        score(tmp_path, "--images", str(colour), "--dataset=digits", "--num_real=30")
    assert "\n" not in str(e.value)
    real = tmp_path / "real"
    write_images(real, n=4, size=(8, 8))
    with pytest.raises(ValueError, match=r"^The images in \S*L are greyscale but the real images \(folder:\S*real\) "
                                         r"have 3 channels") as e:  # fmt: skip
        score(tmp_path, "--images", str(_digits_like(tmp_path / "L", "L")), "--dataset=folder", f"--data_root={real}")
    assert "\n" not in str(e.value)
    assert not (tmp_path / "fid.json").exists()
