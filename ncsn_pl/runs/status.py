"""How a run folder's run stands, from what the run recorded: a live lock, its ``run_status.json``, and a
``metrics.csv`` whose last row may have been cut short.

=============  ===========================================================================================
status         when
=============  ===========================================================================================
``running``    a live process holds the run folder's lock (``.run.lock``)
``finished``   ``run_status.json`` says the fit ended normally (``max_steps``, ``max_epochs``, ``max_time``,
               early stopping)
``interrupted``  it says a SIGTERM (a preemption, exit status 143) or Ctrl-C stopped the run, after
               writing ``last.ckpt``
``failed``     it says an exception ended the run (the error is the note)
``killed``     it still says ``running`` but no process holds the folder: the run died without recording
               how (SIGKILL, out of memory, a lost node)
``unknown``    no ``run_status.json``: a folder written before runs recorded how they ended, or by another
               logger; how it ended is not known, so it is listed without a rank
=============  ===========================================================================================

Only ``finished`` runs are ranked (:func:`~ncsn_pl.runs.records.rank_runs`).
"""

from __future__ import annotations

from pathlib import Path

from ncsn_pl.runs.reading import cut_metrics_row
from ncsn_pl.runs.records import RUN_LOCK_FILE, RUN_STATUS_FILE, read_run_status
from ncsn_pl.system.locks import lock_holder

__all__ = ["cut_row_note", "run_folder_status"]


def run_folder_status(run_dir: Path) -> tuple[str, str]:
    """The status of the run in ``run_dir`` (see the module docstring) and a note that says why."""
    holder = lock_holder(run_dir / RUN_LOCK_FILE)
    if holder is not None:
        return "running", f"a live process holds the run folder ({holder})"
    record = read_run_status(run_dir)
    if record is None:
        return "unknown", (
            f"no {RUN_STATUS_FILE}: how the run ended was not recorded (a run from before runs recorded it, or "
            "another logger's), so it is not ranked"
        )
    status = record.get("status")
    if status == "running":
        return "killed", (
            "the run stopped without recording how it ended and no process holds its folder (killed: SIGKILL, out "
            "of memory, a lost node); resume it with --ckpt_path <run>/checkpoints/last.ckpt"
        )
    if status in ("finished", "interrupted", "failed"):
        return status, str(record.get("reason") or "")
    return "unknown", f"{RUN_STATUS_FILE} says {status!r}"


def cut_row_note(csv_path: Path) -> str:
    """A note when the last row of ``metrics.csv`` was cut short (and so left out), else an empty string."""
    try:
        cut = cut_metrics_row(csv_path.read_text())
    except OSError:
        return ""
    if cut is None:
        return ""
    return f"the last row of metrics.csv was cut short ({cut[:40]!r}: the run stopped while writing it); left out"
