"""A newcomer's first run: the quickstart (smoke size) as the README starts it, W&B offline without credentials, prints
nothing false or alarming."""

import os
import re
import subprocess
import sys
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger, WandbLogger

from ncsn_pl.runs.logger import RunLogger
from ncsn_pl.runs.wandb_glue import drop_unset_wandb_settings

REPO = Path(__file__).parents[1]
# a true notice from Lightning's own code (its use of a torch API torch has deprecated), not about this run
LIBRARY_NOTICES = ("`isinstance(treespec, LeafSpec)` is deprecated",)
# true of a smoke run: a network trained for 2 steps draws samples far outside the data's range, and says so
TRUE_FOR_A_SMOKE_RUN = ("Samples ended far outside the data's range",)


def test_a_fresh_quickstart_run_prints_no_false_warning(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}  # W&B as a new user has it: no key
    env.update(NETRC=str(tmp_path / "netrc"), HOME=str(tmp_path), OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]))  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "ncsn_pl", "fit", "--config", str(REPO / "configs" / "quickstart.yaml"), "--config",
         str(REPO / "configs" / "cpu_smoke.yaml")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert (tmp_path / "runs" / "quickstart" / "version_0" / "samples" / "final.png").is_file()  # where the README says
    assert "runs are logged offline" in done.stderr  # the one note a first run gets, and it is true
    for false_or_noise in ("exists and is not empty", "will be deleted", "anonymous setting", "Tip:", "litlogger"):
        assert false_or_noise not in output, output[-3000:]
    alarms = [line for line in output.splitlines() if re.search(r"warn|deprecat|error", line, flags=re.IGNORECASE)]
    allowed = LIBRARY_NOTICES + TRUE_FOR_A_SMOKE_RUN
    assert [line for line in alarms if not any(notice in line for notice in allowed)] == [], output[-3000:]


def test_a_claimed_run_folder_is_not_reported_as_holding_old_logs(tmp_path, recwarn):
    fresh = RunLogger(str(tmp_path))
    (tmp_path / f"version_{fresh.version}" / "config.yaml").write_text("seed_everything: 0\n")  # the run's own config
    fresh.log_metrics({"train/loss": 1.0}, step=0)
    fresh.save()
    assert not [w for w in recwarn if "not empty" in str(w.message)]
    # a folder given by version, not claimed, holds an older run's logs: Lightning's warning is true there
    CSVLogger(str(tmp_path), name="", version=0).log_metrics({"train/loss": 2.0}, step=0)
    assert [w for w in recwarn if "not empty" in str(w.message)]


def test_wandb_loggers_no_longer_pass_the_deprecated_anonymous_setting(tmp_path):
    loggers = [WandbLogger(project="p", save_dir=str(tmp_path)), WandbLogger(project="p", anonymous=True),
               CSVLogger(str(tmp_path))]  # fmt: skip
    assert "anonymous" in loggers[0]._wandb_init  # Lightning passes anonymous=None, which W&B warns about
    assert drop_unset_wandb_settings(loggers) == 1
    assert "anonymous" not in loggers[0]._wandb_init and loggers[1]._wandb_init["anonymous"] == "allow"
