"""Files written whole or not at all, and torch files read with errors that say what is wrong (and checked against
the CRC-32 of each part that ``torch.save`` records in its zip archive).

Every file the project writes goes through :func:`atomic_write`: the content is staged in a temporary file in
the destination's own folder, flushed to disk, then renamed into place with ``os.replace`` (atomic on one file
system), so a reader, a crash or a full disk never leaves a half-written file under the final name.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import pickle
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, NoReturn

import torch

__all__ = [
    "atomic_torch_save",
    "atomic_write",
    "atomic_write_json",
    "atomic_write_text",
    "check_torch_file",
    "check_zip_crcs",
    "current_umask",
    "load_torch_file",
    "one_read_per_file",
    "read_torch_file",
    "remove_stale_temporaries",
]


def current_umask() -> int:
    """The process's umask, read without changing it where Linux reports it (``/proc/self/status``)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # elsewhere: read by setting it, then put back at once
    os.umask(mask)
    return mask


@contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file next to ``path`` for writing; on success it replaces ``path``, on error it is removed.

    Two processes writing the same path at once both succeed and the last one wins. The file gets the mode ``open()``
    would give it (``0666`` less the umask), so a group's shared folder stays readable to the group.

    Args:
        path: the destination; its parent folders are created.
        mode: ``"wb"`` or ``"w"``.

    Raises:
        OSError: the write failed; on a full disk the message says so and names the file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes 0600; the file gets the mode open() would give
        with os.fdopen(fd, mode) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        if err.errno == errno.ENOSPC:
            message = f"No space left on the device while writing {path}; nothing was written under that name."
            raise OSError(errno.ENOSPC, message) from err
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files that :func:`atomic_write` left in ``folder`` (not in its subfolders) when their
    writer was killed (SIGKILL, a node failure): ``.<name>.<random>.tmp``, as large as the file being written.

    Call it only when no writer of ``folder`` can be alive (the caller holds the folder's lock): a live writer's
    temporary file would be removed under it. Returns the files removed.
    """
    removed = []
    for path in sorted(Path(folder).glob(".*.tmp")):
        if path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save(obj)`` to ``path`` through :func:`atomic_write`; returns the path."""
    with atomic_write(path) as file:
        torch.save(obj, file)
    return Path(path)


def atomic_write_text(text: str, path: str | os.PathLike[str]) -> Path:
    """Write ``text`` to ``path`` through :func:`atomic_write`; returns the path."""
    with atomic_write(path, "w") as file:
        file.write(text)
    return Path(path)


def atomic_write_json(data: Any, path: str | os.PathLike[str]) -> Path:
    """Write ``data`` as indented JSON to ``path`` through :func:`atomic_write`; returns the path."""
    return atomic_write_text(json.dumps(data, indent=2) + "\n", path)


TRAINED_CHECKPOINT = "a .ckpt file written by training (e.g. <run dir>/checkpoints/last.ckpt)"


def check_torch_file(
    path: str | os.PathLike[str], what: str = "--ckpt_path", expected: str = TRAINED_CHECKPOINT
) -> Path:
    """Check, without unpickling anything, that ``path`` is a file ``torch.save`` wrote.

    Args:
        path: the file.
        what: names the file in messages (the option it came from).
        expected: what the file should be, for messages.

    Raises:
        FileNotFoundError: nothing at ``path``.
        IsADirectoryError: ``path`` is a folder.
        ValueError: the file is not a PyTorch file (text, empty, truncated, another archive).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist; give the path of {expected}.")
    if path.is_dir():
        raise IsADirectoryError(f"{what} {str(path)!r} is a directory; give the path of {expected}.")
    with path.open("rb") as file:
        head = file.read(4)
    # torch.save writes a zip archive; files from torch < 1.6 start with a pickle protocol byte
    if head.startswith(b"\x80"):
        return path
    problem = f"it starts with {head!r}" if head else "it is empty"
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:  # reads the central directory: catches truncated files
                if any(name.endswith("data.pkl") for name in archive.namelist()):
                    return path
                problem = "it is a zip archive without data.pkl"
        except zipfile.BadZipFile as err:
            problem = f"a damaged zip archive: {err}"
    raise ValueError(f"{what} {str(path)!r} is not a PyTorch checkpoint ({problem}); give the path of {expected}.")


def check_zip_crcs(data: bytes, path: str | os.PathLike[str], what: str = "--ckpt_path",
                   expected: str = TRAINED_CHECKPOINT) -> None:  # fmt: skip
    """Check every part of the torch file in ``data`` against the CRC-32 its zip archive records for it.

    ``torch.load`` does not: flipped bytes inside a tensor's storage load as other weights. A part recorded with CRC
    0 is skipped (``torch.utils.serialization.config.save.compute_crc32 = False`` writes no CRC-32s); files of
    torch < 1.6 (a plain pickle, no zip) have none to check.

    Args:
        data: the file's bytes.
        path: the file, for messages.
        what: names the file in messages.
        expected: what the file should be, for messages.

    Raises:
        ValueError: a part whose bytes do not match its CRC-32 (the message names it).
    """
    if not data.startswith(b"PK"):
        return
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for info in archive.infolist():
                if info.CRC == 0 and info.file_size:
                    continue
                with archive.open(info) as part:  # zipfile compares the CRC-32 once the part is read to its end
                    while part.read(1 << 24):
                        pass
    except zipfile.BadZipFile as err:
        raise ValueError(
            f"{what} {str(path)!r} is corrupt ({err}: its bytes changed on disk or in a copy); copy it again from "
            f"its source, or give the path of {expected}."
        ) from err


def load_torch_file(
    path: str | os.PathLike[str],
    *,
    weights_only: bool = True,
    what: str = "--ckpt_path",
    expected: str = TRAINED_CHECKPOINT,
) -> Any:
    """``torch.load`` on the CPU of one read of the file, after :func:`check_torch_file` and :func:`check_zip_crcs`,
    with errors that say what is wrong.

    Args:
        path: the file.
        weights_only: ``torch.load``'s safe mode (default True); False only for files you trust.
        what: names the file in messages.
        expected: what the file should be, for messages.

    Raises:
        FileNotFoundError, IsADirectoryError, ValueError: see :func:`check_torch_file`; ``ValueError`` also for a
            corrupt file (:func:`check_zip_crcs`) and when ``torch.load`` fails.
    """
    return read_torch_file(path, weights_only=weights_only, what=what, expected=expected, digest=False)[0]


# while a command runs under one_read_per_file(): each file loaded, by identity and weights_only, and what it held
_READ: dict[tuple[Any, ...], tuple[Any, str]] | None = None


@contextmanager
def one_read_per_file() -> Iterator[None]:
    """Within this block :func:`read_torch_file` reads, checks and unpickles each file once: a second call for an
    unchanged file (same inode, size and modification time) returns the same object. ``sample`` and ``fid`` read
    their checkpoint for its settings and then for its weights; callers must not change what they are given."""
    global _READ
    outer, _READ = _READ, {} if _READ is None else _READ
    try:
        yield
    finally:
        _READ = outer


def read_torch_file(
    path: str | os.PathLike[str],
    *,
    weights_only: bool = True,
    what: str = "--ckpt_path",
    expected: str = TRAINED_CHECKPOINT,
    digest: bool = True,
) -> tuple[Any, str]:
    """:func:`load_torch_file` and the sha256 of the bytes loaded (``""`` without ``digest``), from one read of the
    file: a file replaced while it is read cannot give the weights of one file and the name of another. Holds the
    file's bytes in memory once.

    Raises:
        FileNotFoundError, IsADirectoryError, ValueError: as :func:`load_torch_file`.
    """
    path = check_torch_file(path, what, expected)
    if _READ is not None:
        stat = path.stat()
        key = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, weights_only)
        if key not in _READ:
            _READ[key] = _read_torch_file(path, weights_only, what, expected, digest=True)
        obj, sha256 = _READ[key]
        return obj, sha256 if digest else ""
    return _read_torch_file(path, weights_only, what, expected, digest)


def _read_torch_file(path: Path, weights_only: bool, what: str, expected: str, digest: bool) -> tuple[Any, str]:
    data = path.read_bytes()
    check_zip_crcs(data, path, what, expected)
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=weights_only)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, EOFError, ... for foreign files
        _raise_unreadable(path, err, what, expected)
    return obj, hashlib.sha256(data).hexdigest() if digest else ""


def _raise_unreadable(path: Path, err: Exception, what: str, expected: str) -> NoReturn:
    if isinstance(err, pickle.UnpicklingError) and "Weights only load failed" in str(err):
        raise ValueError(
            f"{what} {str(path)!r} holds Python objects other than tensors and plain values, which loading would run "
            f"as code; it was not loaded. Give the path of {expected}."
        ) from err
    first_line = str(err).splitlines()[0] if str(err) else ""
    raise ValueError(
        f"{what} {str(path)!r} is not a readable PyTorch checkpoint ({type(err).__name__}: {first_line}); "
        f"give the path of {expected}."
    ) from err
