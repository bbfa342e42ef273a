"""Where ``fid`` and ``sample`` take their numbers and models from: the papers' reference statistics files
(``--ref_stats``, both layouts, made here), our statistics exported in the pytorch-fid layout (``--export_stats``),
and the official NCSN / NCSNv2 checkpoints with their configs (``--official_ckpt``, small files in the official
formats written here)."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from fake_datasets import write_images
from networks_reference import with_sigmas
from official_checkpoints import write_v1, write_v2
from PIL import Image
from tiny_models import TinyFeatures

from ncsn_pl.commands.arguments import complete_command_args
from ncsn_pl.commands.cli import main
from ncsn_pl.core.samplers import AnnealedLangevin
from ncsn_pl.data import ImageDataModule
from ncsn_pl.metrics import QualityOptions, ReferenceStatsError, SampleQuality
from ncsn_pl.networks import NCSNv2
from ncsn_pl.training import ScoreModel

CPU = ["--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.enable_progress_bar=false"]
TINY = ["--quality.feature_extractor=tiny_models.TinyFeatures"]


@pytest.fixture(scope="module")
def pngs(tmp_path_factory) -> Path:
    """Nine 8x8 gray images to score."""
    folder = tmp_path_factory.mktemp("pngs")
    rng = np.random.default_rng(0)
    for i in range(9):
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def real_features(n: int = 30) -> torch.Tensor:
    quality = SampleQuality(QualityOptions(feature_extractor=TinyFeatures()))
    return quality.extract(ImageDataModule(dataset="digits").train_data(n)).double()


def score(tmp_path, *args: str) -> dict:
    main(["fid", *TINY, f"--quality.cache_dir={tmp_path / 'cache'}", f"--out={tmp_path / 'fid.json'}", *CPU, *args])
    return json.loads((tmp_path / "fid.json").read_text())


# ------------------------------------------------------------------ reference statistics
def test_ref_stats_in_both_layouts_give_the_fid_against_the_data_set(pngs, tmp_path):
    against_data = score(tmp_path, "--images", str(pngs), "--dataset=digits", "--num_real=30")
    features = real_features()
    mu, sigma = features.mean(0), torch.cov(features.T)
    np.savez(tmp_path / "pytorch_fid.npz", mu=mu.numpy(), sigma=sigma.numpy())  # pytorch-fid / TTUR layout
    np.savez(tmp_path / "score_sde.npz", pool_3=features.float().numpy(), logits=np.zeros((30, 3)))  # score_sde

    ttur = score(tmp_path, "--images", str(pngs), "--ref_stats", str(tmp_path / "pytorch_fid.npz"))  # no data set
    assert ttur["fid"] == pytest.approx(against_data["fid"], rel=1e-5)
    assert ttur["real"] == {"reference_stats": str(tmp_path / "pytorch_fid.npz"), "layout": "pytorch-fid",
                            "num_images": None, "resize": None,  # a file that records no resize
                            "sha256": hashlib.sha256((tmp_path / "pytorch_fid.npz").read_bytes()).hexdigest()}
    assert ttur["num_real"] is None and ttur["num_samples"] == 9

    sde = score(tmp_path, "--images", str(pngs), "--ref_stats", str(tmp_path / "score_sde.npz"),
                "--quality.precision_recall=true", "--quality.kid=true", "--quality.kid_subset_size=9")  # fmt: skip
    assert sde["fid"] == pytest.approx(against_data["fid"], rel=1e-5)
    assert sde["real"]["layout"] == "score_sde" and sde["num_real"] == 30
    assert 0 <= sde["precision"] <= 1 and 0 <= sde["recall"] <= 1 and "kid" in sde


def test_ref_stats_by_name_come_from_the_cache_and_are_recorded(pngs, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    placed = tmp_path / "xdg" / "ncsn_pl" / "reference_stats" / "fid_stats_cifar10_train.npz"
    placed.parent.mkdir(parents=True)
    features = real_features()
    np.savez(placed, mu=features.mean(0).numpy(), sigma=torch.cov(features.T).numpy())  # a small stand-in
    by_file = score(tmp_path, "--images", str(pngs), "--ref_stats", str(placed))
    by_name = score(tmp_path, "--images", str(pngs), "--ref_stats", "cifar10-train")
    assert by_name["fid"] == by_file["fid"]
    assert by_name["real"] == {"reference_stats": str(placed), "name": "cifar10-train", "layout": "pytorch-fid",
                               "num_images": None, "resize": "tf1",
                               "sha256": hashlib.sha256(placed.read_bytes()).hexdigest()}  # fmt: skip
    placed.unlink()

    def offline(url, dst, *args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    (tmp_path / "fid.json").unlink()
    with pytest.raises(FileNotFoundError, match=rf"--ref_stats cifar10-train: {placed} is not there and the download "
                                                r"failed \(Network is unreachable\); offline, download "):  # fmt: skip
        score(tmp_path, "--images", str(pngs), "--ref_stats", "cifar10-train")
    assert not (tmp_path / "fid.json").exists()


def test_ref_stats_of_the_wrong_layout_or_dimension_stop_with_what_was_found(pngs, tmp_path):
    np.savez(tmp_path / "wide.npz", mu=np.zeros(8), sigma=np.eye(8))
    with pytest.raises(ReferenceStatsError, match="mu and sigma describe 8-dimensional features, but the feature "
                                                  "extractor in use gives 4"):  # fmt: skip
        score(tmp_path, "--images", str(pngs), "--ref_stats", str(tmp_path / "wide.npz"))
    np.savez(tmp_path / "other.npz", means=np.zeros(4))
    with pytest.raises(ReferenceStatsError, match=r"unknown layout, keys \['means'\]"):
        score(tmp_path, "--images", str(pngs), "--ref_stats", str(tmp_path / "other.npz"))
    np.savez(tmp_path / "ttur.npz", mu=np.zeros(4), sigma=np.eye(4))
    with pytest.raises(ReferenceStatsError, match="holds only mu and sigma .* precision/recall needs the real images' "
                                                  "feature vectors; compare with real images instead"):  # fmt: skip
        score(tmp_path, "--images", str(pngs), "--ref_stats", str(tmp_path / "ttur.npz"),
              "--quality.precision_recall=true")  # fmt: skip
    assert not (tmp_path / "fid.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.npz", "ttur.npz", "wide.npz"]  # nothing else


def test_our_statistics_exported_in_the_pytorch_fid_layout_from_the_command_line(pngs, tmp_path):
    exported = tmp_path / "digits_train_30.npz"
    record = score(tmp_path, "--dataset=digits", "--num_real=30", "--export_stats", str(exported))  # export only
    assert record["exported_stats"] == str(exported) and record["num_samples"] == 0 and "fid" not in record
    with np.load(exported) as stats:
        assert sorted(stats.files) == ["mu", "sigma"] and stats["mu"].dtype == np.float64
        features = real_features()
        np.testing.assert_allclose(stats["mu"], features.mean(0).numpy(), rtol=1e-10)
        np.testing.assert_allclose(stats["sigma"], torch.cov(features.T).numpy(), rtol=1e-8, atol=1e-12)
    against_data = score(tmp_path, "--images", str(pngs), "--dataset=digits", "--num_real=30")
    against_file = score(tmp_path, "--images", str(pngs), "--ref_stats", str(exported))
    assert against_file["fid"] == pytest.approx(against_data["fid"], rel=1e-9)


# ------------------------------------------------------------------ official checkpoints
def test_official_ncsn_checkpoint_samples_like_the_official_runner(tmp_path):
    ckpt, net = write_v1(tmp_path / "run" / "logs" / "mnist")
    config = str(ckpt.parent / "anneal.yml")
    # the official runner's sampler (anneal_runner.py test(): T = 100, step_lr 2e-5) and the config's schedule
    completed = complete_command_args(["sample", "--official_ckpt", str(ckpt), "--official_config", config])
    assert json.loads(completed[1].split("=", 1)[1]) == {
        "class_path": "ncsn_pl.networks.NCSN", "init_args": {"channels": 1, "ngf": 4, "num_scales": 10}}  # fmt: skip
    assert completed[2:8] == ["--model.sigma_max=1.0", "--model.sigma_min=0.01", "--model.num_scales=10",
                              "--model.n_steps_each=100", "--model.step_lr=2e-05", "--model.denoise=false"]  # fmt: skip
    assert json.loads(completed[8].split("=", 1)[1])["init_args"] == {"dataset": "mnist", "root": "data",
                                                                      "image_size": 8}  # fmt: skip
    out = tmp_path / "samples"
    main(["sample", "--official_ckpt", str(ckpt), "--official_config", config, "--num_samples=3", "--seed=1",
          "--sampler=AnnealedLangevin", "--sampler.n_steps_each=2", f"--out_dir={out}", *CPU])  # fmt: skip
    record = json.loads((out / "sample.json").read_text())
    assert record["official"] == "ncsn" and record["ema"] is False and record["nfe"] == 20
    model = ScoreModel(net, sigma_max=1.0, sigma_min=0.01, num_scales=10, data_shape=(1, 8, 8))
    expected = model.sample(range(3), seed=1, sampler=AnnealedLangevin(2, 2e-5, False))
    torch.testing.assert_close(torch.from_numpy(np.load(out / "samples.npz")["samples"]), expected, rtol=0, atol=1e-5)


def test_official_ncsnv2_checkpoint_samples_and_scores_with_its_ema_weights(tmp_path):
    ckpt, state = write_v2(tmp_path / "exp" / "logs" / "celeba")
    out = tmp_path / "samples"
    main(["sample", "--official_ckpt", str(ckpt), "--num_samples=3", f"--out_dir={out}", *CPU])  # config beside it
    record = json.loads((out / "sample.json").read_text())
    assert (record["official"], record["ema"], record["global_step"]) == ("ncsnv2", True, 5000)
    assert record["config"] == str(ckpt.parent / "config.yml") and record["nfe"] == 13  # L T + 1 (denoise)
    net = with_sigmas(NCSNv2(channels=3, ngf=4), 3.0, 0.01, 6)
    net.load_state_dict(state)
    model = ScoreModel(net, sigma_max=3.0, sigma_min=0.01, num_scales=6, data_shape=(3, 8, 8))
    expected = model.sample(range(3), sampler=AnnealedLangevin(2, 1e-4, True))
    torch.testing.assert_close(torch.from_numpy(np.load(out / "samples.npz")["samples"]), expected, rtol=0, atol=1e-5)

    real = tmp_path / "real"
    write_images(real, n=12, size=(8, 8))
    result = score(tmp_path, "--official_ckpt", str(ckpt), "--num_samples=4", "--dataset=folder",
                   f"--data_root={real}")  # fmt: skip
    assert result["source"]["official"] == "ncsnv2" and result["sampler"]["nfe"] == 13 and result["fid"] >= 0


def test_official_checkpoints_that_do_not_fit_their_config_say_why(tmp_path):
    ckpt, _ = write_v2(tmp_path / "logs", ngf=8)
    config = yaml.load((ckpt.parent / "config.yml").read_text(), Loader=yaml.UnsafeLoader)
    config.model.ngf = 4  # the config of another network
    (tmp_path / "wrong.yml").write_text(yaml.dump(config))
    with pytest.raises(ValueError, match=r"--official_ckpt .*: The checkpoint does not fit NCSNv2: .*wrong shape"):
        main(["sample", "--official_ckpt", str(ckpt), "--official_config", str(tmp_path / "wrong.yml"),
              f"--out_dir={tmp_path / 's'}", *CPU])  # fmt: skip
    config.model.spec_norm = True
    (tmp_path / "sn.yml").write_text(yaml.dump(config))
    with pytest.raises(ValueError, match=r"sets \{'model.spec_norm': True\}"):
        main(["sample", "--official_ckpt", str(ckpt), "--official_config", str(tmp_path / "sn.yml"), *CPU])
    with pytest.raises(FileNotFoundError, match="give the config.yml saved beside the official checkpoint"):
        main(["sample", "--official_ckpt", str(tmp_path / "elsewhere" / "checkpoint.pth"), *CPU])
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").rglob("*.npz"))
