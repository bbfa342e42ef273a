"""Settings given to ``sample`` and ``fid`` on top of a checkpoint: ``--model.*`` sampler settings apply to the
checkpoint's model, schedule changes are refused in one line; ``fid --wandb`` puts a result into W&B."""

import json
from pathlib import Path

import pytest

from ncsn_pl.commands.cli import main

CONFIGS = Path(__file__).parents[1] / "configs"
CPU = ["--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.enable_progress_bar=false"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """``last.ckpt`` of a 2-step NCSN run on the digits (quickstart + cpu_smoke: n_steps_each 1), step_lr 1e-5."""
    root = tmp_path_factory.mktemp("fit")
    main(["fit", "--config", str(CONFIGS / "quickstart.yaml"), "--config", str(CONFIGS / "cpu_smoke.yaml"),
          f"--trainer.default_root_dir={root}", f"--trainer.logger.init_args.save_dir={root}",
          "--trainer.callbacks=[]", "--trainer.limit_val_batches=0.0", "--data.init_args.batch_size=8",
          "--model.step_lr=1e-5"])  # fmt: skip
    (path,) = root.rglob("last.ckpt")
    return path


def sample(checkpoint: Path, out: Path, *extra: str) -> dict:
    main(["sample", "--ckpt_path", str(checkpoint), "--num_samples=1", f"--out_dir={out}", "--save_png=false",
          *CPU, *extra])  # fmt: skip
    return json.loads((out / "sample.json").read_text())


def test_model_sampler_settings_on_sample_apply_to_the_checkpoint_s_model(checkpoint, tmp_path):
    record = sample(checkpoint, tmp_path / "two", "--model.n_steps_each", "2")
    assert record["sampler"]["init_args"] == {"n_steps_each": 2, "step_lr": 1e-5, "denoise": False}
    assert record["nfe"] == 20  # L = 10 levels x 2 steps
    # a value equal to ScoreModel's default (2e-5) still replaces the checkpoint's
    record = sample(checkpoint, tmp_path / "default", "--model.step_lr=2e-5")
    assert record["sampler"]["init_args"] == {"n_steps_each": 1, "step_lr": 2e-5, "denoise": False}


def test_a_schedule_setting_on_sample_is_refused_in_one_line_that_says_what_to_use(checkpoint, tmp_path):
    with pytest.raises(ValueError, match=r"^sample draws with the checkpoint's schedule and network, so "
                                         r"--model.sigma_max cannot change; leave it out\. .*--sampler") as error:
        sample(checkpoint, tmp_path, "--model.sigma_max=3")
    assert "\n" not in str(error.value)
    assert not (tmp_path / "sample.json").exists()
