"""``python -m ncsn_pl sweep FILE [--count N] [--out DIR] [--seed S] [--validate] [-- ARGS...]``.

Start the same command several times (on one node, or as a SLURM job array on nodes that share the sweep folder)
to work on one sweep with several workers."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ncsn_pl.system.files import atomic_write_text
from ncsn_pl.tools.sweep.runner import FAILED, STATE_FILE, Sweep, SweepStopped, seeded_call
from ncsn_pl.tools.sweep.spec import (
    ROOT_DIR_KEY,
    SweepFileError,
    expand_command,
    load_sweep_file,
    plain,
    sweeps_engine,
    validate_sweep,
)

__all__ = ["main"]


DESCRIPTION = (
    "Run a W&B sweep file with no W&B server: the sweeps engine suggests, each trial is the file's command in its own "
    "process with W&B offline. Rerun the same command to continue a sweep; run it several times at once (one node or "
    "many sharing --out) for several workers on one sweep."
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ncsn_pl sweep",
        description=DESCRIPTION,
        epilog="Arguments after `--` are added to every trial, e.g. `-- --trainer.max_steps=1000 "
               "--data.init_args.root=/data`.")
    parser.add_argument("file", help="the sweep YAML file (the one `wandb sweep FILE` takes)")
    parser.add_argument("--count", type=int, default=None,
                        help="trials the sweep should hold in total, of all workers (default: the whole grid, or the "
                             "file's run_cap); rerunning with the same count continues a stopped sweep")
    parser.add_argument("--out", default=None, help="the sweep folder (default: runs/sweeps/<file name>)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the engine's suggestions (default: 0)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds allowed per trial (default: none)")
    parser.add_argument("--wandb-mode", choices=("offline", "disabled"), default="offline",
                        help="WANDB_MODE of the trials (default: offline; `wandb sync` them later)")
    parser.add_argument("--stale-after", type=float, default=600.0,
                        help="seconds without a heartbeat after which another worker's trial counts as abandoned: it "
                             "runs once more, then is recorded as failed (default: 600)")
    parser.add_argument("--heartbeat", type=float, default=30.0,
                        help="seconds between a worker's heartbeats (default: 30)")
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
            first = seeded_call(options.seed * 100003, sweeps_engine().next_run, config, [])
        if first is not None:
            trial["params"] = {k: plain(v["value"]) for k, v in first.config.items()}
        command = expand_command(config.get("command") or [], trial["params"], extra_args=extra,
                                 program=config.get("program"))
        print(f"{options.file}: valid {config['method']} sweep optimising {config['metric']['name']}; first trial:\n"
              f"  {' '.join(command)} --{ROOT_DIR_KEY}={out / 'trial-000'}")
        return None
    if config.get("early_terminate"):
        print("[sweep] early_terminate is ignored offline: trials run one at a time to the end.", flush=True)
    try:
        sweep = Sweep(raw, out, seed=options.seed, extra_args=extra, sweep_file=options.file,
                      wandb_mode=options.wandb_mode, timeout=options.timeout, stale_after=options.stale_after,
                      heartbeat=options.heartbeat)
        atomic_write_text(Path(options.file).read_text(), sweep.out / "sweep.yaml")
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
    ranked = sweep.ranked()
    failed = [t for t in sweep.trials if t["state"] == FAILED]
    sweep._say(f"{len(sweep.trials)} trial(s): {len(ranked)} finished, {len(failed)} failed; "
               f"state in {sweep.state_path}")
    if ranked:
        best = ranked[0]
        shown = " ".join(f"{k}={v}" for k, v in best["params"].items())
        value = best["metric"].get("summary", best["metric"]["best"])
        sweep._say(f"best: {best['name']} {sweep.metric}={value:.6g} with {shown}")
        sweep._say(f"compare the runs: python -m ncsn_pl compare {sweep.out}")
