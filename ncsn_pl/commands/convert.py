"""``python -m ncsn_pl convert``: an official NCSN / NCSNv2 checkpoint as a Lightning checkpoint that
``fit --ckpt_path`` continues, and a config to continue it with.

The official runners save ``[state_dict, optimizer]`` (ermongroup/ncsn ``runners/anneal_runner.py``) or ``[state_dict,
optimizer, epoch, step, ema_shadow]`` (ermongroup/ncsnv2 ``runners/ncsn_runner.py``; the shadow of its ``EMAHelper``).
The Lightning checkpoint holds what a fit of ``ScoreModel`` would have written at that step: the network and schedule
(the official config's, as ``sample --official_ckpt`` reads it), the Adam state (matched to the parameters by name),
the step and epoch, and with EMA weights the layout of Lightning's ``EMAWeightAveraging``: the averaged weights in
``state_dict``, the raw ones in ``current_model_state``. Nothing is unpickled: the file is read with
``weights_only=True`` and its CRC-32s are checked.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DESCRIPTION = (
    "Convert an official NCSN / NCSNv2 checkpoint (.pth) into a Lightning checkpoint that `fit --ckpt_path` continues "
    "(weights, EMA weights, Adam state, step) and a config to continue it with (OUT with .yaml)."
)
EMA_CALLBACK = "lightning.pytorch.callbacks.EMAWeightAveraging"  # NCSNv2's EMAHelper: a constant decay, no warm-up


def convert(official_ckpt: str, out: str, official_config: str | None = None, data_root: str | None = None,
            step: int | None = None) -> tuple[Path, Path]:  # fmt: skip
    """Write ``out`` (the Lightning checkpoint) and ``out`` with ``.yaml`` (its ``fit`` config).

    Args:
        official_ckpt: the official ``.pth`` file.
        out: the Lightning checkpoint to write (``.ckpt``).
        official_config: its config (default: the ``config.yml`` beside it).
        data_root: where the training data are (the data set's root; the image folder for LSUN and FFHQ).
        step: the training step, for checkpoints that do not record it (NCSN's); default: the number in a
            ``checkpoint_<step>.pth`` name, else 0.

    Returns:
        The checkpoint and the config written.

    Raises:
        FileNotFoundError, ValueError: a missing, corrupt or foreign file, a config ncsn-pl cannot train with, or
            weights and optimizer state that do not fit the network the config describes.
    """
    import lightning.pytorch as pl
    import torch

    from ncsn_pl.commands.cli import NCSNCLI
    from ncsn_pl.commands.official import (
        default_config_path,
        has_ema_weights,
        load_official_weights,
        official_command_args,
        official_training_settings,
        read_official_checkpoint,
        read_official_config,
        recorded_step,
    )
    from ncsn_pl.system.files import atomic_torch_save, atomic_write_text
    from ncsn_pl.training import ScoreModel

    out_path = Path(out)
    if out_path.suffix != ".ckpt":
        raise ValueError(f"--out {out} should end with .ckpt (the config goes beside it, with .yaml).")
    config_path = Path(official_config) if official_config else default_config_path(official_ckpt)
    config = read_official_config(config_path)
    model_args, data, _ = official_command_args(official_ckpt, official_config, data_root)
    training, data_settings = official_training_settings(config)
    data["init_args"].update(data_settings)
    obj, sha256 = read_official_checkpoint(official_ckpt)

    # the model, the data and a Trainer as `fit` builds them, so the hyperparameters are those a fit records
    args = [*model_args, *(f"--model.{k}={json.dumps(v)}" for k, v in training.items()), "--data=" + json.dumps(data),
            "--trainer.logger=false", "--trainer.accelerator=cpu", "--trainer.devices=1",
            "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]  # fmt: skip
    cli = NCSNCLI(ScoreModel, pl.LightningDataModule, subclass_mode_data=True, save_config_callback=None, run=False,
                  args=args, auto_configure_optimizers=False)  # fmt: skip
    model, trainer = cli.model, cli.trainer
    ema = has_ema_weights(obj) and bool(config["model"].get("ema", True))
    load_official_weights(model, obj, official_ckpt, config_path, use_ema=False)
    raw = copy.deepcopy(model.state_dict())
    if ema:
        load_official_weights(model, obj, official_ckpt, config_path, use_ema=True)
    epoch, step = recorded_step(obj) or (0, _step_in_name(official_ckpt) if step is None else step)

    optimizer = model.configure_optimizers()
    optimizer.load_state_dict(adam_state_by_name(obj, model, optimizer, official_ckpt))
    loops = {name: getattr(trainer, name).state_dict() for name in ("fit_loop", "validate_loop", "test_loop",
                                                                      "predict_loop")}  # fmt: skip
    loops["fit_loop"] = at_step(loops["fit_loop"], step, epoch)
    checkpoint: dict[str, Any] = {
        "epoch": epoch,
        "global_step": step,
        "pytorch-lightning_version": pl.__version__,
        "state_dict": model.state_dict(),
        "loops": loops,
        "callbacks": {},
        "optimizer_states": [optimizer.state_dict()],
        "lr_schedulers": [],
        "hparams_name": "kwargs",
        "hyper_parameters": dict(model.hparams),
        "datamodule_hparams_name": "kwargs",
        "datamodule_hyper_parameters": dict(cli.datamodule.hparams),
        "official": {"checkpoint": str(Path(official_ckpt).resolve()), "checkpoint_sha256": sha256,
                     "config": str(config_path.resolve()), "ema": ema},  # fmt: skip
    }
    if ema:  # where EMAWeightAveraging puts them (WeightAveraging.on_save_checkpoint)
        checkpoint["current_model_state"] = raw
        checkpoint["averaging_state"] = {"n_averaged": torch.tensor(max(step, 1), dtype=torch.long)}
    atomic_torch_save(checkpoint, out_path)
    config_out = out_path.with_suffix(".yaml")
    atomic_write_text(fit_config(checkpoint, out_path, config, ema), config_out)
    return out_path, config_out


def _step_in_name(path: str) -> int:
    """The step of a ``checkpoint_<step>.pth`` name (the runners' snapshots), else 0."""
    match = re.fullmatch(r"checkpoint_(\d+)\.pth", Path(path).name)
    return int(match.group(1)) if match else 0


def adam_state_by_name(obj: Any, model: Any, optimizer: Any, official_ckpt: str) -> dict[str, Any]:
    """The official Adam state (``obj[1]``) as a state of ``optimizer`` (over ``model.parameters()``), each parameter's
    moments matched by name: the official optimizer's ``params`` are the network's parameters in the order of its
    state dict (``obj[0]``). ``optimizer``'s own (fresh) state when the checkpoint holds none.

    Raises:
        ValueError: the state covers another number of parameters, or has moments of another shape than the parameter.
    """
    official = obj[1] if isinstance(obj, (list, tuple)) and len(obj) > 1 and isinstance(obj[1], dict) else {}
    fresh = optimizer.state_dict()
    if not official.get("state"):
        return fresh
    parameters = {name.removeprefix("score_net."): p for name, p in model.named_parameters()}
    official_order = [name for name in (k.removeprefix("module.") for k in obj[0]) if name in parameters]
    groups = official.get("param_groups") or []
    if len(groups) != 1 or len(groups[0]["params"]) != len(official_order):
        raise ValueError(f"--official_ckpt {official_ckpt}: its Adam state covers other parameters than the network's "
                         f"{len(official_order)}.")  # fmt: skip
    official_id = dict(zip(official_order, groups[0]["params"], strict=True))
    state = {}
    for index, (name, parameter) in enumerate(parameters.items()):
        entry = official["state"].get(official_id[name])
        if entry is None:  # a parameter that never had a gradient
            continue
        wrong = [k for k, v in entry.items() if hasattr(v, "shape") and v.ndim and v.shape != parameter.shape]
        if wrong:
            raise ValueError(f"--official_ckpt {official_ckpt}: the Adam state of {name} ({', '.join(wrong)}) has "
                             f"another shape than the parameter {tuple(parameter.shape)}.")  # fmt: skip
        state[index] = entry
    return {"state": state, "param_groups": fresh["param_groups"]}


def at_step(fit_loop: dict[str, Any], step: int, epoch: int) -> dict[str, Any]:
    """A fresh fit loop's state (``trainer.fit_loop.state_dict()``) moved to the start of ``epoch`` with ``step``
    optimizer steps done, as a checkpoint written at an epoch's end records it (one batch per step)."""
    loop = copy.deepcopy(fit_loop)
    optimizer = loop["epoch_loop.automatic_optimization.optim_progress"]["optimizer"]
    for tracker in (optimizer["step"], optimizer["zero_grad"]):
        tracker["total"] = {key: step for key in tracker["total"]}
    loop["epoch_loop.state_dict"]["_batches_that_stepped"] = step
    batches = loop["epoch_loop.batch_progress"]["total"]
    loop["epoch_loop.batch_progress"]["total"] = {key: step for key in batches}
    for part in ("total", "current"):
        loop["epoch_progress"][part] = {key: epoch for key in loop["epoch_progress"][part]}
    return loop


def fit_config(checkpoint: dict[str, Any], out: Path, official: dict[str, Any], ema: bool) -> str:
    """The YAML of a ``fit`` that continues ``checkpoint``: its model and data, a run folder of its own, the official
    ``training.n_iters`` as ``max_steps``, and the official EMA decay (``model.ema_rate``) when it has EMA weights."""
    import yaml

    from ncsn_pl.training import ScoreModel

    defaults = _defaults(ScoreModel)
    hparams = checkpoint["hyper_parameters"]
    model = {k: _plain(v) for k, v in hparams.items()
             if not k.startswith("_") and k != "data_shape" and _plain(v) != _plain(defaults.get(k))}  # fmt: skip
    data = dict(checkpoint["datamodule_hyper_parameters"])
    root = f"runs/{out.stem}"
    trainer: dict[str, Any] = {
        "default_root_dir": root,
        "max_steps": int((official.get("training") or {}).get("n_iters", checkpoint["global_step"] + 1)),
        "logger": [{"class_path": "ncsn_pl.training.RunLogger",
                    "init_args": {"save_dir": "${trainer.default_root_dir}", "name": ""}}],  # fmt: skip
        "callbacks": [],
    }
    if ema:
        decay = float(official["model"].get("ema_rate", 0.999))
        trainer["callbacks"].append({"class_path": EMA_CALLBACK, "init_args": {"decay": decay}})
    config = {
        "trainer": trainer,
        "model": model,
        "data": {"class_path": data.pop("_class_path"), "init_args": {k: v for k, v in data.items()
                                                                       if not k.startswith("_")}},
    }  # fmt: skip
    header = (f"# Continues {checkpoint['official']['checkpoint']} (step {checkpoint['global_step']}):\n"
              f"#   python -m ncsn_pl fit --config {out.with_suffix('.yaml')} --ckpt_path {out}\n")  # fmt: skip
    return header + yaml.safe_dump(config, sort_keys=False)


def _defaults(cls: type) -> dict[str, Any]:
    import inspect

    return {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items()}


def _plain(value: Any) -> Any:
    """Tuples as lists, for YAML."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ncsn_pl convert", description=DESCRIPTION)
    parser.add_argument("--official_ckpt", required=True, help="the official checkpoint (.pth)")
    parser.add_argument("--official_config", default=None,
                        help="its config (default: the config.yml beside the checkpoint)")  # fmt: skip
    parser.add_argument("--out", required=True, help="the Lightning checkpoint to write (.ckpt); its config goes "
                                                     "beside it (.yaml)")  # fmt: skip
    parser.add_argument("--data_root", default=None,
                        help="where the training data are (default: data; for LSUN and FFHQ the image folder)")
    parser.add_argument("--step", type=int, default=None,
                        help="the training step, for NCSN checkpoints, which do not record it (default: the number in "
                             "a checkpoint_<step>.pth name, else 0)")  # fmt: skip
    return parser


def main(argv: Sequence[str] | None = None) -> tuple[Path, Path]:
    """``python -m ncsn_pl convert ...``; returns the checkpoint and the config written."""
    options = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    ckpt, config = convert(options.official_ckpt, options.out, options.official_config, options.data_root,
                           options.step)  # fmt: skip
    print(f"wrote {ckpt} and {config}; continue it with: python -m ncsn_pl fit --config {config} --ckpt_path {ckpt}")
    return ckpt, config
