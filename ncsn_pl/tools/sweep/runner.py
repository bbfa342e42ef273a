"""The offline sweep runner: W&B sweeps with no server.

The sweep file is the one ``wandb sweep FILE`` takes (:mod:`ncsn_pl.tools.sweep.spec`). Parameters come from
the ``sweeps`` package, the engine W&B's own controller runs (grid, random, bayes). Each trial is the file's
``command``, expanded the way ``wandb agent`` expands it (``${env}``, ``${interpreter}``, ``${args}``, ...), run
in its own process with W&B offline, ``WANDB_RUN_ID`` set and ``--trainer.default_root_dir=<sweep dir>/trial-NNN``.
The metric is read back from the trial's ``metrics.csv`` (else from its offline W&B run) and fed to the engine
for the next suggestion.

The sweep folder holds ``sweep.json`` (every trial: parameters, state, metric, command, log; rewritten
atomically after each change), a copy of the sweep file, and one folder per trial with its ``trial.log``.
A failed trial is recorded as failed and the sweep goes on. Stopping (Ctrl-C, SIGTERM) records the running
trial as interrupted; the same command again continues: interrupted trials restart, then the engine goes on
(a grid where it stopped).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ncsn_pl.core.files import atomic_write_text
from ncsn_pl.tools.sweep.spec import (
    ROOT_DIR_KEY,
    SweepFileError,
    expand_command,
    grid_size,
    plain,
    quiet_engine,
    sweeps_engine,
)
from ncsn_pl.tools.tracking import (
    newest_csv_run,
    offline_run_dirs,
    read_metrics_csv,
    read_offline_run,
    summarize_metric,
)

__all__ = ["FAILED", "FINISHED", "STATE_FILE", "Sweep", "SweepStopped", "read_trial_metric", "seeded_call"]

STATE_FILE = "sweep.json"
TRIAL_LOG = "trial.log"
# states of a trial in sweep.json; "running" and "interrupted" trials restart when the sweep continues
FINISHED, FAILED, RUNNING, INTERRUPTED = "finished", "failed", "running", "interrupted"
# how a preempted trial ends: ``python -m ncsn_pl fit`` exits 128 + SIGTERM after its checkpoint; killed outright: -15
PREEMPTED = (128 + signal.SIGTERM, -signal.SIGTERM)


class SweepStopped(Exception):
    """Raised in the runner when SIGTERM arrives (SIGINT raises ``KeyboardInterrupt``)."""


def read_trial_metric(trial_dir: str | Path, metric: str, run_id: str | None = None) -> tuple[list, str]:
    """The ``[(step, value), ...]`` of ``metric`` logged by the run in ``trial_dir``, and where it was read.

    The trial's ``metrics.csv`` (the newest, if the trial holds several runs) is read first; without the metric
    there, the offline W&B run (``wandb/offline-run-*-<run_id>``) is read with ``wandb leet``.
    Returns ``([], reason)`` when neither has it.
    """
    trial_dir = Path(trial_dir)
    run = newest_csv_run(trial_dir)
    if run is not None:
        history = read_metrics_csv(run / "metrics.csv").get(metric, [])
        if history:
            return history, str(run.relative_to(trial_dir) / "metrics.csv")
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
    where = "metrics.csv" if run is not None else "no metrics.csv"
    return [], f"the run logged no {metric!r} ({where}{', no W&B run' if not wandb_runs else ', W&B run'})"


# ---------------------------------------------------------------------------------------------- the runner
def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def seeded_call(seed: int, fn: Any, *args: Any, **kwargs: Any) -> Any:
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
        with quiet_engine():  # the engine's filled-in config (distributions named)
            self.config = dict(sweeps_engine().SweepConfig(dict(config)))
        self.metric = str(config["metric"]["name"])
        self.goal = str(config["metric"].get("goal", "minimize"))

    # ---------------------------------------------------------------- state
    @property
    def trials(self) -> list[dict[str, Any]]:
        return self.state["trials"]

    def save(self) -> None:
        """Write ``sweep.json`` atomically (a reader never sees half a file)."""
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(json.dumps(self.state, indent=1, default=plain) + "\n", self.state_path)

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
        sweeps = sweeps_engine()
        runs = []
        with quiet_engine():
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
        sweeps = sweeps_engine()
        index = len(self.trials)
        with quiet_engine():
            run = seeded_call(self.state["seed"] * 100003 + index, sweeps.next_run, self.config, self.engine_runs())
        if run is None:
            return None
        return {name: plain(spec["value"]) for name, spec in run.config.items()}

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
        if returncode in PREEMPTED:
            # the trial was preempted (it wrote a checkpoint and exited 128 + SIGTERM): the sweep stops with it
            trial.update(state=INTERRUPTED, error=f"preempted (SIGTERM); see {trial['log']}")
            self.save()
            self._say(f"{trial['name']} was preempted; run the same sweep command again to continue")
            raise SweepStopped
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
