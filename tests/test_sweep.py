"""Offline sweeps: the command expansion, the runner (engine, failures, stop and continue), bad sweep files.

Most trials here are a tiny stand-in script (a trial is any command to the runner), so these tests take
seconds; test_sweep_toy.py runs real `fit` trials of the toy config.
"""

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from ncsn_pl.runs.records import read_sweep_parameters, summary_value, sweep_run_name, write_sweep_parameters
from ncsn_pl.runs.wandb_glue import sweep_parameters
from ncsn_pl.tools.sweep import main
from ncsn_pl.tools.sweep.checks import check_metric_logged, logged_metrics
from ncsn_pl.tools.sweep.runner import Sweep
from ncsn_pl.tools.sweep.spec import (
    SweepFileError,
    check_command_config,
    check_sweep_config,
    expand_command,
    grid_size,
    validate_sweep,
)

SWEEPS = Path(__file__).parents[1] / "experiments" / "sweeps"
REPO = Path(__file__).parents[1]

# A stand-in trial: reads --x=V (and --trainer.default_root_dir), writes a CSVLogger-like metrics.csv whose
# val/loss falls to (x - 2)^2 over three steps. FAIL_ON / SLEEP_ON (environment) make a chosen x fail or hang.
FAKE_TRIAL = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
    x = float(args["x"])
    root = Path(args["trainer.default_root_dir"]) / "version_0"
    root.mkdir(parents=True)
    (root / "config.yaml").write_text(f"model:\\n  x: {x}\\n")
    if os.environ.get("SLEEP_ON") == args["x"]:
        Path(os.environ["MARKER"]).write_text("started")
        time.sleep(120)
    if os.environ.get("FAIL_ON") == args["x"]:
        print("boom: this trial fails on purpose")
        sys.exit(3)
    if os.environ.get("PREEMPT_ON") == args["x"]:
        sys.exit(143)  # what a preempted fit exits with, after its checkpoint
    with open(root / "metrics.csv", "w") as f:
        f.write("epoch,step,train/loss,val/loss\\n")
        for step in range(3):
            f.write(f"0,{step},{9 - step},{(x - 2) ** 2 + 2 - step}\\n")
    print("WANDB_RUN_ID", os.environ["WANDB_RUN_ID"], "WANDB_MODE", os.environ["WANDB_MODE"])
""")


@pytest.fixture
def fake_trial(tmp_path):
    path = tmp_path / "fake_trial.py"
    path.write_text(FAKE_TRIAL)
    return path


def write_sweep(tmp_path, fake_trial, method="grid", parameters=None, **extra):
    config = {
        "method": method,
        "metric": {"name": "val/loss", "goal": "minimize"},
        "parameters": parameters or {"x": {"values": [1.0, 2.0, 3.0]}},
        "command": ["${env}", "${interpreter}", str(fake_trial), "${args}"],
        "program": str(fake_trial),
        **extra,
    }
    path = tmp_path / f"{method}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def state_of(out: Path) -> dict:
    return json.loads((out / "sweep.json").read_text())


# ---------------------------------------------------------------------------------------------- commands
def test_expand_command_like_wandb_agent(monkeypatch):
    monkeypatch.setenv("NCSN_DATA", "/data/x")
    command = ["${env}", "${interpreter}", "-m", "ncsn_pl", "fit", "--config", "configs/toy_mixture.yaml",
               "--data.init_args.root=${envvar:NCSN_DATA}", "${args}"]
    params = {"model.sigma_max": 7.5, "model.num_scales": 4, "trainer.gradient_clip_val": "null"}
    expanded = expand_command(command, params, extra_args=["--trainer.max_steps=3"])
    assert expanded == ["/usr/bin/env", sys.executable, "-m", "ncsn_pl", "fit", "--config",
                        "configs/toy_mixture.yaml", "--data.init_args.root=/data/x", "--trainer.max_steps=3",
                        "--model.sigma_max=7.5", "--model.num_scales=4", "--trainer.gradient_clip_val=null"]
    assert expand_command(["prog", "${args_no_hyphens}"], {"a": 1}) == ["prog", "a=1"]
    assert expand_command(["prog", "${args_json}"], {"a": 1}) == ["prog", '{"a": 1}']
    assert command[-2] == "--data.init_args.root=${envvar:NCSN_DATA}"  # the caller's list is not modified


def test_grid_size_counts_like_the_engine():
    config = {"parameters": {"a": {"values": [1, 2, 3]}, "b": {"value": 1},
                             "c": {"distribution": "int_uniform", "min": 2, "max": 5}}}
    assert grid_size(config) == 12


# ---------------------------------------------------------------------------------------------- the runner
def test_grid_sweep_records_a_failed_trial_and_goes_on(tmp_path, fake_trial, monkeypatch, capsys):
    monkeypatch.setenv("FAIL_ON", "2.0")
    out = tmp_path / "sweep"
    state = main([str(write_sweep(tmp_path, fake_trial)), "--out", str(out)])
    trials = state["trials"]
    assert [t["params"]["x"] for t in trials] == [1.0, 2.0, 3.0]  # the grid, in the engine's order
    assert [t["state"] for t in trials] == ["finished", "failed", "finished"]
    failed = trials[1]
    assert failed["returncode"] == 3 and "exit code 3" in failed["error"] and "boom" in failed["error"]
    assert "boom: this trial fails on purpose" in (out / failed["log"]).read_text()
    for trial in (trials[0], trials[2]):
        x = trial["params"]["x"]
        assert trial["metric"]["best"] == pytest.approx((x - 2) ** 2) and trial["metric"]["best_step"] == 2
        assert trial["metric"]["last"] == pytest.approx((x - 2) ** 2)
        assert trial["history"] == [[s, pytest.approx((x - 2) ** 2 + 2 - s)] for s in range(3)]
        assert trial["metric_source"] == "version_0/metrics.csv"
        log = (out / trial["log"]).read_text()
        assert f"WANDB_RUN_ID {trial['run_id']} WANDB_MODE offline" in log
        assert f"--trainer.default_root_dir={out / trial['name']}" in trial["command"]
    assert state_of(out) == json.loads(json.dumps(state))
    assert (out / "sweep.yaml").is_file()
    assert "1 failed" in capsys.readouterr().out


def test_a_preempted_trial_is_interrupted_not_finished_and_runs_again_on_continue(tmp_path, fake_trial, monkeypatch):
    monkeypatch.setenv("PREEMPT_ON", "2.0")
    out, path = tmp_path / "sweep", write_sweep(tmp_path, fake_trial)
    with pytest.raises(SystemExit) as exit_info:
        main([str(path), "--out", str(out)])
    assert exit_info.value.code == 130
    trials = state_of(out)["trials"]
    assert [t["state"] for t in trials] == ["finished", "interrupted"] and "preempted" in trials[1]["error"]
    monkeypatch.delenv("PREEMPT_ON")
    state = main([str(path), "--out", str(out)])
    assert [(t["params"]["x"], t["state"]) for t in state["trials"]] == [(1.0, "finished"), (2.0, "finished"),
                                                                         (3.0, "finished")]  # fmt: skip


def test_every_trial_failing_exits_non_zero(tmp_path, fake_trial, monkeypatch):
    monkeypatch.setenv("FAIL_ON", "1.0")
    path = write_sweep(tmp_path, fake_trial, parameters={"x": {"values": [1.0]}})
    with pytest.raises(SystemExit) as exit_info:
        main([str(path), "--out", str(tmp_path / "sweep")])
    assert exit_info.value.code == 1
    assert state_of(tmp_path / "sweep")["trials"][0]["state"] == "failed"


def test_a_trial_without_the_metric_fails(tmp_path, fake_trial):
    path = write_sweep(tmp_path, fake_trial, parameters={"x": {"values": [1.0]}})
    config = yaml.safe_load(path.read_text())
    config["metric"]["name"] = "val/fid"
    sweep = Sweep(validate_sweep(config), tmp_path / "sweep", stream=open(os.devnull, "w"))
    (trial,) = sweep.run()["trials"]
    assert trial["state"] == "failed" and trial["returncode"] == 0
    assert "logged no 'val/fid'" in trial["error"]


def test_random_and_bayes_sweeps_follow_the_engine(tmp_path, fake_trial):
    quiet = open(os.devnull, "w")
    parameters = {"x": {"distribution": "uniform", "min": 0.0, "max": 4.0}}
    random_file = yaml.safe_load(write_sweep(tmp_path, fake_trial, "random", parameters).read_text())
    first = Sweep(random_file, tmp_path / "r1", seed=3, stream=quiet).run(count=3)
    again = Sweep(random_file, tmp_path / "r2", seed=3, stream=quiet).run(count=3)
    other = Sweep(random_file, tmp_path / "r3", seed=4, stream=quiet).run(count=3)
    xs = [t["params"]["x"] for t in first["trials"]]
    assert xs == [t["params"]["x"] for t in again["trials"]]  # the seed fixes the suggestions
    assert xs != [t["params"]["x"] for t in other["trials"]]
    assert len(set(xs)) == 3 and all(0.0 <= x <= 4.0 for x in xs)

    bayes_file = yaml.safe_load(write_sweep(tmp_path, fake_trial, "bayes", parameters).read_text())
    sweep = Sweep(bayes_file, tmp_path / "b", stream=quiet)
    state = sweep.run(count=4)
    assert [t["state"] for t in state["trials"]] == ["finished"] * 4
    runs = sweep.engine_runs()  # what the engine saw: every trial's metric
    assert [r.summary_metrics["val/loss"] for r in runs] == [t["metric"]["last"] for t in state["trials"]]
    assert all(r.state == "finished" for r in runs)


def test_random_sweep_needs_a_count(tmp_path, fake_trial, capsys):
    path = write_sweep(tmp_path, fake_trial, "random", {"x": {"distribution": "uniform", "min": 0.0, "max": 1.0}})
    with pytest.raises(SystemExit) as exit_info:
        main([str(path), "--out", str(tmp_path / "sweep")])
    assert exit_info.value.code == 2
    assert "--count" in capsys.readouterr().err
    assert not list((tmp_path / "sweep").glob("trial-*"))


def test_stop_and_continue(tmp_path, fake_trial):
    path = write_sweep(tmp_path, fake_trial)
    out = tmp_path / "sweep"
    marker = tmp_path / "started"
    env = {**os.environ, "SLEEP_ON": "2.0", "MARKER": str(marker), "PYTHONPATH": str(REPO)}
    driver = subprocess.Popen(
        [sys.executable, "-c", "import sys; from ncsn_pl.tools.sweep import main; main(sys.argv[1:])", str(path),
         "--out", str(out)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline and driver.poll() is None:
        time.sleep(0.1)
    assert marker.exists(), driver.communicate()[0]
    driver.send_signal(signal.SIGTERM)  # e.g. a preempted job; Ctrl-C (SIGINT) takes the same path
    output = driver.communicate(timeout=60)[0]
    assert driver.returncode == 130, output
    assert "run the same command again to continue" in output
    stopped = state_of(out)["trials"]
    assert [(t["params"]["x"], t["state"]) for t in stopped] == [(1.0, "finished"), (2.0, "interrupted")]

    state = main([str(path), "--out", str(out)])  # the same command continues: trial 1 again, then trial 2
    assert [(t["params"]["x"], t["state"]) for t in state["trials"]] == [
        (1.0, "finished"), (2.0, "finished"), (3.0, "finished")]
    assert state["trials"][0]["started"] == stopped[0]["started"]  # finished trials are not rerun
    assert not (out / "trial-001" / "version_1").exists()  # the interrupted attempt was cleared

    again = main([str(path), "--out", str(out)])  # nothing left in the grid
    assert len(again["trials"]) == 3
    with pytest.raises(SystemExit) as exit_info:
        main([str(path), "--out", str(out), "--seed", "5"])
    assert exit_info.value.code == 2


# ---------------------------------------------------------------------------------------------- bad files
BAD_FILES = {
    "unknown method": ({"method": "grd"}, "'grd' is not one of"),
    "custom method": ({"method": "custom"}, "method 'custom' cannot run here"),
    "no metric": ({"metric": None}, "no `metric`"),
    "bad goal": ({"metric": {"name": "val/loss", "goal": "lowest"}}, "'lowest' is not one of"),
    "no parameters": ({"parameters": {}}, "no `parameters`"),
    "nested parameters": ({"parameters": {"model": {"parameters": {"sigma_max": {"values": [1.0]}}}}},
                          "nested block"),
    "yaml null": ({"parameters": {"x": {"values": [None, 1.0]}}}, 'write the string "null"'),
    "no ${args}": ({"command": ["${env}", "${interpreter}", "train.py"]}, "has no ${args}"),
    "no program": ({"program": None}, "no `program`"),
    "goal against the metric": ({"metric": {"name": "val/loss", "goal": "maximize"}}, "use goal: minimize"),
    "command that cannot start": ({"command": ["${env}", "${interpreter}", "missing_train.py", "${args}"]},
                                  "'missing_train.py' does not exist"),
    "no such executable": ({"command": ["no-such-binary-here", "${args}"]}, "is not an executable file"),
    "no such module": ({"command": ["${env}", "${interpreter}", "-m", "no_such_module_here", "${args}"]},
                       "no module 'no_such_module_here'"),
    "root dir swept": ({"parameters": {"trainer.default_root_dir": {"values": ["a"]}}}, "cannot be swept"),
    "bad distribution": ({"parameters": {"x": {"distribution": "log_uniform_values", "min": 2.0, "max": 1.0}}},
                         "x: min 2.0 is not less than max 1.0"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_sweep_files_fail_before_any_trial(case, tmp_path, fake_trial, capsys):
    change, message = BAD_FILES[case]
    config = yaml.safe_load(write_sweep(tmp_path, fake_trial).read_text())
    config.update({k: v for k, v in change.items() if v is not None})
    for key in [k for k, v in change.items() if v is None]:
        del config[key]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "sweep"
    with pytest.raises(SystemExit) as exit_info:
        main([str(path), "--out", str(out)])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def toy_sweep(metric: str = "val/loss", config: str = "toy_mixture.yaml", **parameters) -> dict:
    return {"method": "grid", "metric": {"name": metric}, "parameters": parameters, "program": "ncsn_pl/__main__.py",
            "command": ["${env}", "${interpreter}", "-m", "ncsn_pl", "fit", "--config",
                        str(REPO / "configs" / config), "${args}"]}


def test_parameters_must_be_keys_and_values_of_the_commands_config():
    problems = check_command_config(toy_sweep(**{"model.sigma_maxx": {"values": [1.0]},
                                                 "model.num_scales": {"values": [4]}}))
    assert len(problems) == 1
    assert "'model.sigma_maxx' is not a config key" in problems[0] and "model.sigma_max" in problems[0]

    problems = check_command_config(toy_sweep(**{"model.num_scales": {"values": [4, "ten"]}}))
    assert len(problems) == 1 and "model.num_scales=ten" in problems[0] and "model.num_scales" in problems[0]

    with pytest.raises(SweepFileError, match="sigma_maxx"):
        validate_sweep(toy_sweep(**{"model.sigma_maxx": {"values": [1.0]}}))
    nested_key = toy_sweep(**{"data.init_args.num_train": {"values": [64]}, "model.step_lr": {"values": ["auto"]}})
    assert check_command_config(nested_key) == []


def test_the_metric_must_be_one_the_configured_run_logs():
    # the quickstart has no FID callback: no trial could ever report val/fid
    (problem,) = check_command_config(toy_sweep("val/fid", "quickstart.yaml", **{"model.step_lr": {"values": [1e-5]}}))
    assert "'val/fid' is never logged by `fit --config" in problem and "SampleQualityMonitor" in problem
    assert "It logs: train/loss, val/loss." in problem
    # FID needs images; the toy metric needs data of known density
    assert check_command_config(toy_sweep("val/fid", **{"model.sigma_max": {"values": [5.0]}}))
    (problem,) = check_command_config(toy_sweep("val/sliced_wasserstein", "digits_fid.yaml",
                                                **{"model.sigma_max": {"values": [1.0]}}), probe_values=False)
    assert "ToyDataModule" in problem
    # a validation metric with validation switched off, with the fix named
    no_validation = ["--trainer.limit_val_batches=0"]
    (problem,) = check_command_config(toy_sweep(**{"model.sigma_max": {"values": [5.0]}}), no_validation)
    assert "limit_val_batches is 0" in problem
    for metric in ("val/loss", "val/loss_level_0", "train/loss", "val/sliced_wasserstein", "val/mode_weight_error"):
        assert check_command_config(toy_sweep(metric, **{"model.sigma_max": {"values": [5.0]}})) == [], metric
    # a callback from outside the project may log anything: not flagged
    custom = {"trainer": {"callbacks": [{"class_path": "my_project.MetricCallback"}]}}
    assert logged_metrics(custom)[1] is False and check_metric_logged(custom, "val/custom", "fit") == []


def test_a_logger_forced_offline_is_refused():
    forced = ["--trainer.logger.init_args.offline=true"]
    (problem,) = check_command_config(toy_sweep(**{"model.sigma_max": {"values": [5.0]}}), forced, probe_values=False)
    assert "forced offline" in problem and "wandb agent" in problem


def test_model_and_data_seeds_can_be_swept_together():
    # one key each, no clash: the data modules keep their seed out of the hyperparameters the loggers merge
    both = toy_sweep(**{"model.seed": {"values": [0, 1]}, "data.seed": {"values": [0, 1]},
                        "data.init_args.num_train": {"values": [64]}})
    assert check_command_config(both) == []
    (problem,) = check_command_config(toy_sweep(**{"data.sed": {"values": [1]}}), probe_values=False)
    assert "parameter 'data.sed' is not a config key" in problem and "did you mean data.seed" in problem


def test_experiment_sweep_files_validate():
    files = sorted(SWEEPS.glob("*.yaml")) + [REPO / "experiments" / "sigma_study" / "sweep.yaml"]
    # the sweeps that train; the sampler sweep on a checkpoint (a `fid` command) has tests/test_sweep_sampler.py
    files = [path for path in files if "fit" in yaml.safe_load(path.read_text())["command"]]
    assert len(files) >= 10
    methods, configs = set(), set()
    cwd = os.getcwd()
    os.chdir(REPO)  # the files name their config relative to the repository root, as `wandb agent` runs there
    try:
        for path in files:
            config = yaml.safe_load(path.read_text())
            assert check_sweep_config(config) == [], path.name
            # the metric check included: each file's run logs the metric it optimises
            assert check_command_config(config, probe_values=False, check_logging=False) == [], path.name
            validate_sweep(config, check_command=False)  # the engine's own SweepConfig
            methods.add(config["method"])
            configs.add(config["command"][config["command"].index("--config") + 1])
            assert config["program"] == "ncsn_pl/__main__.py"
            assert config["metric"]["name"] == ("val/sliced_wasserstein" if "toy" in path.name else "val/fid")
            assert set(config["parameters"]) <= {f"model.{k}" for k in (
                "sigma_max", "sigma_min", "num_scales", "step_lr", "n_steps_each", "anneal_power")}
    finally:
        os.chdir(cwd)
    assert methods == {"grid", "random", "bayes"}
    assert configs == {f"configs/{n}.yaml" for n in ("toy_mixture", "digits_fid", "mnist", "cifar10")} | {
        "experiments/sigma_study/digits_trial.yaml"}


def test_trials_are_ranked_by_the_value_their_wandb_summary_holds(tmp_path, fake_trial):
    # each run declares a min summary for val/loss (define_metric), so W&B ranks by the best value, not the last;
    # a metric without a declared summary keeps W&B's default, the last value
    assert summary_value("val/loss", [5.0, 1.0, 3.0]) == 1.0 and summary_value("val/is", [2.0, 4.0, 3.0]) == 4.0
    assert summary_value("val/custom", [5.0, 1.0, 3.0]) == 3.0 and summary_value("val/loss", []) is None
    assert math.isnan(summary_value("val/fid", [math.nan]))
    config = yaml.safe_load(write_sweep(tmp_path, fake_trial).read_text())
    sweep = Sweep(config, tmp_path / "sweep", stream=open(os.devnull, "w"))
    histories = {"a": [5.0, 1.0, 3.0], "b": [4.0, 2.0, 2.0], "c": [math.nan]}
    sweep.state["trials"] = [
        {"name": name, "state": "finished", "params": {"x": i},
         "metric": {"best": min(h), "summary": summary_value("val/loss", h)}}
        for i, (name, h) in enumerate(histories.items())]
    assert [t["name"] for t in sweep.ranked()] == ["a", "b", "c"]  # by the last value it would be b, a


def test_a_trials_parameters_file_and_run_name_are_what_wandb_agent_writes_and_reads(tmp_path, monkeypatch):
    from wandb.sdk.lib import config_util

    params = {"model.sigma_max": 10.0, "model.seed": 1, "data.seed": 2, "model.step_lr": 3.4617652930056536e-05}
    write_sweep_parameters(tmp_path / "ours.yaml", params)
    assert config_util.dict_from_config_file(str(tmp_path / "ours.yaml")) == params  # wandb reads ours
    config_util.save_config_file_from_dict(str(tmp_path / "agent.yaml"), {k: {"value": v} for k, v in params.items()})
    assert read_sweep_parameters(tmp_path / "agent.yaml") == params  # we read the agent's
    assert sweep_run_name(params) == "sigma_max=10 model.seed=1 data.seed=2 step_lr=3.46177e-05"
    monkeypatch.setenv("WANDB_SWEEP_PARAM_PATH", str(tmp_path / "agent.yaml"))
    assert sweep_parameters() == params
    monkeypatch.delenv("WANDB_SWEEP_PARAM_PATH")
    assert sweep_parameters() is None
