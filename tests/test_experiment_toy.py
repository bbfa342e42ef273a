"""The NCSN toy experiment (experiments/toy_mixture/run.py): the paper's finding with exact scores, and the script."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch
from scripts import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "toy_mixture" / "run.py"


@pytest.fixture(scope="module")
def toy():
    yield load_script(SCRIPT, "toy_mixture_run")
    sys.modules.pop("toy_mixture_run", None)


def _row(rows, score, sampler, convention="ours"):
    return next(r for r in rows if (r["score"], r["sampler"], r["convention"]) == (score, sampler, convention))


def test_exact_scores_reproduce_the_papers_finding(toy):
    """Plain Langevin keeps the initial 50/50 split; annealed Langevin recovers the 0.8 / 0.2 weights."""
    source = toy.exact_source(toy.paper_mixture(), toy.paper_sigmas())
    rows, samples = toy.run_trials([source], seeds=[0], num_samples=1500, conventions=["ours"],
                                   keep_samples_of_seed=0)
    plain, annealed = _row(rows, "exact", "plain"), _row(rows, "exact", "annealed")
    assert annealed["(5,5)"]["mean"] == pytest.approx(0.8, abs=0.05)
    assert plain["(5,5)"]["mean"] == pytest.approx(0.5, abs=0.1)
    for row in (plain, annealed):
        assert row["(5,5)"]["mean"] + row["(-5,-5)"]["mean"] == pytest.approx(1.0)
    # plain Langevin samples the data itself: N(mu, I) puts exp(-8) of its mass beyond radius 4
    assert plain["off_mode"]["mean"] < 0.01
    assert samples[("exact", "plain", "ours")].shape == (1500, 2)


def test_mode_fractions_count_nearest_means_and_off_mode_points(toy):
    x = torch.tensor([[5.0, 5.0], [4.0, 6.0], [-5.0, -5.0], [1.0, 0.5], [20.0, 20.0], [math.nan, 0.0],
                      [-6.0, -4.0], [5.5, 4.0]])
    fractions = toy.mode_fractions(x)
    # (1, 0.5) is nearer (5,5) and 4.3 from it: off-mode; (20, 20) is off-mode; NaN belongs to no mode
    assert fractions["(5,5)"] == pytest.approx(5 / 8)
    assert fractions["(-5,-5)"] == pytest.approx(2 / 8)
    assert fractions["off_mode"] == pytest.approx(3 / 8)


def test_iid_samples_of_the_mixture_have_the_true_weights(toy):
    row = toy.data_row(toy.paper_mixture(), seeds=[0, 1, 2], num_samples=4000)
    assert row["(5,5)"]["mean"] == pytest.approx(0.8, abs=0.02)
    assert len(row["(5,5)"]["per_seed"]) == 3 and row["(5,5)"]["std"] > 0


def test_script_writes_results_tables_and_figures(toy, tmp_path, capsys):
    out = tmp_path / "toy"
    results = toy.main(["--exact-only", "--out-dir", str(out), "--seeds", "0", "1", "--num-samples", "300",
                        "--plain-steps", "40", "--n-steps-each", "8"])
    saved = json.loads((out / "results.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(results["rows"]))
    # i.i.d. row, then plain and annealed for each of the two step conventions
    assert [(r["sampler"], r["convention"]) for r in saved["rows"]] == [
        ("iid", "-"), ("plain", "ours"), ("annealed", "ours"), ("plain", "official"), ("annealed", "official")]
    assert [r["step"] for r in saved["rows"][1:]] == [0.1, 0.1, 0.05, 0.05]
    assert all(r["(5,5)"]["per_seed"] and len(r["(5,5)"]["per_seed"]) == 2 for r in saved["rows"])
    markdown = (out / "results.md").read_text()
    assert "python experiments/toy_mixture/run.py --exact-only" in markdown
    assert "| exact | annealed | official | 0.05 |" in markdown
    for name in ("samples.png", "samples_official_step.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "annealed Langevin puts" in capsys.readouterr().out


def test_script_refuses_to_overwrite_results(toy, tmp_path):
    (tmp_path / "results.md").write_text("committed")
    with pytest.raises(SystemExit, match="--overwrite"):
        toy.main(["--exact-only", "--out-dir", str(tmp_path)])
    assert (tmp_path / "results.md").read_text() == "committed"


def test_script_says_what_it_needs_for_a_missing_checkpoint(toy, tmp_path):
    missing = tmp_path / "nope.ckpt"
    with pytest.raises(SystemExit, match=r"does not exist.*python -m ncsn_pl fit --config configs/toy_mixture.yaml"):
        toy.main(["--ckpt_path", str(missing), "--out-dir", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_script_trains_loads_and_samples_a_network(toy, tmp_path):
    """The learned-score path end to end: a 20-step fit through the CLI, load_from_checkpoint, sampling."""
    out = tmp_path / "out"
    results = toy.main(["--root-dir", str(tmp_path / "runs"), "--fit-arg=--trainer.max_steps=20",
                        "--fit-arg=--trainer.limit_val_batches=2", "--out-dir", str(out), "--seeds", "0",
                        "--num-samples", "200", "--plain-steps", "20", "--n-steps-each", "5", "--no-plots",
                        "--conventions", "ours"])
    assert (tmp_path / "runs" / "version_0" / "checkpoints" / "last.ckpt").is_file()
    scores = {r["score"] for r in results["rows"]}
    assert {"exact", "exact, sigma=1", "learned"} <= scores
    errors = results["learned"]["score_errors"]
    assert [e["level"] for e in errors] == list(range(10)) and all(e["relative_error"] > 0 for e in errors)
    assert "--trainer.max_steps=20" in results["learned"]["train_command"]
