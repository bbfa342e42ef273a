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
from ncsn_pl.sample_sets.store import SampleStore

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


@pytest.fixture(scope="module")
def v2_checkpoint(tmp_path_factory):
    """An NCSNv2 quickstart run of two steps: a network that takes any sigma."""
    return smoke_checkpoint(tmp_path_factory.mktemp("fit_v2"), "--model.score_net=ncsn_pl.networks.NCSNv2",
                            "--model.score_net.init_args.channels=1", "--model.score_net.init_args.ngf=8")  # fmt: skip


ADAPTIVE = ["--sampler=AdaptiveVESDE", "--sampler.init_args.eps_rel=0.05"]


def test_fid_records_the_mean_and_largest_nfe_of_an_adaptive_sampler(v2_checkpoint, tmp_path):
    main(["fid", "--ckpt_path", str(v2_checkpoint), *ADAPTIVE, "--num_samples=6", "--batch_size=4", *TINY, *CPU,
          f"--quality.cache_dir={tmp_path / 'cache'}", f"--out={tmp_path / 'fid.json'}"])  # fmt: skip
    sampler = json.loads((tmp_path / "fid.json").read_text())["sampler"]
    shards = sorted((tmp_path / "fid_samples" / "shards").glob("*.npz"))
    nfe = np.concatenate([np.load(shard)["nfe"] for shard in shards])
    assert len(nfe) == 6 and (nfe % 2 == 1).all()  # 2 per step and the denoising step
    assert sampler["nfe"] == pytest.approx(nfe.mean(), abs=0.005) and sampler["nfe_max"] == nfe.max()
    assert sampler["init_args"]["eps_rel"] == 0.05
    record = json.loads((tmp_path / "fid_samples" / "sample.json").read_text())
    assert record["nfe"] is None  # the set's own record: written before drawing (fid.json has the counts)


def test_a_stopped_adaptive_sample_run_records_the_nfe_of_an_uninterrupted_one(v2_checkpoint, tmp_path, monkeypatch,
                                                                               capsys):
    args = ["sample", "--ckpt_path", str(v2_checkpoint), *ADAPTIVE, "--num_samples=5", "--batch_size=2", *CPU]
    main([*args, f"--out_dir={tmp_path / 'straight'}"])
    straight = json.loads((tmp_path / "straight" / "sample.json").read_text())
    assert "per sample on average, at most" in capsys.readouterr().out
    write = SampleStore.write_shard

    def killed_after_one(self, indices, samples, nfe=None):
        if any(self.shard_dir.glob("*.npz")):
            raise KeyboardInterrupt("killed")
        return write(self, indices, samples, nfe)

    monkeypatch.setattr(SampleStore, "write_shard", killed_after_one)
    with pytest.raises((SystemExit, KeyboardInterrupt)):  # Lightning turns the interrupt into an exit
        main([*args, f"--out_dir={tmp_path / 'resumed'}"])
    monkeypatch.setattr(SampleStore, "write_shard", write)
    main([*args, f"--out_dir={tmp_path / 'resumed'}"])
    resumed = json.loads((tmp_path / "resumed" / "sample.json").read_text())
    assert resumed["drawn_by_this_run"] == 3 and straight["drawn_by_this_run"] == 5
    assert (resumed["nfe"], resumed["nfe_max"]) == (straight["nfe"], straight["nfe_max"])
    assert isinstance(straight["nfe"], float) and straight["nfe_max"] >= straight["nfe"]
