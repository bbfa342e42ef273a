"""Runs that never lose or falsify work: run folders, divergence, full disks, resume, overrides, seeds, messages."""

import errno
import json
import logging
import threading
import time

import pytest
import torch
from cli_runs import CONFIGS, fit_digits, run_dirs
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException

from ncsn_pl.commands.cli import main
from ncsn_pl.networks import NCSN, ToyScoreMLP
from ncsn_pl.runs.logger import RunFolderInUseError, claim_version
from ncsn_pl.runs.records import read_run_status
from ncsn_pl.system import files
from ncsn_pl.training import RunLogger, ScoreModel


def checkpoints(root):
    return sorted(root.rglob("*.ckpt"))


def finite(path) -> bool:
    state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    return all(bool(torch.isfinite(v).all()) for v in state.values() if v.is_floating_point())


# ------------------------------------------------------------------ each run owns its folder
def test_concurrent_claims_never_share_a_folder(tmp_path):
    claimed = []
    threads = [threading.Thread(target=lambda: claimed.append(claim_version(tmp_path))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claimed) == list(range(8))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"version_{n}" for n in range(8))


def test_a_live_run_holds_its_folder(tmp_path):
    first = RunLogger(str(tmp_path))
    first.log_metrics({"a": 1.0}, step=0)
    assert first.version == 0
    assert read_run_status(tmp_path / "version_0")["status"] == "running"
    second = RunLogger(str(tmp_path), version=0)
    with pytest.raises(RunFolderInUseError, match=r"version_0 is in use by a live run \(pid \d+\)"):
        second.log_metrics({"a": 2.0}, step=1)
    first.finalize("success")  # the run ended: its folder may be continued
    assert read_run_status(tmp_path / "version_0")["status"] == "finished"
    second.log_metrics({"a": 2.0}, step=1)
    assert read_run_status(tmp_path / "version_0")["status"] == "running"  # continued: no longer finished
    second.finalize("success")


def test_a_resumed_run_continues_its_folder_and_metrics(tmp_path):
    first = fit_digits(tmp_path, "--trainer.max_epochs=1", "--trainer.limit_val_batches=1",
                       "--trainer.log_every_n_steps=1")  # fmt: skip
    (run,) = run_dirs(tmp_path)
    fit_digits(tmp_path, "--trainer.max_epochs=2", "--trainer.limit_val_batches=1", "--trainer.log_every_n_steps=1",
               f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}")  # fmt: skip
    assert run_dirs(tmp_path) == [run]  # no version_1
    rows = (run / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    steps = [int(float(r.split(",")[header.index("step")])) for r in rows[1:] if "train/loss" in header]
    train = [r for r in rows[1:] if r.split(",")[header.index("train/loss")]]
    assert first.trainer.global_step == 2 and len(train) == 4  # steps 1-2 of the first run, 3-4 of the resumed one
    assert steps == sorted(steps)


def test_resuming_from_an_earlier_checkpoint_branches_and_keeps_the_run(tmp_path):
    fit_digits(tmp_path, "--trainer.max_epochs=2", "--checkpoint.every_n_train_steps=2", "--checkpoint.save_top_k=-1")
    (run,) = run_dirs(tmp_path)
    kept = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file() and ".run.lock" not in p.name}
    early = run / "checkpoints" / "epoch=0-step=2.ckpt"
    branch = fit_digits(tmp_path, "--trainer.max_epochs=2", "--checkpoint.every_n_train_steps=2",
                        f"--ckpt_path={early}", "--model.lr=1e-4")  # fmt: skip
    assert branch.trainer.global_step == 4
    assert {name: (run / name).read_bytes() for name in kept} == kept  # metrics, last.ckpt, config: untouched
    new = next(p for p in run_dirs(tmp_path) if p != run)
    record = json.loads((new / "branched_from.json").read_text())
    assert record == {"checkpoint": str(early.resolve()), "step": 2, "run": str(run.resolve()), "run_step": 4}
    assert torch.load(new / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 4
    # the run's latest checkpoint still continues the run in place
    fit_digits(tmp_path, "--trainer.max_epochs=3", f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}")
    assert len(run_dirs(tmp_path)) == 2


# ------------------------------------------------------------------ divergence
def test_a_diverging_run_keeps_only_finite_checkpoints_and_names_the_last(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    with pytest.raises(FloatingPointError, match="Non-finite training loss"):
        fit_digits(tmp_path, "--trainer.max_epochs=20", "--model.lr=1e3", "--checkpoint.every_n_train_steps=1",
                   "--checkpoint.save_top_k=1")  # fmt: skip
    saved = checkpoints(tmp_path)
    assert saved and all(finite(p) for p in saved)
    message = next(r.getMessage() for r in caplog.records if "Training diverged" in r.getMessage())
    named = message.split("the last checkpoint with finite weights is ")[1].split(", at step")[0]
    assert named in {str(p) for p in saved} and finite(named)


def test_an_exploding_run_writes_nothing_on_its_way_out(tmp_path):
    with pytest.raises(FloatingPointError):
        fit_digits(tmp_path, "--trainer.max_epochs=20", "--model.lr=1e6")
    steps = [torch.load(p, weights_only=False)["global_step"] for p in checkpoints(tmp_path)]
    assert steps == [] or max(steps) < 40  # no checkpoint of the weights that gave the infinite loss


# ------------------------------------------------------------------ a full disk
def test_a_full_disk_leaves_no_partial_checkpoint(tmp_path, monkeypatch):
    calls, real_fsync = [0], files.os.fsync

    def fills_up(fd):
        calls[0] += 1
        if calls[0] > 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(files.os, "fsync", fills_up)
    with pytest.raises(OSError, match=r"No space left on the device while writing .*\.ckpt; nothing was written"):
        fit_digits(tmp_path, "--trainer.max_epochs=5", "--checkpoint.every_n_train_steps=1")
    assert checkpoints(tmp_path) and all(finite(p) for p in checkpoints(tmp_path))  # each loads whole
    assert not list(tmp_path.rglob("*.tmp"))


# ------------------------------------------------------------------ exact resume
class StopLikeSIGTERM(Callback):
    """Raise Lightning's SIGTERM exception after ``step`` optimizer steps (a preemption mid-epoch)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            raise SIGTERMException()


AUGMENTED = ["--data.init_args.dequantize=true", "--data.init_args.random_flip=true",
             "--trainer.limit_train_batches=4"]  # fmt: skip


def test_resume_is_exact_with_augmentation_and_after_a_mid_epoch_preemption(tmp_path):
    straight = fit_digits(tmp_path / "straight", "--trainer.max_epochs=2", *AUGMENTED)
    assert straight.trainer.global_step == 8
    stop = '[{"class_path": "test_long_runs.StopLikeSIGTERM", "init_args": {"step": 3}}]'
    with pytest.raises(SystemExit) as stopped:
        fit_digits(tmp_path / "resumed", "--trainer.max_epochs=2", *AUGMENTED, f"--trainer.callbacks={stop}")
    assert stopped.value.code == 143  # 128 + SIGTERM: a preempted run is not a finished one
    (run,) = run_dirs(tmp_path / "resumed")
    last = run / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == 3
    resumed = fit_digits(tmp_path / "resumed", "--trainer.max_epochs=2", *AUGMENTED, f"--ckpt_path={last}")
    assert resumed.trainer.global_step == 8
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


class CrashAt(Callback):
    """Raise an ordinary error at the start of step ``step`` (a crash after the checkpoint of the step before)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError("crash")


class SlowAfter(Callback):
    """Sleep a second after optimizer step ``step``, so that ``max_time`` of one second stops the run by the next
    step however fast the steps are."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            time.sleep(1.0)


EVERY_STOP = ["--data.init_args.dequantize=true", "--data.init_args.random_flip=true",
              "--trainer.limit_train_batches=3", "--trainer.max_epochs=-1"]  # fmt: skip


def callback(name: str, step: int) -> str:
    return f'--trainer.callbacks=[{{"class_path": "test_long_runs.{name}", "init_args": {{"step": {step}}}}}]'


@pytest.fixture(scope="module")
def straight_six(tmp_path_factory):
    return fit_digits(tmp_path_factory.mktemp("straight"), *EVERY_STOP, "--trainer.max_steps=6").model.state_dict()


STOPS = {
    "max_steps on an epoch's last batch": ["--trainer.max_steps=3"],
    "max_steps mid-epoch": ["--trainer.max_steps=2"],
    "max_epochs": ["--trainer.max_epochs=1"],
    "max_time": ["--trainer.max_steps=6", "--trainer.max_time=00:00:00:01", callback("SlowAfter", 3)],
    "SIGTERM on an epoch's last batch": ["--trainer.max_steps=6", callback("StopLikeSIGTERM", 3)],
    "an exception after a checkpoint": ["--trainer.max_steps=6", callback("CrashAt", 4),
                                        "--checkpoint.every_n_train_steps=2"],
}  # fmt: skip


@pytest.mark.parametrize("stop", [pytest.param(s, marks=[] if s == next(iter(STOPS)) else pytest.mark.slow)
                                  for s in STOPS])  # fmt: skip
def test_a_run_continues_exactly_however_it_stopped(stop, straight_six, tmp_path):
    try:
        fit_digits(tmp_path, *EVERY_STOP, *STOPS[stop])
    except (SystemExit, RuntimeError):
        pass  # a preempted (exit 143) or crashed run: it wrote last.ckpt on its way out
    (run,) = run_dirs(tmp_path)
    last = run / "checkpoints" / "last.ckpt"
    assert 0 < torch.load(last, weights_only=False)["global_step"] < 6
    resumed = fit_digits(tmp_path, *EVERY_STOP, "--trainer.max_steps=6", f"--ckpt_path={last}")
    assert resumed.trainer.global_step == 6
    for (name, a), b in zip(straight_six.items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


@pytest.mark.parametrize(("stop", "status", "reason"), [
    (callback("StopLikeSIGTERM", 1), "interrupted", "SIGTERM (preempted)"),
    (callback("CrashAt", 1), "failed", "RuntimeError: crash"),
])  # fmt: skip
def test_a_run_records_how_it_ended(tmp_path, stop, status, reason):
    with pytest.raises((SystemExit, RuntimeError)):
        fit_digits(tmp_path, "--trainer.max_steps=4", "--trainer.limit_val_batches=0", stop)
    (run,) = run_dirs(tmp_path)
    record = read_run_status(run)
    assert record["status"] == status and record["reason"].startswith(reason)


# ------------------------------------------------------------------ overrides with --ckpt_path
def test_overrides_with_ckpt_path_apply_or_are_refused(tmp_path):
    fit_digits(tmp_path, "--trainer.max_epochs=1")
    (run,) = run_dirs(tmp_path)
    last = str(run / "checkpoints" / "last.ckpt")
    resumed = fit_digits(tmp_path, "--trainer.max_epochs=2", f"--ckpt_path={last}", "--model.lr=0.5")
    assert resumed.model.hparams.lr == 0.5
    assert resumed.trainer.optimizers[0].param_groups[0]["lr"] == 0.5  # the restored optimizer state follows
    with pytest.raises(ValueError, match=r"cannot change when continuing from .*model.sigma_max \(checkpoint 1.0"):
        fit_digits(tmp_path, "--trainer.max_epochs=3", f"--ckpt_path={last}", "--model.sigma_max=3")


# ------------------------------------------------------------------ seeds
def test_the_model_seed_can_be_set_alone(tmp_path):
    cli = fit_digits(tmp_path, "--trainer.max_epochs=1", "--model.seed=3")
    assert cli.model.hparams.seed == 3 and cli.datamodule.hparams.seed == 0


# ------------------------------------------------------------------ messages that say what to fix
def test_advice_fits_the_network():
    with pytest.raises(ValueError, match="ToyScoreMLP takes points") as info:
        ScoreModel(ToyScoreMLP(), data_shape=(1, 8, 8))
    assert "channels" not in str(info.value)
    with pytest.raises(ValueError, match="NCSN has one row of normalisation parameters per noise level"):
        NCSN(num_scales="auto")


def test_sampling_a_diverged_checkpoint_says_so(tmp_path):
    fit_digits(tmp_path, "--trainer.max_epochs=1")
    (run,) = run_dirs(tmp_path)
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    state["state_dict"] = {k: v * float("nan") if v.is_floating_point() else v for k, v in state["state_dict"].items()}
    torch.save(state, tmp_path / "nan.ckpt")
    with pytest.raises(ValueError, match=r"are not finite: the run diverged by step 2\. Use an earlier checkpoint"):
        main(["sample", f"--ckpt_path={tmp_path / 'nan.ckpt'}", f"--out_dir={tmp_path / 's'}"])
    with pytest.raises(ValueError, match="n_steps_each must be an integer >= 1"):
        main(["sample", f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}", "--sampler=AnnealedLangevin",
              "--sampler.n_steps_each=0", f"--out_dir={tmp_path / 's'}"])  # fmt: skip


# ------------------------------------------------------------------ fast_dev_run
def test_fast_dev_run_is_a_smoke_run_that_writes_nothing(tmp_path):
    cli = main(["fit", "--config", str(CONFIGS / "quickstart.yaml"), "--trainer.fast_dev_run=true",
                f"--trainer.default_root_dir={tmp_path}", "--trainer.enable_progress_bar=false"])  # fmt: skip
    assert cli.trainer.global_step == 1
    assert not list(tmp_path.rglob("*.*"))  # no config, metrics, checkpoint or sample grid
