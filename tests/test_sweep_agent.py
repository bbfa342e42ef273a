"""The online path without a server: W&B's own agent (``wandb.wandb_agent.Agent``) runs a shipped sweep file.

A stub stands in for the W&B server's API (the three GraphQL calls the agent makes: the sweep with its config, the
agent's registration, and the heartbeat that hands out runs); it suggests the trial with W&B's own sweep engine, as
the server's controller does. Everything else is the agent's code: it expands the file's command, writes the
parameters file, sets ``WANDB_RUN_ID`` and starts the trial. The trial logs to W&B offline (there is no server to
reach); its config is a smoke-size copy of the one the file names, in a folder of its own, so the file itself runs
unchanged.
"""

import json
import os
import sys
from pathlib import Path

import pytest
import wandb
import yaml
from wandb import wandb_agent

from ncsn_pl.runs.reading import offline_run_dirs, read_metrics_csv, read_offline_run
from ncsn_pl.tools.sweep.expand import expand_command
from ncsn_pl.tools.sweep.runner import seeded_call
from ncsn_pl.tools.sweep.spec import sweeps_engine

REPO = Path(__file__).parents[1]
SWEEP_FILE = REPO / "experiments" / "sweeps" / "toy_grid.yaml"
RUN_ID = "stubrun01"


class StubServer:
    """What the agent asks of ``wandb.Api()``: ``settings`` and ``_service_api.execute_graphql``."""

    def __init__(self, sweep: dict, commands: list[list[dict]]) -> None:
        self.settings = {"entity": "me", "project": sweep.get("project", "ncsn-pl")}
        self._service_api = self
        self.sweep, self.commands, self.heartbeats = sweep, list(commands), []

    def execute_graphql(self, query: str, variables: dict | None = None, timeout: float | None = None) -> dict:
        if "SweepWithRuns" in query:
            return {"project": {"sweep": {"id": "sweep-1", "name": variables["sweep"], "state": "RUNNING",
                                          "config": yaml.safe_dump(self.sweep), "runs": {"edges": []}}}}
        if "CreateAgent" in query:
            return {"createAgent": {"agent": {"id": "agent-1"}}}
        if "Heartbeat" in query:
            self.heartbeats.append(json.loads(variables["runState"]))
            commands = self.commands.pop(0) if self.commands else []
            return {"agentHeartbeat": {"agent": {"id": "agent-1"}, "commands": json.dumps(commands)}}
        raise AssertionError(f"unexpected query: {query[:80]}")


def run_command(sweep: dict) -> dict:
    """The server's run command for the sweep's first trial: W&B's engine suggests, the file's program goes along."""
    suggestion = seeded_call(0, sweeps_engine().next_run, sweep, [])
    command = {"type": "run", "run_id": RUN_ID, "args": dict(suggestion.config)}
    if "program" in sweep:
        command["program"] = sweep["program"]
    return command


def run_agent(monkeypatch, tmp_path, sweep: dict, commands: list[list[dict]]) -> tuple[StubServer, list, object]:
    server = StubServer(sweep, commands)
    launched = []

    class RecordingProcess(wandb_agent.AgentProcess):
        def __init__(self, *args, **kwargs):
            launched.append(kwargs.get("command"))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(wandb_agent, "AgentProcess", RecordingProcess)
    monkeypatch.setattr(wandb, "Api", lambda *args, **kwargs: server)  # the agent renews its API after each run
    monkeypatch.setattr(wandb_agent.Agent, "POLL_INTERVAL", 0.2)
    monkeypatch.setenv("WANDB_SWEEP_ID", "stubsweep")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    agent = wandb_agent.Agent(server, wandb_agent.multiprocessing.Queue(), sweep_id="stubsweep", count=1)
    agent.run()
    return server, launched, agent


def smoke_copy_of_the_toy_config(folder: Path) -> None:
    """``configs/toy_mixture.yaml`` at smoke size under ``folder`` (the agent runs there, so the file's relative
    ``configs/toy_mixture.yaml`` is this copy)."""
    config = yaml.safe_load((REPO / "configs" / "toy_mixture.yaml").read_text())
    config["trainer"].update(default_root_dir=str(folder / "runs"), max_steps=3, limit_val_batches=2,
                             log_every_n_steps=1, enable_progress_bar=False, enable_model_summary=False)
    (monitor,) = config["trainer"]["callbacks"]
    monitor["init_args"].update(num_samples=50, every_n_epochs=1)
    config["model"]["n_steps_each"] = 1
    config["data"]["init_args"].update(num_train=64, num_val=64)
    (folder / "configs").mkdir()
    (folder / "configs" / "toy_mixture.yaml").write_text(yaml.safe_dump(config))


def test_wandb_agent_runs_a_shipped_sweep_file_and_the_run_logs_its_best_metric(monkeypatch, tmp_path):
    sweep = yaml.safe_load(SWEEP_FILE.read_text())
    smoke_copy_of_the_toy_config(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")  # no server: the trial's W&B run is written offline
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # this checkout's ncsn_pl
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # small tensors: threads only stall when the cores are shared
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")  # `python`
    command = run_command(sweep)
    server, launched, agent = run_agent(monkeypatch, tmp_path, sweep, [[command]])

    # the agent built the command the offline runner builds (with `python` from PATH for ${interpreter})
    params = {name: spec["value"] for name, spec in command["args"].items()}
    (argv,) = launched
    assert argv == expand_command(sweep["command"], params, interpreter="python")
    assert argv[:7] == ["/usr/bin/env", "python", "-m", "ncsn_pl", "fit", "--config", "configs/toy_mixture.yaml"]
    assert agent._finished == 1 and {RUN_ID: True} in server.heartbeats  # it ran and the agent saw it running

    # the trial's run: the swept values reached the fit, the metric was logged, the summary keeps its best value
    (csv_run,) = [p.parent for p in (tmp_path / "runs").rglob("metrics.csv")]
    history = [value for _, value in read_metrics_csv(csv_run / "metrics.csv")["val/sliced_wasserstein"]]
    assert history
    (run_dir,) = offline_run_dirs(tmp_path / "runs")
    assert run_dir.name.endswith(f"-{RUN_ID}")
    record = read_offline_run(run_dir)
    metric = sweep["metric"]["name"]
    assert record["summary"][metric] == {"min": min(history)}
    assert record["config"]["model"]["sigma_max"] == params["model.sigma_max"]
    assert record["name"] == "num_scales=10 sigma_max=10 sigma_min=0.5"  # its swept values, unique in the grid
    assert record["state"] == "finished"


def test_without_program_the_agent_cannot_start_a_run(monkeypatch, tmp_path):
    sweep = yaml.safe_load(SWEEP_FILE.read_text())
    del sweep["program"]
    _, launched, agent = run_agent(monkeypatch, tmp_path, sweep, [[run_command(sweep)], [{"type": "exit"}]])
    assert launched == []
    (command, response), _ = agent._log
    assert command["type"] == "run" and response["exception"] == "KeyError: 'program'"


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "experiments" / "sweeps").glob("*.yaml")))
def test_every_shipped_sweep_file_has_what_the_agent_needs(name):
    sweep = yaml.safe_load((REPO / "experiments" / "sweeps" / name).read_text())
    assert sweep["program"] and "${args}" in sweep["command"]
    assert "WANDB_MODE" not in " ".join(map(str, sweep["command"]))  # nothing forces offline
