"""What ``sample`` and ``fid`` report beside the samples and FID: the share of samples noisier than every real image
(so a sampler that diverged does not pass as a high FID) and the network evaluations per sample."""

import json

import numpy as np
import pytest
import torch
from cli_runs import smoke_checkpoint
from PIL import Image

from ncsn_pl.commands.cli import main
from ncsn_pl.data import ImageDataModule
from ncsn_pl.metrics import total_variation

CPU = ["--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.enable_progress_bar=false"]
TINY = ["--quality.feature_extractor=tiny_models.TinyFeatures", "--num_real=30"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A quickstart run of two steps: its samples are noise."""
    return smoke_checkpoint(tmp_path_factory.mktemp("fit"))


def digits_threshold() -> float:
    """The largest total variation of the first 1,000 held-out digits (the data has 180)."""
    return total_variation(ImageDataModule(dataset="digits").val_data(1000)).max().item()


def test_sample_reports_the_share_of_samples_noisier_than_every_held_out_image(checkpoint, tmp_path, capsys):
    main(["sample", "--ckpt_path", str(checkpoint), "--num_samples=6", "--batch_size=4", f"--out_dir={tmp_path}",
          *CPU])  # fmt: skip
    record = json.loads((tmp_path / "sample.json").read_text())
    samples = torch.from_numpy(np.load(tmp_path / "samples.npz")["samples"])
    expected = (total_variation(samples) > digits_threshold()).float().mean().item()
    assert record["noisy_share"] == pytest.approx(expected) and record["noisy_share"] > 0.5  # two steps: noise
    real = {"split": "val", "num_images": 180, "threshold": pytest.approx(digits_threshold())}
    assert record["noisy_share_real"] == real
    assert "noisier than every one of the first 180 val images" in capsys.readouterr().out


def write_pngs(folder, images):
    folder.mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i}.png")


def test_fid_reports_the_noisy_share_of_a_folder_beside_fid(tmp_path):
    rng = np.random.default_rng(0)
    noise = [rng.integers(0, 256, (8, 8), dtype=np.uint8) for _ in range(3)]
    flat = [np.full((8, 8), 40 * i, dtype=np.uint8) for i in range(6)]
    write_pngs(tmp_path / "pngs", noise + flat)
    main(["fid", "--images", str(tmp_path / "pngs"), "--dataset=digits", *TINY, *CPU,
          f"--quality.cache_dir={tmp_path / 'cache'}", f"--out={tmp_path / 'fid.json'}"])  # fmt: skip
    record = json.loads((tmp_path / "fid.json").read_text())
    assert record["noisy_share"] == pytest.approx(3 / 9)
    assert list(record).index("noisy_share") == list(record).index("fid") + 1  # beside it
    assert record["noisy_share_real"]["num_images"] == 180


def test_fid_says_why_it_has_no_noisy_share_when_the_images_do_not_compare(tmp_path):
    # --ref_stats alone brings no real images of the samples' size
    write_pngs(tmp_path / "pngs", [np.full((16, 16), 9 * i, dtype=np.uint8) for i in range(4)])
    np.savez(tmp_path / "stats.npz", mu=np.zeros(4), sigma=np.eye(4))
    main(["fid", "--images", str(tmp_path / "pngs"), "--ref_stats", str(tmp_path / "stats.npz"), *TINY, *CPU,
          f"--quality.cache_dir={tmp_path / 'cache'}", f"--out={tmp_path / 'fid.json'}"])  # fmt: skip
    record = json.loads((tmp_path / "fid.json").read_text())
    assert record["noisy_share"] is None and np.isfinite(record["fid"])
    assert record["noisy_share_real"] == {"unavailable": "the samples are 1x16x16 but the real images 1x8x8"}
