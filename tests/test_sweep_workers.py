"""Several workers on one sweep folder: concurrent workers share the grid, --count counts all of them, and a dead
worker's trial runs once more, then is recorded as failed.

The trials are a stand-in script (any command is a trial to the runner) that logs which parameters it ran with.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import yaml

from ncsn_pl.tools.sweep.runner import Sweep
from ncsn_pl.tools.sweep.state import HEARTBEAT_FILE, locked_state

REPO = Path(__file__).parents[1]
TOY_GRID = REPO / "experiments" / "sweeps" / "toy_grid.yaml"

# appends the trial's parameters to $RUNS_LOG (one line per start), sleeps a little so workers interleave, and
# writes a metrics.csv with the toy metric
FAKE_TRIAL = textwrap.dedent("""
    import json, os, sys, time
    from pathlib import Path
    args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
    root = Path(args.pop("trainer.default_root_dir"))
    with open(os.environ["RUNS_LOG"], "a") as log:
        log.write(json.dumps({"params": args, "pid": os.getpid()}) + "\\n")
    time.sleep(float(os.environ.get("TRIAL_SECONDS", "0.3")))
    (root / "version_0").mkdir(parents=True)
    value = sum(float(v) for v in args.values())
    (root / "version_0" / "metrics.csv").write_text(f"epoch,step,val/sliced_wasserstein\\n0,1,{value}\\n")
""")


@pytest.fixture
def grid_file(tmp_path):
    """The shipped toy grid (3 x 2 x 2) with the stand-in trial as its command."""
    script = tmp_path / "trial.py"
    script.write_text(FAKE_TRIAL)
    config = yaml.safe_load(TOY_GRID.read_text())
    config["command"] = ["${env}", "${interpreter}", str(script), "${args}"]
    path = tmp_path / "toy_grid.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def start_worker(path: Path, out: Path, *options: str, env: dict) -> subprocess.Popen:
    code = "import sys; from ncsn_pl.tools.sweep import main; main(sys.argv[1:])"
    return subprocess.Popen([sys.executable, "-c", code, str(path), "--out", str(out), *options], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def worker_env(tmp_path: Path, **extra: str) -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "RUNS_LOG": str(tmp_path / "runs.log"), **extra}


def started(tmp_path: Path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "runs.log").read_text().splitlines()]


def test_two_concurrent_workers_run_every_grid_point_once(grid_file, tmp_path):
    out = tmp_path / "sweep"
    env = worker_env(tmp_path)
    workers = [start_worker(grid_file, out, env=env) for _ in range(2)]
    outputs = [w.communicate(timeout=300)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    state = json.loads((out / "sweep.json").read_text())
    trials = state["trials"]
    grid = yaml.safe_load(TOY_GRID.read_text())["parameters"]
    expected = {(a, b, c) for a in grid["model.sigma_max"]["values"] for b in grid["model.sigma_min"]["values"]
                for c in grid["model.num_scales"]["values"]}
    points = [(t["params"]["model.sigma_max"], t["params"]["model.sigma_min"], t["params"]["model.num_scales"])
              for t in trials]
    assert len(trials) == 12 and set(points) == expected  # every grid point, none twice in the sweep
    assert [t["state"] for t in trials] == ["finished"] * 12 and all(t["attempts"] == 1 for t in trials)
    runs = started(tmp_path)
    assert len(runs) == 12 and len({json.dumps(r["params"], sort_keys=True) for r in runs}) == 12  # each ran once
    assert len({t["worker"]["id"] for t in trials}) == 2  # both workers took trials
    assert [t["name"] for t in trials] == [f"trial-{i:03d}" for i in range(12)]


def test_count_counts_the_trials_of_all_workers(grid_file, tmp_path, monkeypatch):
    # two workers in threads of this process (each holds its own lock file handle, as separate processes do)
    monkeypatch.setenv("RUNS_LOG", str(tmp_path / "runs.log"))
    config, out, quiet = yaml.safe_load(grid_file.read_text()), tmp_path / "sweep", open(os.devnull, "w")
    workers = [threading.Thread(target=lambda: Sweep(config, out, stream=quiet).run(count=5)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=300)
    trials = json.loads((out / "sweep.json").read_text())["trials"]
    assert len(trials) == 5 and len(started(tmp_path)) == 5 and all(t["state"] == "finished" for t in trials)
    assert len({t["worker"]["id"] for t in trials}) == 2
    # the same command with a larger count continues the sweep where it stopped
    trials = Sweep(config, out, stream=quiet).run(count=7)["trials"]
    assert len(trials) == 7 and len(started(tmp_path)) == 7 and all(t["state"] == "finished" for t in trials)


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def leave_running(sweep: Sweep, worker: dict, heartbeat_age: float = 0.0) -> dict:
    """Claim a trial as if ``worker`` had taken it and then died (its heartbeat ``heartbeat_age`` seconds old)."""
    with locked_state(sweep.out) as box:
        sweep.state = box["state"]
        index = len(sweep.trials)
        trial = {"index": index, "name": f"trial-{index:03d}", "run_id": f"dead{index}", "params": sweep.suggest(),
                 "state": "running", "attempts": 1, "worker": worker}
        sweep.trials.append(trial)
    trial_dir = sweep.out / trial["name"]
    trial_dir.mkdir(parents=True, exist_ok=True)
    (trial_dir / HEARTBEAT_FILE).touch()
    old = time.time() - heartbeat_age
    os.utime(trial_dir / HEARTBEAT_FILE, (old, old))
    return trial


def test_a_dead_workers_trial_runs_once_more_then_fails(grid_file, tmp_path, monkeypatch):
    monkeypatch.setenv("RUNS_LOG", str(tmp_path / "runs.log"))
    monkeypatch.setenv("TRIAL_SECONDS", "0")
    config = yaml.safe_load(grid_file.read_text())
    quiet = open(os.devnull, "w")
    sweep = Sweep(config, tmp_path / "sweep", stream=quiet, stale_after=60.0, heartbeat=1.0)
    # trial 0: its worker ran on this host and its process is gone; trial 1: its worker on another node stopped
    # beating 2 minutes ago; trial 2: another node's worker that is alive (fresh heartbeat)
    gone = leave_running(sweep, {"id": "here:1", "host": socket.gethostname(), "pid": dead_pid()})
    silent = leave_running(sweep, {"id": "node7:12:ab", "host": "node7", "pid": 12}, heartbeat_age=120.0)
    alive = leave_running(sweep, {"id": "node8:13:cd", "host": "node8", "pid": 13})
    state = Sweep(config, tmp_path / "sweep", stream=quiet, stale_after=60.0, heartbeat=1.0).run(count=4)
    trials = state["trials"]
    assert [t["state"] for t in trials] == ["finished", "finished", "running", "finished"]
    assert trials[gone["index"]]["attempts"] == 2 and trials[silent["index"]]["attempts"] == 2
    assert trials[gone["index"]]["lost"] == 1 and trials[gone["index"]]["dir"] == "trial-000-a2"
    assert trials[alive["index"]]["worker"]["id"] == "node8:13:cd"  # a live worker's trial is left alone
    assert len(started(tmp_path)) == 3  # the two abandoned trials ran again, and one new

    # a trial whose worker died on its second attempt too is recorded as failed, with why (preemptions, which
    # end in a checkpoint, are counted apart: three of them before do not count)
    with locked_state(sweep.out) as box:
        box["state"]["trials"][alive["index"]].update(attempts=5, lost=1, interruptions=3)
    os.utime(sweep.out / alive["name"] / HEARTBEAT_FILE, (time.time() - 120, time.time() - 120))
    state = Sweep(config, tmp_path / "sweep", stream=quiet, stale_after=60.0, heartbeat=1.0).run(count=4)
    failed = state["trials"][alive["index"]]
    assert failed["state"] == "failed" and "sent no heartbeat" in failed["error"]
    assert "attempt 2 of 2" in failed["error"] and failed["interruptions"] == 3


def test_a_live_trial_keeps_beating(grid_file, tmp_path, monkeypatch):
    monkeypatch.setenv("RUNS_LOG", str(tmp_path / "runs.log"))
    monkeypatch.setenv("TRIAL_SECONDS", "1.5")
    config = yaml.safe_load(grid_file.read_text())
    sweep = Sweep(config, tmp_path / "sweep", stream=open(os.devnull, "w"), stale_after=2.0, heartbeat=0.2)
    trial = sweep.claim(count=1)
    sweep.run_trial(trial)
    beat = (tmp_path / "sweep" / trial["name"] / HEARTBEAT_FILE).stat().st_mtime
    end = (tmp_path / "sweep" / trial["name"] / "version_0" / "metrics.csv").stat().st_mtime
    assert beat >= end - 0.5  # touched while the trial ran, up to its end
    assert json.loads((tmp_path / "sweep" / "sweep.json").read_text())["trials"][0]["state"] == "finished"
