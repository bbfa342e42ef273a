"""Sweeps on a cluster: a preempted trial continues from its checkpoint (the same weights as an uninterrupted
trial, bit for bit), and a stalled worker whose trial was taken over cannot touch the new attempt."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from cli_runs import CONFIGS, fit_digits

from ncsn_pl.tools.sweep.runner import Sweep, SweepStopped, carry_over

TESTS = Path(__file__).parent
REPO = TESTS.parent
FIT = ["--trainer.limit_train_batches=4", "--trainer.max_epochs=2", "--trainer.max_steps=-1",
       "--data.init_args.batch_size=8", "--trainer.limit_val_batches=0", "--trainer.log_every_n_steps=1",
       "--data.init_args.dequantize=true", "--data.init_args.random_flip=true"]  # fmt: skip
PREEMPT = '--trainer.callbacks=[{"class_path": "cluster_runs.SigtermAt", "init_args": {"step": 3}}]'


def fit_sweep() -> dict:
    return {"method": "grid", "metric": {"name": "train/loss", "goal": "minimize"},
            "parameters": {"model.lr": {"values": [0.002]}},
            "command": ["${env}", "${interpreter}", "-m", "ncsn_pl", "fit", "--config",
                        str(CONFIGS / "quickstart.yaml"), "--config", str(CONFIGS / "cpu_smoke.yaml"), "${args}"]}


@pytest.mark.slow  # about 2 minutes: two fit attempts in processes of their own, and a straight fit
def test_a_preempted_fit_trial_continues_to_the_weights_of_an_uninterrupted_one(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), str(TESTS)]))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    quiet, out = open(os.devnull, "w"), tmp_path / "sweep"
    sweep = Sweep(fit_sweep(), out, extra_args=[*FIT, PREEMPT], wandb_mode="disabled", stream=quiet)
    with pytest.raises(SweepStopped):
        sweep.run(count=1)
    (trial,) = json.loads((out / "sweep.json").read_text())["trials"]
    assert trial["state"] == "interrupted" and trial["interruptions"] == 1 and trial.get("lost", 0) == 0
    first = torch.load(out / "trial-000" / "version_0" / "checkpoints" / "last.ckpt", weights_only=False)
    assert first["global_step"] == 3

    state = Sweep(fit_sweep(), out, extra_args=[*FIT, PREEMPT], wandb_mode="disabled", stream=quiet).run(count=1)
    (trial,) = state["trials"]
    assert trial["state"] == "finished" and trial["dir"] == "trial-000-a2", trial
    assert any(a.endswith("trial-000-a2/version_0/checkpoints/last.ckpt") for a in trial["command"])
    assert len(trial["history"]) == 8  # train/loss of every step, those of the first attempt carried over
    resumed = torch.load(out / "trial-000-a2" / "version_0" / "checkpoints" / "last.ckpt", weights_only=False)
    straight = fit_digits(tmp_path / "straight", *FIT, "--model.lr=0.002", "--trainer.callbacks=[]")
    assert resumed["global_step"] == straight.trainer.global_step == 8
    for name, value in straight.model.state_dict().items():
        assert torch.equal(resumed["state_dict"][name], value), name


# a stand-in trial: writes its metric, then (STALL=1) waits for a file before writing again, as a stalled job does
STALLING_TRIAL = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
    root = Path(args["trainer.default_root_dir"]) / "version_0"
    root.mkdir(parents=True, exist_ok=True)
    (root / "metrics.csv").write_text(f"epoch,step,val/loss\\n0,1,{os.getpid()}\\n")
    if root.parent.name == "trial-000":
        Path(os.environ["MARKER"]).write_text("started")
        while not Path(os.environ["MARKER"] + ".go").exists():
            time.sleep(0.1)
        (root / "metrics.csv").write_text("epoch,step,val/loss\\n0,1,-1\\n")  # late writes go to its own attempt
""")


def test_a_stalled_worker_cannot_alter_the_new_attempt(tmp_path):
    script = tmp_path / "trial.py"
    script.write_text(STALLING_TRIAL)
    config = {"method": "grid", "metric": {"name": "val/loss", "goal": "minimize"},
              "parameters": {"x": {"values": [1]}}, "command": ["${env}", "${interpreter}", str(script), "${args}"],
              "program": str(script)}
    path, out, marker = tmp_path / "sweep.yaml", tmp_path / "sweep", tmp_path / "marker"
    path.write_text(json.dumps(config))
    env = {**os.environ, "PYTHONPATH": str(REPO), "MARKER": str(marker)}
    code = "import sys; from ncsn_pl.tools.sweep import main; main(sys.argv[1:])"
    worker = subprocess.Popen([sys.executable, "-c", code, str(path), "--out", str(out), "--heartbeat", "0.2",
                               "--stale-after", "1.5"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert marker.exists()
        worker.send_signal(signal.SIGSTOP)  # the worker stalls (its trial process too, in effect: it waits)
        time.sleep(2.5)  # past --stale-after
        quiet = open(os.devnull, "w")
        state = Sweep(config, out, stream=quiet, stale_after=1.5, heartbeat=0.2).run(count=1)
        (taken,) = state["trials"]
        assert taken["state"] == "finished" and taken["dir"] == "trial-000-a2" and taken["lost"] == 1
        new_files = {p: p.read_bytes() for p in (out / "trial-000-a2").rglob("*") if p.is_file() and
                     p.name != "heartbeat"}  # fmt: skip
        worker.send_signal(signal.SIGCONT)
        (marker.parent / "marker.go").write_text("go")
        output, _ = worker.communicate(timeout=60)
    finally:
        worker.kill()
    assert "taken over by another worker" in output, output
    assert (out / "trial-000" / "version_0" / "metrics.csv").read_text().endswith("0,1,-1\n")  # its own folder
    assert {p: p.read_bytes() for p in new_files} == new_files
    (after,) = json.loads((out / "sweep.json").read_text())["trials"]
    assert after == taken and after["metric"]["best"] > 0


def test_an_attempt_carries_over_only_work_to_continue(tmp_path):
    fid_trial = tmp_path / "trial-001"
    (fid_trial / "fid_samples" / "shards").mkdir(parents=True)
    (fid_trial / "fid_samples" / "sample.json").write_text('{"complete": false}\n')
    (fid_trial / "fid_samples" / "shards" / "00000000-00000001-n2.npz").write_bytes(b"shard")
    (fid_trial / "heartbeat").touch()
    (fid_trial / "trial.log").write_text("the first attempt's log\n")
    assert carry_over(fid_trial, tmp_path / "trial-001-a2")
    copied = sorted(str(p.relative_to(tmp_path / "trial-001-a2")) for p in (tmp_path / "trial-001-a2").rglob("*"))
    assert copied == ["fid_samples", "fid_samples/sample.json", "fid_samples/shards",
                      "fid_samples/shards/00000000-00000001-n2.npz"]  # fmt: skip
    nothing = tmp_path / "trial-002"
    (nothing / "version_0").mkdir(parents=True)
    (nothing / "version_0" / "config.yaml").write_text("a: 1\n")
    assert not carry_over(nothing, tmp_path / "trial-002-a2") and not (tmp_path / "trial-002-a2").exists()
