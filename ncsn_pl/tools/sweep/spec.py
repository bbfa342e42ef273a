"""Sweep files: read one and check it as W&B, its agent and the command's own parser would.

The sweep file is the one ``wandb sweep FILE`` takes (method, metric, ``program``, flat dotted ``parameters``,
``command``). :func:`validate_sweep` runs the sweep engine's schema check (the ``sweeps`` package, which W&B's
controller runs), dry-parses the command with LightningCLI's parser for every listed value, and checks that the
configured run logs the sweep's metric (:mod:`.checks`), so a bad file fails before any trial starts and names
every problem. The command is expanded as ``wandb agent`` expands it (:mod:`.expand`).
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import io
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from ncsn_pl.runs.records import goal_of
from ncsn_pl.tools.sweep.checks import (
    check_command_starts,
    check_fid_trial,
    check_metric_logged,
    check_not_forced_offline,
)
from ncsn_pl.tools.sweep.expand import expand_command

__all__ = [
    "METHODS",
    "ROOT_DIR_KEY",
    "SweepFileError",
    "check_command_config",
    "check_sweep_config",
    "expand_command",
    "grid_size",
    "load_sweep_file",
    "plain",
    "quiet_engine",
    "sweeps_engine",
    "validate_sweep",
]

METHODS = ("grid", "random", "bayes")
ROOT_DIR_KEY = "trainer.default_root_dir"
# what `wandb agent` runs for a sweep file without `command`
DEFAULT_COMMAND = ("${env}", "${interpreter}", "${program}", "${args}")


class SweepFileError(ValueError):
    """A sweep file that W&B (or the offline runner) would reject; the message names every problem."""


@contextlib.contextmanager
def quiet_engine() -> Iterator[None]:
    """Silence the sweep engine's harmless warnings.

    The ``sweeps`` package declares a pydantic v1 config key (a UserWarning on import and per SweepRun), and its
    Gaussian process warns when a length scale reaches its bound.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*allow_population_by_field_name.*")
        warnings.filterwarnings("ignore", message="Valid config keys have changed in V2")
        warnings.filterwarnings("ignore", message="The optimal value found for dimension")
        yield


def sweeps_engine() -> Any:
    """The ``sweeps`` package (W&B's sweep engine), imported quietly."""
    with quiet_engine():
        import sweeps
    return sweeps


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
    a ``program`` (``wandb agent`` reads it from every run command), a goal that matches a metric of known
    direction (:data:`~ncsn_pl.runs.records.goal_of`), and a ``command`` with ``${args}`` whose
    ``${envvar:NAME}`` variables are set.
    """
    sweeps = sweeps_engine()
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
    else:
        known, goal = goal_of(str(metric["name"])), metric.get("goal", "minimize")
        if known is not None and goal != known:
            problems.append(f"metric {metric['name']!r} with goal {goal!r}: it is better when {known[:-3]}al, and "
                            f"each run's W&B summary keeps that value; use goal: {known}.")
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
    if not config.get("program"):
        problems.append("no `program`: `wandb agent` reads it from every run the sweep sends (command[\"program\"]) "
                        "even when the command does not use it; add `program: ncsn_pl/__main__.py`.")
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
        from wandb.sdk.launch.sweeps.utils import SWEEP_COMMAND_ENV_VAR_REGEX as env_var

        for name in sorted({m for c in command for m in env_var.findall(str(c))} - set(os.environ)):
            problems.append(f"`command` reads ${{envvar:{name}}} but {name} is not set: export it (e.g. "
                            f"`export {name}=...`, as the file's comments say) where the sweep and its agents run.")
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

    with quiet_engine():
        parameter = HyperParameter(name, dict(spec))
    return [plain(parameter.ppf(q)) for q in (0.001, 0.999)]


def plain(value: Any) -> Any:
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
    from ncsn_pl.commands.cli import main as cli_main

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
    """Every dotted key of a nested config, the group keys included (``model``, ``model.sigma_max``, ...), and each
    key of a subclass's ``init_args`` also without it (``data.seed`` for ``data.init_args.seed``: LightningCLI's
    parser takes both)."""
    keys: set[str] = set()
    for key, value in config.items():
        name = f"{prefix}{key}"
        keys.add(name)
        if isinstance(value, Mapping):
            keys |= _config_keys(value, name + ".")
            if isinstance(value.get("init_args"), Mapping) and "class_path" in value:
                keys |= _config_keys(value["init_args"], name + ".")
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
    (``probe_values``) each listed value, or each end of a distribution, must be accepted by the parser; the
    run must log the sweep's metric (:func:`~ncsn_pl.tools.sweep.checks.check_metric_logged`) and must not
    force W&B offline. With ``check_logging`` the config must log under ``trainer.default_root_dir`` (where the
    offline runner reads the metric back). A command that does not run ``-m ncsn_pl`` is not checked.

    Args:
        config: the sweep config (already schema-checked).
        extra_args: arguments the runner adds to every trial (they are part of the parsed command).
        probe_values: also dry-parse the values (one parse per value of the longest value list).
        check_logging: require a CSVLogger or WandbLogger writing under ``trainer.default_root_dir``.
    """
    command = config.get("command") or []
    ncsn = _ncsn_args(command)
    if ncsn is None:
        return check_command_starts(command or DEFAULT_COMMAND, config.get("program"))
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
    fid_command = ncsn[:1] == ["fid"]
    if check_logging and not fid_command and not _logs_under_root(base, probe_root):
        problems.append(f"`{' '.join(ncsn)}` logs nowhere under {ROOT_DIR_KEY}, so a trial's metric cannot be read "
                        f"back: give its CSVLogger (or WandbLogger) save_dir: ${{{ROOT_DIR_KEY}}}.")
    metric = (config.get("metric") or {}).get("name")
    shown = " ".join(t for t in [*ncsn, *extra_args] if not t.startswith("${"))
    if metric and ncsn[:1] == ["fit"]:
        problems += check_metric_logged(base, str(metric), shown)
    if fid_command:
        problems += check_fid_trial(base, str(metric or ""), shown)
    problems += [f"`{shown}`: {problem}" for problem in check_not_forced_offline(base)]
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
    sweeps = sweeps_engine()
    with quiet_engine():
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
