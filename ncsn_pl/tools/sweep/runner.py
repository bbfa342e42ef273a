"""The offline sweep runner: W&B sweeps with no server, with one worker or many on one sweep folder.

The sweep file is the one ``wandb sweep FILE`` takes (:mod:`ncsn_pl.tools.sweep.spec`). Parameters come from
the ``sweeps`` package, the engine W&B's own controller runs (grid, random, bayes). Each trial is the file's
``command``, expanded the way ``wandb agent`` expands it (``${env}``, ``${interpreter}``, ``${args}``, ...), run
in its own process with W&B offline, ``WANDB_RUN_ID`` and ``WANDB_SWEEP_PARAM_PATH`` set as the agent sets them,
and ``--trainer.default_root_dir=<sweep dir>/trial-NNN``. The metric is read back from the trial's
``metrics.csv`` (else from its offline W&B run) and fed to the engine for the next suggestion.

The sweep folder holds ``sweep.json`` (every trial: parameters, state, worker, attempts, metric, command, log),
a copy of the sweep file, and one folder per trial with its ``trial.log``. Workers share it through
:mod:`.state`: each takes the next suggestion under the lock (the engine sees the running trials, so no grid
point runs twice), and ``--count`` counts the trials of all workers. A failed trial is recorded with the tail of
its log and the sweep goes on. A stopped or preempted worker records its trial as interrupted, and the next
worker runs it again; a dead worker's trial (no heartbeat for ``stale_after`` seconds, or its process gone from
this host) runs once more, then is recorded as failed.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ncsn_pl.runs.reading import summarize_metric
from ncsn_pl.runs.records import (
    SWEEP_PARAM_PATH,
    rank_runs,
    summary_value,
    sweep_run_name,
    write_sweep_parameters,
)
from ncsn_pl.tools.sweep.processes import SweepStopped, log_tail, sigterm_deferred, sigterm_raises, stop_process
from ncsn_pl.tools.sweep.spec import (
    DEFAULT_COMMAND,
    ROOT_DIR_KEY,
    SweepFileError,
    expand_command,
    grid_size,
    plain,
    quiet_engine,
    sweeps_engine,
)
from ncsn_pl.tools.sweep.state import (
    FAILED,
    FINISHED,
    HEARTBEAT_FILE,
    INTERRUPTED,
    RUNNING,
    STATE_FILE,
    Heartbeat,
    abandoned,
    fs_now,
    locked_state,
    now,
    worker_identity,
)
from ncsn_pl.tools.sweep.trial_metric import read_trial_metric

__all__ = ["FAILED", "FINISHED", "STATE_FILE", "Sweep", "SweepStopped", "read_trial_metric", "seeded_call"]

TRIAL_LOG = "trial.log"
PARAMS_FILE = "sweep-params.yaml"
# how a preempted trial ends: ``python -m ncsn_pl fit`` exits 128 + SIGTERM after its checkpoint; killed outright: -15
PREEMPTED = (128 + signal.SIGTERM, -signal.SIGTERM)


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


def _is_fit(command: Sequence[str]) -> bool:
    """Whether a trial's command is ``... ncsn_pl fit ...``."""
    return any(a.endswith("ncsn_pl") and b == "fit" for a, b in zip(command, command[1:], strict=False))


def _last_checkpoint(folder: Path) -> Path | None:
    """The newest run's ``last.ckpt`` in a trial's folder, if any."""
    found = sorted(folder.glob("version_*/checkpoints/last.ckpt"), key=lambda p: int(p.parts[-3][8:]))
    return found[-1] if found else None


# what an attempt's folder holds that is its own (its liveness, its log, a lock folder) and is not carried over
_NOT_CARRIED = shutil.ignore_patterns(HEARTBEAT_FILE, TRIAL_LOG, "*.lock.d", "*.tmp")


def carry_over(previous: Path, folder: Path) -> bool:
    """Copy an earlier attempt's work into a new attempt's folder when there is work to continue: a checkpoint
    (``last.ckpt``) or a resumable sample folder (``sample.json``). Copied, not moved: the earlier attempt's worker
    may still be alive and writing there. Returns whether anything was copied."""
    if not previous.is_dir() or not (any(previous.rglob("last.ckpt")) or any(previous.rglob("sample.json"))):
        return False
    shutil.copytree(previous, folder, ignore=_NOT_CARRIED, dirs_exist_ok=True)
    return True


class Sweep:
    """One worker of an offline sweep in a folder: the shared state (``sweep.json``), the engine, the trials.

    Args:
        config: the sweep config as read from the file (validated by :func:`validate_sweep`).
        out: the sweep folder (shared by all workers).
        seed: seeds the engine's suggestions (trial ``i`` draws with ``seed * 100003 + i``).
        extra_args: arguments added to every trial's command (e.g. ``--trainer.max_steps=100``).
        sweep_file: where the config came from (recorded).
        wandb_mode: ``WANDB_MODE`` of the trials: ``offline`` or ``disabled``.
        timeout: seconds allowed per trial (``None`` = no limit); a trial over it fails.
        stream: where progress lines go.
        stale_after: seconds without a heartbeat after which another worker's running trial counts as abandoned.
        heartbeat: seconds between this worker's heartbeats.
        max_attempts: attempts of a trial whose worker died before it is recorded as failed.
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
        stale_after: float = 600.0,
        heartbeat: float = 30.0,
        max_attempts: int = 2,
    ) -> None:
        if wandb_mode not in ("offline", "disabled"):
            raise ValueError(f"wandb_mode must be 'offline' or 'disabled', got {wandb_mode!r}.")
        if not 0 < heartbeat < stale_after:
            raise ValueError(f"need 0 < heartbeat < stale_after, got {heartbeat} and {stale_after}.")
        self.out = Path(out).resolve()
        self.wandb_mode = wandb_mode
        self.timeout = timeout
        self.stream = stream if stream is not None else sys.stdout
        self.stale_after, self.heartbeat, self.max_attempts = stale_after, heartbeat, max_attempts
        self.state_path = self.out / STATE_FILE
        self.worker = worker_identity()
        wanted = {"sweep": json.loads(json.dumps(dict(config))), "seed": int(seed), "extra_args": list(extra_args)}
        with locked_state(self.out) as box:
            if box["state"] is None:
                name = str(config.get("name") or (Path(sweep_file).stem if sweep_file else self.out.name))
                box["state"] = {"format": 2, "name": name, "sweep_id": secrets.token_hex(4), "created": now(),
                                "sweep_file": str(sweep_file) if sweep_file else None, **wanted, "trials": []}
            for key, value in wanted.items():
                if box["state"].get(key) != value:
                    raise SweepFileError(
                        f"{self.out} holds a sweep with another {key.replace('_', ' ')} "
                        f"({box['state'].get(key)!r} there, {value!r} now): rerun it with the same file and "
                        "options, or give another --out.")
            self.state = box["state"]
        with quiet_engine():  # the engine's filled-in config (distributions named)
            self.config = dict(sweeps_engine().SweepConfig(dict(config)))
        self.metric = str(config["metric"]["name"])
        self.goal = str(config["metric"].get("goal", "minimize"))

    # ---------------------------------------------------------------- state
    @property
    def trials(self) -> list[dict[str, Any]]:
        """The trials as this worker last read them."""
        return self.state["trials"]

    def refresh(self) -> dict[str, Any]:
        """Read ``sweep.json`` again (under the lock); returns the state."""
        with locked_state(self.out) as box:
            self.state = box["state"]
        return self.state

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
        """Every trial as the engine's ``SweepRun``: finished and failed ones with their metric (the summary is the
        value the run's W&B summary holds), the others as running, so that the engine suggests no grid point
        twice and bayes treats them as pending."""
        sweeps = sweeps_engine()
        states = {FINISHED: sweeps.RunState.finished, FAILED: sweeps.RunState.failed}
        runs = []
        with quiet_engine():
            for trial in self.trials:
                history = [{self.metric: value} for _, value in trial.get("history", [])]
                metric = trial.get("metric") or {}
                summary = {self.metric: metric["summary"]} if metric.get("summary") is not None else {}
                runs.append(sweeps.SweepRun(
                    name=trial["run_id"], state=states.get(trial["state"], sweeps.RunState.running),
                    config={k: {"value": v} for k, v in trial["params"].items()},
                    summary_metrics=summary, history=history))
        return runs

    def suggest(self) -> dict[str, Any] | None:
        """The engine's next parameters given every trial (``None`` when a grid is exhausted)."""
        sweeps = sweeps_engine()
        index = len(self.trials)
        with quiet_engine():
            run = seeded_call(self.state["seed"] * 100003 + index, sweeps.next_run, self.config, self.engine_runs())
        if run is None:
            return None
        return {name: plain(spec["value"]) for name, spec in run.config.items()}

    def _reclaim_abandoned(self) -> None:
        """Running trials whose worker died: run them again (``interrupted``), or record them as failed after
        ``max_attempts`` attempts."""
        fs_time = fs_now(self.out)
        for trial in self.trials:
            if trial["state"] != RUNNING or (trial.get("worker") or {}).get("id") == self.worker["id"]:
                continue
            reason = abandoned(trial, self.out / trial.get("dir", trial["name"]), fs_time, self.stale_after)
            if reason is None:
                continue
            lost = int(trial.get("lost", 0)) + 1  # attempts whose worker died; preemptions are counted apart
            trial["lost"] = lost
            if lost >= self.max_attempts:
                trial.update(state=FAILED, ended=now(), error=f"{reason} (attempt {lost} of {self.max_attempts})")
            else:
                trial.update(state=INTERRUPTED, error=f"{reason}; it runs again")
            self._say(f"{trial['name']}: {trial['error']}")

    def claim(self, count: int) -> dict[str, Any] | None:
        """Take the next trial under the lock: an interrupted one first, else a new suggestion while the sweep holds
        fewer than ``count`` trials. Returns a copy of the claimed trial, or ``None`` when there is nothing to do."""
        with locked_state(self.out) as box:
            self.state = box["state"]
            self._reclaim_abandoned()
            pending = [t for t in self.trials if t["state"] == INTERRUPTED]
            if pending:
                trial = pending[0]
            elif len(self.trials) >= count:
                return None
            else:
                params = self.suggest()
                if params is None:
                    return None
                index = len(self.trials)
                trial = {"index": index, "name": f"trial-{index:03d}", "run_id": f"{self.state['sweep_id']}{index:03d}",
                         "run_name": sweep_run_name(params), "params": params, "attempts": 0}
                self.trials.append(trial)
            attempt = int(trial.get("attempts", 0)) + 1
            previous = trial.get("dir")
            # each attempt has a folder of its own: a worker that was taken over (stalled, not dead) keeps writing
            # into its own attempt's folder, never into this one
            folder = trial["name"] if attempt == 1 else f"{trial['name']}-a{attempt}"
            trial.update(state=RUNNING, worker=self.worker, attempts=attempt, dir=folder, claimed=now(), error=None)
            # the folder and first heartbeat exist as soon as the trial is claimed (so a worker that dies right away
            # is noticed); a leftover folder of that name is moved aside here and deleted after the lock
            trial_dir, old = self.out / folder, None
            if trial_dir.exists():
                old = trial_dir.rename(self.out / f".{folder}.old-{secrets.token_hex(3)}")
            trial_dir.mkdir(parents=True)
            (trial_dir / HEARTBEAT_FILE).touch()
            claimed = json.loads(json.dumps(trial, default=plain))
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        if previous and previous != folder:
            carry_over(self.out / previous, self.out / folder)
        return claimed

    def _record(self, trial: dict[str, Any]) -> bool:
        """Write this worker's ``trial`` into ``sweep.json`` unless another worker took it over meanwhile."""
        with locked_state(self.out) as box:
            self.state = box["state"]
            current = self.trials[trial["index"]]
            mine = (current.get("worker") or {}).get("id") == self.worker["id"]
            if not mine or current.get("attempts") != trial.get("attempts"):
                self._say(f"{trial['name']} was taken over by another worker; its outcome here is not recorded")
                return False
            self.trials[trial["index"]] = trial
            return True

    # ---------------------------------------------------------------- trials
    def command(self, trial: Mapping[str, Any]) -> list[str]:
        """The trial's command, as ``wandb agent`` would expand it, plus its ``--trainer.default_root_dir`` (the
        attempt's folder) and, for a ``fit`` that an earlier attempt checkpointed, ``--ckpt_path`` of its
        ``last.ckpt`` (carried into this attempt's folder), so a preempted trial continues instead of starting over."""
        trial_dir = self.out / trial.get("dir", trial["name"])
        cmd = expand_command(self.config.get("command") or DEFAULT_COMMAND,
                             trial["params"], extra_args=self.state["extra_args"],
                             program=self.config.get("program"), args_json_file=str(trial_dir / "args.json"))
        resume = _last_checkpoint(trial_dir) if _is_fit(cmd) else None
        return [*cmd, f"--{ROOT_DIR_KEY}={trial_dir}", *([f"--ckpt_path={resume}"] if resume else [])]

    def run_trial(self, trial: dict[str, Any]) -> None:
        """Run one claimed trial in its own process and record the outcome."""
        trial_dir = self.out / trial.get("dir", trial["name"])
        trial_dir.mkdir(parents=True, exist_ok=True)
        command = self.command(trial)
        (trial_dir / "args.json").write_text(json.dumps(trial["params"]))
        write_sweep_parameters(trial_dir / PARAMS_FILE, trial["params"])
        log_path = trial_dir / TRIAL_LOG
        env = {**os.environ, "WANDB_MODE": self.wandb_mode, "WANDB_RUN_ID": trial["run_id"],
               "WANDB_RUN_GROUP": self.state["name"], SWEEP_PARAM_PATH: str(trial_dir / PARAMS_FILE),
               "PYTHONUNBUFFERED": "1"}
        trial.update(state=RUNNING, command=command, log=f"{trial_dir.name}/{TRIAL_LOG}",
                     started=now(), ended=None, duration_s=None, returncode=None, error=None, metric=None,
                     history=[], metric_source=None)
        if not self._record(trial):
            return
        shown = " ".join(f"{k}={v}" for k, v in trial["params"].items())
        self._say(f"{trial['name']}: {shown}" + (f" (attempt {trial['attempts']})" if trial["attempts"] > 1 else ""))
        start = time.monotonic()
        with open(log_path, "w") as log, Heartbeat(trial_dir, self.heartbeat):
            log.write("$ " + " ".join(command) + "\n")
            log.flush()
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                       start_new_session=True)
            try:
                returncode = process.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                stop_process(process)
                returncode = None
            except BaseException:
                trial.update(state=INTERRUPTED, ended=now(), duration_s=round(time.monotonic() - start, 2),
                             error="the worker was stopped; the trial runs again",
                             interruptions=int(trial.get("interruptions", 0)) + 1)
                self._record(trial)
                stop_process(process)
                raise
        self._finish(trial, returncode, round(time.monotonic() - start, 2))

    def _finish(self, trial: dict[str, Any], returncode: int | None, duration: float) -> None:
        with sigterm_deferred():  # a SIGTERM now takes effect once the outcome is recorded
            self._conclude(trial, returncode, duration)

    def _conclude(self, trial: dict[str, Any], returncode: int | None, duration: float) -> None:
        trial_dir = self.out / trial["dir"]
        trial.update(duration_s=duration, ended=now(), returncode=returncode)
        history, source = read_trial_metric(trial_dir, self.metric, trial["run_id"])
        trial["history"] = [[int(s), float(v)] for s, v in history]
        summary = summarize_metric(history, self.goal)
        if summary is not None:
            trial["metric"] = {"name": self.metric, "best": summary.best, "best_step": summary.best_step,
                               "last": summary.last, "last_step": summary.last_step,
                               "summary": summary_value(self.metric, [v for _, v in history])}
            trial["metric_source"] = source
        if returncode in PREEMPTED:
            # the trial was preempted (it wrote a checkpoint and exited 128 + SIGTERM): this worker stops with it
            trial.update(state=INTERRUPTED, error=f"preempted (SIGTERM); see {trial['log']}",
                         interruptions=int(trial.get("interruptions", 0)) + 1)
            self._record(trial)
            self._say(f"{trial['name']} was preempted; run the same sweep command again to continue")
            raise SweepStopped
        if returncode is None:
            trial.update(state=FAILED, error=f"timed out after {self.timeout} s; see {trial['log']}")
        elif returncode != 0:
            tail = log_tail(self.out / trial["log"])
            trial.update(state=FAILED, error=f"exit code {returncode}; see {trial['log']}" + (f": {tail}" if tail
                                                                                             else ""))
        elif summary is None:
            trial.update(state=FAILED, error=f"{source}; see {trial['log']}")
        else:
            trial["state"] = FINISHED
        if not self._record(trial):
            return
        if trial["state"] == FINISHED:
            self._say(f"{trial['name']} finished in {duration:.1f} s: {self.metric} best {summary.best:.6g} "
                      f"(step {summary.best_step}), last {summary.last:.6g}")
        else:
            self._say(f"{trial['name']} FAILED after {duration:.1f} s: {trial['error']}")

    def run(self, count: int | None = None) -> dict[str, Any]:
        """Take and run trials until the sweep holds ``count`` trials, all taken (or the grid is exhausted).

        Interrupted trials (of this or another worker) run first. Returns the state (also in ``sweep.json``).
        """
        count = count if count is not None else self.default_count()
        if count is None:
            raise SweepFileError(f"a {self.config['method']} sweep never ends by itself: give --count N "
                                 "(or `run_cap` in the sweep file).")
        if count < 1:
            raise SweepFileError(f"--count must be >= 1, got {count}.")
        done = [t for t in self.trials if t["state"] in (FINISHED, FAILED)]
        if done:
            self._say(f"continuing {self.out}: {len(done)} trial(s) done")
        with sigterm_raises():
            while (trial := self.claim(count)) is not None:
                self.run_trial(trial)
        state = self.refresh()
        running = [t["name"] for t in self.trials if t["state"] == RUNNING]
        if running:
            self._say(f"nothing left to take; other workers still run {', '.join(running)}")
        elif len(self.trials) < count and self.config["method"] == "grid":
            self._say(f"the grid is exhausted after {len(self.trials)} trial(s)")
        return state

    def ranked(self) -> list[dict[str, Any]]:
        """The finished trials with a metric, best first, by the value the W&B summary holds (as W&B ranks runs;
        :func:`~ncsn_pl.runs.records.rank_runs`, the rule ``compare`` applies too)."""

        def summary(trial: Mapping[str, Any]) -> float | None:
            metric = trial.get("metric") or {}
            return metric.get("summary", metric.get("best"))  # sweeps recorded before the summary: the best value

        return rank_runs(self.trials, self.goal, summary, lambda trial: trial["state"] == FINISHED)
