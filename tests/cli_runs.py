"""Runs of the CLI shared by the tests: a smoke-size fit on the bundled digits, and where runs land."""

from pathlib import Path

from ncsn_pl.commands.cli import main

CONFIGS = Path(__file__).parents[1] / "configs"
SMOKE = str(CONFIGS / "cpu_smoke.yaml")


def run_dirs(root: Path) -> list[Path]:
    """The run folders under ``root`` (those holding a config.yaml)."""
    return sorted(p.parent for p in root.rglob("config.yaml"))


def fit_digits(tmp_path: Path, *extra: str):
    return main(
        [
            "fit",
            "--config",
            str(CONFIGS / "quickstart.yaml"),
            "--config",
            SMOKE,
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.logger.init_args.save_dir=" + str(tmp_path),
            "--trainer.callbacks=[]",
            "--data.init_args.dequantize=false",
            "--data.init_args.batch_size=8",
            "--trainer.limit_train_batches=2",
            "--trainer.limit_val_batches=0.0",
            "--trainer.max_steps=-1",
            *extra,
        ]
    )


def smoke_checkpoint(root: Path, *extra: str) -> Path:
    """``last.ckpt`` of a 2-step quickstart run (cpu_smoke: n_steps_each 1) in ``root``, batches of 8, no callbacks
    or validation; ``extra`` are further command-line settings."""
    main(["fit", "--config", str(CONFIGS / "quickstart.yaml"), "--config", SMOKE,
          f"--trainer.default_root_dir={root}", f"--trainer.logger.init_args.save_dir={root}",
          "--trainer.callbacks=[]", "--trainer.limit_val_batches=0.0", "--data.init_args.batch_size=8",
          *extra])  # fmt: skip
    (path,) = root.rglob("last.ckpt")
    return path
