"""The command line: ``python -m ncsn_pl {fit,validate,test,...} --config configs/<x>.yaml``.

LightningCLI with omegaconf interpolation that follows command-line overrides, the run's resolved config saved
in its folder, and the checkpoint and interruption callbacks every run needs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning.pytorch as pl
from jsonargparse import set_parsing_settings
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

from ncsn_pl.callbacks import ResumableCheckpoint, run_dir
from ncsn_pl.module import ScoreModel

__all__ = ["NCSNCLI", "NCSNTrainer", "RunConfigSaver", "main"]


class NCSNTrainer(pl.Trainer):
    """Lightning's Trainer; our subcommands are its methods (LightningCLI builds their parsers from them)."""


class RunConfigSaver(SaveConfigCallback):
    """Write the resolved config to ``<run dir>/config.yaml`` (the run's own folder, never a shared one)."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.already_saved:
            return
        path = run_dir(trainer) / self.config_filename
        if trainer.is_global_zero:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            self.parser.save(self.config, tmp, skip_none=False, overwrite=True, multifile=self.multifile)
            tmp.replace(path)
            self.save_config(trainer, pl_module, stage)
        self.already_saved = True
        self.already_saved = trainer.strategy.broadcast(self.already_saved)

    def save_config(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Put the resolved, nested config into each W&B run's config (``model.sigma_max`` as in sweep files)."""
        import json

        from ncsn_pl.tracking import log_config

        config = json.loads(self.parser.dump(self.config, format="json", skip_unset=False, skip_validation=True))
        log_config(trainer.loggers, config)


class NCSNCLI(LightningCLI):
    """LightningCLI for NCSN: forced checkpointing, links from the data to the model."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ResumableCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.filename": "{epoch}-{step}"})
        parser.link_arguments("data", "model.init_args.data_shape" if self.subclass_mode_model else "model.data_shape",
                              compute_fn=_data_shape, apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        config = self.config.get(self.subcommand) if self.subcommand else self.config
        if config is not None and config.get("ckpt_path"):
            _check_checkpoint_path(config["ckpt_path"])

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        _check_network_fits_data(self.model)


def _data_shape(datamodule: pl.LightningDataModule) -> tuple[int, ...]:
    shape = getattr(datamodule, "data_shape", None)
    if shape is None:
        raise ValueError(f"{type(datamodule).__name__} has no data_shape; the model needs it for sampling.")
    return tuple(shape)


def _check_checkpoint_path(ckpt_path: str) -> None:
    if ckpt_path in ("last", "best", "hpc", "registry"):
        return
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"--ckpt_path {ckpt_path!r} does not exist; give the path of a .ckpt file.")


def _check_network_fits_data(model: pl.LightningModule) -> None:
    """Image channels and sizes must fit the network: fail before training, saying what to change."""
    net = getattr(model, "score_net", None)
    shape = getattr(model, "data_shape", None)
    if net is None or shape is None:
        return
    channels = getattr(net, "channels", None)
    if channels is not None and channels != shape[0]:
        raise ValueError(
            f"The data have {shape[0]} channel(s) but {type(net).__name__} was built for {channels}: set "
            f"model.score_net.init_args.channels to {shape[0]} (or use ${{data.channels}})."
        )
    check = getattr(net, "check_input_shape", None)
    if callable(check):
        check(shape)


# Subcommands that are not Trainer runs: ``python -m ncsn_pl <name> ...`` calls ``<module>.main(argv)``.
TOOLS = {"sweep": "ncsn_pl.sweep", "compare": "ncsn_pl.compare"}


def main(args: list[str] | None = None) -> NCSNCLI | object:
    """Run the CLI; ``args`` replaces ``sys.argv[1:]`` (tests call ``main([...])``)."""
    args = list(args if args is not None else sys.argv[1:])
    if args and args[0] in TOOLS:
        import importlib

        return importlib.import_module(TOOLS[args[0]]).main(args[1:])
    set_parsing_settings(omegaconf_absolute_to_relative_paths=True)
    return NCSNCLI(
        ScoreModel,
        pl.LightningDataModule,
        subclass_mode_data=True,
        trainer_class=NCSNTrainer,
        save_config_callback=RunConfigSaver,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"parser_mode": "omegaconf+"},
        args=args,
        auto_configure_optimizers=False,
    )
