"""The command line end to end: every config runs, interpolation, resume, bad input."""


import pytest
import torch
import yaml
from cli_runs import CONFIGS, SMOKE, fit_digits, run_dirs
from fake_datasets import (
    skip_md5_checks,
    write_fake_celeba,
    write_fake_cifar10,
    write_fake_fashion_mnist,
    write_fake_mnist,
)

from ncsn_pl.commands.cli import main


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_fake_mnist(root)
    write_fake_fashion_mnist(root / "FashionMNIST" / "raw")
    write_fake_cifar10(root)
    write_fake_celeba(root, n_train=8)
    return root


@pytest.fixture(autouse=True)
def finish_wandb():
    yield
    import wandb

    wandb.finish()


CONFIG_NAMES = sorted(p.name for p in CONFIGS.glob("*.yaml") if p.name != "cpu_smoke.yaml")


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_every_config_runs_one_step(name, data_root, tmp_path):
    config = yaml.safe_load((CONFIGS / name).read_text())
    toy = config["data"]["class_path"].endswith("ToyDataModule")
    # the smoke overlay narrows image networks (ngf); the toy MLP takes the same run settings on the command line
    overlay = (
        [
            "--trainer.max_steps=2",
            "--trainer.limit_train_batches=2",
            "--trainer.limit_val_batches=2",
            "--model.n_steps_each=1",
            "--trainer.enable_progress_bar=false",
            "--trainer.log_every_n_steps=1",
        ]
        if toy
        else ["--config", SMOKE]
    )
    args = [
        "fit",
        "--config",
        str(CONFIGS / name),
        *overlay,
        "--model.num_scales=10",
        f"--trainer.default_root_dir={tmp_path}",
    ]
    if "root" in config["data"].get("init_args", {}):
        args.append(f"--data.init_args.root={data_root}")
    if toy:
        args += ["--data.init_args.num_train=64", "--data.init_args.batch_size=16"]
    with skip_md5_checks():
        cli = main(args)
    assert cli.trainer.global_step == 2
    (run,) = run_dirs(tmp_path)
    assert (run / "checkpoints" / "last.ckpt").is_file()
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"]["num_scales"] == 10
    assert cli.model.sigmas.shape == (10,)
    if config["model"]["score_net"]["class_path"].endswith("NCSN") or "ToyScoreMLP" in name:
        assert cli.model.score_net.num_scales == 10
    metrics = (run / "metrics.csv").read_text()
    assert "train/loss" in metrics and "val/loss" in metrics


@pytest.mark.slow  # the full-size networks on one smoke-size batch: up to about a minute per config on 2 cores
@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_every_config_runs_with_fast_dev_run_and_no_overlay(name, data_root, tmp_path):
    args = ["fit", "--config", str(CONFIGS / name), "--trainer.fast_dev_run=true",
            f"--trainer.default_root_dir={tmp_path}"]
    if "root" in yaml.safe_load((CONFIGS / name).read_text())["data"].get("init_args", {}):
        args.append(f"--data.init_args.root={data_root}")
    with skip_md5_checks():
        cli = main(args)
    assert cli.trainer.global_step == 1
    assert not list(tmp_path.rglob("*.*"))  # a smoke run writes nothing: no config, checkpoint, grid or metrics


def test_interpolation_follows_command_line_overrides(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "fit",
                "--config",
                str(CONFIGS / "toy_mixture.yaml"),
                "--model.sigma_max=7.5",
                "--model.num_scales=4",
                "--print_config",
            ]
        )
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["score_net"]["init_args"]["num_scales"] == 4
    wandb_logger = printed["trainer"]["logger"][1]["init_args"]
    assert wandb_logger["name"] == "toy-smax7.5-smin1.0-L4"


def test_shared_config_blocks_follow_command_line_overrides(tmp_path, capsys):
    # configs/blocks/loggers.yaml and fid_every_5k.yaml, included by path, interpolate the including config
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(CONFIGS / "cifar10_v2.yaml"), "--model.sigma_max=3", "--model.num_scales=7",
              f"--trainer.default_root_dir={tmp_path}", "--print_config"])  # fmt: skip
    printed = yaml.safe_load(capsys.readouterr().out)
    csv_logger, wandb_logger = (logger["init_args"] for logger in printed["trainer"]["logger"])
    assert csv_logger["save_dir"] == wandb_logger["save_dir"] == str(tmp_path)
    assert wandb_logger["name"] == "cifar10-smax3.0-smin0.01-L7" and wandb_logger["project"] == "ncsn-pl"
    monitor = printed["trainer"]["callbacks"][0]
    assert monitor["class_path"] == "ncsn_pl.training.SampleQualityMonitor"
    assert (monitor["init_args"]["num_samples"], monitor["init_args"]["every_n_steps"]) == (1000, 5000)


def test_resume_continues_the_same_run(tmp_path):
    straight = fit_digits(tmp_path / "straight", "--trainer.max_epochs=2")
    assert straight.trainer.global_step == 4
    first = fit_digits(tmp_path / "resumed", "--trainer.max_epochs=1")
    assert first.trainer.global_step == 2
    (run,) = run_dirs(tmp_path / "resumed")
    resumed = fit_digits(
        tmp_path / "resumed", "--trainer.max_epochs=2", f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}"
    )
    assert resumed.trainer.global_step == 4
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("stop", ["max_steps", "max_time"])
def test_last_checkpoint_holds_the_final_step_when_validation_is_rare(stop, tmp_path, monkeypatch):
    # 2 steps per epoch, validation (and so Lightning's own saving) every 2 epochs: saved at step 4; the fit stops
    # at step 5, inside epoch 2, which has no validation
    if stop == "max_time":  # the Timer callback sets should_stop; simulate its time running out after step 3
        from lightning.pytorch.callbacks import Timer

        def time_runs_out_after_step_5(self, trainer):
            trainer.should_stop = trainer.should_stop or trainer.global_step >= 5

        monkeypatch.setattr(Timer, "_check_time_remaining", time_runs_out_after_step_5)
        extra = ["--trainer.max_time=00:01:00:00", "--trainer.max_epochs=5"]
    else:
        extra = ["--trainer.max_steps=5", "--trainer.max_epochs=5"]
    fit_digits(tmp_path, "--trainer.limit_val_batches=1", "--trainer.check_val_every_n_epoch=2", *extra)
    (run,) = run_dirs(tmp_path)
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == 5
    assert torch.load(run / "checkpoints" / "epoch=1-step=4.ckpt", weights_only=False)["global_step"] == 4


def test_nan_loss_stops_with_step_and_level_and_keeps_last_checkpoint(tmp_path, monkeypatch):
    cli_run = fit_digits(tmp_path, "--trainer.max_epochs=1")
    (run,) = run_dirs(tmp_path)
    last = run / "checkpoints" / "last.ckpt"
    good = torch.load(last, weights_only=False)["state_dict"]

    from ncsn_pl.networks import NCSN

    forward = NCSN.forward

    def poisoned(self, x, levels):
        out = forward(self, x, levels)
        return out + torch.where(levels == 3, float("nan"), 0.0).view(-1, 1, 1, 1)

    monkeypatch.setattr(NCSN, "forward", poisoned)
    with pytest.raises(FloatingPointError, match=r"step 2: noise level\(s\) \[3\]"):
        fit_digits(
            tmp_path, "--trainer.max_epochs=2", f"--ckpt_path={last}", "--trainer.logger.init_args.version=" + run.name
        )
    after = torch.load(last, weights_only=False)["state_dict"]
    assert cli_run.trainer.global_step == 2
    assert all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point())
    assert all(torch.equal(good[k], after[k]) for k in good)


def test_exception_leaves_a_checkpoint_to_resume_from(tmp_path, monkeypatch):
    from ncsn_pl.training import ScoreModel

    step = ScoreModel.training_step

    def interrupted(self, batch, batch_idx):
        if self.global_step == 1:
            raise KeyboardInterrupt  # what a SIGTERM turns into is handled the same way (on_exception)
        return step(self, batch, batch_idx)

    monkeypatch.setattr(ScoreModel, "training_step", interrupted)
    with pytest.raises(SystemExit):
        fit_digits(tmp_path, "--trainer.max_epochs=3")
    (run,) = run_dirs(tmp_path)
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == 1


@pytest.mark.parametrize(
    "override, message",
    [
        ("--data.init_args.dataset=imagenet", "Unknown data.dataset 'imagenet'"),
        ("--model.score_net.init_args.channels=3", "data have 1 channel"),
        ("--model.sigma_min=2.0", "sigma_min .* must be smaller than sigma_max"),
        ("--model.sigmaa_max=2.0", "sigmaa_max"),
    ],
)
def test_bad_configs_fail_with_a_message_that_says_what_to_fix(override, message, tmp_path, capsys):
    with pytest.raises((ValueError, SystemExit)) as info:
        fit_digits(tmp_path, "--trainer.max_epochs=1", override)
    text = str(info.value) + capsys.readouterr().err
    import re

    assert re.search(message, text), text
    assert not list(tmp_path.rglob("*.ckpt"))


@pytest.mark.parametrize("content", ["text", "empty", "truncated"])
def test_fit_with_a_file_that_is_not_a_checkpoint_says_so(content, tmp_path):
    bogus = tmp_path / "notes.ckpt"
    if content == "truncated":  # a checkpoint cut short, e.g. by a full disk
        torch.save({"state_dict": {"w": torch.zeros(1000)}}, bogus)
        bogus.write_bytes(bogus.read_bytes()[:3000])
    else:
        bogus.write_bytes(b"not a checkpoint\n" if content == "text" else b"")
    with pytest.raises(ValueError, match="notes.ckpt' is not a PyTorch checkpoint"):
        fit_digits(tmp_path / "run", "--trainer.max_epochs=1", f"--ckpt_path={bogus}")
    assert not list((tmp_path / "run").rglob("*.ckpt"))


def test_missing_dataset_says_where_it_looked(tmp_path, capsys):
    with pytest.raises((FileNotFoundError, SystemExit)) as info:
        main(
            [
                "fit",
                "--config",
                str(CONFIGS / "mnist.yaml"),
                "--config",
                SMOKE,
                f"--trainer.default_root_dir={tmp_path}",
                f"--data.init_args.root={tmp_path / 'nowhere'}",
            ]
        )
    text = str(info.value) + capsys.readouterr().err
    assert "nowhere" in text and "train-images-idx3-ubyte" in text and "data.download" in text
    assert not list(tmp_path.rglob("*.ckpt"))


def test_auto_schedule_follows_ncsnv2_rules_with_ema(tmp_path):
    from ncsn_pl.core.sigmas import max_pairwise_distance, num_scales_from_ratio_rule
    from ncsn_pl.data import ImageDataModule

    cli = fit_digits(
        tmp_path,
        "--trainer.max_epochs=1",
        "--model.score_net=ncsn_pl.networks.NCSNv2",
        "--model.score_net.init_args.channels=1",
        "--model.score_net.init_args.ngf=8",
        "--model.sigma_max=auto",
        "--model.num_scales=auto",
        "--model.step_lr=auto",
        "--trainer.callbacks+=lightning.pytorch.callbacks.EMAWeightAveraging",
    )
    data = ImageDataModule(dataset="digits")
    data.setup("fit")
    sigma_max, exact = max_pairwise_distance(data.train_data())
    num_scales, _ = num_scales_from_ratio_rule(sigma_max, 0.01, 64)
    model = cli.model
    assert exact and model.hparams.sigma_max == pytest.approx(sigma_max)
    assert model.hparams.num_scales == num_scales == model.sigmas.numel() == model.score_net.sigmas.numel()
    assert 0 < model.hparams.step_lr < 0.01**2
    (run,) = run_dirs(tmp_path)
    saved = yaml.safe_load((run / "config.yaml").read_text())["model"]
    assert saved["num_scales"] == num_scales and saved["sigma_max"] == pytest.approx(sigma_max)
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["hyper_parameters"]["num_scales"] == num_scales
    assert checkpoint["state_dict"]["sigmas"].shape == (num_scales,)


def test_auto_num_scales_with_per_level_network_says_what_to_set(tmp_path):
    with pytest.raises(ValueError, match="has 10 noise levels but the schedule has"):
        fit_digits(tmp_path, "--trainer.max_epochs=1", "--model.sigma_max=auto", "--model.num_scales=auto",
                   "--model.score_net.init_args.num_scales=10")


@pytest.mark.parametrize(
    ("net", "size", "message"),
    [
        ("NCSN", 7, r"NCSN halves the image size 1 time\(s\), so height and width must be multiples of 2, but the "
                    r"data are 7x7: set data.init_args.image_size to 6 or 8"),
        ("NCSNv2", 9, r"NCSNv2 halves .* multiples of 2, but the data are 9x9: set data.init_args.image_size to 8 or "
                      r"10"),
        ("NCSNv2Deeper", 10, r"multiples of 4, but the data are 10x10: set data.init_args.image_size to 8 or 12"),
    ],
)
def test_an_image_size_the_network_cannot_take_stops_fit_before_anything_is_written(
    net, size, message, tmp_path, monkeypatch
):
    monkeypatch.setenv("WANDB_MODE", "offline")  # a W&B logger that started would leave a run folder
    with pytest.raises(ValueError, match=message):
        fit_digits(tmp_path / "runs", "--trainer.max_epochs=1", f"--model.score_net=ncsn_pl.networks.{net}",
                   "--model.score_net.init_args.channels=1", "--model.score_net.init_args.ngf=8",
                   f"--data.init_args.image_size={size}")  # fmt: skip
    assert not (tmp_path / "runs").exists()  # no run folder, no W&B run, no checkpoint


def test_fit_help_is_short_and_lists_the_networks(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    text = capsys.readouterr().out
    assert len(text.splitlines()) < 400
    import re

    listed = set(re.findall(r"ncsn_pl\.networks\.(\w+)", text))
    assert {"NCSN", "NCSNv2", "NCSNv2Deeper", "NCSNv2Deepest", "ToyScoreMLP"} <= listed
    assert "torch.nn.Linear" not in text  # the network's type is ours, not every nn.Module


def _overlay(path, *callbacks):
    items = [{"class_path": f"ncsn_pl.training.{name}", "init_args": {"num_samples": n}} for name, n in callbacks]
    path.write_text(yaml.safe_dump({"trainer": {"callbacks": items}}))
    return str(path)


def test_an_overlay_listing_other_classes_in_a_merged_list_is_refused(tmp_path, capsys):
    # lists of the same length merge item by item: the overlay's SampleGrid would keep the monitor's schedule
    base = str(CONFIGS / "fashion_cpu30_v1.yaml")  # callbacks: SampleQualityMonitor, SampleGrid
    swapped = _overlay(tmp_path / "swapped.yaml", ("SampleGrid", 16), ("SampleQualityMonitor", 10))
    with pytest.raises(ValueError, match=r"swapped.yaml lists SampleGrid as item 0 of trainer.callbacks, where "
                                         r".*fashion_cpu30_v1.yaml lists SampleQualityMonitor.*"
                                         r"\(SampleQualityMonitor, SampleGrid\)"):  # fmt: skip
        main(["fit", "-c", base, f"--config={swapped}", "--print_config"])
    # the same classes in the same order merge (the base's settings stay where the overlay sets none) ...
    same = _overlay(tmp_path / "same.yaml", ("SampleQualityMonitor", 10), ("SampleGrid", 16))
    with pytest.raises(SystemExit):
        main(["fit", "--config", base, "--config", same, "--print_config"])
    monitor, grid = yaml.safe_load(capsys.readouterr().out)["trainer"]["callbacks"]
    assert (monitor["init_args"]["num_samples"], monitor["init_args"]["every_n_steps"]) == (10, 1500)
    assert grid["class_path"] == "ncsn_pl.training.SampleGrid" and grid["init_args"]["num_samples"] == 16
    # ... and a list of another length replaces the base's
    shorter = _overlay(tmp_path / "shorter.yaml", ("SampleGrid", 9))
    with pytest.raises(SystemExit):
        main(["fit", "--config", base, "--config", shorter, "--print_config"])
    (grid,) = yaml.safe_load(capsys.readouterr().out)["trainer"]["callbacks"]
    assert (grid["class_path"], grid["init_args"]["num_samples"], grid["init_args"]["every_n_steps"]) == (
        "ncsn_pl.training.SampleGrid", 9, 0)  # fmt: skip


def test_a_list_item_given_as_a_shared_block_is_checked_by_the_block_s_class(tmp_path):
    # cifar10_v2.yaml lists blocks/fid_every_5k.yaml (a SampleQualityMonitor), SampleGrid, EMAWeightAveraging
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(yaml.safe_dump({"trainer": {"callbacks": [
        {"class_path": "ncsn_pl.training.SampleGrid"}, {"class_path": "ncsn_pl.training.SampleGrid"},
        {"class_path": "lightning.pytorch.callbacks.EMAWeightAveraging"}]}}))  # fmt: skip
    with pytest.raises(ValueError, match="item 0 of trainer.callbacks, where .*cifar10_v2.yaml lists SampleQualityMon"):
        main(["fit", "--config", str(CONFIGS / "cifar10_v2.yaml"), "--config", str(overlay), "--print_config"])
