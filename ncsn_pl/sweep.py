"""W&B sweeps with no server: ``python -m ncsn_pl sweep FILE [--count N] [--out DIR] [--seed S] [-- ARGS...]``.

The sweep file is the one ``wandb sweep FILE`` takes (method, metric, flat dotted ``parameters``, ``command``).
Parameters come from the ``sweeps`` package, the engine W&B's own controller runs (grid, random, bayes). Each
trial is the file's ``command``, expanded the way ``wandb agent`` expands it (``${env}``, ``${interpreter}``,
``${args}``, ...), run in its own process with W&B offline, ``WANDB_RUN_ID`` set and
``--trainer.default_root_dir=<sweep dir>/trial-NNN``. The metric is read back from the trial's ``metrics.csv``
(else from its offline W&B run) and fed to the engine for the next suggestion.

The sweep folder holds ``sweep.json`` (every trial: parameters, state, metric, command, log; rewritten
atomically after each change), a copy of the sweep file, and one folder per trial with its ``trial.log``.
A failed trial is recorded as failed and the sweep goes on. Stopping (Ctrl-C, SIGTERM) records the running
trial as interrupted; the same command again continues: interrupted trials restart, then the engine goes on
(a grid where it stopped).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import difflib
import io
import json
import math
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from ncsn_pl.tracking import find_csv_runs, offline_run_dirs, read_metrics_csv, read_offline_run, summarize_metric

__all__ = [
    "METHODS",
    "STATE_FILE",
    "Sweep",
    "SweepFileError",
    "check_command_config",
    "check_sweep_config",
    "expand_command",
    "grid_size",
    "load_sweep_file",
    "main",
    "read_trial_metric",
    "validate_sweep",
]

METHODS = ("grid", "random", "bayes")
STATE_FILE = "sweep.json"
TRIAL_LOG = "trial.log"
ROOT_DIR_KEY = "trainer.default_root_dir"
# states of a trial in sweep.json; "running" and "interrupted" trials restart when the sweep continues
FINISHED, FAILED, RUNNING, INTERRUPTED = "finished", "failed", "running", "interrupted"


class SweepFileError(ValueError):
    """A sweep file that W&B (or the offline runner) would reject; the message names every problem."""


class SweepStopped(Exception):
    """Raised in the runner when SIGTERM arrives (SIGINT raises ``KeyboardInterrupt``)."""


@contextlib.contextmanager
def _quiet_engine() -> Iterator[None]:
    # the sweeps package declares a pydantic v1 config key (a UserWarning on import and per SweepRun), and its
    # Gaussian process warns when a length scale reaches its bound: both harmless
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*allow_population_by_field_name.*")
        warnings.filterwarnings("ignore", message="Valid config keys have changed in V2")
        warnings.filterwarnings("ignore", message="The optimal value found for dimension")
        yield


def _sweeps() -> Any:
    with _quiet_engine():
        import sweeps
    return sweeps


# ---------------------------------------------------------------------------------------------- the file
def load_sweep_file(path: str | Path) -> dict[str, Any]:
    """Read a sweep YAML file into a dict (not yet validated)."""
    path = Path(path)
    if not path.is_file():
        raise SweepFileError(f"sweep file {str(path)!r} does not exist.")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise SweepFileError(f"{path}: not valid YAML: {error}") from error
    if not isinstance(config, dict):
        raise SweepFileError(f"{path}: a sweep file is a YAML mapping (method, metric, parameters, command).")
    return config


def _parameter_values(spec: Mapping[str, Any]) -> list[Any]:
    """The values a parameter can take, as far as they are listed (``value``/``values``)."""
    if "values" in spec and isinstance(spec["values"], list):
        return list(spec["values"])
    if "value" in spec:
        return [spec["value"]]
    return []


def check_sweep_config(config: Mapping[str, Any]) -> list[str]:
    """Problems W&B, or this offline runner, would reject the sweep for; empty when it is fine.

    Runs the sweep engine's own schema check (``sweeps.schema_violations_from_proposed_config``) and adds:
    a method the engine runs (grid, random, bayes), a metric with a name, flat parameters (nested
    ``parameters`` blocks are dropped by the engine's validation: use dotted keys such as ``model.sigma_max``),
    no YAML ``null`` values (the agent passes them as ``None``, which LightningCLI rejects: write ``"null"``),
    and a ``command`` with ``${args}`` (or a ``program``).
    """
    sweeps = _sweeps()
    problems: list[str] = []
    try:
        problems += [f"schema: {message}" for message in sweeps.schema_violations_from_proposed_config(dict(config))]
    except ValueError as error:
        problems.append(f"schema: {error}")
    method = config.get("method")
    if method is None:
        problems.append(f"no `method`: set one of {', '.join(METHODS)}.")
    elif method not in METHODS:
        problems.append(f"method {method!r} cannot run here: use one of {', '.join(METHODS)}.")
    metric = config.get("metric")
    if not isinstance(metric, Mapping) or not metric.get("name"):
        problems.append("no `metric`: add `metric: {name: val/fid, goal: minimize}` (the value to optimise).")
    parameters = config.get("parameters")
    if not isinstance(parameters, Mapping) or not parameters:
        problems.append("no `parameters`: list the config keys to sweep, e.g. `model.sigma_max: {values: [1, 50]}`.")
        parameters = {}
    for name, spec in parameters.items():
        if not isinstance(spec, Mapping):
            problems.append(f"parameter {name!r}: expected a mapping such as {{values: [...]}}, got {spec!r}.")
            continue
        if "parameters" in spec:
            problems.append(f"parameter {name!r} is a nested block: W&B's engine drops those; use flat dotted keys "
                            f"such as '{name}.<key>'.")
        if any(value is None for value in _parameter_values(spec)):
            problems.append(f"parameter {name!r} has a YAML null: the agent passes it as `None`, which the CLI "
                            "rejects; write the string \"null\" (quoted).")
        if name == ROOT_DIR_KEY:
            problems.append(f"parameter {name!r} cannot be swept: each trial gets its own {ROOT_DIR_KEY}.")
    command = config.get("command")
    if command is None:
        if not config.get("program"):
            problems.append("no `command` (or `program`): add `command: [${env}, ${interpreter}, -m, ncsn_pl, fit, "
                            "--config, configs/<x>.yaml, ${args}]`.")
    elif not isinstance(command, list) or not all(isinstance(c, (str, int, float)) for c in command):
        problems.append("`command` must be a list of strings.")
    else:
        if not any(str(c).startswith("${args") for c in command):
            problems.append("`command` has no ${args}: the parameters would never reach the trial.")
        if "${program}" in command and not config.get("program"):
            problems.append("`command` uses ${program} but the file has no `program`.")
    return list(dict.fromkeys(problems))


def _ncsn_args(command: Sequence[Any]) -> list[str] | None:
    """The arguments after ``-m ncsn_pl`` in a sweep command, or ``None`` when it does not run ncsn_pl."""
    tokens = [str(c) for c in command]
    for i in range(len(tokens) - 1):
        if tokens[i] == "-m" and tokens[i + 1] == "ncsn_pl":
            return tokens[i + 2:]
    return None


def _probe_values(name: str, spec: Mapping[str, Any]) -> list[Any]:
    """Values to try in a dry parse: every listed value, else the ends of the distribution."""
    listed = _parameter_values(spec)
    if listed:
        return listed
    from sweeps.params import HyperParameter

    with _quiet_engine():
        parameter = HyperParameter(name, dict(spec))
    return [_plain(parameter.ppf(q)) for q in (0.001, 0.999)]


def _plain(value: Any) -> Any:
    """numpy scalars to Python numbers (JSON and YAML friendly)."""
    return value.item() if hasattr(value, "item") and not isinstance(value, (list, dict, str)) else value


_PARSED: dict[tuple, tuple[dict[str, Any] | None, str]] = {}


def _dry_parse(cli_args: list[str]) -> tuple[dict[str, Any] | None, str]:
    """Parse ``python -m ncsn_pl <cli_args> --print_config`` in this process: (config, "") or (None, error).

    Results are remembered per arguments and modification times of the files they name (a sweep folder with
    several sweep files on one config parses it once).
    """
    stamps = tuple(os.path.getmtime(a) if os.path.isfile(a) else None for a in cli_args)
    key = (tuple(cli_args), stamps)
    if key not in _PARSED:
        _PARSED[key] = _parse_uncached(cli_args)
    config, error = _PARSED[key]
    return copy.deepcopy(config), error


def _parse_uncached(cli_args: list[str]) -> tuple[dict[str, Any] | None, str]:
    from ncsn_pl.cli import main as cli_main

    out, err = io.StringIO(), io.StringIO()
    code: Any = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            cli_main([*cli_args, "--print_config"])
        except SystemExit as error:
            code = error.code
        except Exception as error:  # an interpolation or a config file that cannot be read
            code, _ = 1, err.write(f"error: {type(error).__name__}: {error}")
    if code in (0, None):
        return yaml.safe_load(out.getvalue()) or {}, ""
    text = err.getvalue()
    start = text.rfind("error:")
    return None, (text[start:] if start >= 0 else text[-2000:]).strip()


def _config_keys(config: Mapping[str, Any], prefix: str = "") -> set[str]:
    """Every dotted key of a nested config, the group keys included (``model``, ``model.sigma_max``, ...)."""
    keys: set[str] = set()
    for key, value in config.items():
        name = f"{prefix}{key}"
        keys.add(name)
        if isinstance(value, Mapping):
            keys |= _config_keys(value, name + ".")
    return keys


def _logs_under_root(config: Mapping[str, Any], root: str) -> bool:
    """Whether a CSVLogger or WandbLogger of this config writes under ``trainer.default_root_dir``."""
    loggers = config.get("trainer", {}).get("logger")
    if loggers in (None, True):  # Lightning's default logger writes under default_root_dir
        return True
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        if not isinstance(logger, Mapping):
            continue
        kind = str(logger.get("class_path", ""))
        save_dir = str((logger.get("init_args") or {}).get("save_dir") or "")
        if kind.endswith(("CSVLogger", "WandbLogger")) and Path(save_dir) == Path(root):
            return True
    return False


def check_command_config(
    config: Mapping[str, Any],
    extra_args: Sequence[str] = (),
    probe_values: bool = True,
    check_logging: bool = True,
) -> list[str]:
    """Problems with the parameters as keys of the command's config; empty when it is fine.

    Parses the command's ncsn_pl arguments (``fit --config ...``) with LightningCLI's own parser
    (``--print_config``, nothing instantiated): every parameter must be a key of the resolved config, and
    (``probe_values``) each listed value, or each end of a distribution, must be accepted by the parser.
    With ``check_logging`` the config must log under ``trainer.default_root_dir`` (where the offline
    runner reads the metric back). A command that does not run ``-m ncsn_pl`` is not checked.

    Args:
        config: the sweep config (already schema-checked).
        extra_args: arguments the runner adds to every trial (they are part of the parsed command).
        probe_values: also dry-parse the values (one parse per value of the longest value list).
        check_logging: require a CSVLogger or WandbLogger writing under ``trainer.default_root_dir``.
    """
    command = config.get("command") or []
    ncsn = _ncsn_args(command)
    if ncsn is None:
        return []
    parameters: Mapping[str, Mapping[str, Any]] = config.get("parameters") or {}
    probe_root = "/nonexistent/ncsn-sweep-probe"

    def cli_args(params: Mapping[str, Any]) -> list[str]:
        args = expand_command(ncsn, params, extra_args=extra_args, interpreter="python")
        return [*args, f"--{ROOT_DIR_KEY}={probe_root}"]

    base, error = _dry_parse(cli_args({}))
    if base is None:
        return [f"the command's config does not parse ({' '.join(ncsn)}): {error}"]
    problems: list[str] = []
    keys = _config_keys(base)
    for name in parameters:
        if name not in keys:
            close = difflib.get_close_matches(name, sorted(keys), n=3, cutoff=0.6)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            problems.append(f"parameter {name!r} is not a config key of `{' '.join(ncsn)}`{hint}.")
    if check_logging and not _logs_under_root(base, probe_root):
        problems.append(f"`{' '.join(ncsn)}` logs nowhere under {ROOT_DIR_KEY}, so a trial's metric cannot be read "
                        f"back: give its CSVLogger (or WandbLogger) save_dir: ${{{ROOT_DIR_KEY}}}.")
    if problems or not probe_values:
        return problems
    values = {name: _probe_values(name, spec) for name, spec in parameters.items()}
    for slot in range(max((len(v) for v in values.values()), default=0)):
        params = {name: v[slot % len(v)] for name, v in values.items() if v}
        parsed, error = _dry_parse(cli_args(params))
        if parsed is None:
            shown = ", ".join(f"{k}={v}" for k, v in params.items())
            problems.append(f"the command rejects the values {shown}: {error}")
    return problems


def validate_sweep(
    config: Mapping[str, Any],
    extra_args: Sequence[str] = (),
    check_command: bool = True,
    probe_values: bool = True,
    check_logging: bool = True,
) -> dict[str, Any]:
    """Check a sweep config and return it filled in by the engine (``sweeps.SweepConfig``).

    Raises:
        SweepFileError: naming every problem found (see :func:`check_sweep_config` and
            :func:`check_command_config`).
    """
    problems = check_sweep_config(config)
    extra_keys = {a[2:].split("=", 1)[0] for a in extra_args if a.startswith("--") and "=" in a}
    for name in (config.get("parameters") or {}) if isinstance(config.get("parameters"), Mapping) else {}:
        if name in extra_keys:
            problems.append(f"parameter {name!r} is also set by the extra arguments; remove one of them.")
    if not problems and check_command:
        problems += check_command_config(config, extra_args, probe_values=probe_values, check_logging=check_logging)
    if problems:
        raise SweepFileError("invalid sweep:\n  - " + "\n  - ".join(problems))
    sweeps = _sweeps()
    with _quiet_engine():
        return dict(sweeps.SweepConfig(dict(config)))


def grid_size(config: Mapping[str, Any]) -> int:
    """Number of grid points of a grid sweep (``int_uniform``/``q_uniform`` count their values, as the engine does)."""
    import numpy as np

    size = 1
    for spec in config["parameters"].values():
        if "values" in spec:
            size *= len(spec["values"])
        elif spec.get("distribution") == "int_uniform":
            size *= int(spec["max"]) - int(spec["min"]) + 1
        elif spec.get("distribution") == "q_uniform":
            size *= len(np.arange(spec["min"], spec["max"], spec["q"]))
    return size


# ---------------------------------------------------------------------------------------------- commands
def expand_command(
    command: Sequence[Any],
    params: Mapping[str, Any],
    extra_args: Sequence[str] = (),
    interpreter: str | None = None,
    program: str | None = None,
    args_json_file: str | None = None,
) -> list[str]:
    """Expand a sweep ``command`` the way ``wandb agent`` does.

    ``${env}`` -> ``/usr/bin/env``, ``${interpreter}`` -> this Python (the agent uses ``python`` from PATH),
    ``${program}``, ``${args}`` -> ``--key=value``, and the other ``${args_*}`` forms and ``${envvar:NAME}``
    through wandb's own ``create_sweep_command_args``/``create_sweep_command``. ``extra_args`` go just before
    the first ``${args...}`` (so the swept values win over an overlay ``--config``).
    """
    from wandb.sdk.launch.sweeps.utils import create_sweep_command, create_sweep_command_args

    sweep_vars: dict[str, Any] = create_sweep_command_args({"args": {k: {"value": v} for k, v in params.items()}})
    sweep_vars["interpreter"] = [interpreter or sys.executable]
    sweep_vars["env"] = ["/usr/bin/env"]
    sweep_vars["program"] = [program] if program else []
    sweep_vars["args_json_file"] = [args_json_file] if args_json_file else []
    expanded: list[str] = []
    extras_placed = False
    for token in create_sweep_command([str(c) for c in command]):
        token = str(token)
        if token.startswith("${") and token.endswith("}"):
            if token.startswith("${args") and not extras_placed:
                expanded += list(extra_args)
                extras_placed = True
            expanded += [str(v) for v in sweep_vars.get(token[2:-1]) or []]
        else:
            expanded.append(token)
    if not extras_placed:
        expanded += list(extra_args)
    return expanded


# ---------------------------------------------------------------------------------------------- metrics
def read_trial_metric(trial_dir: str | Path, metric: str, run_id: str | None = None) -> tuple[list, str]:
    """The ``[(step, value), ...]`` of ``metric`` logged by the run in ``trial_dir``, and where it was read.

    The trial's ``metrics.csv`` (the newest, if the trial holds several runs) is read first; without the metric
    there, the offline W&B run (``wandb/offline-run-*-<run_id>``) is read with ``wandb leet``.
    Returns ``([], reason)`` when neither has it.
    """
    trial_dir = Path(trial_dir)
    runs = sorted(find_csv_runs(trial_dir), key=lambda p: (p / "metrics.csv").stat().st_mtime)
    if runs:
        history = read_metrics_csv(runs[-1] / "metrics.csv").get(metric, [])
        if history:
            return history, str(runs[-1].relative_to(trial_dir) / "metrics.csv")
    wandb_runs = [p for p in offline_run_dirs(trial_dir) if run_id is None or p.name.endswith(f"-{run_id}")]
    if wandb_runs:
        try:
            record = read_offline_run(wandb_runs[-1], history_keys=[metric])
        except RuntimeError as error:
            return [], f"no {metric} in metrics.csv, and the W&B run could not be read: {error}"
        history = record["history"].get(metric) or []
        if not history and isinstance(record["summary"].get(metric), (int, float)):
            history = [(int(record["summary"].get("trainer/global_step", 0)), float(record["summary"][metric]))]
        if history:
            return history, str(wandb_runs[-1].relative_to(trial_dir))
    where = "metrics.csv" if runs else "no metrics.csv"
    return [], f"the run logged no {metric!r} ({where}{', no W&B run' if not wandb_runs else ', W&B run'})"


# ---------------------------------------------------------------------------------------------- the runner
def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def _seeded_call(seed: int, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call the engine with Python's and NumPy's global generators seeded, restoring both afterwards.

    The engine draws from the global ``random`` (random search) and ``numpy.random`` (bayes); seeding per trial
    makes a sweep reproducible, also across a stop and a continue.
    """
    import numpy as np

    py_state, np_state = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        return fn(*args, **kwargs)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


class Sweep:
    """An offline sweep in a folder: its state (``sweep.json``), the engine, and the trials.

    Args:
        config: the sweep config as read from the file (validated by :func:`validate_sweep`).
        out: the sweep folder.
        seed: seeds the engine's suggestions (trial ``i`` draws with ``seed * 100003 + i``).
        extra_args: arguments added to every trial's command (e.g. ``--trainer.max_steps=100``).
        sweep_file: where the config came from (recorded).
        wandb_mode: ``WANDB_MODE`` of the trials: ``offline`` or ``disabled``.
        timeout: seconds allowed per trial (``None`` = no limit); a trial over it fails.
        stream: where progress lines go.
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        out: str | Path,
        seed: int = 0,
        extra_args: Sequence[str] = (),
        sweep_file: str | Path | None = None,
        wandb_mode: str = "offline",
        timeout: float | None = None,
        stream: Any = None,
    ) -> None:
        if wandb_mode not in ("offline", "disabled"):
            raise ValueError(f"wandb_mode must be 'offline' or 'disabled', got {wandb_mode!r}.")
        self.out = Path(out).resolve()
        self.wandb_mode = wandb_mode
        self.timeout = timeout
        self.stream = stream if stream is not None else sys.stdout
        self.state_path = self.out / STATE_FILE
        wanted = {"sweep": json.loads(json.dumps(dict(config))), "seed": int(seed), "extra_args": list(extra_args)}
        if self.state_path.is_file():
            self.state = json.loads(self.state_path.read_text())
            for key, value in wanted.items():
                if self.state.get(key) != value:
                    raise SweepFileError(
                        f"{self.out} holds a sweep with another {key.replace('_', ' ')} "
                        f"({self.state.get(key)!r} there, {value!r} now): rerun it with the same file and options, "
                        "or give another --out.")
        else:
            name = str(config.get("name") or (Path(sweep_file).stem if sweep_file else self.out.name))
            self.state = {"format": 1, "name": name, "sweep_id": secrets.token_hex(4), "created": _now(),
                          "sweep_file": str(sweep_file) if sweep_file else None, **wanted, "trials": []}
        with _quiet_engine():  # the engine's filled-in config (distributions named)
            self.config = dict(_sweeps().SweepConfig(dict(config)))
        self.metric = str(config["metric"]["name"])
        self.goal = str(config["metric"].get("goal", "minimize"))

    # ---------------------------------------------------------------- state
    @property
    def trials(self) -> list[dict[str, Any]]:
        return self.state["trials"]

    def save(self) -> None:
        """Write ``sweep.json`` atomically (a reader never sees half a file)."""
        self.out.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_name(STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(self.state, indent=1, default=_plain) + "\n")
        os.replace(tmp, self.state_path)

    def _say(self, message: str) -> None:
        print(f"[sweep] {message}", file=self.stream, flush=True)

    def default_count(self) -> int | None:
        """The whole grid for a grid sweep, else the file's ``run_cap`` (``None`` when neither applies)."""
        cap = self.config.get("run_cap")
        if self.config["method"] == "grid":
            size = grid_size(self.config)
            return min(size, int(cap)) if cap else size
        return int(cap) if cap else None

    def engine_runs(self) -> list[Any]:
        """The finished and failed trials as the engine's ``SweepRun`` records."""
        sweeps = _sweeps()
        runs = []
        with _quiet_engine():
            for trial in self.trials:
                if trial["state"] not in (FINISHED, FAILED):
                    continue
                history = [{self.metric: value} for _, value in trial.get("history", [])]
                summary = {self.metric: trial["metric"]["last"]} if trial.get("metric") else {}
                runs.append(sweeps.SweepRun(
                    name=trial["run_id"],
                    state=sweeps.RunState.finished if trial["state"] == FINISHED else sweeps.RunState.failed,
                    config={k: {"value": v} for k, v in trial["params"].items()},
                    summary_metrics=summary, history=history))
        return runs

    def suggest(self) -> dict[str, Any] | None:
        """The engine's next parameters (``None`` when a grid is exhausted)."""
        sweeps = _sweeps()
        index = len(self.trials)
        with _quiet_engine():
            run = _seeded_call(self.state["seed"] * 100003 + index, sweeps.next_run, self.config, self.engine_runs())
        if run is None:
            return None
        return {name: _plain(spec["value"]) for name, spec in run.config.items()}

    # ---------------------------------------------------------------- trials
    def new_trial(self, params: Mapping[str, Any]) -> dict[str, Any]:
        index = len(self.trials)
        trial = {"index": index, "name": f"trial-{index:03d}", "run_id": f"{self.state['sweep_id']}{index:03d}",
                 "params": dict(params), "state": RUNNING}
        self.trials.append(trial)
        return trial

    def command(self, trial: Mapping[str, Any]) -> list[str]:
        trial_dir = self.out / trial["name"]
        json_file = str(trial_dir / "args.json")
        cmd = expand_command(self.config.get("command") or ["${env}", "${interpreter}", "${program}", "${args}"],
                             trial["params"], extra_args=self.state["extra_args"],
                             program=self.config.get("program"), args_json_file=json_file)
        return [*cmd, f"--{ROOT_DIR_KEY}={trial_dir}"]

    def run_trial(self, trial: dict[str, Any]) -> None:
        """Run one trial in its own process and record the outcome (the state is saved before and after)."""
        trial_dir = self.out / trial["name"]
        if trial_dir.exists():  # an interrupted attempt: start over
            shutil.rmtree(trial_dir)
        trial_dir.mkdir(parents=True)
        command = self.command(trial)
        (trial_dir / "args.json").write_text(json.dumps(trial["params"]))
        log_path = trial_dir / TRIAL_LOG
        env = {**os.environ, "WANDB_MODE": self.wandb_mode, "WANDB_RUN_ID": trial["run_id"],
               "WANDB_RUN_GROUP": self.state["name"], "PYTHONUNBUFFERED": "1"}
        trial.update(state=RUNNING, command=command, dir=trial["name"], log=f"{trial['name']}/{TRIAL_LOG}",
                     started=_now(), ended=None, duration_s=None, returncode=None, error=None, metric=None,
                     history=[], metric_source=None)
        self.save()
        shown = " ".join(f"{k}={v}" for k, v in trial["params"].items())
        self._say(f"{trial['name']}: {shown}")
        start = time.monotonic()
        with open(log_path, "w") as log:
            log.write("$ " + " ".join(command) + "\n")
            log.flush()
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                       start_new_session=True)
            try:
                returncode = process.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                _stop_process(process)
                returncode = None
            except BaseException:
                trial.update(state=INTERRUPTED, ended=_now(), duration_s=round(time.monotonic() - start, 2))
                self.save()
                _stop_process(process)
                raise
        trial["duration_s"] = round(time.monotonic() - start, 2)
        trial["ended"] = _now()
        trial["returncode"] = returncode
        history, source = read_trial_metric(trial_dir, self.metric, trial["run_id"])
        trial["history"] = [[int(s), float(v)] for s, v in history]
        summary = summarize_metric(history, self.goal)
        if summary is not None:
            trial["metric"] = {"name": self.metric, "best": summary.best, "best_step": summary.best_step,
                               "last": summary.last, "last_step": summary.last_step}
            trial["metric_source"] = source
        if returncode is None:
            trial.update(state=FAILED, error=f"timed out after {self.timeout} s; see {trial['log']}")
        elif returncode != 0:
            tail = _tail(log_path)
            trial.update(state=FAILED, error=f"exit code {returncode}; see {trial['log']}" + (f": {tail}" if tail
                                                                                             else ""))
        elif summary is None:
            trial.update(state=FAILED, error=f"{source}; see {trial['log']}")
        else:
            trial["state"] = FINISHED
        self.save()
        if trial["state"] == FINISHED:
            self._say(f"{trial['name']} finished in {trial['duration_s']:.1f} s: {self.metric} best "
                      f"{summary.best:.6g} (step {summary.best_step}), last {summary.last:.6g}")
        else:
            self._say(f"{trial['name']} FAILED after {trial['duration_s']:.1f} s: {trial['error']}")

    def run(self, count: int | None = None) -> dict[str, Any]:
        """Run trials until the sweep holds ``count`` finished or failed trials (or the grid is exhausted).

        Interrupted trials of an earlier invocation restart first. Returns the state (also in ``sweep.json``).
        """
        count = count if count is not None else self.default_count()
        if count is None:
            raise SweepFileError(f"a {self.config['method']} sweep never ends by itself: give --count N "
                                 "(or `run_cap` in the sweep file).")
        if count < 1:
            raise SweepFileError(f"--count must be >= 1, got {count}.")
        self.out.mkdir(parents=True, exist_ok=True)
        self.save()
        with _lock(self.out), _sigterm_raises():
            done = [t for t in self.trials if t["state"] in (FINISHED, FAILED)]
            if done:
                self._say(f"continuing {self.out}: {len(done)} trial(s) done")
            while True:
                pending = [t for t in self.trials if t["state"] in (RUNNING, INTERRUPTED)]
                if pending:
                    trial = pending[0]
                elif len(self.trials) >= count:
                    break
                else:
                    params = self.suggest()
                    if params is None:
                        self._say(f"the grid is exhausted after {len(self.trials)} trial(s)")
                        break
                    trial = self.new_trial(params)
                self.run_trial(trial)
        return self.state


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return " | ".join(text[-lines:])[-600:]


def _stop_process(process: subprocess.Popen) -> None:
    """SIGTERM the trial's process group (Lightning writes its checkpoint); SIGKILL it after 30 s, or at once
    on a second Ctrl-C / SIGTERM, so no trial outlives the runner."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except (subprocess.TimeoutExpired, KeyboardInterrupt, SweepStopped):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@contextlib.contextmanager
def _lock(folder: Path) -> Iterator[None]:
    """Hold ``<folder>/.sweep.lock``: two runners on one sweep folder would run the same trials."""
    import fcntl

    with open(folder / ".sweep.lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            raise SweepFileError(f"another `ncsn_pl sweep` is running in {folder}; wait for it or stop it.") from error
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """In the main thread, turn SIGTERM (a preempted job) into :class:`SweepStopped` while the sweep runs."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise SweepStopped(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# ---------------------------------------------------------------------------------------------- the CLI
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ncsn_pl sweep",
        description="Run a W&B sweep file with no W&B server: the sweeps engine suggests, each trial is the file's "
                    "command in its own process with W&B offline. Rerun the same command to continue a sweep.",
        epilog="Arguments after `--` are added to every trial, e.g. `-- --trainer.max_steps=1000 "
               "--data.init_args.root=/data`.")
    parser.add_argument("file", help="the sweep YAML file (the one `wandb sweep FILE` takes)")
    parser.add_argument("--count", type=int, default=None,
                        help="trials the sweep should hold in total, finished and failed (default: the whole grid, "
                             "or the file's run_cap); rerunning with the same count continues a stopped sweep")
    parser.add_argument("--out", default=None, help="the sweep folder (default: runs/sweeps/<file name>)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the engine's suggestions (default: 0)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds allowed per trial (default: none)")
    parser.add_argument("--wandb-mode", choices=("offline", "disabled"), default="offline",
                        help="WANDB_MODE of the trials (default: offline; `wandb sync` them later)")
    parser.add_argument("--validate", action="store_true",
                        help="check the file (and print the first trial's command), run nothing")
    return parser


def main(argv: Sequence[str] | None = None) -> dict[str, Any] | None:
    """``python -m ncsn_pl sweep ...``; returns the sweep state (``None`` with ``--validate``).

    Exits with status 2 on an invalid sweep file, 130 when stopped, 1 when every trial failed.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    options = _parser().parse_args(argv)
    try:
        raw = load_sweep_file(options.file)
        config = validate_sweep(raw, extra_args=extra)
    except SweepFileError as error:
        print(f"{options.file}: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    out = Path(options.out) if options.out else Path("runs") / "sweeps" / Path(options.file).stem
    if options.validate:
        trial = {"name": "trial-000", "params": {}}
        first = None
        with contextlib.suppress(Exception):
            first = _seeded_call(options.seed * 100003, _sweeps().next_run, config, [])
        if first is not None:
            trial["params"] = {k: _plain(v["value"]) for k, v in first.config.items()}
        command = expand_command(config.get("command") or [], trial["params"], extra_args=extra,
                                 program=config.get("program"))
        print(f"{options.file}: valid {config['method']} sweep optimising {config['metric']['name']}; first trial:\n"
              f"  {' '.join(command)} --{ROOT_DIR_KEY}={out / 'trial-000'}")
        return None
    if config.get("early_terminate"):
        print("[sweep] early_terminate is ignored offline: trials run one at a time to the end.", flush=True)
    try:
        sweep = Sweep(raw, out, seed=options.seed, extra_args=extra, sweep_file=options.file,
                      wandb_mode=options.wandb_mode, timeout=options.timeout)
        sweep.out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(options.file, sweep.out / "sweep.yaml")
        state = sweep.run(options.count)
    except SweepFileError as error:
        print(f"sweep: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except (KeyboardInterrupt, SweepStopped):
        print(f"[sweep] stopped; run the same command again to continue ({out / STATE_FILE}).", file=sys.stderr)
        raise SystemExit(130) from None
    _print_summary(sweep)
    if state["trials"] and all(t["state"] == FAILED for t in state["trials"]):
        print(f"[sweep] every trial failed; see the trial.log files in {sweep.out}.", file=sys.stderr)
        raise SystemExit(1)
    return state


def _print_summary(sweep: Sweep) -> None:
    finished = [t for t in sweep.trials if t["state"] == FINISHED and t.get("metric")]
    failed = [t for t in sweep.trials if t["state"] == FAILED]
    sign = 1 if sweep.goal == "minimize" else -1
    finished.sort(key=lambda t: sign * t["metric"]["best"] if math.isfinite(t["metric"]["best"]) else math.inf)
    sweep._say(f"{len(sweep.trials)} trial(s): {len(finished)} finished, {len(failed)} failed; "
               f"state in {sweep.state_path}")
    if finished:
        best = finished[0]
        shown = " ".join(f"{k}={v}" for k, v in best["params"].items())
        sweep._say(f"best: {best['name']} {sweep.metric}={best['metric']['best']:.6g} with {shown}")
        sweep._say(f"compare the runs: python -m ncsn_pl compare {sweep.out}")
