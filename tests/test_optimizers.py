"""--optimizer and --lr_scheduler the LightningCLI way; Adam with the model's (the papers') settings by default."""

from __future__ import annotations

import pytest
import torch
from cli_runs import fit_digits, run_dirs

from ncsn_pl.networks import ToyScoreMLP
from ncsn_pl.system.files import load_torch_file
from ncsn_pl.training import ScoreModel
from ncsn_pl.training.optimizers import make_optimizers


def _only(cli):
    (optimizer,) = cli.trainer.optimizers
    return optimizer


def test_without_optimizer_options_the_model_trains_with_adam_and_its_own_settings(tmp_path):
    cli = fit_digits(tmp_path, "--trainer.max_epochs=1", "--model.lr=2e-4", "--model.betas=[0.5, 0.9]")
    optimizer = _only(cli)
    assert type(optimizer) is torch.optim.Adam
    assert optimizer.param_groups[0]["lr"] == 2e-4 and optimizer.param_groups[0]["betas"] == (0.5, 0.9)
    assert cli.trainer.lr_scheduler_configs == []


def test_an_optimizer_and_a_schedule_from_the_command_line_train_and_are_recorded(tmp_path):
    cli = fit_digits(tmp_path, "--trainer.max_epochs=1", "--optimizer=SGD", "--optimizer.lr=0.05",
                     "--optimizer.momentum=0.9", "--lr_scheduler=StepLR", "--lr_scheduler.step_size=1",
                     "--lr_scheduler.gamma=0.5")  # fmt: skip
    optimizer = _only(cli)
    assert type(optimizer) is torch.optim.SGD and optimizer.param_groups[0]["momentum"] == 0.9
    (schedule,) = cli.trainer.lr_scheduler_configs
    assert type(schedule.scheduler) is torch.optim.lr_scheduler.StepLR and schedule.interval == "step"
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.05 * 0.5**2)  # two optimizer steps, halved after each
    (run,) = run_dirs(tmp_path)
    checkpoint = load_torch_file(run / "checkpoints" / "last.ckpt")
    assert checkpoint["hyper_parameters"]["optimizer"]["class_path"] == "torch.optim.SGD"
    assert checkpoint["hyper_parameters"]["lr_scheduler"]["init_args"]["gamma"] == 0.5
    assert "optimizer:" in (run / "config.yaml").read_text()


def test_a_resumed_run_keeps_its_optimizer_and_takes_a_new_learning_rate(tmp_path):
    fit_digits(tmp_path, "--trainer.max_epochs=1", "--optimizer=SGD", "--optimizer.lr=0.001")
    (run,) = run_dirs(tmp_path)
    last = str(run / "checkpoints" / "last.ckpt")
    kept = fit_digits(tmp_path, "--trainer.max_epochs=2", f"--ckpt_path={last}")
    assert type(_only(kept)) is torch.optim.SGD and _only(kept).param_groups[0]["lr"] == 0.001
    changed = fit_digits(tmp_path, "--trainer.max_epochs=3", f"--ckpt_path={last}", "--optimizer=SGD",
                         "--optimizer.lr=0.0001")  # fmt: skip
    assert _only(changed).param_groups[0]["lr"] == 0.0001  # the restored state takes this run's settings


def test_a_checkpoint_written_before_the_optimizer_options_resumes_with_adam(tmp_path):
    fit_digits(tmp_path, "--trainer.max_epochs=1")
    (run,) = run_dirs(tmp_path)
    path = run / "checkpoints" / "last.ckpt"
    checkpoint = load_torch_file(path)
    for key in ("optimizer", "lr_scheduler"):  # as checkpoints of earlier versions are
        del checkpoint["hyper_parameters"][key]
    torch.save(checkpoint, path)
    resumed = fit_digits(tmp_path, "--trainer.max_epochs=2", f"--ckpt_path={path}")
    assert type(_only(resumed)) is torch.optim.Adam and resumed.trainer.global_step > checkpoint["global_step"]


def test_model_adam_settings_beside_another_optimizer_are_named_as_unused():
    sgd = {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.1}}
    with pytest.warns(UserWarning, match="model.lr, model.betas, model.eps and model.weight_decay are not used"):
        model = ScoreModel(ToyScoreMLP(), data_shape=(2,), lr=1e-4, optimizer=sgd)
    optimizer = make_optimizers(model.parameters(), model.hparams)
    assert type(optimizer) is torch.optim.SGD and optimizer.defaults["lr"] == 0.1
