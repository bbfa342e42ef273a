"""Atomic writes of torch files (a crash or a concurrent writer never leaves a half-written file)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """Save ``obj`` with ``torch.save`` to a temporary file next to ``path``, then ``os.replace`` it.

    ``os.replace`` is atomic on POSIX and Windows when both paths are on one file system, so readers see
    either the old file or the complete new one. Two processes (e.g. DDP ranks) writing the same path at
    once both succeed and the last one wins.

    Args:
        obj: anything ``torch.save`` accepts.
        path: destination; its parent directories are created.

    Returns:
        The destination path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
