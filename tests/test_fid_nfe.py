"""``python -m ncsn_pl fid_nfe``: FID against NFE as a command, on official and trained checkpoints: each point is the
``fid`` command's number, the table, JSON and plot are written, points the network cannot draw are skipped with the
reason, and a rerun draws no sample again."""

import csv
import json
import os
from pathlib import Path

import pytest
import torch
from cli_runs import smoke_checkpoint
from fake_datasets import write_images
from official_checkpoints import write_v2
from PIL import Image
from scripts import load_script

from ncsn_pl.commands.cli import main
from ncsn_pl.core.sigmas import step_lr_from_variance_rule

CPU = ["--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.enable_progress_bar=false"]
TINY = ["--quality.feature_extractor=tiny_models.TinyFeatures", "--num_samples=4", "--batch_size=4"]


def read_table(path) -> list[dict]:
    with path.open() as file:
        return list(csv.DictReader(file))


def test_an_official_checkpoint_gives_the_fid_command_s_number_at_each_point(tmp_path):
    ckpt, _ = write_v2(tmp_path / "logs")
    real = tmp_path / "real"
    write_images(real, n=10, size=(8, 8))
    samplers = [{"class_path": "AnnealedLangevin", "init_args": {"n_steps_each": 1, "step_lr": 1e-4, "denoise": True}},
                {"class_path": "ProbabilityFlowODE", "init_args": {"solver": "euler", "num_steps": 3}}]  # fmt: skip
    common = [*TINY, f"--quality.cache_dir={tmp_path / 'cache'}", "--official_ckpt", str(ckpt), "--dataset=folder",
              f"--data_root={real}", *CPU]  # fmt: skip
    main(["fid_nfe", *common, f"--samplers={json.dumps(samplers)}", f"--out_dir={tmp_path / 'study'}"])

    rows = read_table(tmp_path / "study" / "fid_nfe.csv")
    assert [r["label"] for r in rows] == ["AnnealedLangevin n_steps_each=1 step_lr=0.0001 denoise=True",
                                          "ProbabilityFlowODE solver=euler num_steps=3"]  # fmt: skip
    assert [int(r["nfe"]) for r in rows] == [6 * 1 + 1, 3]  # L T + denoise; N Euler steps (the last to sigma 0)
    main(["fid", *common, "--sampler=ProbabilityFlowODE", "--sampler.solver=euler", "--sampler.num_steps=3",
          f"--out={tmp_path / 'alone.json'}"])  # fmt: skip
    assert float(rows[1]["fid"]) == json.loads((tmp_path / "alone.json").read_text())["fid"]  # the fid command's
    points = json.loads((tmp_path / "study" / "fid_nfe.json").read_text())
    assert points["checkpoint"]["official"] == "ncsnv2" and (points["num_samples"], points["num_scales"]) == (4, 6)
    with Image.open(tmp_path / "study" / "fid_nfe.png") as plot:
        assert plot.format == "PNG" and plot.size[0] > 300


def test_the_default_grid_on_a_trained_checkpoint_skips_what_it_cannot_draw_and_reuses_samples(tmp_path):
    ckpt = smoke_checkpoint(tmp_path / "run")  # NCSN: a level-indexed network, 10 levels
    command = ["fid_nfe", f"--ckpt_path={ckpt}", *TINY, "--num_real=20", f"--quality.cache_dir={tmp_path / 'cache'}",
               f"--out_dir={tmp_path / 'study'}", *CPU]  # fmt: skip
    main([*command, '--points=["ALS T=1", "CAS n=2"]'])
    als, cas = read_table(tmp_path / "study" / "fid_nfe.csv")
    sigmas = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]["sigmas"]
    expected = step_lr_from_variance_rule(float(sigmas[0] / sigmas[1]), float(sigmas[-1]), 1)  # NCSNv2 Technique 4
    assert json.loads(als["init_args"]) == {"n_steps_each": 1, "step_lr": pytest.approx(expected), "denoise": True}
    assert int(als["nfe"]) == 11 and float(als["fid"]) >= 0
    assert cas["fid"] == "" and "visits sigmas between the trained levels" in cas["skipped"]

    record = tmp_path / "study" / "points" / "ALS_T1.json"
    assert json.loads(record.read_text())["drawn_by_this_run"] == 4
    main([*command, '--points=["ALS T=1"]'])  # a rerun: the point's samples are not drawn again, the same FID
    assert json.loads(record.read_text())["drawn_by_this_run"] == 0
    assert float(read_table(tmp_path / "study" / "fid_nfe.csv")[0]["fid"]) == float(als["fid"])
    assert [r["label"] for r in read_table(tmp_path / "study" / "fid_nfe.csv")] == ["ALS T=1"]
    with pytest.raises(ValueError, match=r"--points: no point named \['ALS T=3'\]; the grid's are \['ALS T=1', "):
        main([*command, '--points=["ALS T=3"]'])


def test_the_sampler_study_runs_the_command_on_an_official_checkpoint(tmp_path, monkeypatch):
    study = load_script(Path(__file__).parents[1] / "experiments" / "samplers" / "study.py", "sampler_study")
    ckpt, _ = write_v2(tmp_path / "logs")  # a .pth: the script read its sigmas as a Lightning checkpoint's before
    write_images(tmp_path / "real", n=10, size=(8, 8))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
    fid_args = ["--quality.feature_extractor=tiny_models.TinyFeatures", f"--quality.cache_dir={tmp_path / 'cache'}",
                "--dataset=folder", f"--data_root={tmp_path / 'real'}", "--trainer.accelerator=cpu"]  # fmt: skip
    options = ["--num-samples=4", "--batch-size=4", "--split=train", "--only", "ALS T=1"]
    results = study.main(["--ckpt", str(ckpt), "--out", str(tmp_path / "study"), *options,
                          *(f"--fid-args={arg}" for arg in fid_args)])  # fmt: skip
    assert [r["label"] for r in results] == ["ALS T=1"] and results[0]["nfe"] == 7 and results[0]["fid"] >= 0
    assert results[0]["source"]["official"] == "ncsnv2"  # the point's fid record
    assert (tmp_path / "study" / "results.md").read_text().splitlines()[2].startswith("| ALS T=1 | 7 | ")
    assert (tmp_path / "study" / "fid_vs_nfe.png").is_file()
