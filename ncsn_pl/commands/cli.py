"""The command line: ``python -m ncsn_pl {fit,validate,test,...} --config configs/<x>.yaml``.

LightningCLI with omegaconf interpolation that follows command-line overrides, the run's resolved config saved
in its folder, and the checkpoint and interruption callbacks every run needs.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import sys
import warnings
from collections.abc import Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from jsonargparse import ArgumentError, ArgumentParser, Namespace, set_parsing_settings
from lightning.pytorch.cli import (
    ArgsType,
    LightningArgumentParser,
    LightningCLI,
    LRSchedulerTypeTuple,
    SaveConfigCallback,
)
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_info

import ncsn_pl
from ncsn_pl.commands.arguments import check_config_lists, complete_command_args, read_config_files
from ncsn_pl.commands.checkpoints import check_training_checkpoint, check_weights_fit, newest_last_checkpoint
from ncsn_pl.commands.fid import fid as fid_command
from ncsn_pl.commands.fid_nfe import fid_nfe as fid_nfe_command
from ncsn_pl.commands.help import COMMAND_USAGE, CompactHelpFormatter, HelpParser, first_sentence, put_groups_first
from ncsn_pl.commands.sample import sample as sample_command
from ncsn_pl.data.contract import CheckedFiles, ShapedData
from ncsn_pl.networks import upgrade_network_config
from ncsn_pl.runs.folder import give_run_folder
from ncsn_pl.runs.logger import RunLogger, continued_run
from ncsn_pl.runs.wandb_glue import (
    declare_metric_summaries,
    default_wandb_mode,
    drop_unset_wandb_settings,
    log_config,
    remember_wandb_run,
    run_dir,
    sweep_parameters,
    sweep_run_name,
    wandb_run_checkpoint,
    wandb_run_id_in,
)
from ncsn_pl.system.files import atomic_write_text, check_torch_file, load_torch_file, one_read_per_file
from ncsn_pl.training import ResumableCheckpoint, ScoreModel
from ncsn_pl.training.checkpoint import PREEMPTED_EXIT_CODE
from ncsn_pl.training.optimizers import OPTIMIZER_TITLE, SCHEDULE_TITLE

__all__ = ["NCSNCLI", "NCSNTrainer", "RunConfigSaver", "main"]


class NCSNTrainer(pl.Trainer):
    """Lightning's Trainer, which runs every command.

    ``sample``, ``fid`` and ``fid_nfe`` are its methods (LightningCLI builds their parsers from them) and run as
    predict loops (``ncsn_pl.sample_sets.drawing``), so ``--trainer.accelerator``, ``--trainer.devices``,
    ``--trainer.strategy`` (DDP too) and ``--trainer.precision`` apply to them. Each is written once, as a function
    of the Trainer in its own module; its signature is the command's options.
    """

    sample = sample_command
    fid = fid_command
    fid_nfe = fid_nfe_command


class RunConfigSaver(SaveConfigCallback):
    """Write the resolved config to ``<run dir>/config.yaml`` (the run's own folder, never a shared one)."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.already_saved or trainer.fast_dev_run:  # a smoke run writes nothing, as Lightning's loggers
            return
        if trainer.is_global_zero:
            text = self.parser.dump(self.config, skip_none=False)
            atomic_write_text(text, run_dir(trainer) / self.config_filename)
            self.save_config(trainer, pl_module, stage)
        self.already_saved = True
        self.already_saved = trainer.strategy.broadcast(self.already_saved)

    def save_config(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Put the resolved, nested config into each W&B run's config (``model.sigma_max`` as in sweep files), and
        declare that its summary keeps each metric's best value (what a sweep ranks the runs by)."""
        config = json.loads(self.parser.dump(self.config, format="json", skip_unset=False, skip_validation=True))
        log_config(trainer.loggers, config)
        declare_metric_summaries(trainer.loggers)
        remember_wandb_run(trainer.loggers, run_dir(trainer))


# settings a run continued from a checkpoint may change: the optimizer's (applied to its restored state by
# ScoreModel.on_train_start), the loss weight, the noise seed and the sampler's; not the schedule nor the network
RESUMABLE_SETTINGS = frozenset(
    {"lr", "betas", "eps", "weight_decay", "optimizer", "lr_scheduler", "anneal_power", "seed", "n_steps_each",
     "step_lr", "denoise", "init_range", "auto_max_items", "channels_last"}
)  # fmt: skip


SAMPLING_COMMANDS = ("sample", "fid", "fid_nfe")  # methods of NCSNTrainer: predict loops of a checkpoint's model


class NCSNCLI(LightningCLI):
    """LightningCLI for NCSN: forced checkpointing, links from the data to the model.

    Args:
        tools: commands that are not Trainer runs (``sweep``, ``compare``), by name, with their description; they are
            listed in the top-level ``--help`` (``python -m ncsn_pl`` runs them before any Trainer is built).
        **kwargs: LightningCLI's arguments.
    """

    def __init__(self, *args: Any, tools: Mapping[str, str] | None = None, **kwargs: Any) -> None:
        self.tools = dict(tools or {})
        super().__init__(*args, **kwargs)

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        """Lightning's subcommands but ``predict`` (a score model has no predictions), plus ``sample``, ``fid`` and
        ``fid_nfe`` (methods of :class:`NCSNTrainer`)."""
        lightning = {k: v for k, v in LightningCLI.subcommands().items() if k != "predict"}
        return {**lightning, **{name: {"model", "datamodule"} for name in SAMPLING_COMMANDS}}

    def setup_parser(self, add_subcommands: bool, main_kwargs: dict[str, Any], subparser_kwargs: dict[str, Any]
                     ) -> None:  # fmt: skip
        """Every command in the top-level help, one line each (the Trainer's and the tools); in a command's help, its
        own options (the method's parameters) first."""
        super().setup_parser(add_subcommands, main_kwargs, subparser_kwargs)
        commands = getattr(self.parser, "commands", None)  # HelpParser keeps them (run=False: none)
        if commands is None:
            return
        for subcommand, parser in commands.choices.items():
            own = list(inspect.signature(getattr(self.trainer_class, subcommand)).parameters)[1:]  # after the Trainer
            nested = [name for name in own if name not in self.subcommands()[subcommand]]  # e.g. fid's --quality
            put_groups_first(parser, [subcommand, *nested], f"{subcommand} options")
        for name, description in self.tools.items():
            tool = ArgumentParser(prog=f"python -m ncsn_pl {name}", description=description)
            commands.add_subcommand(name, tool, help=description)

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        """``sample`` / ``fid`` / ``fid_nfe`` without ``--config``: take the model and data from the checkpoint first;
        refuse config files that are not YAML mappings or whose lists would merge into other classes' settings;
        ``--ckpt_path last``: the run root's newest ``last.ckpt`` (:func:`_resolve_last`)."""
        if isinstance(args, (list, tuple)):
            configs = read_config_files(args)  # each read once
            check_config_lists(configs)
            args = complete_command_args(args, configs)
            # --model.<key> given on the command line applies over the checkpoint's, even when equal to the default
            self.given_model_keys = {a[8:].split("=")[0].split(".")[0] for a in args if a.startswith("--model.")}
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        if subcommand == "fit" and not self.config.fit.get("ckpt_path"):
            self.config.fit.ckpt_path = _checkpoint_of_wandb_run(self.config.fit.trainer.default_root_dir)
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if ckpt_path == "last" and subcommand in ("fit", "validate", "test"):
            ckpt_path = _resolve_last(subcommand, self.config[subcommand].trainer)
            self.config[subcommand]["ckpt_path"] = ckpt_path
        if ckpt_path and ckpt_path not in ("best", "hpc", "registry"):
            check_torch_file(ckpt_path)  # before LightningCLI unpickles the checkpoint's hyperparameters

    def _parse_ckpt_path(self) -> None:
        """Take the model's settings from ``--ckpt_path`` (as LightningCLI does), keeping the ones the command line or
        config changes where a resumed run can change them, and refusing the ones it cannot (schedule, network)."""
        subcommand = self.config.get("subcommand")
        if not subcommand or not self.config[subcommand].get("ckpt_path"):
            return super()._parse_ckpt_path()
        given = self.config[subcommand]["model"].as_dict()
        defaults = {k: p.default for k, p in inspect.signature(ScoreModel.__init__).parameters.items()}
        self._parse_checkpoint_hyperparameters(subcommand)
        stored = self.config[subcommand]["model"].as_dict()
        changed = {
            key: value
            for key, value in given.items()
            if key not in ("score_net", "data_shape") and value != "auto" and key in stored and value != stored[key]
            and (value != defaults.get(key) or key in getattr(self, "given_model_keys", ()))
        }  # fmt: skip
        fixed = {key: (stored[key], value) for key, value in changed.items() if key not in RESUMABLE_SETTINGS}
        if given.get("score_net", {}).get("class_path") != stored.get("score_net", {}).get("class_path"):
            fixed["score_net"] = (stored["score_net"].get("class_path"), given["score_net"].get("class_path"))
        if fixed and subcommand in SAMPLING_COMMANDS:
            listed = ", ".join(f"--model.{k}" for k in fixed)
            raise ValueError(
                f"{subcommand} draws with the checkpoint's schedule and network, so {listed} cannot change; leave "
                f"{'it' if len(fixed) == 1 else 'them'} out. How it samples changes with --model.n_steps_each, "
                "--model.step_lr, --model.denoise or --sampler (e.g. --sampler AnnealedLangevin "
                "--sampler.n_steps_each 5)."
            )
        if fixed:
            listed = "; ".join(f"model.{k} (checkpoint {old!r}, given {new!r})" for k, (old, new) in fixed.items())
            raise ValueError(
                f"These settings cannot change when continuing from {self.config[subcommand]['ckpt_path']}: {listed}. "
                "Leave them out (the checkpoint's are used) or start a new run without --ckpt_path."
            )
        for key, value in changed.items():
            self.config[subcommand]["model"][key] = value
        if changed:
            print(f"Settings changed from the checkpoint's: {changed}")

    def _parse_checkpoint_hyperparameters(self, subcommand: str) -> None:
        """Lightning's ``LightningCLI._parse_ckpt_path``: the model's settings from the checkpoint's hyperparameters,
        with a network config of an older checkpoint brought up to date (:func:`upgrade_network_config`); a file whose
        bytes do not match the CRC-32s it records is refused (:func:`~ncsn_pl.system.files.check_zip_crcs`)."""
        ckpt_path = self.config[subcommand]["ckpt_path"]
        if not Path(ckpt_path).is_file():
            return
        checkpoint = load_torch_file(ckpt_path)  # one read, its CRC-32s checked: a corrupt file stops here
        check_training_checkpoint(checkpoint, ckpt_path, subcommand in SAMPLING_COMMANDS)
        if subcommand not in SAMPLING_COMMANDS:  # its weights are checked against the model once it is built
            self._checkpoint_shapes = {k: tuple(v.shape) for k, v in checkpoint["state_dict"].items()
                                       if isinstance(v, torch.Tensor)}  # fmt: skip
        hparams = dict(checkpoint.get("hyper_parameters", {}))  # a copy: sample / fid read the file only once
        hparams.pop("_instantiator", None)
        for key in ("optimizer", "lr_scheduler"):  # given as --optimizer / --lr_scheduler (linked into the model)
            stored = hparams.pop(key, None)
            if stored and subcommand == "fit" and not self.config[subcommand].get(key):
                self.config = self.parser.parse_object({subcommand: {key: stored}}, self.config)
        if not hparams:
            return
        if "_class_path" in hparams:
            hparams = {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
        elif "score_net" in hparams:
            hparams["score_net"] = upgrade_network_config(hparams["score_net"])
        exit_on_error, self.parser.exit_on_error = self.parser.exit_on_error, False
        try:
            self.config = self.parser.parse_object({subcommand: {"model": hparams}}, self.config)
        except ArgumentError as error:
            raise ValueError(
                f"--ckpt_path {ckpt_path} is not a checkpoint of ncsn_pl's ScoreModel: its settings do not fit it "
                f"({' '.join(str(error).split())}); give a .ckpt file written by `python -m ncsn_pl fit`."
            ) from error
        finally:
            self.parser.exit_on_error = exit_on_error

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """``--checkpoint.*``; ``--optimizer`` and ``--lr_scheduler`` (any of torch's, by name) into the model's
        ``optimizer`` and ``lr_scheduler``, so checkpoints record them; the data's shape into the model."""
        parser.add_lightning_class_args(ResumableCheckpoint, "checkpoint")
        parser.add_optimizer_args((torch.optim.Optimizer,))
        parser.add_lr_scheduler_args(LRSchedulerTypeTuple)
        parser.groups["optimizer"].title, parser.groups["lr_scheduler"].title = OPTIMIZER_TITLE, SCHEDULE_TITLE
        if "data" in parser.groups:  # jsonargparse titles a group with a docstring's first line, here mid-sentence
            data_doc = inspect.getdoc(self.datamodule_class or pl.LightningDataModule)
            parser.groups["data"].title = first_sentence(data_doc).rstrip(".")
        for key in ("optimizer", "lr_scheduler"):  # as plain dicts, which checkpoints can hold
            parser.link_arguments(key, f"model.{key}", compute_fn=_plain_config)
        parser.link_arguments(
            "data",
            "model.init_args.data_shape" if self.subclass_mode_model else "model.data_shape",
            compute_fn=_data_shape,
            apply_on="instantiate",
        )

    def before_instantiate_classes(self) -> None:
        """The W&B loggers' settings, before they are built: a ``fit`` that continues a run (:func:`continued_run`)
        continues its W&B run too (``id``: the run folder's, ``resume="allow"``); in a sweep trial (``wandb agent`` or
        ``python -m ncsn_pl sweep``) the run is named after its swept values (the configured name is built from a few
        settings and would repeat across trials)."""
        config = self.config[self.subcommand] if self.subcommand else self.config  # run=False: no subcommand
        loggers = config.trainer.logger
        loggers = [lg for lg in (loggers if isinstance(loggers, list) else [loggers]) if isinstance(lg, Namespace)]
        wandb = [lg for lg in loggers if str(lg.get("class_path", "")).endswith("WandbLogger")]
        parameters = sweep_parameters() if self.subcommand in ("fit", "validate", "test") else None
        for logger in wandb if parameters else []:
            logger.init_args.name = sweep_run_name(parameters)
        ckpt_path = config.get("ckpt_path") if self.subcommand == "fit" else None
        if not (wandb and ckpt_path and Path(ckpt_path).is_file()):
            return
        for logger in loggers:
            if str(logger.get("class_path", "")).endswith("RunLogger"):
                root = Path(str(logger.init_args.save_dir), str(logger.init_args.get("name") or ""))
                run_id = wandb_run_id_in(run) if (run := continued_run(ckpt_path, root)) is not None else None
                for wandb_logger in wandb if run_id else []:  # resume: null in the config would override "allow"
                    wandb_logger.init_args.id, wandb_logger.init_args.resume = run_id, "allow"

    def instantiate_classes(self) -> None:
        """Build the model, the data and the Trainer; for ``fit``, resolve ``"auto"`` settings before any callback
        copies the model (EMA) and write the numbers into the config the run saves."""
        try:
            super().instantiate_classes()
        except ValueError as error:
            raise _unwrapped(error) from None
        if self.trainer.loggers:  # none for sample / fid
            drop_unset_wandb_settings(self.trainer.loggers)
        ckpt_path = self.config[self.subcommand].get("ckpt_path") if self.subcommand else None  # None: run=False
        check_weights_fit(self.model, getattr(self, "_checkpoint_shapes", None), ckpt_path)
        if self.subcommand != "fit":
            return
        if isinstance(self.datamodule, CheckedFiles) and self.trainer.local_rank == 0:
            self.datamodule.check_files()  # a missing data set or a failed download leaves no run folder behind
        give_run_folder(self.trainer)  # a version_N/ of its own, whatever the loggers (--trainer.logger=false too)
        if ckpt_path and Path(ckpt_path).is_file():  # a resumed run continues in its own folder (and W&B run)
            for logger in self.trainer.loggers:
                if isinstance(logger, RunLogger) and not logger.continue_run(ckpt_path) and logger.branched_from:
                    branch = logger.branched_from
                    rank_zero_info(
                        f"{ckpt_path} (step {branch['step']}) is earlier than its run's last.ckpt (step "
                        f"{branch['run_step']}): this run continues in a new folder (branched_from.json says from "
                        "where); the earlier run is kept as it is."
                    )
        resolved = self.model.resolve_auto_schedule(self.datamodule)
        for key, value in resolved.items():
            self.config[self.subcommand]["model"][key] = value
        if resolved:
            print(f"NCSNv2 rules applied to the training data: {resolved}")


class _NoAdvertisements(logging.Filter):
    """Drop Lightning's tips to install its cloud services (litlogger, litmodels): every run printed one."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip: For seamless cloud")


def _quiet_advertisements() -> None:
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        log = logging.getLogger(name)
        if not any(isinstance(f, _NoAdvertisements) for f in log.filters):
            log.addFilter(_NoAdvertisements())


def _run_root(trainer: Namespace) -> Path:
    """Where a run's ``version_N`` folders go: the save_dir (and name) of a first ``RunLogger``, else
    ``trainer.default_root_dir`` (the working folder when unset), as Lightning places checkpoints."""
    loggers = trainer.get("logger")
    first = loggers[0] if isinstance(loggers, list) and loggers else loggers
    if isinstance(first, Namespace) and str(first.get("class_path", "")).endswith("RunLogger"):
        init = first.get("init_args") or Namespace()
        if init.get("save_dir"):
            return Path(init.save_dir) / (init.get("name") or "")
    return Path(trainer.get("default_root_dir") or ".")


def _resolve_last(subcommand: str, trainer: Namespace) -> str | None:
    """``--ckpt_path last``: the newest ``last.ckpt`` of the run root (:func:`newest_last_checkpoint`), so that a
    requeued job continues its run with the same command; with none there, ``fit`` starts a new run (and says so)
    while ``validate`` and ``test`` stop.

    Raises:
        FileNotFoundError: ``validate`` / ``test`` with no ``last.ckpt`` under the root.
    """
    root = _run_root(trainer)
    found = newest_last_checkpoint(root)
    if found is not None:
        rank_zero_info(f"--ckpt_path last: continuing from {found}")
        return str(found)
    where = f"{root}/version_*/checkpoints/"
    if subcommand != "fit":
        raise FileNotFoundError(f"--ckpt_path last: no last.ckpt in {where}; give the checkpoint's path.")
    rank_zero_info(f"--ckpt_path last: no last.ckpt in {where} yet; starting a new run.")
    return None


def _checkpoint_of_wandb_run(root: str | None) -> str | None:
    """For a fit under a W&B run id given by ``WANDB_RUN_ID`` (``wandb agent`` re-running a preempted sweep trial, a
    requeued job), the ``last.ckpt`` of the run folder under ``root`` that keeps this id, so the run continues;
    ``None`` when there is none (a new run). ``root`` is ``trainer.default_root_dir`` (unset: the working folder)."""
    run_id = os.environ.get("WANDB_RUN_ID")
    found = wandb_run_checkpoint(root or os.getcwd(), run_id) if run_id else None
    if found is not None:
        rank_zero_info(f"W&B run {run_id} continues from {found} (its run folder keeps that id).")
    return str(found) if found is not None else None


# jsonargparse's texts around an error of a class it builds (a Union of subclasses) or of a link's function
_WRAPPERS = ("Does not validate against any of the Union subtypes", "Call to compute_fn of link")


def _unwrapped(error: BaseException) -> BaseException:
    """The error a class's ``__init__`` or a link's function raised, without jsonargparse's wrapping text (the union's
    subtypes, the link's arguments), in which the sentence that says what to fix is buried."""
    while str(error).startswith(_WRAPPERS) and error.__cause__ is not None:
        error = error.__cause__
    return error


def _plain_config(config: Namespace | None) -> dict[str, Any] | None:
    """A ``class_path`` / ``init_args`` namespace as a dict."""
    return config.as_dict() if isinstance(config, Namespace) else config


def _data_shape(datamodule: pl.LightningDataModule) -> tuple[int, ...]:
    shape = datamodule.data_shape if isinstance(datamodule, ShapedData) else None
    if shape is None:
        raise ValueError(
            f"{type(datamodule).__name__} has no data_shape; the model needs it for sampling. Give the DataModule a "
            "data_shape, (C, H, W) for images or (D,) for points (README, 'Your own DataModule: the contract')."
        )
    return tuple(shape)


def main(args: list[str] | None = None, tools: Mapping[str, str] | None = None) -> NCSNCLI | object:
    """Run the CLI; ``args`` replaces ``sys.argv[1:]`` (tests call ``main([...])``); ``tools`` are the other commands
    the top-level help lists (name: description).

    Raises:
        SystemExit: with status 143 (128 + SIGTERM) when the run was preempted, after writing its checkpoint.
    """
    if args is None:
        args = sys.argv[1:]
        # the arguments are the command line's, completed for sample / fid: LightningCLI need not warn about both
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    args = list(args)
    if args[:1] in (["fit"], ["validate"], ["test"]) and default_wandb_mode() == "offline":
        print("W&B has no API key here, so runs are logged offline (upload them later with `wandb sync`).",
              file=sys.stderr)  # stdout is --print_config's
    set_parsing_settings(omegaconf_absolute_to_relative_paths=True)
    _quiet_advertisements()
    try:
        sampling = bool(args[:1]) and args[0] in SAMPLING_COMMANDS
        if sampling:  # they write only --out_dir / --out: no logger whatever the config gives (last, so it applies
            args = [*args, "--trainer.logger=false"]  # over the config files), and no config saver (below)
        with one_read_per_file() if sampling else nullcontext():
            return NCSNCLI(
                ScoreModel,
                pl.LightningDataModule,
                tools=tools,
                subclass_mode_data=True,
                trainer_class=NCSNTrainer,
                save_config_callback=None if sampling else RunConfigSaver,
                save_config_kwargs={"overwrite": True},
                parser_class=HelpParser,
                parser_kwargs={"parser_mode": "omegaconf+", "formatter_class": CompactHelpFormatter,
                               "prog": "python -m ncsn_pl", "description": first_sentence(ncsn_pl.__doc__),
                               **{name: {"usage": COMMAND_USAGE} for name in NCSNCLI.subcommands()}},
                args=args,
                auto_configure_optimizers=False,
            )
    except SIGTERMException:
        raise SystemExit(PREEMPTED_EXIT_CODE) from None
