"""Run folders that nothing overwrites or litters: a folder per fit whatever the loggers, no leftovers of a killed
writer, no W&B run for a refused resume, one line ending in ``metrics.csv``."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cli_runs import CONFIGS, SMOKE, fit_digits, run_dirs
from cluster_runs import TWO_CPUS, torchrun
from lightning.pytorch.loggers import CSVLogger, WandbLogger

from ncsn_pl.commands.cli import main
from ncsn_pl.compat import wandb_init_settings
from ncsn_pl.runs import logger as logger_module
from ncsn_pl.runs.logger import RunFolderInUseError, RunLogger
from ncsn_pl.system.locks import ProcessLock

GRID = '--trainer.callbacks=[{"class_path": "ncsn_pl.training.SampleGrid", "init_args": {"num_samples": 4}}]'


def fit_without_logger(root, *extra: str):
    return main(["fit", "--config", str(CONFIGS / "quickstart.yaml"), "--config", SMOKE,
                 f"--trainer.default_root_dir={root}", "--trainer.logger=false", GRID,
                 "--trainer.limit_val_batches=0.0", "--data.init_args.batch_size=8", *extra])  # fmt: skip


def files(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


# ------------------------------------------------------------------ a folder per fit
def test_fits_without_a_logger_get_a_folder_each_and_resume_in_theirs(tmp_path):
    fit_without_logger(tmp_path, "--seed_everything=1")
    first = files(tmp_path / "version_0")
    assert {"config.yaml", "checkpoints/last.ckpt", "samples/final.png"} <= set(first)
    assert "metrics.csv" not in first and "hparams.yaml" not in first  # no logger: no metrics
    fit_without_logger(tmp_path, "--seed_everything=2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["version_0", "version_1"]
    assert files(tmp_path / "version_0") == first  # last.ckpt, config.yaml and final.png of the first run kept
    assert {"config.yaml", "checkpoints/last.ckpt", "samples/final.png"} <= set(files(tmp_path / "version_1"))

    last = tmp_path / "version_0" / "checkpoints" / "last.ckpt"
    resumed = fit_without_logger(tmp_path, "--trainer.max_steps=4", "--trainer.max_epochs=2", f"--ckpt_path={last}")
    assert resumed.trainer.global_step == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["version_0", "version_1"]  # continued in its folder
    assert torch.load(last, weights_only=True)["global_step"] == 4


@pytest.mark.slow  # about 60 s: two launches of two interpreters
def test_fits_without_a_logger_under_torchrun_get_one_folder_each(tmp_path):
    args = ["fit", "--config", str(CONFIGS / "quickstart.yaml"), "--config", SMOKE, "--trainer.logger=false",
            f"--trainer.default_root_dir={tmp_path}", "--trainer.callbacks=[]", "--trainer.limit_val_batches=0",
            "--data.init_args.batch_size=4", *TWO_CPUS]  # fmt: skip
    for _ in range(2):
        result = torchrun(args)
        assert result.returncode == 0, result.stderr[-3000:]
    for run in ("version_0", "version_1"):  # rank 0 claims a folder per run, and the other rank uses it
        assert {"config.yaml", "checkpoints/last.ckpt"} <= set(files(tmp_path / run))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["version_0", "version_1"]


@pytest.mark.slow  # about 15 s: the case above with another logger setting
def test_a_fit_logging_to_wandb_alone_gets_a_folder_too(tmp_path):
    wandb_alone = {"class_path": "lightning.pytorch.loggers.WandbLogger", "init_args": {"save_dir": str(tmp_path)}}
    for _ in range(2):
        main(["fit", "--config", str(CONFIGS / "quickstart.yaml"), "--config", SMOKE,
              f"--trainer.default_root_dir={tmp_path}", "--trainer.callbacks=[]", "--trainer.limit_val_batches=0.0",
              f"--trainer.logger={json.dumps(wandb_alone)}"])  # fmt: skip
    assert sorted(p.parent.parent.name for p in tmp_path.rglob("last.ckpt")) == ["version_0", "version_1"]
    assert len(run_dirs(tmp_path)) == 2


# ------------------------------------------------------------------ metrics.csv
def test_metrics_csv_keeps_one_line_ending_after_a_resume(tmp_path):
    fit_digits(tmp_path, "--trainer.max_epochs=1", "--trainer.log_every_n_steps=1")
    (run,) = run_dirs(tmp_path)
    fit_digits(tmp_path, "--trainer.max_epochs=2", "--trainer.log_every_n_steps=1",
               f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}")  # fmt: skip
    data = (run / "metrics.csv").read_bytes()
    rows = data.splitlines()
    assert len(rows) >= 5 and rows[0].startswith(b"epoch,")  # the header, steps 1-2 kept, steps 3-4 appended
    assert data.count(b"\r\n") == data.count(b"\n") == len(rows)  # csv's CRLF throughout, as Lightning writes


# ------------------------------------------------------------------ leftovers of a killed writer
KILLED_WHILE_WRITING = """
import os, signal, sys
from ncsn_pl.system.files import atomic_write
writing = atomic_write(sys.argv[1])
file = writing.__enter__()
file.write(b"PK" + bytes(100_000))
file.flush()
os.kill(os.getpid(), signal.SIGKILL)
"""


def kill_while_writing(path) -> None:
    """Start writing ``path`` through atomic_write in a process of its own, which is SIGKILLed mid-write."""
    done = subprocess.run([sys.executable, "-c", KILLED_WHILE_WRITING, str(path)], env=os.environ, timeout=120)
    assert done.returncode == -signal.SIGKILL


def test_a_resumed_run_removes_the_temporaries_of_a_killed_writer(tmp_path):
    fit_digits(tmp_path, "--trainer.max_epochs=1")
    (run,) = run_dirs(tmp_path)
    last = run / "checkpoints" / "last.ckpt"
    kill_while_writing(last)
    kill_while_writing(run / "metrics.csv")
    (left,) = (run / "checkpoints").glob(".last.ckpt.*.tmp")
    assert left.stat().st_size > 100_000 and len(list(run.glob(".metrics.csv.*.tmp"))) == 1

    # while a live run holds the folder, its temporaries are left alone (the resume is refused)
    holder = ProcessLock(run / ".run.lock")
    with pytest.raises(RunFolderInUseError):
        fit_digits(tmp_path, "--trainer.max_epochs=2", f"--ckpt_path={last}")
    assert left.is_file()
    holder.release()

    fit_digits(tmp_path, "--trainer.max_epochs=2", f"--ckpt_path={last}")
    assert not list(run.rglob("*.tmp"))
    assert torch.load(last, weights_only=True)["global_step"] == 4


# ------------------------------------------------------------------ a refused resume starts nothing
@pytest.fixture
def offline_wandb(monkeypatch):
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    wandb.finish()  # a run an earlier test left open would be reused
    wandb.teardown()  # wandb reads WANDB_MODE once per process setup
    yield
    wandb.finish()
    wandb.teardown()


def test_a_refused_resume_starts_no_wandb_run(tmp_path, offline_wandb):
    import wandb

    fit_digits(tmp_path, "--trainer.max_epochs=1")
    wandb.finish()
    (run,) = run_dirs(tmp_path)
    before = sorted(p.name for p in (tmp_path / "wandb").iterdir())
    latest = os.readlink(tmp_path / "wandb" / "latest-run")
    assert len([name for name in before if name.startswith("offline-run-")]) == 1

    holder = ProcessLock(run / ".run.lock")  # a live run holds the folder
    with pytest.raises(RunFolderInUseError, match="is in use by a live run"):
        fit_digits(tmp_path, "--trainer.max_epochs=2", f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}")
    holder.release()
    assert sorted(p.name for p in (tmp_path / "wandb").iterdir()) == before  # no stub run
    assert os.readlink(tmp_path / "wandb" / "latest-run") == latest


def test_a_resumed_fit_gives_its_wandb_logger_the_run_s_id_before_it_is_built(tmp_path):
    fit_digits(tmp_path, "--trainer.max_epochs=1")
    (run,) = run_dirs(tmp_path)
    (run / "wandb_run_id").write_text("abc123\n")  # what remember_wandb_run keeps (W&B is disabled in the tests)
    last = run / "checkpoints" / "last.ckpt"
    early = run / "checkpoints" / "early.ckpt"
    early.write_bytes(last.read_bytes())  # a snapshot at step 2, for the branch below
    resumed = fit_digits(tmp_path, "--trainer.max_epochs=2", f"--ckpt_path={last}")
    (wandb_config,) = [lg for lg in resumed.config.fit.trainer.logger if lg.class_path.endswith("WandbLogger")]
    assert wandb_config.init_args.id == "abc123"  # set in the config, before instantiation
    (wandb_logger,) = [lg for lg in resumed.trainer.loggers if isinstance(lg, WandbLogger)]
    settings = wandb_init_settings(wandb_logger)
    assert settings["id"] == "abc123" and settings["resume"] == "allow"
    assert run_dirs(tmp_path) == [run]  # the same folder, continued
    branch = fit_digits(tmp_path, "--trainer.max_epochs=3", f"--ckpt_path={early}")
    (wandb_config,) = [lg for lg in branch.config.fit.trainer.logger if lg.class_path.endswith("WandbLogger")]
    assert wandb_config.init_args.id is None  # an earlier checkpoint branches: a new folder and a new W&B run


def log_sequence(logger) -> None:
    """Rows whose metrics widen the header twice, saved between them (each widening rewrites the file)."""
    logger.log_hyperparams({"sigma_max": 1.0, "nested": {"a": 1}})
    logger.log_metrics({"train/loss": torch.tensor(0.5), "epoch": 0}, step=0)
    logger.save()
    logger.log_metrics({"train/loss": 0.25, "epoch": 0}, step=1)
    logger.log_metrics({"val/loss": 0.75, "epoch": 0}, step=1)
    logger.save()
    logger.log_metrics({"fid": 12.5, "epoch": 1}, step=2)
    logger.finalize("success")


def test_run_logger_writes_metrics_and_hparams_byte_for_byte_as_lightning_s_csv_logger(tmp_path):
    ours = RunLogger(str(tmp_path / "ours"))
    theirs = CSVLogger(str(tmp_path / "theirs"), name="", version=0)
    for logger in (ours, theirs):
        log_sequence(logger)
    for name in ("metrics.csv", "hparams.yaml"):
        assert (Path(ours.log_dir) / name).read_bytes() == (Path(theirs.log_dir) / name).read_bytes(), name
    rows = (Path(ours.log_dir) / "metrics.csv").read_text().splitlines()
    assert rows[0] == "epoch,fid,step,train/loss,val/loss" and len(rows) == 5


def test_a_widened_metrics_header_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    logger = RunLogger(str(tmp_path))
    logger.log_metrics({"train/loss": 0.5}, step=0)
    logger.save()
    before = (Path(logger.log_dir) / "metrics.csv").read_bytes()

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(logger_module, "atomic_write", full_disk)
    logger.log_metrics({"val/loss": 0.75}, step=1)  # a new column: the file is rewritten
    with pytest.raises(OSError, match="No space left"):
        logger.save()
    assert (Path(logger.log_dir) / "metrics.csv").read_bytes() == before


def test_a_resumed_writer_keeps_the_rows_up_to_its_step_and_a_reused_folder_starts_afresh(tmp_path, recwarn):
    first = RunLogger(str(tmp_path))
    for step in range(4):
        first.log_metrics({"train/loss": float(step)}, step=step)
    first.finalize("success")
    resumed = RunLogger(str(tmp_path), version=first.version, resume_step=1)
    resumed.log_metrics({"train/loss": 9.0}, step=2)
    resumed.finalize("success")
    lines = (Path(first.log_dir) / "metrics.csv").read_text().splitlines()
    assert lines == ["step,train/loss", "0,0.0", "1,1.0", "2,9.0"]
    assert not [w for w in recwarn if "not empty" in str(w.message)]
    reused = RunLogger(str(tmp_path), version=first.version)  # given its folder, not resumed: Lightning's rule
    reused.log_metrics({"train/loss": 5.0}, step=0)
    reused.finalize("success")
    assert [w for w in recwarn if "not empty" in str(w.message)]
    assert (Path(first.log_dir) / "metrics.csv").read_text().splitlines() == ["step,train/loss", "0,5.0"]
