"""The README's "Your own images" runs as written: the walk-through from a folder of PNGs to a sample grid and an FID
(with a smoke-size overlay), and the DataModule of one's own under the shared logger block."""

import json
import math
import re
import shlex
from pathlib import Path

import yaml
from cli_runs import CONFIGS, SMOKE, run_dirs
from fake_datasets import write_images

from ncsn_pl.commands.cli import main

REPO = Path(__file__).parents[1]


def readme_section(title: str) -> str:
    """The text of the README section ``### title``, up to the next heading."""
    text = (REPO / "README.md").read_text()
    start = text.index(f"### {title}\n")
    return text[start : start + re.search(r"\n##", text[start + 4 :]).start() + 4]


def code_blocks(section: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.DOTALL)


def test_the_walk_through_from_a_folder_of_pngs_runs_as_written(tmp_path, monkeypatch):
    write_images(tmp_path / "my_pngs", n=8, size=(40, 30))
    (script,) = code_blocks(readme_section("From a folder of PNGs to a sample grid and an FID"), "bash")
    commands = [shlex.split(line)[3:] for line in script.splitlines() if line.startswith("python -m ncsn_pl ")]
    assert [command[0] for command in commands] == ["fit", "sample", "fid"]
    # the smoke-size overlay: 2 steps of a narrow network on 16x16 images, 4 samples, FID with a small feature
    # extractor in place of Inception (which tests/test_metrics_inception.py checks)
    overlay = {"fit": ["--config", SMOKE, "--data.init_args.image_size=16"], "sample": ["--num_samples=4"],
               "fid": ["--num_samples=4", "--quality.feature_extractor=tiny_models.TinyFeatures",
                       f"--quality.cache_dir={tmp_path / 'cache'}"]}  # fmt: skip
    monkeypatch.chdir(tmp_path)  # the commands' relative paths (my_pngs, runs/, my_samples) are the user's
    for command in commands:
        args = [str(REPO / arg) if arg.startswith("configs/") else arg for arg in command]
        main([*args, *overlay[command[0]]])
    (run,) = run_dirs(tmp_path / "runs" / "folder")
    resolved = yaml.safe_load((run / "config.yaml").read_text())["model"]
    assert all(isinstance(resolved[k], float | int) for k in ("sigma_max", "num_scales", "step_lr"))  # auto applied
    assert (tmp_path / "my_samples" / "grid.png").is_file()
    assert len(list((tmp_path / "my_samples" / "images").glob("*.png"))) == 4
    record = json.loads((tmp_path / "fid.json").read_text())
    assert record["num_samples"] == 4 and math.isfinite(record["fid"]) and record["fid"] > 0
    assert record["real"]["dataset"] == f"folder:{(tmp_path / 'my_pngs').resolve()}"
    assert record["real"]["settings"]["data_shape"] == [3, 16, 16]


def test_a_datamodule_of_ones_own_runs_with_the_shared_logger_block(tmp_path, monkeypatch):
    section = readme_section("A DataModule of your own")
    (module,) = code_blocks(section, "python")
    (config,) = code_blocks(section, "yaml")
    assert module.startswith("# my_data.py") and config.startswith("# my_config.yaml")
    (tmp_path / "my_data.py").write_text(module)
    (tmp_path / "my_config.yaml").write_text(config.replace("/path/to/ncsn-pl/configs/", f"{CONFIGS}/"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # as python -m puts the working folder on the path
    cli = main(["fit", "--config", "my_config.yaml", "--trainer.max_steps=1", "--trainer.limit_val_batches=1",
                "--trainer.enable_progress_bar=false", "--trainer.log_every_n_steps=1",
                "--model.n_steps_each=1"])  # fmt: skip
    assert cli.trainer.global_step == 1
    (run,) = run_dirs(tmp_path / "runs" / "stripes")
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert isinstance(saved["model"]["sigma_max"], float) and isinstance(saved["model"]["num_scales"], int)  # auto
    # the run is named by the class path: the block needs no data.init_args.dataset (its schedule part is the config's)
    assert saved["trainer"]["logger"][1]["init_args"]["name"].startswith("my_data.NoisyStripes-smax")
    assert "train/loss" in (run / "metrics.csv").read_text()
