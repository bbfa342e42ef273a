"""Checkpoints of older versions: NCSNv2 checkpoints written while the network's init arguments still held the
schedule (``num_scales``, ``sigma_max``, ``sigma_min``; before ScoreModel owned it) load and sample as new ones."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ncsn_pl.commands.cli import main
from ncsn_pl.networks import upgrade_network_config

CONFIGS = Path(__file__).parents[1] / "configs"
CPU = ["--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.enable_progress_bar=false"]
NCSNV2 = {"class_path": "ncsn_pl.networks.NCSNv2", "init_args": {"channels": 1, "ngf": 8}}
OLD_SCHEDULE = {"num_scales": 10, "sigma_max": 1.0, "sigma_min": 0.01}  # quickstart's, as the old configs linked it


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> tuple[Path, Path]:
    """``last.ckpt`` of a 2-step NCSNv2 run on the digits, and a copy in the old format."""
    root = tmp_path_factory.mktemp("fit")
    main(["fit", "--config", str(CONFIGS / "quickstart.yaml"), "--config", str(CONFIGS / "cpu_smoke.yaml"),
          f"--trainer.default_root_dir={root}", f"--trainer.logger.init_args.save_dir={root}",
          "--trainer.callbacks=[]", "--trainer.limit_val_batches=0.0", "--data.init_args.batch_size=8",
          f"--model.score_net={json.dumps(NCSNV2)}"])  # fmt: skip
    (new,) = root.rglob("last.ckpt")
    state = torch.load(new, map_location="cpu", weights_only=True)
    state["hyper_parameters"]["score_net"]["init_args"].update(OLD_SCHEDULE)
    old = root / "old_format.ckpt"
    torch.save(state, old)
    return new, old


def test_an_old_format_ncsnv2_checkpoint_samples_as_the_new_one(checkpoints, tmp_path):
    new, old = checkpoints
    for name, path in (("new", new), ("old", old)):
        main(["sample", "--ckpt_path", str(path), "--num_samples=2", "--batch_size=2", f"--out_dir={tmp_path / name}",
              "--save_png=false", *CPU])  # fmt: skip
    drawn = [np.load(tmp_path / name / "samples.npz")["samples"] for name in ("new", "old")]
    assert drawn[0].shape == (2, 1, 8, 8) and np.array_equal(drawn[0], drawn[1])


def test_an_old_format_ncsnv2_checkpoint_continues_training(checkpoints, tmp_path):
    _, old = checkpoints
    cli = main(["fit", "--config", str(CONFIGS / "quickstart.yaml"), "--config", str(CONFIGS / "cpu_smoke.yaml"),
                f"--trainer.default_root_dir={tmp_path}", f"--trainer.logger.init_args.save_dir={tmp_path}",
                "--trainer.callbacks=[]", "--trainer.limit_val_batches=0.0", "--data.init_args.batch_size=8",
                "--trainer.max_epochs=2", "--trainer.max_steps=3", f"--model.score_net={json.dumps(NCSNV2)}",
                f"--ckpt_path={old}"])  # fmt: skip
    assert cli.trainer.global_step == 3 and cli.model.num_scales == 10


def test_only_the_schedule_arguments_a_network_no_longer_takes_are_dropped():
    old = {"class_path": "ncsn_pl.networks.NCSNv2Deeper", "init_args": {"channels": 3, "ngf": 16, **OLD_SCHEDULE}}
    assert upgrade_network_config(old) == {"class_path": old["class_path"], "init_args": {"channels": 3, "ngf": 16}}
    toy = {"class_path": "ncsn_pl.networks.ToyScoreMLP", "init_args": {"dim": 2, **OLD_SCHEDULE}}
    assert upgrade_network_config(toy)["init_args"] == {"dim": 2, "num_scales": 10}  # one embedding row per level
    v1 = {"class_path": "ncsn_pl.networks.NCSN", "init_args": {"channels": 1, "num_scales": 10}}
    assert upgrade_network_config(v1) == v1
    assert upgrade_network_config(NCSNV2) == NCSNV2
    unknown = {"class_path": "not_a_module.Net", "init_args": {"sigma_max": 1.0}}
    assert upgrade_network_config(unknown) == unknown  # left to the parser, which names it
